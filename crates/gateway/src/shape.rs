//! Binance's JSON shapes, built from the view. Decimals are strings, exact (formatted
//! from the fixed-point integers; no float anywhere).
//!
//! Owns: exchangeInfo, depth, order, account and position bodies. Must never: change
//! state (everything here takes `&View`).

use crate::view::{OrderRecord, Status, View};
use perpcore_engine::PositionReport;
use perpcore_types::*;
use serde_json::{json, Value};

/// Binance's `deliveryDate` of a perpetual (2100-12-25 08:00 UTC).
const PERPETUAL_DELIVERY_MS: u64 = 4_133_404_800_000;

/// Decimal places of a step given at `scale` (0.1 at scale 8 → 1).
pub fn step_decimals(raw: i64, scale: u32) -> u32 {
    let mut d = 0;
    while d < scale && raw % 10i64.pow(scale - d) != 0 {
        d += 1;
    }
    d
}

pub fn price_str(spec: &InstrumentSpec, p: Price) -> String {
    format_fixed(
        p.raw() as i128,
        Price::DECIMALS,
        step_decimals(spec.tick_size.raw(), 8),
    )
}
pub fn qty_str(spec: &InstrumentSpec, q: Qty) -> String {
    format_fixed(
        q.raw() as i128,
        Qty::DECIMALS,
        step_decimals(spec.lot_size.raw(), 8),
    )
}
pub fn money_str(m: Money) -> String {
    format_fixed(m.raw(), Money::DECIMALS, 8)
}
pub fn rate_str(r: Rate) -> String {
    format_fixed(r.raw() as i128, Rate::DECIMALS, 4)
}

/// The instruments the USDⓈ-M API shows: linear ones.
pub fn usdm_instruments(config: &Config) -> impl Iterator<Item = &InstrumentSpec> {
    config.instruments.iter().filter(|s| !s.is_inverse())
}

pub fn order_types() -> Value {
    json!([
        "LIMIT",
        "MARKET",
        "STOP",
        "STOP_MARKET",
        "TAKE_PROFIT",
        "TAKE_PROFIT_MARKET",
        "TRAILING_STOP_MARKET"
    ])
}

/// `rateLimits`: what the limiter enforces (`RateLimits::exchange_info`).
pub fn exchange_info(view: &View, now_ms: u64, rate_limits: Value) -> Value {
    let config = view.engine.config();
    let asset = |id: AssetId| config.assets[id.0 as usize].symbol.clone();
    let mut margin_assets: Vec<String> = usdm_instruments(config)
        .map(|s| asset(s.settle_asset))
        .collect();
    margin_assets.sort();
    margin_assets.dedup();
    let symbols: Vec<Value> = usdm_instruments(config)
        .map(|s| {
            let tick = price_str(s, s.tick_size);
            let min_qty = qty_str(s, s.qty_of(s.min_qty));
            let max_qty = qty_str(s, s.qty_of(s.max_qty));
            let step = qty_str(s, s.lot_size);
            json!({
                "symbol": s.symbol,
                "pair": s.symbol,
                "contractType": "PERPETUAL",
                "deliveryDate": PERPETUAL_DELIVERY_MS,
                "onboardDate": 0,
                "status": "TRADING",
                "baseAsset": asset(s.base_asset),
                "quoteAsset": asset(s.quote_asset),
                "marginAsset": asset(s.settle_asset),
                "pricePrecision": step_decimals(s.tick_size.raw(), 8),
                "quantityPrecision": step_decimals(s.lot_size.raw(), 8),
                "baseAssetPrecision": 8,
                "quotePrecision": 8,
                "underlyingType": "COIN",
                "underlyingSubType": [],
                "settlePlan": 0,
                "liquidationFee": rate_str(s.liquidation_fee),
                "marketTakeBound": rate_str(s.price_band),
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "10000000000", "tickSize": tick},
                    {"filterType": "LOT_SIZE", "minQty": min_qty, "maxQty": max_qty, "stepSize": step},
                    {"filterType": "MARKET_LOT_SIZE", "minQty": min_qty, "maxQty": max_qty, "stepSize": step},
                    {"filterType": "MAX_NUM_ORDERS", "limit": s.max_open_orders},
                    // The engine has no minimum notional: zero.
                    {"filterType": "MIN_NOTIONAL", "notional": "0"},
                ],
                "orderTypes": order_types(),
                "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
            })
        })
        .collect();
    json!({
        "timezone": "UTC",
        "serverTime": now_ms,
        "futuresType": "U_MARGINED",
        "rateLimits": rate_limits,
        "exchangeFilters": [],
        "assets": margin_assets.iter().map(|a| json!({"asset": a, "marginAvailable": true, "autoAssetExchange": null})).collect::<Vec<_>>(),
        "symbols": symbols,
    })
}

pub fn depth(view: &View, instrument: InstrumentId, limit: usize) -> Value {
    let spec = &view.engine.config().instruments[instrument.0 as usize];
    let book = view.engine.book(instrument).expect("instrument");
    let side = |s: Side| -> Vec<Value> {
        book.levels(s)
            .take(limit)
            .map(|(p, q)| {
                json!([
                    price_str(spec, spec.price_of(p)),
                    qty_str(spec, spec.qty_of(q))
                ])
            })
            .collect()
    };
    let ms = view.last_ts_ns / 1_000_000;
    json!({
        "lastUpdateId": view.last_seq,
        "E": ms,
        "T": ms,
        "bids": side(Side::Buy),
        "asks": side(Side::Sell),
    })
}

fn side_str(s: Side) -> &'static str {
    match s {
        Side::Buy => "BUY",
        Side::Sell => "SELL",
    }
}

pub fn order(view: &View, id: OrderId, r: &OrderRecord) -> Value {
    let spec = &view.engine.config().instruments[r.instrument.0 as usize];
    serde_json::to_value(order_body(spec, id, r, shown_status(view, id, r))).unwrap_or(Value::Null)
}

/// The status an order's body shows.
pub fn shown_status(view: &View, id: OrderId, r: &OrderRecord) -> Status {
    match r.status {
        // An order whose command is durable but which left no trace as open or done.
        Status::New | Status::PartiallyFilled if !view.is_open(id) && r.executed < r.orig_qty => {
            Status::Expired
        }
        s => s,
    }
}

/// An order's Binance body. Its fields are declared in the order of their names, the
/// order in which serde_json writes a map (`Value`'s objects are sorted maps): the body
/// serialized straight to bytes is the same as its `Value` serialized (a test checks it).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    activate_price: Option<String>,
    avg_price: String,
    client_order_id: &'a str,
    close_position: bool,
    cum_qty: String,
    cum_quote: String,
    executed_qty: String,
    good_till_date: u64,
    order_id: u64,
    orig_qty: String,
    orig_type: &'static str,
    position_side: &'static str,
    price: String,
    price_match: &'static str,
    price_protect: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    price_rate: Option<&'a str>,
    reduce_only: bool,
    self_trade_prevention_mode: &'static str,
    side: &'static str,
    status: &'static str,
    stop_price: String,
    symbol: &'a str,
    time: u64,
    time_in_force: &'static str,
    #[serde(rename = "type")]
    order_type: &'static str,
    update_time: u64,
    working_type: &'static str,
}

/// The body of order `id` (`r`, of instrument `spec`) showing `status`.
pub fn order_body<'a>(
    spec: &'a InstrumentSpec,
    id: OrderId,
    r: &'a OrderRecord,
    status: Status,
) -> OrderBody<'a> {
    let executed = qty_str(spec, r.executed);
    OrderBody {
        activate_price: r
            .callback_rate
            .as_ref()
            .map(|_| price_str(spec, r.stop_price)),
        avg_price: price_str(spec, r.avg_price()),
        client_order_id: &r.client_id,
        close_position: r.close_position,
        cum_qty: executed.clone(),
        cum_quote: format_fixed(r.cum_quote_raw, 16, 0),
        executed_qty: executed,
        good_till_date: 0,
        order_id: id.0,
        orig_qty: qty_str(spec, r.orig_qty),
        orig_type: r.order_type,
        position_side: crate::history::position_side_str(r.position_side),
        price: price_str(spec, r.price),
        price_match: "NONE",
        price_protect: false,
        price_rate: r.callback_rate.as_deref(),
        reduce_only: r.reduce_only,
        self_trade_prevention_mode: r.stp,
        side: side_str(r.side),
        status: status.as_str(),
        stop_price: price_str(spec, r.stop_price),
        symbol: &spec.symbol,
        time: r.time_ms,
        time_in_force: r.tif,
        order_type: r.order_type,
        update_time: r.update_ms,
        working_type: r.working_type,
    }
}

/// An order's record, or one made from the engine's state for an open order the gateway
/// has no record of (placed before a restart): its executed quantity is then unknown
/// and shown as zero, its client id as `perpcore-<id>`.
pub fn record_of(view: &View, id: OrderId) -> Option<OrderRecord> {
    if let Some(r) = view.orders.get(&id) {
        return Some(r.clone());
    }
    let ms = view.last_ts_ns / 1_000_000;
    let base = |account, instrument, side, price, qty, order_type: &'static str| OrderRecord {
        account,
        instrument,
        client_id: format!("perpcore-{}", id.0),
        side,
        order_type,
        tif: "GTC",
        price,
        stop_price: Price::ZERO,
        callback_rate: None,
        orig_qty: qty,
        executed: Qty::ZERO,
        cum_quote_raw: 0,
        reduce_only: false,
        close_position: false,
        position_side: PositionSide::Both,
        working_type: "CONTRACT_PRICE",
        stp: "EXPIRE_TAKER",
        status: Status::New,
        time_ms: ms,
        update_ms: ms,
    };
    if let Some(meta) = view.engine.order(id) {
        let spec = &view.engine.config().instruments[meta.instrument.0 as usize];
        let o = view.engine.book(meta.instrument)?.get(id)?;
        let mut r = base(
            meta.account,
            meta.instrument,
            meta.side,
            spec.price_of(o.price),
            spec.qty_of(o.open_qty),
            "LIMIT",
        );
        r.reduce_only = meta.reduce_only;
        r.position_side = view.position_side_of(meta.account, id, meta.side);
        r.tif = if meta.post_only { "GTX" } else { "GTC" };
        return Some(r);
    }
    let c = view
        .engine
        .conditionals()
        .find(|c| c.order.order_id == id)?;
    let o = &c.order;
    let spec = &view.engine.config().instruments[o.instrument.0 as usize];
    let kind = match o.kind {
        ConditionalKind::StopMarket => "STOP_MARKET",
        ConditionalKind::StopLimit => "STOP",
        ConditionalKind::TakeProfitMarket => "TAKE_PROFIT_MARKET",
        ConditionalKind::TakeProfitLimit => "TAKE_PROFIT",
        ConditionalKind::TrailingStop => "TRAILING_STOP_MARKET",
    };
    let mut r = base(
        o.account,
        o.instrument,
        o.side,
        spec.price_of(o.price),
        spec.qty_of(o.qty),
        kind,
    );
    r.stop_price = o.trigger;
    r.reduce_only = o.reduce_only;
    r.position_side = {
        let mode = view
            .engine
            .account(o.account)
            .map_or(PositionMode::OneWay, |a| a.position_mode);
        PositionSide::of_order(mode, o.side, o.reduce_only || o.close_position)
    };
    r.close_position = o.close_position;
    Some(r)
}

/// The open orders of `account` (optionally of one instrument), in id order.
pub fn open_orders(
    view: &View,
    account: AccountId,
    instrument: Option<InstrumentId>,
) -> Vec<Value> {
    let mut ids: Vec<OrderId> = Vec::new();
    if let Some(a) = view.engine.account(account) {
        for leg in &a.legs {
            if instrument.is_none_or(|i| i == leg.instrument) {
                ids.extend(leg.open_orders.iter().copied());
            }
        }
    }
    ids.extend(
        view.engine
            .conditionals()
            .filter(|c| {
                c.order.account == account && instrument.is_none_or(|i| i == c.order.instrument)
            })
            .map(|c| c.order.order_id),
    );
    ids.sort();
    ids.dedup();
    ids.into_iter()
        .filter_map(|id| record_of(view, id).map(|r| order(view, id, &r)))
        .collect()
}

fn settle_of<'a>(view: &'a View, p: &PositionReport) -> Option<&'a InstrumentSpec> {
    view.engine.config().instrument_by_symbol(&p.instrument)
}

/// GET /fapi/v3/account (v2 has the same fields and more; both are served by this).
pub fn account(view: &View, account: AccountId) -> Option<Value> {
    let report = view.engine.report(account)?;
    let config = view.engine.config();
    let ms = view.last_ts_ns / 1_000_000;
    let mut assets = Vec::new();
    let mut usdt_totals: Option<Value> = None;
    for a in &report.assets {
        let (mut upnl, mut iso) = (Money::ZERO, Money::ZERO);
        for p in &report.positions {
            if let Some(spec) = settle_of(view, p) {
                if config.assets[spec.settle_asset.0 as usize].symbol == a.asset {
                    upnl += p.unrealized_pnl;
                    iso += p.isolated_margin;
                }
            }
        }
        let cross_upnl = a.margin_balance - a.wallet;
        let v = json!({
            "asset": a.asset,
            "walletBalance": money_str(a.wallet + iso),
            "unrealizedProfit": money_str(upnl),
            "marginBalance": money_str(a.margin_balance),
            "maintMargin": money_str(a.maintenance_margin),
            "initialMargin": money_str(a.initial_margin + a.order_margin),
            "positionInitialMargin": money_str(a.initial_margin),
            "openOrderInitialMargin": money_str(a.order_margin),
            "crossWalletBalance": money_str(a.wallet),
            "crossUnPnl": money_str(cross_upnl),
            "availableBalance": money_str(a.available),
            "maxWithdrawAmount": money_str(a.withdrawable),
            "updateTime": ms,
        });
        if a.asset == "USDT" {
            usdt_totals = Some(json!({
                "totalInitialMargin": v["initialMargin"],
                "totalMaintMargin": v["maintMargin"],
                "totalWalletBalance": v["walletBalance"],
                "totalUnrealizedProfit": v["unrealizedProfit"],
                "totalMarginBalance": v["marginBalance"],
                "totalPositionInitialMargin": v["positionInitialMargin"],
                "totalOpenOrderInitialMargin": v["openOrderInitialMargin"],
                "totalCrossWalletBalance": v["crossWalletBalance"],
                "totalCrossUnPnl": v["crossUnPnl"],
                "availableBalance": v["availableBalance"],
                "maxWithdrawAmount": v["maxWithdrawAmount"],
            }));
        }
        assets.push(v);
    }
    let positions: Vec<Value> = report
        .positions
        .iter()
        .filter_map(|p| {
            let spec = settle_of(view, p)?;
            (!spec.is_inverse()).then(|| {
                json!({
                    "symbol": p.instrument,
                    "positionSide": crate::history::position_side_str(p.position_side),
                    "positionAmt": qty_str(spec, p.size),
                    "unrealizedProfit": money_str(p.unrealized_pnl),
                    "isolatedMargin": money_str(p.isolated_margin),
                    "notional": money_str(p.notional),
                    "isolatedWallet": money_str(p.isolated_margin),
                    "initialMargin": money_str(p.initial_margin + p.order_margin),
                    "maintMargin": money_str(p.maintenance_margin),
                    "updateTime": ms,
                })
            })
        })
        .collect();
    let zero = money_str(Money::ZERO);
    let mut v = usdt_totals.unwrap_or_else(|| {
        json!({
            "totalInitialMargin": zero, "totalMaintMargin": zero, "totalWalletBalance": zero,
            "totalUnrealizedProfit": zero, "totalMarginBalance": zero,
            "totalPositionInitialMargin": zero, "totalOpenOrderInitialMargin": zero,
            "totalCrossWalletBalance": zero, "totalCrossUnPnl": zero,
            "availableBalance": zero, "maxWithdrawAmount": zero,
        })
    });
    v["assets"] = json!(assets);
    v["positions"] = json!(positions);
    v["canTrade"] = json!(true);
    v["canDeposit"] = json!(true);
    v["canWithdraw"] = json!(true);
    v["multiAssetsMargin"] = json!(report.asset_mode != AssetMode::Single);
    v["updateTime"] = json!(ms);
    Some(v)
}

/// GET /fapi/v3/positionRisk (with v2's `leverage` and `marginType` as well).
pub fn position_risk(view: &View, account: AccountId, instrument: Option<&str>) -> Option<Value> {
    let report = view.engine.report(account)?;
    let config = view.engine.config();
    let ms = view.last_ts_ns / 1_000_000;
    let out: Vec<Value> = report
        .positions
        .iter()
        .filter(|p| instrument.is_none_or(|s| s == p.instrument))
        .filter_map(|p| {
            let spec = settle_of(view, p)?;
            if spec.is_inverse() {
                return None;
            }
            let opt_price = |x: Option<Price>| price_str(spec, x.unwrap_or(Price::ZERO));
            Some(json!({
                "symbol": p.instrument,
                "positionSide": crate::history::position_side_str(p.position_side),
                "positionAmt": qty_str(spec, p.size),
                "entryPrice": opt_price(p.entry_price),
                "markPrice": opt_price(p.mark_price),
                "unRealizedProfit": money_str(p.unrealized_pnl),
                "liquidationPrice": opt_price(p.liquidation_price_tick),
                "isolatedMargin": money_str(p.isolated_margin),
                "notional": money_str(p.notional),
                "marginAsset": config.assets[spec.settle_asset.0 as usize].symbol,
                "isolatedWallet": money_str(p.isolated_margin),
                "initialMargin": money_str(p.initial_margin + p.order_margin),
                "maintMargin": money_str(p.maintenance_margin),
                "positionInitialMargin": money_str(p.initial_margin),
                "openOrderInitialMargin": money_str(p.order_margin),
                "adl": 0,
                "leverage": p.leverage.to_string(),
                "marginType": match p.mode { MarginMode::Cross => "cross", MarginMode::Isolated => "isolated" },
                "updateTime": ms,
            }))
        })
        .collect();
    Some(json!(out))
}

/// GET /fapi/v1/leverageBracket: the configuration's brackets (numbers as strings).
pub fn leverage_brackets(view: &View, instrument: Option<&InstrumentSpec>) -> Value {
    let one = |s: &InstrumentSpec| {
        json!({
            "symbol": s.symbol,
            "notionalCoef": "1",
            "brackets": s.brackets.iter().enumerate().map(|(i, b)| json!({
                "bracket": i + 1,
                "initialLeverage": b.max_leverage,
                "notionalCap": money_str(b.notional_cap),
                "notionalFloor": money_str(b.notional_floor),
                "maintMarginRatio": rate_str(b.mmr),
                "cum": money_str(b.cum),
            })).collect::<Vec<_>>(),
        })
    };
    match instrument {
        Some(s) => json!([one(s)]),
        None => json!(usdm_instruments(view.engine.config())
            .map(one)
            .collect::<Vec<_>>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_of_steps() {
        // 0.1 at scale 8 is raw 10,000,000: one decimal; 0.001 → 3; 1 → 0.
        assert_eq!(step_decimals(10_000_000, 8), 1);
        assert_eq!(step_decimals(100_000, 8), 3);
        assert_eq!(step_decimals(100_000_000, 8), 0);
        assert_eq!(step_decimals(1, 8), 8);
    }

    /// The order body serialized straight to bytes equals the `Value` the gateway built
    /// before (`json!` of the same fields, a sorted map), with and without the trailing
    /// stop's two fields. The figures: BTCUSDT of the default config (tick 0.1, lot
    /// 0.001); 0.004 of 0.010 filled at 29,000: cum quote 29,000 × 0.004 = 116 (raw at
    /// scale 10^16), average 116 / 0.004 = 29,000.0.
    #[test]
    fn order_body_serializes_as_the_value_did() {
        let config = perpcore_config::default_config();
        let spec = config.instrument_by_symbol("BTCUSDT").unwrap();
        let mut r = OrderRecord {
            account: AccountId(1),
            instrument: spec.id,
            client_id: "c-1".into(),
            side: Side::Buy,
            order_type: "LIMIT",
            tif: "GTC",
            price: Price(29_000 * 100_000_000),
            stop_price: Price::ZERO,
            callback_rate: None,
            orig_qty: Qty(1_000_000),
            executed: Qty(400_000),
            cum_quote_raw: 116 * 10i128.pow(16),
            reduce_only: false,
            close_position: false,
            position_side: PositionSide::Both,
            working_type: "CONTRACT_PRICE",
            stp: "EXPIRE_TAKER",
            status: Status::PartiallyFilled,
            time_ms: 1_700_000_000_000,
            update_ms: 1_700_000_000_500,
        };
        let mut expected = json!({
            "orderId": 42,
            "symbol": "BTCUSDT",
            "status": "PARTIALLY_FILLED",
            "clientOrderId": "c-1",
            "price": "29000.0",
            "avgPrice": "29000.0",
            "origQty": "0.010",
            "executedQty": "0.004",
            "cumQty": "0.004",
            "cumQuote": "116",
            "timeInForce": "GTC",
            "type": "LIMIT",
            "origType": "LIMIT",
            "reduceOnly": false,
            "closePosition": false,
            "side": "BUY",
            "positionSide": "BOTH",
            "stopPrice": "0.0",
            "workingType": "CONTRACT_PRICE",
            "priceProtect": false,
            "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_TAKER",
            "goodTillDate": 0,
            "time": 1_700_000_000_000u64,
            "updateTime": 1_700_000_000_500u64,
        });
        let body = |r: &OrderRecord| {
            serde_json::to_string(&order_body(spec, OrderId(42), r, Status::PartiallyFilled))
                .unwrap()
        };
        assert_eq!(body(&r), serde_json::to_string(&expected).unwrap());
        // A trailing stop: activation 30,000.0, callback 1.5 % as sent.
        r.order_type = "TRAILING_STOP_MARKET";
        r.stop_price = Price(30_000 * 100_000_000);
        r.callback_rate = Some("1.5".into());
        expected["type"] = json!("TRAILING_STOP_MARKET");
        expected["origType"] = json!("TRAILING_STOP_MARKET");
        expected["stopPrice"] = json!("30000.0");
        expected["priceRate"] = json!("1.5");
        expected["activatePrice"] = json!("30000.0");
        assert_eq!(body(&r), serde_json::to_string(&expected).unwrap());
    }
}
