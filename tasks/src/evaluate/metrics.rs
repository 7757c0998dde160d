//! Binary classification metrics, written out so that their definitions are on the page and
//! checked against reference values computed elsewhere (see the tests).

use std::ops::Range;

/// Area under the ROC curve: the probability that a random positive scores above a random
/// negative, ties counting one half (the Mann-Whitney U statistic). `None` without both classes.
pub fn auc(labels: &[bool], scores: &[f64]) -> Option<f64> {
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Average ranks over ties.
    let mut ranks = vec![0.0; labels.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j + 1) as f64 / 2.0; // ranks are 1-based: mean of i+1 ..= j
        for &k in &order[i..j] {
            ranks[k] = rank;
        }
        i = j;
    }
    let positives = labels.iter().filter(|l| **l).count() as f64;
    let negatives = labels.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    let rank_sum: f64 = labels.iter().zip(&ranks).filter(|(l, _)| **l).map(|(_, r)| r).sum();
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

/// Mean negative log-likelihood of the labels, probabilities clipped to [1e-15, 1 - 1e-15].
pub fn log_loss(labels: &[bool], probabilities: &[f64]) -> f64 {
    let eps = 1e-15;
    let total: f64 = labels
        .iter()
        .zip(probabilities)
        .map(|(&y, &p)| {
            let p = p.clamp(eps, 1.0 - eps);
            if y { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum();
    total / labels.len().max(1) as f64
}

/// Mean squared difference between the probability and the outcome.
pub fn brier(labels: &[bool], probabilities: &[f64]) -> f64 {
    let total: f64 = labels.iter().zip(probabilities).map(|(&y, &p)| (p - if y { 1.0 } else { 0.0 }).powi(2)).sum();
    total / labels.len().max(1) as f64
}

/// Counts at a decision threshold.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Confusion {
    pub true_positive: u64,
    pub false_positive: u64,
    pub true_negative: u64,
    pub false_negative: u64,
}

impl Confusion {
    pub fn at(labels: &[bool], probabilities: &[f64], threshold: f64) -> Confusion {
        let mut c = Confusion::default();
        for (&y, &p) in labels.iter().zip(probabilities) {
            match (p > threshold, y) {
                (true, true) => c.true_positive += 1,
                (true, false) => c.false_positive += 1,
                (false, false) => c.true_negative += 1,
                (false, true) => c.false_negative += 1,
            }
        }
        c
    }

    /// Share of correct calls (the hit rate of a long/short signal).
    pub fn accuracy(&self) -> f64 {
        let total = self.true_positive + self.false_positive + self.true_negative + self.false_negative;
        (self.true_positive + self.true_negative) as f64 / total.max(1) as f64
    }

    pub fn precision(&self) -> Option<f64> {
        let called = self.true_positive + self.false_positive;
        (called > 0).then(|| self.true_positive as f64 / called as f64)
    }

    pub fn recall(&self) -> Option<f64> {
        let actual = self.true_positive + self.false_negative;
        (actual > 0).then(|| self.true_positive as f64 / actual as f64)
    }
}

/// The fewest blocks of rows a bootstrap interval is computed from.
pub const MIN_BLOCKS: usize = 5;

/// A percentile interval from a moving-block bootstrap: rows are resampled in contiguous blocks
/// of `block` so that the serial dependence of minute data is kept, `draws` times, with a fixed
/// seed. `statistic` gets the resampled row indices. `None` when there are fewer than
/// [`MIN_BLOCKS`] blocks of rows: with so few distinct resamples the interval would be far too
/// narrow (with one block, a single point), and a difference would look significant when it is not.
pub fn block_bootstrap_interval(
    n: usize,
    block: usize,
    draws: usize,
    seed: u64,
    level: f64,
    statistic: impl FnMut(&[usize]) -> Option<f64>,
) -> Option<(f64, f64)> {
    stratified_block_bootstrap_interval(std::slice::from_ref(&(0..n)), block, draws, seed, level, statistic)
}

/// [`block_bootstrap_interval`] within strata: each stratum (a walk-forward fold's test window)
/// is resampled from its own rows to its own size, so every resample keeps each fold's share and
/// no block straddles two folds. With one stratum it is the plain moving-block bootstrap, draw
/// for draw. A stratum shorter than `block` is one block (it adds no resampling variance of its
/// own); only whole blocks count towards [`MIN_BLOCKS`].
pub fn stratified_block_bootstrap_interval(
    strata: &[Range<usize>],
    block: usize,
    draws: usize,
    seed: u64,
    level: f64,
    mut statistic: impl FnMut(&[usize]) -> Option<f64>,
) -> Option<(f64, f64)> {
    let block = usable_block(strata, block, draws)?;
    let n: usize = strata.iter().map(|s| s.len()).sum();
    let mut rng = crate::synth_table::SplitMix64::new(seed);
    let mut values = Vec::with_capacity(draws);
    let mut rows = Vec::with_capacity(n);
    let mut blocks = Vec::new();
    for _ in 0..draws {
        draw_blocks(strata, block, &mut rng, &mut blocks);
        rows.clear();
        for &(start, len) in &blocks {
            rows.extend(start..start + len);
        }
        if let Some(value) = statistic(&rows) {
            values.push(value);
        }
    }
    percentile_interval(values, level)
}

/// [`stratified_block_bootstrap_interval`] with the draws computed in parallel: each draw's
/// blocks come from the seed's stream skipped to that draw (every draw takes the same number
/// of random numbers), and `statistic` gets a scratch value of its thread (`scratch`), so the
/// interval is the sequential one, bit for bit, at any thread count.
pub fn stratified_block_bootstrap_interval_par<S, F>(
    strata: &[Range<usize>],
    block: usize,
    draws: usize,
    seed: u64,
    level: f64,
    scratch: impl Fn() -> S + Sync + Send,
    statistic: F,
) -> Option<(f64, f64)>
where
    F: Fn(&[usize], &mut S) -> Option<f64> + Sync + Send,
{
    use rayon::prelude::*;
    let block = usable_block(strata, block, draws)?;
    // Random numbers per draw: one per block, the same for every draw.
    let per_draw: u64 =
        strata.iter().filter(|s| !s.is_empty()).map(|s| s.len().div_ceil(block.min(s.len())) as u64).sum();
    let values: Vec<Option<f64>> = (0..draws as u64)
        .into_par_iter()
        .map_init(
            || (scratch(), Vec::new(), Vec::new()),
            |(state, blocks, rows), d| {
                let mut rng = crate::synth_table::SplitMix64::new(seed);
                rng.skip(d * per_draw);
                draw_blocks(strata, block, &mut rng, blocks);
                rows.clear();
                for &(start, len) in blocks.iter() {
                    rows.extend(start..start + len);
                }
                statistic(rows, state)
            },
        )
        .collect();
    percentile_interval(values.into_iter().flatten().collect(), level)
}

/// The block length the bootstraps resample with (at least one row), or `None` when the strata
/// hold fewer than [`MIN_BLOCKS`] whole blocks or no draws are asked for: the one precondition
/// every interval here shares.
fn usable_block(strata: &[Range<usize>], block: usize, draws: usize) -> Option<usize> {
    let block = block.max(1);
    let whole_blocks: usize = strata.iter().map(|s| s.len() / block).sum();
    (whole_blocks >= MIN_BLOCKS && draws > 0).then_some(block)
}

/// One resample's blocks as (first row, length): per stratum, blocks of `block` rows at random
/// starts inside it until it is filled (the last one cut to fit). Both bootstraps below draw
/// through here, so they resample the same blocks for the same seed.
fn draw_blocks(
    strata: &[Range<usize>],
    block: usize,
    rng: &mut crate::synth_table::SplitMix64,
    blocks: &mut Vec<(usize, usize)>,
) {
    blocks.clear();
    for stratum in strata.iter().filter(|s| !s.is_empty()) {
        let (len, size) = (stratum.len(), block.min(stratum.len()));
        let mut filled = 0;
        while filled < len {
            let start = stratum.start + (rng.next_u64() % (len - size + 1) as u64) as usize;
            let take = size.min(len - filled);
            blocks.push((start, take));
            filled += take;
        }
    }
}

fn percentile_interval(mut values: Vec<f64>, level: f64) -> Option<(f64, f64)> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    let pick = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    Some((pick(tail), pick(1.0 - tail)))
}

/// [`stratified_block_bootstrap_interval`] of the mean of `values` (indexed like the strata's
/// rows), the same blocks draw for draw, each block summed from prefix sums: a draw costs one
/// step per block instead of one per row, which is what makes a year of minutes affordable.
pub fn stratified_block_bootstrap_mean_interval(
    values: &[f64],
    strata: &[Range<usize>],
    block: usize,
    draws: usize,
    seed: u64,
    level: f64,
) -> Option<(f64, f64)> {
    let block = usable_block(strata, block, draws)?;
    let n: usize = strata.iter().map(|s| s.len()).sum();
    let mut prefix = Vec::with_capacity(values.len() + 1);
    prefix.push(0.0f64);
    for v in values {
        prefix.push(prefix.last().copied().unwrap_or(0.0) + v);
    }
    let mut rng = crate::synth_table::SplitMix64::new(seed);
    let mut blocks = Vec::new();
    let mut means = Vec::with_capacity(draws);
    for _ in 0..draws {
        draw_blocks(strata, block, &mut rng, &mut blocks);
        let sum: f64 = blocks.iter().map(|&(start, len)| prefix[start + len] - prefix[start]).sum();
        means.push(sum / n as f64);
    }
    percentile_interval(means, level)
}

/// [`stratified_block_bootstrap_mean_interval`] with one stratum: all `values`.
pub fn block_bootstrap_mean_interval(
    values: &[f64],
    block: usize,
    draws: usize,
    seed: u64,
    level: f64,
) -> Option<(f64, f64)> {
    stratified_block_bootstrap_mean_interval(
        values,
        std::slice::from_ref(&(0..values.len())),
        block,
        draws,
        seed,
        level,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values are from scikit-learn's documentation examples (roc_auc_score,
    // log_loss, brier_score_loss), computed there independently of this code.

    /// The prefix-sum bootstrap of a mean draws the same blocks as the row bootstrap: the same
    /// interval up to rounding, strata or not.
    #[test]
    fn mean_bootstrap_equals_the_row_bootstrap_of_the_mean() {
        let mut rng = crate::synth_table::SplitMix64::new(9);
        let values: Vec<f64> = (0..5000).map(|_| rng.next_normal() * 0.01 + 0.001).collect();
        let by_rows = |strata: &[Range<usize>]| {
            stratified_block_bootstrap_interval(strata, 60, 300, 4, 0.9, |rows| {
                Some(rows.iter().map(|&r| values[r]).sum::<f64>() / rows.len() as f64)
            })
            .unwrap()
        };
        let one = std::slice::from_ref(&(0..5000));
        let folds = [0..1200, 1200..1250, 1250..5000];
        for strata in [one, &folds[..]] {
            let (a, b) = by_rows(strata);
            let (c, d) = stratified_block_bootstrap_mean_interval(&values, strata, 60, 300, 4, 0.9).unwrap();
            assert!((a - c).abs() < 1e-12 && (b - d).abs() < 1e-12, "{strata:?}: {a} {b} vs {c} {d}");
        }
        let (a, b) = block_bootstrap_mean_interval(&values, 60, 300, 4, 0.9).unwrap();
        assert!(a < 0.001 && 0.001 < b, "the true mean is inside: {a} {b}");
        assert_eq!(block_bootstrap_mean_interval(&values[..200], 60, 300, 4, 0.9), None, "3 blocks are too few");
    }

    /// Parallel draws are the sequential draws: the same interval, bit for bit.
    #[test]
    fn parallel_bootstrap_equals_the_sequential_one() {
        let mut rng = crate::synth_table::SplitMix64::new(5);
        let values: Vec<f64> = (0..3000).map(|_| rng.next_normal()).collect();
        let folds = [0..1000, 1000..1090, 1090..3000];
        let median = |rows: &[usize], buf: &mut Vec<f64>| {
            buf.clear();
            buf.extend(rows.iter().map(|&r| values[r]));
            buf.sort_by(f64::total_cmp);
            Some(buf[buf.len() / 2])
        };
        let sequential =
            stratified_block_bootstrap_interval(&folds, 50, 200, 8, 0.9, |rows| median(rows, &mut Vec::new()));
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let parallel =
                pool.install(|| stratified_block_bootstrap_interval_par(&folds, 50, 200, 8, 0.9, Vec::new, median));
            assert_eq!(parallel, sequential, "{threads} threads");
        }
    }

    #[test]
    fn auc_matches_scikit_learn() {
        // sklearn.metrics.roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
        let auc = auc(&[false, false, true, true], &[0.1, 0.4, 0.35, 0.8]).unwrap();
        assert!((auc - 0.75).abs() < 1e-12);
        // Ties count one half: all scores equal -> 0.5.
        assert_eq!(super::auc(&[false, true, false, true], &[0.3; 4]), Some(0.5));
        assert_eq!(super::auc(&[true, true], &[0.1, 0.2]), None);
    }

    #[test]
    fn log_loss_matches_scikit_learn() {
        // log_loss(["spam", "ham", "ham", "spam"], [[.1, .9], [.9, .1], [.8, .2], [.35, .65]])
        // == 0.21616187468057912 (spam = positive)
        let loss = log_loss(&[true, false, false, true], &[0.9, 0.1, 0.2, 0.65]);
        assert!((loss - 0.216_161_874_680_579_12).abs() < 1e-12, "{loss}");
    }

    #[test]
    fn brier_matches_scikit_learn() {
        // brier_score_loss([0, 1, 1, 0], [0.1, 0.9, 0.8, 0.3]) == 0.0375
        let score = brier(&[false, true, true, false], &[0.1, 0.9, 0.8, 0.3]);
        assert!((score - 0.0375).abs() < 1e-12, "{score}");
    }

    #[test]
    fn confusion_counts() {
        let c = Confusion::at(&[true, true, false, false, true], &[0.9, 0.4, 0.6, 0.1, 0.7], 0.5);
        assert_eq!(c, Confusion { true_positive: 2, false_positive: 1, true_negative: 1, false_negative: 1 });
        assert!((c.accuracy() - 0.6).abs() < 1e-12);
        assert_eq!(c.precision(), Some(2.0 / 3.0));
        assert_eq!(c.recall(), Some(2.0 / 3.0));
    }

    #[test]
    fn bootstrap_interval_covers_the_mean_and_is_reproducible() {
        let mut rng = crate::synth_table::SplitMix64::new(1);
        let data: Vec<f64> = (0..500).map(|_| 4.5 + rng.next_normal()).collect();
        let mean = |rows: &[usize]| Some(rows.iter().map(|&r| data[r]).sum::<f64>() / rows.len() as f64);
        let a = block_bootstrap_interval(data.len(), 20, 400, 7, 0.95, mean).unwrap();
        let b = block_bootstrap_interval(data.len(), 20, 400, 7, 0.95, mean).unwrap();
        assert_eq!(a, b);
        let sample_mean = data.iter().sum::<f64>() / data.len() as f64;
        // About 2 x 1.96 x sigma / sqrt(n) = 0.18 wide for independent draws.
        assert!(a.0 < sample_mean && a.1 > sample_mean && a.1 - a.0 > 0.05 && a.1 - a.0 < 0.5, "{a:?}");
        // Too few blocks: no interval rather than a point that looks significant.
        assert_eq!(block_bootstrap_interval(99, 20, 400, 7, 0.95, mean), None);
        assert!(block_bootstrap_interval(100, 20, 400, 7, 0.95, mean).is_some());
    }

    #[test]
    fn stratified_bootstrap_resamples_within_strata_and_reduces_to_the_plain_one() {
        let mut rng = crate::synth_table::SplitMix64::new(3);
        let data: Vec<f64> = (0..600).map(|_| rng.next_normal()).collect();
        let mean = |rows: &[usize]| Some(rows.iter().map(|&r| data[r]).sum::<f64>() / rows.len() as f64);
        // One stratum: the plain bootstrap, draw for draw.
        assert_eq!(
            stratified_block_bootstrap_interval(std::slice::from_ref(&(0..600)), 20, 300, 9, 0.95, mean),
            block_bootstrap_interval(600, 20, 300, 9, 0.95, mean)
        );
        // Every resample keeps each stratum's size and draws only from its own rows.
        let strata = [0..250, 250..260, 260..600];
        stratified_block_bootstrap_interval(&strata, 20, 50, 9, 0.95, |rows| {
            assert_eq!(rows.len(), 600);
            assert!(rows[..250].iter().all(|r| *r < 250));
            assert_eq!(&rows[250..260], &(250..260).collect::<Vec<_>>()[..]);
            assert!(rows[260..].iter().all(|r| (260..600).contains(r)));
            Some(0.0)
        });
        // A level shift between strata is not resampling noise: the stratified interval of the
        // overall mean keeps each stratum's share; the plain one lets it vary and is far wider.
        let shifted: Vec<f64> = (0..600).map(|r| data[r] + if r < 300 { 3.0 } else { -3.0 }).collect();
        let overall = |rows: &[usize]| Some(rows.iter().map(|&r| shifted[r]).sum::<f64>() / rows.len() as f64);
        let within = stratified_block_bootstrap_interval(&[0..300, 300..600], 20, 300, 9, 0.95, overall).unwrap();
        let mixed = block_bootstrap_interval(600, 20, 300, 9, 0.95, overall).unwrap();
        assert!(within.1 - within.0 < 0.4 && mixed.1 - mixed.0 > 4.0 * (within.1 - within.0), "{within:?} {mixed:?}");
        // Too few whole blocks across all strata: no interval.
        assert_eq!(stratified_block_bootstrap_interval(&[0..39, 39..78], 20, 300, 9, 0.95, mean), None);
    }
}
