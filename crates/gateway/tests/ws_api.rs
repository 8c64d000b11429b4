//! The WebSocket API (`/ws-fapi/v1`) of `perpcore serve`, in-process on 127.0.0.1 (ports
//! chosen by the OS, a temporary journal), with tokio-tungstenite as the client. Requests
//! are signed as Binance defines it for this API (and as ccxt.pro's `sign_params` does):
//! every parameter but `signature`, sorted by name, `name=value` joined by `&`, values
//! as sent. Every wait is bounded by `DEADLINE`; each test stops its server.
//!
//! Figures: default.toml's BTCUSDT (tick 0.1, lot 0.001, taker fee 0.0005).

mod common;

use common::{admin_with, http, now_ms, two_key_options, Client, ADMIN_TOKEN};
use common::{KEY_A, KEY_B, SECRET_A, SECRET_B};
use futures_util::{SinkExt as _, StreamExt as _};
use perpcore_gateway::{sign_hex, Server};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const DEADLINE: Duration = Duration::from_secs(20);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(api: SocketAddr) -> Ws {
    let url = format!("ws://{api}/ws-fapi/v1");
    let (ws, _) = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(url.as_str()))
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    ws
}

/// `params` with `apiKey`, `timestamp` (= `ts`) and `signature` added, signed with `secret`.
fn signed(key: &str, secret: &str, ts: u64, params: Value) -> Value {
    let mut p: Map<String, Value> = params.as_object().cloned().unwrap_or_default();
    p.insert("apiKey".into(), json!(key));
    p.insert("timestamp".into(), json!(ts));
    let mut names: Vec<&String> = p.keys().collect();
    names.sort();
    let text: Vec<String> = names
        .iter()
        .map(|n| match &p[n.as_str()] {
            Value::String(s) => format!("{n}={s}"),
            v => format!("{n}={v}"),
        })
        .collect();
    let sig = sign_hex(secret.as_bytes(), &text.join("&"));
    p.insert("signature".into(), json!(sig));
    Value::Object(p)
}

async fn send(ws: &mut Ws, v: &Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next text frame as JSON.
async fn next(ws: &mut Ws) -> Value {
    let deadline = Instant::now() + DEADLINE;
    for _ in 0..1000 {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = tokio::time::timeout(left, ws.next())
            .await
            .expect("an answer before the deadline")
            .expect("connection open")
            .expect("a frame");
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
    panic!("no text frame");
}

/// One request and its answer (the connection has nothing else in flight).
async fn call(ws: &mut Ws, id: Value, method: &str, params: Value) -> Value {
    send(ws, &json!({"id": id, "method": method, "params": params})).await;
    let a = next(ws).await;
    assert_eq!(a["id"], id, "{a}");
    a
}

struct Signer {
    key: &'static str,
    secret: &'static str,
}

impl Signer {
    fn sign(&self, params: Value) -> Value {
        signed(self.key, self.secret, now_ms(), params)
    }
}

const A: Signer = Signer {
    key: KEY_A,
    secret: SECRET_A,
};
const B: Signer = Signer {
    key: KEY_B,
    secret: SECRET_B,
};

fn ok(a: &Value) -> &Value {
    assert_eq!(a["status"], 200, "{a}");
    &a["result"]
}

fn code(a: &Value) -> i64 {
    assert_ne!(a["status"], 200, "should fail: {a}");
    a["error"]["code"].as_i64().unwrap_or_else(|| panic!("{a}"))
}

/// What a rate limit entry of `type`/`interval`/`num` counted.
fn counted(a: &Value, kind: &str, interval: &str, num: u64) -> Option<u64> {
    a["rateLimits"].as_array()?.iter().find_map(|l| {
        (l["rateLimitType"] == kind && l["interval"] == interval && l["intervalNum"] == num)
            .then(|| l["count"].as_u64())
            .flatten()
    })
}

#[test]
fn orders_over_the_websocket_api_are_the_rest_calls() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = two_key_options(dir.path());
    opts.fresh = true;
    let server = Server::start(opts).expect("serve starts");
    let (api, adm) = (server.public_addr(), server.admin_addr());
    for account in [1, 2] {
        admin_with(
            adm,
            ADMIN_TOKEN,
            "/admin/v1/account",
            &json!({"account": account}).to_string(),
        );
        admin_with(
            adm,
            ADMIN_TOKEN,
            "/admin/v1/deposit",
            &json!({"account": account, "asset": "USDT", "amount": "100000"}).to_string(),
        );
    }
    admin_with(
        adm,
        ADMIN_TOKEN,
        "/admin/v1/markPrice",
        &json!({"symbol": "BTCUSDT", "price": "30000"}).to_string(),
    );
    let rest_a = Client {
        addr: api,
        key: KEY_A,
        secret: SECRET_A,
    };
    let rest_b = Client {
        addr: api,
        key: KEY_B,
        secret: SECRET_B,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let a_order = rt.block_on(async {
        let mut ws = connect(api).await;
        // A rests a sell of 0.010 at 30000.
        let placed = call(
            &mut ws,
            json!(1),
            "order.place",
            A.sign(json!({"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT",
                "timeInForce": "GTC", "quantity": "0.010", "price": "30000",
                "newClientOrderId": "ws-a-1"})),
        )
        .await;
        let order = ok(&placed).clone();
        assert_eq!(order["status"], "NEW", "{order}");
        assert_eq!(order["clientOrderId"], "ws-a-1");
        // The first order of account 1: counted once in both order windows.
        assert_eq!(
            counted(&placed, "ORDERS", "SECOND", 10),
            Some(1),
            "{placed}"
        );
        assert_eq!(counted(&placed, "ORDERS", "MINUTE", 1), Some(1), "{placed}");
        assert!(counted(&placed, "REQUEST_WEIGHT", "MINUTE", 1).is_some());
        let id = order["orderId"].as_u64().unwrap();
        // order.status is GET /fapi/v1/order, byte for byte, and so is the place answer.
        let rest = rest_a.ok(
            "GET",
            "/fapi/v1/order",
            &format!("symbol=BTCUSDT&orderId={id}"),
        );
        let status = call(
            &mut ws,
            json!("s-1"),
            "order.status",
            A.sign(json!({"symbol": "BTCUSDT", "orderId": id})),
        )
        .await;
        assert_eq!(ok(&status), &rest);
        assert_eq!(order, rest);
        // B may neither see nor cancel A's order.
        let other = call(
            &mut ws,
            json!(2),
            "order.status",
            B.sign(json!({"symbol": "BTCUSDT", "orderId": id})),
        )
        .await;
        assert_eq!(code(&other), -2013, "{other}");
        let other = call(
            &mut ws,
            json!(3),
            "order.cancel",
            B.sign(json!({"symbol": "BTCUSDT", "orderId": id})),
        )
        .await;
        assert_eq!(code(&other), -2011, "{other}");
        // A moves it to 30000.5 (still 0.010): the answer is the amended order.
        let modified = call(
            &mut ws,
            json!(4),
            "order.modify",
            A.sign(json!({"symbol": "BTCUSDT", "orderId": id, "side": "SELL",
                "quantity": "0.010", "price": "30000.5"})),
        )
        .await;
        assert_eq!(ok(&modified)["price"], "30000.5", "{modified}");
        // B buys 0.004 at 30000.5 IOC: filled against A's order.
        let taken = call(
            &mut ws,
            json!(5),
            "order.place",
            B.sign(json!({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                "timeInForce": "IOC", "quantity": "0.004", "price": "30000.5",
                "returnRateLimits": false})),
        )
        .await;
        let t = ok(&taken);
        assert_eq!(
            (t["status"].as_str(), t["executedQty"].as_str()),
            (Some("FILLED"), Some("0.004")),
            "{taken}"
        );
        assert!(
            taken.get("rateLimits").is_none(),
            "returnRateLimits=false: {taken}"
        );
        // B's account and position are GET /fapi/v2/account and /fapi/v2/positionRisk.
        let acct = call(&mut ws, json!(6), "account.status", B.sign(json!({}))).await;
        assert_eq!(ok(&acct), &rest_b.ok("GET", "/fapi/v2/account", ""));
        let pos = call(
            &mut ws,
            json!(7),
            "v2/account.position",
            B.sign(json!({"symbol": "BTCUSDT"})),
        )
        .await;
        let rest_pos = rest_b.ok("GET", "/fapi/v2/positionRisk", "symbol=BTCUSDT");
        assert_eq!(ok(&pos), &rest_pos);
        assert_eq!(rest_pos[0]["positionAmt"], "0.004", "{rest_pos}");
        // The taker fee, 0.0005 × 30000.5 × 0.004 = 0.060001 USDT, off B's 100,000.
        let usdt = ok(&acct)["assets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["asset"] == "USDT")
            .cloned()
            .unwrap();
        assert_eq!(usdt["walletBalance"], "99999.93999900", "{usdt}");
        // depth needs no signature and is GET /fapi/v1/depth.
        let depth = call(
            &mut ws,
            json!(8),
            "depth",
            json!({"symbol": "BTCUSDT", "limit": 5}),
        )
        .await;
        let (s, rest_depth) = http(api, "GET", "/fapi/v1/depth?symbol=BTCUSDT&limit=5", &[], "");
        assert_eq!(s, 200);
        assert_eq!(ok(&depth), &rest_depth);
        assert_eq!(rest_depth["asks"], json!([["30000.5", "0.006"]]));
        // openOrders.status: A's one open order.
        let open = call(
            &mut ws,
            json!(9),
            "openOrders.status",
            A.sign(json!({"symbol": "BTCUSDT"})),
        )
        .await;
        assert_eq!(
            ok(&open),
            &rest_a.ok("GET", "/fapi/v1/openOrders", "symbol=BTCUSDT")
        );
        assert_eq!(ok(&open)[0]["orderId"], json!(id));
        let _ = ws.close(None).await;
        id
    });
    // Stopped and started again on the same journal: the order answered NEW and amended
    // over the websocket is there, 0.006 left at 30000.5.
    server.shutdown().expect("clean shutdown");
    let server = Server::start(two_key_options(dir.path())).expect("restarts");
    let rest_a = Client {
        addr: server.public_addr(),
        key: KEY_A,
        secret: SECRET_A,
    };
    let open = rest_a.ok("GET", "/fapi/v1/openOrders", "symbol=BTCUSDT");
    assert_eq!(open.as_array().map(Vec::len), Some(1), "{open}");
    assert_eq!(open[0]["orderId"], json!(a_order));
    assert_eq!(open[0]["price"], "30000.5");
    // After a restart an open order's record is rebuilt from the book (docs/GATEWAY.md):
    // its open 0.006 is all it knows.
    assert_eq!(open[0]["origQty"], "0.006");
    server.shutdown().expect("clean shutdown");
}

#[test]
fn refusals_carry_binance_codes_and_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = two_key_options(dir.path());
    opts.fresh = true;
    let server = Server::start(opts).expect("serve starts");
    let api = server.public_addr();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut ws = rt.block_on(async {
        let mut ws = connect(api).await;
        let order = json!({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
            "timeInForce": "GTC", "quantity": "0.001", "price": "29000"});
        // A signature that does not match: one parameter changed after signing.
        let mut p = A.sign(order.clone());
        p["price"] = json!("29000.1");
        let a = call(&mut ws, json!("bad-sig"), "order.place", p).await;
        assert_eq!((code(&a), a["status"].as_u64()), (-1022, Some(400)), "{a}");
        // A timestamp 10 s old with the default 5 s window.
        let p = signed(KEY_A, SECRET_A, now_ms() - 10_000, order.clone());
        let a = call(&mut ws, json!(11), "order.place", p).await;
        assert_eq!(code(&a), -1021, "{a}");
        // No key, an unknown key, no signature.
        let mut p = A.sign(order.clone());
        p.as_object_mut().unwrap().remove("apiKey");
        assert_eq!(
            code(&call(&mut ws, json!(12), "order.place", p).await),
            -2014
        );
        let p = signed("no-such-key", SECRET_A, now_ms(), order.clone());
        assert_eq!(
            code(&call(&mut ws, json!(13), "order.place", p).await),
            -2015
        );
        let mut p = A.sign(order.clone());
        p.as_object_mut().unwrap().remove("signature");
        assert_eq!(
            code(&call(&mut ws, json!(14), "order.place", p).await),
            -1102
        );
        // An array as a value cannot be signed text.
        let mut p = A.sign(order.clone());
        p["quantity"] = json!([1]);
        assert_eq!(
            code(&call(&mut ws, json!(15), "order.place", p).await),
            -1130
        );
        // An account that does not exist yet: the engine's refusal, as over REST.
        let a = call(&mut ws, json!(16), "order.place", A.sign(order.clone())).await;
        let (_, rest) = Client {
            addr: api,
            key: KEY_A,
            secret: SECRET_A,
        }
        .call(
            "POST",
            "/fapi/v1/order",
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=29000",
        );
        assert_eq!(a["error"], rest, "{a}");
        // Unknown method, malformed JSON, an object as id, a binary frame.
        let a = call(&mut ws, json!(17), "session.logon", json!({})).await;
        assert_eq!(code(&a), -1020, "{a}");
        send(&mut ws, &json!("not a request")).await;
        let a = next(&mut ws).await;
        assert_eq!((code(&a), &a["id"]), (-1102, &Value::Null), "{a}");
        send(&mut ws, &json!({"id": {"x": 1}, "method": "depth"})).await;
        assert_eq!(code(&next(&mut ws).await), -1102);
        ws.send(Message::Binary(vec![1, 2, 3].into()))
            .await
            .unwrap();
        assert_eq!(code(&next(&mut ws).await), -1102);
        // A message above the 64 KiB limit closes that connection with 1009.
        let mut big = connect(api).await;
        let huge = json!({"id": 1, "method": "depth", "params": {"symbol": "x".repeat(70_000)}});
        let _ = big.send(Message::Text(huge.to_string().into())).await;
        let deadline = Instant::now() + DEADLINE;
        let mut code = None;
        for _ in 0..100 {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, big.next())
                .await
                .expect("closed in time")
            {
                Some(Ok(Message::Close(f))) => {
                    code = f.map(|f| u16::from(f.code));
                    break;
                }
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        assert_eq!(code, Some(1009));
        // Still open: 200 requests sent without waiting are each answered once, by id.
        for i in 0..200 {
            let req = json!({"id": format!("d{i}"), "method": "depth",
                "params": {"symbol": "BTCUSDT", "limit": 5}});
            send(&mut ws, &req).await;
        }
        let mut ids = BTreeSet::new();
        for _ in 0..200 {
            let a = next(&mut ws).await;
            assert_eq!(a["status"], 200, "{a}");
            assert!(
                ids.insert(a["id"].as_str().unwrap().to_string()),
                "twice: {a}"
            );
        }
        assert_eq!(ids.len(), 200);
        ws
    });
    // The server stops with the connection open: it closes it with 1001, and stops.
    let stopping = std::thread::spawn(move || server.shutdown().expect("clean shutdown"));
    let close = rt.block_on(async {
        let deadline = Instant::now() + DEADLINE;
        for _ in 0..100 {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, ws.next())
                .await
                .expect("closed in time")
            {
                Some(Ok(Message::Close(f))) => {
                    return f.map(|f| (u16::from(f.code), f.reason.to_string()))
                }
                Some(Ok(_)) => {}
                other => panic!("no close frame: {other:?}"),
            }
        }
        None
    });
    assert_eq!(close, Some((1001, "the server is stopping".to_string())));
    stopping.join().unwrap();
}

/// How many WebSocket API `account.status` requests the server has handled (answered or
/// queued to be written), from `/metrics`.
fn handled(server: &Server) -> u64 {
    let (status, text) = http(server.admin_addr(), "GET", "/metrics", &[], "");
    assert_eq!(status, 200);
    let text = text.as_str().expect("metrics text").to_string();
    text.lines()
        .filter(|l| {
            l.starts_with("perpcore_gateway_requests_total{")
                && l.contains("listener=\"ws-api\"")
                && l.contains("endpoint=\"account.status\"")
        })
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum()
}

#[test]
fn a_client_that_does_not_read_is_held_back_then_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = two_key_options(dir.path());
    opts.fresh = true;
    opts.limits = perpcore_gateway::RateLimits::unlimited();
    let server = Server::start(opts).expect("serve starts");
    let (api, adm) = (server.public_addr(), server.admin_addr());
    admin_with(adm, ADMIN_TOKEN, "/admin/v1/account", r#"{"account":1}"#);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // One signed account.status frame (an answer of ~1 KB), sent 20,000 times (~20 MB of
    // answers) by a client that reads nothing: more than the sockets' buffers hold.
    const SENT: u64 = 20_000;
    let frame = json!({"id": 1, "method": "account.status",
        "params": signed(KEY_A, SECRET_A, now_ms(), json!({"recvWindow": 60000}))})
    .to_string();
    let (mut slow, fast) = rt.block_on(async { (connect(api).await, connect(api).await) });
    let sender = rt.spawn(async move {
        for _ in 0..SENT {
            if slow
                .feed(Message::Text(frame.clone().into()))
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = slow.flush().await;
        slow
    });
    // The server stops reading once its slots are full: the count stops growing, below
    // what was sent (each check 1 s apart, at most 20).
    let mut last = u64::MAX;
    let mut stuck_at = None;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_secs(1));
        let n = handled(&server);
        if n == last {
            stuck_at = Some(n);
            break;
        }
        last = n;
    }
    let stuck_at = stuck_at.expect("the server stops taking a non-reader's requests");
    assert!(stuck_at < SENT, "{stuck_at} of {SENT} handled");
    // Meanwhile another connection is served at once.
    let mut fast = fast;
    rt.block_on(async {
        let t = Instant::now();
        let a = call(
            &mut fast,
            json!("f"),
            "depth",
            json!({"symbol": "BTCUSDT", "limit": 5}),
        )
        .await;
        assert_eq!(a["status"], 200, "{a}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    });
    // After WRITE_STALL (10 s) without progress the server drops the non-reader: reading
    // now, its stream ends (within 30 s) after fewer answers than it sent.
    let mut slow = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), sender)
            .await
            .expect("the sender ends once the server drops the connection")
            .unwrap()
    });
    std::thread::sleep(Duration::from_secs(12));
    let got = rt.block_on(async {
        let mut got = 0u64;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, slow.next())
                .await
                .expect("ends in time")
            {
                Some(Ok(Message::Text(_))) => got += 1,
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break got,
            }
        }
    });
    assert!(got < SENT, "{got} answers of {SENT}");
    eprintln!("non-reader: {stuck_at} of {SENT} requests handled, {got} answers delivered");
    rt.block_on(async { fast.close(None).await.ok() });
    server.shutdown().expect("clean shutdown");
}

/// A server on `dir` with rate limits off, account 1 holding 100,000 USDT, BTCUSDT's
/// mark at 30,000; and a client runtime.
fn account_1_funded(dir: &std::path::Path) -> (Server, tokio::runtime::Runtime) {
    let mut opts = two_key_options(dir);
    opts.fresh = true;
    opts.limits = perpcore_gateway::RateLimits::unlimited();
    let server = Server::start(opts).expect("serve starts");
    let adm = server.admin_addr();
    admin_with(adm, ADMIN_TOKEN, "/admin/v1/account", r#"{"account":1}"#);
    admin_with(
        adm,
        ADMIN_TOKEN,
        "/admin/v1/deposit",
        r#"{"account":1,"asset":"USDT","amount":"100000"}"#,
    );
    admin_with(
        adm,
        ADMIN_TOKEN,
        "/admin/v1/markPrice",
        r#"{"symbol":"BTCUSDT","price":"30000"}"#,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (server, rt)
}

/// Requests of one connection reach the sequencer in the order they were sent: 100
/// resting buys at one price, sent without waiting, get increasing order ids in that
/// order (the bridge allocates ids as requests arrive) and queue in that order.
#[test]
fn one_connections_requests_are_sequenced_in_the_order_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (server, rt) = account_1_funded(dir.path());
    let api = server.public_addr();
    let ids = rt.block_on(async {
        let mut ws = connect(api).await;
        for i in 0..100 {
            let p = A.sign(json!({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                "timeInForce": "GTC", "quantity": "0.001", "price": "29000",
                "newClientOrderId": format!("o-{i}")}));
            ws.feed(Message::Text(
                json!({"id": i, "method": "order.place", "params": p})
                    .to_string()
                    .into(),
            ))
            .await
            .unwrap();
        }
        ws.flush().await.unwrap();
        let mut ids = vec![0u64; 100];
        for _ in 0..100 {
            let a = next(&mut ws).await;
            let r = ok(&a);
            ids[a["id"].as_u64().unwrap() as usize] = r["orderId"].as_u64().unwrap();
        }
        let _ = ws.close(None).await;
        ids
    });
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids in send order: {ids:?}"
    );
    server.shutdown().expect("clean shutdown");
}

/// A cancel or amend sent right behind its order, before the order's answer, applies to
/// it: the sequencer applies it after the order's own command. 20 pairs on one
/// connection, each a resting buy and, at once, its cancel (by client id) or its amend
/// to 28900.
#[test]
fn a_cancel_or_amend_sent_right_behind_its_order_applies_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let (server, rt) = account_1_funded(dir.path());
    let api = server.public_addr();
    let answers = rt.block_on(async {
        let mut ws = connect(api).await;
        for i in 0..20 {
            let c = format!("p-{i}");
            let place = A.sign(json!({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                "timeInForce": "GTC", "quantity": "0.001", "price": "29000",
                "newClientOrderId": c}));
            let (method, params) = if i % 2 == 0 {
                (
                    "order.cancel",
                    json!({"symbol": "BTCUSDT", "origClientOrderId": c}),
                )
            } else {
                (
                    "order.modify",
                    json!({"symbol": "BTCUSDT", "origClientOrderId": c,
                    "side": "BUY", "quantity": "0.001", "price": "28900"}),
                )
            };
            for (id, m, p) in [
                (2 * i, "order.place", place),
                (2 * i + 1, method, A.sign(params)),
            ] {
                let frame = json!({"id": id, "method": m, "params": p}).to_string();
                ws.feed(Message::Text(frame.into())).await.unwrap();
            }
        }
        ws.flush().await.unwrap();
        let mut answers = vec![Value::Null; 40];
        for _ in 0..40 {
            let a = next(&mut ws).await;
            let id = a["id"].as_u64().unwrap() as usize;
            answers[id] = a;
        }
        let _ = ws.close(None).await;
        answers
    });
    for i in 0..20 {
        let placed = ok(&answers[2 * i]);
        let second = ok(&answers[2 * i + 1]);
        assert_eq!(placed["status"], "NEW", "{placed}");
        assert_eq!(second["orderId"], placed["orderId"]);
        if i % 2 == 0 {
            assert_eq!(second["status"], "CANCELED", "{second}");
        } else {
            assert_eq!(
                (second["status"].as_str(), second["price"].as_str()),
                (Some("NEW"), Some("28900.0")),
                "{second}"
            );
        }
    }
    // The ten amended orders rest at 28900; none at 29000.
    let (s, depth) = http(api, "GET", "/fapi/v1/depth?symbol=BTCUSDT&limit=5", &[], "");
    assert_eq!(s, 200);
    assert_eq!(depth["bids"], json!([["28900.0", "0.010"]]));
    server.shutdown().expect("clean shutdown");
}

/// `userDataStream.start`, `.ping` and `.stop` manage the account's listen key as the
/// REST listen key endpoints do (the API key alone, no signature): the key opens the
/// user data stream on `/ws/<key>`, which shows an order placed over the WebSocket API;
/// `stop` closes that stream (1000), and a `ping` after it answers -1125.
#[test]
fn user_data_stream_keys_over_the_websocket_api() {
    let dir = tempfile::tempdir().unwrap();
    let (server, rt) = account_1_funded(dir.path());
    let api = server.public_addr();
    rt.block_on(async {
        let mut ws = connect(api).await;
        let key_only = json!({"apiKey": KEY_A});
        let started = call(&mut ws, json!(1), "userDataStream.start", key_only.clone()).await;
        let key = ok(&started)["listenKey"].as_str().unwrap().to_string();
        assert_eq!(key.len(), 64, "{started}");
        let pinged = call(&mut ws, json!(2), "userDataStream.ping", key_only.clone()).await;
        assert_eq!(ok(&pinged)["listenKey"], json!(key));
        let no_key = call(&mut ws, json!(3), "userDataStream.start", json!({})).await;
        assert_eq!(code(&no_key), -2014);
        // The user stream shows an order placed over the WebSocket API.
        let url = format!("ws://{api}/ws/{key}");
        let (mut user, _) =
            tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(url.as_str()))
                .await
                .expect("connect in time")
                .expect("connect");
        let placed = call(
            &mut ws,
            json!(4),
            "order.place",
            A.sign(json!({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                "timeInForce": "GTC", "quantity": "0.001", "price": "29000",
                "newClientOrderId": "via-ws-api"})),
        )
        .await;
        assert_eq!(ok(&placed)["status"], "NEW");
        let deadline = Instant::now() + DEADLINE;
        let mut seen = false;
        for _ in 0..100 {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = tokio::time::timeout(left, user.next())
                .await
                .expect("a frame in time");
            if let Some(Ok(Message::Text(t))) = m {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["e"] == "ORDER_TRADE_UPDATE" && v["o"]["c"] == "via-ws-api" {
                    seen = true;
                    break;
                }
            }
        }
        assert!(seen, "no ORDER_TRADE_UPDATE for the order");
        // stop: the user stream closes; a ping then finds no key.
        let stopped = call(&mut ws, json!(5), "userDataStream.stop", key_only.clone()).await;
        assert_eq!(ok(&stopped), &json!({}));
        let mut close = None;
        for _ in 0..100 {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, user.next())
                .await
                .expect("closed in time")
            {
                Some(Ok(Message::Close(f))) => {
                    close = f.map(|f| u16::from(f.code));
                    break;
                }
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        assert_eq!(close, Some(1000));
        let after = call(&mut ws, json!(6), "userDataStream.ping", key_only).await;
        assert_eq!(code(&after), -1125, "{after}");
        let _ = ws.close(None).await;
    });
    server.shutdown().expect("clean shutdown");
}
