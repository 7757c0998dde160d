//! Bad pipeline files: every problem is reported with file, line and column, nothing runs, and
//! the exit code is 2.

use crate::support::TestContext;

/// Writes `p.toml`, validates it, returns stderr (asserting exit code 2).
fn invalid(text: &str) -> String {
    let ctx = TestContext::new();
    ctx.write("p.toml", text);
    let run = ctx.run(&["validate", "p.toml"]).code(2);
    assert!(!ctx.store().exists(), "validate must not create a store");
    run.stderr
}

#[test]
fn unknown_task_is_located_with_a_suggestion() {
    let err = invalid("[stages.a]\ntask = \"synth_tabel\"\n");
    assert!(err.contains("unknown task `synth_tabel` in stage `a`"), "{err}");
    assert!(err.contains("p.toml:2:8"), "{err}");
    assert!(err.contains("did you mean `synth_table`?"), "{err}");
}

#[test]
fn unknown_param_is_located_with_a_suggestion() {
    let err = invalid("[stages.a]\ntask = \"synth_table\"\nparams = { rows = 10, colums = 3 }\n");
    assert!(err.contains("invalid param `colums`"), "{err}");
    assert!(err.contains("p.toml:3:23"), "{err}");
    assert!(err.contains("did you mean `columns`?"), "{err}");
}

#[test]
fn mistyped_param_is_located() {
    let err = invalid("[stages.a]\ntask = \"synth_table\"\n\n[stages.a.params]\nrows = \"many\"\n");
    assert!(err.contains("invalid param `rows`"), "{err}");
    assert!(err.contains("invalid type: string \"many\", expected a whole number >= 0"), "{err}");
    assert!(err.contains("p.toml:5:1"), "{err}");
}

#[test]
fn dangling_input_is_located() {
    let err = invalid("[stages.a]\ntask = \"value\"\n[stages.b]\ntask = \"value\"\ninputs = [\"aa\"]\n");
    assert!(err.contains("takes input from `aa`, which is not a stage"), "{err}");
    assert!(err.contains("p.toml:5:11"), "{err}");
    assert!(err.contains("did you mean `a`?"), "{err}");
}

#[test]
fn unknown_output_is_located() {
    let err = invalid("[stages.a]\ntask = \"value\"\n[stages.b]\ntask = \"value\"\ninputs = [\"a.table\"]\n");
    assert!(err.contains("stage `a` has no output `table` (its outputs: json)"), "{err}");
}

#[test]
fn duplicate_stage_across_an_include_names_both_places() {
    let ctx = TestContext::new();
    ctx.write("common.toml", "[stages.prices]\ntask = \"synth_table\"\n");
    ctx.write("p.toml", "include = [\"common.toml\"]\n\n[stages.prices]\ntask = \"value\"\n");
    let err = ctx.run(&["validate", "p.toml"]).code(2).stderr;
    assert!(err.contains("duplicate stage `prices`"), "{err}");
    assert!(err.contains("p.toml:3:9"), "{err}");
    assert!(err.contains("common.toml:1:9"), "{err}");
}

#[test]
fn cycle_names_its_members() {
    let err = invalid(
        "[stages.a]\ntask = \"value\"\ninputs = [\"c\"]\n[stages.b]\ntask = \"value\"\ninputs = [\"a\"]\n[stages.c]\ntask = \"value\"\ninputs = [\"b\"]\n[stages.ok]\ntask = \"value\"\n",
    );
    assert!(err.contains("cycle between stages: a -> b -> c -> a"), "{err}");
    assert!(err.contains("p.toml:1:9"), "{err}");
    assert!(!err.contains("`ok`"), "{err}");
}

/// Every arrow printed is an edge: `b` feeds both `a` and `c`, and `c` feeds `b`, so a walk
/// a -> b -> c could not close back to `a`; the shortest cycle through `a` is a -> b -> a.
#[test]
fn cycle_path_follows_real_edges() {
    let err = invalid(
        "[stages.a]\ntask = \"value\"\ninputs = [\"b\"]\n[stages.b]\ntask = \"value\"\ninputs = [\"a\", \"c\"]\n[stages.c]\ntask = \"value\"\ninputs = [\"b\"]\n",
    );
    assert!(err.contains("cycle between stages: a -> b -> a"), "{err}");
}

#[test]
fn self_loop_is_a_cycle() {
    let err = invalid("[stages.a]\ntask = \"value\"\ninputs = [\"a\"]\n");
    assert!(err.contains("cycle between stages: a -> a"), "{err}");
}

#[test]
fn matrix_too_large_is_located() {
    let err = invalid(
        "[stages.a]\ntask = \"value\"\nmatrix = { value = [1,2,3,4,5,6,7,8,9], delay_ms = [1,2,3,4,5,6,7,8] }\n",
    );
    assert!(err.contains("expands to 72 nodes, more than the limit of 64"), "{err}");
    assert!(err.contains("p.toml:3:12"), "{err}");
    assert!(err.contains("max_matrix"), "{err}");
}

#[test]
fn invalid_toml_syntax_is_located() {
    let err = invalid("[stages.a]\ntask = \"value\"\nparams = { value = }\n");
    assert!(err.contains("invalid TOML"), "{err}");
    assert!(err.contains("p.toml:3:"), "{err}");
}

#[test]
fn unknown_keys_and_shared_params_are_located() {
    let err = invalid(
        "[stages.a]\ntask = \"value\"\ninput = [\"x\"]\n[stages.b]\ntask = \"synth_table\"\ndescripton = \"x\"\n[params]\nrows = 3\n",
    );
    assert!(err.contains("unknown key `input` in stage `a`"), "{err}");
    assert!(err.contains("did you mean `inputs`?"), "{err}");
    assert!(err.contains("unknown key `descripton` in stage `b`"), "{err}");
    assert!(err.contains("2 problems found"), "{err}");
    let err =
        invalid("[stages.b]\ntask = \"synth_table\"\nparams = { rows = \"${params.row}\" }\n[params]\nrows = 3\n");
    assert!(err.contains("`${params.row}` names no shared param in [params]; did you mean `rows`?"), "{err}");
    assert!(err.contains("p.toml:3:1"), "{err}");
}

#[test]
fn bad_override_is_reported() {
    let ctx = TestContext::new();
    ctx.write("p.toml", "[stages.a]\ntask = \"value\"\n");
    let err = ctx.run(&["validate", "p.toml", "--set", "stages.b.params.value=1"]).code(2).stderr;
    assert!(err.contains("`--set` names stage `b`, which this pipeline does not have"), "{err}");
    assert!(err.contains("did you mean `a`?"), "{err}");
    let err = ctx.run(&["validate", "p.toml", "--set", "stages.a.params.valeu=1"]).code(2).stderr;
    assert!(err.contains("invalid param `valeu`"), "{err}");
    assert!(err.contains("--set:1:"), "{err}");
}

#[test]
fn missing_pipeline_file_and_missing_input_file_say_what_to_do() {
    let ctx = TestContext::new();
    let err = ctx.run(&["run", "nope.toml"]).code(2).stderr;
    assert!(err.contains("cannot read pipeline file nope.toml"), "{err}");
    ctx.write("p.toml", "[stages.a]\ntask = \"read_table\"\nparams = { path = \"data/missing.csv\" }\n");
    let err = ctx.run(&["run", "p.toml"]).code(1).stderr;
    assert!(err.contains("stage `a`: input file"), "{err}");
    assert!(err.contains("missing.csv"), "{err}");
    assert!(err.contains("hint: paths are relative to the pipeline file"), "{err}");
}

#[test]
fn valid_file_validates() {
    let ctx = TestContext::new();
    ctx.write("p.toml", "[stages.a]\ntask = \"value\"\nmatrix = { value = [1, 2] }\n");
    let out = ctx.run(&["validate", "p.toml"]).ok().stdout;
    assert!(out.contains("1 stages, 2 nodes"), "{out}");
}

#[test]
fn matrix_mismatch_and_matrix_exports_are_refused() {
    let err = invalid(
        "[stages.m]\ntask = \"value\"\nmatrix = { value = [1, 2] }\n[stages.c]\ntask = \"value\"\ninputs = [\"m\"]\nmatrix = { value = [3] }\n",
    );
    assert!(err.contains("no node of stage `m` matches `c[value=3]`"), "{err}");
    let err =
        invalid("[stages.m]\ntask = \"value\"\nmatrix = { value = [1, 2] }\nexports = { json = \"out/x.json\" }\n");
    assert!(err.contains("has a matrix, so all its nodes would export to the same path"), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "one error per place, not one per node:\n{err}");
}

#[test]
fn typos_in_overrides_and_exports_are_refused() {
    let ctx = TestContext::new();
    ctx.write(
        "p.toml",
        "[params]\nrows = 1\n[stages.a]\ntask = \"value\"\nexports = { json = { path = \"x\", mod = \"symlink\" } }\n",
    );
    let err = ctx.run(&["validate", "p.toml", "--set", "params.row=2"]).code(2).stderr;
    assert!(err.contains("`--set` names shared param `row`, which [params] does not define"), "{err}");
    assert!(err.contains("did you mean `rows`?"), "{err}");
    assert!(err.contains("unknown key `mod` in an export"), "{err}");
}

#[test]
fn a_file_included_twice_is_read_once() {
    let ctx = TestContext::new();
    ctx.write("base.toml", "[stages.prices]\ntask = \"synth_table\"\n");
    ctx.write("a.toml", "include = [\"base.toml\"]\n");
    ctx.write("b.toml", "include = [\"base.toml\"]\n");
    ctx.write("p.toml", "include = [\"a.toml\", \"b.toml\"]\n[stages.x]\ntask = \"select\"\ninputs = [\"prices\"]\nparams = { columns = [\"c0\"] }\n");
    ctx.run(&["validate", "p.toml"]).ok();
    ctx.write("loop.toml", "include = [\"loop2.toml\"]\n");
    ctx.write("loop2.toml", "include = [\"loop.toml\"]\n");
    let err = ctx.run(&["validate", "loop.toml"]).code(2).stderr;
    assert!(err.contains("include cycle"), "{err}");
}

#[test]
fn matrix_values_that_print_alike_and_escaping_outputs_are_refused() {
    let err = invalid("[stages.a]\ntask = \"value\"\nmatrix = { value = [1, \"1\"] }\n");
    assert!(err.contains("gives two nodes named `a[value=1]`"), "{err}");
    let err =
        invalid("[stages.a]\ntask = \"command\"\nparams = { cmd = [\"true\"], outputs = { x = \"/tmp/keep.txt\" } }\n");
    assert!(err.contains("must be a file name inside the command's working directory"), "{err}");
    let err =
        invalid("[stages.a]\ntask = \"command\"\nparams = { cmd = [\"true\"], outputs = { x = \"../x.txt\" } }\n");
    assert!(err.contains("no `..`"), "{err}");
}

#[test]
fn set_on_a_matrix_axis_is_refused_not_silently_ignored() {
    let ctx = TestContext::new();
    ctx.write("p.toml", "[stages.a]\ntask = \"value\"\nmatrix = { value = [1, 2] }\n");
    let err = ctx.run(&["validate", "p.toml", "--set", "stages.a.params.value=3"]).code(2).stderr;
    assert!(err.contains("`--set` sets `value`, which is a matrix axis of stage `a`"), "{err}");
}

/// Every bad param of every stage in one pass, each once; a stage whose params failed adds no
/// second error to its consumers (no "no node of stage ... matches" in a file with no matrix).
#[test]
fn every_bad_param_is_reported_once_without_cascades() {
    let err = invalid(
        "[stages.market]\ntask = \"synth_market\"\nparams = { dayz = 5, seed = \"x\" }\n\n[stages.aligned]\ntask = \"align_utc\"\ninputs = [\"market\"]\nparams = { on_conflict = \"newest\" }\n\n[stages.features]\ntask = \"features\"\ninputs = [\"aligned\"]\n",
    );
    assert!(err.contains("invalid param `dayz`"), "{err}");
    assert!(err.contains("did you mean `days`?"), "{err}");
    assert!(err.contains("invalid param `seed`"), "{err}");
    assert!(err.contains("expected a whole number >= 0"), "{err}");
    assert!(err.contains("invalid param `on_conflict`"), "{err}");
    assert!(!err.contains("no node of stage"), "{err}");
    assert!(err.contains("3 problems found"), "{err}");
    assert!(!err.contains("\nin `"), "the path is said once: {err}");
}

/// The caret sits on the bad element of a list, and the type is said in words.
#[test]
fn a_bad_list_element_is_pointed_at() {
    let err = invalid("[stages.t]\ntask = \"labels\"\nparams = { horizons = [1, -4] }\n");
    assert!(err.contains("invalid param `horizons[1]`"), "{err}");
    assert!(err.contains("p.toml:3:27"), "{err}");
    assert!(err.contains("a whole number of bars >= 1"), "{err}");
}
