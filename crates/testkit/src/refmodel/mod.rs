//! A naive reference model of the engine's accounts and risk (issue 14 item 5), compared
//! event for event with `perpcore_engine::Engine` over seeded streams.
//!
//! Owns: a second, independent reading of the ledger, order-acceptance, settlement and
//! liquidation rules of `docs/MARGIN.md` for **single-asset accounts on linear
//! instruments**, cross and isolated. Every value is an exact rational ([`Q`]); state is
//! a few vectors searched by linear scan (accounts, orders), the books are [`RefBook`]s,
//! and every derived sum (order margin of a leg, a pool, the holders of an instrument) is
//! recomputed from scratch whenever it is needed.
//!
//! Where the engine rounds to its fixed-point grid, the model rounds the same way, at the
//! same point, explicitly through [`up`] / [`down`] (money grid 10^-12) or the price grid,
//! and each such place says so with an `ENGINE ROUNDS:` comment. Anything else is exact.
//!
//! Must never: call the engine or `perpcore-risk`, reuse their data structures or
//! fixed-point helpers, aim for speed, or guess. A command whose outcome depends on
//! something the model does not cover (see [`RefModel::uncovered`]) is reported as
//! [`Step::Uncovered`] *before* the model changes anything, and the comparison of that
//! stream stops there.
//!
//! Covered: create account, deposit, withdraw, transfer (main/sub rules, caps), leverage,
//! margin mode, isolated margin, orders of every type and time in force (pre-trade check,
//! reservation, reduce-only, close-position, STP, amend, cancel), fills with fees and
//! realized PnL, mark/index/funding/reference-price commands, and liquidation of cross
//! and isolated positions (trigger, order cancellation, partial step, takeover by the
//! insurance fund, the fund's work-off order, deficit cover).
//! Not covered (reported as uncovered): coin-M instruments, multi-asset and unified
//! accounts (switching to them, asset index prices, USD pools, loans, interest,
//! auto-exchange), and the fee-to-close convention.

pub mod exact;

use crate::refbook::RefBook;
pub use exact::Q;
use perpcore_book::{Fill, MatchResult, Taker, TakerOutcome, Tif};
use perpcore_types::*;

/// Raw units of money per unit: the engine's money grid.
const MONEY: i128 = 1_000_000_000_000;
/// Raw units of a price per unit: the engine's price grid.
const PRICE: i128 = 100_000_000;
/// Engine-generated (liquidation) order ids start here.
const INTERNAL_ORDER_MIN: u64 = 1 << 63;
/// A new leg's leverage (Binance's default), capped by the instrument's maximum.
const DEFAULT_LEVERAGE: u32 = 20;

/// ENGINE ROUNDS: a requirement or a charge, up to the money grid.
pub fn up(x: Q) -> Q {
    x.ceil_to(MONEY)
}
/// ENGINE ROUNDS: a credit, down to the money grid.
pub fn down(x: Q) -> Q {
    x.floor_to(MONEY)
}

/// What applying one command did.
#[derive(Debug)]
pub enum Step {
    /// The events the engine must have emitted.
    Events(Vec<Event>),
    /// The command steps outside what the model covers; nothing changed.
    Uncovered(&'static str),
}

/// Deliberate mistakes, to prove the comparison can fail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Perturbation {
    #[default]
    None,
    /// Fees rounded down instead of up. (With `gen::test_config`'s rates every fee is
    /// exact, so this shows only with rates of more decimals.)
    FeeRoundsDown,
    /// The closed share of a position's basis rounded down instead of up.
    ClosedBasisRoundsDown,
}

#[derive(Clone, Debug)]
struct Leg {
    instrument: InstrumentId,
    leverage: u32,
    mode: MarginMode,
    /// Signed position in lots.
    lots: i64,
    /// Σ signed fill value `q × p` of the open position (settlement asset).
    basis: Q,
    isolated_margin: Q,
}

#[derive(Clone, Debug)]
struct Acct {
    id: AccountId,
    parent: Option<AccountId>,
    system: bool,
    wallets: Vec<Q>,
    legs: Vec<Leg>,
}

/// The engine-side bookkeeping of an open order (the book holds its price and size).
#[derive(Clone, Debug)]
struct Order {
    id: OrderId,
    account: AccountId,
    instrument: InstrumentId,
    side: Side,
    reduce_only: bool,
    post_only: bool,
    /// Notional of the exposure-increasing part, valued at placement.
    margin_notional: Q,
    /// Initial margin reserved: `margin_notional / leverage`.
    reserved: Q,
    /// Notional of the open size at the limit price.
    open_notional: Q,
}

/// A single-asset pool (MARGIN §5): one settlement asset of one account.
#[derive(Clone, Copy, Debug)]
struct Pool {
    wallet: Q,
    cross_upnl: Q,
    cross_im: Q,
    cross_mm: Q,
    order_margin: Q,
    cross_positions: u32,
}

impl Pool {
    fn margin_balance(&self) -> Q {
        self.wallet + self.cross_upnl
    }
    fn available(&self) -> Q {
        self.margin_balance() - self.cross_im - self.order_margin
    }
    fn withdrawable(&self) -> Q {
        let free = self.wallet + self.cross_upnl.min(Q::ZERO) - self.cross_im - self.order_margin;
        free.min(self.wallet).max(Q::ZERO)
    }
    fn liquidatable(&self) -> bool {
        self.cross_positions > 0 && self.cross_mm >= self.margin_balance()
    }
}

/// A leg as the comparison sees it (engine and model alike).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegView {
    pub instrument: InstrumentId,
    pub leverage: u32,
    pub mode: MarginMode,
    pub qty: QtyLots,
    pub basis: Money,
    pub isolated_margin: Money,
    pub order_margin: Money,
    pub order_notional: Money,
    pub open_orders: Vec<OrderId>,
}

impl LegView {
    /// A leg nobody has used is the same as no leg.
    pub fn is_default(&self, max_leverage: u32) -> bool {
        self.leverage == DEFAULT_LEVERAGE.min(max_leverage)
            && self.mode == MarginMode::Cross
            && self.qty.0 == 0
            && self.basis.is_zero()
            && self.isolated_margin.is_zero()
            && self.order_margin.is_zero()
            && self.order_notional.is_zero()
            && self.open_orders.is_empty()
    }
}

/// An account as the comparison sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountView {
    pub id: AccountId,
    pub parent: Option<AccountId>,
    pub system: bool,
    pub wallets: Vec<Money>,
    /// Non-default legs, by instrument.
    pub legs: Vec<LegView>,
}

/// An open order's reservation as the comparison sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderView {
    pub margin_notional: Money,
    pub reserved: Money,
    pub open_notional: Money,
}

type Res = Result<(), RejectReason>;

/// The naive reference model.
pub struct RefModel {
    cfg: Config,
    accounts: Vec<Acct>,
    orders: Vec<Order>,
    books: Vec<RefBook>,
    marks: Vec<Option<Price>>,
    reference: Vec<(Option<Price>, Option<Price>)>,
    fee_income: Vec<Q>,
    /// Deposits − withdrawals per asset (platform caps).
    net_deposits: Vec<Q>,
    next_internal_order: u64,
    /// While a liquidation order of this isolated position runs, its closing fills keep
    /// the released margin with the position.
    holding_isolated: Option<(AccountId, InstrumentId)>,
    pub perturbation: Perturbation,
}

fn fund_id(asset: AssetId) -> AccountId {
    AccountId(u64::MAX - u64::from(asset.0))
}

// ---- instrument arithmetic, exact ----

fn lots_q(spec: &InstrumentSpec, lots: i64) -> Q {
    Q::int(i128::from(lots)) * Q::qty(spec.lot_size)
}
fn tick_price(spec: &InstrumentSpec, ticks: PriceTicks) -> Q {
    Q::int(i128::from(ticks.0)) * Q::price(spec.tick_size)
}
/// Signed linear value `q × p` (exact).
fn value(spec: &InstrumentSpec, lots: i64, price: Q) -> Q {
    lots_q(spec, lots) * price
}
fn notional(spec: &InstrumentSpec, lots: i64, price: Q) -> Q {
    value(spec, lots, price).abs()
}
fn bracket(spec: &InstrumentSpec, notional: Q) -> &Bracket {
    spec.brackets
        .iter()
        .find(|b| notional <= Q::money(b.notional_cap))
        .unwrap_or_else(|| spec.brackets.last().expect("brackets"))
}
/// MARGIN §3 `N × mmr − cum`. ENGINE ROUNDS: `N × mmr` up.
fn maintenance(spec: &InstrumentSpec, n: Q) -> Q {
    let b = bracket(spec, n);
    up(n * Q::rate(b.mmr)) - Q::money(b.cum)
}
fn mark_q(p: Price) -> Q {
    Q::price(p)
}
/// The limit-price band `mark × (1 ± band)` in ticks. ENGINE ROUNDS: the distance
/// `mark × band` down to the price grid; the low end up and the high end down to ticks.
fn band(spec: &InstrumentSpec, mark: Price) -> (i64, i64) {
    let m = mark_q(mark);
    let d = (m * Q::rate(spec.price_band)).floor_to(PRICE);
    let tick = Q::price(spec.tick_size);
    let low = ((m - d) / tick).ceil_units(1).max(1);
    let high = ((m + d) / tick).floor_units(1).max(low);
    (i64::try_from(low).unwrap(), i64::try_from(high).unwrap())
}

impl Leg {
    fn new(i: InstrumentId, spec: &InstrumentSpec) -> Leg {
        Leg {
            instrument: i,
            leverage: DEFAULT_LEVERAGE.min(spec.max_leverage),
            mode: MarginMode::Cross,
            lots: 0,
            basis: Q::ZERO,
            isolated_margin: Q::ZERO,
        }
    }
    fn upnl(&self, spec: &InstrumentSpec, mark: Price) -> Q {
        value(spec, self.lots, mark_q(mark)) - self.basis
    }
    /// ENGINE ROUNDS: `N / L` up.
    fn im(&self, spec: &InstrumentSpec, mark: Price) -> Q {
        up(notional(spec, self.lots, mark_q(mark)) / Q::int(i128::from(self.leverage)))
    }
    fn mm(&self, spec: &InstrumentSpec, mark: Price) -> Q {
        if self.lots == 0 {
            return Q::ZERO;
        }
        maintenance(spec, notional(spec, self.lots, mark_q(mark)))
    }
    fn isolated_liquidatable(&self, spec: &InstrumentSpec, mark: Price) -> bool {
        self.lots != 0 && self.isolated_margin + self.upnl(spec, mark) <= self.mm(spec, mark)
    }
}

impl Acct {
    fn leg(&self, i: InstrumentId) -> Option<&Leg> {
        self.legs.iter().find(|l| l.instrument == i)
    }
    fn leg_mut(&mut self, spec: &InstrumentSpec) -> &mut Leg {
        if self.leg(spec.id).is_none() {
            self.legs.push(Leg::new(spec.id, spec));
        }
        self.legs
            .iter_mut()
            .find(|l| l.instrument == spec.id)
            .expect("leg")
    }
    fn lots(&self, i: InstrumentId) -> i64 {
        self.leg(i).map_or(0, |l| l.lots)
    }
}

fn check_amount(amount: Money) -> Res {
    if !amount.is_positive() {
        return Err(RejectReason::AmountNotPositive);
    }
    if amount > MAX_AMOUNT {
        return Err(RejectReason::AmountTooLarge);
    }
    Ok(())
}

fn check_price(p: Price) -> Res {
    if !p.is_positive() {
        return Err(RejectReason::PriceNotPositive);
    }
    if p > MAX_PRICE {
        return Err(RejectReason::PriceTooLarge);
    }
    Ok(())
}

impl RefModel {
    pub fn new(cfg: Config) -> RefModel {
        let assets = cfg.assets.len();
        let n = cfg.instruments.len();
        let accounts = (0..assets)
            .map(|k| Acct {
                id: fund_id(AssetId::at(k)),
                parent: None,
                system: true,
                wallets: vec![Q::ZERO; assets],
                legs: Vec::new(),
            })
            .collect();
        RefModel {
            accounts,
            orders: Vec::new(),
            books: (0..n).map(|_| RefBook::new()).collect(),
            marks: vec![None; n],
            reference: vec![(None, None); n],
            fee_income: vec![Q::ZERO; assets],
            net_deposits: vec![Q::ZERO; assets],
            next_internal_order: INTERNAL_ORDER_MIN,
            holding_isolated: None,
            perturbation: Perturbation::None,
            cfg,
        }
    }

    // ---- lookups (linear scans) ----

    fn acct(&self, id: AccountId) -> Option<&Acct> {
        self.accounts.iter().find(|a| a.id == id)
    }
    fn acct_mut(&mut self, id: AccountId) -> &mut Acct {
        self.accounts
            .iter_mut()
            .find(|a| a.id == id)
            .expect("account")
    }
    fn user(&self, id: AccountId) -> Result<&Acct, RejectReason> {
        match self.acct(id) {
            Some(a) if !a.system => Ok(a),
            _ => Err(RejectReason::UnknownAccount),
        }
    }
    fn spec(&self, i: InstrumentId) -> Result<InstrumentSpec, RejectReason> {
        self.cfg
            .instruments
            .iter()
            .find(|s| s.id == i)
            .cloned()
            .ok_or(RejectReason::UnknownInstrument)
    }
    fn order(&self, id: OrderId) -> Option<&Order> {
        self.orders.iter().find(|o| o.id == id)
    }
    fn order_mut(&mut self, id: OrderId) -> &mut Order {
        self.orders.iter_mut().find(|o| o.id == id).expect("order")
    }
    /// Open orders of `account` on `i`, by id.
    fn orders_of(&self, account: AccountId, i: InstrumentId) -> Vec<Order> {
        let mut v: Vec<Order> = self
            .orders
            .iter()
            .filter(|o| o.account == account && o.instrument == i)
            .cloned()
            .collect();
        v.sort_by_key(|o| o.id);
        v
    }
    fn leverage_of(&self, account: AccountId, spec: &InstrumentSpec) -> u32 {
        self.acct(account)
            .and_then(|a| a.leg(spec.id))
            .map_or(DEFAULT_LEVERAGE.min(spec.max_leverage), |l| l.leverage)
    }

    /// The pool of `asset` of `acct` (the account value given, so that a trial copy can
    /// be valued), from scratch.
    fn pool_of(&self, a: &Acct, asset: AssetId) -> Pool {
        let mut p = Pool {
            wallet: a.wallets[usize::from(asset.0)],
            cross_upnl: Q::ZERO,
            cross_im: Q::ZERO,
            cross_mm: Q::ZERO,
            order_margin: Q::ZERO,
            cross_positions: 0,
        };
        for spec in self
            .cfg
            .instruments
            .iter()
            .filter(|s| s.settle_asset == asset)
        {
            p.order_margin += self
                .orders
                .iter()
                .filter(|o| o.account == a.id && o.instrument == spec.id)
                .map(|o| o.reserved)
                .sum();
            let Some(leg) = a.leg(spec.id) else { continue };
            if leg.mode == MarginMode::Cross && leg.lots != 0 {
                let mark = self.marks[spec.id.0 as usize].expect("position without mark");
                p.cross_upnl += leg.upnl(spec, mark);
                p.cross_im += leg.im(spec, mark);
                p.cross_mm += leg.mm(spec, mark);
                p.cross_positions += 1;
            }
        }
        p
    }
    fn pool(&self, id: AccountId, asset: AssetId) -> Pool {
        self.pool_of(self.acct(id).expect("account"), asset)
    }

    /// Whether `cmd` depends on something the model does not cover. Decided before any
    /// change, on the current state.
    pub fn uncovered(&self, cmd: &Command) -> Option<&'static str> {
        let instrument = match cmd {
            Command::SetLeverage { instrument, .. }
            | Command::SetMarginMode { instrument, .. }
            | Command::AdjustIsolatedMargin { instrument, .. }
            | Command::SetMarkPrice { instrument, .. }
            | Command::SetIndexPrice { instrument, .. }
            | Command::SetFundingRate { instrument, .. }
            | Command::SetReferencePrices { instrument, .. } => Some(*instrument),
            Command::PlaceOrder(o) => Some(o.instrument),
            Command::CancelAll { instrument, .. } => *instrument,
            _ => None,
        };
        if let Some(spec) = instrument.and_then(|i| self.spec(i).ok()) {
            if spec.is_inverse() {
                return Some("coin-M instrument");
            }
            if spec.fee_to_close {
                return Some("fee-to-close convention");
            }
        }
        match cmd {
            Command::SetAssetIndex { .. } => Some("asset index prices (USD valuation)"),
            Command::SetAssetMode { account, mode } if *mode != AssetMode::Single => {
                let a = self.user(*account).ok()?;
                // Rule R1 refuses with isolated positions or orders: that much is covered.
                let isolated = a.legs.iter().any(|l| {
                    l.mode == MarginMode::Isolated
                        && (l.lots != 0 || !self.orders_of(a.id, l.instrument).is_empty())
                });
                (!isolated).then_some("multi-asset or unified account")
            }
            _ => None,
        }
    }

    /// Apply one command. No timestamp: single-asset accounts accrue no interest, so
    /// sequenced time does not matter to the covered part.
    pub fn apply(&mut self, cmd: &Command) -> Step {
        if let Some(why) = self.uncovered(cmd) {
            return Step::Uncovered(why);
        }
        let mut out = Vec::new();
        let r = match cmd {
            Command::CreateAccount { account, parent } => {
                self.create_account(*account, *parent, &mut out)
            }
            Command::Deposit {
                account,
                asset,
                amount,
            } => self.deposit(*account, *asset, *amount, &mut out),
            Command::Withdraw {
                account,
                asset,
                amount,
            } => self.withdraw(*account, *asset, *amount, &mut out),
            Command::Transfer {
                from,
                to,
                asset,
                amount,
            } => self.transfer(*from, *to, *asset, *amount, &mut out),
            Command::SetLeverage {
                account,
                instrument,
                leverage,
            } => self.set_leverage(*account, *instrument, *leverage, &mut out),
            Command::SetMarginMode {
                account,
                instrument,
                mode,
            } => self.set_margin_mode(*account, *instrument, *mode, &mut out),
            Command::AdjustIsolatedMargin {
                account,
                instrument,
                delta,
            } => self.adjust_isolated_margin(*account, *instrument, *delta, &mut out),
            Command::PlaceOrder(o) => self.place_order(o, &mut out),
            Command::CancelOrder { account, order_id } => {
                self.cancel_order(*account, *order_id, &mut out)
            }
            Command::CancelAll {
                account,
                instrument,
            } => self.cancel_all(*account, *instrument, &mut out),
            Command::AmendOrder {
                account,
                order_id,
                price,
                qty,
            } => self.amend_order(*account, *order_id, *price, *qty, &mut out),
            Command::SetMarkPrice { instrument, price } => {
                self.set_mark_price(*instrument, *price, &mut out)
            }
            Command::SetIndexPrice { instrument, price } => {
                let tick = self.spec(*instrument).map(|s| s.tick_size);
                tick.and_then(|tick| {
                    check_price(*price)?;
                    if *price < tick {
                        return Err(RejectReason::PriceBelowTick);
                    }
                    out.push(Event::IndexPriceSet {
                        instrument: *instrument,
                        price: *price,
                    });
                    Ok(())
                })
            }
            Command::SetFundingRate {
                instrument,
                rate,
                next_funding_ns,
            } => self.spec(*instrument).and_then(|_| {
                if *rate < -Rate::ONE || *rate > Rate::ONE {
                    return Err(RejectReason::RateOutOfRange);
                }
                out.push(Event::FundingRateSet {
                    instrument: *instrument,
                    rate: *rate,
                    next_funding_ns: *next_funding_ns,
                });
                Ok(())
            }),
            Command::SetReferencePrices {
                instrument,
                best_bid,
                best_ask,
                last_trade,
            } => self.spec(*instrument).and_then(|_| {
                for p in [best_bid, best_ask, last_trade].into_iter().flatten() {
                    check_price(*p)?;
                }
                let (b0, a0) = self.reference[instrument.0 as usize];
                let (b, a) = (best_bid.or(b0), best_ask.or(a0));
                if let (Some(b), Some(a)) = (b, a) {
                    if b >= a {
                        return Err(RejectReason::CrossedReferencePrices);
                    }
                }
                self.reference[instrument.0 as usize] = (b, a);
                out.push(Event::ReferencePricesSet {
                    instrument: *instrument,
                    best_bid: *best_bid,
                    best_ask: *best_ask,
                    last_trade: *last_trade,
                });
                Ok(())
            }),
            Command::SetAssetMode { account, mode } => {
                self.user(*account).map(|_| ()).and_then(|_| {
                    if *mode != AssetMode::Single {
                        // `uncovered` let it through: rule R1 refuses it.
                        return Err(RejectReason::MultiAssetHasIsolated);
                    }
                    out.push(Event::AssetModeSet {
                        account: *account,
                        mode: *mode,
                    });
                    Ok(())
                })
            }
            Command::SetAssetIndex { .. } => unreachable!("uncovered"),
        };
        if let Err(reason) = r {
            assert!(out.is_empty(), "model: a rejection after events: {out:?}");
            out.push(Event::rejected(reason));
        }
        Step::Events(out)
    }

    // ---- ledger ----

    fn create_account(
        &mut self,
        id: AccountId,
        parent: Option<AccountId>,
        out: &mut Vec<Event>,
    ) -> Res {
        if self.acct(id).is_some() {
            return Err(RejectReason::AccountExists);
        }
        if let Some(p) = parent {
            let pa = self.user(p).map_err(|_| RejectReason::UnknownParent)?;
            if pa.parent.is_some() {
                return Err(RejectReason::ParentIsSubAccount);
            }
        }
        self.accounts.push(Acct {
            id,
            parent,
            system: false,
            wallets: vec![Q::ZERO; self.cfg.assets.len()],
            legs: Vec::new(),
        });
        out.push(Event::AccountCreated {
            account: id,
            parent,
        });
        Ok(())
    }

    fn check_asset(&self, asset: AssetId) -> Res {
        if usize::from(asset.0) < self.cfg.assets.len() {
            Ok(())
        } else {
            Err(RejectReason::UnknownAsset)
        }
    }

    /// Individual and platform caps (MARGIN §4) on an amount coming in.
    fn check_caps(&self, id: AccountId, asset: AssetId, amount: Money) -> Res {
        let k = usize::from(asset.0);
        let Some(c) = self.cfg.assets[k].collateral.as_ref() else {
            return Ok(());
        };
        let amount = Q::money(amount);
        if let Some(cap) = c.individual_cap {
            if self.acct(id).expect("account").wallets[k] + amount > Q::money(cap) {
                return Err(RejectReason::IndividualCapExceeded);
            }
        }
        if let Some(cap) = c.platform_cap {
            if self.net_deposits[k] + amount > Q::money(cap) {
                return Err(RejectReason::PlatformCapExceeded);
            }
        }
        Ok(())
    }

    fn deposit(
        &mut self,
        id: AccountId,
        asset: AssetId,
        amount: Money,
        out: &mut Vec<Event>,
    ) -> Res {
        self.user(id)?;
        self.check_asset(asset)?;
        check_amount(amount)?;
        self.check_caps(id, asset, amount)?;
        let k = usize::from(asset.0);
        let w = &mut self.acct_mut(id).wallets[k];
        *w += Q::money(amount);
        let balance = w.to_money();
        self.net_deposits[k] += Q::money(amount);
        out.push(Event::Deposited {
            account: id,
            asset,
            amount,
            balance,
        });
        Ok(())
    }

    /// Single-asset: never unrealized profit, never margin in use (MARGIN §5).
    fn can_take_out(&self, id: AccountId, asset: AssetId, amount: Money) -> bool {
        self.pool(id, asset).withdrawable() >= Q::money(amount)
    }

    fn withdraw(
        &mut self,
        id: AccountId,
        asset: AssetId,
        amount: Money,
        out: &mut Vec<Event>,
    ) -> Res {
        self.user(id)?;
        self.check_asset(asset)?;
        check_amount(amount)?;
        if !self.can_take_out(id, asset, amount) {
            return Err(RejectReason::WithdrawExceedsAvailable);
        }
        let k = usize::from(asset.0);
        let w = &mut self.acct_mut(id).wallets[k];
        *w -= Q::money(amount);
        let balance = w.to_money();
        self.net_deposits[k] -= Q::money(amount);
        out.push(Event::Withdrawn {
            account: id,
            asset,
            amount,
            balance,
        });
        Ok(())
    }

    fn transfer(
        &mut self,
        from: AccountId,
        to: AccountId,
        asset: AssetId,
        amount: Money,
        out: &mut Vec<Event>,
    ) -> Res {
        let fp = self.user(from)?.parent;
        let tp = self.user(to)?.parent;
        self.check_asset(asset)?;
        if from == to {
            return Err(RejectReason::TransferToSelf);
        }
        check_amount(amount)?;
        // Main ↔ its sub-account, or two sub-accounts of one main account.
        let related = tp == Some(from) || fp == Some(to) || (fp.is_some() && fp == tp);
        if !related {
            return Err(RejectReason::TransferNotRelated);
        }
        if !self.can_take_out(from, asset, amount) {
            return Err(RejectReason::WithdrawExceedsAvailable);
        }
        self.check_caps(to, asset, amount)?;
        let k = usize::from(asset.0);
        self.acct_mut(from).wallets[k] -= Q::money(amount);
        self.acct_mut(to).wallets[k] += Q::money(amount);
        out.push(Event::Transferred {
            from,
            to,
            asset,
            amount,
        });
        Ok(())
    }

    // ---- leverage and margin mode ----

    /// Position notional at mark + open orders' notional (+ `extra`), without the order
    /// `excluded`: the exposure a leverage must be allowed for (MARGIN §3).
    fn exposure(
        &self,
        id: AccountId,
        spec: &InstrumentSpec,
        extra: Q,
        excluded: Option<OrderId>,
    ) -> Q {
        let mut n = extra
            + self
                .orders_of(id, spec.id)
                .iter()
                .filter(|o| Some(o.id) != excluded)
                .map(|o| o.open_notional)
                .sum::<Q>();
        if let Some(m) = self.marks[spec.id.0 as usize] {
            let lots = self.acct(id).map_or(0, |a| a.lots(spec.id));
            n += notional(spec, lots, mark_q(m));
        }
        n
    }

    fn set_leverage(
        &mut self,
        id: AccountId,
        i: InstrumentId,
        leverage: u32,
        out: &mut Vec<Event>,
    ) -> Res {
        self.user(id)?;
        let spec = self.spec(i)?;
        if leverage == 0 || leverage > spec.max_leverage {
            return Err(RejectReason::LeverageOutOfRange);
        }
        if bracket(&spec, self.exposure(id, &spec, Q::ZERO, None)).max_leverage < leverage {
            return Err(RejectReason::LeverageExceedsBracket);
        }
        let old = self.leverage_of(id, &spec);
        // Try it on copies: the leg at the new leverage, its orders re-reserved.
        let mut acct = self.acct(id).expect("account").clone();
        acct.leg_mut(&spec).leverage = leverage;
        let saved_orders = self.orders.clone();
        for o in self
            .orders
            .iter_mut()
            .filter(|o| o.account == id && o.instrument == i)
        {
            // ENGINE ROUNDS: a reservation, up.
            o.reserved = up(o.margin_notional / Q::int(i128::from(leverage)));
        }
        if leverage < old {
            let under = self
                .pool_of(&acct, spec.settle_asset)
                .available()
                .is_negative();
            let leg = acct.leg(i).expect("leg");
            let isolated_under = leg.mode == MarginMode::Isolated && leg.lots != 0 && {
                let m = self.marks[i.0 as usize].expect("mark");
                leg.isolated_margin + leg.upnl(&spec, m).min(Q::ZERO) < leg.im(&spec, m)
            };
            if under || isolated_under {
                self.orders = saved_orders;
                return Err(RejectReason::LeverageUnderMargin);
            }
        }
        *self.acct_mut(id) = acct;
        out.push(Event::LeverageSet {
            account: id,
            instrument: i,
            leverage,
        });
        Ok(())
    }

    fn set_margin_mode(
        &mut self,
        id: AccountId,
        i: InstrumentId,
        mode: MarginMode,
        out: &mut Vec<Event>,
    ) -> Res {
        self.user(id)?;
        let spec = self.spec(i)?;
        let mut acct = self.acct(id).expect("account").clone();
        let settle = usize::from(spec.settle_asset.0);
        let leg = acct.leg_mut(&spec).clone();
        if leg.mode != mode && leg.lots != 0 {
            let m = self.marks[i.0 as usize].expect("mark");
            let l = acct.leg_mut(&spec);
            match mode {
                MarginMode::Isolated => {
                    // The isolated position starts at exactly its IM: IW + uPnL = IM.
                    let iw = (leg.im(&spec, m) - leg.upnl(&spec, m)).max(Q::ZERO);
                    l.isolated_margin = iw;
                    l.mode = MarginMode::Isolated;
                    acct.wallets[settle] -= iw;
                }
                MarginMode::Cross => {
                    l.isolated_margin = Q::ZERO;
                    l.mode = MarginMode::Cross;
                    acct.wallets[settle] += leg.isolated_margin;
                }
            }
            if self
                .pool_of(&acct, spec.settle_asset)
                .available()
                .is_negative()
            {
                return Err(RejectReason::ModeSwitchUnderMargin);
            }
        } else {
            acct.leg_mut(&spec).mode = mode;
        }
        *self.acct_mut(id) = acct;
        out.push(Event::MarginModeSet {
            account: id,
            instrument: i,
            mode,
        });
        Ok(())
    }

    fn adjust_isolated_margin(
        &mut self,
        id: AccountId,
        i: InstrumentId,
        delta: Money,
        out: &mut Vec<Event>,
    ) -> Res {
        self.user(id)?;
        let spec = self.spec(i)?;
        if delta.is_zero() {
            return Err(RejectReason::DeltaZero);
        }
        if delta < -MAX_AMOUNT || delta > MAX_AMOUNT {
            return Err(RejectReason::AmountTooLarge);
        }
        let leg = match self.acct(id).expect("account").leg(i) {
            Some(l) if l.mode == MarginMode::Isolated && l.lots != 0 => l.clone(),
            _ => return Err(RejectReason::NoIsolatedPosition),
        };
        let m = self.marks[i.0 as usize].expect("mark");
        let d = Q::money(delta);
        if d.is_positive() {
            if self.pool(id, spec.settle_asset).withdrawable() < d {
                return Err(RejectReason::InsufficientBalance);
            }
        } else if leg.isolated_margin + d + leg.upnl(&spec, m).min(Q::ZERO) < leg.im(&spec, m) {
            return Err(RejectReason::IsolatedMarginTooLow);
        }
        let a = self.acct_mut(id);
        a.wallets[usize::from(spec.settle_asset.0)] -= d;
        let l = a.leg_mut(&spec);
        l.isolated_margin += d;
        let isolated_margin = l.isolated_margin.to_money();
        out.push(Event::IsolatedMarginAdjusted {
            account: id,
            instrument: i,
            delta,
            isolated_margin,
        });
        Ok(())
    }

    // ---- orders ----

    /// Every check of a new order, without changing anything: the book taker, the order's
    /// bookkeeping and the reason its unfilled rest is cancelled with. `replacing`: the
    /// amended order, whose reservation is free and whose size is left out.
    fn prepare(
        &self,
        o: &NewOrder,
        replacing: Option<&Order>,
    ) -> Result<(Taker, Order, CancelReason), RejectReason> {
        let spec = self.spec(o.instrument)?;
        let mark = self.marks[o.instrument.0 as usize].ok_or(RejectReason::NoMarkPrice)?;
        if o.order_id.0 >= INTERNAL_ORDER_MIN {
            return Err(RejectReason::OrderIdReserved);
        }
        if replacing.is_none() && self.order(o.order_id).is_some() {
            return Err(RejectReason::DuplicateOrderId);
        }
        if o.order_type == OrderType::Market && o.tif == TimeInForce::PostOnly {
            return Err(RejectReason::MarketPostOnly);
        }
        let acct = self.acct(o.account).expect("account");
        let has_leg = acct.leg(o.instrument).is_some();
        let may_rest = o.order_type == OrderType::Limit
            && matches!(o.tif, TimeInForce::Gtc | TimeInForce::PostOnly);
        if replacing.is_none()
            && may_rest
            && has_leg
            && self.orders_of(o.account, o.instrument).len() >= spec.max_open_orders as usize
        {
            return Err(RejectReason::TooManyOpenOrders);
        }
        // Size (rule R3: reduce-only never opens or flips; close-position is the position).
        let reduce_only = o.reduce_only || o.close_position;
        let position = acct.lots(o.instrument);
        let mut qty = if o.close_position {
            position.abs()
        } else {
            o.qty.0
        };
        if reduce_only {
            if position == 0 {
                return Err(RejectReason::ReduceOnlyNoPosition);
            }
            if (position > 0) == (o.side == Side::Buy) {
                return Err(RejectReason::ReduceOnlyWrongSide);
            }
        }
        if qty <= 0 {
            return Err(RejectReason::QtyNotPositive);
        }
        if !o.close_position {
            if qty < spec.min_qty.0 {
                return Err(RejectReason::QtyBelowMin);
            }
            if qty > spec.max_qty.0 {
                return Err(RejectReason::QtyAboveMax);
            }
        }
        if reduce_only {
            qty = qty.min(position.abs());
        }
        // Price: a limit inside the band; a market order at the band's far edge.
        let (low, high) = band(&spec, mark);
        let limit = match o.order_type {
            OrderType::Limit => {
                if o.price.0 <= 0 {
                    return Err(RejectReason::PriceNotPositive);
                }
                if o.price.0 < low || o.price.0 > high {
                    return Err(RejectReason::PriceOutOfBand);
                }
                o.price.0
            }
            OrderType::Market => match o.side {
                Side::Buy => high,
                Side::Sell => low,
            },
        };
        let (margin_notional, reserved) = if reduce_only {
            (Q::ZERO, Q::ZERO)
        } else {
            self.reservation(&spec, o.account, o.side, qty, limit, mark, replacing)?
        };
        if o.tif == TimeInForce::PostOnly {
            let book = &self.books[o.instrument.0 as usize];
            let takes = match o.side {
                Side::Buy => book.best_ask().is_some_and(|a| a.0 <= limit),
                Side::Sell => book.best_bid().is_some_and(|b| b.0 >= limit),
            };
            if takes {
                return Err(RejectReason::PostOnlyWouldTake);
            }
        }
        let tif = match (o.order_type, o.tif) {
            (OrderType::Market, _) | (_, TimeInForce::Ioc) => Tif::Ioc,
            (_, TimeInForce::Gtc) => Tif::Gtc,
            (_, TimeInForce::Fok) => Tif::Fok,
            (_, TimeInForce::PostOnly) => Tif::PostOnly,
        };
        let taker = Taker {
            order_id: o.order_id,
            account: o.account,
            side: o.side,
            limit: PriceTicks(limit),
            qty: QtyLots(qty),
            tif,
            stp: o.stp,
            reduce_only,
        };
        let order = Order {
            id: o.order_id,
            account: o.account,
            instrument: o.instrument,
            side: o.side,
            reduce_only,
            post_only: o.tif == TimeInForce::PostOnly,
            margin_notional,
            reserved,
            open_notional: Q::ZERO,
        };
        let unfilled = if o.order_type == OrderType::Market {
            CancelReason::PriceBand
        } else {
            CancelReason::Unfilled
        };
        Ok((taker, order, unfilled))
    }

    /// The pre-trade check (docs/MARGIN.md): the exposure-increasing part's IM plus a taker
    /// fee estimate on the whole order must be available. Returns (margin notional, IM).
    #[allow(clippy::too_many_arguments)]
    fn reservation(
        &self,
        spec: &InstrumentSpec,
        account: AccountId,
        side: Side,
        qty: i64,
        limit: i64,
        mark: Price,
        replacing: Option<&Order>,
    ) -> Result<(Q, Q), RejectReason> {
        let limit_price = tick_price(spec, PriceTicks(limit));
        // A buy is valued at max(limit, mark), a sell at its limit (MARGIN §3).
        let margin_price = match side {
            Side::Buy => limit_price.max(mark_q(mark)),
            Side::Sell => limit_price,
        };
        let leverage = self.leverage_of(account, spec);
        // Lots that increase exposure: all of them on the position's side; else what is
        // left after closing the part of the position other orders on this side have not
        // already promised to close.
        let position = self.acct(account).expect("account").lots(spec.id);
        let incr = if position == 0 || (position > 0) == (side == Side::Buy) {
            qty
        } else {
            let promised: i64 = self
                .orders_of(account, spec.id)
                .iter()
                .filter(|o| Some(o.id) != replacing.map(|r| r.id) && o.side == side)
                .map(|o| {
                    self.books[spec.id.0 as usize]
                        .get(o.id)
                        .expect("in book")
                        .open_qty
                        .0
                })
                .sum();
            let closable = (position.abs() - promised).max(0);
            (qty - closable).max(0)
        };
        if incr <= 0 {
            return Ok((Q::ZERO, Q::ZERO));
        }
        let extra = notional(spec, incr, margin_price);
        let exposure = self.exposure(account, spec, extra, replacing.map(|r| r.id));
        if bracket(spec, exposure).max_leverage < leverage {
            return Err(RejectReason::LeverageExceedsBracket);
        }
        // ENGINE ROUNDS: IM up; the fee estimate up.
        let im = up(extra / Q::int(i128::from(leverage)));
        let full = notional(spec, qty, margin_price);
        let fee_estimate = up(full * Q::rate(spec.taker_fee.max(Rate::ZERO)));
        let released = replacing.map_or(Q::ZERO, |r| r.reserved);
        if self.pool(account, spec.settle_asset).available() + released < im + fee_estimate {
            return Err(RejectReason::InsufficientMargin);
        }
        Ok((extra, im))
    }

    fn place_order(&mut self, o: &NewOrder, out: &mut Vec<Event>) -> Res {
        self.user(o.account)?;
        let (taker, order, unfilled) = self.prepare(o, None)?;
        let spec = self.spec(o.instrument)?;
        let accepted = Event::OrderAccepted {
            account: o.account,
            instrument: o.instrument,
            order_id: o.order_id,
            side: o.side,
            price: tick_price(&spec, taker.limit).to_price(),
            qty: lots_q(&spec, taker.qty.0).to_qty(),
        };
        self.execute(&spec, taker, order, Some(accepted), unfilled, None, out)
    }

    /// Match a taker in the reference book and settle everything it did.
    #[allow(clippy::too_many_arguments)]
    fn execute(
        &mut self,
        spec: &InstrumentSpec,
        taker: Taker,
        order: Order,
        accepted: Option<Event>,
        unfilled_reason: CancelReason,
        fee_override: Option<(Rate, AccountId)>,
        out: &mut Vec<Event>,
    ) -> Res {
        let i = spec.id.0 as usize;
        let mut res = MatchResult::new();
        self.books[i]
            .submit(&taker, &mut res)
            .expect("reference book refused a checked order");
        match res.outcome {
            TakerOutcome::PostOnlyRejected => return Err(RejectReason::PostOnlyWouldTake),
            TakerOutcome::FokRejected => return Err(RejectReason::FokCannotFill),
            _ => {}
        }
        out.extend(accepted);
        let qty = |lots: i64| lots_q(spec, lots).to_qty();
        let mut touched: Vec<AccountId> = Vec::new();
        for f in &res.fills {
            let price = tick_price(spec, f.price);
            let (taker_rate, sink) = match fee_override {
                Some((rate, fund)) => (rate, Some(fund)),
                None => (spec.taker_fee, None),
            };
            let (taker_fee, tpnl) = self.settle_side(
                spec,
                taker.account,
                taker.side,
                f.qty.0,
                price,
                taker_rate,
                sink,
            );
            let (maker_fee, mpnl) = self.settle_side(
                spec,
                f.maker_account,
                taker.side.opposite(),
                f.qty.0,
                price,
                spec.maker_fee,
                None,
            );
            out.push(Event::Trade {
                instrument: spec.id,
                price: price.to_price(),
                qty: qty(f.qty.0),
                taker_side: taker.side,
                taker_account: taker.account,
                taker_order: taker.order_id,
                maker_account: f.maker_account,
                maker_order: f.maker_order,
                taker_fee: taker_fee.to_money(),
                maker_fee: maker_fee.to_money(),
                taker_realized_pnl: tpnl.to_money(),
                maker_realized_pnl: mpnl.to_money(),
            });
            self.after_maker_fill(spec, f);
            touched.push(f.maker_account);
        }
        for m in &res.expired_makers {
            self.orders.retain(|o| o.id != m.order_id);
            out.push(Event::OrderCanceled {
                account: m.account,
                order_id: m.order_id,
                open_qty: qty(m.open_qty.0),
                reason: CancelReason::SelfTrade,
            });
        }
        match res.outcome {
            TakerOutcome::Rested { open_qty } => {
                let lev = Q::int(i128::from(self.leverage_of(taker.account, spec)));
                let mut order = order;
                // ENGINE ROUNDS: the margin notional scaled to the rested part, up; the
                // reservation, up.
                order.margin_notional =
                    up(order.margin_notional
                        * Q::new(i128::from(open_qty.0), i128::from(taker.qty.0)));
                order.reserved = up(order.margin_notional / lev);
                order.open_notional = notional(spec, open_qty.0, tick_price(spec, taker.limit));
                // The leg exists from now on (the engine creates it to hold the order).
                self.acct_mut(taker.account).leg_mut(spec);
                self.orders.push(order);
                out.push(Event::OrderRested {
                    order_id: taker.order_id,
                    open_qty: qty(open_qty.0),
                });
            }
            TakerOutcome::Filled => {}
            TakerOutcome::Expired { unfilled } => {
                if unfilled.0 > 0 && taker.order_id.0 < INTERNAL_ORDER_MIN {
                    out.push(Event::OrderCanceled {
                        account: taker.account,
                        order_id: taker.order_id,
                        open_qty: qty(unfilled.0),
                        reason: unfilled_reason,
                    });
                }
            }
            TakerOutcome::SelfTradeExpired { unfilled } => out.push(Event::OrderCanceled {
                account: taker.account,
                order_id: taker.order_id,
                open_qty: qty(unfilled.0),
                reason: CancelReason::SelfTrade,
            }),
            TakerOutcome::PostOnlyRejected | TakerOutcome::FokRejected => unreachable!(),
        }
        if !touched.is_empty() {
            touched.push(taker.account);
        }
        touched.sort();
        touched.dedup();
        for a in touched {
            self.fix_reduce_only(a, spec, out);
            if !self.acct(a).expect("account").system {
                self.cover_deficit(a, spec.settle_asset, out);
            }
        }
        Ok(())
    }

    /// One side of a fill: fee and position. Returns (fee, realized PnL).
    #[allow(clippy::too_many_arguments)]
    fn settle_side(
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
    fn move_position(
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
        if before == 0 || (before > 0) == (d > 0) {
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
        realized
    }

    fn after_maker_fill(&mut self, spec: &InstrumentSpec, f: &Fill) {
        if f.maker_done {
            self.orders.retain(|o| o.id != f.maker_order);
        } else {
            let before = f.maker_remaining.0 + f.qty.0;
            self.resize(spec, f.maker_order, f.price, before, f.maker_remaining.0);
        }
    }

    /// An order's open size went from `before` to `after` in place: scale its reservation.
    fn resize(
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
    fn fix_reduce_only(&mut self, account: AccountId, spec: &InstrumentSpec, out: &mut Vec<Event>) {
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
    fn cover_deficit(&mut self, account: AccountId, asset: AssetId, out: &mut Vec<Event>) {
        let p = self.pool(account, asset);
        if p.cross_positions > 0 || !p.wallet.is_negative() {
            return;
        }
        let k = usize::from(asset.0);
        let amount = -p.wallet;
        self.acct_mut(fund_id(asset)).wallets[k] -= amount;
        self.acct_mut(account).wallets[k] = Q::ZERO;
        out.push(Event::DeficitCovered {
            account,
            asset,
            amount: amount.to_money(),
        });
    }

    fn cancel_one(
        &mut self,
        spec: &InstrumentSpec,
        id: OrderId,
        reason: CancelReason,
        out: &mut Vec<Event>,
    ) {
        let r = self.books[spec.id.0 as usize].cancel(id).expect("in book");
        self.orders.retain(|o| o.id != id);
        out.push(Event::OrderCanceled {
            account: r.account,
            order_id: id,
            open_qty: lots_q(spec, r.open_qty.0).to_qty(),
            reason,
        });
    }

    fn cancel_order(&mut self, account: AccountId, id: OrderId, out: &mut Vec<Event>) -> Res {
        self.user(account)?;
        let o = self.order(id).ok_or(RejectReason::UnknownOrder)?;
        if o.account != account {
            return Err(RejectReason::NotOrderOwner);
        }
        let spec = self.spec(o.instrument)?;
        self.cancel_one(&spec, id, CancelReason::User, out);
        Ok(())
    }

    /// Cancel the account's orders on the instruments `filter` accepts: by instrument,
    /// then by order id.
    fn cancel_where(
        &mut self,
        account: AccountId,
        filter: impl Fn(&InstrumentSpec) -> bool,
        reason: CancelReason,
        out: &mut Vec<Event>,
    ) {
        for spec in self.cfg.instruments.clone() {
            if filter(&spec) {
                for o in self.orders_of(account, spec.id) {
                    self.cancel_one(&spec, o.id, reason, out);
                }
            }
        }
    }

    fn cancel_all(
        &mut self,
        account: AccountId,
        instrument: Option<InstrumentId>,
        out: &mut Vec<Event>,
    ) -> Res {
        self.user(account)?;
        if let Some(i) = instrument {
            self.spec(i)?;
        }
        self.cancel_where(
            account,
            |s| instrument.is_none_or(|i| s.id == i),
            CancelReason::User,
            out,
        );
        Ok(())
    }

    fn amend_order(
        &mut self,
        account: AccountId,
        id: OrderId,
        price: Option<PriceTicks>,
        qty: Option<QtyLots>,
        out: &mut Vec<Event>,
    ) -> Res {
        self.user(account)?;
        let o = self.order(id).ok_or(RejectReason::UnknownOrder)?.clone();
        if o.account != account {
            return Err(RejectReason::NotOrderOwner);
        }
        let spec = self.spec(o.instrument)?;
        let r = *self.books[spec.id.0 as usize].get(id).expect("in book");
        let new_price = price.unwrap_or(r.price);
        let new_qty = qty.unwrap_or(r.open_qty);
        if new_price == r.price && new_qty == r.open_qty {
            return Err(RejectReason::AmendNoChange);
        }
        if new_qty.0 <= 0 {
            return Err(RejectReason::QtyNotPositive);
        }
        if new_price == r.price && new_qty < r.open_qty {
            // Size down at the same price keeps priority.
            self.books[spec.id.0 as usize]
                .reduce_qty(id, new_qty)
                .expect("reduce");
            self.resize(&spec, id, r.price, r.open_qty.0, new_qty.0);
            out.push(Event::OrderAmended {
                order_id: id,
                price: tick_price(&spec, new_price).to_price(),
                open_qty: lots_q(&spec, new_qty.0).to_qty(),
                priority_kept: true,
            });
            return Ok(());
        }
        if o.reduce_only {
            let pos = self.acct(account).expect("account").lots(spec.id).abs();
            if new_qty.0 > pos {
                return Err(RejectReason::AmendIncreasesReduceOnly);
            }
        }
        // Loses its place: re-checked as a new GTC (or post-only) limit order with the old
        // reservation free; cancelled and re-submitted only if the check passes.
        let amended = NewOrder {
            account,
            instrument: o.instrument,
            order_id: id,
            side: o.side,
            order_type: OrderType::Limit,
            tif: if o.post_only {
                TimeInForce::PostOnly
            } else {
                TimeInForce::Gtc
            },
            price: new_price,
            qty: new_qty,
            reduce_only: o.reduce_only,
            close_position: false,
            stp: StpMode::default(),
        };
        let (taker, order, unfilled) = self.prepare(&amended, Some(&o))?;
        self.books[spec.id.0 as usize].cancel(id).expect("in book");
        self.orders.retain(|x| x.id != id);
        out.push(Event::OrderAmended {
            order_id: id,
            price: tick_price(&spec, new_price).to_price(),
            open_qty: lots_q(&spec, new_qty.0).to_qty(),
            priority_kept: false,
        });
        let r = self.execute(&spec, taker, order, None, unfilled, None, out);
        assert!(r.is_ok(), "model: a checked amend refused by the book");
        Ok(())
    }

    // ---- marks and liquidation ----

    fn set_mark_price(&mut self, i: InstrumentId, price: Price, out: &mut Vec<Event>) -> Res {
        let spec = self.spec(i)?;
        check_price(price)?;
        if price < spec.tick_size {
            return Err(RejectReason::PriceBelowTick);
        }
        self.marks[i.0 as usize] = Some(price);
        out.push(Event::MarkPriceSet {
            instrument: i,
            price,
        });
        // The holders when the tick arrived, by account id (MARGIN §7).
        let mut holders: Vec<AccountId> = self
            .accounts
            .iter()
            .filter(|a| a.lots(i) != 0)
            .map(|a| a.id)
            .collect();
        holders.sort();
        for id in holders {
            self.check_holder(&spec, id, out);
        }
        Ok(())
    }

    fn check_holder(&mut self, spec: &InstrumentSpec, id: AccountId, out: &mut Vec<Event>) {
        let a = self.acct(id).expect("account");
        let Some(leg) = a.leg(spec.id) else { return };
        if a.system || leg.lots == 0 {
            return;
        }
        let mark = self.marks[spec.id.0 as usize].expect("mark");
        if leg.mode == MarginMode::Isolated {
            if leg.isolated_liquidatable(spec, mark) {
                self.liquidate_isolated(id, spec, out);
            }
        } else if self.pool(id, spec.settle_asset).liquidatable() {
            self.liquidate_cross(id, spec.settle_asset, out);
        }
    }

    fn liquidate_isolated(&mut self, id: AccountId, spec: &InstrumentSpec, out: &mut Vec<Event>) {
        let mark = self.marks[spec.id.0 as usize].expect("mark");
        let leg = self
            .acct(id)
            .expect("account")
            .leg(spec.id)
            .expect("leg")
            .clone();
        out.push(Event::LiquidationTriggered {
            account: id,
            instrument: Some(spec.id),
            settle_asset: spec.settle_asset,
            margin_balance: (leg.isolated_margin + leg.upnl(spec, mark)).to_money(),
            maintenance_margin: leg.mm(spec, mark).to_money(),
        });
        self.cancel_where(id, |s| s.id == spec.id, CancelReason::Liquidation, out);
        self.partial_liquidation(id, spec, out);
        let leg = self.acct(id).expect("account").leg(spec.id).expect("leg");
        if leg.isolated_liquidatable(spec, mark) {
            self.take_over(id, spec, out);
        }
    }

    fn liquidate_cross(&mut self, id: AccountId, asset: AssetId, out: &mut Vec<Event>) {
        let p = self.pool(id, asset);
        out.push(Event::LiquidationTriggered {
            account: id,
            instrument: None,
            settle_asset: asset,
            margin_balance: p.margin_balance().to_money(),
            maintenance_margin: p.cross_mm.to_money(),
        });
        self.cancel_where(
            id,
            |s| s.settle_asset == asset,
            CancelReason::Liquidation,
            out,
        );
        if !self.pool(id, asset).liquidatable() {
            return;
        }
        if let Some(spec) = self.largest_cross_position(id, asset) {
            self.partial_liquidation(id, &spec, out);
        }
        while self.pool(id, asset).liquidatable() {
            let Some(spec) = self.largest_cross_position(id, asset) else {
                break;
            };
            self.take_over(id, &spec, out);
        }
        self.cover_deficit(id, asset, out);
    }

    /// The cross position with the largest maintenance margin (ties: lowest instrument).
    fn largest_cross_position(&self, id: AccountId, asset: AssetId) -> Option<InstrumentSpec> {
        let a = self.acct(id).expect("account");
        let mut best: Option<(Q, &InstrumentSpec)> = None;
        for spec in self
            .cfg
            .instruments
            .iter()
            .filter(|s| s.settle_asset == asset)
        {
            let Some(leg) = a.leg(spec.id) else { continue };
            if leg.mode != MarginMode::Cross || leg.lots == 0 {
                continue;
            }
            let mm = leg.mm(spec, self.marks[spec.id.0 as usize].expect("mark"));
            if best.is_none_or(|(b, _)| mm > b) {
                best = Some((mm, spec));
            }
        }
        best.map(|(_, s)| s.clone())
    }

    /// `WB + uPnL of the other cross positions` (cross) or `IW` (isolated): the equity the
    /// position has besides its own uPnL (MARGIN §6).
    fn equity_besides(&self, id: AccountId, spec: &InstrumentSpec) -> Q {
        let leg = self.acct(id).expect("account").leg(spec.id).expect("leg");
        if leg.mode == MarginMode::Isolated {
            return leg.isolated_margin;
        }
        let mark = self.marks[spec.id.0 as usize].expect("mark");
        self.pool(id, spec.settle_asset).margin_balance() - leg.upnl(spec, mark)
    }

    /// Bankruptcy price (where equity reaches zero, `(basis − C) / q`) and the worst tick
    /// a closing order may trade at. ENGINE ROUNDS: the price against the account (a
    /// long's up, a short's down) to the price grid, the tick the same way; with no
    /// positive bankruptcy price, the mark.
    fn bankruptcy(&self, id: AccountId, spec: &InstrumentSpec) -> (Q, PriceTicks) {
        let leg = self.acct(id).expect("account").leg(spec.id).expect("leg");
        let mark = self.marks[spec.id.0 as usize].expect("mark");
        let long = leg.lots > 0;
        let exact = (leg.basis - self.equity_besides(id, spec)) / lots_q(spec, leg.lots);
        let on_grid = if long {
            exact.ceil_to(PRICE)
        } else {
            exact.floor_to(PRICE)
        };
        let bp = if on_grid.is_positive() {
            on_grid
        } else {
            mark_q(mark)
        };
        let in_ticks = bp / Q::price(spec.tick_size);
        let ticks = if long {
            in_ticks.ceil_units(1)
        } else {
            in_ticks.floor_units(1)
        };
        (bp, PriceTicks(i64::try_from(ticks.max(1)).expect("ticks")))
    }

    /// MARGIN §7 step 2: a position above the lowest bracket is cut to the next lower
    /// bracket's cap by an IOC order no worse than bankruptcy, paying the liquidation fee.
    fn partial_liquidation(&mut self, id: AccountId, spec: &InstrumentSpec, out: &mut Vec<Event>) {
        let mark = self.marks[spec.id.0 as usize].expect("mark");
        let leg = self
            .acct(id)
            .expect("account")
            .leg(spec.id)
            .expect("leg")
            .clone();
        let n = notional(spec, leg.lots, mark_q(mark));
        let b = spec
            .brackets
            .iter()
            .position(|b| n <= Q::money(b.notional_cap))
            .unwrap_or(spec.brackets.len() - 1);
        if b == 0 {
            return;
        }
        let target = Q::money(spec.brackets[b - 1].notional_cap);
        let per_lot = notional(spec, 1, mark_q(mark));
        let whole = leg.lots.abs();
        // ENGINE ROUNDS: the lots kept, down.
        let keep = if per_lot.is_zero() {
            0
        } else {
            i64::try_from((target / per_lot).floor_units(1).min(i128::from(whole))).expect("lots")
        };
        let reduce = (whole - keep).max(1).min(whole);
        let side = if leg.lots > 0 { Side::Sell } else { Side::Buy };
        let (_, limit) = self.bankruptcy(id, spec);
        if leg.mode == MarginMode::Isolated {
            self.holding_isolated = Some((id, spec.id));
        }
        self.liquidation_order(id, spec, side, reduce, limit, spec.liquidation_fee, out);
        self.holding_isolated = None;
    }

    #[allow(clippy::too_many_arguments)]
    fn liquidation_order(
        &mut self,
        id: AccountId,
        spec: &InstrumentSpec,
        side: Side,
        lots: i64,
        limit: PriceTicks,
        fee_rate: Rate,
        out: &mut Vec<Event>,
    ) {
        let order_id = OrderId(self.next_internal_order);
        self.next_internal_order += 1;
        let taker = Taker {
            order_id,
            account: id,
            side,
            limit,
            qty: QtyLots(lots),
            tif: Tif::Ioc,
            stp: StpMode::ExpireMaker,
            reduce_only: true,
        };
        let order = Order {
            id: order_id,
            account: id,
            instrument: spec.id,
            side,
            reduce_only: true,
            post_only: false,
            margin_notional: Q::ZERO,
            reserved: Q::ZERO,
            open_notional: Q::ZERO,
        };
        let fund = fund_id(spec.settle_asset);
        let r = self.execute(
            spec,
            taker,
            order,
            None,
            CancelReason::Unfilled,
            Some((fee_rate, fund)),
            out,
        );
        assert!(r.is_ok(), "model: an IOC liquidation order refused");
    }

    /// MARGIN §7 step 3: the fund takes the position over at the bankruptcy price after
    /// the liquidation fee (capped by the equity left), then offers what it holds on that
    /// side in the book no worse than bankruptcy.
    fn take_over(&mut self, id: AccountId, spec: &InstrumentSpec, out: &mut Vec<Event>) {
        let settle = usize::from(spec.settle_asset.0);
        let fund = fund_id(spec.settle_asset);
        let mark = self.marks[spec.id.0 as usize].expect("mark");
        let leg = self
            .acct(id)
            .expect("account")
            .leg(spec.id)
            .expect("leg")
            .clone();
        let equity = self.equity_besides(id, spec) + leg.upnl(spec, mark);
        // ENGINE ROUNDS: the liquidation fee, up.
        let fee = up(notional(spec, leg.lots, mark_q(mark)) * Q::rate(spec.liquidation_fee))
            .min(equity.max(Q::ZERO));
        if fee.is_positive() {
            let a = self.acct_mut(id);
            if leg.mode == MarginMode::Isolated {
                a.leg_mut(spec).isolated_margin -= fee;
            } else {
                a.wallets[settle] -= fee;
            }
            self.acct_mut(fund).wallets[settle] += fee;
        }
        let (bp, limit) = self.bankruptcy(id, spec);
        let lots = leg.lots;
        let close = if lots > 0 { Side::Sell } else { Side::Buy };
        self.move_position(id, spec, close, lots.abs(), bp, Q::ZERO);
        self.move_position(fund, spec, close.opposite(), lots.abs(), bp, Q::ZERO);
        out.push(Event::PositionTakenOver {
            account: id,
            instrument: spec.id,
            qty: lots_q(spec, lots).to_qty(),
            bankruptcy_price: bp.to_price(),
            liquidation_fee: fee.to_money(),
        });
        self.cover_deficit(id, spec.settle_asset, out);
        let fund_lots = self.acct(fund).expect("fund").lots(spec.id);
        let reducible = if close == Side::Sell {
            fund_lots.max(0)
        } else {
            (-fund_lots).max(0)
        };
        let work_off = reducible.min(lots.abs());
        if work_off > 0 {
            self.liquidation_order(fund, spec, close, work_off, limit, Rate::ZERO, out);
        }
    }

    // ---- views for the comparison ----

    pub fn fee_income(&self, asset: AssetId) -> Money {
        self.fee_income[usize::from(asset.0)].to_money()
    }

    /// Every account (insurance funds included), by id.
    pub fn account_views(&self) -> Vec<AccountView> {
        let mut v: Vec<AccountView> = self
            .accounts
            .iter()
            .map(|a| {
                let mut legs = Vec::new();
                for spec in &self.cfg.instruments {
                    let orders = self.orders_of(a.id, spec.id);
                    let leg = a
                        .leg(spec.id)
                        .cloned()
                        .unwrap_or_else(|| Leg::new(spec.id, spec));
                    let view = LegView {
                        instrument: spec.id,
                        leverage: leg.leverage,
                        mode: leg.mode,
                        qty: QtyLots(leg.lots),
                        basis: leg.basis.to_money(),
                        isolated_margin: leg.isolated_margin.to_money(),
                        order_margin: orders.iter().map(|o| o.reserved).sum::<Q>().to_money(),
                        order_notional: orders
                            .iter()
                            .map(|o| o.open_notional)
                            .sum::<Q>()
                            .to_money(),
                        open_orders: orders.iter().map(|o| o.id).collect(),
                    };
                    if !view.is_default(spec.max_leverage) {
                        legs.push(view);
                    }
                }
                AccountView {
                    id: a.id,
                    parent: a.parent,
                    system: a.system,
                    wallets: a.wallets.iter().map(|w| w.to_money()).collect(),
                    legs,
                }
            })
            .collect();
        v.sort_by_key(|a| a.id);
        v
    }

    /// Every open order's reservation, by id.
    pub fn order_views(&self) -> Vec<(OrderId, OrderView)> {
        let mut v: Vec<(OrderId, OrderView)> = self
            .orders
            .iter()
            .map(|o| {
                (
                    o.id,
                    OrderView {
                        margin_notional: o.margin_notional.to_money(),
                        reserved: o.reserved.to_money(),
                        open_notional: o.open_notional.to_money(),
                    },
                )
            })
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }

    /// The reference book of `i` (its digest is the engine book's documented encoding).
    pub fn book(&self, i: InstrumentId) -> &RefBook {
        &self.books[i.0 as usize]
    }
}
