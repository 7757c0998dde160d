//! Is the coming stretch an event day? The rules the plan names (high volatility, liquidation
//! pressure, the US equity open, user-listed windows such as FOMC), each judged from the bars
//! known at the decision time only. Shared by `bias` (its `event` mode) and `event_mode_patch`.

use chrono::{Datelike, TimeZone as _, Weekday};
use chrono_tz::America::New_York;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::learn::dataset::{format_ms, parse_boundary};

const DAY_MS: i64 = 86_400_000;

/// A window the user lists (an FOMC statement, a CPI print): an event when it overlaps the
/// stretch the decision is valid for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListedWindow {
    pub name: String,
    /// Start, RFC 3339 or `YYYY-MM-DD` (UTC midnight).
    pub from: String,
    /// Exclusive end.
    pub until: String,
}

/// What makes a day an event day. Every rule reads bars before the decision time only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventRules {
    /// Realized volatility of the last 24 hours at least this multiple of the median of the
    /// previous `baseline_days` 24-hour blocks.
    #[serde(default = "default_vol_ratio")]
    pub vol_ratio: f64,
    /// Liquidations (long + short) per unit of volume over the last 24 hours at least this
    /// multiple of the baseline median; needs `long_liquidations` and `short_liquidations` columns.
    #[serde(default = "default_liquidation_ratio")]
    pub liquidation_ratio: f64,
    /// 24-hour blocks the two ratios compare against (at least 3 with data, else no verdict).
    #[serde(default = "default_baseline_days")]
    pub baseline_days: u32,
    /// The US equity open (09:30 New York, weekdays) inside the validity window is an event.
    #[serde(default)]
    pub us_open: bool,
    /// Listed windows (FOMC, CPI, ...): `[{ name = "FOMC", from = "2024-03-20T18:00:00Z", until = "2024-03-20T20:00:00Z" }]`.
    #[serde(default)]
    pub windows: Vec<ListedWindow>,
}

fn default_vol_ratio() -> f64 {
    1.5
}
fn default_liquidation_ratio() -> f64 {
    2.0
}
fn default_baseline_days() -> u32 {
    14
}

impl Default for EventRules {
    fn default() -> EventRules {
        EventRules {
            vol_ratio: default_vol_ratio(),
            liquidation_ratio: default_liquidation_ratio(),
            baseline_days: default_baseline_days(),
            us_open: false,
            windows: Vec::new(),
        }
    }
}

impl EventRules {
    /// Problems as (param path under the rules, message).
    pub fn check(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if !(self.vol_ratio.is_finite() && self.vol_ratio > 0.0) {
            errors.push(("vol_ratio".into(), "a positive multiple, e.g. 1.5".into()));
        }
        if !(self.liquidation_ratio.is_finite() && self.liquidation_ratio > 0.0) {
            errors.push(("liquidation_ratio".into(), "a positive multiple, e.g. 2".into()));
        }
        if self.baseline_days < 3 {
            errors.push(("baseline_days".into(), "at least 3 (a median of fewer says little)".into()));
        }
        for (i, w) in self.windows.iter().enumerate() {
            match (parse_boundary(&w.from), parse_boundary(&w.until)) {
                (Ok(from), Ok(until)) if from < until => {}
                (Ok(_), Ok(_)) => errors.push((format!("windows[{i}]"), "`from` must be before `until`".into())),
                (Err(e), _) => errors.push((format!("windows[{i}].from"), e)),
                (_, Err(e)) => errors.push((format!("windows[{i}].until"), e)),
            }
        }
        errors
    }
}

/// The bars an event verdict reads: times (bar open, ms) with close, volume and, when known,
/// liquidations; only rows before the decision time are used.
pub struct EventBars<'a> {
    pub timestamps: &'a [i64],
    pub close: &'a [f64],
    pub volume: &'a [f64],
    /// Long + short liquidations per bar, when the data has them.
    pub liquidations: Option<&'a [f64]>,
}

/// The verdict for the stretch `[valid_from, valid_until)`, decided at `valid_from`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EventVerdict {
    pub is_event: bool,
    /// Last 24 hours' realized volatility over the baseline median (None: too little history).
    pub vol_ratio: Option<f64>,
    /// Last 24 hours' liquidations per volume over the baseline median (None: no liquidation
    /// data or too little history).
    pub liquidation_ratio: Option<f64>,
    /// Every rule's finding, met or not, in words.
    pub reasons: Vec<String>,
    /// The findings of the rules that fired (empty on an ordinary day).
    pub fired: Vec<String>,
}

/// Realized volatility (root mean squared one-bar log return: a day with missing bars is not
/// calmer for it) and liquidations per volume of the 24 hours before `end`; None where the
/// block has fewer than 2 bars.
fn block(bars: &EventBars, end: i64) -> (Option<f64>, Option<f64>) {
    let from = bars.timestamps.partition_point(|&t| t < end - DAY_MS);
    let until = bars.timestamps.partition_point(|&t| t < end);
    if until < from + 2 {
        return (None, None);
    }
    let r2: f64 = (from + 1..until).map(|i| (bars.close[i] / bars.close[i - 1]).ln().powi(2)).sum::<f64>()
        / (until - from - 1) as f64;
    let volume: f64 = bars.volume[from..until].iter().sum();
    let liq = bars.liquidations.and_then(|l| {
        let total: f64 = l[from..until].iter().sum();
        (volume > 0.0).then(|| total / volume)
    });
    (Some(r2.sqrt()), liq)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.len() < 3 {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 })
}

/// Every 09:30 New York on a weekday in `[from, until)`.
fn us_opens(from: i64, until: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let Some(start) = chrono::DateTime::from_timestamp_millis(from - DAY_MS) else { return out };
    let mut day = start.with_timezone(&New_York).date_naive();
    loop {
        if let Some(open) = New_York
            .from_local_datetime(&day.and_hms_opt(9, 30, 0).expect("a valid time"))
            .single()
            .map(|t| t.timestamp_millis())
        {
            if open >= until {
                break;
            }
            if open >= from && !matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
                out.push(open);
            }
        }
        match day.succ_opt() {
            Some(next) => day = next,
            None => break,
        }
    }
    out
}

/// Judges `[valid_from, valid_until)` from the bars before `valid_from`.
pub fn judge(rules: &EventRules, bars: &EventBars, valid_from: i64, valid_until: i64) -> EventVerdict {
    let mut reasons = Vec::new();
    let mut fired = Vec::new();
    let (vol, liq) = block(bars, valid_from);
    let earlier: Vec<(Option<f64>, Option<f64>)> =
        (1..=rules.baseline_days as i64).map(|k| block(bars, valid_from - k * DAY_MS)).collect();
    let vol_base = median(earlier.iter().filter_map(|b| b.0).collect());
    let vol_ratio = vol.zip(vol_base).and_then(|(v, b)| (b > 0.0).then(|| v / b));
    match vol_ratio {
        Some(r) if r >= rules.vol_ratio => {
            fired.push(reasons.len());
            reasons.push(format!(
                "high volatility: the last 24 hours' realized volatility is {r:.2}x the median of the {} days before (needs {:.2}x)",
                rules.baseline_days, rules.vol_ratio
            ));
        }
        Some(r) => {
            reasons.push(format!("volatility {r:.2}x the baseline median (an event needs {:.2}x)", rules.vol_ratio))
        }
        None => reasons.push("volatility: too little history for a baseline (fewer than 3 earlier days)".into()),
    }
    let liquidation_ratio = match bars.liquidations {
        None => {
            reasons.push("liquidation pressure: the bars have no liquidation columns".into());
            None
        }
        Some(_) => {
            let base = median(earlier.iter().filter_map(|b| b.1).collect());
            let ratio = liq.zip(base).and_then(|(v, b)| (b > 0.0).then(|| v / b));
            match ratio {
                Some(r) if r >= rules.liquidation_ratio => {
                    fired.push(reasons.len());
                    reasons.push(format!(
                        "liquidation pressure: liquidations per volume over the last 24 hours are {r:.2}x the baseline median (needs {:.2}x)",
                        rules.liquidation_ratio
                    ));
                }
                Some(r) => reasons.push(format!(
                    "liquidations {r:.2}x the baseline median (an event needs {:.2}x)",
                    rules.liquidation_ratio
                )),
                None => reasons.push("liquidation pressure: too little history for a baseline".into()),
            }
            ratio
        }
    };
    if rules.us_open {
        match us_opens(valid_from, valid_until).first() {
            Some(&open) => {
                fired.push(reasons.len());
                reasons.push(format!("the US equity open at {} is inside the window", format_ms(open)));
            }
            None => reasons.push("no US equity open inside the window".into()),
        }
    }
    for w in &rules.windows {
        // Checked by `EventRules::check` at plan time.
        let (Ok(from), Ok(until)) = (parse_boundary(&w.from), parse_boundary(&w.until)) else { continue };
        if from < valid_until && until > valid_from {
            fired.push(reasons.len());
            reasons.push(format!("listed window `{}` ({} to {}) overlaps the window", w.name, w.from, w.until));
        }
    }
    let fired: Vec<String> = fired.into_iter().map(|i| reasons[i].clone()).collect();
    EventVerdict { is_event: !fired.is_empty(), vol_ratio, liquidation_ratio, reasons, fired }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day_of_bars(days: usize, calm_sigma: f64, last_day_sigma: f64) -> (Vec<i64>, Vec<f64>) {
        let mut rng = crate::synth_table::SplitMix64::new(3);
        let n = days * 1440;
        let mut close = Vec::with_capacity(n);
        let mut price = 100.0;
        for i in 0..n {
            let sigma = if i >= (days - 1) * 1440 { last_day_sigma } else { calm_sigma };
            price *= (sigma * rng.next_normal()).exp();
            close.push(price);
        }
        ((0..n as i64).map(|i| i * 60_000).collect(), close)
    }

    #[test]
    fn a_volatile_last_day_is_an_event_and_a_calm_one_is_not() {
        let rules = EventRules::default();
        let (ts, close) = day_of_bars(20, 0.001, 0.003);
        let volume = vec![1.0; ts.len()];
        let bars = EventBars { timestamps: &ts, close: &close, volume: &volume, liquidations: None };
        let end = 20 * DAY_MS;
        let verdict = judge(&rules, &bars, end, end + DAY_MS);
        assert!(verdict.is_event, "{verdict:?}");
        assert!(verdict.vol_ratio.unwrap() > 2.5);
        // The day before it: calm.
        let before = judge(&rules, &bars, end - DAY_MS, end);
        assert!(!before.is_event, "{before:?}");
        assert!((before.vol_ratio.unwrap() - 1.0).abs() < 0.2);
    }

    #[test]
    fn the_verdict_reads_no_bar_at_or_after_the_decision_time() {
        let rules = EventRules::default();
        let (ts, close) = day_of_bars(20, 0.001, 0.003);
        let volume = vec![1.0; ts.len()];
        let end = 19 * DAY_MS; // the volatile day starts here: it is the future
        let all = EventBars { timestamps: &ts, close: &close, volume: &volume, liquidations: None };
        let cut = ts.partition_point(|&t| t < end);
        let past =
            EventBars { timestamps: &ts[..cut], close: &close[..cut], volume: &volume[..cut], liquidations: None };
        assert_eq!(judge(&rules, &all, end, end + DAY_MS), judge(&rules, &past, end, end + DAY_MS));
        assert!(!judge(&rules, &all, end, end + DAY_MS).is_event);
    }

    #[test]
    fn liquidation_pressure_listed_windows_and_the_us_open() {
        let (ts, close) = day_of_bars(10, 0.001, 0.001);
        let volume = vec![1.0; ts.len()];
        let mut liq = vec![0.01; ts.len()];
        liq[9 * 1440..].iter_mut().for_each(|l| *l = 0.05);
        let bars = EventBars { timestamps: &ts, close: &close, volume: &volume, liquidations: Some(&liq) };
        let end = 10 * DAY_MS;
        let verdict = judge(&EventRules::default(), &bars, end, end + DAY_MS);
        assert!(verdict.is_event && (verdict.liquidation_ratio.unwrap() - 5.0).abs() < 1e-9, "{verdict:?}");

        let quiet = vec![0.01; ts.len()];
        let calm = EventBars { liquidations: Some(&quiet), ..bars };
        assert!(!judge(&EventRules::default(), &calm, end, end + DAY_MS).is_event);
        // 1970-01-11 is a Sunday: no US open; the Monday after has one at 14:30 UTC (EST).
        let rules = EventRules { us_open: true, ..EventRules::default() };
        assert!(!judge(&rules, &calm, end, end + DAY_MS).is_event);
        let monday = judge(&rules, &calm, end + DAY_MS, end + 2 * DAY_MS);
        assert!(monday.is_event && monday.reasons.iter().any(|r| r.contains("1970-01-12T14:30:00Z")), "{monday:?}");
        let rules = EventRules {
            windows: vec![ListedWindow {
                name: "FOMC".into(),
                from: "1970-01-11T18:00:00Z".into(),
                until: "1970-01-11T19:00:00Z".into(),
            }],
            ..EventRules::default()
        };
        let fomc = judge(&rules, &calm, end, end + DAY_MS);
        assert!(fomc.is_event && fomc.reasons.iter().any(|r| r.contains("FOMC")));
        assert!(!judge(&rules, &calm, end + DAY_MS, end + 2 * DAY_MS).is_event);
    }
}
