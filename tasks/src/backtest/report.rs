//! `walk_forward_report`: the walk-forward study as one self-contained HTML page, verdict first.
//! Charts are inline SVG drawn here (time series with real axes, bars, a histogram), so the page
//! needs no script, font or network and can be archived with the run.

use std::fmt::Write as _;

use anyhow::Result;
use pipeline_artifacts::{ArtifactKind, read_json, read_table};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::evaluate::report::esc;
use crate::learn::dataset::{column_f64, format_ms, timestamps_ms};

/// Title and provenance of the report.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WalkForwardReportParams {
    /// Page title.
    #[serde(default = "default_title")]
    pub title: String,
    /// What the data are, said at the top: e.g. "synthetic market with a planted news effect"
    /// or "Binance.US BTCUSDT 1-minute bars, March 2023".
    pub data: String,
}

fn default_title() -> String {
    "Walk-forward evaluation and backtest".into()
}

pub struct WalkForwardReport;

const COLORS: &[&str] = &["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

fn pct(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |x| format!("{:+.2}%", x * 100.0))
}

fn fixed(v: &Value, digits: usize) -> String {
    if v.is_u64() || v.is_i64() {
        return v.to_string();
    }
    v.as_f64().map_or_else(|| if v.is_null() { "-".into() } else { v.to_string() }, |x| format!("{x:.digits$}"))
}

/// A time-series chart: x = time (ms), y = value, with ticks on both axes and a zero line.
pub(crate) fn time_chart(
    title: &str,
    y_label: &str,
    times: &[i64],
    series: &[(String, Vec<f64>)],
    percent: bool,
) -> String {
    let (w, h, left, top, bottom) = (760.0, 300.0, 64.0, 24.0, 36.0);
    let (pw, ph) = (w - left - 16.0, h - top - bottom);
    let (t0, t1) = (*times.first().unwrap_or(&0) as f64, *times.last().unwrap_or(&1) as f64);
    let values = series.iter().flat_map(|(_, v)| v.iter().copied()).filter(|v| v.is_finite());
    let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        (lo, hi) = (lo - 0.01, hi + 0.01);
    }
    let pad = (hi - lo) * 0.05;
    let (lo, hi) = (lo - pad, hi + pad);
    let x = |t: f64| left + (t - t0) / (t1 - t0).max(1.0) * pw;
    let y = |v: f64| top + (1.0 - (v - lo) / (hi - lo)) * ph;
    let mut svg =
        format!(r#"<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><title>{}</title>"#, esc(title));
    let _ = write!(svg, r#"<text x="{}" y="15" font-size="13" text-anchor="middle">{}</text>"#, w / 2.0, esc(title));
    let _ = write!(svg, r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##);
    for k in 0..=4 {
        let v = lo + (hi - lo) * k as f64 / 4.0;
        let label = if percent { format!("{:.1}%", v * 100.0) } else { format!("{v:.3}") };
        let _ = write!(
            svg,
            r#"<text x="{}" y="{:.1}" font-size="10" text-anchor="end">{label}</text>"#,
            left - 4.0,
            y(v) + 3.0
        );
        let _ =
            write!(svg, r##"<line x1="{left}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#eee"/>"##, left + pw, y(v), y(v));
    }
    if lo < 0.0 && hi > 0.0 && percent {
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#888" stroke-dasharray="4 3"/>"##,
            left + pw,
            y(0.0),
            y(0.0)
        );
    }
    for k in 0..=4 {
        let t = t0 + (t1 - t0) * k as f64 / 4.0;
        let label = format_ms(t as i64).get(..10).unwrap_or("").to_string();
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" font-size="10" text-anchor="middle">{label}</text>"#,
            x(t),
            top + ph + 14.0
        );
    }
    let _ = write!(
        svg,
        r#"<text x="12" y="{}" font-size="11" text-anchor="middle" transform="rotate(-90 12 {})">{}</text>"#,
        top + ph / 2.0,
        top + ph / 2.0,
        esc(y_label)
    );
    // At most ~1,500 points a line: every n-th bar (the page stays small).
    let every = (times.len() / 1500).max(1);
    for (k, (name, values)) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let points: Vec<String> = times
            .iter()
            .zip(values)
            .enumerate()
            .filter(|(i, (_, v))| (i % every == 0 || *i + 1 == times.len()) && v.is_finite())
            .map(|(_, (t, v))| format!("{:.1},{:.1}", x(*t as f64), y(*v)))
            .collect();
        let _ =
            write!(svg, r#"<polyline fill="none" stroke="{color}" stroke-width="1.3" points="{}"/>"#, points.join(" "));
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" font-size="10" fill="{color}">{}</text>"#,
            left + 8.0,
            top + 14.0 + 12.0 * k as f64,
            esc(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Vertical bars over categories (days, folds), with a zero line.
fn column_chart(title: &str, labels: &[String], values: &[f64], percent: bool) -> String {
    let (w, h, left, top, bottom) = (760.0, 240.0, 64.0, 24.0, 48.0);
    let (pw, ph) = (w - left - 16.0, h - top - bottom);
    let hi = values.iter().copied().filter(|v| v.is_finite()).fold(0.0f64, f64::max);
    let lo = values.iter().copied().filter(|v| v.is_finite()).fold(0.0f64, f64::min);
    let (lo, hi) = if hi - lo < 1e-12 { (lo - 0.01, hi + 0.01) } else { (lo, hi) };
    let y = |v: f64| top + (1.0 - (v - lo) / (hi - lo)) * ph;
    let bw = pw / values.len().max(1) as f64;
    let mut svg =
        format!(r#"<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><title>{}</title>"#, esc(title));
    let _ = write!(svg, r#"<text x="{}" y="15" font-size="13" text-anchor="middle">{}</text>"#, w / 2.0, esc(title));
    for k in 0..=4 {
        let v = lo + (hi - lo) * k as f64 / 4.0;
        let label = if percent { format!("{:.2}%", v * 100.0) } else { format!("{v:.3}") };
        let _ = write!(
            svg,
            r#"<text x="{}" y="{:.1}" font-size="10" text-anchor="end">{label}</text>"#,
            left - 4.0,
            y(v) + 3.0
        );
    }
    let _ =
        write!(svg, r##"<line x1="{left}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#888"/>"##, left + pw, y(0.0), y(0.0));
    for (i, v) in values.iter().enumerate() {
        if !v.is_finite() {
            continue;
        }
        let (a, b) = (y(v.max(0.0)), y(v.min(0.0)));
        let color = if *v >= 0.0 { "#2ca02c" } else { "#d62728" };
        let _ = write!(
            svg,
            r#"<rect x="{:.1}" y="{a:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{}: {}</title></rect>"#,
            left + bw * i as f64 + 1.0,
            (bw - 2.0).max(1.0),
            (b - a).max(0.5),
            esc(&labels[i]),
            if percent { format!("{:.3}%", v * 100.0) } else { format!("{v:.4}") }
        );
    }
    let step = (labels.len() / 10).max(1);
    for (i, label) in labels.iter().enumerate().filter(|(i, _)| i % step == 0) {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" font-size="9" text-anchor="end" transform="rotate(-40 {:.1} {})">{}</text>"#,
            left + bw * (i as f64 + 0.5),
            top + ph + 12.0,
            left + bw * (i as f64 + 0.5),
            top + ph + 12.0,
            esc(label)
        );
    }
    svg.push_str("</svg>");
    svg
}

pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::from("<div class=\"wide\"><table><tr>");
    for h in header {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", esc(cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table></div>");
    out
}

struct Inputs {
    verdict: Value,
    backtest: Value,
    summary: Value,
    times: Vec<i64>,
    equity: Vec<(String, Vec<f64>)>,
    trades: Vec<(String, f64)>,
    hashes: Vec<(String, String)>,
}

/// The page.
fn render(i: &Inputs, params: &WalkForwardReportParams) -> String {
    let mut body = String::new();
    let v = &i.verdict;
    let decision = v["decision"].as_str().unwrap_or("?");
    let _ = write!(
        body,
        r#"<section class="verdict {decision}"><h2>Verdict: {}</h2><p>{}</p>"#,
        esc(decision),
        esc(&v["reasons"]
            .as_array()
            .map(|r| r.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(" "))
            .unwrap_or_default())
    );
    let checks: Vec<Vec<String>> = v["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            vec![
                c["check"].as_str().unwrap_or("").to_string(),
                fixed(&c["value"], 3),
                c["threshold"].as_str().map_or_else(|| fixed(&c["threshold"], 3), str::to_string),
                if c["pass"] == Value::Bool(true) { "pass".into() } else { "fail".into() },
            ]
        })
        .collect();
    body.push_str(&table(&["check", "value", "threshold", "result"], &checks));
    body.push_str("</section>");

    let b = &i.backtest;
    let _ = write!(
        body,
        "<p class=\"data\">Data: <b>{}</b>. Out-of-sample window {} .. {} ({} bars); decisions fill at the next bar's open; fee {} bps per side, slippage {} bps (main result).</p>",
        esc(&params.data),
        esc(b["from"].as_str().unwrap_or("")),
        esc(b["until"].as_str().unwrap_or("")),
        b["bars"],
        b["execution"]["fee_bps"],
        b["main_slippage_bps"]
    );

    // Equity and drawdown.
    let returns: Vec<(String, Vec<f64>)> =
        i.equity.iter().map(|(n, e)| (n.clone(), e.iter().map(|x| x - 1.0).collect())).collect();
    body.push_str(&time_chart("Equity: return since the first test day", "return", &i.times, &returns, true));
    let drawdowns: Vec<(String, Vec<f64>)> = i
        .equity
        .iter()
        .map(|(n, e)| {
            let mut peak = 1.0f64;
            (
                n.clone(),
                e.iter()
                    .map(|x| {
                        peak = peak.max(*x);
                        x / peak - 1.0
                    })
                    .collect(),
            )
        })
        .collect();
    body.push_str(&time_chart("Drawdown", "drawdown", &i.times, &drawdowns, true));

    // Strategy metrics.
    let mut rows = Vec::new();
    if let Some(strategies) = b["strategies"].as_object() {
        for (name, m) in strategies {
            rows.push(vec![
                name.clone(),
                pct(&m["total_return"]),
                fixed(&m["sharpe"], 2),
                fixed(&m["sortino"], 2),
                fixed(&m["calmar"], 2),
                pct(&m["max_drawdown"]),
                m["trades"].to_string(),
                fixed(&m["hit_rate"], 3),
                fixed(&m["payoff_ratio"], 2),
                fixed(&m["profit_factor"], 2),
                fixed(&m["exposure"], 3),
                fixed(&m["average_holding_bars"], 1),
                fixed(&m["fee_share_of_gross_pnl"], 2),
                m["max_losing_streak"].to_string(),
                m["liquidations"].to_string(),
            ]);
        }
    }
    body.push_str("<h2>Strategies and baselines</h2>");
    body.push_str(&table(
        &[
            "strategy",
            "return",
            "Sharpe",
            "Sortino",
            "Calmar",
            "max dd",
            "trades",
            "hit rate",
            "payoff",
            "profit factor",
            "exposure",
            "avg hold (bars)",
            "fee share",
            "max losing streak",
            "liquidations",
        ],
        &rows,
    ));
    let ab: Vec<Vec<String>> = b["ab"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let interval = r["interval"]
                .as_array()
                .map_or("(too few bars)".into(), |iv| format!("[{}, {}]", pct(&iv[0]), pct(&iv[1])));
            vec![
                r["model"].as_str().unwrap_or("").to_string(),
                r["baseline"].as_str().unwrap_or("").to_string(),
                pct(&r["return_difference"]),
                interval,
                if r["significant"] == Value::Bool(true) { "yes".into() } else { "no".into() },
            ]
        })
        .collect();
    body.push_str("<h3>Model on vs off (A/B): return difference over the window (sum of per-bar differences), 95% block-bootstrap interval</h3>");
    body.push_str(&table(&["model", "baseline", "difference", "95% interval", "interval excludes 0"], &ab));

    // Per fold.
    body.push_str("<h2>Per fold (out-of-sample test day)</h2>");
    for variant in i.summary["fold_metrics"].as_array().into_iter().flatten() {
        let folds = variant["folds"].as_array().cloned().unwrap_or_default();
        let labels: Vec<String> = folds.iter().map(|f| f["fold"].as_str().unwrap_or("").to_string()).collect();
        let aucs: Vec<f64> = folds.iter().map(|f| f["auc"].as_f64().unwrap_or(f64::NAN) - 0.5).collect();
        body.push_str(&column_chart(
            &format!(
                "{} {}: AUC - 0.5 per fold",
                variant["model"].as_str().unwrap_or(""),
                variant["variant"].as_str().unwrap_or("")
            ),
            &labels,
            &aucs,
            false,
        ));
        let rows: Vec<Vec<String>> = folds
            .iter()
            .map(|f| {
                vec![
                    f["fold"].as_str().unwrap_or("").to_string(),
                    f["rows"].to_string(),
                    fixed(&f["auc"], 4),
                    fixed(&f["accuracy"], 4),
                    fixed(&f["log_loss"], 4),
                    fixed(&f["brier"], 4),
                ]
            })
            .collect();
        let _ = write!(body, "<details><summary>{} table</summary>", esc(variant["variant"].as_str().unwrap_or("")));
        body.push_str(&table(&["fold", "rows", "AUC", "hit rate", "log loss", "Brier"], &rows));
        body.push_str("</details>");
    }
    let pooled: Vec<Vec<String>> = i.summary["ablation"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            vec![
                a["model"].as_str().unwrap_or("").into(),
                a["label"].as_str().unwrap_or("").into(),
                fixed(&a["auc_baseline"], 4),
                fixed(&a["auc_treatment"], 4),
                fixed(&a["auc_delta"], 4),
                a["auc_delta_interval"]
                    .as_array()
                    .map_or("-".into(), |iv| format!("[{}, {}]", fixed(&iv[0], 3), fixed(&iv[1], 3))),
                match a["status"].as_str() {
                    Some("ok") | None => {
                        if a["auc_significant"] == Value::Bool(true) {
                            "interval excludes 0"
                        } else {
                            "interval covers 0: no significant difference"
                        }
                    }
                    Some(other) => other,
                }
                .into(),
            ]
        })
        .collect();
    body.push_str("<h3>Pooled over all folds: with news minus price only (AUC ranked within each test day, averaged; bootstrap within folds)</h3>");
    body.push_str(&table(
        &["model", "label", "AUC baseline", "AUC treatment", "dAUC", "95% interval", "reading"],
        &pooled,
    ));

    // Sensitivity.
    let sens: Vec<Vec<String>> = b["sensitivity"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            vec![
                fixed(&s["slippage_bps"], 1),
                s["strategy"].as_str().unwrap_or("").into(),
                pct(&s["total_return"]),
                fixed(&s["sharpe"], 2),
                pct(&s["max_drawdown"]),
                s["trades"].to_string(),
            ]
        })
        .collect();
    body.push_str("<h2>Fee and slippage sensitivity</h2>");
    body.push_str(&table(&["slippage (bps)", "strategy", "return", "Sharpe", "max dd", "trades"], &sens));

    // Returns by day of the first model strategy.
    if let Some((name, equity)) = i.equity.iter().find(|(n, _)| n.starts_with("model")) {
        let day = 86_400_000;
        let mut labels = Vec::new();
        let mut values = Vec::new();
        let mut start = 1.0;
        let mut current = i64::MIN;
        for (k, t) in i.times.iter().enumerate() {
            let d = t - t.rem_euclid(day);
            if d != current {
                if current != i64::MIN {
                    values.push(equity[k - 1] / start - 1.0);
                    start = equity[k - 1];
                }
                labels.push(format_ms(d).get(..10).unwrap_or("").to_string());
                current = d;
            }
        }
        if let Some(last) = equity.last() {
            values.push(last / start - 1.0);
        }
        body.push_str("<h2>Returns by day</h2>");
        body.push_str(&column_chart(&format!("{name}: return of each day"), &labels, &values, true));
    }
    // Trade distribution.
    for (name, _) in i.equity.iter().filter(|(n, _)| n.starts_with("model")) {
        let pnl: Vec<f64> = i.trades.iter().filter(|(s, _)| s == name).map(|(_, p)| *p).collect();
        if pnl.is_empty() {
            continue;
        }
        let (lo, hi) = pnl.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
        let bins = 20;
        let width = ((hi - lo) / bins as f64).max(1e-12);
        let mut counts = vec![0.0; bins];
        for p in &pnl {
            counts[(((p - lo) / width) as usize).min(bins - 1)] += 1.0;
        }
        let labels: Vec<String> =
            (0..bins).map(|k| format!("{:+.3}%", (lo + width * (k as f64 + 0.5)) * 100.0)).collect();
        body.push_str(&column_chart(
            &format!("{name}: trades by PnL (share of equity), {} trades", pnl.len()),
            &labels,
            &counts,
            false,
        ));
    }
    // Event days.
    let events: Vec<Vec<String>> = b["event_days"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            vec![
                e["day"].as_str().unwrap_or("").into(),
                fixed(&e["realized_vol"], 4),
                fixed(&e["liquidation_share"], 4),
                e["by"].as_str().unwrap_or("").into(),
            ]
        })
        .collect();
    body.push_str("<h2>Event days</h2>");
    body.push_str(&table(&["day", "realized vol", "liquidation share", "flagged by"], &events));
    let quantiles: Vec<Vec<String>> = b["strategies"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(n, m)| {
            let q = &m["event_day_roi_quantiles"];
            vec![n.clone(), pct(&q["q05"]), pct(&q["q25"]), pct(&q["q50"]), pct(&q["q75"]), pct(&q["q95"])]
        })
        .collect();
    body.push_str(&table(&["strategy", "event-day ROI q05", "q25", "median", "q75", "q95"], &quantiles));

    // Provenance.
    body.push_str("<h2>Provenance</h2><p>Metric convention: ");
    if let Some(c) = b["convention"].as_object() {
        let parts: Vec<String> =
            c.iter().map(|(k, v)| format!("{k}: {}", v.as_str().map_or(v.to_string(), str::to_string))).collect();
        body.push_str(&esc(&parts.join("; ")));
    }
    body.push_str("</p>");
    let inputs: Vec<Vec<String>> = i.hashes.iter().map(|(n, h)| vec![n.clone(), h.clone()]).collect();
    body.push_str(&table(&["input", "content hash (blake3)"], &inputs));

    format!(
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>
body {{ font-family: sans-serif; max-width: 820px; margin: 1em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; font-size: 11px; }}
.wide {{ overflow-x: auto; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; text-align: right; }}
th {{ background: #f4f4f4; }}
.verdict {{ border: 2px solid #999; padding: 0.5em 1em; }}
.verdict.promote {{ border-color: #2ca02c; }} .verdict.keep {{ border-color: #ff7f0e; }} .verdict.none {{ border-color: #d62728; }}
</style></head><body><h1>{title}</h1>{body}</body></html>
"#,
        title = esc(&params.title)
    )
}

impl Stage for WalkForwardReport {
    type Params = WalkForwardReportParams;
    const NAME: &'static str = "walk_forward_report";
    const VERSION: u32 = 1;
    const DOC: &'static str = "The walk-forward study as one self-contained HTML page, verdict first: the gate's decision and checks, equity and drawdown curves of the strategies and baselines, their metrics and the A/B intervals, per-fold metrics, the pooled ablation, fee/slippage sensitivity, returns by day, the trade distribution, event days, and provenance (data, metric convention, input hashes).\n\n\
        Inputs: `verdict` (gate), `backtest` (backtest metrics), `equity` and `trades` (backtest tables), `summary` \
        (compare). Output `html`: inline SVG, no scripts or external resources.";
    const EXAMPLE: &'static str = r#"[stages.market]
task = "synth_market"
params = { days = 20 }

[stages.features]
task = "features"
inputs = ["market"]

[stages.labels]
task = "labels"
inputs = ["market"]

[stages.train]
task = "train"
inputs = { features = "features", labels = "labels" }
params = { label = "label_dir_15" }
matrix = { feature_set = ["all"] }

[stages.compare]
task = "compare"
inputs = { metrics = "train.metrics", predictions = "train.predictions" }

[stages.backtest]
task = "backtest"
inputs = { predictions = "train.predictions", bars = "market" }

[stages.gate]
task = "gate"
inputs = { backtest = "backtest.metrics", compare = "compare.summary", models = "train.model" }
params = { strategy = "model[feature_set=all]" }

[stages.report]
task = "walk_forward_report"
inputs = { verdict = "gate.verdict", backtest = "backtest.metrics", equity = "backtest.equity", trades = "backtest.trades", summary = "compare.summary" }
params = { data = "synthetic market" }
"#;

    fn validate(params: &WalkForwardReportParams) -> Result<(), ParamError> {
        if params.data.trim().is_empty() {
            return Err(ParamError::new("data", "say what the data are (synthetic or real, which market and period)"));
        }
        Ok(())
    }

    fn outputs(_params: &WalkForwardReportParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("html", ArtifactKind::Html)]
    }

    fn check_inputs(_params: &WalkForwardReportParams, inputs: &[InputInfo]) -> Result<(), String> {
        for (name, kind) in [
            ("verdict", ArtifactKind::Json),
            ("backtest", ArtifactKind::Json),
            ("equity", ArtifactKind::Table),
            ("trades", ArtifactKind::Table),
            ("summary", ArtifactKind::Json),
        ] {
            match inputs.iter().find(|i| i.name == name) {
                Some(i) if i.kind == kind => {}
                _ => {
                    return Err(format!(
                        "`walk_forward_report` needs a {kind} input `{name}`: inputs = {{ verdict = \"gate.verdict\", backtest = \"backtest.metrics\", equity = \"backtest.equity\", trades = \"backtest.trades\", summary = \"compare.summary\" }}"
                    ));
                }
            }
        }
        Ok(())
    }

    fn run(params: &WalkForwardReportParams, ctx: &mut StageContext) -> Result<()> {
        let equity_frame = read_table(&ctx.input("equity")?.path)?;
        let times = timestamps_ms(&equity_frame)?;
        let mut equity = Vec::new();
        for c in equity_frame.get_column_names() {
            if c.as_str() != "timestamp" {
                equity.push((c.to_string(), column_f64(&equity_frame, c.as_str())?));
            }
        }
        let trade_frame = read_table(&ctx.input("trades")?.path)?;
        let strategies =
            trade_frame.column("strategy")?.str()?.iter().map(|s| s.unwrap_or("").to_string()).collect::<Vec<_>>();
        let pnl = column_f64(&trade_frame, "pnl")?;
        let inputs = Inputs {
            verdict: read_json(&ctx.input("verdict")?.path)?,
            backtest: read_json(&ctx.input("backtest")?.path)?,
            summary: read_json(&ctx.input("summary")?.path)?,
            times,
            equity,
            trades: strategies.into_iter().zip(pnl).collect(),
            hashes: ctx.inputs().iter().map(|i| (i.name.clone(), i.hash.to_hex())).collect(),
        };
        std::fs::write(ctx.output_path("html")?, render(&inputs, params))?;
        Ok(())
    }
}
