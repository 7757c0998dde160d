//! From research to the live strategy: the strategy config patched in place survives a kill -9
//! at any moment (the old or the new file, whole; the base and the backup readable).

use std::process::Stdio;
use std::time::Instant;

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
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::Permissions::from_mode(0o640);
        std::fs::set_permissions(ctx.path("examples/strategies.json"), mode).unwrap();
    }
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
    // The same outputs again come from the cache, but the file is written all the same.
    ctx.run(&["run", "p.toml", "--plain", "--set", &scale("0.6")]).ok();
    assert_eq!(read(&ctx, "examples/strategies.json"), second, "a cached result is written in place too");
    let leftovers: Vec<String> = std::fs::read_dir(ctx.path("examples"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files of killed writes are removed: {leftovers:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(ctx.path("examples/strategies.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640, "the config keeps its permissions");
    }
    ctx.run(&["verify"]).ok();
    // A hand edit since the last in-place patch: refused, the edit kept.
    let mut edited = read(&ctx, "examples/strategies.json");
    edited["strategies"]["obi_vpin_momentum"]["enabled"] = false.into();
    ctx.write("examples/strategies.json", &serde_json::to_string_pretty(&edited).unwrap());
    let refused = ctx.run(&["run", "p.toml", "--plain"]).code(1);
    assert!(refused.stderr.contains("was edited since the last in-place patch"), "{}", refused.stderr);
    assert_eq!(read(&ctx, "examples/strategies.json"), edited);
}

const TRAINED: &str = r#"
[stages.market]
task = "synth_market"
params = { days = 12 }

[stages.features]
task = "features"
inputs = ["market"]

[stages.labels]
task = "labels"
inputs = ["market"]

[stages.train]
task = "train"
inputs = ["features", "labels"]
params = { label = "label_dir_15", model = "gbdt", feature_set = "price_only" }
"#;

/// (timestamp, score) of a JSON-lines answer of `pipeline predict`.
fn answers(stdout: &str) -> Vec<(String, f64)> {
    stdout
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            (v["timestamp"].as_str().unwrap().to_string(), v["p_up"].as_f64().unwrap())
        })
        .collect()
}

/// `pipeline predict` scores exactly as training scored: every stored prediction of the fit,
/// for gbdt and logistic, reproduced bit for bit from the features file; the stage's own newest
/// row by default; JSON lines on stdin; a located error for a bad row.
#[test]
fn predict_scores_rows_as_training_did() {
    let ctx = TestContext::new();
    ctx.write("p.toml", TRAINED);
    for model in ["gbdt", "logistic"] {
        let set = format!("stages.train.params.model={model}");
        ctx.run(&["run", "p.toml", "--plain", "--set", &set]).ok();
        ctx.run(&["export", "features", "features.parquet"]).ok();
        ctx.run(&["export", "train.predictions", "predictions.parquet"]).ok();
        let stored = pipeline_artifacts::read_table(&ctx.path("predictions.parquet")).unwrap();
        let times: Vec<i64> = stored
            .column("timestamp")
            .unwrap()
            .as_materialized_series()
            .to_physical_repr()
            .i64()
            .unwrap()
            .into_no_null_iter()
            .collect();
        let scores: Vec<f64> = stored.column("score").unwrap().f64().unwrap().into_no_null_iter().collect();
        let run = ctx.run(&["predict", "p.toml", "--stage", "train", "--input", "features.parquet"]).ok();
        let scored: std::collections::HashMap<String, f64> = answers(&run.stdout).into_iter().collect();
        assert_eq!(scored.len(), 12 * 1440, "every row of the file");
        for (t, s) in times.iter().zip(&scores) {
            let at = chrono::DateTime::from_timestamp_millis(*t).unwrap().format("%Y-%m-%dT%H:%M:%SZ").to_string();
            assert_eq!(scored[&at].to_bits(), s.to_bits(), "{model} at {at}: predict {} vs training {s}", scored[&at]);
        }
        // By default, the newest row of the stage's own inputs.
        let newest = answers(&ctx.run(&["predict", "p.toml", "--stage", "train"]).ok().stdout);
        assert_eq!(newest.len(), 1);
        assert_eq!(newest[0].0, "2024-01-12T23:59:00Z");
        assert_eq!(newest[0].1.to_bits(), scored["2024-01-12T23:59:00Z"].to_bits());
    }
    // JSON lines on stdin: the newest row again, as a live loop would send it.
    ctx.run(&["export", "features", "features.ndjson"]).ok();
    let text = std::fs::read_to_string(ctx.path("features.ndjson")).unwrap();
    let last = text.lines().last().unwrap().to_string();
    let mut child = ctx
        .command(&["predict", "p.toml", "--stage", "train", "--input", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), format!("{last}\n").as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let piped = answers(&String::from_utf8(output.stdout).unwrap());
    let stored = answers(&ctx.run(&["predict", "p.toml", "--stage", "train"]).ok().stdout);
    assert_eq!(piped.len(), 1);
    assert_eq!(piped[0].1.to_bits(), stored[0].1.to_bits());
    // A row without a feature: the line and the feature named, exit code 2.
    ctx.write("bad.jsonl", "{\"timestamp\": \"2024-01-12T23:59:00Z\"}\n");
    let bad = ctx.run(&["predict", "p.toml", "--stage", "train", "--input", "bad.jsonl"]).code(2);
    assert!(
        bad.stderr.contains("bad.jsonl:1: no `") && bad.stderr.contains("each row needs every feature"),
        "{}",
        bad.stderr
    );
    let none = ctx.run(&["predict", "p.toml", "--stage", "features"]).code(2);
    assert!(none.stderr.contains("has no model output"), "{}", none.stderr);
}
