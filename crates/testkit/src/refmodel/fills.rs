//! Fill settlement: fees, positions, realized PnL, reduce-only upkeep, deficit cover.

use super::*;

impl RefModel {
    /// One side of a fill: fee and position. Returns (fee, realized PnL).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn settle_side(
        &mut self,
        spec: &InstrumentSpec,
        account: AccountId,
        side: Side,
        lots: i64,
        price: Q,
        rate: Rate,
        sink: Option<AccountId>,
    ) -> (Q, Q) {
        let settle = usize::from(spec.settle_asset.0);
        let exact_fee = notional(spec, lots, price) * Q::rate(rate);
        let fee = if self.acct(account).expect("account").system {
            Q::ZERO
        } else if self.perturbation == Perturbation::FeeRoundsDown {
            down(exact_fee)
        } else {
            // ENGINE ROUNDS: a fee, up (a rebate toward zero).
            up(exact_fee)
        };
        let realized = self.move_position(account, spec, side, lots, price, fee);
        match sink {
            None => self.fee_income[settle] += fee,
            Some(fund) => self.acct_mut(fund).wallets[settle] += fee,
        }
        (fee, realized)
    }

    /// Move a position by `lots` on `side` at `price` and book realized PnL and `fee`
    /// (MARGIN §2, real-time settlement). Returns the realized PnL.
    pub(super) fn move_position(
        &mut self,
        account: AccountId,
        spec: &InstrumentSpec,
        side: Side,
        lots: i64,
        price: Q,
        fee: Q,
    ) -> Q {
        let settle = usize::from(spec.settle_asset.0);
        let holding_isolated = self.holding_isolated;
        let perturbation = self.perturbation;
        let a = self.acct_mut(account);
        let leg = a.leg_mut(spec);
        let before = leg.lots;
        let d = side.sign() * lots;
        let (mut realized, mut closed, mut opened) = (Q::ZERO, 0i64, 0i64);
        if spec.is_inverse() {
            (realized, closed, opened) = inverse_fill(leg, spec, d, price, perturbation);
        } else if before == 0 || (before > 0) == (d > 0) {
            leg.basis += value(spec, d, price);
            leg.lots = before + d;
            opened = lots;
        } else {
            closed = lots.min(before.abs());
            let rest = lots - closed;
            // ENGINE ROUNDS: the closed share of the basis, up (a smaller profit).
            let share = leg.basis * Q::new(i128::from(closed), i128::from(before.abs()));
            let closed_basis = if perturbation == Perturbation::ClosedBasisRoundsDown {
                down(share)
            } else {
                up(share)
            };
            realized = value(spec, before.signum() * closed, price) - closed_basis;
            leg.basis -= closed_basis;
            leg.lots = before - before.signum() * closed;
            if rest > 0 {
                assert!(leg.lots == 0 && leg.basis.is_zero(), "model: flip residue");
                leg.lots = d.signum() * rest;
                leg.basis = value(spec, leg.lots, price);
                opened = rest;
            }
        }
        let mut wallet_delta = Q::ZERO;
        if leg.mode == MarginMode::Cross {
            wallet_delta += realized - fee;
        } else {
            // Isolated: PnL stays with the position's margin; the closed share of the
            // margin goes home (not while a liquidation's partial step holds it); opening
            // takes the new part's IM and the fee from the wallet.
            leg.isolated_margin += realized;
            let holding = holding_isolated == Some((account, spec.id)) && leg.lots != 0;
            if closed > 0 && !holding {
                let release = if closed == before.abs() {
                    leg.isolated_margin
                } else {
                    // ENGINE ROUNDS: the margin returned, down (a credit).
                    down(leg.isolated_margin * Q::new(i128::from(closed), i128::from(before.abs())))
                };
                leg.isolated_margin -= release;
                wallet_delta += release;
            }
            if opened > 0 {
                // ENGINE ROUNDS: the opened part's IM, up.
                let add = up(notional(spec, opened, price) / Q::int(i128::from(leg.leverage)));
                leg.isolated_margin += add;
                wallet_delta -= add + fee;
            } else {
                leg.isolated_margin -= fee;
                if leg.lots == 0 {
                    wallet_delta += leg.isolated_margin;
                    leg.isolated_margin = Q::ZERO;
                }
            }
            if leg.isolated_margin.is_negative() {
                // Traded beyond bankruptcy: the owner's wallet pays the shortfall.
                wallet_delta += leg.isolated_margin;
                leg.isolated_margin = Q::ZERO;
            }
        }
        a.wallets[settle] += wallet_delta;
        if wallet_delta.is_positive() {
            // Realized profit repays a loan's unpaid interest first (MARGIN §8).
            self.after_credit(account, spec.settle_asset, wallet_delta);
        }
        realized
    }

    pub(super) fn after_maker_fill(&mut self, spec: &InstrumentSpec, f: &Fill) {
        if f.maker_done {
            self.orders.retain(|o| o.id != f.maker_order);
        } else {
            let before = f.maker_remaining.0 + f.qty.0;
            self.resize(spec, f.maker_order, f.price, before, f.maker_remaining.0);
        }
    }

    /// An order's open size went from `before` to `after` in place: scale its reservation.
    pub(super) fn resize(
        &mut self,
        spec: &InstrumentSpec,
        id: OrderId,
        price: PriceTicks,
        before: i64,
        after: i64,
    ) {
        let account = self.order(id).expect("order").account;
        let lev = Q::int(i128::from(self.leverage_of(account, spec)));
        let o = self.order_mut(id);
        // ENGINE ROUNDS: pro rata margin notional, up; reservation, up.
        o.margin_notional = up(o.margin_notional * Q::new(i128::from(after), i128::from(before)));
        o.reserved = up(o.margin_notional / lev);
        o.open_notional = notional(spec, after, tick_price(spec, price));
    }

    /// Rule R3 after a position changed: reduce-only orders on the wrong side (or with no
    /// position) are cancelled, larger ones cut to the position.
    pub(super) fn fix_reduce_only(
        &mut self,
        account: AccountId,
        spec: &InstrumentSpec,
        out: &mut Vec<Event>,
    ) {
        let pos = self.acct(account).map_or(0, |a| a.lots(spec.id));
        for o in self
            .orders_of(account, spec.id)
            .into_iter()
            .filter(|o| o.reduce_only)
        {
            let r = *self.books[spec.id.0 as usize].get(o.id).expect("in book");
            if pos == 0 || (pos > 0) == (r.side == Side::Buy) {
                self.books[spec.id.0 as usize].cancel(o.id);
                self.orders.retain(|x| x.id != o.id);
                out.push(Event::OrderCanceled {
                    account,
                    order_id: o.id,
                    open_qty: lots_q(spec, r.open_qty.0).to_qty(),
                    reason: CancelReason::ReduceOnlyObsolete,
                });
            } else if r.open_qty.0 > pos.abs() {
                self.books[spec.id.0 as usize]
                    .reduce_qty(o.id, QtyLots(pos.abs()))
                    .expect("reduce");
                self.resize(spec, o.id, r.price, r.open_qty.0, pos.abs());
                out.push(Event::OrderReduced {
                    order_id: o.id,
                    open_qty: lots_q(spec, pos.abs()).to_qty(),
                });
            }
        }
    }

    /// A wallet left negative with no cross position to carry it: the fund covers it.
    pub(super) fn cover_deficit(
        &mut self,
        account: AccountId,
        asset: AssetId,
        out: &mut Vec<Event>,
    ) {
        let p = self.pool(account, asset);
        if p.cross_positions > 0 || !p.wallet.is_negative() {
            return;
        }
        let k = usize::from(asset.0);
        // As far as the fund's balance goes: the fund never goes negative.
        let fund = self.acct(fund_id(asset)).expect("fund").wallets[k].max(Q::ZERO);
        let amount = (-p.wallet).min(fund);
        if amount.is_zero() {
            return;
        }
        self.acct_mut(fund_id(asset)).wallets[k] -= amount;
        self.acct_mut(account).wallets[k] += amount;
        if !self.acct(account).expect("account").wallets[k].is_negative() {
            self.acct_mut(account).interest_owed[k] = Q::ZERO;
        }
        out.push(Event::DeficitCovered {
            account,
            asset,
            amount: amount.to_money(),
        });
    }
}

/// An inverse fill of `d` signed lots at `price` on `leg` (MARGIN §2): the basis is
/// `Σ q × CV / p` in coin, realized PnL on closing `c` of `|q|` lots is the closed share
/// of the basis plus the closing share of the fill's (signed) coin value. Returns
/// (realized, closed lots, opened lots).
///
/// ENGINE ROUNDS: the fill's coin value once per fill, its magnitude down (so both sides
/// book the same amount); the closed share of the basis down (toward −∞); on a flip, the
/// closing share of the fill value down (toward −∞), the rest opening the new position.
fn inverse_fill(
    leg: &mut Leg,
    spec: &InstrumentSpec,
    d: i64,
    price: Q,
    p: Perturbation,
) -> (Q, i64, i64) {
    let before = leg.lots;
    let lots = d.abs();
    let magnitude = if p == Perturbation::InverseFillValueRoundsUp {
        up(coin_value(spec, lots, price))
    } else {
        down(coin_value(spec, lots, price))
    };
    let f = Q::int(i128::from(d.signum())) * magnitude;
    if before == 0 || (before > 0) == (d > 0) {
        leg.basis += f;
        leg.lots = before + d;
        return (Q::ZERO, 0, lots);
    }
    let closed = lots.min(before.abs());
    let rest = lots - closed;
    let share = leg.basis * Q::new(i128::from(closed), i128::from(before.abs()));
    let closed_basis = if p == Perturbation::ClosedBasisRoundsDown {
        // The perturbation's wrong direction for inverse: up (a larger profit here).
        up(share)
    } else {
        down(share)
    };
    let f_close = if rest == 0 {
        f
    } else {
        down(f * Q::new(i128::from(closed), i128::from(lots)))
    };
    let realized = closed_basis + f_close;
    leg.basis -= closed_basis;
    leg.lots = before - before.signum() * closed;
    if rest > 0 {
        assert!(leg.lots == 0 && leg.basis.is_zero(), "model: flip residue");
        leg.lots = d.signum() * rest;
        leg.basis = f - f_close;
    }
    (realized, closed, rest)
}
