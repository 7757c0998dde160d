//! `event_mode_patch`: on an event day (high volatility, liquidation pressure, the US open, a
//! listed window such as FOMC), a patch that turns on the strategy config's `event_mode` with
//! more leverage and size, capped by params, isolated margin and a stop after N consecutive
//! losses; on any other day an empty patch and the reasons why.

use anyhow::{Result, anyhow};
use pipeline_artifacts::{ArtifactKind, read_json, write_json};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::bias::{Bias, Mode};
use super::events::{EventRules, judge};
use super::strategy_config::{Change, StrategyConfig, apply, patch_files};
use crate::learn::dataset::{format_ms, parse_boundary};
use crate::market::time::Span;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventModePatchParams {
    /// The strategy config (`trading_strategies_dynamic.json`), relative to the pipeline file.
    pub config: String,
    /// The decision time; default: the `bias` input's `as_of`, else the close of the last bar.
    #[serde(default)]
    pub as_of: Option<String>,
    /// How long event mode holds from `as_of`.
    #[serde(default = "default_valid_for")]
    pub valid_for: String,
    /// Event-mode leverage asked for; capped at `max_leverage` and the config's `risk.max_leverage`.
    #[serde(default = "default_leverage")]
    pub leverage: f64,
    /// The highest event-mode leverage this patch writes.
    #[serde(default = "default_max_leverage")]
    pub max_leverage: f64,
    /// Event-mode position-size multiplier asked for; capped at `max_size`.
    #[serde(default = "default_size")]
    pub size_multiplier: f64,
    /// The highest event-mode size multiplier this patch writes.
    #[serde(default = "default_max_size")]
    pub max_size: f64,
    /// Event positions on isolated margin (a liquidation takes that position's margin only).
    #[serde(default = "default_isolated")]
    pub isolated: bool,
    /// Event mode stops after this many losing trades in a row.
    #[serde(default = "default_stop_after")]
    pub stop_after_losses: u32,
    /// What makes an event day.
    #[serde(default)]
    pub events: EventRules,
}

fn default_valid_for() -> String {
    "1d".into()
}
fn default_leverage() -> f64 {
    5.0
}
fn default_max_leverage() -> f64 {
    5.0
}
fn default_size() -> f64 {
    1.5
}
fn default_max_size() -> f64 {
    2.0
}
fn default_isolated() -> bool {
    true
}
fn default_stop_after() -> u32 {
    3
}

pub struct EventModePatch;

/// The changes to `event_mode` for the window, or none (with the reasons) on an ordinary day.
pub fn event_changes(
    params: &EventModePatchParams,
    config: &Value,
    verdict: &super::events::EventVerdict,
    cautious_bias: Option<&str>,
    from: i64,
    until: i64,
) -> (Vec<Change>, Vec<String>) {
    let mut why = verdict.reasons.clone();
    if !verdict.is_event {
        why.insert(0, "not an event day: no change".into());
        return (Vec::new(), why);
    }
    if let Some(mode) = cautious_bias {
        why.insert(
            0,
            format!("an event day, but the bias is in {mode} mode: no event mode on data the model cannot vouch for"),
        );
        return (Vec::new(), why);
    }
    let risk_max = config["risk"]["max_leverage"].as_f64().unwrap_or(f64::INFINITY);
    let leverage = params.leverage.min(params.max_leverage).min(risk_max);
    let size = params.size_multiplier.min(params.max_size);
    let number = |x: f64| if x.fract() == 0.0 { json!(x as i64) } else { json!(x) };
    let reason = why
        .iter()
        .filter(|r| !r.contains("an event needs") && !r.starts_with("no "))
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    let set = |key: &str, value: Value, why: String| Change { pointer: format!("/event_mode/{key}"), value, why };
    let changes = vec![
        set("enabled", json!(true), "an event day".into()),
        set(
            "leverage",
            number(leverage),
            format!("min(leverage {}, max_leverage {}, risk.max_leverage)", params.leverage, params.max_leverage),
        ),
        set(
            "position_size_multiplier",
            number(size),
            format!("min(size_multiplier {}, max_size {})", params.size_multiplier, params.max_size),
        ),
        set("margin_mode", json!(if params.isolated { "isolated" } else { "cross" }), "param isolated".into()),
        set("stop_after_consecutive_losses", json!(params.stop_after_losses), "param stop_after_losses".into()),
        set("valid_from", json!(format_ms(from)), "the decision time".into()),
        set("valid_until", json!(format_ms(until)), format!("valid_for {}", params.valid_for)),
        set("reason", json!(reason), "the event rules".into()),
    ];
    why.insert(0, "an event day: event mode on".into());
    (changes, why)
}

/// The patch: `[]` without changes, else one `add` of the whole `event_mode` object.
pub fn event_patch(patched: &Value, changes: &[Change]) -> Value {
    match changes.is_empty() {
        true => json!([]),
        false => json!([{ "op": "add", "path": "/event_mode", "value": patched["event_mode"] }]),
    }
}

impl Stage for EventModePatch {
    type Params = EventModePatchParams;
    const NAME: &'static str = "event_mode_patch";
    const VERSION: u32 = 1;
    const DOC: &'static str = "On an event day (volatility or liquidation pressure against the past days, the US open, a listed window such as FOMC), patch the strategy config's `event_mode` on: more leverage and size (capped), isolated margin, a stop after N consecutive losses; on other days an empty patch and why.\n\n\
        Inputs: `bars` (the bar grid; only bars closed before the decision time are read), optional `bias` (its \
        `as_of` is the decision time, and a conservative or fallback bias keeps event mode off). Outputs: `patch` \
        (RFC 6902; `[]` on an ordinary day), `patched` (the config with it), `diff` (the verdict and every rule's \
        finding in words). Wire `patch` into `strategy_patch`'s `event_patch` to write one config with both.";
    const EXAMPLE: &'static str = r#"[stages.market]
task = "synth_market"
params = { days = 20 }

[stages.event_mode]
task = "event_mode_patch"
inputs = { bars = "market" }
params = { config = "examples/trading_strategies_dynamic.json", as_of = "2024-01-20", max_leverage = 5, events = { windows = [{ name = "FOMC", from = "2024-01-20T19:00:00Z", until = "2024-01-20T20:00:00Z" }] } }
"#;

    fn validate(params: &EventModePatchParams) -> Result<(), ParamError> {
        let mut errors = Vec::new();
        if let Some(as_of) = &params.as_of
            && let Err(e) = parse_boundary(as_of)
        {
            errors.push(ParamError::new("as_of", e));
        }
        if let Err(e) =
            Span::parse(&params.valid_for).and_then(|s| s.fixed_ms().ok_or_else(|| "use m, h or d".to_string()))
        {
            errors.push(ParamError::new("valid_for", e));
        }
        for (name, v) in [("leverage", params.leverage), ("max_leverage", params.max_leverage)] {
            if !(1.0..=125.0).contains(&v) {
                errors.push(ParamError::new(name, "from 1 to 125"));
            }
        }
        for (name, v) in [("size_multiplier", params.size_multiplier), ("max_size", params.max_size)] {
            if !(v > 0.0 && v <= 10.0) {
                errors.push(ParamError::new(name, "a multiplier in (0, 10]"));
            }
        }
        if params.stop_after_losses == 0 {
            errors.push(ParamError::new("stop_after_losses", "at least 1"));
        }
        for (path, message) in params.events.check() {
            errors.push(ParamError::new(format!("events.{path}"), message));
        }
        ParamError::all(errors)
    }

    fn outputs(_params: &EventModePatchParams) -> Vec<OutputDecl> {
        vec![
            OutputDecl::new("patch", ArtifactKind::Json),
            OutputDecl::new("patched", ArtifactKind::Json),
            OutputDecl::new("diff", ArtifactKind::File),
        ]
    }

    fn files(params: &EventModePatchParams) -> Vec<String> {
        vec![params.config.clone()]
    }

    fn headline_metrics(_params: &EventModePatchParams) -> &'static [&'static str] {
        &["event"]
    }

    fn check_inputs(_params: &EventModePatchParams, inputs: &[InputInfo]) -> Result<(), String> {
        match inputs.iter().find(|i| i.name == "bars") {
            Some(i) if i.kind == ArtifactKind::Table => {}
            Some(i) => return Err(format!("input `bars` is a {}, expected a table", i.kind)),
            None => {
                return Err(
                    "`event_mode_patch` needs inputs = { bars = \"aligned\" } (and optionally bias = \"bias.bias\")"
                        .into(),
                );
            }
        }
        if let Some(i) = inputs.iter().find(|i| i.name == "bias")
            && i.kind != ArtifactKind::Json
        {
            return Err(format!("input `bias` is a {}, expected the `bias` stage's JSON", i.kind));
        }
        Ok(())
    }

    fn run(params: &EventModePatchParams, ctx: &mut StageContext) -> Result<()> {
        let config = StrategyConfig::read(&ctx.resolve(&params.config))?;
        let bias: Option<Bias> = match ctx.input("bias") {
            Ok(i) => Some(
                serde_json::from_value(read_json(&i.path)?)
                    .map_err(|e| anyhow!("input `bias` is not a bias (docs/bias.schema.json): {e}"))?,
            ),
            Err(_) => None,
        };
        let bars = super::bias::read_bars(&ctx.input("bars")?.path)?;
        let as_of = match (&params.as_of, &bias) {
            (Some(text), _) => parse_boundary(text).map_err(|e| anyhow!("params.as_of: {e}"))?,
            (None, Some(b)) => parse_boundary(&b.as_of).map_err(|e| anyhow!("the bias's as_of: {e}"))?,
            (None, None) => {
                bars.timestamps.last().map(|t| t + bars.step).ok_or_else(|| anyhow!("the `bars` input has no rows"))?
            }
        };
        let until = Span::parse(&params.valid_for).map_err(|e| anyhow!(e))?.add_to(as_of);
        let verdict = judge(&params.events, &bars.events(bars.known_by(as_of)), as_of, until);
        let cautious = bias.as_ref().filter(|b| matches!(b.mode, Mode::Conservative | Mode::Fallback)).map(|b| {
            serde_json::to_value(b.mode).ok().and_then(|m| m.as_str().map(str::to_string)).unwrap_or_default()
        });
        let (changes, why) = event_changes(params, &config.value, &verdict, cautious.as_deref(), as_of, until);
        let mut patched = config.value.clone();
        if patched.get("event_mode").is_none() && !changes.is_empty() {
            patched["event_mode"] = json!({});
        }
        apply(&mut patched, &changes)?;
        let header = format!(
            "# event mode for {} to {} ({}): {}\n{}\n",
            format_ms(as_of),
            format_ms(until),
            // As written in the pipeline: an absolute path would make the output machine-dependent.
            params.config,
            why.first().map(String::as_str).unwrap_or(""),
            why.iter().skip(1).map(|r| format!("#   {r}")).collect::<Vec<_>>().join("\n")
        );
        let mut files = patch_files(&config.value, patched, &changes, &header)?;
        // One `add` of the whole `event_mode` object (an `add` replaces a member that exists):
        // it applies to any copy of the config, the base an in-place `strategy_patch` starts
        // from included, whatever that copy's `event_mode` held.
        files.patch = event_patch(&files.patched, &changes);
        ctx.metric("event", verdict.is_event && cautious.is_none());
        write_json(&files.patch, &ctx.output_path("patch")?)?;
        write_json(&files.patched, &ctx.output_path("patched")?)?;
        std::fs::write(ctx.output_path("diff")?, &files.diff)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::events::EventVerdict;

    fn config() -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../pipelines/examples/trading_strategies_dynamic.json");
        StrategyConfig::read(&path).unwrap().value
    }

    fn params(extra: Value) -> EventModePatchParams {
        let mut p = json!({ "config": "x.json" });
        p.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(p).unwrap()
    }

    fn verdict(is_event: bool) -> EventVerdict {
        EventVerdict {
            is_event,
            vol_ratio: Some(if is_event { 2.1 } else { 1.1 }),
            liquidation_ratio: None,
            reasons: vec!["volatility 2.10x".into()],
            fired: if is_event { vec!["volatility 2.10x".into()] } else { Vec::new() },
        }
    }

    #[test]
    fn an_event_day_turns_event_mode_on_within_the_caps() {
        let config = config();
        // Asked for 20x and 3x size; capped by max_leverage 8, then by nothing else (risk max 10), size by max_size 2.
        let p =
            params(json!({ "leverage": 20.0, "max_leverage": 8.0, "size_multiplier": 3.0, "stop_after_losses": 2 }));
        let (changes, why) = event_changes(&p, &config, &verdict(true), None, 0, 86_400_000);
        let mut patched = config.clone();
        apply(&mut patched, &changes).unwrap();
        let e = &patched["event_mode"];
        assert_eq!(
            (e["enabled"].clone(), e["leverage"].clone(), e["position_size_multiplier"].clone()),
            (json!(true), json!(8), json!(2))
        );
        assert_eq!(
            (e["margin_mode"].as_str(), e["stop_after_consecutive_losses"].as_u64()),
            (Some("isolated"), Some(2))
        );
        assert_eq!(e["valid_until"], "1970-01-02T00:00:00Z");
        assert!(why[0].starts_with("an event day"));
        // The config's own risk.max_leverage caps too.
        let p = params(json!({ "leverage": 50.0, "max_leverage": 50.0 }));
        let (changes, _) = event_changes(&p, &config, &verdict(true), None, 0, 1);
        assert!(changes.iter().any(|c| c.pointer == "/event_mode/leverage" && c.value == json!(10)));
        // The patched copy still passes the config checks.
        StrategyConfig::checked(patched.clone(), "", std::path::Path::new("x.json")).unwrap();
        // The patch applies to any copy: one without `event_mode` at all, or yesterday's, on.
        let patch: json_patch::Patch = serde_json::from_value(event_patch(&patched, &changes)).unwrap();
        for mut other in [
            {
                let mut c = config.clone();
                c.as_object_mut().unwrap().remove("event_mode");
                c
            },
            {
                let mut c = config.clone();
                c["event_mode"]["enabled"] = json!(true);
                c["event_mode"]["leverage"] = json!(9);
                c
            },
        ] {
            json_patch::patch(&mut other, &patch).unwrap();
            assert_eq!(other["event_mode"], patched["event_mode"]);
        }
    }

    #[test]
    fn an_ordinary_day_or_a_cautious_bias_gives_an_empty_patch_and_says_why() {
        let config = config();
        let p = params(json!({}));
        let (changes, why) = event_changes(&p, &config, &verdict(false), None, 0, 1);
        assert!(changes.is_empty());
        assert_eq!(why[0], "not an event day: no change");
        let files = patch_files(&config, config.clone(), &changes, "").unwrap();
        assert_eq!(files.patch, json!([]));
        let (changes, why) = event_changes(&p, &config, &verdict(true), Some("conservative"), 0, 1);
        assert!(changes.is_empty() && why[0].contains("conservative mode"), "{why:?}");
    }
}
