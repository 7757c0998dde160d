//! The transition buffer: one row per step (episode_id, segment, step, ts, the observation
//! columns, action, reward and its parts, terminal, timeout, equity), as Parquet, and as
//! d3rlpy's own HDF5 layout (dataset version "2.1", what `d3rlpy.dataset.ReplayBuffer.load`
//! reads): `columns` (the episode keys), `num_episodes`, per episode i `observations_i`
//! (float32, rows x observation columns), `actions_i` (int64, rows x 1), `rewards_i`
//! (float32, rows x 1), `terminated_i` (bool), and `version`. An episode that ended by timeout
//! has one row more than steps: the observation after its last step (action 0, reward 0), which
//! d3rlpy reads as the last transition's next observation. The HDF5 bytes are written by
//! hdf5-pure (pure Rust: the default build links no libhdf5).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, anyhow, bail};
use polars::prelude::*;

use crate::learn::dataset::{column_f64, column_ms, format_ms};

/// Prefix of the observation columns in the Parquet buffer.
pub const OBS_PREFIX: &str = "obs_";

/// The version of d3rlpy's dataset layout written.
pub const D3RLPY_VERSION: &str = "2.1";

/// The buffer, column by column.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buffer {
    /// Observation column names (without the prefix): features, then the position.
    pub observation_names: Vec<String>,
    pub episode: Vec<i64>,
    /// `train` or `test`.
    pub segment: Vec<String>,
    pub step: Vec<i64>,
    /// The bar the observation was taken at (its close), ms.
    pub ts: Vec<i64>,
    /// One vector per observation column.
    pub observations: Vec<Vec<f64>>,
    pub action: Vec<i64>,
    pub reward: Vec<f64>,
    pub pnl: Vec<f64>,
    pub drawdown_penalty: Vec<f64>,
    pub streak_penalty: Vec<f64>,
    pub terminal: Vec<bool>,
    pub timeout: Vec<bool>,
    pub equity: Vec<f64>,
    /// The observation after the last step of each episode that ended by timeout (at its last
    /// bar, flat): d3rlpy's layout stores it as one more row. Written by the rollouts, not
    /// kept in the Parquet buffer (nothing is decided there: the episode is over).
    pub final_observations: BTreeMap<i64, Vec<f64>>,
}

/// One episode's rows: `range` into the buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeRows {
    pub id: i64,
    pub segment: String,
    pub range: std::ops::Range<usize>,
}

impl Buffer {
    pub fn new(observation_names: Vec<String>) -> Buffer {
        let k = observation_names.len();
        Buffer { observation_names, observations: vec![Vec::new(); k], ..Buffer::default() }
    }

    pub fn len(&self) -> usize {
        self.step.len()
    }

    pub fn is_empty(&self) -> bool {
        self.step.is_empty()
    }

    /// The observation of row `i`.
    pub fn observation(&self, i: usize) -> Vec<f64> {
        self.observations.iter().map(|c| c[i]).collect()
    }

    /// Appends another buffer with the same observation columns.
    pub fn extend(&mut self, other: Buffer) {
        debug_assert_eq!(self.observation_names, other.observation_names);
        self.episode.extend(other.episode);
        self.segment.extend(other.segment);
        self.step.extend(other.step);
        self.ts.extend(other.ts);
        for (mine, theirs) in self.observations.iter_mut().zip(other.observations) {
            mine.extend(theirs);
        }
        self.action.extend(other.action);
        self.reward.extend(other.reward);
        self.pnl.extend(other.pnl);
        self.drawdown_penalty.extend(other.drawdown_penalty);
        self.streak_penalty.extend(other.streak_penalty);
        self.terminal.extend(other.terminal);
        self.timeout.extend(other.timeout);
        self.equity.extend(other.equity);
        self.final_observations.extend(other.final_observations);
    }

    /// The episodes in row order (rows of an episode are contiguous).
    pub fn episodes(&self) -> Vec<EpisodeRows> {
        let mut out: Vec<EpisodeRows> = Vec::new();
        for i in 0..self.len() {
            match out.last_mut() {
                Some(e) if e.id == self.episode[i] => e.range.end = i + 1,
                _ => out.push(EpisodeRows { id: self.episode[i], segment: self.segment[i].clone(), range: i..i + 1 }),
            }
        }
        out
    }

    /// The invariants every reader relies on; the error names the episode and row.
    pub fn check(&self, actions: usize) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for e in self.episodes() {
            if !seen.insert(e.id) {
                bail!(
                    "episode {} appears in two separate runs of rows; a buffer keeps an episode's steps together",
                    e.id
                );
            }
            let rows = e.range.clone();
            if rows.len() < 2 && !self.terminal[rows.start] {
                bail!(
                    "episode {} has a single step (row {}) and no liquidation ended it; every episode has at least two",
                    e.id,
                    rows.start
                );
            }
            for (k, i) in rows.clone().enumerate() {
                if self.step[i] != k as i64 {
                    bail!(
                        "episode {} row {i}: step {} where {k} was due; steps count from 0 without gaps",
                        e.id,
                        self.step[i]
                    );
                }
                if self.segment[i] != e.segment {
                    bail!("episode {} row {i}: segment `{}` inside a `{}` episode", e.id, self.segment[i], e.segment);
                }
                let last = i + 1 == rows.end;
                let ends = self.terminal[i] as u8 + self.timeout[i] as u8;
                if last && ends != 1 {
                    bail!(
                        "episode {} ends at row {i} with terminal = {} and timeout = {}; an episode ends in exactly one of them",
                        e.id,
                        self.terminal[i],
                        self.timeout[i]
                    );
                }
                if !last && ends != 0 {
                    bail!("episode {} row {i}: terminal or timeout before the episode's last step", e.id);
                }
                if !(0..actions as i64).contains(&self.action[i]) {
                    bail!("episode {} row {i}: action {} outside 0..{actions}", e.id, self.action[i]);
                }
                for (j, c) in self.observations.iter().enumerate() {
                    if !c[i].is_finite() {
                        bail!(
                            "episode {} row {i}: observation `{}` is {}; a buffer holds only finite observations",
                            e.id,
                            self.observation_names[j],
                            c[i]
                        );
                    }
                }
                for (name, v) in [("reward", self.reward[i]), ("equity", self.equity[i])] {
                    if !v.is_finite() {
                        bail!("episode {} row {i}: {name} is {v}", e.id);
                    }
                }
            }
        }
        Ok(())
    }

    pub fn to_frame(&self) -> Result<DataFrame> {
        let ts = Int64Chunked::from_vec("ts".into(), self.ts.clone())
            .into_datetime(TimeUnit::Milliseconds, Some(polars::prelude::TimeZone::UTC));
        let mut columns: Vec<Column> = vec![
            Series::new("episode_id".into(), &self.episode).into(),
            Series::new("segment".into(), &self.segment).into(),
            Series::new("step".into(), &self.step).into(),
            ts.into_series().into(),
        ];
        for (name, values) in self.observation_names.iter().zip(&self.observations) {
            columns.push(Series::new(format!("{OBS_PREFIX}{name}").into(), values).into());
        }
        columns.extend([
            Series::new("action".into(), &self.action).into(),
            Series::new("reward".into(), &self.reward).into(),
            Series::new("pnl".into(), &self.pnl).into(),
            Series::new("drawdown_penalty".into(), &self.drawdown_penalty).into(),
            Series::new("streak_penalty".into(), &self.streak_penalty).into(),
            Series::new("terminal".into(), &self.terminal).into(),
            Series::new("timeout".into(), &self.timeout).into(),
            Series::new("equity".into(), &self.equity).into(),
        ]);
        Ok(DataFrame::new_infer_height(columns)?)
    }

    /// Reads a buffer written by `export_buffer`, checking its columns and invariants.
    pub fn read(path: &Path, actions: usize) -> Result<Buffer> {
        let df = pipeline_artifacts::read_table(path)?;
        let name = path.display();
        for c in ["episode_id", "segment", "step", "ts", "action", "reward", "terminal", "timeout"] {
            if df.column(c).is_err() {
                bail!("{name}: no `{c}` column; wire the `buffer` output of an `export_buffer` stage");
            }
        }
        let observation_names: Vec<String> =
            df.get_column_names().iter().filter_map(|c| c.strip_prefix(OBS_PREFIX).map(str::to_string)).collect();
        if observation_names.is_empty() {
            bail!("{name}: no observation columns (`{OBS_PREFIX}*`)");
        }
        let ints = |c: &str| -> Result<Vec<i64>> {
            let s = df.column(c)?.as_materialized_series().cast(&DataType::Int64)?;
            s.i64()?
                .iter()
                .enumerate()
                .map(|(i, v)| v.ok_or_else(|| anyhow!("{name}: row {i}: `{c}` is null")))
                .collect()
        };
        let bools = |c: &str| -> Result<Vec<bool>> {
            df.column(c)?
                .as_materialized_series()
                .bool()
                .map_err(|_| anyhow!("{name}: `{c}` is not a boolean column"))?
                .iter()
                .enumerate()
                .map(|(i, v)| v.ok_or_else(|| anyhow!("{name}: row {i}: `{c}` is null")))
                .collect()
        };
        let floats = |c: &str| -> Result<Vec<f64>> {
            if df.column(c).is_err() {
                return Ok(vec![0.0; df.height()]);
            }
            column_f64(&df, c)
        };
        let segment: Vec<String> = df
            .column("segment")?
            .as_materialized_series()
            .str()
            .map_err(|_| anyhow!("{name}: `segment` is not text"))?
            .iter()
            .map(|v| v.unwrap_or("").to_string())
            .collect();
        let buffer = Buffer {
            observations: observation_names
                .iter()
                .map(|o| column_f64(&df, &format!("{OBS_PREFIX}{o}")))
                .collect::<Result<_>>()?,
            observation_names,
            episode: ints("episode_id")?,
            segment,
            step: ints("step")?,
            ts: column_ms(&df, "ts")?
                .into_iter()
                .enumerate()
                .map(|(i, v)| v.ok_or_else(|| anyhow!("{name}: row {i}: `ts` is null")))
                .collect::<Result<_>>()?,
            action: ints("action")?,
            reward: column_f64(&df, "reward")?,
            pnl: floats("pnl")?,
            drawdown_penalty: floats("drawdown_penalty")?,
            streak_penalty: floats("streak_penalty")?,
            terminal: bools("terminal")?,
            timeout: bools("timeout")?,
            equity: floats("equity")?,
            final_observations: BTreeMap::new(),
        };
        buffer.check(actions).map_err(|e| anyhow!("{name}: {e}"))?;
        Ok(buffer)
    }

    /// d3rlpy's HDF5 layout of the episodes of `segment`, as bytes (see the module doc).
    pub fn d3rlpy_bytes(&self, segment: &str) -> Result<Vec<u8>> {
        let episodes: Vec<EpisodeRows> = self.episodes().into_iter().filter(|e| e.segment == segment).collect();
        let mut file = hdf5_pure::FileBuilder::new();
        file.create_dataset("columns").with_vlen_strings(&["observations", "actions", "rewards", "terminated"]);
        file.create_dataset("num_episodes").with_i64_data(&[episodes.len() as i64]).with_shape(&[]);
        let k = self.observations.len();
        // numpy's bool, as h5py stores it: an enum over int8 with FALSE = 0 and TRUE = 1.
        let bool_type = hdf5_pure::EnumTypeBuilder::with_base(hdf5_pure::make_i8_type())
            .value("FALSE", 0)
            .value("TRUE", 1)
            .build()
            .map_err(|e| anyhow!("building the HDF5 bool type: {e}"))?;
        for (i, e) in episodes.iter().enumerate() {
            let rows = e.range.clone();
            let terminated = self.terminal[rows.end - 1];
            // An episode that ended by timeout has one more observation, the state after its
            // last step: d3rlpy takes the last row of an episode that is not terminated as the
            // next observation only (its action and reward are not used), so without it the
            // last step (the forced close, with its fee) would be lost.
            let last = if terminated { None } else { self.final_observations.get(&e.id) };
            if !terminated && last.is_none() {
                bail!(
                    "episode {}: no observation after its last step; the d3rlpy layout is written by export_buffer",
                    e.id
                );
            }
            let steps = (rows.len() + last.is_some() as usize) as u64;
            let mut observations = Vec::with_capacity(steps as usize * k);
            for r in rows.clone() {
                observations.extend(self.observations.iter().map(|c| c[r] as f32));
            }
            let mut actions = self.action[rows.clone()].to_vec();
            let mut rewards: Vec<f32> = self.reward[rows.clone()].iter().map(|r| *r as f32).collect();
            if let Some(last) = last {
                observations.extend(last.iter().map(|v| *v as f32));
                actions.push(super::env::HOLD as i64);
                rewards.push(0.0);
            }
            file.create_dataset(&format!("observations_{i}"))
                .with_f32_data(&observations)
                .with_shape(&[steps, k as u64]);
            file.create_dataset(&format!("actions_{i}")).with_i64_data(&actions).with_shape(&[steps, 1]);
            file.create_dataset(&format!("rewards_{i}")).with_f32_data(&rewards).with_shape(&[steps, 1]);
            file.create_dataset(&format!("terminated_{i}"))
                .with_enum_u8_data(bool_type.clone(), &[terminated as u8])
                .with_shape(&[]);
        }
        file.create_dataset("version").with_vlen_strings(&[D3RLPY_VERSION]).with_shape(&[]);
        file.finish().map_err(|e| anyhow!("writing the d3rlpy HDF5 file: {e}"))
    }

    /// Per-episode sums, for reports: (id, segment, steps, return, pnl, ended by).
    pub fn episode_summaries(&self) -> Vec<(i64, String, usize, f64, f64, &'static str)> {
        self.episodes()
            .into_iter()
            .map(|e| {
                let r = e.range.clone();
                let last = r.end - 1;
                (
                    e.id,
                    e.segment,
                    r.len(),
                    self.reward[r.clone()].iter().sum(),
                    self.pnl[r].iter().sum(),
                    if self.terminal[last] { "terminal" } else { "timeout" },
                )
            })
            .collect()
    }

    /// How often each action was taken, by label.
    pub fn action_counts(&self, labels: &[String]) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for &a in &self.action {
            *counts.entry(labels.get(a as usize).cloned().unwrap_or_else(|| a.to_string())).or_insert(0) += 1;
        }
        counts
    }

    /// The first and last observation time, for messages.
    pub fn time_range(&self) -> String {
        match (self.ts.iter().min(), self.ts.iter().max()) {
            (Some(a), Some(b)) => format!("{} .. {}", format_ms(*a), format_ms(*b)),
            _ => "no rows".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two episodes of three steps (the second ends by liquidation), one observation column.
    fn buffer() -> Buffer {
        let mut b = Buffer::new(vec!["x".into()]);
        for (episode, terminal) in [(1, false), (2, true)] {
            for step in 0..3 {
                b.episode.push(episode);
                b.segment.push("train".into());
                b.step.push(step);
                b.ts.push(episode * 1000 + step * 60_000);
                b.observations[0].push(step as f64);
                b.action.push(0);
                b.reward.push(0.0);
                b.pnl.push(0.0);
                b.drawdown_penalty.push(0.0);
                b.streak_penalty.push(0.0);
                b.terminal.push(terminal && step == 2);
                b.timeout.push(!terminal && step == 2);
                b.equity.push(1.0);
            }
        }
        b.final_observations.insert(1, vec![3.0]);
        b
    }

    #[test]
    fn the_invariants_are_checked_and_the_bad_row_named() {
        assert!(buffer().check(2).is_ok());
        type Breaks = fn(&mut Buffer);
        let cases: [(&str, Breaks); 6] = [
            ("exactly one of them", |b| b.timeout[2] = false),
            ("before the episode's last step", |b| b.terminal[1] = true),
            ("observation `x` is NaN", |b| b.observations[0][4] = f64::NAN),
            ("outside 0..2", |b| b.action[0] = 5),
            ("steps count from 0", |b| b.step[1] = 2),
            ("reward is inf", |b| b.reward[3] = f64::INFINITY),
        ];
        for (message, break_it) in cases {
            let mut b = buffer();
            break_it(&mut b);
            let err = b.check(2).unwrap_err().to_string();
            assert!(err.contains(message) && err.contains("episode"), "{message}: {err}");
        }
        // A single step is an episode only when a liquidation ended it.
        let mut b = buffer();
        for v in [&mut b.step, &mut b.episode] {
            v.truncate(4);
        }
        let keep = |b: &mut Buffer| {
            b.segment.truncate(4);
            b.ts.truncate(4);
            b.observations[0].truncate(4);
            b.action.truncate(4);
            b.reward.truncate(4);
            b.pnl.truncate(4);
            b.drawdown_penalty.truncate(4);
            b.streak_penalty.truncate(4);
            b.terminal.truncate(4);
            b.timeout.truncate(4);
            b.equity.truncate(4);
        };
        keep(&mut b);
        b.terminal[3] = true;
        assert!(b.check(2).is_ok(), "a first-step liquidation");
        b.terminal[3] = false;
        b.timeout[3] = true;
        assert!(b.check(2).unwrap_err().to_string().contains("single step"));
    }

    #[test]
    fn the_d3rlpy_bytes_are_the_same_every_time() {
        let b = buffer();
        let first = b.d3rlpy_bytes("train").unwrap();
        assert_eq!(first, b.d3rlpy_bytes("train").unwrap());
        assert!(first.starts_with(b"\x89HDF\r\n\x1a\n"), "an HDF5 signature");
        let mut missing = b.clone();
        missing.final_observations.clear();
        assert!(missing.d3rlpy_bytes("train").unwrap_err().to_string().contains("no observation after its last step"));
    }
}
