//! Cluster benchmark (issue 18). Not a test: prints tables.
//!
//! A 3-server NATS JetStream cluster on 127.0.0.1 (nats-server, stream with 3 replicas,
//! file storage), engine nodes in this process (`run_node`, each with its own journal
//! with fsync, its applier thread and its NATS connection) and one producer. Workload:
//! the exchange-core mix (`perpcore_benches::generate`), its setup published and
//! acknowledged first, untimed.
//!
//! 1. throughput: N commands published in batches as fast as the window allows (at most
//!    `max_pending` batches awaiting the stream); time until every node has applied and
//!    journaled the last one;
//! 2. publish → acknowledged latency (stream ack + the answering node's durable report
//!    reaching the producer), per command from its batch's due time, at paced rates;
//! 3. failover: at 100k commands/s, the stream leader's server is SIGKILLed; the
//!    producer's longest wait between two stream acknowledgements, the time until a
//!    batch published after the kill is acknowledged, and until /jsz shows a new leader;
//! 4. the same commands through the single-node core (`perpcore run`'s path: sequencer +
//!    journal with fsync) in the same run: throughput and enqueue → durable latency.
//!
//! Knobs: `PERPCORE_BENCH_N` (timed commands of part 1, default 1,000,000),
//! `PERPCORE_BENCH_BATCH` (commands per message, default 1,024),
//! `PERPCORE_BENCH_NODES` (engine nodes, default 3), `PERPCORE_BENCH_JOURNAL_DIR`
//! (where node journals and NATS stores go, default target/bench-cluster).

// Floats only format rates for printing; nothing here feeds the engine.
#![allow(clippy::float_arithmetic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use perpcore_cluster::harness::{nats_server_binary, LocalNats};
use perpcore_cluster::{run_node, NodeOptions, Producer, ProducerConfig, StreamNames};
use perpcore_node::{self as node, Core, RunOptions};
use perpcore_sequencer::{Sequencer, SequencerConfig, StateMachine, SystemClock};
use perpcore_types::{Command, Config};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn base_dir() -> PathBuf {
    std::env::var_os("PERPCORE_BENCH_JOURNAL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-cluster"))
}

/// Engine nodes running in this process, and how far each has applied.
struct Nodes {
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    tasks: Vec<
        tokio::task::JoinHandle<Result<perpcore_cluster::NodeSummary, perpcore_cluster::NodeError>>,
    >,
    applied: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Nodes {
    fn start(
        nats: &LocalNats,
        names: &StreamNames,
        root: &Path,
        n: usize,
        config: &Config,
    ) -> Self {
        let applied = Arc::new(Mutex::new(BTreeMap::new()));
        let mut stops = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..n {
            let id = format!("n{}", i + 1);
            let mut o = NodeOptions::new(
                nats.addrs(),
                names.clone(),
                &id,
                root.join(format!("{}-{id}", names.stream)),
                config.clone(),
            );
            o.applier.snapshot_every = 0;
            o.applier.hash_every = 0;
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let applied = Arc::clone(&applied);
            tasks.push(tokio::spawn(run_node(
                o,
                async move {
                    let _ = rx.await;
                },
                move |p| {
                    applied.lock().unwrap().insert(p.node.clone(), p.stream_seq);
                },
            )));
            stops.push(tx);
        }
        Self {
            stops,
            tasks,
            applied,
        }
    }

    /// Waits until every node has applied stream message `seq`; when that happened.
    async fn wait_all(&self, n: usize, seq: u64, limit: Duration) -> Instant {
        let deadline = Instant::now() + limit;
        loop {
            {
                let a = self.applied.lock().unwrap();
                if a.len() == n && a.values().all(|s| *s >= seq) {
                    return Instant::now();
                }
            }
            assert!(
                Instant::now() < deadline,
                "nodes did not reach {seq}: {:?}",
                self.applied.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }

    async fn stop(self) {
        for s in self.stops {
            let _ = s.send(());
        }
        for t in self.tasks {
            t.await.unwrap().unwrap();
        }
    }
}

async fn producer(nats: &LocalNats, names: &StreamNames, max_pending: usize) -> Producer {
    let mut cfg = ProducerConfig::new(nats.addrs(), names.clone());
    cfg.answer_node = Some("n1".into());
    cfg.max_pending = max_pending;
    Producer::connect(cfg).await.unwrap()
}

/// Publishes `cmds` in order, one batch in flight at a time per `batch` commands, and
/// waits for every acknowledgement; the last stream sequence.
async fn publish_all(p: &Producer, cmds: &[Command], batch: usize) -> u64 {
    let mut waits = Vec::new();
    for chunk in cmds.chunks(batch) {
        let pending = p.send(chunk).await.unwrap();
        waits.push(tokio::spawn(pending.acknowledged(Duration::from_secs(120))));
    }
    let mut last = 0;
    for w in waits {
        last = last.max(w.await.unwrap().unwrap().stream_seq);
    }
    last
}

fn hist() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap()
}

fn row(h: &Histogram<u64>) -> String {
    format!(
        "{} | {} | {} | {} | {}",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    )
}

/// Paced load: every millisecond a batch of rate/1000 commands from `cmds` (in order),
/// for `secs` seconds; latency per command from its batch's due time to its
/// acknowledgement (stream + answering node). Returns achieved/s, the histograms (µs) of
/// the full acknowledgement and of the stream's alone, and per batch (due time, when the
/// stream acknowledged it).
async fn paced(
    p: &Arc<Producer>,
    cmds: &[Command],
    rate: u64,
    secs: u64,
) -> (f64, Histogram<u64>, Histogram<u64>, Vec<(Instant, Instant)>) {
    let per = (rate / 1000).max(1) as usize;
    let batches = (secs * 1000) as usize;
    let start = Instant::now();
    let mut timer = tokio::time::interval(Duration::from_millis(1));
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut waits = Vec::with_capacity(batches);
    for (i, chunk) in cmds.chunks(per).take(batches).enumerate() {
        timer.tick().await;
        let due = start + Duration::from_millis(i as u64);
        let pending = p.send(chunk).await.unwrap();
        let n = chunk.len() as u64;
        waits.push(tokio::spawn(async move {
            let a = pending
                .acknowledged(Duration::from_secs(120))
                .await
                .unwrap();
            (due, n, a, Instant::now())
        }));
    }
    let mut h = hist();
    let mut hs = hist();
    let mut acks = Vec::with_capacity(waits.len());
    let mut total = 0u64;
    let mut end = start;
    for w in waits {
        let (due, n, a, at) = w.await.unwrap();
        h.record_n(at.duration_since(due).as_micros().max(1) as u64, n)
            .unwrap();
        hs.record_n(
            a.stream_acked_at.duration_since(due).as_micros().max(1) as u64,
            n,
        )
        .unwrap();
        total += n;
        end = end.max(at);
        acks.push((due, a.stream_acked_at));
    }
    let rate = total as f64 / end.duration_since(start).as_secs_f64();
    (rate, h, hs, acks)
}

fn main() {
    let Some(bin) = nats_server_binary() else {
        eprintln!("nats-server not found (apt-get install nats-server): nothing to measure");
        return;
    };
    let n = env_or("PERPCORE_BENCH_N", 1_000_000) as usize;
    let batch = env_or("PERPCORE_BENCH_BATCH", 1024) as usize;
    let nodes_n = env_or("PERPCORE_BENCH_NODES", 3) as usize;
    let root = base_dir();
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    println!("machine: {}", perpcore_benches::machine());
    println!("nats-server: {}", bin.display());
    println!(
        "engine nodes: {nodes_n} (in this process), stream replicas: 3, batch: {batch} commands\n"
    );

    // Setup + 1.7M (latency) or N (throughput) timed commands of the exchange mix.
    let timed = n.max(1_700_000);
    let w = perpcore_benches::generate(perpcore_benches::Params {
        warmup: 0,
        timed,
        ..Default::default()
    });
    let st = perpcore_benches::engine_stream(&w);
    let setup: Vec<Command> = st.untimed.into_iter().map(|e| e.command).collect();
    let timed: Vec<Command> = st.timed.into_iter().map(|e| e.command).collect();
    let cfg = perpcore_benches::bench_config();
    let mut enc = Vec::new();
    Core::encode_command(&timed[0], &mut enc);
    let mut bytes = 0usize;
    for c in timed.iter().take(10_000) {
        enc.clear();
        Core::encode_command(c, &mut enc);
        bytes += enc.len();
    }
    println!(
        "workload: exchange-core mix, {} setup commands, ~{} bytes per command\n",
        setup.len(),
        bytes / 10_000
    );

    let mut nats =
        LocalNats::start_ready(&bin, &root.join("nats"), 3, Duration::from_secs(20)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // 1. Throughput.
    let names = StreamNames::new("TPUT").unwrap();
    let (cluster_rate, publish_rate) = rt.block_on(async {
        let nodes = Nodes::start(&nats, &names, &root, nodes_n, &cfg);
        let p = producer(&nats, &names, 128).await;
        let s = publish_all(&p, &setup, batch).await;
        nodes.wait_all(nodes_n, s, Duration::from_secs(60)).await;
        let start = Instant::now();
        let last = publish_all(&p, &timed[..n], batch).await;
        let acked = start.elapsed();
        let done = nodes
            .wait_all(nodes_n, last, Duration::from_secs(600))
            .await;
        let all = done.duration_since(start);
        nodes.stop().await;
        (n as f64 / all.as_secs_f64(), n as f64 / acked.as_secs_f64())
    });
    let single_dir = root.join("single-node");
    let t = Instant::now();
    let mut all_cmds = setup.clone();
    all_cmds.extend_from_slice(&timed[..n]);
    let s = node::run(&single_dir, &cfg, all_cmds, &RunOptions::default(), |_| {}).unwrap();
    let single_rate = s.commands as f64 / t.elapsed().as_secs_f64();
    println!("| mode | commands/s |");
    println!("|---|---|");
    println!("| cluster: {n} commands published, applied and journaled by all {nodes_n} nodes | {cluster_rate:.0} |");
    println!(
        "| cluster: the same, every batch acknowledged (stream + node n1) | {publish_rate:.0} |"
    );
    println!("| single node (`perpcore run` path: sequencer + journal, fsync), setup included | {single_rate:.0} |");

    // 2. Latency at paced rates, cluster and single node.
    println!("\npublish → acknowledged latency (µs, per command from its batch's due time; a batch of rate/1000 commands every ms, 2 s per rate):\n");
    println!("| mode | offered/s | achieved/s | p50 | p90 | p99 | p99.9 | max | stream ack alone p50 / p99 |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let names = StreamNames::new("LAT").unwrap();
    let rates = [100_000u64, 250_000, 500_000];
    rt.block_on(async {
        let nodes = Nodes::start(&nats, &names, &root, nodes_n, &cfg);
        let p = Arc::new(producer(&nats, &names, 256).await);
        let s = publish_all(&p, &setup, batch).await;
        nodes.wait_all(nodes_n, s, Duration::from_secs(60)).await;
        let mut from = 0usize;
        for rate in rates {
            let (achieved, h, hs, _) = paced(&p, &timed[from..], rate, 2).await;
            from += (rate * 2) as usize;
            println!(
                "| cluster | {rate} | {achieved:.0} | {} | {} / {} |",
                row(&h),
                hs.value_at_quantile(0.5),
                hs.value_at_quantile(0.99)
            );
        }
        nodes.stop().await;
    });
    for rate in rates {
        // The setup first (untimed), then 2 s of the timed part, paced as above.
        let mut cmds = setup.clone();
        cmds.extend_from_slice(&timed[..(rate * 2) as usize]);
        let dir = root.join(format!("single-lat-{rate}"));
        let (achieved, h) = single_node_latency(rate, &cmds, setup.len(), &cfg, &dir);
        println!("| single node | {rate} | {achieved:.0} | {} | |", row(&h));
    }

    // 3. Failover.
    let names = StreamNames::new("FAIL").unwrap();
    println!("\nfailover: 100,000 commands/s offered, SIGKILL of the stream leader's nats-server 2 s in:\n");
    let (leader, t_kill, t_new_leader, acks) = rt.block_on(async {
        let nodes = Nodes::start(&nats, &names, &root, nodes_n, &cfg);
        let p = Arc::new(producer(&nats, &names, 256).await);
        let s = publish_all(&p, &setup, batch).await;
        nodes.wait_all(nodes_n, s, Duration::from_secs(60)).await;
        let load = {
            let p = Arc::clone(&p);
            let cmds = timed[..1_000_000].to_vec();
            tokio::spawn(async move { paced(&p, &cmds, 100_000, 10).await })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        let leader = nats.stream_leader("FAIL").unwrap();
        let li = nats.index_of(&leader).unwrap();
        let t_kill = Instant::now();
        nats.kill(li);
        let t_new = loop {
            if nats.stream_leader("FAIL").is_some_and(|l| l != leader) {
                break Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        nats.start_server(li).unwrap();
        let (achieved, h, _, acks) = load.await.unwrap();
        println!("| offered/s | achieved/s | p50 | p90 | p99 | p99.9 | max |\n|---|---|---|---|---|---|---|\n| 100000 | {achieved:.0} | {} |", row(&h));
        nodes.stop().await;
        (leader, t_kill, t_new, acks)
    });
    let mut arrivals: Vec<Instant> = acks.iter().map(|a| a.1).collect();
    arrivals.sort();
    let longest_gap = arrivals
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .max()
        .unwrap_or_default();
    let first_after = acks
        .iter()
        .filter(|(due, _)| *due > t_kill)
        .map(|(_, at)| *at)
        .min()
        .map(|at| at.duration_since(t_kill));
    println!(
        "\nkilled {leader}; /jsz showed a new stream leader after {:.2} s; longest wait between two stream acknowledgements {:.2} s; first batch due after the kill acknowledged by the stream {:.2} s after it",
        t_new_leader.duration_since(t_kill).as_secs_f64(),
        longest_gap.as_secs_f64(),
        first_after.map(|d| d.as_secs_f64()).unwrap_or(f64::NAN)
    );
    drop(nats);
}

/// Enqueue → durable latency through the sequencer (the single-node core): `cmds[..skip]`
/// first, waited for; then the rest paced like the cluster's producer (a batch of
/// rate/1000 commands due every millisecond, one `submit_many` each), latency per
/// command from its batch's due time to its `Committed` output.
fn single_node_latency(
    rate: u64,
    cmds: &[Command],
    skip: usize,
    cfg: &Config,
    dir: &Path,
) -> (f64, Histogram<u64>) {
    let _ = std::fs::remove_dir_all(dir);
    let (journal, _) =
        perpcore_journal::Journal::open_or_create(dir, &node::genesis(cfg), Default::default())
            .unwrap();
    let (seqr, rx) = Sequencer::start(
        Core(perpcore_engine::Engine::new(cfg.clone())),
        Some(journal),
        Box::new(SystemClock),
        SequencerConfig {
            queue_capacity: 65_536,
            ..SequencerConfig::default()
        },
    )
    .unwrap();
    // Setup first, waited for.
    let handle = seqr.handle();
    handle.submit_many(cmds[..skip].to_vec()).unwrap();
    let mut seen = 0usize;
    for _ in rx.iter().flatten() {
        seen += 1;
        if seen == skip {
            break;
        }
    }
    let timed = &cmds[skip..];
    let total = timed.len();
    let per = (rate / 1000).max(1) as usize;
    let start = Instant::now();
    let mut h = hist();
    let mut end = start;
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || {
            for (i, chunk) in timed.chunks(per).enumerate() {
                let due = start + Duration::from_millis(i as u64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                handle.submit_many(chunk.to_vec()).unwrap();
            }
        });
        let mut got = 0usize;
        for c in rx.iter().flatten() {
            let i = (c.seq as usize - skip - 1) / per;
            let due = start + Duration::from_millis(i as u64);
            let now = Instant::now();
            h.record(now.duration_since(due).as_micros().max(1) as u64)
                .unwrap();
            got += 1;
            end = now;
            if got == total {
                break;
            }
        }
        producer.join().unwrap();
    });
    seqr.shutdown().unwrap();
    (total as f64 / end.duration_since(start).as_secs_f64(), h)
}
