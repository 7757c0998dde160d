//! Performance metrics of an equity curve, in one convention written down here, in the docs
//! (docs/walk-forward.md) and in every metrics artifact:
//!
//! - a 24/7 calendar: periods per year = 365 days x bars per day (525,600 for 1-minute bars);
//! - per-bar simple returns r_t = E_t / E_{t-1} - 1 of the equity curve (E_0 = 1 before the
//!   first bar);
//! - Sharpe = mean(r) / std(r, ddof = 1) x sqrt(P); Sortino = mean(r) x P / downside risk, with
//!   downside risk = sqrt(mean(min(r, 0)^2)) x sqrt(P) over all N returns;
//! - annual return = E_N^(P/N) - 1 (geometric); Calmar = annual return / |max drawdown|;
//! - max drawdown = min_t (E_t / max_{s<=t} E_s - 1), with E_0 = 1 counted as a peak.
//!
//! These are empyrical's definitions; the tests check them against values computed with the
//! `empyrical-reloaded` package.

use serde_json::{Value, json};

/// Periods per year of bars of `step_ms` on a 24/7 calendar.
pub fn periods_per_year(step_ms: i64) -> f64 {
    365.0 * 86_400_000.0 / step_ms as f64
}

fn mean(r: &[f64]) -> f64 {
    r.iter().sum::<f64>() / r.len().max(1) as f64
}

fn std_ddof1(r: &[f64]) -> f64 {
    if r.len() < 2 {
        return f64::NAN;
    }
    let m = mean(r);
    (r.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (r.len() - 1) as f64).sqrt()
}

pub fn sharpe(r: &[f64], periods: f64) -> f64 {
    mean(r) / std_ddof1(r) * periods.sqrt()
}

pub fn downside_risk(r: &[f64], periods: f64) -> f64 {
    (r.iter().map(|x| x.min(0.0).powi(2)).sum::<f64>() / r.len().max(1) as f64).sqrt() * periods.sqrt()
}

pub fn sortino(r: &[f64], periods: f64) -> f64 {
    mean(r) * periods / downside_risk(r, periods)
}

pub fn annual_volatility(r: &[f64], periods: f64) -> f64 {
    std_ddof1(r) * periods.sqrt()
}

/// The equity curve of returns, starting from 1 before the first.
pub fn equity_of(r: &[f64]) -> Vec<f64> {
    let mut e = 1.0;
    r.iter()
        .map(|x| {
            e *= 1.0 + x;
            e
        })
        .collect()
}

pub fn cum_return(r: &[f64]) -> f64 {
    equity_of(r).last().copied().unwrap_or(1.0) - 1.0
}

pub fn annual_return(r: &[f64], periods: f64) -> f64 {
    if r.is_empty() {
        return 0.0;
    }
    (1.0 + cum_return(r)).powf(periods / r.len() as f64) - 1.0
}

/// Max drawdown (<= 0) and its duration in bars: from the peak before the deepest trough to the
/// recovery of that peak (or the end, if it never recovered).
pub fn max_drawdown(equity: &[f64]) -> (f64, usize) {
    let mut peak = 1.0f64;
    let mut peak_at = 0usize; // 0: the starting equity, before bar 1
    let (mut worst, mut worst_peak_at) = (0.0f64, 0usize);
    for (i, &e) in equity.iter().enumerate() {
        if e > peak {
            peak = e;
            peak_at = i + 1;
        }
        let dd = e / peak - 1.0;
        if dd < worst {
            worst = dd;
            worst_peak_at = peak_at;
        }
    }
    if worst == 0.0 {
        return (0.0, 0);
    }
    let peak_value = if worst_peak_at == 0 { 1.0 } else { equity[worst_peak_at - 1] };
    let recovered = equity.iter().enumerate().skip(worst_peak_at).find(|(_, e)| **e >= peak_value).map(|(i, _)| i + 1);
    let end = recovered.unwrap_or(equity.len());
    (worst, end - worst_peak_at)
}

pub fn calmar(r: &[f64], periods: f64) -> f64 {
    let (dd, _) = max_drawdown(&equity_of(r));
    if dd == 0.0 { f64::NAN } else { annual_return(r, periods) / dd.abs() }
}

/// Per-bar returns of an equity curve that starts from 1.
pub fn returns_of(equity: &[f64]) -> Vec<f64> {
    let mut previous = 1.0;
    equity
        .iter()
        .map(|&e| {
            let r = if previous > 0.0 { e / previous - 1.0 } else { 0.0 };
            previous = e;
            r
        })
        .collect()
}

/// A number for JSON: non-finite values (a Sharpe of a flat curve) become null, never a number.
pub fn num(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

/// The convention, as written into each artifact.
pub fn convention(periods: f64) -> Value {
    json!({
        "calendar": "24/7",
        "periods_per_year": periods,
        "returns": "simple per-bar returns of the equity curve, starting equity 1",
        "sharpe": "mean(r) / std(r, ddof=1) * sqrt(P)",
        "sortino": "mean(r) * P / (sqrt(mean(min(r,0)^2)) * sqrt(P)), over all N returns",
        "annual_return": "equity_N^(P/N) - 1",
        "calmar": "annual_return / |max_drawdown|",
        "max_drawdown": "min(E_t / running max(E) - 1), starting equity 1 counted as a peak",
        "reference": "empyrical's definitions (empyrical-reloaded)",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The golden series (defined in the same way in the Python that computed the references).
    fn series(name: &str) -> Vec<f64> {
        match name {
            "A" => {
                (0..500).map(|i| 0.001 * (0.7 * i as f64).sin() + 0.0003 * (1.3 * i as f64).cos() - 0.00002).collect()
            }
            "B" => (0..1000i64)
                .map(|i| {
                    let k = ((i * 7919) % 13 - 6) as f64;
                    0.002 * (0.05 * i as f64).sin() - 0.0004 + 0.0015 * k / 6.0
                })
                .collect(),
            _ => (0..200).map(|i| if i % 5 == 0 { 0.01 } else { -0.003 }).collect(),
        }
    }

    fn close(ours: f64, reference: f64, what: &str) {
        let scale = reference.abs().max(1e-12);
        assert!((ours - reference).abs() / scale < 1e-9, "{what}: {ours} vs empyrical {reference}");
    }

    /// Reference values from empyrical-reloaded 0.7.1 (numpy 2.4.6, pandas 3.1.1, Bottleneck
    /// 1.6.0): `empyrical.sharpe_ratio(r, annualization=P)` and so on, risk-free 0.
    /// (sharpe, sortino, max_drawdown, annual_return, annual_volatility, calmar, cum_return, downside_risk)
    #[test]
    fn metrics_match_empyrical() {
        #[rustfmt::skip]
        let golden: [(&str, f64, [f64; 8]); 6] = [
            ("A", 525600.0, [-14.574308019887848, -20.250420641125768, -0.012483016586603581, -0.9996406448363908, 0.5344079884725615, -80.08005420013434, -0.0075165091289493, 0.38461554800842884]),
            ("A", 365.0, [-0.38406673886420156, -0.5336454400203721, -0.012483016586603581, -0.0054926373259569505, 0.014082887028019183, -0.4400088142037312, -0.0075165091289493, 0.010135509626837277]),
            ("B", 525600.0, [-170.49632034236944, -200.2376112819706, -0.3665080401590084, -1.0, 1.2318312476970734, -2.728453104510758, -0.33042334798121553, 1.0488673614836082]),
            ("B", 365.0, [-4.492972541329887, -5.276724374020462, -0.3665080401590084, -0.13619222241058027, 0.032461603630748306, -0.37159409204636734, -0.33042334798121553, 0.02764008188082805]),
            ("C", 525600.0, [-55.6283100205251, -108.07404868885074, -0.0884953104214499, -1.0, 3.7793706104396905, -11.300033812386237, -0.07938026352566441, 1.945332876399303]),
            ("C", 365.0, [-1.4659346837568943, -2.8480012484391866, -0.0884953104214499, -0.1401028428940697, 0.09959516042408637, -1.5831668619144246, -0.07938026352566441, 0.05126402247190509]),
        ];
        for (name, p, g) in golden {
            let r = series(name);
            let what = |m: &str| format!("{name} P={p} {m}");
            close(sharpe(&r, p), g[0], &what("sharpe"));
            close(sortino(&r, p), g[1], &what("sortino"));
            close(max_drawdown(&equity_of(&r)).0, g[2], &what("max_drawdown"));
            close(annual_return(&r, p), g[3], &what("annual_return"));
            close(annual_volatility(&r, p), g[4], &what("annual_volatility"));
            close(calmar(&r, p), g[5], &what("calmar"));
            close(cum_return(&r), g[6], &what("cum_return"));
            close(downside_risk(&r, p), g[7], &what("downside_risk"));
        }
    }

    /// empyrical puts the starting equity before the first return: a first-bar loss is a drawdown.
    #[test]
    fn a_loss_on_the_first_bar_is_a_drawdown() {
        close(max_drawdown(&equity_of(&[-0.1, 0.05])).0, -0.1, "[-0.1, 0.05]");
        close(max_drawdown(&equity_of(&[-0.05, -0.05, 0.2])).0, -0.0975, "[-0.05, -0.05, 0.2]");
        // Duration: from the start (the peak) to the recovery at bar 3.
        assert_eq!(max_drawdown(&equity_of(&[-0.05, -0.05, 0.2])).1, 3);
        assert_eq!(max_drawdown(&equity_of(&[0.01, 0.02])), (0.0, 0));
    }
}
