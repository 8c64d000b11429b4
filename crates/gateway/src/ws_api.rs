//! The WebSocket API of `perpcore serve`: Binance USDⓈ-M's `/ws-fapi/v1`, where a client
//! sends signed requests as JSON text frames on one connection and gets each answer as
//! a frame, without a new HTTP request per call.
//!
//! A request is `{"id": <int | string | null>, "method": "order.place", "params": {…}}`;
//! its answer `{"id": <same>, "status": 200, "result": {…}, "rateLimits": […]}` or
//! `{"id": …, "status": 400, "error": {"code": -2011, "msg": "…"}, "rateLimits": […]}`.
//! `rateLimits` is left out when the request sends `"returnRateLimits": false`.
//! A signed request carries `apiKey`, `timestamp` (a JSON integer), optionally
//! `recvWindow`, and `signature`: the hex HMAC-SHA256 of every other parameter sorted by
//! name, `name=value` joined by `&` ([`crate::auth::ApiKeys::verify_json`]).
//!
//! Methods, each the same call as its REST endpoint (the same core function in
//! `crate::http`, the same checks, answer body, error codes and request weight):
//!
//! | method | REST twin |
//! |---|---|
//! | `order.place` | `POST /fapi/v1/order` |
//! | `order.modify` | `PUT /fapi/v1/order` |
//! | `order.cancel` | `DELETE /fapi/v1/order` |
//! | `order.status` | `GET /fapi/v1/order` |
//! | `openOrders.status` | `GET /fapi/v1/openOrders` |
//! | `account.status`, `v2/account.status` | `GET /fapi/v2/account` |
//! | `account.position`, `v2/account.position` | `GET /fapi/v2/positionRisk` |
//! | `depth` (unsigned) | `GET /fapi/v1/depth` |
//! | `userDataStream.start`, `.ping`, `.stop` (`apiKey` only) | `POST`, `PUT`, `DELETE /fapi/v1/listenKey` |
//!
//! One connection's requests reach the bridge, and so the sequencer, in the order they
//! were sent: each runs in the reader up to its hand-off to the bridge, and only the wait
//! for its answer runs in a task of its own. Answers go out as soon as they are ready, so
//! they can come in another order than their requests (Binance's clients match them by
//! `id`). A write is answered only
//! once its command is durable, as over REST.
//!
//! Each connection has a reader, which hands each request's wait to a task of its own,
//! and a writer, which writes every answer that is ready in one flush. At most
//! [`MAX_IN_FLIGHT`] requests of a connection are handled or waiting to be written; the
//! reader waits for a free slot before it reads on, so a client that does not read its
//! answers is held back by its own socket and costs a bounded amount of memory. A write
//! that makes no progress for [`WRITE_STALL`] ends the connection. Request weight and
//! order counts are charged to the client's address and account as over REST, with
//! the same limits. The server pings every 3 minutes; a connection silent for 10
//! minutes is closed.
//!
//! Must never: answer a write before its command is durable, act for an account whose
//! key did not sign the request, or let one connection's backlog grow without bound.

use crate::auth::{Param, Params};
use crate::conn::ClientAddr;
use crate::error::ApiError;
use crate::http::{self, now_ms};
use crate::limits::{request_weight, OrderCounts};
use crate::stream::close_frame;
use crate::ws::{WsState, IDLE_LIMIT, PING_EVERY};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use axum::Router;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// The path, as Binance's `wss://ws-fapi.binance.com/ws-fapi/v1`.
pub const PATH: &str = "/ws-fapi/v1";
/// Requests of one connection being handled or answered and not yet written.
pub const MAX_IN_FLIGHT: usize = 1024;
/// A write to the client that makes no progress for this long ends the connection.
pub const WRITE_STALL: Duration = Duration::from_secs(10);
/// Longest request `id` string.
const MAX_ID_CHARS: usize = 64;
/// Answers written with one flush at most.
const BATCH: usize = 256;

/// The routes' state: the websocket options and the app, the server's stop signal, and
/// the sender every connection holds a clone of (the server waits for all to drop).
#[derive(Clone)]
pub struct ApiState {
    ws: Arc<WsState>,
    stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
}

pub fn router(ws: Arc<WsState>, stop: watch::Receiver<bool>, alive: mpsc::Sender<()>) -> Router {
    Router::new()
        .route(PATH, get(upgrade))
        .with_state(ApiState { ws, stop, alive })
}

async fn upgrade(
    State(ApiState { ws, stop, alive }): State<ApiState>,
    ConnectInfo(ClientAddr(addr)): ConnectInfo<ClientAddr>,
    mut req: Request,
) -> Response {
    let accept = match crate::ws::handshake(req.headers()) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let counted = match crate::ws::count_connection(&ws) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let on_upgrade = match crate::ws::take_upgrade(&mut req) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let socket = crate::ws::server_socket(upgraded, &ws.opts).await;
        serve(ws, socket, addr.ip(), stop).await;
        drop(counted);
        drop(alive);
    });
    crate::ws::switching_protocols(accept)
}

/// An answer ready to write, and the slot it holds until it is written.
type Ready = (Utf8Bytes, OwnedSemaphorePermit);

/// Drive one connection until the client leaves, goes silent or stops reading, or the
/// server stops (then the answers in flight are written and the connection closed with
/// 1001).
async fn serve<S>(
    ws: Arc<WsState>,
    socket: WebSocketStream<S>,
    ip: IpAddr,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, mut stream) = socket.split();
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // As many places as slots: a task's send never waits.
    let (tx, rx) = mpsc::channel::<Ready>(MAX_IN_FLIGHT);
    let (done_tx, mut done_rx) = oneshot::channel::<()>();
    let (close_tx, close_rx) = oneshot::channel::<CloseFrame>();
    // Why the server ends the connection, for the writer's close frame (none when the
    // client ended it).
    let mut close_tx = Some(close_tx);
    let mut closing = move |frame: CloseFrame| {
        if let Some(t) = close_tx.take() {
            let _ = t.send(frame);
        }
    };
    let writer = tokio::spawn(write_loop(sink, rx, done_tx, close_rx, ws.opts.close_grace));
    let mut last_heard = Instant::now(); // determinism-ok: the connection's idle timeout only
    loop {
        let idle = tokio::time::sleep_until((last_heard + IDLE_LIMIT).into());
        let msg = tokio::select! {
            m = stream.next() => m,
            _ = &mut done_rx => break,
            _ = idle => {
                closing(close_frame(CloseCode::Policy, "no pong within 10 minutes"));
                break;
            }
            _ = stop.wait_for(|s| *s) => {
                closing(close_frame(CloseCode::Away, "the server is stopping"));
                break;
            }
        };
        last_heard = Instant::now(); // determinism-ok: the connection's idle timeout only
        let text = match msg {
            Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => {
                closing(close_frame(CloseCode::Size, "message too big"));
                break;
            }
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
            Some(Ok(Message::Text(t))) => Some(t),
            Some(Ok(Message::Binary(_))) => None,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
        };
        // A free slot first: a client that does not read its answers stops here.
        let slot = tokio::select! {
            s = Arc::clone(&slots).acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            _ = &mut done_rx => break,
        };
        let ws = Arc::clone(&ws);
        let mut answer = Box::pin(async move {
            match text {
                Some(t) => handle(&ws, ip, t.as_str()).await,
                None => {
                    let e = ApiError::new(
                        axum::http::StatusCode::BAD_REQUEST,
                        -1102,
                        "Malformed request: binary frames are not accepted",
                    );
                    ws.app
                        .metrics
                        .observe_ws_api("malformed", 400, Some(e.code));
                    answer_text(None, Err(e), None)
                }
            }
        });
        // The request runs here, in the reader, up to its first wait: its hand-off to the
        // bridge. So one connection's requests reach the bridge, and the sequencer, in
        // the order they were sent (tasks spawned together may run in any order). Only
        // the wait for the answer goes to a task of its own, which polls it again with
        // its own waker (a future wakes the waker of its latest poll).
        let mut first = std::task::Context::from_waker(std::task::Waker::noop());
        match std::future::Future::poll(answer.as_mut(), &mut first) {
            // As many places as slots, and this one holds a slot: never full.
            std::task::Poll::Ready(text) => {
                let _ = tx.try_send((text.into(), slot));
            }
            std::task::Poll::Pending => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let text = answer.await;
                    let _ = tx.send((text.into(), slot)).await;
                });
            }
        }
    }
    drop(tx);
    drop(closing);
    // The writer ends once every request in flight is answered, or the socket failed.
    let _ = tokio::time::timeout(WRITE_STALL + ws.opts.close_grace, writer).await;
}

/// Write answers as they come, every one already waiting in the same flush.
async fn write_loop<S>(
    mut sink: SplitSink<WebSocketStream<S>, Message>,
    mut rx: mpsc::Receiver<Ready>,
    done: oneshot::Sender<()>,
    close: oneshot::Receiver<CloseFrame>,
    grace: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        let first = tokio::select! {
            r = rx.recv() => match r {
                None => break,
                Some(ready) => Some(ready),
            },
            _ = ping.tick() => None,
        };
        let write = async {
            match first {
                Some((text, slot)) => {
                    sink.feed(Message::Text(text)).await?;
                    drop(slot);
                    for _ in 1..BATCH {
                        let Ok((text, slot)) = rx.try_recv() else {
                            break;
                        };
                        sink.feed(Message::Text(text)).await?;
                        drop(slot);
                    }
                }
                None => sink.feed(Message::Ping(Bytes::new())).await?,
            }
            sink.flush().await
        };
        if !matches!(tokio::time::timeout(WRITE_STALL, write).await, Ok(Ok(()))) {
            let _ = done.send(());
            return;
        }
    }
    // Every answer is written; the reader said why it stopped (or the client closed).
    let frame = close.await.ok();
    let _ = tokio::time::timeout(grace, sink.send(Message::Close(frame))).await;
    let _ = done.send(());
}

/// A method of the WebSocket API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Place,
    Modify,
    Cancel,
    Status,
    OpenOrders,
    AccountStatus,
    AccountPosition,
    Depth,
    StreamStart,
    StreamPing,
    StreamStop,
}

impl Call {
    fn of(method: &str) -> Option<Call> {
        Some(match method {
            "order.place" => Call::Place,
            "order.modify" => Call::Modify,
            "order.cancel" => Call::Cancel,
            "order.status" => Call::Status,
            "openOrders.status" => Call::OpenOrders,
            "account.status" | "v2/account.status" => Call::AccountStatus,
            "account.position" | "v2/account.position" => Call::AccountPosition,
            "depth" => Call::Depth,
            "userDataStream.start" => Call::StreamStart,
            "userDataStream.ping" => Call::StreamPing,
            "userDataStream.stop" => Call::StreamStop,
            _ => return None,
        })
    }

    /// The metrics label.
    fn name(self) -> &'static str {
        match self {
            Call::Place => "order.place",
            Call::Modify => "order.modify",
            Call::Cancel => "order.cancel",
            Call::Status => "order.status",
            Call::OpenOrders => "openOrders.status",
            Call::AccountStatus => "account.status",
            Call::AccountPosition => "account.position",
            Call::Depth => "depth",
            Call::StreamStart => "userDataStream.start",
            Call::StreamPing => "userDataStream.ping",
            Call::StreamStop => "userDataStream.stop",
        }
    }

    /// The REST endpoint it is the twin of (for its request weight).
    fn rest(self) -> (Method, &'static str) {
        match self {
            Call::Place => (Method::POST, "/fapi/v1/order"),
            Call::Modify => (Method::PUT, "/fapi/v1/order"),
            Call::Cancel => (Method::DELETE, "/fapi/v1/order"),
            Call::Status => (Method::GET, "/fapi/v1/order"),
            Call::OpenOrders => (Method::GET, "/fapi/v1/openOrders"),
            Call::AccountStatus => (Method::GET, "/fapi/v2/account"),
            Call::AccountPosition => (Method::GET, "/fapi/v2/positionRisk"),
            Call::Depth => (Method::GET, "/fapi/v1/depth"),
            Call::StreamStart => (Method::POST, "/fapi/v1/listenKey"),
            Call::StreamPing => (Method::PUT, "/fapi/v1/listenKey"),
            Call::StreamStop => (Method::DELETE, "/fapi/v1/listenKey"),
        }
    }
}

/// A request frame, borrowed from its text where nothing is escaped. `params` is sorted
/// by name (the signed text's order); each value is kept as sent.
#[derive(serde::Deserialize)]
struct WsRequest<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    method: Cow<'a, str>,
    #[serde(borrow, default)]
    params: BTreeMap<Cow<'a, str>, &'a RawValue>,
}

/// A parameter's value as text: a string unquoted and unescaped, a number or boolean as
/// sent; `None` for null, arrays and objects.
fn value_text(raw: &RawValue) -> Option<Cow<'_, str>> {
    let t = raw.get();
    match t.as_bytes().first()? {
        b'"' => match t[1..t.len() - 1].contains('\\') {
            false => Some(Cow::Borrowed(&t[1..t.len() - 1])),
            true => serde_json::from_str::<String>(t).ok().map(Cow::Owned),
        },
        b'{' | b'[' | b'n' => None,
        _ => Some(Cow::Borrowed(t)),
    }
}

/// A result: JSON already serialized (orders) or a value.
enum Body {
    Raw(Vec<u8>),
    Json(Value),
}

/// What the answer's `rateLimits` reports.
struct Used {
    weight: u32,
    orders: Option<OrderCounts>,
}

fn malformed(what: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::BAD_REQUEST,
        -1102,
        format!("Malformed request: {what}"),
    )
}

/// Handle one request frame; the answer's text.
async fn handle(ws: &WsState, ip: IpAddr, text: &str) -> String {
    let metrics = &ws.app.metrics;
    let req: WsRequest = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let e = malformed(e);
            metrics.observe_ws_api("malformed", 400, Some(e.code));
            return answer_text(None, Err(e), None);
        }
    };
    let id_ok = req.id.is_none_or(|id| {
        let t = id.get();
        match t.as_bytes()[0] {
            b'"' => {
                serde_json::from_str::<Cow<str>>(t).is_ok_and(|s| s.chars().count() <= MAX_ID_CHARS)
            }
            b'{' | b'[' | b't' | b'f' => false,
            _ => true,
        }
    });
    if !id_ok {
        let e = malformed(format_args!(
            "`id` must be an integer, a string of at most {MAX_ID_CHARS} characters, or null"
        ));
        metrics.observe_ws_api("malformed", 400, Some(e.code));
        return answer_text(None, Err(e), None);
    }
    let Some(call) = Call::of(&req.method) else {
        let e = ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            -1020,
            format!(
                "This operation is not supported: {}. Methods: order.place, order.modify, \
                 order.cancel, order.status, openOrders.status, account.status, \
                 account.position, depth, userDataStream.start, userDataStream.ping, \
                 userDataStream.stop.",
                req.method.chars().take(64).collect::<String>()
            ),
        );
        metrics.observe_ws_api("unknown", 400, Some(e.code));
        return answer_text(req.id, Err(e), None);
    };
    let mut params: Vec<Param> = Vec::with_capacity(req.params.len());
    for (name, raw) in &req.params {
        let Some(text) = value_text(raw) else {
            let e = ApiError::illegal(name, "a string, number or boolean");
            metrics.observe_ws_api(call.name(), 400, Some(e.code));
            return answer_text(req.id, Err(e), None);
        };
        params.push((Cow::Borrowed(&**name), text));
    }
    let show_limits = req
        .params
        .get("returnRateLimits")
        .is_none_or(|v| v.get() != "false");
    let (outcome, used) = run(ws, ip, call, &params).await;
    metrics.observe_ws_api(
        call.name(),
        outcome.as_ref().map_or_else(|e| e.status.as_u16(), |_| 200),
        outcome.as_ref().err().map(|e| e.code),
    );
    let limits = show_limits.then_some(used).flatten();
    answer_text(
        req.id,
        outcome,
        limits.as_ref().map(|u| (u, ws.app.limiter.limits())),
    )
}

/// Charge, authenticate and run one call. The weight used is reported when the
/// address was charged.
async fn run(
    ws: &WsState,
    ip: IpAddr,
    call: Call,
    params: &[Param<'_>],
) -> (Result<Body, ApiError>, Option<Used>) {
    let app = &ws.app;
    let now = now_ms();
    // The weight of the REST twin, from the parameters it depends on.
    let (method, path) = call.rest();
    let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let query = match call {
        Call::Depth => get("limit").map(|l| format!("limit={l}")),
        Call::OpenOrders => get("symbol").map(|_| "symbol=1".to_string()),
        _ => None,
    };
    let weight = request_weight(&method, path, query.as_deref().unwrap_or(""));
    let mut used = match app.limiter.charge_address(ip, weight.ip, now) {
        Ok(w) => Used {
            weight: w,
            orders: None,
        },
        Err((e, w)) => {
            let used = Used {
                weight: w,
                orders: None,
            };
            return (Err(e), Some(used));
        }
    };
    if call == Call::Depth {
        let p = Params::from_pairs(params);
        return (http::depth_of(app, &p).await.map(Body::Json), Some(used));
    }
    // The user data stream's key: the API key alone, no signature (as over REST).
    if matches!(
        call,
        Call::StreamStart | Call::StreamPing | Call::StreamStop
    ) {
        let outcome = match app.keys.account_of(get("apiKey").map(|k| k.as_bytes())) {
            Err(e) => Err(e),
            Ok(a) if call == Call::StreamStart => crate::ws::listen_key_start(ws, a),
            Ok(a) if call == Call::StreamPing => crate::ws::listen_key_ping(ws, a),
            Ok(a) => crate::ws::listen_key_stop(ws, a).await,
        };
        return (outcome.map(Body::Json), Some(used));
    }
    let (account, p): (_, Params) = match app.keys.verify_sorted(params, now) {
        Ok(a) => a,
        Err(e) => return (Err(e), Some(used)),
    };
    if weight.order {
        match app.limiter.count_order(account, now) {
            Ok(c) => used.orders = Some(c),
            Err(e) => return (Err(e), Some(used)),
        }
    }
    let outcome = match call {
        Call::Place => http::place_order(app, account, p).await.map(Body::Raw),
        Call::Modify => http::order_modify(app, account, p).await.map(Body::Raw),
        Call::Cancel => http::order_cancel(app, account, p).await.map(Body::Json),
        Call::Status => http::order_status(app, account, p).await.map(Body::Json),
        Call::OpenOrders => http::open_orders_status(app, account, p)
            .await
            .map(Body::Json),
        Call::AccountStatus => http::account_status(app, account, p).await.map(Body::Json),
        Call::AccountPosition => http::account_position(app, account, p)
            .await
            .map(Body::Json),
        Call::Depth | Call::StreamStart | Call::StreamPing | Call::StreamStop => {
            unreachable!("answered above")
        }
    };
    (outcome, Some(used))
}

/// The answer frame's text.
fn answer_text(
    id: Option<&RawValue>,
    outcome: Result<Body, ApiError>,
    limits: Option<(&Used, &crate::limits::RateLimits)>,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(1024);
    out.push_str("{\"id\":");
    out.push_str(id.map_or("null", |id| id.get()));
    match outcome {
        Ok(Body::Raw(bytes)) => {
            out.push_str(",\"status\":200,\"result\":");
            // Serialized JSON is UTF-8.
            out.push_str(std::str::from_utf8(&bytes).unwrap_or("null"));
        }
        Ok(Body::Json(v)) => {
            out.push_str(",\"status\":200,\"result\":");
            out.push_str(&v.to_string());
        }
        Err(e) => {
            let mut error = serde_json::json!({"code": e.code, "msg": e.msg});
            if let Some(s) = e.retry_after_s {
                // Binance: when the limit resets, in ms since the epoch.
                error["data"] = serde_json::json!({"retryAfter": now_ms() + s * 1000});
            }
            let _ = write!(out, ",\"status\":{},\"error\":{error}", e.status.as_u16());
        }
    }
    if let Some((used, cfg)) = limits {
        let limit =
            |out: &mut String, kind: &str, interval: &str, num: u32, limit: u32, count: u32| {
                let _ = write!(
                out,
                "{{\"rateLimitType\":\"{kind}\",\"interval\":\"{interval}\",\"intervalNum\":{num},\
                 \"limit\":{limit},\"count\":{count}}}"
            );
            };
        out.push_str(",\"rateLimits\":[");
        limit(
            &mut out,
            "REQUEST_WEIGHT",
            "MINUTE",
            1,
            cfg.weight_per_minute,
            used.weight,
        );
        if let Some(o) = used.orders {
            out.push(',');
            limit(
                &mut out,
                "ORDERS",
                "SECOND",
                10,
                cfg.orders_per_10s,
                o.ten_s,
            );
            out.push(',');
            limit(
                &mut out,
                "ORDERS",
                "MINUTE",
                1,
                cfg.orders_per_minute,
                o.minute,
            );
        }
        out.push(']');
    }
    out.push('}');
    out
}
