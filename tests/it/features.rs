//! Features, labels and the leakage audit, on synthetic and real data.

use crate::support::{TestContext, real_data};

const SYNTH: &str = r#"
[stages.market]
task = "synth_market"
params = { days = 4, seed = 3 }

[stages.features]
task = "features"
inputs = ["market"]
params = { events = ["2024-01-02T19:00:00Z", "2024-01-03T13:30:00Z"] }

[stages.targets]
task = "labels"
inputs = ["market"]
"#;

#[test]
fn synthetic_market_goes_through_features_and_labels() {
    let ctx = TestContext::new();
    ctx.write("p.toml", SYNTH);
    ctx.run(&["run", "p.toml"]).ok();
    let features = ctx.table("features", "table");
    assert_eq!(features.height(), 4 * 1440);
    let names: Vec<String> = features.get_column_names().iter().map(|s| s.to_string()).collect();
    for expected in [
        "ret_1",
        "ret_240",
        "rv_60",
        "atr_14",
        "hl_range",
        "volume_z_60",
        "volume_slope_15",
        "vwap_dev_60",
        "signed_volume",
        "obi",
        "obi_vel_5",
        "vpin_50",
        "spread",
        "depth",
        "thin_side_share",
        "whale_share_60",
        "whale_flip_15",
        "liq_pressure_15",
        "funding_z_1440",
        "oi_change_60",
        "hour_sin",
        "dow_cos",
        "minutes_to_us_open",
        "minutes_since_us_open",
        "minutes_to_event",
        "in_event_window",
    ] {
        assert!(names.iter().any(|n| n == expected), "missing {expected} in {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("proxy")), "the synthetic market has every input: no proxies");
    let sources = &ctx.manifest("features")["metrics"]["sources"];
    assert_eq!(sources["obi"], "real: L0 (bid_size - ask_size) / (bid_size + ask_size)");
    let labels = ctx.table("targets", "table");
    let label_names: Vec<String> = labels.get_column_names().iter().map(|s| s.to_string()).collect();
    assert!(label_names.iter().skip(1).all(|n| n.starts_with("label_")), "{label_names:?}");
    assert!(label_names.contains(&"label_regime_60".to_string()));
    // Labels look forward: the last 60 rows have no 60-minute label.
    let ret60 = labels.column("label_ret_60").unwrap();
    assert_eq!(ret60.null_count(), 60);
}

#[test]
fn features_refuse_label_columns() {
    let ctx = TestContext::new();
    ctx.write("p.toml", &format!("{SYNTH}\n[stages.bad]\ntask = \"features\"\ninputs = [\"targets\"]\n"));
    let err = ctx.run(&["run", "p.toml", "bad"]).code(1).stderr;
    assert!(err.contains("is a label; features must never see labels"), "{err}");
}

#[test]
fn leakage_audit_passes_every_shipped_feature_and_catches_a_leak() {
    let ctx = TestContext::new();
    ctx.write("p.toml", SYNTH);
    let audit = ctx.run(&["audit", "leakage", "p.toml", "features", "--cuts", "6", "--json"]).ok();
    let reports: serde_json::Value = serde_json::from_str(&audit.stdout).unwrap();
    let columns = reports[0]["columns"].as_array().unwrap();
    assert!(columns.len() >= 30, "{columns:?}");
    assert!(columns.iter().all(|c| c["leaks"] == false), "{audit:?}", audit = audit.stdout);
    // The deliberate canary leaks, and only it is reported.
    let leaky = ctx
        .run(&[
            "audit",
            "leakage",
            "p.toml",
            "features",
            "--cuts",
            "4",
            "--set",
            "stages.features.params.leaky_canary=true",
        ])
        .code(1);
    assert!(
        leaky.stdout.contains("LEAKAGE: 1 column(s) change when the future is removed: canary_future_ret_5"),
        "{}",
        leaky.stdout
    );
    // Labels look ahead by design: the audit says so.
    let labels = ctx.run(&["audit", "leakage", "p.toml", "targets", "--cuts", "3"]).code(1);
    assert!(labels.stdout.contains("label_ret_5"), "{}", labels.stdout);
}

#[test]
fn real_bars_go_through_the_shipped_pipeline_and_pass_the_audit() {
    let Some(data) = real_data() else { return };
    let ctx = TestContext::new();
    let pipeline =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/real_btc_features.toml")).unwrap();
    ctx.write("p.toml", &pipeline);
    let set = format!("params.data_dir={}", data.display());
    ctx.run(&["run", "p.toml", "--set", &set]).ok();
    let features = ctx.table("features", "table");
    assert_eq!(features.height(), 30_240);
    let names: Vec<String> = features.get_column_names().iter().map(|s| s.to_string()).collect();
    for proxy in ["obi_proxy", "spread_cs_proxy_60", "vpin_50_bvc", "signed_volume_proxy"] {
        assert!(names.iter().any(|n| n == proxy), "{proxy} expected on data without book or taker volume: {names:?}");
    }
    let sources = &ctx.manifest("features")["metrics"]["sources"];
    assert!(sources["liquidations"].as_str().unwrap().starts_with("unavailable"), "{sources:#}");
    let audit = ctx.run(&["audit", "leakage", "p.toml", "features", "--cuts", "5", "--set", &set]).ok();
    assert!(audit.stdout.contains("no look-ahead"), "{}", audit.stdout);
    // The Kraken branch: gaps filled, the same feature set.
    assert_eq!(ctx.table("kraken_features", "table").height(), 90 * 1440);
}

#[test]
fn shipped_synthetic_pipeline_runs_then_is_all_cache_hits() {
    let ctx = TestContext::new();
    let pipeline =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/synthetic_features.toml")).unwrap();
    ctx.write("pipelines/p.toml", &pipeline);
    ctx.run(&["run", "pipelines/p.toml", "--set", "params.days=20"]).ok();
    assert!(ctx.last_outcomes().values().all(|o| o == "ran"));
    assert!(ctx.path("out/synthetic_features/features.parquet").is_file());
    ctx.run(&["run", "pipelines/p.toml", "--set", "params.days=20"]).ok();
    assert!(ctx.last_outcomes().values().all(|o| o == "hit"), "{:?}", ctx.last_outcomes());
    assert_eq!(ctx.table("features", "table").height(), 20 * 1440);
}
