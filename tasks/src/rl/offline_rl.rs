//! `offline_rl`: fitted Q iteration (Ernst, Geurts, Wehenkel 2005) with tree ensembles on the
//! buffer's `train` episodes, restricted to the actions the behaviour policy takes with enough
//! probability (a discrete BCQ rule on `bc`'s probabilities). Deterministic at any thread count.
//! `method` names the algorithm so that the neural CQL and BCQ of the `torch` feature can join
//! behind the same stage and policy file.

use anyhow::{Result, bail};
use pipeline_artifacts::{ArtifactKind, write_json};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::bc::{agreement, check_rl_inputs, read_buffer, read_policy};
use super::buffer::Buffer;
use super::learned::{FqiSettings, LoadedPolicy, PolicyFile, QFunction, REWARD_SCALE, fit_fqi, next_rows};
use super::trees::QTreeParams;
use crate::backtest::performance::num;
use crate::torch::{NetParams, require_built};

/// The offline RL algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Fitted Q iteration with gradient-boosted trees, BCQ-restricted.
    Fqi,
    /// Discrete conservative Q-learning: a Q-network (the `torch` feature).
    Cql,
    /// Discrete batch-constrained Q-learning: a Q-network whose targets and policy use only the
    /// actions `bc` allows (the `torch` feature).
    Bcq,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OfflineRlParams {
    /// The algorithm: `fqi` (trees), or `cql` and `bcq` (Q-networks on LibTorch: the `torch`
    /// feature, docs/torch.md).
    #[serde(default = "default_method")]
    pub method: Method,
    /// Discount per step (bar). FQI looks `iterations` steps ahead: keep discount^iterations small.
    #[serde(default = "default_discount")]
    pub discount: f64,
    /// Q iterations.
    #[serde(default = "default_iterations")]
    pub iterations: usize,
    /// BCQ threshold: an action is allowed where P_bc(a | s) >= threshold x max P_bc(. | s)
    /// (0 allows every action the behaviour ever took; 1 only its most likely one).
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Actions with fewer training rows than this are never allowed (no Q is fitted for them).
    #[serde(default = "default_min_rows")]
    pub min_rows: usize,
    /// The trees each iteration adds to each action's Q.
    #[serde(default)]
    pub trees: QTreeParams,
    /// `cql`: the weight of the conservative term logsumexp_a Q(s, a) - Q(s, a_logged).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// `cql`, `bcq`: gradient steps between copies of the Q-network into the target network.
    #[serde(default = "default_target_update")]
    pub target_update: usize,
    /// `cql`, `bcq`: the Q-network and its training (steps, batch, layers, device).
    #[serde(default)]
    pub network: NetParams,
}

fn default_alpha() -> f64 {
    1.0
}
fn default_target_update() -> usize {
    200
}

fn default_method() -> Method {
    Method::Fqi
}
fn default_discount() -> f64 {
    0.9
}
fn default_iterations() -> usize {
    30
}
fn default_threshold() -> f64 {
    0.3
}
fn default_min_rows() -> usize {
    50
}

pub struct OfflineRl;

impl Stage for OfflineRl {
    type Params = OfflineRlParams;
    const NAME: &'static str = "offline_rl";
    // 2: steps_left in the state, timeout episodes end with their next observation in the
    // d3rlpy layout, the env file carries the window, returns add across episodes.
    const VERSION: u32 = 2;
    const DOC: &'static str = "Offline RL: fitted Q iteration with tree ensembles, restricted to the behaviour's likely actions, or neural CQL and BCQ (RL).\n\n\
        Q per action is refitted `iterations` times to r + discount x max Q(s', a') over the allowed a' (nothing after an \
        episode's last step), on the `train` episodes of an `export_buffer`. Allowed: P_bc(a | s) >= threshold x the top \
        probability, from the `bc` input's classifier (discrete BCQ, so the policy stays where the data has evidence), \
        and at least `min_rows` rows of that action. The policy is argmax Q over the allowed actions. Rewards are fitted \
        in bps of equity. With the `torch` feature, `method = \"cql\"` trains a Q-network (one output per action) on \
        double-DQN targets plus `alpha` x (logsumexp Q(s, .) - Q(s, a_logged)) and acts by argmax over every action; \
        `method = \"bcq\"` trains one whose targets and argmax use only the allowed actions (discrete BCQ, imitation \
        model = the `bc` input; the threshold rule without `min_rows`: one network holds every action's Q); `network` sets layers, steps, batch, seed, device. Outputs: `policy` (JSON, \
        `pipeline-policy/1`, or /2 with a network in it, acted on in pure Rust, with the behaviour classifier inside: \
        self-contained for `evaluate_policy` and `bias`), `metrics` (how often it departs from the behaviour, its \
        action mix on train and test states).";
    const EXAMPLE: &'static str = r#"[stages.market]
task = "synth_market"
params = { days = 6 }

[stages.features]
task = "features"
inputs = ["market"]

[stages.buffer]
task = "export_buffer"
inputs = { bars = "market", features = "features" }
params = { test_from = "2024-01-05", epsilon = 0.3 }

[stages.bc]
task = "bc"
inputs = { buffer = "buffer.buffer", env = "buffer.env" }

[stages.fqi]
task = "offline_rl"
inputs = { buffer = "buffer.buffer", env = "buffer.env", bc = "bc.policy" }
params = { discount = 0.9, iterations = 20, threshold = 0.3 }
"#;

    fn validate(params: &OfflineRlParams) -> Result<(), ParamError> {
        let mut errors = Vec::new();
        if !(params.discount >= 0.0 && params.discount < 1.0) {
            errors.push(ParamError::new("discount", "from 0 to below 1, e.g. 0.9"));
        }
        if params.iterations == 0 {
            errors.push(ParamError::new("iterations", "at least 1"));
        }
        if !(0.0..=1.0).contains(&params.threshold) {
            errors.push(ParamError::new("threshold", "from 0 to 1, e.g. 0.3"));
        }
        if params.min_rows == 0 {
            errors.push(ParamError::new("min_rows", "at least 1"));
        }
        if let Err(e) = params.trees.check() {
            errors.push(ParamError::new("trees", e));
        }
        if params.method != Method::Fqi {
            require_built("method", "`cql` and `bcq` train Q-networks on LibTorch")?;
            errors.extend(params.network.check("network"));
            if !(params.alpha >= 0.0 && params.alpha.is_finite()) {
                errors.push(ParamError::new("alpha", "zero (plain double DQN) or a positive weight, e.g. 1"));
            }
            if params.target_update == 0 {
                errors.push(ParamError::new("target_update", "at least 1 gradient step"));
            }
        }
        ParamError::all(errors)
    }

    /// FQI's key leaves out the network's params (it has none; its keys stay as they were); a
    /// network's holds its resolved device.
    fn key_params(params: &OfflineRlParams) -> serde_json::Value {
        let mut value = serde_json::to_value(params).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            if params.method == Method::Fqi {
                for neural in ["alpha", "target_update", "network"] {
                    map.remove(neural);
                }
            } else {
                map.insert("network".into(), params.network.key());
                for trees_only in ["iterations", "min_rows", "trees"] {
                    map.remove(trees_only);
                }
                if params.method == Method::Bcq {
                    map.remove("alpha");
                }
            }
        }
        value
    }

    fn outputs(_params: &OfflineRlParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("policy", ArtifactKind::Json), OutputDecl::new("metrics", ArtifactKind::Json)]
    }

    fn headline_metrics(_params: &OfflineRlParams) -> &'static [&'static str] {
        &["test_departure_from_behaviour"]
    }

    fn check_inputs(_params: &OfflineRlParams, inputs: &[InputInfo]) -> Result<(), String> {
        check_rl_inputs("offline_rl", inputs, &["bc = \"<bc stage>.policy\""])?;
        if !inputs.iter().any(|i| i.name == "bc" && i.kind == ArtifactKind::Json) {
            return Err("`offline_rl` needs the behaviour model: inputs = { ..., bc = \"<bc stage>.policy\" }".into());
        }
        Ok(())
    }

    fn run(params: &OfflineRlParams, ctx: &mut StageContext) -> Result<()> {
        let (buffer, env) = read_buffer(ctx)?;
        let bc = read_policy(&ctx.input("bc")?.path)?;
        if bc.labels != env.labels || bc.observation != env.observation {
            bail!(
                "the `bc` input was trained on another buffer (actions or observation columns differ): wire the bc of this buffer"
            );
        }
        let behaviour = bc.clone().load()?;
        let keep: Vec<bool> = buffer.segment.iter().map(|s| s == "train").collect();
        let settings = FqiSettings {
            discount: params.discount,
            iterations: params.iterations,
            threshold: params.threshold,
            min_rows: params.min_rows,
            trees: &params.trees,
        };
        // The fit's own metrics, written after `method` and `discount` (FQI's in the order they
        // always had: its outputs stay the same bytes, and so its VERSION).
        let mut fitted = serde_json::Map::new();
        let q = if params.method == Method::Fqi {
            let iterations = params.iterations as u64;
            let models = fit_fqi(&buffer, &keep, env.labels.len(), &behaviour, &settings, |k| {
                ctx.progress(k as u64, Some(iterations));
                ctx.check_cancelled()
            })?;
            fitted.insert("iterations".into(), json!(params.iterations));
            fitted.insert("lookahead_weight_left".into(), num(params.discount.powi(params.iterations as i32)));
            QFunction {
                discount: params.discount,
                threshold: params.threshold,
                iterations: params.iterations,
                models,
                network: None,
                restricted: true,
            }
        } else {
            ctx.message(&format!("training a {:?} Q-network for {} steps", params.method, params.network.steps));
            let (network, loss_first, loss_last) = fit_network(params, &buffer, &keep, &behaviour, ctx)?;
            fitted.insert("loss_first_tenth".into(), num(loss_first));
            fitted.insert("loss_last_tenth".into(), num(loss_last));
            fitted.insert("network".into(), params.network.key());
            if params.method == Method::Cql {
                fitted.insert("alpha".into(), json!(params.alpha));
            }
            QFunction {
                discount: params.discount,
                threshold: params.threshold,
                iterations: 0,
                models: Vec::new(),
                network: Some(network),
                restricted: params.method == Method::Bcq,
            }
        };
        let actions_with_q: Vec<&String> = if q.network.is_some() {
            env.labels.iter().collect()
        } else {
            q.models.iter().zip(&env.labels).filter(|(m, _)| m.is_some()).map(|(_, l)| l).collect()
        };
        let q = Some(q);
        let file = PolicyFile {
            format: PolicyFile::format_for(&bc.behaviour_network, &q).into(),
            kind: params.method.name().into(),
            observation: env.observation.clone(),
            actions: env.env.actions.clone(),
            labels: env.labels.clone(),
            env: env.env.clone(),
            behaviour: bc.behaviour.clone(),
            behaviour_network: bc.behaviour_network.clone(),
            q,
        };
        let policy = file.clone().load()?;
        let k = env.env.observation.len();
        let mut metrics = serde_json::Map::new();
        for segment in ["train", "test"] {
            let rows: Vec<usize> = (0..buffer.len()).filter(|&i| buffer.segment[i] == segment).collect();
            let same = agreement(&buffer, &rows, &policy, &env.labels, k);
            let mut mix = std::collections::BTreeMap::<String, usize>::new();
            for &i in &rows {
                let obs = buffer.observation(i);
                let a = super::policy::Policy::act(&policy, 0, &obs, super::bc::holding_of(&obs, k));
                *mix.entry(env.labels[a].clone()).or_default() += 1;
            }
            let departure = same["agreement"].as_f64().map(|a| 1.0 - a);
            if segment == "test" {
                ctx.metric("test_departure_from_behaviour", departure.map(num));
            }
            metrics.insert(
                segment.into(),
                json!({ "rows": rows.len(), "departure_from_behaviour": departure.map(num), "action_mix": mix }),
            );
        }
        metrics.insert("method".into(), json!(params.method));
        metrics.insert("discount".into(), json!(params.discount));
        metrics.extend(fitted);
        metrics.insert("threshold".into(), json!(params.threshold));
        metrics.insert("actions_with_q".into(), json!(actions_with_q));
        write_json(&serde_json::to_value(&file)?, &ctx.output_path("policy")?)?;
        write_json(&serde_json::Value::Object(metrics), &ctx.output_path("metrics")?)?;
        Ok(())
    }
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Fqi => "fqi",
            Method::Cql => "cql",
            Method::Bcq => "bcq",
        }
    }
}

/// CQL's or BCQ's Q-network on the rows `keep`: returns it with the mean loss of the first and
/// last tenth of the steps.
#[cfg(feature = "torch")]
fn fit_network(
    params: &OfflineRlParams,
    buffer: &Buffer,
    keep: &[bool],
    behaviour: &LoadedPolicy,
    ctx: &StageContext,
) -> Result<(crate::learn::mlp::Mlp, f64, f64)> {
    use crate::torch::nets::{QMethod, Transitions, fit_q};
    let actions = behaviour.file.labels.len();
    let rows: Vec<usize> = (0..buffer.len()).filter(|&i| keep[i]).collect();
    let mut local = vec![usize::MAX; buffer.len()];
    rows.iter().enumerate().for_each(|(j, &i)| local[i] = j);
    // Every next row of a kept row is kept (episodes are whole in one segment).
    let next: Vec<Option<usize>> = next_rows(buffer, keep).into_iter().map(|n| n.map(|i| local[i])).collect();
    let columns: Vec<Vec<f64>> = buffer.observations.iter().map(|c| rows.iter().map(|&i| c[i]).collect()).collect();
    let chosen: Vec<usize> = rows.iter().map(|&i| buffer.action[i] as usize).collect();
    let rewards: Vec<f64> = rows.iter().map(|&i| buffer.reward[i] * REWARD_SCALE).collect();
    let allowed: Option<Vec<Vec<bool>>> = (params.method == Method::Bcq).then(|| {
        rows.iter()
            .map(|&i| behaviour.allowed(&behaviour.probabilities(&buffer.observation(i)), params.threshold))
            .collect()
    });
    let method = match params.method {
        Method::Cql => QMethod::Cql { alpha: params.alpha },
        _ => QMethod::Bcq,
    };
    let transitions = Transitions {
        columns: &columns,
        actions: &chosen,
        rewards: &rewards,
        next: &next,
        allowed: allowed.as_deref(),
    };
    let cancelled = || ctx.check_cancelled();
    let trained =
        fit_q(&transitions, actions, method, params.discount, params.target_update, &params.network, &cancelled)?;
    Ok((trained.network, trained.loss_first, trained.loss_last))
}

#[cfg(not(feature = "torch"))]
fn fit_network(
    _params: &OfflineRlParams,
    _buffer: &Buffer,
    _keep: &[bool],
    _behaviour: &LoadedPolicy,
    _ctx: &StageContext,
) -> Result<(crate::learn::mlp::Mlp, f64, f64)> {
    let _ = (next_rows, REWARD_SCALE);
    bail!("{}", crate::torch::NOT_BUILT)
}
