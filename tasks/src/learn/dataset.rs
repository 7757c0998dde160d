//! From the stage's input tables to the numbers a model sees: one frame joined on `timestamp`,
//! the feature columns picked by name patterns, a binary label, and a time split with a purge
//! gap. Everything that could leak is decided here, so it is tested here.

use anyhow::{Result, anyhow, bail};
use chrono::{DateTime, NaiveDate, Utc};
use pipeline_artifacts::read_table;
use polars::prelude::*;

use crate::market::labels::LABEL_PREFIX;

/// Which part of the time split a row belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Valid,
    Test,
    /// Inside a purge gap: its label looks into the next split, so no split may use it.
    Purged,
    /// Outside the fold's windows (before its training window, after its test window, or in
    /// the embargo after a test window).
    Outside,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
            Split::Purged => "purged",
            Split::Outside => "outside",
        }
    }
}

/// The model's view of the data, column-major, nulls as NaN, rows in time order.
#[derive(Debug)]
pub struct Dataset {
    /// Milliseconds since the epoch, UTC, strictly increasing.
    pub timestamps: Vec<i64>,
    pub features: Vec<String>,
    /// One vector per feature, all of `timestamps.len()`.
    pub columns: Vec<Vec<f64>>,
    pub label: Vec<bool>,
    /// The volatility column used for the high-volatility metrics (NaN where unknown).
    pub vol: Vec<f64>,
    pub split: Vec<Split>,
    /// The split boundaries (ms): train before the first, test from the second (for a fold:
    /// the start of validation and the start of the test window).
    pub train_until: i64,
    pub valid_until: i64,
    /// The row of the joined table each row came from (rows with a null label are not here).
    /// Sequence models build their windows over the joined table's rows through it: a window
    /// over labelled rows only would skip rows whose label is null because of what prices did
    /// after the row being predicted, a look-ahead.
    pub frame_rows: Vec<usize>,
}

impl Dataset {
    pub fn rows(&self, split: Split) -> Vec<usize> {
        (0..self.split.len()).filter(|&i| self.split[i] == split).collect()
    }
}

/// Reads every input table and joins them on `timestamp`, the first input's rows leading
/// (left join). A column other than `timestamp` in two inputs is an error, not a silent pick.
pub fn join_inputs(inputs: &[(String, std::path::PathBuf)]) -> Result<DataFrame> {
    let utc = DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC));
    let mut joined: Option<DataFrame> = None;
    let mut owner: Vec<(String, String)> = Vec::new();
    for (name, path) in inputs {
        let mut frame = read_table(path)?;
        let ts = frame
            .column("timestamp")
            .map_err(|_| anyhow!("input `{name}` ({}) has no `timestamp` column", path.display()))?;
        if !matches!(ts.dtype(), DataType::Datetime(..)) {
            bail!("input `{name}` column `timestamp` has type {}, not a datetime", ts.dtype());
        }
        let cast = ts.cast(&utc)?;
        frame.with_column(cast)?;
        // One chunk per column: a table read from several row groups or partitions is
        // multi-chunk, and polars' chunked gather behind the join does not implement every
        // dtype (it panics on an Int8 label over a year of rows).
        frame.rechunk_mut_par();
        for column in frame.get_column_names() {
            if column.as_str() == "timestamp" {
                continue;
            }
            if let Some((_, first)) = owner.iter().find(|(c, _)| c == column.as_str()) {
                bail!(
                    "column `{column}` is in inputs `{first}` and `{name}`: drop it from one of them (a `select` stage) so that the model reads one of them on purpose"
                );
            }
            owner.push((column.to_string(), name.clone()));
        }
        joined = Some(match joined {
            None => frame,
            Some(left) => left
                .lazy()
                .join(frame.lazy(), [col("timestamp")], [col("timestamp")], JoinArgs::new(JoinType::Left))
                .collect()?,
        });
    }
    let joined = joined.ok_or_else(|| anyhow!("`train` needs at least one input table"))?;
    Ok(joined.sort(["timestamp"], SortMultipleOptions::default())?)
}

/// Picks feature columns: numeric columns matching any `include` pattern and no `exclude`
/// pattern, in the frame's column order. `timestamp`, the label, and every `label_*` column
/// are never features; a pattern without wildcards that names one is an error.
pub fn select_features(
    frame: &DataFrame,
    include: &[String],
    exclude: &[String],
    label: &str,
) -> Result<(Vec<String>, Vec<String>)> {
    let compile = |patterns: &[String], what: &str| -> Result<Vec<glob::Pattern>> {
        patterns
            .iter()
            .map(|p| glob::Pattern::new(p).map_err(|e| anyhow!("{what} pattern `{p}` is not a valid glob: {e}")))
            .collect()
    };
    let includes = compile(include, "features")?;
    let excludes = compile(exclude, "exclude")?;
    for pattern in include {
        let literal = !pattern.contains(['*', '?', '[']);
        if literal && (pattern.starts_with(LABEL_PREFIX) || pattern == label) {
            bail!(
                "`{pattern}` is a label column and cannot be a feature: labels look into the future. Remove it from `features`"
            );
        }
        if literal && frame.column(pattern).is_err() {
            bail!("feature `{pattern}` is not a column of the inputs (columns: {})", column_list(frame));
        }
    }
    let mut chosen = Vec::new();
    let mut skipped = Vec::new();
    for column in frame.columns() {
        let name = column.name().as_str();
        if name == "timestamp" || name == label || name.starts_with(LABEL_PREFIX) {
            continue;
        }
        if !includes.iter().any(|p| p.matches(name)) || excludes.iter().any(|p| p.matches(name)) {
            continue;
        }
        if column.dtype().is_primitive_numeric() || column.dtype() == &DataType::Boolean {
            chosen.push(name.to_string());
        } else {
            skipped.push(name.to_string());
        }
    }
    Ok((chosen, skipped))
}

fn column_list(frame: &DataFrame) -> String {
    let names: Vec<String> = frame.get_column_names().iter().map(|c| c.to_string()).collect();
    if names.len() > 12 {
        format!("{}, ... ({} in all)", names[..12].join(", "), names.len())
    } else {
        names.join(", ")
    }
}

/// A column as f64 with nulls (and non-finite values) as NaN.
pub fn column_f64(frame: &DataFrame, name: &str) -> Result<Vec<f64>> {
    let series = frame.column(name)?.as_materialized_series().cast(&DataType::Float64)?;
    Ok(series.f64()?.iter().map(|v| v.filter(|x| x.is_finite()).unwrap_or(f64::NAN)).collect())
}

/// The label as booleans; `None` where it is null. Anything but 0/1 is refused.
pub fn binary_label(frame: &DataFrame, label: &str) -> Result<Vec<Option<bool>>> {
    let column = frame.column(label).map_err(|_| {
        let labels: Vec<String> =
            frame.get_column_names().iter().filter(|c| c.starts_with(LABEL_PREFIX)).map(|c| c.to_string()).collect();
        anyhow!(
            "label `{label}` is not a column of the inputs (label columns: {}); wire a `labels` stage in",
            if labels.is_empty() { "none".to_string() } else { labels.join(", ") }
        )
    })?;
    let values = column.as_materialized_series().cast(&DataType::Float64)?;
    let mut out = Vec::with_capacity(values.len());
    for (row, value) in values.f64()?.iter().enumerate() {
        out.push(match value {
            None => None,
            Some(0.0) => Some(false),
            Some(1.0) => Some(true),
            Some(v) => {
                bail!("label `{label}` row {} is {v}: `train` needs a binary 0/1 label such as `label_dir_15`", row + 1)
            }
        });
    }
    Ok(out)
}

/// How far a label looks ahead, from its name: `label_dir_15` is 15 bars (the `labels` stage
/// shifts by rows), `label_dir_4h` four hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelReach {
    Bars(i64),
    Millis(i64),
}

pub fn label_reach(label: &str) -> Option<LabelReach> {
    let suffix = label.rsplit('_').next()?;
    if let Ok(bars) = suffix.parse::<i64>() {
        return (bars > 0).then_some(LabelReach::Bars(bars));
    }
    match crate::market::time::Span::parse(suffix).ok()?.fixed_ms()? {
        ms if ms > 0 => Some(LabelReach::Millis(ms)),
        _ => None,
    }
}

/// The horizon in minutes from a label's name: `label_dir_15` -> 15 (bars, minutes on the
/// 1-minute grid), `label_dir_4h` -> 240.
pub fn horizon_from_label(label: &str) -> Option<i64> {
    match label_reach(label)? {
        LabelReach::Bars(bars) => Some(bars),
        LabelReach::Millis(ms) => Some((ms + 59_999) / 60_000),
    }
}

/// Parses a split boundary: RFC 3339 or a bare `YYYY-MM-DD` (midnight UTC).
pub fn parse_boundary(text: &str) -> Result<i64, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_millis());
    }
    Err(format!("`{text}` is not a date: write 2024-03-01 or 2024-03-01T00:00:00Z"))
}

pub fn format_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Where train ends and test begins: given dates, or fractions of the labelled time span rounded
/// down to a UTC day boundary (to the hour when the span is under a week).
pub fn boundaries(
    first: i64,
    last: i64,
    train_until: Option<&str>,
    valid_until: Option<&str>,
    fractions: (f64, f64),
) -> Result<(i64, i64)> {
    let span = last - first;
    let unit: i64 = if span >= 7 * 86_400_000 { 86_400_000 } else { 3_600_000 };
    let floor = |t: i64| t - t.rem_euclid(unit);
    let at = |f: f64| floor(first + (span as f64 * f) as i64);
    let train = match train_until {
        Some(t) => parse_boundary(t).map_err(|e| anyhow!("train_until: {e}"))?,
        None => at(fractions.0),
    };
    let valid = match valid_until {
        Some(t) => parse_boundary(t).map_err(|e| anyhow!("valid_until: {e}"))?,
        // After a given `train_until`, validation takes its share of the span from there.
        None if train_until.is_some() => floor(train + (span as f64 * fractions.1) as i64),
        None => at(fractions.0 + fractions.1),
    };
    if !(first < train && train < valid && valid <= last) {
        bail!(
            "the split does not fit the data: rows run {} .. {}, train until {}, validation until {}; move the boundaries inside the data and in order",
            format_ms(first),
            format_ms(last),
            format_ms(train),
            format_ms(valid)
        );
    }
    Ok((train, valid))
}

/// Assigns each row to a split. A row at `t` is purged when its label window reaches a boundary:
/// when `label_end` (the time of the last price its label reads) or `t + purge` is at or past
/// the next boundary. So no training label sees a validation or test price, whatever the grid.
pub fn assign_splits(
    timestamps: &[i64],
    label_ends: &[i64],
    train_until: i64,
    valid_until: i64,
    purge_ms: i64,
) -> Vec<Split> {
    timestamps
        .iter()
        .zip(label_ends)
        .map(|(&t, &end)| {
            let reach = end.max(t + purge_ms);
            if t < train_until {
                if reach < train_until { Split::Train } else { Split::Purged }
            } else if t < valid_until {
                if reach < valid_until { Split::Valid } else { Split::Purged }
            } else {
                Split::Test
            }
        })
        .collect()
}

/// A walk-forward fold as the engine hands it to a stage (`folds` in the pipeline file): the
/// training window (from `train_from`, or from the first row when expanding) ends where the
/// test window `[test_from, test_until)` starts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FoldWindow {
    /// The fold's name (its test start), as in the node name `train[fold=NAME]`.
    pub name: String,
    /// Start of training (RFC 3339); absent for an expanding window.
    #[serde(default)]
    pub train_from: Option<String>,
    /// Start of the test window (RFC 3339).
    pub test_from: String,
    /// End of the test window, exclusive (RFC 3339).
    pub test_until: String,
    /// Extra gap before the test window and before validation: a training row whose label
    /// interval ends within it of the next window is dropped too ("1h"; "0m" for none).
    pub purge: String,
    /// Rows starting within this long after the test window are never trained on.
    pub embargo: String,
}

/// A fold's boundaries in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoldBounds {
    pub train_from: Option<i64>,
    pub test_from: i64,
    pub test_until: i64,
    pub purge_ms: i64,
    pub embargo_ms: i64,
}

impl FoldWindow {
    pub fn bounds(&self) -> Result<FoldBounds, String> {
        let length = |text: &str| {
            crate::market::time::Span::parse(text)
                .and_then(|s| s.fixed_ms().ok_or_else(|| format!("`{text}` is not a fixed length")))
        };
        let zero = |text: &str| if text.trim().starts_with('0') { Ok(0) } else { length(text) };
        let bounds = FoldBounds {
            train_from: self.train_from.as_deref().map(parse_boundary).transpose()?,
            test_from: parse_boundary(&self.test_from)?,
            test_until: parse_boundary(&self.test_until)?,
            purge_ms: zero(&self.purge)?,
            embargo_ms: zero(&self.embargo)?,
        };
        if bounds.test_from >= bounds.test_until || bounds.train_from.is_some_and(|t| t >= bounds.test_from) {
            return Err(format!("fold `{}`: the windows are out of order", self.name));
        }
        Ok(bounds)
    }
}

/// Assigns each row to a split of a walk-forward fold, purging on label intervals: the row at
/// `t` reads prices up to `label_ends[i]`, so its interval is `[t, label_end]`.
///
/// - test: `test_from <= t < test_until` (every label of the window must be known: the caller
///   checks that the data reaches far enough);
/// - training window `[train_from, test_from)`: its first `1 - valid_share` is training, the rest
///   validation (early stopping); a row whose interval reaches the next window (validation for
///   a training row, test for a validation row), or comes within `purge` of it, is purged;
/// - embargo: rows starting in `[test_until, test_until + embargo)` are never trained on (they
///   only matter for layouts that train after a test window; walk-forward does not);
/// - everything else is outside the fold.
pub fn assign_fold_splits(timestamps: &[i64], label_ends: &[i64], fold: FoldBounds, valid_share: f64) -> Vec<Split> {
    let first = timestamps.first().copied().unwrap_or(fold.test_from);
    let train_from = fold.train_from.unwrap_or(first).max(first);
    let span = (fold.test_from - train_from).max(0);
    // Validation starts on a whole hour, so the split does not depend on the grid's phase.
    let raw = train_from + ((span as f64) * (1.0 - valid_share)) as i64;
    let valid_from = (raw - raw.rem_euclid(3_600_000)).max(train_from);
    timestamps
        .iter()
        .zip(label_ends)
        .map(|(&t, &end)| {
            let reach = end.max(t) + fold.purge_ms;
            if t >= fold.test_from && t < fold.test_until {
                Split::Test
            } else if t < train_from || t >= fold.test_from {
                // After the test window (embargo or not) nothing is trained on in walk-forward.
                Split::Outside
            } else if t < valid_from {
                if reach < valid_from { Split::Train } else { Split::Purged }
            } else if reach < fold.test_from {
                Split::Valid
            } else {
                Split::Purged
            }
        })
        .collect()
}

/// Timestamps of a frame's `timestamp` column in ms.
pub fn timestamps_ms(frame: &DataFrame) -> Result<Vec<i64>> {
    column_ms(frame, "timestamp")?
        .into_iter()
        .enumerate()
        .map(|(row, v)| v.ok_or_else(|| anyhow!("row {} has no timestamp", row + 1)))
        .collect()
}

/// A datetime column in ms (None where null), whatever unit it was written in.
pub fn column_ms(frame: &DataFrame, name: &str) -> Result<Vec<Option<i64>>> {
    let series = frame.column(name)?.as_materialized_series();
    // A table written elsewhere (pandas writes ns) is read in its own unit, then counted in ms.
    let series = match series.dtype() {
        DataType::Datetime(TimeUnit::Milliseconds, _) => series.clone(),
        DataType::Datetime(_, tz) => series.cast(&DataType::Datetime(TimeUnit::Milliseconds, tz.clone()))?,
        _ => series.clone(),
    };
    let ts = series.to_physical_repr().into_owned();
    Ok(ts.i64()?.iter().collect())
}

#[cfg(test)]
mod fold_props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// No training or validation label interval touches the test interval, and no training
        /// interval touches validation: the bug class of mlfinlab #295 and openquant #65.
        #[test]
        fn no_train_or_valid_label_interval_intersects_the_test_window(
            n in 50usize..400,
            step in prop_oneof![Just(60_000i64), Just(3_600_000i64)],
            gaps in prop::collection::vec(0i64..3, 400),
            horizons in prop::collection::vec(0i64..40, 400),
            test_at in 0.3f64..0.9,
            test_len in 1i64..50,
            train_len in prop::option::of(10i64..300),
            purge in 0i64..5,
            valid_share in 0.05f64..0.5,
        ) {
            // Irregular times (gaps up to 2 extra steps), label ends from a per-row horizon.
            let mut times = Vec::with_capacity(n);
            let mut t = 1_700_000_000_000i64;
            for gap in gaps.iter().take(n) {
                times.push(t);
                t += step * (1 + gap);
            }
            let ends: Vec<i64> = times.iter().zip(&horizons).map(|(&t, &h)| t + h * step).collect();
            let test_from = times[(n as f64 * test_at) as usize];
            let fold = FoldBounds {
                train_from: train_len.map(|l| test_from - l * step),
                test_from,
                test_until: test_from + test_len * step,
                purge_ms: purge * step,
                embargo_ms: 0,
            };
            let split = assign_fold_splits(&times, &ends, fold, valid_share);
            let valid_starts: Vec<i64> = (0..n).filter(|&i| split[i] == Split::Valid).map(|i| times[i]).collect();
            let valid_from = valid_starts.first().copied().unwrap_or(fold.test_from);
            for i in 0..n {
                match split[i] {
                    Split::Train => {
                        prop_assert!(ends[i] < fold.test_from, "train row {i} reaches the test window");
                        prop_assert!(ends[i] < valid_from, "train row {i} reaches validation");
                        prop_assert!(fold.train_from.is_none_or(|f| times[i] >= f));
                    }
                    Split::Valid => prop_assert!(ends[i] < fold.test_from, "valid row {i} reaches the test window"),
                    Split::Test => prop_assert!(times[i] >= fold.test_from && times[i] < fold.test_until),
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> DataFrame {
        let utc = DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC));
        df!(
            "timestamp" => [0i64, 60_000, 120_000],
            "ret_1" => [0.1, 0.2, 0.3],
            "news_count_60" => [1.0, 2.0, 3.0],
            "symbol" => ["a", "b", "c"],
            "label_dir_15" => [1i8, 0, 1],
            "label_ret_15" => [0.1, -0.1, 0.2],
        )
        .unwrap()
        .lazy()
        .with_column(col("timestamp").cast(utc))
        .collect()
        .unwrap()
    }

    #[test]
    fn patterns_pick_numeric_columns_and_never_labels() {
        let f = frame();
        let all = ["*".to_string()];
        let (chosen, skipped) = select_features(&f, &all, &[], "label_dir_15").unwrap();
        assert_eq!(chosen, ["ret_1", "news_count_60"]);
        assert_eq!(skipped, ["symbol"]);
        let (price_only, _) = select_features(&f, &all, &["news_*".to_string()], "label_dir_15").unwrap();
        assert_eq!(price_only, ["ret_1"]);
        let err = select_features(&f, &["label_ret_15".to_string()], &[], "label_dir_15").unwrap_err();
        assert!(err.to_string().contains("label column"), "{err}");
        let err = select_features(&f, &["ret_2".to_string()], &[], "label_dir_15").unwrap_err();
        assert!(err.to_string().contains("not a column"), "{err}");
    }

    /// Tables of more than one row group (a year of minutes) are multi-chunk when read; the
    /// join must not reach polars' chunked gather, which panics on Int8 (the label's type).
    #[test]
    fn joins_multi_chunk_tables_with_int8_columns() {
        let utc = DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC));
        let n = 600_000i64; // more than two row groups of 256 Ki rows
        let times: Vec<i64> = (0..n).map(|i| i * 60_000).collect();
        let dir = tempfile::tempdir().unwrap();
        let mut features =
            df!("timestamp" => &times, "ret_1" => times.iter().map(|&t| (t % 7) as f64).collect::<Vec<_>>())
                .unwrap()
                .lazy()
                .with_column(col("timestamp").cast(utc.clone()))
                .collect()
                .unwrap();
        // Labels in reverse order, so the left join has to gather across chunks.
        let rev: Vec<i64> = times.iter().rev().copied().collect();
        let mut labels = df!("timestamp" => &rev, "label_dir_15" => rev.iter().map(|&t| ((t / 60_000) % 2) as i8).collect::<Vec<_>>())
            .unwrap()
            .lazy()
            .with_column(col("timestamp").cast(utc))
            .collect()
            .unwrap();
        let (f, l) = (dir.path().join("f.parquet"), dir.path().join("l.parquet"));
        pipeline_artifacts::write_table(&mut features, &f).unwrap();
        pipeline_artifacts::write_table(&mut labels, &l).unwrap();
        assert!(pipeline_artifacts::read_table(&l).unwrap().column("label_dir_15").unwrap().n_chunks() > 1);
        let joined = join_inputs(&[("features".into(), f), ("labels".into(), l)]).unwrap();
        assert_eq!(joined.height(), n as usize);
        let dir15 = joined.column("label_dir_15").unwrap().i8().unwrap();
        assert_eq!(dir15.get(3), Some(1));
        assert_eq!(dir15.get(4), Some(0));
    }

    #[test]
    fn labels_must_be_binary() {
        let f = frame();
        assert_eq!(binary_label(&f, "label_dir_15").unwrap(), [Some(true), Some(false), Some(true)]);
        let err = binary_label(&f, "label_ret_15").unwrap_err();
        assert!(err.to_string().contains("binary"), "{err}");
        let err = binary_label(&f, "label_dir_5").unwrap_err();
        assert!(err.to_string().contains("label_dir_15"), "{err}");
    }

    /// No training row's label window reaches the validation split, and none of validation's
    /// reaches test: the purge is at least the horizon.
    #[test]
    fn purge_keeps_label_windows_inside_their_split() {
        let minute = 60_000;
        let times: Vec<i64> = (0..1000).map(|i| i * minute).collect();
        let (train_until, valid_until) = (600 * minute, 800 * minute);
        for horizon in [1, 5, 15, 60] {
            let split = assign_splits(&times, &times, train_until, valid_until, horizon * minute);
            for (i, s) in split.iter().enumerate() {
                let label_end = times[i] + horizon * minute;
                match s {
                    Split::Train => assert!(label_end < train_until),
                    Split::Valid => assert!(times[i] >= train_until && label_end < valid_until),
                    Split::Test => assert!(times[i] >= valid_until),
                    Split::Purged => {}
                    Split::Outside => panic!("a time split leaves no row outside"),
                }
            }
            let purged = split.iter().filter(|s| **s == Split::Purged).count() as i64;
            assert_eq!(purged, 2 * horizon, "horizon {horizon}");
        }
        // A label computed over rows on a coarser grid reads further ahead than its minutes say:
        // the label end times, not the purge param, decide.
        let five: Vec<i64> = (0..1000).map(|i| i * 5 * minute).collect();
        let ends: Vec<i64> = (0..1000).map(|i| five[(i + 15).min(999)]).collect();
        let split = assign_splits(&five, &ends, 3000 * minute, 4000 * minute, 15 * minute);
        for (i, s) in split.iter().enumerate() {
            if *s == Split::Train {
                assert!(ends[i] < 3000 * minute);
            }
        }
        assert_eq!(split.iter().filter(|s| **s == Split::Purged).count(), 30);
    }

    #[test]
    fn fractions_round_to_day_boundaries() {
        let day = 86_400_000;
        let start = parse_boundary("2024-01-01").unwrap();
        let (train, valid) = boundaries(start, start + 90 * day - 60_000, None, None, (0.6, 0.2)).unwrap();
        assert_eq!(format_ms(train), "2024-02-23T00:00:00Z");
        assert_eq!(format_ms(valid), "2024-03-12T00:00:00Z");
        let (train, valid) = boundaries(start, start + 90 * day, Some("2024-02-01"), None, (0.6, 0.2)).unwrap();
        assert_eq!(
            (format_ms(train), format_ms(valid)),
            ("2024-02-01T00:00:00Z".into(), "2024-02-19T00:00:00Z".into())
        );
        let err = boundaries(start, start + 10 * day, Some("2024-02-01"), None, (0.6, 0.2)).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
        assert_eq!(horizon_from_label("label_dir_15"), Some(15));
        assert_eq!(horizon_from_label("label_up"), None);
        assert_eq!(horizon_from_label("label_dir_4h"), Some(240));
        assert_eq!(label_reach("label_dir_4h"), Some(LabelReach::Millis(4 * 3_600_000)));
        assert_eq!(label_reach("label_dir_5"), Some(LabelReach::Bars(5)));
    }
}
