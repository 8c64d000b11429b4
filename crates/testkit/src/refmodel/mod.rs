//! A naive reference model of the engine's accounts and risk (issue 14 item 5), compared
//! event for event with `perpcore_engine::Engine` over seeded streams.
//!
//! Owns: a second, independent reading of the ledger, order-acceptance, settlement and
//! liquidation rules of `docs/MARGIN.md` for **single-asset, multi-asset and unified
//! accounts on linear and coin-M (inverse) instruments**, cross and isolated. Every value
//! is an exact rational ([`Q`]); state is a few vectors searched by linear scan
//! (accounts, orders), the books are [`RefBook`]s, and every derived sum (order margin
//! of a leg, a pool, the holders of an instrument) is recomputed from scratch whenever
//! it is needed.
//!
//! Where the engine rounds to its fixed-point grid, the model rounds the same way, at the
//! same point, explicitly through [`up`] / [`down`] (money grid 10^-12) or the price grid,
//! and each such place says so with an `ENGINE ROUNDS:` comment. Anything else is exact.
//!
//! Must never: call the engine or `perpcore-risk`, reuse their data structures or
//! fixed-point helpers, aim for speed, or guess. A command whose outcome depends on
//! something the model does not cover (see [`RefModel::uncovered`]) is reported as
//! [`Step::Uncovered`] and the model does not change, and the comparison of that
//! stream stops there.
//!
//! Covered: create account, deposit, withdraw, transfer (main/sub rules, caps), leverage,
//! margin mode, isolated margin, orders of every type and time in force (pre-trade check,
//! reservation, reduce-only, close-position, STP, amend, cancel), fills with fees and
//! realized PnL, mark/index/funding/reference-price commands, and liquidation of cross
//! and isolated positions (trigger, order cancellation, partial step, takeover by the
//! insurance fund, the fund's work-off order, deficit cover).
//! Coin-M: the basis and realized PnL in coin (`Σ q × CV / p`), IM/MM and fees on the
//! coin notional, orders valued at `min(limit, mark)`, the inverse bankruptcy price.
//! Asset index prices: the USD prices they derive (MARGIN §1) and the refusal of one out
//! of range. Asset-mode switches: R1, the coin-M rule, the new USD pool's check, R2.
//! Multi-asset and unified accounts: the USD pool (tiered collateral with haircuts,
//! liabilities at 100%, IM, MM and order margin in USD) in the pre-trade check,
//! leverage changes, withdrawals and transfers out (unrealized profit left out), the
//! refusal of isolated margin and of coin-M orders in multi-asset mode, no deficit
//! cover, the liquidation check on mark ticks and index updates; loans (MARGIN §8):
//! hourly interest on the principal beyond the interest-free quota at the boundaries of
//! sequenced time and at deposits, repayment (interest first) by deposits, transfers in
//! and realized profit, and the hourly auto-exchange of loans above their threshold.
//! USD pool liquidation: the trigger, cancellation of the pool's orders, the partial
//! step and takeovers of the largest pooled position at the price where adjusted equity
//! reaches zero (a bisection, as the engine's definition), the fee capped by the pool's
//! equity, and with no position left the auto-exchange of every loan and deficit cover.
//! Not covered (reported as uncovered): the fee-to-close convention. Not modelled either,
//! and not reached by the generated streams: funding payments (issue 15).

mod dispatch;
pub mod exact;
mod fills;
mod ledger;
mod liquidation;
mod loans;
mod orders;
mod poolliq;
mod pricing;
mod usd;
mod views;

use crate::refbook::RefBook;
pub use exact::Q;
use perpcore_book::{Fill, MatchResult, Taker, TakerOutcome, Tif};
use perpcore_types::*;
use pricing::*;

/// Raw units of money per unit: the engine's money grid.
const MONEY: i128 = 1_000_000_000_000;
/// Raw units of a price per unit: the engine's price grid.
const PRICE: i128 = 100_000_000;
/// Raw units of an asset index or USD price per unit: the engine's index price grid.
const INDEX_PRICE: i128 = 1_000_000_000_000;
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
    /// The closed share of a position's basis rounded down instead of up (linear; on a
    /// coin-M instrument, up instead of down).
    ClosedBasisRoundsDown,
    /// A coin-M fill's coin value rounded up in magnitude instead of down.
    InverseFillValueRoundsUp,
    /// Collateral counted at its full USD value, without the tiers' haircut.
    NoHaircut,
    /// A loan's hourly interest charged half an hour short (rounded down as well).
    InterestShort,
    /// A USD pool position's bankruptcy price one raw unit on the unhealthy side.
    PoolRootOffByOne,
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
    /// Single-asset, multi-asset or unified (MARGIN §5).
    mode: AssetMode,
    /// Per asset: interest charged and not yet repaid (MARGIN §8).
    interest_owed: Vec<Q>,
    /// Per asset: the first hour slot not yet charged interest.
    next_slot: Vec<u64>,
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
    /// The exchange's conversion desk per asset (auto-exchanges' counterparty).
    conversion_desk: Vec<Q>,
    /// Asset index prices against USDT and USD (MARGIN §1), by asset.
    index_usdt: Vec<Option<IndexPrice>>,
    index_usd: Vec<Option<IndexPrice>>,
    /// Deposits − withdrawals per asset (platform caps).
    net_deposits: Vec<Q>,
    next_internal_order: u64,
    /// While a liquidation order of this isolated position runs, its closing fills keep
    /// the released margin with the position.
    holding_isolated: Option<(AccountId, InstrumentId)>,
    pub perturbation: Perturbation,
    /// The sequenced time of the command being applied, and the first hour slot whose
    /// interest is not yet charged.
    now_ns: u64,
    interest_slot: u64,
}

fn fund_id(asset: AssetId) -> AccountId {
    AccountId(u64::MAX - u64::from(asset.0))
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
                mode: AssetMode::Single,
                interest_owed: vec![Q::ZERO; assets],
                next_slot: vec![0; assets],
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
            conversion_desk: vec![Q::ZERO; assets],
            index_usdt: vec![None; assets],
            index_usd: vec![None; assets],
            net_deposits: vec![Q::ZERO; assets],
            next_internal_order: INTERNAL_ORDER_MIN,
            holding_isolated: None,
            perturbation: Perturbation::None,
            now_ns: 0,
            interest_slot: 0,
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

    /// The single-asset pool of `asset` of `acct` (the account value given, so that a
    /// trial copy can be valued), from scratch: the instruments settling in `asset` that
    /// are not in the account's USD pool.
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
            .filter(|s| s.settle_asset == asset && !pooled(a.mode, s))
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
}
