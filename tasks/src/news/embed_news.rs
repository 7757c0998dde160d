//! `embed_news`: a sentiment score and a hashed text embedding per news item, then windowed
//! aggregates on the minute grid, joined on the time each item was known.

use anyhow::{Result, bail};
use pipeline_artifacts::{ArtifactKind, read_table, write_table};
use pipeline_engine::partitions::{History, Reach};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::lexicon::sentiment;
use crate::synth_table::SplitMix64;
use crate::torch::{Device, require_built};

/// Scores news items and aggregates them onto the bar grid.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedNewsParams {
    /// Minutes added to an item's `date` before it may be used (processing delay).
    #[serde(default = "default_lag")]
    pub lag_minutes: i64,
    /// Windows (minutes) of the count, mean-sentiment and embedding aggregates.
    #[serde(default = "default_windows")]
    pub windows: Vec<i64>,
    /// Half-life (minutes) of the decayed sentiment `news_sent_decay`.
    #[serde(default = "default_half_life")]
    pub half_life_minutes: f64,
    /// Dimensions of the hashed n-gram vector each item is embedded into.
    #[serde(default = "default_hash_dims")]
    pub hash_dims: usize,
    /// Components the embedding is reduced to (fixed random projection) for the grid features.
    #[serde(default = "default_components")]
    pub components: usize,
    /// Embedding method: "hashed_tfidf" (built in, no download) or "minilm" (all-MiniLM-L6-v2
    /// sentence embeddings on LibTorch: the `torch` feature, docs/torch.md).
    #[serde(default)]
    pub method: EmbeddingMethod,
    /// `minilm`: the folder with the traced `model.pt` and its `tokenizer.json` (relative to the
    /// pipeline file); default `$PIPELINE_MINILM_DIR`, which scripts/setup-libtorch.sh prints.
    /// Both files are hashed into the cache key.
    #[serde(default)]
    pub model_dir: Option<String>,
    /// `minilm`: "auto" (the run's `--device`, else MPS, CUDA, CPU), "cpu", "cuda" or "mps".
    #[serde(default)]
    pub device: Device,
}

/// How an item's text becomes a vector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddingMethod {
    /// Hashed unigram+bigram counts (`hash_dims` of them): built in, no download.
    #[default]
    HashedTfidf,
    /// all-MiniLM-L6-v2 (384 dimensions), tokenised in Rust, run on LibTorch.
    Minilm,
}

fn default_lag() -> i64 {
    1
}
fn default_windows() -> Vec<i64> {
    vec![60, 240, 1440]
}
fn default_half_life() -> f64 {
    60.0
}
fn default_hash_dims() -> usize {
    256
}
fn default_components() -> usize {
    4
}

pub struct EmbedNews;

/// Hashed unigram + bigram counts, log(1 + tf) weighted and L2-normalised. No inverse document
/// frequency: an IDF fitted on all items would let later items shape earlier vectors.
pub fn embed(text: &str, dims: usize) -> Vec<f64> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|w| w.len() > 1).collect();
    let mut counts = vec![0.0f64; dims];
    let mut add = |token: &str| {
        let hash = blake3::hash(token.as_bytes());
        let bytes = hash.as_bytes();
        let index = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize % dims;
        // The sign bit keeps collisions from only ever adding up.
        let sign = if bytes[8] & 1 == 0 { 1.0 } else { -1.0 };
        counts[index] += sign;
    };
    for (i, word) in words.iter().enumerate() {
        add(word);
        if let Some(next) = words.get(i + 1) {
            add(&format!("{word} {next}"));
        }
    }
    let mut vector: Vec<f64> = counts.iter().map(|c| c.signum() * c.abs().ln_1p()).collect();
    let norm = vector.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|v| *v /= norm);
    }
    vector
}

/// A fixed Gaussian random projection (seeded): the same for every run and every item, fitted on
/// nothing, so it cannot leak.
fn projection(dims: usize, components: usize) -> Vec<Vec<f64>> {
    let mut rng = SplitMix64::new(0x6E65_7773_7072_6F6A);
    (0..components).map(|_| (0..dims).map(|_| rng.next_normal() / (dims as f64).sqrt()).collect()).collect()
}

/// `minilm`'s model folder: the param, else `$PIPELINE_MINILM_DIR`.
fn minilm_dir(params: &EmbedNewsParams) -> Option<String> {
    params.model_dir.clone().or_else(|| std::env::var("PIPELINE_MINILM_DIR").ok().filter(|d| !d.is_empty()))
}

/// One vector per item text, by the stage's method.
fn item_vectors(params: &EmbedNewsParams, bodies: &[String], ctx: &StageContext) -> Result<Vec<Vec<f64>>> {
    match params.method {
        EmbeddingMethod::HashedTfidf => Ok(bodies.iter().map(|body| embed(body, params.hash_dims)).collect()),
        #[cfg(feature = "torch")]
        EmbeddingMethod::Minilm => {
            let dir = ctx.resolve(&minilm_dir(params).unwrap_or_default());
            let model = crate::torch::minilm::MiniLm::load(&dir, params.device.tch())?;
            let vectors = model.embed(bodies)?;
            ctx.metric("device", params.device.key_name());
            Ok(vectors.into_iter().map(|v| v.into_iter().map(f64::from).collect()).collect())
        }
        #[cfg(not(feature = "torch"))]
        EmbeddingMethod::Minilm => {
            let _ = ctx;
            bail!("{}", crate::torch::NOT_BUILT)
        }
    }
}

fn times_ms(df: &DataFrame, column: &str, input: &str) -> Result<Vec<i64>> {
    let series = df
        .column(column)
        .map_err(|_| anyhow::anyhow!("input `{input}` has no `{column}` column"))?
        .as_materialized_series();
    let ms = match series.dtype() {
        DataType::Datetime(_, tz) => series.cast(&DataType::Datetime(TimeUnit::Milliseconds, tz.clone()))?,
        other => bail!("input `{input}` column `{column}` has type {other}, not a time"),
    };
    let physical = ms.to_physical_repr();
    let values = physical.i64()?;
    if let Some(row) = values.iter().position(|v| v.is_none()) {
        bail!("input `{input}` row {} has no `{column}`", row + 1);
    }
    Ok(values.iter().map(|v| v.unwrap_or(0)).collect())
}

fn text(df: &DataFrame, column: &str) -> Result<Vec<String>> {
    match df.column(column) {
        Ok(c) => Ok(c
            .as_materialized_series()
            .cast(&DataType::String)?
            .str()?
            .iter()
            .map(|v| v.unwrap_or("").to_string())
            .collect()),
        Err(_) => Ok(vec![String::new(); df.height()]),
    }
}

/// Each item's id for the `items` table: the news table's `id` when it has one, else 16 hex
/// digits of a hash of the item's date, title and content (the same in every run and partition).
fn item_ids(news: &DataFrame, dates: &[i64], titles: &[String], contents: &[String]) -> Result<Vec<String>> {
    if news.column("id").is_ok() {
        return text(news, "id");
    }
    Ok((0..news.height())
        .map(|i| {
            let mut hasher = blake3::Hasher::new();
            hasher.update(&dates[i].to_le_bytes());
            hasher.update(titles[i].as_bytes());
            hasher.update(&[0x1f]);
            hasher.update(contents[i].as_bytes());
            hasher.finalize().to_hex()[..16].to_string()
        })
        .collect())
}

impl Stage for EmbedNews {
    type Params = EmbedNewsParams;
    const NAME: &'static str = "embed_news";
    // 2: `news_new_items`.
    // 3: every aggregate a function of the items known in the longest window before t (the
    //    decayed sentiment and the minutes since the last item too), each summed afresh: so a
    //    day can be computed alone (docs/nightly.md). New items: known in the grid step before t.
    // 4: the lexicon matches whole words and phrases (docs/news.md); `items` has `id` and `title`.
    const VERSION: u32 = 4;
    const DOC: &'static str = "Score and embed news items, then aggregate them onto the bar grid by the time each was known.\n\n\
        Inputs: `news` (a news table: `date`, `title`, `content`) and `bars` (any table with the `timestamp` grid). \
        Per item: a lexicon sentiment in [-1, 1] (tasks/src/news/lexicon.rs: whole words and phrases, change-of-direction \
        rules such as \"loss narrowed\", negation; docs/news.md) and a hashed \
        unigram+bigram vector (no model download; no IDF, which would leak later items into earlier vectors), or with \
        `method = \"minilm\"` (the `torch` feature, docs/torch.md) all-MiniLM-L6-v2's 384-dimensional sentence \
        embedding of title and content, tokenised in Rust, each item embedded independently of the others. \
        An item is known at `date + lag_minutes` and counts for the rows at or after that time only. Output \
        `items`: per item `date`, `known_at`, `id` (the news table's `id` if it has one, else 16 hex digits \
        of a hash of date, title and content), `title`, `sentiment`, `emb_0..` (reduced), to audit the scores. Output `table`: `timestamp` and, per \
        window W, `news_count_W`, `news_sent_mean_W` (null without items), `news_emb_W_0..` (mean reduced \
        embedding), plus `news_sent_decay` (the sentiment of the items of the longest window, summed with \
        exponential decay), `news_minutes_since_last` (the longest window when it holds no item: \"at least that long\") and \
        `news_new_items` (items that became known in the grid step before the row). The reduction is a fixed seeded random projection, fitted on nothing.";
    const EXAMPLE: &'static str = r#"[stages.market]
task = "synth_market"
params = { days = 3 }

[stages.news]
task = "synth_news"
params = { days = 3 }

[stages.news_features]
task = "embed_news"
inputs = { news = "news", bars = "market" }
params = { lag_minutes = 1, windows = [60, 240] }
"#;

    fn validate(params: &EmbedNewsParams) -> Result<(), ParamError> {
        if params.method == EmbeddingMethod::Minilm {
            require_built("method", "`minilm` runs on LibTorch")?;
            params.device.resolve("device")?;
            if minilm_dir(params).is_none() {
                return Err(ParamError::new(
                    "model_dir",
                    "`minilm` needs its model folder: set model_dir, or PIPELINE_MINILM_DIR as scripts/setup-libtorch.sh prints",
                ));
            }
        } else if params.model_dir.is_some() || params.device != Device::Auto {
            let path = if params.model_dir.is_some() { "model_dir" } else { "device" };
            return Err(ParamError::new(path, "only `method = \"minilm\"` reads this; remove it or set the method"));
        }
        if params.lag_minutes < 0 {
            return Err(ParamError::new(
                "lag_minutes",
                "must be zero or positive: news cannot be known before it is published",
            ));
        }
        if params.windows.is_empty() || params.windows.iter().any(|w| *w <= 0) {
            return Err(ParamError::new("windows", "give one or more positive windows in minutes"));
        }
        if params.hash_dims < 8 || params.components == 0 || params.components > params.hash_dims {
            return Err(ParamError::new("components", "need hash_dims >= 8 and 1 <= components <= hash_dims"));
        }
        if params.half_life_minutes.is_nan() || params.half_life_minutes <= 0.0 {
            return Err(ParamError::new("half_life_minutes", "must be positive"));
        }
        Ok(())
    }

    /// A row reads the items known in the longest window before it, which were dated up to
    /// `lag_minutes` earlier; `items` is partitioned by the time each item was known.
    fn history(params: &EmbedNewsParams) -> Result<History, String> {
        let longest = params.windows.iter().copied().max().unwrap_or(0).max(0);
        Ok(History {
            lookback: Reach::millis((longest + params.lag_minutes.max(0)) * 60_000),
            output_columns: &[("items", "known_at")],
            ..History::ROW_LOCAL
        })
    }

    /// `minilm`'s key holds the device it runs on (`auto` resolved: kernels differ in the last
    /// bits between devices) and not `hash_dims`, which it does not read. The model's files are
    /// in the key through `files` (their contents, and their paths as the pipeline file names
    /// them: a relative `model_dir` keeps keys equal across checkouts, docs/torch.md).
    fn key_params(params: &EmbedNewsParams) -> serde_json::Value {
        let mut value = serde_json::to_value(params).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.remove("model_dir");
            if params.method == EmbeddingMethod::Minilm {
                map.insert("device".into(), params.device.key_name().into());
                map.remove("hash_dims");
            } else {
                map.remove("device");
            }
        }
        value
    }

    fn files(params: &EmbedNewsParams) -> Vec<String> {
        match (params.method, minilm_dir(params)) {
            (EmbeddingMethod::Minilm, Some(dir)) => {
                vec![format!("{dir}/model.pt"), format!("{dir}/tokenizer.json")]
            }
            _ => Vec::new(),
        }
    }

    fn outputs(_params: &EmbedNewsParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("table", ArtifactKind::Table), OutputDecl::new("items", ArtifactKind::Table)]
    }

    fn check_inputs(_params: &EmbedNewsParams, inputs: &[InputInfo]) -> Result<(), String> {
        for needed in ["news", "bars"] {
            match inputs.iter().find(|i| i.name == needed) {
                Some(i) if i.kind == ArtifactKind::Table => {}
                Some(i) => return Err(format!("input `{needed}` is a {}, `embed_news` needs a table", i.kind)),
                None => {
                    return Err(format!(
                        "`embed_news` needs an input named `{needed}`: write inputs = {{ news = \"...\", bars = \"...\" }}"
                    ));
                }
            }
        }
        Ok(())
    }

    fn run(params: &EmbedNewsParams, ctx: &mut StageContext) -> Result<()> {
        let news = read_table(&ctx.input("news")?.path)?;
        let bars = read_table(&ctx.input("bars")?.path)?;
        let grid = times_ms(&bars, "timestamp", "bars")?;
        let dates = times_ms(&news, "date", "news")?;
        let titles = text(&news, "title")?;
        let contents = text(&news, "content")?;
        let ids = item_ids(&news, &dates, &titles, &contents)?;
        let lag = params.lag_minutes * 60_000;
        // Per item: date, known-at time, sentiment, reduced embedding, row in `news`; sorted by known-at.
        let bodies: Vec<String> = (0..news.height()).map(|i| format!("{} {}", titles[i], contents[i])).collect();
        let vectors = item_vectors(params, &bodies, ctx)?;
        let proj = projection(vectors.first().map_or(params.hash_dims, Vec::len), params.components);
        let mut items: Vec<(i64, i64, f64, Vec<f64>, usize)> = (0..news.height())
            .map(|i| {
                let vector = &vectors[i];
                let reduced: Vec<f64> =
                    proj.iter().map(|row| row.iter().zip(vector.iter()).map(|(a, b)| a * b).sum()).collect();
                // Sentiment reads the headline twice as loud as the body.
                let score = (2.0 * sentiment(&titles[i]) + sentiment(&contents[i])) / 3.0;
                (dates[i], dates[i].saturating_add(lag), score, reduced, i)
            })
            .collect();
        items.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        let k = params.components;
        let n = grid.len();
        let mut columns: Vec<Column> = vec![bars.column("timestamp")?.clone()];
        // Items known in (t - W, t] by two pointers over the sorted items; each window's sums are
        // taken afresh whenever its items change (not added and subtracted: that would carry a
        // rounding residue from every item since the start of the table).
        let step = grid.windows(2).map(|w| w[1] - w[0]).filter(|g| *g > 0).min().unwrap_or(60_000);
        for &w in &params.windows {
            let span = w * 60_000;
            let (mut count, mut mean) = (Vec::with_capacity(n), Vec::with_capacity(n));
            let mut emb: Vec<Vec<Option<f64>>> = vec![Vec::with_capacity(n); k];
            let (mut lo, mut hi) = (0usize, 0usize);
            let mut sum_s = 0.0;
            let mut sum_e = vec![0.0; k];
            for &t in &grid {
                let before = (lo, hi);
                while hi < items.len() && items[hi].1 <= t {
                    hi += 1;
                }
                while lo < hi && items[lo].1 <= t - span {
                    lo += 1;
                }
                lo = lo.max(items[..hi].partition_point(|item| item.1 <= t - span));
                if (lo, hi) != before {
                    sum_s = items[lo..hi].iter().map(|item| item.2).sum();
                    for (c, s) in sum_e.iter_mut().enumerate() {
                        *s = items[lo..hi].iter().map(|item| item.3[c]).sum();
                    }
                }
                let m = (hi - lo) as f64;
                count.push(m);
                mean.push(if m > 0.0 { Some(sum_s / m) } else { None });
                for (c, column) in emb.iter_mut().enumerate() {
                    column.push(if m > 0.0 { Some(sum_e[c] / m) } else { None });
                }
            }
            columns.push(Series::new(format!("news_count_{w}").into(), count).into());
            columns.push(Series::new(format!("news_sent_mean_{w}").into(), mean).into());
            for (c, column) in emb.into_iter().enumerate() {
                columns.push(Series::new(format!("news_emb_{w}_{c}").into(), column).into());
            }
        }
        // Decayed sentiment and the age of the newest item, over the items of the longest window.
        let longest = params.windows.iter().copied().max().unwrap_or(0).max(0) * 60_000;
        let rate = std::f64::consts::LN_2 / (params.half_life_minutes * 60_000.0);
        let (mut decay, mut since, mut fresh) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut lo, mut hi) = (0usize, 0usize);
        // The window's sentiment decayed to its newest item's time, taken afresh when it changes.
        let mut level = 0.0f64;
        for &t in &grid {
            let before = (lo, hi);
            while hi < items.len() && items[hi].1 <= t {
                hi += 1;
            }
            lo = lo.max(items[..hi].partition_point(|item| item.1 <= t - longest));
            let newest = (hi > lo).then(|| items[hi - 1].1);
            if (lo, hi) != before
                && let Some(newest) = newest
            {
                level = items[lo..hi].iter().map(|item| item.2 * (-(rate * (newest - item.1) as f64)).exp()).sum();
            }
            decay.push(newest.map_or(0.0, |at| level * (-(rate * (t - at) as f64)).exp()));
            // Beyond the longest window, "at least that long": the cap, not a gap in the column.
            since.push(Some(newest.map_or(longest, |at| t - at) as f64 / 60_000.0));
            let new_items = items[lo..hi].iter().filter(|item| item.1 > t - step).count();
            fresh.push(new_items as f64);
        }
        columns.push(Series::new("news_sent_decay".into(), decay).into());
        columns.push(Series::new("news_minutes_since_last".into(), since).into());
        columns.push(Series::new("news_new_items".into(), fresh).into());
        let mut table = DataFrame::new(n, columns)?;

        let utc = DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC));
        let mut item_columns: Vec<Column> = vec![
            Series::new("date".into(), items.iter().map(|i| i.0).collect::<Vec<_>>()).cast(&utc)?.into(),
            Series::new("known_at".into(), items.iter().map(|i| i.1).collect::<Vec<_>>()).cast(&utc)?.into(),
            Series::new("id".into(), items.iter().map(|i| ids[i.4].as_str()).collect::<Vec<_>>()).into(),
            Series::new("title".into(), items.iter().map(|i| titles[i.4].as_str()).collect::<Vec<_>>()).into(),
            Series::new("sentiment".into(), items.iter().map(|i| i.2).collect::<Vec<_>>()).into(),
        ];
        for c in 0..k {
            item_columns
                .push(Series::new(format!("emb_{c}").into(), items.iter().map(|i| i.3[c]).collect::<Vec<_>>()).into());
        }
        let mut item_table = DataFrame::new(items.len(), item_columns)?;
        ctx.metric("items", items.len() as u64);
        ctx.metric("items_positive", items.iter().filter(|i| i.2 > 0.0).count() as u64);
        ctx.metric("items_negative", items.iter().filter(|i| i.2 < 0.0).count() as u64);
        ctx.metric("rows", n as u64);
        write_table(&mut table, &ctx.output_path("table")?)?;
        write_table(&mut item_table, &ctx.output_path("items")?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embed("Bitcoin rallies after strong inflows", 64);
        assert_eq!(a, embed("Bitcoin rallies after strong inflows", 64));
        assert!((a.iter().map(|v| v * v).sum::<f64>() - 1.0).abs() < 1e-12);
        assert_ne!(a, embed("Bitcoin plunges after a hack", 64));
        assert!(embed("", 64).iter().all(|v| *v == 0.0));
    }
}
