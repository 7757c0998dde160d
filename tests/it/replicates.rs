//! Replicates: `[pipeline] replicates = { seed = [...] }` runs a study once per seed, and a
//! `replicates = "pool"` stage takes every seed's result.

use crate::support::TestContext;

const REPLICATED: &str = r#"
[pipeline]
replicates = { seed = [1, 2, 3] }

[params]
seed = 1

[stages.prices]
task = "synth_table"
params = { rows = 50, columns = 1, seed = "${params.seed}" }

[stages.head]
task = "select"
inputs = ["prices"]
params = { columns = ["timestamp", "c0"], head = 5 }

[stages.heads]
task = "select"
inputs = ["prices"]
params = { columns = ["timestamp", "c0"] }
matrix = { head = [3, 4] }

[stages.both]
task = "command"
inputs = { h = "heads" }
params = { cmd = ["sh", "-c", "cat {in.h[head=3]} {in.h[head=4]} > b.bin"], outputs = { b = "b.bin" } }

[stages.pooled]
task = "command"
inputs = { head = "head" }
replicates = "pool"
params = { cmd = ["sh", "-c", "ls {in.head[seed=1]} {in.head[seed=2]} {in.head[seed=3]} > n.txt"], outputs = { n = "n.txt" } }
"#;

/// A stage reading the swept param runs once per seed, and so does every stage downstream
/// (`head` has no seed of its own); the pool is one node with every seed's input. Seed 1's
/// nodes are the plain pipeline's (the same keys: a run without replicates made them fresh),
/// and a replicate runs alone as a target.
#[test]
fn replicates_run_the_study_per_seed_and_a_pool_takes_them_all() {
    let ctx = TestContext::new();
    let plain = REPLICATED.replace("replicates = { seed = [1, 2, 3] }", "").replace(
        "[stages.pooled]\ntask = \"command\"\ninputs = { head = \"head\" }\nreplicates = \"pool\"\nparams = { cmd = [\"sh\", \"-c\", \"ls {in.head[seed=1]} {in.head[seed=2]} {in.head[seed=3]} > n.txt\"], outputs = { n = \"n.txt\" } }\n",
        "",
    );
    ctx.write("plain.toml", &plain);
    ctx.write("r.toml", REPLICATED);
    ctx.run(&["run", "plain.toml"]).ok();
    let dag = ctx.run(&["dag", "r.toml"]).ok().stdout;
    for node in ["prices[seed=1] (synth_table)", "head[seed=3] (select) <- prices=prices[seed=3]"] {
        assert!(dag.contains(node), "{node}: {dag}");
    }
    assert!(dag.contains("pooled (command) <- head=head[seed=1]; head=head[seed=2]; head=head[seed=3]"), "{dag}");
    let status = ctx.status("r.toml", &[]);
    let of = |name: &str| {
        status["stages"].as_array().unwrap().iter().find(|s| s["stage"] == name).unwrap()["status"].clone()
    };
    assert_eq!(of("prices[seed=1]"), "fresh", "seed 1 is the plain pipeline's node: {status:#}");
    // A replicated stage gathering a matrix names its inputs without the seed: `{in.h[head=3]}`
    // works in every replicate, and seed 1 keeps the plain pipeline's key.
    assert_eq!(of("both[seed=1]"), "fresh", "{status:#}");
    assert_eq!(of("prices[seed=2]"), "will_run");

    ctx.run(&["run", "r.toml", "head[seed=2]"]).ok();
    let ran: Vec<String> = ctx.last_outcomes().into_iter().filter(|(_, o)| o == "ran").map(|(n, _)| n).collect();
    assert_eq!(ran, ["head[seed=2]", "prices[seed=2]"], "a replicate runs alone as a target");
    ctx.run(&["run", "r.toml"]).ok();
    assert_eq!(ctx.last_outcomes().len(), 16, "3 x (prices, head, 2 heads, both) + the pool");
    let seeds: Vec<i64> = ["prices[seed=1]", "prices[seed=2]", "prices[seed=3]"]
        .iter()
        .map(|n| ctx.manifest(n)["material"]["params"]["seed"].as_i64().unwrap())
        .collect();
    assert_eq!(seeds, [1, 2, 3], "each replicate sees the swept param at its value");
    let a = ctx.table("head[seed=1]", "table");
    let b = ctx.table("head[seed=2]", "table");
    assert!(!a.equals(&b), "different seeds, different data");
}

/// Every misuse is refused before anything runs, at its place in the file.
#[test]
fn replicate_mistakes_are_located() {
    let ctx = TestContext::new();
    let refused = |name: &str, text: &str, extra: &[&str]| -> String {
        ctx.write(name, text);
        let mut args = vec!["validate", name];
        args.extend_from_slice(extra);
        ctx.run(&args).code(2).stderr
    };
    let set = refused("a.toml", REPLICATED, &["--set", "params.seed=4"]);
    assert!(set.contains("`--set` sets `params.seed`, which the replicates sweep"), "{set}");
    let undeclared = refused("b.toml", &REPLICATED.replace("[params]\nseed = 1", "[params]\nother = 1"), &[]);
    assert!(undeclared.contains("replicates sweep `params.seed`, which [params] does not declare"), "{undeclared}");
    assert!(undeclared.contains("b.toml:3:"), "located at the declaration: {undeclared}");
    let reads = refused(
        "c.toml",
        &REPLICATED.replace("outputs = { n = \"n.txt\" } }", "outputs = { n = \"n.txt\" }, s = \"${params.seed}\" }"),
        &[],
    );
    assert!(reads.contains("stage `pooled` pools every replicate, so it cannot read `params.seed`"), "{reads}");
    let nothing = refused("d.toml", &REPLICATED.replace("seed = \"${params.seed}\"", "seed = 7"), &[]);
    assert!(nothing.contains("no stage reads `${params.seed}`"), "{nothing}");
    let no_sweep = refused("e.toml", &REPLICATED.replace("replicates = { seed = [1, 2, 3] }", ""), &[]);
    assert!(no_sweep.contains("stage `pooled` pools replicates, but the pipeline has none"), "{no_sweep}");
    let bad_word = refused("f.toml", &REPLICATED.replace("replicates = \"pool\"", "replicates = \"merge\""), &[]);
    assert!(bad_word.contains("`replicates = \"merge\"` is not a way to take replicates"), "{bad_word}");
    let export = refused(
        "g.toml",
        &REPLICATED.replace("head = 5 }", "head = 5 }\nexports = { table = \"out/h.parquet\" }"),
        &[],
    );
    assert!(export.contains("stage `head` runs once per replicate, so every replicate would export"), "{export}");
    let one = refused("h.toml", &REPLICATED.replace("seed = [1, 2, 3]", "seed = [1]"), &[]);
    assert!(one.contains("over 1 value: pooling needs at least 2"), "{one}");
    let axis = refused("i.toml", &REPLICATED.replace("matrix = { head = [3, 4] }", "matrix = { seed = [3, 4] }"), &[]);
    assert!(axis.contains("stage `heads` has a matrix axis `seed`, which the replicates sweep"), "{axis}");
}

/// Stage 1 over three seeds: the pooled table has a row per model and label with each seed
/// counted, the headline states the robustness, and `runs` shows the pooled counts.
#[test]
fn stage1_replicates_pool_the_ablation_over_seeds() {
    let ctx = TestContext::new();
    crate::support::shipped(&ctx, "stage1_replicates.toml");
    let file = ctx.path("pipelines/stage1_replicates.toml");
    let three = std::fs::read_to_string(&file).unwrap().replace("seed = [1, 2, 3, 4, 5]", "seed = [1, 2, 3]");
    std::fs::write(&file, three).unwrap();
    let run = ctx.run(&["run", "pipelines/stage1_replicates.toml", "--set", "params.days=30"]).ok();
    assert!(
        run.stdout.contains("Seed robustness over 3 seeds (with_news vs price_only, test split)"),
        "{}",
        run.stdout
    );
    let table = ctx.table("robustness", "table");
    assert_eq!(table.height(), 6, "2 models x 3 labels");
    let seeds = table.column("seeds").unwrap().f64().unwrap();
    assert!(seeds.iter().all(|s| s == Some(3.0)));
    let share = table.column("share_above_zero").unwrap().f64().unwrap();
    assert!(share.iter().all(|s| s.is_some_and(|s| (0.0..=1.0).contains(&s))));
    let runs = ctx.run(&["runs"]).ok().stdout;
    assert!(runs.lines().next().unwrap().contains("robustness.pooled_above_zero"), "{runs}");
}
