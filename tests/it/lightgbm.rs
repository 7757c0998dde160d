//! The `lightgbm` model family. In the default build it is refused with how to get it; in a
//! build with the `lightgbm` feature it trains deterministically, and its exported model is
//! LightGBM's own text, which Python's LightGBM scores as stored.

use crate::support::TestContext;

/// Stage 1's small training pipeline with two LightGBM nodes (which `--jobs 2` fits at once).
fn two_families() -> String {
    crate::stage1::SMALL
        .replace("gbdt = { iterations = 40 } }", "model = \"lightgbm\", lightgbm = { iterations = 60 } }")
        .replace(
            r#"matrix = { model = ["gbdt", "logistic", "random_forest", "decision_tree"] }"#,
            r#"matrix = { "lightgbm.learning_rate" = [0.05, 0.1] }"#,
        )
}

#[cfg(feature = "lightgbm")]
const NODE: &str = "train[lightgbm.learning_rate=0.1]";

#[cfg(not(feature = "lightgbm"))]
#[test]
fn lightgbm_is_refused_in_a_build_without_it_saying_how_to_get_it() {
    let ctx = TestContext::new();
    ctx.write("p.toml", &two_families());
    let err = ctx.run(&["validate", "p.toml"]).code(2).stderr;
    assert!(err.contains("this build has no `lightgbm` feature") && err.contains("scripts/setup-lightgbm.sh"), "{err}");
    assert!(err.contains("p.toml:"), "located: {err}");
}

/// The Python that scores the exported models: `PIPELINE_LIGHTGBM_PYTHON`, else the venv that
/// scripts/setup-lightgbm.sh makes. `None` (with the reason printed) when it cannot import
/// lightgbm, unless `PIPELINE_REQUIRE_OPTIONAL` says the test must run.
#[cfg(feature = "lightgbm")]
fn lightgbm_python() -> Option<std::path::PathBuf> {
    let python = std::env::var_os("PIPELINE_LIGHTGBM_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-lightgbm/bin/python"));
    let works = std::process::Command::new(&python)
        .args(["-c", "import lightgbm, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !works {
        assert!(
            std::env::var_os("PIPELINE_REQUIRE_OPTIONAL").is_none(),
            "{} cannot import lightgbm, and PIPELINE_REQUIRE_OPTIONAL says this test must run",
            python.display()
        );
        eprintln!("skipped: {} cannot import lightgbm (run scripts/setup-lightgbm.sh)", python.display());
        return None;
    }
    Some(python)
}

/// Two LightGBM nodes give the same bytes at `--jobs 1` and `--jobs 2` (fitted at once); its exported model is
/// LightGBM's text, and `lightgbm.Booster(model_file=...)` in Python reproduces the stored
/// predictions to within 1e-12, missing values included.
#[cfg(feature = "lightgbm")]
#[test]
fn lightgbm_models_are_deterministic_and_load_in_python_lightgbm() {
    let one = TestContext::new();
    one.write("p.toml", &two_families());
    one.run(&["run", "p.toml", "--jobs", "1"]).ok();
    let two = TestContext::new();
    two.write("p.toml", &two_families());
    two.run(&["run", "p.toml", "--jobs", "2"]).ok();
    let (a, b) = (one.last_output_hashes(), two.last_output_hashes());
    for (name, hash) in &a {
        assert_eq!(Some(hash), b.get(name), "{name} differs between --jobs 1 and --jobs 2");
    }
    let metrics = one.manifest(NODE);
    let auc = metrics["metrics"]["test_auc"].as_f64().unwrap();
    assert!(auc.is_finite(), "{metrics:#}");
    let best = metrics["metrics"]["best_iteration"].as_u64().unwrap();

    let Some(python) = lightgbm_python() else { return };
    one.run(&["export-model", NODE, "out/model.txt"]).ok();
    let text = std::fs::read_to_string(one.path("out/model.txt")).unwrap();
    assert!(text.starts_with("tree\nversion=v4"), "LightGBM's own text format: {}", &text[..40]);
    assert_eq!(text.matches("\nTree=").count() as u64, best, "the model holds the rounds up to the best one");
    let (columns, stored) = crate::stage1::scored_columns(&one, NODE, &["features", "labels"]);
    one.write("rows.csv", &crate::stage1::rows_csv(None, &columns));
    let script = "import sys, numpy, lightgbm\n\
        booster = lightgbm.Booster(model_file=sys.argv[1])\n\
        rows = numpy.loadtxt(sys.argv[2], delimiter=',', ndmin=2)\n\
        for p in booster.predict(rows): print(repr(float(p)))\n";
    let mut scorer = std::process::Command::new(&python);
    scorer.args(["-c", script]).arg(one.path("out/model.txt")).arg(one.path("rows.csv"));
    crate::stage1::assert_scores_match(scorer, &stored, "Python LightGBM");
}
