//! A trained multilayer perceptron as plain data, and its forward pass in Rust.
//!
//! The `torch` feature trains networks on LibTorch (tasks/src/torch/nets.rs) and exports them as
//! an [`Mlp`]: standardisation, then dense layers with ReLU between them, nothing after the last.
//! Acting and scoring need no LibTorch, so a policy trained on a GPU box is evaluated, served by
//! `bias` and audited in the default build. Written by hand because it is three loops; arithmetic
//! in f32 like LibTorch's (a test in nets.rs holds the two within 1e-5).

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// One dense layer: `y = W x + b`, `W` row-major `[outputs][inputs]` as LibTorch stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dense {
    pub inputs: usize,
    pub outputs: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mlp {
    /// Per input: `(x - center) / scale` before the first layer (training rows' mean and sd).
    pub center: Vec<f64>,
    pub scale: Vec<f64>,
    pub layers: Vec<Dense>,
}

impl Mlp {
    /// The shapes agree from layer to layer, and every weight is finite.
    pub fn check(&self) -> Result<()> {
        let Some(first) = self.layers.first() else { bail!("a network with no layers") };
        if self.center.len() != first.inputs || self.scale.len() != first.inputs {
            bail!("the network standardises {} inputs and its first layer reads {}", self.center.len(), first.inputs);
        }
        for (i, layer) in self.layers.iter().enumerate() {
            if layer.weight.len() != layer.inputs * layer.outputs || layer.bias.len() != layer.outputs {
                bail!(
                    "layer {i}: {} weights and {} biases for {}x{}",
                    layer.weight.len(),
                    layer.bias.len(),
                    layer.outputs,
                    layer.inputs
                );
            }
            if i > 0 && self.layers[i - 1].outputs != layer.inputs {
                bail!("layer {i} reads {} values, layer {} gives {}", layer.inputs, i - 1, self.layers[i - 1].outputs);
            }
            if !layer.weight.iter().chain(&layer.bias).all(|w| w.is_finite()) {
                bail!(
                    "layer {i} has a weight that is not a finite number: training diverged; lower `network.learning_rate` (or check the rewards)"
                );
            }
        }
        if !self.center.iter().chain(&self.scale).all(|v| v.is_finite()) || self.scale.iter().any(|s| *s <= 0.0) {
            bail!("the network's standardisation has a non-finite center or a scale <= 0");
        }
        Ok(())
    }

    pub fn outputs(&self) -> usize {
        self.layers.last().map_or(0, |l| l.outputs)
    }

    /// The network's outputs for one input row.
    pub fn forward(&self, x: &[f64]) -> Vec<f64> {
        let mut values: Vec<f32> =
            x.iter().zip(&self.center).zip(&self.scale).map(|((v, c), s)| ((v - c) / s) as f32).collect();
        for (i, layer) in self.layers.iter().enumerate() {
            let mut next = layer.bias.clone();
            for (o, out) in next.iter_mut().enumerate() {
                let row = &layer.weight[o * layer.inputs..(o + 1) * layer.inputs];
                *out += row.iter().zip(&values).map(|(w, v)| w * v).sum::<f32>();
            }
            if i + 1 < self.layers.len() {
                next.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            values = next;
        }
        values.into_iter().map(f64::from).collect()
    }
}

/// Probabilities from logits (max-shifted, so no overflow).
pub fn softmax(logits: &[f64]) -> Vec<f64> {
    let top = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = logits.iter().map(|l| (l - top).exp()).collect();
    let total: f64 = exp.iter().sum();
    exp.into_iter().map(|e| e / total).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_standardises_applies_relu_between_layers_only() {
        let mlp = Mlp {
            center: vec![1.0, 0.0],
            scale: vec![2.0, 1.0],
            layers: vec![
                Dense { inputs: 2, outputs: 2, weight: vec![1.0, 0.0, 0.0, -1.0], bias: vec![0.0, 0.0] },
                Dense { inputs: 2, outputs: 1, weight: vec![1.0, 1.0], bias: vec![-5.0] },
            ],
        };
        mlp.check().unwrap();
        // x = (5, 3) -> (2, 3) -> relu(2, -3) = (2, 0) -> 2 - 5 = -3: no ReLU on the output.
        assert_eq!(mlp.forward(&[5.0, 3.0]), vec![-3.0]);
        let mut broken = mlp.clone();
        broken.layers[1].inputs = 3;
        assert!(broken.check().is_err());
        let mut nan = mlp;
        nan.layers[0].bias[0] = f32::NAN;
        assert!(nan.check().unwrap_err().to_string().contains("diverged"));
    }

    #[test]
    fn softmax_sums_to_one_without_overflow() {
        let p = softmax(&[1000.0, 1000.0, 0.0]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12 && (p[0] - 0.5).abs() < 1e-12);
    }
}
