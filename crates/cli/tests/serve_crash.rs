//! Crash test of `perpcore serve`'s acknowledgement (issue 17: "an order is answered only
//! after its events are durable"): a real `perpcore serve` process takes signed orders on
//! the WebSocket API, up to 64 in flight, and is SIGKILLed at a random moment among its
//! answers, again and again on the same journal (each start recovers it). After each
//! kill, every order answered 200 is in the journal, exactly once, and the ids answered
//! across restarts are all different. A process kill leaves what was written but not yet
//! fsynced in the operating system's cache, so this catches an answer sent before its
//! command was written, not a missing fsync (the journal's own fault-injection tests
//! cover the disk).
//!
//! Cycles: 4 by default (`PERPCORE_SERVE_CRASH_CYCLES=N`); the moment of each kill comes
//! from a seeded generator. Every wait is bounded; the process is killed when the test
//! ends (`Proc`).

mod procs;

use futures_util::{SinkExt as _, StreamExt as _};
use procs::Proc;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "serve-crash-admin-token-0123";
const KEY: &str = "key-1";
const SECRET: &str = "secret-1-0123456789";
const WINDOW: usize = 64;

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// A signed `order.place` frame: an IOC buy of 0.001 at 29,000 into an empty book
/// (accepted, expired, journaled), with its client order id.
fn order_frame(id: u64, client_id: &str) -> String {
    let payload = format!(
        "apiKey={KEY}&newClientOrderId={client_id}&price=29000&quantity=0.001&recvWindow=60000&\
         side=BUY&symbol=BTCUSDT&timeInForce=IOC&timestamp={}&type=LIMIT",
        now_ms()
    );
    let mut params = serde_json::Map::new();
    for (k, v) in payload.split('&').filter_map(|kv| kv.split_once('=')) {
        let v = match k {
            "recvWindow" | "timestamp" => serde_json::json!(v.parse::<u64>().unwrap()),
            _ => serde_json::json!(v),
        };
        params.insert(k.to_string(), v);
    }
    let signature = perpcore_gateway::sign_hex(SECRET.as_bytes(), &payload);
    params.insert("signature".into(), serde_json::json!(signature));
    serde_json::json!({"id": id, "method": "order.place", "params": params}).to_string()
}

#[test]
fn answered_orders_survive_a_sigkill_of_serve() {
    let cycles: usize = std::env::var("PERPCORE_SERVE_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let root = tempfile::tempdir().unwrap();
    let (keys, token, journal) = (
        root.path().join("keys.toml"),
        root.path().join("token"),
        root.path().join("journal"),
    );
    std::fs::write(
        &keys,
        format!("[[keys]]\napi_key = \"{KEY}\"\nsecret = \"{SECRET}\"\naccount = 1\n"),
    )
    .unwrap();
    std::fs::write(&token, TOKEN).unwrap();
    for f in [&keys, &token] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let arg = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (keys, token, journal_arg) = (arg(&keys), arg(&token), arg(&journal));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Every order answered 200, over all cycles: client order id → order id.
    let mut answered: BTreeMap<String, u64> = BTreeMap::new();
    for cycle in 0..cycles {
        let mut args = vec![
            "serve",
            "--journal",
            &journal_arg,
            "--keys",
            &keys,
            "--admin-token-file",
            &token,
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            // Thousands of orders a second from one account: above Binance's order limits.
            "--orders-per-10s",
            "1000000",
            "--orders-per-minute",
            "1000000",
        ];
        if cycle == 0 {
            args.push("--fresh");
        }
        let mut serve = Proc::spawn("serve", root.path().join(format!("serve{cycle}.out")), args);
        let (api, adm) = serve.serving_addrs();
        if cycle == 0 {
            procs::account_1_with(adm, TOKEN, "100000");
        }
        // Kill after this many answers: somewhere in the stream, with up to 64 in flight.
        let kill_after = rng.gen_range(20..1500usize);
        let client_ids: Vec<String> = (0..3000).map(|i| format!("c{cycle}-{i}")).collect();
        let got = rt.block_on(async {
            let url = format!("ws://{api}/ws-fapi/v1");
            let (mut ws, _) = tokio::time::timeout(
                Duration::from_secs(20),
                tokio_tungstenite::connect_async(url.as_str()),
            )
            .await
            .expect("connect in time")
            .expect("connect");
            let mut got: Vec<(usize, u64)> = Vec::new();
            let (mut sent, mut answers) = (0usize, 0usize);
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut killed = false;
            while Instant::now() < deadline {
                if !killed {
                    while sent < client_ids.len() && sent - answers < WINDOW {
                        let f = order_frame(sent as u64, &client_ids[sent]);
                        if ws.feed(Message::Text(f.into())).await.is_err() {
                            break;
                        }
                        sent += 1;
                    }
                    let _ = ws.flush().await;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                let m = match tokio::time::timeout(left, ws.next()).await {
                    Ok(Some(Ok(m))) => m,
                    // The connection ends (killed) or the deadline passed.
                    _ => break,
                };
                let Message::Text(t) = m else { continue };
                let a: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                answers += 1;
                assert_eq!(a["status"], 200, "cycle {cycle}: {a}");
                let i = a["id"].as_u64().unwrap() as usize;
                got.push((i, a["result"]["orderId"].as_u64().unwrap()));
                if !killed && answers >= kill_after {
                    serve.kill(); // SIGKILL, with up to 64 orders in flight
                    killed = true;
                }
            }
            assert!(
                killed,
                "cycle {cycle}: answers stopped before the kill ({answers} of {kill_after})"
            );
            got
        });
        for (i, id) in got {
            answered.insert(client_ids[i].clone(), id);
        }
        // Every answered order is in the journal, once.
        let mut journaled: BTreeMap<u64, usize> = BTreeMap::new();
        perpcore_node::inspect(&journal, |_, _, cmd| {
            if let perpcore_types::Command::PlaceOrder(o) = cmd {
                *journaled.entry(o.order_id.0).or_default() += 1;
            }
        })
        .unwrap();
        for (client_id, id) in &answered {
            assert_eq!(
                journaled.get(id),
                Some(&1),
                "cycle {cycle}: order {id} ({client_id}) was answered but is journaled {:?} times",
                journaled.get(id)
            );
        }
        let ids: BTreeSet<u64> = answered.values().copied().collect();
        assert_eq!(ids.len(), answered.len(), "an order id answered twice");
        eprintln!(
            "cycle {cycle}: killed after {kill_after} answers; {} answered in all, {} orders journaled",
            answered.len(),
            journaled.len()
        );
    }
    assert!(!answered.is_empty());
}
