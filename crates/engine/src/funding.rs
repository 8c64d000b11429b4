//! Funding payments (MARGIN §9): when sequenced time reaches an instrument's funding time,
//! every open position pays or receives `notional at mark × rate` with the rate the feed
//! announced (`SetFundingRate`), longs paying when it is positive.
//!
//! - **When**: before the command whose timestamp is at or past the funding time (time
//!   passing is an input, as for interest). A funding time the feed announced is settled
//!   once; the next is one `funding_interval_ns` later (funding times sequenced time
//!   jumped over are not settled: a rate belongs to the time it was announced for), unless
//!   the feed announces another.
//! - **From where**: a cross position from its pool's settlement wallet (in a USD pool a
//!   negative wallet is a loan), an isolated one from its margin (the wallet pays what the
//!   margin cannot).
//! - **Zero-sum**: payments round up, receipts toward zero (`risk::funding_payment`), so
//!   receipts never exceed payments; the residue goes to the settlement asset's insurance
//!   fund, and every asset stays conserved (`check_invariants`).
//! - **Then**: the instrument's holders are checked for liquidation, in the same command.

use crate::engine::{fund_account_id, Engine};
use perpcore_risk::{self as risk};
use perpcore_types::*;

impl Engine {
    /// A `SetFundingRate` sequenced at or after the funding time it names, while that time
    /// is still to settle, carries the rate the time settles at (Binance's first update
    /// after a funding time): it replaces the announced one before the settlement. An
    /// out-of-range rate is left to the command's own check (which refuses it).
    pub(crate) fn final_funding_rate(&mut self, i: InstrumentId, rate: Rate, at: u64, ts_ns: u64) {
        let Some(m) = self.state.market.get_mut(i.0 as usize) else {
            return;
        };
        let recorded = matches!(
            self.state.config.instruments[i.0 as usize].funding_method,
            FundingMethod::Recorded
        );
        if recorded
            && at != 0
            && at == m.next_funding_ns
            && at <= ts_ns
            && -Rate::ONE <= rate
            && rate <= Rate::ONE
        {
            m.funding_rate = Some(rate);
            self.ix.next_timed_ns = crate::indexes::earliest_timed(&self.state);
        }
    }

    /// Settles `spec`'s funding time, which `ts_ns` has reached (`derive::advance_time`
    /// calls this in time order with the samples).
    pub(crate) fn settle_funding(
        &mut self,
        spec: &InstrumentSpec,
        ts_ns: u64,
        out: &mut Vec<Event>,
    ) {
        let i = spec.id.0 as usize;
        let m = &self.state.market[i];
        let due = m.next_funding_ns;
        let Some(rate) = m.funding_rate else {
            return;
        };
        // Positions need a mark, so without one there is nothing to pay.
        if let Some(mark) = self.state.marks[i] {
            self.pay_funding(spec, rate, mark, due, out);
            self.check_liquidations(spec.id, out);
        }
        let interval = spec.funding_interval_ns.max(1);
        let skipped = (ts_ns - due) / interval;
        let m = &mut self.state.market[i];
        m.last_funding = Some((rate, due));
        m.next_funding_ns = skipped
            .checked_add(1)
            .and_then(|n| n.checked_mul(interval))
            .and_then(|d| due.checked_add(d))
            .unwrap_or(0);
        if let FundingMethod::Derived {
            interest,
            cap,
            step_ns,
            ..
        } = spec.funding_method
        {
            // A new interval: its samples start after its opening time (an interval time
            // jumped over contributes none).
            m.premium = Default::default();
            let opening = m.next_funding_ns.saturating_sub(interval);
            m.next_premium_ns = m.next_premium_ns.max(opening.saturating_add(step_ns));
            m.funding_rate = Some(risk::mark::funding_rate(Rate::ZERO, interest, cap));
        }
    }

    /// One funding time of `spec`: every holder pays or receives, in ascending id.
    fn pay_funding(
        &mut self,
        spec: &InstrumentSpec,
        rate: Rate,
        mark: Price,
        funding_ns: u64,
        out: &mut Vec<Event>,
    ) {
        let asset = spec.settle_asset;
        let (mut paid, mut received) = (Money::ZERO, Money::ZERO);
        let holders = self.ix.holders[spec.id.0 as usize].clone();
        for id in holders {
            let k = self.idx(id).expect("holder account");
            // Each leg on its own (two in hedge mode, LONG first).
            let legs: Vec<(PositionSide, Money)> = self.state.accounts[k]
                .legs_of(spec.id)
                .map(|leg| (leg.side, risk::funding_payment(leg, spec, mark, rate)))
                .collect();
            for (side, amount) in legs {
                if amount.is_zero() {
                    continue;
                }
                if amount.is_negative() {
                    self.before_credit(k, asset, out);
                }
                let account = &mut self.state.accounts[k];
                let leg = account.leg_mut(spec.id, side).expect("holder leg");
                leg.funding += amount;
                if leg.mode == MarginMode::Isolated {
                    leg.isolated_margin -= amount;
                    if leg.isolated_margin.is_negative() {
                        // The margin cannot pay it all: the wallet pays the rest (the
                        // liquidation check that follows takes the position).
                        let short = leg.isolated_margin;
                        leg.isolated_margin = Money::ZERO;
                        account.wallets[asset.0 as usize] += short;
                    }
                } else {
                    account.wallets[asset.0 as usize] -= amount;
                }
                if amount.is_negative() {
                    received -= amount;
                    self.after_credit(k, asset, -amount);
                } else {
                    paid += amount;
                }
                if !self.full_scan() {
                    // Its cushion moved without a mark move: re-band it before the check.
                    self.ix.dirty.insert(id);
                }
                out.push(Event::FundingPaid {
                    account: id,
                    instrument: spec.id,
                    rate,
                    amount,
                });
            }
        }
        debug_assert!(paid >= received, "funding receipts above payments");
        let residue = paid - received;
        if !residue.is_zero() {
            let fk = self.idx(fund_account_id(asset)).expect("fund");
            self.state.accounts[fk].wallets[asset.0 as usize] += residue;
        }
        out.push(Event::FundingSettled {
            instrument: spec.id,
            rate,
            mark,
            funding_ns,
            paid,
            received,
        });
    }
}
