//! all-MiniLM-L6-v2 sentence embeddings: the TorchScript module `scripts/export_minilm.py` traced
//! (mean pooling and L2 norm included) and the model's own `tokenizer.json`, tokenised here by
//! Hugging Face's `tokenizers` crate (its ids equal Python's). 384 numbers per text.
//!
//! An item's embedding does not depend on which other items share its batch: texts are batched
//! only with texts of exactly the same token count, so there is no padding (padding changes the
//! last bits: 9e-8 measured, docs/torch.md), and a test checks that a batch gives the same bits as
//! each text alone. So a day embedded alone (the nightly run) equals that day inside a full run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use tokenizers::{Tokenizer, TruncationParams};

/// The longest input in tokens (sentence-transformers' `max_seq_length` for this model; the
/// package's tokenizer.json says 128, which sentence-transformers overrides).
pub const MAX_TOKENS: usize = 256;
/// Texts per forward pass (at most; a batch holds texts of one token count).
const BATCH: usize = 64;

pub struct MiniLm {
    module: tch::CModule,
    tokenizer: Tokenizer,
    device: tch::Device,
}

/// The two files a MiniLM folder must hold.
pub fn files(dir: &Path) -> [PathBuf; 2] {
    [dir.join("model.pt"), dir.join("tokenizer.json")]
}

impl MiniLm {
    pub fn load(dir: &Path, device: tch::Device) -> Result<MiniLm> {
        super::pin_cpu_threads();
        let [model, tokenizer_file] = files(dir);
        for file in [&model, &tokenizer_file] {
            if !file.exists() {
                bail!(
                    "{} does not exist: run scripts/setup-libtorch.sh, which traces the model into .venv-torch/minilm (docs/torch.md)",
                    file.display()
                );
            }
        }
        let mut tokenizer = Tokenizer::from_file(&tokenizer_file).map_err(|e| {
            anyhow!("{}: not a tokenizer.json the tokenizers crate reads: {e}", tokenizer_file.display())
        })?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..Default::default() }))
            .map_err(|e| anyhow!("{e}"))?;
        let module = tch::CModule::load_on_device(&model, device)
            .with_context(|| format!("{}: LibTorch could not load this TorchScript module", model.display()))?;
        Ok(MiniLm { module, tokenizer, device })
    }

    /// One L2-normalised 384-vector per text, in the order given.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut encoded = Vec::with_capacity(texts.len());
        for text in texts {
            let encoding =
                self.tokenizer.encode(text.as_str(), true).map_err(|e| anyhow!("tokenising {text:?}: {e}"))?;
            encoded.push(encoding.get_ids().iter().map(|&id| id as i64).collect::<Vec<i64>>());
        }
        // Texts grouped by token count, each group in batches: no padding anywhere.
        let mut by_length: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, ids) in encoded.iter().enumerate() {
            by_length.entry(ids.len()).or_default().push(i);
        }
        let mut out = vec![Vec::new(); texts.len()];
        let _guard = tch::no_grad_guard();
        for (length, members) in by_length {
            for chunk in members.chunks(BATCH) {
                let flat: Vec<i64> = chunk.iter().flat_map(|&i| encoded[i].iter().copied()).collect();
                let ids = tch::Tensor::from_slice(&flat).view([chunk.len() as i64, length as i64]).to(self.device);
                let mask = tch::Tensor::ones([chunk.len() as i64, length as i64], (tch::Kind::Int64, self.device));
                let embedded = self.module.forward_ts(&[ids, mask])?.to(tch::Device::Cpu).to_kind(tch::Kind::Float);
                let values = Vec::<f32>::try_from(embedded.flatten(0, -1))?;
                if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
                    bail!(
                        "MiniLM gave a non-finite embedding for {:?}: the model files may be damaged (re-run scripts/setup-libtorch.sh)",
                        texts[chunk[bad / (values.len() / chunk.len())]]
                    );
                }
                let dim = values.len() / chunk.len();
                for (row, &i) in chunk.iter().enumerate() {
                    out[i] = values[row * dim..(row + 1) * dim].to_vec();
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model folder scripts/setup-libtorch.sh made, or a printed reason to skip (a failure
    /// where PIPELINE_REQUIRE_OPTIONAL is set, as in `.ci/run`).
    fn model_dir() -> Option<PathBuf> {
        let dir = std::env::var("PIPELINE_MINILM_DIR").ok().map(PathBuf::from);
        match dir.filter(|d| d.join("model.pt").exists()) {
            Some(dir) => Some(dir),
            None if std::env::var_os("PIPELINE_REQUIRE_OPTIONAL").is_some() => {
                panic!("PIPELINE_MINILM_DIR has no model.pt: run scripts/setup-libtorch.sh")
            }
            None => {
                eprintln!("skipped: PIPELINE_MINILM_DIR has no model.pt (scripts/setup-libtorch.sh makes it)");
                None
            }
        }
    }

    fn reference() -> Vec<(String, Vec<f64>)> {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/minilm_reference.json"))
            .expect("tests/data/minilm_reference.json");
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        doc["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                let vector = row["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
                (row["text"].as_str().unwrap().to_string(), vector)
            })
            .collect()
    }

    #[test]
    fn embeddings_match_sentence_transformers_to_1e_6() {
        let Some(dir) = model_dir() else { return };
        let model = MiniLm::load(&dir, tch::Device::Cpu).unwrap();
        let rows = reference();
        let texts: Vec<String> = rows.iter().map(|(t, _)| t.clone()).collect();
        let ours = model.embed(&texts).unwrap();
        let mut worst = 0.0f64;
        for ((text, expected), got) in rows.iter().zip(&ours) {
            assert_eq!(got.len(), expected.len(), "{text:?}");
            for (a, b) in got.iter().zip(expected) {
                worst = worst.max((*a as f64 - b).abs());
            }
        }
        eprintln!("MiniLM, Rust vs sentence-transformers, {} texts: max abs diff {worst:.2e}", rows.len());
        assert!(worst <= 1e-6, "max abs diff {worst}");
    }

    /// Batching never changes an item's bits: a day embedded alone equals that day in a full run.
    #[test]
    fn an_embedding_does_not_depend_on_its_batch() {
        let Some(dir) = model_dir() else { return };
        let model = MiniLm::load(&dir, tch::Device::Cpu).unwrap();
        let texts: Vec<String> = (0..70)
            .map(|i| format!("Headline {i}: bitcoin {} as traders weigh the news", ["rises", "falls"][i % 2]))
            .chain(["A different length entirely, with more words in it.".to_string()])
            .collect();
        let together = model.embed(&texts).unwrap();
        for (i, text) in texts.iter().enumerate().step_by(7) {
            let alone = model.embed(std::slice::from_ref(text)).unwrap();
            assert_eq!(alone[0], together[i], "text {i}");
        }
    }

    #[test]
    fn a_missing_model_says_how_to_make_it() {
        let err = MiniLm::load(Path::new("/nonexistent/minilm"), tch::Device::Cpu).err().unwrap();
        let message = format!("{err:#}");
        assert!(message.contains("/nonexistent/minilm/model.pt") && message.contains("setup-libtorch.sh"), "{message}");
    }
}
