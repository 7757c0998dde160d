//! From research to the live strategy: the strategy config patched in place survives a kill -9
//! at any moment (the old or the new file, whole; the base and the backup readable).

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::TestContext;

const PIPELINE: &str = r#"
[stages.market]
task = "synth_market"
params = { days = 3 }

[stages.features]
task = "features"
inputs = ["market"]

[stages.bias]
task = "bias"
inputs = { bars = "market", features = "features" }

[stages.patch]
task = "strategy_patch"
inputs = { bias = "bias.bias" }
params = { config = "examples/strategies.json", inplace = true }
"#;

fn read(ctx: &TestContext, rel: &str) -> serde_json::Value {
    let bytes = std::fs::read(ctx.path(rel)).unwrap();
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{rel} is not whole JSON after a kill: {e}"))
}

#[test]
fn an_in_place_patch_survives_kill_9_at_any_moment() {
    let ctx = TestContext::new();
    // The example config with 3,000 more strategies (about 2 MB): a write long enough to be hit.
    let mut config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/examples/trading_strategies_dynamic.json"))
            .unwrap(),
    )
    .unwrap();
    let template = config["strategies"]["obi_vpin_momentum"].clone();
    for i in 0..3000 {
        config["strategies"][format!("copy_{i:04}")] = template.clone();
    }
    ctx.write("examples/strategies.json", &serde_json::to_string_pretty(&config).unwrap());
    ctx.write("p.toml", PIPELINE);
    let original = read(&ctx, "examples/strategies.json");
    let scale = |s: &str| format!("stages.patch.params.cautious_take_profit_scale={s}");
    ctx.run(&["run", "p.toml", "--plain", "--set", &scale("0.5")]).ok();
    let first = read(&ctx, "examples/strategies.json");
    let started = Instant::now();
    ctx.run(&["run", "p.toml", "--plain", "--set", &scale("0.6")]).ok();
    let took = started.elapsed();
    let second = read(&ctx, "examples/strategies.json");
    assert_ne!(first, second);
    assert_eq!(read(&ctx, "examples/strategies.json.base"), original, "the base is the config before any patch");
    // Each round writes the other version; a kill at a fraction of a run's time from 0 to 1.2.
    let versions = [&original, &first, &second];
    for round in 0..16u32 {
        let value = if round % 2 == 0 { "0.5" } else { "0.6" };
        let mut child = ctx
            .command(&["run", "p.toml", "--plain", "--set", &scale(value)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(took.mul_f64(round as f64 * 0.075));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let now = read(&ctx, "examples/strategies.json");
        assert!(versions.contains(&&now), "round {round}: the config is neither the old nor a new version");
        let backup = read(&ctx, "examples/strategies.json.bak");
        assert!(versions.contains(&&backup), "round {round}: the backup is not a whole earlier version");
        assert_eq!(read(&ctx, "examples/strategies.json.base"), original);
    }
    ctx.run(&["run", "p.toml", "--plain", "--set", &scale("0.5")]).ok();
    assert_eq!(read(&ctx, "examples/strategies.json"), first, "a finished run writes its version");
    ctx.run(&["verify"]).ok();
    let _ = Duration::ZERO;
}
