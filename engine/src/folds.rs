//! Walk-forward folds: a stage declares `folds = { start, until, train, test, step, purge,
//! embargo }` and becomes one node per fold, named by its test window (`train[fold=2023-03-15]`).
//!
//! A fold moves several params together (where training starts, where testing starts and ends),
//! which a cartesian `matrix` cannot say; this module turns the calendar declaration into the
//! list of folds, and the graph gives each fold a node (crossed with the stage's matrix, if any).
//!
//! Invariants: the folds are a pure function of the declaration (after `${params.*}` and `--set`),
//! never of data, so `status` and `dag` show them before anything runs; a later `until` only adds
//! folds at the end, and every earlier fold keeps its name and its params, so it stays cached.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

/// The keys a `folds` table may have.
pub const FOLD_KEYS: &[&str] = &["start", "until", "train", "test", "step", "purge", "embargo", "param"];

/// Most folds one stage may declare (each is at least one node).
pub const MAX_FOLDS: usize = 10_000;

/// One fold: its name (the start of its test window) and the params table its node receives.
#[derive(Debug, Clone, PartialEq)]
pub struct Fold {
    pub name: String,
    pub value: toml::Value,
}

/// The folds of a declaration, and the param they are given to (`fold` unless `param` says).
#[derive(Debug, Clone, PartialEq)]
pub struct Folds {
    pub param: String,
    pub folds: Vec<Fold>,
}

/// A problem with one key of the declaration (the key, for the caret; empty for the table).
#[derive(Debug, Clone, PartialEq)]
pub struct FoldError {
    pub key: String,
    pub message: String,
}

fn err(key: &str, message: impl Into<String>) -> FoldError {
    FoldError { key: key.to_string(), message: message.into() }
}

/// A fixed length of time: `"90s"`, `"30m"`, `"4h"`, `"1d"`, `"2w"` (calendar months are not
/// fixed, and folds step by fixed lengths so that every fold is the same size).
pub fn parse_length(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let digits = text.chars().take_while(|c| c.is_ascii_digit()).count();
    let (number, unit) = text.split_at(digits);
    let number: i64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a length of time: write e.g. \"30m\", \"4h\", \"1d\", \"2w\""))?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        "mo" | "y" => return Err(format!("`{text}`: folds step by fixed lengths; write days or weeks (\"30d\")")),
        other => return Err(format!("`{text}`: unknown unit `{other}`; use s, m, h, d or w")),
    };
    number.checked_mul(unit_ms).ok_or_else(|| format!("`{text}` is too long"))
}

/// `2023-03-15` (midnight UTC) or RFC 3339.
pub fn parse_instant(text: &str) -> Result<i64, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.timestamp_millis());
    }
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_millis())
        .map_err(|_| format!("`{text}` is not a date: write 2023-03-15 or 2023-03-15T06:00:00Z"))
}

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

/// The fold's name: its test start, as a date when it starts at midnight.
fn fold_name(ms: i64) -> String {
    let Some(t) = DateTime::<Utc>::from_timestamp_millis(ms) else { return ms.to_string() };
    if ms.rem_euclid(86_400_000) == 0 {
        t.format("%Y-%m-%d").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M").to_string()
    }
}

fn length_label(ms: i64) -> String {
    for (unit, size) in [("w", 7 * 86_400_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Expands a `folds` table (values already substituted).
///
/// Test windows are `[start + k*step, start + k*step + test)` for k = 0, 1, ... while the window
/// ends at or before `until`. Training is the `train` length before the test window, or
/// everything before it (`train = "expanding"`). `purge` and `embargo` are handed to the stage,
/// which drops training rows by their label intervals (see `train`).
pub fn expand(table: &toml::Table) -> Result<Folds, Vec<FoldError>> {
    let mut errors = Vec::new();
    for key in table.keys() {
        if !FOLD_KEYS.contains(&key.as_str()) {
            errors.push(err(key, format!("unknown key `{key}` in `folds` (keys: {})", FOLD_KEYS.join(", "))));
        }
    }
    let text = |key: &str| -> Option<String> {
        match table.get(key) {
            Some(toml::Value::String(s)) => Some(s.clone()),
            Some(toml::Value::Datetime(d)) => Some(d.to_string()),
            _ => None,
        }
    };
    let need_instant = |key: &str, errors: &mut Vec<FoldError>| -> Option<i64> {
        match text(key) {
            None => {
                errors.push(err(key, format!("`folds.{key}` is required: a date such as \"2023-03-15\"")));
                None
            }
            Some(t) => parse_instant(&t).map_err(|e| errors.push(err(key, e))).ok(),
        }
    };
    let start = need_instant("start", &mut errors);
    let until = need_instant("until", &mut errors);
    let length = |key: &str, default: Option<i64>, errors: &mut Vec<FoldError>| -> Option<i64> {
        match text(key) {
            None if table.contains_key(key) => {
                errors.push(err(key, format!("`folds.{key}` must be a length of time such as \"1d\"")));
                None
            }
            None => default,
            Some(t) => match parse_length(&t) {
                Ok(ms) => Some(ms),
                Err(e) => {
                    errors.push(err(key, e));
                    None
                }
            },
        }
    };
    let test = length("test", Some(86_400_000), &mut errors);
    let step = length("step", test, &mut errors);
    let purge = length("purge", Some(0), &mut errors);
    let embargo = length("embargo", Some(0), &mut errors);
    let train = match text("train").as_deref() {
        None if table.contains_key("train") => {
            errors.push(err("train", "`folds.train` is a length (\"30d\") or \"expanding\""));
            None
        }
        None => {
            errors.push(err("train", "`folds.train` is required: a length such as \"30d\", or \"expanding\""));
            None
        }
        Some("expanding") => Some(None),
        Some(t) => match parse_length(t) {
            Ok(ms) => Some(Some(ms)),
            Err(e) => {
                errors.push(err("train", e));
                None
            }
        },
    };
    let param = match table.get("param") {
        None => "fold".to_string(),
        Some(toml::Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => {
            errors.push(err("param", "`folds.param` names the param each fold sets, e.g. \"fold\""));
            "fold".to_string()
        }
    };
    for (key, value) in [("test", test), ("step", step)] {
        if value.is_some_and(|v| v <= 0) {
            errors.push(err(key, format!("`folds.{key}` must be longer than zero")));
        }
    }
    if let (Some(s), Some(u)) = (start, until)
        && s >= u
    {
        errors.push(err(
            "until",
            format!("`folds.until` ({}) must come after `folds.start` ({})", rfc3339(u), rfc3339(s)),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let (start, until, test, step, purge, embargo, train) = (
        start.expect("checked"),
        until.expect("checked"),
        test.expect("checked"),
        step.expect("checked"),
        purge.expect("checked"),
        embargo.expect("checked"),
        train.expect("checked"),
    );
    let mut folds = Vec::new();
    let mut test_from = start;
    while test_from + test <= until {
        if folds.len() >= MAX_FOLDS {
            return Err(vec![err(
                "step",
                format!("more than {MAX_FOLDS} folds; lengthen `folds.step` or shorten the range"),
            )]);
        }
        let mut value = toml::Table::new();
        value.insert("name".into(), toml::Value::String(fold_name(test_from)));
        if let Some(length) = train {
            value.insert("train_from".into(), toml::Value::String(rfc3339(test_from - length)));
        }
        value.insert("test_from".into(), toml::Value::String(rfc3339(test_from)));
        value.insert("test_until".into(), toml::Value::String(rfc3339(test_from + test)));
        value.insert("purge".into(), toml::Value::String(length_label(purge.max(0))));
        value.insert("embargo".into(), toml::Value::String(length_label(embargo.max(0))));
        folds.push(Fold { name: fold_name(test_from), value: toml::Value::Table(value) });
        test_from += step;
    }
    if folds.is_empty() {
        return Err(vec![err(
            "until",
            format!(
                "no fold fits: the first test window {} .. {} ends after `folds.until` {}",
                rfc3339(start),
                rfc3339(start + test),
                rfc3339(until)
            ),
        )]);
    }
    Ok(Folds { param, folds })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn daily_folds_end_at_until_and_a_later_until_only_adds_folds() {
        let spec = "start = \"2024-02-01\"\nuntil = \"2024-02-04\"\ntrain = \"30d\"\ntest = \"1d\"\npurge = \"1h\"";
        let folds = expand(&table(spec)).unwrap();
        let names: Vec<&str> = folds.folds.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["2024-02-01", "2024-02-02", "2024-02-03"]);
        let first = folds.folds[0].value.as_table().unwrap();
        assert_eq!(first["train_from"].as_str(), Some("2024-01-02T00:00:00Z"));
        assert_eq!(first["test_from"].as_str(), Some("2024-02-01T00:00:00Z"));
        assert_eq!(first["test_until"].as_str(), Some("2024-02-02T00:00:00Z"));
        assert_eq!(first["purge"].as_str(), Some("1h"));
        let later = expand(&table(&spec.replace("2024-02-04", "2024-02-05"))).unwrap();
        assert_eq!(later.folds.len(), 4);
        assert_eq!(&later.folds[..3], &folds.folds[..], "earlier folds keep their names and params");
    }

    #[test]
    fn expanding_training_and_sub_day_tests() {
        let spec =
            "start = \"2024-02-01T00:00:00Z\"\nuntil = \"2024-02-01T12:00:00Z\"\ntrain = \"expanding\"\ntest = \"6h\"";
        let folds = expand(&table(spec)).unwrap();
        assert_eq!(folds.folds.len(), 2);
        assert_eq!(folds.folds[1].name, "2024-02-01T06:00");
        assert!(folds.folds[0].value.as_table().unwrap().get("train_from").is_none());
    }

    #[test]
    fn every_bad_key_is_reported() {
        let errors = expand(&table("start = \"yesterday\"\nuntil = \"2024-02-01\"\ntest = \"1mo\"\nsteps = \"1d\""))
            .unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["steps", "start", "test", "train"], "{errors:?}");
        let none =
            expand(&table("start = \"2024-02-01\"\nuntil = \"2024-02-01T12:00:00Z\"\ntrain = \"1d\"")).unwrap_err();
        assert!(none[0].message.contains("no fold fits"), "{none:?}");
    }
}
