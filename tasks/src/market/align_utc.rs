//! `align_utc`: sorts bars, drops duplicates, and puts them on a regular UTC grid.

use anyhow::{Result, bail};
use pipeline_artifacts::{ArtifactKind, read_table, write_table};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::columns::{OPTIONAL_FLOW, OPTIONAL_STATE, numeric_column};
use super::time::Span;
use pipeline_engine::partitions::{History, Reach};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    /// Stop with an error naming both rows.
    Error,
    /// Keep the row that comes first in the input.
    First,
    /// Keep the row that comes last in the input.
    Last,
}

/// Puts bars on a regular UTC grid.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlignUtcParams {
    /// Grid step in seconds (60 when neither this nor `step` is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_seconds: Option<u64>,
    /// Grid step as a length of time: "1m", "15m", "1h", "1d", "1w" (weeks start on Monday) or
    /// "1mo" (calendar months); instead of `step_seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// What to do with two rows at the same time whose values differ (identical rows are always dropped and counted).
    #[serde(default = "default_conflict")]
    pub on_conflict: OnConflict,
    /// Longest gap to fill, as a length of time ("6h"): a longer gap (an exchange outage) is left
    /// out of the grid instead of filled with a flat price, counted and warned about. Unset:
    /// every gap is filled. Needed for `partition`, where it bounds how far back a day reaches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fill: Option<String>,
}

impl AlignUtcParams {
    /// `max_fill` in ms, with the grid's fixed step; validated.
    pub fn max_fill_ms(&self) -> Result<Option<(i64, i64)>, String> {
        let Some(text) = &self.max_fill else { return Ok(None) };
        let limit = Span::parse(text)?.fixed_ms().ok_or("a number of minutes, hours or days (not months)")?;
        let step = self.span()?.fixed_ms().ok_or("max_fill needs a fixed grid step (not calendar months)")?;
        if limit < 0 {
            return Err("must not be negative".into());
        }
        Ok(Some((limit, step)))
    }

    /// The grid step; validated.
    pub fn span(&self) -> Result<Span, String> {
        match (&self.step, self.step_seconds) {
            (Some(_), Some(_)) => Err("give `step` or `step_seconds`, not both".into()),
            (Some(text), None) => Span::parse(text),
            (None, Some(seconds)) => Ok(Span::Millis(seconds as i64 * 1000)),
            (None, None) => Ok(Span::MINUTE),
        }
    }
}
fn default_conflict() -> OnConflict {
    OnConflict::Error
}

pub struct AlignUtc;

#[derive(Default)]
struct Stats {
    exact_duplicates: u64,
    conflicting_duplicates: u64,
    off_grid_rows: u64,
    merged_rows: u64,
    gaps: u64,
    filled: u64,
    longest_gap_steps: u64,
    out_of_order: u64,
    unfilled_gaps: u64,
    unfilled_steps: u64,
}

impl Stage for AlignUtc {
    type Params = AlignUtcParams;
    const NAME: &'static str = "align_utc";
    // 2: any input time unit, a cap on the grid size, `rows_out_of_order` counts rows.
    // 3: `step` in time units and calendar months; nulls stay null (never NaN).
    const VERSION: u32 = 3;
    const DOC: &'static str = "Sort bars by UTC time, drop duplicates, and put them on a regular grid (1 minute by default).\n\n\
        Identical rows at one time are dropped and counted; rows at one time with different values follow \
        `on_conflict` (an error by default, naming both source rows). Rows between grid points are merged into \
        their minute (open first, high max, low min, close last, flows summed, levels last). Missing minutes are \
        filled: prices carried forward from the last close (open = high = low = close), volume and other flows 0, \
        book and funding levels carried forward, and `was_filled = true`. A row stamped t is the bar that opens \
        at t (the exchanges' convention): merged from finer rows, it is complete only at t + step, which the \
        leakage audit of `align_utc` itself therefore reports; 1-minute input is never merged. Metrics: duplicates, conflicts, gaps, \
        filled minutes, the longest gap.\n\n\
        The step is `step_seconds` or `step` (\"15m\", \"1h\", \"1d\", \"1w\" from Monday, \"1mo\" for calendar months); a \
        28- to 31-day step is refused (it is not a month). A null value (a field `ingest_bars` nulled) stays null; a missing \
        step after it takes the last close that is a number.";
    const EXAMPLE: &'static str = r#"[stages.bars]
task = "ingest_bars"
params = { path = "prices.csv" }

[stages.aligned]
task = "align_utc"
inputs = ["bars"]
params = { on_conflict = "last" }
"#;

    fn history(params: &AlignUtcParams) -> Result<History, String> {
        match params.max_fill_ms()? {
            // A filled step reaches back to the bar before its gap and forward to the one after.
            Some((limit, step)) => Ok(History {
                lookback: Reach::millis(limit + step),
                lookahead: Reach::millis(limit + step),
                ..History::ROW_LOCAL
            }),
            None => Err("it fills gaps of any length from the close before them; set params.max_fill (e.g. \"6h\") so that a day depends on a bounded stretch of time".into()),
        }
    }

    fn validate(params: &AlignUtcParams) -> Result<(), ParamError> {
        params.max_fill_ms().map_err(|e| ParamError::new("max_fill", e))?;
        let which = if params.step.is_some() { "step" } else { "step_seconds" };
        let span = params.span().map_err(|e| ParamError::new(which, e))?;
        match span {
            Span::Millis(ms) if ms < 1000 => Err(ParamError::new(which, "must be at least one second")),
            // A month is not a fixed length: a 30- or 31-day step drifts across month ends, so two
            // monthly bars land in one slot (merged: one looks ahead at the other) or a month is skipped.
            Span::Millis(ms) if (28 * 86_400_000..=31 * 86_400_000).contains(&ms) => Err(ParamError::new(
                which,
                format!(
                    "a step of {} days is not a month: monthly bars would merge or skip a month; write step = \"1mo\" for calendar months",
                    ms / 86_400_000
                ),
            )),
            _ => Ok(()),
        }
    }

    fn outputs(_params: &AlignUtcParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("table", ArtifactKind::Table)]
    }

    fn check_inputs(_params: &AlignUtcParams, inputs: &[InputInfo]) -> Result<(), String> {
        super::one_table(inputs, Self::NAME)
    }

    fn run(params: &AlignUtcParams, ctx: &mut StageContext) -> Result<()> {
        let input = read_table(&ctx.inputs()[0].path)?;
        let span = params.span().map_err(anyhow::Error::msg)?;
        let n = input.height();
        if n == 0 {
            bail!("input `{}` has no rows", ctx.inputs()[0].name);
        }
        // Any time unit in, milliseconds here: the grid is in ms.
        let ts_series = input.column("timestamp")?.as_materialized_series();
        let ts_ms = match ts_series.dtype() {
            DataType::Datetime(_, tz) => ts_series.cast(&DataType::Datetime(TimeUnit::Milliseconds, tz.clone()))?,
            other => bail!("input column `timestamp` has type {other}; feed the output of ingest_bars"),
        };
        let ts_physical = ts_ms.to_physical_repr();
        let ts_values = ts_physical.i64()?;
        if ts_values.null_count() > 0 {
            let row = ts_values.iter().position(|v| v.is_none()).unwrap_or(0);
            bail!("input row {} has no timestamp", row + 1);
        }
        let ts: Vec<i64> = ts_values.iter().map(|v| v.unwrap_or(0)).collect();
        let value_names: Vec<&str> = ["open", "high", "low", "close", "volume"]
            .into_iter()
            .chain(OPTIONAL_FLOW.iter().chain(OPTIONAL_STATE).copied().filter(|c| input.column(c).is_ok()))
            .collect();
        let mut values: Vec<Vec<f64>> = Vec::with_capacity(value_names.len());
        for name in &value_names {
            values.push(numeric_column(input.column(name)?, "input", name, 1)?);
        }
        let origin = |i: usize| -> String {
            match (input.column("source_file"), input.column("source_row")) {
                (Ok(file), Ok(row)) => {
                    let file = file.get(i).map(|v| v.to_string().trim_matches('"').to_string()).unwrap_or_default();
                    let row = row.get(i).map(|v| v.to_string()).unwrap_or_default();
                    format!("{file} row {row}")
                }
                _ => format!("input row {}", i + 1),
            }
        };
        let mut stats = Stats::default();
        // Stable sort keeps input order among equal times: `first`/`last` mean input order.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| ts[i]);
        // Rows that come after a later time in the input.
        let mut latest = i64::MIN;
        for &t in &ts {
            if t < latest {
                stats.out_of_order += 1;
            }
            latest = latest.max(t);
        }

        // 1. Duplicates at the same instant.
        let mut kept: Vec<usize> = Vec::with_capacity(n);
        let same_values = |a: usize, b: usize| values.iter().all(|v| v[a] == v[b] || (v[a].is_nan() && v[b].is_nan()));
        let mut idx = 0;
        while idx < order.len() {
            let mut end = idx + 1;
            while end < order.len() && ts[order[end]] == ts[order[idx]] {
                end += 1;
            }
            let group = &order[idx..end];
            let mut distinct: Vec<usize> = Vec::new();
            for &row in group {
                if distinct.iter().any(|&d| same_values(d, row)) {
                    stats.exact_duplicates += 1;
                } else {
                    distinct.push(row);
                }
            }
            if distinct.len() > 1 {
                stats.conflicting_duplicates += distinct.len() as u64 - 1;
                match params.on_conflict {
                    OnConflict::Error => {
                        let when = chrono::DateTime::from_timestamp_millis(ts[distinct[0]])
                            .map(|t| t.to_string())
                            .unwrap_or_default();
                        bail!(
                            "two rows at {when} disagree: {} and {}\nhint: set params.on_conflict = \"first\" or \"last\" to keep one, or fix the source",
                            origin(distinct[0]),
                            origin(distinct[1])
                        );
                    }
                    OnConflict::First => kept.push(distinct[0]),
                    OnConflict::Last => kept.push(*distinct.last().expect("not empty")),
                }
            } else {
                kept.push(distinct[0]);
            }
            idx = end;
        }

        // 2. Merge rows within one grid step, then fill the grid.
        let is_flow: Vec<bool> = value_names.iter().map(|n| *n == "volume" || OPTIONAL_FLOW.contains(n)).collect();
        let pos = |name: &str| value_names.iter().position(|n| *n == name).expect("core column");
        let (open, high, low, close) = (pos("open"), pos("high"), pos("low"), pos("close"));
        let first_slot = span.slot_start(ts[kept[0]]);
        let last_slot = span.slot_start(ts[*kept.last().expect("not empty")]);
        let n_slots = match span.fixed_ms() {
            Some(step) => ((last_slot - first_slot) / step + 1) as usize,
            None => {
                let mut count = 1usize;
                let mut slot = first_slot;
                while slot < last_slot && count <= MAX_SLOTS {
                    slot = span.add_to(slot);
                    count += 1;
                }
                count
            }
        };
        // A stray timestamp (epoch 0, a unit mix-up) would ask for decades of minutes.
        const MAX_SLOTS: usize = 50_000_000;
        if n_slots > MAX_SLOTS {
            let show = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_string()).unwrap_or_default();
            bail!(
                "the times span {} .. {} ({n_slots} grid steps, more than {MAX_SLOTS}): first {}, last {}\nhint: look for a stray or mis-scaled timestamp (declare params.timestamp_unit in ingest_bars)",
                show(first_slot),
                show(last_slot),
                origin(kept[0]),
                origin(*kept.last().expect("not empty"))
            );
        }
        let mut out_ts: Vec<i64> = Vec::with_capacity(n_slots);
        let mut out: Vec<Vec<f64>> = vec![Vec::with_capacity(n_slots); value_names.len()];
        let mut filled: Vec<bool> = Vec::with_capacity(n_slots);
        // The last close that is a number: a missing step's price (a null close stays null).
        let mut last_close = f64::NAN;
        let mut last_close_slot = i64::MIN;
        let max_fill = params.max_fill_ms().map_err(anyhow::Error::msg)?;
        let mut prev_slot = first_slot;
        let mut in_hole = false;
        let mut k = 0;
        let mut slot = first_slot;
        for slot_idx in 0..n_slots {
            if slot_idx > 0 {
                slot = span.add_to(slot);
            }
            let start = k;
            while k < kept.len() && span.slot_start(ts[kept[k]]) == slot {
                if ts[kept[k]] != slot {
                    stats.off_grid_rows += 1;
                }
                k += 1;
            }
            let rows = &kept[start..k];
            if rows.is_empty() {
                if let Some((limit, step)) = max_fill {
                    // A gap longer than max_fill is left out (k < kept.len(): the last slot has rows).
                    let next_slot = span.slot_start(ts[kept[k]]);
                    if next_slot - prev_slot - step > limit {
                        if !in_hole {
                            stats.unfilled_gaps += 1;
                        }
                        in_hole = true;
                        stats.unfilled_steps += 1;
                        continue;
                    }
                }
                // The last close, but with max_fill only one from within reach.
                let carried = match max_fill {
                    Some((limit, step)) if slot - last_close_slot > limit + step => f64::NAN,
                    _ => last_close,
                };
                out_ts.push(slot);
                // A missing step: no trade happened, the price is the last close.
                for (c, column) in out.iter_mut().enumerate() {
                    let previous = column[column.len() - 1];
                    column.push(if is_flow[c] {
                        0.0
                    } else if c == open || c == high || c == low || c == close {
                        carried
                    } else {
                        previous
                    });
                }
                if filled.last() == Some(&false) {
                    stats.gaps += 1;
                }
                filled.push(true);
                stats.filled += 1;
                continue;
            }
            out_ts.push(slot);
            prev_slot = slot;
            in_hole = false;
            if rows.len() > 1 {
                stats.merged_rows += rows.len() as u64 - 1;
            }
            // NaN stands for null here (inputs hold no NaN: `numeric_column` refuses them).
            let finite_or_nan = |v: f64| if v.is_finite() { v } else { f64::NAN };
            for (c, column) in out.iter_mut().enumerate() {
                let series = &values[c];
                let value = if c == open {
                    series[rows[0]]
                } else if c == high {
                    finite_or_nan(rows.iter().map(|&r| series[r]).fold(f64::NEG_INFINITY, f64::max))
                } else if c == low {
                    finite_or_nan(rows.iter().map(|&r| series[r]).fold(f64::INFINITY, f64::min))
                } else if is_flow[c] {
                    rows.iter().map(|&r| series[r]).sum()
                } else {
                    series[*rows.last().expect("not empty")]
                };
                column.push(value);
            }
            if out[close].last().is_some_and(|c| c.is_finite()) {
                last_close = out[close][out[close].len() - 1];
                last_close_slot = slot;
            }
            filled.push(false);
        }
        // Every row between grid points, none merged: whole bars on another grid (daily bars of
        // another zone's day, stamped at 15:00 UTC). Put in the slot that starts before them,
        // each would seem complete at the slot's end, before the bar closed: a look-ahead.
        if kept.len() >= 2 && stats.off_grid_rows == kept.len() as u64 && stats.merged_rows == 0 {
            let first =
                chrono::DateTime::from_timestamp_millis(ts[kept[0]]).map(|t| t.to_rfc3339()).unwrap_or_default();
            bail!(
                "every row lies between grid points (the first at {first}, {}) and none shares a step: these are whole bars on another grid, and placing each in the step that starts before it would date it before it closed\nhint: use a step the bars fit, or read day-stamped bars in the zone whose days they are (ingest_bars params.timezone) only when the grid is that zone's days; for UTC days, stamp them in UTC",
                origin(kept[0])
            );
        }
        let mut run = 0u64;
        for &f in &filled {
            run = if f { run + 1 } else { 0 };
            stats.longest_gap_steps = stats.longest_gap_steps.max(run);
        }

        let out_ts_len = out_ts.len();
        if stats.unfilled_gaps > 0 {
            ctx.warn(format!(
                "{} gap(s) longer than max_fill = {} left out of the grid ({} steps); rows before and after them are not neighbours",
                stats.unfilled_gaps,
                params.max_fill.as_deref().unwrap_or_default(),
                stats.unfilled_steps
            ));
        }
        let mut columns: Vec<Column> = vec![
            Series::new("timestamp".into(), out_ts)
                .cast(&DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC)))?
                .into(),
        ];
        for (name, column) in value_names.iter().zip(out) {
            let column: Vec<Option<f64>> = column.into_iter().map(|v| v.is_finite().then_some(v)).collect();
            columns.push(Series::new((*name).into(), column).into());
        }
        columns.push(Series::new("was_filled".into(), filled).into());
        let rows_out = out_ts_len;
        let mut df = DataFrame::new(rows_out, columns)?;
        ctx.metric("rows_in", n as u64);
        ctx.metric("rows_out", rows_out as u64);
        if max_fill.is_some() {
            ctx.metric("unfilled_gaps", stats.unfilled_gaps);
            ctx.metric("unfilled_steps", stats.unfilled_steps);
        }
        ctx.metric("rows_out_of_order", stats.out_of_order);
        ctx.metric("exact_duplicates_dropped", stats.exact_duplicates);
        ctx.metric("conflicting_duplicates", stats.conflicting_duplicates);
        ctx.metric("rows_merged_into_a_step", stats.merged_rows);
        ctx.metric("off_grid_rows", stats.off_grid_rows);
        ctx.metric("gaps", stats.gaps);
        ctx.metric("filled_steps", stats.filled);
        ctx.metric("longest_gap_steps", stats.longest_gap_steps);
        write_table(&mut df, &ctx.output_path("table")?)
    }
}
