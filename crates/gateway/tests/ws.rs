//! The websocket streams of `perpcore serve`, in-process on 127.0.0.1 (ports chosen by
//! the OS, a temporary journal), with tokio-tungstenite as the client. REST calls are
//! signed as ccxt signs them (see tests/serve.rs). Every loop is bounded in count and in
//! time (`DEADLINE`), every socket has a timeout, and each test shuts its server down.
//!
//! Figures: default.toml's BTCUSDT (tick 0.1, lot 0.001, maker fee 0.0002, taker fee
//! 0.0005, first bracket maintenance margin rate 0.004 with cum 0, default leverage 20).

mod common;

use common::{http, now_ms, Client};
use futures_util::{SinkExt as _, StreamExt as _};
use perpcore_gateway::{ApiKeys, ServeOptions, Server};
use perpcore_types::AccountId;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
const KEYS: [(&str, &str, u64); 3] = [
    ("key-a", "secret-a-0123456789", 1),
    ("key-b", "secret-b-0123456789", 2),
    ("key-c", "secret-c-0123456789", 3),
];
/// The longest any one wait in these tests may take.
const DEADLINE: Duration = Duration::from_secs(20);

struct Rig {
    _dir: tempfile::TempDir,
    server: Option<Server>,
    api: SocketAddr,
    adm: SocketAddr,
}

impl Rig {
    fn start(tweak: impl FnOnce(&mut ServeOptions)) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mut keys = ApiKeys::default();
        for (k, s, a) in KEYS {
            keys.insert(k, s.as_bytes(), AccountId(a)).unwrap();
        }
        let mut opts = ServeOptions::new(
            dir.path().to_path_buf(),
            perpcore_config::default_config(),
            keys,
            ADMIN_TOKEN.to_string(),
        );
        opts.listen = "127.0.0.1:0".parse().unwrap();
        opts.admin_listen = "127.0.0.1:0".parse().unwrap();
        opts.fresh = true;
        tweak(&mut opts);
        let server = Server::start(opts).expect("serve starts");
        let (api, adm) = (server.public_addr(), server.admin_addr());
        Rig {
            _dir: dir,
            server: Some(server),
            api,
            adm,
        }
    }

    fn admin(&self, path: &str, body: Value) -> Value {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let (status, v) = http(
            self.adm,
            "POST",
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            &body.to_string(),
        );
        assert_eq!(status, 200, "{path} {body}: {v}");
        v
    }

    /// Accounts 1 and 2 with 100,000 USDT, account 3 with `c_usdt`; BTCUSDT's mark 30000.
    fn fund(&self, c_usdt: &str) {
        for (account, amount) in [(1, "100000"), (2, "100000"), (3, c_usdt)] {
            self.admin("/admin/v1/account", json!({ "account": account }));
            self.admin(
                "/admin/v1/deposit",
                json!({"account": account, "asset": "USDT", "amount": amount}),
            );
        }
        self.mark("30000");
    }

    fn mark(&self, price: &str) {
        self.admin(
            "/admin/v1/markPrice",
            json!({"symbol": "BTCUSDT", "price": price}),
        );
    }

    fn client(&self, n: usize) -> Client {
        Client {
            addr: self.api,
            key: KEYS[n].0,
            secret: KEYS[n].1,
        }
    }

    fn depth(&self) -> Value {
        let (status, v) = http(
            self.api,
            "GET",
            "/fapi/v1/depth?symbol=BTCUSDT&limit=1000",
            &[],
            "",
        );
        assert_eq!(status, 200, "{v}");
        v
    }

    fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().expect("clean shutdown");
        }
    }
}

/// A client runtime: one worker for spawned readers; `block_on` runs on the test thread
/// (so the blocking REST helper does not starve spawned tasks).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(api: SocketAddr, path: &str) -> Ws {
    let url = format!("ws://{api}{path}");
    let (ws, _) = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(url.as_str()))
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    ws
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next text frame as JSON; `None` at a close frame or the end of the stream.
async fn next(ws: &mut Ws, until: Instant) -> Option<Value> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let m = tokio::time::timeout(left, ws.next())
            .await
            .expect("a frame before the deadline")?;
        match m.ok()? {
            Message::Text(t) => return Some(serde_json::from_str(t.as_str()).unwrap()),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

/// Frames until one satisfies `pred` (at most 10,000 frames, `DEADLINE`); all of them.
async fn until(ws: &mut Ws, mut pred: impl FnMut(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    for _ in 0..10_000 {
        let v = next(ws, deadline).await.expect("stream open");
        let done = pred(&v);
        seen.push(v);
        if done {
            return seen;
        }
    }
    panic!("no matching frame in 10,000: last {:?}", seen.last());
}

/// The close frame's code and reason (frames before it are skipped; at most 100,000).
async fn close_of<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Option<(CloseCode, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let deadline = Instant::now() + DEADLINE;
    for _ in 0..100_000 {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(f))) => {
                return f.map(|f| (f.code, f.reason.as_str().to_string()))
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
    None
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("a string: {v}"))
}

// ---------------------------------------------------------------- depth

/// Bids and asks as (price, quantity) text, best first.
type Levels = (Vec<(String, String)>, Vec<(String, String)>);

/// A local order book kept as Binance documents for USDⓈ-M futures ("How to manage a
/// local order book correctly",
/// https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/How-to-manage-a-local-order-book-correctly):
/// buffer the stream's events, take a REST snapshot, drop events with `u` <
/// `lastUpdateId`, the first applied event must have `U <= lastUpdateId <= u`, every
/// later one `pu` = the previous event's `u`; quantities are absolute, zero removes.
struct LocalBook {
    last: u64,
    synced: bool,
    bids: BTreeMap<String, String>,
    asks: BTreeMap<String, String>,
}

impl LocalBook {
    fn from_snapshot(v: &Value) -> LocalBook {
        let side = |k: &str| {
            v[k].as_array()
                .unwrap()
                .iter()
                .map(|l| (s(&l[0]).to_string(), s(&l[1]).to_string()))
                .collect()
        };
        LocalBook {
            last: v["lastUpdateId"].as_u64().unwrap(),
            synced: false,
            bids: side("bids"),
            asks: side("asks"),
        }
    }

    /// Apply one event by the rules; whether it was applied.
    fn apply(&mut self, e: &Value) -> bool {
        assert_eq!(e["e"], "depthUpdate");
        let (first, last, prev) = (
            e["U"].as_u64().unwrap(),
            e["u"].as_u64().unwrap(),
            e["pu"].as_u64().unwrap(),
        );
        if last < self.last {
            assert!(!self.synced, "an event older than the book after sync: {e}");
            return false;
        }
        if self.synced {
            assert_eq!(prev, self.last, "pu chains to the previous u: {e}");
        } else {
            assert!(
                first <= self.last && self.last <= last,
                "first event: U <= lastUpdateId {} <= u: {e}",
                self.last
            );
            self.synced = true;
        }
        for (k, side) in [("b", &mut self.bids), ("a", &mut self.asks)] {
            for l in e[k].as_array().unwrap() {
                let (p, q) = (s(&l[0]).to_string(), s(&l[1]).to_string());
                if q.trim_start_matches(['0', '.']).is_empty() {
                    side.remove(&p);
                } else {
                    side.insert(p, q);
                }
            }
        }
        self.last = last;
        true
    }

    /// The book as `GET /fapi/v1/depth` lists it: bids highest first, asks lowest first.
    fn levels(&self) -> Levels {
        let num = |p: &String| p.parse::<f64>().unwrap();
        let mut bids: Vec<_> = self.bids.clone().into_iter().collect();
        bids.sort_by(|a, b| num(&b.0).total_cmp(&num(&a.0)));
        let mut asks: Vec<_> = self.asks.clone().into_iter().collect();
        asks.sort_by(|a, b| num(&a.0).total_cmp(&num(&b.0)));
        (bids, asks)
    }
}

fn rest_levels(v: &Value) -> Levels {
    let side = |k: &str| {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|l| (s(&l[0]).to_string(), s(&l[1]).to_string()))
            .collect()
    };
    (side("bids"), side("asks"))
}

#[test]
fn depth_diffs_rebuild_the_rest_book() {
    let rig = Rig::start(|_| {});
    rig.fund("1000");
    let (a, b) = (rig.client(0), rig.client(1));
    let rt = runtime();
    rt.block_on(async {
        // Subscribed by method frame on /ws, and by URL on the combined /stream.
        let mut ws = connect(rig.api, "/ws").await;
        send(
            &mut ws,
            json!({"method": "SUBSCRIBE", "params": ["btcusdt@depth@100ms"], "id": 1}),
        )
        .await;
        let first = until(&mut ws, |v| v.get("id").is_some()).await;
        assert_eq!(first.last().unwrap(), &json!({"result": null, "id": 1}));
        let mut combined = connect(rig.api, "/stream?streams=btcusdt@depth@100ms").await;

        // Before the snapshot: asks 0.010 @ 30010, 0.005 @ 30020; bids 0.004 @ 29990,
        // 0.003 @ 29980.
        a.order("symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.010&price=30010");
        let a2 = a.order(
            "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.005&price=30020",
        );
        let b1 = b
            .order("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.004&price=29990");
        b.order("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.003&price=29980");
        let snapshot = rig.depth();
        let mut book = LocalBook::from_snapshot(&snapshot);

        // After it: another 0.002 ask at 30010; B buys 0.012 at 30010 (takes both asks
        // there: the level is gone); B's 29990 bid amended to 29995; A's 30020 ask
        // cancelled; a last ask of 0.001 at 30030.
        a.order("symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.002&price=30010");
        b.order("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=IOC&quantity=0.012&price=30010");
        b.ok(
            "PUT",
            "/fapi/v1/order",
            &format!("symbol=BTCUSDT&orderId={b1}&side=BUY&quantity=0.004&price=29995"),
        );
        a.ok(
            "DELETE",
            "/fapi/v1/order",
            &format!("symbol=BTCUSDT&orderId={a2}"),
        );
        a.order("symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.001&price=30030");
        let last = rig.depth();
        let target = last["lastUpdateId"].as_u64().unwrap();
        // Bids 29995 (0.004, amended) and 29980 (0.003); asks 30030 (0.001) only.
        let expected = (
            vec![
                ("29995.0".to_string(), "0.004".to_string()),
                ("29980.0".to_string(), "0.003".to_string()),
            ],
            vec![("30030.0".to_string(), "0.001".to_string())],
        );
        assert_eq!(rest_levels(&last), expected);

        let mut applied = 0;
        until(&mut ws, |e| {
            if book.apply(e) {
                applied += 1;
            }
            book.synced && book.last >= target
        })
        .await;
        assert!(applied >= 1);
        assert_eq!(book.last, target, "the stream reached the last command");
        assert_eq!(book.levels(), expected, "the stream rebuilt the REST book");

        // The combined stream carries the same events, wrapped.
        let wrapped = until(&mut combined, |v| v["data"]["u"].as_u64() >= Some(target)).await;
        for w in &wrapped {
            assert_eq!(w["stream"], "btcusdt@depth@100ms");
            assert_eq!(w["data"]["e"], "depthUpdate");
        }
    });
    rig.stop();
}

// ---------------------------------------------------------------- bookTicker, aggTrade, markPrice

#[test]
fn book_ticker_agg_trade_and_mark_price_by_hand() {
    let rig = Rig::start(|_| {});
    rig.fund("1000");
    // Index 30005.5, funding rate 0.0001 (0.01%) for a funding time 8 h from now.
    let next_funding = (now_ms() / 3_600_000 + 8) * 3_600_000;
    rig.admin(
        "/admin/v1/indexPrice",
        json!({"symbol": "BTCUSDT", "price": "30005.5"}),
    );
    rig.admin(
        "/admin/v1/fundingRate",
        json!({"symbol": "BTCUSDT", "rate": "0.0001", "nextFundingTime": next_funding}),
    );
    let (a, b) = (rig.client(0), rig.client(1));
    let rt = runtime();
    rt.block_on(async {
        let mut ws = connect(rig.api, "/market/ws/btcusdt@bookTicker").await;
        send(
            &mut ws,
            json!({"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade", "btcusdt@markPrice@1s"], "id": 7}),
        )
        .await;
        until(&mut ws, |v| v["id"] == 7).await;

        b.order("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.002&price=29990");
        a.order("symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.005&price=30010");
        a.order("symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.003&price=30010");
        a.order("symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.002&price=30020");
        // B buys 0.007 up to 30020 (IOC): 0.005 (A's first order) + 0.002 of A's second,
        // both at 30010; one aggregate trade, ids seq × 10^6 + 0 and + 1 for the
        // command's seq (its lastUpdateId: nothing else happened since).
        b.order("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=IOC&quantity=0.007&price=30020");
        let seq = rig.depth()["lastUpdateId"].as_u64().unwrap();

        let mut ticker = None;
        let mut trade = None;
        until(&mut ws, |v| {
            match v["e"].as_str() {
                Some("bookTicker") if v["u"].as_u64() == Some(seq) => ticker = Some(v.clone()),
                Some("aggTrade") => trade = Some(v.clone()),
                _ => {}
            }
            ticker.is_some() && trade.is_some()
        })
        .await;
        let (ticker, trade) = (ticker.unwrap(), trade.unwrap());
        // Best bid B's 0.002 at 29990; best ask 30010 with 0.003 − 0.002 = 0.001 left.
        assert_eq!(
            (&ticker["s"], &ticker["b"], &ticker["B"], &ticker["a"], &ticker["A"]),
            (&json!("BTCUSDT"), &json!("29990.0"), &json!("0.002"), &json!("30010.0"), &json!("0.001"))
        );
        assert_eq!(trade["s"], "BTCUSDT");
        assert_eq!((&trade["p"], &trade["q"]), (&json!("30010.0"), &json!("0.007")));
        assert_eq!(trade["f"].as_u64(), Some(seq * 1_000_000));
        assert_eq!(trade["l"].as_u64(), Some(seq * 1_000_000 + 1));
        assert_eq!(trade["a"], trade["f"]);
        assert_eq!(trade["m"], false, "the buyer took: not the maker");

        // markPrice@1s: the engine's mark, index, rate and next funding time.
        let marks = until(&mut ws, |v| v["e"] == "markPriceUpdate").await;
        let m = marks.last().unwrap();
        assert_eq!(m["s"], "BTCUSDT");
        assert_eq!(m["p"], "30000.00000000");
        assert_eq!(m["i"], "30005.50000000");
        assert_eq!(m["r"], "0.00010000");
        assert_eq!(m["T"].as_u64(), Some(next_funding));
    });
    rig.stop();
}

// ---------------------------------------------------------------- user data stream

fn orders_of(frames: &[Value]) -> Vec<(u64, String, String)> {
    frames
        .iter()
        .filter(|f| f["e"] == "ORDER_TRADE_UPDATE")
        .map(|f| {
            (
                f["o"]["i"].as_u64().unwrap(),
                s(&f["o"]["x"]).to_string(),
                s(&f["o"]["X"]).to_string(),
            )
        })
        .collect()
}

#[test]
fn user_streams_carry_only_their_own_account() {
    let rig = Rig::start(|_| {});
    rig.fund("1000");
    let (a, b) = (rig.client(0), rig.client(1));
    // The key header is required and must be known.
    let (status, v) = http(rig.api, "POST", "/fapi/v1/listenKey", &[], "");
    assert_eq!((status, v["code"].as_i64()), (401, Some(-2014)));
    let (status, v) = http(
        rig.api,
        "POST",
        "/fapi/v1/listenKey",
        &[("X-MBX-APIKEY", "nobody")],
        "",
    );
    assert_eq!((status, v["code"].as_i64()), (401, Some(-2015)));
    // One key per account: a second POST returns it again; PUT keeps it alive.
    let key_b = s(&b.listen_key("POST").1["listenKey"]).to_string();
    assert_eq!(key_b.len(), 64);
    assert_eq!(b.listen_key("POST").1["listenKey"], key_b.as_str());
    assert_eq!(b.listen_key("PUT"), (200, json!({ "listenKey": key_b })));
    let key_a = s(&a.listen_key("POST").1["listenKey"]).to_string();
    assert_ne!(key_a, key_b);

    let rt = runtime();
    rt.block_on(async {
        let mut ws_b = connect(rig.api, &format!("/ws/{key_b}")).await;
        let mut ws_a = connect(rig.api, &format!("/private/ws?listenKey={key_a}")).await;

        // B bids 0.004 at 29000; A sells 0.010 at 29000: A takes B's bid (0.004 at 29000,
        // notional 116), and 0.006 of A's order rests; then A cancels it.
        let ob = b.order("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.004&price=29000&newClientOrderId=b-bid-1");
        let oa = a.order("symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.010&price=29000");
        a.ok("DELETE", "/fapi/v1/order", &format!("symbol=BTCUSDT&orderId={oa}"));

        let fb = until(&mut ws_b, |v| v["e"] == "ACCOUNT_UPDATE").await;
        assert_eq!(
            orders_of(&fb),
            vec![
                (ob, "NEW".into(), "NEW".into()),
                (ob, "TRADE".into(), "FILLED".into()),
            ]
        );
        assert_eq!(fb[0]["o"]["c"], "b-bid-1");
        let fill = &fb[1]["o"];
        // Maker fee 116 × 0.0002 = 0.0232 USDT.
        assert_eq!(
            (&fill["l"], &fill["L"], &fill["z"], &fill["ap"], &fill["n"], &fill["N"], &fill["m"]),
            (&json!("0.004"), &json!("29000.0"), &json!("0.004"), &json!("29000.0"), &json!("0.02320000"), &json!("USDT"), &json!(true))
        );
        let acct = &fb.last().unwrap()["a"];
        // Wallet 100000 − 0.0232; long 0.004 from 29000, uPnL at the 30000 mark
        // 0.004 × (30000 − 29000) = 4.
        assert_eq!(acct["m"], "ORDER");
        assert_eq!(
            acct["B"],
            json!([{"a": "USDT", "wb": "99999.97680000", "cw": "99999.97680000", "bc": "0.00000000"}])
        );
        assert_eq!(
            acct["P"],
            json!([{"s": "BTCUSDT", "pa": "0.004", "ep": "29000.0", "bep": "29000.0", "up": "4.00000000", "mt": "cross", "iw": "0.00000000", "ps": "BOTH"}])
        );

        let fa = until(&mut ws_a, |v| v["o"]["x"] == "CANCELED").await;
        assert_eq!(
            orders_of(&fa),
            vec![
                (oa, "NEW".into(), "NEW".into()),
                (oa, "TRADE".into(), "PARTIALLY_FILLED".into()),
                (oa, "CANCELED".into(), "CANCELED".into()),
            ]
        );
        // Taker fee 116 × 0.0005 = 0.058.
        assert_eq!(fa[1]["o"]["n"], "0.05800000");
        assert_eq!(fa[1]["o"]["m"], false);
        let acct = fa.iter().find(|f| f["e"] == "ACCOUNT_UPDATE").unwrap();
        assert_eq!(acct["a"]["B"][0]["wb"], "99999.94200000");
        assert_eq!(acct["a"]["P"][0]["pa"], "-0.004");
        assert_eq!(acct["a"]["P"][0]["up"], "-4.00000000");
        // Neither stream names the other account's order.
        assert!(fa.iter().all(|f| f["o"]["i"] != ob));
        assert!(fb.iter().all(|f| f["o"]["i"] != oa));

        // DELETE closes B's stream; PUT then finds no key.
        assert_eq!(b.listen_key("DELETE"), (200, json!({})));
        let (code, reason) = close_of(&mut ws_b).await.expect("a close frame");
        assert_eq!((code, reason.as_str()), (CloseCode::Normal, "listen key deleted"));
        let (status, v) = b.listen_key("PUT");
        assert_eq!((status, v["code"].as_i64()), (400, Some(-1125)));
        // An unknown listen key is refused at the handshake.
        let url = format!("ws://{}/ws/{key_b}", rig.api);
        assert!(tokio_tungstenite::connect_async(url.as_str()).await.is_err());
    });
    rig.stop();
}

/// Account C: 20 USDT, buys 0.010 BTC at 30000 from A (notional 300, initial margin at
/// leverage 20 = 15, taker fee 300 × 0.0005 = 0.15: wallet 19.85). Maintenance margin at
/// mark M: 0.010 × M × 0.004; margin balance 19.85 + 0.010 × (M − 30000).
/// - M = 28200: MM 1.128, balance 1.85, ratio 0.61: no call.
/// - M = 28150: MM 1.126, balance 1.35, ratio 0.834 ≥ 0.8: MARGIN_CALL (not liquidated:
///   1.35 > 1.126).
/// - M = 28140: ratio still above 0.8 (1.1256 / 1.25): no second call until it falls back.
#[test]
fn margin_call_when_the_ratio_crosses_eighty_percent() {
    let rig = Rig::start(|_| {});
    rig.fund("20");
    let (a, c) = (rig.client(0), rig.client(2));
    let key = s(&c.listen_key("POST").1["listenKey"]).to_string();
    let rt = runtime();
    rt.block_on(async {
        let mut ws = connect(rig.api, &format!("/ws/{key}")).await;
        a.order("symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.010&price=30000");
        c.order("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=IOC&quantity=0.010&price=30000");
        let marker = |amount: &str| {
            rig.admin(
                "/admin/v1/deposit",
                json!({"account": 3, "asset": "USDT", "amount": amount}),
            );
        };
        rig.mark("28200");
        // A deposit of 10^-8 is a marker: its ACCOUNT_UPDATE comes after anything the
        // mark produced.
        marker("0.00000001");
        let f = until(&mut ws, |v| v["a"]["m"] == "DEPOSIT").await;
        assert!(f.iter().all(|v| v["e"] != "MARGIN_CALL"), "{f:?}");
        let trade = f.iter().find(|v| v["a"]["m"] == "ORDER").unwrap();
        assert_eq!(trade["a"]["B"][0]["wb"], "19.85000000");

        rig.mark("28150");
        let f = until(&mut ws, |v| v["e"] == "MARGIN_CALL").await;
        let call = f.last().unwrap();
        assert_eq!(call["cw"], "19.85000001");
        assert_eq!(
            call["p"],
            json!([{"s": "BTCUSDT", "ps": "BOTH", "pa": "0.010", "mt": "CROSSED", "iw": "0.00000000",
                    "mp": "28150.00000000", "up": "-18.50000000", "mm": "1.12600000"}])
        );
        rig.mark("28140");
        marker("0.00000001");
        let f = until(&mut ws, |v| v["a"]["m"] == "DEPOSIT").await;
        assert!(f.iter().all(|v| v["e"] != "MARGIN_CALL"), "one call per crossing: {f:?}");
    });
    rig.stop();
}

// ---------------------------------------------------------------- protection

#[test]
fn a_slow_consumer_is_disconnected_and_others_keep_their_data() {
    let rig = Rig::start(|o| {
        o.streams.outbound_frames = 64;
        o.streams.outbound_bytes = 16 * 1024;
        o.streams.socket_send_buffer = Some(8 * 1024);
    });
    rig.fund("1000");
    let a = rig.client(0);
    let rt = runtime();
    rt.block_on(async {
        // The slow client: a 4 KiB receive buffer, and it never reads.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(rig.api).await.unwrap();
        let url = format!(
            "ws://{}/stream?streams=btcusdt@bookTicker/btcusdt@aggTrade/btcusdt@depth@100ms",
            rig.api
        );
        let (mut slow, _) = tokio_tungstenite::client_async(url.as_str(), tcp)
            .await
            .unwrap();
        // The fast client counts its bookTicker frames on the worker thread.
        let fast = connect(rig.api, "/ws/btcusdt@bookTicker").await;
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = count.clone();
        let reader = tokio::spawn(async move {
            let mut fast = fast;
            while let Some(Ok(m)) = fast.next().await {
                if matches!(m, Message::Text(_)) {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        // Traffic: an ask placed and cancelled at the top of the book, each a bookTicker
        // frame, until the server gives up on the slow client.
        let started = Instant::now();
        let mut cycles = 0;
        let place_cancel = || {
            let id = a.order(
                "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.001&price=30050",
            );
            a.ok(
                "DELETE",
                "/fapi/v1/order",
                &format!("symbol=BTCUSDT&orderId={id}"),
            );
        };
        while rig.server.as_ref().unwrap().stream_stats().slow_disconnects == 0 {
            assert!(
                cycles < 20_000 && started.elapsed() < Duration::from_secs(60),
                "the slow client was never disconnected"
            );
            place_cancel();
            cycles += 1;
        }
        // The fast client keeps receiving: 20 more cycles, at least 40 more frames.
        let before = count.load(std::sync::atomic::Ordering::Relaxed);
        for _ in 0..20 {
            place_cancel();
        }
        let deadline = Instant::now() + DEADLINE;
        while count.load(std::sync::atomic::Ordering::Relaxed) < before + 40 {
            assert!(Instant::now() < deadline, "the fast client stalled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The slow client, reading at last, finds the close frame and its reason.
        let (code, reason) = close_of(&mut slow).await.expect("a close frame");
        assert_eq!(code, CloseCode::Policy);
        assert!(reason.contains("slow consumer"), "{reason}");
        assert_eq!(
            rig.server.as_ref().unwrap().stream_stats().slow_disconnects,
            1
        );
        reader.abort();
    });
    rig.stop();
}

#[test]
fn bad_frames_get_binance_errors_and_limits_hold() {
    let rig = Rig::start(|o| {
        o.streams.max_message_bytes = 4096;
        o.streams.max_connections = 4;
    });
    rig.fund("1000");
    let rt = runtime();
    rt.block_on(async {
        let mut ws = connect(rig.api, "/ws/0").await;
        let deadline = Instant::now() + DEADLINE;
        macro_rules! ask {
            ($text:expr) => {{
                ws.send(Message::Text($text.into())).await.unwrap();
                next(&mut ws, deadline).await.expect("a reply")
            }};
        }
        let r = ask!("{not json");
        assert_eq!(r["code"], 3, "{r}");
        let r = ask!(r#"{"method":"SUBSCRIBE","params":["btcusdt@nope"],"id":2}"#);
        assert_eq!(
            (r["code"].as_i64(), r["id"].as_u64()),
            (Some(2), Some(2)),
            "{r}"
        );
        let r = ask!(r#"{"method":"FETCH","id":3}"#);
        assert_eq!(r["code"], 2, "{r}");
        let r = ask!(r#"{"method":"SUBSCRIBE","params":["btcusdt@aggTrade"],"id":"four"}"#);
        assert_eq!(r["code"], 2, "{r}");
        let r = ask!(r#"{"method":"SUBSCRIBE","params":["btcusdt@aggTrade"],"id":5}"#);
        assert_eq!(r, json!({"result": null, "id": 5}));
        let r = ask!(r#"{"method":"LIST_SUBSCRIPTIONS","id":6}"#);
        assert_eq!(r, json!({"result": ["btcusdt@aggTrade"], "id": 6}));
        let r = ask!(r#"{"method":"SET_PROPERTY","params":["combined","yes"],"id":7}"#);
        assert_eq!(r["code"], 1, "{r}");
        let r = ask!(r#"{"method":"SET_PROPERTY","params":["colour",true],"id":8}"#);
        assert_eq!(r["code"], 0, "{r}");
        let r = ask!(r#"{"method":"GET_PROPERTY","params":["combined"],"id":9}"#);
        assert_eq!(r, json!({"result": false, "id": 9}));

        // 10 messages a second at most: the 11th within the second closes (1008). (This
        // connection sent 9 so far in its window; 25 more overflow it or, should the
        // window turn over during the burst, the next one.)
        for i in 0..25 {
            if ws
                .send(Message::Text(
                    format!(r#"{{"method":"LIST_SUBSCRIPTIONS","id":{i}}}"#).into(),
                ))
                .await
                .is_err()
            {
                break;
            }
        }
        let (code, reason) = close_of(&mut ws).await.expect("a close frame");
        assert_eq!(code, CloseCode::Policy, "{reason}");

        // A message above 4 KiB closes with 1009.
        let mut big = connect(rig.api, "/ws").await;
        big.send(Message::Text("x".repeat(5000).into()))
            .await
            .unwrap();
        let (code, _) = close_of(&mut big).await.expect("a close frame");
        assert_eq!(code, CloseCode::Size);

        // Unknown streams and listen keys are refused at the handshake.
        for path in ["/ws/btcusdt@nope", &format!("/ws/{}", "k".repeat(64))] {
            let url = format!("ws://{}{path}", rig.api);
            match tokio_tungstenite::connect_async(url.as_str()).await {
                Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                    assert_eq!(r.status(), 400, "{path}")
                }
                other => panic!("{path}: {other:?}"),
            }
        }

        // At most 4 connections: the 5th is refused with 503 while 4 are open.
        let deadline = Instant::now() + DEADLINE;
        while rig.server.as_ref().unwrap().stream_stats().connections > 0 {
            assert!(
                Instant::now() < deadline,
                "closed connections are not counted"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut open = Vec::new();
        for _ in 0..4 {
            open.push(connect(rig.api, "/ws").await);
        }
        let url = format!("ws://{}/ws", rig.api);
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
            other => panic!("a 5th connection: {other:?}"),
        }
    });
    rig.stop();
}

#[test]
fn an_expired_listen_key_ends_its_stream() {
    let rig = Rig::start(|o| o.streams.listen_key_ttl = Duration::from_millis(1500));
    rig.fund("1000");
    let b = rig.client(1);
    let key = s(&b.listen_key("POST").1["listenKey"]).to_string();
    let rt = runtime();
    rt.block_on(async {
        let mut ws = connect(rig.api, &format!("/ws/{key}")).await;
        let f = until(&mut ws, |v| v["e"] == "listenKeyExpired").await;
        assert_eq!(f.last().unwrap()["listenKey"], key.as_str());
        let (code, reason) = close_of(&mut ws).await.expect("a close frame");
        assert_eq!(
            (code, reason.as_str()),
            (CloseCode::Normal, "listen key expired")
        );
    });
    let (status, v) = b.listen_key("PUT");
    assert_eq!((status, v["code"].as_i64()), (400, Some(-1125)));
    let fresh = s(&b.listen_key("POST").1["listenKey"]).to_string();
    assert_ne!(fresh, key);
    rig.stop();
}
