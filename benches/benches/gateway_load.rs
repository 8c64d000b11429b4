//! Signed orders through `perpcore serve` on loopback (issue 17, item 7). Not a test.
//!
//! The gateway runs in this process exactly as `perpcore serve` runs it (its own tokio
//! runtime, bridge thread, sequencer, writer and fsync on a fresh journal in a temporary
//! folder), with the rate limits off. The clients run on a separate tokio runtime with
//! one worker thread: C connections, each an account with its own API key, each sending
//! signed `POST /fapi/v1/order` requests one at a time on a keep-alive connection and
//! reading the answer, which the gateway sends only once the order's events are durable.
//! Every order is a journaled command (an IOC limit buy of 0.001 BTCUSDT at 29,000 into
//! an empty book: accepted, nothing to match, expired).
//!
//! Printed per round: orders/s over the wall time, and the request→durable-answer
//! latency (first byte written to last byte read) p50/p99/p99.9 from an hdrhistogram.
//! Then the same connections send unsigned `GET /fapi/v1/ping` (answered without the
//! bridge): the HTTP stack's own ceiling on this machine, for comparison.
//!
//! `PERPCORE_GW_CLIENTS` (default 64), `PERPCORE_GW_ORDERS` (per client, default 1,000),
//! `PERPCORE_GW_ROUNDS` (default 3), `PERPCORE_GW_WORKERS` (server worker threads,
//! default 2). Bounded: every request has a 10 s timeout and a round stops after 120 s.

// Floats only format figures for printing; nothing here feeds the engine.
#![allow(clippy::float_arithmetic)]

use hdrhistogram::Histogram;
use perpcore_gateway::{sign_hex, ApiKeys, RateLimits, ServeOptions, Server};
use perpcore_types::AccountId;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const ROUND_LIMIT: Duration = Duration::from_secs(120);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const TOKEN: &str = "bench-admin-token-0123456789";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One request and its answer on a keep-alive connection: (status, body).
async fn exchange(r: &mut BufReader<TcpStream>, request: &[u8]) -> Result<(u16, Vec<u8>), String> {
    r.get_mut()
        .write_all(request)
        .await
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    r.read_line(&mut line).await.map_err(|e| e.to_string())?;
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let mut len = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line).await.map_err(|e| e.to_string())?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().map_err(|_| "bad content-length")?;
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

fn admin(rt: &tokio::runtime::Runtime, addr: SocketAddr, path: &str, body: &str) {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, answer) = rt.block_on(async {
        let s = TcpStream::connect(addr).await.unwrap();
        let mut r = BufReader::new(s);
        exchange(&mut r, request.as_bytes()).await.unwrap()
    });
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
}

fn now_ms() -> u128 {
    // The host clock: a signed request carries it, as a Binance client's does.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Which requests a round sends.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    SignedOrder,
    Ping,
}

/// One round: every client sends `orders` requests; (requests answered, wall time,
/// latencies in ns).
fn round(
    rt: &tokio::runtime::Runtime,
    api: SocketAddr,
    clients: usize,
    orders: usize,
    kind: Kind,
) -> (u64, Duration, Histogram<u64>) {
    let started = Instant::now();
    let hists = rt.block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                tokio::spawn(async move {
                    let mut h = Histogram::<u64>::new(3).unwrap();
                    let s = TcpStream::connect(api).await.unwrap();
                    s.set_nodelay(true).unwrap();
                    let mut r = BufReader::new(s);
                    let secret = format!("secret-{c}");
                    let t0 = Instant::now();
                    for _ in 0..orders {
                        if t0.elapsed() > ROUND_LIMIT {
                            break;
                        }
                        let request = match kind {
                            Kind::SignedOrder => {
                                let payload = format!(
                                    "timestamp={}&symbol=BTCUSDT&side=BUY&type=LIMIT&\
                                     timeInForce=IOC&quantity=0.001&price=29000&\
                                     newOrderRespType=RESULT&recvWindow=5000",
                                    now_ms()
                                );
                                let body = format!(
                                    "{payload}&signature={}",
                                    sign_hex(secret.as_bytes(), &payload)
                                );
                                format!(
                                    "POST /fapi/v1/order HTTP/1.1\r\nHost: x\r\n\
                                     X-MBX-APIKEY: key-{c}\r\n\
                                     Content-Type: application/x-www-form-urlencoded\r\n\
                                     Content-Length: {}\r\n\r\n{body}",
                                    body.len()
                                )
                            }
                            Kind::Ping => "GET /fapi/v1/ping HTTP/1.1\r\nHost: x\r\n\r\n".into(),
                        };
                        let t = Instant::now();
                        let answer = tokio::time::timeout(
                            REQUEST_TIMEOUT,
                            exchange(&mut r, request.as_bytes()),
                        )
                        .await
                        .expect("answered within the timeout")
                        .expect("a well-formed answer");
                        h.record(t.elapsed().as_nanos() as u64).unwrap();
                        assert_eq!(answer.0, 200, "{}", String::from_utf8_lossy(&answer.1));
                        if kind == Kind::SignedOrder {
                            let text = String::from_utf8_lossy(&answer.1);
                            assert!(text.contains("\"status\":\"EXPIRED\""), "{text}");
                        }
                    }
                    h
                })
            })
            .collect();
        let mut all = Histogram::<u64>::new(3).unwrap();
        for t in tasks {
            all.add(t.await.unwrap()).unwrap();
        }
        all
    });
    let wall = started.elapsed();
    (hists.len(), wall, hists)
}

fn main() {
    let clients = env("PERPCORE_GW_CLIENTS", 64);
    let orders = env("PERPCORE_GW_ORDERS", 1_000);
    let rounds = env("PERPCORE_GW_ROUNDS", 3);
    let workers = env("PERPCORE_GW_WORKERS", 2);
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
        TOKEN.into(),
    );
    opts.listen = "127.0.0.1:0".parse().unwrap();
    opts.admin_listen = "127.0.0.1:0".parse().unwrap();
    opts.fresh = true;
    opts.worker_threads = workers;
    opts.limits = RateLimits::unlimited();
    let server = Server::start(opts).unwrap();
    let (api, adm) = (server.public_addr(), server.admin_addr());
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap(),
    );
    for c in 0..clients {
        let a = c + 1;
        admin(
            &rt,
            adm,
            "/admin/v1/account",
            &format!("{{\"account\":{a}}}"),
        );
        admin(
            &rt,
            adm,
            "/admin/v1/deposit",
            &format!("{{\"account\":{a},\"asset\":\"USDT\",\"amount\":\"1000000\"}}"),
        );
    }
    admin(
        &rt,
        adm,
        "/admin/v1/markPrice",
        r#"{"symbol":"BTCUSDT","price":"30000"}"#,
    );
    println!(
        "gateway load: {clients} clients x {orders} requests, server {workers} worker threads, \
         clients on 1 thread, rate limits off, release"
    );
    for (kind, name) in [(Kind::SignedOrder, "signed orders"), (Kind::Ping, "ping")] {
        let mut rates = Vec::new();
        for k in 1..=rounds {
            let (n, wall, h) = round(&rt, api, clients, orders, kind);
            let rate = n as f64 / wall.as_secs_f64();
            rates.push(rate);
            println!(
                "  {name:<13} round {k}: {n} in {:.2} s = {rate:>8.0}/s; p50 {:>6} us  p99 {:>6} us  \
                 p99.9 {:>6} us",
                wall.as_secs_f64(),
                h.value_at_quantile(0.5) / 1_000,
                h.value_at_quantile(0.99) / 1_000,
                h.value_at_quantile(0.999) / 1_000,
            );
        }
        rates.sort_by(|a, b| a.total_cmp(b));
        println!(
            "  {name:<13} median of rounds: {:.0}/s",
            rates[rates.len() / 2]
        );
    }
    let summary = server.shutdown().unwrap();
    println!("  server: {} commands journaled", summary.commands);
}
