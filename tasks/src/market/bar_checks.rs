//! Value checks on raw bars, before anything computes on them: a NaN, an inf, a price at or
//! below zero, a high under the open or close, a negative volume, a missing field or a time
//! outside the plausible range is never let through as a number. The `bad_rows` policy says
//! what happens to such a row: stop (naming file, row, column and value), drop it (counted per
//! reason), or keep it with the bad field null (counted per reason).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What to do with a row that fails a value check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BadRows {
    /// Stop, naming the file, row, column and value (the default: nothing is lost silently).
    Error,
    /// Drop the row; the drops are counted per reason in the metrics and printed after the run.
    Drop,
    /// Keep the row with the bad field null (a row whose time is bad is dropped: it has no place).
    Null,
}

/// Why a row or a field was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    BadTimestamp,
    TimeOutOfRange,
    NotANumber,
    MissingValue,
    NonFinite,
    NonPositivePrice,
    NegativeValue,
    HighBelowOpenOrClose,
    LowAboveOpenOrClose,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadTimestamp => "bad_timestamp",
            Reason::TimeOutOfRange => "time_out_of_range",
            Reason::NotANumber => "not_a_number",
            Reason::MissingValue => "missing_value",
            Reason::NonFinite => "non_finite",
            Reason::NonPositivePrice => "non_positive_price",
            Reason::NegativeValue => "negative_value",
            Reason::HighBelowOpenOrClose => "high_below_open_or_close",
            Reason::LowAboveOpenOrClose => "low_above_open_or_close",
        }
    }

    fn says(self) -> &'static str {
        match self {
            Reason::BadTimestamp => "is not a time",
            Reason::TimeOutOfRange => "is outside params.time_range",
            Reason::NotANumber => "is not a number",
            Reason::MissingValue => "is missing (an empty field, or a short row)",
            Reason::NonFinite => "is not a finite number",
            Reason::NonPositivePrice => "is a price at or below zero",
            Reason::NegativeValue => "is negative",
            Reason::HighBelowOpenOrClose => "is a high below the open or the close",
            Reason::LowAboveOpenOrClose => "is a low above the open or the close",
        }
    }

    /// Problems of the row's time: the row cannot be kept with that field null.
    fn is_row_level(self) -> bool {
        matches!(self, Reason::BadTimestamp | Reason::TimeOutOfRange)
    }
}

/// A row's time in ms, or the text as written and why it is not a time.
pub type RowTime = Result<i64, (String, String)>;

/// One field as read from a file.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Number(f64),
    Missing,
    /// Text that does not parse as a number.
    Text(String),
}

/// A source column headed for a canonical column, with the rule its values follow.
pub struct RawColumn {
    pub canonical: &'static str,
    /// The column's name in the file, for messages.
    pub source: String,
    pub cells: Vec<Cell>,
    pub rule: ValueRule,
}

/// What a column's values must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueRule {
    /// A price: finite and above zero; a missing value is a problem.
    Price,
    /// A quantity (volume, trades, open interest): finite and zero or more; missing is a problem.
    Quantity,
    /// An optional price level (bid, ask): finite and above zero when present; missing is null.
    OptionalPrice,
    /// An optional quantity: finite and zero or more when present; missing is null.
    OptionalQuantity,
    /// An optional signed level (funding rate): finite when present; missing is null.
    OptionalSigned,
}

/// The first problem found: what an `error` policy reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub row: usize,
    pub column: String,
    pub value: String,
    pub reason: Reason,
}

impl Finding {
    /// `row N, column `c`: `v` is negative`, for an error or a warning (the caller adds the file
    /// and turns `row` into a line number).
    pub fn describe(&self, line: usize) -> String {
        format!("row {line}, column `{}`: `{}` {}", self.column, self.value, self.reason.says())
    }
}

/// Rows checked under a policy.
#[derive(Debug, Default)]
pub struct Checked {
    /// Per row: kept?
    pub keep: Vec<bool>,
    /// Per column (in the order given), the values of every row (dropped rows included), null
    /// where the value is missing or was nulled.
    pub values: Vec<Vec<Option<f64>>>,
    /// Rows dropped, per reason (the first problem of each row).
    pub dropped: BTreeMap<&'static str, u64>,
    /// Fields nulled, per reason (`null` policy).
    pub nulled: BTreeMap<&'static str, u64>,
    /// The first problem of all, with its row.
    pub first: Option<Finding>,
}

/// Checks every row. `times` holds the parsed time of each row (or why it did not parse, with
/// the text); `range` is the plausible time range `[from, until)` in ms. Under `Error` the first
/// problem is returned as `Err`.
pub fn check_rows(
    times: &[RowTime],
    time_column: &str,
    range: (i64, i64),
    columns: &[RawColumn],
    policy: BadRows,
) -> Result<Checked, Finding> {
    let n = times.len();
    let mut out = Checked {
        keep: vec![true; n],
        values: columns.iter().map(|_| Vec::with_capacity(n)).collect(),
        ..Checked::default()
    };
    let index = |name: &str| columns.iter().position(|c| c.canonical == name);
    let (open, high, low, close) = (index("open"), index("high"), index("low"), index("close"));
    let show_time =
        |ms: i64| chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339()).unwrap_or_else(|| ms.to_string());
    for (row, time) in times.iter().enumerate() {
        let mut problems: Vec<(usize, Reason, String)> = Vec::new(); // column index (usize::MAX: time)
        match time {
            Err((text, _)) => problems.push((usize::MAX, Reason::BadTimestamp, text.clone())),
            Ok(t) if *t < range.0 || *t >= range.1 => {
                problems.push((usize::MAX, Reason::TimeOutOfRange, show_time(*t)))
            }
            Ok(_) => {}
        }
        let mut row_values: Vec<Option<f64>> = Vec::with_capacity(columns.len());
        for (c, column) in columns.iter().enumerate() {
            let optional = matches!(
                column.rule,
                ValueRule::OptionalPrice | ValueRule::OptionalQuantity | ValueRule::OptionalSigned
            );
            let value = match &column.cells[row] {
                Cell::Missing if optional => None,
                Cell::Missing => {
                    problems.push((c, Reason::MissingValue, String::new()));
                    None
                }
                Cell::Text(text) => {
                    problems.push((c, Reason::NotANumber, text.clone()));
                    None
                }
                Cell::Number(v) if !v.is_finite() => {
                    problems.push((c, Reason::NonFinite, v.to_string()));
                    None
                }
                Cell::Number(v) => match column.rule {
                    ValueRule::Price | ValueRule::OptionalPrice if *v <= 0.0 => {
                        problems.push((c, Reason::NonPositivePrice, v.to_string()));
                        None
                    }
                    ValueRule::Quantity | ValueRule::OptionalQuantity if *v < 0.0 => {
                        problems.push((c, Reason::NegativeValue, v.to_string()));
                        None
                    }
                    _ => Some(*v),
                },
            };
            row_values.push(value);
        }
        // The bar's own consistency, on the values that survived.
        let get = |i: Option<usize>| i.and_then(|i| row_values[i]);
        let (high_value, low_value) = (get(high), get(low));
        let body = [get(open), get(close)];
        let body_max = body.iter().flatten().copied().fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        let body_min = body.iter().flatten().copied().fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))));
        if let (Some(h), Some(top), Some(hi)) = (high_value, body_max, high)
            && h < top
        {
            problems.push((hi, Reason::HighBelowOpenOrClose, h.to_string()));
            row_values[hi] = None;
        }
        if let (Some(l), Some(bottom), Some(li)) = (low_value, body_min, low)
            && l > bottom
        {
            problems.push((li, Reason::LowAboveOpenOrClose, l.to_string()));
            row_values[li] = None;
        }
        if let Some((c, reason, value)) = problems.first() {
            let finding = Finding {
                row,
                column: if *c == usize::MAX { time_column.to_string() } else { columns[*c].source.clone() },
                value: value.clone(),
                reason: *reason,
            };
            if out.first.is_none() {
                out.first = Some(finding.clone());
            }
            match policy {
                BadRows::Error => return Err(finding),
                BadRows::Drop => {
                    out.keep[row] = false;
                    *out.dropped.entry(reason.as_str()).or_default() += 1;
                }
                BadRows::Null => {
                    if let Some((_, row_reason, _)) = problems.iter().find(|(_, r, _)| r.is_row_level()) {
                        out.keep[row] = false;
                        *out.dropped.entry(row_reason.as_str()).or_default() += 1;
                    } else {
                        for (_, reason, _) in &problems {
                            *out.nulled.entry(reason.as_str()).or_default() += 1;
                        }
                    }
                }
            }
        }
        for (c, value) in row_values.into_iter().enumerate() {
            out.values[c].push(value);
        }
    }
    Ok(out)
}

/// "3 rows (non_finite 1, non_positive_price 2)"; `what` is the singular ("row", "value").
pub fn summarize(counts: &BTreeMap<&'static str, u64>, what: &str) -> String {
    let total: u64 = counts.values().sum();
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    format!("{total} {what}{} ({})", if total == 1 { "" } else { "s" }, parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(rows: &[[Cell; 5]]) -> Vec<RawColumn> {
        let names = ["open", "high", "low", "close", "volume"];
        let rules = [ValueRule::Price, ValueRule::Price, ValueRule::Price, ValueRule::Price, ValueRule::Quantity];
        (0..5)
            .map(|c| RawColumn {
                canonical: names[c],
                source: names[c].to_uppercase(),
                cells: rows.iter().map(|r| r[c].clone()).collect(),
                rule: rules[c],
            })
            .collect()
    }

    fn n(v: f64) -> Cell {
        Cell::Number(v)
    }

    fn sample() -> (Vec<RowTime>, Vec<RawColumn>) {
        let rows = [
            [n(10.0), n(11.0), n(9.0), n(10.5), n(1.0)],                  // good
            [n(10.0), n(11.0), n(9.0), n(f64::NAN), n(1.0)],              // NaN close
            [n(10.0), n(11.0), n(9.0), n(f64::INFINITY), n(1.0)],         // inf close
            [n(10.0), n(11.0), n(-9.0), n(10.0), n(1.0)],                 // negative low
            [n(10.0), n(9.5), n(9.0), n(10.0), n(1.0)],                   // high below open
            [n(10.0), n(11.0), n(10.5), n(10.2), n(1.0)],                 // low above open and close
            [n(10.0), n(11.0), n(9.0), n(10.0), n(-1.0)],                 // negative volume
            [n(10.0), n(11.0), n(9.0), Cell::Missing, Cell::Missing],     // short row
            [n(10.0), Cell::Text("abc".into()), n(9.0), n(10.0), n(1.0)], // text
            [n(10.0), n(11.0), n(9.0), n(10.0), n(1.0)],                  // bad time
            [n(10.0), n(11.0), n(9.0), n(10.0), n(1.0)],                  // time out of range
        ];
        let mut times: Vec<RowTime> = (0..rows.len()).map(|i| Ok(1_000_000 + i as i64)).collect();
        times[9] = Err(("yesterday".into(), "not a time".into()));
        times[10] = Ok(0);
        (times, columns(&rows))
    }

    #[test]
    fn error_names_the_first_problem() {
        let (times, cols) = sample();
        let err = check_rows(&times, "ts", (1, i64::MAX), &cols, BadRows::Error).unwrap_err();
        assert_eq!(err, Finding { row: 1, column: "CLOSE".into(), value: "NaN".into(), reason: Reason::NonFinite });
        assert!(err.describe(3).contains("row 3, column `CLOSE`: `NaN` is not a finite number"));
    }

    #[test]
    fn drop_counts_each_row_once_by_its_first_reason() {
        let (times, cols) = sample();
        let checked = check_rows(&times, "ts", (1, i64::MAX), &cols, BadRows::Drop).unwrap();
        assert_eq!(checked.keep, [true, false, false, false, false, false, false, false, false, false, false]);
        let expected: BTreeMap<&str, u64> = [
            ("non_finite", 2),
            ("non_positive_price", 1),
            ("high_below_open_or_close", 1),
            ("low_above_open_or_close", 1),
            ("negative_value", 1),
            ("missing_value", 1),
            ("not_a_number", 1),
            ("bad_timestamp", 1),
            ("time_out_of_range", 1),
        ]
        .into_iter()
        .collect();
        assert_eq!(checked.dropped, expected);
        assert!(checked.nulled.is_empty());
    }

    #[test]
    fn null_keeps_the_row_and_nulls_only_the_bad_field() {
        let (times, cols) = sample();
        let checked = check_rows(&times, "ts", (1, i64::MAX), &cols, BadRows::Null).unwrap();
        // Rows with a bad time go; the others stay.
        assert_eq!(checked.keep.iter().filter(|k| !**k).count(), 2);
        assert_eq!(checked.values[3][1], None, "NaN close nulled");
        assert_eq!(checked.values[0][1], Some(10.0), "open kept");
        assert_eq!(checked.values[2][3], None, "negative low nulled");
        assert_eq!(checked.values[1][4], None, "high below the open nulled");
        assert_eq!(checked.values[2][5], None, "low above the body nulled");
        assert_eq!(checked.values[4][6], None, "negative volume nulled");
        assert_eq!(checked.nulled.values().sum::<u64>(), 9, "{:?}", checked.nulled);
        assert_eq!(checked.nulled["missing_value"], 2);
        // No value that survives is a non-finite number.
        assert!(checked.values.iter().flatten().flatten().all(|v| v.is_finite()));
    }

    #[test]
    fn optional_columns_may_be_missing_but_not_bad() {
        let cols = vec![
            RawColumn {
                canonical: "bid",
                source: "bid".into(),
                cells: vec![Cell::Missing, n(-1.0), n(5.0)],
                rule: ValueRule::OptionalPrice,
            },
            RawColumn {
                canonical: "funding_rate",
                source: "f".into(),
                cells: vec![n(-0.001), Cell::Missing, n(f64::NAN)],
                rule: ValueRule::OptionalSigned,
            },
        ];
        let times = vec![Ok(10), Ok(11), Ok(12)];
        let checked = check_rows(&times, "ts", (0, 100), &cols, BadRows::Drop).unwrap();
        assert_eq!(checked.keep, [true, false, false]);
        assert_eq!(checked.values[1][0], Some(-0.001), "a negative funding rate is fine");
    }
}
