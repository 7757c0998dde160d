//! The execution model of a crypto perpetual: one implementation, used by the `backtest` stage
//! and by the RL environment (`rl::env`), so that a policy is trained on the same costs it is judged
//! on.
//!
//! Timing: a decision made from bar t (known at t's close) is filled at the open of bar
//! t + `delay_bars` (1 by default, never less unless broken on purpose for a test), at that
//! open moved against the trader by the slippage. Between fills the position is marked to each
//! bar's close. Costs: a fee per side on the traded notional, slippage, funding every
//! `funding_hours` on the position's notional when the bars carry `funding_rate` (longs pay a
//! positive rate, shorts receive it), and liquidation when a bar's adverse extreme passes the
//! liquidation price (entry moved by 1/leverage minus the maintenance margin): the position is
//! closed there, with a fee, and the margin is lost. After `loss_streak_limit` losing trades in
//! a row, no position is opened for `cooldown_bars`.

use serde::{Deserialize, Serialize};

/// One bar as the execution model sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bar {
    pub time: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    /// Funding rate per funding interval, when the market has one.
    pub funding_rate: Option<f64>,
}

/// What a strategy wants to hold: side (-1, 0, 1), the share of equity committed as margin, and
/// the leverage on it (notional = equity x size x leverage).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub side: i8,
    pub size: f64,
    pub leverage: f64,
}

impl Target {
    pub const FLAT: Target = Target { side: 0, size: 0.0, leverage: 1.0 };
}

/// Costs and risk rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecutionParams {
    /// Fee per side in basis points of the traded notional (taker: every fill is a market order).
    #[serde(default = "default_fee")]
    pub fee_bps: f64,
    /// Slippage per fill in basis points, against the trader. A list in the stage gives a sensitivity table.
    #[serde(default = "default_slippage")]
    pub slippage_bps: f64,
    /// Maintenance margin as a share of notional: liquidation comes at an adverse move of 1/leverage minus this.
    #[serde(default = "default_maintenance")]
    pub maintenance_margin: f64,
    /// Hours between funding payments (00:00, 08:00, 16:00 UTC for 8).
    #[serde(default = "default_funding_hours")]
    pub funding_hours: u32,
    /// Losing trades in a row after which no position is opened for `cooldown_bars` (0: never).
    #[serde(default)]
    pub loss_streak_limit: u32,
    /// Bars without new positions after `loss_streak_limit` losses in a row.
    #[serde(default)]
    pub cooldown_bars: u32,
    /// Bars between the decision (made at a bar's close) and the fill (at a later bar's open).
    /// 1 is the honest rule; 0 fills at the open of the bar whose close made the decision, a
    /// look-ahead that only a test should ask for.
    #[serde(default = "default_delay")]
    pub delay_bars: u32,
}

fn default_fee() -> f64 {
    5.0
}
fn default_slippage() -> f64 {
    1.0
}
fn default_maintenance() -> f64 {
    0.005
}
fn default_funding_hours() -> u32 {
    8
}
fn default_delay() -> u32 {
    1
}

impl Default for ExecutionParams {
    fn default() -> ExecutionParams {
        ExecutionParams {
            fee_bps: default_fee(),
            slippage_bps: default_slippage(),
            maintenance_margin: default_maintenance(),
            funding_hours: default_funding_hours(),
            loss_streak_limit: 0,
            cooldown_bars: 0,
            delay_bars: default_delay(),
        }
    }
}

impl ExecutionParams {
    pub fn check(&self) -> Result<(), String> {
        for (name, value) in [
            ("fee_bps", self.fee_bps),
            ("slippage_bps", self.slippage_bps),
            ("maintenance_margin", self.maintenance_margin),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("{name} must be a number >= 0"));
            }
        }
        if self.maintenance_margin >= 0.5 {
            return Err("maintenance_margin is a share of notional, e.g. 0.005".into());
        }
        if self.funding_hours == 0 || 24 % self.funding_hours != 0 {
            return Err("funding_hours must divide a day (1, 2, 3, 4, 6, 8, 12 or 24)".into());
        }
        Ok(())
    }
}

/// Why a trade ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    Signal,
    Liquidation,
    EndOfData,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Signal => "signal",
            ExitReason::Liquidation => "liquidation",
            ExitReason::EndOfData => "end_of_data",
        }
    }
}

/// An open position: side, the share of equity committed, leverage, the PnL marked at the last
/// close net of its fees and funding so far (units of the starting equity), and bars held.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    pub side: i8,
    pub size: f64,
    pub leverage: f64,
    pub unrealised: f64,
    pub bars: u32,
}

/// A closed trade. Money is in units of the starting equity (1.0).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trade {
    pub entry_time: i64,
    pub exit_time: i64,
    pub side: i8,
    pub size: f64,
    pub leverage: f64,
    pub entry_price: f64,
    pub exit_price: f64,
    pub notional: f64,
    pub fees: f64,
    pub slippage: f64,
    pub funding: f64,
    /// Price PnL minus fees and funding (slippage is inside the fill prices).
    pub pnl: f64,
    /// `pnl` over the margin committed.
    pub return_on_margin: f64,
    pub bars: u32,
    pub exit_reason: ExitReason,
}

#[derive(Debug, Clone)]
struct Open {
    side: i8,
    size: f64,
    leverage: f64,
    entry_time: i64,
    entry_price: f64,
    notional: f64,
    margin: f64,
    fees: f64,
    slippage: f64,
    funding: f64,
    bars: u32,
    /// Mark-to-market value already booked into equity.
    booked: f64,
}

/// The account: equity marked at every close, the open position, the closed trades.
#[derive(Debug, Clone)]
pub struct Account {
    params: ExecutionParams,
    /// Equity at the last close, before the current bar.
    cash_equity: f64,
    open: Option<Open>,
    pub trades: Vec<Trade>,
    pub equity: Vec<f64>,
    pub exposure: Vec<bool>,
    losing_streak: u32,
    cooldown_left: u32,
    /// Sum of |notional| traded (entries and exits).
    pub traded_notional: f64,
}

impl Account {
    pub fn new(params: ExecutionParams) -> Account {
        Account {
            params,
            cash_equity: 1.0,
            open: None,
            trades: Vec::new(),
            equity: Vec::new(),
            exposure: Vec::new(),
            losing_streak: 0,
            cooldown_left: 0,
            traded_notional: 0.0,
        }
    }

    pub fn params(&self) -> &ExecutionParams {
        &self.params
    }

    /// Equity now (after the last bar stepped).
    pub fn equity_now(&self) -> f64 {
        self.equity.last().copied().unwrap_or(1.0)
    }

    /// The side held now.
    pub fn side(&self) -> i8 {
        self.open.as_ref().map_or(0, |o| o.side)
    }

    /// The open position as a strategy (or the RL environment's state) sees it after the last
    /// close; `None` when flat.
    pub fn position(&self) -> Option<Position> {
        self.open.as_ref().map(|o| Position {
            side: o.side,
            size: o.size,
            leverage: o.leverage,
            unrealised: o.booked,
            bars: o.bars,
        })
    }

    /// What this account holds as a target (`Target::FLAT` when flat): holding it changes nothing.
    pub fn holding(&self) -> Target {
        self.open.as_ref().map_or(Target::FLAT, |o| Target { side: o.side, size: o.size, leverage: o.leverage })
    }

    /// Losing trades in a row since the last winner (or the last cooldown).
    pub fn losing_streak(&self) -> u32 {
        self.losing_streak
    }

    fn close_position(&mut self, time: i64, raw_price: f64, reason: ExitReason) {
        let Some(mut open) = self.open.take() else { return };
        let slip = self.params.slippage_bps * 1e-4;
        // A liquidation fills at its price; other exits pay slippage against the trader.
        let price = match reason {
            ExitReason::Liquidation => raw_price,
            _ => raw_price * (1.0 - slip * open.side as f64),
        };
        let exit_notional = open.notional * price / open.entry_price;
        let fee = exit_notional * self.params.fee_bps * 1e-4;
        open.fees += fee;
        open.slippage += (raw_price - price).abs() / open.entry_price * open.notional;
        self.traded_notional += exit_notional;
        let price_pnl = open.side as f64 * open.notional * (price / open.entry_price - 1.0);
        let mut pnl = price_pnl - open.fees - open.funding;
        if reason == ExitReason::Liquidation {
            // The margin is gone, whatever the price path said (fees included in the loss).
            pnl = pnl.min(-open.margin);
        }
        // Equity moves by the trade's total PnL; what was booked at earlier closes is replaced.
        self.cash_equity += pnl - open.booked;
        let trade = Trade {
            entry_time: open.entry_time,
            exit_time: time,
            side: open.side,
            size: open.size,
            leverage: open.leverage,
            entry_price: open.entry_price,
            exit_price: price,
            notional: open.notional,
            fees: open.fees,
            slippage: open.slippage,
            funding: open.funding,
            pnl,
            return_on_margin: if open.margin > 0.0 { pnl / open.margin } else { 0.0 },
            bars: open.bars,
            exit_reason: reason,
        };
        if trade.pnl < 0.0 {
            self.losing_streak += 1;
            if self.params.loss_streak_limit > 0 && self.losing_streak >= self.params.loss_streak_limit {
                self.cooldown_left = self.params.cooldown_bars;
                self.losing_streak = 0;
            }
        } else {
            self.losing_streak = 0;
        }
        self.trades.push(trade);
    }

    fn open_position(&mut self, bar: &Bar, target: Target) {
        if target.side == 0 || target.size <= 0.0 || self.cash_equity <= 0.0 {
            return;
        }
        let slip = self.params.slippage_bps * 1e-4;
        let price = bar.open * (1.0 + slip * target.side as f64);
        let margin = self.cash_equity * target.size;
        let notional = margin * target.leverage;
        let fee = notional * self.params.fee_bps * 1e-4;
        self.traded_notional += notional;
        self.open = Some(Open {
            side: target.side,
            size: target.size,
            leverage: target.leverage,
            entry_time: bar.time,
            entry_price: price,
            notional,
            margin,
            fees: fee,
            slippage: (price - bar.open).abs() / price * notional,
            funding: 0.0,
            bars: 0,
            booked: 0.0,
        });
    }

    /// One bar: fill `target` at this bar's open (the strategy decided it `delay_bars` earlier),
    /// then check liquidation on the bar's range, pay funding at its boundary, and mark to close.
    pub fn step(&mut self, bar: &Bar, target: Target) {
        let target = if self.cooldown_left > 0 && self.open.is_none() { Target::FLAT } else { target };
        self.cooldown_left = self.cooldown_left.saturating_sub(1);
        let same = self.open.as_ref().is_some_and(|o| {
            o.side == target.side
                && (o.size - target.size).abs() < 1e-12
                && (o.leverage - target.leverage).abs() < 1e-12
        });
        if !same {
            if self.open.is_some() {
                self.close_position(bar.time, bar.open, ExitReason::Signal);
            }
            self.open_position(bar, target);
        }
        // Funding at the interval boundary this bar starts on.
        let interval = self.params.funding_hours as i64 * 3_600_000;
        if let (Some(open), Some(rate)) = (self.open.as_mut(), bar.funding_rate)
            && bar.time.rem_euclid(interval) == 0
            && open.entry_time < bar.time
        {
            let mark = open.notional * bar.open / open.entry_price;
            open.funding += open.side as f64 * rate * mark;
        }
        // Liquidation at the adverse extreme of the bar.
        if let Some(open) = &self.open {
            let distance = 1.0 / open.leverage - self.params.maintenance_margin;
            let liquidation_price = open.entry_price * (1.0 - distance * open.side as f64);
            let hit = if open.side > 0 { bar.low <= liquidation_price } else { bar.high >= liquidation_price };
            if hit {
                self.close_position(bar.time, liquidation_price, ExitReason::Liquidation);
            }
        }
        // Mark to the close.
        if let Some(open) = self.open.as_mut() {
            open.bars += 1;
            let unrealised =
                open.side as f64 * open.notional * (bar.close / open.entry_price - 1.0) - open.fees - open.funding;
            self.cash_equity += unrealised - open.booked;
            open.booked = unrealised;
        }
        self.exposure.push(self.open.is_some());
        self.equity.push(self.cash_equity);
    }

    /// Closes what is open at the last bar's close.
    pub fn finish(&mut self, last: &Bar) {
        if self.open.is_some() {
            // Marked at the close already: closing there pays the exit fee and slippage.
            self.close_position(last.time, last.close, ExitReason::EndOfData);
            if let Some(e) = self.equity.last_mut() {
                *e = self.cash_equity;
            }
        }
    }
}

/// Runs targets through bars: `decisions[t]` is decided at bar t's close and filled at bar
/// t + delay's open.
pub fn simulate(bars: &[Bar], decisions: &[Target], params: &ExecutionParams) -> Account {
    let mut account = Account::new(params.clone());
    let delay = params.delay_bars as usize;
    for (t, bar) in bars.iter().enumerate() {
        let target = if t >= delay { decisions[t - delay] } else { Target::FLAT };
        account.step(bar, target);
    }
    if let Some(last) = bars.last() {
        account.finish(last);
    }
    account
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(i: i64, open: f64, close: f64) -> Bar {
        Bar { time: i * 60_000, open, high: open.max(close), low: open.min(close), close, funding_rate: None }
    }

    fn free() -> ExecutionParams {
        ExecutionParams { fee_bps: 0.0, slippage_bps: 0.0, ..ExecutionParams::default() }
    }

    #[test]
    fn a_decision_fills_at_the_next_open_and_is_marked_at_closes() {
        let bars = [bar(0, 100.0, 100.0), bar(1, 100.0, 110.0), bar(2, 110.0, 121.0)];
        let long = Target { side: 1, size: 1.0, leverage: 1.0 };
        let account = simulate(&bars, &[long, long, long], &free());
        // Decided at bar 0's close, filled at bar 1's open (100): +10% then +10%.
        assert_eq!(account.trades.len(), 1);
        let trade = &account.trades[0];
        assert_eq!((trade.entry_time, trade.entry_price), (60_000, 100.0));
        assert!((trade.pnl - 0.21).abs() < 1e-12, "{trade:?}");
        assert!((account.equity[1] - 1.1).abs() < 1e-12 && (account.equity[2] - 1.21).abs() < 1e-12);
        assert_eq!(account.equity[0], 1.0, "nothing held during the decision bar");
    }

    #[test]
    fn fees_and_slippage_are_paid_on_both_sides() {
        let bars = [bar(0, 100.0, 100.0), bar(1, 100.0, 100.0), bar(2, 100.0, 100.0)];
        let params = ExecutionParams { fee_bps: 10.0, slippage_bps: 5.0, ..ExecutionParams::default() };
        let long = Target { side: 1, size: 1.0, leverage: 2.0 };
        let account = simulate(&bars, &[long, Target::FLAT, Target::FLAT], &params);
        let trade = &account.trades[0];
        // Notional 2; entry at 100.05, exit at 99.95: price loss 2 x (99.95/100.05 - 1).
        let price_loss = 2.0 * (99.95 / 100.05 - 1.0);
        let fees = 2.0 * 10e-4 + 2.0 * (99.95 / 100.05) * 10e-4;
        assert!((trade.pnl - (price_loss - fees)).abs() < 1e-12, "{trade:?}");
        assert!((account.equity_now() - (1.0 + trade.pnl)).abs() < 1e-12);
    }

    #[test]
    fn liquidation_closes_at_its_price_and_loses_the_margin() {
        let mut bars = vec![bar(0, 100.0, 100.0), bar(1, 100.0, 100.0)];
        // 10x long: liquidation 1/10 - 0.005 = 9.5% below entry.
        bars.push(Bar { time: 120_000, open: 100.0, high: 100.0, low: 85.0, close: 99.0, funding_rate: None });
        bars.push(bar(3, 99.0, 99.0));
        let long = Target { side: 1, size: 0.5, leverage: 10.0 };
        let account = simulate(&bars, &[long; 4], &free());
        let first = &account.trades[0];
        assert_eq!(first.exit_reason, ExitReason::Liquidation);
        assert!((first.exit_price - 90.5).abs() < 1e-9);
        assert!((first.pnl + 0.5).abs() < 1e-12, "half the equity was the margin: {first:?}");
    }

    #[test]
    fn funding_is_paid_by_longs_at_the_interval() {
        let mut bars: Vec<Bar> = (0..3).map(|i| bar(i, 100.0, 100.0)).collect();
        for (i, b) in bars.iter_mut().enumerate() {
            b.time = 8 * 3_600_000 - 60_000 + i as i64 * 60_000; // 07:59, 08:00, 08:01
            b.funding_rate = Some(0.001);
        }
        let long = Target { side: 1, size: 1.0, leverage: 1.0 };
        // Decided at 07:59, filled at 08:00: funding at 08:00 is not paid (entered at that instant).
        let account = simulate(&bars, &[long; 3], &free());
        assert_eq!(account.trades[0].funding, 0.0);
        let early = {
            let mut b = bars.clone();
            b.insert(0, Bar { time: b[0].time - 60_000, ..b[0] });
            simulate(&b, &[long; 4], &free())
        };
        assert!((early.trades[0].funding - 0.001).abs() < 1e-12, "{:?}", early.trades[0]);
    }

    /// A signal made from the decision bar's own move (known only at its close) profits only when
    /// the fill rule is broken on purpose (filled at that bar's open): the honest rule, filling at
    /// the next open, leaves it nothing.
    #[test]
    fn a_signal_that_peeks_a_bar_ahead_pays_only_when_the_fill_rule_is_broken() {
        let mut rng = crate::synth_table::SplitMix64::new(7);
        let mut bars = Vec::new();
        let mut price = 100.0;
        for i in 0..5000 {
            let close = price * (1.0 + 0.002 * rng.next_normal());
            bars.push(bar(i, price, close));
            price = close;
        }
        let peek: Vec<Target> = bars
            .iter()
            .map(|b| Target { side: if b.close > b.open { 1 } else { -1 }, size: 1.0, leverage: 1.0 })
            .collect();
        let honest = simulate(&bars, &peek, &free());
        let broken = simulate(&bars, &peek, &ExecutionParams { delay_bars: 0, ..free() });
        let (h, b) = (honest.equity_now() - 1.0, broken.equity_now() - 1.0);
        assert!(b > 10.0, "filled at the bar it saw, the peek wins big: {b}");
        assert!(h.abs() < 0.5, "filled at the next open, it has no edge: {h}");
        // With costs, the honest peek loses.
        let costly = simulate(&bars, &peek, &ExecutionParams::default());
        assert!(costly.equity_now() < 1.0);
    }

    #[test]
    fn a_losing_streak_starts_a_cooldown() {
        let mut bars = Vec::new();
        let mut decisions = Vec::new();
        // Alternate long/flat on falling bars: every trade loses.
        for i in 0..20 {
            bars.push(bar(i, 100.0 - i as f64, 99.0 - i as f64));
            decisions.push(if i % 2 == 0 { Target { side: 1, size: 1.0, leverage: 1.0 } } else { Target::FLAT });
        }
        let params = ExecutionParams { loss_streak_limit: 2, cooldown_bars: 6, ..free() };
        let with = simulate(&bars, &decisions, &params);
        let without = simulate(&bars, &decisions, &free());
        assert!(with.trades.len() < without.trades.len(), "{} vs {}", with.trades.len(), without.trades.len());
    }
}
