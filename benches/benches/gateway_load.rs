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
//! The client is kept cheap, so that the machine's CPU goes to the server: before a
//! round's clock starts, each client's requests are built and signed (HMAC-SHA256 over
//! the parameters with the host clock's `timestamp` and `recvWindow=60000`, Binance's
//! largest; a round stops sending after 50 s, so none expires), one buffer per client.
//! In the round a client writes each request's bytes on a raw tokio `TcpStream` and
//! reads the answer into one reused buffer: the status line, `content-length`, then the
//! body, which must hold `"status":"EXPIRED"`. Nothing is allocated per request. The
//! server does all its usual work per request: parses it, verifies the HMAC, checks the
//! timestamp, journals the order and answers it.
//!
//! Printed per round: orders/s over the wall time, the request→durable-answer latency
//! (first byte written to last byte read) p50/p99/p99.9 from an hdrhistogram, and the
//! whole process's CPU time per request over the round (user + system, from
//! `/proc/self/stat`: server and client together; steadier than orders/s on a shared
//! machine). Then the same connections send unsigned `GET /fapi/v1/ping` (answered
//! without the bridge): the HTTP stack's own ceiling on this machine, for comparison.
//!
//! Then the WebSocket API (`/ws-fapi/v1`, docs/GATEWAY.md): `PERPCORE_GW_WS_CONNS`
//! connections (default 16, at most C), each an account sending `PERPCORE_GW_WS_ORDERS`
//! (default 4,000) signed `order.place` frames of the same order, with up to
//! `PERPCORE_GW_WINDOW` (default 64) in flight; every frame is signed before the clock
//! starts, and every answer must be `"status":200` with the order `EXPIRED`.
//! `PERPCORE_GW_ONLY=signed|ping|ws` runs one kind of round only.
//!
//! `PERPCORE_GW_CLIENTS` (default 64), `PERPCORE_GW_ORDERS` (per client, default 1,000),
//! `PERPCORE_GW_ROUNDS` (default 3), `PERPCORE_GW_WORKERS` (server worker threads,
//! default 2). Bounded: every request has a 10 s timeout and a round stops after 50 s.
//!
//! `PERPCORE_GW_CLUSTER=1`: the gateway in cluster mode (`perpcore serve --cluster`,
//! docs/CLUSTER.md) on a local 3-server nats-server cluster (stream with 3 replicas)
//! started by the bench, with its own engine node in the temporary folder: an answer
//! then waits for the stream's acknowledgement and the node's durable apply.

// Floats only format figures for printing; nothing here feeds the engine.
#![allow(clippy::float_arithmetic)]

use hdrhistogram::Histogram;
use perpcore_gateway::{sign_hex, ApiKeys, RateLimits, ServeOptions, Server};
use perpcore_types::AccountId;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A round stops sending after this long: its requests were signed before it started
/// with `recvWindow=60000`, which they must not outlive.
const ROUND_LIMIT: Duration = Duration::from_secs(50);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const TOKEN: &str = "bench-admin-token-0123456789";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn admin(rt: &tokio::runtime::Runtime, addr: SocketAddr, path: &str, body: &str) {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, answer) = rt.block_on(async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        let status = send(&mut s, &mut buf, request.as_bytes()).await.unwrap();
        (status, buf)
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

/// This process's CPU time so far, user and system (µs), from `/proc/self/stat` (Linux;
/// `None` elsewhere). Clock ticks of 10 ms: a round's figure is good to ~1%.
fn cpu_us() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name's closing parenthesis: utime and stime are the 12th
    // and 13th (fields 14 and 15 of proc(5)), in ticks of 1/100 s on Linux.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split(' ').skip(11);
    let user: u64 = f.next()?.parse().ok()?;
    let system: u64 = f.next()?.parse().ok()?;
    Some((user * 10_000, system * 10_000))
}

/// Which requests a round sends.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    SignedOrder,
    Ping,
}

/// Connection `c`'s `n` signed `order.place` frames for the WebSocket API, built before
/// the round's clock starts: the same order as [`ORDER_PARAMS`], request `id` = its
/// index, the parameters sorted by name and signed as Binance defines it for this API.
fn prepare_ws(c: usize, n: usize) -> Vec<String> {
    let secret = format!("secret-{c}");
    (0..n)
        .map(|i| {
            // Sorted by name; `signature` is not signed.
            let payload = format!(
                "apiKey=key-{c}&newOrderRespType=RESULT&price=29000&quantity=0.001&\
                 recvWindow=60000&side=BUY&symbol=BTCUSDT&timeInForce=IOC&timestamp={}&type=LIMIT",
                now_ms()
            );
            let mut params = String::from("{");
            for (k, v) in payload.split('&').filter_map(|kv| kv.split_once('=')) {
                let quoted = !matches!(k, "recvWindow" | "timestamp");
                let q = if quoted { "\"" } else { "" };
                params.push_str(&format!("\"{k}\":{q}{v}{q},"));
            }
            let signature = sign_hex(secret.as_bytes(), &payload);
            format!(
                "{{\"id\":{i},\"method\":\"order.place\",\"params\":{params}\"signature\":\"{signature}\"}}}}"
            )
        })
        .collect()
}

/// One connection's `order.place` frames on the WebSocket API with up to `window` in
/// flight: each write sends every frame the window allows, then one answer is read.
/// Latency is from a frame's write to its answer's arrival (matched by `id`).
async fn ws_orders(api: SocketAddr, frames: Vec<String>, window: usize) -> Histogram<u64> {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let mut h = Histogram::<u64>::new(3).unwrap();
    let url = format!("ws://{api}/ws-fapi/v1");
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let n = frames.len();
    let mut sent_at = vec![Instant::now(); n];
    let mut frames = frames.into_iter();
    let (mut sent, mut got) = (0usize, 0usize);
    let t0 = Instant::now();
    while got < n {
        if sent < n && sent - got < window && t0.elapsed() <= ROUND_LIMIT {
            while sent < n && sent - got < window {
                let f = frames.next().expect("one frame per request");
                ws.feed(Message::Text(f.into())).await.unwrap();
                sent_at[sent] = Instant::now();
                sent += 1;
            }
            ws.flush().await.unwrap();
        }
        if got == sent {
            break; // the round's time is up
        }
        let m = tokio::time::timeout(REQUEST_TIMEOUT, ws.next())
            .await
            .expect("answered within the timeout")
            .expect("connection open")
            .expect("a frame");
        let Message::Text(t) = m else { continue };
        let t = t.as_str();
        assert!(
            t.contains("\"status\":200") && t.contains("\"status\":\"EXPIRED\""),
            "{t}"
        );
        let id: usize = t
            .strip_prefix("{\"id\":")
            .and_then(|r| r.split(',').next())
            .and_then(|d| d.parse().ok())
            .expect("an answer starts with its id");
        h.record(sent_at[id].elapsed().as_nanos() as u64).unwrap();
        got += 1;
    }
    let _ = ws.close(None).await;
    h
}

/// A round of the WebSocket API: `conns` connections (accounts 1..=conns), `orders`
/// each, `window` in flight per connection. As [`round`]'s figures.
fn ws_round(
    rt: &tokio::runtime::Runtime,
    api: SocketAddr,
    conns: usize,
    orders: usize,
    window: usize,
) -> (u64, Duration, Histogram<u64>, Option<(u64, u64)>) {
    let prepared: Vec<_> = (0..conns).map(|c| prepare_ws(c, orders)).collect();
    measured(rt, || {
        prepared
            .into_iter()
            .map(|frames| tokio::spawn(ws_orders(api, frames, window)))
            .collect()
    })
}

/// Run the client tasks `spawn` starts (on `rt`) to their end: (requests answered, wall
/// time, latencies in ns, the process's CPU time meanwhile in µs).
fn measured(
    rt: &tokio::runtime::Runtime,
    spawn: impl FnOnce() -> Vec<tokio::task::JoinHandle<Histogram<u64>>>,
) -> (u64, Duration, Histogram<u64>, Option<(u64, u64)>) {
    let cpu0 = cpu_us();
    let started = Instant::now();
    let hists = rt.block_on(async {
        let mut all = Histogram::<u64>::new(3).unwrap();
        for t in spawn() {
            all.add(t.await.unwrap()).unwrap();
        }
        all
    });
    let wall = started.elapsed();
    let cpu = cpu0.zip(cpu_us()).map(|(a, b)| (b.0 - a.0, b.1 - a.1));
    (hists.len(), wall, hists, cpu)
}

/// The order every signed request places, before its timestamp and signature.
const ORDER_PARAMS: &str = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=IOC&quantity=0.001&\
                            price=29000&newOrderRespType=RESULT&recvWindow=60000";

/// Client `c`'s `n` requests, built before the round's clock starts: one buffer and where
/// each request ends in it. A signed request is signed here with the host clock's time;
/// `recvWindow=60000` (Binance's largest) keeps it valid for the round (a round stops
/// sending after `ROUND_LIMIT`, well inside that).
fn prepare(c: usize, n: usize, kind: Kind) -> (Vec<u8>, Vec<usize>) {
    let mut buf = Vec::new();
    let mut ends = Vec::with_capacity(n);
    let secret = format!("secret-{c}");
    for _ in 0..n {
        match kind {
            Kind::SignedOrder => {
                let payload = format!("{ORDER_PARAMS}&timestamp={}", now_ms());
                let body = format!(
                    "{payload}&signature={}",
                    sign_hex(secret.as_bytes(), &payload)
                );
                buf.extend_from_slice(
                    format!(
                        "POST /fapi/v1/order HTTP/1.1\r\nHost: x\r\n\
                         X-MBX-APIKEY: key-{c}\r\n\
                         Content-Type: application/x-www-form-urlencoded\r\n\
                         Content-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
            Kind::Ping => buf.extend_from_slice(b"GET /fapi/v1/ping HTTP/1.1\r\nHost: x\r\n\r\n"),
        }
        ends.push(buf.len());
    }
    (buf, ends)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The status and body length of a complete response head in `head` (up to and
/// including the blank line).
fn parse_head(head: &[u8]) -> Result<(u16, usize), String> {
    let bad = || format!("bad response head {:?}", String::from_utf8_lossy(head));
    let status = head
        .get(9..12)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse().ok())
        .filter(|_| head.starts_with(b"HTTP/1.1 "))
        .ok_or_else(bad)?;
    let mut len = 0;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:") {
            len = std::str::from_utf8(&line[15..])
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(bad)?;
        }
    }
    Ok((status, len))
}

/// One request and its answer on a keep-alive connection: the answer's status, and its
/// body in `buf[..]` (the buffer is reused; one request is in flight at a time, so
/// nothing follows the body).
async fn send(s: &mut TcpStream, buf: &mut Vec<u8>, request: &[u8]) -> Result<u16, String> {
    s.write_all(request).await.map_err(|e| e.to_string())?;
    buf.clear();
    let mut scanned = 0usize;
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        if s.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("connection closed mid-answer".into());
        }
        if let Some(i) = find(&buf[scanned.saturating_sub(3)..], b"\r\n\r\n") {
            let head_end = scanned.saturating_sub(3) + i + 4;
            let (status, len) = parse_head(&buf[..head_end])?;
            while buf.len() < head_end + len {
                buf.reserve(head_end + len - buf.len());
                if s.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
                    return Err("connection closed mid-body".into());
                }
            }
            if buf.len() != head_end + len {
                return Err("bytes after the answer".into());
            }
            buf.drain(..head_end);
            return Ok(status);
        }
        scanned = buf.len();
    }
}

/// One round: every client sends `orders` requests; (requests answered, wall time,
/// latencies in ns, the process's CPU time meanwhile in µs). The requests are built (and signed) before the clock starts.
fn round(
    rt: &tokio::runtime::Runtime,
    api: SocketAddr,
    clients: usize,
    orders: usize,
    kind: Kind,
) -> (u64, Duration, Histogram<u64>, Option<(u64, u64)>) {
    let prepared: Vec<_> = (0..clients).map(|c| prepare(c, orders, kind)).collect();
    measured(rt, || {
        prepared
            .into_iter()
            .map(|(requests, ends)| {
                tokio::spawn(async move {
                    let mut h = Histogram::<u64>::new(3).unwrap();
                    let mut s = TcpStream::connect(api).await.unwrap();
                    s.set_nodelay(true).unwrap();
                    let mut buf = Vec::with_capacity(4096);
                    let t0 = Instant::now();
                    let mut from = 0;
                    for &to in &ends {
                        if t0.elapsed() > ROUND_LIMIT {
                            break;
                        }
                        let request = &requests[from..to];
                        from = to;
                        let t = Instant::now();
                        let status =
                            tokio::time::timeout(REQUEST_TIMEOUT, send(&mut s, &mut buf, request))
                                .await
                                .expect("answered within the timeout")
                                .expect("a well-formed answer");
                        h.record(t.elapsed().as_nanos() as u64).unwrap();
                        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&buf));
                        if kind == Kind::SignedOrder {
                            assert!(
                                find(&buf, b"\"status\":\"EXPIRED\"").is_some(),
                                "{}",
                                String::from_utf8_lossy(&buf)
                            );
                        }
                    }
                    h
                })
            })
            .collect()
    })
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
    // Cluster mode: the servers live until the end of main (dropping them kills them).
    let nats = (env("PERPCORE_GW_CLUSTER", 0) == 1).then(|| {
        let bin = perpcore_cluster::harness::nats_server_binary()
            .expect("PERPCORE_GW_CLUSTER=1 needs nats-server (apt-get install nats-server)");
        let nats = perpcore_cluster::harness::LocalNats::start_ready(
            &bin,
            &dir.path().join("nats"),
            3,
            Duration::from_secs(30),
        )
        .unwrap();
        opts.fresh = false;
        opts.journal = dir.path().join("node");
        opts.cluster = Some(perpcore_gateway::ClusterOptions::new(
            nats.addrs(),
            perpcore_cluster::StreamNames::new("GWLOAD").unwrap(),
            "g1",
        ));
        nats
    });
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
    let ws_conns = env("PERPCORE_GW_WS_CONNS", 16).min(clients);
    let window = env("PERPCORE_GW_WINDOW", 64);
    let ws_orders = env("PERPCORE_GW_WS_ORDERS", 4_000);
    let only = std::env::var("PERPCORE_GW_ONLY").unwrap_or_default();
    println!(
        "gateway load: {clients} clients x {orders} requests, server {workers} worker threads, \
         WebSocket API: {ws_conns} connections x {ws_orders} orders, {window} in flight each; \
         clients on 1 thread, rate limits off, release{}",
        if nats.is_some() {
            ", cluster mode (3 nats-servers, stream R3, own node)"
        } else {
            ""
        }
    );
    for (name, ws) in [
        ("signed orders", false),
        ("ping", false),
        ("ws-api orders", true),
    ] {
        if !only.is_empty() && !name.starts_with(only.as_str()) {
            continue;
        }
        let mut rates = Vec::new();
        for k in 1..=rounds {
            let (n, wall, h, cpu) = match (ws, name) {
                (true, _) => ws_round(&rt, api, ws_conns, ws_orders, window),
                (false, "ping") => round(&rt, api, clients, orders, Kind::Ping),
                _ => round(&rt, api, clients, orders, Kind::SignedOrder),
            };
            let rate = n as f64 / wall.as_secs_f64();
            rates.push(rate);
            let cpu = cpu.map_or("cpu ?".into(), |(u, s)| {
                let n = n.max(1);
                format!("cpu {} us/req ({} user, {} sys)", (u + s) / n, u / n, s / n)
            });
            println!(
                "  {name:<13} round {k}: {n} in {:.2} s = {rate:>8.0}/s; p50 {:>6} us  p99 {:>6} us  \
                 p99.9 {:>6} us; {cpu}",
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
