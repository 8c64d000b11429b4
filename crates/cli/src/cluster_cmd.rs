//! `perpcore node` and `perpcore publish`: cluster mode (docs/CLUSTER.md). Argument
//! handling and printing only; the work is in perpcore-cluster.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use perpcore_cluster::{run_node, NodeOptions, Producer, ProducerConfig, StreamNames};

fn hex(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

/// The first of SIGINT and SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn load_config(path: Option<&Path>) -> anyhow::Result<perpcore_types::Config> {
    Ok(match path {
        Some(p) => {
            perpcore_config::load_path(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
        }
        None => perpcore_config::default_config(),
    })
}

/// `perpcore node`'s arguments.
pub struct NodeArgs {
    pub cluster: String,
    pub stream: String,
    pub node_id: String,
    pub dir: PathBuf,
    pub config: Option<PathBuf>,
    pub replicas: usize,
    pub hash_every: u64,
    pub snapshot_every: u64,
    pub print_progress: bool,
}

pub fn node(a: NodeArgs) -> anyhow::Result<()> {
    let servers = perpcore_cluster::stream::parse_servers(&a.cluster)
        .map_err(|e| anyhow::anyhow!("--cluster: {e}"))?;
    let names = StreamNames::new(&a.stream)?;
    let config = load_config(a.config.as_deref())?;
    let config_hash = blake3::hash(&perpcore_node::genesis(&config));
    let mut opts = NodeOptions::new(servers, names.clone(), &a.node_id, a.dir.clone(), config);
    opts.replicas = a.replicas;
    opts.applier.hash_every = a.hash_every;
    opts.applier.snapshot_every = a.snapshot_every;
    println!(
        "{}",
        serde_json::json!({"node": {
            "id": a.node_id,
            "dir": a.dir.display().to_string(),
            "stream": names.stream,
            "commands_subject": names.commands,
            "progress_subject": names.progress(&a.node_id),
            "config_hash": config_hash.to_hex().to_string(),
            "pid": std::process::id(),
        }})
    );
    let _ = std::io::stdout().flush();
    let print = a.print_progress;
    let rt = runtime()?;
    let summary = rt
        .block_on(run_node(opts, stop_signal(), move |p| {
            if print {
                if let Ok(line) = serde_json::to_string(&serde_json::json!({ "progress": p })) {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
            }
        }))
        .with_context(|| format!("node {} ({})", a.node_id, a.dir.display()))?;
    println!(
        "{}",
        serde_json::json!({"stopped": {
            "stream_seq": summary.stream_seq,
            "engine_seq": summary.engine_seq,
            "state_hash": hex(&summary.state_hash),
            "resumed_from_stream_seq": summary.open.cursor_stream_seq,
            "journal_seq_at_start": summary.open.journal_seq,
            "messages": summary.stats.messages,
            "commands": summary.stats.commands,
            "verified": summary.stats.verified,
            "duplicates": summary.stats.duplicates,
            "invalid": summary.stats.invalid,
            "groups": summary.stats.groups,
            "snapshots": summary.stats.snapshots,
        }})
    );
    Ok(())
}

/// `perpcore publish`'s arguments.
pub struct PublishArgs {
    pub cluster: String,
    pub stream: String,
    pub input: PathBuf,
    pub batch: usize,
    pub max_pending: usize,
    pub answer_node: Option<String>,
    pub replicas: usize,
    pub timeout_ms: u64,
}

pub fn publish(a: PublishArgs) -> anyhow::Result<()> {
    let servers = perpcore_cluster::stream::parse_servers(&a.cluster)
        .map_err(|e| anyhow::anyhow!("--cluster: {e}"))?;
    let names = StreamNames::new(&a.stream)?;
    let text = std::fs::read_to_string(&a.input)
        .with_context(|| format!("cannot read {}", a.input.display()))?;
    let base = a.input.parent().unwrap_or_else(|| Path::new("."));
    let (config, commands) = perpcore_scenario::load_commands(&text, base)
        .map_err(|e| anyhow::anyhow!("{}:{}: {}", a.input.display(), e.line, e.message))?;
    let config_hash = blake3::hash(&perpcore_node::genesis(&config));
    let mut cfg = ProducerConfig::new(servers, names);
    cfg.max_pending = a.max_pending;
    cfg.answer_node = a.answer_node.clone();
    cfg.replicas = a.replicas;
    let timeout = Duration::from_millis(a.timeout_ms);
    let batch = a.batch.max(1);
    let total = commands.len();
    let rt = runtime()?;
    let started = Instant::now();
    let (batches, last_stream_seq) = rt.block_on(async move {
        let producer = Producer::connect(cfg).await?;
        // Acknowledgements are printed in batch order by a task of their own while
        // newer batches go out (at most max_pending wait for the stream).
        let (tx, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<perpcore_cluster::producer::Pending>();
        let printer = tokio::spawn(async move {
            let mut n = 0u64;
            let mut last = 0u64;
            while let Some(p) = rx.recv().await {
                let commands = p.commands;
                let a = p.acknowledged(timeout).await?;
                n += 1;
                last = last.max(a.stream_seq);
                println!(
                    "{}",
                    serde_json::json!({"ack": {
                        "batch": a.batch_seq,
                        "commands": commands,
                        "stream_seq": a.stream_seq,
                        "duplicate": a.duplicate,
                        "attempts": a.attempts,
                        "node_stream_seq": a.node_stream_seq,
                        "node_engine_seq": a.node_engine_seq,
                        "latency_us": a.latency.as_micros() as u64,
                    }})
                );
            }
            Ok::<_, perpcore_cluster::PublishFailed>((n, last))
        });
        for chunk in commands.chunks(batch) {
            let p = producer.send(chunk).await?;
            if tx.send(p).is_err() {
                break;
            }
        }
        drop(tx);
        let r = printer
            .await
            .map_err(|e| anyhow::anyhow!("ack task: {e}"))??;
        Ok::<_, anyhow::Error>(r)
    })?;
    let ms = started.elapsed().as_millis().max(1);
    println!(
        "{}",
        serde_json::json!({"published": {
            "commands": total,
            "batches": batches,
            "last_stream_seq": last_stream_seq,
            "answer_node": a.answer_node,
            "scenario_config_hash": config_hash.to_hex().to_string(),
            "wall_ms": ms,
        }})
    );
    Ok(())
}
