//! `bc`: behaviour cloning, observation -> action, with one-vs-rest gradient-boosted trees on
//! the buffer's `train` episodes (optionally only those whose return clears a quantile), scored
//! on the held-out `test` episodes: how often it picks the logged action, per action and
//! balanced.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow, bail};
use pipeline_artifacts::{ArtifactKind, write_json};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::buffer::Buffer;
use super::export_buffer::EnvFile;
use super::learned::{PolicyFile, Rows, fit_behaviour};
use super::policy::Policy;
use super::trees::TreeParams;
use crate::backtest::execution::Target;
use crate::backtest::performance::num;
use crate::torch::{NetParams, require_built};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BcParams {
    /// Keep the training episodes whose return is at or above this quantile of the training
    /// episodes' returns (0: all; 0.5: the better half).
    #[serde(default)]
    pub min_return_quantile: f64,
    /// The trees of each action's one-vs-rest classifier.
    #[serde(default)]
    pub trees: TreeParams,
    /// The classifier: `trees` (one-vs-rest gradient-boosted trees) or `mlp` (one network with a
    /// softmax over the actions, on LibTorch: the `torch` feature, docs/torch.md).
    #[serde(default)]
    pub model: BcModel,
    /// `mlp`: the network and its training (steps, batch, layers, device).
    #[serde(default)]
    pub network: NetParams,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BcModel {
    #[default]
    Trees,
    Mlp,
}

pub struct Bc;

/// Reads the `buffer` and `env` inputs of an RL stage.
pub fn read_buffer(ctx: &StageContext) -> Result<(Buffer, EnvFile)> {
    let env = EnvFile::read(&ctx.input("env")?.path)?;
    let buffer = Buffer::read(&ctx.input("buffer")?.path, env.labels.len())?;
    if buffer.observation_names != env.observation {
        bail!(
            "the `buffer` input's observation columns {:?} are not those of its `env` input {:?}: wire both from one export_buffer stage",
            buffer.observation_names,
            env.observation
        );
    }
    Ok((buffer, env))
}

/// The RL stages' input check: `buffer` and `env` from one `export_buffer`, plus `extra`.
pub fn check_rl_inputs(stage: &str, inputs: &[InputInfo], extra: &[&str]) -> Result<(), String> {
    for (name, kind) in [("buffer", ArtifactKind::Table), ("env", ArtifactKind::Json)] {
        match inputs.iter().find(|i| i.name == name) {
            None => {
                return Err(format!(
                    "`{stage}` needs a `{name}` input: inputs = {{ buffer = \"<export_buffer stage>.buffer\", env = \"<export_buffer stage>.env\"{} }}",
                    extra.iter().map(|e| format!(", {e}")).collect::<String>()
                ));
            }
            Some(i) if i.kind != kind => {
                return Err(format!("input `{name}` is a {}, `{stage}` wants a {kind}", i.kind));
            }
            _ => {}
        }
    }
    Ok(())
}

/// How well a policy reproduces the logged actions on `rows`: agreement, per-action recall,
/// balanced accuracy (mean recall over the actions the rows hold).
pub fn agreement(buffer: &Buffer, rows: &[usize], policy: &dyn Policy, labels: &[String], k_features: usize) -> Value {
    let mut hits = 0usize;
    let mut per: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    for &i in rows {
        let obs = buffer.observation(i);
        let chosen = policy.act(0, &obs, holding_of(&obs, k_features));
        let logged = buffer.action[i] as usize;
        let entry = per.entry(logged).or_default();
        entry.0 += 1;
        if chosen == logged {
            hits += 1;
            entry.1 += 1;
        }
    }
    let recalls: Vec<f64> = per.values().map(|(n, h)| *h as f64 / *n as f64).collect();
    json!({
        "rows": rows.len(),
        "agreement": if rows.is_empty() { Value::Null } else { num(hits as f64 / rows.len() as f64) },
        "balanced_accuracy": if recalls.is_empty() { Value::Null } else { num(recalls.iter().sum::<f64>() / recalls.len() as f64) },
        "per_action": per.iter().map(|(a, (n, h))| (labels[*a].clone(), json!({ "rows": n, "recall": num(*h as f64 / *n as f64) }))).collect::<serde_json::Map<_, _>>(),
    })
}

/// What is held, read back from an observation's position columns.
pub fn holding_of(observation: &[f64], k_features: usize) -> Target {
    let side = observation[k_features] as i8;
    if side == 0 {
        Target::FLAT
    } else {
        Target { side, size: observation[k_features + 1], leverage: observation[k_features + 2] }
    }
}

impl Stage for Bc {
    type Params = BcParams;
    const NAME: &'static str = "bc";
    // 2: steps_left in the state, timeout episodes end with their next observation in the
    // d3rlpy layout, the env file carries the window, returns add across episodes.
    const VERSION: u32 = 2;
    const DOC: &'static str = "Behaviour cloning: learn the buffer's policy, observation -> action, with gradient-boosted trees (RL).\n\n\
        One-vs-rest trees per action on the `train` episodes of an `export_buffer` (those whose return is at or above \
        `min_return_quantile` of them); P(a | s) is the normalised sigmoids, the policy takes the most probable action. \
        With the `torch` feature, `model = \"mlp\"` fits one network with a softmax over the actions instead \
        (cross-entropy, `network` sets layers, steps, batch, seed, device; acted on in pure Rust). \
        Scored on the held-out `test` episodes: agreement with the logged actions, per-action recall, balanced accuracy. \
        Outputs: `policy` (JSON, `pipeline-policy/1`, /2 with a network; also what `offline_rl` reads as the behaviour model), `metrics`.";
    const EXAMPLE: &'static str = r#"[stages.market]
task = "synth_market"
params = { days = 6 }

[stages.features]
task = "features"
inputs = ["market"]

[stages.buffer]
task = "export_buffer"
inputs = { bars = "market", features = "features" }
params = { test_from = "2024-01-05" }

[stages.bc]
task = "bc"
inputs = { buffer = "buffer.buffer", env = "buffer.env" }
"#;

    fn validate(params: &BcParams) -> Result<(), ParamError> {
        let mut errors = Vec::new();
        if !(0.0..1.0).contains(&params.min_return_quantile) {
            errors.push(ParamError::new("min_return_quantile", "a quantile from 0 (keep all) to below 1"));
        }
        if let Err(e) = params.trees.check() {
            errors.push(ParamError::new("trees", e));
        }
        if params.model == BcModel::Mlp {
            require_built("model", "`mlp` trains on LibTorch")?;
            errors.extend(params.network.check("network"));
        }
        ParamError::all(errors)
    }

    /// Each model's key holds only its own params (the trees' keys stay as they were); the
    /// network's holds its resolved device.
    fn key_params(params: &BcParams) -> serde_json::Value {
        let mut value = serde_json::to_value(params).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            if params.model == BcModel::Trees {
                map.remove("model");
                map.remove("network");
            } else {
                map.remove("trees");
                map.insert("network".into(), params.network.key());
            }
        }
        value
    }

    fn outputs(_params: &BcParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("policy", ArtifactKind::Json), OutputDecl::new("metrics", ArtifactKind::Json)]
    }

    fn headline_metrics(_params: &BcParams) -> &'static [&'static str] {
        &["test_agreement", "test_balanced_accuracy"]
    }

    fn check_inputs(_params: &BcParams, inputs: &[InputInfo]) -> Result<(), String> {
        check_rl_inputs("bc", inputs, &[])
    }

    fn run(params: &BcParams, ctx: &mut StageContext) -> Result<()> {
        let (buffer, env) = read_buffer(ctx)?;
        let episodes = buffer.episodes();
        let train_returns: Vec<f64> = episodes
            .iter()
            .filter(|e| e.segment == "train")
            .map(|e| buffer.reward[e.range.clone()].iter().sum())
            .collect();
        if train_returns.is_empty() {
            bail!("the buffer has no `train` episodes ({})", buffer.time_range());
        }
        let cut = quantile(&train_returns, params.min_return_quantile);
        let mut keep = vec![false; buffer.len()];
        let mut kept = 0usize;
        for e in episodes.iter().filter(|e| e.segment == "train") {
            if buffer.reward[e.range.clone()].iter().sum::<f64>() >= cut {
                kept += 1;
                e.range.clone().for_each(|i| keep[i] = true);
            }
        }
        let rows = Rows::of(&buffer, &keep);
        ctx.message(&format!("fitting {} one-vs-rest classifiers on {} rows", env.labels.len(), rows.actions.len()));
        let mut fit_metrics = json!({});
        let (behaviour, behaviour_network) = match params.model {
            BcModel::Trees => (fit_behaviour(&rows, env.labels.len(), &params.trees)?, None),
            BcModel::Mlp => {
                let (network, first, last) = fit_mlp(&rows, env.labels.len(), &params.network, ctx)?;
                fit_metrics = json!({ "loss_first_tenth": num(first), "loss_last_tenth": num(last), "network": params.network.key() });
                (Vec::new(), Some(network))
            }
        };
        let file = PolicyFile {
            format: PolicyFile::format_for(&behaviour_network, &None).into(),
            kind: if behaviour_network.is_some() { "bc_mlp" } else { "bc" }.into(),
            observation: env.observation.clone(),
            actions: env.env.actions.clone(),
            labels: env.labels.clone(),
            env: env.env.clone(),
            behaviour,
            behaviour_network,
            q: None,
        };
        let loaded = file.clone().load()?;
        let k = env.env.observation.len();
        let train_rows: Vec<usize> = (0..buffer.len()).filter(|&i| keep[i]).collect();
        let test_rows: Vec<usize> = (0..buffer.len()).filter(|&i| buffer.segment[i] == "test").collect();
        let train = agreement(&buffer, &train_rows, &loaded, &env.labels, k);
        let test = agreement(&buffer, &test_rows, &loaded, &env.labels, k);
        ctx.metric("test_agreement", test["agreement"].clone());
        ctx.metric("test_balanced_accuracy", test["balanced_accuracy"].clone());
        let metrics = json!({
            "episodes_kept": kept,
            "episodes_train": train_returns.len(),
            "min_return_quantile": params.min_return_quantile,
            "return_cut": num(cut),
            "train": train,
            "test": test,
            "trees": params.trees,
        });
        let mut metrics = metrics;
        if params.model == BcModel::Mlp {
            metrics["trees"] = Value::Null;
            metrics["network"] = fit_metrics;
        }
        write_json(&serde_json::to_value(&file)?, &ctx.output_path("policy")?)?;
        write_json(&metrics, &ctx.output_path("metrics")?)?;
        Ok(())
    }
}

/// The q-quantile (lower, no interpolation) of `values`.
/// The `mlp` behaviour classifier: the network, and the mean loss of the first and last tenth.
#[cfg(feature = "torch")]
fn fit_mlp(
    rows: &Rows,
    actions: usize,
    params: &NetParams,
    ctx: &StageContext,
) -> Result<(crate::learn::mlp::Mlp, f64, f64)> {
    let cancelled = || ctx.check_cancelled();
    let trained = crate::torch::nets::fit_classifier(&rows.columns, &rows.actions, actions, params, &cancelled)?;
    Ok((trained.network, trained.loss_first, trained.loss_last))
}

#[cfg(not(feature = "torch"))]
fn fit_mlp(
    _rows: &Rows,
    _actions: usize,
    _params: &NetParams,
    _ctx: &StageContext,
) -> Result<(crate::learn::mlp::Mlp, f64, f64)> {
    bail!("{}", crate::torch::NOT_BUILT)
}

pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).floor() as usize]
}

/// Reads a stored policy file.
pub fn read_policy(path: &std::path::Path) -> Result<PolicyFile> {
    let value = pipeline_artifacts::read_json(path)?;
    serde_json::from_value(value)
        .map_err(|e| anyhow!("{}: not a policy written by `bc` or `offline_rl` ({e})", path.display()))
}
