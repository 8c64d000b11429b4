//! Fill settlement (MARGIN §2, real-time settlement): position and basis, realized PnL,
//! fees, and the movement of isolated margin. Every amount that leaves one balance
//! arrives in another, so each asset is conserved exactly (MARGIN §10).

use crate::engine::Engine;
use perpcore_book::{Fill, Taker};
use perpcore_risk::{self as risk};
use perpcore_types::*;

/// Where a fee goes: the fee income of the settlement asset, or (liquidation) an account.
#[derive(Clone, Copy)]
enum FeeSink {
    Income,
    Account(AccountId),
}

impl Engine {
    /// Settle both sides of one fill. Returns (taker fee, maker fee, taker PnL, maker PnL).
    pub(crate) fn settle_fill(
        &mut self,
        spec: &InstrumentSpec,
        taker: &Taker,
        f: &Fill,
        fee_override: Option<(Rate, AccountId)>,
    ) -> (Money, Money, Money, Money) {
        let price = spec.price_of(f.price);
        let (taker_rate, taker_sink) = match fee_override {
            Some((rate, sink)) => (rate, FeeSink::Account(sink)),
            None => (spec.taker_fee, FeeSink::Income),
        };
        let (tf, tp) = self.settle_side(
            spec,
            (taker.account, taker.reduce_only),
            taker.side,
            f.qty,
            price,
            taker_rate,
            taker_sink,
        );
        let (mf, mp) = self.settle_side(
            spec,
            (f.maker_account, f.maker_reduce_only),
            taker.side.opposite(),
            f.qty,
            price,
            spec.maker_fee,
            FeeSink::Income,
        );
        (tf, mf, tp, mp)
    }

    /// Settle one side of a fill at an exact price with the given fee rate.
    /// Returns (fee, realized PnL).
    #[allow(clippy::too_many_arguments)]
    fn settle_side(
        &mut self,
        spec: &InstrumentSpec,
        (account, reduce_only): (AccountId, bool),
        side: Side,
        lots: QtyLots,
        price: Price,
        fee_rate: Rate,
        sink: FeeSink,
    ) -> (Money, Money) {
        let k = self.idx(account).expect("fill account");
        // The leg the order works on (hedge mode: its side and reduce-only flag).
        let position = self.state.accounts[k].order_side(side, reduce_only);
        let settle = spec.settle_asset.0 as usize;
        let notional = spec.notional(lots, price);
        // Fees round up: a charge against the account (a rebate rounds toward zero).
        let fee = if self.state.accounts[k].system {
            Money::ZERO
        } else {
            notional.mul_rate(fee_rate, Rounding::Ceil)
        };
        let realized = self.move_position(k, (spec, position), side, lots, price, fee);
        match sink {
            FeeSink::Income => self.state.fee_income[settle] += fee,
            FeeSink::Account(id) => {
                let fk = self.idx(id).expect("fee account");
                self.state.accounts[fk].wallets[settle] += fee;
            }
        }
        (fee, realized)
    }

    /// Move a position by a fill (or a takeover) at `price` and book realized PnL and the
    /// fee (already computed, paid by this account). Returns the realized PnL.
    pub(crate) fn move_position(
        &mut self,
        k: usize,
        (spec, position): (&InstrumentSpec, PositionSide),
        side: Side,
        lots: QtyLots,
        price: Price,
        fee: Money,
    ) -> Money {
        let settle = spec.settle_asset.0 as usize;
        let account = &mut self.state.accounts[k];
        let id = account.id;
        let held_before = account.legs_of(spec.id).any(|l| !l.is_flat());
        let leg = account.leg_or_default(spec, position);
        let hold = self.tmp.holding_isolated == Some((id, spec.id));
        let risk::Settlement {
            realized_pnl,
            wallet_delta,
        } = risk::settle_fill(leg, spec, side, lots, price, fee, hold);
        debug_assert!(
            match position {
                PositionSide::Both => true,
                PositionSide::Long => leg.qty.0 >= 0,
                PositionSide::Short => leg.qty.0 <= 0,
            },
            "a hedge leg crossed zero"
        );
        account.wallets[settle] += wallet_delta;
        let held_after = account.legs_of(spec.id).any(|l| !l.is_flat());
        self.update_holders(spec.id, id, held_before, held_after);
        if wallet_delta.is_positive() {
            // Realized profit repays a loan's unpaid interest first (MARGIN §8).
            self.after_credit(k, spec.settle_asset, wallet_delta);
        }
        realized_pnl
    }

    /// `id` holds a position on `i` (any leg not flat) `before` and `after` a move.
    fn update_holders(&mut self, i: InstrumentId, id: AccountId, before: bool, after: bool) {
        let h = &mut self.ix.holders[i.0 as usize];
        match (!before, !after) {
            (true, false) => {
                let pos = h.binary_search(&id).expect_err("holder listed twice");
                h.insert(pos, id);
                if let Some(v) = self.tmp.tick_new_holders.as_mut() {
                    v.push((i, id));
                }
            }
            (false, true) => {
                let pos = h.binary_search(&id).expect("holder missing");
                h.remove(pos);
            }
            _ => {}
        }
    }
}
