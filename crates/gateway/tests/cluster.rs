//! `perpcore serve` in cluster mode (docs/CLUSTER.md, "The gateway on the stream"): two
//! gateways, each a producer of one JetStream stream (3 nats-servers on 127.0.0.1) with an
//! engine node of its own, and two accounts trading with each other through different
//! gateways. Checks: an answer carries the events of the command the gateway's own node
//! applied and made durable; each gateway's view follows the other's commands; order ids
//! of the two gateways never collide; a gateway restarted on its node directory catches
//! up and goes on; both nodes end with the same state hash at the same stream message;
//! with every nats-server down, an order is answered -1007 (outcome unknown) within the
//! retry budget; and (second test) no write answered 200 is lost when the stream leader's
//! server is SIGKILLed under a stream of writes.
//!
//! Needs `nats-server` (Debian: `apt-get install nats-server`; `.ci/run` installs it).
//! Without it the test passes with a loud message, unless PERPCORE_REQUIRE_NATS is set.
//! Every wait is bounded; dropping the cluster handle SIGKILLs the servers it started.

mod common;

use common::{
    admin_with, http, two_key_options, Client, ADMIN_TOKEN, KEY_A, KEY_B, SECRET_A, SECRET_B,
};
use perpcore_cluster::harness::{nats_server_or_skip, LocalNats};
use perpcore_cluster::StreamNames;
use perpcore_gateway::{ClusterOptions, ServeOptions, Server};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// Gateway `slot` of 2 on the stream, node `g<slot+1>` in `dir`.
fn start(nats: &LocalNats, dir: &Path, slot: u64, retry_budget: Duration) -> Server {
    Server::start(options(nats, dir, slot, retry_budget))
        .expect("the gateway starts on the cluster")
}

fn options(nats: &LocalNats, dir: &Path, slot: u64, retry_budget: Duration) -> ServeOptions {
    let mut opts = two_key_options(dir);
    let names = StreamNames::new("GW").unwrap();
    let mut c = ClusterOptions::new(nats.addrs(), names, &format!("g{}", slot + 1));
    c.order_id_slot = slot;
    c.order_id_slots = 2;
    c.retry_budget = retry_budget;
    opts.cluster = Some(c);
    opts
}

/// Polls `f` every 20 ms until it gives `Some`, for at most 20 s.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wallet(c: &Client) -> String {
    c.ok("GET", "/fapi/v3/account", "")["totalWalletBalance"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn two_gateways_on_one_stream_trade_and_agree() {
    let Some(bin) = nats_server_or_skip() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let mut nats =
        LocalNats::start_ready(&bin, &root.path().join("nats"), 3, Duration::from_secs(30))
            .unwrap();
    let (d1, d2) = (root.path().join("g1"), root.path().join("g2"));
    let budget = Duration::from_secs(3);
    let g1 = start(&nats, &d1, 0, budget);
    let g2 = start(&nats, &d2, 1, budget);
    let admin = |s: &Server, path: &str, body: &str| -> Value {
        admin_with(s.admin_addr(), ADMIN_TOKEN, path, body)
    };
    // Accounts and money through g1's admin API; the mark through g2's.
    admin(&g1, "/admin/v1/account", r#"{"account":1}"#);
    admin(&g1, "/admin/v1/account", r#"{"account":2}"#);
    for acct in [1, 2] {
        admin(
            &g1,
            "/admin/v1/deposit",
            &format!(r#"{{"account":{acct},"asset":"USDT","amount":"100000"}}"#),
        );
    }
    admin(
        &g2,
        "/admin/v1/markPrice",
        r#"{"symbol":"BTCUSDT","price":"30000"}"#,
    );
    let a1 = Client {
        addr: g1.public_addr(),
        key: KEY_A,
        secret: SECRET_A,
    };
    let b2 = Client {
        addr: g2.public_addr(),
        key: KEY_B,
        secret: SECRET_B,
    };
    // g2's node applies g1's deposits on its own time: g2 shows them once it has.
    eventually("g2 to see B's deposit", || {
        (wallet(&b2) == "100000.00000000").then_some(())
    });

    // A rests a sell of 0.004 at 30000 through g1: answered from g1's node.
    let o = a1.ok(
        "POST",
        "/fapi/v1/order",
        "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.004&price=30000&newClientOrderId=a-1",
    );
    assert_eq!(o["status"], "NEW");
    let a_id = o["orderId"].as_u64().unwrap();
    assert_eq!(a_id % 2, 0, "g1 allocates even order ids: {a_id}");
    // B takes it through g2 once g2 has seen it in the book.
    eventually("A's order in g2's book", || {
        let (_, d) = http(
            g2.public_addr(),
            "GET",
            "/fapi/v1/depth?symbol=BTCUSDT",
            &[],
            "",
        );
        (d["asks"] == serde_json::json!([["30000.0", "0.004"]])).then_some(())
    });
    let f = b2.ok(
        "POST",
        "/fapi/v1/order",
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.004&price=30000&newClientOrderId=b-1&newOrderRespType=RESULT",
    );
    assert_eq!(f["status"], "FILLED");
    assert_eq!(f["executedQty"], "0.004");
    let b_id = f["orderId"].as_u64().unwrap();
    assert_eq!(b_id % 2, 1, "g2 allocates odd order ids: {b_id}");
    assert!(b_id > a_id, "g2 saw A's id and allocated above it");
    // Fees on the 120 USDT trade (default.toml BTCUSDT: maker 0.0002, taker 0.0005):
    // B (taker) pays 120 × 0.0005 = 0.06, so 100000 − 0.06; A (maker) 0.024.
    assert_eq!(wallet(&b2), "99999.94000000");
    // g1 learns of the fill from the stream: A's order filled, A short 0.004.
    eventually("g1 to see A's order filled", || {
        let q = a1.ok(
            "GET",
            "/fapi/v1/order",
            &format!("symbol=BTCUSDT&orderId={a_id}"),
        );
        (q["status"] == "FILLED").then_some(())
    });
    assert_eq!(wallet(&a1), "99999.97600000");
    let pa = a1.ok("GET", "/fapi/v3/positionRisk", "symbol=BTCUSDT");
    assert_eq!(pa[0]["positionAmt"], "-0.004");
    // g1 restarts on its node directory: recovery, re-read, and on it goes.
    let s1 = g1.shutdown().expect("g1 stops cleanly");
    assert!(s1.node.is_some());
    let g1 = start(&nats, &d1, 0, budget);
    let a1 = Client {
        addr: g1.public_addr(),
        key: KEY_A,
        secret: SECRET_A,
    };
    assert_eq!(wallet(&a1), "99999.97600000");
    let o = a1.ok(
        "POST",
        "/fapi/v1/order",
        "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.001&price=31000&newClientOrderId=a-2",
    );
    assert_eq!(o["status"], "NEW");
    let a2_id = o["orderId"].as_u64().unwrap();
    assert_eq!(a2_id % 2, 0);
    assert!(a2_id > b_id, "above every id seen before the restart");
    // The restart's ids start at its start time in ms × 1,024 (lib.rs, order_id_floor).
    assert!(
        a2_id > common::now_ms().saturating_sub(60_000) * 1024,
        "{a2_id}"
    );
    let open = eventually("g2 to list A's new order", || {
        let (_, d) = http(
            g2.public_addr(),
            "GET",
            "/fapi/v1/depth?symbol=BTCUSDT",
            &[],
            "",
        );
        (d["asks"] == serde_json::json!([["31000.0", "0.001"]])).then_some(d)
    });
    assert_eq!(open["bids"], serde_json::json!([]));

    // Both nodes now stand at the stream's last message: the same state, bit for bit.
    let s2 = g2.shutdown().expect("g2 stops cleanly");
    let s1 = g1.shutdown().expect("g1 stops cleanly");
    let (n1, n2) = (s1.node.unwrap(), s2.node.unwrap());
    assert_eq!(n1.0, n2.0, "both at the same stream message");
    assert_eq!(n1.1, n2.1, "equal state hashes at stream message {}", n1.0);
    assert_eq!(s1.last_seq, s2.last_seq);

    // Every nats-server down: an order's outcome is unknown after the retry budget.
    let g1 = start(&nats, &d1, 0, budget);
    let a1 = Client {
        addr: g1.public_addr(),
        key: KEY_A,
        secret: SECRET_A,
    };
    for i in 0..3 {
        nats.kill(i);
    }
    let (status, v) = a1.call(
        "POST",
        "/fapi/v1/order",
        "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.001&price=32000",
    );
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["code"], -1007, "{v}");
    // No open order was left behind in the view for it.
    assert_eq!(
        a1.ok("GET", "/fapi/v1/openOrders", "symbol=BTCUSDT")
            .as_array()
            .unwrap()
            .len(),
        1
    );
    drop(g1);
}

/// An admin deposit of `amount` USDT to account 1 on its own connection, waiting up to
/// 40 s for the answer (a failover takes seconds): the HTTP status, 0 if none came.
fn deposit_patiently(admin: std::net::SocketAddr, amount: u64) -> u16 {
    use std::io::{Read as _, Write as _};
    let body = format!(r#"{{"account":1,"asset":"USDT","amount":"{amount}"}}"#);
    let req = format!(
        "POST /admin/v1/deposit HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\
         Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let Ok(mut s) = std::net::TcpStream::connect(admin) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(40)));
    let mut text = String::new();
    if s.write_all(req.as_bytes()).is_err() || s.read_to_string(&mut text).is_err() {
        return 0;
    }
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Fault injection on the gateway's acknowledgement: deposits are answered one after
/// another while the stream leader's nats-server is SIGKILLed (and restarted once a new
/// leader exists). Every deposit the gateway answered 200 is in its node's journal once,
/// and the journal holds nothing that was not sent. Deposit k is k USDT, so amounts
/// name their request.
#[test]
fn answered_writes_survive_a_stream_leader_sigkill() {
    let Some(bin) = nats_server_or_skip() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let mut nats =
        LocalNats::start_ready(&bin, &root.path().join("nats"), 3, Duration::from_secs(30))
            .unwrap();
    let dir = root.path().join("g1");
    let mut opts = options(&nats, &dir, 0, Duration::from_secs(30));
    opts.request_timeout = Duration::from_secs(40);
    let g1 = Server::start(opts).expect("the gateway starts on the cluster");
    admin_with(
        g1.admin_addr(),
        ADMIN_TOKEN,
        "/admin/v1/account",
        r#"{"account":1}"#,
    );
    const N: u64 = 400;
    let adm = g1.admin_addr();
    // The loader sends 50, waits until the leader is dead, then sends the rest: they
    // meet the stream without a leader (it takes seconds to elect one).
    let (killed_tx, killed_rx) = std::sync::mpsc::channel::<()>();
    let (first_tx, first_rx) = std::sync::mpsc::channel::<()>();
    let loader = std::thread::spawn(move || {
        let mut answers = Vec::new();
        let mut longest = Duration::ZERO;
        for k in 1..=N {
            if k == 51 {
                let _ = first_tx.send(());
                killed_rx
                    .recv_timeout(Duration::from_secs(60))
                    .expect("the kill");
            }
            let t = Instant::now();
            answers.push((k, deposit_patiently(adm, k)));
            longest = longest.max(t.elapsed());
        }
        (answers, longest)
    });
    first_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("50 deposits answered");
    let leader = nats.stream_leader("GW").expect("a stream leader in /jsz");
    let li = nats.index_of(&leader).unwrap();
    nats.kill(li);
    killed_tx.send(()).unwrap();
    eventually("a new stream leader", || {
        nats.stream_leader("GW").filter(|l| *l != leader)
    });
    nats.start_server(li).unwrap();
    let (answers, longest) = loader.join().unwrap();
    assert_eq!(answers.len() as u64, N);
    let summary = g1.shutdown().expect("g1 stops cleanly");
    let mut journaled = Vec::new();
    perpcore_node::inspect(&dir.join("journal"), |_, _, cmd| {
        if let perpcore_types::Command::Deposit { amount, .. } = cmd {
            // k USDT is k × 10^12 (Money's scale).
            journaled.push(u64::try_from(amount.0 / 1_000_000_000_000).unwrap());
        }
    })
    .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for k in &journaled {
        assert!(seen.insert(*k), "deposit {k} applied twice");
        assert!((1..=N).contains(k), "deposit {k} was never sent");
    }
    let acked: Vec<u64> = answers.iter().filter(|a| a.1 == 200).map(|a| a.0).collect();
    for k in &acked {
        assert!(
            seen.contains(k),
            "deposit {k} was answered 200 but is not in the journal"
        );
    }
    // Without a failover to ride through, the test would prove little.
    assert!(
        acked.len() as u64 > N / 2,
        "{} of {N} answered 200",
        acked.len()
    );
    eprintln!(
        "{} deposits answered 200, {} journaled, {} not answered 200; node at stream message {:?}; longest answer {longest:?}",
        acked.len(),
        journaled.len(),
        N as usize - acked.len(),
        summary.node.map(|n| n.0)
    );
}
