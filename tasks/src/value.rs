//! `value`: writes a JSON document holding a value from params and the hashes of its inputs.

use pipeline_artifacts::{ArtifactKind, write_json};
use pipeline_engine::{OutputDecl, Stage, StageContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Writes `{"value": ..., "inputs": {name: hash}}` as JSON.
///
/// The smallest real stage: its output changes exactly when its value or an input changes, which
/// makes it the building block of the engine's own tests and benchmarks (a DAG of `value` stages
/// behaves like any DAG). `delay_ms` simulates work.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValueParams {
    /// Any TOML value; copied into the output.
    #[serde(default)]
    pub value: serde_json::Value,
    /// Sleep this long before writing, checking for Ctrl-C (to simulate a slow stage).
    #[serde(default)]
    pub delay_ms: u64,
}

pub struct Value;

impl Stage for Value {
    type Params = ValueParams;
    const NAME: &'static str = "value";
    const VERSION: u32 = 1;
    const DOC: &'static str = "Write a JSON document with a value from params and the hashes of the inputs.\n\n\
        Output `json`. The output changes exactly when `value` or an input changes, so a DAG of `value` \
        stages exercises caching, early cutoff and scheduling without data. `delay_ms` simulates work.";
    const EXAMPLE: &'static str = r#"[stages.answer]
task = "value"
params = { value = 42 }
"#;

    fn outputs(_params: &ValueParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("json", ArtifactKind::Json)]
    }

    fn run(params: &ValueParams, ctx: &mut StageContext) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(params.delay_ms);
        while std::time::Instant::now() < deadline {
            ctx.check_cancelled()?;
            std::thread::sleep(std::time::Duration::from_millis(5).min(deadline - std::time::Instant::now()));
        }
        let inputs: serde_json::Map<String, serde_json::Value> =
            ctx.inputs().iter().map(|i| (i.name.clone(), serde_json::Value::String(i.hash.to_hex()))).collect();
        let doc = serde_json::json!({ "value": params.value, "inputs": inputs });
        write_json(&doc, &ctx.output_path("json")?)
    }
}
