//! The `torch` feature. In the default build every neural option is refused at validation with
//! where and how to get it; `pipeline doctor` says what the build has. With the feature: MiniLM
//! news embeddings on the minute grid pass the leakage audit and are the same bytes at any
//! `--jobs` and whether a day is embedded alone or with the rest; neural BC, CQL and BCQ run end
//! to end and are evaluated by `evaluate_policy`, reproducibly. (The MiniLM-vs-Python reference
//! and the network exports are unit tests in tasks/src/torch/.)

use crate::support::TestContext;

/// A small synthetic news study with the given `embed_news` params.
fn news_pipeline(params: &str) -> String {
    format!(
        r#"[params]
seed = 5
days = 4

[stages.market]
task = "synth_market"
params = {{ seed = "${{params.seed}}", days = "${{params.days}}" }}

[stages.news]
task = "synth_news"
params = {{ seed = "${{params.seed}}", days = "${{params.days}}" }}

[stages.news_features]
task = "embed_news"
inputs = {{ news = "news", bars = "market" }}
params = {{ lag_minutes = 2, windows = [60, 240]{params} }}
"#
    )
}

/// The RL study with the three neural stages (small: the point is that they run and are
/// evaluated, not what they find).
const NEURAL_RL: &str = r#"[stages.market]
task = "synth_market"
params = { seed = 3, start = "2024-01-01T00:00:00Z", days = 6 }

[stages.aligned]
task = "align_utc"
inputs = ["market"]

[stages.features]
task = "features"
inputs = ["aligned"]

[stages.buffer]
task = "export_buffer"
inputs = { bars = "aligned", features = "features" }
params = { test_from = "2024-01-05", behaviour = "rule", epsilon = 0.3, seed = 3 }

[stages.bc]
task = "bc"
inputs = { buffer = "buffer.buffer", env = "buffer.env" }

[stages.bc_mlp]
task = "bc"
inputs = { buffer = "buffer.buffer", env = "buffer.env" }
params = { model = "mlp", network = { steps = 400, seed = 2 } }

[stages.cql]
task = "offline_rl"
inputs = { buffer = "buffer.buffer", env = "buffer.env", bc = "bc.policy" }
params = { method = "cql", alpha = 1.0, target_update = 50, network = { steps = 400, seed = 2 } }

[stages.bcq]
task = "offline_rl"
inputs = { buffer = "buffer.buffer", env = "buffer.env", bc = "bc_mlp.policy" }
params = { method = "bcq", threshold = 0.3, target_update = 50, network = { steps = 400, seed = 2 } }

[stages.evaluate]
task = "evaluate_policy"
inputs = { buffer = "buffer.buffer", env = "buffer.env", bars = "aligned", features = "features", bc = "bc.policy", bc_mlp = "bc_mlp.policy", cql = "cql.policy", bcq = "bcq.policy" }
params = { fqe_bootstrap = 3, bootstrap_draws = 200 }
"#;

#[test]
fn doctor_says_what_this_build_has() {
    let ctx = TestContext::new();
    let out = ctx.run(&["doctor"]).ok().stdout;
    assert!(out.starts_with("pipeline:"), "{out}");
    if cfg!(feature = "torch") {
        assert!(out.contains("torch") && out.contains("libtorch:") && out.contains("2.13.0"), "{out}");
        assert!(out.contains("devices:") && out.contains("cpu"), "{out}");
    } else {
        assert!(
            out.contains("libtorch:") && out.contains("not in this build") && out.contains("docs/torch.md"),
            "{out}"
        );
    }
    let forced = ctx.run(&["--device", "cpu", "doctor"]).ok().stdout;
    assert!(forced.contains("--device:") && forced.contains("cpu"), "{forced}");
    let wrong = ctx.run(&["--device", "tpu", "doctor"]).code(2).stderr;
    assert!(wrong.contains("tpu") && wrong.contains("cuda"), "{wrong}");
}

#[cfg(not(feature = "torch"))]
#[test]
fn every_neural_option_is_refused_where_it_is_written_saying_how_to_get_it() {
    let ctx = TestContext::new();
    ctx.write("news.toml", &news_pipeline(r#", method = "minilm", model_dir = "minilm""#));
    let err = ctx.run(&["validate", "news.toml"]).code(2).stderr;
    assert!(err.contains("news.toml:") && err.contains("method"), "located: {err}");
    assert!(err.contains("this build has no `torch` feature") && err.contains("docs/torch.md"), "{err}");
    ctx.write("rl.toml", NEURAL_RL);
    let err = ctx.run(&["validate", "rl.toml"]).code(2).stderr;
    for stage in ["bc_mlp", "cql", "bcq"] {
        assert!(err.contains(stage), "{stage}: {err}");
    }
    assert!(err.matches("this build has no `torch` feature").count() >= 3, "{err}");
    // The docs list them all the same.
    let doc = ctx.run(&["tasks", "offline_rl"]).ok().stdout;
    assert!(doc.contains("cql") && doc.contains("bcq"), "{doc}");
}

#[cfg(feature = "torch")]
mod with_torch {
    use super::*;

    fn minilm_dir() -> Option<String> {
        match std::env::var("PIPELINE_MINILM_DIR") {
            Ok(dir) if std::path::Path::new(&dir).join("model.pt").exists() => Some(dir),
            _ if std::env::var_os("PIPELINE_REQUIRE_OPTIONAL").is_some() => {
                panic!("PIPELINE_MINILM_DIR has no model.pt: run scripts/setup-libtorch.sh")
            }
            _ => {
                eprintln!("skipped: PIPELINE_MINILM_DIR has no model.pt (scripts/setup-libtorch.sh makes it)");
                None
            }
        }
    }

    #[test]
    fn minilm_news_features_pass_the_leakage_audit_and_are_the_same_bytes_at_any_jobs() {
        let Some(dir) = minilm_dir() else { return };
        let ctx = TestContext::new();
        ctx.write("p.toml", &news_pipeline(&format!(r#", method = "minilm", model_dir = "{dir}", components = 8"#)));
        let audit = ctx.run(&["audit", "leakage", "p.toml", "news_features", "--cuts", "3"]).ok();
        assert!(audit.stdout.contains("no look-ahead"), "{}", audit.stdout);
        ctx.run(&["run", "p.toml", "--jobs", "1", "--force-all", "--plain"]).ok();
        let one = ctx.manifest("news_features")["outputs"].clone();
        ctx.run(&["run", "p.toml", "--jobs", "2", "--force-all", "--plain"]).ok();
        assert_eq!(one, ctx.manifest("news_features")["outputs"], "--jobs 1 vs 2");
        let items = ctx.table("news_features", "items");
        assert!(items.height() > 20 && items.column("emb_7").is_ok(), "{items}");
        // The device resolved into the key and the metrics.
        assert_eq!(ctx.manifest("news_features")["metrics"]["device"], "cpu");
        // Not the hashed embedding: a different table.
        ctx.write("h.toml", &news_pipeline(", components = 8"));
        ctx.run(&["run", "h.toml", "--plain"]).ok();
        assert_ne!(one["items"]["hash"], ctx.manifest("news_features")["outputs"]["items"]["hash"]);
    }

    /// The nightly property for MiniLM: the items of the first days are the same bytes whether
    /// the news covers 3 days or 4 (each item embedded independently of the others).
    #[test]
    fn minilm_items_of_old_days_do_not_change_when_a_day_is_added() {
        let Some(dir) = minilm_dir() else { return };
        let ctx = TestContext::new();
        let params = format!(r#", method = "minilm", model_dir = "{dir}""#);
        ctx.write("p.toml", &news_pipeline(&params));
        ctx.run(&["run", "p.toml", "--set", "params.days=3", "--plain"]).ok();
        let three = ctx.table("news_features", "items");
        ctx.run(&["run", "p.toml", "--set", "params.days=4", "--plain"]).ok();
        let four = ctx.table("news_features", "items");
        let cut = three.height();
        assert!(four.height() > cut);
        assert!(four.slice(0, cut).equals_missing(&three), "the first {cut} items changed");
    }

    #[test]
    fn a_device_this_machine_lacks_is_refused_at_the_param() {
        let ctx = TestContext::new();
        ctx.write(
            "rl.toml",
            &NEURAL_RL.replace(
                "network = { steps = 400, seed = 2 } }\n\n[stages.cql]",
                "network = { steps = 400, seed = 2, device = \"cuda\" } }\n\n[stages.cql]",
            ),
        );
        if tch_sees_cuda() {
            return;
        }
        let err = ctx.run(&["validate", "rl.toml"]).code(2).stderr;
        assert!(
            err.contains("rl.toml:") && err.contains("network.device") && err.contains("`cuda` is not available"),
            "{err}"
        );
    }

    fn tch_sees_cuda() -> bool {
        let ctx = TestContext::new();
        ctx.run(&["doctor"]).ok().stdout.contains("cuda x")
    }

    #[test]
    fn neural_bc_cql_and_bcq_run_end_to_end_and_are_evaluated_reproducibly() {
        let ctx = TestContext::new();
        ctx.write("rl.toml", NEURAL_RL);
        let run = ctx.run(&["run", "rl.toml", "--plain", "--jobs", "2"]).ok();
        let summary = ctx.manifest("evaluate")["metrics"].clone();
        for policy in ["bc_mlp", "cql", "bcq"] {
            assert!(summary[format!("{policy}_total_return")].is_number(), "{policy}: {summary}\n{}", run.stdout);
            let file = ctx.manifest(policy)["outputs"]["policy"]["hash"].clone();
            assert!(file.is_string());
        }
        let bc = ctx.manifest("bc_mlp")["metrics"].clone();
        assert!(bc["test_agreement"].as_f64().unwrap() > 0.5, "neural BC of a rule with 30% noise: {bc}");
        let hashes = ctx.last_output_hashes();
        ctx.run(&["run", "rl.toml", "--plain", "--jobs", "1", "--force-all"]).ok();
        assert_eq!(hashes, ctx.last_output_hashes(), "--jobs 2 vs --jobs 1");
        // The policy files are /2 and acted on without LibTorch: `bias` reads one.
        let policy_hash = hashes["cql.policy"].clone();
        let object = ctx.store().join("objects").join(&policy_hash[..2]).join(&policy_hash[2..]);
        let policy: serde_json::Value = serde_json::from_slice(&std::fs::read(object).unwrap()).unwrap();
        assert_eq!(policy["format"], "pipeline-policy/2");
        assert_eq!(policy["kind"], "cql");
        assert!(policy["q"]["network"]["layers"].as_array().unwrap().len() == 3);
    }

    /// `train` with `tcn` and `transformer` on windows: the planted order-flow signal (last
    /// minute's taker imbalance leans the next minute's return) is found on two seeds (test AUC
    /// well above 0.5), and with the labels shuffled within days neither model finds anything
    /// (test AUC within 0.04 of 0.5: about 3.5 standard errors on ~2,600 test rows).
    #[test]
    fn tcn_and_transformer_find_the_planted_signal_and_nothing_in_shuffled_labels() {
        let pipeline = |seed: u64, flow: f64, shuffle: &str| {
            format!(
                r#"[stages.market]
task = "synth_market"
params = {{ days = 12, seed = {seed}, flow_signal = {flow} }}

[stages.features]
task = "features"
inputs = ["market"]

[stages.labels]
task = "labels"
inputs = ["market"]
params = {{ horizons = [1]{shuffle} }}

[stages.train]
task = "train"
inputs = ["features", "labels"]
params = {{ label = "label_dir_1", seed = {seed}, tcn = {{ window = 16, max_steps = 600, eval_every = 50 }}, transformer = {{ window = 16, max_steps = 600, eval_every = 50 }} }}
matrix = {{ model = ["tcn", "transformer"] }}
"#
            )
        };
        let auc = |ctx: &TestContext, model: &str| {
            ctx.manifest(&format!("train[model={model}]"))["metrics"]["test_auc"].as_f64().unwrap()
        };
        let mut lines = Vec::new();
        for seed in [1, 2] {
            let ctx = TestContext::new();
            ctx.write("p.toml", &pipeline(seed, 1.0, ""));
            ctx.run(&["run", "p.toml", "--plain"]).ok();
            for model in ["tcn", "transformer"] {
                let found = auc(&ctx, model);
                lines.push(format!("seed {seed} {model} planted: test AUC {found:.4}"));
                assert!(found > 0.55, "{}", lines.join("\n"));
            }
        }
        let ctx = TestContext::new();
        ctx.write("p.toml", &pipeline(1, 1.0, ", shuffle_within_days = 7"));
        ctx.run(&["run", "p.toml", "--plain"]).ok();
        for model in ["tcn", "transformer"] {
            let null = auc(&ctx, model);
            lines.push(format!("shuffled labels {model}: test AUC {null:.4}"));
            assert!((null - 0.5).abs() < 0.04, "{}", lines.join("\n"));
        }
        eprintln!("{}", lines.join("\n"));
        let model = ctx.manifest("train[model=tcn]");
        assert!(model["metrics"]["best_iteration"].as_u64().is_some(), "{model:#}");
    }
}
