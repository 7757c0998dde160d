//! `synth_table`: a deterministic table of random walks on a regular time grid.

use pipeline_artifacts::{ArtifactKind, write_table};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A table of `columns` Gaussian random walks on a regular UTC time grid.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SynthTableParams {
    /// Number of rows.
    #[serde(default = "default_rows")]
    pub rows: usize,
    /// Number of float columns `c0`, `c1`, ...
    #[serde(default = "default_columns")]
    pub columns: usize,
    /// Seed of the generator; the same seed gives the same bytes.
    #[serde(default)]
    pub seed: u64,
    /// Timestamp of the first row (RFC 3339).
    #[serde(default = "default_start")]
    pub start: String,
    /// Seconds between rows.
    #[serde(default = "default_step")]
    pub step_seconds: u64,
}

fn default_rows() -> usize {
    1000
}
fn default_columns() -> usize {
    4
}
fn default_start() -> String {
    "2024-01-01T00:00:00Z".into()
}
fn default_step() -> u64 {
    60
}

pub struct SynthTable;

/// SplitMix64. Written here rather than taken from `rand` on purpose: its output is fixed by
/// this code, so a dependency upgrade can never silently change generated data (and with it
/// every cache key downstream).
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Advances the stream by `draws` calls of [`next_u64`](Self::next_u64) without computing
    /// them (SplitMix64's state is a counter): how a generator skips values it does not need.
    pub fn skip(&mut self, draws: u64) {
        self.0 = self.0.wrapping_add(draws.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    }

    /// Uniform in (0, 1).
    pub fn next_f64(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn next_normal(&mut self) -> f64 {
        let u1 = self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

impl Stage for SynthTable {
    type Params = SynthTableParams;
    const NAME: &'static str = "synth_table";
    const VERSION: u32 = 1;
    const DOC: &'static str = "Generate a deterministic table of random walks on a regular UTC time grid.\n\n\
        Output `table` with a `timestamp` column (UTC, milliseconds) and float columns `c0`..`cN`. The same \
        params give byte-identical Parquet. Useful as a stand-in source and for benchmarks.";
    const EXAMPLE: &'static str = r#"[stages.prices]
task = "synth_table"
params = { rows = 1440, columns = 2, seed = 7 }
"#;

    fn validate(params: &SynthTableParams) -> Result<(), ParamError> {
        chrono::DateTime::parse_from_rfc3339(&params.start)
            .map_err(|e| ParamError::new("start", format!("`{}` is not an RFC 3339 time: {e}", params.start)))?;
        if params.step_seconds == 0 {
            return Err(ParamError::new("step_seconds", "must be at least 1"));
        }
        Ok(())
    }

    fn check_inputs(_params: &SynthTableParams, inputs: &[InputInfo]) -> Result<(), String> {
        crate::no_inputs(inputs, Self::NAME, "nothing: it makes a table")
    }

    fn outputs(_params: &SynthTableParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("table", ArtifactKind::Table)]
    }

    fn run(params: &SynthTableParams, ctx: &mut StageContext) -> anyhow::Result<()> {
        let start_ms = chrono::DateTime::parse_from_rfc3339(&params.start)?.timestamp_millis();
        let step_ms = params.step_seconds as i64 * 1000;
        let timestamps: Vec<i64> = (0..params.rows as i64).map(|i| start_ms + i * step_ms).collect();
        let mut columns: Vec<Column> = Vec::with_capacity(params.columns + 1);
        columns.push(
            Series::new("timestamp".into(), timestamps)
                .cast(&DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC)))?
                .into(),
        );
        for c in 0..params.columns {
            ctx.check_cancelled()?;
            ctx.progress(c as u64, Some(params.columns as u64));
            // One stream per column, so the columns do not depend on how many there are.
            let mut rng = SplitMix64::new(params.seed.wrapping_mul(1_000_003).wrapping_add(c as u64));
            let mut level = 100.0;
            let values: Vec<f64> = (0..params.rows)
                .map(|_| {
                    level += rng.next_normal() * 0.1;
                    level
                })
                .collect();
            columns.push(Series::new(format!("c{c}").into(), values).into());
        }
        let mut df = DataFrame::new(params.rows, columns)?;
        write_table(&mut df, &ctx.output_path("table")?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_fixed() {
        // First outputs of SplitMix64 seeded with 0 (reference values from the algorithm's
        // published C implementation).
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }
}
