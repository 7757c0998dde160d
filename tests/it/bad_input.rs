//! Bad input never becomes a believable number: one small broken file per kind of problem, each
//! giving a located error (file, row, column, value) or the documented drop/null counts; time
//! formats, column names and bar times that real files use; grids other than one minute.

use crate::support::TestContext;

const GOOD: &str = "timestamp,open,high,low,close,volume
2023-03-01 00:00:00,10,11,9,10.5,3
2023-03-01 00:01:00,10.5,11,10,10.8,2
2023-03-01 00:02:00,10.8,11.2,10.6,11,4
2023-03-01 00:03:00,11,11.1,10.9,11,1
";

/// GOOD with line `line` (1-based, header = 1) replaced.
fn broken(line: usize, text: &str) -> String {
    let mut lines: Vec<&str> = GOOD.lines().collect();
    lines[line - 1] = text;
    lines.join("\n") + "\n"
}

fn ingest(policy: &str) -> String {
    format!(
        "[stages.bars]\ntask = \"ingest_bars\"\nparams = {{ path = \"bars.csv\", bad_rows = \"{policy}\" }}\n\n\
         [stages.aligned]\ntask = \"align_utc\"\ninputs = [\"bars\"]\n\n\
         [stages.features]\ntask = \"features\"\ninputs = [\"aligned\"]\nparams = {{ return_windows = [1], rv_windows = [2], atr_window = 2, volume_window = 2, slope_window = 2 }}\n\n\
         [stages.targets]\ntask = \"labels\"\ninputs = [\"aligned\"]\nparams = {{ horizons = [1], volume_window = 2 }}\n"
    )
}

/// Every float of a table is finite or null.
fn assert_finite(df: &polars::prelude::DataFrame, what: &str) {
    for column in df.columns() {
        if column.dtype().is_float() {
            let series = column.as_materialized_series().cast(&polars::prelude::DataType::Float64).unwrap();
            for (row, v) in series.f64().unwrap().iter().enumerate() {
                assert!(v.is_none_or(|x| x.is_finite()), "{what}: {} row {row} is {v:?}", column.name());
            }
        }
    }
}

/// (broken line 3, the column, the value as reported, the reason key)
const CLASSES: &[(&str, &str, &str, &str)] = &[
    ("2023-03-01 00:01:00,10.5,11,10,NaN,2", "close", "NaN", "non_finite"),
    ("2023-03-01 00:01:00,10.5,11,10,inf,2", "close", "inf", "non_finite"),
    ("2023-03-01 00:01:00,0,11,10,10.8,2", "open", "0", "non_positive_price"),
    ("2023-03-01 00:01:00,10.5,11,-10,10.8,2", "low", "-10", "non_positive_price"),
    ("2023-03-01 00:01:00,10.5,10.6,10,10.8,2", "high", "10.6", "high_below_open_or_close"),
    ("2023-03-01 00:01:00,10.5,11,10.7,10.8,2", "low", "10.7", "low_above_open_or_close"),
    ("2023-03-01 00:01:00,10.5,11,10,10.8,-2", "volume", "-2", "negative_value"),
    ("2023-03-01 00:01:00,10.5,11", "low", "", "missing_value"),
    ("1970-01-01 00:01:00,10.5,11,10,10.8,2", "timestamp", "1970-01-01T00:01:00+00:00", "time_out_of_range"),
];

#[test]
fn each_kind_of_bad_row_is_located_under_error() {
    for (line, column, value, reason) in CLASSES {
        let ctx = TestContext::new();
        ctx.write("bars.csv", &broken(3, line));
        ctx.write("p.toml", &ingest("error"));
        let err = ctx.run(&["run", "p.toml"]).code(1).stderr;
        let expected = format!("bars.csv: row 3, column `{column}`: `{value}`");
        assert!(err.contains(&expected), "{reason}: wanted `{expected}` in\n{err}");
        assert!(err.contains("bad_rows"), "{reason}: the hint names the policy\n{err}");
        ctx.run(&["verify"]).ok();
    }
}

#[test]
fn drop_counts_each_kind_and_nothing_bad_flows_on() {
    for (line, _, _, reason) in CLASSES {
        let ctx = TestContext::new();
        ctx.write("bars.csv", &broken(3, line));
        ctx.write("p.toml", &ingest("drop"));
        let run = ctx.run(&["run", "p.toml"]).ok();
        assert!(run.stderr.contains(&format!("warning: bars: dropped 1 row ({reason} 1)")), "{reason}\n{}", run.stderr);
        let metrics = &ctx.manifest("bars")["metrics"];
        assert_eq!(metrics["rows_dropped"][*reason], 1, "{reason}: {metrics:#}");
        assert_eq!(metrics["rows"], 3, "{reason}: 4 rows, 1 dropped");
        assert_finite(&ctx.table("aligned", "table"), reason);
        assert_finite(&ctx.table("features", "table"), reason);
        assert_finite(&ctx.table("targets", "table"), reason);
        ctx.run(&["verify"]).ok();
    }
}

#[test]
fn null_keeps_the_row_nulls_the_field_and_labels_stay_null() {
    let ctx = TestContext::new();
    ctx.write("bars.csv", &broken(3, "2023-03-01 00:01:00,10.5,11,10,NaN,2"));
    ctx.write("p.toml", &ingest("null"));
    let run = ctx.run(&["run", "p.toml"]).ok();
    assert!(run.stderr.contains("nulled 1 value (non_finite 1)"), "{}", run.stderr);
    assert_eq!(ctx.manifest("bars")["metrics"]["values_nulled"]["non_finite"], 1);
    let bars = ctx.table("bars", "table");
    assert_eq!(bars.height(), 4, "the row is kept");
    assert!(bars.column("close").unwrap().get(1).unwrap().is_null());
    let labels = ctx.table("targets", "table");
    assert_finite(&labels, "labels");
    // The return into and out of the null close is unknown: no direction is made up.
    for row in [0, 1] {
        assert!(labels.column("label_ret_1").unwrap().get(row).unwrap().is_null(), "row {row}");
        assert!(labels.column("label_dir_1").unwrap().get(row).unwrap().is_null(), "row {row}");
    }
    assert_finite(&ctx.table("features", "table"), "features");
    ctx.run(&["verify"]).ok();
}

#[test]
fn day_first_timestamps_read_with_a_format_and_the_error_says_which_format() {
    let ctx = TestContext::new();
    let file = "Gmt time,Open,High,Low,Close,Volume
01.01.2017 22:00:00.000,1.0520,1.0530,1.0510,1.0525,100
01.01.2017 23:00:00.000,1.0525,1.0540,1.0520,1.0535,120
13.01.2017 00:00:00.000,1.0535,1.0550,1.0530,1.0545,90
";
    ctx.write("fx.csv", file);
    ctx.write(
        "p.toml",
        "[stages.bars]\ntask = \"ingest_bars\"\nparams = { path = \"fx.csv\", columns = { timestamp = \"Gmt time\" } }\n",
    );
    let err = ctx.run(&["run", "p.toml"]).code(1).stderr;
    assert!(err.contains("fx.csv: row 2, column `Gmt time`: `01.01.2017 22:00:00.000`"), "{err}");
    assert!(err.contains("day-first"), "{err}");
    assert!(err.contains("timestamp_format = \"%d.%m.%Y %H:%M:%S%.f\""), "{err}");
    ctx.write(
        "p.toml",
        "[stages.bars]\ntask = \"ingest_bars\"\nparams = { path = \"fx.csv\", columns = { timestamp = \"Gmt time\" }, timestamp_format = \"%d.%m.%Y %H:%M:%S%.3f\" }\n",
    );
    let run = ctx.run(&["run", "p.toml"]).ok();
    // Open/High/... matched ignoring case, and the run says so.
    assert!(run.stderr.contains("columns matched ignoring case"), "{}", run.stderr);
    let df = ctx.table("bars", "table");
    let ts = df.column("timestamp").unwrap().as_materialized_series().to_physical_repr().into_owned();
    let ts: Vec<i64> = ts.i64().unwrap().into_no_null_iter().collect();
    assert_eq!(ts, [1_483_308_000_000, 1_483_311_600_000, 1_484_265_600_000]);
}

#[test]
fn a_header_read_as_data_is_named_as_such() {
    let ctx = TestContext::new();
    ctx.write("bars.csv", GOOD);
    ctx.write(
        "p.toml",
        "[stages.bars]\ntask = \"ingest_bars\"\nparams = { path = \"bars.csv\", has_header = false, column_names = [\"timestamp\", \"open\", \"high\", \"low\", \"close\", \"volume\"] }\n",
    );
    let err = ctx.run(&["run", "p.toml"]).code(1).stderr;
    assert!(err.contains("row 1, column `timestamp`: `timestamp`"), "{err}");
    assert!(err.contains("header row read as data"), "{err}");
}

#[test]
fn an_unnamed_index_column_is_mapped_by_position() {
    let ctx = TestContext::new();
    // What pandas' `df.to_csv()` writes for a frame indexed by time.
    let file = GOOD.replacen("timestamp,", ",", 1);
    ctx.write("bars.csv", &file);
    ctx.write("p.toml", "[stages.bars]\ntask = \"ingest_bars\"\nparams = { path = \"bars.csv\" }\n");
    let err = ctx.run(&["run", "p.toml"]).code(1).stderr;
    assert!(err.contains("column 1 has no name"), "{err}");
    assert!(err.contains("timestamp = \"#1\""), "{err}");
    ctx.write(
        "p.toml",
        "[stages.bars]\ntask = \"ingest_bars\"\nparams = { path = \"bars.csv\", columns = { timestamp = \"#1\" } }\n",
    );
    ctx.run(&["run", "p.toml"]).ok();
    assert_eq!(ctx.manifest("bars")["metrics"]["rows"], 4);
}

#[test]
fn a_misspelled_column_gets_a_did_you_mean() {
    let ctx = TestContext::new();
    ctx.write("bars.csv", &GOOD.replacen("close", "clsoe", 1));
    ctx.write("p.toml", "[stages.bars]\ntask = \"ingest_bars\"\nparams = { path = \"bars.csv\" }\n");
    let err = ctx.run(&["run", "p.toml"]).code(1).stderr;
    assert!(err.contains("no column for `close`"), "{err}");
    assert!(err.contains("did you mean `clsoe`?"), "{err}");
}

#[test]
fn ingest_refuses_inputs_it_cannot_use() {
    let ctx = TestContext::new();
    ctx.write("bars.csv", GOOD);
    ctx.write(
        "p.toml",
        "[stages.raw]\ntask = \"synth_table\"\n\n[stages.bars]\ntask = \"ingest_bars\"\ninputs = [\"raw\"]\nparams = { path = \"bars.csv\" }\n",
    );
    let err = ctx.run(&["validate", "p.toml"]).code(2).stderr;
    assert!(err.contains("`ingest_bars` takes no inputs"), "{err}");
}

/// Hourly bars stamped at their close: each is moved to its open, so the bar stamped 01:00
/// (which covers 00:00-01:00) sits at 00:00 and is known at 01:00, never earlier.
#[test]
fn close_stamped_bars_are_placed_at_their_open_and_pass_the_audit() {
    let ctx = TestContext::new();
    let mut file = String::from("time,open,high,low,close,volume\n");
    let mut price = 100.0f64;
    for hour in 1..=400 {
        let open = price;
        price *= 1.0 + 0.003 * ((hour * 7919 % 13) as f64 - 6.0) / 6.0;
        let (hi, lo) = (open.max(price) * 1.001, open.min(price) * 0.999);
        let t = 1_677_628_800 + hour * 3600;
        file.push_str(&format!("{t},{open:.4},{hi:.4},{lo:.4},{price:.4},{}\n", 10 + hour % 7));
    }
    ctx.write("hourly.csv", &file);
    let pipeline = |bar_time: &str| {
        format!(
            "[stages.bars]\ntask = \"ingest_bars\"\nparams = {{ path = \"hourly.csv\", bar_time = \"{bar_time}\", bar_length = \"1h\" }}\n\n\
             [stages.aligned]\ntask = \"align_utc\"\ninputs = [\"bars\"]\nparams = {{ step = \"1h\" }}\n\n\
             [stages.features]\ntask = \"features\"\ninputs = [\"aligned\"]\nparams = {{ return_windows = [1, \"4h\"], rv_windows = [\"6h\"], volume_window = \"12h\", vpin_buckets_per_day = 50 }}\n\n\
             [stages.targets]\ntask = \"labels\"\ninputs = [\"aligned\"]\nparams = {{ horizons = [1, \"4h\"] }}\n"
        )
    };
    ctx.write("p.toml", &pipeline("close"));
    ctx.run(&["run", "p.toml"]).ok();
    let bars = ctx.table("bars", "table");
    let first = bars.column("timestamp").unwrap().as_materialized_series().to_physical_repr().into_owned();
    assert_eq!(first.i64().unwrap().get(0), Some(1_677_628_800_000), "stamped 01:00, opens 00:00");
    // Names say which unit: bars or hours; 4h on an hourly grid is 4 rows.
    let labels = ctx.table("targets", "table");
    for name in ["label_dir_1", "label_dir_4h", "label_ret_4h"] {
        assert!(labels.column(name).is_ok(), "{name}: {:?}", labels.get_column_names());
    }
    let ret4 = labels.column("label_ret_4h").unwrap().f64().unwrap().clone();
    let close: Vec<f64> =
        ctx.table("aligned", "table").column("close").unwrap().f64().unwrap().into_no_null_iter().collect();
    assert!((ret4.get(10).unwrap() - (close[14] / close[10]).ln()).abs() < 1e-12);
    let features = ctx.table("features", "table");
    for name in ["ret_1", "ret_4h", "rv_6h", "volume_z_12h"] {
        assert!(features.column(name).is_ok(), "{name}: {:?}", features.get_column_names());
    }
    let sources = &ctx.manifest("features")["metrics"]["sources"];
    assert!(sources["grid"].as_str().unwrap().contains("1h bars"), "{sources:#}");
    assert!(sources["vpin_buckets"].as_str().unwrap().contains("24 per day"), "{sources:#}");
    let audit = ctx.run(&["audit", "leakage", "p.toml", "features"]).ok();
    assert!(audit.stdout.contains("no look-ahead"), "{}", audit.stdout);
}

/// A Binance kline file carries `close_time`: declaring its open stamps as closes (which would
/// look ahead by a whole bar) is caught.
#[test]
fn a_mis_declared_bar_time_is_caught_by_close_time() {
    let ctx = TestContext::new();
    let mut file = String::new();
    for minute in 0..5i64 {
        let open = 1_677_628_800_000 + minute * 60_000;
        file.push_str(&format!("{open},10,11,9,10.5,3,{},31.5,7,1.5,15.75,0\n", open + 59_999));
    }
    ctx.write("klines.csv", &file);
    let pipeline = |extra: &str| {
        format!(
            "[stages.bars]\ntask = \"ingest_bars\"\nparams = {{ path = \"klines.csv\", layout = \"binance_kline\"{extra} }}\n"
        )
    };
    ctx.write("p.toml", &pipeline(", bar_time = \"close\", bar_length = \"1m\""));
    let err = ctx.run(&["run", "p.toml"]).code(1).stderr;
    assert!(err.contains("klines.csv: row 1: column `close_time`"), "{err}");
    assert!(err.contains("bar_time = \"open\""), "{err}");
    ctx.write("p.toml", &pipeline(", bar_length = \"1m\""));
    ctx.run(&["run", "p.toml"]).ok();
    assert_eq!(ctx.manifest("bars")["metrics"]["bar_time_checked_against"], "close_time");
}

/// Monthly bars dated by their last day: read as opens they would look ahead by a month, so that
/// is refused; declared as closes they land on month starts, and a calendar-month grid keeps
/// them one per slot.
#[test]
fn month_end_dates_are_closes_and_months_are_calendar_months() {
    let ctx = TestContext::new();
    let file = "date,open,high,low,close,volume
2012-01-31,10,12,9,11,100
2012-02-29,11,13,10,12,100
2012-03-31,12,13,11,11.5,100
2012-04-30,11.5,12,10,10.5,100
";
    ctx.write("monthly.csv", file);
    let pipeline = |extra: &str, step: &str| {
        format!(
            "[stages.bars]\ntask = \"ingest_bars\"\nparams = {{ path = \"monthly.csv\"{extra} }}\n\n\
             [stages.aligned]\ntask = \"align_utc\"\ninputs = [\"bars\"]\nparams = {{ {step} }}\n"
        )
    };
    ctx.write("p.toml", &pipeline("", "step = \"1mo\""));
    let err = ctx.run(&["run", "p.toml"]).code(1).stderr;
    assert!(err.contains("last day of its month"), "{err}");
    assert!(err.contains("bar_time = \"close\""), "{err}");
    ctx.write("p.toml", &pipeline(", bar_time = \"close\", bar_length = \"1mo\"", "step_seconds = 2678400"));
    let err = ctx.run(&["validate", "p.toml"]).code(2).stderr;
    assert!(err.contains("31 days is not a month"), "{err}");
    ctx.write("p.toml", &pipeline(", bar_time = \"close\", bar_length = \"1mo\"", "step = \"1mo\""));
    ctx.run(&["run", "p.toml"]).ok();
    let df = ctx.table("aligned", "table");
    let ts = df.column("timestamp").unwrap().as_materialized_series().to_physical_repr().into_owned();
    let days: Vec<String> = ts
        .i64()
        .unwrap()
        .into_no_null_iter()
        .map(|ms| chrono::DateTime::from_timestamp_millis(ms).unwrap().format("%Y-%m-%d").to_string())
        .collect();
    assert_eq!(days, ["2012-01-01", "2012-02-01", "2012-03-01", "2012-04-01"]);
    assert_eq!(ctx.manifest("aligned")["metrics"]["rows_merged_into_a_step"], 0);
}

/// Date-only daily bars: `open` takes the start of the day, `close` its end, so both place the
/// bar of 1 March at 1 March 00:00; the audit passes on them.
#[test]
fn date_only_daily_bars_follow_the_declared_meaning() {
    let ctx = TestContext::new();
    let mut file = String::from("date,open,high,low,close,volume\n");
    let mut price = 100.0f64;
    for day in 0..60 {
        let date = chrono::NaiveDate::from_ymd_opt(2023, 3, 1).unwrap() + chrono::Days::new(day);
        let open = price;
        price *= 1.0 + 0.01 * ((day * 31 % 9) as f64 - 4.0) / 4.0;
        file.push_str(&format!(
            "{date},{open:.3},{:.3},{:.3},{price:.3},{}\n",
            open.max(price) + 1.0,
            open.min(price) - 1.0,
            50 + day
        ));
    }
    ctx.write("daily.csv", &file);
    for (extra, name) in [("", "open"), (", bar_time = \"close\", bar_length = \"1d\"", "close")] {
        ctx.write(
            "p.toml",
            &format!(
                "[stages.bars]\ntask = \"ingest_bars\"\nparams = {{ path = \"daily.csv\"{extra} }}\n\n\
                 [stages.aligned]\ntask = \"align_utc\"\ninputs = [\"bars\"]\nparams = {{ step = \"1d\" }}\n\n\
                 [stages.features]\ntask = \"features\"\ninputs = [\"aligned\"]\nparams = {{ return_windows = [1, 5], rv_windows = [5], volume_window = 5, funding_window = 5, vpin_buckets_per_day = 2 }}\n"
            ),
        );
        ctx.run(&["run", "p.toml"]).ok();
        let ts = ctx
            .table("bars", "table")
            .column("timestamp")
            .unwrap()
            .as_materialized_series()
            .to_physical_repr()
            .into_owned();
        assert_eq!(ts.i64().unwrap().get(0), Some(1_677_628_800_000), "{name}");
        let audit = ctx.run(&["audit", "leakage", "p.toml", "features"]).ok();
        assert!(audit.stdout.contains("no look-ahead"), "{name}: {}", audit.stdout);
    }
}

/// One off-grid row among 600 hourly bars: align merges it into its hour, a look-ahead at that
/// slot only. Random cuts almost never land there; the audit's boundary cuts do.
#[test]
fn the_default_audit_finds_a_look_ahead_at_a_single_boundary() {
    let ctx = TestContext::new();
    let mut file = String::from("timestamp,open,high,low,close,volume\n");
    let mut price = 100.0f64;
    for hour in 0..600i64 {
        let open = price;
        price *= 1.0 + 0.002 * ((hour * 7 % 11) as f64 - 5.0) / 5.0;
        let t = 1_677_628_800 + hour * 3600;
        file.push_str(&format!(
            "{t},{open:.4},{:.4},{:.4},{price:.4},5\n",
            open.max(price) + 0.1,
            open.min(price) - 0.1
        ));
        if hour == 377 {
            file.push_str(&format!(
                "{},{price:.4},{:.4},{:.4},{:.4},5\n",
                t + 1800,
                price + 5.0,
                price - 0.1,
                price + 4.0
            ));
        }
    }
    ctx.write("bars.csv", &file);
    ctx.write(
        "p.toml",
        "[stages.bars]\ntask = \"ingest_bars\"\nparams = { path = \"bars.csv\" }\n\n[stages.aligned]\ntask = \"align_utc\"\ninputs = [\"bars\"]\nparams = { step = \"1h\" }\n",
    );
    ctx.run(&["run", "p.toml"]).ok();
    let audit = ctx.run(&["audit", "leakage", "p.toml", "aligned"]).code(1);
    assert!(audit.stdout.contains("close"), "{}", audit.stdout);
}

/// Every TOML example in docs/your-data.md is a pipeline that validates.
#[test]
fn your_data_examples_validate() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/your-data.md")).unwrap();
    let blocks: Vec<&str> = doc.split("```toml\n").skip(1).map(|b| b.split("```").next().unwrap()).collect();
    assert!(blocks.len() >= 10, "{} examples", blocks.len());
    for block in blocks {
        let ctx = TestContext::new();
        ctx.write("p.toml", block);
        let run = ctx.run(&["validate", "p.toml"]);
        assert_eq!(run.code, 0, "{block}\n{}", run.stderr);
    }
}
