//! Cache semantics: what re-runs, what does not, and why.

use crate::support::{TestContext, outcomes, touch};

const CHAIN: &str = r#"
[pipeline]
name = "chain"

[params]
rows = 500

[stages.source]
task = "read_table"
params = { path = "data/prices.csv" }

[stages.narrow]
task = "select"
inputs = ["source"]
params = { columns = ["timestamp", "close"] }

[stages.report]
task = "value"
inputs = ["narrow.table"]
params = { value = "report" }

[stages.synth]
task = "synth_table"
params = { rows = "${params.rows}", columns = 2 }

[stages.synth_head]
task = "select"
inputs = ["synth"]
params = { columns = ["timestamp", "c1"], head = 10 }

[stages.side]
task = "value"
params = { value = 1 }
"#;

const PRICES: &str = "timestamp,close,volume\n2024-01-01 00:00:00,100.0,5\n2024-01-01 00:01:00,100.5,7\n";

fn setup() -> TestContext {
    let ctx = TestContext::new();
    ctx.write("p.toml", CHAIN);
    ctx.write("data/prices.csv", PRICES);
    ctx
}

#[test]
fn first_run_computes_everything_second_run_nothing() {
    let ctx = setup();
    ctx.run(&["run", "p.toml", "--plain"]).ok();
    assert!(ctx.last_outcomes().values().all(|o| o == "ran"), "{:?}", ctx.last_outcomes());
    let status = ctx.status("p.toml", &[]);
    assert_eq!(status["to_run"], 0, "{status:#}");
    let second = ctx.run(&["run", "p.toml", "--plain"]).ok();
    assert!(ctx.last_outcomes().values().all(|o| o == "hit"), "{:?}", ctx.last_outcomes());
    assert!(second.stderr.contains("0 ran, 6 cached"), "{}", second.stderr);
}

#[test]
fn param_change_reruns_exactly_that_stage_and_its_dependents() {
    let ctx = setup();
    ctx.run(&["run", "p.toml"]).ok();
    let set = "--set=stages.synth_head.params.head=20";
    let status = ctx.status("p.toml", &[set]);
    let stages = status["stages"].as_array().unwrap();
    let head = stages.iter().find(|s| s["stage"] == "synth_head").unwrap();
    assert_eq!(head["status"], "will_run");
    assert_eq!(head["reasons"][0]["reason"], "params_changed", "{head:#}");
    assert_eq!(head["reasons"][0]["changes"][0]["param"], "head");
    assert_eq!(head["reasons"][0]["changes"][0]["old"], 10);
    assert_eq!(head["reasons"][0]["changes"][0]["new"], 20);
    assert_eq!(status["to_run"], 1, "{status:#}");
    ctx.run(&["run", "p.toml", set]).ok();
    assert_eq!(
        ctx.last_outcomes(),
        outcomes(&[
            ("source", "hit"),
            ("narrow", "hit"),
            ("report", "hit"),
            ("synth", "hit"),
            ("synth_head", "ran"),
            ("side", "hit")
        ])
    );
    // A shared param flows to the stage that references it, and on to its dependents.
    ctx.run(&["run", "p.toml", "--set", "params.rows=600"]).ok();
    let got = ctx.last_outcomes();
    assert_eq!(got["synth"], "ran");
    assert_eq!(got["synth_head"], "ran", "synth's output changed, so its dependent re-runs");
    assert_eq!(got["source"], "hit");
    assert_eq!(got["side"], "hit");
}

#[test]
fn touched_source_file_with_same_bytes_reruns_nothing() {
    let ctx = setup();
    ctx.run(&["run", "p.toml"]).ok();
    touch(&ctx.path("data/prices.csv"));
    // Copy the file away and back: new inode and mtime, same bytes.
    std::fs::copy(ctx.path("data/prices.csv"), ctx.path("data/tmp.csv")).unwrap();
    std::fs::rename(ctx.path("data/tmp.csv"), ctx.path("data/prices.csv")).unwrap();
    assert_eq!(ctx.status("p.toml", &[])["to_run"], 0);
    ctx.run(&["run", "p.toml"]).ok();
    assert!(ctx.last_outcomes().values().all(|o| o == "hit"), "{:?}", ctx.last_outcomes());
}

#[test]
fn content_change_reruns_the_reader_and_only_dependents_whose_inputs_changed() {
    let ctx = setup();
    ctx.run(&["run", "p.toml"]).ok();
    // Change only `volume`, a column `narrow` drops: narrow re-runs, gives the same bytes, and
    // `report` is a hit (early cutoff).
    ctx.write("data/prices.csv", &PRICES.replace(",5\n", ",6\n"));
    let status = ctx.status("p.toml", &[]);
    let source = status["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "source").unwrap().clone();
    assert_eq!(source["reasons"][0]["reason"], "file_changed", "{source:#}");
    assert_eq!(source["reasons"][0]["files"][0], "data/prices.csv");
    let report = status["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "report").unwrap().clone();
    assert_eq!(report["reasons"][0]["reason"], "upstream_will_run", "{report:#}");
    ctx.run(&["run", "p.toml"]).ok();
    assert_eq!(
        ctx.last_outcomes(),
        outcomes(&[
            ("source", "ran"),
            ("narrow", "ran"),
            ("report", "hit"),
            ("synth", "hit"),
            ("synth_head", "hit"),
            ("side", "hit")
        ])
    );
    // Now change a kept column: the change flows all the way down.
    ctx.write("data/prices.csv", &PRICES.replace("100.5", "101.5"));
    ctx.run(&["run", "p.toml"]).ok();
    let got = ctx.last_outcomes();
    assert_eq!((got["source"].as_str(), got["narrow"].as_str(), got["report"].as_str()), ("ran", "ran", "ran"));
}

#[test]
fn force_and_missing_objects_rerun_with_the_reason() {
    let ctx = setup();
    ctx.run(&["run", "p.toml"]).ok();
    let status = ctx.status("p.toml", &["--force", "side"]);
    let side = status["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "side").unwrap().clone();
    assert_eq!(side["reasons"][0]["reason"], "forced");
    ctx.run(&["run", "p.toml", "--force", "side"]).ok();
    assert_eq!(ctx.last_outcomes()["side"], "ran");
    // Delete one object behind the engine's back.
    let hashes = ctx.last_output_hashes();
    let hash = &hashes["synth.table"];
    let object = ctx.store().join("objects").join(&hash[..2]).join(&hash[2..]);
    std::fs::remove_file(&object).unwrap();
    let status = ctx.status("p.toml", &[]);
    let synth = status["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "synth").unwrap().clone();
    assert_eq!(synth["reasons"][0]["reason"], "object_missing", "{synth:#}");
    ctx.run(&["run", "p.toml"]).ok();
    assert_eq!(ctx.last_outcomes()["synth"], "ran");
    assert_eq!(ctx.last_outcomes()["synth_head"], "hit", "same bytes again: early cutoff");
    assert!(object.exists());
}

#[test]
fn targets_run_only_what_they_need() {
    let ctx = setup();
    ctx.run(&["run", "p.toml", "narrow"]).ok();
    let got = ctx.last_outcomes();
    assert_eq!(got, outcomes(&[("source", "ran"), ("narrow", "ran")]));
    let bad = ctx.run(&["run", "p.toml", "narow"]).code(2);
    assert!(bad.stderr.contains("did you mean `narrow`?"), "{}", bad.stderr);
}

#[test]
fn same_inputs_give_identical_outputs_whatever_the_job_count() {
    let a = setup();
    let b = setup();
    a.run(&["run", "p.toml", "--jobs", "1"]).ok();
    b.run(&["run", "p.toml", "--jobs", "2"]).ok();
    let hashes_a = a.last_output_hashes();
    assert_eq!(hashes_a.len(), 6);
    assert_eq!(hashes_a, b.last_output_hashes());
}

#[test]
fn matrix_expands_to_named_nodes_and_consumers_get_every_variant() {
    let ctx = TestContext::new();
    ctx.write(
        "m.toml",
        r#"
[stages.model]
task = "value"
matrix = { value = [true, false] }

[stages.per_variant]
task = "value"
inputs = ["model"]
matrix = { value = [true, false] }

[stages.compare]
task = "value"
inputs = ["model"]
params = { value = "all" }
"#,
    );
    let dag = ctx.run(&["dag", "m.toml"]).ok();
    assert!(dag.stdout.contains("model[value=true] (value)"), "{}", dag.stdout);
    assert!(dag.stdout.contains("per_variant[value=false] (value) <- model=model[value=false]"), "{}", dag.stdout);
    assert!(
        dag.stdout.contains("compare (value) <- model=model[value=true]; model=model[value=false]"),
        "{}",
        dag.stdout
    );
    ctx.run(&["run", "m.toml", "--set", "stages.compare.params.value=x"]).ok();
    assert_eq!(ctx.last_outcomes().len(), 5);
    // Targeting a stage name runs all its matrix nodes.
    ctx.run(&["run", "m.toml", "model", "--force", "model"]).ok();
    assert_eq!(ctx.last_outcomes(), outcomes(&[("model[value=true]", "ran"), ("model[value=false]", "ran")]));
}

#[test]
fn include_shares_stages_and_exports_copy_results() {
    let ctx = TestContext::new();
    ctx.write(
        "common.toml",
        "[params]\nrows = 50\n\n[stages.prices]\ntask = \"synth_table\"\nparams = { rows = \"${params.rows}\" }\n",
    );
    ctx.write(
        "main.toml",
        "include = [\"common.toml\"]\n[params]\nrows = 70\n\n[stages.head]\ntask = \"select\"\ninputs = [\"prices\"]\nparams = { columns = [\"timestamp\"] }\nexports = { table = \"out/head.parquet\" }\n",
    );
    let run = ctx.run(&["run", "main.toml"]).ok();
    assert!(run.stderr.contains("exported head.table -> "), "{}", run.stderr);
    let exported = ctx.path("out/head.parquet");
    let bytes = std::fs::read(&exported).unwrap();
    let hash = blake3::hash(&bytes).to_hex().to_string();
    assert_eq!(ctx.last_output_hashes()["head.table"], hash);
    // The including file's [params] win over the included file's.
    let show = ctx.run(&["show", "head"]).ok();
    assert!(show.stdout.contains("rows: 70"), "{}", show.stdout);
}
