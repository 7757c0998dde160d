//! Looking at results: runs, show, diff, dag, tasks, gc, pin.

use crate::support::TestContext;

const PIPELINE: &str = r#"
[pipeline]
name = "inspect"

[stages.prices]
task = "synth_table"
params = { rows = 100, columns = 2, start = "2024-03-01T00:00:00Z" }

[stages.head]
task = "select"
inputs = ["prices"]
params = { columns = ["timestamp", "c0"], head = 10 }

[stages.note]
task = "value"
inputs = ["head"]
params = { value = "v1" }
"#;

/// A day of synthetic market and news: two sources whose params are changed one at a time.
const MARKET_AND_NEWS: &str = r#"
[stages.market]
task = "synth_market"
params = { days = 1 }

[stages.news]
task = "synth_news"
params = { days = 1 }
"#;

fn setup() -> TestContext {
    let ctx = TestContext::new();
    ctx.write("p.toml", PIPELINE);
    ctx.run(&["run", "p.toml"]).ok();
    ctx
}

#[test]
fn show_describes_runs_stages_and_objects() {
    let ctx = setup();
    let run = ctx.run(&["show", "last"]).ok().stdout;
    assert!(run.contains("succeeded"), "{run}");
    assert!(run.contains("pipeline: inspect"), "{run}");
    let stage = ctx.run(&["show", "prices"]).ok().stdout;
    assert!(stage.contains("rows: 100"), "{stage}");
    assert!(stage.contains("timestamp: datetime[ms, UTC]"), "{stage}");
    assert!(stage.contains("time range (timestamp): 2024-03-01 00:00:00 UTC .. 2024-03-01 01:39:00 UTC"), "{stage}");
    assert!(stage.contains("c1: f64"), "{stage}");
    let hash = ctx.last_output_hashes()["head.table"].clone();
    let object = ctx.run(&["show", &hash[..10]]).ok().stdout;
    assert!(object.contains("rows: 10"), "{object}");
    let key = ctx.last_run()["stages"][0]["key"].as_str().unwrap().to_string();
    let manifest = ctx.run(&["show", &key[..12]]).ok().stdout;
    assert!(manifest.contains("task: synth_table v1"), "{manifest}");
    let missing = ctx.run(&["show", "nothing_here"]).code(2).stderr;
    assert!(missing.contains("hint: `pipeline runs` lists runs"), "{missing}");
}

#[test]
fn runs_and_diff_report_what_changed() {
    let ctx = setup();
    ctx.run(&["run", "p.toml", "--set", "stages.note.params.value=v2"]).ok();
    let runs = ctx.run(&["runs"]).ok().stdout;
    assert_eq!(runs.lines().count(), 3, "{runs}");
    let diff = ctx.run(&["diff", "last~1", "last"]).ok().stdout;
    assert!(diff.contains("note.params.value  \"v1\"  ->  \"v2\""), "{diff}");
    assert!(!diff.contains("note.json"), "hashes only with --hashes:\n{diff}");
    let hashes = ctx.run(&["diff", "last~1", "last", "--hashes"]).ok().stdout;
    assert!(hashes.contains("note.json"), "{hashes}");
    assert!(!hashes.contains("prices.table"), "unchanged outputs are not listed:\n{hashes}");
    let same = ctx.run(&["diff", "last", "last"]).ok().stdout;
    assert!(same.contains("no differences"), "{same}");
}

/// A one-param change: the param once, then a metrics table with one column per run and the
/// delta, in natural order; `--only-changed` keeps the rows that differ, `--metrics` picks.
#[test]
fn diff_shows_a_metrics_table_with_deltas() {
    let ctx = TestContext::new();
    ctx.write("m.toml", MARKET_AND_NEWS);
    ctx.run(&["run", "m.toml", "--name", "one-day"]).ok();
    ctx.run(&["run", "m.toml", "--name", "two-days", "--set", "stages.market.params.days=2"]).ok();
    let diff = ctx.run(&["diff", "one-day", "two-days"]).ok().stdout;
    let lines: Vec<&str> = diff.lines().collect();
    assert!(lines.iter().any(|l| l.trim() == "market.params.days  1  ->  2"), "{diff}");
    let header = lines.iter().find(|l| l.trim_start().starts_with("metric ")).expect("a metrics header");
    assert_eq!(header.split_whitespace().collect::<Vec<_>>(), ["metric", "one-day", "two-days", "delta"], "{diff}");
    let rows = lines.iter().find(|l| l.trim_start().starts_with("market.rows")).expect("market.rows");
    assert_eq!(rows.split_whitespace().collect::<Vec<_>>(), ["market.rows", "1440", "->", "2880", "+1440"], "{diff}");
    assert!(lines.iter().any(|l| l.trim_start().starts_with("news.items")), "unchanged rows shown by default:\n{diff}");

    let changed = ctx.run(&["diff", "one-day", "two-days", "--only-changed"]).ok().stdout;
    assert!(changed.contains("market.rows"), "{changed}");
    assert!(!changed.contains("news.items"), "{changed}");
    let picked = ctx.run(&["diff", "one-day", "two-days", "--metrics", "news.*"]).ok().stdout;
    assert!(picked.contains("news.items") && !picked.contains("market.rows"), "{picked}");

    // Three runs: a column each; the delta is the last minus the first.
    ctx.run(&["run", "m.toml", "--name", "three-days", "--set", "stages.market.params.days=3"]).ok();
    let three = ctx.run(&["diff", "one-day", "two-days", "three-days", "--only-changed", "--json"]).ok().stdout;
    let three: serde_json::Value = serde_json::from_str(&three).unwrap();
    let row = three["metrics"].as_array().unwrap().iter().find(|r| r["key"] == "market.rows").unwrap();
    assert_eq!(row["values"], serde_json::json!([1440, 2880, 4320]));
    assert_eq!(row["delta"], 2880.0);
    assert_eq!(three["params"][0]["key"], "market.params.days", "{three:#}");
    // `runs --metrics` picks metric columns.
    let runs = ctx.run(&["runs", "--metrics", "market.rows"]).ok().stdout;
    assert!(runs.lines().next().unwrap().trim_end().ends_with("market.rows"), "{runs}");
    for (name, rows) in [("one-day", "1440"), ("two-days", "2880"), ("three-days", "4320")] {
        let line = runs.lines().find(|l| l.contains(name)).unwrap();
        assert!(line.trim_end().ends_with(rows), "{runs}");
    }
}

#[test]
fn diff_sorts_numbers_in_names_naturally() {
    let ctx = TestContext::new();
    ctx.write(
        "p.toml",
        r#"
[stages.a]
task = "value"
params = { value = "x" }
matrix = { delay_ms = [5, 15, 60] }
"#,
    );
    ctx.run(&["run", "p.toml"]).ok();
    ctx.run(&["run", "p.toml", "--set", "stages.a.params.value=y"]).ok();
    let diff = ctx.run(&["diff", "last~1", "last"]).ok().stdout;
    let at = |needle: &str| diff.find(needle).unwrap_or_else(|| panic!("{needle} in {diff}"));
    assert!(at("a[delay_ms=5]") < at("a[delay_ms=15]") && at("a[delay_ms=15]") < at("a[delay_ms=60]"), "{diff}");
}

/// `run --name/--note`: the name stands for the run in `show`, `diff` and `pin`; the record
/// keeps the note, the overrides and the code (tool version, git commit, dirty or not).
#[test]
fn named_runs_record_their_code_and_resolve_like_ids() {
    let ctx = TestContext::new();
    ctx.write("p.toml", PIPELINE);
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(["-c", "user.email=t@example.com", "-c", "user.name=t"])
            .args(args)
            .current_dir(ctx.path("."))
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let in_git = git(&["init", "-q"]) && git(&["add", "p.toml"]) && git(&["commit", "-q", "-m", "p"]);
    if !in_git {
        eprintln!("skipping the git part: `git` is not available here");
    }
    ctx.run(&["run", "p.toml", "--name", "baseline", "--note", "first try"]).ok();
    ctx.run(&["run", "p.toml", "--name", "v2", "--set", "stages.note.params.value=v2"]).ok();

    let runs = ctx.run(&["runs"]).ok().stdout;
    let header = runs.lines().next().unwrap();
    for column in ["run", "name", "status", "code", "overrides", "note"] {
        assert!(header.split_whitespace().any(|c| c == column), "{header}");
    }
    let baseline = runs.lines().find(|l| l.contains("baseline")).expect("a row for baseline");
    assert!(baseline.contains("first try"), "{runs}");
    let v2 = runs.lines().find(|l| l.contains(" v2 ")).expect("a row for v2");
    assert!(v2.contains("stages.note.params.value=v2"), "{runs}");

    let shown = ctx.run(&["show", "baseline"]).ok().stdout;
    assert!(shown.contains("name: baseline") && shown.contains("note: first try"), "{shown}");
    assert!(shown.contains(&format!("code: pipeline {}", env!("CARGO_PKG_VERSION"))), "{shown}");
    let record: serde_json::Value = serde_json::from_str(&ctx.run(&["show", "v2", "--json"]).ok().stdout).unwrap();
    assert_eq!(record["name"], "v2");
    let diff = ctx.run(&["diff", "baseline", "v2"]).ok().stdout;
    assert!(diff.contains("note.params.value  \"v1\"  ->  \"v2\""), "{diff}");
    ctx.run(&["pin", "baseline"]).ok();

    if in_git {
        let commit = record["code"]["git_commit"].as_str().expect("a commit in a git work tree").to_string();
        assert_eq!(commit.len(), 40);
        assert_eq!(record["code"]["git_dirty"], false);
        assert!(v2.contains(&commit[..10]), "{runs}");
        // A tracked file edited: the run says the work tree differed from the commit.
        ctx.write("p.toml", &PIPELINE.replace("rows = 100", "rows = 101"));
        ctx.run(&["run", "p.toml", "--name", "edited"]).ok();
        let shown = ctx.run(&["show", "edited"]).ok().stdout;
        assert!(shown.contains(&format!("git {commit} (with uncommitted changes)")), "{shown}");
        assert!(ctx.run(&["runs"]).ok().stdout.contains(&format!("{}+dirty", &commit[..10])));
    }

    let bad = ctx.run(&["run", "p.toml", "--name", "2nd"]).code(2).stderr;
    assert!(bad.contains("--name `2nd` cannot name a run") && bad.contains("hint:"), "{bad}");
    let clash = ctx.run(&["run", "p.toml", "--name", "note"]).code(2).stderr;
    assert!(clash.contains("also a stage of this pipeline"), "{clash}");
}

#[test]
fn gc_keeps_latest_results_and_pinned_runs() {
    let ctx = setup();
    let first = ctx.last_output_hashes();
    let first_id = ctx.last_run()["id"].as_str().unwrap().to_string();
    ctx.run(&["pin", &first_id]).ok();
    ctx.run(&["run", "p.toml", "--set", "stages.prices.params.seed=5"]).ok();
    ctx.run(&["run", "p.toml", "--set", "stages.prices.params.seed=6"]).ok();
    let dry = ctx.run(&["gc", "--keep-last", "1", "--dry-run"]).ok().stdout;
    assert!(dry.contains("would remove"), "{dry}");
    let gc = ctx.run(&["gc", "--keep-last", "1"]).ok().stdout;
    assert!(gc.contains("removed 3 objects"), "{gc}");
    // The pinned run's objects survive; the seed=5 run's are gone.
    let object = |hash: &str| ctx.store().join("objects").join(&hash[..2]).join(&hash[2..]);
    assert!(object(&first["prices.table"]).exists());
    ctx.run(&["verify"]).ok();
    // The latest state is still all hits.
    ctx.run(&["run", "p.toml", "--set", "stages.prices.params.seed=6"]).ok();
    assert!(ctx.last_outcomes().values().all(|o| o == "hit"));
    ctx.run(&["unpin", &first_id]).ok();
}

#[test]
fn dag_prints_text_dot_and_mermaid() {
    let ctx = TestContext::new();
    ctx.write("p.toml", PIPELINE);
    let text = ctx.run(&["dag", "p.toml"]).ok().stdout;
    assert!(text.contains("head (select) <- prices -> table:table"), "{text}");
    let dot = ctx.run(&["dag", "p.toml", "--format", "dot"]).ok().stdout;
    assert!(dot.starts_with("digraph \"inspect\""), "{dot}");
    assert!(dot.contains("n0 -> n1 [label=\"prices\"]"), "edges are labelled with the consumer's input: {dot}");
    let mermaid = ctx.run(&["dag", "p.toml", "--format", "mermaid"]).ok().stdout;
    assert!(mermaid.contains("n1 -->|head| n2"), "{mermaid}");
}

#[test]
fn tasks_lists_and_documents_kinds() {
    let ctx = TestContext::new();
    let list = ctx.run(&["tasks"]).ok().stdout;
    for kind in ["command", "read_table", "select", "synth_table", "value"] {
        assert!(list.contains(kind), "{list}");
    }
    let doc = ctx.run(&["tasks", "synth_table"]).ok().stdout;
    assert!(doc.contains("rows"), "{doc}");
    assert!(doc.contains("1000"), "defaults are shown:\n{doc}");
    assert!(doc.contains("Seed of the generator"), "docs are shown:\n{doc}");
    let err = ctx.run(&["tasks", "synth"]).code(2).stderr;
    assert!(err.contains("no task kind `synth`"), "{err}");
}

#[test]
fn commands_without_a_store_say_how_to_get_one() {
    let ctx = TestContext::new();
    let err = ctx.run(&["runs"]).code(2).stderr;
    assert!(err.contains("no pipeline store found"), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

/// docs/stages.md is generated; it must match the build.
#[test]
fn stage_reference_doc_is_up_to_date() {
    let ctx = TestContext::new();
    let generated = ctx.run(&["tasks", "--markdown"]).ok().stdout;
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/stages.md")).unwrap_or_default();
    assert!(
        generated == committed,
        "docs/stages.md is stale: run `cargo run --release -- tasks --markdown > docs/stages.md`"
    );
}

/// `export`: a stage's output written by extension and read back by polars, a partitioned
/// table as one file; `show` prints where each output's object lies.
#[test]
fn export_writes_outputs_that_polars_reads_back() {
    use polars::prelude::*;
    let ctx = TestContext::new();
    ctx.write(
        "m.toml",
        r#"
[stages.market]
task = "synth_market"
partition = "day"
params = { days = 2 }
"#,
    );
    ctx.run(&["run", "m.toml", "--name", "two-days"]).ok();
    let stored = ctx.table("market", "table");
    let out = ctx.run(&["export", "market", "out/m.parquet"]).ok().stdout;
    assert!(out.contains("exported market.table") && out.contains("2880 rows"), "{out}");
    let parquet = ParquetReader::new(std::fs::File::open(ctx.path("out/m.parquet")).unwrap()).finish().unwrap();
    assert!(parquet.equals(&stored), "the partitioned table exports as one Parquet file");
    ctx.run(&["export", "market.table", "out/m.csv", "--run", "two-days"]).ok();
    let csv = CsvReadOptions::default()
        .with_has_header(true)
        .try_into_reader_with_file_path(Some(ctx.path("out/m.csv")))
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(csv.height(), 2880);
    assert_eq!(csv.column("close").unwrap(), stored.column("close").unwrap(), "floats survive CSV exactly");
    ctx.run(&["export", "market", "out/m.json"]).ok();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ctx.path("out/m.json")).unwrap()).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2880);

    let bad = ctx.run(&["export", "market", "out/m.xlsx"]).code(2).stderr;
    assert!(bad.contains(".parquet, .csv, .json, .ndjson"), "{bad}");
    let missing = ctx.run(&["export", "market.nope", "out/m.csv"]).code(2).stderr;
    assert!(missing.contains("has no output `nope`") && missing.contains("table"), "{missing}");
    let shown = ctx.run(&["show", "market"]).ok().stdout;
    assert!(shown.contains("object: ") && shown.contains("objects"), "{shown}");
}

/// After a run with other params wrote over an export, `status` of the first configuration says
/// its export is not its result (the stage itself is fresh); a cached run rewrites it.
#[test]
fn status_reports_exports_written_by_another_configuration() {
    let ctx = TestContext::new();
    ctx.write(
        "p.toml",
        r#"
[stages.prices]
task = "synth_table"
params = { rows = 10, columns = 1, seed = 1 }
exports = { table = "out/prices.parquet" }
"#,
    );
    ctx.run(&["run", "p.toml"]).ok();
    let fresh = ctx.status("p.toml", &[]);
    assert!(fresh["stages"][0].get("stale_exports").is_none(), "{fresh:#}");
    ctx.run(&["run", "p.toml", "--set", "stages.prices.params.seed=2"]).ok();
    let status = ctx.status("p.toml", &[]);
    assert_eq!(status["stages"][0]["status"], "fresh");
    let stale = status["stages"][0]["stale_exports"].as_array().expect("a stale export");
    assert!(stale[0].as_str().unwrap().ends_with("out/prices.parquet"), "{status:#}");
    let text = ctx.run(&["status", "p.toml"]).ok().stdout;
    assert!(text.contains("is not this result") && text.contains("`pipeline run` rewrites it"), "{text}");
    ctx.run(&["run", "p.toml"]).ok();
    assert!(ctx.last_outcomes().values().all(|o| o == "hit"));
    assert!(ctx.status("p.toml", &[])["stages"][0].get("stale_exports").is_none());
    std::fs::remove_file(ctx.path("out/prices.parquet")).unwrap();
    assert!(ctx.status("p.toml", &[])["stages"][0].get("stale_exports").is_some(), "a deleted export is reported too");
}

/// `runs`, `diff` and `show` as a person reads them, with run ids, times, durations, hashes
/// and the workspace path redacted (and the padding that their widths move made single).
#[test]
fn runs_diff_and_show_print_as_snapshotted() {
    let ctx = TestContext::new();
    ctx.write("m.toml", MARKET_AND_NEWS);
    ctx.run(&["run", "m.toml", "--name", "one-day", "--note", "first try"]).ok();
    ctx.run(&["run", "m.toml", "--name", "two-days", "--set", "stages.market.params.days=2"]).ok();
    let workspace = regex_escape(&ctx.path("").display().to_string());
    let mut filters = vec![
        (r"\d{8}-\d{6}-\d{6}-[0-9a-f]{2}", "[run-id]"),
        (r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", "[time]"),
        (r"\b\d+(\.\d+)?(ms|s)\b", "[duration]"),
        (r"\b[0-9a-f]{12,64}\b", "[hash]"),
        (r"pipeline \d+\.\d+\.\d+", "pipeline [version]"),
        (workspace.as_str(), "[workspace]/"),
        (r"/objects/[0-9a-f]{2}/\[hash\]", "/objects/[hash]"),
        (r"size: \d+ bytes", "size: [n] bytes"),
    ];
    insta::with_settings!({ filters => filters.clone(), prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("diff", ctx.run(&["diff", "one-day", "two-days"]).ok().stdout);
        insta::assert_snapshot!("show_stage", ctx.run(&["show", "market", "--rows", "3"]).ok().stdout);
    });
    // Tables with a duration column: its width moves the padding.
    filters.push((r"(\S) {3,}", "$1  "));
    insta::with_settings!({ filters => filters, prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("runs", ctx.run(&["runs"]).ok().stdout);
        insta::assert_snapshot!("show_run", ctx.run(&["show", "two-days"]).ok().stdout);
    });
    // A reader that stops early (`| head`) ends the command quietly: no panic about a broken pipe.
    let piped = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("'{}' show market --rows 3000 | head -1", env!("CARGO_BIN_EXE_pipeline")))
        .current_dir(ctx.path(""))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&piped.stdout).starts_with("(from run "), "{piped:?}");
    assert!(piped.stderr.is_empty(), "{}", String::from_utf8_lossy(&piped.stderr));
}

fn regex_escape(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || c == '/' { c.to_string() } else { format!("\\{c}") }).collect()
}
