//! Risk decisions as pure functions over a view of an account (issue 14, item 3): the
//! pre-trade check and the reservation it leads to, the settlement of a fill on a leg,
//! the liquidation plan's choices (which cross position goes first, how much a partial
//! step closes), and whether an amount may leave the account.
//!
//! The engine gathers what a decision needs from its state (the account, the
//! configuration, the marks, the USD prices, the account's other orders) and applies what
//! comes back; nothing here mutates anything but the leg a fill settles on. Each function
//! states its preconditions and checks its postconditions with `debug_assert!`.

use crate::account::{apply_fill, Account, Leg};
use crate::collateral::{collateral_usd, usd_pool, usd_value, UsdPool};
use crate::margin::{available, fee_to_close, is_pooled, pool, position_mm, Pool};
use perpcore_types::*;

/// An account with the prices and configuration a decision reads.
#[derive(Clone, Copy)]
pub struct AccountView<'a> {
    pub account: &'a Account,
    pub config: &'a Config,
    /// Per instrument.
    pub marks: &'a [Option<Price>],
    /// USD price per asset (MARGIN §1).
    pub usd: &'a [Option<IndexPrice>],
}

/// An order as the pre-trade check sees it, after the order-level checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderTerms {
    pub side: Side,
    /// The order's whole size.
    pub lots: QtyLots,
    /// The part of it that increases exposure (beyond what the position and the
    /// account's other orders on this side already close); `0 < increasing ≤ lots`.
    pub increasing: i64,
    pub limit: Price,
    /// Notional of the position at mark and the account's other open orders at their
    /// limits (the order being amended left out): what the bracket check adds to.
    pub exposure_before: Money,
    /// The leverage the order margins at.
    pub leverage: u32,
}

/// What an accepted order reserves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// Notional of the exposure-increasing part, valued at the margin price.
    pub margin_notional: Money,
    /// `margin_notional / leverage`, rounded up: the initial margin held while it rests.
    pub reserved: Money,
}

/// What a fill did to a leg and its owner's wallet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settlement {
    pub realized_pnl: Money,
    /// Into (positive) or out of the wallet of the settlement asset.
    pub wallet_delta: Money,
}

impl AccountView<'_> {
    /// The account's single-asset pool in `asset`.
    pub fn pool(&self, asset: AssetId) -> Pool {
        pool(self.account, asset, &self.config.instruments, self.marks)
    }

    /// The account's USD pool (multi-asset or unified mode).
    pub fn usd_pool(&self) -> UsdPool {
        let mode = self.account.asset_mode;
        usd_pool(self.account, self.config, self.marks, self.usd, |s| {
            is_pooled(mode, s)
        })
    }

    /// `amount` of `asset` in USD, rounded up (a requirement). `None` without a price.
    pub fn requirement_usd(&self, asset: AssetId, amount: Money) -> Option<Money> {
        let p = (*self.usd.get(asset.0 as usize)?)?;
        Some(crate::collateral::usd_requirement(amount, p))
    }

    /// Whether the margin available to an order on `spec` (plus `released`, the
    /// reservation of the order it replaces) covers `needed`, both in the settlement
    /// asset: the single-asset pool, or the USD pool valued at USD prices.
    pub fn covers(
        &self,
        spec: &InstrumentSpec,
        needed: Money,
        released: Money,
    ) -> Result<bool, RejectReason> {
        debug_assert!(!needed.is_negative() && !released.is_negative());
        if !is_pooled(self.account.asset_mode, spec) {
            let available = available(
                self.account,
                spec.settle_asset,
                &self.config.instruments,
                self.marks,
            );
            debug_assert_eq!(available, self.pool(spec.settle_asset).available());
            return Ok(available + released >= needed);
        }
        let pool = self.usd_pool();
        if pool.unpriced_liability {
            return Err(RejectReason::NoUsdPrice);
        }
        let needed = self
            .requirement_usd(spec.settle_asset, needed)
            .ok_or(RejectReason::NoUsdPrice)?;
        let released = self
            .requirement_usd(spec.settle_asset, released)
            .unwrap_or_default();
        Ok(pool.available() + released >= needed)
    }

    /// The pre-trade check of an order that increases exposure (MARGIN §3), and what it
    /// reserves if accepted: the increasing part valued at the price that makes its
    /// notional largest (a linear buy at max(limit, mark), a linear sell at its limit; an
    /// inverse order at min(limit, mark)); the bracket of the resulting exposure must
    /// allow the leverage; the available margin must cover the initial margin, the fee
    /// to close (when the instrument adds it) and the taker fee on the whole order.
    pub fn reserve(
        &self,
        spec: &InstrumentSpec,
        mark: Price,
        t: OrderTerms,
        released: Money,
    ) -> Result<Reservation, RejectReason> {
        debug_assert!(t.increasing > 0 && t.increasing <= t.lots.0, "{t:?}");
        debug_assert!(t.leverage >= 1);
        let margin_price = match (spec.is_inverse(), t.side) {
            (true, _) => t.limit.min(mark),
            (false, Side::Buy) => t.limit.max(mark),
            (false, Side::Sell) => t.limit,
        };
        let extra = spec.notional(QtyLots(t.increasing), margin_price);
        if spec.bracket_for(t.exposure_before + extra).max_leverage < t.leverage {
            return Err(RejectReason::LeverageExceedsBracket);
        }
        let initial_margin = extra.div_int(i64::from(t.leverage), Rounding::Ceil);
        let close_fee = if spec.fee_to_close {
            fee_to_close(
                spec,
                QtyLots(t.increasing),
                extra,
                t.side == Side::Buy,
                t.leverage,
            )
        } else {
            Money::ZERO
        };
        let full = if t.increasing == t.lots.0 {
            extra
        } else {
            spec.notional(t.lots, margin_price)
        };
        let fee_est = full.mul_rate(spec.taker_fee.max(Rate::ZERO), Rounding::Ceil);
        if !self.covers(spec, initial_margin + close_fee + fee_est, released)? {
            return Err(RejectReason::InsufficientMargin);
        }
        let r = Reservation {
            margin_notional: extra,
            reserved: initial_margin,
        };
        debug_assert!(!r.reserved.is_negative() && r.reserved <= r.margin_notional);
        Ok(r)
    }

    /// MARGIN §7's order within a cross pool: the cross position settling in `asset`
    /// with the largest maintenance margin at its mark is liquidated first; on a tie the
    /// lowest instrument id (then LONG before SHORT). `None` when the pool holds no cross
    /// position (or one lacks a mark, which cannot happen for a position).
    pub fn largest_cross_position(&self, asset: AssetId) -> Option<(InstrumentId, PositionSide)> {
        let mut best: Option<(Money, (InstrumentId, PositionSide))> = None;
        for leg in &self.account.legs {
            let spec = &self.config.instruments[leg.instrument.0 as usize];
            if spec.settle_asset != asset || leg.mode != MarginMode::Cross || leg.is_flat() {
                continue;
            }
            let mark = (*self.marks.get(leg.instrument.0 as usize)?)?;
            let mm = position_mm(leg, spec, mark);
            // Strictly larger wins; legs are in instrument order, so ties keep the lowest id.
            if best.is_none_or(|(b, _)| mm > b) {
                best = Some((mm, (leg.instrument, leg.side)));
            }
        }
        best.map(|(_, i)| i)
    }

    /// The same order within a USD pool: the pooled cross position with the largest
    /// maintenance margin valued in USD (at the settlement asset's USD price; unvalued
    /// where there is none) goes first; on a tie the lowest instrument id.
    pub fn largest_pooled_position(&self) -> Option<(InstrumentId, PositionSide)> {
        let mode = self.account.asset_mode;
        let mut best: Option<(Money, (InstrumentId, PositionSide))> = None;
        for leg in &self.account.legs {
            let spec = &self.config.instruments[leg.instrument.0 as usize];
            if !is_pooled(mode, spec) || leg.mode != MarginMode::Cross || leg.is_flat() {
                continue;
            }
            let mark = (*self.marks.get(leg.instrument.0 as usize)?)?;
            let mm = position_mm(leg, spec, mark);
            let mm = match self
                .usd
                .get(spec.settle_asset.0 as usize)
                .copied()
                .flatten()
            {
                Some(p) => usd_value(mm, p),
                None => mm,
            };
            if best.is_none_or(|(b, _)| mm > b) {
                best = Some((mm, (leg.instrument, leg.side)));
            }
        }
        best.map(|(_, i)| i)
    }

    /// Whether `amount` of `asset` may leave the account (a withdrawal or a transfer
    /// out): within the pool's withdrawable amount, and for a USD pool, from a wallet
    /// that holds it and leaving the pool's available margin non-negative with every
    /// asset's unrealized profit left out (MARGIN §5).
    pub fn can_withdraw(&self, asset: AssetId, amount: Money) -> bool {
        debug_assert!(amount.is_positive());
        if self.pool(asset).withdrawable() < amount {
            return false;
        }
        let a = self.account;
        if a.asset_mode == AssetMode::Single {
            return true;
        }
        if a.wallets[asset.0 as usize] < amount {
            return false;
        }
        let mut after = a.clone();
        after.wallets[asset.0 as usize] -= amount;
        let view = AccountView {
            account: &after,
            ..*self
        };
        let mut pool = view.usd_pool();
        if pool.positions == 0 && pool.order_margin.is_zero() {
            return !pool.unpriced_liability;
        }
        // Value the pool again with every asset's unrealized profit left out.
        pool.adjusted_equity = Money::ZERO;
        for (i, spec) in self.config.assets.iter().enumerate() {
            let eq = after.wallets[i] + (pool.equity[i] - after.wallets[i]).min(Money::ZERO);
            match collateral_usd(eq, spec.collateral.as_ref(), self.usd[i]) {
                Some(v) => pool.adjusted_equity += v,
                None => return false,
            }
        }
        !pool.unpriced_liability && !pool.available().is_negative()
    }
}

/// Settle a fill of `lots` at `price` on `leg` (MARGIN §2), the owner paying `fee`
/// (already computed). Cross: realized PnL less the fee goes to the wallet. Isolated: the
/// closed part's PnL stays with the position's margin and the closed share of that margin
/// returns to the wallet (unless `hold_margin`: a liquidation order's margin belongs to
/// the liquidation, MARGIN §7); opening moves the new part's initial margin from the
/// wallet; the fee is paid from the wallet when the fill opens exposure, else from the
/// margin; a margin traded below zero is paid by the wallet.
///
/// Postconditions: the wallet change plus the isolated margin's change equals realized
/// PnL less the fee (nothing created or lost), and the isolated margin is not negative.
pub fn settle_fill(
    leg: &mut Leg,
    spec: &InstrumentSpec,
    side: Side,
    lots: QtyLots,
    price: Price,
    fee: Money,
    hold_margin: bool,
) -> Settlement {
    debug_assert!(lots.0 > 0 && price.is_positive());
    let before = leg.qty;
    let margin_before = leg.isolated_margin;
    let eff = apply_fill(leg, spec, side, lots.0, price);
    let mut wallet_delta = Money::ZERO;
    if leg.mode == MarginMode::Cross {
        wallet_delta += eff.realized_pnl - fee;
    } else {
        leg.isolated_margin += eff.realized_pnl;
        let holding = hold_margin && !leg.qty.is_zero();
        if eff.closed_lots > 0 && !holding {
            let release = if eff.closed_lots == before.0.abs() {
                leg.isolated_margin
            } else {
                leg.isolated_margin.mul_div(
                    i128::from(eff.closed_lots),
                    i128::from(before.0.abs()),
                    Rounding::Floor,
                )
            };
            leg.isolated_margin -= release;
            wallet_delta += release;
        }
        if eff.opened_lots > 0 {
            let opened = spec.notional(QtyLots(eff.opened_lots), price);
            let mut add = opened.div_int(i64::from(leg.leverage), Rounding::Ceil);
            if spec.convention == MarginConvention::Bybit {
                // Bybit's position margin: IM plus the opened part's fee to close.
                add += fee_to_close(
                    spec,
                    QtyLots(eff.opened_lots),
                    opened,
                    leg.qty.0 > 0,
                    leg.leverage,
                );
            }
            leg.isolated_margin += add;
            wallet_delta -= add + fee;
        } else {
            leg.isolated_margin -= fee;
            if leg.qty.is_zero() {
                // Fully closed: whatever margin is left (after the fee) goes home.
                wallet_delta += leg.isolated_margin;
                leg.isolated_margin = Money::ZERO;
            }
        }
        if leg.isolated_margin.is_negative() {
            // Traded beyond the bankruptcy price: the owner's wallet pays the shortfall
            // (what it cannot pay, the engine covers from the fund).
            wallet_delta += leg.isolated_margin;
            leg.isolated_margin = Money::ZERO;
        }
    }
    if leg.qty.is_zero() {
        // A closed position's funding history ends with it.
        leg.funding = Money::ZERO;
    }
    debug_assert_eq!(
        wallet_delta + (leg.isolated_margin - margin_before),
        eff.realized_pnl - fee,
        "a fill's settlement creates or loses money"
    );
    debug_assert!(!leg.isolated_margin.is_negative());
    Settlement {
        realized_pnl: eff.realized_pnl,
        wallet_delta,
    }
}

/// MARGIN §7 step 2, the partial liquidation's size: the lots to close so that the
/// position's notional at `mark` falls into the bracket below its current one (at least
/// one lot, at most the position). `None` when the position is already in the first
/// bracket (no partial step: the whole position goes).
pub fn bracket_step_lots(leg: &Leg, spec: &InstrumentSpec, mark: Price) -> Option<i64> {
    debug_assert!(!leg.qty.is_zero() && mark.is_positive());
    let notional = spec.notional(leg.qty, mark);
    let b = spec
        .brackets
        .iter()
        .position(|b| notional <= b.notional_cap)
        .unwrap_or(spec.brackets.len() - 1);
    if b == 0 {
        return None;
    }
    let target = spec.brackets[b - 1].notional_cap;
    let per_lot = spec.notional(QtyLots(1), mark);
    let whole = leg.qty.0.abs();
    let keep = if per_lot.is_zero() {
        0
    } else {
        // At most the whole position, so it fits the position's type.
        i64::try_from((target.raw() / per_lot.raw()).min(i128::from(whole)))
            .expect("at most a position's size")
    };
    let reduce = (whole - keep).max(1).min(whole);
    debug_assert!(reduce >= 1 && reduce <= whole);
    Some(reduce)
}

/// One position's funding at a funding time (MARGIN §9): `notional at mark × rate`, longs
/// paying when the rate is positive. Linear: `q × mark × rate` in the quote; inverse:
/// `q × CV / mark × rate` in the coin. Signed: positive is paid, negative received.
/// Rounded up once at the end, which is against the account either way (a payer pays
/// the rounded-up amount, a receiver gets the amount rounded toward zero), so the
/// receipts of a settlement never exceed its payments.
pub fn funding_payment(leg: &Leg, spec: &InstrumentSpec, mark: Price, rate: Rate) -> Money {
    debug_assert!(mark.is_positive());
    // Exact in wide integers: value × rate / RATE_SCALE, one rounding.
    let exact_num: i128;
    let exact_den: i128;
    match spec.kind {
        ContractKind::Linear => {
            // notional (money raw) = linear_value(q, mark); the product with the rate is
            // notional × rate / RATE_SCALE.
            exact_num = spec.linear_value(leg.qty, mark).raw();
            exact_den = 1;
        }
        ContractKind::Inverse { contract_value } => {
            // q × CV / mark in coin, in money raw: lots × lot_raw × CV_raw / mark_raw (the
            // 10^8 scales cancel, as in `inverse_value`), kept as a fraction so that the
            // rate multiplies before the one rounding.
            exact_num =
                i128::from(leg.qty.0) * i128::from(spec.lot_size.raw()) * contract_value.raw();
            exact_den = i128::from(mark.raw());
        }
    }
    let amount = mul_div(
        exact_num,
        i128::from(rate.raw()),
        exact_den * i128::from(RATE_SCALE),
        Rounding::Ceil,
    );
    Money(amount)
}
