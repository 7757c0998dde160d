//! The real news sources of shared/data: ingest as they are, join on the time each item was
//! known, and the Stage 1 study on real bars with real news.

use polars::prelude::*;

use crate::support::{TestContext, real_data, shipped};

fn times(df: &DataFrame, column: &str) -> Vec<Option<i64>> {
    df.column(column).unwrap().as_materialized_series().to_physical_repr().i64().unwrap().iter().collect()
}

fn text(df: &DataFrame, column: &str) -> Vec<String> {
    df.column(column).unwrap().str().unwrap().iter().map(|v| v.unwrap_or("").to_string()).collect()
}

fn ms(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis()
}

/// BTCUSDT + CryptoBuzz, March 2023: counts and times as the data README gives them, the
/// 150-line front matter parsed, every joined minute checked against the items' known-at times,
/// and the report states the news coverage next to an honest ablation.
#[test]
fn cryptobuzz_on_binance_bars_joins_on_known_time_and_reports_coverage() {
    let Some(data) = real_data() else { return };
    let ctx = TestContext::new();
    shipped(&ctx, "stage1_real_news.toml");
    let set = format!("params.data_dir={}", data.display());
    let run = ctx.run(&["run", "pipelines/stage1_real_news.toml", "--set", &set]).ok();

    let metrics = &ctx.manifest("news")["metrics"];
    assert_eq!(metrics["files"], 292, "{metrics:#}");
    assert_eq!(metrics["dropped_duplicate"], 1, "the README's one duplicate title: {metrics:#}");
    assert_eq!(metrics["items"], 291);
    assert_eq!(metrics["first_date"], "2023-03-06T12:15:56Z");
    assert_eq!(metrics["last_date"], "2023-03-31T08:11:30Z");
    assert_eq!(metrics["time_meaning"], "available");

    let news = ctx.table("news", "table");
    let titles = text(&news, "title");
    let dates = times(&news, "date");
    let iran = titles
        .iter()
        .position(|t| t == "Iranian woman beats government tyranny using Monero")
        .expect("the 150-line front matter");
    assert_eq!(dates[iran], Some(ms("2023-03-22T11:07:58Z")));
    assert!(times(&news, "published_at").iter().all(Option::is_none), "an aggregator's time is not a publication time");
    assert!(titles.iter().any(|t| t.contains('"')), "escaped quotes in titles survive");

    // Every minute of the grid: the news features use exactly the items known (date + 1 minute
    // of lag) at or before that minute; a property of all 30,240 minutes, not a sample.
    let items = ctx.table("news_features", "items");
    let mut known: Vec<i64> = times(&items, "known_at").into_iter().map(Option::unwrap).collect();
    known.sort();
    let dates: Vec<i64> = times(&items, "date").into_iter().map(Option::unwrap).collect();
    assert!(dates.iter().zip(times(&items, "known_at")).all(|(d, k)| k.unwrap() == d + 60_000), "lag of one minute");
    let grid_table = ctx.table("news_features", "table");
    let grid: Vec<i64> = times(&grid_table, "timestamp").into_iter().map(Option::unwrap).collect();
    assert_eq!(grid.len(), 30_240);
    let counts = grid_table.column("news_count_60").unwrap().f64().unwrap().clone();
    let since = grid_table.column("news_minutes_since_last").unwrap().f64().unwrap().clone();
    for (i, &t) in grid.iter().enumerate() {
        let upto = known.partition_point(|k| *k <= t);
        let from = known.partition_point(|k| *k <= t - 3_600_000);
        assert_eq!(counts.get(i), Some((upto - from) as f64), "news_count_60 at minute {i}");
        // Minutes since the newest item of the longest window (1440 minutes), that window when
        // it has none.
        let newest = (upto > 0 && t - known[upto - 1] < 86_400_000).then(|| known[upto - 1]);
        let expected = Some(newest.map_or(1440.0, |k| (t - k) as f64 / 60_000.0));
        assert_eq!(since.get(i), expected, "news_minutes_since_last at minute {i}");
    }

    assert!(run.stdout.contains("news coverage of the test window (2023-03-10T00:00:00Z"), "{}", run.stdout);
    // CryptoBuzz starts on 6 March: the training week has little news, and the run says so.
    assert!(run.stdout.contains("warning: news coverage of the train window is thin"), "{}", run.stdout);
    let html = std::fs::read_to_string(ctx.path("out/stage1_real_news/report.html")).unwrap();
    assert!(html.contains("News coverage") && html.contains("News items per day"));
    assert!(
        html.contains("no significant difference") || html.contains("helps (") || html.contains("hurts ("),
        "each ablation row is read out in words"
    );
}

/// Kraken + Reuters, January 2023: the TSV as it is (tab-separated `.csv`, a quoted field over
/// two lines, rows in no order), its duplicates counted, and the thin coverage said plainly.
#[test]
fn reuters_on_kraken_bars_says_coverage_is_thin() {
    let Some(data) = real_data() else { return };
    let ctx = TestContext::new();
    shipped(&ctx, "stage1_real_news_kraken.toml");
    let set = format!("params.data_dir={}", data.display());
    let run = ctx.run(&["run", "pipelines/stage1_real_news_kraken.toml", "--set", &set]).ok();
    let metrics = &ctx.manifest("news")["metrics"];
    let items = metrics["items"].as_u64().unwrap();
    let duplicates = metrics["dropped_duplicate"].as_u64().unwrap();
    assert_eq!(items + duplicates, 2_260, "every row read: {metrics:#}");
    assert_eq!(duplicates, 21, "23 titles repeat, 21 of them within a day: {metrics:#}");
    assert_eq!(metrics["first_date"], "2021-01-29T08:01:27Z");
    assert_eq!(metrics["last_date"], "2023-01-31T06:19:30Z");

    let news = ctx.table("news", "table");
    let titles = text(&news, "title");
    let row = titles.iter().position(|t| t == "Industrials push FTSE 100 higher; Trainline slumps").unwrap();
    let content = &text(&news, "content")[row];
    assert!(
        content.starts_with("Gains in industrial stocks") && content.contains("reorganised its railway system."),
        "{content}"
    );
    assert_eq!(times(&news, "date")[row], Some(ms("2021-05-20T08:30:29.892Z")));
    assert_eq!(times(&news, "published_at")[row], times(&news, "date")[row]);
    let dates: Vec<i64> = times(&news, "date").into_iter().map(Option::unwrap).collect();
    assert!(dates.windows(2).all(|w| w[0] <= w[1]), "sorted by time whatever the file's order");

    assert!(run.stdout.contains("warning: news coverage of the test window is thin"), "{}", run.stdout);
    let html = std::fs::read_to_string(ctx.path("out/stage1_real_news_kraken/report.html")).unwrap();
    assert!(html.contains("Coverage of the test window is thin"));
}

/// A zone declaration that the file's own offsets contradict, and a time field with no usable
/// time, fail with the file, the row and the field named.
#[test]
fn news_time_declarations_that_cannot_be_true_fail_located() {
    let Some(data) = real_data() else { return };
    let ctx = TestContext::new();
    let reuters = data.join("news/reuters/BTC_reuters_articles.csv");
    ctx.write(
        "p.toml",
        &format!(
            "[stages.news]\ntask = \"ingest_news\"\nparams = {{ path = \"{}\", separator = \"\\t\", timezone = \"Asia/Tokyo\", fields = {{ date = \"timestamp\" }} }}\n",
            reuters.display()
        ),
    );
    let run = ctx.run(&["run", "p.toml"]).code(1);
    assert!(run.stderr.contains("BTC_reuters_articles.csv: row 2, field `timestamp`"), "{}", run.stderr);
    assert!(run.stderr.contains("declared zone Asia/Tokyo"), "{}", run.stderr);

    ctx.write(
        "p.toml",
        &format!(
            "[stages.news]\ntask = \"ingest_news\"\nparams = {{ path = \"{}\", separator = \"\\t\", fields = {{ date = \"subheadlines\" }} }}\n",
            reuters.display()
        ),
    );
    let run = ctx.run(&["run", "p.toml"]).code(1);
    assert!(run.stderr.contains("no news item with a usable date"), "{}", run.stderr);
    assert!(run.stderr.contains("field `subheadlines`"), "{}", run.stderr);

    let posts = data.join("news/cryptobuzz/_posts/*/*.md");
    ctx.write(
        "p.toml",
        &format!("[stages.news]\ntask = \"ingest_news\"\nparams = {{ path = \"{}\", fields = {{ date = \"published\" }} }}\n", posts.display()),
    );
    let run = ctx.run(&["run", "p.toml"]).code(1);
    assert!(run.stderr.contains("no news item with a usable date"), "{}", run.stderr);
    assert!(run.stderr.contains(".md: no field `published` for the news date"), "{}", run.stderr);
}
