//! Small networks trained on LibTorch for the RL stages, each exported as a plain
//! [`Mlp`](crate::learn::mlp::Mlp) that the default build evaluates:
//! - a behaviour classifier (neural BC): cross-entropy on the logged actions;
//! - discrete CQL (Kumar et al. 2020): double-DQN TD error plus `alpha` x
//!   (logsumexp_a Q(s, a) - Q(s, a_logged)), which pushes down actions the data does not take;
//! - discrete BCQ (Fujimoto et al. 2019, the discrete variant): the TD target's max over next
//!   actions only among those the behaviour classifier allows (P(a|s') >= threshold x its top).
//!
//! Reproducible: the initial weights and every batch come from our own seeded generator (not
//! LibTorch's process-wide one, which stages training at once would share), and CPU runs use
//! one thread (super::pin_cpu_threads), so the same params give the same bytes at any `--jobs`.

use anyhow::{Result, bail};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Kind, Tensor};

use super::NetParams;
use crate::learn::mlp::{Dense, Mlp};
use crate::synth_table::SplitMix64;

/// Inputs standardised by the training rows (as `Mlp::forward` does), row-major f32.
pub struct Inputs {
    pub center: Vec<f64>,
    pub scale: Vec<f64>,
    pub rows: usize,
    tensor: Tensor,
}

impl Inputs {
    /// `columns`: one Vec per input, all of one length.
    pub fn new(columns: &[Vec<f64>], device: tch::Device) -> Inputs {
        let rows = columns.first().map_or(0, Vec::len);
        let center: Vec<f64> = columns.iter().map(|c| c.iter().sum::<f64>() / rows.max(1) as f64).collect();
        let scale: Vec<f64> = columns
            .iter()
            .zip(&center)
            .map(|(c, m)| {
                let sd = (c.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / rows.max(1) as f64).sqrt();
                if sd > 1e-12 { sd } else { 1.0 }
            })
            .collect();
        let tensor = Self::standardised(columns, &center, &scale, device);
        Inputs { center, scale, rows, tensor }
    }

    fn standardised(columns: &[Vec<f64>], center: &[f64], scale: &[f64], device: tch::Device) -> Tensor {
        let rows = columns.first().map_or(0, Vec::len);
        let mut flat = Vec::with_capacity(rows * columns.len());
        for i in 0..rows {
            flat.extend(columns.iter().zip(center).zip(scale).map(|((c, m), s)| ((c[i] - m) / s) as f32));
        }
        Tensor::from_slice(&flat).view([rows as i64, columns.len() as i64]).to(device)
    }
}

struct Net {
    vs: nn::VarStore,
    seq: nn::Sequential,
    shape: Vec<(usize, usize)>,
}

impl Net {
    /// Layers named `l0, l1, ...`, weights drawn like LibTorch's default (uniform within
    /// +-1/sqrt(fan_in)) but from our generator.
    fn new(inputs: usize, hidden: &[usize], outputs: usize, device: tch::Device, rng: &mut SplitMix64) -> Net {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let mut seq = nn::seq();
        let mut shape = Vec::new();
        let mut width = inputs;
        for (i, &h) in hidden.iter().chain(std::iter::once(&outputs)).enumerate() {
            seq = seq.add(nn::linear(&root / format!("l{i}"), width as i64, h as i64, Default::default()));
            if i < hidden.len() {
                seq = seq.add_fn(|x| x.relu());
            }
            shape.push((width, h));
            width = h;
        }
        let net = Net { vs, seq, shape };
        let _guard = tch::no_grad_guard();
        for (i, (fan_in, out)) in net.shape.iter().enumerate() {
            let bound = 1.0 / (*fan_in as f64).sqrt();
            let mut draw =
                |n: usize| -> Vec<f32> { (0..n).map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32).collect() };
            let weight = Tensor::from_slice(&draw(fan_in * out)).view([*out as i64, *fan_in as i64]);
            let bias = Tensor::from_slice(&draw(*out));
            let vars = net.vs.variables();
            vars[&format!("l{i}.weight")].shallow_clone().copy_(&weight);
            vars[&format!("l{i}.bias")].shallow_clone().copy_(&bias);
        }
        net
    }

    fn export(&self, inputs: &Inputs) -> Result<Mlp> {
        let vars = self.vs.variables();
        let mut layers = Vec::new();
        for (i, (fan_in, out)) in self.shape.iter().enumerate() {
            let values = |name: String| -> Result<Vec<f32>> {
                Ok(Vec::<f32>::try_from(vars[&name].to(tch::Device::Cpu).flatten(0, -1))?)
            };
            layers.push(Dense {
                inputs: *fan_in,
                outputs: *out,
                weight: values(format!("l{i}.weight"))?,
                bias: values(format!("l{i}.bias"))?,
            });
        }
        let mlp = Mlp { center: inputs.center.clone(), scale: inputs.scale.clone(), layers };
        mlp.check()?;
        Ok(mlp)
    }
}

/// Row indices of one batch, with replacement.
fn batch(rng: &mut SplitMix64, rows: usize, size: usize, device: tch::Device) -> Tensor {
    let idx: Vec<i64> = (0..size).map(|_| (rng.next_u64() % rows as u64) as i64).collect();
    Tensor::from_slice(&idx).to(device)
}

fn finite(loss: &Tensor, what: &str, step: usize) -> Result<f64> {
    let value = loss.double_value(&[]);
    if !value.is_finite() {
        bail!("{what}: the loss became {value} at step {step}; lower learning_rate or check the buffer's rewards");
    }
    Ok(value)
}

/// What a training run reports besides the network.
pub struct Trained {
    pub network: Mlp,
    /// Mean loss over the first and the last tenth of the steps.
    pub loss_first: f64,
    pub loss_last: f64,
}

fn trend(losses: &[f64]) -> (f64, f64) {
    let tenth = (losses.len() / 10).max(1);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
    (mean(&losses[..tenth.min(losses.len())]), mean(&losses[losses.len().saturating_sub(tenth)..]))
}

/// A classifier from inputs to `classes` logits, fitted to `labels` by cross-entropy.
pub fn fit_classifier(
    columns: &[Vec<f64>],
    labels: &[usize],
    classes: usize,
    p: &NetParams,
    cancelled: &dyn Fn() -> Result<()>,
) -> Result<Trained> {
    super::pin_cpu_threads();
    let device = p.device.tch();
    let inputs = Inputs::new(columns, device);
    if inputs.rows == 0 {
        bail!("no rows to fit the classifier on");
    }
    let mut rng = SplitMix64::new(p.seed ^ 0xB0C1_A551_F1E5);
    let net = Net::new(columns.len(), &p.hidden, classes, device, &mut rng);
    let y = Tensor::from_slice(&labels.iter().map(|&a| a as i64).collect::<Vec<_>>()).to(device);
    let mut opt = nn::Adam { wd: p.weight_decay, ..Default::default() }.build(&net.vs, p.learning_rate)?;
    let mut losses = Vec::with_capacity(p.steps);
    for step in 0..p.steps {
        if step % 100 == 0 {
            cancelled()?;
        }
        let idx = batch(&mut rng, inputs.rows, p.batch_size, device);
        let logits = net.seq.forward(&inputs.tensor.index_select(0, &idx));
        let loss = logits.cross_entropy_for_logits(&y.index_select(0, &idx));
        opt.backward_step(&loss);
        losses.push(finite(&loss, "the behaviour classifier", step)?);
    }
    let (loss_first, loss_last) = trend(&losses);
    Ok(Trained { network: net.export(&inputs)?, loss_first, loss_last })
}

/// The transitions Q is fitted on: per row its observation, action, reward (bps) and next row
/// (None after an episode's last step: nothing follows, the episode closes flat).
pub struct Transitions<'a> {
    pub columns: &'a [Vec<f64>],
    pub actions: &'a [usize],
    pub rewards: &'a [f64],
    pub next: &'a [Option<usize>],
    /// BCQ: per row, the actions allowed at that row's state (used at next states).
    pub allowed: Option<&'a [Vec<bool>]>,
}

/// How the Q-network is regularised.
#[derive(Debug, Clone, Copy)]
pub enum QMethod {
    /// Conservative Q-learning with this weight on the CQL term.
    Cql { alpha: f64 },
    /// BCQ: the TD target's max only over allowed next actions.
    Bcq,
}

/// A Q-network (one output per action) fitted to double-DQN targets with a target network
/// copied every `target_update` steps.
pub fn fit_q(
    t: &Transitions,
    actions: usize,
    method: QMethod,
    discount: f64,
    target_update: usize,
    p: &NetParams,
    cancelled: &dyn Fn() -> Result<()>,
) -> Result<Trained> {
    super::pin_cpu_threads();
    let device = p.device.tch();
    let inputs = Inputs::new(t.columns, device);
    let n = inputs.rows;
    if n == 0 {
        bail!("no transitions to fit Q on");
    }
    let mut rng = SplitMix64::new(p.seed ^ 0x0C9A_F17E_D0A5);
    let q = Net::new(t.columns.len(), &p.hidden, actions, device, &mut rng);
    let mut target = Net::new(t.columns.len(), &p.hidden, actions, device, &mut rng);
    target.vs.copy(&q.vs)?;
    let a = Tensor::from_slice(&t.actions.iter().map(|&x| x as i64).collect::<Vec<_>>()).to(device);
    let r = Tensor::from_slice(&t.rewards.iter().map(|&x| x as f32).collect::<Vec<_>>()).to(device);
    // Rows without a next state point at themselves, with `live` 0 cancelling the bootstrap.
    let next_idx: Vec<i64> = t.next.iter().enumerate().map(|(i, nx)| nx.unwrap_or(i) as i64).collect();
    let next = Tensor::from_slice(&next_idx).to(device);
    let live = Tensor::from_slice(&t.next.iter().map(|nx| nx.is_some() as u8 as f32).collect::<Vec<_>>()).to(device);
    let mask = t.allowed.map(|allowed| {
        let flat: Vec<f32> =
            allowed.iter().flat_map(|row| row.iter().map(|ok| if *ok { 0.0 } else { f32::NEG_INFINITY })).collect();
        Tensor::from_slice(&flat).view([n as i64, actions as i64]).to(device)
    });
    let mut opt = nn::Adam { wd: p.weight_decay, ..Default::default() }.build(&q.vs, p.learning_rate)?;
    let mut losses = Vec::with_capacity(p.steps);
    for step in 0..p.steps {
        if step % 100 == 0 {
            cancelled()?;
        }
        if step > 0 && step % target_update.max(1) == 0 {
            target.vs.copy(&q.vs)?;
        }
        let idx = batch(&mut rng, n, p.batch_size, device);
        let s = inputs.tensor.index_select(0, &idx);
        let a_b = a.index_select(0, &idx);
        let nx = next.index_select(0, &idx);
        let y = tch::no_grad(|| {
            let s2 = inputs.tensor.index_select(0, &nx);
            let mut online = q.seq.forward(&s2);
            if let Some(mask) = &mask {
                online += mask.index_select(0, &nx);
            }
            let best = online.argmax(1, true);
            let value = target.seq.forward(&s2).gather(1, &best, false).squeeze_dim(1);
            r.index_select(0, &idx) + value * live.index_select(0, &idx) * discount
        });
        let all = q.seq.forward(&s);
        let taken = all.gather(1, &a_b.unsqueeze(1), false).squeeze_dim(1);
        let mut loss = taken.smooth_l1_loss(&y, tch::Reduction::Mean, 1.0);
        if let QMethod::Cql { alpha } = method {
            let conservative = (all.logsumexp([1i64].as_slice(), false) - &taken).mean(Kind::Float);
            loss += conservative * alpha;
        }
        opt.backward_step_clip_norm(&loss, 10.0);
        losses.push(finite(&loss, "the Q-network", step)?);
    }
    let (loss_first, loss_last) = trend(&losses);
    Ok(Trained { network: q.export(&inputs)?, loss_first, loss_last })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::torch::Device;

    fn params(steps: usize) -> NetParams {
        NetParams { steps, device: Device::Cpu, ..NetParams::default() }
    }

    /// Two classes split by the sign of x0: learnt, and the exported network's Rust forward pass
    /// equals LibTorch's outputs.
    #[test]
    fn a_classifier_learns_a_separable_rule_and_exports_exactly() {
        let mut rng = SplitMix64::new(3);
        let x0: Vec<f64> = (0..2000).map(|_| rng.next_normal()).collect();
        let x1: Vec<f64> = (0..2000).map(|_| rng.next_normal() * 10.0 + 5.0).collect();
        let labels: Vec<usize> = x0.iter().map(|v| (*v > 0.0) as usize).collect();
        let columns = vec![x0.clone(), x1.clone()];
        let trained = fit_classifier(&columns, &labels, 2, &params(600), &|| Ok(())).unwrap();
        assert!(trained.loss_last < trained.loss_first * 0.5, "{} -> {}", trained.loss_first, trained.loss_last);
        let right = (0..2000)
            .filter(|&i| {
                let out = trained.network.forward(&[x0[i], x1[i]]);
                (out[1] > out[0]) as usize == labels[i]
            })
            .count();
        assert!(right >= 1900, "{right}/2000");
        // Same bytes again (seeded, one thread).
        let again = fit_classifier(&columns, &labels, 2, &params(600), &|| Ok(())).unwrap();
        assert_eq!(again.network, trained.network);
        // Rust forward vs LibTorch on the same weights.
        let net_inputs = Inputs::new(&columns, tch::Device::Cpu);
        let mut vs_rng = SplitMix64::new(9);
        let net = Net::new(2, &[64, 64], 2, tch::Device::Cpu, &mut vs_rng);
        let exported = net.export(&net_inputs).unwrap();
        let torch_out = Vec::<f32>::try_from(net.seq.forward(&net_inputs.tensor).flatten(0, -1)).unwrap();
        for i in (0..2000).step_by(97) {
            let ours = exported.forward(&[x0[i], x1[i]]);
            for c in 0..2 {
                assert!((ours[c] - torch_out[i * 2 + c] as f64).abs() < 1e-5, "row {i}: {ours:?}");
            }
        }
    }

    /// Action 1 pays 1 and action 0 pays 0, in 10-step episodes with both actions logged half
    /// the time. Double DQN (BCQ with nothing masked) learns the gap of 1 between them; CQL
    /// learns the same order with the gap shrunk (its penalty pulls both logged actions' values
    /// together); BCQ allowing only action 0 next drops the future value of the paying action
    /// from the targets, so Q(s, 0) falls to about 0.
    #[test]
    fn q_learning_finds_the_paying_action_and_bcq_masks_the_targets() {
        let n = 4000;
        let mut rng = SplitMix64::new(5);
        let x: Vec<f64> = (0..n).map(|_| rng.next_normal()).collect();
        let actions: Vec<usize> = (0..n).map(|i| i % 2).collect();
        let rewards: Vec<f64> = actions.iter().map(|&a| a as f64).collect();
        let next: Vec<Option<usize>> = (0..n).map(|i| (i + 1 < n && i % 10 != 9).then_some(i + 1)).collect();
        let columns = vec![x];
        let only_hold = vec![vec![true, false]; n];
        let t = Transitions { columns: &columns, actions: &actions, rewards: &rewards, next: &next, allowed: None };
        let masked = Transitions { allowed: Some(&only_hold), ..t };
        let q_of = |t: &Transitions, method| {
            fit_q(t, 2, method, 0.5, 100, &params(1500), &|| Ok(())).unwrap().network.forward(&[0.0])
        };
        let plain = q_of(&t, QMethod::Bcq);
        assert!((plain[1] - plain[0] - 1.0).abs() < 0.25, "double DQN: {plain:?}");
        assert!(plain[0] > 0.5, "the future holds paying actions: {plain:?}");
        let cql = q_of(&t, QMethod::Cql { alpha: 0.1 });
        assert!(cql[1] > cql[0] + 0.3 && cql[1] - cql[0] < plain[1] - plain[0], "CQL: {cql:?} vs {plain:?}");
        let bcq = q_of(&masked, QMethod::Bcq);
        assert!(bcq[0].abs() < 0.2 && (bcq[1] - 1.0).abs() < 0.25, "BCQ with only action 0 allowed next: {bcq:?}");
    }
}
