//! Instrument arithmetic (exact), legs and accounts, and input checks.

use super::*;

pub(super) fn lots_q(spec: &InstrumentSpec, lots: i64) -> Q {
    Q::int(i128::from(lots)) * Q::qty(spec.lot_size)
}
pub(super) fn tick_price(spec: &InstrumentSpec, ticks: PriceTicks) -> Q {
    Q::int(i128::from(ticks.0)) * Q::price(spec.tick_size)
}
/// Signed linear value `q × p` (exact).
pub(super) fn value(spec: &InstrumentSpec, lots: i64, price: Q) -> Q {
    debug_assert!(!spec.is_inverse());
    lots_q(spec, lots) * price
}
/// A coin-M contract's value in USD (`ContractKind::Inverse`), `None` when linear.
pub(super) fn contract_value(spec: &InstrumentSpec) -> Option<Q> {
    match spec.kind {
        ContractKind::Inverse { contract_value } => Some(Q::money(contract_value)),
        ContractKind::Linear => None,
    }
}
/// Signed coin value `q × CV / p` of an inverse position (MARGIN §2), exact.
pub(super) fn coin_value(spec: &InstrumentSpec, lots: i64, price: Q) -> Q {
    let cv = contract_value(spec).expect("inverse instrument");
    lots_q(spec, lots) * cv / price
}
/// Absolute notional in the settlement asset: linear `|q × p|` (exact); inverse
/// `|q| × CV / p` in coin. ENGINE ROUNDS: the inverse notional up (it drives
/// requirements and fees).
pub(super) fn notional(spec: &InstrumentSpec, lots: i64, price: Q) -> Q {
    if spec.is_inverse() {
        return up(coin_value(spec, lots.abs(), price));
    }
    value(spec, lots, price).abs()
}
/// Whether an account in `mode` keeps `spec`'s cross positions and orders in its USD
/// pool: multi-asset pools the linear (USDT-M, USDC-M) instruments, unified all of them.
pub(super) fn pooled(mode: AssetMode, spec: &InstrumentSpec) -> bool {
    match mode {
        AssetMode::Single => false,
        AssetMode::Multi => !spec.is_inverse(),
        AssetMode::Unified => true,
    }
}
pub(super) fn bracket(spec: &InstrumentSpec, notional: Q) -> &Bracket {
    spec.brackets
        .iter()
        .find(|b| notional <= Q::money(b.notional_cap))
        .unwrap_or_else(|| spec.brackets.last().expect("brackets"))
}
/// MARGIN §3 `N × mmr − cum`. ENGINE ROUNDS: `N × mmr` up.
pub(super) fn maintenance(spec: &InstrumentSpec, n: Q) -> Q {
    let b = bracket(spec, n);
    up(n * Q::rate(b.mmr)) - Q::money(b.cum)
}
pub(super) fn mark_q(p: Price) -> Q {
    Q::price(p)
}
/// The limit-price band `mark × (1 ± band)` in ticks. ENGINE ROUNDS: the distance
/// `mark × band` down to the price grid; the low end up and the high end down to ticks.
pub(super) fn band(spec: &InstrumentSpec, mark: Price) -> (i64, i64) {
    let m = mark_q(mark);
    let d = (m * Q::rate(spec.price_band)).floor_to(PRICE);
    let tick = Q::price(spec.tick_size);
    let low = ((m - d) / tick).ceil_units(1).max(1);
    let high = ((m + d) / tick).floor_units(1).max(low);
    (i64::try_from(low).unwrap(), i64::try_from(high).unwrap())
}

impl Leg {
    pub(super) fn new(i: InstrumentId, spec: &InstrumentSpec) -> Leg {
        Leg {
            instrument: i,
            leverage: DEFAULT_LEVERAGE.min(spec.max_leverage),
            mode: MarginMode::Cross,
            lots: 0,
            basis: Q::ZERO,
            isolated_margin: Q::ZERO,
        }
    }
    /// Linear `q × M − basis`; inverse `basis − q × CV / M` (coin). ENGINE ROUNDS: the
    /// inverse value at mark up (toward +∞: against a long and a short alike).
    pub(super) fn upnl(&self, spec: &InstrumentSpec, mark: Price) -> Q {
        if spec.is_inverse() {
            return self.basis - up(coin_value(spec, self.lots, mark_q(mark)));
        }
        value(spec, self.lots, mark_q(mark)) - self.basis
    }
    /// ENGINE ROUNDS: `N / L` up.
    pub(super) fn im(&self, spec: &InstrumentSpec, mark: Price) -> Q {
        up(notional(spec, self.lots, mark_q(mark)) / Q::int(i128::from(self.leverage)))
    }
    pub(super) fn mm(&self, spec: &InstrumentSpec, mark: Price) -> Q {
        if self.lots == 0 {
            return Q::ZERO;
        }
        maintenance(spec, notional(spec, self.lots, mark_q(mark)))
    }
    pub(super) fn isolated_liquidatable(&self, spec: &InstrumentSpec, mark: Price) -> bool {
        self.lots != 0 && self.isolated_margin + self.upnl(spec, mark) <= self.mm(spec, mark)
    }
}

impl Acct {
    pub(super) fn leg(&self, i: InstrumentId) -> Option<&Leg> {
        self.legs.iter().find(|l| l.instrument == i)
    }
    pub(super) fn leg_mut(&mut self, spec: &InstrumentSpec) -> &mut Leg {
        if self.leg(spec.id).is_none() {
            self.legs.push(Leg::new(spec.id, spec));
        }
        self.legs
            .iter_mut()
            .find(|l| l.instrument == spec.id)
            .expect("leg")
    }
    pub(super) fn lots(&self, i: InstrumentId) -> i64 {
        self.leg(i).map_or(0, |l| l.lots)
    }
}

pub(super) fn check_amount(amount: Money) -> Res {
    if !amount.is_positive() {
        return Err(RejectReason::AmountNotPositive);
    }
    if amount > MAX_AMOUNT {
        return Err(RejectReason::AmountTooLarge);
    }
    Ok(())
}

pub(super) fn check_price(p: Price) -> Res {
    if !p.is_positive() {
        return Err(RejectReason::PriceNotPositive);
    }
    if p > MAX_PRICE {
        return Err(RejectReason::PriceTooLarge);
    }
    Ok(())
}
