//! L2-regularised logistic regression, fitted with argmin's L-BFGS (More-Thuente line search) on
//! the loss and gradient written here, column by column over the standardised features.
//!
//! Objective (the same minimiser as smartcore's and scikit-learn's with C = 1/alpha):
//! sum_i log(1 + exp(-s_i z_i)) + alpha/2 ||w||^2, z_i = b + x_i . w, s_i = +-1; the intercept
//! is not penalised. It is divided by n here so that the tolerances do not depend on the row
//! count. One thread, a fixed start (zeros) and a fixed iteration order: the same data give the
//! same bits.

use anyhow::{Result, anyhow};
use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;

struct Problem<'a> {
    /// Standardised feature columns, all of length n.
    columns: &'a [Vec<f64>],
    /// 0 or 1 per row.
    y: &'a [f64],
    alpha: f64,
}

impl Problem<'_> {
    fn margins(&self, p: &[f64]) -> Vec<f64> {
        let k = self.columns.len();
        let mut z = vec![p[k]; self.y.len()];
        for (column, w) in self.columns.iter().zip(&p[..k]) {
            for (zi, xi) in z.iter_mut().zip(column) {
                *zi += w * xi;
            }
        }
        z
    }
}

/// log(1 + exp(x)) without overflow.
fn softplus(x: f64) -> f64 {
    if x > 0.0 { x + (-x).exp().ln_1p() } else { x.exp().ln_1p() }
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

impl CostFunction for Problem<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, p: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        let n = self.y.len() as f64;
        let k = self.columns.len();
        let z = self.margins(p);
        // -log p for y = 1 is softplus(-z); -log(1 - p) for y = 0 is softplus(z).
        let loss: f64 = z.iter().zip(self.y).map(|(z, y)| if *y > 0.5 { softplus(-z) } else { softplus(*z) }).sum();
        let penalty: f64 = p[..k].iter().map(|w| w * w).sum::<f64>() * self.alpha / 2.0;
        Ok((loss + penalty) / n)
    }
}

impl Gradient for Problem<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;

    fn gradient(&self, p: &Vec<f64>) -> Result<Vec<f64>, argmin::core::Error> {
        let n = self.y.len() as f64;
        let k = self.columns.len();
        let residual: Vec<f64> = self.margins(p).iter().zip(self.y).map(|(z, y)| sigmoid(*z) - y).collect();
        let mut g = Vec::with_capacity(k + 1);
        for (column, w) in self.columns.iter().zip(&p[..k]) {
            let dot: f64 = column.iter().zip(&residual).map(|(x, r)| x * r).sum();
            g.push((dot + self.alpha * w) / n);
        }
        g.push(residual.iter().sum::<f64>() / n);
        Ok(g)
    }
}

/// Weights (one per column) and intercept.
pub fn fit(columns: &[Vec<f64>], y: &[bool], alpha: f64) -> Result<(Vec<f64>, f64)> {
    let y01: Vec<f64> = y.iter().map(|&b| b as u8 as f64).collect();
    let k = columns.len();
    let problem = Problem { columns, y: &y01, alpha };
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), 10)
        .with_tolerance_grad(1e-8)
        .map_err(|e| anyhow!("{e}"))?
        .with_tolerance_cost(1e-13)
        .map_err(|e| anyhow!("{e}"))?;
    let result = Executor::new(problem, solver)
        .configure(|state| state.param(vec![0.0; k + 1]).max_iters(1000))
        .run()
        .map_err(|e| anyhow!("logistic regression: the solver failed: {e}"))?;
    let best = result.state().get_best_param().cloned().ok_or_else(|| anyhow!("logistic regression: no solution"))?;
    if best.iter().any(|v| !v.is_finite()) {
        return Err(anyhow!("logistic regression diverged (a weight is not finite)"));
    }
    Ok((best[..k].to_vec(), best[k]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use smartcore::linalg::basic::arrays::Array;
    use smartcore::linalg::basic::matrix::DenseMatrix;

    /// The same minimiser as smartcore's logistic regression (the solver this one replaced).
    #[test]
    fn matches_smartcore_on_a_noisy_problem() {
        let mut rng = crate::synth_table::SplitMix64::new(3);
        let (n, k) = (3000, 6);
        let columns: Vec<Vec<f64>> = (0..k).map(|_| (0..n).map(|_| rng.next_normal()).collect()).collect();
        let truth = [0.8, -0.5, 0.0, 0.3, 0.0, -1.2];
        let y: Vec<bool> = (0..n)
            .map(|i| {
                let z: f64 = 0.2 + (0..k).map(|j| truth[j] * columns[j][i]).sum::<f64>();
                rng.next_f64() < sigmoid(z)
            })
            .collect();
        let (w, b) = fit(&columns, &y, 1.0).unwrap();
        let flat: Vec<f64> = columns.concat();
        let x = DenseMatrix::new(n, k, flat, true).unwrap();
        let labels: Vec<i32> = y.iter().map(|&v| v as i32).collect();
        let params = smartcore::linear::logistic_regression::LogisticRegressionParameters::default().with_alpha(1.0);
        let reference = smartcore::linear::logistic_regression::LogisticRegression::fit(&x, &labels, params).unwrap();
        for (j, wj) in w.iter().enumerate() {
            let r = *reference.coefficients().get((0, j));
            assert!((wj - r).abs() < 1e-4, "w{j}: {wj} vs smartcore {r}");
        }
        assert!((b - *reference.intercept().get((0, 0))).abs() < 1e-4);
        // And it recovers the planted weights roughly.
        assert!((w[0] - 0.8).abs() < 0.15 && (w[5] + 1.2).abs() < 0.15, "{w:?}");
        // Deterministic.
        assert_eq!(fit(&columns, &y, 1.0).unwrap(), (w, b));
    }
}
