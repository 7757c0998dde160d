//! From signals to targets: the model's probabilities through thresholds and confidence
//! buckets, and the baselines every backtest runs beside it on the same costs (buy-and-hold,
//! flat, and the plan's rule: order-flow imbalance with a volume spike).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::execution::Target;

/// One confidence bucket: at a confidence |p - 0.5| of at least `min_confidence`, commit `size`
/// of equity as margin at `leverage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SizeBucket {
    pub min_confidence: f64,
    pub size: f64,
    pub leverage: f64,
}

/// Thresholds and buckets that turn a probability of "up" into a target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalRule {
    /// Long when the probability of up is above this.
    #[serde(default = "default_long")]
    pub long_above: f64,
    /// Short when it is below this.
    #[serde(default = "default_short")]
    pub short_below: f64,
    /// Size and leverage by confidence |p - 0.5|; the bucket with the highest `min_confidence`
    /// met applies; below every bucket the target is flat.
    #[serde(default = "default_buckets")]
    pub buckets: Vec<SizeBucket>,
}

fn default_long() -> f64 {
    0.55
}
fn default_short() -> f64 {
    0.45
}
fn default_buckets() -> Vec<SizeBucket> {
    vec![
        SizeBucket { min_confidence: 0.05, size: 0.5, leverage: 1.0 },
        SizeBucket { min_confidence: 0.1, size: 1.0, leverage: 2.0 },
    ]
}

impl Default for SignalRule {
    fn default() -> SignalRule {
        SignalRule { long_above: default_long(), short_below: default_short(), buckets: default_buckets() }
    }
}

impl SignalRule {
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.short_below)
            || !(0.0..=1.0).contains(&self.long_above)
            || self.short_below > self.long_above
        {
            return Err("need 0 <= short_below <= long_above <= 1".into());
        }
        if self.buckets.is_empty() {
            return Err("give at least one bucket { min_confidence, size, leverage }".into());
        }
        for b in &self.buckets {
            if !(b.size > 0.0 && b.size <= 1.0 && b.leverage >= 1.0 && b.leverage <= 125.0 && b.min_confidence >= 0.0) {
                return Err(format!(
                    "bucket {b:?}: size is a share of equity in (0, 1], leverage from 1 to 125, min_confidence >= 0"
                ));
            }
        }
        Ok(())
    }

    /// The target for a probability of "up" (`None`: no prediction, flat).
    pub fn target(&self, p: Option<f64>) -> Target {
        let Some(p) = p.filter(|p| p.is_finite()) else { return Target::FLAT };
        let side = if p > self.long_above {
            1
        } else if p < self.short_below {
            -1
        } else {
            return Target::FLAT;
        };
        let confidence = (p - 0.5).abs();
        let bucket = self
            .buckets
            .iter()
            .filter(|b| confidence >= b.min_confidence)
            .max_by(|a, b| a.min_confidence.total_cmp(&b.min_confidence));
        match bucket {
            Some(b) => Target { side, size: b.size, leverage: b.leverage },
            None => Target::FLAT,
        }
    }
}

/// The plan's rule baseline: trade with the order flow when volume spikes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowRule {
    /// Bars over which the taker imbalance 2 x taker_buy / volume - 1 is averaged (by volume).
    #[serde(default = "default_imbalance_window")]
    pub imbalance_window: usize,
    /// |imbalance| above which the flow has a side.
    #[serde(default = "default_imbalance_threshold")]
    pub imbalance_threshold: f64,
    /// Bars of the trailing mean volume a spike is measured against.
    #[serde(default = "default_volume_window")]
    pub volume_window: usize,
    /// A spike: the last `imbalance_window` bars' mean volume above this multiple of the trailing mean.
    #[serde(default = "default_spike")]
    pub volume_spike: f64,
    /// Size and leverage of its positions.
    #[serde(default = "default_rule_size")]
    pub size: f64,
    #[serde(default = "default_rule_leverage")]
    pub leverage: f64,
}

fn default_imbalance_window() -> usize {
    15
}
fn default_imbalance_threshold() -> f64 {
    0.15
}
fn default_volume_window() -> usize {
    240
}
fn default_spike() -> f64 {
    1.5
}
fn default_rule_size() -> f64 {
    0.5
}
fn default_rule_leverage() -> f64 {
    1.0
}

impl Default for FlowRule {
    fn default() -> FlowRule {
        FlowRule {
            imbalance_window: default_imbalance_window(),
            imbalance_threshold: default_imbalance_threshold(),
            volume_window: default_volume_window(),
            volume_spike: default_spike(),
            size: default_rule_size(),
            leverage: default_rule_leverage(),
        }
    }
}

/// The taker buy share of a bar that the flow rule reads, the same for the backtest and the
/// live bias: taker buy volume over volume (clamped to [0, 1]; None when unknown), or without
/// taker data the bar's direction as the sign of the flow (a proxy: 0.75 up, 0.25 down, 0.5 flat).
pub fn bar_buy_share(open: f64, close: f64, volume: f64, taker_buy: Option<f64>) -> Option<f64> {
    match taker_buy {
        Some(t) if volume > 0.0 && t.is_finite() => Some((t / volume).clamp(0.0, 1.0)),
        Some(_) => None,
        None if close > open => Some(0.75),
        None if close < open => Some(0.25),
        None => Some(0.5),
    }
}

impl FlowRule {
    pub fn check(&self) -> Result<(), String> {
        if self.imbalance_window == 0 || self.volume_window == 0 {
            return Err("windows must be at least 1 bar".into());
        }
        if !(self.size > 0.0 && self.size <= 1.0 && self.leverage >= 1.0) {
            return Err("size in (0, 1], leverage >= 1".into());
        }
        Ok(())
    }

    /// What the rule reads at each bar, from data up to that bar only: the volume-weighted taker
    /// imbalance of the last `imbalance_window` bars, their mean volume, and the trailing mean
    /// volume of `volume_window` bars (None in the warm-up or without volume). The RL
    /// environment offers the same statistics as observations (`rule_imbalance`,
    /// `rule_volume_ratio`), so a policy can learn the rule from what the rule sees.
    pub fn statistics(&self, volume: &[f64], buy_share: &[Option<f64>]) -> Vec<Option<FlowStatistics>> {
        let n = volume.len();
        let (w, vw) = (self.imbalance_window, self.volume_window);
        (0..n)
            .map(|t| {
                if t + 1 < vw.max(w) {
                    return None;
                }
                let recent_volume: f64 = volume[t + 1 - w..=t].iter().sum();
                let trailing = volume[t + 1 - vw..=t].iter().sum::<f64>() / vw as f64;
                if recent_volume <= 0.0 || trailing <= 0.0 {
                    return None;
                }
                let buy: f64 = (t + 1 - w..=t).map(|k| volume[k] * buy_share[k].unwrap_or(0.5)).sum();
                Some(FlowStatistics {
                    imbalance: 2.0 * buy / recent_volume - 1.0,
                    recent_mean_volume: recent_volume / w as f64,
                    trailing_mean_volume: trailing,
                })
            })
            .collect()
    }

    /// Targets per bar, from data up to each bar only. `buy_share[t]` is the taker buy share of
    /// bar t (None where unknown).
    pub fn targets(&self, volume: &[f64], buy_share: &[Option<f64>]) -> Vec<Target> {
        self.statistics(volume, buy_share).iter().map(|s| s.map_or(Target::FLAT, |s| self.target(&s))).collect()
    }

    /// The rule's target from its statistics at one bar.
    pub fn target(&self, s: &FlowStatistics) -> Target {
        let spike = s.recent_mean_volume > self.volume_spike * s.trailing_mean_volume;
        if spike && s.imbalance.abs() > self.imbalance_threshold {
            Target { side: s.imbalance.signum() as i8, size: self.size, leverage: self.leverage }
        } else {
            Target::FLAT
        }
    }
}

/// The flow rule's inputs at one bar (`FlowRule::statistics`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowStatistics {
    pub imbalance: f64,
    pub recent_mean_volume: f64,
    pub trailing_mean_volume: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_buckets() {
        let rule = SignalRule::default();
        assert_eq!(rule.target(Some(0.5)), Target::FLAT);
        assert_eq!(rule.target(Some(0.56)), Target { side: 1, size: 0.5, leverage: 1.0 });
        assert_eq!(rule.target(Some(0.35)), Target { side: -1, size: 1.0, leverage: 2.0 });
        assert_eq!(rule.target(None), Target::FLAT);
        assert_eq!(rule.target(Some(f64::NAN)), Target::FLAT);
    }

    #[test]
    fn the_flow_rule_follows_a_spike_of_buying() {
        let mut volume = vec![1.0; 300];
        let mut share = vec![Some(0.5); 300];
        for t in 280..300 {
            volume[t] = 5.0;
            share[t] = Some(0.9);
        }
        let targets = FlowRule::default().targets(&volume, &share);
        assert_eq!(targets[279], Target::FLAT);
        assert_eq!(targets[299].side, 1);
        // Uses no later bar: cutting the data changes no earlier target.
        let cut = FlowRule::default().targets(&volume[..290], &share[..290]);
        assert_eq!(&targets[..290], &cut[..]);
    }
}
