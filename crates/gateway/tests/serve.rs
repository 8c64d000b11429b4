//! `perpcore serve` in-process on 127.0.0.1 (ports chosen by the OS) with a temporary
//! journal: two accounts created through the admin API trade with each other through
//! signed requests made exactly as ccxt's binanceusdm makes them (`timestamp`, the call's
//! parameters, `recvWindow`, then `&signature=` + hex HMAC-SHA256 of everything before
//! it; the key in `X-MBX-APIKEY`; the parameters in the query string for GET/DELETE and
//! in a form body for POST/PUT). Every request has a 10 s socket timeout; the test stops
//! the servers it started.

use perpcore_gateway::{sign_hex, Server};
mod common;

use common::{
    admin_with, http, now_ms, two_key_options, Client, ADMIN_TOKEN, KEY_A, KEY_B, SECRET_A,
    SECRET_B,
};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

fn admin(addr: SocketAddr, path: &str, body: &str) -> Value {
    admin_with(addr, ADMIN_TOKEN, path, body)
}

fn start(dir: &std::path::Path, fresh: bool) -> Server {
    start_with(dir, fresh, Duration::from_secs(10))
}

fn start_with(dir: &std::path::Path, fresh: bool, timeout: Duration) -> Server {
    let mut opts = two_key_options(dir);
    opts.fresh = fresh;
    opts.request_timeout = timeout;
    Server::start(opts).expect("serve starts")
}

#[test]
fn two_accounts_trade_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), true);
    let (api, adm) = (server.public_addr(), server.admin_addr());

    // The admin API: a wrong token is refused; accounts, deposits, the mark.
    let (status, _) = http(
        adm,
        "POST",
        "/admin/v1/account",
        &[("Authorization", "Bearer wrong-token-0123456789")],
        "{\"account\":1}",
    );
    assert_eq!(status, 401);
    admin(adm, "/admin/v1/account", r#"{"account":1}"#);
    admin(adm, "/admin/v1/account", r#"{"account":2}"#);
    admin(
        adm,
        "/admin/v1/deposit",
        r#"{"account":1,"asset":"USDT","amount":"100000"}"#,
    );
    admin(
        adm,
        "/admin/v1/deposit",
        r#"{"account":2,"asset":"USDT","amount":"100000"}"#,
    );
    admin(
        adm,
        "/admin/v1/markPrice",
        r#"{"symbol":"BTCUSDT","price":"30000"}"#,
    );
    // The public listener has no admin routes.
    assert_eq!(http(api, "POST", "/admin/v1/account", &[], "{}").0, 404);

    // Public endpoints.
    assert_eq!(
        http(api, "GET", "/fapi/v1/ping", &[], "").1,
        serde_json::json!({})
    );
    let (_, t) = http(api, "GET", "/fapi/v1/time", &[], "");
    assert!(t["serverTime"].as_u64().unwrap() > 1_600_000_000_000);
    let (_, info) = http(api, "GET", "/fapi/v1/exchangeInfo", &[], "");
    let btc = info["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["symbol"] == "BTCUSDT")
        .unwrap()
        .clone();
    assert_eq!(btc["contractType"], "PERPETUAL");
    assert_eq!(btc["marginAsset"], "USDT");
    assert!(btc["orderTypes"]
        .as_array()
        .unwrap()
        .contains(&Value::from("LIMIT")));
    // default.toml: tick 0.1, lot 0.001.
    assert_eq!(btc["filters"][0]["tickSize"], "0.1");
    assert_eq!(btc["filters"][1]["stepSize"], "0.001");
    assert_eq!(
        http(api, "GET", "/fapi/v1/depth?symbol=NOPE", &[], "").1["code"],
        -1121
    );

    let a = Client {
        addr: api,
        key: KEY_A,
        secret: SECRET_A,
    };
    let b = Client {
        addr: api,
        key: KEY_B,
        secret: SECRET_B,
    };

    // Leverage and margin type.
    let lev = a.ok("POST", "/fapi/v1/leverage", "symbol=BTCUSDT&leverage=10");
    assert_eq!(lev["leverage"], 10);
    assert_eq!(
        a.code(
            "POST",
            "/fapi/v1/marginType",
            "symbol=BTCUSDT&marginType=CROSSED"
        ),
        -4046
    );

    // A rests a sell of 0.010 at 30000.
    let o = a.ok(
        "POST",
        "/fapi/v1/order",
        "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.010&price=30000&newClientOrderId=a-1&newOrderRespType=RESULT",
    );
    assert_eq!(o["status"], "NEW");
    assert_eq!(o["clientOrderId"], "a-1");
    assert_eq!(o["origQty"], "0.010");
    let a1 = o["orderId"].as_u64().unwrap();
    let (_, d) = http(api, "GET", "/fapi/v1/depth?symbol=BTCUSDT&limit=5", &[], "");
    assert_eq!(d["asks"], serde_json::json!([["30000.0", "0.010"]]));
    // The same client id again while a-1 is open: -4116.
    assert_eq!(
        a.code("POST", "/fapi/v1/order", "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.001&price=30000&newClientOrderId=a-1"),
        -4116
    );

    // B buys 0.004 at 30000: fills against A.
    let f = b.ok(
        "POST",
        "/fapi/v1/order",
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.004&price=30000&newClientOrderId=b-1&newOrderRespType=RESULT",
    );
    assert_eq!(f["status"], "FILLED");
    assert_eq!(f["executedQty"], "0.004");
    assert_eq!(f["avgPrice"], "30000.0");
    // cumQuote = 0.004 × 30000 = 120.
    assert_eq!(f["cumQuote"], "120");
    let q = a.ok(
        "GET",
        "/fapi/v1/order",
        &format!("symbol=BTCUSDT&orderId={a1}"),
    );
    assert_eq!(q["status"], "PARTIALLY_FILLED");
    assert_eq!(q["executedQty"], "0.004");
    let q = a.ok(
        "GET",
        "/fapi/v1/order",
        "symbol=BTCUSDT&origClientOrderId=a-1",
    );
    assert_eq!(q["orderId"].as_u64(), Some(a1));

    // Positions: A short 0.004, B long 0.004, entry 30000, at mark 30000 no uPnL.
    let pa = a.ok("GET", "/fapi/v3/positionRisk", "symbol=BTCUSDT");
    assert_eq!(pa[0]["positionAmt"], "-0.004");
    assert_eq!(pa[0]["entryPrice"], "30000.0");
    assert_eq!(pa[0]["leverage"], "10");
    let pb = b.ok("GET", "/fapi/v3/positionRisk", "");
    assert_eq!(pb[0]["positionAmt"], "0.004");
    // Fees on the 120 USDT trade (default.toml BTCUSDT: maker 0.0002, taker 0.0005):
    // B (taker) pays 120 × 0.0005 = 0.06, A (maker) 120 × 0.0002 = 0.024.
    let acct_b = b.ok("GET", "/fapi/v3/account", "");
    assert_eq!(acct_b["totalWalletBalance"], "99999.94000000");
    let acct_a = a.ok("GET", "/fapi/v3/account", "");
    assert_eq!(acct_a["assets"][0]["walletBalance"], "99999.97600000");
    assert_eq!(acct_a["positions"][0]["positionAmt"], "-0.004");

    // B may not cancel A's order (isolation: the same answer as for no order at all).
    assert_eq!(
        b.code(
            "DELETE",
            "/fapi/v1/order",
            &format!("symbol=BTCUSDT&orderId={a1}")
        ),
        -2011
    );
    assert_eq!(
        b.code(
            "GET",
            "/fapi/v1/order",
            &format!("symbol=BTCUSDT&orderId={a1}")
        ),
        -2013
    );

    // A amends a-1 to 30100 × 0.008 in total: 0.004 executed, 0.004 open.
    let m = a.ok(
        "PUT",
        "/fapi/v1/order",
        &format!("symbol=BTCUSDT&orderId={a1}&side=SELL&quantity=0.008&price=30100"),
    );
    assert_eq!(m["price"], "30100.0");
    assert_eq!(m["origQty"], "0.008");
    assert_eq!(m["status"], "PARTIALLY_FILLED");
    let (_, d) = http(api, "GET", "/fapi/v1/depth?symbol=BTCUSDT", &[], "");
    assert_eq!(d["asks"], serde_json::json!([["30100.0", "0.004"]]));
    let open = a.ok("GET", "/fapi/v1/openOrders", "symbol=BTCUSDT");
    assert_eq!(open.as_array().unwrap().len(), 1);

    // Post-only that would take: -5022, and nothing changed.
    assert_eq!(
        b.code(
            "POST",
            "/fapi/v1/order",
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTX&quantity=0.001&price=30100"
        ),
        -5022
    );
    // A stop-market (the engine's PlaceConditional): waits, listed as open.
    let s = b.ok("POST", "/fapi/v1/order", "symbol=BTCUSDT&side=SELL&type=STOP_MARKET&stopPrice=29000&quantity=0.004&reduceOnly=true&workingType=MARK_PRICE&newClientOrderId=b-stop");
    assert_eq!(s["type"], "STOP_MARKET");
    assert_eq!(s["stopPrice"], "29000.0");
    assert_eq!(
        b.ok("GET", "/fapi/v1/openOrders", "")
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let c = b.ok(
        "DELETE",
        "/fapi/v1/order",
        "symbol=BTCUSDT&origClientOrderId=b-stop",
    );
    assert_eq!(c["status"], "CANCELED");

    // A cancels a-1.
    let c = a.ok(
        "DELETE",
        "/fapi/v1/order",
        &format!("symbol=BTCUSDT&orderId={a1}"),
    );
    assert_eq!(c["status"], "CANCELED");
    assert_eq!(c["executedQty"], "0.004");
    assert_eq!(
        a.code(
            "DELETE",
            "/fapi/v1/order",
            &format!("symbol=BTCUSDT&orderId={a1}")
        ),
        -2011
    );
    assert_eq!(
        a.ok("GET", "/fapi/v1/openOrders", "")
            .as_array()
            .unwrap()
            .len(),
        0
    );
    a.ok(
        "POST",
        "/fapi/v1/order",
        "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.001&price=30500",
    );
    let all = a.ok("DELETE", "/fapi/v1/allOpenOrders", "symbol=BTCUSDT");
    assert_eq!(all["code"], 200);
    assert_eq!(
        a.ok("GET", "/fapi/v1/openOrders", "")
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // Refusals: a bad signature, an expired timestamp, a missing parameter, an unknown
    // key, an unknown order, an engine rejection through the table.
    let payload = format!("timestamp={}&symbol=BTCUSDT&recvWindow=5000", now_ms());
    let bad = format!(
        "{payload}&signature={}",
        sign_hex(b"not-the-secret", &payload)
    );
    let (status, v) = http(
        api,
        "GET",
        &format!("/fapi/v1/openOrders?{bad}"),
        &[("X-MBX-APIKEY", KEY_A)],
        "",
    );
    assert_eq!((status, v["code"].as_i64()), (400, Some(-1022)));
    assert_eq!(v["msg"], "Signature for this request is not valid.");
    let (_, v) = a.call_at(
        "GET",
        "/fapi/v1/openOrders",
        "symbol=BTCUSDT",
        now_ms() - 60_000,
    );
    assert_eq!(v["code"], -1021);
    assert_eq!(
        a.code(
            "POST",
            "/fapi/v1/order",
            "symbol=BTCUSDT&side=BUY&type=LIMIT&price=30000"
        ),
        -1102
    );
    let nokey = Client {
        addr: api,
        key: "unknown",
        secret: SECRET_A,
    };
    assert_eq!(nokey.code("GET", "/fapi/v3/account", ""), -2015);
    assert_eq!(
        a.code("GET", "/fapi/v1/order", "symbol=BTCUSDT&orderId=999999"),
        -2013
    );
    assert_eq!(
        a.code(
            "POST",
            "/fapi/v1/order",
            "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=0.001&price=30000.05"
        ),
        -4014
    );
    // 2000 BTC is above the instrument's maximum quantity (1000): -4005.
    assert_eq!(
        a.code(
            "POST",
            "/fapi/v1/order",
            "symbol=BTCUSDT&side=BUY&type=MARKET&quantity=2000"
        ),
        -4005
    );

    // A body above the 16 KiB limit is refused before any parsing: HTTP 413.
    let big = "a".repeat(perpcore_gateway::MAX_BODY_BYTES + 1);
    assert_eq!(
        http(
            api,
            "POST",
            "/fapi/v1/order",
            &[("X-MBX-APIKEY", KEY_A)],
            &big
        )
        .0,
        413
    );

    let summary = server.shutdown().expect("clean stop");
    assert_eq!(summary.resumed_after, 0);
    assert!(summary.commands >= 15, "{summary:?}");

    // Restart on the same journal: the replica is recovered with the state.
    let server = start(dir.path(), false);
    let a = Client {
        addr: server.public_addr(),
        key: KEY_A,
        secret: SECRET_A,
    };
    let pa = a.ok("GET", "/fapi/v3/positionRisk", "symbol=BTCUSDT");
    assert_eq!(pa[0]["positionAmt"], "-0.004");
    let o = a.ok("POST", "/fapi/v1/order", "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.001&price=30500&newClientOrderId=a-2");
    // Order ids after a restart start above the journal's last seq, so none is reused.
    assert!(o["orderId"].as_u64().unwrap() > summary.last_seq);
    let again = server.shutdown().expect("clean stop");
    assert_eq!(again.resumed_after, summary.last_seq);
}

#[test]
fn a_request_whose_body_never_arrives_times_out() {
    // Content-Length promises 100 bytes, 10 arrive: the handler waits for the body until
    // the 300 ms request timeout answers 408 (the socket's own timeout is 10 s).
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), true, Duration::from_millis(300));
    let addr = server.public_addr();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /fapi/v1/order HTTP/1.1\r\nHost: {addr}\r\nX-MBX-APIKEY: {KEY_A}\r\nContent-Length: 100\r\n\r\n0123456789"
    );
    s.write_all(head.as_bytes()).unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 512];
    let n = s
        .read(&mut buf)
        .expect("an answer before the socket timeout");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(s);
    server.shutdown().expect("clean stop");
}
