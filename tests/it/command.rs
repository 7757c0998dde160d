//! The `command` stage: external programs with placeholders, declared outputs, deps.

use crate::support::TestContext;

const PIPELINE: &str = r#"
[stages.numbers]
task = "command"
params = { cmd = ["sh", "script.sh", "{out.numbers}", "{params.count}"], outputs = { numbers = "numbers.json" }, deps = ["script.sh"], count = 3 }

[stages.copy]
task = "command"
inputs = { src = "numbers.numbers" }
params = { cmd = ["cp", "{in.src}", "copied.json"], outputs = { copied = "copied.json" } }
"#;

fn setup() -> TestContext {
    let ctx = TestContext::new();
    ctx.write("p.toml", PIPELINE);
    ctx.write("script.sh", "printf '{\"n\": %s}\\n' \"$2\" > \"$1\"\n");
    ctx
}

#[test]
fn runs_programs_and_collects_outputs() {
    let ctx = setup();
    ctx.run(&["run", "p.toml"]).ok();
    let show = ctx.run(&["show", "copy"]).ok().stdout;
    assert!(show.contains("{\"n\": 3}"), "{show}");
    // Editing the script (a dep) re-runs the stage.
    ctx.write("script.sh", "printf '{\"n\": %s, \"v\": 2}\\n' \"$2\" > \"$1\"\n");
    let status = ctx.status("p.toml", &[]);
    assert_eq!(status["stages"][0]["reasons"][0]["reason"], "file_changed", "{status:#}");
    ctx.run(&["run", "p.toml"]).ok();
    assert_eq!(ctx.last_outcomes()["numbers"], "ran");
    assert_eq!(ctx.last_outcomes()["copy"], "ran");
}

#[test]
fn failure_shows_the_stderr_tail_and_skips_dependents() {
    let ctx = setup();
    ctx.write("script.sh", "echo 'something broke: bad input' >&2\nexit 3\n");
    let run = ctx.run(&["run", "p.toml", "--plain"]).code(1);
    assert!(run.stderr.contains("error: stage `numbers` failed"), "{}", run.stderr);
    assert!(run.stderr.contains("exited with exit status: 3"), "{}", run.stderr);
    assert!(run.stderr.contains("something broke: bad input"), "{}", run.stderr);
    let outcomes = ctx.last_outcomes();
    assert_eq!(outcomes["numbers"], "failed");
    assert_eq!(outcomes["copy"], "skipped");
    assert_eq!(ctx.last_run()["status"], "failed");
}

#[test]
fn missing_output_is_a_clear_failure() {
    let ctx = setup();
    ctx.write("script.sh", "true\n");
    let run = ctx.run(&["run", "p.toml"]).code(1);
    assert!(run.stderr.contains("did not write output `numbers`"), "{}", run.stderr);
    // Nothing was cached for the failed key: fixing the script makes it run.
    ctx.write("script.sh", "printf '{\"n\": %s}\\n' \"$2\" > \"$1\"\n");
    ctx.run(&["run", "p.toml"]).ok();
}

#[test]
fn keep_going_finishes_independent_branches() {
    let ctx = TestContext::new();
    ctx.write(
        "p.toml",
        "[stages.bad]\ntask = \"command\"\nparams = { cmd = [\"false\"] }\n[stages.after_bad]\ntask = \"value\"\ninputs = [\"bad\"]\n[stages.good]\ntask = \"value\"\nparams = { value = 1, delay_ms = 200 }\n",
    );
    // `bad` declares no output, so `after_bad` cannot name one: use a real output instead.
    ctx.write(
        "p.toml",
        "[stages.bad]\ntask = \"command\"\nparams = { cmd = [\"false\"], outputs = { x = \"x.json\" } }\n[stages.after_bad]\ntask = \"value\"\ninputs = [\"bad\"]\n[stages.good]\ntask = \"value\"\nparams = { value = 1, delay_ms = 200 }\n[stages.after_good]\ntask = \"value\"\ninputs = [\"good\"]\n",
    );
    ctx.run(&["run", "p.toml", "--keep-going", "--jobs", "1"]).code(1);
    let outcomes = ctx.last_outcomes();
    assert_eq!(outcomes["bad"], "failed");
    assert_eq!(outcomes["after_bad"], "skipped");
    assert_eq!(outcomes["good"], "ran");
    assert_eq!(outcomes["after_good"], "ran");
}

#[test]
fn bad_placeholders_are_refused_before_running() {
    let ctx = TestContext::new();
    ctx.write("p.toml", "[stages.a]\ntask = \"command\"\nparams = { cmd = [\"echo\", \"{params.lr}\"] }\n");
    let err = ctx.run(&["validate", "p.toml"]).code(2).stderr;
    assert!(err.contains("`{params.lr}` has no value"), "{err}");
    ctx.write("p.toml", "[stages.a]\ntask = \"command\"\nparams = { cmd = [\"echo\", \"{in.x}\"] }\n");
    let err = ctx.run(&["validate", "p.toml"]).code(2).stderr;
    assert!(err.contains("`{in.x}` names no input"), "{err}");
    ctx.write("p.toml", "[stages.a]\ntask = \"command\"\nparams = { cmd = [\"echo\"], lr = 1 }\n");
    let err = ctx.run(&["validate", "p.toml"]).code(2).stderr;
    assert!(err.contains("unknown field `lr`"), "{err}");
}

#[test]
fn an_input_file_changed_while_the_stage_runs_is_never_cached() {
    let ctx = TestContext::new();
    ctx.write("data.txt", "one\n");
    ctx.write(
        "p.toml",
        "[stages.slow]\ntask = \"command\"\nparams = { cmd = [\"sh\", \"-c\", \"sleep 0.6; cat \\\"$0\\\" > out.txt\", \"data.txt\"], outputs = { out = \"out.txt\" }, deps = [\"data.txt\"] }\n",
    );
    let child = ctx.command(&["run", "p.toml", "--plain"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(250));
    ctx.write("data.txt", "two\n");
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("input file(s) changed while the run was using them: data.txt"), "{stderr}");
    // Put the old bytes back: nothing was cached for them, so the stage runs.
    ctx.write("data.txt", "one\n");
    ctx.run(&["run", "p.toml"]).ok();
    assert_eq!(ctx.last_outcomes()["slow"], "ran");
}
