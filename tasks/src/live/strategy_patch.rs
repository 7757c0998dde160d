//! `strategy_patch`: the bias applied to a copy of the live strategy's config, written with its
//! RFC 6902 JSON Patch and a readable diff; in place only with `inplace = true`.

use anyhow::{Result, anyhow, bail};
use pipeline_artifacts::{ArtifactKind, read_json, write_json};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::bias::{Bias, Direction, Mode};
use super::strategy_config::{
    Change, StrategyConfig, apply, base_path, patch_files, patch_source, write_in_place, written_path,
};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StrategyPatchParams {
    /// The strategy config (`trading_strategies_dynamic.json`), relative to the pipeline file.
    pub config: String,
    /// Strategies to patch, by name; empty: every strategy with `enabled = true`.
    #[serde(default)]
    pub strategies: Vec<String>,
    /// Write the patched config over `config` (atomically; the previous content as
    /// `<config>.bak`, the config before the first in-place write as `<config>.base`, which
    /// later patches start from). Off: only the outputs are written.
    #[serde(default)]
    pub inplace: bool,
    /// Regimes a long bias blacklists (and takes off the whitelist).
    #[serde(default = "default_against_long")]
    pub regimes_against_long: Vec<String>,
    /// Regimes a short bias blacklists.
    #[serde(default = "default_against_short")]
    pub regimes_against_short: Vec<String>,
    /// In conservative and fallback mode, `min_direction_score` is raised to at least this.
    #[serde(default = "default_cautious_score")]
    pub cautious_min_direction_score: f64,
    /// In conservative and fallback mode, take-profit and stop-loss are multiplied by these
    /// (tighter exits on data the model cannot vouch for).
    #[serde(default = "default_cautious_scale")]
    pub cautious_take_profit_scale: f64,
    /// The stop-loss multiplier in conservative and fallback mode.
    #[serde(default = "default_cautious_scale")]
    pub cautious_stop_loss_scale: f64,
    /// `position_size_multiplier` when the bias is flat (no view: the strategy trades its own
    /// signals at this size).
    #[serde(default = "default_flat_size")]
    pub flat_size_multiplier: f64,
}

fn default_against_long() -> Vec<String> {
    vec!["trend_down".into()]
}
fn default_against_short() -> Vec<String> {
    vec!["trend_up".into()]
}
fn default_cautious_score() -> f64 {
    0.7
}
fn default_cautious_scale() -> f64 {
    0.75
}
fn default_flat_size() -> f64 {
    0.5
}

pub struct StrategyPatch;

/// Rounded to 6 decimals: a multiplier of 0.75 on 0.4 is 0.3, not 0.30000000000000004.
fn round6(x: f64) -> Value {
    json!((x * 1e6).round() / 1e6)
}

/// The leverage bucket at or below `leverage` (the leverage itself when every bucket is above),
/// capped at `risk.max_leverage`.
fn snap_leverage(config: &Value, leverage: f64) -> Value {
    let max = config["risk"]["max_leverage"].as_f64().unwrap_or(f64::INFINITY);
    let buckets: Vec<f64> = config["risk"]["leverage_buckets"]
        .as_array()
        .map(|b| b.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let wanted = leverage.min(max);
    // Below every bucket: the leverage asked for, never a higher bucket.
    let snapped = buckets.iter().rev().find(|&&b| b <= wanted).copied().unwrap_or(wanted);
    if snapped.fract() == 0.0 { json!(snapped as i64) } else { json!(snapped) }
}

/// The changes a bias makes to one strategy (docs/live.md, "strategy_patch").
pub fn strategy_changes(params: &StrategyPatchParams, config: &Value, name: &str, bias: &Bias) -> Vec<Change> {
    let at = format!("/strategies/{}", name.replace('~', "~0").replace('/', "~1"));
    let strategy = &config["strategies"][name];
    let mode = serde_json::to_value(bias.mode).unwrap_or_default();
    let mode = mode.as_str().unwrap_or("");
    let cautious = matches!(bias.mode, Mode::Conservative | Mode::Fallback);
    let mut changes = Vec::new();
    let mut set = |key: &str, value: Value, why: String| {
        changes.push(Change { pointer: format!("{at}/{key}"), value, why });
    };
    let (direction, against) = match bias.direction {
        Direction::Long => ("long", &params.regimes_against_long),
        Direction::Short => ("short", &params.regimes_against_short),
        Direction::Flat => ("neutral", &Vec::new()),
    };
    set("direction_bias", json!(direction), format!("bias direction {direction} ({mode} mode)"));
    // The bias scales the strategy's own size (its multiplier in the base config).
    let own = strategy["position_size_multiplier"].as_f64().unwrap_or(1.0);
    let (size, why) = match bias.direction {
        Direction::Flat => (params.flat_size_multiplier, "flat bias: x flat_size_multiplier".to_string()),
        _ => (bias.position_size_multiplier, format!("x the bias's size multiplier ({mode} mode)")),
    };
    set("position_size_multiplier", round6(own * size), why);
    if let Some(current) = strategy["leverage"].as_f64() {
        let snapped = snap_leverage(config, bias.leverage);
        match bias.direction {
            Direction::Flat if !cautious => {}
            Direction::Flat => {
                let lower = snapped.as_f64().unwrap_or(current).min(current);
                set(
                    "leverage",
                    snap_leverage(config, lower),
                    format!("flat and {mode}: no more than the bias's {}x", bias.leverage),
                );
            }
            _ => set(
                "leverage",
                snapped,
                format!("bias leverage {}x, as a bucket of risk.leverage_buckets", bias.leverage),
            ),
        }
    }
    if !against.is_empty() {
        let list = |key: &str| -> Vec<String> {
            strategy[key]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        };
        let mut black = list("regime_blacklist");
        for r in against {
            if !black.contains(r) {
                black.push(r.clone());
            }
        }
        set("regime_blacklist", json!(black), format!("a {direction} bias blacklists {}", against.join(", ")));
        // An emptied whitelist could read as "every regime" to the live engine: then the
        // blacklist alone keeps the regimes out.
        let white: Vec<String> = list("regime_whitelist").into_iter().filter(|r| !against.contains(r)).collect();
        if strategy.get("regime_whitelist").is_some() && !white.is_empty() {
            set("regime_whitelist", json!(white), format!("a {direction} bias trades no {}", against.join(", ")));
        }
    }
    if cautious {
        if let Some(score) = strategy["min_direction_score"].as_f64() {
            set(
                "min_direction_score",
                round6(score.max(params.cautious_min_direction_score)),
                format!("{mode} mode: at least cautious_min_direction_score"),
            );
        }
        for (key, scale, param) in [
            ("take_profit_pct", params.cautious_take_profit_scale, "cautious_take_profit_scale"),
            ("stop_loss_pct", params.cautious_stop_loss_scale, "cautious_stop_loss_scale"),
        ] {
            if let Some(v) = strategy[key].as_f64() {
                set(key, round6(v * scale), format!("{mode} mode: x {param} ({scale})"));
            }
        }
    }
    if let Some(cooldown) = strategy["cooldown_seconds"].as_f64()
        && bias.cooldown_multiplier != 1.0
    {
        set(
            "cooldown_seconds",
            json!((cooldown * bias.cooldown_multiplier).round() as i64),
            format!("bias cooldown x {}", bias.cooldown_multiplier),
        );
    }
    changes
}

impl Stage for StrategyPatch {
    type Params = StrategyPatchParams;
    const NAME: &'static str = "strategy_patch";
    const VERSION: u32 = 1;
    const DOC: &'static str = "Apply the bias to a copy of the live strategy config (`trading_strategies_dynamic.json`): direction, size, leverage bucket, regime lists, and in conservative or fallback mode a higher `min_direction_score`, tighter TP/SL and a longer cooldown.\n\n\
        Input `bias` (the `bias` stage's), optional `event_patch` (`event_mode_patch`'s `patch`, applied after). \
        The config is checked first (every problem with its line, JSON pointer and value). Outputs: `patched` \
        (the patched copy), `patch` (RFC 6902 JSON Patch from the config to the copy) and `diff` (one line per \
        changed field: old -> new, and why). With `inplace = true` the copy is also written over the config, \
        atomically, keeping `<config>.bak` (the previous content) and `<config>.base` (the config before the \
        first in-place write, which later patches start from, so relative changes never compound). \
        pipelines/examples/trading_strategies_dynamic.json is an example; docs/live.md lists every field.";
    const EXAMPLE: &'static str = r#"[stages.market]
task = "synth_market"
params = { days = 20 }

[stages.features]
task = "features"
inputs = ["market"]

[stages.bias]
task = "bias"
inputs = { bars = "market", features = "features" }

[stages.strategy_patch]
task = "strategy_patch"
inputs = { bias = "bias.bias" }
params = { config = "examples/trading_strategies_dynamic.json" }
exports = { patched = "out/trading_strategies_dynamic.json", patch = "out/strategy.patch.json", diff = "out/strategy.diff" }
"#;

    fn validate(params: &StrategyPatchParams) -> Result<(), ParamError> {
        let mut errors = Vec::new();
        if !(0.0..=1.0).contains(&params.cautious_min_direction_score) {
            errors.push(ParamError::new("cautious_min_direction_score", "a score from 0 to 1"));
        }
        for (name, v) in [
            ("cautious_take_profit_scale", params.cautious_take_profit_scale),
            ("cautious_stop_loss_scale", params.cautious_stop_loss_scale),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                errors.push(ParamError::new(name, "a share in (0, 1]: cautious exits are tighter, never wider"));
            }
        }
        if !(0.0..=10.0).contains(&params.flat_size_multiplier) {
            errors.push(ParamError::new("flat_size_multiplier", "a multiplier from 0 to 10"));
        }
        ParamError::all(errors)
    }

    fn outputs(_params: &StrategyPatchParams) -> Vec<OutputDecl> {
        vec![
            OutputDecl::new("patched", ArtifactKind::Json),
            OutputDecl::new("patch", ArtifactKind::Json),
            OutputDecl::new("diff", ArtifactKind::File),
        ]
    }

    fn files(params: &StrategyPatchParams) -> Vec<String> {
        let config = std::path::Path::new(&params.config);
        let optional =
            |p: std::path::PathBuf| format!("{}{}", pipeline_engine::plan::OPTIONAL_FILE, p.to_string_lossy());
        vec![params.config.clone(), optional(base_path(config)), optional(written_path(config))]
    }

    fn writes_files(params: &StrategyPatchParams) -> Vec<String> {
        // The config and the two files kept beside it (`files` keys all three).
        let config = std::path::Path::new(&params.config);
        match params.inplace {
            true => vec![
                params.config.clone(),
                base_path(config).to_string_lossy().to_string(),
                written_path(config).to_string_lossy().to_string(),
            ],
            false => Vec::new(),
        }
    }

    fn check_inputs(_params: &StrategyPatchParams, inputs: &[InputInfo]) -> Result<(), String> {
        match inputs.iter().find(|i| i.name == "bias") {
            Some(i) if i.kind == ArtifactKind::Json => {}
            Some(i) => return Err(format!("input `bias` is a {}, expected the `bias` stage's JSON", i.kind)),
            None => return Err("`strategy_patch` needs inputs = { bias = \"bias.bias\" }".into()),
        }
        if let Some(i) = inputs.iter().find(|i| i.name == "event_patch")
            && i.kind != ArtifactKind::Json
        {
            return Err(format!("input `event_patch` is a {}, expected `event_mode_patch.patch`", i.kind));
        }
        Ok(())
    }

    fn run(params: &StrategyPatchParams, ctx: &mut StageContext) -> Result<()> {
        let bias: Bias = serde_json::from_value(read_json(&ctx.input("bias")?.path)?)
            .map_err(|e| anyhow!("input `bias` is not a bias (docs/bias.schema.json): {e}"))?;
        let config_path = ctx.resolve(&params.config);
        // After an in-place write, patches start from the base (so relative changes never
        // compound); a config edited by hand since is the new base.
        let (source, edited) = patch_source(&config_path);
        if edited && params.inplace {
            // Patching it from the old base would undo the edit; patching the edited file would
            // compound yesterday's relative changes. A person decides.
            bail!(
                "{0} was edited since the last in-place patch (it is not what that patch wrote): nothing written. Review it; to make it the base of later patches, delete {0}.base and {0}.written",
                params.config
            );
        }
        if edited {
            ctx.warn(format!("{} was edited since the last in-place patch: the copy starts from it", params.config));
        }
        let config = StrategyConfig::read(&source)?;
        let names: Vec<String> = if params.strategies.is_empty() {
            let all = config.value["strategies"].as_object().expect("checked");
            all.iter().filter(|(_, s)| s["enabled"].as_bool() == Some(true)).map(|(n, _)| n.clone()).collect()
        } else {
            for name in &params.strategies {
                if config.value["strategies"].get(name).is_none() {
                    anyhow::bail!(
                        "params.strategies names `{name}`, which {} does not have (it has {})",
                        config.path.display(),
                        config.value["strategies"]
                            .as_object()
                            .expect("checked")
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
            params.strategies.clone()
        };
        if let Some(known) = config.value["regimes"].as_array() {
            for (param, list) in [
                ("regimes_against_long", &params.regimes_against_long),
                ("regimes_against_short", &params.regimes_against_short),
            ] {
                if let Some(r) = list.iter().find(|r| !known.iter().any(|k| k.as_str() == Some(r.as_str()))) {
                    bail!(
                        "params.{param} names `{r}`, which is not one of the config's `regimes` ({}): fix the param or the config",
                        known.iter().filter_map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
                    );
                }
            }
        }
        let mut changes: Vec<Change> = Vec::new();
        for name in &names {
            changes.extend(strategy_changes(params, &config.value, name, &bias));
        }
        let mut patched = config.value.clone();
        apply(&mut patched, &changes)?;
        if let Ok(event) = ctx.input("event_patch") {
            let ops: json_patch::Patch = serde_json::from_value(read_json(&event.path)?)
                .map_err(|e| anyhow!("input `event_patch` is not an RFC 6902 patch: {e}"))?;
            json_patch::patch(&mut patched, &ops)
                .map_err(|e| anyhow!("the event patch does not apply to {}: {e}", config.path.display()))?;
            for op in ops.0.iter() {
                let pointer = match op {
                    json_patch::PatchOperation::Add(o) => o.path.to_string(),
                    json_patch::PatchOperation::Replace(o) => o.path.to_string(),
                    _ => continue,
                };
                // An object set whole is shown field by field in the diff.
                match patched.pointer(&pointer).cloned().unwrap_or(Value::Null) {
                    Value::Object(fields) => changes.extend(fields.into_iter().map(|(k, value)| Change {
                        pointer: format!("{pointer}/{k}"),
                        value,
                        why: "event_mode_patch".into(),
                    })),
                    value => changes.push(Change { pointer, value, why: "event_mode_patch".into() }),
                }
            }
        }
        // The result must still pass the checks (a leverage above risk.max_leverage, say).
        // (No text: line numbers of the patched copy would point into a file that does not exist.)
        StrategyConfig::checked(patched.clone(), "", &config.path)
            .map_err(|e| anyhow!("the patched copy would be invalid, nothing written: {e:#}"))?;
        let header = format!(
            "# {} patched by the bias of {} ({} mode, {}), valid {} to {}\n",
            // As written in the pipeline: an absolute path would make the output machine-dependent.
            params.config,
            bias.as_of,
            serde_json::to_value(bias.mode)?.as_str().unwrap_or(""),
            serde_json::to_value(bias.direction)?.as_str().unwrap_or(""),
            bias.valid_from,
            bias.valid_until
        );
        let files = patch_files(&config.value, patched, &changes, &header)?;
        ctx.metric("changes", files.patch.as_array().map_or(0, |a| a.len()));
        write_json(&files.patched, &ctx.output_path("patched")?)?;
        write_json(&files.patch, &ctx.output_path("patch")?)?;
        std::fs::write(ctx.output_path("diff")?, &files.diff)?;
        if params.inplace {
            write_in_place(&config_path, &files.patched)?;
            ctx.message(&format!("wrote {} in place (backup {}.bak)", config_path.display(), config_path.display()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::bias::{Freshness, Source};
    use crate::live::events::EventVerdict;
    use std::path::Path;

    fn bias(direction: Direction, mode: Mode, size: f64, leverage: f64, cooldown: f64) -> Bias {
        Bias {
            format: crate::live::bias::BIAS_FORMAT.into(),
            direction,
            confidence: Some(0.3),
            p_up: Some(0.65),
            position_size_multiplier: size,
            leverage,
            cooldown_multiplier: cooldown,
            as_of: "2024-03-01T00:00:00Z".into(),
            valid_from: "2024-03-01T00:00:00Z".into(),
            valid_until: "2024-03-01T01:00:00Z".into(),
            mode,
            source: Source::PromotedModel,
            model: None,
            policy: None,
            gate_decision: Some("promote".into()),
            features_hash: "0".repeat(64),
            freshness: Freshness { last_bar: None, bar_age_minutes: None, last_news: None, news_age_minutes: None },
            event: EventVerdict {
                is_event: false,
                vol_ratio: None,
                liquidation_ratio: None,
                reasons: vec![],
                fired: vec![],
            },
            reasons: vec![],
        }
    }

    fn params() -> StrategyPatchParams {
        serde_json::from_value(json!({ "config": "examples/trading_strategies_dynamic.json" })).unwrap()
    }

    fn testdata(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/strategy_patch").join(name)
    }

    fn patched(bias: &Bias) -> (Value, super::super::strategy_config::PatchFiles) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/examples/trading_strategies_dynamic.json");
        let config = StrategyConfig::read(&path).unwrap();
        let mut changes = Vec::new();
        for name in ["obi_vpin_momentum", "liquidation_reversal"] {
            changes.extend(strategy_changes(&params(), &config.value, name, bias));
        }
        let mut copy = config.value.clone();
        apply(&mut copy, &changes).unwrap();
        let files = patch_files(&config.value, copy, &changes, "").unwrap();
        (config.value, files)
    }

    /// The example config through a long conservative bias: the copy equals the hand-checked
    /// expected file (testdata/strategy_patch/long_conservative.json, each value worked out in
    /// docs/live.md's table), and the RFC 6902 patch applied to the example gives the copy.
    #[test]
    fn a_long_conservative_bias_round_trips_through_the_patch() {
        let (original, files) = patched(&bias(Direction::Long, Mode::Conservative, 0.5, 1.0, 2.0));
        let expected: Value =
            serde_json::from_slice(&std::fs::read(testdata("long_conservative.json")).unwrap()).unwrap();
        assert_eq!(files.patched, expected, "patched copy:\n{:#}", files.patched);
        let ops: json_patch::Patch = serde_json::from_value(files.patch.clone()).unwrap();
        let mut applied = original.clone();
        json_patch::patch(&mut applied, &ops).unwrap();
        assert_eq!(applied, expected);
        let expected_patch: Value =
            serde_json::from_slice(&std::fs::read(testdata("long_conservative.patch.json")).unwrap()).unwrap();
        assert_eq!(files.patch, expected_patch, "patch:\n{:#}", files.patch);
        assert!(
            files.diff.contains("strategies.obi_vpin_momentum.cooldown_seconds: 30 -> 60   (bias cooldown x 2)"),
            "{}",
            files.diff
        );
        assert!(files.diff.contains("strategies.obi_vpin_momentum.stop_loss_pct: 0.4 -> 0.3"), "{}", files.diff);
    }

    #[test]
    fn a_short_normal_bias_leaves_exits_alone_and_snaps_leverage_to_a_bucket() {
        let (original, files) = patched(&bias(Direction::Short, Mode::Normal, 1.0, 4.0, 1.0));
        let s = &files.patched["strategies"]["obi_vpin_momentum"];
        assert_eq!(s["direction_bias"], "short");
        assert_eq!(s["leverage"], 3, "4x snaps down to the 3x bucket");
        assert_eq!(s["regime_blacklist"], json!(["illiquid", "trend_up"]));
        assert_eq!(s["regime_whitelist"], json!(["trend_down", "high_volatility"]));
        for key in ["take_profit_pct", "stop_loss_pct", "min_direction_score", "cooldown_seconds"] {
            assert_eq!(s[key], original["strategies"]["obi_vpin_momentum"][key], "{key}");
        }
        // The disabled strategy and every field the patch does not know are untouched.
        assert_eq!(files.patched["strategies"]["spread_scalper"], original["strategies"]["spread_scalper"]);
        assert_eq!(s["signals"], original["strategies"]["obi_vpin_momentum"]["signals"]);
    }

    /// Size and cooldown scale the strategy's own values, so a patch must start from the base,
    /// not from yesterday's patched copy: after an in-place write the base is the source, and
    /// the same bias gives the same file night after night; a hand edit becomes the new base.
    #[test]
    fn in_place_patches_start_from_the_base_and_never_compound() {
        use super::super::strategy_config::{patch_source, write_in_place};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strategies.json");
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/examples/trading_strategies_dynamic.json"),
            &path,
        )
        .unwrap();
        let b = bias(Direction::Long, Mode::Conservative, 0.5, 2.0, 2.0);
        let night = |path: &Path| {
            let (source, edited) = patch_source(path);
            let config = StrategyConfig::read(&source).unwrap();
            let mut changes = Vec::new();
            for name in ["obi_vpin_momentum", "liquidation_reversal"] {
                changes.extend(strategy_changes(&params(), &config.value, name, &b));
            }
            let mut copy = config.value.clone();
            apply(&mut copy, &changes).unwrap();
            write_in_place(path, &copy).unwrap();
            (copy, edited)
        };
        let (first, _) = night(&path);
        let (second, edited) = night(&path);
        assert!(!edited);
        assert_eq!(first, second, "the same bias, the same file: nothing compounds");
        assert_eq!(first["strategies"]["obi_vpin_momentum"]["cooldown_seconds"], 60);
        // Someone edits the file by hand: detected (the stage then refuses to write, see
        // docs/live.md), until the base is dropped and the edited file becomes the base.
        let mut edited_config = second.clone();
        edited_config["strategies"]["liquidation_reversal"]["enabled"] = json!(false);
        std::fs::write(&path, serde_json::to_vec_pretty(&edited_config).unwrap()).unwrap();
        assert_eq!(patch_source(&path), (path.clone(), true));
        std::fs::remove_file(base_path(&path)).unwrap();
        assert_eq!(patch_source(&path), (path.clone(), false));
        let (third, _) = night(&path);
        assert_eq!(third["strategies"]["liquidation_reversal"]["enabled"], false, "the hand edit is kept");
        let base: Value = serde_json::from_slice(&std::fs::read(base_path(&path)).unwrap()).unwrap();
        assert_eq!(base, edited_config, "the edited file is the new base");
    }
}
