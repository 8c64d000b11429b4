//! The HTTP routes: the public Binance-compatible API and the admin API.
//!
//! Owns: parsing requests into commands or reads, the routers and their layers (body
//! size limit, timeout; rate limits and request metrics from `crate::limits` and
//! `crate::metrics`). Must never: touch the engine except through the bridge.

use crate::auth::{ApiKeys, Params};
use crate::bridge::{Answer, BridgeClient, FinishFn};
use crate::error::ApiError;
use crate::shape;
use crate::view::{OrderRecord, Status, View};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use perpcore_types::*;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Largest request body accepted (bytes); larger is answered 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

pub struct App {
    pub bridge: BridgeClient,
    pub keys: ApiKeys,
    /// SHA-256 of the admin token (compared in constant time).
    pub admin_token_sha256: [u8; 32],
    pub config: Arc<Config>,
    pub limiter: crate::limits::Limiter,
    pub metrics: Arc<crate::metrics::Metrics>,
}

type Shared = Arc<App>;

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn respond(answer: Answer) -> Response {
    match answer {
        Ok(v) => json_response(v),
        Err(e) => e.into_response(),
    }
}

/// A JSON answer, as `Json(v)` makes it (same bytes, `content-type: application/json`),
/// serialized into a buffer the size of an order's answer (~600 bytes) at once, where
/// axum's starts at 128 bytes and grows three times on the way.
fn json_response(v: Value) -> Response {
    let mut buf = Vec::with_capacity(768);
    if serde_json::to_writer(&mut buf, &v).is_err() {
        // Cannot happen for a Value; answered as axum would answer it.
        return Json(v).into_response();
    }
    json_bytes_response(buf)
}

/// An answer of JSON already serialized.
fn json_bytes_response(json: Vec<u8>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        json,
    )
        .into_response()
}

fn layers(router: Router, timeout: Duration) -> Router {
    router
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            MAX_BODY_BYTES,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
}

/// The public API, with `extra`'s routes (the websockets) merged in before the limits,
/// metrics and size/time layers, so that those cover every request, a 404 included.
pub fn public_router(app: Shared, timeout: Duration, extra: Router) -> Router {
    let r = Router::new()
        .route("/fapi/v1/ping", get(|| async { Json(json!({})) }))
        .route(
            "/fapi/v1/time",
            get(|| async { Json(json!({ "serverTime": now_ms() })) }),
        )
        .route("/fapi/v1/exchangeInfo", get(exchange_info))
        .route("/fapi/v1/depth", get(depth))
        .route(
            "/fapi/v1/order",
            get(query_order)
                .post(new_order)
                .put(amend_order)
                .delete(cancel_order),
        )
        .route("/fapi/v1/allOpenOrders", axum::routing::delete(cancel_all))
        .route("/fapi/v1/openOrders", get(open_orders))
        .route("/fapi/v1/leverage", post(leverage))
        .route("/fapi/v1/marginType", post(margin_type))
        .route("/fapi/v1/leverageBracket", get(leverage_bracket))
        .route("/fapi/v2/account", get(account))
        .route("/fapi/v3/account", get(account))
        .route("/fapi/v2/positionRisk", get(position_risk))
        .route("/fapi/v3/positionRisk", get(position_risk))
        .route("/fapi/v1/userTrades", get(user_trades))
        .route("/fapi/v1/income", get(income))
        .route(
            "/fapi/v1/positionSide/dual",
            get(position_mode).post(set_position_mode),
        )
        .with_state(app.clone())
        .merge(extra);
    layers(r, timeout).layer(axum::middleware::from_fn_with_state(
        app,
        crate::limits::guard_public,
    ))
}

/// The admin API, with `extra`'s routes merged in before its layers (as above).
pub fn admin_router(app: Shared, timeout: Duration, extra: Router) -> Router {
    let r = Router::new()
        .route("/admin/v1/account", post(admin_create_account))
        .route("/admin/v1/deposit", post(admin_deposit))
        .route("/admin/v1/withdraw", post(admin_withdraw))
        .route("/admin/v1/markPrice", post(admin_mark_price))
        .route("/admin/v1/report", get(admin_report))
        .route(
            "/metrics",
            get(|State(app): State<Shared>| async move {
                crate::metrics::metrics_response(&app.metrics)
            }),
        )
        .with_state(app.clone())
        .merge(extra);
    layers(r, timeout).layer(axum::middleware::from_fn_with_state(
        app.metrics.clone(),
        crate::metrics::count_admin,
    ))
}

// ---------------------------------------------------------------- public, unsigned

async fn exchange_info(State(app): State<Shared>) -> Response {
    let rate_limits = app.limiter.limits().exchange_info();
    respond(
        app.bridge
            .read(move |v| Ok(shape::exchange_info(v, now_ms(), rate_limits)))
            .await,
    )
}

fn instrument(config: &Config, symbol: &str) -> Result<InstrumentId, ApiError> {
    shape::usdm_instruments(config)
        .find(|s| s.symbol == symbol)
        .map(|s| s.id)
        .ok_or_else(ApiError::invalid_symbol)
}

/// The optional `symbol` parameter: none, or a known instrument (-1121 otherwise).
fn optional_instrument(config: &Config, p: &Params) -> Result<Option<InstrumentId>, ApiError> {
    p.get("symbol").map(|s| instrument(config, s)).transpose()
}

async fn depth(State(app): State<Shared>, RawQuery(q): RawQuery) -> Response {
    let go = async {
        let p = Params::parse(q.as_deref().unwrap_or(""))?;
        depth_of(&app, &p).await
    };
    respond(go.await)
}

/// The book of `symbol`, `limit` levels a side (500 by default).
pub(crate) async fn depth_of(app: &App, p: &Params) -> Answer {
    let i = instrument(&app.config, p.str("symbol")?)?;
    let limit: usize = p.optional("limit")?.unwrap_or(500);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::illegal("limit", "must be 1 to 1000"));
    }
    app.bridge
        .read(move |v| Ok(shape::depth(v, i, limit)))
        .await
}

// ---------------------------------------------------------------- signed

/// The `X-MBX-APIKEY` header alone (the `HeaderMap` extractor would clone every header
/// of every signed request).
pub struct ApiKeyHeader(Option<axum::http::HeaderValue>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ApiKeyHeader {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(ApiKeyHeader(parts.headers.get("X-MBX-APIKEY").cloned()))
    }
}

fn auth(
    app: &App,
    q: &Option<String>,
    key: &ApiKeyHeader,
    body: &Bytes,
) -> Result<(AccountId, Params), ApiError> {
    app.keys.verify(
        key.0.as_ref().map(|h| h.as_bytes()),
        q.as_deref().unwrap_or(""),
        body,
        now_ms(),
    )
}

/// A signed endpoint: `$core` is the call on already authenticated parameters (shared
/// with the WebSocket API, `crate::ws_api`), `$name` its axum handler, which
/// authenticates the request first. `order` before the names: the request counts
/// against the account's order rate limits (once authenticated), the answer carries the
/// counts (`X-MBX-ORDER-COUNT-10S` / `-1M`), and the core gives the answer's JSON
/// already serialized (see [`order_answer`]).
macro_rules! signed {
    ($name:ident => $core:ident, |$app:ident, $acct:ident, $p:ident| $body:expr) => {
        pub(crate) async fn $core($app: &App, $acct: AccountId, $p: Params) -> Answer {
            $body
        }
        signed!($name, |app, account, p| $core(&app, account, p).await);
    };
    ($name:ident, |$app:ident, $acct:ident, $p:ident| $body:expr) => {
        async fn $name(
            State($app): State<Shared>,
            RawQuery(q): RawQuery,
            key: ApiKeyHeader,
            body: Bytes,
        ) -> Response {
            let go = async {
                let ($acct, $p) = auth(&$app, &q, &key, &body)?;
                $body
            };
            respond(go.await)
        }
    };
    (order $name:ident => $core:ident, |$app:ident, $acct:ident, $p:ident| $body:expr) => {
        pub(crate) async fn $core(
            $app: &App,
            $acct: AccountId,
            $p: Params,
        ) -> Result<Vec<u8>, ApiError> {
            $body
        }
        async fn $name(
            State(app): State<Shared>,
            RawQuery(q): RawQuery,
            key: ApiKeyHeader,
            body: Bytes,
        ) -> Response {
            let mut counts = None;
            let go = async {
                let (account, p) = auth(&app, &q, &key, &body)?;
                counts = Some(app.limiter.count_order(account, now_ms())?);
                $core(&app, account, p).await
            };
            let mut response = match go.await {
                Ok(json) => json_bytes_response(json),
                Err(e) => e.into_response(),
            };
            if let Some(c) = counts {
                c.write(response.headers_mut());
            }
            response
        }
    };
}

fn parse_side(p: &Params) -> Result<Side, ApiError> {
    match p.str("side")? {
        "BUY" => Ok(Side::Buy),
        "SELL" => Ok(Side::Sell),
        _ => Err(ApiError::illegal("side", "BUY or SELL")),
    }
}

/// An exact price on the instrument's tick grid.
fn parse_price(spec: &InstrumentSpec, p: &Params, name: &str) -> Result<Price, ApiError> {
    let price = Price::parse(p.str(name)?).map_err(|e| ApiError::illegal(name, e))?;
    if price.raw() % spec.tick_size.raw() != 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            -4014,
            "Price not increased by tick size.",
        ));
    }
    Ok(price)
}

/// An exact quantity in whole lots.
fn parse_lots(spec: &InstrumentSpec, p: &Params, name: &str) -> Result<QtyLots, ApiError> {
    let qty = Qty::parse(p.str(name)?).map_err(|e| ApiError::illegal(name, e))?;
    if qty.raw() % spec.lot_size.raw() != 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            -1111,
            "Precision is over the maximum defined for this asset.",
        ));
    }
    Ok(QtyLots(qty.raw() / spec.lot_size.raw()))
}

fn valid_client_id(c: &str) -> bool {
    (1..=36).contains(&c.len())
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:/_-".contains(&b))
}

/// Why a command about an order failed: not submitted, or rejected by the engine.
fn rejection(outcome: Result<&[Event], ApiError>) -> Option<ApiError> {
    match outcome {
        Err(e) => Some(e),
        Ok(events) => events.iter().find_map(|e| match e {
            Event::Rejected { reason, .. } => Some(ApiError::rejected(*reason)),
            _ => None,
        }),
    }
}

/// The finish of a command about one order: a rejection becomes its Binance error, else
/// the order's body. `forget_on_reject` removes a record the prepare registered.
fn finish_order(id: OrderId, forget_on_reject: bool) -> FinishFn {
    finish_order_with(id, forget_on_reject, move |view, r| {
        Ok(shape::order(view, id, &r))
    })
}

/// A finish of a command about order `id`: a rejection becomes its Binance error (and
/// with `forget_on_reject` the record the prepare registered is removed), else `ok` on
/// the order's record.
fn finish_order_with(
    id: OrderId,
    forget_on_reject: bool,
    ok: impl FnOnce(&View, OrderRecord) -> Answer + Send + 'static,
) -> FinishFn {
    Box::new(
        move |view: &mut View, outcome: Result<&[Event], ApiError>| {
            if let Some(e) = rejection(outcome) {
                if forget_on_reject {
                    view.remove(id);
                }
                return Err(e);
            }
            let r = shape::record_of(view, id)
                .ok_or_else(|| ApiError::internal("order record lost"))?;
            ok(view, r)
        },
    )
}

/// Where [`finish_order_into`] leaves the order's id, record and shown status for the
/// handler.
type OrderSlot = Arc<std::sync::Mutex<Option<(OrderId, OrderRecord, Status)>>>;

/// As [`finish_order`], but the bridge only copies the order's record (and its shown
/// status) into `slot` and answers `null`: the handler builds and serializes the body
/// ([`order_answer`]) on its HTTP worker, so the one bridge thread does not build a
/// `Value` of ~25 owned keys per order that the worker then walks again.
fn finish_order_into(id: OrderId, forget_on_reject: bool, slot: OrderSlot) -> FinishFn {
    finish_order_with(id, forget_on_reject, move |view, r| {
        let status = shape::shown_status(view, id, &r);
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some((id, r, status));
        Ok(Value::Null)
    })
}

/// The answer of a write whose finish was [`finish_order_into`]: the order's body,
/// serialized (the same bytes as `shape::order`'s `Value`).
fn order_answer(config: &Config, answer: Answer, slot: &OrderSlot) -> Result<Vec<u8>, ApiError> {
    answer?;
    let (id, r, status) = slot
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .ok_or_else(|| ApiError::internal("order record lost"))?;
    let spec = &config.instruments[r.instrument.0 as usize];
    let mut buf = Vec::with_capacity(768);
    serde_json::to_writer(&mut buf, &shape::order_body(spec, id, &r, status))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(buf)
}

/// A finish that answers `ok` unless the command was rejected.
fn finish_with(ok: Value) -> FinishFn {
    Box::new(
        move |_view: &mut View, outcome: Result<&[Event], ApiError>| {
            for e in outcome? {
                if let Event::Rejected { reason, .. } = e {
                    return Err(ApiError::rejected(*reason));
                }
            }
            Ok(ok)
        },
    )
}

signed!(order new_order => place_order, |app, account, p| {
    let config = app.config.clone();
    let instrument = instrument(&config, p.str("symbol")?)?;
    let spec = &config.instruments[instrument.0 as usize];
    let side = parse_side(&p)?;
    let position_side = match p.get("positionSide") {
        None => None,
        Some("BOTH") => Some(PositionSide::Both),
        Some("LONG") => Some(PositionSide::Long),
        Some("SHORT") => Some(PositionSide::Short),
        Some(_) => return Err(ApiError::illegal("positionSide", "BOTH, LONG or SHORT")),
    };
    let type_str = p.str("type")?;
    let order_type: &'static str = match type_str {
        "LIMIT" => "LIMIT",
        "MARKET" => "MARKET",
        "STOP" => "STOP",
        "STOP_MARKET" => "STOP_MARKET",
        "TAKE_PROFIT" => "TAKE_PROFIT",
        "TAKE_PROFIT_MARKET" => "TAKE_PROFIT_MARKET",
        "TRAILING_STOP_MARKET" => "TRAILING_STOP_MARKET",
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                -1116,
                "Invalid orderType.",
            ))
        }
    };
    let has_limit = matches!(order_type, "LIMIT" | "STOP" | "TAKE_PROFIT");
    let (tif, tif_str) = match (has_limit, p.get("timeInForce").unwrap_or("GTC")) {
        (false, _) => (TimeInForce::Gtc, "GTC"),
        (true, "GTC") => (TimeInForce::Gtc, "GTC"),
        (true, "IOC") => (TimeInForce::Ioc, "IOC"),
        (true, "FOK") => (TimeInForce::Fok, "FOK"),
        (true, "GTX") => (TimeInForce::PostOnly, "GTX"),
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                -1115,
                "Invalid timeInForce.",
            ))
        }
    };
    let close_position = p.flag("closePosition")?;
    let reduce_only_sent = p.flag("reduceOnly")?;
    let qty = if close_position {
        QtyLots(0)
    } else {
        parse_lots(spec, &p, "quantity")?
    };
    let price = if has_limit {
        parse_price(spec, &p, "price")?
    } else {
        Price::ZERO
    };
    let ticks = PriceTicks(price.raw() / spec.tick_size.raw());
    let (working, working_str) = match p.get("workingType").unwrap_or("CONTRACT_PRICE") {
        "CONTRACT_PRICE" => (WorkingPrice::LastTrade, "CONTRACT_PRICE"),
        "MARK_PRICE" => (WorkingPrice::Mark, "MARK_PRICE"),
        _ => {
            return Err(ApiError::illegal(
                "workingType",
                "MARK_PRICE or CONTRACT_PRICE",
            ))
        }
    };
    let (stp, stp_str) = match p.get("selfTradePreventionMode").unwrap_or("EXPIRE_TAKER") {
        "EXPIRE_TAKER" => (StpMode::ExpireTaker, "EXPIRE_TAKER"),
        "EXPIRE_MAKER" => (StpMode::ExpireMaker, "EXPIRE_MAKER"),
        "EXPIRE_BOTH" => (StpMode::ExpireBoth, "EXPIRE_BOTH"),
        _ => {
            return Err(ApiError::unsupported(
                "selfTradePreventionMode other than EXPIRE_*",
            ))
        }
    };
    let client_id = p.get("newClientOrderId").map(str::to_string);
    if let Some(c) = &client_id {
        if !valid_client_id(c) {
            return Err(ApiError::illegal(
                "newClientOrderId",
                "1 to 36 of [.A-Za-z0-9:/_-]",
            ));
        }
    }
    // The conditional part: kind, trigger, callback rate.
    let conditional = match order_type {
        "LIMIT" | "MARKET" => None,
        "TRAILING_STOP_MARKET" => {
            // callbackRate in percent (1 = 1%): Rate (10^-10) = percent × 10^8.
            let text = p.str("callbackRate")?;
            let raw = parse_decimal(text, 8).map_err(|e| ApiError::illegal("callbackRate", e))?;
            let rate = Rate(
                i64::try_from(raw)
                    .map_err(|_| ApiError::illegal("callbackRate", "out of range"))?,
            );
            let trigger = match p.get("activationPrice") {
                Some(_) => parse_price(spec, &p, "activationPrice")?,
                None => Price::ZERO,
            };
            Some((
                ConditionalKind::TrailingStop,
                trigger,
                rate,
                Some(text.to_string()),
            ))
        }
        t => {
            let kind = match t {
                "STOP" => ConditionalKind::StopLimit,
                "STOP_MARKET" => ConditionalKind::StopMarket,
                "TAKE_PROFIT" => ConditionalKind::TakeProfitLimit,
                _ => ConditionalKind::TakeProfitMarket,
            };
            Some((kind, parse_price(spec, &p, "stopPrice")?, Rate::ZERO, None))
        }
    };
    let slot = OrderSlot::default();
    let slot_of_finish = Arc::clone(&slot);
    let answer = app
        .bridge
        .write(move |view: &mut View| {
            // The account's position mode decides what positionSide must be: absent or
            // BOTH in one-way mode; LONG or SHORT in hedge mode, where it and the side
            // give the reduce-only flag (a SELL of LONG closes it) and reduceOnly itself
            // may not be sent, as on Binance.
            let mode = view
                .engine
                .account(account)
                .map_or(PositionMode::OneWay, |a| a.position_mode);
            let (position_side, reduce_only) = match (mode, position_side) {
                (PositionMode::OneWay, None | Some(PositionSide::Both)) => {
                    (PositionSide::Both, reduce_only_sent || close_position)
                }
                (PositionMode::Hedge, Some(ps @ (PositionSide::Long | PositionSide::Short))) => {
                    if reduce_only_sent {
                        return Err(ApiError::sent_when_not_required("reduceOnly"));
                    }
                    let closing = matches!(
                        (ps, side),
                        (PositionSide::Long, Side::Sell) | (PositionSide::Short, Side::Buy)
                    );
                    if close_position && !closing {
                        return Err(ApiError::illegal(
                            "closePosition",
                            "the side must close the positionSide",
                        ));
                    }
                    (ps, closing)
                }
                _ => return Err(ApiError::position_side_mismatch()),
            };
            if let Some(c) = &client_id {
                if let Some(old) = view.by_client.get(&(account, c.clone())) {
                    if view
                        .orders
                        .get(old)
                        .is_some_and(|r| !r.status.is_terminal())
                    {
                        return Err(ApiError::duplicate_client_id());
                    }
                }
            }
            let id = view.allocate_order_id();
            let ms = now_ms();
            let stop_price = conditional.as_ref().map_or(Price::ZERO, |c| c.1);
            let callback_rate = conditional.as_ref().and_then(|c| c.3.clone());
            view.insert_pending(
                id,
                OrderRecord {
                    account,
                    instrument,
                    client_id: client_id.unwrap_or_else(|| format!("perpcore-{}", id.0)),
                    side,
                    order_type,
                    tif: tif_str,
                    price,
                    stop_price,
                    callback_rate,
                    orig_qty: Qty(qty.0
                        * view.engine.config().instruments[instrument.0 as usize]
                            .lot_size
                            .raw()),
                    executed: Qty::ZERO,
                    cum_quote_raw: 0,
                    reduce_only,
                    close_position,
                    position_side,
                    working_type: working_str,
                    stp: stp_str,
                    status: Status::Pending,
                    time_ms: ms,
                    update_ms: ms,
                },
            );
            let command = match conditional {
                None => Command::PlaceOrder(NewOrder {
                    account,
                    instrument,
                    order_id: id,
                    side,
                    order_type: if order_type == "MARKET" {
                        OrderType::Market
                    } else {
                        OrderType::Limit
                    },
                    tif,
                    price: ticks,
                    qty,
                    reduce_only,
                    close_position,
                    stp,
                }),
                Some((kind, trigger, callback_rate, _)) => {
                    Command::PlaceConditional(ConditionalOrder {
                        account,
                        instrument,
                        order_id: id,
                        side,
                        kind,
                        trigger,
                        callback_rate,
                        working,
                        price: ticks,
                        tif,
                        qty,
                        reduce_only,
                        close_position,
                        stp,
                    })
                }
            };
            Ok((command, finish_order_into(id, true, slot_of_finish)))
        })
        .await;
    order_answer(&config, answer, &slot)
});

/// How [`lookup`] finds an order by its record: durable only ([`View::find`], for
/// reads) or submitted too ([`View::find_submitted`], for a cancel or amend, which the
/// sequencer applies after the order's own command).
type Find = fn(&View, AccountId, Option<u64>, Option<&str>) -> Option<OrderId>;

/// The caller's order named by `orderId` or `origClientOrderId`.
fn lookup(
    view: &View,
    account: AccountId,
    p: &Params,
    find: Find,
    missing: fn() -> ApiError,
) -> Result<OrderId, ApiError> {
    let id: Option<u64> = p.optional("orderId")?;
    let client = p.get("origClientOrderId");
    if id.is_none() && client.is_none() {
        return Err(ApiError::missing("orderId"));
    }
    if let Some(id) = find(view, account, id, client) {
        return Ok(id);
    }
    // An open order placed before a restart: no record, but the engine knows its owner.
    if let Some(id) = id {
        let rec = shape::record_of(view, OrderId(id));
        if rec.is_some_and(|r| r.account == account) {
            return Ok(OrderId(id));
        }
    }
    Err(missing())
}

signed!(query_order => order_status, |app, account, p| {
    instrument(&app.config, p.str("symbol")?)?;
    app.bridge
        .read(move |view| {
            let id = lookup(view, account, &p, View::find, ApiError::order_does_not_exist)?;
            let r = shape::record_of(view, id).ok_or_else(ApiError::order_does_not_exist)?;
            Ok(shape::order(view, id, &r))
        })
        .await
});

signed!(cancel_order => order_cancel, |app, account, p| {
    instrument(&app.config, p.str("symbol")?)?;
    app.bridge
        .write(move |view: &mut View| {
            let id = lookup(view, account, &p, View::find_submitted, ApiError::unknown_order)?;
            if !view.is_open(id) && !view.is_pending(id) {
                return Err(ApiError::unknown_order());
            }
            Ok((
                Command::CancelOrder {
                    account,
                    order_id: id,
                },
                finish_order(id, false),
            ))
        })
        .await
});

signed!(order amend_order => order_modify, |app, account, p| {
    let config = app.config.clone();
    let instrument = instrument(&config, p.str("symbol")?)?;
    let spec = config.instruments[instrument.0 as usize].clone();
    let side = parse_side(&p)?;
    let price = parse_price(&spec, &p, "price")?;
    let lots = parse_lots(&spec, &p, "quantity")?;
    let slot = OrderSlot::default();
    let slot_of_finish = Arc::clone(&slot);
    let answer = app
        .bridge
        .write(move |view: &mut View| {
            let id = lookup(view, account, &p, View::find_submitted, ApiError::unknown_order)?;
            let rec = shape::record_of(view, id).ok_or_else(ApiError::unknown_order)?;
            if !view.is_open(id) && !view.is_pending(id) {
                return Err(ApiError::unknown_order());
            }
            if rec.side != side {
                return Err(ApiError::illegal("side", "differs from the order's side"));
            }
            // Binance's quantity is the new original quantity; the engine's the new open one.
            let executed_lots = rec.executed.raw() / spec.lot_size.raw();
            let open = QtyLots(lots.0 - executed_lots);
            if open.0 <= 0 {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    -4003,
                    "Quantity less than or equal to zero.",
                ));
            }
            let command = Command::AmendOrder {
                account,
                order_id: id,
                price: Some(PriceTicks(price.raw() / spec.tick_size.raw())),
                qty: Some(open),
            };
            Ok((command, finish_order_into(id, false, slot_of_finish)))
        })
        .await;
    order_answer(&config, answer, &slot)
});

signed!(cancel_all, |app, account, p| {
    let instrument = instrument(&app.config, p.str("symbol")?)?;
    app.bridge
        .write(move |_view: &mut View| {
            Ok((
                Command::CancelAll {
                    account,
                    instrument: Some(instrument),
                },
                finish_with(
                    json!({"code": 200, "msg": "The operation of cancel all open order is done."}),
                ),
            ))
        })
        .await
});

signed!(open_orders => open_orders_status, |app, account, p| {
    let instrument = optional_instrument(&app.config, &p)?;
    app.bridge
        .read(move |view| Ok(json!(shape::open_orders(view, account, instrument))))
        .await
});

signed!(leverage, |app, account, p| {
    let config = app.config.clone();
    let instrument = instrument(&config, p.str("symbol")?)?;
    let leverage: u32 = p.required("leverage")?;
    let spec = &config.instruments[instrument.0 as usize];
    // The largest notional a position may have at this leverage: the highest cap among
    // the brackets that allow it.
    let max_notional = spec
        .brackets
        .iter()
        .filter(|b| b.max_leverage >= leverage)
        .map(|b| b.notional_cap)
        .max()
        .unwrap_or(Money::ZERO);
    let ok = json!({
        "leverage": leverage,
        "maxNotionalValue": shape::money_str(max_notional),
        "symbol": spec.symbol,
    });
    app.bridge
        .write(move |_view: &mut View| {
            Ok((
                Command::SetLeverage {
                    account,
                    instrument,
                    leverage,
                },
                finish_with(ok),
            ))
        })
        .await
});

signed!(margin_type, |app, account, p| {
    let instrument = instrument(&app.config, p.str("symbol")?)?;
    let mode = match p.str("marginType")? {
        "ISOLATED" => MarginMode::Isolated,
        "CROSSED" | "CROSS" => MarginMode::Cross,
        _ => return Err(ApiError::illegal("marginType", "ISOLATED or CROSSED")),
    };
    app.bridge
        .write(move |view: &mut View| {
            let current = view
                .engine
                .account(account)
                .and_then(|a| a.legs_of(instrument).next())
                .map_or(MarginMode::default(), |l| l.mode);
            if view.engine.account(account).is_some() && current == mode {
                return Err(ApiError::no_need_margin_type());
            }
            Ok((
                Command::SetMarginMode {
                    account,
                    instrument,
                    mode,
                },
                finish_with(json!({"code": 200, "msg": "success"})),
            ))
        })
        .await
});

signed!(leverage_bracket, |app, _account, p| {
    let spec =
        optional_instrument(&app.config, &p)?.map(|i| app.config.instruments[i.0 as usize].clone());
    app.bridge
        .read(move |view| Ok(shape::leverage_brackets(view, spec.as_ref())))
        .await
});

signed!(account => account_status, |app, account, _p| {
    app.bridge
        .read(move |view| {
            shape::account(view, account)
                .ok_or_else(|| ApiError::rejected(RejectReason::UnknownAccount))
        })
        .await
});

signed!(position_risk => account_position, |app, account, p| {
    let symbol = optional_instrument(&app.config, &p)?
        .map(|i| app.config.instruments[i.0 as usize].symbol.clone());
    app.bridge
        .read(move |view| {
            shape::position_risk(view, account, symbol.as_deref())
                .ok_or_else(|| ApiError::rejected(RejectReason::UnknownAccount))
        })
        .await
});

signed!(user_trades, |app, account, p| {
    let instrument = instrument(&app.config, p.str("symbol")?)?;
    app.bridge
        .read(move |view| crate::history::user_trades(view, account, instrument, &p, now_ms()))
        .await
});

signed!(income, |app, account, p| {
    let instrument = optional_instrument(&app.config, &p)?;
    app.bridge
        .read(move |view| crate::history::income(view, account, instrument, &p, now_ms()))
        .await
});

signed!(position_mode, |app, account, _p| {
    app.bridge
        .read(move |view| {
            let a = view
                .engine
                .account(account)
                .ok_or_else(|| ApiError::rejected(RejectReason::UnknownAccount))?;
            Ok(json!({ "dualSidePosition": a.position_mode == PositionMode::Hedge }))
        })
        .await
});

signed!(set_position_mode, |app, account, p| {
    let mode = if p.flag("dualSidePosition")? {
        PositionMode::Hedge
    } else if p.get("dualSidePosition").is_some() {
        PositionMode::OneWay
    } else {
        return Err(ApiError::missing("dualSidePosition"));
    };
    app.bridge
        .write(move |view: &mut View| {
            if view
                .engine
                .account(account)
                .is_some_and(|a| a.position_mode == mode)
            {
                return Err(ApiError::no_need_position_side());
            }
            Ok((
                Command::SetPositionMode { account, mode },
                finish_with(json!({"code": 200, "msg": "success"})),
            ))
        })
        .await
});

// ---------------------------------------------------------------- admin

fn admin_auth(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    use sha2::Digest as _;
    use subtle::ConstantTimeEq as _;
    let given = headers
        .get("authorization")
        .and_then(|h| h.as_bytes().strip_prefix(b"Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                -2014,
                "missing admin bearer token",
            )
        })?;
    // Hashes of equal length compared in constant time: neither the token nor its
    // length leaks through timing.
    let digest: [u8; 32] = sha2::Sha256::digest(given).into();
    if bool::from(digest.ct_eq(&app.admin_token_sha256)) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            -2015,
            "invalid admin token",
        ))
    }
}

fn json_field<'a>(v: &'a Value, name: &str) -> Result<&'a Value, ApiError> {
    v.get(name)
        .filter(|x| !x.is_null())
        .ok_or_else(|| ApiError::missing(name))
}
fn json_u64(v: &Value, name: &str) -> Result<u64, ApiError> {
    json_field(v, name)?
        .as_u64()
        .ok_or_else(|| ApiError::illegal(name, "an unsigned integer"))
}
pub(crate) fn json_str<'a>(v: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    json_field(v, name)?
        .as_str()
        .ok_or_else(|| ApiError::illegal(name, "a string"))
}

/// Submit an admin command; the answer is its sequence number and events (JSON).
pub(crate) async fn admin_submit(app: &App, command: Command) -> Answer {
    app.bridge
        .write(move |_view: &mut View| {
            let finish: FinishFn =
                Box::new(|view: &mut View, outcome: Result<&[Event], ApiError>| {
                    let events = outcome?;
                    for e in events {
                        if let Event::Rejected { reason, .. } = e {
                            return Err(ApiError::new(
                                StatusCode::BAD_REQUEST,
                                -(reason.code() as i32),
                                format!("perpcore {}: {}", reason.code(), reason.text()),
                            ));
                        }
                    }
                    Ok(json!({ "seq": view.last_seq, "events": events }))
                });
            Ok((command, finish))
        })
        .await
}

pub(crate) async fn admin_body(
    app: &App,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Value, ApiError> {
    admin_auth(app, headers)?;
    serde_json::from_slice(body).map_err(|e| ApiError::illegal("body", e))
}

async fn admin_create_account(
    State(app): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let go = async {
        let v = admin_body(&app, &headers, &body).await?;
        let account = AccountId(json_u64(&v, "account")?);
        let parent = match v.get("parent").filter(|x| !x.is_null()) {
            Some(p) => {
                Some(AccountId(p.as_u64().ok_or_else(|| {
                    ApiError::illegal("parent", "an unsigned integer")
                })?))
            }
            None => None,
        };
        admin_submit(&app, Command::CreateAccount { account, parent }).await
    };
    respond(go.await)
}

fn asset_amount(config: &Config, v: &Value) -> Result<(AssetId, Money), ApiError> {
    let asset = config
        .asset_by_symbol(json_str(v, "asset")?)
        .ok_or_else(|| ApiError::illegal("asset", "unknown asset"))?
        .id;
    let amount =
        Money::parse(json_str(v, "amount")?).map_err(|e| ApiError::illegal("amount", e))?;
    Ok((asset, amount))
}

async fn admin_deposit(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    admin_money(app, headers, body, |account, asset, amount| {
        Command::Deposit {
            account,
            asset,
            amount,
        }
    })
    .await
}

async fn admin_withdraw(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    admin_money(app, headers, body, |account, asset, amount| {
        Command::Withdraw {
            account,
            asset,
            amount,
        }
    })
    .await
}

/// An admin request naming `account`, `asset` and `amount`, as the command `make` builds.
async fn admin_money(
    app: Shared,
    headers: HeaderMap,
    body: Bytes,
    make: fn(AccountId, AssetId, Money) -> Command,
) -> Response {
    let go = async {
        let v = admin_body(&app, &headers, &body).await?;
        let account = AccountId(json_u64(&v, "account")?);
        let (asset, amount) = asset_amount(&app.config, &v)?;
        admin_submit(&app, make(account, asset, amount)).await
    };
    respond(go.await)
}

/// `GET /admin/v1/report?account=N`: the engine's own report of the account (as `perpcore
/// audit` prints it: balances, positions, margin, liquidation prices) as of the last
/// durable command, to check what the Binance-shaped endpoints show against.
async fn admin_report(
    State(app): State<Shared>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let go = async {
        admin_auth(&app, &headers)?;
        let p = Params::parse(q.as_deref().unwrap_or(""))?;
        let account = AccountId(p.required("account")?);
        app.bridge
            .read(move |v| {
                let report = v
                    .engine
                    .report(account)
                    .ok_or_else(|| ApiError::rejected(RejectReason::UnknownAccount))?;
                Ok(json!({ "seq": v.last_seq, "report": report }))
            })
            .await
    };
    respond(go.await)
}

/// Until a market-data feed is wired to `serve`, the operator sets mark prices here.
async fn admin_mark_price(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let go = async {
        let v = admin_body(&app, &headers, &body).await?;
        let instrument = app
            .config
            .instrument_by_symbol(json_str(&v, "symbol")?)
            .ok_or_else(ApiError::invalid_symbol)?
            .id;
        let price =
            Price::parse(json_str(&v, "price")?).map_err(|e| ApiError::illegal("price", e))?;
        admin_submit(&app, Command::SetMarkPrice { instrument, price }).await
    };
    respond(go.await)
}
