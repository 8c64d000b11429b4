//! The websocket endpoints of `perpcore serve`: Binance USDⓈ-M's public market streams
//! and the user data stream, and the listen key REST endpoints.
//!
//! Paths (every one also under `/public`, `/market` and `/private`, as Binance's split
//! URLs and ccxt.pro's `binanceusdm` use them; any stream is served on any of them):
//!
//! - `/ws` and `/ws/<name>`: raw streams. `<name>` is a stream (`btcusdt@depth@100ms`:
//!   subscribed at once), a listen key (the user data stream of its account), or anything
//!   else without `@` (ccxt.pro connects to `/ws/0`): a connection that subscribes later.
//!   `?listenKey=<key>` (Binance's `/private/ws?listenKey=`) opens the user stream too.
//! - `/stream?streams=a/b/c`: combined streams, every frame wrapped in
//!   `{"stream": <name>, "data": <payload>}`.
//!
//! On a connection: `{"method": "SUBSCRIBE" | "UNSUBSCRIBE", "params": [names], "id": n}`
//! → `{"result": null, "id": n}`; `LIST_SUBSCRIPTIONS`; `SET_PROPERTY` / `GET_PROPERTY`
//! `combined`. Bad frames get Binance's error replies (`{"code": 0..3, "msg": …, "id": …}`)
//! and the connection stays open; a message above the size limit closes it (1009), more
//! than the allowed messages per second close it (1008).
//!
//! The websocket handshake is done here over hyper's upgrade (a 101 answer with
//! `Sec-WebSocket-Accept`), and the upgraded connection is driven by tokio-tungstenite
//! 0.30, the version the feed's client already uses: axum 0.8's `ws` feature would pull
//! a second tungstenite (0.29) into the build.
//!
//! Each connection has two tasks: the reader (method frames, rate limit, idle check) and
//! the writer, which takes frames from the connection's bounded outbox and writes them;
//! the hub fills the outbox with `try_send` and disconnects the connection when it is
//! full. The writer sends a ping every 3 minutes; a connection silent for 10 minutes is
//! closed (Binance's rule).
//!
//! Must never: let a connection see another account's private frames, block the hub.

use crate::error::ApiError;
use crate::http::App;
use crate::stream::{close_frame, Control, Method, Out, Outbox, Shared, StreamOptions, Topic};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::{SinkExt as _, StreamExt as _};
use perpcore_types::AccountId;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::WebSocketStream;

/// The server pings every 3 minutes; a connection silent for 10 minutes is closed.
pub(crate) const PING_EVERY: Duration = Duration::from_secs(180);
pub(crate) const IDLE_LIMIT: Duration = Duration::from_secs(600);

pub struct WsState {
    pub app: Arc<App>,
    pub shared: Arc<Shared>,
    pub control: mpsc::Sender<Control>,
    pub opts: StreamOptions,
    next_id: AtomicU64,
}

impl WsState {
    pub fn new(
        app: Arc<App>,
        shared: Arc<Shared>,
        control: mpsc::Sender<Control>,
        opts: StreamOptions,
    ) -> WsState {
        WsState {
            app,
            shared,
            control,
            opts,
            next_id: AtomicU64::new(1),
        }
    }
}

type Ws = Arc<WsState>;

/// The websocket and listen key routes (merged into the public router).
pub fn router(state: Ws, timeout: Duration) -> Router {
    let mut r = Router::new();
    for prefix in ["", "/public", "/market", "/private"] {
        r = r
            .route(&format!("{prefix}/ws"), get(upgrade))
            .route(&format!("{prefix}/ws/{{*name}}"), get(upgrade))
            .route(&format!("{prefix}/stream"), get(upgrade));
    }
    let keys = Router::new()
        .route(
            "/fapi/v1/listenKey",
            axum::routing::post(listen_key_post)
                .put(listen_key_put)
                .delete(listen_key_delete),
        )
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            crate::http::MAX_BODY_BYTES,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ));
    r.merge(keys).with_state(state)
}

// ---------------------------------------------------------------- listen keys

fn api_key_account(app: &App, headers: &HeaderMap) -> Result<AccountId, ApiError> {
    app.keys
        .account_of(headers.get("X-MBX-APIKEY").map(|h| h.as_bytes()))
}

fn respond(r: Result<Value, ApiError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

fn no_listen_key() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        -1125,
        "This listenKey does not exist.",
    )
}

/// The listen keys, locked.
fn listen_keys(
    ws: &WsState,
) -> Result<std::sync::MutexGuard<'_, crate::stream::ListenKeys>, ApiError> {
    ws.shared
        .listen_keys
        .lock()
        .map_err(|_| ApiError::internal("listen keys"))
}

/// The account's active listen key with its validity extended, or a new one (`POST
/// /fapi/v1/listenKey`, the WebSocket API's `userDataStream.start`).
pub(crate) fn listen_key_start(ws: &WsState, account: AccountId) -> Result<Value, ApiError> {
    let key = listen_keys(ws)?.create_or_extend(account, Instant::now());
    Ok(json!({ "listenKey": key }))
}

/// Keep the account's key alive for another TTL (`PUT /fapi/v1/listenKey`,
/// `userDataStream.ping`).
pub(crate) fn listen_key_ping(ws: &WsState, account: AccountId) -> Result<Value, ApiError> {
    let key = listen_keys(ws)?
        .extend(account, Instant::now())
        .ok_or_else(no_listen_key)?;
    Ok(json!({ "listenKey": key }))
}

/// Close the account's user stream (`DELETE /fapi/v1/listenKey`, `userDataStream.stop`).
pub(crate) async fn listen_key_stop(ws: &WsState, account: AccountId) -> Result<Value, ApiError> {
    let key = listen_keys(ws)?.remove(account);
    if let Some(key) = key {
        let _ = ws.control.send(Control::CloseUser { key }).await;
    }
    Ok(json!({}))
}

/// `POST /fapi/v1/listenKey`.
async fn listen_key_post(State(ws): State<Ws>, headers: HeaderMap) -> Response {
    respond(api_key_account(&ws.app, &headers).and_then(|a| listen_key_start(&ws, a)))
}

/// `PUT /fapi/v1/listenKey`.
async fn listen_key_put(State(ws): State<Ws>, headers: HeaderMap) -> Response {
    respond(api_key_account(&ws.app, &headers).and_then(|a| listen_key_ping(&ws, a)))
}

/// `DELETE /fapi/v1/listenKey`.
async fn listen_key_delete(State(ws): State<Ws>, headers: HeaderMap) -> Response {
    match api_key_account(&ws.app, &headers) {
        Err(e) => e.into_response(),
        Ok(account) => respond(listen_key_stop(&ws, account).await),
    }
}

// ---------------------------------------------------------------- the upgrade

fn refuse(status: StatusCode, code: i32, msg: impl Into<String>) -> Response {
    ApiError::new(status, code, msg).into_response()
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// What a connection starts with.
struct Init {
    combined: bool,
    topics: Vec<Topic>,
    user: Option<(AccountId, String)>,
}

/// Decrements the connection count when the connection ends (or never starts).
pub(crate) struct Counted(Arc<Shared>);
impl Drop for Counted {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The streams a URL names: the path's tail, `?streams=`, `?listenKey=`.
fn init_of(ws: &WsState, path: &str, query: Option<&str>) -> Result<Init, ApiError> {
    let config = &ws.app.config;
    let combined = path.ends_with("/stream");
    let mut names: Vec<String> = Vec::new();
    if let Some(i) = path.find("/ws/") {
        names.extend(
            path[i + 4..]
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
    }
    let params = crate::auth::Params::parse(query.unwrap_or("")).unwrap_or_default();
    if let Some(v) = params.get("streams") {
        names.extend(v.split('/').filter(|s| !s.is_empty()).map(str::to_string));
    }
    if let Some(v) = params.get("listenKey") {
        names.push(v.to_string());
    }
    if names.len() > ws.opts.max_streams_per_connection {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            2,
            format!(
                "Invalid request: at most {} streams per connection",
                ws.opts.max_streams_per_connection
            ),
        ));
    }
    let mut init = Init {
        combined,
        topics: Vec::new(),
        user: None,
    };
    let now = Instant::now();
    for name in names {
        if let Some(t) = Topic::parse(config, &name) {
            if !init.topics.contains(&t) {
                init.topics.push(t);
            }
            continue;
        }
        let account = ws
            .shared
            .listen_keys
            .lock()
            .ok()
            .and_then(|k| k.account_of(&name, now));
        match account {
            Some(a) => {
                if init.user.as_ref().is_some_and(|(b, _)| *b != a) {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        2,
                        "Invalid request: one user stream per connection",
                    ));
                }
                init.user = Some((a, name));
            }
            None if crate::stream::looks_like_listen_key(&name) => {
                return Err(no_listen_key());
            }
            None if name.contains('@') => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    2,
                    format!("Invalid request: unknown stream {name}"),
                ));
            }
            // ccxt.pro's `/ws/0`: a connection that subscribes with method frames.
            None => {}
        }
    }
    Ok(init)
}

/// Check a websocket upgrade request (RFC 6455 §4.2.1): the `Sec-WebSocket-Accept`
/// value to answer with, or the refusal.
pub(crate) fn handshake(headers: &HeaderMap) -> Result<String, ApiError> {
    if !header_has_token(headers, header::CONNECTION, "upgrade")
        || !header_has_token(headers, header::UPGRADE, "websocket")
    {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            -1000,
            "a websocket upgrade is expected here",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            -1000,
            "Sec-WebSocket-Version must be 13",
        ));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            -1000,
            "Sec-WebSocket-Key is missing",
        ));
    };
    Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

/// Count a new connection against `max_connections` (refused above it); the guard
/// uncounts it when dropped.
pub(crate) fn count_connection(ws: &WsState) -> Result<Counted, ApiError> {
    if ws.shared.connections.fetch_add(1, Ordering::AcqRel) >= ws.opts.max_connections {
        ws.shared.connections.fetch_sub(1, Ordering::AcqRel);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            -1008,
            "Too many websocket connections; try again later.",
        ));
    }
    Ok(Counted(ws.shared.clone()))
}

/// The upgraded connection of a request whose handshake was checked.
pub(crate) fn take_upgrade(req: &mut Request) -> Result<hyper::upgrade::OnUpgrade, ApiError> {
    req.extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                -1000,
                "this connection cannot be upgraded",
            )
        })
}

/// The upgraded socket as a server-side websocket with the configured size limits.
pub(crate) async fn server_socket(
    upgraded: hyper::upgrade::Upgraded,
    opts: &StreamOptions,
) -> WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(opts.max_message_bytes))
        .max_frame_size(Some(opts.max_message_bytes));
    let io = hyper_util::rt::TokioIo::new(upgraded);
    WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await
}

/// The 101 answer that completes the handshake.
pub(crate) fn switching_protocols(accept: String) -> Response {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn upgrade(State(ws): State<Ws>, mut req: Request) -> Response {
    let accept = match handshake(req.headers()) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let init = match init_of(&ws, req.uri().path(), req.uri().query()) {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    // Count the connection before it exists; refuse above the limit.
    let counted = match count_connection(&ws) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let on_upgrade = match take_upgrade(&mut req) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    // Register with the hub before answering 101: once the client's handshake is done,
    // every command applied after it reaches this connection's streams.
    let id = ws.next_id.fetch_add(1, Ordering::Relaxed);
    let (out, rx, queued) = Outbox::new(ws.opts.outbound_frames, ws.opts.outbound_bytes);
    let (kill_tx, kill_rx) = oneshot::channel();
    let (registered_tx, registered) = oneshot::channel();
    let open = Control::Open {
        id,
        out: out.clone(),
        kill: kill_tx,
        combined: init.combined,
        user: init.user,
        topics: init.topics,
        registered: registered_tx,
    };
    if ws.control.send(open).await.is_err() || registered.await.is_err() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            -1008,
            "the server is stopping",
        );
    }
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            let _ = ws.control.send(Control::Closed { id }).await;
            return;
        };
        let socket = server_socket(upgraded, &ws.opts).await;
        connection(ws, socket, id, out, rx, queued, kill_rx).await;
        drop(counted);
    });
    switching_protocols(accept)
}

// ---------------------------------------------------------------- a connection

/// Drive one registered connection until either side ends it.
async fn connection<S>(
    ws: Ws,
    socket: WebSocketStream<S>,
    id: u64,
    out: Outbox,
    rx: mpsc::Receiver<Out>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
    kill_rx: oneshot::Receiver<tokio_tungstenite::tungstenite::protocol::CloseFrame>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sink, mut stream) = socket.split();
    let (done_tx, mut done_rx) = oneshot::channel::<()>();
    let writer = tokio::spawn(write_loop(
        sink,
        rx,
        queued,
        kill_rx,
        ws.opts.close_grace,
        done_tx,
    ));
    let mut window = (Instant::now(), 0u32);
    let mut last_heard = Instant::now();
    loop {
        let idle = tokio::time::sleep_until((last_heard + IDLE_LIMIT).into());
        let msg = tokio::select! {
            m = stream.next() => m,
            _ = &mut done_rx => break,
            _ = idle => {
                out.close(close_frame(CloseCode::Policy, "no pong within 10 minutes"));
                break;
            }
        };
        last_heard = Instant::now();
        match msg {
            None => break,
            Some(Err(e)) => {
                use tokio_tungstenite::tungstenite::Error;
                if let Error::Capacity(_) = e {
                    out.close(close_frame(CloseCode::Size, "message too big"));
                }
                break;
            }
            Some(Ok(Message::Close(_))) => break,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                // Binance: at most N incoming messages per second, else disconnected.
                if window.0.elapsed() >= Duration::from_secs(1) {
                    window = (Instant::now(), 0);
                }
                window.1 += 1;
                if window.1 > ws.opts.max_messages_per_second {
                    out.close(close_frame(
                        CloseCode::Policy,
                        "too many messages: at most 10 per second",
                    ));
                    break;
                }
                let reply = match m {
                    Message::Text(t) => method_frame(&ws, id, t.as_str()).await,
                    _ => Some(
                        json!({"code": 3, "msg": "Invalid JSON: binary frames are not accepted", "id": null}),
                    ),
                };
                if let Some(r) = reply {
                    if out.push(&r.to_string().into()) != crate::stream::Push::Queued {
                        break;
                    }
                }
            }
        }
    }
    let _ = ws.control.send(Control::Closed { id }).await;
    drop(out);
    // The writer ends once the hub dropped the outbox (or after its close frame).
    if tokio::time::timeout(ws.opts.close_grace + Duration::from_secs(1), writer)
        .await
        .is_err()
    {
        tracing::debug!(id, "websocket writer did not finish in time");
    }
}

/// Write the outbox to the socket until it closes or the hub kills the connection.
async fn write_loop<S>(
    mut sink: futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
    mut rx: mpsc::Receiver<Out>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
    mut kill: oneshot::Receiver<tokio_tungstenite::tungstenite::protocol::CloseFrame>,
    grace: Duration,
    done: oneshot::Sender<()>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    // The kill signal is live until the hub sends it or drops it (an ordered close then
    // comes through the outbox, after the frames queued before it).
    let mut kill_live = true;
    let close = loop {
        let msg = tokio::select! {
            biased;
            k = &mut kill, if kill_live => match k {
                Ok(frame) => break Some(frame),
                Err(_) => {
                    kill_live = false;
                    continue;
                }
            },
            o = rx.recv() => match o {
                None => break None,
                Some(Out::Close(f)) => break Some(f),
                Some(Out::Text(t)) => {
                    queued.fetch_sub(t.len(), Ordering::AcqRel);
                    Message::Text(t)
                }
            },
            _ = ping.tick() => Message::Ping(Bytes::new()),
        };
        // A write blocked by a client that does not read must not hold off the kill.
        let outcome = {
            let send = sink.send(msg);
            tokio::pin!(send);
            loop {
                tokio::select! {
                    biased;
                    k = &mut kill, if kill_live => match k {
                        Ok(frame) => break Err(Some(frame)),
                        // Dropped: no kill any more; finish this frame.
                        Err(_) => kill_live = false,
                    },
                    r = &mut send => break if r.is_ok() { Ok(()) } else { Err(None) },
                }
            }
        };
        if let Err(close) = outcome {
            break close;
        }
    };
    if let Some(frame) = close {
        // The close frame follows whatever part of a frame is already buffered; a client
        // that reads within the grace period gets it, otherwise the socket is dropped.
        let _ = tokio::time::timeout(grace, sink.send(Message::Close(Some(frame)))).await;
    }
    let _ = done.send(());
}

fn error_reply(code: i64, msg: impl Into<String>, id: Option<u64>) -> Value {
    json!({"code": code, "msg": msg.into(), "id": id})
}

/// Handle one text frame; `Some(reply)` to send at once (errors), `None` when the hub
/// replies (it queues the reply after registering the subscription).
async fn method_frame(ws: &WsState, id: u64, text: &str) -> Option<Value> {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Some(error_reply(3, format!("Invalid JSON: {e}"), None)),
    };
    let Some(obj) = v.as_object() else {
        return Some(error_reply(3, "Invalid JSON: expected an object", None));
    };
    let request_id = match obj.get("id") {
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or(0),
        _ => {
            return Some(error_reply(
                2,
                "Invalid request: request ID must be an unsigned integer",
                None,
            ))
        }
    };
    let rid = Some(request_id);
    let Some(method) = obj.get("method").and_then(Value::as_str) else {
        return Some(error_reply(
            2,
            "Invalid request: missing field `method`",
            rid,
        ));
    };
    let params = obj.get("params");
    let names = || -> Result<Vec<Topic>, Value> {
        let list = params.and_then(Value::as_array).ok_or_else(|| {
            error_reply(
                2,
                "Invalid request: `params` must be an array of stream names",
                rid,
            )
        })?;
        list.iter()
            .map(|p| {
                let name = p.as_str().ok_or_else(|| {
                    error_reply(2, "Invalid request: a stream name must be a string", rid)
                })?;
                Topic::parse(&ws.app.config, name).ok_or_else(|| {
                    error_reply(2, format!("Invalid request: unknown stream {name}"), rid)
                })
            })
            .collect()
    };
    let property = |want_value: bool| -> Result<Option<bool>, Value> {
        let list = params
            .and_then(Value::as_array)
            .ok_or_else(|| error_reply(2, "Invalid request: `params` must be an array", rid))?;
        let name = list.first().and_then(Value::as_str).ok_or_else(|| {
            error_reply(2, "Invalid request: property name must be a string", rid)
        })?;
        if name != "combined" {
            return Err(error_reply(0, "Unknown property", rid));
        }
        if !want_value {
            return Ok(None);
        }
        list.get(1)
            .and_then(Value::as_bool)
            .map(Some)
            .ok_or_else(|| error_reply(1, "Invalid value type: expected Boolean", rid))
    };
    let m = match method {
        "SUBSCRIBE" => names().map(Method::Subscribe),
        "UNSUBSCRIBE" => names().map(Method::Unsubscribe),
        "LIST_SUBSCRIPTIONS" => Ok(Method::List),
        "SET_PROPERTY" => property(true).map(|b| Method::SetCombined(b.unwrap_or(false))),
        "GET_PROPERTY" => property(false).map(|_| Method::GetCombined),
        other => Err(error_reply(
            2,
            format!("Invalid request: unknown variant {other}, expected one of SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY, GET_PROPERTY"),
            rid,
        )),
    };
    match m {
        Err(reply) => Some(reply),
        Ok(method) => {
            let sent = ws
                .control
                .send(Control::Method {
                    id,
                    method,
                    request_id,
                })
                .await;
            sent.is_err()
                .then(|| error_reply(2, "Invalid request: the server is stopping", rid))
        }
    }
}
