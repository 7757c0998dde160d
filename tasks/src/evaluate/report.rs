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
    const VERSION: u32 = 4;
    const DOC: &'static str = "A self-contained HTML report of a `compare` summary: the ablation table with confidence intervals, ROC curves, calibration, hit rate by volatility decile, feature importance.\n\n\
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
        let html = render(&summary, params);
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

/// A square chart with axes from 0 to 1 (or `y_max`), one polyline per series.
fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    diagonal: bool,
) -> String {
    let (w, h, m) = (340.0, 300.0, 40.0);
    let (pw, ph) = (w - m - 10.0, h - m - 30.0);
    let x = |v: f64| m + v.clamp(0.0, 1.0) * pw;
    let y = |v: f64| 20.0 + (1.0 - v.clamp(0.0, 1.0)) * ph;
    let mut svg =
        format!(r#"<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><title>{}</title>"#, esc(title));
    let _ = write!(svg, r#"<text x="{}" y="14" font-size="12" text-anchor="middle">{}</text>"#, w / 2.0, esc(title));
    let _ = write!(svg, r##"<rect x="{m}" y="20" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##);
    for t in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let _ =
            write!(svg, r#"<text x="{}" y="{}" font-size="9" text-anchor="middle">{t}</text>"#, x(t), 20.0 + ph + 12.0);
        let _ = write!(svg, r#"<text x="{}" y="{}" font-size="9" text-anchor="end">{t}</text>"#, m - 3.0, y(t) + 3.0);
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" font-size="10" text-anchor="middle">{}</text>"#,
        m + pw / 2.0,
        h - 4.0,
        esc(x_label)
    );
    let _ = write!(
        svg,
        r#"<text x="10" y="{}" font-size="10" text-anchor="middle" transform="rotate(-90 10 {})">{}</text>"#,
        20.0 + ph / 2.0,
        20.0 + ph / 2.0,
        esc(y_label)
    );
    if diagonal {
        let _ = write!(
            svg,
            r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#bbb" stroke-dasharray="4 3"/>"##,
            x(0.0),
            y(0.0),
            x(1.0),
            y(1.0)
        );
    }
    for (k, (name, points)) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let path: Vec<String> = points.iter().map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b))).collect();
        let _ =
            write!(svg, r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#, path.join(" "));
        for (a, b) in points.iter().filter(|_| points.len() <= 12) {
            let _ = write!(svg, r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"/>"#, x(*a), y(*b));
        }
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" font-size="9" fill="{color}">{}</text>"#,
            m + 6.0,
            32.0 + 11.0 * k as f64,
            esc(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Horizontal bars, longest first.
fn bar_chart(title: &str, bars: &[(String, f64)]) -> String {
    let row = 16.0;
    let (w, label_w) = (420.0, 170.0);
    let h = 24.0 + row * bars.len() as f64;
    let max = bars.iter().map(|b| b.1.abs()).fold(0.0, f64::max).max(1e-12);
    let mut svg = format!(
        r#"<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><title>{}</title><text x="0" y="13" font-size="12">{}</text>"#,
        esc(title),
        esc(title)
    );
    for (k, (name, value)) in bars.iter().enumerate() {
        let top = 20.0 + row * k as f64;
        let len = (w - label_w - 60.0) * value.abs() / max;
        let color = if *value >= 0.0 { "#1f77b4" } else { "#d62728" };
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" font-size="10" text-anchor="end">{}</text><rect x="{label_w}" y="{}" width="{len:.1}" height="{}" fill="{color}"/><text x="{}" y="{}" font-size="9">{}</text>"#,
            label_w - 4.0,
            top + 11.0,
            esc(name),
            top + 2.0,
            row - 4.0,
            label_w + len + 4.0,
            top + 11.0,
            if value.fract() == 0.0 { format!("{value:.0}") } else { format!("{value:.4}") }
        );
    }
    svg.push_str("</svg>");
    svg
}

/// How much news the compared and training windows had, in numbers and words, with items per day.
fn coverage_section(c: &Value, split: &str) -> String {
    if c["source"] == Value::Bool(false) {
        return "<h2>News coverage</h2><p class=\"note\">No news source in this pipeline: the news variants are unavailable.</p>".into();
    }
    if c["source"] != Value::Bool(true) {
        return String::new();
    }
    let mut html = String::from("<h2>News coverage</h2>");
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
        let bars: Vec<(String, f64)> = w["items_by_day"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| Some((d[0].as_str()?.to_string(), d[1].as_f64()?)))
            .collect();
        if !bars.is_empty() {
            html.push_str(&bar_chart(&format!("News items per day, {name} window"), &bars));
        }
    }
    html
}

pub fn render(summary: &Value, params: &ReportParams) -> String {
    let treatment = summary["treatment"].as_str().unwrap_or("");
    let baseline = summary["baseline"].as_str().unwrap_or("");
    let split = summary["split"].as_str().unwrap_or("test");
    let level = summary["level"].as_f64().unwrap_or(0.95) * 100.0;
    let mut html = String::new();
    let _ = write!(
        html,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{}</title><style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}}
table{{border-collapse:collapse;font-size:13px;margin:8px 0 16px}}th,td{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
th{{background:#f3f3f3}}td.l{{text-align:left}}tr.sig td{{background:#eef7ee}}tr.na td{{color:#888}}
.charts{{display:flex;flex-wrap:wrap;gap:12px}}.note{{color:#555;font-size:13px}}</style></head><body>
<h1>{}</h1>
<p class="note">Feature set <b>{}</b> against <b>{}</b> on the <b>{split}</b> split. Intervals: {level:.0}% percentile intervals from {} moving-block bootstrap resamples of {}-row blocks, the same rows for both variants. A difference whose interval includes 0 is not evidence that news helps; an AUC whose interval includes 0.5 is not evidence of any signal. On real 1-minute BTC, price-only direction AUC near 0.5 is the expected result; much higher values mean leakage until proven otherwise.</p>
"#,
        esc(&params.title),
        esc(&params.title),
        esc(treatment),
        esc(baseline),
        summary["bootstrap_draws"],
        summary["block_rows"],
    );

    html.push_str(&coverage_section(&summary["coverage"], split));
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

    html.push_str("<h2>Every variant</h2><table><tr><th>model</th><th>label</th><th>feature set</th><th>status</th><th>features</th><th>rows</th><th>base rate</th><th>AUC</th><th>AUC CI</th><th>hit rate</th><th>log loss</th><th>Brier</th><th>high-vol AUC</th><th>high-vol hit</th></tr>");
    for v in summary["variants"].as_array().into_iter().flatten() {
        let _ = write!(
            html,
            r#"<tr><td class="l">{}</td><td class="l">{}</td><td class="l">{}</td><td class="l">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(v["model"].as_str().unwrap_or("")),
            esc(v["label"].as_str().unwrap_or("")),
            esc(v["feature_set"].as_str().unwrap_or("")),
            esc(v["status"].as_str().unwrap_or("")),
            v["features"],
            v["rows"],
            num(&v["base_rate"], 3),
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
        let roc: Vec<(String, Vec<(f64, f64)>)> =
            of_label.iter().map(|c| (name(c), points(&c["roc"], "0", "1"))).collect();
        let calibration: Vec<(String, Vec<(f64, f64)>)> =
            of_label.iter().map(|c| (name(c), points(&c["calibration"], "score", "observed"))).collect();
        let deciles: Vec<(String, Vec<(f64, f64)>)> = of_label
            .iter()
            .map(|c| {
                let values: Vec<(f64, f64)> = c["hit_rate_by_vol_decile"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .filter_map(|(d, v)| v.as_f64().map(|h| ((d as f64 + 0.5) / 10.0, h)))
                    .collect();
                (name(c), values)
            })
            .collect();
        let _ = write!(html, "<h2>{}</h2><div class=\"charts\">", esc(label));
        html.push_str(&line_chart(&format!("ROC, {split}"), "false positive rate", "true positive rate", &roc, true));
        html.push_str(&line_chart(
            "Calibration",
            "mean predicted probability",
            "observed frequency",
            &calibration,
            true,
        ));
        html.push_str(&line_chart(
            "Hit rate by volatility decile",
            "volatility decile within the split, low to high",
            "hit rate",
            &deciles,
            false,
        ));
        html.push_str("</div><div class=\"charts\">");
        for c in &of_label {
            let bars: Vec<(String, f64)> = c["importance"]
                .as_array()
                .into_iter()
                .flatten()
                .take(params.top_features)
                .filter_map(|i| Some((i["feature"].as_str()?.to_string(), i["model"].as_f64()?)))
                .collect();
            if !bars.is_empty() {
                html.push_str(&bar_chart(&format!("Importance (model's own): {}", name(c)), &bars));
            }
            let mut perm: Vec<(String, f64)> = c["importance"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| Some((i["feature"].as_str()?.to_string(), i["permutation"].as_f64()?)))
                .collect();
            perm.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            perm.truncate(params.top_features);
            if !perm.is_empty() {
                html.push_str(&bar_chart(&format!("Permutation (valid AUC lost): {}", name(c)), &perm));
            }
        }
        html.push_str("</div>");
    }
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
        let html = render(&summary, &ReportParams { title: "T".into(), top_features: 15 });
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.contains("<svg"), "charts are inline");
        assert!(
            !html.contains("<script") && !html.contains("http://") && !html.contains("https://"),
            "no external resources"
        );
        assert!(html.contains("no &lt;news&gt;"), "text is escaped");
        assert!(html.contains("[+0.0100, +0.0300]"));
        assert!(html.contains("news_sent_decay"));
    }
}
