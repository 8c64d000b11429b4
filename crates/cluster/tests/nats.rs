//! Nodes and a producer on a real 3-server JetStream cluster (nats-server on 127.0.0.1),
//! in one process: acknowledgement by the rule, identical nodes, a copy of a batch
//! published outside JetStream's duplicate window applied once, a node stopped and
//! restarted catching up from its journal and cursor.
//!
//! Needs `nats-server` (Debian: `apt-get install nats-server`; `.ci/run` installs it).
//! Without it the tests pass with a loud message, unless PERPCORE_REQUIRE_NATS is set.

use std::path::Path;
use std::time::{Duration, Instant};

use perpcore_cluster::harness::{nats_server_or_skip, LocalNats};
use perpcore_cluster::wire::{msg_id, BatchEncoder, Progress};
use perpcore_cluster::{run_node, NodeOptions, NodeSummary, Producer, ProducerConfig, StreamNames};
use perpcore_node::Core;
use perpcore_sequencer::StateMachine;
use perpcore_types::{AccountId, AssetId, Command, Money};
use tokio::sync::{mpsc, oneshot};

fn deposit(k: u64) -> Command {
    Command::Deposit {
        account: AccountId(1),
        asset: AssetId(0),
        amount: Money(i128::from(k)),
    }
}

struct RunningNode {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<NodeSummary, perpcore_cluster::NodeError>>,
}

impl RunningNode {
    fn start(
        nats: &LocalNats,
        names: &StreamNames,
        id: &str,
        dir: &Path,
        reports: mpsc::UnboundedSender<Progress>,
    ) -> Self {
        let mut o = NodeOptions::new(
            nats.addrs(),
            names.clone(),
            id,
            dir.to_path_buf(),
            perpcore_config::default_config(),
        );
        o.applier.hash_every = 8;
        o.progress_interval = Duration::from_millis(100);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(run_node(
            o,
            async move {
                let _ = rx.await;
            },
            move |p| {
                let _ = reports.send(p.clone());
            },
        ));
        Self {
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) -> NodeSummary {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("node stops within 20 s")
            .unwrap()
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_agree_acks_wait_for_the_node_and_restart_catches_up() {
    let Some(bin) = nats_server_or_skip() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let nats = LocalNats::start_ready(&bin, &root.path().join("nats"), 3, Duration::from_secs(15))
        .unwrap();
    let names = StreamNames::new("T1").unwrap();

    let (rep_tx, mut rep_rx) = mpsc::unbounded_channel::<Progress>();
    let d1 = root.path().join("node1");
    let d2 = root.path().join("node2");
    let n1 = RunningNode::start(&nats, &names, "n1", &d1, rep_tx.clone());
    let n2 = RunningNode::start(&nats, &names, "n2", &d2, rep_tx.clone());

    let mut cfg = ProducerConfig::new(nats.addrs(), names.clone());
    cfg.answer_node = Some("n1".into());
    cfg.max_pending = 16;
    let producer = Producer::connect(cfg).await.unwrap();

    // Account first, acknowledged before anything depends on it.
    let p = producer
        .send(&[Command::CreateAccount {
            account: AccountId(1),
            parent: None,
        }])
        .await
        .unwrap();
    let first = p.acknowledged(Duration::from_secs(20)).await.unwrap();
    assert_eq!(first.stream_seq, 1);
    // The rule: node n1 had applied and journaled stream message 1 when it acknowledged.
    assert!(first.node_stream_seq >= 1 && first.node_engine_seq >= 1);

    // 50 batches of 20 deposits, 16 in flight.
    let mut pending = Vec::new();
    let mut k = 0u64;
    for _ in 0..50 {
        let cmds: Vec<Command> = (0..20).map(|i| deposit(k + i + 1)).collect();
        k += 20;
        pending.push(producer.send(&cmds).await.unwrap());
    }
    let mut last = 0;
    // Where batch 2 (the first deposit batch) landed: message 2 unless its first publish
    // was retried after later ones (batches in flight together may land out of order
    // after a retry, docs/CLUSTER.md).
    let mut batch2_seq = 0;
    for (i, p) in pending.into_iter().enumerate() {
        let a = p.acknowledged(Duration::from_secs(20)).await.unwrap();
        assert!(a.node_stream_seq >= a.stream_seq);
        if i == 0 {
            batch2_seq = a.stream_seq;
        }
        last = last.max(a.stream_seq);
    }
    assert_eq!(last, 51);

    // A copy of batch 2 published under another message id: JetStream stores it
    // (message 52), the nodes skip it by their own rule.
    let mut enc = BatchEncoder::new(producer.id(), 2);
    let mut buf = Vec::new();
    for i in 0..20 {
        buf.clear();
        Core::encode_command(&deposit(i + 1), &mut buf);
        enc.push(&buf);
    }
    let copy = producer
        .send_raw(
            2,
            enc.finish(),
            format!("{}-copy", msg_id(producer.id(), 2)),
        )
        .await
        .unwrap()
        .acknowledged(Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(copy.stream_seq, 52);
    assert!(!copy.duplicate);
    // The same id again: JetStream itself answers with the first copy's position.
    let mut enc = BatchEncoder::new(producer.id(), 2);
    enc.push(&buf);
    let again = producer
        .send_raw(2, enc.finish(), msg_id(producer.id(), 2))
        .await
        .unwrap()
        .acknowledged(Duration::from_secs(20))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.stream_seq, batch2_seq);

    // Reports so far; node 2 must have processed the copy before it stops.
    let mut hashes: std::collections::BTreeMap<(String, u64), String> = Default::default();
    let mut reached: std::collections::BTreeMap<String, u64> = Default::default();
    let mut take =
        |rx: &mut mpsc::UnboundedReceiver<Progress>,
         hashes: &mut std::collections::BTreeMap<(String, u64), String>| {
            while let Ok(p) = rx.try_recv() {
                for c in &p.checkpoints {
                    hashes.insert((p.node.clone(), c.stream_seq), c.state_hash.clone());
                }
                let r = reached.entry(p.node.clone()).or_default();
                *r = (*r).max(p.stream_seq);
            }
            reached.clone()
        };
    let deadline = Instant::now() + Duration::from_secs(30);
    while take(&mut rep_rx, &mut hashes)
        .get("n2")
        .copied()
        .unwrap_or(0)
        < 52
    {
        assert!(Instant::now() < deadline, "n2 did not reach message 52");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Node 2 stops (cleanly) and misses 20 batches; then restarts and catches up.
    let s2 = n2.stop().await;
    assert_eq!(s2.stats.duplicates, 1);
    let mut pending = Vec::new();
    for _ in 0..20 {
        let cmds: Vec<Command> = (0..20).map(|i| deposit(k + i + 1)).collect();
        k += 20;
        pending.push(producer.send(&cmds).await.unwrap());
    }
    for p in pending {
        p.acknowledged(Duration::from_secs(20)).await.unwrap();
    }
    let n2 = RunningNode::start(&nats, &names, "n2", &d2, rep_tx.clone());

    // Both reach message 72 with the same hash there (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        take(&mut rep_rx, &mut hashes);
        if hashes.contains_key(&("n1".into(), 72)) && hashes.contains_key(&("n2".into(), 72)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nodes did not reach message 72: {hashes:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every stream message both nodes hashed: equal.
    let mut compared = 0;
    for ((node, seq), h) in &hashes {
        if node == "n1" {
            if let Some(h2) = hashes.get(&("n2".into(), *seq)) {
                assert_eq!(h, h2, "state hashes differ at stream message {seq}");
                compared += 1;
            }
        }
    }
    assert!(compared >= 3, "{hashes:?}");

    let s1 = n1.stop().await;
    let s2 = n2.stop().await;
    assert_eq!(s1.stream_seq, 72);
    assert_eq!(s2.stream_seq, 72);
    assert_eq!(s1.state_hash, s2.state_hash);
    // 1 creation + 70 batches × 20 deposits.
    assert_eq!(s1.engine_seq, 1 + 70 * 20);
    assert_eq!(s2.engine_seq, s1.engine_seq);
    // Node 2 resumed from its cursor: nothing to re-read after a clean stop.
    assert_eq!(s2.open.cursor_stream_seq, 52);
    assert_eq!(s2.stats.verified, 0);

    // The stream deleted and made again under the same name: it ends before what node 1
    // has applied, and node 1 refuses to go on instead of waiting for new messages
    // under old numbers.
    let js = async_nats::jetstream::new(producer.client().clone());
    js.delete_stream("T1").await.unwrap();
    let RunningNode { stop: _keep, task } =
        RunningNode::start(&nats, &names, "n1", &d1, rep_tx.clone());
    let r = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("node 1 stops by itself")
        .unwrap();
    match r {
        Err(perpcore_cluster::NodeError::StreamBehind { needed, .. }) => assert_eq!(needed, 73),
        other => panic!("expected StreamBehind, got {other:?}"),
    }
    drop(nats);
}

/// Regression (found by the gateway's cluster test): with every nats-server down, a node
/// told to stop hung for good — a NATS request of its retry loop and its last flush both
/// wait for a reconnection that never comes. Now both give way to the stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stops_while_every_server_is_down() {
    let Some(bin) = nats_server_or_skip() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let mut nats =
        LocalNats::start_ready(&bin, &root.path().join("nats"), 3, Duration::from_secs(15))
            .unwrap();
    let names = StreamNames::new("DOWN").unwrap();
    let (rep_tx, mut rep_rx) = mpsc::unbounded_channel::<Progress>();
    let node = RunningNode::start(&nats, &names, "n1", &root.path().join("node1"), rep_tx);
    // Its first report: connected, the stream made, the consumer pulling.
    tokio::time::timeout(Duration::from_secs(20), rep_rx.recv())
        .await
        .expect("a first progress report within 20 s")
        .expect("the node reports");
    for i in 0..3 {
        nats.kill(i);
    }
    // Let its fetch task notice and start retrying against nobody.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let summary = node.stop().await;
    assert_eq!(summary.stream_seq, 0);
}
