//! The user data stream's frames, built on the bridge thread right after a durable
//! command is applied to the replica, for the accounts that have a user stream open (and
//! only those): `ORDER_TRADE_UPDATE` per order event, one `ACCOUNT_UPDATE` per account
//! whose balances or positions the command changed, and `MARGIN_CALL` by the rule of
//! [`MARGIN_CALL_RATIO`]. Field letters as Binance's USDⓈ-M user data stream
//! (docs/GATEWAY.md, "Websocket streams").
//!
//! An order's frames follow its state event by event within the command: the record as
//! it was before the command (taken by [`UserData::before`]) is advanced by each event
//! the way `View` advances it, so a fill and a cancel in one command give two frames with
//! their own quantities.
//!
//! Must never: build a frame for an account that is not watched, or put one account's
//! order into another account's frames.

use crate::publish::trade_id;
use crate::shape::{money_str, price_str, qty_str};
use crate::view::{OrderRecord, Status, View};
use perpcore_types::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// `MARGIN_CALL` is pushed when a margin pool's margin ratio (maintenance margin ÷ margin
/// balance, the engine report's `margin_ratio` of a cross pool or the USD pool, or an
/// isolated position's `isolated_margin_ratio`) is at or above 80% after a durable
/// command, and was below 80% (or not evaluated) after the previous command the stream
/// evaluated for that account: one push per crossing, re-armed when the ratio falls back
/// below 80%. Liquidation starts at 100%. (Rate has 10 decimals: 0.8 = 8 × 10^9.)
pub const MARGIN_CALL_RATIO: Rate = Rate(8_000_000_000);

/// A margin pool a margin call is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Pool {
    Cross(AssetId),
    Usd,
    Isolated(InstrumentId),
}

/// Why a balance changed (Binance's `ACCOUNT_UPDATE` reason `m`).
#[derive(Default)]
struct AccountChange {
    reason: &'static str,
    /// Per asset: the balance change other than PnL and fees (`bc`).
    assets: BTreeMap<AssetId, Money>,
    instruments: BTreeSet<InstrumentId>,
}

impl AccountChange {
    fn reason(&mut self, r: &'static str) {
        if self.reason.is_empty() {
            self.reason = r;
        }
    }
}

/// The user-data side of the bridge's publisher.
#[derive(Default)]
pub(crate) struct UserData {
    /// Accounts with a user stream open.
    watched: BTreeSet<AccountId>,
    /// Records, before the command, of the watched accounts' orders its events name.
    before: BTreeMap<OrderId, OrderRecord>,
    /// Pools in margin call (above the threshold at their last evaluation).
    margin_called: BTreeSet<(AccountId, Pool)>,
}

impl UserData {
    pub(crate) fn set_watched(&mut self, watched: BTreeSet<AccountId>) {
        self.watched = watched;
        let w = &self.watched;
        self.margin_called.retain(|(a, _)| w.contains(a));
    }

    /// Before the replica applies the command: the records of the watched accounts'
    /// orders its events name.
    pub(crate) fn before(&mut self, view: &View, events: &[Event]) {
        self.before.clear();
        if self.watched.is_empty() {
            return;
        }
        for e in events {
            for (account, id) in order_refs(view, e) {
                if self.watched.contains(&account) && !self.before.contains_key(&id) {
                    if let Some(r) = crate::shape::record_of(view, id) {
                        self.before.insert(id, r);
                    }
                }
            }
        }
    }

    /// The private frames of the watched accounts this command touched (none when no
    /// account is watched).
    pub(crate) fn frames(
        &mut self,
        view: &View,
        seq: u64,
        ts_ms: u64,
        events: &[Event],
    ) -> Vec<(AccountId, String)> {
        if self.watched.is_empty() {
            return Vec::new();
        }
        let config = view.engine.config();
        let mut out = Vec::new();
        let mut running: BTreeMap<OrderId, OrderRecord> = BTreeMap::new();
        let mut changes: BTreeMap<AccountId, AccountChange> = BTreeMap::new();
        let mut named: BTreeSet<AccountId> = BTreeSet::new();
        let mut marks_moved: BTreeSet<InstrumentId> = BTreeSet::new();
        fn entry<'a>(
            changes: &'a mut BTreeMap<AccountId, AccountChange>,
            watched: &BTreeSet<AccountId>,
            a: AccountId,
            reason: &'static str,
        ) -> Option<&'a mut AccountChange> {
            if !watched.contains(&a) {
                return None;
            }
            let c = changes.entry(a).or_default();
            c.reason(reason);
            Some(c)
        }
        macro_rules! change {
            ($a:expr, $reason:expr) => {
                entry(&mut changes, &self.watched, $a, $reason)
            };
        }
        let settle = |i: InstrumentId| config.instruments[i.0 as usize].settle_asset;
        let mut trade_k = 0u64;
        for e in events {
            for (a, _) in order_refs(view, e) {
                named.insert(a);
            }
            // Balances and positions.
            match e {
                Event::Deposited {
                    account,
                    asset,
                    amount,
                    ..
                } => {
                    if let Some(c) = change!(*account, "DEPOSIT") {
                        *c.assets.entry(*asset).or_default() += *amount;
                    }
                }
                Event::Withdrawn {
                    account,
                    asset,
                    amount,
                    ..
                } => {
                    if let Some(c) = change!(*account, "WITHDRAW") {
                        *c.assets.entry(*asset).or_default() -= *amount;
                    }
                }
                Event::Transferred {
                    from,
                    to,
                    asset,
                    amount,
                } => {
                    if let Some(c) = change!(*from, "WITHDRAW") {
                        *c.assets.entry(*asset).or_default() -= *amount;
                    }
                    if let Some(c) = change!(*to, "DEPOSIT") {
                        *c.assets.entry(*asset).or_default() += *amount;
                    }
                }
                Event::Trade {
                    instrument,
                    taker_account,
                    maker_account,
                    ..
                } => {
                    for a in [taker_account, maker_account] {
                        if let Some(c) = change!(*a, "ORDER") {
                            c.assets.entry(settle(*instrument)).or_default();
                            c.instruments.insert(*instrument);
                        }
                    }
                }
                Event::PositionTakenOver {
                    account,
                    instrument,
                    ..
                } => {
                    if let Some(c) = change!(*account, "ORDER") {
                        c.assets.entry(settle(*instrument)).or_default();
                        c.instruments.insert(*instrument);
                    }
                }
                Event::AutoDeleveraged {
                    account,
                    liquidated,
                    instrument,
                    ..
                } => {
                    for a in [account, liquidated] {
                        if let Some(c) = change!(*a, "ORDER") {
                            c.assets.entry(settle(*instrument)).or_default();
                            c.instruments.insert(*instrument);
                        }
                    }
                }
                Event::FundingPaid {
                    account,
                    instrument,
                    ..
                } => {
                    let isolated = view
                        .engine
                        .account(*account)
                        .and_then(|a| a.legs_of(*instrument).next())
                        .is_some_and(|l| l.mode == MarginMode::Isolated);
                    if let Some(c) = change!(*account, "FUNDING_FEE") {
                        c.assets.entry(settle(*instrument)).or_default();
                        // Binance: a cross position's funding pushes only the balance.
                        if isolated {
                            c.instruments.insert(*instrument);
                        }
                    }
                }
                Event::MarginModeSet {
                    account,
                    instrument,
                    ..
                } => {
                    if let Some(c) = change!(*account, "MARGIN_TYPE_CHANGE") {
                        c.instruments.insert(*instrument);
                    }
                }
                Event::IsolatedMarginAdjusted {
                    account,
                    instrument,
                    ..
                } => {
                    if let Some(c) = change!(*account, "MARGIN_TRANSFER") {
                        c.assets.entry(settle(*instrument)).or_default();
                        c.instruments.insert(*instrument);
                    }
                }
                Event::DeficitCovered { account, asset, .. } => {
                    if let Some(c) = change!(*account, "INSURANCE_CLEAR") {
                        c.assets.entry(*asset).or_default();
                    }
                }
                Event::InterestCharged { account, asset, .. } => {
                    if let Some(c) = change!(*account, "ADJUSTMENT") {
                        c.assets.entry(*asset).or_default();
                    }
                }
                Event::AutoExchanged {
                    account,
                    sold_asset,
                    repaid_asset,
                    ..
                } => {
                    if let Some(c) = change!(*account, "AUTO_EXCHANGE") {
                        c.assets.entry(*sold_asset).or_default();
                        c.assets.entry(*repaid_asset).or_default();
                    }
                }
                Event::MarkPriceSet { instrument, .. } => {
                    marks_moved.insert(*instrument);
                }
                _ => {}
            }
            // Orders.
            let is_trade = matches!(e, Event::Trade { .. });
            for (account, id) in order_refs(view, e) {
                if !self.watched.contains(&account) {
                    continue;
                }
                let rec = running.entry(id).or_insert_with(|| {
                    self.before
                        .get(&id)
                        .cloned()
                        .unwrap_or_else(|| synthetic_record(view, id, account, e))
                });
                if let Some(frame) = order_update(view, rec, id, e, seq, trade_k, ts_ms) {
                    out.push((account, frame));
                }
            }
            if is_trade {
                trade_k += 1;
            }
        }
        for (account, c) in &changes {
            if let Some(frame) = account_update(view, *account, c, ts_ms) {
                out.push((*account, frame));
            }
        }
        // Margin calls: accounts the command named or whose instruments' marks moved.
        for account in self.watched.clone() {
            let touched = named.contains(&account)
                || changes.contains_key(&account)
                || (!marks_moved.is_empty()
                    && view.engine.account(account).is_some_and(|a| {
                        a.legs
                            .iter()
                            .any(|l| marks_moved.contains(&l.instrument) && !l.is_flat())
                    }));
            if touched {
                if let Some(frame) = self.margin_call(view, account, ts_ms) {
                    out.push((account, frame));
                }
            }
        }
        out
    }

    /// The margin-call frame for `account` if one of its pools crossed the threshold.
    fn margin_call(&mut self, view: &View, account: AccountId, ts_ms: u64) -> Option<String> {
        let report = view.engine.report(account)?;
        let config = view.engine.config();
        let mut over: Vec<Pool> = Vec::new();
        for a in &report.assets {
            if a.margin_ratio.is_some_and(|r| r >= MARGIN_CALL_RATIO) {
                if let Some(asset) = config.asset_by_symbol(&a.asset) {
                    over.push(Pool::Cross(asset.id));
                }
            }
        }
        if report
            .usd_pool
            .as_ref()
            .and_then(|u| u.margin_ratio)
            .is_some_and(|r| r >= MARGIN_CALL_RATIO)
        {
            over.push(Pool::Usd);
        }
        for p in &report.positions {
            if p.isolated_margin_ratio
                .is_some_and(|r| r >= MARGIN_CALL_RATIO)
            {
                if let Some(spec) = config.instrument_by_symbol(&p.instrument) {
                    over.push(Pool::Isolated(spec.id));
                }
            }
        }
        let newly: Vec<Pool> = over
            .iter()
            .copied()
            .filter(|p| !self.margin_called.contains(&(account, *p)))
            .collect();
        self.margin_called
            .retain(|(a, p)| *a != account || over.contains(p));
        for p in &over {
            self.margin_called.insert((account, *p));
        }
        if newly.is_empty() {
            return None;
        }
        // The positions of the pools that crossed.
        let mut positions = Vec::new();
        let mut cross_wallet: Option<Money> = None;
        for p in &report.positions {
            let Some(spec) = config.instrument_by_symbol(&p.instrument) else {
                continue;
            };
            if p.size.is_zero() {
                continue;
            }
            let in_pool = newly.iter().any(|pool| match pool {
                Pool::Cross(asset) => p.mode == MarginMode::Cross && spec.settle_asset == *asset,
                Pool::Usd => p.mode == MarginMode::Cross,
                Pool::Isolated(i) => p.mode == MarginMode::Isolated && spec.id == *i,
            });
            if !in_pool {
                continue;
            }
            if p.mode == MarginMode::Cross {
                let asset = &config.assets[spec.settle_asset.0 as usize].symbol;
                cross_wallet = report
                    .assets
                    .iter()
                    .find(|a| &a.asset == asset)
                    .map(|a| a.wallet);
            }
            positions.push(json!({
                "s": p.instrument,
                "ps": crate::history::position_side_str(p.position_side),
                "pa": qty_str(spec, p.size),
                "mt": if p.mode == MarginMode::Cross { "CROSSED" } else { "ISOLATED" },
                "iw": money_str(p.isolated_margin),
                "mp": p.mark_price.map_or(String::new(), crate::publish::fixed8),
                "up": money_str(p.unrealized_pnl),
                "mm": money_str(p.maintenance_margin),
            }));
        }
        let mut v = json!({
            "e": "MARGIN_CALL",
            "E": crate::http::now_ms(),
            "T": ts_ms,
            "p": positions,
        });
        if let Some(cw) = cross_wallet {
            v["cw"] = json!(money_str(cw));
        }
        Some(v.to_string())
    }
}

/// (account, order id) of the orders an event is about.
fn order_refs(view: &View, e: &Event) -> Vec<(AccountId, OrderId)> {
    let owner = |id: OrderId| -> Option<AccountId> {
        view.orders
            .get(&id)
            .map(|r| r.account)
            .or_else(|| view.engine.order(id).map(|m| m.account))
            .or_else(|| {
                view.engine
                    .conditionals()
                    .find(|c| c.order.order_id == id)
                    .map(|c| c.order.account)
            })
    };
    match e {
        Event::OrderAccepted {
            account, order_id, ..
        }
        | Event::OrderCanceled {
            account, order_id, ..
        }
        | Event::ConditionalPlaced {
            account, order_id, ..
        }
        | Event::ConditionalRejected {
            account, order_id, ..
        } => vec![(*account, *order_id)],
        Event::Trade {
            taker_account,
            taker_order,
            maker_account,
            maker_order,
            ..
        } => vec![
            (*taker_account, *taker_order),
            (*maker_account, *maker_order),
        ],
        Event::OrderAmended { order_id, .. } | Event::OrderReduced { order_id, .. } => {
            owner(*order_id)
                .map(|a| vec![(a, *order_id)])
                .unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// A record for an order the gateway did not place (a liquidation order, or one whose
/// record is gone), from the event that names it.
fn synthetic_record(view: &View, id: OrderId, account: AccountId, e: &Event) -> OrderRecord {
    let ms = view.last_ts_ns / 1_000_000;
    let (instrument, side, price, qty) = match e {
        Event::OrderAccepted {
            instrument,
            side,
            price,
            qty,
            ..
        } => (*instrument, *side, *price, *qty),
        Event::Trade {
            instrument,
            price,
            taker_side,
            taker_order,
            qty,
            ..
        } => {
            let side = if *taker_order == id {
                *taker_side
            } else {
                taker_side.opposite()
            };
            (*instrument, side, *price, *qty)
        }
        _ => (InstrumentId(0), Side::Buy, Price::ZERO, Qty::ZERO),
    };
    let liquidation = id.0 >= perpcore_engine::RESERVED_ORDER_ID_MIN;
    OrderRecord {
        account,
        instrument,
        client_id: if liquidation {
            format!("autoclose-{}", id.0)
        } else {
            format!("perpcore-{}", id.0)
        },
        side,
        order_type: if liquidation { "LIQUIDATION" } else { "LIMIT" },
        tif: if liquidation { "IOC" } else { "GTC" },
        price,
        stop_price: Price::ZERO,
        callback_rate: None,
        orig_qty: qty,
        executed: Qty::ZERO,
        cum_quote_raw: 0,
        reduce_only: liquidation,
        close_position: false,
        position_side: view.position_side_of(account, id, side),
        working_type: "CONTRACT_PRICE",
        stp: "EXPIRE_TAKER",
        status: Status::Pending,
        time_ms: ms,
        update_ms: ms,
    }
}

/// Σ price × open quantity of `account`'s resting orders on `instrument`, per side
/// (Binance's `b` and `a`), scale 10^16.
fn open_notional(view: &View, account: AccountId, instrument: InstrumentId) -> (i128, i128) {
    let (mut bids, mut asks) = (0i128, 0i128);
    let Some(a) = view.engine.account(account) else {
        return (0, 0);
    };
    let spec = &view.engine.config().instruments[instrument.0 as usize];
    let Some(book) = view.engine.book(instrument) else {
        return (0, 0);
    };
    for leg in a.legs_of(instrument) {
        for id in &leg.open_orders {
            if let Some(o) = book.get(*id) {
                let n =
                    spec.price_of(o.price).raw() as i128 * spec.qty_of(o.open_qty).raw() as i128;
                match o.side {
                    Side::Buy => bids += n,
                    Side::Sell => asks += n,
                }
            }
        }
    }
    (bids, asks)
}

/// One `ORDER_TRADE_UPDATE` for `e`, advancing `rec` (the order as of the previous
/// event) to the state after it; `None` for events that do not change what Binance
/// reports (an order coming to rest).
fn order_update(
    view: &View,
    rec: &mut OrderRecord,
    id: OrderId,
    e: &Event,
    seq: u64,
    trade_k: u64,
    ts_ms: u64,
) -> Option<String> {
    let config = view.engine.config();
    let spec = &config.instruments[rec.instrument.0 as usize];
    let liquidation = id.0 >= perpcore_engine::RESERVED_ORDER_ID_MIN;
    let mut last = (Qty::ZERO, Price::ZERO);
    let mut fee: Option<Money> = None;
    let mut realized = Money::ZERO;
    let mut trade = 0u64;
    let mut maker = false;
    let exec: &'static str = match e {
        Event::OrderAccepted { qty, .. } => {
            rec.status = Status::New;
            rec.orig_qty = rec.executed + *qty;
            "NEW"
        }
        Event::ConditionalPlaced { .. } => {
            rec.status = Status::New;
            "NEW"
        }
        Event::Trade {
            price,
            qty,
            taker_order,
            taker_fee,
            maker_fee,
            taker_realized_pnl,
            maker_realized_pnl,
            ..
        } => {
            maker = *taker_order != id;
            rec.executed += *qty;
            rec.cum_quote_raw += price.raw() as i128 * qty.raw() as i128;
            rec.status = if rec.executed >= rec.orig_qty {
                Status::Filled
            } else {
                Status::PartiallyFilled
            };
            last = (*qty, *price);
            fee = Some(if maker { *maker_fee } else { *taker_fee });
            realized = if maker {
                *maker_realized_pnl
            } else {
                *taker_realized_pnl
            };
            trade = trade_id(seq, trade_k);
            if liquidation {
                "CALCULATED"
            } else {
                "TRADE"
            }
        }
        Event::OrderCanceled { reason, .. } => {
            let (status, x) = match reason {
                CancelReason::User
                | CancelReason::Liquidation
                | CancelReason::AutoDeleveraged
                | CancelReason::ReduceOnlyObsolete => (Status::Canceled, "CANCELED"),
                CancelReason::Unfilled | CancelReason::PriceBand | CancelReason::SelfTrade => {
                    (Status::Expired, "EXPIRED")
                }
            };
            rec.status = status;
            x
        }
        Event::OrderAmended {
            price, open_qty, ..
        } => {
            rec.price = *price;
            rec.orig_qty = rec.executed + *open_qty;
            "AMENDMENT"
        }
        Event::OrderReduced { open_qty, .. } => {
            rec.orig_qty = rec.executed + *open_qty;
            "AMENDMENT"
        }
        Event::ConditionalRejected { .. } => {
            rec.status = Status::Expired;
            "EXPIRED"
        }
        _ => return None,
    };
    let avg = rec.avg_price();
    let (bids, asks) = open_notional(view, rec.account, rec.instrument);
    let status = match rec.status {
        Status::Pending => Status::New,
        s => s,
    };
    let mut o = json!({
        "s": spec.symbol,
        "c": rec.client_id,
        "S": match rec.side { Side::Buy => "BUY", Side::Sell => "SELL" },
        "o": rec.order_type,
        "f": rec.tif,
        "q": qty_str(spec, rec.orig_qty),
        "p": price_str(spec, rec.price),
        "ap": price_str(spec, avg),
        "sp": price_str(spec, rec.stop_price),
        "x": exec,
        "X": status.as_str(),
        "i": id.0,
        "l": qty_str(spec, last.0),
        "z": qty_str(spec, rec.executed),
        "L": price_str(spec, last.1),
        "T": ts_ms,
        "t": trade,
        "b": format_fixed(bids, 16, 0),
        "a": format_fixed(asks, 16, 0),
        "m": maker,
        "R": rec.reduce_only,
        "wt": rec.working_type,
        "ot": rec.order_type,
        "ps": crate::history::position_side_str(rec.position_side),
        "cp": rec.close_position,
        "rp": money_str(realized),
        "pP": false,
        "si": 0,
        "ss": 0,
        "V": rec.stp,
        "pm": "NONE",
        "gtd": 0,
    });
    if let Some(fee) = fee {
        o["N"] = json!(config.assets[spec.settle_asset.0 as usize].symbol);
        o["n"] = json!(money_str(fee));
    }
    if let Some(rate) = &rec.callback_rate {
        o["AP"] = json!(price_str(spec, rec.stop_price));
        o["cr"] = json!(rate);
    }
    rec.update_ms = ts_ms;
    Some(
        json!({
            "e": "ORDER_TRADE_UPDATE",
            "E": crate::http::now_ms(),
            "T": ts_ms,
            "o": o,
        })
        .to_string(),
    )
}

/// One `ACCOUNT_UPDATE`: the changed assets' balances and the changed positions, after
/// the command (Binance pushes only what changed).
fn account_update(
    view: &View,
    account: AccountId,
    c: &AccountChange,
    ts_ms: u64,
) -> Option<String> {
    let report = view.engine.report(account)?;
    let config = view.engine.config();
    let balances: Vec<Value> = c
        .assets
        .iter()
        .map(|(asset, bc)| {
            let symbol = &config.assets[asset.0 as usize].symbol;
            let wallet = report
                .assets
                .iter()
                .find(|a| &a.asset == symbol)
                .map_or(Money::ZERO, |a| a.wallet);
            // Binance's wallet balance includes isolated margin; `cw` is the cross part.
            let isolated: Money = report
                .positions
                .iter()
                .filter(|p| {
                    config
                        .instrument_by_symbol(&p.instrument)
                        .is_some_and(|s| s.settle_asset == *asset)
                })
                .map(|p| p.isolated_margin)
                .fold(Money::ZERO, |a, b| a + b);
            json!({
                "a": symbol,
                "wb": money_str(wallet + isolated),
                "cw": money_str(wallet),
                "bc": money_str(*bc),
            })
        })
        .collect();
    let positions: Vec<Value> = c
        .instruments
        .iter()
        .flat_map(|i| {
            let spec = &config.instruments[i.0 as usize];
            // A hedge-mode account's LONG and SHORT legs are two positions; an
            // instrument with no position left is one zero entry.
            let mut legs: Vec<Option<_>> = report
                .positions
                .iter()
                .filter(|p| p.instrument == spec.symbol)
                .map(Some)
                .collect();
            if legs.is_empty() {
                legs.push(None);
            }
            legs.into_iter().map(move |p| {
                let mode = p.map(|p| p.mode).or_else(|| {
                    view.engine
                        .account(account)
                        .and_then(|a| a.legs_of(*i).next())
                        .map(|l| l.mode)
                });
                let entry = p.and_then(|p| p.entry_price).unwrap_or(Price::ZERO);
                json!({
                    "s": spec.symbol,
                    "pa": qty_str(spec, p.map_or(Qty::ZERO, |p| p.size)),
                    "ep": price_str(spec, entry),
                    "bep": price_str(spec, entry),
                    "up": money_str(p.map_or(Money::ZERO, |p| p.unrealized_pnl)),
                    "mt": match mode.unwrap_or_default() { MarginMode::Cross => "cross", MarginMode::Isolated => "isolated" },
                    "iw": money_str(p.map_or(Money::ZERO, |p| p.isolated_margin)),
                    "ps": p.map_or("BOTH", |p| crate::history::position_side_str(p.position_side)),
                })
            })
        })
        .collect();
    Some(
        json!({
            "e": "ACCOUNT_UPDATE",
            "E": crate::http::now_ms(),
            "T": ts_ms,
            "a": { "m": c.reason, "B": balances, "P": positions },
        })
        .to_string(),
    )
}
