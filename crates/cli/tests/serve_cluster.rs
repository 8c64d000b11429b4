//! `perpcore serve --cluster` as a process (issue 18: the gateway as a producer): a
//! 3-server NATS JetStream cluster on 127.0.0.1, the gateway with its own node `g1`, and
//! a plain `perpcore node` `n2` on the same stream. An account is created and funded and
//! a mark set through the gateway's admin API, and an order placed through its signed
//! API; the gateway is stopped with SIGINT and prints its node's last stream message and
//! state hash; `n2`, which only read the stream, must report the same state hash at that
//! message.
//!
//! Every wait is bounded; every process the test starts is killed when it ends (guards).
//! Needs `nats-server` (`.ci/run` installs it and sets PERPCORE_REQUIRE_NATS=1).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use perpcore_cluster::harness::{nats_server_or_skip, LocalNats};

mod procs;
use procs::Proc;

const TOKEN: &str = "serve-cluster-admin-token-0123";
const KEY: &str = "key-1";
const SECRET: &str = "secret-1-0123456789";

#[test]
fn serve_on_the_stream_and_a_plain_node_agree() {
    let Some(bin) = nats_server_or_skip() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let nats = LocalNats::start_ready(&bin, &root.path().join("nats"), 3, Duration::from_secs(30))
        .unwrap();
    let urls = nats.url_list();
    let keys = root.path().join("keys.toml");
    std::fs::write(
        &keys,
        format!("[[keys]]\napi_key = \"{KEY}\"\nsecret = \"{SECRET}\"\naccount = 1\n"),
    )
    .unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let token = root.path().join("admin.token");
    std::fs::write(&token, TOKEN).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (gw_dir, n2_dir) = (root.path().join("g1"), root.path().join("n2"));
    let arg = |p: &Path| p.to_str().unwrap().to_string();
    let (gw_dir, n2_dir, keys, token) = (arg(&gw_dir), arg(&n2_dir), arg(&keys), arg(&token));
    let mut gw = Proc::spawn(
        "serve",
        root.path().join("serve.out"),
        [
            "serve",
            "--cluster",
            &urls,
            "--stream",
            "SERVE",
            "--node-id",
            "g1",
            "--journal",
            &gw_dir,
            "--keys",
            &keys,
            "--admin-token-file",
            &token,
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
    );
    let mut n2 = Proc::spawn(
        "node",
        root.path().join("node.out"),
        [
            "node",
            "--cluster",
            &urls,
            "--stream",
            "SERVE",
            "--node-id",
            "n2",
            "--dir",
            &n2_dir,
            "--print-progress",
        ],
    );
    // "serving the API on http://A and the admin API on http://B (Ctrl-C stops)"
    let (api, adm) = gw.serving_addrs();
    procs::account_1_with(adm, TOKEN, "5000");
    // A signed order, as ccxt signs it (the gateway's tests cover the signing rules).
    let payload = format!(
        "timestamp={}&symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.010&price=29000&recvWindow=5000",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
    );
    let body = format!(
        "{payload}&signature={}",
        perpcore_gateway::sign_hex(SECRET.as_bytes(), &payload)
    );
    let (status, answer) = procs::http(
        api,
        "POST",
        "/fapi/v1/order",
        &[
            ("X-MBX-APIKEY", KEY),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &body,
    );
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""status":"NEW""#), "{answer}");

    // Four commands, four stream messages (one write each): the gateway's node at 4.
    gw.stop_with("-INT");
    let summary: serde_json::Value = gw.wait_for("summary", |t| {
        t.lines().find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()?
                .get("serve")
                .cloned()
        })
    });
    assert_eq!(summary["last_seq"], 4, "{summary}");
    let (seq, hash) = (
        summary["node"]["stream_seq"].as_u64().unwrap(),
        summary["node"]["state_hash"].as_str().unwrap().to_string(),
    );
    assert_eq!(seq, 4);
    // n2 read the same four messages: its checkpoint there carries the same hash.
    let theirs = n2.wait_for("a checkpoint at the gateway's last message", |t| {
        t.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .flat_map(|p| {
                p["progress"]["checkpoints"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .find(|c| c["stream_seq"] == seq)
            .map(|c| c["state_hash"].as_str().unwrap().to_string())
    });
    assert_eq!(
        theirs, hash,
        "the gateway's node and a plain node agree at stream message {seq}"
    );
    n2.stop();
}
