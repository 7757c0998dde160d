//! Walk-forward: folds as graph nodes, the nightly refresh that trains one new fold, pooled
//! out-of-sample results, determinism.

use crate::support::TestContext;

/// Copies the shipped walk-forward pipelines into the test's workspace.
fn copy_pipelines(ctx: &TestContext) {
    std::fs::create_dir_all(ctx.path("pipelines/walk_forward")).unwrap();
    for file in ["walk_forward.toml", "walk_forward_real.toml", "walk_forward/study.toml"] {
        let from = concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/").to_string() + file;
        std::fs::copy(from, ctx.path(&format!("pipelines/{file}"))).unwrap();
    }
    std::fs::create_dir_all(ctx.path("pipelines/examples")).unwrap();
    std::fs::copy(example_config(), ctx.path("pipelines/examples/trading_strategies_dynamic.json")).unwrap();
}

fn example_config() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/examples/trading_strategies_dynamic.json")
}

fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// The end of the pipeline: a bias that matches docs/bias.schema.json, the example config
/// untouched, and a patched copy equal to the example with the exported RFC 6902 patch applied.
fn check_live_outputs(ctx: &TestContext) -> serde_json::Value {
    let bias = json(&ctx.path("out/walk_forward/bias.json"));
    let schema = json(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/bias.schema.json")));
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&bias).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}\n{bias:#}");
    let shipped = json(std::path::Path::new(example_config()));
    let config = json(&ctx.path("pipelines/examples/trading_strategies_dynamic.json"));
    assert_eq!(config, shipped, "the config is patched as a copy, never in place by default");
    let patch: json_patch::Patch =
        serde_json::from_value(json(&ctx.path("out/walk_forward/strategy.patch.json"))).unwrap();
    let mut applied = shipped;
    json_patch::patch(&mut applied, &patch).unwrap();
    assert_eq!(applied, json(&ctx.path("out/walk_forward/trading_strategies_dynamic.json")));
    let diff = std::fs::read_to_string(ctx.path("out/walk_forward/strategy.diff")).unwrap();
    assert!(diff.starts_with("# "), "{diff}");
    bias
}

/// The shipped pipeline, shrunk by `--set` to a few folds so that the tests stay quick.
fn small(ctx: &TestContext, until: &str) -> Vec<String> {
    copy_pipelines(ctx);
    [
        "--set",
        "params.start=2024-01-01T00:00:00Z",
        "--set",
        "params.first_test=2024-01-12",
        "--set",
        &format!("params.until={until}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run(ctx: &TestContext, extra: &[String], more: &[&str]) -> crate::support::Run {
    let mut args: Vec<&str> = vec!["run", "pipelines/walk_forward.toml", "--plain"];
    args.extend(extra.iter().map(String::as_str));
    args.extend_from_slice(more);
    ctx.run(&args)
}

#[test]
fn folds_are_nodes_named_by_their_test_day_and_the_nightly_run_trains_one_new_fold() {
    let ctx = TestContext::new();
    let set = small(&ctx, "2024-01-15");
    let status = {
        let mut args = vec!["status", "pipelines/walk_forward.toml", "--json"];
        args.extend(set.iter().map(String::as_str));
        let run = ctx.run(&args).ok();
        serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap()
    };
    let names: Vec<&str> = status["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    for name in [
        "window[fold=2024-01-12]",
        "window[fold=2024-01-14]",
        "train[feature_set=with_news,fold=2024-01-12]",
        "train[feature_set=price_only,fold=2024-01-14]",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("fold=2024-01-15")), "until is exclusive: {names:?}");
    let first = run(&ctx, &set, &[]).ok();
    assert!(first.stdout.contains("with_news vs price_only"), "{}", first.stdout);
    let pooled = ctx.manifest("compare");
    assert_eq!(pooled["metrics"]["variants"], 2, "{pooled:#}");

    // The nightly refresh: one more day of data, one more fold.
    let set = small(&ctx, "2024-01-16");
    run(&ctx, &set, &[]).ok();
    let outcomes = ctx.last_outcomes();
    let trained: Vec<&String> =
        outcomes.iter().filter(|(n, o)| n.starts_with("train[") && o.as_str() == "ran").map(|(n, _)| n).collect();
    assert_eq!(
        trained,
        ["train[feature_set=price_only,fold=2024-01-15]", "train[feature_set=with_news,fold=2024-01-15]"],
        "{outcomes:?}"
    );
    let hits = outcomes.iter().filter(|(n, o)| n.starts_with("train[") && o.as_str() == "hit").count();
    assert_eq!(hits, 6, "every older fold is a cache hit: {outcomes:?}");

    // A fold can be targeted by its coordinate alone.
    let status = {
        let mut args = vec!["status", "pipelines/walk_forward.toml", "--json", "--force", "train[fold=2024-01-13]"];
        args.extend(set.iter().map(String::as_str));
        let run = ctx.run(&args).ok();
        serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap()
    };
    let to_run: Vec<&str> = status["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "will_run" && s["stage"].as_str().unwrap().starts_with("train["))
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        to_run,
        ["train[feature_set=with_news,fold=2024-01-13]", "train[feature_set=price_only,fold=2024-01-13]"]
    );
}

#[test]
fn pooled_predictions_are_every_folds_test_day_and_outputs_do_not_depend_on_jobs() {
    let mut hashes = Vec::new();
    for jobs in ["1", "2"] {
        let ctx = TestContext::new();
        let set = small(&ctx, "2024-01-15");
        run(&ctx, &set, &["--jobs", jobs]).ok();
        hashes.push(ctx.last_output_hashes());
        let summary = ctx.manifest("compare");
        assert_eq!(summary["metrics"]["pairs"], 1);
        let table = ctx.table("compare", "table");
        let rows =
            table.column("rows").unwrap().as_materialized_series().cast(&polars::prelude::DataType::Int64).unwrap();
        // Three test days of 1,440 minutes; the direction label is null where the price did not move.
        for r in rows.i64().unwrap().into_no_null_iter() {
            assert!(r > 3 * 1300 && r <= 3 * 1440, "{r} pooled test rows");
        }
    }
    assert_eq!(hashes[0], hashes[1], "--jobs 1 and --jobs 2 give the same bytes");
}

#[test]
fn a_fold_whose_test_labels_are_not_all_known_is_refused() {
    let ctx = TestContext::new();
    let set = small(&ctx, "2024-01-14");
    // No day after `until`: the last test day's 60-minute labels look past the data.
    let err =
        run(&ctx, &set, &["--set", "stages.market.params.extra_days=0", "--set", "stages.news.params.extra_days=0"])
            .code(1)
            .stderr;
    assert!(err.contains("fold `2024-01-13`: the labels of its test window"), "{err}");
    assert!(err.contains("hint: the data must reach the test window's end plus the label horizon"), "{err}");
}

#[test]
fn bad_folds_are_located() {
    let ctx = TestContext::new();
    ctx.write(
        "p.toml",
        "[stages.m]\ntask = \"synth_market\"\nparams = { days = 5 }\n\n[stages.w]\ntask = \"fold_window\"\ninputs = [\"m\"]\nparams = { keep_after = \"1h\" }\nfolds = { start = \"2024-01-03\", until = \"2024-01-02\", train = \"2mo\", tst = \"1d\" }\n",
    );
    let err = ctx.run(&["validate", "p.toml"]).code(2).stderr;
    assert!(err.contains("unknown key `tst` in `folds`"), "{err}");
    assert!(err.contains("folds step by fixed lengths"), "{err}");
    assert!(err.contains("must come after `folds.start`"), "{err}");
    assert!(err.contains("p.toml:9:"), "{err}");
}

/// The report opens in a real headless Chromium: it renders, the charts are there, and the
/// browser logs no console error. `.ci/run` installs Debian's chromium; elsewhere the test says
/// why it skips.
#[test]
fn the_report_renders_in_headless_chromium() {
    let Some(chromium) = crate::support::chromium() else { return };
    let ctx = TestContext::new();
    let set = small(&ctx, "2024-01-15");
    run(&ctx, &set, &[]).ok();
    let html = ctx.path("out/walk_forward/report.html");
    assert!(html.is_file(), "the report is exported");
    let text = std::fs::read_to_string(&html).unwrap();
    assert!(text.find("Verdict").unwrap() < text.find("Equity").unwrap(), "the verdict comes first");
    let (dom, png) = crate::support::open_in_chromium(chromium, &ctx, &html, 900, 2000);
    assert!(dom.matches("<svg").count() >= 5, "charts in the rendered page");
    assert!(dom.contains("Verdict: none") || dom.contains("Verdict: promote") || dom.contains("Verdict: keep"));
    assert!(png.len() > 50_000, "a rendered page, {} bytes", png.len());
}

/// Only the chosen model family's params are in a `train` node's key: changing the logistic
/// params leaves every gbdt fold cached; changing the gbdt's re-runs them.
#[test]
fn another_model_familys_params_do_not_touch_the_cache_key() {
    let ctx = TestContext::new();
    let set = small(&ctx, "2024-01-14");
    run(&ctx, &set, &[]).ok();
    let will_run = |extra: &str| -> Vec<String> {
        let mut args = vec!["status", "pipelines/walk_forward.toml", "--json", "--set", extra];
        args.extend(set.iter().map(String::as_str));
        let out: serde_json::Value = serde_json::from_str(&ctx.run(&args).ok().stdout).unwrap();
        out["stages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["status"] == "will_run")
            .map(|s| s["stage"].as_str().unwrap().to_string())
            .collect()
    };
    let logistic = will_run("stages.train.params.logistic.alpha=7.0");
    assert!(!logistic.iter().any(|s| s.starts_with("train[")), "gbdt folds stay cached: {logistic:?}");
    let gbdt = will_run("stages.train.params.gbdt.learning_rate=0.2");
    assert_eq!(gbdt.iter().filter(|s| s.starts_with("train[")).count(), 4, "{gbdt:?}");
}

/// The shipped synthetic pipeline as a user runs it: 30 folds, the pooled ablation, the
/// backtest with its baselines, the gate's verdict and the report.
#[test]
fn the_shipped_walk_forward_runs_end_to_end() {
    let ctx = TestContext::new();
    copy_pipelines(&ctx);
    let run = ctx.run(&["run", "pipelines/walk_forward.toml", "--plain"]).ok();
    assert!(run.stdout.contains("Walk-forward ablation, pooled over 30 folds"), "{}", run.stdout);
    assert!(run.stdout.contains("buy_and_hold") && run.stdout.contains("gate: "), "{}", run.stdout);
    let verdict: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ctx.path("out/walk_forward/promoted.json")).unwrap()).unwrap();
    assert!(["promote", "keep", "none"].contains(&verdict["decision"].as_str().unwrap()));
    assert_eq!(verdict["candidate"]["fold"], "2024-02-29");
    assert!(ctx.path("out/walk_forward/report.html").is_file());
    // Buy-and-hold is the market: filled at the second bar's open, out at the last close, less
    // a fee and a slippage on each side.
    let bars = ctx.table("aligned", "table");
    let times: Vec<i64> = bars
        .column("timestamp")
        .unwrap()
        .as_materialized_series()
        .to_physical_repr()
        .i64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    let first = times.iter().position(|&t| t == 1_706_659_200_000).unwrap(); // 2024-01-31
    let last = times.iter().position(|&t| t == 1_709_251_140_000).unwrap(); // 2024-02-29 23:59
    let open = bars.column("open").unwrap().f64().unwrap().get(first + 1).unwrap();
    let close = bars.column("close").unwrap().f64().unwrap().get(last).unwrap();
    let manifest = ctx.manifest("backtest");
    let hash = manifest["outputs"]["metrics"]["hash"].as_str().unwrap().to_string();
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ctx.store().join("objects").join(&hash[..2]).join(&hash[2..])).unwrap())
            .unwrap();
    let bh = &metrics["strategies"]["buy_and_hold"];
    let (total, funding, fees) =
        (bh["total_return"].as_f64().unwrap(), bh["funding"].as_f64().unwrap(), bh["fees"].as_f64().unwrap());
    assert!(funding > 0.0, "the synthetic market has a positive funding rate: longs pay");
    let expected = close / open - 1.0 - funding - fees;
    assert!((total - expected).abs() < 0.002, "buy-and-hold {total} vs market less funding and fees {expected}");
    assert_eq!(metrics["strategies"]["flat"]["total_return"], 0.0);
    assert_eq!(metrics["convention"]["periods_per_year"], 525_600.0);
    // The synthetic models lose after costs: nothing is promoted, and the bias says so.
    let bias = check_live_outputs(&ctx);
    assert_eq!(verdict["decision"], "none", "{verdict:#}");
    assert_eq!((bias["mode"].as_str(), bias["source"].as_str()), (Some("fallback"), Some("rule_baseline")));
    assert!(bias["reasons"][0].as_str().unwrap().contains("promoted no model"), "{bias:#}");
    assert_eq!(bias["valid_from"], "2024-03-01T00:00:00Z");
    assert_eq!(bias["freshness"]["last_bar"], "2024-02-29T23:59:00Z", "no bar after as_of is read");
}

/// A gate that promotes (thresholds lowered for the test): the bias is the promoted model's
/// view, traceable to its artifact, and the patch carries its direction into the config.
#[test]
fn a_promoted_model_drives_the_bias_and_the_patch() {
    let ctx = TestContext::new();
    let mut set = small(&ctx, "2024-01-15");
    for s in [
        "stages.gate.params.min_sharpe=-1000000.0",
        "stages.gate.params.max_drawdown=1.0",
        "stages.gate.params.min_trades=0",
        "stages.gate.params.min_folds=0",
        "stages.gate.params.must_beat=[]",
    ] {
        set.extend(["--set".to_string(), s.to_string()]);
    }
    run(&ctx, &set, &[]).ok();
    let verdict = json(&ctx.path("out/walk_forward/promoted.json"));
    assert_eq!(verdict["decision"], "promote", "{verdict:#}");
    let bias = check_live_outputs(&ctx);
    assert_eq!(bias["source"], "promoted_model", "{bias:#}");
    assert_eq!(bias["model"]["hash"], verdict["promoted"]["model_hash"]);
    assert_eq!(bias["model"]["variant"], "feature_set=with_news");
    assert_eq!(bias["model"]["fold"], "2024-01-14");
    let p = bias["p_up"].as_f64().unwrap();
    assert!((bias["confidence"].as_f64().unwrap() - 2.0 * (p - 0.5).abs()).abs() < 1e-12);
    let patched = json(&ctx.path("out/walk_forward/trading_strategies_dynamic.json"));
    let direction = match bias["direction"].as_str().unwrap() {
        "flat" => "neutral",
        d => d,
    };
    assert_eq!(patched["strategies"]["obi_vpin_momentum"]["direction_bias"], direction);
    assert_eq!(patched["strategies"]["spread_scalper"]["direction_bias"], "neutral", "disabled: untouched");
}

/// The real pipeline on the real bars and news (skips with a printed reason without them).
#[test]
fn walk_forward_real_runs_on_real_bars_and_news() {
    let Some(data) = crate::support::real_data() else { return };
    let ctx = TestContext::new();
    copy_pipelines(&ctx);
    let data_dir = format!("params.data_dir={}", data.display());
    let run = ctx.run(&["run", "pipelines/walk_forward_real.toml", "--plain", "--set", &data_dir]).ok();
    assert!(run.stdout.contains("Walk-forward ablation, pooled over 13 folds"), "{}", run.stdout);
    let verdict: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ctx.path("out/walk_forward_real/promoted.json")).unwrap())
            .unwrap();
    assert_eq!(verdict["candidate"]["fold"], "2023-03-20");
    // No funding column in these files: none is charged, and the report says so.
    let report = std::fs::read_to_string(ctx.path("out/walk_forward_real/report.html")).unwrap();
    assert!(report.contains("funding is not charged"));
}
