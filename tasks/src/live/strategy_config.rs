//! The live strategy's config (`trading_strategies_dynamic.json`, shaped like
//! pipelines/examples/trading_strategies_dynamic.json): read it, check the fields the patches
//! touch (every problem with the file, line, JSON pointer and value), and write a patched copy
//! with its RFC 6902 JSON Patch and a readable diff; in place only when asked, atomically, with
//! a backup. Fields this module does not know are kept as they are.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::Value;

/// The base a patch is computed from when the config is patched in place: the config as it was
/// before the first in-place write. Patches are always base -> patched, so a relative change
/// (a longer cooldown) never compounds night after night, and a normal night restores the base.
pub fn base_path(config: &Path) -> PathBuf {
    let mut name = config.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".base");
    config.with_file_name(name)
}

/// blake3 of the content the last in-place write left: a config that no longer matches it was
/// edited by hand since, and its edits become the new base instead of being patched away.
pub fn written_path(config: &Path) -> PathBuf {
    let mut name = config.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".written");
    config.with_file_name(name)
}

/// The config a patch starts from: the base kept by in-place writes while the config is what
/// the last write left; the config itself otherwise (no in-place write yet, or edited since).
/// The flag says whether the config was edited since the last in-place write.
pub fn patch_source(config: &Path) -> (PathBuf, bool) {
    let base = base_path(config);
    if !base.exists() {
        return (config.to_path_buf(), false);
    }
    // One hash, or two while a write is under way (see `write_in_place`).
    let last = std::fs::read_to_string(written_path(config)).unwrap_or_default();
    let now = std::fs::read(config).map(|b| blake3::hash(&b).to_hex().to_string()).unwrap_or_default();
    if last.lines().any(|l| l.trim() == now) { (base, false) } else { (config.to_path_buf(), true) }
}

/// The previous content, kept by each in-place write.
pub fn backup_path(config: &Path) -> PathBuf {
    let mut name = config.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".bak");
    config.with_file_name(name)
}

/// A config read and checked, with its text (for locating problems) and where it came from.
pub struct StrategyConfig {
    pub value: Value,
    pub path: PathBuf,
}

/// The line (1-based) of the key a JSON pointer ends at, found by following its keys through
/// the text in order. serde_json's `Value` keeps no spans; this is enough to point an editor at
/// the right line (an array element points at its array's key).
fn line_of(text: &str, pointer: &str) -> Option<usize> {
    let mut at = 0;
    for key in pointer.split('/').skip(1) {
        if key.parse::<usize>().is_ok() {
            continue;
        }
        let quoted = format!("\"{}\"", key.replace("~1", "/").replace("~0", "~"));
        at += text[at..].find(&quoted)?;
        at += quoted.len();
    }
    Some(text[..at].matches('\n').count() + 1)
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The checks on the fields the patches read or write; every problem, not the first.
fn problems(value: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let Some(root) = value.as_object() else {
        return vec![(String::new(), "the config must be a JSON object".into())];
    };
    let number = |v: &Value, ok: &dyn Fn(f64) -> bool| v.as_f64().is_some_and(ok);
    let mut max_leverage = f64::INFINITY;
    if let Some(risk) = root.get("risk") {
        match risk.as_object() {
            None => out.push(("/risk".into(), "must be an object".into())),
            Some(risk) => {
                if let Some(v) = risk.get("max_leverage") {
                    match v.as_f64() {
                        Some(x) if x >= 1.0 => max_leverage = x,
                        _ => out.push(("/risk/max_leverage".into(), "a number, at least 1".into())),
                    }
                }
                if let Some(v) = risk.get("leverage_buckets") {
                    let buckets: Option<Vec<f64>> = v.as_array().and_then(|a| a.iter().map(Value::as_f64).collect());
                    match buckets {
                        Some(b)
                            if !b.is_empty() && b.iter().all(|x| *x >= 1.0) && b.windows(2).all(|w| w[0] < w[1]) => {}
                        _ => out.push((
                            "/risk/leverage_buckets".into(),
                            "a non-empty list of increasing numbers, each at least 1, e.g. [1, 2, 3, 5]".into(),
                        )),
                    }
                }
            }
        }
    }
    let regimes: Option<Vec<&str>> = match root.get("regimes") {
        None => None,
        Some(v) => match v.as_array().and_then(|a| a.iter().map(Value::as_str).collect::<Option<Vec<_>>>()) {
            Some(r) => Some(r),
            None => {
                out.push(("/regimes".into(), "a list of regime names (strings)".into()));
                None
            }
        },
    };
    match root.get("strategies").and_then(Value::as_object) {
        None => out.push(("/strategies".into(), "an object of strategies by name is required".into())),
        Some(strategies) if strategies.is_empty() => {
            out.push(("/strategies".into(), "names no strategy".into()));
        }
        Some(strategies) => {
            for (name, strategy) in strategies {
                let at = format!("/strategies/{}", escape(name));
                let Some(s) = strategy.as_object() else {
                    out.push((at, "a strategy must be an object".into()));
                    continue;
                };
                let mut field = |key: &str, ok: bool, message: &str| {
                    if s.contains_key(key) && !ok {
                        out.push((format!("{at}/{key}"), message.to_string()));
                    }
                };
                let get = |key: &str| s.get(key).unwrap_or(&Value::Null);
                field("enabled", get("enabled").is_boolean(), "true or false");
                field(
                    "direction_bias",
                    matches!(get("direction_bias").as_str(), Some("long" | "short" | "neutral")),
                    "one of \"long\", \"short\", \"neutral\"",
                );
                field(
                    "min_direction_score",
                    number(get("min_direction_score"), &|x| (0.0..=1.0).contains(&x)),
                    "a score from 0 to 1",
                );
                field(
                    "position_size_multiplier",
                    number(get("position_size_multiplier"), &|x| (0.0..=10.0).contains(&x)),
                    "a multiplier from 0 to 10",
                );
                field(
                    "leverage",
                    number(get("leverage"), &|x| x >= 1.0 && x <= max_leverage),
                    &format!("a number from 1 to risk.max_leverage ({max_leverage})"),
                );
                field("take_profit_pct", number(get("take_profit_pct"), &|x| x > 0.0), "a positive percentage");
                field("stop_loss_pct", number(get("stop_loss_pct"), &|x| x > 0.0), "a positive percentage");
                field("cooldown_seconds", number(get("cooldown_seconds"), &|x| x >= 0.0), "seconds, at least 0");
                let mut lists: Vec<Vec<&str>> = Vec::new();
                for key in ["regime_whitelist", "regime_blacklist"] {
                    let Some(v) = s.get(key) else { continue };
                    match v.as_array().and_then(|a| a.iter().map(Value::as_str).collect::<Option<Vec<_>>>()) {
                        None => out.push((format!("{at}/{key}"), "a list of regime names (strings)".into())),
                        Some(list) => {
                            if let Some(known) = &regimes {
                                for (i, r) in list.iter().enumerate() {
                                    if !known.contains(r) {
                                        out.push((
                                            format!("{at}/{key}/{i}"),
                                            format!("`{r}` is not one of `regimes` ({})", known.join(", ")),
                                        ));
                                    }
                                }
                            }
                            lists.push(list);
                        }
                    }
                }
                if let [white, black] = lists.as_slice() {
                    for r in white.iter().filter(|r| black.contains(r)) {
                        out.push((
                            format!("{at}/regime_blacklist"),
                            format!("`{r}` is in both the whitelist and the blacklist"),
                        ));
                    }
                }
            }
        }
    }
    if let Some(event) = root.get("event_mode") {
        match event.as_object() {
            None => out.push(("/event_mode".into(), "must be an object".into())),
            Some(e) => {
                let get = |key: &str| e.get(key).unwrap_or(&Value::Null);
                let mut field = |key: &str, ok: bool, message: &str| {
                    if e.contains_key(key) && !ok {
                        out.push((format!("/event_mode/{key}"), message.to_string()));
                    }
                };
                field("enabled", get("enabled").is_boolean(), "true or false");
                field(
                    "leverage",
                    number(get("leverage"), &|x| x >= 1.0 && x <= max_leverage),
                    &format!("a number from 1 to risk.max_leverage ({max_leverage})"),
                );
                field(
                    "position_size_multiplier",
                    number(get("position_size_multiplier"), &|x| (0.0..=10.0).contains(&x)),
                    "a multiplier from 0 to 10",
                );
                field(
                    "margin_mode",
                    matches!(get("margin_mode").as_str(), Some("cross" | "isolated")),
                    "\"cross\" or \"isolated\"",
                );
                field(
                    "stop_after_consecutive_losses",
                    get("stop_after_consecutive_losses").as_u64().is_some_and(|n| n >= 1),
                    "a whole number, at least 1",
                );
            }
        }
    }
    out
}

impl StrategyConfig {
    /// Reads and checks a config file; an error names the file, the line, the JSON pointer, the
    /// value found and what is expected, for every problem.
    pub fn read(path: &Path) -> Result<StrategyConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the strategy config {}", path.display()))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| anyhow!("{}:{}:{}: not valid JSON: {e}", path.display(), e.line(), e.column()))?;
        StrategyConfig::checked(value, &text, path)
    }

    /// A config already parsed (an upstream stage's patched copy), checked the same way.
    pub fn checked(value: Value, text: &str, path: &Path) -> Result<StrategyConfig> {
        let found = problems(&value);
        if !found.is_empty() {
            let lines: Vec<String> = found
                .iter()
                .map(|(pointer, message)| {
                    let line = line_of(text, pointer).map(|l| format!(":{l}")).unwrap_or_default();
                    let value = value.pointer(pointer).map(|v| format!(" = {v}")).unwrap_or_default();
                    format!(
                        "{}{line}: {}{value}: {message}",
                        path.display(),
                        if pointer.is_empty() { "/" } else { pointer }
                    )
                })
                .collect();
            bail!(
                "the strategy config has {} problem{}:\n  {}\nfix them in the file (docs/live.md lists every field the patches read)",
                found.len(),
                if found.len() == 1 { "" } else { "s" },
                lines.join("\n  ")
            );
        }
        Ok(StrategyConfig { value, path: path.to_path_buf() })
    }
}

/// One field changed by a patch, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// JSON pointer.
    pub pointer: String,
    pub value: Value,
    pub why: String,
}

/// Sets a field (creating it when the parent object lacks it).
pub fn apply(config: &mut Value, changes: &[Change]) -> Result<()> {
    for change in changes {
        let (parent, key) = change.pointer.rsplit_once('/').ok_or_else(|| anyhow!("bad pointer {}", change.pointer))?;
        let object = config.pointer_mut(parent).and_then(Value::as_object_mut).ok_or_else(|| {
            anyhow!("{} is not an object of the config", if parent.is_empty() { "/" } else { parent })
        })?;
        object.insert(key.replace("~1", "/").replace("~0", "~"), change.value.clone());
    }
    Ok(())
}

/// The three outputs of a patch: the patched copy, the RFC 6902 patch from the base, and the
/// readable diff (one line per changed field: old -> new, and why).
pub struct PatchFiles {
    pub patched: Value,
    pub patch: Value,
    pub diff: String,
}

pub fn patch_files(base: &Value, patched: Value, changes: &[Change], header: &str) -> Result<PatchFiles> {
    let patch = serde_json::to_value(json_patch::diff(base, &patched))?;
    let mut diff = String::from(header);
    let mut shown = 0;
    for change in changes {
        let old = base.pointer(&change.pointer);
        let new = patched.pointer(&change.pointer);
        if old == new {
            continue;
        }
        shown += 1;
        let words = |v: Option<&Value>| v.map_or("(absent)".to_string(), |v| v.to_string());
        diff.push_str(&format!(
            "{}: {} -> {}   ({})\n",
            change.pointer.trim_start_matches('/').replace('/', "."),
            words(old),
            words(new),
            change.why
        ));
    }
    if shown == 0 {
        diff.push_str("no change: the patch is empty\n");
    }
    Ok(PatchFiles { patched, patch, diff })
}

/// Writes `patched` over the config: the base kept (`<config>.base`: the config before the first
/// in-place write), the previous content as `<config>.bak`, then
/// the new content through a temporary file in the same folder, synced and renamed over the
/// config, so a kill at any instant leaves the old or the new file whole. A symlinked config is
/// written at its target; the file keeps its permissions.
pub fn write_in_place(config: &Path, patched: &Value) -> Result<()> {
    let config = std::fs::canonicalize(config).with_context(|| format!("cannot read {}", config.display()))?;
    let dir = config.parent().unwrap_or(Path::new("."));
    // Temporary files of a write killed before its rename: never read, removed here.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with(".pipeline-") && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let current = std::fs::read(&config).with_context(|| format!("cannot read {}", config.display()))?;
    let base = base_path(&config);
    if !base.exists() {
        atomic_write(dir, &base, &current)?;
    }
    atomic_write(dir, &backup_path(&config), &current)?;
    let mut bytes = serde_json::to_vec_pretty(patched)?;
    bytes.push(b'\n');
    // The marker names both contents while the config is replaced, then the new one alone: a
    // kill between the two renames must not make our own write look like a hand edit.
    let (new_hash, current_hash) = (blake3::hash(&bytes).to_hex(), blake3::hash(&current).to_hex());
    atomic_write(dir, &written_path(&config), format!("{new_hash}\n{current_hash}\n").as_bytes())?;
    atomic_write(dir, &config, &bytes)?;
    atomic_write(dir, &written_path(&config), format!("{new_hash}\n").as_bytes())
}

fn atomic_write(dir: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let mut tmp = tempfile::Builder::new()
        .prefix(".pipeline-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    // The file keeps its permissions; a new one is 0644 (a temporary file is created 0600,
    // which a live engine running as another user could not read).
    match std::fs::metadata(dest) {
        Ok(meta) => std::fs::set_permissions(tmp.path(), meta.permissions())?,
        #[cfg(unix)]
        Err(_) => {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))?
        }
        #[cfg(not(unix))]
        Err(_) => {}
    }
    tmp.as_file().sync_all()?;
    tmp.persist(dest).with_context(|| format!("cannot write {}", dest.display()))?;
    // The rename itself is durable once the folder is synced.
    if let Ok(folder) = std::fs::File::open(dir) {
        let _ = folder.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/examples/trading_strategies_dynamic.json")
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let config = StrategyConfig::read(&example()).unwrap();
        assert_eq!(config.value["strategies"].as_object().unwrap().len(), 3);
    }

    #[test]
    fn every_problem_is_named_with_its_line_pointer_and_value() {
        let text = std::fs::read_to_string(example()).unwrap();
        let broken = text
            .replace(
                "\"leverage\": 3,\n      \"take_profit_pct\": 0.8",
                "\"leverage\": 25,\n      \"take_profit_pct\": 0.8",
            )
            .replace("\"min_direction_score\": 0.65", "\"min_direction_score\": 1.65")
            .replace("\"regime_blacklist\": [\"illiquid\"],", "\"regime_blacklist\": [\"illiquid\", \"trend_up\"],");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strategies.json");
        std::fs::write(&path, &broken).unwrap();
        let message = format!("{:#}", StrategyConfig::read(&path).err().unwrap());
        assert!(message.contains("has 3 problems"), "{message}");
        let file = path.display().to_string();
        assert!(
            message.contains(&format!(
                "{file}:24: /strategies/obi_vpin_momentum/leverage = 25: a number from 1 to risk.max_leverage (10)"
            )),
            "{message}"
        );
        assert!(
            message.contains("/strategies/liquidation_reversal/min_direction_score = 1.65: a score from 0 to 1"),
            "{message}"
        );
        assert!(message.contains("`trend_up` is in both the whitelist and the blacklist"), "{message}");

        std::fs::write(&path, text.replace("\"symbol\": \"BTCUSDT\",", "\"symbol\": \"BTCUSDT\"")).unwrap();
        let message = format!("{:#}", StrategyConfig::read(&path).err().unwrap());
        assert!(message.starts_with(&format!("{file}:5:")) && message.contains("not valid JSON"), "{message}");
    }

    #[test]
    fn in_place_keeps_the_base_and_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strategies.json");
        std::fs::copy(example(), &path).unwrap();
        let original = std::fs::read(&path).unwrap();
        let mut patched: Value = serde_json::from_slice(&original).unwrap();
        patched["strategies"]["obi_vpin_momentum"]["leverage"] = 2.into();
        write_in_place(&path, &patched).unwrap();
        assert_eq!(std::fs::read(base_path(&path)).unwrap(), original);
        assert_eq!(std::fs::read(backup_path(&path)).unwrap(), original);
        let written: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(written, patched);
        // A second write keeps the first base; the backup is the previous content.
        let previous = std::fs::read(&path).unwrap();
        patched["strategies"]["obi_vpin_momentum"]["leverage"] = 5.into();
        write_in_place(&path, &patched).unwrap();
        assert_eq!(std::fs::read(base_path(&path)).unwrap(), original);
        assert_eq!(std::fs::read(backup_path(&path)).unwrap(), previous);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
