//! Margin arithmetic (MARGIN.md §2, §3, §5, §6): valuation of positions at mark, initial
//! and maintenance margin, the single-asset cross pool, liquidation and bankruptcy prices.
//! Never mutates state.

use crate::account::{Account, Leg};
use perpcore_types::{
    div_round, AssetId, AssetMode, Bracket, InstrumentSpec, MarginConvention, MarginMode, Money,
    Price, QtyLots, Rate, Rounding, MAX_PRICE, RATE_SCALE,
};

/// Marks indexed by instrument id (`None` until the feed sets one).
pub type Marks = [Option<Price>];

/// Unrealized PnL at `mark`: `q × M − basis` (MARGIN §2). Exact.
pub fn upnl(leg: &Leg, spec: &InstrumentSpec, mark: Price) -> Money {
    if spec.is_inverse() {
        // `basis − q·CV/M` (coin); the value is rounded up, against the account for a long
        // (a larger value is a smaller profit) and for a short (a less negative value).
        return leg.basis - spec.inverse_value(leg.qty, mark, Rounding::Ceil);
    }
    spec.linear_value(leg.qty, mark) - leg.basis
}

/// Estimated fee to close (Bybit's order cost, case M6): the taker fee on the position's
/// value at the bankruptcy price estimated from entry and leverage. Linear:
/// `|q| × E × (1 ∓ 1/L) × taker` (long −, short +). Inverse, in coin:
/// `contracts × CV / BP × taker` with `BP = E × L / (L ± 1)`, i.e.
/// `value × (1 ± 1/L) × taker` (long +, short −) where `value = contracts × CV / E`.
/// `value_at_entry` is the position's value at entry (its basis; for an order, its
/// notional at the order price). The value at bankruptcy and the fee round up.
pub fn fee_to_close(
    spec: &InstrumentSpec,
    lots: QtyLots,
    value_at_entry: Money,
    long: bool,
    leverage: u32,
) -> Money {
    debug_assert!(!lots.is_zero() && leverage >= 1);
    let value = value_at_entry.abs();
    let l = i64::from(leverage);
    // A linear long and an inverse short lose value on the way to bankruptcy; a linear
    // short and an inverse long (the coin value of a falling price) gain it.
    let bankrupt_value = if long == spec.is_inverse() {
        value + value.div_int(l, Rounding::Ceil)
    } else {
        value - value.div_int(l, Rounding::Floor)
    };
    bankrupt_value.mul_rate(spec.taker_fee, Rounding::Ceil)
}

/// Initial margin of a position at mark: `N / L` rounded up (+ fee to close if the
/// instrument uses that convention).
pub fn position_im(leg: &Leg, spec: &InstrumentSpec, mark: Price) -> Money {
    let n = spec.notional(leg.qty, mark);
    let mut im = n.div_int(i64::from(leg.leverage), Rounding::Ceil);
    if spec.fee_to_close && !leg.qty.is_zero() {
        im += fee_to_close(spec, leg.qty, leg.basis, leg.qty.0 > 0, leg.leverage);
    }
    im
}

/// The value a position's maintenance margin is reckoned on (docs/MARGIN.md,
/// "Conventions"): `binance` the notional at mark, `bybit` the position value at entry
/// (`|basis|`: linear `|q| × E`, inverse `contracts × CV / E` in coin). Also picks the
/// bracket.
pub fn mm_notional(leg: &Leg, spec: &InstrumentSpec, mark: Price) -> Money {
    match spec.convention {
        MarginConvention::Binance => spec.notional(leg.qty, mark),
        MarginConvention::Bybit => leg.basis.abs(),
    }
}

/// Maintenance margin of a position: `N × mmr_b − cum_b` (MARGIN §3, case M1) on
/// [`mm_notional`], plus the close fee when the instrument adds it.
pub fn position_mm(leg: &Leg, spec: &InstrumentSpec, mark: Price) -> Money {
    if leg.qty.is_zero() {
        return Money::ZERO;
    }
    spec.maintenance_margin(mm_notional(leg, spec, mark)) + close_fee(leg, spec)
}

/// The cost of opening `lots` at `price` with `leverage`: IM, fee to open and (when the
/// instrument uses the convention) the estimated fee to close. Case M6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderCost {
    pub initial_margin: Money,
    pub open_fee: Money,
    pub close_fee: Money,
}

impl OrderCost {
    pub fn total(&self) -> Money {
        self.initial_margin + self.open_fee + self.close_fee
    }
}

pub fn order_cost(
    spec: &InstrumentSpec,
    lots: QtyLots,
    price: Price,
    long: bool,
    leverage: u32,
) -> OrderCost {
    let n = spec.notional(lots, price);
    OrderCost {
        initial_margin: n.div_int(i64::from(leverage), Rounding::Ceil),
        open_fee: n.mul_rate(spec.taker_fee, Rounding::Ceil),
        close_fee: if spec.fee_to_close {
            fee_to_close(spec, lots, n, long, leverage)
        } else {
            Money::ZERO
        },
    }
}

/// An account's single-asset cross pool in one settlement asset (MARGIN §5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pool {
    pub wallet: Money,
    pub cross_upnl: Money,
    pub cross_im: Money,
    pub cross_mm: Money,
    /// Reserved margin of every open order settling in this asset (cross and isolated:
    /// both are paid from the wallet).
    pub order_margin: Money,
    pub cross_positions: u32,
}

impl Pool {
    /// Margin balance: wallet + cross uPnL.
    pub fn margin_balance(&self) -> Money {
        self.wallet + self.cross_upnl
    }
    /// Available for new orders: margin balance − position IM − order margin.
    pub fn available(&self) -> Money {
        self.margin_balance() - self.cross_im - self.order_margin
    }
    /// Withdrawable: never unrealized profit, never margin in use; at most the wallet.
    pub fn withdrawable(&self) -> Money {
        let free =
            self.wallet + self.cross_upnl.min(Money::ZERO) - self.cross_im - self.order_margin;
        free.min(self.wallet).max(Money::ZERO)
    }
    /// Account maintenance margin rate `MM / margin balance` (None with no cross MM).
    pub fn mmr(&self) -> Option<Rate> {
        if self.cross_mm.is_zero() {
            return None;
        }
        if !self.margin_balance().is_positive() {
            return Some(Rate(i64::MAX));
        }
        Rate::ratio(self.cross_mm, self.margin_balance(), Rounding::Ceil)
    }
    /// Cross liquidation condition: `MMR ≥ 100%`, i.e. `MM ≥ margin balance` with a
    /// position open.
    pub fn is_liquidatable(&self) -> bool {
        self.cross_positions > 0 && self.cross_mm >= self.margin_balance()
    }
}

/// Whether an instrument's cross positions belong to the account's USD pool rather than
/// to its settlement asset's own pool (MARGIN §5).
pub fn is_pooled(mode: AssetMode, spec: &InstrumentSpec) -> bool {
    match mode {
        AssetMode::Single => false,
        AssetMode::Multi => !spec.is_inverse(),
        AssetMode::Unified => true,
    }
}

/// Sum an account's legs settling in `asset` that are not in its USD pool. `specs` and
/// `marks` are indexed by instrument id.
pub fn pool(account: &Account, asset: AssetId, specs: &[InstrumentSpec], marks: &Marks) -> Pool {
    let mut p = Pool {
        wallet: account.wallets[usize::from(asset.0)],
        ..Pool::default()
    };
    for leg in &account.legs {
        let spec = &specs[crate::instrument_slot(leg.instrument)];
        if spec.settle_asset != asset || is_pooled(account.asset_mode, spec) {
            continue;
        }
        p.order_margin += leg.order_margin;
        if leg.mode == MarginMode::Cross && !leg.qty.is_zero() {
            let mark =
                marks[crate::instrument_slot(leg.instrument)].expect("position without a mark");
            p.cross_upnl += upnl(leg, spec, mark);
            p.cross_im += position_im(leg, spec, mark);
            p.cross_mm += position_mm(leg, spec, mark);
            p.cross_positions += 1;
        }
    }
    p
}

/// `pool(..).available()` without the maintenance margin the pre-trade check does not
/// need: wallet + cross uPnL − cross position IM − order margin. Equal to it by
/// construction (the same terms in the same roundings); a test holds them together.
pub fn available(
    account: &Account,
    asset: AssetId,
    specs: &[InstrumentSpec],
    marks: &Marks,
) -> Money {
    let mut v = account.wallets[usize::from(asset.0)];
    for leg in &account.legs {
        let spec = &specs[crate::instrument_slot(leg.instrument)];
        if spec.settle_asset != asset || is_pooled(account.asset_mode, spec) {
            continue;
        }
        v -= leg.order_margin;
        if leg.mode == MarginMode::Cross && !leg.qty.is_zero() {
            let mark =
                marks[crate::instrument_slot(leg.instrument)].expect("position without a mark");
            if spec.is_inverse() || spec.fee_to_close {
                v += upnl(leg, spec, mark);
                v -= position_im(leg, spec, mark);
            } else {
                // Linear: uPnL and IM from one product `q × M` (its magnitude is the
                // notional), the same terms as `upnl` and `position_im`.
                let (value, im) = linear_valuation(leg, spec, mark);
                v += value - leg.basis;
                v -= im;
            }
        }
    }
    v
}

/// A linear leg's `(q × M, |q × M| / L rounded up)`: the terms of `upnl` and of
/// `position_im` without a fee to close, through the leg's valuation cache.
#[inline]
pub fn linear_valuation(leg: &Leg, spec: &InstrumentSpec, mark: Price) -> (Money, Money) {
    debug_assert!(!spec.is_inverse());
    leg.valuation.get_or(mark, leg.qty, leg.leverage, || {
        let value = spec.linear_value(leg.qty, mark);
        (
            value,
            value.abs().div_int(i64::from(leg.leverage), Rounding::Ceil),
        )
    })
}

/// Isolated liquidation condition: `IW + uPnL ≤ MM` (MARGIN §5).
pub fn isolated_liquidatable(leg: &Leg, spec: &InstrumentSpec, mark: Price) -> bool {
    !leg.qty.is_zero()
        && leg.isolated_margin + upnl(leg, spec, mark) <= position_mm(leg, spec, mark)
}

/// The close fee a position's maintenance margin carries (zero without the convention):
/// `fee_to_close` at the leg's basis and leverage, so it does not move with the mark.
pub fn close_fee(leg: &Leg, spec: &InstrumentSpec) -> Money {
    if spec.fee_to_close && !leg.qty.is_zero() {
        fee_to_close(spec, leg.qty, leg.basis, leg.qty.0 > 0, leg.leverage)
    } else {
        Money::ZERO
    }
}

/// Liquidation price (MARGIN §6): the first mark, coming from the healthy side, at which
/// the engine's own check says liquidatable with every other price fixed — for a long the
/// highest raw price at which `C + uPnL(M) ≤ MM(M)` holds, for a short the lowest. `C` is
/// `wb_plus_others` = `WB − TMM_other + UPNL_other` of a single-asset cross pool (what
/// `Pool::is_liquidatable` compares), or `IW` for an isolated position
/// (`isolated_liquidatable`); the position's own MM includes its close fee.
///
/// Exact for every size: the condition is solved bracket by bracket in `i128` with the
/// check's own roundings (MM rounded up to 10^-12; an inverse value `q·CV/M` rounded up),
/// and the one rounding of the result is the division that turns the condition into a
/// bound on the integer price. Linear, per bracket `b` (`v` = `q` in money-raw per
/// price-raw, `A = C − F + cum_b − basis`): `A + v·M ≤ ⌈|v|·M·mmr_b⌉` ⟺
/// `M·(v − |v|·mmr_b) < 1 − A` (both sides scaled by the rate scale), the MARGIN §6
/// closed form `LP = (WB − TMM_other + UPNL_other + cum − q·E) / (|q|·mmr − q)` with the
/// close fee in the numerator. Inverse: the same in the notional `N = ⌈|q|·CV/M⌉`.
/// The brackets are taken over the prices where `bracket_for` picks them, so no
/// iteration is needed. Searched over `1 ..= MAX_PRICE` raw (every mark the engine
/// accepts); `None` when no such price liquidates, or when the arithmetic would leave
/// `i128` (beyond every validated input).
pub fn liquidation_price(
    leg: &Leg,
    spec: &InstrumentSpec,
    wb_plus_others: Money,
    _mark: Price,
) -> Option<Price> {
    if leg.qty.is_zero() {
        return None;
    }
    let long = leg.qty.0 > 0;
    let c = wb_plus_others
        .raw()
        .checked_sub(close_fee(leg, spec).raw())?;
    if spec.convention == MarginConvention::Bybit {
        // MM on the value at entry does not move with the mark: the condition is
        // `C − F + uPnL(M) ≤ MM`, one "bracket" with mmr 0 and cum −MM over every price.
        let flat = Bracket {
            notional_floor: Money::ZERO,
            notional_cap: Money::ZERO,
            max_leverage: 0,
            mmr: Rate::ZERO,
            cum: -spec.maintenance_margin(leg.basis.abs()),
        };
        let found = if spec.is_inverse() {
            inverse_bracket(leg, spec, c, &flat, 0, None)
        } else {
            linear_bracket(leg, spec, c, &flat, 0, None)
        };
        return found?.and_then(|m| i64::try_from(m).ok()).map(Price);
    }
    let mut best: Option<i128> = None;
    for (b, n_lo, n_hi) in bracket_ranges(spec) {
        let found = if spec.is_inverse() {
            inverse_bracket(leg, spec, c, b, n_lo, n_hi)
        } else {
            linear_bracket(leg, spec, c, b, n_lo, n_hi)
        };
        let Some(m) = found? else { continue };
        best = Some(match best {
            Some(x) if long => x.max(m),
            Some(x) => x.min(m),
            None => m,
        });
    }
    best.and_then(|m| i64::try_from(m).ok()).map(Price)
}

/// Rate scale as `i128` (widening: `From` is not callable in a constant).
const RS: i128 = RATE_SCALE as i128;
/// The raw prices a mark can take: `1 ..= MAX_PRICE`.
const PRICE_LO: i128 = 1;
const PRICE_HI: i128 = MAX_PRICE.0 as i128; // widening, as `RS`

/// Each bracket with the raw notionals `bracket_for` gives it: `n_lo ..= n_hi` (`None`:
/// unbounded). A bracket takes what no earlier one took (first match by cap); the last
/// also takes everything above every cap.
fn bracket_ranges(spec: &InstrumentSpec) -> impl Iterator<Item = (&Bracket, i128, Option<i128>)> {
    let last = spec.brackets.len().saturating_sub(1);
    let mut below: i128 = -1; // the largest notional an earlier bracket took
    spec.brackets.iter().enumerate().map(move |(i, b)| {
        let lo = below.saturating_add(1).max(0);
        let hi = (i != last).then_some(b.notional_cap.raw());
        below = below.max(b.notional_cap.raw());
        (b, lo, hi)
    })
}

/// The integers `x` with `p·x < q`, as an interval `(lo, hi)` (`None` = unbounded side),
/// or `None` when there is none. One rounding: the division turning it into a bound.
#[allow(clippy::type_complexity)]
fn solve_lt(p: i128, q: i128) -> Option<(Option<i128>, Option<i128>)> {
    use std::cmp::Ordering::*;
    match p.cmp(&0) {
        // x < q/p ⟺ x ≤ ⌊(q − 1)/p⌋
        Greater => Some((None, Some(div_round(q.checked_sub(1)?, p, Rounding::Floor)))),
        // x > q/p ⟺ x ≥ ⌊q/p⌋ + 1
        Less => Some((Some(div_round(q, p, Rounding::Floor).checked_add(1)?), None)),
        Equal => (q > 0).then_some((None, None)),
    }
}

/// The interval `[max(lo, a), min(hi, b)]`, `None` if empty.
fn clamp(lo: i128, hi: i128, (a, b): (Option<i128>, Option<i128>)) -> Option<(i128, i128)> {
    let lo = a.map_or(lo, |a| a.max(lo));
    let hi = b.map_or(hi, |b| b.min(hi));
    (lo <= hi).then_some((lo, hi))
}

/// A linear position's liquidating prices inside bracket `b` (notional `n_lo ..= n_hi`):
/// the highest (long) or lowest (short). `Some(None)`: none; `None`: overflow.
fn linear_bracket(
    leg: &Leg,
    spec: &InstrumentSpec,
    c: i128,
    b: &Bracket,
    n_lo: i128,
    n_hi: Option<i128>,
) -> Option<Option<i128>> {
    // v: the position's value per raw price unit, in raw money (exact: q × lot).
    let v = spec.linear_value(leg.qty, Price(1)).raw();
    let va = v.checked_abs()?;
    // Prices where the notional |v|·M lies in the bracket.
    let m_lo = div_round(n_lo, va, Rounding::Ceil).max(PRICE_LO);
    let m_hi = n_hi.map_or(PRICE_HI, |h| {
        div_round(h, va, Rounding::Floor).min(PRICE_HI)
    });
    // C + (v·M − basis) ≤ ⌈|v|·M·mmr / RS⌉ − cum: with A = C + cum − basis and the
    // left side an integer, A + v·M − 1 < |v|·M·mmr / RS ⟺ M·(v·RS − |v|·mmr) < (1 − A)·RS.
    let a = c.checked_add(b.cum.raw())?.checked_sub(leg.basis.raw())?;
    let p = v
        .checked_mul(RS)?
        .checked_sub(va.checked_mul(i128::from(b.mmr.raw()))?)?;
    let q = 1i128.checked_sub(a)?.checked_mul(RS)?;
    let Some(half) = solve_lt(p, q) else {
        return Some(None);
    };
    Some(clamp(m_lo, m_hi, half).map(|(lo, hi)| if leg.qty.0 > 0 { hi } else { lo }))
}

/// An inverse position's liquidating prices inside bracket `b`, where the check reads the
/// notional `N = ⌈m/M⌉` (`m = |q|·lot·CV` raw, so `N` is raw money) and the uPnL
/// `basis − ⌈n/M⌉` (`n` signed). Solved in `N`, then mapped to prices: `⌈m/M⌉ ≤ y` ⟺
/// `M ≥ ⌈m/y⌉`, and `⌈m/M⌉ ≥ x` ⟺ `M ≤ ⌊(m − 1)/(x − 1)⌋` (x ≥ 2).
fn inverse_bracket(
    leg: &Leg,
    spec: &InstrumentSpec,
    c: i128,
    b: &Bracket,
    n_lo: i128,
    n_hi: Option<i128>,
) -> Option<Option<i128>> {
    let n = spec.inverse_numerator(leg.qty);
    let m = n.checked_abs()?;
    let a = c.checked_add(b.cum.raw())?.checked_add(leg.basis.raw())?;
    let mmr = i128::from(b.mmr.raw());
    // N ranges over 1.. (a position's value is at least one raw unit, rounded up).
    let n_lo = n_lo.max(1);
    // Prices whose notional lies in [x, y].
    let prices = |x: i128, y: Option<i128>| -> Option<(i128, i128)> {
        let lo = y.map_or(PRICE_LO, |y| div_round(m, y, Rounding::Ceil).max(PRICE_LO));
        let hi = if x <= 1 {
            PRICE_HI
        } else {
            div_round(m - 1, x - 1, Rounding::Floor).min(PRICE_HI)
        };
        (lo <= hi).then_some((lo, hi))
    };
    if n > 0 {
        // Long: ⌈n/M⌉ = N. A − N ≤ ⌈N·mmr/RS⌉ ⟺ (A − N − 1)·RS < N·mmr
        // ⟺ N·(−(RS + mmr)) < (1 − A)·RS.
        let p = RS.checked_add(mmr)?.checked_neg()?;
        let q = 1i128.checked_sub(a)?.checked_mul(RS)?;
        let Some(half) = solve_lt(p, q) else {
            return Some(None);
        };
        let Some((x, y)) = clamp_open(n_lo, n_hi, half) else {
            return Some(None);
        };
        return Some(prices(x, y).map(|(_, hi)| hi));
    }
    // Short: uPnL = basis + ⌊m/M⌋, which is N − 1 where M does not divide m (δ = 1) and
    // N where it does (δ = 0). A + N − δ ≤ ⌈N·mmr/RS⌉
    // ⟺ N·(RS − mmr) < (1 + δ − A)·RS.
    let p = RS.checked_sub(mmr)?;
    let bound = |delta: i128| -> Option<Option<(Option<i128>, Option<i128>)>> {
        Some(solve_lt(p, (1 + delta).checked_sub(a)?.checked_mul(RS)?))
    };
    let (Some(any), exact) = (bound(1)?, bound(0)?) else {
        return Some(None);
    };
    let Some((x, y)) = clamp_open(n_lo, n_hi, any) else {
        return Some(None);
    };
    let Some((lo, hi)) = prices(x, y) else {
        return Some(None);
    };
    // The lowest price from `lo` whose δ = 1 (M ∤ m), or whose exact notional satisfies
    // the δ = 0 bound. Runs of consecutive divisors of m are short (k consecutive
    // integers ≥ lo dividing m need lcm ≥ C(lo + k, k) ≤ m < 2^127), so this ends fast.
    let exact_ok = |nn: i128| match exact {
        Some((xa, ya)) => xa.is_none_or(|xa| nn >= xa) && ya.is_none_or(|ya| nn <= ya),
        None => false,
    };
    let mut price = lo;
    while price <= hi {
        if m % price != 0 || exact_ok(m / price) {
            return Some(Some(price));
        }
        price += 1;
    }
    Some(None)
}

/// Like `clamp` with an open upper end: `[max(lo, a), min(hi, b)]` where `hi`, `b` may
/// be unbounded.
fn clamp_open(
    lo: i128,
    hi: Option<i128>,
    (a, b): (Option<i128>, Option<i128>),
) -> Option<(i128, Option<i128>)> {
    let lo = a.map_or(lo, |a| a.max(lo));
    let hi = match (hi, b) {
        (Some(h), Some(b)) => Some(h.min(b)),
        (h, b) => h.or(b),
    };
    hi.is_none_or(|h| lo <= h).then_some((lo, hi))
}

/// Bankruptcy price: where the pool's (or isolated position's) equity reaches zero:
/// `BP = (basis − WB − UPNL_other) / q`. Rounded against the account (long up, short
/// down). `None` when not positive.
///
/// `bybit` convention: where equity less the taker fee of closing at that price reaches
/// zero (Bybit's `BP = E × (1 ∓ 1/L)` for a linear isolated position holding IM + fee
/// to close; coin-M cross `BP = 1.00075 × contracts / (contracts / E + balance)`).
/// Linear, exact with the fee rounded up (`⌈|v|·M·t⌉`, `v` = `q` in money-raw per
/// price-raw): `W + v·M − basis ≥ |v|·M·t` ⟺ `M·(v·RS − |v|·t) ≥ RS·(basis − W)`, one
/// division. Inverse: the real root `M = q·CV·(1 ± t) / (W + basis)` (long +, short −),
/// one rounding, as without the fee.
pub fn bankruptcy_price(
    leg: &Leg,
    spec: &InstrumentSpec,
    wb_plus_upnl_others: Money,
) -> Option<Price> {
    if leg.qty.is_zero() {
        return None;
    }
    let rounding = if leg.qty.0 > 0 {
        Rounding::Ceil
    } else {
        Rounding::Floor
    };
    let t = match spec.convention {
        MarginConvention::Binance => 0,
        MarginConvention::Bybit => i128::from(spec.taker_fee.raw().max(0)),
    };
    if spec.is_inverse() {
        // W + basis − q·CV·(1 ± t)/M = 0 → M = q·CV·(1 ± t) / (W + basis).
        let x = wb_plus_upnl_others + leg.basis;
        if x.is_zero() || (x.is_positive() != (leg.qty.0 > 0)) {
            return None;
        }
        let n = spec.inverse_numerator(leg.qty);
        let bp = if t == 0 {
            div_round(n, x.raw(), rounding)
        } else {
            let factor = if leg.qty.0 > 0 { RS + t } else { RS - t };
            div_round(n.checked_mul(factor)?, x.raw().checked_mul(RS)?, rounding)
        };
        return (bp > 0)
            .then(|| i64::try_from(bp).ok().map(Price))
            .flatten();
    }
    let unit = spec.linear_value(leg.qty, Price(1)).raw();
    let bp = if t == 0 {
        div_round((leg.basis - wb_plus_upnl_others).raw(), unit, rounding)
    } else {
        let den = unit
            .checked_mul(RS)?
            .checked_sub(unit.checked_abs()?.checked_mul(t)?)?;
        if den == 0 {
            return None;
        }
        let num = (leg.basis - wb_plus_upnl_others).raw().checked_mul(RS)?;
        div_round(num, den, rounding)
    };
    if bp <= 0 {
        return None;
    }
    i64::try_from(bp).ok().map(Price)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::apply_fill;
    use perpcore_types::*;

    fn spec() -> InstrumentSpec {
        InstrumentSpec {
            id: InstrumentId(0),
            symbol: "BTCUSDT".into(),
            kind: ContractKind::Linear,
            base_asset: AssetId(1),
            quote_asset: AssetId(0),
            settle_asset: AssetId(0),
            tick_size: Price::parse("0.1").unwrap(),
            lot_size: Qty::parse("0.001").unwrap(),
            min_qty: QtyLots(1),
            max_qty: QtyLots(1_000_000),
            max_leverage: 125,
            brackets: vec![
                Bracket {
                    notional_floor: Money::ZERO,
                    notional_cap: Money::from_int(50_000),
                    max_leverage: 125,
                    mmr: Rate::parse("0.004").unwrap(),
                    cum: Money::ZERO,
                },
                Bracket {
                    notional_floor: Money::from_int(50_000),
                    notional_cap: Money::from_int(250_000),
                    max_leverage: 100,
                    mmr: Rate::parse("0.005").unwrap(),
                    cum: Money::from_int(50),
                },
                Bracket {
                    notional_floor: Money::from_int(250_000),
                    notional_cap: Money::from_int(1_000_000),
                    max_leverage: 50,
                    mmr: Rate::parse("0.01").unwrap(),
                    cum: Money::from_int(1_300),
                },
            ],
            maker_fee: Rate::parse("0.0002").unwrap(),
            taker_fee: Rate::parse("0.0005").unwrap(),
            price_band: Rate::parse("0.05").unwrap(),
            liquidation_fee: Rate::ZERO,
            fee_to_close: false,
            max_open_orders: DEFAULT_MAX_OPEN_ORDERS,
            funding_interval_ns: DEFAULT_FUNDING_INTERVAL_NS,
            mark_method: MarkMethod::Recorded,
            funding_method: FundingMethod::Recorded,
            convention: MarginConvention::Binance,
        }
    }
    fn p(s: &str) -> Price {
        Price::parse(s).unwrap()
    }

    /// Case M1: 264,000 notional sits in the 1% bracket: MM = 2,640 − 1,300 = 1,340.
    #[test]
    fn m1_maintenance_margin() {
        assert_eq!(
            spec().maintenance_margin(Money::from_int(264_000)),
            Money::from_int(1_340)
        );
    }

    /// Case M3: taker 0.05% on 1 BTC at 10,104 = 5.052; maker 0.02% on 1 BTC at 11,104 =
    /// 2.2208.
    #[test]
    fn m3_fees() {
        let s = spec();
        let n = s.notional(QtyLots(1000), p("10104"));
        assert_eq!(
            n.mul_rate(s.taker_fee, Rounding::Ceil),
            Money::parse("5.052").unwrap()
        );
        let n = s.notional(QtyLots(1000), p("11104"));
        assert_eq!(
            n.mul_rate(s.maker_fee, Rounding::Ceil),
            Money::parse("2.2208").unwrap()
        );
    }

    /// Case M6 (fee to close, Bybit): long 1 BTC at 50,000, leverage 10, taker 0.06%:
    /// IM 5,000; open fee 50,000 × 0.06% = 30; close fee 1 × 50,000 × 0.9 × 0.06% = 27;
    /// order cost 5,057.
    #[test]
    fn m6_order_cost_with_fee_to_close() {
        let mut s = spec();
        s.taker_fee = Rate::parse("0.0006").unwrap();
        s.fee_to_close = true;
        let c = order_cost(&s, QtyLots(1000), p("50000"), true, 10);
        assert_eq!(c.initial_margin, Money::from_int(5_000));
        assert_eq!(c.open_fee, Money::from_int(30));
        assert_eq!(c.close_fee, Money::from_int(27));
        assert_eq!(c.total(), Money::from_int(5_057));
    }

    /// Case L1: 1 BTC at 84,000 isolated with 8,400, mmr 0.4%, cum 0:
    /// long LP = (84,000 − 8,400) / 0.996 = 75,903.61 (to the cent);
    /// short LP = (84,000 + 8,400) / 1.004 = 92,031.87.
    /// To the raw unit the reported price is the first one the check liquidates at: for
    /// the long the root is 75,903.6144578313…, so 75,903.61445783 liquidates (equity
    /// 303.61445783 ≤ MM ⌈0.004 × 75,903.61445783⌉ = 303.61445783132) and one raw unit
    /// above does not (equity 303.61445784 > MM 303.61445783136); for the short the root
    /// is 92,031.8725099601…, so the first is 92,031.87250997 (at …996 equity
    /// 368.12749004 > MM 368.12749003984).
    #[test]
    fn l1_isolated_liquidation_price() {
        let s = spec_single_bracket();
        let mut long = Leg::new(s.id, 125);
        apply_fill(&mut long, &s, Side::Buy, 1000, p("84000"));
        let lp = liquidation_price(&long, &s, Money::from_int(8_400), p("84000")).unwrap();
        assert_eq!(lp, p("75903.61445783"));
        assert_eq!(
            format_fixed(i128::from(lp.raw()) / 1_000_000 * 1_000_000, 8, 2),
            "75903.61"
        );

        let mut short = Leg::new(s.id, 125);
        apply_fill(&mut short, &s, Side::Sell, 1000, p("84000"));
        let lp = liquidation_price(&short, &s, Money::from_int(8_400), p("84000")).unwrap();
        assert_eq!(lp, p("92031.87250997"));
    }

    /// Issue 13, "Liquidation price wrong for small positions": long 0.123 BTC at
    /// 50,000 (basis 6,150) with 1,000 of wallet, mmr 0.4%, cum 0:
    /// LP = (1,000 − 6,150) / (0.123 × 0.004 − 0.123) = −5,150 / −0.122508
    /// = 42,038.0709831194…; the highest raw price at or below it, 42,038.07098311, is the
    /// first the check liquidates at (at …312 the margin is 0.122508 × 0.8 × 10^-8 above
    /// MM, far more than MM's 10^-12 rounding). The report used to
    /// floor |q|·mmr to whole money-raw per price-raw first (1,230 × 0.004 = 4.92 → 4),
    /// giving 42,006.53: a trader was liquidated above the price the report showed.
    #[test]
    fn liquidation_price_wrong_for_small_positions() {
        let s = spec_single_bracket();
        let mut long = Leg::new(s.id, 125);
        apply_fill(&mut long, &s, Side::Buy, 123, p("50000"));
        assert_eq!(long.basis, Money::from_int(6_150));
        let lp = liquidation_price(&long, &s, Money::from_int(1_000), p("50000")).unwrap();
        assert_eq!(lp, p("42038.07098311"));
        // Short 0.123 at 50,000 with 1,000: LP = (1,000 + 6,150) / (0.123 × 1.004)
        // = 7,150 / 0.123492 = 57,898.4873514073…: the first raw price at or above it.
        let mut short = Leg::new(s.id, 125);
        apply_fill(&mut short, &s, Side::Sell, 123, p("50000"));
        let lp = liquidation_price(&short, &s, Money::from_int(1_000), p("50000")).unwrap();
        assert_eq!(lp, p("57898.48735141"));
        // One lot (0.001 BTC): |q|·mmr is 0.04 money-raw per price-raw, floored to 0 before.
        let mut tiny = Leg::new(s.id, 125);
        apply_fill(&mut tiny, &s, Side::Buy, 1, p("50000"));
        // (10 − 50) / (0.001 × 0.004 − 0.001) = −40 / −0.000996 = 40,160.6425702811…
        let lp = liquidation_price(&tiny, &s, Money::from_int(10), p("50000")).unwrap();
        assert_eq!(lp, p("40160.64257028"));
    }

    /// Issue 13, "fee_to_close inconsistency", isolated: with the fee to close on, the
    /// check adds it to MM but the reported price left it out. Taker 0.06%, mmr 0.4%,
    /// cum 0, leverage 10. Long 1 BTC at 50,000 with IW 5,000: close fee
    /// F = (50,000 − 50,000/10) × 0.06% = 27; liquidated when
    /// 5,000 + (M − 50,000) ≤ 0.004·M + 27 ⟺ 0.996·M ≤ 45,027 ⟺ M ≤ 45,207.8313253012…,
    /// so the first price (from above) the check liquidates at is 45,207.83132530; at
    /// one raw unit more equity exceeds MM by ≈ 0.996 × 0.9 × 10^-8 ≫ 10^-12. (Without F:
    /// 45,000 / 0.996 = 45,180.72…, shown while the engine liquidated up to 45,207.83.)
    /// Short 1 BTC at 50,000 with IW 5,000: F = (50,000 + 5,000) × 0.06% = 33;
    /// 5,000 + (50,000 − M) ≤ 0.004·M + 33 ⟺ M ≥ 54,967 / 1.004 = 54,748.0079681274…
    /// → 54,748.00796813 (the first raw price at or above the root).
    #[test]
    fn fee_to_close_inconsistency_isolated() {
        let mut s = spec_single_bracket();
        s.taker_fee = Rate::parse("0.0006").unwrap();
        s.fee_to_close = true;
        let iw = Money::from_int(5_000);
        for (side, lp) in [
            (Side::Buy, "45207.83132530"),
            (Side::Sell, "54748.00796813"),
        ] {
            let mut leg = Leg::new(s.id, 125);
            leg.leverage = 10;
            leg.mode = MarginMode::Isolated;
            apply_fill(&mut leg, &s, side, 1000, p("50000"));
            leg.isolated_margin = iw;
            let got = liquidation_price(&leg, &s, iw, p("50000")).unwrap();
            assert_eq!(got, p(lp), "{side:?}");
            let safe = Price(got.raw() + side.sign());
            assert!(isolated_liquidatable(&leg, &s, got), "{side:?} at {got}");
            assert!(!isolated_liquidatable(&leg, &s, safe), "{side:?} at {safe}");
        }
    }

    /// Issue 13, "fee_to_close inconsistency", cross: the same position in a single-asset
    /// cross pool with a wallet of 10,000 and nothing else. Long: 10,000 + (M − 50,000)
    /// ≤ 0.004·M + 27 ⟺ M ≤ 40,027 / 0.996 = 40,187.7510040160… → 40,187.75100401.
    /// Short: 10,000 + (50,000 − M) ≤ 0.004·M + 33 ⟺ M ≥ 59,967 / 1.004
    /// = 59,728.0876494023… → 59,728.08764941.
    #[test]
    fn fee_to_close_inconsistency_cross() {
        let mut s = spec_single_bracket();
        s.taker_fee = Rate::parse("0.0006").unwrap();
        s.fee_to_close = true;
        let specs = [s.clone()];
        for (side, lp) in [
            (Side::Buy, "40187.75100401"),
            (Side::Sell, "59728.08764941"),
        ] {
            let mut a = Account::new(AccountId(1), None, 2);
            a.wallets[0] = Money::from_int(10_000);
            let leg = a.leg_or_default(&s, PositionSide::Both);
            leg.leverage = 10;
            apply_fill(leg, &s, side, 1000, p("50000"));
            let leg = a.legs[0].clone();
            let got = liquidation_price(&leg, &s, Money::from_int(10_000), p("50000")).unwrap();
            assert_eq!(got, p(lp), "{side:?}");
            let safe = Price(got.raw() + side.sign());
            let at = |m: Price| pool(&a, AssetId(0), &specs, &[Some(m)]).is_liquidatable();
            assert!(at(got), "{side:?} at {got}");
            assert!(!at(safe), "{side:?} at {safe}");
        }
    }

    fn spec_single_bracket() -> InstrumentSpec {
        let mut s = spec();
        s.brackets.truncate(1);
        s.brackets[0].notional_cap = Money::from_int(1_000_000_000);
        s
    }

    /// Case L2: long 0.1 BTC at 30,000, leverage 10 (IM 300), mmr 1%. Mark 36,000: uPnL
    /// +600, equity 900. Mark 28,000: uPnL −200, equity 100 ≥ MM 28 → not liquidated.
    /// Mark 26,000: uPnL −400, equity −100 → liquidated.
    #[test]
    fn l2_isolated_walk() {
        let mut s = spec_single_bracket();
        s.brackets[0].mmr = Rate::parse("0.01").unwrap();
        let mut leg = Leg::new(s.id, 125);
        leg.leverage = 10;
        leg.mode = MarginMode::Isolated;
        apply_fill(&mut leg, &s, Side::Buy, 100, p("30000"));
        leg.isolated_margin = position_im(&leg, &s, p("30000"));
        assert_eq!(leg.isolated_margin, Money::from_int(300));
        assert_eq!(position_mm(&leg, &s, p("30000")), Money::from_int(30));
        assert_eq!(upnl(&leg, &s, p("36000")), Money::from_int(600));
        assert!(!isolated_liquidatable(&leg, &s, p("36000")));
        assert_eq!(upnl(&leg, &s, p("28000")), Money::from_int(-200));
        assert!(!isolated_liquidatable(&leg, &s, p("28000")));
        assert_eq!(upnl(&leg, &s, p("26000")), Money::from_int(-400));
        assert!(isolated_liquidatable(&leg, &s, p("26000")));
        // "in fact before it gets there": LP = (3,000 − 300) / (0.1 × 0.99)
        // = 27,272.7272727272…, the first liquidating raw price 27,272.72727272.
        let lp = liquidation_price(&leg, &s, Money::from_int(300), p("30000")).unwrap();
        assert_eq!(lp, p("27272.72727272"));
        // Bankruptcy: 30,000 − 300 / 0.1 = 27,000.
        assert_eq!(
            bankruptcy_price(&leg, &s, Money::from_int(300)),
            Some(p("27000"))
        );
    }

    fn inverse(cv: &str) -> InstrumentSpec {
        let mut s = spec_single_bracket();
        s.symbol = "BTCUSD_PERP".into();
        s.kind = ContractKind::Inverse {
            contract_value: Money::parse(cv).unwrap(),
        };
        s.lot_size = Qty::parse("1").unwrap();
        s.settle_asset = AssetId(1);
        s.maker_fee = Rate::ZERO;
        s.taker_fee = Rate::ZERO;
        s
    }

    /// Case M4: 12,000 contracts of 1 USD at 8,000, leverage 50:
    /// IM = 12,000 / (8,000 × 50) = 0.03 BTC.
    #[test]
    fn m4_inverse_initial_margin() {
        let s = inverse("1");
        let mut leg = Leg::new(s.id, 125);
        leg.leverage = 50;
        apply_fill(&mut leg, &s, Side::Buy, 12_000, p("8000"));
        assert_eq!(
            position_im(&leg, &s, p("8000")),
            Money::parse("0.03").unwrap()
        );
        let c = order_cost(&s, QtyLots(12_000), p("8000"), true, 50);
        assert_eq!(c.initial_margin, Money::parse("0.03").unwrap());
    }

    /// Case M5: buy 50 contracts (1 USD) at 10,000, then 50 at 15,000: position value
    /// 0.005 + 0.00333333… BTC, harmonic entry 12,000. The coin basis is kept to 10^-12
    /// (0.003333333333, rounded down once per fill), so the harmonic entry computed from
    /// it is 12,000.00000048: exact to 5 × 10^-7, i.e. 12,000 at any tick size.
    #[test]
    fn m5_inverse_harmonic_entry() {
        let s = inverse("1");
        let mut leg = Leg::new(s.id, 125);
        apply_fill(&mut leg, &s, Side::Buy, 50, p("10000"));
        assert_eq!(leg.basis, Money::parse("0.005").unwrap());
        apply_fill(&mut leg, &s, Side::Buy, 50, p("15000"));
        assert_eq!(leg.basis, Money::parse("0.008333333333").unwrap());
        let e = leg.entry_price(&s).unwrap();
        assert_eq!(e, p("12000.00000048"));
        assert_eq!(s.ticks_of(e, Rounding::Floor), PriceTicks(120_000)); // 12,000.0 at tick 0.1
    }

    /// Inverse PnL (MARGIN §2): long 100 contracts of 100 USD at 50,000 closed at 55,000:
    /// 10,000 × (1/50,000 − 1/55,000) = 0.2 − 0.181818181818… = 0.018181818182 BTC (the
    /// closing value rounded down to 10^-12). A short mirrors it with the opposite sign.
    #[test]
    fn inverse_pnl() {
        let s = inverse("100");
        let mut long = Leg::new(s.id, 125);
        apply_fill(&mut long, &s, Side::Buy, 100, p("50000"));
        assert_eq!(long.basis, Money::parse("0.2").unwrap());
        assert_eq!(
            upnl(&long, &s, p("55000")),
            Money::parse("0.018181818181").unwrap()
        );
        let e = apply_fill(&mut long, &s, Side::Sell, 100, p("55000"));
        assert_eq!(e.realized_pnl, Money::parse("0.018181818182").unwrap());
        assert!(long.is_flat());
        let mut short = Leg::new(s.id, 125);
        apply_fill(&mut short, &s, Side::Sell, 100, p("50000"));
        let e = apply_fill(&mut short, &s, Side::Buy, 100, p("55000"));
        assert_eq!(e.realized_pnl, Money::parse("-0.018181818182").unwrap());
    }

    /// Inverse isolated liquidation: long 100 × 100 USD at 50,000 (basis 0.2 BTC), IW
    /// 0.02 BTC, mmr 0.4%, cum 0. IW + basis − V = 0.004·V → V = 0.22 / 1.004 and
    /// M = 10,000 × 1.004 / 0.22 = 45,636.3636… in real numbers. The check reads the
    /// value `N = ⌈10^24 / M_raw⌉` in 10^-12 BTC, which moves by one unit every ≈ 21 raw
    /// price units here, so the first liquidating price is where `N` reaches the
    /// smallest liquidating value: `0.22·10^12 − N ≤ ⌈0.004·N⌉` ⟺ `1.004·N > 0.22·10^12 −
    /// 1` ⟺ `N ≥ 219,123,505,976`, and `⌈10^24/M⌉ ≥ 219,123,505,976` ⟺
    /// `M ≤ ⌊(10^24 − 1) / 219,123,505,975⌋ = 4,563,636,363,659` → 45,636.36363659.
    /// Bankruptcy: M = 10,000 / 0.22 = 45,454.5454…, rounded up.
    /// Short at 50,000 with 0.02 (A = 0.02 − 0.2 = −0.18 BTC): the check's uPnL is
    /// `basis + ⌊10^24/M⌋`, one below the notional `N` wherever M does not divide 10^24:
    /// `−0.18·10^12 + N − 1 ≤ ⌈0.004·N⌉` ⟺ `0.996·N < 0.18·10^12 + 2` ⟺
    /// `N ≤ 180,722,891,568`, first reached at `M = ⌈10^24 / 180,722,891,568⌉ =
    /// 5,533,333,333,281` (not a divisor of 10^24) → 55,333.33333281, where the real
    /// root is 10,000 × 0.996 / 0.18 = 55,333.33…
    #[test]
    fn inverse_liquidation_and_bankruptcy_prices() {
        let s = inverse("100");
        let mut long = Leg::new(s.id, 125);
        apply_fill(&mut long, &s, Side::Buy, 100, p("50000"));
        let iw = Money::parse("0.02").unwrap();
        assert_eq!(
            liquidation_price(&long, &s, iw, p("50000")),
            Some(p("45636.36363659"))
        );
        assert_eq!(bankruptcy_price(&long, &s, iw), Some(p("45454.54545455")));
        let mut short = Leg::new(s.id, 125);
        apply_fill(&mut short, &s, Side::Sell, 100, p("50000"));
        assert_eq!(
            liquidation_price(&short, &s, iw, p("50000")),
            Some(p("55333.33333281"))
        );
        assert_eq!(bankruptcy_price(&short, &s, iw), Some(p("55555.55555555")));
        // At each liquidation price the condition holds, one raw unit on the safe side
        // it does not.
        let mut iso = long.clone();
        iso.isolated_margin = iw;
        assert!(isolated_liquidatable(&iso, &s, p("45636.36363659")));
        assert!(!isolated_liquidatable(&iso, &s, p("45636.36363660")));
        let mut iso = short.clone();
        iso.isolated_margin = iw;
        assert!(isolated_liquidatable(&iso, &s, p("55333.33333281")));
        assert!(!isolated_liquidatable(&iso, &s, p("55333.33333280")));
    }

    /// Case M6 for an inverse contract (Bybit, "Order Cost (Perpetuals & Futures
    /// Trading)", https://testnet.bybit.com/en/help-center/article/Order-Cost-USDT-Contract:
    /// fee to close of a buy = contracts / price × (1 + 1/L) × taker, of a sell
    /// × (1 − 1/L); its worked example as mirrored at https://ukcamo.com/14820.html): long
    /// 10,000 USD of ETHUSD (1 USD contracts) at 2,000, 25x, taker 0.055%: value
    /// 10,000 / 2,000 = 5 ETH; IM 5 / 25 = 0.2; open fee 5 × 0.00055 = 0.00275; close fee
    /// 5 × 1.04 × 0.00055 = 0.00286; order cost 0.20561 ETH. The sell (worked by hand):
    /// close fee 5 × 0.96 × 0.00055 = 0.00264, cost 0.20539.
    #[test]
    fn m6_inverse_order_cost_with_fee_to_close() {
        let mut s = inverse("1");
        s.taker_fee = Rate::parse("0.00055").unwrap();
        s.fee_to_close = true;
        let m = |v: &str| Money::parse(v).unwrap();
        let c = order_cost(&s, QtyLots(10_000), p("2000"), true, 25);
        assert_eq!(c.initial_margin, m("0.2"));
        assert_eq!(c.open_fee, m("0.00275"));
        assert_eq!(c.close_fee, m("0.00286"));
        assert_eq!(c.total(), m("0.20561"));
        let c = order_cost(&s, QtyLots(10_000), p("2000"), false, 25);
        assert_eq!(c.close_fee, m("0.00264"));
        assert_eq!(c.total(), m("0.20539"));
        // A position carries the same fee in its MM and IM (at its basis of 5 ETH).
        let mut leg = Leg::new(s.id, 125);
        leg.leverage = 25;
        apply_fill(&mut leg, &s, Side::Buy, 10_000, p("2000"));
        assert_eq!(close_fee(&leg, &s), m("0.00286"));
        // MM = ⌈5 × 0.4%⌉ + 0.00286 = 0.02286; IM = 0.2 + 0.00286.
        assert_eq!(position_mm(&leg, &s, p("2000")), m("0.02286"));
        assert_eq!(position_im(&leg, &s, p("2000")), m("0.20286"));
    }

    /// Fee to close on an inverse instrument under the binance convention (MM at mark):
    /// the reported price still is the check's first liquidating mark. Long 100 × 100 USD
    /// at 50,000 (basis 0.2 BTC), 10x, taker 0.06%, mmr 0.4%, IW 0.02 BTC. Close fee
    /// F = 0.2 × (1 + 1/10) × 0.0006 = 0.000132 BTC. Liquidated when
    /// `0.02 + 0.2 − N ≤ ⌈0.004·N⌉ + 0.000132` (N = ⌈10^24 / M⌉ raw): with
    /// A = 0.219868·10^12, `1.004·N > A − 1` ⟺ N ≥ ⌊(A − 1)/1.004⌋ + 1 = 218,992,031,872,
    /// and `⌈10^24/M⌉ ≥ 218,992,031,872` ⟺ M ≤ ⌊(10^24 − 1)/218,992,031,871⌋
    /// = 4,566,376,189,381 → 45,663.76189381 (real root 10,000 × 1.004 / 0.219868
    /// = 45,663.7618934…). Without F: 45,636.36363659 (`inverse_liquidation_and_…`).
    #[test]
    fn inverse_fee_to_close_liquidation_price() {
        let mut s = inverse("100");
        s.taker_fee = Rate::parse("0.0006").unwrap();
        s.fee_to_close = true;
        let mut leg = Leg::new(s.id, 125);
        leg.leverage = 10;
        leg.mode = MarginMode::Isolated;
        apply_fill(&mut leg, &s, Side::Buy, 100, p("50000"));
        let iw = Money::parse("0.02").unwrap();
        leg.isolated_margin = iw;
        assert_eq!(close_fee(&leg, &s), Money::parse("0.000132").unwrap());
        let lp = liquidation_price(&leg, &s, iw, p("50000")).unwrap();
        assert_eq!(lp, p("45663.76189381"));
        assert!(isolated_liquidatable(&leg, &s, lp));
        assert!(!isolated_liquidatable(&leg, &s, Price(lp.raw() + 1)));
    }

    fn bybit(mut s: InstrumentSpec, taker: &str) -> InstrumentSpec {
        s.convention = MarginConvention::Bybit;
        s.fee_to_close = true;
        s.taker_fee = Rate::parse(taker).unwrap();
        s.brackets[0].mmr = Rate::parse("0.005").unwrap();
        s
    }

    /// Opens `lots` at `price` on an isolated leg at `leverage` through `settle_fill`
    /// (which moves the position margin out of the wallet), no trading fee.
    fn isolated_open(
        s: &InstrumentSpec,
        side: Side,
        lots: i64,
        price: &str,
        leverage: u32,
    ) -> (Leg, Money) {
        let mut leg = Leg::new(s.id, 125);
        leg.leverage = leverage;
        leg.mode = MarginMode::Isolated;
        let st = crate::decide::settle_fill(
            &mut leg,
            s,
            side,
            QtyLots(lots),
            p(price),
            Money::ZERO,
            false,
        );
        (leg, st.wallet_delta)
    }

    /// Bybit's isolated liquidation price, linear ("Liquidation Price (USDT Contract)",
    /// https://testnet.bybit.com/en-US/help-center/s/article/Liquidation-Price-USDT-Contract,
    /// Example 1): long 1 BTC at 20,000, 50x, MMR 0.5%: IM 20,000 / 50 = 400, MM
    /// 20,000 × 0.5% = 100, LP = 20,000 − (400 − 100) = 19,700. The short, by the page's
    /// formula `LP = E + (IM − MM) / size`: 20,300. Under the bybit convention the position
    /// margin also holds the fee to close and MM adds it, so it cancels: taker 0.055%,
    /// long F = 20,000 × (1 − 1/50) × 0.055% = 10.78, IW = 410.78, MM = 110.78:
    /// 410.78 + (M − 20,000) ≤ 110.78 ⟺ M ≤ 19,700 exactly; short F = 20,000 × 1.02 ×
    /// 0.055% = 11.22, IW 411.22, MM 111.22: 411.22 + (20,000 − M) ≤ 111.22 ⟺ M ≥ 20,300.
    /// The binance convention on the same long (MM at mark, same fee, same IW):
    /// 410.78 + M − 20,000 ≤ 0.005·M + 10.78 ⟺ M ≤ 19,600 / 0.995 = 19,698.4924623115…
    /// → 19,698.49246231.
    /// Bankruptcy (Bybit's `E × (1 ∓ 1/L)`, the price the fee to close is reckoned at on
    /// the order-cost page): long where 410.78 + (M − 20,000) − 0.00055·M = 0 ⟺
    /// M = 19,589.22 / 0.99945 = 19,600 = 20,000 × 0.98; short
    /// 411.22 + 20,000 − M − 0.00055·M = 0 ⟺ M = 20,411.22 / 1.00055 = 20,400.
    #[test]
    fn bybit_linear_isolated_liquidation_and_bankruptcy_prices() {
        let s = bybit(spec_single_bracket(), "0.00055");
        let m = |v: &str| Money::parse(v).unwrap();
        for (side, iw, mm, lp, bp) in [
            (Side::Buy, "410.78", "110.78", "19700", "19600"),
            (Side::Sell, "411.22", "111.22", "20300", "20400"),
        ] {
            let (leg, wallet) = isolated_open(&s, side, 1000, "20000", 50);
            assert_eq!(leg.isolated_margin, m(iw), "{side:?}");
            assert_eq!(wallet, -m(iw), "{side:?}");
            // MM on the value at entry: the same at any mark.
            for mark in ["20000", "15000", "25000"] {
                assert_eq!(position_mm(&leg, &s, p(mark)), m(mm), "{side:?} {mark}");
            }
            let got = liquidation_price(&leg, &s, leg.isolated_margin, p("20000")).unwrap();
            assert_eq!(got, p(lp), "{side:?}");
            assert!(isolated_liquidatable(&leg, &s, got));
            assert!(!isolated_liquidatable(
                &leg,
                &s,
                Price(got.raw() + side.sign())
            ));
            assert_eq!(
                bankruptcy_price(&leg, &s, leg.isolated_margin),
                Some(p(bp)),
                "{side:?}"
            );
        }
        let mut binance = s.clone();
        binance.convention = MarginConvention::Binance;
        let (leg, _) = isolated_open(&binance, Side::Buy, 1000, "20000", 50);
        assert_eq!(leg.isolated_margin, m("400"), "binance: IM only");
        let mut leg = leg;
        leg.isolated_margin = m("410.78");
        let got = liquidation_price(&leg, &binance, leg.isolated_margin, p("20000")).unwrap();
        assert_eq!(got, p("19698.49246231"));
        assert!(isolated_liquidatable(&leg, &binance, got));
        assert!(!isolated_liquidatable(&leg, &binance, Price(got.raw() + 1)));
        // Binance's bankruptcy price has no closing fee: 20,000 − 410.78 = 19,589.22.
        assert_eq!(
            bankruptcy_price(&leg, &binance, leg.isolated_margin),
            Some(p("19589.22"))
        );
    }

    /// Bybit's isolated liquidation price, inverse ("Liquidation Price Calculation under
    /// Isolated Mode (Unified Trading Account)",
    /// https://www.kbybit.com/en/help-center/article/Liquidation-Price-Calculation-under-Isolated-Mode-Unified-Trading-Account):
    /// long 60,000 USD of BTCUSD at 50,000, 10x, MMR 0.5%: position value 1.2 BTC, IM
    /// 0.12, MM 0.006, LP = 60,000 / (1.2 + 0.12 − 0.006) = 60,000 / 1.314
    /// = 45,662.1004566…; the short by the page's formula 60,000 / (1.2 − 0.12 + 0.006)
    /// = 55,248.6187845…. With taker 0.055% the fee to close (long 1.2 × 1.1 × 0.055%
    /// = 0.000726, short 1.2 × 0.9 × 0.055% = 0.000594) is in both IW and MM and cancels.
    /// The check reads `N = ⌈6·10^24 / M⌉` (raw): long liquidated when
    /// 1.320726·10^12 − N ≤ 0.006726·10^12 ⟺ N ≥ 1,314,000,000,000 ⟺
    /// M ≤ ⌊(6·10^24 − 1) / 1,313,999,999,999⌋ = 4,566,210,045,665 → 45,662.10045665;
    /// short (uPnL = ⌊6·10^24/M⌋ − 1.2·10^12): ⌊6·10^24/M⌋ ≤ 1,086,000,000,000 ⟺
    /// M ≥ ⌊6·10^24 / 1,086,000,000,001⌋ + 1 = 5,524,861,878,448 → 55,248.61878448.
    /// Bankruptcy (Bybit's isolated `E × L / (L ± 1)`): long 60,000 × 1.00055 / 1.320726
    /// = 50,000 × 10/11 = 45,454.5454… (up: 45,454.54545455); short 60,000 × 0.99945 /
    /// 1.079406 = 50,000 × 10/9 = 55,555.5555… (down: 55,555.55555555).
    #[test]
    fn bybit_inverse_isolated_liquidation_and_bankruptcy_prices() {
        let s = bybit(inverse("1"), "0.00055");
        let m = |v: &str| Money::parse(v).unwrap();
        for (side, iw, mm, lp, bp) in [
            (
                Side::Buy,
                "0.120726",
                "0.006726",
                "45662.10045665",
                "45454.54545455",
            ),
            (
                Side::Sell,
                "0.120594",
                "0.006594",
                "55248.61878448",
                "55555.55555555",
            ),
        ] {
            let (leg, _) = isolated_open(&s, side, 60_000, "50000", 10);
            assert_eq!(leg.basis.abs(), m("1.2"));
            assert_eq!(leg.isolated_margin, m(iw), "{side:?}");
            assert_eq!(position_mm(&leg, &s, p("40000")), m(mm), "{side:?}");
            let got = liquidation_price(&leg, &s, leg.isolated_margin, p("50000")).unwrap();
            assert_eq!(got, p(lp), "{side:?}");
            assert!(isolated_liquidatable(&leg, &s, got));
            assert!(!isolated_liquidatable(
                &leg,
                &s,
                Price(got.raw() + side.sign())
            ));
            assert_eq!(
                bankruptcy_price(&leg, &s, leg.isolated_margin),
                Some(p(bp)),
                "{side:?}"
            );
        }
    }

    /// Bybit's cross bankruptcy price, inverse ("How to calculate Liquidation Price
    /// (Inverse Contract)",
    /// https://help.bybit.com/hc/en-us/articles/360039261334-How-to-calculate-Liquidation-Price-Inverse-Contract-):
    /// balance 0.5 BTC, long 10,000 contracts (1 USD) at 8,000, taker 0.075%:
    /// BP = 1.00075 × 10,000 / (10,000 / 8,000 + 0.5) = 10,007.5 / 1.75 = 5,718.5714…,
    /// published as 5,718.57; rounded up to the raw unit 5,718.57142858. (The page's
    /// liquidation price estimates the fee to close at this cross bankruptcy price;
    /// perpcore estimates it from the leverage, as the order cost does.)
    #[test]
    fn bybit_inverse_cross_bankruptcy_price() {
        let s = bybit(inverse("1"), "0.00075");
        let mut leg = Leg::new(s.id, 125);
        apply_fill(&mut leg, &s, Side::Buy, 10_000, p("8000"));
        assert_eq!(leg.basis, Money::parse("1.25").unwrap());
        let bp = bankruptcy_price(&leg, &s, Money::parse("0.5").unwrap()).unwrap();
        assert_eq!(bp, p("5718.57142858"));
        assert_eq!(
            format_fixed(i128::from(bp.raw()) / 1_000_000 * 1_000_000, 8, 2),
            "5718.57"
        );
    }

    /// The valuation cache never serves values computed from other inputs, and it is
    /// invisible to equality and to the encoding (snapshots, state hashes).
    #[test]
    fn valuation_cache_follows_mark_size_and_leverage_and_is_not_state() {
        let s = spec();
        let mut leg = Leg::new(s.id, s.max_leverage);
        leg.qty = QtyLots(2_000); // 2 BTC
        let fresh = |leg: &Leg, mark: Price| {
            let v = s.linear_value(leg.qty, mark);
            (v, position_im(leg, &s, mark))
        };
        let m1 = p("50000");
        let m2 = p("49000.5");
        // 2 × 50,000 = 100,000; IM at 20x = 5,000.
        assert_eq!(
            linear_valuation(&leg, &s, m1),
            (Money::from_int(100_000), Money::from_int(5_000))
        );
        let encoded_warm = bincode::encode_to_vec(&leg, bincode::config::standard()).unwrap();
        assert_eq!(linear_valuation(&leg, &s, m2), fresh(&leg, m2));
        leg.qty = QtyLots(-3_000);
        assert_eq!(linear_valuation(&leg, &s, m2), fresh(&leg, m2));
        leg.leverage = 7;
        assert_eq!(linear_valuation(&leg, &s, m2), fresh(&leg, m2));
        assert_eq!(linear_valuation(&leg, &s, m1), fresh(&leg, m1));
        // Equality and encoding ignore the cache.
        let mut cold = Leg::new(s.id, s.max_leverage);
        cold.qty = QtyLots(2_000);
        let encoded_cold = bincode::encode_to_vec(&cold, bincode::config::standard()).unwrap();
        assert_eq!(encoded_warm, encoded_cold);
        let warm = cold.clone();
        linear_valuation(&warm, &s, m1);
        assert_eq!(warm, cold);
    }
}
