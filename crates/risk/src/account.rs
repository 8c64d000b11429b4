//! Account state: wallets per asset and one `Leg` per instrument the account has touched
//! (leverage, margin mode, position, isolated margin, reserved order margin).
//!
//! A position keeps its exact cost `basis` (signed `q × E` in the settlement asset, the
//! sum of its fills' values) instead of a rounded entry price. Realized PnL is then
//! `value(closed part at p) − closed share of basis`, and the same amount leaves one
//! account and reaches the other, so every asset is conserved exactly whatever the
//! rounding of the closed share (MARGIN §10).

use bincode::{Decode, Encode};
use perpcore_types::{
    AccountId, AssetMode, InstrumentId, InstrumentSpec, MarginMode, Money, PositionMode,
    PositionSide, Price, QtyLots, Rounding, Side,
};

/// Binance's default leverage for a new symbol (capped by the instrument maximum).
pub const DEFAULT_LEVERAGE: u32 = 20;

/// One account's state on one instrument.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Leg {
    pub instrument: InstrumentId,
    pub leverage: u32,
    pub mode: MarginMode,
    /// Signed position size (> 0 long).
    pub qty: QtyLots,
    /// Signed cost basis `Σ fill value` of the open position (linear: `q × E`).
    pub basis: Money,
    /// Margin assigned to an isolated position (zero in cross mode).
    pub isolated_margin: Money,
    /// Σ reserved initial margin of this leg's open orders.
    pub order_margin: Money,
    /// Σ notional of this leg's open orders at their limit prices (the order part of the
    /// exposure a leverage must be allowed for, MARGIN §3).
    pub order_notional: Money,
    /// Open orders of this leg, in id order.
    /// A deque, not a vector: cancelling many orders removes them from the front, which
    /// in a vector moved every later id each time (400,000 orders: 36.8 s of `memmove`
    /// for one `cancel_all`). Encoded like a vector (length, then the ids).
    pub open_orders: std::collections::VecDeque<perpcore_types::OrderId>,
    /// Funding paid (positive) or received (negative) since the position was opened; back
    /// to zero when it closes (MARGIN §9).
    pub funding: Money,
    /// Derived: the position's value and IM at the last mark it was valued at.
    pub valuation: Valuation,
    /// `Both` for a one-way account; `Long` (qty ≥ 0) or `Short` (qty ≤ 0) in hedge mode.
    pub side: PositionSide,
}

/// A linear position's value `q × M` and initial margin `|q × M| / L` (rounded up),
/// kept with the mark, size and leverage they were computed from, so a pre-trade check
/// does not re-value an unchanged position at an unchanged mark. Derived data only: it
/// is not encoded (snapshots and state hashes never see it), any two caches compare
/// equal, and a cache whose inputs differ from the leg's is recomputed, so it can never
/// be stale.
#[derive(Clone, Default)]
pub struct Valuation(std::cell::Cell<Option<Valued>>);

#[derive(Clone, Copy, PartialEq, Eq)]
struct Valued {
    mark: Price,
    qty: QtyLots,
    leverage: u32,
    value: Money,
    im: Money,
}

impl Valuation {
    /// (value, IM) of `qty` at `mark` with `leverage`: from the cache when its inputs
    /// match, else computed by `f` and remembered.
    #[inline]
    pub fn get_or(
        &self,
        mark: Price,
        qty: QtyLots,
        leverage: u32,
        f: impl FnOnce() -> (Money, Money),
    ) -> (Money, Money) {
        if let Some(v) = self.0.get() {
            if v.mark == mark && v.qty == qty && v.leverage == leverage {
                return (v.value, v.im);
            }
        }
        let (value, im) = f();
        self.0.set(Some(Valued {
            mark,
            qty,
            leverage,
            value,
            im,
        }));
        (value, im)
    }
}

impl PartialEq for Valuation {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Valuation {}

impl std::fmt::Debug for Valuation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Valuation")
    }
}

impl Encode for Valuation {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        _: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        Ok(())
    }
}

impl<C> Decode<C> for Valuation {
    fn decode<D: bincode::de::Decoder<Context = C>>(
        _: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        Ok(Valuation::default())
    }
}

impl<'de, C> bincode::BorrowDecode<'de, C> for Valuation {
    fn borrow_decode<D: bincode::de::BorrowDecoder<'de, Context = C>>(
        _: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        Ok(Valuation::default())
    }
}

impl Leg {
    pub fn new(instrument: InstrumentId, spec_max_leverage: u32) -> Leg {
        Leg::for_side(instrument, spec_max_leverage, PositionSide::Both)
    }

    /// A fresh leg for one position side.
    pub fn for_side(instrument: InstrumentId, spec_max_leverage: u32, side: PositionSide) -> Leg {
        Leg {
            side,
            instrument,
            leverage: DEFAULT_LEVERAGE.min(spec_max_leverage),
            mode: MarginMode::Cross,
            qty: QtyLots::ZERO,
            basis: Money::ZERO,
            isolated_margin: Money::ZERO,
            order_margin: Money::ZERO,
            order_notional: Money::ZERO,
            open_orders: std::collections::VecDeque::new(),
            funding: Money::ZERO,
            valuation: Valuation::default(),
        }
    }

    pub fn is_flat(&self) -> bool {
        self.qty.is_zero()
    }

    /// Entry price `basis / q` for reports, rounded to the price scale (half-way cases
    /// down; it is informational only: PnL uses the exact basis).
    pub fn entry_price(&self, spec: &InstrumentSpec) -> Option<Price> {
        if self.qty.is_zero() {
            return None;
        }
        if spec.is_inverse() {
            // Harmonic mean (MARGIN §2): E = contracts × CV / basis, and basis is the sum of
            // the fills' coin values: value_raw = numerator / price_raw.
            if self.basis.is_zero() {
                return None;
            }
            let e = perpcore_types::div_round(
                spec.inverse_numerator(self.qty),
                self.basis.raw(),
                Rounding::Floor,
            );
            return i64::try_from(e).ok().map(Price);
        }
        // basis raw (1e-12) = q_lots × lot_factor × E_raw → E_raw = basis / (q_lots × lot_factor)
        let unit = spec.linear_value(QtyLots(1), Price(1)).raw();
        let d = i128::from(self.qty.0) * unit;
        // `None` when the entry does not fit a price (a basis no fill can produce).
        i64::try_from(perpcore_types::div_round(
            self.basis.raw(),
            d,
            Rounding::Floor,
        ))
        .ok()
        .map(Price)
    }

    pub fn add_order(&mut self, id: perpcore_types::OrderId) {
        match self.open_orders.binary_search(&id) {
            Ok(_) => panic!("order {id} already on leg"),
            Err(i) => self.open_orders.insert(i, id),
        }
    }

    /// One open order's (reserved margin, notional) changed from `old` to `new`.
    pub fn replace_order_sums(&mut self, old: (Money, Money), new: (Money, Money)) {
        self.order_margin = self.order_margin - old.0 + new.0;
        self.order_notional = self.order_notional - old.1 + new.1;
    }

    pub fn remove_order(&mut self, id: perpcore_types::OrderId) {
        let i = self
            .open_orders
            .binary_search(&id)
            .expect("order not on leg");
        self.open_orders.remove(i);
    }
}

/// An account: main or sub-account.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Account {
    pub id: AccountId,
    pub parent: Option<AccountId>,
    /// Wallet balance per asset, indexed by `AssetId`.
    pub wallets: Vec<Money>,
    /// Legs sorted by (instrument id, position side).
    pub legs: Vec<Leg>,
    /// System accounts (insurance funds) are never margin-checked or liquidated.
    pub system: bool,
    pub asset_mode: AssetMode,
    /// Per asset: interest charged and not yet repaid (the interest part of a loan, which
    /// deposits repay first).
    pub interest_owed: Vec<Money>,
    /// Per asset: the first hour slot not yet charged interest (MARGIN §8).
    pub next_interest_slot: Vec<u64>,
    /// One-way or hedge mode (Binance's `dualSidePosition`).
    pub position_mode: PositionMode,
}

impl Account {
    pub fn new(id: AccountId, parent: Option<AccountId>, assets_count: usize) -> Account {
        Account {
            id,
            parent,
            wallets: vec![Money::ZERO; assets_count],
            legs: Vec::new(),
            system: false,
            asset_mode: AssetMode::Single,
            interest_owed: vec![Money::ZERO; assets_count],
            next_interest_slot: vec![0; assets_count],
            position_mode: PositionMode::OneWay,
        }
    }

    #[inline]
    pub fn leg(&self, i: InstrumentId, side: PositionSide) -> Option<&Leg> {
        self.legs
            .binary_search_by_key(&(i, side), |l| (l.instrument, l.side))
            .ok()
            .map(|k| &self.legs[k])
    }

    #[inline]
    pub fn leg_mut(&mut self, i: InstrumentId, side: PositionSide) -> Option<&mut Leg> {
        match self
            .legs
            .binary_search_by_key(&(i, side), |l| (l.instrument, l.side))
        {
            Ok(k) => Some(&mut self.legs[k]),
            Err(_) => None,
        }
    }

    /// The leg for `spec` and `side`, created with defaults on first use (a new hedge
    /// leg takes the leverage and margin mode of the instrument's other leg, which the
    /// account sets for both).
    pub fn leg_or_default(&mut self, spec: &InstrumentSpec, side: PositionSide) -> &mut Leg {
        let k = match self
            .legs
            .binary_search_by_key(&(spec.id, side), |l| (l.instrument, l.side))
        {
            Ok(k) => k,
            Err(k) => {
                let mut leg = Leg::for_side(spec.id, spec.max_leverage, side);
                if let Some(other) = self.legs_of(spec.id).next() {
                    leg.leverage = other.leverage;
                    leg.mode = other.mode;
                }
                self.legs.insert(k, leg);
                k
            }
        };
        &mut self.legs[k]
    }

    /// The legs on instrument `i` (one in one-way mode, up to two in hedge mode).
    pub fn legs_of(&self, i: InstrumentId) -> impl Iterator<Item = &Leg> + '_ {
        let start = self.legs.partition_point(|l| l.instrument < i);
        self.legs[start..]
            .iter()
            .take_while(move |l| l.instrument == i)
    }

    /// The leg an order of `side` (reduce-only or not) works on, in this account's mode.
    #[inline]
    pub fn order_side(&self, side: Side, reduce_only: bool) -> PositionSide {
        PositionSide::of_order(self.position_mode, side, reduce_only)
    }
}

/// What settling one fill did to one leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FillEffect {
    /// Realized PnL of the closed part (before fees).
    pub realized_pnl: Money,
    /// Lots that reduced the position.
    pub closed_lots: i64,
    /// Lots that opened or increased the position.
    pub opened_lots: i64,
}

/// The signed value a fill moves into a position's basis: linear `d × p` (exact, in the
/// quote asset), inverse `d × CV / p` (coin, rounded toward zero in magnitude once per
/// fill, so both sides of a trade book the same amount).
pub fn fill_value(spec: &InstrumentSpec, side: Side, lots: i64, price: Price) -> Money {
    let d = QtyLots(side.sign() * lots);
    if spec.is_inverse() {
        let v = spec.inverse_value(QtyLots(lots), price, Rounding::Floor);
        if side == Side::Buy {
            v
        } else {
            -v
        }
    } else {
        spec.linear_value(d, price)
    }
}

/// Apply a fill of `lots` at `price` on `side` to a leg's position and basis.
/// Returns the realized PnL; the caller books it and the fee (MARGIN §2).
///
/// Linear: `basis = Σ q·p`, realized on closing `c` lots = `value(c at p) − closed basis`.
/// Inverse: `basis = Σ q·CV/p` (coin), realized = `closed basis − c·CV/p` for a long (a
/// short mirrors it). In both cases `Δwallet ± Δbasis` of the two sides of a trade cancel
/// exactly, so each asset is conserved (MARGIN §10).
pub fn apply_fill(
    leg: &mut Leg,
    spec: &InstrumentSpec,
    side: Side,
    lots: i64,
    price: Price,
) -> FillEffect {
    assert!(lots > 0, "fill of non-positive size");
    let d = side.sign() * lots;
    let q = leg.qty.0;
    let f = fill_value(spec, side, lots, price);
    let mut eff = FillEffect::default();
    if q == 0 || (q > 0) == (d > 0) {
        // Open or increase: basis grows by the fill's value.
        leg.basis += f;
        leg.qty = QtyLots(q + d);
        eff.opened_lots = lots;
        return eff;
    }
    let close = lots.min(q.abs());
    let rest = lots - close;
    let closed_signed = QtyLots(q.signum() * close);
    if spec.is_inverse() {
        // Realized = closed basis + the closing part of the fill value; a smaller closed
        // basis (rounded down, for a long and for a short alike) is the smaller profit.
        let closed_basis =
            leg.basis
                .mul_div(i128::from(close), i128::from(q.abs()), Rounding::Floor);
        let f_close = if rest == 0 {
            f
        } else {
            f.mul_div(i128::from(close), i128::from(lots), Rounding::Floor)
        };
        eff.realized_pnl = closed_basis + f_close;
        leg.basis -= closed_basis;
        leg.qty = QtyLots(q - q.signum() * close);
        if rest > 0 {
            assert!(
                leg.qty.is_zero() && leg.basis.is_zero(),
                "flip leaves a residue"
            );
            leg.qty = QtyLots(d.signum() * rest);
            leg.basis = f - f_close;
        }
    } else {
        // Closed share of basis rounded up: realized PnL rounds against the account
        // (for a long, a larger basis share is a smaller profit; for a short, basis is
        // negative and rounding up makes it less negative, again a smaller profit).
        let closed_basis =
            leg.basis
                .mul_div(i128::from(close), i128::from(q.abs()), Rounding::Ceil);
        eff.realized_pnl = spec.linear_value(closed_signed, price) - closed_basis;
        leg.basis -= closed_basis;
        leg.qty = QtyLots(q - q.signum() * close);
        if rest > 0 {
            // Flip: the old position is closed in full; the rest opens at `price`.
            assert!(
                leg.qty.is_zero() && leg.basis.is_zero(),
                "flip leaves a residue"
            );
            leg.qty = QtyLots(d.signum() * rest);
            leg.basis = spec.linear_value(leg.qty, price);
        }
    }
    eff.closed_lots = close;
    eff.opened_lots = rest;
    if leg.qty.is_zero() {
        assert!(
            leg.basis.is_zero(),
            "flat position keeps basis {}",
            leg.basis
        );
    }
    eff
}

#[cfg(test)]
mod tests {
    use super::*;
    use perpcore_testkit::fixtures::{btcusdt, single_bracket};
    use perpcore_types::*;

    /// BTCUSDT with one bracket (125x, mmr 0.4%) and no fees.
    pub(crate) fn btc() -> InstrumentSpec {
        InstrumentSpec {
            brackets: single_bracket(),
            maker_fee: Rate::ZERO,
            taker_fee: Rate::ZERO,
            liquidation_fee: Rate::ZERO,
            ..btcusdt()
        }
    }

    /// Case M2: long 1 BTC at 5,000 closed at 5,500 realizes +500; short 1 BTC at 5,000
    /// closed at 4,500 realizes +500.
    #[test]
    fn m2_linear_pnl() {
        let spec = btc();
        let p = |s: &str| Price::parse(s).unwrap();
        let mut leg = Leg::new(spec.id, 125);
        apply_fill(&mut leg, &spec, Side::Buy, 1000, p("5000"));
        let e = apply_fill(&mut leg, &spec, Side::Sell, 1000, p("5500"));
        assert_eq!(e.realized_pnl, Money::from_int(500));
        assert!(leg.is_flat());

        let mut leg = Leg::new(spec.id, 125);
        apply_fill(&mut leg, &spec, Side::Sell, 1000, p("5000"));
        let e = apply_fill(&mut leg, &spec, Side::Buy, 1000, p("4500"));
        assert_eq!(e.realized_pnl, Money::from_int(500));
        assert!(leg.is_flat());
    }

    /// A flip closes the old side in full and opens the remainder at the fill price.
    #[test]
    fn flip_opens_remainder_at_fill_price() {
        let spec = btc();
        let p = |s: &str| Price::parse(s).unwrap();
        let mut leg = Leg::new(spec.id, 125);
        apply_fill(&mut leg, &spec, Side::Buy, 1000, p("100"));
        // Sell 3 BTC at 110: close 1 (+10), open short 2 at 110 (basis −220).
        let e = apply_fill(&mut leg, &spec, Side::Sell, 3000, p("110"));
        assert_eq!(e.realized_pnl, Money::from_int(10));
        assert_eq!(leg.qty, QtyLots(-2000));
        assert_eq!(leg.basis, Money::from_int(-220));
        assert_eq!(leg.entry_price(&spec), Some(p("110")));
    }
}
