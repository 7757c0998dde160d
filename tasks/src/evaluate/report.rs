//! `report`: the Stage 1 ablation as one self-contained HTML page. Charts are inline SVG drawn
//! here (a few lines each: polylines and bars), so the page needs no script, font or network.

use std::fmt::Write as _;

use anyhow::{Result, bail};
use pipeline_artifacts::{ArtifactKind, read_json};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Report title and how much to show.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportParams {
    /// Page title.
    #[serde(default = "default_title")]
    pub title: String,
    /// Features listed per importance chart.
    #[serde(default = "default_top")]
    pub top_features: usize,
    /// What the data are, said under the verdict: e.g. "synthetic market with a planted news
    /// effect of 25 bps" or "Binance.US BTCUSDT 1-minute bars, March 2023". A page whose data
    /// are not stated says so in red.
    #[serde(default)]
    pub data: String,
}

fn default_title() -> String {
    "Stage 1: does news help?".into()
}
fn default_top() -> usize {
    15
}

pub struct Report;

impl Stage for Report {
    type Params = ReportParams;
    const NAME: &'static str = "report";
    // 3: news coverage, a reading per ablation row. 4: training-window coverage.
    // 5: verdict first, provenance, train/valid/test AUC, zoomed charts, returns by score decile,
    //    AUC per day, permutation spread, news coverage as an appendix.
    const VERSION: u32 = 5;
    const DOC: &'static str = "A self-contained HTML report of a `compare` summary, the answer first: a one-sentence verdict, the ablation table with confidence intervals, provenance (data, windows, bootstrap, input hash; the exporting run is stamped by the engine), train/validation/test AUC of every variant, then per label: ROC (AUC in the legend), calibration with bin counts, hit rate by volatility decile, mean forward return by score decile, AUC per day, and importance with units (permutation with its spread); news coverage in an appendix.\n\n\
        Input: `summary` (the `summary` output of `compare`). Output `html`: one file, inline SVG charts, no \
        scripts or external resources, so it opens anywhere and can be archived with the run. Variants whose \
        treatment was degraded (e.g. no news source) are shown as unavailable.";
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
inputs = ["features", "labels"]
params = { label = "label_dir_15", model = "logistic" }
matrix = { feature_set = ["all", "price_only"] }

[stages.compare]
task = "compare"
inputs = { metrics = "train.metrics", predictions = "train.predictions" }
params = { treatment = "all", baseline = "price_only" }

[stages.report]
task = "report"
inputs = { summary = "compare.summary" }
"#;

    fn validate(params: &ReportParams) -> Result<(), ParamError> {
        if params.top_features == 0 {
            return Err(ParamError::new("top_features", "must be positive"));
        }
        Ok(())
    }

    fn outputs(_params: &ReportParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("html", ArtifactKind::Html)]
    }

    fn check_inputs(_params: &ReportParams, inputs: &[InputInfo]) -> Result<(), String> {
        match inputs.iter().find(|i| i.name == "summary") {
            Some(i) if i.kind == ArtifactKind::Json => Ok(()),
            Some(i) => Err(format!("input `summary` is a {}, expected the JSON `summary` of `compare`", i.kind)),
            None => Err("`report` needs inputs = { summary = \"compare.summary\" }".into()),
        }
    }

    fn run(params: &ReportParams, ctx: &mut StageContext) -> Result<()> {
        let summary = read_json(&ctx.input("summary")?.path)?;
        if summary.get("ablation").is_none() || summary.get("curves").is_none() {
            bail!("input `summary` is not the summary of a `compare` stage (no `ablation` / `curves`)");
        }
        let provenance = Provenance { summary_hash: ctx.input("summary")?.hash.to_hex() };
        let html = render(&summary, params, &provenance);
        std::fs::write(ctx.output_path("html")?, html)?;
        Ok(())
    }
}

/// Text for HTML (both reports use it).
pub(crate) fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64().map_or("-".into(), |x| format!("{x:.digits$}"))
}

fn signed(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |x| format!("{x:+.4}"))
}

fn interval(v: &Value) -> String {
    match (v[0].as_f64(), v[1].as_f64()) {
        (Some(lo), Some(hi)) => format!("[{lo:+.4}, {hi:+.4}]"),
        _ => "-".into(),
    }
}

const COLORS: &[&str] = &["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/// One line chart: its axes' ranges and ticks, an optional diagonal and reference line, and a
/// polyline per series (points labelled when `point_notes` says so).
struct LineChart<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    x: (f64, f64),
    y: (f64, f64),
    x_ticks: Vec<(f64, String)>,
    y_ticks: Vec<(f64, String)>,
    diagonal: bool,
    /// A horizontal line (the coin flip at 0.5, no return at 0) and its label.
    reference: Option<(f64, &'a str)>,
    series: Vec<(String, Vec<(f64, f64)>)>,
    /// Per series, per point: a note drawn beside the point and in its tooltip (bin counts).
    point_notes: Vec<Vec<String>>,
}

/// Ticks at round steps covering `lo..hi`, about `count` of them.
fn ticks(lo: f64, hi: f64, count: usize, digits: usize) -> Vec<(f64, String)> {
    let raw = (hi - lo) / count.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(raw);
    let mut out = Vec::new();
    let mut t = (lo / step).ceil() * step;
    while t <= hi + step * 1e-9 {
        out.push((t, format!("{t:.digits$}")));
        t += step;
    }
    out
}

/// A range around `values` that also holds `must` (0.5 for rates), padded by a tenth, so that
/// differences of a few points fill the chart instead of a sliver of 0..1.
fn zoomed(values: impl Iterator<Item = f64>, must: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (must, must);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let pad = ((hi - lo) * 0.1).max(0.005);
    (lo - pad, hi + pad)
}

impl LineChart<'_> {
    fn render(&self) -> String {
        let (w, h, m) = (340.0, 300.0, 46.0);
        let (pw, ph) = (w - m - 10.0, h - m - 30.0);
        let x = |v: f64| m + ((v - self.x.0) / (self.x.1 - self.x.0)).clamp(0.0, 1.0) * pw;
        let y = |v: f64| 20.0 + (1.0 - ((v - self.y.0) / (self.y.1 - self.y.0)).clamp(0.0, 1.0)) * ph;
        let mut svg = format!(
            r#"<svg class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><title>{}</title>"#,
            esc(self.title)
        );
        let _ = write!(
            svg,
            r#"<text x="{}" y="14" font-size="12" text-anchor="middle">{}</text>"#,
            w / 2.0,
            esc(self.title)
        );
        let _ = write!(svg, r##"<rect x="{m}" y="20" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##);
        for (t, label) in &self.x_ticks {
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{}" font-size="9" text-anchor="middle">{}</text>"#,
                x(*t),
                20.0 + ph + 12.0,
                esc(label)
            );
        }
        for (t, label) in &self.y_ticks {
            let _ = write!(
                svg,
                r#"<text x="{}" y="{:.1}" font-size="9" text-anchor="end">{}</text>"#,
                m - 3.0,
                y(*t) + 3.0,
                esc(label)
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" font-size="10" text-anchor="middle">{}</text>"#,
            m + pw / 2.0,
            h - 4.0,
            esc(self.x_label)
        );
        let _ = write!(
            svg,
            r#"<text x="10" y="{}" font-size="10" text-anchor="middle" transform="rotate(-90 10 {})">{}</text>"#,
            20.0 + ph / 2.0,
            20.0 + ph / 2.0,
            esc(self.y_label)
        );
        if self.diagonal {
            let (lo, hi) = (self.x.0.max(self.y.0), self.x.1.min(self.y.1));
            let _ = write!(
                svg,
                r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#bbb" stroke-dasharray="4 3"/>"##,
                x(lo),
                y(lo),
                x(hi),
                y(hi)
            );
        }
        if let Some((level, label)) = self.reference {
            let _ = write!(
                svg,
                r##"<line class="reference" x1="{m}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="#888" stroke-dasharray="6 3"/><text x="{}" y="{:.1}" font-size="9" fill="#666" text-anchor="end">{}</text>"##,
                y(level),
                m + pw,
                y(level),
                m + pw - 3.0,
                y(level) - 3.0,
                esc(label)
            );
        }
        for (k, (name, points)) in self.series.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            let path: Vec<String> = points.iter().map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b))).collect();
            let _ = write!(
                svg,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                path.join(" ")
            );
            let notes = self.point_notes.get(k);
            for (p, (a, b)) in points.iter().enumerate().filter(|_| points.len() <= 31) {
                let note = notes.and_then(|n| n.get(p)).map(String::as_str).unwrap_or("");
                let _ = write!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"><title>{} ({a:.3}, {b:.4}) {}</title></circle>"#,
                    x(*a),
                    y(*b),
                    esc(name),
                    esc(note)
                );
                if !note.is_empty() {
                    let _ = write!(
                        svg,
                        r#"<text class="count" x="{:.1}" y="{:.1}" font-size="7" fill="{color}">{}</text>"#,
                        x(*a) + 3.0,
                        y(*b) - 3.0,
                        esc(note)
                    );
                }
            }
            let _ = write!(
                svg,
                r#"<text class="legend" x="{}" y="{}" font-size="9" fill="{color}">{}</text>"#,
                m + 6.0,
                32.0 + 11.0 * k as f64,
                esc(name)
            );
        }
        svg.push_str("</svg>");
        svg
    }
}

/// Horizontal bars, longest first, each with its value and, when given, a whisker of ± its
/// spread.
fn bar_chart(title: &str, bars: &[(String, f64, Option<f64>)]) -> String {
    let row = 16.0;
    let (w, label_w) = (420.0, 170.0);
    let h = 24.0 + row * bars.len() as f64;
    let max = bars.iter().map(|b| b.1.abs() + b.2.unwrap_or(0.0)).fold(0.0, f64::max).max(1e-12);
    let scale = (w - label_w - 70.0) / max;
    let mut svg = format!(
        r#"<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><title>{}</title><text x="0" y="13" font-size="12">{}</text>"#,
        esc(title),
        esc(title)
    );
    for (k, (name, value, spread)) in bars.iter().enumerate() {
        let top = 20.0 + row * k as f64;
        let len = scale * value.abs();
        let color = if *value >= 0.0 { "#1f77b4" } else { "#d62728" };
        let shown = if value.fract() == 0.0 { format!("{value:.0}") } else { format!("{value:.4}") };
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" font-size="10" text-anchor="end">{}</text><rect x="{label_w}" y="{}" width="{len:.1}" height="{}" fill="{color}"/>"#,
            label_w - 4.0,
            top + 11.0,
            esc(name),
            top + 2.0,
            row - 4.0,
        );
        let mut end = label_w + len;
        if let Some(sd) = spread {
            let (a, b) = (label_w + scale * (value.abs() - sd).max(0.0), label_w + scale * (value.abs() + sd));
            let _ = write!(
                svg,
                r##"<line class="spread" x1="{a:.1}" y1="{:.1}" x2="{b:.1}" y2="{:.1}" stroke="#333"/>"##,
                top + row / 2.0,
                top + row / 2.0
            );
            end = end.max(b);
        }
        let label = match spread {
            Some(sd) => format!("{shown} ± {sd:.4}"),
            None => shown,
        };
        let _ = write!(svg, r#"<text x="{}" y="{}" font-size="9">{}</text>"#, end + 4.0, top + 11.0, esc(&label));
    }
    svg.push_str("</svg>");
    svg
}

/// How much news the compared and training windows had, in numbers and words, with items per day.
fn coverage_section(c: &Value, split: &str) -> String {
    if c["source"] == Value::Bool(false) {
        return "<h2>Appendix: news coverage</h2><p class=\"note\">No news source in this pipeline: the news variants are unavailable.</p>".into();
    }
    if c["source"] != Value::Bool(true) {
        return String::new();
    }
    let mut html = String::from("<h2>Appendix: news coverage</h2>");
    for (key, name) in [("compared", split), ("train", "train")] {
        let w = &c[key];
        if w["minutes"].as_u64().unwrap_or(0) == 0 {
            continue;
        }
        let pct = |k: &str| w[k].as_f64().map_or("-".into(), |v| format!("{:.0}%", 100.0 * v));
        let _ = write!(
            html,
            "<p class=\"note\">The <b>{name}</b> window ({} .. {}): <b>{}</b> items over {:.1} days ({:.1} a day). Minutes with an item known in the last hour: <b>{}</b>; 4 hours: <b>{}</b>; 24 hours: <b>{}</b>.</p>",
            esc(w["from"].as_str().unwrap_or("")),
            esc(w["until"].as_str().unwrap_or("")),
            w["items"].as_f64().unwrap_or(0.0),
            w["days"].as_f64().unwrap_or(0.0),
            w["items_per_day"].as_f64().unwrap_or(0.0),
            pct("share_within_1h"),
            pct("share_within_4h"),
            pct("share_within_24h"),
        );
        let thin: Vec<&str> = w["thin"].as_array().into_iter().flatten().filter_map(|t| t.as_str()).collect();
        if !thin.is_empty() {
            let _ = write!(
                html,
                "<p class=\"note\"><b>Coverage of the {name} window is thin</b> ({}). A with/without-news difference resting on it is an anecdote, whatever its interval.</p>",
                esc(&thin.join("; "))
            );
        }
        let bars: Vec<(String, f64, Option<f64>)> = w["items_by_day"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| Some((d[0].as_str()?.to_string(), d[1].as_f64()?, None)))
            .collect();
        if !bars.is_empty() {
            html.push_str(&bar_chart(&format!("News items per day, {name} window"), &bars));
        }
    }
    html
}

/// The answer to the page's question in one sentence, from the ablation rows: how many pairs'
/// intervals exclude 0 in each direction, the strongest, and how many were tested.
pub fn verdict_sentence(summary: &Value) -> String {
    let treatment = summary["treatment"].as_str().unwrap_or("treatment");
    let baseline = summary["baseline"].as_str().unwrap_or("baseline");
    let split = summary["split"].as_str().unwrap_or("test");
    let level = summary["level"].as_f64().unwrap_or(0.95) * 100.0;
    let rows: Vec<&Value> = summary["ablation"].as_array().into_iter().flatten().collect();
    let ok: Vec<&&Value> = rows.iter().filter(|a| a["status"] == "ok").collect();
    if ok.is_empty() {
        let reason = rows.first().and_then(|a| a["status"].as_str()).unwrap_or("no pairs to compare");
        return format!("No answer: {treatment} could not be compared with {baseline} ({reason}).");
    }
    let lo = |a: &Value| a["auc_delta_interval"][0].as_f64();
    let hi = |a: &Value| a["auc_delta_interval"][1].as_f64();
    let up: Vec<&&&Value> = ok.iter().filter(|a| lo(a).is_some_and(|l| l > 0.0)).collect();
    let down = ok.iter().filter(|a| hi(a).is_some_and(|h| h < 0.0)).count();
    let best = ok
        .iter()
        .filter(|a| a["auc_delta"].as_f64().is_some())
        .max_by(|a, b| a["auc_delta"].as_f64().unwrap_or(0.0).total_cmp(&b["auc_delta"].as_f64().unwrap_or(0.0)));
    let describe = |a: &Value| {
        format!(
            "{} {}, {} {}",
            a["model"].as_str().unwrap_or(""),
            a["label"].as_str().unwrap_or(""),
            signed(&a["auc_delta"]),
            interval(&a["auc_delta_interval"])
        )
    };
    let tested =
        format!("{} model × label pairs compared; {level:.0}% intervals, not adjusted for testing several", ok.len());
    let against = if down > 0 { format!(", and lowers it in {down}") } else { String::new() };
    match (up.len(), best) {
        (0, Some(best)) => format!(
            "No: {treatment} raises {split} AUC over {baseline} in none of the pairs with an interval above 0{against} (largest difference: {}; {tested}).",
            describe(best)
        ),
        (0, None) => format!("No: too few rows for an interval in any pair ({tested})."),
        (n, _) => {
            let strongest = up
                .iter()
                .max_by(|a, b| {
                    a["auc_delta"].as_f64().unwrap_or(0.0).total_cmp(&b["auc_delta"].as_f64().unwrap_or(0.0))
                })
                .map(|a| describe(a))
                .unwrap_or_default();
            let word = if n == ok.len() { "Yes" } else { "In part" };
            format!(
                "{word}: {treatment} raises {split} AUC over {baseline} with an interval above 0 in {n} of {} pairs{against} (largest: {strongest}; {tested}).",
                ok.len()
            )
        }
    }
}

/// Where the page's numbers come from, besides the run that exports it (the engine stamps that
/// into the exported copy: see `pipeline_engine::exports`).
pub struct Provenance {
    pub summary_hash: String,
}

pub fn render(summary: &Value, params: &ReportParams, provenance: &Provenance) -> String {
    let treatment = summary["treatment"].as_str().unwrap_or("");
    let baseline = summary["baseline"].as_str().unwrap_or("");
    let split = summary["split"].as_str().unwrap_or("test");
    let level = summary["level"].as_f64().unwrap_or(0.95) * 100.0;
    let mut html = String::new();
    let synthetic = params.data.to_lowercase().contains("synthetic");
    let data = if params.data.trim().is_empty() {
        "<p class=\"data warn\">Data: <b>not stated</b> (set the report's <code>data</code> param: synthetic or real, which market and period).</p>".to_string()
    } else if synthetic {
        format!("<p class=\"data synthetic\">Data: <b>SYNTHETIC</b>: {}</p>", esc(&params.data))
    } else {
        format!("<p class=\"data\">Data: {}</p>", esc(&params.data))
    };
    let _ = write!(
        html,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}}
table{{border-collapse:collapse;font-size:13px;margin:8px 0 16px}}th,td{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
th{{background:#f3f3f3}}td.l{{text-align:left}}tr.sig td{{background:#eef7ee}}tr.na td{{color:#888}}
.charts{{display:flex;flex-wrap:wrap;gap:12px}}.note{{color:#555;font-size:13px}}
.verdict{{font-size:17px;border-left:4px solid #1f77b4;padding:6px 12px;background:#f5f8fc}}
.data.synthetic{{border:2px solid #d62728;padding:4px 10px;display:inline-block}}.data.warn{{color:#b00}}
.run-stamp{{font-size:12px;color:#444}}</style></head><body>
<h1>{title}</h1>
<p class="verdict">{verdict}</p>
{stamp}
{data}
"#,
        title = esc(&params.title),
        verdict = esc(&verdict_sentence(summary)),
        // The engine writes the exporting run here in the exported copy; the stored page keeps
        // it empty, so it stays a function of its inputs.
        stamp = pipeline_engine::exports::RUN_STAMP_MARKER,
    );

    // Thin news is said next to the answer, not only in the appendix.
    for (key, name) in [("compared", split), ("train", "train")] {
        let thin: Vec<&str> =
            summary["coverage"][key]["thin"].as_array().into_iter().flatten().filter_map(|t| t.as_str()).collect();
        if !thin.is_empty() {
            let _ = write!(
                html,
                "<p class=\"data warn\">News coverage of the {name} window is thin ({}): a difference resting on it is an anecdote, whatever its interval (appendix).</p>",
                esc(&thin.join("; "))
            );
        }
    }
    html.push_str("<h2>Ablation</h2><table><tr><th>model</th><th>label</th><th>reading</th><th>rows</th>");
    let _ = write!(
        html,
        "<th>AUC {b}</th><th>AUC {t}</th><th>&Delta;AUC</th><th>{level:.0}% CI</th><th>hit {b}</th><th>hit {t}</th><th>&Delta;hit CI</th><th>&Delta;log loss CI</th><th>high-vol rows</th><th>high-vol &Delta;AUC</th><th>high-vol CI</th><th>high-vol &Delta;hit CI</th></tr>",
        b = esc(baseline),
        t = esc(treatment)
    );
    for a in summary["ablation"].as_array().into_iter().flatten() {
        let (model, label) = (a["model"].as_str().unwrap_or(""), a["label"].as_str().unwrap_or(""));
        if a["status"] != "ok" {
            let _ = write!(
                html,
                r#"<tr class="na"><td class="l">{}</td><td class="l">{}</td><td class="l">unavailable</td><td>-</td><td>{}</td><td colspan="11" class="l">{}</td></tr>"#,
                esc(model),
                esc(label),
                num(&a["baseline_auc"], 4),
                esc(a["status"].as_str().unwrap_or(""))
            );
            continue;
        }
        let class = if a["auc_significant"] == Value::Bool(true) { " class=\"sig\"" } else { "" };
        let _ = write!(
            html,
            r#"<tr{class}><td class="l">{}</td><td class="l">{}</td><td class="l">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(model),
            esc(label),
            esc(&super::compare::verdict(a)),
            a["rows"],
            num(&a["auc_baseline"], 4),
            num(&a["auc_treatment"], 4),
            signed(&a["auc_delta"]),
            interval(&a["auc_delta_interval"]),
            num(&a["hit_rate_baseline"], 4),
            num(&a["hit_rate_treatment"], 4),
            interval(&a["hit_rate_delta_interval"]),
            interval(&a["log_loss_delta_interval"]),
            a["high_vol_rows"],
            signed(&a["high_vol_auc_delta"]),
            interval(&a["high_vol_auc_delta_interval"]),
            interval(&a["high_vol_hit_rate_delta_interval"]),
        );
    }
    html.push_str("</table>");
    let _ = write!(
        html,
        r#"<p class="note">Feature set <b>{}</b> against <b>{}</b> on the <b>{split}</b> split. Intervals: {level:.0}% percentile intervals from {} moving-block bootstrap resamples of {}-row blocks, the same rows for both variants. A difference whose interval includes 0 is not evidence that news helps; an AUC whose interval includes 0.5 is not evidence of any signal. On real 1-minute BTC, price-only direction AUC near 0.5 is the expected result; much higher values mean leakage until proven otherwise.</p>"#,
        esc(treatment),
        esc(baseline),
        summary["bootstrap_draws"],
        summary["block_rows"],
    );

    // Provenance: what the numbers are a function of.
    let window = |key: &str| {
        let w = &summary["coverage"][key];
        match (w["from"].as_str(), w["until"].as_str()) {
            (Some(from), Some(until)) => format!("{from} .. {until}"),
            _ => "-".into(),
        }
    };
    let provenance_rows = [
        ("data", if params.data.trim().is_empty() { "not stated".to_string() } else { params.data.clone() }),
        ("compared", format!("{treatment} against {baseline}, {split} split")),
        (&*format!("{split} window"), window("compared")),
        ("training window", window("train")),
        (
            "intervals",
            format!(
                "{level:.0}% percentile, {} moving-block bootstrap draws of {} rows",
                summary["bootstrap_draws"], summary["block_rows"]
            ),
        ),
        ("comparison (compare.summary)", format!("blake3 {}", provenance.summary_hash)),
        ("report", format!("report v{}", <Report as Stage>::VERSION)),
    ];
    html.push_str("<h2>Provenance</h2><table>");
    for (name, value) in provenance_rows {
        let _ = write!(html, r#"<tr><th class="l">{}</th><td class="l">{}</td></tr>"#, esc(name), esc(&value));
    }
    html.push_str("</table><p class=\"note\">The run that exported this page (id, name, overrides, code version) is stamped under the verdict by <code>pipeline run</code>; a page read from the store itself carries none, since the same inputs may serve several runs.</p>");

    html.push_str("<h2>Every variant</h2><p class=\"note\">AUC on each split side by side: a train AUC far above validation and test is overfitting; validation is the split early stopping looked at.</p><table><tr><th>model</th><th>label</th><th>feature set</th><th>status</th><th>features</th><th>rows</th><th>base rate</th><th>train AUC</th><th>valid AUC</th><th>test AUC</th><th>AUC CI</th><th>hit rate</th><th>log loss</th><th>Brier</th><th>high-vol AUC</th><th>high-vol hit</th></tr>");
    for v in summary["variants"].as_array().into_iter().flatten() {
        let _ = write!(
            html,
            r#"<tr><td class="l">{}</td><td class="l">{}</td><td class="l">{}</td><td class="l">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(v["model"].as_str().unwrap_or("")),
            esc(v["label"].as_str().unwrap_or("")),
            esc(v["feature_set"].as_str().unwrap_or("")),
            esc(v["status"].as_str().unwrap_or("")),
            v["features"],
            v["rows"],
            num(&v["base_rate"], 3),
            num(&v["train_auc"], 4),
            num(&v["valid_auc"], 4),
            num(&v["auc"], 4),
            match (v["auc_interval"][0].as_f64(), v["auc_interval"][1].as_f64()) {
                (Some(lo), Some(hi)) => format!("[{lo:.4}, {hi:.4}]"),
                _ => "-".into(),
            },
            num(&v["accuracy"], 4),
            num(&v["log_loss"], 4),
            num(&v["brier"], 4),
            num(&v["high_vol_auc"], 4),
            num(&v["high_vol_accuracy"], 4),
        );
    }
    html.push_str("</table>");

    // Charts per label: every model and feature set of that label together.
    let curves: Vec<&Value> = summary["curves"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    let variant_auc = |c: &Value| {
        summary["variants"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["model"] == c["model"] && v["label"] == c["label"] && v["feature_set"] == c["feature_set"])
            .and_then(|v| v["auc"].as_f64())
    };
    // Shortest horizon first (label_dir_5 before label_dir_15).
    let mut labels: Vec<(i64, &str)> = curves
        .iter()
        .filter_map(|c| Some((c["horizon_minutes"].as_i64().unwrap_or(0), c["label"].as_str()?)))
        .collect();
    labels.sort();
    labels.dedup();
    let labels: Vec<&str> = labels.into_iter().map(|(_, l)| l).collect();
    for label in labels {
        let of_label: Vec<&&Value> = curves.iter().filter(|c| c["label"] == label).collect();
        let name =
            |c: &Value| format!("{} {}", c["model"].as_str().unwrap_or(""), c["feature_set"].as_str().unwrap_or(""));
        let points = |v: &Value, x: &str, y: &str| -> Vec<(f64, f64)> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| Some((p[x].as_f64().or(p[0].as_f64())?, p[y].as_f64().or(p[1].as_f64())?)))
                .collect()
        };
        let _ = write!(html, "<h2>{}</h2><div class=\"charts\">", esc(label));
        let unit = |lo: f64, hi: f64| ticks(lo, hi, 4, 2);
        let roc = LineChart {
            title: &format!("ROC, {split}"),
            x_label: "false positive rate",
            y_label: "true positive rate",
            x: (0.0, 1.0),
            y: (0.0, 1.0),
            x_ticks: unit(0.0, 1.0),
            y_ticks: unit(0.0, 1.0),
            diagonal: true,
            reference: None,
            series: of_label
                .iter()
                .map(|c| {
                    let auc = variant_auc(c).map_or("-".into(), |a| format!("{a:.3}"));
                    (format!("{} (AUC {auc})", name(c)), points(&c["roc"], "0", "1"))
                })
                .collect(),
            point_notes: Vec::new(),
        };
        html.push_str(&roc.render());

        let calibration: Vec<(String, Vec<(f64, f64)>)> =
            of_label.iter().map(|c| (name(c), points(&c["calibration"], "score", "observed"))).collect();
        let counts: Vec<Vec<String>> = of_label
            .iter()
            .map(|c| c["calibration"].as_array().into_iter().flatten().map(|b| format!("n={}", b["rows"])).collect())
            .collect();
        let (x_lo, x_hi) = zoomed(calibration.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)), 0.5);
        let (y_lo, y_hi) = zoomed(calibration.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)), 0.5);
        let (lo, hi) = (x_lo.min(y_lo), x_hi.max(y_hi));
        html.push_str(
            &LineChart {
                title: "Calibration (bins with their row counts)",
                x_label: "mean predicted probability",
                y_label: "observed frequency",
                x: (lo, hi),
                y: (lo, hi),
                x_ticks: unit(lo, hi),
                y_ticks: unit(lo, hi),
                diagonal: true,
                reference: Some((0.5, "0.5")),
                series: calibration,
                point_notes: counts,
            }
            .render(),
        );

        let deciles: Vec<(String, Vec<(f64, f64)>)> = of_label
            .iter()
            .map(|c| {
                let values: Vec<(f64, f64)> = c["hit_rate_by_vol_decile"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .filter_map(|(d, v)| v.as_f64().map(|h| (d as f64 + 1.0, h)))
                    .collect();
                (name(c), values)
            })
            .collect();
        let decile_ticks: Vec<(f64, String)> = (1..=10).map(|d| (d as f64, d.to_string())).collect();
        let (lo, hi) = zoomed(deciles.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)), 0.5);
        html.push_str(
            &LineChart {
                title: "Hit rate by volatility decile",
                x_label: "volatility decile within the split (1 = calmest)",
                y_label: "hit rate",
                x: (0.5, 10.5),
                y: (lo, hi),
                x_ticks: decile_ticks.clone(),
                y_ticks: unit(lo, hi),
                diagonal: false,
                reference: Some((0.5, "coin flip")),
                series: deciles,
                point_notes: Vec::new(),
            }
            .render(),
        );

        let returns: Vec<(String, Vec<(f64, f64)>)> = of_label
            .iter()
            .map(|c| {
                let values = c["return_by_score_decile"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| Some((d["decile"].as_f64()?, d["mean_return_bps"].as_f64()?)))
                    .collect();
                (name(c), values)
            })
            .filter(|(_, v): &(String, Vec<(f64, f64)>)| !v.is_empty())
            .collect();
        if !returns.is_empty() {
            let (lo, hi) = zoomed(returns.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)), 0.0);
            html.push_str(
                &LineChart {
                    title: "Mean forward return by score decile",
                    x_label: "score decile within the split (10 = most bullish)",
                    y_label: "mean forward return over the label's horizon (bps)",
                    x: (0.5, 10.5),
                    y: (lo, hi),
                    x_ticks: decile_ticks,
                    y_ticks: ticks(lo, hi, 4, 1),
                    diagonal: false,
                    reference: Some((0.0, "0 bps")),
                    series: returns,
                    point_notes: Vec::new(),
                }
                .render(),
            );
        }

        let by_day: Vec<(String, Vec<(f64, f64)>)> = of_label
            .iter()
            .map(|c| {
                let values = c["auc_by_day"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .filter_map(|(k, d)| Some((k as f64, d["auc"].as_f64()?)))
                    .collect();
                (name(c), values)
            })
            .collect();
        let days: Vec<String> = of_label
            .first()
            .map(|c| {
                c["auc_by_day"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d["day"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if days.len() >= 2 {
            let (lo, hi) = zoomed(by_day.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)), 0.5);
            let last = (days.len() - 1) as f64;
            html.push_str(
                &LineChart {
                    title: &format!("AUC per day, {split}"),
                    x_label: &format!("day ({} .. {})", days[0], days[days.len() - 1]),
                    y_label: "AUC of the day's rows",
                    x: (-0.5, last + 0.5),
                    y: (lo, hi),
                    x_ticks: vec![(0.0, days[0][5..].to_string()), (last, days[days.len() - 1][5..].to_string())],
                    y_ticks: unit(lo, hi),
                    diagonal: false,
                    reference: Some((0.5, "no signal")),
                    series: by_day,
                    point_notes: Vec::new(),
                }
                .render(),
            );
        }
        html.push_str("</div><div class=\"charts\">");
        for c in &of_label {
            let bars: Vec<(String, f64, Option<f64>)> = c["importance"]
                .as_array()
                .into_iter()
                .flatten()
                .take(params.top_features)
                .filter_map(|i| Some((i["feature"].as_str()?.to_string(), i["model"].as_f64()?, None)))
                .collect();
            if !bars.is_empty() {
                html.push_str(&bar_chart(
                    &format!("Model's own importance (share of total, sums to 1): {}", name(c)),
                    &bars,
                ));
            }
            let mut perm: Vec<(String, f64, Option<f64>)> = c["importance"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| {
                    Some((i["feature"].as_str()?.to_string(), i["permutation"].as_f64()?, i["permutation_sd"].as_f64()))
                })
                .collect();
            perm.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            perm.truncate(params.top_features);
            if !perm.is_empty() {
                let spread = if perm.iter().any(|p| p.2.is_some()) {
                    ", ± sd over shuffles or folds"
                } else {
                    ", one shuffle: no spread"
                };
                html.push_str(&bar_chart(
                    &format!("Permutation importance (validation AUC lost{spread}): {}", name(c)),
                    &perm,
                ));
            }
        }
        html.push_str("</div>");
    }
    html.push_str(&coverage_section(&summary["coverage"], split));
    html.push_str("</body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_a_self_contained_page_with_escaping() {
        let summary = json!({
            "treatment": "with_news", "baseline": "price_only", "split": "test", "level": 0.95,
            "bootstrap_draws": 500, "block_rows": 120,
            "variants": [{ "model": "gbdt", "label": "label_dir_15", "feature_set": "with_news", "status": "ok", "auc": 0.55 }],
            "ablation": [
                { "model": "gbdt", "label": "label_dir_15", "status": "ok", "auc_delta": 0.02, "auc_delta_interval": [0.01, 0.03], "auc_significant": true },
                { "model": "logistic", "label": "label_dir_15", "status": "unavailable: no <news>", "baseline_auc": 0.5 }
            ],
            "curves": [{ "model": "gbdt", "label": "label_dir_15", "feature_set": "with_news",
                "roc": [[1.0, 1.0], [0.5, 0.6], [0.0, 0.0]], "calibration": [{ "score": 0.4, "observed": 0.45, "rows": 10 }],
                "hit_rate_by_vol_decile": [0.5, null, 0.6], "importance": [{ "feature": "news_sent_decay", "model": 0.3, "permutation": 0.01 }] }]
        });
        let html = render(
            &summary,
            &ReportParams { title: "T".into(), top_features: 15, data: String::new() },
            &Provenance { summary_hash: "ab".into() },
        );
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.contains("<svg"), "charts are inline");
        assert!(
            !html.contains("<script") && !html.contains("http://") && !html.contains("https://"),
            "no external resources"
        );
        assert!(html.contains("no &lt;news&gt;"), "text is escaped");
        assert!(html.contains("[+0.0100, +0.0300]"));
        assert!(html.contains("news_sent_decay"));
        let verdict = html.find("<p class=\"verdict\">").unwrap();
        assert!(html.find("</h1>").unwrap() < verdict && verdict < html.find("<h2>").unwrap(), "the answer first");
        assert!(html.contains(pipeline_engine::exports::RUN_STAMP_MARKER), "room for the exporting run's stamp");
        assert!(html.contains("Data: <b>not stated</b>"), "unstated data are said to be unstated");
    }

    fn pair(model: &str, delta: f64, lo: f64, hi: f64) -> Value {
        json!({ "model": model, "label": "label_dir_5", "status": "ok", "auc_delta": delta, "auc_delta_interval": [lo, hi] })
    }

    /// The verdict counts the pairs whose interval is above 0, names the strongest, and never says
    /// yes when no interval excludes 0.
    #[test]
    fn the_verdict_answers_from_the_intervals() {
        let summary = |rows: Vec<Value>| json!({ "treatment": "with_news", "baseline": "price_only", "split": "test", "level": 0.95, "ablation": rows });
        let all = verdict_sentence(&summary(vec![pair("gbdt", 0.03, 0.01, 0.05), pair("logistic", 0.02, 0.001, 0.04)]));
        assert!(
            all.starts_with("Yes: with_news raises test AUC over price_only with an interval above 0 in 2 of 2 pairs"),
            "{all}"
        );
        assert!(all.contains("largest: gbdt label_dir_5, +0.0300 [+0.0100, +0.0500]"), "{all}");
        assert!(all.contains("not adjusted for testing several"), "{all}");
        let some =
            verdict_sentence(&summary(vec![pair("gbdt", 0.03, 0.01, 0.05), pair("logistic", -0.02, -0.04, -0.001)]));
        assert!(some.starts_with("In part:") && some.contains("in 1 of 2 pairs, and lowers it in 1"), "{some}");
        let none =
            verdict_sentence(&summary(vec![pair("gbdt", 0.004, -0.01, 0.02), pair("logistic", 0.001, -0.02, 0.02)]));
        assert!(none.starts_with("No:") && none.contains("largest difference: gbdt label_dir_5, +0.0040"), "{none}");
        let unavailable = verdict_sentence(&summary(vec![
            json!({ "model": "gbdt", "label": "x", "status": "unavailable: no news" }),
        ]));
        assert!(unavailable.starts_with("No answer:") && unavailable.contains("no news"), "{unavailable}");
    }
}
