//! Trailing-window statistics of the `features` stage in a pass or two each, written by hand: as
//! polars expressions (rolling sum, mean and std, each a separate pass with its own temporary
//! arrays, plus the null and threshold masks) the volume z-score, VWAP deviation, volume slope
//! and realized volatility took about 140 ms of CPU on 1M rows; here they take a few ms each.
//! The rules are polars' (`min_periods` = the window): a value needs `w` non-null rows, the
//! window ending at t and including it. Nulls are NaN inside (the inputs are checked finite, so
//! NaN can only mean a missing bar) and null in the output columns. The equivalence with the
//! expression forms they replace is tested below.

/// Drives a trailing-window statistic over `n` rows: calls `emit(t, rows, summary)` for every
/// row whose window of the last `w` rows has no null row. Not a running add-and-subtract sum: that
/// carries the rounding residue of every value that ever passed through (after a spike of 1e6 in
/// a volume column, a 2-row variance is off in the 9th digit), and makes a value depend on where
/// the table starts. Instead the rows are cut into blocks of `w`, and a window is a suffix of one
/// block (kept from the previous block's backward pass) merged with a prefix of the next: O(n),
/// memory O(w), each value a function of at most 2w rows.
///
/// The blocks are placed by `anchor`, the absolute position of row 0 on its grid (a block starts
/// where `(row + anchor) % w == 0`), and values come from `min_rows` rows on (the window being
/// the last `min(t + 1, w)` rows). Two tables that
/// share rows on one grid then compute those rows' windows from the same blocks in the same
/// order, bit for bit, wherever each table starts: what a partition computed on a slice of time
/// needs (docs/nightly.md).
#[allow(clippy::too_many_arguments)]
fn over_anchored_windows<S: Copy>(
    n: usize,
    w: usize,
    anchor: usize,
    min_rows: usize,
    empty: S,
    is_null: impl Fn(usize) -> bool,
    push: impl Fn(S, usize) -> S,
    merge: impl Fn(S, S) -> S,
    mut emit: impl FnMut(usize, usize, S),
) {
    let w = w.max(1);
    let min_rows = min_rows.clamp(1, w);
    let mut suffix = vec![empty; w]; // the previous block's suffixes, by offset in it
    let mut previous_start = 0usize;
    let mut last_null: Option<usize> = None;
    let mut start = 0usize;
    while start < n {
        let length = if start == 0 { w - anchor % w } else { w };
        let end = (start + length).min(n);
        let mut prefix = empty;
        for t in start..end {
            if is_null(t) {
                last_null = Some(t);
            } else {
                prefix = push(prefix, t);
            }
            let rows = (t + 1).min(w);
            if rows < min_rows || last_null.is_some_and(|k| k + w > t) {
                continue;
            }
            let first = t + 1 - rows;
            emit(t, rows, if first >= start { prefix } else { merge(suffix[first - previous_start], prefix) });
        }
        let mut summary = empty;
        for t in (start..end).rev() {
            if !is_null(t) {
                summary = push(summary, t);
            }
            suffix[t - start] = summary;
        }
        previous_start = start;
        start = end;
    }
}

/// Runs of rows one `step` apart: a longer gap (a hole `align_utc` left for `max_fill`) ends a
/// run, and no window crosses it.
pub fn grid_runs(times: &[i64], step: i64) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for t in 1..=times.len() {
        if t == times.len() || times[t] - times[t - 1] != step {
            if start < t {
                out.push(start..t);
            }
            start = t;
        }
    }
    out
}

/// Means over the last `w` rows (fewer at the start of a run of the grid, from `min_rows`),
/// with blocks anchored on the grid (`times` / `step`) and never across a hole: each value is
/// the same whatever row the table starts at. NaN where a window holds a null or is too short.
pub fn grid_trailing_mean(values: &[f64], times: &[i64], step: i64, w: usize, min_rows: usize) -> Vec<f64> {
    Grid::new(times, Some(step)).apply(w, |run, anchor| {
        let part = &values[run];
        let mut out = vec![f64::NAN; part.len()];
        over_anchored_windows(
            part.len(),
            w,
            anchor,
            min_rows,
            0.0f64,
            |t| part[t].is_nan(),
            |sum, t| sum + part[t],
            |a, b| a + b,
            |t, rows, sum| out[t] = sum / rows as f64,
        );
        out
    })
}

/// Sums over the next `h` rows after each row, `(t, t + h]`, on the grid (none across a hole or
/// past the end): NaN where fewer than `h` rows follow in the run.
pub fn grid_forward_sum(values: &[f64], times: &[i64], step: i64, h: usize) -> Vec<f64> {
    Grid::new(times, Some(step)).apply(h, |run, anchor| {
        let part = &values[run];
        let mut out = vec![f64::NAN; part.len()];
        over_anchored_windows(
            part.len(),
            h,
            anchor,
            h,
            0.0f64,
            |t| part[t].is_nan(),
            |sum, t| sum + part[t],
            |a, b| a + b,
            // The window ending at t is the forward window of row t - h.
            |t, _, sum| {
                if t >= h {
                    out[t - h] = sum;
                }
            },
        );
        out
    })
}

/// Where the runs of a regular grid start: rows one `step` apart form a run, and a longer gap
/// (a hole `align_utc` leaves for `max_fill`) starts the next. Windows never cross a hole, and a
/// run's blocks are anchored on the grid (its first row's position, `time / step`), so that every
/// window's value is a function of its own rows alone, the same bits whatever row the table
/// starts at: what a partition computed on a slice of time needs (docs/nightly.md). Irregular
/// times (no step) are one run anchored at its first row.
pub struct Grid {
    runs: Vec<(std::ops::Range<usize>, i64)>,
}

impl Grid {
    pub fn new(times: &[i64], step: Option<i64>) -> Grid {
        match step {
            Some(step) if step > 0 => Grid {
                runs: grid_runs(times, step)
                    .into_iter()
                    .map(|r| (r.start..r.end, times[r.start].div_euclid(step)))
                    .collect(),
            },
            _ => Grid { runs: vec![(0..times.len(), 0)] },
        }
    }

    /// True at the first row of each run: no row before it on the grid.
    pub fn run_starts(&self, n: usize) -> Vec<bool> {
        let mut out = vec![false; n];
        for (rows, _) in &self.runs {
            if rows.start < n {
                out[rows.start] = true;
            }
        }
        out
    }

    /// A kernel applied to each run, given the run's rows and its anchor for windows of `w`
    /// rows; the results side by side.
    pub fn apply(&self, w: usize, kernel: impl Fn(std::ops::Range<usize>, usize) -> Vec<f64>) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.runs.last().map_or(0, |(r, _)| r.end));
        for (rows, position) in &self.runs {
            let anchor = position.rem_euclid(w.max(1) as i64) as usize;
            out.extend(kernel(rows.clone(), anchor));
        }
        out
    }
}

/// Sums over the last `w` rows of each column; NaN where the window is not full of non-null rows.
fn sliding_sums<const K: usize>(columns: [&[f64]; K], w: usize, anchor: usize) -> [Vec<f64>; K] {
    let n = columns[0].len();
    let mut out: [Vec<f64>; K] = std::array::from_fn(|_| vec![f64::NAN; n]);
    over_anchored_windows(
        n,
        w,
        anchor,
        w,
        [0.0; K],
        |t| columns.iter().any(|c| c[t].is_nan()),
        |mut sums, t| {
            for (sum, column) in sums.iter_mut().zip(&columns) {
                *sum += column[t];
            }
            sums
        },
        |mut earlier, later| {
            for (a, b) in earlier.iter_mut().zip(later) {
                *a += b;
            }
            earlier
        },
        |t, _, sums| {
            for (o, sum) in out.iter_mut().zip(sums) {
                o[t] = sum;
            }
        },
    );
    out
}

/// Sums over the last `w` rows; NaN where the window holds a null.
pub fn sliding_sum(values: &[f64], w: usize, anchor: usize) -> Vec<f64> {
    let [sums] = sliding_sums([values], w, anchor);
    sums
}

/// Realized volatility: `sqrt(sum of r^2)` over the last `w` rows.
pub fn realized_volatility(r_squared: &[f64], w: usize, anchor: usize) -> Vec<f64> {
    let [sums] = sliding_sums([r_squared], w, anchor);
    sums.into_iter().map(f64::sqrt).collect()
}

/// Count, mean and sum of squared deviations (M2) of the non-null values among the last `w`
/// rows (fewer at the start of a run), where at least `min_count` are non-null (NaN elsewhere): Welford's update within
/// blocks and Chan et al.'s pairwise merge across them, so no cancellation of large sums of
/// squares (a sum-of-squares variance loses 8 digits on ordinary volume).
pub fn moments(values: &[f64], w: usize, anchor: usize, min_count: usize) -> [Vec<f64>; 3] {
    let n = values.len();
    let mut out: [Vec<f64>; 3] = std::array::from_fn(|_| vec![f64::NAN; n]);
    // 1 / count from a table, not a division on the running mean's dependency chain.
    let reciprocal: Vec<f64> = (0..=w.max(1)).map(|k| 1.0 / k.max(1) as f64).collect();
    over_anchored_windows(
        n,
        w,
        anchor,
        1,
        (0usize, 0.0f64, 0.0f64),
        |_| false,
        |(count, mean, m2), t| {
            let x = values[t];
            if x.is_nan() {
                return (count, mean, m2);
            }
            let delta = x - mean;
            let mean = mean + delta * reciprocal[count + 1];
            (count + 1, mean, m2 + delta * (x - mean))
        },
        |(count_a, mean_a, m2_a), (count_b, mean_b, m2_b)| {
            if count_a == 0 || count_b == 0 {
                return if count_a == 0 { (count_b, mean_b, m2_b) } else { (count_a, mean_a, m2_a) };
            }
            let count = count_a + count_b;
            let delta = mean_b - mean_a;
            let (ca, cb, c) = (count_a as f64, count_b as f64, count as f64);
            (count, mean_a + delta * cb / c, m2_a + m2_b + delta * delta * ca * cb / c)
        },
        |t, _, (count, mean, m2)| {
            if count >= min_count.max(1) {
                out[0][t] = count as f64;
                out[1][t] = mean;
                out[2][t] = m2;
            }
        },
    );
    out
}

/// `(x_t - mean) / std` over the last `w` rows (sample std), from `min_count` non-null rows;
/// null where the std is 0 (a flat window) or x_t is null.
pub fn z_score(values: &[f64], w: usize, anchor: usize, min_count: usize) -> Vec<f64> {
    let [count, mean, m2] = moments(values, w, anchor, min_count.max(2));
    (0..values.len())
        .map(|t| {
            let std = (m2[t] / (count[t] - 1.0)).max(0.0).sqrt();
            if std > 0.0 { (values[t] - mean[t]) / std } else { f64::NAN }
        })
        .collect()
}

/// `c_t / VWAP - 1`, VWAP = `sum(typical * v) / sum(v)` over the last `w` rows, typical =
/// `(h + l + c) / 3`; null where the window traded nothing.
pub fn vwap_deviation(high: &[f64], low: &[f64], close: &[f64], volume: &[f64], w: usize, anchor: usize) -> Vec<f64> {
    let traded: Vec<f64> = (0..close.len()).map(|t| (high[t] + low[t] + close[t]) / 3.0 * volume[t]).collect();
    let [value, volume_sum] = sliding_sums([&traded, volume], w, anchor);
    (0..close.len())
        .map(|t| {
            if value[t].is_nan() || volume_sum[t] <= 0.0 {
                return f64::NAN;
            }
            close[t] / (value[t] / volume_sum[t]) - 1.0
        })
        .collect()
}

/// OLS slope of volume on the row index over the last `w` rows, divided by their mean:
/// `sum((k - mid) v_k) / (w var(k)) / mean(v)`, each window summed afresh (no residue, which
/// this ratio would amplify on sparse grids; and a function of the window's rows alone); null
/// where a row is null or the mean is 0.
pub fn volume_slope(volume: &[f64], w: usize) -> Vec<f64> {
    let mid = (w as f64 - 1.0) / 2.0;
    let weights: Vec<f64> = (0..w).map(|k| k as f64 - mid).collect();
    let share = 1.0 / w as f64;
    let var_k = ((w * w) as f64 - 1.0) / 12.0;
    let mut out = vec![f64::NAN; volume.len()];
    let mut last_null: Option<usize> = None;
    for t in 0..volume.len() {
        if volume[t].is_nan() {
            last_null = Some(t);
        }
        if t + 1 < w || last_null.is_some_and(|k| k + w > t) {
            continue;
        }
        let rows = &volume[t + 1 - w..=t];
        let weighted: f64 = rows.iter().zip(&weights).map(|(v, k)| v * k).sum();
        let mean: f64 = rows.iter().map(|v| v * share).sum();
        if mean != 0.0 {
            out[t] = weighted / (w as f64 * var_k) / mean;
        }
    }
    out
}

/// `ATR_t / c_t`, ATR the mean true range `max(h - l, |h - c_{t-1}|, |l - c_{t-1}|)` over the
/// last `n` rows; null where a true range in the window is missing. A mean over a window, not
/// Wilder's recursion: that carries every earlier row, so no slice of time could be computed
/// alone.
pub fn atr_ratio(high: &[f64], low: &[f64], close: &[f64], n: usize, anchor: usize) -> Vec<f64> {
    let greater = |a: f64, b: f64| if a > b { a } else { b };
    let true_range: Vec<f64> = (0..close.len())
        .map(|t| {
            if t == 0 {
                return f64::NAN;
            }
            let (h, l, previous) = (high[t], low[t], close[t - 1]);
            greater(greater(h - l, (h - previous).abs()), (l - previous).abs())
        })
        .collect();
    let [sums] = sliding_sums([&true_range], n.max(1), anchor);
    (0..close.len()).map(|t| sums[t] / n.max(1) as f64 / close[t]).collect()
}

/// The mean over the last `w` rows; NaN where the window is not full of non-null rows.
pub fn sliding_mean(values: &[f64], w: usize, anchor: usize) -> Vec<f64> {
    let [sums] = sliding_sums([values], w, anchor);
    sums.into_iter().map(|s| s / w as f64).collect()
}

#[cfg(test)]
mod tests {
    use polars::prelude::*;

    use super::*;

    fn window(size: usize) -> RollingOptionsFixedWindow {
        RollingOptionsFixedWindow { window_size: size, min_periods: size, ..Default::default() }
    }

    fn window_min(size: usize, min_periods: usize) -> RollingOptionsFixedWindow {
        RollingOptionsFixedWindow { window_size: size, min_periods, ..Default::default() }
    }

    /// Volume-like data with missing rows, a run of zeros (flat, empty windows) and a spike.
    fn sample() -> Vec<Option<f64>> {
        let mut rng = crate::synth_table::SplitMix64::new(12);
        (0..3000)
            .map(|t| match t {
                _ if t % 211 == 7 => None,
                400..=520 => Some(0.0),
                900 => Some(1e6),
                _ => Some(10.0 * (0.5 * rng.next_normal()).exp()),
            })
            .collect()
    }

    fn nan(values: &[Option<f64>]) -> Vec<f64> {
        values.iter().map(|v| v.unwrap_or(f64::NAN)).collect()
    }

    fn assert_same(got: &[f64], expected: &Series, what: &str) {
        let expected: Vec<Option<f64>> = expected.f64().unwrap().iter().collect();
        assert_eq!(got.len(), expected.len());
        let mut values = 0;
        for (t, (g, e)) in got.iter().zip(&expected).enumerate() {
            match e {
                Some(e) if e.is_finite() => {
                    assert!((g - e).abs() <= 1e-9 * e.abs().max(1.0), "{what} row {t}: {g} vs {e}");
                    values += 1;
                }
                _ => assert!(g.is_nan(), "{what} row {t}: {g} vs {e:?}"),
            }
        }
        assert!(values > 1000, "{what}: only {values} values compared");
    }

    fn eval(df: &DataFrame, expr: Expr) -> Series {
        df.clone()
            .lazy()
            .select([expr.alias("x")])
            .collect()
            .unwrap()
            .column("x")
            .unwrap()
            .as_materialized_series()
            .clone()
    }

    #[test]
    fn the_kernels_match_polars_expressions() {
        let volume = sample();
        let close: Vec<Option<f64>> = (0..volume.len()).map(|t| Some(100.0 + (t as f64 * 0.01).sin())).collect();
        let high: Vec<Option<f64>> = close.iter().map(|c| c.map(|c| c * 1.001)).collect();
        let low: Vec<Option<f64>> = close.iter().map(|c| c.map(|c| c * 0.999)).collect();
        let df = df!("v" => volume.clone(), "c" => close.clone(), "h" => high.clone(), "l" => low.clone()).unwrap();
        let (v, c, h, l) = (nan(&volume), nan(&close), nan(&high), nan(&low));
        let polars_scale = col("v").abs().cum_max(false) * lit(1e-9);
        let over_sum = |a: Expr, b: Expr| {
            when(b.clone().abs().lt_eq(polars_scale.clone())).then(lit(NULL).cast(DataType::Float64)).otherwise(a / b)
        };
        for w in [2, 15, 60] {
            let z = over_sum(col("v") - col("v").rolling_mean(window(w)), col("v").rolling_std(window(w)));
            assert_same(&z_score(&v, w, 0, w), &eval(&df, z), &format!("z_score {w}"));
            let typical = (col("h") + col("l") + col("c")) / lit(3.0);
            let vwap = over_sum((typical * col("v")).rolling_sum(window(w)), col("v").rolling_sum(window(w)));
            let deviation = col("c") / vwap - lit(1.0);
            assert_same(&vwap_deviation(&h, &l, &c, &v, w, 7), &eval(&df, deviation), &format!("vwap {w}"));
            let sums = (col("v") * col("v")).rolling_sum(window(w));
            let squares = eval(&df, when(sums.clone().lt(lit(0.0))).then(lit(0.0)).otherwise(sums).sqrt());
            let r_squared: Vec<f64> = v.iter().map(|x| x * x).collect();
            assert_same(&realized_volatility(&r_squared, w, 3), &squares, &format!("rv {w}"));
        }
        let tr = |a: Expr, b: Expr| when(a.clone().gt(b.clone())).then(a).otherwise(b);
        let previous = col("c").shift(lit(1));
        let true_range = tr(tr(col("h") - col("l"), (col("h") - previous.clone()).abs()), (col("l") - previous).abs());
        // A close that moves more than the range, so that all three terms of the true range win somewhere.
        // Missing closes too (the row after one has no true range).
        let jumpy: Vec<Option<f64>> = close
            .iter()
            .enumerate()
            .map(|(t, c)| c.filter(|_| t % 173 != 9).map(|c| c + 0.3 * ((t % 5) as f64 - 2.0)))
            .collect();
        let df = df!("c" => jumpy.clone(), "h" => high.clone(), "l" => low.clone(), "v" => volume.clone()).unwrap();
        for n in [1, 14] {
            let atr = true_range.clone().rolling_mean(window(n)) / col("c");
            assert_same(&atr_ratio(&h, &l, &nan(&jumpy), n, 5), &eval(&df, atr), &format!("atr {n}"));
        }
        let mean = eval(&df, col("v").rolling_mean(window(60)));
        assert_same(&sliding_mean(&v, 60, 59), &mean, "mean 60");
        // Null-skipping moments: polars' rolling std with min_periods, nulls left out.
        let sparse = eval(&df, col("v").rolling_std(window_min(60, 15)));
        let [count, _, m2] = moments(&v, 60, 11, 15);
        let std: Vec<f64> = (0..v.len()).map(|t| (m2[t] / (count[t] - 1.0)).sqrt()).collect();
        assert_same(&std, &sparse, "std 60 from 15");
        // The slope against its closed form on a clean stretch: volume rising by 1 a row.
        let rising: Vec<f64> = (0..40).map(|t| 10.0 + t as f64).collect();
        let slope = volume_slope(&rising, 15);
        assert!(slope[..14].iter().all(|x| x.is_nan()));
        // At row 30 the window holds 26..=40: mean 33, slope 1 a row.
        assert!((slope[30] - 1.0 / 33.0).abs() < 1e-12, "{}", slope[30]);
        // A null anywhere in the window nulls it; zero volume (mean 0) too.
        let mut gappy = rising.clone();
        gappy[20] = f64::NAN;
        let slope = volume_slope(&gappy, 15);
        assert!(slope[20..35].iter().all(|x| x.is_nan()) && !slope[35].is_nan() && !slope[19].is_nan());
        assert!(volume_slope(&[0.0; 20], 15).iter().all(|x| x.is_nan()));
    }

    /// A grid of minutes from `first` with a hole (rows 600..700 missing) and values.
    fn gappy_grid(first: i64, n: usize) -> (Vec<i64>, Vec<f64>) {
        let mut rng = crate::synth_table::SplitMix64::new(5);
        let times: Vec<i64> = (0..n as i64).map(|i| (first + i + if i >= 600 { 100 } else { 0 }) * 60_000).collect();
        let values =
            (0..n).map(|t| if t == 1234 { f64::NAN } else { 10.0 * (0.5 * rng.next_normal()).exp() }).collect();
        (times, values)
    }

    #[test]
    fn grid_windows_match_plain_sums_and_never_cross_a_hole() {
        let (times, values) = gappy_grid(17, 3000);
        let w = 60;
        let mean = grid_trailing_mean(&values, &times, 60_000, w, 1);
        let forward = grid_forward_sum(&values, &times, 60_000, 5);
        for t in 0..values.len() {
            // The run of the grid this row is in starts at 0 or at 600 (after the hole).
            let run_start = if t >= 600 { 600 } else { 0 };
            let first = run_start.max((t + 1).saturating_sub(w));
            let window = &values[first..=t];
            let expected = if window.iter().any(|v| v.is_nan()) {
                f64::NAN
            } else {
                window.iter().sum::<f64>() / window.len() as f64
            };
            assert!(
                (mean[t].is_nan() && expected.is_nan()) || (mean[t] - expected).abs() <= 1e-12 * expected.abs(),
                "row {t}: {} vs {expected}",
                mean[t]
            );
            let run_end = if t < 600 { 600 } else { values.len() };
            let ahead = if t + 5 < run_end { Some(&values[t + 1..=t + 5]) } else { None };
            match ahead {
                Some(a) if !a.iter().any(|v| v.is_nan()) => {
                    assert!((forward[t] - a.iter().sum::<f64>()).abs() <= 1e-12 * forward[t].abs(), "row {t}")
                }
                _ => assert!(forward[t].is_nan(), "row {t}: {}", forward[t]),
            }
        }
    }

    proptest::proptest! {
        /// A table that starts later on the same grid gives the same bits wherever its window is
        /// inside it: the property a partition computed on a slice of time rests on.
        #[test]
        fn grid_windows_are_the_same_bits_from_any_start(start in 0usize..2500, w in 1usize..300, h in 1usize..30) {
            let (times, values) = gappy_grid(17, 3000);
            let full_mean = grid_trailing_mean(&values, &times, 60_000, w, 1);
            let full_forward = grid_forward_sum(&values, &times, 60_000, h);
            let mean = grid_trailing_mean(&values[start..], &times[start..], 60_000, w, 1);
            let forward = grid_forward_sum(&values[start..], &times[start..], 60_000, h);
            for t in (start + w)..values.len() {
                proptest::prop_assert_eq!(full_mean[t].to_bits(), mean[t - start].to_bits(), "mean row {}", t);
            }
            for t in start..values.len() {
                proptest::prop_assert_eq!(full_forward[t].to_bits(), forward[t - start].to_bits(), "forward row {}", t);
            }
        }
    }
}
