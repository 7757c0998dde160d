//! Market data stages end to end: ingest, align, clip; bad inputs; real data.

use crate::support::{TestContext, real_data};

fn column_f64(df: &polars::prelude::DataFrame, name: &str) -> Vec<f64> {
    df.column(name).unwrap().as_materialized_series().f64().unwrap().iter().map(|v| v.unwrap_or(f64::NAN)).collect()
}

const MESSY: &str = "open_time,open,high,low,close,volume
2023-03-01 00:02:00+00:00,10,11,9,10.5,3
2023-03-01 00:00:00+00:00,10,10,10,10,1
2023-03-01 00:01:00+00:00,10,10.2,9.9,10.1,2
2023-03-01 00:01:00+00:00,10,10.2,9.9,10.1,2
2023-03-01 00:06:00+00:00,11,11,11,11,4
";

fn pipeline(extra_align: &str) -> String {
    format!(
        "[stages.bars]\ntask = \"ingest_bars\"\nparams = {{ path = \"bars.csv\" }}\n\n[stages.aligned]\ntask = \"align_utc\"\ninputs = [\"bars\"]\n{extra_align}\n"
    )
}

#[test]
fn ingest_and_align_sort_dedupe_and_fill_the_grid() {
    let ctx = TestContext::new();
    ctx.write("bars.csv", MESSY);
    ctx.write("p.toml", &pipeline(""));
    ctx.run(&["run", "p.toml"]).ok();
    let ingest = ctx.manifest("bars");
    assert_eq!(ingest["metrics"]["rows"], 5);
    assert_eq!(ingest["metrics"]["columns_mapped"]["timestamp"], "open_time");
    let metrics = &ctx.manifest("aligned")["metrics"];
    assert_eq!(metrics["exact_duplicates_dropped"], 1, "{metrics:#}");
    assert_eq!(metrics["gaps"], 1);
    assert_eq!(metrics["filled_steps"], 3);
    assert_eq!(metrics["longest_gap_steps"], 3);
    let df = ctx.table("aligned", "table");
    assert_eq!(df.height(), 7, "00:00 .. 00:06");
    assert_eq!(column_f64(&df, "close"), [10.0, 10.1, 10.5, 10.5, 10.5, 10.5, 11.0]);
    assert_eq!(column_f64(&df, "volume"), [1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 4.0]);
    let filled: Vec<bool> = df.column("was_filled").unwrap().bool().unwrap().iter().map(|v| v.unwrap()).collect();
    assert_eq!(filled, [false, false, false, true, true, true, false]);
    assert!(df.column("source_row").is_err(), "provenance columns end at align");
}

#[test]
fn conflicting_duplicates_name_both_rows_unless_a_rule_is_declared() {
    let ctx = TestContext::new();
    ctx.write("bars.csv", &MESSY.replacen("00:01:00+00:00,10,10.2,9.9,10.1,2", "00:01:00+00:00,10,10.2,9.9,10.2,2", 1));
    ctx.write("p.toml", &pipeline(""));
    let err = ctx.run(&["run", "p.toml"]).code(1).stderr;
    assert!(err.contains("two rows at 2023-03-01 00:01:00 UTC disagree: bars.csv row 4 and bars.csv row 5"), "{err}");
    assert!(err.contains("on_conflict"), "{err}");
    ctx.write("p.toml", &pipeline("params = { on_conflict = \"last\" }"));
    ctx.run(&["run", "p.toml"]).ok();
    assert_eq!(ctx.manifest("aligned")["metrics"]["conflicting_duplicates"], 1);
    assert_eq!(column_f64(&ctx.table("aligned", "table"), "close")[1], 10.1, "the last row in file order wins");
}

#[test]
fn headerless_epoch_files_and_binance_klines_ingest() {
    let ctx = TestContext::new();
    // Kraken-like: epoch seconds, no header, a trade count.
    ctx.write("k.csv", "1672531200,16535.97,16535.97,16522.66,16522.66,0.0143,2\n1672531740,16513.41,16513.41,16513.41,16513.41,0.0004,1\n");
    // Binance kline without header, open time in ms, and another file in us (Binance's 2025 change).
    let kline = |t: &str| format!("{t},100,101,99,100.5,10,0,0,42,6,0,0\n");
    ctx.write("b/1.csv", &kline("1677628800000"));
    ctx.write("b/2.csv", &kline("1677628860000000"));
    ctx.write(
        "p.toml",
        r#"
[stages.kraken]
task = "ingest_bars"
params = { path = "k.csv", column_names = ["timestamp", "open", "high", "low", "close", "volume", "trades"] }

[stages.kraken_grid]
task = "align_utc"
inputs = ["kraken"]

[stages.binance]
task = "ingest_bars"
params = { path = "b/*.csv", layout = "binance_kline" }
"#,
    );
    ctx.run(&["run", "p.toml"]).ok();
    assert_eq!(ctx.manifest("kraken_grid")["metrics"]["rows_out"], 10);
    let binance = ctx.table("binance", "table");
    assert_eq!(binance.height(), 2);
    assert_eq!(column_f64(&binance, "taker_buy_volume"), [6.0, 6.0]);
    assert_eq!(column_f64(&binance, "trades"), [42.0, 42.0]);
    let ts =
        binance.column("timestamp").unwrap().as_materialized_series().to_physical_repr().i64().unwrap().get(1).unwrap();
    assert_eq!(ts, 1_677_628_860_000, "microseconds detected");
}

#[test]
fn json_and_ndjson_ingest() {
    let ctx = TestContext::new();
    ctx.write(
        "a.ndjson",
        "{\"t\": \"2023-03-01T00:00:00Z\", \"open\": 1, \"high\": 2, \"low\": 0.5, \"close\": 1.5, \"volume\": 3}\n",
    );
    ctx.write("b.json", "[{\"t\": 1677628860, \"open\": 1, \"high\": 2, \"low\": 0.5, \"close\": 1.5, \"volume\": 3}]");
    ctx.write(
        "p.toml",
        "[stages.a]\ntask = \"ingest_bars\"\nparams = { path = \"a.ndjson\", columns = { timestamp = \"t\" } }\n[stages.b]\ntask = \"ingest_bars\"\nparams = { path = \"b.json\", columns = { timestamp = \"t\" } }\n",
    );
    ctx.run(&["run", "p.toml"]).ok();
    assert_eq!(ctx.table("a", "table").height(), 1);
    assert_eq!(ctx.table("b", "table").height(), 1);
}

/// Runs a one-stage ingest of `csv` and returns stderr (asserting failure).
fn ingest_error(csv: &str, params: &str) -> String {
    let ctx = TestContext::new();
    ctx.write("bars.csv", csv);
    ctx.write(
        "p.toml",
        &format!("[stages.bars]\ntask = \"ingest_bars\"\nparams = {{ path = \"bars.csv\"{params} }}\n"),
    );
    let run = ctx.run(&["run", "p.toml"]);
    assert_ne!(run.code, 0, "expected a failure\n{}", run.stderr);
    run.stderr
}

#[test]
fn malformed_inputs_give_located_errors() {
    let err = ingest_error("time,open,high,low,close\n2023-03-01 00:00:00,1,1,1,1\n", "");
    assert!(err.contains("bars.csv: no column for `volume` (columns: time, open, high, low, close)"), "{err}");
    assert!(err.contains("hint: map it with params.columns"), "{err}");
    let err = ingest_error(
        "time,open,high,low,close,volume\n2023-03-01 00:00:00,1,1,1,1,1\n2023-03-01 00:01:00,1,x1,1,1,1\n",
        "",
    );
    assert!(err.contains("bars.csv: row 3, column `high`: `x1` is not a number"), "{err}");
    let err = ingest_error(
        "time,open,high,low,close,volume\n2023-03-01 00:00:00,1,1,1,1,1\n2023-13-01 00:01:00,1,1,1,1,1\n",
        "",
    );
    assert!(err.contains("bars.csv: row 3, column `time`: `2023-13-01 00:01:00` is not a timestamp"), "{err}");
    let err = ingest_error("", "");
    assert!(err.contains("bars.csv: the file is empty"), "{err}");
    let err = ingest_error("time,open,high,low,close,volume\n", "");
    assert!(err.contains("bars.csv: no rows"), "{err}");
    let err = ingest_error(
        "time,open,high,low,close,volume\n2023-03-01 00:00:00+00:00,1,1,1,1,1\n",
        ", timezone = \"Europe/Berlin\"",
    );
    assert!(err.contains("row 2, column `time`"), "{err}");
    assert!(err.contains("zone declaration looks wrong"), "{err}");
    // A zone name that does not exist is refused before anything runs, at its place in the file.
    let err = ingest_error("x\n", ", timezone = \"Europe/Berln\"");
    assert!(err.contains("p.toml:3:"), "{err}");
    assert!(err.contains("not an IANA time zone name"), "{err}");
}

#[test]
fn clip_outliers_uses_only_past_rows_and_counts_what_it_clips() {
    let ctx = TestContext::new();
    let mut csv = String::from("time,open,high,low,close,volume\n");
    for i in 0..200 {
        let volume = if i == 150 { 10_000.0 } else { 10.0 + (i % 7) as f64 };
        csv.push_str(&format!("{},1,1,1,1,{volume}\n", 1_677_628_800 + i * 60));
    }
    ctx.write("bars.csv", &csv);
    ctx.write(
        "p.toml",
        "[stages.bars]\ntask = \"ingest_bars\"\nparams = { path = \"bars.csv\" }\n[stages.clipped]\ntask = \"clip_outliers\"\ninputs = [\"bars\"]\nparams = { window = 100, min_periods = 20 }\n",
    );
    ctx.run(&["run", "p.toml"]).ok();
    let metrics = &ctx.manifest("clipped")["metrics"];
    assert_eq!(metrics["clipped"]["volume"]["high"], 1, "{metrics:#}");
    let full = column_f64(&ctx.table("clipped", "table"), "volume");
    assert!(full[150] < 100.0, "the spike is clipped: {}", full[150]);
    // Truncating the future changes nothing in the past.
    let truncated: String = csv.lines().take(1 + 160).map(|l| format!("{l}\n")).collect();
    ctx.write("bars.csv", &truncated);
    ctx.run(&["run", "p.toml"]).ok();
    let part = column_f64(&ctx.table("clipped", "table"), "volume");
    assert_eq!(&full[..160], &part[..]);
}

#[test]
fn real_btc_bars_ingest_and_align() {
    let Some(data) = real_data() else { return };
    let ctx = TestContext::new();
    ctx.write(
        "p.toml",
        &format!(
            r#"
[stages.binance]
task = "ingest_bars"
params = {{ path = "{0}/binance_us/BTCUSDT_1m_20230301_20230321.csv" }}

[stages.binance_grid]
task = "align_utc"
inputs = ["binance"]

[stages.kraken]
task = "ingest_bars"
params = {{ path = "{0}/kraken/XBTUSDC_1m_2023Q1_headerless.csv", column_names = ["timestamp", "open", "high", "low", "close", "volume", "trades"], timestamp_unit = "s" }}

[stages.kraken_grid]
task = "align_utc"
inputs = ["kraken"]
"#,
            data.display()
        ),
    );
    ctx.run(&["run", "p.toml"]).ok();
    let binance = &ctx.manifest("binance_grid")["metrics"];
    assert_eq!(binance["rows_in"], 30_240, "{binance:#}");
    assert_eq!(binance["rows_out"], 30_240);
    assert_eq!(binance["filled_steps"], 0);
    assert_eq!(binance["exact_duplicates_dropped"], 0);
    let kraken = &ctx.manifest("kraken_grid")["metrics"];
    assert_eq!(kraken["rows_in"], 56_717, "{kraken:#}");
    assert_eq!(kraken["rows_out"], 90 * 1440, "2023-01-01 00:00 .. 2023-03-31 23:59");
    assert_eq!(kraken["gaps"], 26_746, "as the data README counts them");
    assert_eq!(kraken["filled_steps"], 90 * 1440 - 56_717);
}

#[test]
fn clipping_keeps_taker_volume_a_part_of_volume() {
    let ctx = TestContext::new();
    ctx.write(
        "p.toml",
        "[stages.market]\ntask = \"synth_market\"\nparams = { days = 10 }\n[stages.clipped]\ntask = \"clip_outliers\"\ninputs = [\"market\"]\nparams = { k = 1.0 }\n",
    );
    ctx.run(&["run", "p.toml"]).ok();
    let df = ctx.table("clipped", "table");
    let volume = column_f64(&df, "volume");
    let taker = column_f64(&df, "taker_buy_volume");
    assert!(volume.iter().zip(&taker).all(|(v, t)| t <= v), "taker buy volume above volume after clipping");
    assert!(ctx.manifest("clipped")["metrics"]["clipped"]["volume"]["high"].as_u64().unwrap() > 0);
}
