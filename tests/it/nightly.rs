//! Nightly refreshes: time-partitioned stages recompute only the periods whose inputs changed,
//! and the result is byte-identical to a run from scratch (docs/nightly.md).

use std::collections::BTreeMap;

use crate::support::TestContext;

const SYNTH: &str = r#"
[pipeline]
name = "nightly-synth"

[params]
days = 5

[stages.market]
task = "synth_market"
partition = "day"
params = { seed = 3, days = "${params.days}", start = "2024-01-01T00:00:00Z" }

[stages.news]
task = "synth_news"
partition = "day"
params = { seed = 3, days = "${params.days}", start = "2024-01-01T00:00:00Z" }

[stages.aligned]
task = "align_utc"
inputs = ["market"]
partition = "day"
params = { max_fill = "6h" }

[stages.clipped]
task = "clip_outliers"
inputs = ["aligned"]
partition = "day"
params = { window = 1440 }

[stages.labels]
task = "labels"
inputs = ["clipped"]
partition = "day"

[stages.features]
task = "features"
inputs = ["clipped"]
partition = "day"
params = { vpin_buckets_from = "previous_day" }

[stages.news_features]
task = "embed_news"
inputs = { news = "news", bars = "aligned" }
partition = "day"
"#;

const CSV: &str = r#"
[pipeline]
name = "nightly-csv"

[stages.bars]
task = "ingest_bars"
partition = "day"
params = { path = "data/bars.csv" }

[stages.aligned]
task = "align_utc"
inputs = ["bars"]
partition = "day"
params = { max_fill = "6h" }

[stages.clipped]
task = "clip_outliers"
inputs = ["aligned"]
partition = "day"
params = { window = 1440 }

[stages.labels]
task = "labels"
inputs = ["clipped"]
partition = "day"

[stages.features]
task = "features"
inputs = ["clipped"]
partition = "day"
params = { vpin_buckets_from = "previous_day" }
"#;

/// The periods each partitioned stage of the newest run computed: stage -> day numbers (of January).
fn ran_periods(ctx: &TestContext) -> BTreeMap<String, Vec<u32>> {
    let run = ctx.last_run();
    let mut out = BTreeMap::new();
    for stage in run["stages"].as_array().unwrap() {
        let Some(partitions) = stage["metrics"].get("partitions") else { continue };
        let days = partitions["ran_periods"]
            .as_array()
            .map(|labels| labels.iter().map(|l| l.as_str().unwrap()[8..10].parse().unwrap()).collect())
            .unwrap_or_default();
        out.insert(stage["name"].as_str().unwrap().to_string(), days);
    }
    out
}

/// The output hashes of the same pipeline run in a fresh store: the from-scratch answer.
fn from_scratch(ctx: &TestContext, file: &str, extra: &[&str]) -> BTreeMap<String, String> {
    let mut args = vec!["run", file, "--plain", "--store", "scratch-store"];
    args.extend_from_slice(extra);
    ctx.run(&args).ok();
    let run = ctx.run(&["show", "last", "--json", "--store", "scratch-store"]).ok();
    let run: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    std::fs::remove_dir_all(ctx.path("scratch-store")).unwrap();
    run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            let name = s["name"].as_str().unwrap().to_string();
            s["outputs"]
                .as_object()
                .unwrap()
                .iter()
                .map(move |(o, r)| (format!("{name}.{o}"), r["hash"].as_str().unwrap().to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One-minute bars for January `first..=last` (a deterministic walk), as CSV lines.
fn bar_lines(first: u32, last: u32) -> String {
    let mut out = String::new();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut price = 40_000.0f64;
    for day in 1..=last {
        for minute in 0..1440 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let step = ((state % 2001) as f64 - 1000.0) / 100.0;
            let volume =
                1.0 + (state >> 20) as f64 % 50.0 + if (state >> 40).is_multiple_of(500) { 5000.0 } else { 0.0 };
            let open = price;
            price += step;
            // An 8-hour outage on the 3rd: longer than max_fill, a hole in the grid.
            if day < first || (day == 3 && (120..600).contains(&minute)) {
                continue;
            }
            let (h, m) = (minute / 60, minute % 60);
            out.push_str(&format!(
                "2024-01-{day:02} {h:02}:{m:02}:00,{open:.2},{:.2},{:.2},{price:.2},{volume:.1}\n",
                open.max(price) + 1.0,
                open.min(price) - 1.0,
            ));
        }
    }
    out
}

#[test]
fn appending_a_synthetic_day_computes_one_new_day_and_matches_a_run_from_scratch() {
    let ctx = TestContext::new();
    ctx.write("n.toml", SYNTH);
    ctx.run(&["run", "n.toml", "--plain"]).ok();
    let ran = ran_periods(&ctx);
    assert_eq!(ran["aligned"], [1, 2, 3, 4, 5]);
    assert_eq!(ran["clipped"], [1, 2, 3, 4, 5]);

    // Nothing changed: one hit per stage, no partition looked at.
    ctx.run(&["run", "n.toml", "--plain"]).ok();
    assert!(ctx.last_outcomes().values().all(|o| o == "hit"), "{:?}", ctx.last_outcomes());

    // The new day as far as align: status says which partition of clip (and only that one) would run.
    ctx.run(&["run", "n.toml", "aligned", "--plain", "--set", "params.days=6"]).ok();
    let status = ctx.status("n.toml", &["--set", "params.days=6"]);
    let clipped = status["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "clipped").unwrap().clone();
    let partitions = clipped["reasons"].as_array().unwrap().iter().find(|r| r["reason"] == "partitions").unwrap();
    assert_eq!(partitions["run"], 1, "{clipped:#}");
    assert_eq!(partitions["total"], 6, "{clipped:#}");
    assert_eq!(partitions["periods"], serde_json::json!(["2024-01-06"]));
    assert_eq!(partitions["new"], serde_json::json!(["2024-01-06"]), "a day the last result did not have");
    let text = ctx.run(&["status", "n.toml", "--set", "params.days=6"]).ok();
    assert!(text.stdout.contains("1 of 6 partitions to compute: 2024-01-06 (new)"), "{}", text.stdout);

    ctx.run(&["run", "n.toml", "--plain", "--set", "params.days=6"]).ok();
    let ran = ran_periods(&ctx);
    // The source is split whole; align re-runs the day before the new one (its last minutes
    // could have been a gap the new day closes); clip sees an unchanged day 5 and runs day 6 only.
    assert_eq!(ran["aligned"], [5, 6]);
    assert_eq!(ran["clipped"], [6]);
    // Labels look 60 rows ahead: day 5's last hour becomes labellable.
    assert_eq!(ran["labels"], [5, 6]);
    assert_eq!(ran["features"], [6]);
    // News aggregates look back only: the new day alone.
    assert_eq!(ran["news_features"], [6]);
    assert_eq!(ctx.last_output_hashes(), from_scratch(&ctx, "n.toml", &["--set", "params.days=6"]));
    assert_eq!(ctx.table("clipped", "table").height(), 6 * 1440);

    let listing = ctx.run(&["show", "clipped", "--partitions"]).ok().stdout;
    assert!(listing.contains("clipped.table: 6 partitions by day of `timestamp`, 8640 rows"), "{listing}");
    assert!(listing.contains("2024-01-06  1440  2024-01-06 00:00  2024-01-06 23:59"), "{listing}");
    assert_eq!(listing.matches("computed").count(), 2, "the heading and day 6: {listing}");
    let json: serde_json::Value =
        serde_json::from_str(&ctx.run(&["show", "clipped", "--partitions", "--json"]).ok().stdout).unwrap();
    assert_eq!(json["table"]["partitions"].as_array().unwrap().len(), 6);
    let refused = ctx.run(&["show", "market", "--partitions"]).ok();
    assert!(refused.stdout.contains("6 partitions"), "{}", refused.stdout);

    // The leakage audit reads partitioned inputs and outputs like any table.
    for stage in ["features", "news_features", "clipped"] {
        let audit = ctx.run(&["audit", "leakage", "n.toml", stage, "--set", "params.days=6"]).ok();
        assert!(audit.stdout.contains("no look-ahead"), "{stage}: {}", audit.stdout);
    }

    // gc keeps every partition the latest run's indexes name: the same run is all hits after it,
    // and a day more still computes only that day.
    ctx.run(&["gc", "--keep-last", "1"]).ok();
    ctx.run(&["verify"]).ok();
    ctx.run(&["run", "n.toml", "--plain", "--set", "params.days=6"]).ok();
    assert!(ctx.last_outcomes().values().all(|o| o == "hit"), "{:?}", ctx.last_outcomes());
    ctx.run(&["run", "n.toml", "--plain", "--set", "params.days=7"]).ok();
    assert_eq!(ran_periods(&ctx)["features"], [7]);
}

#[test]
fn a_growing_file_and_a_late_correction_rerun_exactly_the_days_they_touch() {
    let ctx = TestContext::new();
    ctx.write("n.toml", CSV);
    let header = "timestamp,open,high,low,close,volume\n";
    ctx.write("data/bars.csv", &format!("{header}{}", bar_lines(1, 4)));
    ctx.run(&["run", "n.toml", "--plain"]).ok();
    let aligned = ctx.manifest("aligned");
    assert_eq!(aligned["metrics"]["unfilled_gaps"], 1, "{aligned:#}");

    // Yesterday's rows appended to the same file.
    ctx.write("data/bars.csv", &format!("{header}{}", bar_lines(1, 5)));
    ctx.run(&["run", "n.toml", "--plain"]).ok();
    let ran = ran_periods(&ctx);
    assert_eq!(ran["aligned"], [4, 5]);
    assert_eq!(ran["clipped"], [5]);
    assert_eq!(ran["labels"], [4, 5]);
    assert_eq!(ran["features"], [5]);
    assert_eq!(ctx.last_output_hashes(), from_scratch(&ctx, "n.toml", &[]));

    // A late correction of one row on January 2nd (a volume spike the clip must see).
    let mut lines: Vec<String> = bar_lines(1, 5).lines().map(str::to_string).collect();
    let row = lines.iter().position(|l| l.starts_with("2024-01-02 12:00:00")).unwrap();
    let mut fields: Vec<String> = lines[row].split(',').map(str::to_string).collect();
    fields[5] = "999999.0".into();
    lines[row] = fields.join(",");
    ctx.write("data/bars.csv", &format!("{header}{}\n", lines.join("\n")));
    // Once the source has read the correction, status says which days of align would run and why.
    ctx.run(&["run", "n.toml", "bars", "--plain"]).ok();
    let text = ctx.run(&["status", "n.toml"]).ok();
    assert!(
        text.stdout.contains(
            "3 of 5 partitions to compute: 2024-01-01 (inputs changed), 2024-01-02 (inputs changed), 2024-01-03 (inputs changed)"
        ),
        "{}",
        text.stdout
    );
    ctx.run(&["run", "n.toml", "--plain"]).ok();
    let ran = ran_periods(&ctx);
    // Align reaches 6h + 1 step each way: the 1st and 3rd read the 2nd. Clip's 1440-row window
    // reaches back 1440 rows: from the 3rd and, since the outage left the 3rd short of a day of
    // rows, from the 4th; nothing else.
    assert_eq!(ran["aligned"], [1, 2, 3]);
    assert_eq!(ran["clipped"], [2, 3, 4]);
    // Labels reach a day back (the volume window) and 60 rows ahead of the clipped days that
    // changed (the 2nd and 3rd): the 1st to the 4th.
    assert_eq!(ran["labels"], [1, 2, 3, 4]);
    // Features reach three days back (VPIN's buckets): the 2nd to the 5th.
    assert_eq!(ran["features"], [2, 3, 4, 5]);
    assert_eq!(ctx.last_output_hashes(), from_scratch(&ctx, "n.toml", &[]));
}

#[test]
fn partitioning_errors_are_located_and_say_what_to_do() {
    let ctx = TestContext::new();
    // align_utc without max_fill fills gaps of any length: no bounded history.
    ctx.write("a.toml", &SYNTH.replace("params = { max_fill = \"6h\" }", ""));
    let run = ctx.run(&["validate", "a.toml"]).code(2);
    assert!(run.stderr.contains("cannot be partitioned") && run.stderr.contains("max_fill"), "{}", run.stderr);
    assert!(run.stderr.contains("a.toml:"), "{}", run.stderr);

    // A partitioned stage reading an unpartitioned table.
    ctx.write("b.toml", &SYNTH.replacen("partition = \"day\"\n", "", 1));
    let run = ctx.run(&["validate", "b.toml"]).code(2);
    assert!(run.stderr.contains("its input `market` (from `market`) is not"), "{}", run.stderr);
    assert!(run.stderr.contains("add partition = \"day\" to stage `market`"), "{}", run.stderr);

    // Not a length.
    ctx.write("c.toml", &SYNTH.replacen("partition = \"day\"", "partition = \"daily\"", 1));
    let run = ctx.run(&["validate", "c.toml"]).code(2);
    assert!(run.stderr.contains("`partition = \"daily\"` is not a partition length"), "{}", run.stderr);
    assert!(run.stderr.contains("partition = \"day\""), "{}", run.stderr);

    // A stage whose rows depend on all earlier rows.
    ctx.write(
        "d.toml",
        &SYNTH.replace(
            "task = \"labels\"\ninputs = [\"clipped\"]\npartition = \"day\"",
            "task = \"labels\"\ninputs = [\"clipped\"]\npartition = \"day\"\nparams = { shuffle_within_days = 3 }",
        ),
    );
    let run = ctx.run(&["validate", "d.toml"]).code(2);
    assert!(
        run.stderr.contains("stage `labels` (labels) cannot be partitioned: shuffle_within_days"),
        "{}",
        run.stderr
    );

    // VPIN sized from the table's first day (the default) depends on where the table starts.
    ctx.write("e.toml", &SYNTH.replace("params = { vpin_buckets_from = \"previous_day\" }\n", ""));
    let run = ctx.run(&["validate", "e.toml"]).code(2);
    assert!(run.stderr.contains("stage `features` (features) cannot be partitioned"), "{}", run.stderr);
    assert!(run.stderr.contains("vpin_buckets_from = \"previous_day\""), "{}", run.stderr);
}

#[test]
fn a_file_landing_during_a_run_waits_for_the_next_run() {
    let ctx = TestContext::new();
    let header = "timestamp,open,high,low,close,volume\n";
    for day in 1..=4 {
        ctx.write(&format!("data/bars/2024-01-{day:02}.csv"), &format!("{header}{}", bar_lines(day, day)));
    }
    ctx.write("late/2024-01-05.csv", &format!("{header}{}", bar_lines(5, 5)));
    // `land` runs first (declared first, one job at a time) and drops the fifth day's file into
    // the folder that `bars` reads: after the plan fixed the files, before `bars` runs.
    ctx.write(
        "n.toml",
        r#"
[stages.land]
task = "command"
params = { cmd = ["sh", "-c", "cp {base}/late/2024-01-05.csv {base}/data/bars/ && echo landed > out.txt"], outputs = { out = "out.txt" } }

[stages.bars]
task = "ingest_bars"
partition = "day"
params = { path = "data/bars/*.csv" }

[stages.peek]
task = "command"
inputs = ["bars"]
params = { cmd = ["sh", "-c", "head -c 4 {in.bars} > magic.txt"], outputs = { magic = "magic.txt" } }
"#,
    );
    ctx.run(&["run", "n.toml", "--plain", "--jobs", "1"]).ok();
    assert!(ctx.path("data/bars/2024-01-05.csv").is_file(), "the file landed during the run");
    // An external program gets a partitioned table as one Parquet file.
    let magic = ctx.manifest("peek")["outputs"]["magic"]["hash"].as_str().unwrap().to_string();
    let magic = std::fs::read(ctx.store().join("objects").join(&magic[..2]).join(&magic[2..])).unwrap();
    assert_eq!(magic, b"PAR1");
    // (The 3rd has an 8-hour outage: 480 rows short.)
    assert_eq!(ctx.table("bars", "table").height(), 4 * 1440 - 480, "the run read the files it planned");
    let status = ctx.status("n.toml", &[]);
    let bars = status["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "bars").unwrap().clone();
    assert_eq!(bars["status"], "will_run", "{bars:#}");
    assert!(bars.to_string().contains("2024-01-05.csv"), "{bars:#}");
    ctx.run(&["run", "n.toml", "--plain"]).ok();
    assert_eq!(ctx.table("bars", "table").height(), 5 * 1440 - 480);
    assert_eq!(ctx.manifest("bars")["metrics"]["partitions"]["total"], 5);
}

#[test]
fn the_nightly_pipeline_adds_one_day_and_one_fold_and_equals_a_run_from_scratch() {
    let ctx = TestContext::new();
    std::fs::create_dir_all(ctx.path("pipelines/walk_forward")).unwrap();
    for file in ["nightly.toml", "walk_forward/study.toml"] {
        let from = concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/").to_string() + file;
        std::fs::copy(from, ctx.path(&format!("pipelines/{file}"))).unwrap();
    }
    std::fs::create_dir_all(ctx.path("pipelines/examples")).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/examples/trading_strategies_dynamic.json"),
        ctx.path("pipelines/examples/trading_strategies_dynamic.json"),
    )
    .unwrap();
    let small = ["--set", "params.first_test=2024-01-08", "--set", "params.train_window=7d"];
    let run = |until: &str| {
        let mut args = vec!["run", "pipelines/nightly.toml", "--plain", "--set"];
        let until = format!("params.until={until}");
        args.push(&until);
        args.extend_from_slice(&small);
        ctx.run(&args).ok();
    };
    run("2024-01-11");
    run("2024-01-12");
    let outcomes = ctx.last_outcomes();
    let ran: Vec<&str> =
        outcomes.iter().filter(|(name, o)| name.starts_with("train") && *o == "ran").map(|(n, _)| n.as_str()).collect();
    assert_eq!(ran, ["train[feature_set=price_only,fold=2024-01-11]", "train[feature_set=with_news,fold=2024-01-11]"]);
    // Older folds' windows read only their own days: untouched, they are hits (the fold before
    // the new one reads an hour into the day whose labels the new day completed, and re-cuts the
    // same rows).
    assert_eq!(outcomes["window[fold=2024-01-08]"], "hit");
    assert_eq!(outcomes["window[fold=2024-01-09]"], "hit");
    let periods = ran_periods(&ctx);
    assert_eq!(periods["features"], [12]);
    assert_eq!(periods["news_features"], [12]);
    assert_eq!(periods["clipped"], [12]);
    assert_eq!(periods["aligned"], [11, 12]);
    assert_eq!(periods["labels"], [11, 12]);
    let mut scratch = vec!["--set", "params.until=2024-01-12"];
    scratch.extend_from_slice(&small);
    assert_eq!(ctx.last_output_hashes(), from_scratch(&ctx, "pipelines/nightly.toml", &scratch));
}

/// A folder of daily files: each file is read once; a new file is the only one a run reads,
/// rows of one day in two files are stacked in path order, and the result is the from-scratch one.
#[test]
fn a_folder_of_daily_files_reads_only_the_new_file_and_matches_a_run_from_scratch() {
    let ctx = TestContext::new();
    let header = "timestamp,open,high,low,close,volume\n";
    let day_file = |day: u32| format!("{header}{}", bar_lines(day, day));
    for day in 1..=3 {
        ctx.write(&format!("data/bars/2024-01-{day:02}.csv"), &day_file(day));
    }
    // The 4th's file also holds the first minute of the 5th (a file cut at the wrong hour).
    let fifth = bar_lines(5, 5);
    let fifth_first = fifth.lines().next().unwrap().to_string();
    ctx.write("data/bars/2024-01-04.csv", &format!("{}{fifth_first}\n", day_file(4)));
    let pipeline = CSV.replace("data/bars.csv", "data/bars/*.csv");
    ctx.write("n.toml", &pipeline);
    ctx.run(&["run", "n.toml", "--plain"]).ok();
    let partitions = &ctx.manifest("bars")["metrics"]["partitions"];
    assert_eq!((partitions["files"].as_u64(), partitions["files_read"].as_u64()), (Some(4), Some(4)), "{partitions}");

    // The next night: the 5th's file (without the minute the 4th's file already has).
    let rest: Vec<&str> = fifth.lines().skip(1).collect();
    ctx.write("data/bars/2024-01-05.csv", &format!("{header}{}\n", rest.join("\n")));
    ctx.run(&["run", "n.toml", "--plain"]).ok();
    let partitions = &ctx.manifest("bars")["metrics"]["partitions"];
    assert_eq!(partitions["files_read"], 1, "{partitions}");
    assert_eq!(partitions["read"], serde_json::json!(["data/bars/2024-01-05.csv"]), "{partitions}");
    let bars = ctx.table("bars", "table");
    assert_eq!(bars.height(), 5 * 1440 - 480);
    let names: Vec<String> =
        bars.column("source_file").unwrap().str().unwrap().iter().map(|n| n.unwrap().to_string()).collect();
    let fifth_day = &names[4 * 1440 - 480..];
    assert_eq!(fifth_day[0], "2024-01-04.csv", "the 5th's first minute comes from the 4th's file, in path order");
    assert!(fifth_day[1..].iter().all(|n| n == "2024-01-05.csv"));
    let ran = ran_periods(&ctx);
    assert_eq!(ran["features"], [5], "{ran:?}");

    assert_eq!(ctx.last_output_hashes(), from_scratch(&ctx, "n.toml", &[]), "a nightly run equals a run from scratch");

    // `gc` keeps what each file made, so the night after it still reads only the new file.
    ctx.run(&["gc", "--keep-last", "1"]).ok();
    ctx.write("data/bars/2024-01-06.csv", &day_file(6));
    ctx.run(&["run", "n.toml", "--plain"]).ok();
    let partitions = &ctx.manifest("bars")["metrics"]["partitions"];
    assert_eq!(partitions["read"], serde_json::json!(["data/bars/2024-01-06.csv"]), "{partitions}");
    assert_eq!(ctx.table("bars", "table").height(), 6 * 1440 - 480);

    // A file whose columns differ is refused with both file names.
    ctx.write(
        "data/bars/2024-01-07.csv",
        &format!("timestamp,open,high,low,close,volume,trades\n{}", {
            bar_lines(7, 7).lines().map(|l| format!("{l},7\n")).collect::<String>()
        }),
    );
    let run = ctx.run(&["run", "n.toml", "--plain"]).code(1);
    assert!(
        run.stderr.contains("data/bars/2024-01-07.csv") && run.stderr.contains("data/bars/2024-01-01.csv"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("must agree"), "{}", run.stderr);
}
