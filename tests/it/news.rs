//! News stages: the synthetic source and ingest of news files.

use crate::support::TestContext;

#[test]
fn synthetic_news_matches_the_market_it_belongs_to() {
    let ctx = TestContext::new();
    ctx.write(
        "p.toml",
        r#"
[params]
seed = 4
days = 10

[stages.market]
task = "synth_market"
params = { seed = "${params.seed}", days = "${params.days}" }

[stages.news]
task = "synth_news"
params = { seed = "${params.seed}", days = "${params.days}" }
"#,
    );
    ctx.run(&["run", "p.toml"]).ok();
    let planted = &ctx.manifest("market")["metrics"]["news_events"];
    let items = &ctx.manifest("news")["metrics"]["items"];
    assert_eq!(planted, items);
    let news = ctx.table("news", "table");
    let date = news.column("date").unwrap().as_materialized_series().to_physical_repr().i64().unwrap().clone();
    let scraped = news.column("scraped_at").unwrap().as_materialized_series().to_physical_repr().i64().unwrap().clone();
    assert!(date.iter().zip(scraped.iter()).all(|(d, s)| s.unwrap() > d.unwrap()), "scraped after published");
}

#[test]
fn ingest_news_reads_the_formats_in_the_wild_and_counts_what_it_drops() {
    let ctx = TestContext::new();
    ctx.write(
        "a.json",
        r#"[{"title": "BTC rallies", "content": "x", "date": "2023-03-10T12:00:00Z", "source": "A", "scraped_at": "2023-03-10T13:00:00Z"},
            {"title": "No date here", "content": "y", "date": "", "source": "A"}]"#,
    );
    ctx.write(
        "b.ndjson",
        "{\"title\": \"Epoch item\", \"date\": 1678449600}\n{\"title\": \"epoch  ITEM\", \"date\": 1678453200}\n{\"title\": \"Epoch item\", \"date\": 1678539600}\n{\"title\": \"-- ...\", \"date\": 1678449600}\n",
    );
    ctx.write(
        "c.tsv",
        "title\tdate\nRFC 2822 item\tFri, 10 Mar 2023 06:00:00 -0500\nNaive New York item\t2023-03-10 05:00:00\nBad date\tsoon\n",
    );
    ctx.write(
        "p.toml",
        r#"
[stages.json]
task = "ingest_news"
params = { path = "a.json" }

[stages.ndjson]
task = "ingest_news"
params = { path = "b.ndjson" }

[stages.tsv]
task = "ingest_news"
params = { path = "c.tsv", separator = "\t", timezone = "America/New_York" }
"#,
    );
    ctx.run(&["run", "p.toml"]).ok();
    let json = &ctx.manifest("json")["metrics"];
    assert_eq!((json["items"].as_u64(), json["dropped_no_date"].as_u64()), (Some(1), Some(1)), "{json:#}");
    // A repeat an hour later (case and spacing aside) is a duplicate; a day and an hour later it
    // is news again. A title without letters is near-empty.
    let ndjson = &ctx.manifest("ndjson")["metrics"];
    assert_eq!(
        (&ndjson["items"], &ndjson["dropped_duplicate"], &ndjson["dropped_near_empty"]),
        (&serde_json::json!(2), &serde_json::json!(1), &serde_json::json!(1)),
        "{ndjson:#}"
    );
    let tsv = &ctx.manifest("tsv")["metrics"];
    assert_eq!(tsv["dropped_no_date"], 1, "{tsv:#}");
    assert!(tsv["first_dropped_example"].as_str().unwrap().contains("c.tsv: row 4, field `date`"), "{tsv:#}");
    let table = ctx.table("tsv", "table");
    let dates = table.column("date").unwrap().as_materialized_series().to_physical_repr().i64().unwrap().clone();
    // 05:00 New York (EST) = 10:00 UTC comes before 11:00 UTC: sorted by date.
    assert_eq!(dates.iter().map(|d| d.unwrap()).collect::<Vec<_>>(), [1_678_442_400_000, 1_678_446_000_000]);
}

#[test]
fn joining_news_on_the_scrape_time_is_refused() {
    let ctx = TestContext::new();
    ctx.write(
        "a.ndjson",
        "{\"title\": \"x\", \"date\": \"2023-03-10T12:00:00Z\", \"scraped_at\": \"2023-03-10T13:00:00Z\"}\n",
    );
    ctx.write(
        "p.toml",
        "[stages.news]\ntask = \"ingest_news\"\nparams = { path = \"a.ndjson\", fields = { date = \"scraped_at\" } }\n",
    );
    let err = ctx.run(&["validate", "p.toml"]).code(2).stderr;
    assert!(err.contains("invalid param `fields.date`"), "{err}");
    assert!(err.contains("never when it was scraped"), "{err}");
    assert!(err.contains("p.toml:3:"), "{err}");
}

#[test]
fn a_news_file_without_a_date_field_is_a_located_error() {
    let ctx = TestContext::new();
    ctx.write("a.ndjson", "{\"title\": \"x\", \"published\": \"2023-03-10T12:00:00Z\"}\n");
    ctx.write("p.toml", "[stages.news]\ntask = \"ingest_news\"\nparams = { path = \"a.ndjson\" }\n");
    let err = ctx.run(&["run", "p.toml"]).code(1).stderr;
    assert!(err.contains("a.ndjson: no field `date` for the news date (fields: title, published)"), "{err}");
    assert!(err.contains("hint: map it with params.fields.date"), "{err}");
}

const NEWS_PIPELINE: &str = r#"
[params]
seed = 5
days = 12

[stages.market]
task = "synth_market"
params = { seed = "${params.seed}", days = "${params.days}" }

[stages.news]
task = "synth_news"
params = { seed = "${params.seed}", days = "${params.days}" }

[stages.news_features]
task = "embed_news"
inputs = { news = "news", bars = "market" }
params = { lag_minutes = 2, windows = [60, 240] }
"#;

fn times(df: &polars::prelude::DataFrame, column: &str) -> Vec<i64> {
    df.column(column)
        .unwrap()
        .as_materialized_series()
        .to_physical_repr()
        .i64()
        .unwrap()
        .iter()
        .map(|v| v.unwrap())
        .collect()
}

/// Every minute: the items it counts are exactly those known (date + lag) in its window, at or
/// before the minute itself. A property over every joined minute, not a sample.
#[test]
fn news_joins_on_the_time_each_item_was_known_never_later() {
    let ctx = TestContext::new();
    ctx.write("p.toml", NEWS_PIPELINE);
    ctx.run(&["run", "p.toml"]).ok();
    let items = ctx.table("news_features", "items");
    let table = ctx.table("news_features", "table");
    let (date, known) = (times(&items, "date"), times(&items, "known_at"));
    assert!(date.iter().zip(&known).all(|(d, k)| k - d == 120_000), "known = date + 2 minutes");
    let grid = times(&table, "timestamp");
    let counts: Vec<f64> = table
        .column("news_count_60")
        .unwrap()
        .as_materialized_series()
        .f64()
        .unwrap()
        .iter()
        .map(|v| v.unwrap())
        .collect();
    for (t, count) in grid.iter().zip(&counts) {
        let expected = known.iter().filter(|k| **k <= *t && **k > t - 3_600_000).count() as f64;
        assert_eq!(*count, expected, "minute {t}");
    }
    assert!(counts.iter().any(|c| *c > 0.0));
}

#[test]
fn news_features_pass_the_leakage_audit_and_carry_the_planted_signal() {
    let ctx = TestContext::new();
    ctx.write("p.toml", NEWS_PIPELINE);
    let audit = ctx.run(&["audit", "leakage", "p.toml", "news_features", "--cuts", "5"]).ok();
    assert!(audit.stdout.contains("no look-ahead"), "{}", audit.stdout);
    // The planted relation: sentiment known at t leans the next 30 minutes' return.
    ctx.run(&["run", "p.toml", "--set", "params.days=40"]).ok();
    let news = ctx.table("news_features", "table");
    let market = ctx.table("market", "table");
    let decay: Vec<f64> = news
        .column("news_sent_decay")
        .unwrap()
        .as_materialized_series()
        .f64()
        .unwrap()
        .iter()
        .map(|v| v.unwrap())
        .collect();
    let close: Vec<f64> =
        market.column("close").unwrap().as_materialized_series().f64().unwrap().iter().map(|v| v.unwrap()).collect();
    let n = close.len() - 31;
    let forward: Vec<f64> = (0..n).map(|t| (close[t + 30] / close[t]).ln()).collect();
    let (x, y) = (&decay[..n], &forward[..]);
    let mx = x.iter().sum::<f64>() / n as f64;
    let my = y.iter().sum::<f64>() / n as f64;
    let cov: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let corr = cov
        / (x.iter().map(|a| (a - mx).powi(2)).sum::<f64>() * y.iter().map(|b| (b - my).powi(2)).sum::<f64>()).sqrt();
    assert!(corr > 0.03, "decayed news sentiment should lean the next 30 minutes: corr = {corr:.4}");
}

#[test]
fn a_bare_date_is_known_only_at_the_end_of_its_day() {
    let ctx = TestContext::new();
    ctx.write("a.ndjson", "{\"title\": \"Day-only item\", \"date\": \"2023-03-10\"}\n");
    ctx.write("p.toml", "[stages.news]\ntask = \"ingest_news\"\nparams = { path = \"a.ndjson\" }\n");
    ctx.run(&["run", "p.toml"]).ok();
    let dates = times(&ctx.table("news", "table"), "date");
    assert_eq!(dates, [1_678_492_799_999], "2023-03-10 23:59:59.999 UTC");
}
