use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A blake3 digest: the name of an object, or a cache key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash([u8; 32]);

impl Hash {
    pub fn from_bytes(bytes: [u8; 32]) -> Hash {
        Hash(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }

    /// The first 12 hex digits, enough to name a hash in terminal output.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.short())
    }
}

impl FromStr for Hash {
    type Err = String;

    fn from_str(text: &str) -> Result<Hash, String> {
        if text.len() != 64 {
            return Err(format!("a hash has 64 hex digits, `{text}` has {}", text.len()));
        }
        let mut bytes = [0u8; 32];
        for (idx, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[idx * 2..idx * 2 + 2], 16)
                .map_err(|_| format!("`{text}` is not a hex hash"))?;
        }
        Ok(Hash(bytes))
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Hash, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

pub fn hash_bytes(bytes: &[u8]) -> Hash {
    Hash(*blake3::hash(bytes).as_bytes())
}

/// Files at least this large are hashed through mmap on all rayon threads; below it, one
/// buffered read is faster than setting up the mapping.
const MMAP_THRESHOLD: u64 = 16 * 1024 * 1024;

/// Hashes a file's bytes. Large files go through blake3's mmap + rayon path, which runs at
/// memory bandwidth on a warm page cache (docs/benchmarks.md).
pub fn hash_file(path: &Path) -> std::io::Result<Hash> {
    let len = std::fs::metadata(path)?.len();
    let mut hasher = blake3::Hasher::new();
    if len >= MMAP_THRESHOLD {
        hasher.update_mmap_rayon(path)?;
    } else {
        let mut file = File::open(path)?;
        hash_into(&mut hasher, &mut file)?;
    }
    Ok(Hash(*hasher.finalize().as_bytes()))
}

pub fn hash_reader(reader: &mut impl Read) -> std::io::Result<Hash> {
    let mut hasher = blake3::Hasher::new();
    hash_into(&mut hasher, reader)?;
    Ok(Hash(*hasher.finalize().as_bytes()))
}

fn hash_into(hasher: &mut blake3::Hasher, reader: &mut impl Read) -> std::io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

/// Builds a cache key from named, length-prefixed fields so that no two different field lists
/// can produce the same byte stream (`("ab","c")` and `("a","bc")` hash differently).
pub struct KeyBuilder {
    hasher: blake3::Hasher,
}

impl KeyBuilder {
    pub fn new(domain: &str) -> KeyBuilder {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"pipeline-key\0");
        let mut builder = KeyBuilder { hasher };
        builder.field("domain", domain.as_bytes());
        builder.field("key-version", &crate::CACHE_KEY_VERSION.to_le_bytes());
        builder
    }

    pub fn field(&mut self, name: &str, value: &[u8]) -> &mut KeyBuilder {
        self.hasher.update(&(name.len() as u64).to_le_bytes());
        self.hasher.update(name.as_bytes());
        self.hasher.update(&(value.len() as u64).to_le_bytes());
        self.hasher.update(value);
        self
    }

    pub fn finish(&self) -> Hash {
        Hash(*self.hasher.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let hash = hash_bytes(b"abc");
        assert_eq!(hash.to_hex().parse::<Hash>().unwrap(), hash);
        // Reference value from the blake3 test vectors (b3sum of "abc").
        assert_eq!(hash.to_hex(), "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85");
    }

    #[test]
    fn key_fields_are_length_prefixed() {
        let a = KeyBuilder::new("t").field("x", b"ab").field("y", b"c").finish();
        let b = KeyBuilder::new("t").field("x", b"a").field("y", b"bc").finish();
        assert_ne!(a, b);
    }

    #[test]
    fn file_hash_matches_bytes_hash_both_paths() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small");
        std::fs::write(&small, b"hello").unwrap();
        assert_eq!(hash_file(&small).unwrap(), hash_bytes(b"hello"));
        let big = dir.path().join("big");
        let data: Vec<u8> = (0..(MMAP_THRESHOLD as usize + 17)).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&big, &data).unwrap();
        assert_eq!(hash_file(&big).unwrap(), hash_bytes(&data));
    }
}
