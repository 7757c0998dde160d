//! `pipeline audit leakage`: proves that a stage's output at time t depends on inputs at or
//! before t only. The stage runs once on its full inputs and again on inputs cut at random times;
//! every output value at or before a cut must be the same in both runs.
//!
//! The engine drives the stage and knows nothing of tables: cutting and comparing are
//! `pipeline-artifacts` functions.

use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use pipeline_artifacts::ArtifactKind;
use pipeline_cache::{Hash, Store};
use serde::Serialize;

use crate::graph::Graph;
use crate::stage::{InputArtifact, NoReporter, StageContext};

#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// How many cut times to try.
    pub cuts: usize,
    pub seed: u64,
    /// The time column of the inputs and outputs.
    pub time_column: String,
}

/// One column's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnVerdict {
    pub output: String,
    pub column: String,
    pub leaks: bool,
    /// The first difference found: cut time, row time, full value, value computed on the cut input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub example: Option<LeakExample>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LeakExample {
    pub cut: String,
    pub at: String,
    pub full: String,
    pub truncated: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    pub stage: String,
    pub cuts: Vec<String>,
    pub columns: Vec<ColumnVerdict>,
}

impl AuditReport {
    pub fn leaking(&self) -> Vec<&ColumnVerdict> {
        self.columns.iter().filter(|c| c.leaks).collect()
    }
}

fn show_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or(ms.to_string())
}

/// Most boundary cuts an audit makes (on top of `AuditOptions::cuts` random ones).
pub const MAX_BOUNDARY_CUTS: usize = 64;

/// Where to cut. A leak shows only when a cut falls where it matters: right after a row whose
/// output row also takes a later input row (a merge: two monthly bars in one slot), or before a
/// gap of a kind seen once. So every input row (past the first tenth) gets a class: the gap to
/// the next row, how many input rows share its output row (the latest output time at or before
/// it), and its place among them. One cut per class (the first row of that class after a seeded
/// shuffle, and one a smallest gap after it when the row is followed by a longer gap; at most
/// `MAX_BOUNDARY_CUTS` in all), then `options.cuts` random rows. A one-bar look-ahead at any
/// kind of boundary past the first tenth is therefore caught with the defaults when the input
/// has at most 64 such cuts to make; beyond that, each random cut finds a leak at a boundary
/// kind that a share p of rows has with probability p.
fn cut_times(times: &[i64], output_times: &[i64], options: &AuditOptions) -> Vec<i64> {
    let mut times = times.to_vec();
    times.sort_unstable();
    let mut outputs = output_times.to_vec();
    outputs.sort_unstable();
    outputs.dedup();
    let mut state = options.seed ^ 0x5DEE_CE66_D1CE_4E5B;
    let mut next = move || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    let lo = times.len() / 10;
    // Gaps in powers of two of the smallest one: a gappy minute series has a few kinds of gap,
    // not hundreds.
    let min_gap = times.windows(2).map(|w| w[1] - w[0]).filter(|g| *g > 0).min().unwrap_or(1);
    let gap_class = |gap: i64| if gap <= 0 { -1 } else { (64 - (gap / min_gap).leading_zeros()) as i64 };
    // The output row (index) each input row falls in.
    let bucket_of = |t: i64| outputs.partition_point(|&o| o <= t);
    let buckets: Vec<usize> = times.iter().map(|&t| bucket_of(t)).collect();
    let mut classes: std::collections::BTreeMap<(i64, usize, usize), Vec<usize>> = Default::default();
    let mut start = 0;
    while start < times.len() {
        let mut end = start + 1;
        while end < times.len() && buckets[end] == buckets[start] {
            end += 1;
        }
        let size = end - start;
        for i in start..end {
            if i >= lo && i + 1 < times.len() {
                // Positions beyond the first few and the last are alike; keep the classes few.
                let position = if i - start < 3 {
                    i - start
                } else if i + 1 == end {
                    usize::MAX
                } else {
                    3
                };
                classes.entry((gap_class(times[i + 1] - times[i]), size.min(1000), position)).or_default().push(i);
            }
        }
        start = end;
    }
    let mut chosen: Vec<(u64, i64)> = Vec::new();
    for rows in classes.values() {
        let pick = rows[next() as usize % rows.len()];
        chosen.push((next(), times[pick]));
        // Inside a gap, too: output rows made for the gap (fills) lie after the row before it.
        let gap = times[pick + 1] - times[pick];
        if gap > min_gap {
            chosen.push((next(), times[pick] + min_gap));
        }
    }
    chosen.sort_unstable();
    let mut cuts: Vec<i64> = chosen.into_iter().take(MAX_BOUNDARY_CUTS).map(|(_, t)| t).collect();
    if times.len() > lo + 1 {
        for _ in 0..options.cuts {
            cuts.push(times[lo + next() as usize % (times.len() - lo - 1)]);
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// Runs the audit of one node whose inputs are already in the store (`inputs`: output records of
/// its producers, in the node's input order).
pub fn audit_node(
    graph: &Graph,
    node_idx: usize,
    inputs: &[(String, ArtifactKind, Hash)],
    store: &Store,
    options: &AuditOptions,
) -> Result<AuditReport> {
    let node = &graph.nodes[node_idx];
    if inputs.is_empty() {
        bail!("stage `{}` has no inputs: there is nothing to cut", node.name);
    }
    for (name, kind, _) in inputs {
        if *kind != ArtifactKind::Table {
            bail!("input `{name}` of `{}` is a {kind}; the leakage audit cuts tables by time", node.name);
        }
    }
    for output in &node.outputs {
        if output.kind != ArtifactKind::Table {
            bail!(
                "output `{}` of `{}` is a {}; the leakage audit compares tables",
                output.name,
                node.name,
                output.kind
            );
        }
    }
    // Held for the whole audit: `gc` and `verify` must not clear tmp/ under it.
    let _lock = store.lock_shared()?;
    let work = store.tmp_path(&format!("audit-{}", node.name));
    std::fs::create_dir_all(&work)?;
    let result = (|| -> Result<AuditReport> {
        let cancel = AtomicBool::new(false);
        let run = |dir: &std::path::Path, artifacts: Vec<InputArtifact>| -> Result<Vec<std::path::PathBuf>> {
            let mut ctx = StageContext::standalone(
                &node.name,
                artifacts,
                node.outputs.clone(),
                dir,
                &node.base_dir,
                &cancel,
                &NoReporter,
            )?;
            node.stage.run(&mut ctx).with_context(|| format!("stage `{}` failed during the audit", node.name))?;
            node.outputs.iter().map(|o| ctx.output_path(&o.name)).collect()
        };
        let full_inputs: Vec<InputArtifact> = inputs
            .iter()
            .map(|(name, kind, hash)| InputArtifact {
                name: name.clone(),
                kind: *kind,
                path: store.object_path(hash),
                hash: *hash,
            })
            .collect();
        let full_outputs = run(&work.join("full"), full_inputs.clone())?;
        // Cut times: rows of the first input, past its first tenth (so that warm-ups are over
        // and windows are full): one at every kind of boundary, then random ones.
        let times = pipeline_artifacts::table_times(&full_inputs[0].path, &options.time_column)?;
        if times.len() < 20 {
            bail!("input `{}` has {} rows; the audit needs at least 20", full_inputs[0].name, times.len());
        }
        let output_times = match node.outputs.first() {
            Some(_) => pipeline_artifacts::table_times(&full_outputs[0], &options.time_column).unwrap_or_default(),
            None => Vec::new(),
        };
        let cuts = cut_times(&times, &output_times, options);
        let mut verdicts: Vec<ColumnVerdict> = Vec::new();
        for (cut_idx, &cut) in cuts.iter().enumerate() {
            let dir = work.join(format!("cut{cut_idx}"));
            std::fs::create_dir_all(&dir)?;
            let mut cut_inputs = Vec::new();
            for input in &full_inputs {
                let path = dir.join(format!("in-{}.parquet", cut_inputs.len()));
                pipeline_artifacts::truncate_table(&input.path, &options.time_column, cut, &path)?;
                cut_inputs.push(InputArtifact { path, ..input.clone() });
            }
            let cut_outputs = run(&dir, cut_inputs)?;
            for ((decl, full), part) in node.outputs.iter().zip(&full_outputs).zip(&cut_outputs) {
                for (column, mismatch) in pipeline_artifacts::compare_until(full, part, &options.time_column, cut)? {
                    let existing = verdicts.iter_mut().find(|v| v.output == decl.name && v.column == column);
                    let verdict = match existing {
                        Some(v) => v,
                        None => {
                            verdicts.push(ColumnVerdict {
                                output: decl.name.clone(),
                                column: column.clone(),
                                leaks: false,
                                example: None,
                            });
                            verdicts.last_mut().expect("just pushed")
                        }
                    };
                    if let Some(m) = mismatch
                        && !verdict.leaks
                    {
                        verdict.leaks = true;
                        verdict.example = Some(LeakExample {
                            cut: show_time(cut),
                            at: show_time(m.timestamp_ms),
                            full: m.full,
                            truncated: m.truncated,
                        });
                    }
                }
            }
            std::fs::remove_dir_all(&dir).ok();
        }
        Ok(AuditReport {
            stage: node.name.clone(),
            cuts: cuts.iter().map(|&c| show_time(c)).collect(),
            columns: verdicts,
        })
    })();
    std::fs::remove_dir_all(&work).ok();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> AuditOptions {
        AuditOptions { cuts: 3, seed: 0, time_column: "timestamp".into() }
    }

    /// One merged pair among 200 regular rows, and one gap: the first row of the pair and a
    /// time inside the gap are always among the cuts.
    #[test]
    fn boundary_cuts_find_the_single_merge_and_the_gap() {
        let hour = 3_600_000;
        let mut input: Vec<i64> = (0..200).map(|i| i * hour).collect();
        input.push(150 * hour + hour / 2); // an off-grid row merged into hour 150
        input.retain(|&t| t != 170 * hour); // a one-hour gap after hour 169
        input.sort_unstable();
        let output: Vec<i64> = (0..200).map(|i| i * hour).collect();
        for seed in 0..20 {
            let cuts = cut_times(&input, &output, &AuditOptions { seed, ..options() });
            assert!(cuts.contains(&(150 * hour)), "seed {seed}: {cuts:?}");
            assert!(cuts.iter().any(|&c| c > 169 * hour && c < 171 * hour), "seed {seed}: {cuts:?}");
            assert!(cuts.len() <= MAX_BOUNDARY_CUTS + 3);
        }
    }
}
