//! Crashes, Ctrl-C and concurrent runs: the store stays consistent and nothing half-written is
//! ever taken as a result.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::TestContext;

const WORK: &str = r#"
[stages.big]
task = "synth_table"
params = { rows = 200000, columns = 6, seed = 1 }

[stages.big2]
task = "synth_table"
params = { rows = 150000, columns = 4, seed = 2 }

[stages.narrow]
task = "select"
inputs = ["big"]
params = { columns = ["timestamp", "c0", "c3"] }

[stages.narrow2]
task = "select"
inputs = ["big2"]
params = { columns = ["c1"] }

[stages.slow_a]
task = "value"
inputs = ["narrow"]
params = { value = "a", delay_ms = 60 }

[stages.slow_b]
task = "value"
inputs = ["narrow2"]
params = { value = "b", delay_ms = 90 }

[stages.script]
task = "command"
inputs = { a = "slow_a", b = "slow_b" }
params = { cmd = ["sh", "-c", "sleep 0.05; cat \"$0\" \"$1\" > joined.json", "{in.a}", "{in.b}"], outputs = { joined = "joined.json" } }

[stages.last]
task = "value"
inputs = ["script"]
params = { value = "end", delay_ms = 30 }
"#;

/// A deterministic sequence of delays (no randomness crate needed).
fn delays(n: usize) -> Vec<u64> {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            5 + state % 700
        })
        .collect()
}

#[test]
fn kill_9_at_random_moments_leaves_a_store_that_verifies_and_completes() {
    let reference = TestContext::new();
    reference.write("p.toml", WORK);
    reference.run(&["run", "p.toml"]).ok();
    let expected = reference.last_output_hashes();

    let ctx = TestContext::new();
    ctx.write("p.toml", WORK);
    for (round, delay) in delays(24).into_iter().enumerate() {
        let mut child = ctx
            .command(&["run", "p.toml", "--plain", "--force-all"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let verify = ctx.run(&["verify"]);
        assert_eq!(verify.code, 0, "round {round} (killed after {delay} ms): verify failed\n{}", verify.stdout);
        assert!(verify.stdout.contains("ok: the store is consistent"), "{}", verify.stdout);
        // Whatever the store calls fresh must be whole: a status never errors.
        ctx.run(&["status", "p.toml"]).ok();
    }
    let runs = ctx.run(&["runs", "--limit", "100"]).ok().stdout;
    assert!(runs.contains("killed"), "killed runs are listed as such:\n{runs}");
    ctx.run(&["run", "p.toml"]).ok();
    assert_eq!(ctx.last_output_hashes(), expected, "after the crashes the results equal a clean run's");
    ctx.run(&["verify"]).ok();
}

#[test]
fn ctrl_c_stops_running_stages_and_records_an_interrupted_run() {
    let ctx = TestContext::new();
    ctx.write(
        "p.toml",
        "[stages.quick]\ntask = \"value\"\nparams = { value = 1 }\n[stages.slow]\ntask = \"value\"\ninputs = [\"quick\"]\nparams = { value = 2, delay_ms = 20000 }\n[stages.after]\ntask = \"value\"\ninputs = [\"slow\"]\n",
    );
    let mut child =
        ctx.command(&["run", "p.toml", "--plain"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    // Wait until the slow stage has started (so the handler is installed and a stage is running).
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(n > 0, "pipeline ended before the slow stage started:\n{seen}");
        seen.push_str(&line);
        if line.contains("start") && line.contains("slow") {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let output = child.wait_with_output().unwrap();
    let output = std::process::Output { stderr: rest.into_bytes(), ..output };
    assert_eq!(output.status.code(), Some(130), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(started.elapsed() < Duration::from_secs(5), "the slow stage must stop promptly");
    let run = ctx.last_run();
    assert_eq!(run["status"], "interrupted");
    let outcomes = ctx.last_outcomes();
    assert_eq!(outcomes["quick"], "ran");
    assert_eq!(outcomes["slow"], "failed");
    assert_eq!(outcomes["after"], "skipped");
    ctx.run(&["verify"]).ok();
    // The next run picks up where this one stopped.
    ctx.run(&["run", "p.toml", "--set", "stages.slow.params.delay_ms=10"]).ok();
    let outcomes = ctx.last_outcomes();
    assert_eq!((outcomes["quick"].as_str(), outcomes["slow"].as_str()), ("hit", "ran"));
}

#[test]
fn concurrent_runs_on_one_store_compute_each_key_once() {
    let ctx = TestContext::new();
    // Each stage appends its name to counter.log when it actually computes.
    ctx.write(
        "count.sh",
        "echo \"$1\" >> \"$PIPELINE_BASE_DIR/counter.log\"\nsleep 0.3\necho \"{\\\"stage\\\": \\\"$1\\\"}\" > \"$2\"\n",
    );
    let mut toml = String::new();
    for (name, input) in
        [("s1", None), ("s2", None), ("s3", Some("s1")), ("s4", Some("s2")), ("s5", Some("s3")), ("s6", Some("s4"))]
    {
        toml.push_str(&format!("[stages.{name}]\ntask = \"command\"\n"));
        if let Some(input) = input {
            toml.push_str(&format!("inputs = [\"{input}\"]\n"));
        }
        toml.push_str(&format!(
            "params = {{ cmd = [\"sh\", \"count.sh\", \"{name}\", \"{{out.out}}\"], outputs = {{ out = \"out.json\" }}, deps = [\"count.sh\"] }}\n"
        ));
    }
    ctx.write("p.toml", &toml);
    let children: Vec<_> = (0..3)
        .map(|_| {
            ctx.command(&["run", "p.toml", "--plain", "--jobs", "2"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    let log = std::fs::read_to_string(ctx.path("counter.log")).unwrap();
    let mut lines: Vec<&str> = log.lines().collect();
    lines.sort();
    assert_eq!(lines, ["s1", "s2", "s3", "s4", "s5", "s6"], "each key computed exactly once");
    ctx.run(&["verify"]).ok();
    let runs = ctx.run(&["runs", "--json"]).ok().stdout;
    let runs: serde_json::Value = serde_json::from_str(&runs).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 3);
    assert!(runs.as_array().unwrap().iter().all(|r| r["status"] == "succeeded"));
}
