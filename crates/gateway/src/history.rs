//! Account trades (`GET /fapi/v1/userTrades`) and income (`GET /fapi/v1/income`): a
//! bounded in-memory history built from the durable events, in the bridge's [`View`].
//!
//! The engine keeps positions and balances, not their history; Binance clients ask for
//! both. Every durable `Trade` gives a trade record to each side (one trade id for both,
//! as on Binance) and income records: `REALIZED_PNL` (when non-zero) and `COMMISSION`
//! (minus the fee, when non-zero). `FundingPaid` gives `FUNDING_FEE` (minus the amount
//! paid), deposits, withdrawals and transfers `TRANSFER`, an auto-deleverage the
//! counterparty's `REALIZED_PNL`, an insurance-fund takeover the liquidation fee as
//! `INSURANCE_CLEAR`, an auto-exchange `AUTO_EXCHANGE` (the sold asset out, the repaid in).
//! Not itemized (no Binance income type, or no amount in the event): interest charged,
//! a deficit covered by the insurance fund, the liquidated side's PnL at a takeover or an
//! auto-deleverage.
//!
//! Ids: trade id = `seq × 1,000,000 + k` for the k-th trade of the command at `seq`
//! ([`crate::publish::trade_id`], the same ids as the streams' `t`), income `tranId` =
//! `seq << 20 | k` per income record: increasing, never reused across restarts (seqs
//! are not), the same for every replay. At most [`TRADES_KEPT`] trade records and
//! [`INCOMES_KEPT`] income records are kept over all accounts, the oldest forgotten
//! first. In memory only: a restart starts with an empty history.
//!
//! Must never: change state the engine owns, or keep more than its bounds.

use crate::auth::Params;
use crate::error::ApiError;
use crate::shape::{money_str, price_str, qty_str};
use crate::view::{OrderRecord, View};
use perpcore_engine::Engine;
use perpcore_types::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};

/// Trade records kept (two per trade: taker and maker).
pub const TRADES_KEPT: usize = 200_000;
/// Income records kept.
pub const INCOMES_KEPT: usize = 200_000;
/// Without `startTime` and `endTime`, the last 7 days (as Binance).
pub const DEFAULT_WINDOW_MS: u64 = 7 * 24 * 3_600_000;

/// One side of one trade.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TradeRecord {
    pub id: u64,
    pub order_id: OrderId,
    pub instrument: InstrumentId,
    pub side: Side,
    pub position_side: PositionSide,
    pub price: Price,
    pub qty: Qty,
    pub realized_pnl: Money,
    /// The fee charged (negative: a rebate), in the settlement asset.
    pub commission: Money,
    pub maker: bool,
    pub time_ms: u64,
}

/// Binance's `incomeType`s that perpcore produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncomeType {
    Transfer,
    RealizedPnl,
    FundingFee,
    Commission,
    InsuranceClear,
    AutoExchange,
}

impl IncomeType {
    pub const ALL: [IncomeType; 6] = [
        IncomeType::Transfer,
        IncomeType::RealizedPnl,
        IncomeType::FundingFee,
        IncomeType::Commission,
        IncomeType::InsuranceClear,
        IncomeType::AutoExchange,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            IncomeType::Transfer => "TRANSFER",
            IncomeType::RealizedPnl => "REALIZED_PNL",
            IncomeType::FundingFee => "FUNDING_FEE",
            IncomeType::Commission => "COMMISSION",
            IncomeType::InsuranceClear => "INSURANCE_CLEAR",
            IncomeType::AutoExchange => "AUTO_EXCHANGE",
        }
    }
}

/// One income (cash flow) of an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomeRecord {
    pub tran_id: u64,
    pub kind: IncomeType,
    pub instrument: Option<InstrumentId>,
    pub asset: AssetId,
    /// Positive: into the account.
    pub income: Money,
    pub info: &'static str,
    pub trade_id: Option<u64>,
    pub time_ms: u64,
}

/// Per-account deques under one global bound: `order` lists the account of every kept
/// record oldest first, so the globally oldest record is the front of the front
/// account's deque, and dropping it is O(1).
pub struct Bounded<T> {
    by_account: BTreeMap<AccountId, VecDeque<T>>,
    order: VecDeque<AccountId>,
    cap: usize,
}

impl<T> Bounded<T> {
    pub fn new(cap: usize) -> Self {
        Bounded {
            by_account: BTreeMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }
    pub fn push(&mut self, account: AccountId, rec: T) {
        self.by_account.entry(account).or_default().push_back(rec);
        self.order.push_back(account);
        while self.order.len() > self.cap {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(q) = self.by_account.get_mut(&old) {
                q.pop_front();
                if q.is_empty() {
                    self.by_account.remove(&old);
                }
            }
        }
    }
    pub fn of(&self, account: AccountId) -> Option<&VecDeque<T>> {
        self.by_account.get(&account)
    }
    pub fn len(&self) -> usize {
        self.order.len()
    }
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// The history of every account.
pub struct History {
    pub trades: Bounded<TradeRecord>,
    pub incomes: Bounded<IncomeRecord>,
}

impl Default for History {
    fn default() -> Self {
        History::with_bounds(TRADES_KEPT, INCOMES_KEPT)
    }
}

/// The position a fill of `order` (side `side`) of `account` worked on: `BOTH` in one-way
/// mode; in hedge mode the order record's, or the engine's open order's (from its
/// reduce-only flag), or else that of an order the gateway never saw (a liquidation or
/// ADL order, which only ever reduces).
fn fill_position_side(
    engine: &Engine,
    records: &BTreeMap<OrderId, OrderRecord>,
    account: AccountId,
    order: OrderId,
    side: Side,
) -> PositionSide {
    let mode = engine
        .account(account)
        .map_or(PositionMode::OneWay, |a| a.position_mode);
    if mode == PositionMode::OneWay {
        return PositionSide::Both;
    }
    if let Some(r) = records.get(&order) {
        return r.position_side;
    }
    let reduce_only = engine.order(order).is_none_or(|m| m.reduce_only);
    PositionSide::of_order(mode, side, reduce_only)
}

impl History {
    pub fn with_bounds(trades: usize, incomes: usize) -> History {
        History {
            trades: Bounded::new(trades),
            incomes: Bounded::new(incomes),
        }
    }

    /// Record what one durable command's events say (after the engine applied it; the
    /// order records are those from before its events).
    pub fn on_command(
        &mut self,
        seq: u64,
        ts_ns: u64,
        events: &[Event],
        engine: &Engine,
        records: &BTreeMap<OrderId, OrderRecord>,
    ) {
        let time_ms = ts_ns / 1_000_000;
        let base = seq << 20;
        let (mut trade_k, mut income_k) = (0u64, 0u64);
        let config = engine.config();
        let settle = |i: InstrumentId| config.instruments[i.0 as usize].settle_asset;
        let mut income = |me: &mut History,
                          account: AccountId,
                          kind: IncomeType,
                          instrument: Option<InstrumentId>,
                          asset: AssetId,
                          amount: Money,
                          info: &'static str,
                          trade_id: Option<u64>| {
            if amount.is_zero() {
                return;
            }
            me.incomes.push(
                account,
                IncomeRecord {
                    tran_id: base | income_k,
                    kind,
                    instrument,
                    asset,
                    income: amount,
                    info,
                    trade_id,
                    time_ms,
                },
            );
            income_k += 1;
        };
        for e in events {
            match e {
                Event::Trade {
                    instrument,
                    price,
                    qty,
                    taker_side,
                    taker_account,
                    taker_order,
                    maker_account,
                    maker_order,
                    taker_fee,
                    maker_fee,
                    taker_realized_pnl,
                    maker_realized_pnl,
                } => {
                    let id = crate::publish::trade_id(seq, trade_k);
                    trade_k += 1;
                    let maker_side = match taker_side {
                        Side::Buy => Side::Sell,
                        Side::Sell => Side::Buy,
                    };
                    for (account, order, side, fee, pnl, maker) in [
                        (
                            *taker_account,
                            *taker_order,
                            *taker_side,
                            *taker_fee,
                            *taker_realized_pnl,
                            false,
                        ),
                        (
                            *maker_account,
                            *maker_order,
                            maker_side,
                            *maker_fee,
                            *maker_realized_pnl,
                            true,
                        ),
                    ] {
                        let position_side =
                            fill_position_side(engine, records, account, order, side);
                        self.trades.push(
                            account,
                            TradeRecord {
                                id,
                                order_id: order,
                                instrument: *instrument,
                                side,
                                position_side,
                                price: *price,
                                qty: *qty,
                                realized_pnl: pnl,
                                commission: fee,
                                maker,
                                time_ms,
                            },
                        );
                        let asset = settle(*instrument);
                        let i = Some(*instrument);
                        income(
                            self,
                            account,
                            IncomeType::RealizedPnl,
                            i,
                            asset,
                            pnl,
                            "REALIZED_PNL",
                            Some(id),
                        );
                        income(
                            self,
                            account,
                            IncomeType::Commission,
                            i,
                            asset,
                            -fee,
                            "COMMISSION",
                            Some(id),
                        );
                    }
                }
                Event::FundingPaid {
                    account,
                    instrument,
                    amount,
                    ..
                } => income(
                    self,
                    *account,
                    IncomeType::FundingFee,
                    Some(*instrument),
                    settle(*instrument),
                    -*amount,
                    "FUNDING_FEE",
                    None,
                ),
                Event::Deposited {
                    account,
                    asset,
                    amount,
                    ..
                } => income(
                    self,
                    *account,
                    IncomeType::Transfer,
                    None,
                    *asset,
                    *amount,
                    "DEPOSIT",
                    None,
                ),
                Event::Withdrawn {
                    account,
                    asset,
                    amount,
                    ..
                } => income(
                    self,
                    *account,
                    IncomeType::Transfer,
                    None,
                    *asset,
                    -*amount,
                    "WITHDRAW",
                    None,
                ),
                Event::Transferred {
                    from,
                    to,
                    asset,
                    amount,
                } => {
                    income(
                        self,
                        *from,
                        IncomeType::Transfer,
                        None,
                        *asset,
                        -*amount,
                        "TRANSFER",
                        None,
                    );
                    income(
                        self,
                        *to,
                        IncomeType::Transfer,
                        None,
                        *asset,
                        *amount,
                        "TRANSFER",
                        None,
                    );
                }
                Event::AutoDeleveraged {
                    account,
                    instrument,
                    realized_pnl,
                    ..
                } => income(
                    self,
                    *account,
                    IncomeType::RealizedPnl,
                    Some(*instrument),
                    settle(*instrument),
                    *realized_pnl,
                    "AUTO_DELEVERAGE",
                    None,
                ),
                Event::PositionTakenOver {
                    account,
                    instrument,
                    liquidation_fee,
                    ..
                } => income(
                    self,
                    *account,
                    IncomeType::InsuranceClear,
                    Some(*instrument),
                    settle(*instrument),
                    -*liquidation_fee,
                    "INSURANCE_CLEAR",
                    None,
                ),
                Event::AutoExchanged {
                    account,
                    sold_asset,
                    sold,
                    repaid_asset,
                    repaid,
                    ..
                } => {
                    income(
                        self,
                        *account,
                        IncomeType::AutoExchange,
                        None,
                        *sold_asset,
                        -*sold,
                        "AUTO_EXCHANGE",
                        None,
                    );
                    income(
                        self,
                        *account,
                        IncomeType::AutoExchange,
                        None,
                        *repaid_asset,
                        *repaid,
                        "AUTO_EXCHANGE",
                        None,
                    );
                }
                _ => {}
            }
        }
    }
}

/// Which records of a time-ordered deque to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pick {
    /// The inclusive window, in ms.
    lo: u64,
    hi: u64,
    /// From the window's start (times given) or back from its end (the most recent).
    from_start: bool,
    skip: usize,
    limit: usize,
}

/// `startTime` / `endTime` → an inclusive window, Binance's rules: neither given is the
/// last 7 days up to now; one given spans 7 days from or to it; both may be at most
/// `max_span_ms` apart (`None`: any span).
fn window(p: &Params, now_ms: u64, max_span_ms: Option<u64>) -> Result<(u64, u64, bool), ApiError> {
    let start: Option<u64> = p.optional("startTime")?;
    let end: Option<u64> = p.optional("endTime")?;
    let (lo, hi) = match (start, end) {
        (None, None) => return Ok((now_ms.saturating_sub(DEFAULT_WINDOW_MS), now_ms, false)),
        (Some(s), None) => (s, s.saturating_add(DEFAULT_WINDOW_MS)),
        (None, Some(e)) => (e.saturating_sub(DEFAULT_WINDOW_MS), e),
        (Some(s), Some(e)) => {
            if e < s {
                return Err(ApiError::illegal("endTime", "before startTime"));
            }
            if let Some(max) = max_span_ms {
                if e - s > max {
                    return Err(ApiError::interval_too_long(max / 3_600_000));
                }
            }
            (s, e)
        }
    };
    Ok((lo, hi, true))
}

fn limit_of(p: &Params, default: usize) -> Result<usize, ApiError> {
    let limit: usize = p.optional("limit")?.unwrap_or(default);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::illegal("limit", "must be 1 to 1000"));
    }
    Ok(limit)
}

/// The records of `q` (ordered by time) in the window that `keep` accepts: the first
/// `skip + limit` from its start when `from_start`, else the last `skip + limit` before
/// its end; `skip` of them dropped, the rest in ascending order.
fn select<T>(
    q: &VecDeque<T>,
    time: impl Fn(&T) -> u64,
    pick: Pick,
    keep: impl Fn(&T) -> bool,
) -> Vec<&T> {
    let first = q.partition_point(|r| time(r) < pick.lo);
    let last = q.partition_point(|r| time(r) <= pick.hi);
    let in_range = q.range(first..last.max(first)).filter(|r| keep(r));
    if pick.from_start {
        in_range.skip(pick.skip).take(pick.limit).collect()
    } else {
        let mut v: Vec<&T> = in_range.rev().skip(pick.skip).take(pick.limit).collect();
        v.reverse();
        v
    }
}

fn side_str(s: Side) -> &'static str {
    match s {
        Side::Buy => "BUY",
        Side::Sell => "SELL",
    }
}

pub fn position_side_str(s: PositionSide) -> &'static str {
    match s {
        PositionSide::Both => "BOTH",
        PositionSide::Long => "LONG",
        PositionSide::Short => "SHORT",
    }
}

/// `GET /fapi/v1/userTrades` of `account` on `instrument`: `orderId`, `startTime` /
/// `endTime` (at most 7 days apart), `fromId` (not with times), `limit` (default 500,
/// at most 1000). Ascending by id.
pub fn user_trades(
    view: &View,
    account: AccountId,
    instrument: InstrumentId,
    p: &Params,
    now_ms: u64,
) -> Result<Value, ApiError> {
    let limit = limit_of(p, 500)?;
    let order: Option<u64> = p.optional("orderId")?;
    let from_id: Option<u64> = p.optional("fromId")?;
    if from_id.is_some() && (p.get("startTime").is_some() || p.get("endTime").is_some()) {
        return Err(ApiError::bad_param_combination());
    }
    let (lo, hi, from_start) = window(p, now_ms, Some(DEFAULT_WINDOW_MS))?;
    let keep =
        |t: &TradeRecord| t.instrument == instrument && order.is_none_or(|o| t.order_id.0 == o);
    let Some(q) = view.history.trades.of(account) else {
        return Ok(json!([]));
    };
    let picked: Vec<&TradeRecord> = match from_id {
        Some(from) => {
            let start = q.partition_point(|t| t.id < from);
            q.range(start..).filter(|t| keep(t)).take(limit).collect()
        }
        None => {
            let pick = Pick {
                lo,
                hi,
                from_start,
                skip: 0,
                limit,
            };
            select(q, |t| t.time_ms, pick, keep)
        }
    };
    let config = view.engine.config();
    let spec = &config.instruments[instrument.0 as usize];
    let asset = &config.assets[spec.settle_asset.0 as usize].symbol;
    Ok(json!(picked
        .into_iter()
        .map(|t| {
            // price × qty: Price 10^8 × Qty 10^8 = scale 10^16, exact.
            let quote = t.price.raw() as i128 * t.qty.raw() as i128;
            json!({
                "buyer": t.side == Side::Buy,
                "commission": money_str(t.commission),
                "commissionAsset": asset,
                "id": t.id,
                "maker": t.maker,
                "orderId": t.order_id.0,
                "price": price_str(spec, t.price),
                "qty": qty_str(spec, t.qty),
                "quoteQty": format_fixed(quote, 16, 0),
                "realizedPnl": money_str(t.realized_pnl),
                "side": side_str(t.side),
                "positionSide": position_side_str(t.position_side),
                "symbol": spec.symbol,
                "time": t.time_ms,
            })
        })
        .collect::<Vec<_>>()))
}

/// `GET /fapi/v1/income` of `account`: `symbol`, `incomeType`, `startTime` / `endTime`,
/// `page` (from 1), `limit` (default 100, at most 1000). Ascending by time.
pub fn income(
    view: &View,
    account: AccountId,
    instrument: Option<InstrumentId>,
    p: &Params,
    now_ms: u64,
) -> Result<Value, ApiError> {
    let limit = limit_of(p, 100)?;
    let page: usize = p.optional("page")?.unwrap_or(1);
    if page == 0 {
        return Err(ApiError::illegal("page", "starts at 1"));
    }
    let kind = match p.get("incomeType") {
        None => None,
        Some(t) => match IncomeType::ALL.iter().find(|k| k.as_str() == t) {
            Some(k) => Some(*k),
            // A Binance type perpcore never produces: none of it.
            None if t.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') => return Ok(json!([])),
            None => return Err(ApiError::illegal("incomeType", "unknown")),
        },
    };
    let (lo, hi, from_start) = window(p, now_ms, None)?;
    let Some(q) = view.history.incomes.of(account) else {
        return Ok(json!([]));
    };
    let keep = |r: &IncomeRecord| {
        kind.is_none_or(|k| r.kind == k) && instrument.is_none_or(|i| r.instrument == Some(i))
    };
    let skip = (page - 1).saturating_mul(limit);
    let pick = Pick {
        lo,
        hi,
        from_start,
        skip,
        limit,
    };
    let picked = select(q, |r| r.time_ms, pick, keep);
    let config = view.engine.config();
    Ok(json!(picked
        .into_iter()
        .map(|r| {
            json!({
                "symbol": r.instrument.map_or(String::new(), |i| config.instruments[i.0 as usize].symbol.clone()),
                "incomeType": r.kind.as_str(),
                "income": money_str(r.income),
                "asset": config.assets[r.asset.0 as usize].symbol,
                "info": r.info,
                "time": r.time_ms,
                "tranId": r.tran_id,
                "tradeId": r.trade_id.map_or(String::new(), |t| t.to_string()),
            })
        })
        .collect::<Vec<_>>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_drops_the_globally_oldest() {
        let mut b = Bounded::new(3);
        b.push(AccountId(1), 1);
        b.push(AccountId(2), 2);
        b.push(AccountId(1), 3);
        b.push(AccountId(2), 4); // drops 1 (account 1's oldest)
        assert_eq!(b.of(AccountId(1)).unwrap(), &VecDeque::from([3]));
        b.push(AccountId(2), 5); // drops 2
        b.push(AccountId(2), 6); // drops 3: account 1 is gone
        assert!(b.of(AccountId(1)).is_none());
        assert_eq!(b.of(AccountId(2)).unwrap(), &VecDeque::from([4, 5, 6]));
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn select_from_start_or_end() {
        let q: VecDeque<u64> = (1..=10).collect();
        let t = |x: &u64| *x * 100;
        let all = |_: &u64| true;
        let p = |from_start, skip, limit| Pick {
            lo: 200,
            hi: 800,
            from_start,
            skip,
            limit,
        };
        // [200, 800]: 2..=8; first three from the start, last three before the end.
        let v: Vec<u64> = select(&q, t, p(true, 0, 3), all)
            .into_iter()
            .copied()
            .collect();
        assert_eq!(v, [2, 3, 4]);
        let v: Vec<u64> = select(&q, t, p(false, 0, 3), all)
            .into_iter()
            .copied()
            .collect();
        assert_eq!(v, [6, 7, 8]);
        // Page 2 of 3 from the start: 5, 6, 7; odd ones only: 3, 5, 7 then 9 is past 800.
        let v: Vec<u64> = select(&q, t, p(true, 3, 3), all)
            .into_iter()
            .copied()
            .collect();
        assert_eq!(v, [5, 6, 7]);
        let v: Vec<u64> = select(&q, t, p(true, 0, 9), |x| x % 2 == 1)
            .into_iter()
            .copied()
            .collect();
        assert_eq!(v, [3, 5, 7]);
        let later = Pick {
            lo: 2000,
            hi: 3000,
            ..p(true, 0, 9)
        };
        assert!(select(&q, t, later, all).is_empty());
    }
}
