//! The networks of `train`'s `tcn` and `transformer` models and their training loop
//! (crate::learn::sequence has the params, the stored form and the windows).
//!
//! - TCN (Bai, Kolter, Koltun 2018): `layers` causal dilated 1-D convolutions over the window
//!   (dilation 2^l, left padding only, so position i sees positions <= i), ReLU and a residual
//!   connection each; the last position's channels -> one logit.
//! - Transformer encoder: a linear embedding of each row plus a learnt position embedding, then
//!   pre-norm blocks of multi-head self-attention and a ReLU feed-forward of twice the width; the
//!   last position -> layer norm -> one logit. Every position of a window is at or before its
//!   row, so attention needs no causal mask to be free of look-ahead.
//!
//! Reproducible as the RL networks are: weights drawn from our seeded generator, batches too, one
//! CPU thread (super::pin_cpu_threads).

use anyhow::{Result, bail};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Kind, Tensor};

use crate::learn::sequence::{NamedTensor, SequenceKind, SequenceModel, SequenceParams};
use crate::synth_table::SplitMix64;

struct Block {
    ln1: nn::LayerNorm,
    qkv: nn::Linear,
    out: nn::Linear,
    ln2: nn::LayerNorm,
    ff1: nn::Linear,
    ff2: nn::Linear,
}

enum Body {
    Tcn { convs: Vec<nn::Conv1D>, dilations: Vec<i64>, input: nn::Conv1D },
    Transformer { embed: nn::Linear, position: Tensor, blocks: Vec<Block>, ln: nn::LayerNorm, heads: i64 },
}

pub struct SequenceNet {
    vs: nn::VarStore,
    body: Body,
    head: nn::Linear,
    kernel: i64,
    window: i64,
}

impl SequenceNet {
    pub fn new(kind: SequenceKind, inputs: usize, p: &SequenceParams, device: tch::Device) -> SequenceNet {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let width = p.width as i64;
        let layers = p.layers(kind);
        let body = match kind {
            SequenceKind::Tcn => {
                let dilations: Vec<i64> = (0..layers).map(|l| 1i64 << l).collect();
                let convs = dilations
                    .iter()
                    .enumerate()
                    .map(|(l, &d)| {
                        let config = nn::ConvConfig { dilation: d, ..Default::default() };
                        nn::conv1d(&root / format!("conv{l}"), width, width, p.kernel as i64, config)
                    })
                    .collect();
                let input = nn::conv1d(&root / "input", inputs as i64, width, 1, Default::default());
                Body::Tcn { convs, dilations, input }
            }
            SequenceKind::Transformer => {
                let embed = nn::linear(&root / "embed", inputs as i64, width, Default::default());
                let position = root.var("position", &[p.window as i64, width], nn::Init::Const(0.0));
                let blocks = (0..layers)
                    .map(|l| {
                        let b = &root / format!("block{l}");
                        Block {
                            ln1: nn::layer_norm(&b / "ln1", vec![width], Default::default()),
                            qkv: nn::linear(&b / "qkv", width, 3 * width, Default::default()),
                            out: nn::linear(&b / "out", width, width, Default::default()),
                            ln2: nn::layer_norm(&b / "ln2", vec![width], Default::default()),
                            ff1: nn::linear(&b / "ff1", width, 2 * width, Default::default()),
                            ff2: nn::linear(&b / "ff2", 2 * width, width, Default::default()),
                        }
                    })
                    .collect();
                let ln = nn::layer_norm(&root / "ln", vec![width], Default::default());
                Body::Transformer { embed, position, blocks, ln, heads: p.heads as i64 }
            }
        };
        let head = nn::linear(&root / "head", width, 1, Default::default());
        SequenceNet { vs, body, head, kernel: p.kernel as i64, window: p.window as i64 }
    }

    /// Every weight drawn from `rng` in name order: uniform within +-1/sqrt(fan in) (LibTorch's
    /// default bound) for weights and biases, layer norms at 1 and 0, positions N(0, 0.02).
    pub fn initialise(&self, rng: &mut SplitMix64) {
        let _guard = tch::no_grad_guard();
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let weights: std::collections::BTreeMap<String, Vec<i64>> =
            vars.iter().map(|(n, t)| (n.clone(), t.size())).collect();
        for (name, tensor) in &mut vars {
            let shape = tensor.size();
            let n: i64 = shape.iter().product();
            let values: Vec<f32> = if name.contains("ln") {
                vec![if name.ends_with("weight") { 1.0 } else { 0.0 }; n as usize]
            } else if name == "position" {
                (0..n).map(|_| (rng.next_normal() * 0.02) as f32).collect()
            } else {
                // A bias shares its layer's weight's fan in.
                let weight_shape = weights.get(&name.replace(".bias", ".weight")).cloned().unwrap_or(shape.clone());
                let fan_in: i64 = weight_shape.iter().skip(1).product::<i64>().max(1);
                let bound = 1.0 / (fan_in as f64).sqrt();
                (0..n).map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32).collect()
            };
            tensor.copy_(&Tensor::from_slice(&values).view(shape.as_slice()));
        }
    }

    /// Logits `[B]` for windows `[B, window, inputs]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let last = match &self.body {
            Body::Tcn { convs, dilations, input } => {
                let mut h = input.forward(&x.transpose(1, 2)); // [B, width, W]
                for (conv, d) in convs.iter().zip(dilations) {
                    let padded = h.constant_pad_nd([(self.kernel - 1) * d, 0]);
                    h = &h + conv.forward(&padded).relu();
                }
                h.select(2, self.window - 1)
            }
            Body::Transformer { embed, position, blocks, ln, heads } => {
                let mut h = embed.forward(x) + position; // [B, W, width]
                let (b, w, width) = h.size3().expect("3 dims");
                let dk = width / heads;
                for block in blocks {
                    let qkv =
                        block.qkv.forward(&block.ln1.forward(&h)).view([b, w, 3, *heads, dk]).permute([2, 0, 3, 1, 4]);
                    let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2)); // [B, heads, W, dk]
                    let attention = (q.matmul(&k.transpose(-2, -1)) / (dk as f64).sqrt()).softmax(-1, Kind::Float);
                    let mixed = attention.matmul(&v).transpose(1, 2).contiguous().view([b, w, width]);
                    h = &h + block.out.forward(&mixed);
                    h = &h + block.ff2.forward(&block.ff1.forward(&block.ln2.forward(&h)).relu());
                }
                ln.forward(&h.select(1, w - 1))
            }
        };
        self.head.forward(&last).squeeze_dim(1)
    }

    fn tensors(&self) -> Result<Vec<NamedTensor>> {
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars.into_iter()
            .map(|(name, t)| {
                let shape = t.size();
                let values = Vec::<f32>::try_from(t.to(tch::Device::Cpu).flatten(0, -1))?;
                Ok(NamedTensor { name, shape, values })
            })
            .collect()
    }

    /// The network of a stored model, on `device`.
    pub fn load(model: &SequenceModel, device: tch::Device) -> Result<SequenceNet> {
        let net = SequenceNet::new(model.kind, model.inputs, &model.params, device);
        let _guard = tch::no_grad_guard();
        let vars = net.vs.variables();
        if vars.len() != model.tensors.len() {
            bail!(
                "the stored {} has {} tensors, its architecture {}",
                model.kind.name(),
                model.tensors.len(),
                vars.len()
            );
        }
        for stored in &model.tensors {
            let Some(var) = vars.get(&stored.name) else {
                bail!("the stored model has a tensor `{}` its architecture lacks", stored.name)
            };
            if var.size() != stored.shape {
                bail!(
                    "tensor `{}` is {:?} in the file and {:?} in the architecture",
                    stored.name,
                    stored.shape,
                    var.size()
                );
            }
            var.shallow_clone().copy_(&Tensor::from_slice(&stored.values).view(stored.shape.as_slice()).to(device));
        }
        Ok(net)
    }
}

/// Windows of rows, gathered from the padded matrix (crate::learn::sequence::padded_matrix).
pub struct Windows {
    padded: Tensor,
    window: i64,
}

impl Windows {
    pub fn new(padded: &[f32], inputs: usize, window: usize, device: tch::Device) -> Windows {
        let rows = (padded.len() / inputs.max(1)) as i64;
        Windows { padded: Tensor::from_slice(padded).view([rows, inputs as i64]).to(device), window: window as i64 }
    }

    /// `[rows.len(), window, inputs]`: row r's window is padded rows r .. r + window.
    pub fn of(&self, rows: &[usize]) -> Tensor {
        let idx: Vec<i64> = rows.iter().flat_map(|&r| (0..self.window).map(move |j| r as i64 + j)).collect();
        let idx = Tensor::from_slice(&idx).to(self.padded.device());
        self.padded.index_select(0, &idx).view([rows.len() as i64, self.window, -1])
    }
}

/// Probabilities for `rows`, in chunks (no gradients).
pub fn probabilities(net: &SequenceNet, windows: &Windows, rows: &[usize]) -> Result<Vec<f64>> {
    let _guard = tch::no_grad_guard();
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(2048) {
        let p = net.forward(&windows.of(chunk)).sigmoid().to(tch::Device::Cpu).to_kind(Kind::Double);
        out.extend(Vec::<f64>::try_from(p)?);
    }
    Ok(out)
}

fn labels(rows: &[usize], label: &[bool], device: tch::Device) -> Tensor {
    Tensor::from_slice(&rows.iter().map(|&r| label[r] as u8 as f32).collect::<Vec<_>>()).to(device)
}

/// The rows a model trains on (`train`), stops early on (`valid`), and the labels, indexed like
/// the rows.
pub struct Rows<'a> {
    pub label: &'a [bool],
    pub train: &'a [usize],
    pub valid: &'a [usize],
}

/// Trains on the train rows with early stopping on the valid rows' log loss; returns the model
/// with the best weights.
pub fn fit(
    kind: SequenceKind,
    p: &SequenceParams,
    windows: &Windows,
    inputs: usize,
    rows: Rows,
    seed: u64,
    cancelled: &dyn Fn() -> Result<()>,
) -> Result<(SequenceModel, SequenceNet)> {
    let Rows { label, train, valid } = rows;
    super::pin_cpu_threads();
    let device = p.device.tch();
    let mut rng = SplitMix64::new(seed ^ 0x5E9_0E4C_E000);
    let net = SequenceNet::new(kind, inputs, p, device);
    net.initialise(&mut rng);
    let mut opt = nn::Adam { wd: p.weight_decay, ..Default::default() }.build(&net.vs, p.learning_rate)?;
    let valid_y = labels(valid, label, device);
    let valid_loss = |net: &SequenceNet| -> Result<f64> {
        let _guard = tch::no_grad_guard();
        let mut total = 0.0;
        for (chunk, start) in valid.chunks(2048).zip((0..).step_by(2048)) {
            let y = valid_y.narrow(0, start as i64, chunk.len() as i64);
            let loss = net.forward(&windows.of(chunk)).binary_cross_entropy_with_logits::<Tensor>(
                &y,
                None,
                None,
                tch::Reduction::Sum,
            );
            total += loss.double_value(&[]);
        }
        Ok(total / valid.len().max(1) as f64)
    };
    let mut best = (f64::INFINITY, 0usize, net.tensors()?);
    let mut since_best = 0usize;
    let mut steps = 0usize;
    for step in 1..=p.max_steps {
        let batch: Vec<usize> =
            (0..p.batch_size).map(|_| train[(rng.next_u64() % train.len() as u64) as usize]).collect();
        let y = labels(&batch, label, device);
        let loss = net.forward(&windows.of(&batch)).binary_cross_entropy_with_logits::<Tensor>(
            &y,
            None,
            None,
            tch::Reduction::Mean,
        );
        opt.backward_step_clip_norm(&loss, 5.0);
        let value = loss.double_value(&[]);
        if !value.is_finite() {
            bail!("the {} training loss became {value} at step {step}; lower learning_rate", kind.name());
        }
        steps = step;
        if step % p.eval_every == 0 || step == p.max_steps {
            cancelled()?;
            let v = valid_loss(&net)?;
            if v < best.0 {
                best = (v, step, net.tensors()?);
                since_best = 0;
            } else {
                since_best += 1;
                if since_best >= p.patience {
                    break;
                }
            }
        }
    }
    // The file records the device the weights came from, never `auto`.
    let params =
        SequenceParams { device: p.device.resolve("device").unwrap_or(crate::torch::Device::Cpu), ..p.clone() };
    let model = SequenceModel { kind, params, inputs, best_step: best.1, steps, tensors: best.2 };
    let kept = SequenceNet::load(&model, device)?;
    Ok((model, kept))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::sequence::padded_matrix;
    use crate::torch::Device;

    /// The label is the sign of a feature 3 rows back, plus noise in the other feature: both
    /// networks find it (their receptive field covers lag 3); on shuffled labels they do not
    /// beat a coin on held-out rows. And a row's prediction never changes when later rows do.
    #[test]
    fn both_models_find_a_lagged_signal_and_nothing_in_shuffled_labels_and_never_look_ahead() {
        let n = 6000;
        let mut rng = SplitMix64::new(11);
        let x0: Vec<f64> = (0..n).map(|_| rng.next_normal()).collect();
        let x1: Vec<f64> = (0..n).map(|_| rng.next_normal()).collect();
        let label: Vec<bool> = (0..n).map(|i| i >= 3 && x0[i - 3] > 0.0).collect();
        let mut shuffled = label.clone();
        for i in (1..n).rev() {
            shuffled.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        let columns = vec![x0.clone(), x1];
        let p = SequenceParams {
            window: 8,
            width: 16,
            max_steps: 600,
            eval_every: 50,
            patience: 4,
            device: Device::Cpu,
            ..Default::default()
        };
        let flat = padded_matrix(&columns, &[0.0, 0.0], &[0.0, 0.0], &[1.0, 1.0], p.window);
        let windows = Windows::new(&flat, 2, p.window, tch::Device::Cpu);
        let train: Vec<usize> = (0..4000).collect();
        let valid: Vec<usize> = (4000..5000).collect();
        let test: Vec<usize> = (5000..n).collect();
        let accuracy = |probs: &[f64], y: &[bool]| {
            probs.iter().zip(test.iter()).filter(|(p, r)| (**p > 0.5) == y[**r]).count() as f64 / test.len() as f64
        };
        for kind in [SequenceKind::Tcn, SequenceKind::Transformer] {
            let (_, net) =
                fit(kind, &p, &windows, 2, Rows { label: &label, train: &train, valid: &valid }, 1, &|| Ok(()))
                    .unwrap();
            let found = accuracy(&probabilities(&net, &windows, &test).unwrap(), &label);
            assert!(found > 0.9, "{kind:?} on the planted lag: accuracy {found}");
            let (_, null) =
                fit(kind, &p, &windows, 2, Rows { label: &shuffled, train: &train, valid: &valid }, 1, &|| Ok(()))
                    .unwrap();
            let chance = accuracy(&probabilities(&null, &windows, &test).unwrap(), &shuffled);
            // 1000 rows: a coin's accuracy is within 0.5 +- 0.05 with 99.8% probability.
            assert!((chance - 0.5).abs() < 0.05, "{kind:?} on shuffled labels: accuracy {chance}");
            // No look-ahead: change every row after 5500, row 5500's probability stays.
            let mut later = columns.clone();
            later.iter_mut().for_each(|c| c[5501..].iter_mut().for_each(|v| *v = 9.0));
            let moved = Windows::new(
                &padded_matrix(&later, &[0.0, 0.0], &[0.0, 0.0], &[1.0, 1.0], p.window),
                2,
                p.window,
                tch::Device::Cpu,
            );
            let before = probabilities(&net, &windows, &[5500]).unwrap();
            let after = probabilities(&net, &moved, &[5500]).unwrap();
            assert_eq!(before, after, "{kind:?} looked ahead");
        }
    }

    #[test]
    fn a_stored_model_reloads_to_the_same_predictions_and_training_is_reproducible() {
        let n = 800;
        let mut rng = SplitMix64::new(2);
        let columns = vec![(0..n).map(|_| rng.next_normal()).collect::<Vec<f64>>()];
        let label: Vec<bool> = columns[0].iter().map(|v| *v > 0.0).collect();
        let p = SequenceParams {
            window: 4,
            width: 8,
            max_steps: 60,
            eval_every: 20,
            device: Device::Cpu,
            ..Default::default()
        };
        let windows = Windows::new(&padded_matrix(&columns, &[0.0], &[0.0], &[1.0], 4), 1, 4, tch::Device::Cpu);
        let rows: Vec<usize> = (0..n).collect();
        for kind in [SequenceKind::Tcn, SequenceKind::Transformer] {
            let (model, net) = fit(
                kind,
                &p,
                &windows,
                1,
                Rows { label: &label, train: &rows[..600], valid: &rows[600..] },
                3,
                &|| Ok(()),
            )
            .unwrap();
            let (again, _) = fit(
                kind,
                &p,
                &windows,
                1,
                Rows { label: &label, train: &rows[..600], valid: &rows[600..] },
                3,
                &|| Ok(()),
            )
            .unwrap();
            assert_eq!(model, again, "{kind:?}: same seed, same weights");
            let json = serde_json::to_vec(&model).unwrap();
            let back: SequenceModel = serde_json::from_slice(&json).unwrap();
            let reloaded = SequenceNet::load(&back, tch::Device::Cpu).unwrap();
            assert_eq!(
                probabilities(&net, &windows, &rows).unwrap(),
                probabilities(&reloaded, &windows, &rows).unwrap()
            );
        }
    }
}
