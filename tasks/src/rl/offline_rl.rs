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
use super::learned::{FqiSettings, POLICY_FORMAT, PolicyFile, QFunction, fit_fqi};
use super::trees::QTreeParams;
use crate::backtest::performance::num;

/// The offline RL algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Fitted Q iteration with gradient-boosted trees, BCQ-restricted.
    Fqi,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OfflineRlParams {
    /// The algorithm (`fqi`; neural `cql` and `bcq` come with the `torch` feature).
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
    const DOC: &'static str = "Offline RL: fitted Q iteration with tree ensembles, restricted to the behaviour's likely actions (RL).\n\n\
        Q per action is refitted `iterations` times to r + discount x max Q(s', a') over the allowed a' (nothing after an \
        episode's last step), on the `train` episodes of an `export_buffer`. Allowed: P_bc(a | s) >= threshold x the top \
        probability, from the `bc` input's classifier (discrete BCQ, so the policy stays where the data has evidence), \
        and at least `min_rows` rows of that action. The policy is argmax Q over the allowed actions. Rewards are fitted \
        in bps of equity. Outputs: `policy` (JSON, `pipeline-policy/1`, with the behaviour classifier inside: \
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
        ParamError::all(errors)
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
        let iterations = params.iterations as u64;
        let models = fit_fqi(&buffer, &keep, env.labels.len(), &behaviour, &settings, |k| {
            ctx.progress(k as u64, Some(iterations));
            ctx.check_cancelled()
        })?;
        let file = PolicyFile {
            format: POLICY_FORMAT.into(),
            kind: "fqi".into(),
            observation: env.observation.clone(),
            actions: env.env.actions.clone(),
            labels: env.labels.clone(),
            env: env.env.clone(),
            behaviour: bc.behaviour.clone(),
            q: Some(QFunction {
                discount: params.discount,
                threshold: params.threshold,
                iterations: params.iterations,
                models: models.clone(),
            }),
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
        metrics.insert("iterations".into(), json!(params.iterations));
        metrics.insert("lookahead_weight_left".into(), num(params.discount.powi(params.iterations as i32)));
        metrics.insert("threshold".into(), json!(params.threshold));
        metrics.insert(
            "actions_with_q".into(),
            json!(models.iter().zip(&env.labels).filter(|(m, _)| m.is_some()).map(|(_, l)| l).collect::<Vec<_>>()),
        );
        write_json(&serde_json::to_value(&file)?, &ctx.output_path("policy")?)?;
        write_json(&serde_json::Value::Object(metrics), &ctx.output_path("metrics")?)?;
        Ok(())
    }
}
