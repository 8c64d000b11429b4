//! `perpcore serve` in-process on 127.0.0.1 (ports chosen by the OS, a temporary
//! journal): rate limits (weights and order counts, per client address and per account,
//! the headers, 429/418), the Prometheus `/metrics` text after known requests, account
//! trades and income worked by hand, and hedge-mode orders. Requests are signed as ccxt
//! signs them (see tests/serve.rs). Every socket has a 10 s timeout, every wait loop a
//! bound, and each test stops the server it started.
//!
//! Figures: default.toml's BTCUSDT (tick 0.1, lot 0.001, maker fee 0.0002, taker fee
//! 0.0005, maximum quantity 1000).

mod common;

use common::{connect, now_ms, Answer, LOCAL};
use perpcore_gateway::{ApiKeys, RateLimits, ServeOptions, Server};
use perpcore_types::AccountId;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
const KEYS: [(&str, &str, u64); 2] = [
    ("key-a", "secret-a-0123456789", 1),
    ("key-b", "secret-b-0123456789", 2),
];

trait Weight {
    fn weight(&self) -> u32;
}

impl Weight for Answer {
    fn weight(&self) -> u32 {
        self.header("x-mbx-used-weight-1m")
            .unwrap_or_else(|| panic!("no weight header: {:?}", self.headers))
            .parse()
            .unwrap()
    }
}

/// One HTTP/1.1 request (Connection: close) from `from`.
fn http(
    from: IpAddr,
    to: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    common::request(from, to, method, target, headers, body)
}

/// The signed client of `tests/common` (as ccxt signs), calling from a chosen loopback
/// address.
struct Client {
    c: common::Client,
    from: IpAddr,
}

impl Client {
    fn new(server: &Server, which: usize) -> Client {
        Client {
            c: common::Client {
                addr: server.public_addr(),
                key: KEYS[which].0,
                secret: KEYS[which].1,
            },
            from: LOCAL,
        }
    }
    /// A signed call as ccxt makes it.
    fn call(&self, method: &str, path: &str, params: &str) -> Answer {
        self.c
            .answer_from(self.from, method, path, params, now_ms())
    }
    fn ok(&self, method: &str, path: &str, params: &str) -> Value {
        let a = self.call(method, path, params);
        assert_eq!(a.status, 200, "{method} {path} {params}: {}", a.text);
        a.body
    }
    fn code(&self, method: &str, path: &str, params: &str) -> i64 {
        let a = self.call(method, path, params);
        assert_ne!(
            a.status, 200,
            "{method} {path} {params} should fail: {}",
            a.text
        );
        a.body["code"].as_i64().unwrap()
    }
}

fn admin(server: &Server, path: &str, body: Value) -> Value {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let a = http(
        LOCAL,
        server.admin_addr(),
        "POST",
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &body.to_string(),
    );
    assert_eq!(a.status, 200, "{path} {body}: {}", a.text);
    a.body
}

fn start(dir: &std::path::Path, limits: RateLimits) -> Server {
    let mut keys = ApiKeys::default();
    for (k, s, a) in KEYS {
        keys.insert(k, s.as_bytes(), AccountId(a)).unwrap();
    }
    let mut opts = ServeOptions::new(
        dir.to_path_buf(),
        perpcore_config::default_config(),
        keys,
        ADMIN_TOKEN.to_string(),
    );
    opts.listen = "127.0.0.1:0".parse().unwrap();
    opts.admin_listen = "127.0.0.1:0".parse().unwrap();
    opts.fresh = true;
    opts.limits = limits;
    Server::start(opts).expect("serve starts")
}

/// Accounts 1 and 2 with 100,000 USDT each; BTCUSDT's mark at 30,000.
fn fund(server: &Server) {
    for a in [1, 2] {
        admin(server, "/admin/v1/account", json!({"account": a}));
        admin(
            server,
            "/admin/v1/deposit",
            json!({"account": a, "asset": "USDT", "amount": "100000"}),
        );
    }
    admin(
        server,
        "/admin/v1/markPrice",
        json!({"symbol": "BTCUSDT", "price": "30000"}),
    );
}

/// The limits' windows are fixed and aligned to the clock: if fewer than `need_ms` are
/// left in the current `window_ms`, wait for the next one (at most `need_ms`), so that a
/// test's counts are not reset half-way.
fn align(window_ms: u64, need_ms: u64) {
    let left = window_ms - now_ms() % window_ms;
    if left < need_ms {
        std::thread::sleep(Duration::from_millis(left + 20));
    }
}

#[test]
fn weights_per_address_and_orders_per_account() {
    let dir = tempfile::tempdir().unwrap();
    let limits = RateLimits {
        weight_per_minute: 30,
        orders_per_10s: 3,
        ban_after_refusals: 2,
        ..RateLimits::default()
    };
    let server = start(dir.path(), limits);
    fund(&server);
    let api = server.public_addr();
    let a = Client::new(&server, 0);
    let b = Client::new(&server, 1);

    // exchangeInfo lists the configured limits.
    let info = http(LOCAL, api, "GET", "/fapi/v1/exchangeInfo", &[], "");
    assert_eq!(
        info.body["rateLimits"],
        json!([
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 30},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 3},
        ])
    );

    // At least 15 s left in this minute (waiting at most 15 s), so no count is reset
    // below; counts are read relative to this first ping's.
    align(60_000, 15_000);
    let start = http(LOCAL, api, "GET", "/fapi/v1/ping", &[], "").weight();
    // Weights: ping 1, depth limit=5 2, depth (default limit 500) 10, account 5.
    let w = http(
        LOCAL,
        api,
        "GET",
        "/fapi/v1/depth?symbol=BTCUSDT&limit=5",
        &[],
        "",
    );
    assert_eq!(w.weight(), start + 2);
    let w = http(LOCAL, api, "GET", "/fapi/v1/depth?symbol=BTCUSDT", &[], "");
    assert_eq!(w.weight(), start + 12);
    let acct = a.call("GET", "/fapi/v3/account", "");
    assert_eq!((acct.status, acct.weight()), (200, start + 17));
    // openOrders without a symbol weighs 40: over 30, refused, nothing charged.
    let r = a.call("GET", "/fapi/v1/openOrders", "");
    assert_eq!((r.status, r.body["code"].as_i64()), (429, Some(-1003)));
    assert_eq!(
        r.body["msg"],
        "Too many requests; current limit is 30 requests per minute. Please use the websocket for live updates to avoid polling the API."
    );
    assert_eq!(r.weight(), start + 17);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");

    // Orders weigh 0 on the address and count against the account: 1, 2, 3 of 3 per
    // 10 s (a fresh 10 s window: waiting at most 3 s).
    align(10_000, 3_000);
    for n in 1..=3 {
        let o = a.call(
            "POST",
            "/fapi/v1/order",
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=29000",
        );
        assert_eq!(o.status, 200, "{}", o.text);
        assert_eq!(
            o.header("x-mbx-order-count-10s"),
            Some(n.to_string().as_str())
        );
        assert_eq!(o.weight(), start + 17);
    }
    let o = a.call(
        "POST",
        "/fapi/v1/order",
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=29000",
    );
    assert_eq!((o.status, o.body["code"].as_i64()), (429, Some(-1015)));
    assert_eq!(
        o.body["msg"],
        "Too many new orders; current limit is 3 orders per 10 SECOND."
    );
    // An amend counts too (refused the same way); account 2 has its own count.
    let id = a.ok("GET", "/fapi/v1/openOrders", "symbol=BTCUSDT")[0]["orderId"].clone();
    assert_eq!(
        a.code(
            "PUT",
            "/fapi/v1/order",
            &format!("symbol=BTCUSDT&orderId={id}&side=BUY&quantity=0.002&price=29000")
        ),
        -1015
    );
    let ob = b.call(
        "POST",
        "/fapi/v1/order",
        "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.001&price=31000",
    );
    assert_eq!(ob.status, 200, "{}", ob.text);
    assert_eq!(ob.header("x-mbx-order-count-10s"), Some("1"));
    assert_eq!(ob.header("x-mbx-order-count-1m"), Some("1"));
    // Only 4 orders reached the book: three of A's and B's.
    let d = http(
        LOCAL,
        api,
        "GET",
        "/fapi/v1/depth?symbol=BTCUSDT&limit=5",
        &[],
        "",
    );
    assert_eq!(d.body["bids"], json!([["29000.0", "0.003"]]));
    assert_eq!(d.body["asks"], json!([["31000.0", "0.001"]]));

    // Another address has its own weight budget: 127.0.0.2's first ping weighs 1.
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    assert_eq!(
        http(other, api, "GET", "/fapi/v1/ping", &[], "").weight(),
        1
    );

    // 127.0.0.3 is refused three times (> 2): banned, HTTP 418 even for a ping.
    let third: IpAddr = "127.0.0.3".parse().unwrap();
    let c = Client {
        from: third,
        ..Client::new(&server, 1)
    };
    for _ in 0..3 {
        assert_eq!(c.call("GET", "/fapi/v1/openOrders", "").status, 429);
    }
    let banned = http(third, api, "GET", "/fapi/v1/ping", &[], "");
    assert_eq!(
        (banned.status, banned.body["code"].as_i64()),
        (418, Some(-1003))
    );
    assert!(
        banned.body["msg"]
            .as_str()
            .unwrap()
            .starts_with("Way too many requests; IP banned until "),
        "{}",
        banned.text
    );
    // The others are not affected.
    assert_eq!(
        http(other, api, "GET", "/fapi/v1/ping", &[], "").status,
        200
    );
    server.shutdown().expect("clean stop");
}

/// Prometheus text → (name, sorted labels) → value.
fn parse_metrics(text: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (key, value) = line.rsplit_once(' ').expect("name value");
        let (name, labels) = match key.split_once('{') {
            Some((n, rest)) => {
                let mut l: Vec<&str> = rest.trim_end_matches('}').split(',').collect();
                l.sort();
                (n.to_string(), l.join(","))
            }
            None => (key.to_string(), String::new()),
        };
        out.insert((name, labels), value.parse().expect("a number"));
    }
    out
}

fn metric(m: &BTreeMap<(String, String), f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    l.sort();
    *m.get(&(name.to_string(), l.join(",")))
        .unwrap_or_else(|| panic!("no {name}{{{}}}", l.join(",")))
}

fn scrape(server: &Server) -> BTreeMap<(String, String), f64> {
    let a = http(LOCAL, server.admin_addr(), "GET", "/metrics", &[], "");
    assert_eq!(a.status, 200);
    assert!(a
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    parse_metrics(&a.text)
}

#[test]
fn metrics_count_the_requests_made() {
    let dir = tempfile::tempdir().unwrap();
    let limits = RateLimits {
        weight_per_minute: 1_000,
        ..RateLimits::default()
    };
    let server = start(dir.path(), limits);
    let api = server.public_addr();
    let m = scrape(&server);
    // Nothing yet: no command, empty queues, the admin scrape's own connection open.
    assert_eq!(metric(&m, "perpcore_commands_total", &[]), 0.0);
    assert_eq!(metric(&m, "perpcore_sequencer_queue_depth", &[]), 0.0);
    assert_eq!(metric(&m, "perpcore_gateway_request_queue_depth", &[]), 0.0);
    assert_eq!(
        metric(
            &m,
            "perpcore_gateway_open_connections",
            &[("listener", "admin")]
        ),
        1.0
    );

    // 5 durable commands: account 1 created and funded (2), the mark (1), an accepted
    // order (1), an order the engine rejects (1).
    admin(&server, "/admin/v1/account", json!({"account": 1}));
    admin(
        &server,
        "/admin/v1/deposit",
        json!({"account": 1, "asset": "USDT", "amount": "100000"}),
    );
    admin(
        &server,
        "/admin/v1/markPrice",
        json!({"symbol": "BTCUSDT", "price": "30000"}),
    );
    let a = Client::new(&server, 0);
    let placed = a.call(
        "POST",
        "/fapi/v1/order",
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=29000",
    );
    assert_eq!(placed.status, 200, "{}", placed.text);
    // A JSON answer says so (as axum's Json answers do; ccxt parses by it too).
    assert_eq!(placed.header("content-type"), Some("application/json"));
    assert_eq!(placed.body["status"], "NEW");
    // 2000 BTC is above the maximum quantity (1000): engine code 1010, Binance -4005.
    assert_eq!(
        a.code(
            "POST",
            "/fapi/v1/order",
            "symbol=BTCUSDT&side=BUY&type=MARKET&quantity=2000"
        ),
        -4005
    );
    // Three pings, one unknown path, one bad signature (refused before the bridge).
    for _ in 0..3 {
        http(LOCAL, api, "GET", "/fapi/v1/ping", &[], "");
    }
    assert_eq!(http(LOCAL, api, "GET", "/nope", &[], "").status, 404);
    // An unusual method is counted as OTHER (labels must not grow with what clients send).
    assert_eq!(http(LOCAL, api, "FOO", "/nope", &[], "").status, 404);
    let mut bad = Client::new(&server, 0);
    bad.c.secret = "not-the-secret";
    assert_eq!(bad.code("GET", "/fapi/v3/account", ""), -1022);
    // Weight so far: orders 0, pings 3, the two 404s 2, the account call 5 = 10 of 1,000;
    // depth with limit=1000 weighs 20: the 50th is refused (10 + 49 × 20 = 990, + 20 >
    // 1,000), and within 60 even if the minute turned meanwhile.
    let mut refused = 0;
    for _ in 0..60 {
        let r = http(
            LOCAL,
            api,
            "GET",
            "/fapi/v1/depth?symbol=BTCUSDT&limit=1000",
            &[],
            "",
        );
        if r.status == 429 {
            refused += 1;
            break;
        }
    }
    assert_eq!(refused, 1, "a 1,000 weight budget runs out within 60 × 20");

    let m = scrape(&server);
    assert_eq!(metric(&m, "perpcore_commands_total", &[]), 5.0);
    assert_eq!(
        metric(&m, "perpcore_gateway_accept_to_durable_seconds_count", &[]),
        5.0
    );
    assert_eq!(
        metric(&m, "perpcore_engine_rejects_total", &[("code", "1010")]),
        1.0
    );
    for (code, n) in [("-4005", 1.0), ("-1022", 1.0), ("-1003", 1.0)] {
        assert_eq!(
            metric(&m, "perpcore_gateway_errors_total", &[("code", code)]),
            n,
            "{code}"
        );
    }
    let req = |endpoint: &str, method: &str, status: &str| {
        metric(
            &m,
            "perpcore_gateway_requests_total",
            &[
                ("listener", "public"),
                ("endpoint", endpoint),
                ("method", method),
                ("status", status),
            ],
        )
    };
    assert_eq!(req("/fapi/v1/ping", "GET", "200"), 3.0);
    assert_eq!(req("unmatched", "GET", "404"), 1.0);
    assert_eq!(req("unmatched", "OTHER", "404"), 1.0);
    assert_eq!(req("/fapi/v1/order", "POST", "200"), 1.0);
    assert_eq!(req("/fapi/v1/order", "POST", "400"), 1.0);
    assert_eq!(req("/fapi/v3/account", "GET", "400"), 1.0);
    assert_eq!(req("/fapi/v1/depth", "GET", "429"), 1.0);
    assert_eq!(
        metric(
            &m,
            "perpcore_gateway_requests_total",
            &[
                ("listener", "admin"),
                ("endpoint", "/admin/v1/deposit"),
                ("method", "POST"),
                ("status", "200"),
            ],
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "perpcore_gateway_rate_limited_total",
            &[("limit", "REQUEST_WEIGHT_1M")]
        ),
        1.0
    );
    // Every command went through a group commit: at least one fsync and one mark, at
    // most one per command.
    for stage in ["data", "mark"] {
        let n = metric(
            &m,
            "perpcore_journal_sync_seconds_count",
            &[("stage", stage)],
        );
        assert!((1.0..=5.0).contains(&n), "{stage}: {n}");
    }

    // Connections: three held open on the public listener are counted, then released.
    let held: Vec<TcpStream> = (0..3).map(|_| connect(LOCAL, api)).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    let open = |m: &BTreeMap<(String, String), f64>| {
        metric(
            m,
            "perpcore_gateway_open_connections",
            &[("listener", "public")],
        )
    };
    while open(&scrape(&server)) < 3.0 {
        assert!(Instant::now() < deadline, "3 connections not counted");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(held);
    while open(&scrape(&server)) > 0.0 {
        assert!(
            Instant::now() < deadline,
            "closed connections still counted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.shutdown().expect("clean stop");
}

#[test]
fn user_trades_and_income_worked_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), RateLimits::default());
    fund(&server);
    let a = Client::new(&server, 0);
    let b = Client::new(&server, 1);

    // T1: A rests a sell of 0.010 at 30000; B buys 0.004 at 30000 (taker).
    //   quote 0.004 × 30000 = 120; B's fee 120 × 0.0005 = 0.06, A's 120 × 0.0002 = 0.024;
    //   nothing closes, no realized PnL. A cancels the 0.006 left.
    let a1 = a.ok(
        "POST",
        "/fapi/v1/order",
        "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.010&price=30000",
    )["orderId"]
        .as_u64()
        .unwrap();
    let b1 = b.ok(
        "POST",
        "/fapi/v1/order",
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.004&price=30000",
    )["orderId"]
        .as_u64()
        .unwrap();
    a.ok(
        "DELETE",
        "/fapi/v1/order",
        &format!("symbol=BTCUSDT&orderId={a1}"),
    );
    // T2 at 31000: A rests a buy of 0.002, B sells 0.002 (taker). quote 62.
    //   B closes 0.002 of its long bought at 30000: (31000 − 30000) × 0.002 = +2;
    //   fee 62 × 0.0005 = 0.031. A closes 0.002 of its short sold at 30000:
    //   (30000 − 31000) × 0.002 = −2; fee 62 × 0.0002 = 0.0124.
    admin(
        &server,
        "/admin/v1/markPrice",
        json!({"symbol": "BTCUSDT", "price": "31000"}),
    );
    a.ok(
        "POST",
        "/fapi/v1/order",
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.002&price=31000",
    );
    let b2 = b.ok(
        "POST",
        "/fapi/v1/order",
        "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.002&price=31000",
    )["orderId"]
        .as_u64()
        .unwrap();
    // B withdraws 10.
    admin(
        &server,
        "/admin/v1/withdraw",
        json!({"account": 2, "asset": "USDT", "amount": "10"}),
    );

    let tb = b.ok("GET", "/fapi/v1/userTrades", "symbol=BTCUSDT");
    let t1 = tb[0]["id"].as_u64().unwrap();
    let t2 = tb[1]["id"].as_u64().unwrap();
    assert!(t2 > t1);
    let time1 = tb[0]["time"].clone();
    let time2 = tb[1]["time"].clone();
    assert_eq!(
        tb,
        json!([
            {"buyer": true, "commission": "0.06000000", "commissionAsset": "USDT", "id": t1,
             "maker": false, "orderId": b1, "price": "30000.0", "qty": "0.004",
             "quoteQty": "120", "realizedPnl": "0.00000000", "side": "BUY",
             "positionSide": "BOTH", "symbol": "BTCUSDT", "time": time1},
            {"buyer": false, "commission": "0.03100000", "commissionAsset": "USDT", "id": t2,
             "maker": false, "orderId": b2, "price": "31000.0", "qty": "0.002",
             "quoteQty": "62", "realizedPnl": "2.00000000", "side": "SELL",
             "positionSide": "BOTH", "symbol": "BTCUSDT", "time": time2},
        ])
    );
    // A sees the same trades (same ids) from the maker's side.
    let ta = a.ok("GET", "/fapi/v1/userTrades", "symbol=BTCUSDT");
    let brief: Vec<_> = ta
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_u64().unwrap(),
                t["side"].as_str().unwrap(),
                t["maker"].as_bool().unwrap(),
                t["commission"].as_str().unwrap(),
                t["realizedPnl"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        brief,
        [
            (t1, "SELL", true, "0.02400000", "0.00000000"),
            (t2, "BUY", true, "0.01240000", "-2.00000000"),
        ]
    );
    // Filters: fromId, orderId, limit (the most recent), a 7-day span at most, fromId
    // not with times.
    let only = |v: Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        only(b.ok(
            "GET",
            "/fapi/v1/userTrades",
            &format!("symbol=BTCUSDT&fromId={t2}")
        )),
        [t2]
    );
    assert_eq!(
        only(b.ok(
            "GET",
            "/fapi/v1/userTrades",
            &format!("symbol=BTCUSDT&orderId={b1}")
        )),
        [t1]
    );
    assert_eq!(
        only(b.ok("GET", "/fapi/v1/userTrades", "symbol=BTCUSDT&limit=1")),
        [t2]
    );
    let from = now_ms() - 60_000;
    assert_eq!(
        only(b.ok(
            "GET",
            "/fapi/v1/userTrades",
            &format!("symbol=BTCUSDT&startTime={from}&limit=1")
        )),
        [t1]
    );
    assert_eq!(
        b.code(
            "GET",
            "/fapi/v1/userTrades",
            &format!("symbol=BTCUSDT&startTime=0&endTime={}", 7 * 86_400_000 + 1)
        ),
        -1127
    );
    assert_eq!(
        b.code(
            "GET",
            "/fapi/v1/userTrades",
            &format!("symbol=BTCUSDT&fromId={t1}&startTime={from}")
        ),
        -1128
    );
    assert_eq!(b.code("GET", "/fapi/v1/userTrades", ""), -1102);

    // Income of B, oldest first: the deposit, T1's commission, T2's PnL and commission,
    // the withdrawal. Their sum is B's wallet: 100000 − 0.06 + 2 − 0.031 − 10 = 99991.909.
    let ib = b.ok("GET", "/fapi/v1/income", "");
    let flows: Vec<_> = ib
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["incomeType"].as_str().unwrap(),
                r["income"].as_str().unwrap(),
                r["symbol"].as_str().unwrap(),
                r["tradeId"].as_str().unwrap().to_string(),
                r["info"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        flows,
        [
            ("TRANSFER", "100000.00000000", "", String::new(), "DEPOSIT"),
            (
                "COMMISSION",
                "-0.06000000",
                "BTCUSDT",
                t1.to_string(),
                "COMMISSION"
            ),
            (
                "REALIZED_PNL",
                "2.00000000",
                "BTCUSDT",
                t2.to_string(),
                "REALIZED_PNL"
            ),
            (
                "COMMISSION",
                "-0.03100000",
                "BTCUSDT",
                t2.to_string(),
                "COMMISSION"
            ),
            ("TRANSFER", "-10.00000000", "", String::new(), "WITHDRAW"),
        ]
    );
    assert!(ib.as_array().unwrap().iter().all(|r| r["asset"] == "USDT"));
    let acct_b = b.ok("GET", "/fapi/v3/account", "");
    assert_eq!(acct_b["totalWalletBalance"], "99991.90900000");
    // The engine's own report (admin API) says the same (its decimals are trimmed).
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let adm = server.admin_addr();
    let rep = http(
        LOCAL,
        adm,
        "GET",
        "/admin/v1/report?account=2",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(rep.status, 200, "{}", rep.text);
    assert_eq!(rep.body["report"]["assets"][0]["asset"], "USDT");
    assert_eq!(rep.body["report"]["assets"][0]["wallet"], "99991.909");
    assert_eq!(rep.body["report"]["positions"][0]["size"], "0.002");
    let no_token = http(LOCAL, adm, "GET", "/admin/v1/report?account=2", &[], "");
    assert_eq!(no_token.status, 401);
    // A: 100000 − 0.024 − 2 − 0.0124 = 99997.9636.
    let acct_a = a.ok("GET", "/fapi/v3/account", "");
    assert_eq!(acct_a["totalWalletBalance"], "99997.96360000");
    let ia = a.ok("GET", "/fapi/v1/income", "incomeType=REALIZED_PNL");
    assert_eq!(ia.as_array().unwrap().len(), 1);
    assert_eq!(ia[0]["income"], "-2.00000000");
    // Paging: limit 2, page 2 of B's flows from the start of the last minute.
    let paged = b.ok(
        "GET",
        "/fapi/v1/income",
        &format!("startTime={from}&limit=2&page=2"),
    );
    let kinds: Vec<_> = paged
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["incomeType"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["REALIZED_PNL", "COMMISSION"]);
    // A Binance type perpcore never produces: none; a malformed one: refused.
    assert_eq!(
        b.ok("GET", "/fapi/v1/income", "incomeType=WELCOME_BONUS"),
        json!([])
    );
    assert_eq!(b.code("GET", "/fapi/v1/income", "incomeType=nope"), -1130);
    server.shutdown().expect("clean stop");
}

#[test]
fn hedge_mode_orders_and_both_legs() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), RateLimits::default());
    fund(&server);
    let a = Client::new(&server, 0);
    let b = Client::new(&server, 1);
    let dual = "/fapi/v1/positionSide/dual";
    assert_eq!(a.ok("GET", dual, ""), json!({"dualSidePosition": false}));
    assert_eq!(a.code("POST", dual, "dualSidePosition=false"), -4059);
    assert_eq!(
        a.ok("POST", dual, "dualSidePosition=true"),
        json!({"code": 200, "msg": "success"})
    );
    assert_eq!(a.ok("GET", dual, ""), json!({"dualSidePosition": true}));
    assert_eq!(a.code("POST", dual, "dualSidePosition=true"), -4059);

    let order = "/fapi/v1/order";
    let lim = "symbol=BTCUSDT&type=LIMIT&timeInForce=GTC&price=30000";
    // Hedge mode needs LONG or SHORT, and reduceOnly may not be sent; one-way mode
    // refuses LONG/SHORT.
    assert_eq!(
        a.code("POST", order, &format!("{lim}&side=BUY&quantity=0.003")),
        -4061
    );
    assert_eq!(
        a.code(
            "POST",
            order,
            &format!("{lim}&side=BUY&quantity=0.003&positionSide=BOTH")
        ),
        -4061
    );
    assert_eq!(
        a.code(
            "POST",
            order,
            &format!("{lim}&side=SELL&quantity=0.001&positionSide=LONG&reduceOnly=true")
        ),
        -1106
    );
    assert_eq!(
        b.code(
            "POST",
            order,
            &format!("{lim}&side=SELL&quantity=0.003&positionSide=SHORT")
        ),
        -4061
    );

    // A opens LONG 0.003 (B sells to it) and SHORT 0.002 (B buys from it): two legs.
    let o = a.ok(
        "POST",
        order,
        &format!("{lim}&side=BUY&quantity=0.003&positionSide=LONG"),
    );
    assert_eq!(o["positionSide"], "LONG");
    b.ok("POST", order, &format!("{lim}&side=SELL&quantity=0.003"));
    let s = a.ok(
        "POST",
        order,
        &format!("{lim}&side=SELL&quantity=0.002&positionSide=SHORT"),
    );
    assert_eq!(s["positionSide"], "SHORT");
    b.ok("POST", order, &format!("{lim}&side=BUY&quantity=0.002"));
    let legs = |c: &Client| {
        let mut v: Vec<(String, String, String)> = c
            .ok("GET", "/fapi/v3/positionRisk", "symbol=BTCUSDT")
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["positionSide"].as_str().unwrap().to_string(),
                    p["positionAmt"].as_str().unwrap().to_string(),
                    p["entryPrice"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let s = |x: &str| x.to_string();
    assert_eq!(
        legs(&a),
        [
            (s("LONG"), s("0.003"), s("30000.0")),
            (s("SHORT"), s("-0.002"), s("30000.0")),
        ]
    );
    // B is one-way: 0.003 sold then 0.002 bought nets a short of 0.001.
    assert_eq!(legs(&b), [(s("BOTH"), s("-0.001"), s("30000.0"))]);
    // A SELL of LONG closes 0.001 of the long (the engine's reduce-only), leaving the short.
    let c = a.ok(
        "POST",
        order,
        &format!("{lim}&side=SELL&quantity=0.001&positionSide=LONG"),
    );
    assert_eq!(
        (c["positionSide"].as_str(), c["reduceOnly"].as_bool()),
        (Some("LONG"), Some(true))
    );
    b.ok("POST", order, &format!("{lim}&side=BUY&quantity=0.001"));
    assert_eq!(
        legs(&a),
        [
            (s("LONG"), s("0.002"), s("30000.0")),
            (s("SHORT"), s("-0.002"), s("30000.0")),
        ]
    );
    // The account's positions list both legs too; the trades name their legs.
    let acct = a.ok("GET", "/fapi/v3/account", "");
    let mut sides: Vec<&str> = acct["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["positionSide"].as_str().unwrap())
        .collect();
    sides.sort();
    assert_eq!(sides, ["LONG", "SHORT"]);
    let trades = a.ok("GET", "/fapi/v1/userTrades", "symbol=BTCUSDT");
    let t: Vec<_> = trades
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["side"].as_str().unwrap(),
                t["positionSide"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(t, [("BUY", "LONG"), ("SELL", "SHORT"), ("SELL", "LONG")]);
    // With positions open the mode cannot change back: -4068.
    assert_eq!(a.code("POST", dual, "dualSidePosition=false"), -4068);
    server.shutdown().expect("clean stop");
}
