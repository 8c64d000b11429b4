//! A rough load figure (ignored by default; run by hand):
//!
//! ```sh
//! PERPCORE_GW_CLIENTS=4 PERPCORE_GW_ORDERS=2000 \
//!   cargo test -p perpcore-gateway --test load -- --ignored --nocapture
//! ```
//!
//! C clients (threads), each with its own key and account and one keep-alive connection,
//! send M signed IOC limit buys each (0.001 BTCUSDT at 29000 into an empty book: accepted,
//! nothing to match, expired), one at a time, and time each request from the first byte
//! sent to the last byte of the answer, which the gateway sends only once the order's
//! events are durable. Bounded: M requests per client, 10 s socket timeouts, and a
//! client stops at 120 s.

use perpcore_gateway::{sign_hex, ApiKeys, ServeOptions, Server};
use perpcore_types::AccountId;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn post_admin(addr: std::net::SocketAddr, token: &str, path: &str, body: &str) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

/// One answer on a keep-alive connection: status and body.
fn read_answer(r: &mut BufReader<TcpStream>) -> (u16, String) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut len = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

#[test]
#[ignore]
fn signed_orders_per_second() {
    let clients = env("PERPCORE_GW_CLIENTS", 4);
    let orders = env("PERPCORE_GW_ORDERS", 2000);
    let token = "load-admin-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let mut keys = ApiKeys::default();
    for c in 0..clients {
        keys.insert(
            &format!("key-{c}"),
            format!("secret-{c}").as_bytes(),
            AccountId(c as u64 + 1),
        )
        .unwrap();
    }
    let mut opts = ServeOptions::new(
        dir.path().to_path_buf(),
        perpcore_config::default_config(),
        keys,
        token.into(),
    );
    opts.listen = "127.0.0.1:0".parse().unwrap();
    opts.admin_listen = "127.0.0.1:0".parse().unwrap();
    opts.fresh = true;
    // Each client sends far more than Binance's 300 orders per 10 s: no rate limits here.
    opts.limits = perpcore_gateway::RateLimits::unlimited();
    let server = Server::start(opts).unwrap();
    let (api, adm) = (server.public_addr(), server.admin_addr());
    for c in 0..clients {
        post_admin(
            adm,
            token,
            "/admin/v1/account",
            &format!("{{\"account\":{}}}", c + 1),
        );
        post_admin(
            adm,
            token,
            "/admin/v1/deposit",
            &format!(
                "{{\"account\":{},\"asset\":\"USDT\",\"amount\":\"1000000\"}}",
                c + 1
            ),
        );
    }
    post_admin(
        adm,
        token,
        "/admin/v1/markPrice",
        r#"{"symbol":"BTCUSDT","price":"30000"}"#,
    );

    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            std::thread::spawn(move || {
                let s = TcpStream::connect(api).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                s.set_nodelay(true).unwrap();
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                let secret = format!("secret-{c}");
                let mut lat_ns = Vec::with_capacity(orders);
                let t0 = Instant::now();
                for _ in 0..orders {
                    if t0.elapsed() > Duration::from_secs(120) {
                        break;
                    }
                    let ts = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
                    let payload = format!("timestamp={ts}&symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=IOC&quantity=0.001&price=29000&newOrderRespType=RESULT&recvWindow=5000");
                    let body = format!("{payload}&signature={}", sign_hex(secret.as_bytes(), &payload));
                    let req = format!("POST /fapi/v1/order HTTP/1.1\r\nHost: x\r\nX-MBX-APIKEY: key-{c}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                    let t = Instant::now();
                    w.write_all(req.as_bytes()).unwrap();
                    let (status, answer) = read_answer(&mut r);
                    lat_ns.push(t.elapsed().as_nanos() as u64);
                    assert_eq!(status, 200, "{answer}");
                    assert!(answer.contains("\"status\":\"EXPIRED\""), "{answer}");
                }
                lat_ns
            })
        })
        .collect();
    let mut lat: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let wall = started.elapsed();
    lat.sort_unstable();
    let pct = |p: usize| lat[(lat.len() * p / 100).min(lat.len() - 1)] as f64 / 1e3;
    println!(
        "gateway load: {clients} clients x {orders} signed IOC orders: {} orders in {:.2} s = {:.0} orders/s; request->durable answer p50 {:.0} us, p99 {:.0} us, max {:.0} us",
        lat.len(),
        wall.as_secs_f64(),
        lat.len() as f64 / wall.as_secs_f64(),
        pct(50),
        pct(99),
        *lat.last().unwrap() as f64 / 1e3,
    );
    let summary = server.shutdown().unwrap();
    assert_eq!(summary.commands as usize, lat.len() + 2 * clients + 1);
}
