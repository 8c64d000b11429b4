//! `perpcore node` and `perpcore publish`: cluster mode (docs/CLUSTER.md). Argument
//! handling, composition and printing only: the work is in perpcore-cluster (nodes,
//! the producer), perpcore-scenario (scenario commands) and perpcore-feed (recorded
//! market data merged by exchange time, converted and guarded, as the replay and the
//! live client do). Must never put a clock reading or an exchange time into a command's
//! envelope: in cluster mode the stream gives the time (docs/CLUSTER.md, rule 5).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use perpcore_cluster::{run_node, NodeOptions, Producer, ProducerConfig, StreamNames};
use perpcore_feed::{
    ConvertOptions, FeedItem, GuardOptions, GuardStats, Guarded, ReaderOptions, Replay,
};
use perpcore_types::Command;
use std::collections::BTreeMap;

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
#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// NATS servers, comma-separated (e.g. nats://127.0.0.1:4222,nats://127.0.0.1:4223).
    #[arg(long)]
    pub cluster: String,
    /// The JetStream stream (created with --replicas replicas if missing).
    #[arg(long, default_value = "PERPCORE")]
    pub stream: String,
    /// This node's id (letters, digits, '-', '_'): its consumer is node-<ID>.
    #[arg(long)]
    pub node_id: String,
    /// Node directory: the journal (DIR/journal, readable by replay/inspect/audit) and
    /// the cursor.
    #[arg(long)]
    pub dir: PathBuf,
    /// Configuration (TOML or JSON); every node of a stream must use the same.
    /// Default: the built-in one.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Stream replicas, if this node creates the stream.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// Report the state hash after every N-th stream message (and when caught up).
    #[arg(long, default_value_t = 1024)]
    pub hash_every: u64,
    /// Write a snapshot every N commands (0: never).
    #[arg(long, default_value_t = 1_000_000)]
    pub snapshot_every: u64,
    /// Print every progress report as a JSON line.
    #[arg(long)]
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
    /// A scenario whose engine commands go first (its configuration then maps the feed's
    /// symbols).
    pub input: Option<PathBuf>,
    /// Recorded market-data files, merged by exchange time and converted as the replay
    /// does (`perpcore_feed::Replay`).
    pub feeds: Vec<PathBuf>,
    /// The configuration that maps the feed's symbols, without a scenario.
    pub config: Option<PathBuf>,
    /// The plausibility guard on the feed's mark and index prices (None: off).
    pub guard: Option<GuardOptions>,
    /// The live websocket client's options (`--live`): its commands are published after
    /// the scenario's until SIGINT or SIGTERM.
    pub live: Option<perpcore_feed::live::LiveOptions>,
    /// With `--live`: how long a batch waits for more commands before it goes out.
    pub linger: Duration,
    pub batch: usize,
    pub max_pending: usize,
    pub answer_node: Option<String>,
    pub replicas: usize,
    pub timeout_ms: u64,
}

/// The feed's commands: the replay, guarded or not.
enum Feed {
    Guarded(Box<Guarded<Replay>>),
    Unguarded(Box<Replay>),
}

impl Feed {
    fn next(&mut self) -> Option<FeedItem> {
        match self {
            Feed::Guarded(g) => g.next(),
            Feed::Unguarded(r) => r.next(),
        }
    }
    fn replay(&self) -> &Replay {
        match self {
            Feed::Guarded(g) => g.inner(),
            Feed::Unguarded(r) => r,
        }
    }
    fn guard(&self) -> Option<GuardStats> {
        match self {
            Feed::Guarded(g) => Some(*g.stats()),
            Feed::Unguarded(_) => None,
        }
    }
}

/// What `perpcore publish` sends, in order: the scenario's commands, then the feed's
/// (read while publishing: one batch in memory, whatever the files' sizes).
struct Source {
    scenario: std::vec::IntoIter<Command>,
    feed: Option<Feed>,
    /// The feed's first item, read before connecting to know there is one.
    first: Option<FeedItem>,
    /// Feed commands published, by kind (after the guard).
    published: BTreeMap<&'static str, u64>,
    /// Exchange times of the first and last feed command published (ns).
    exchange_span: Option<(u64, u64)>,
}

impl Source {
    /// Appends up to `n` commands to `out`.
    fn fill(&mut self, n: usize, out: &mut Vec<Command>) {
        while out.len() < n {
            if let Some(c) = self.scenario.next() {
                out.push(c);
                continue;
            }
            let item = match self.first.take() {
                Some(i) => Some(i),
                None => self.feed.as_mut().and_then(Feed::next),
            };
            let Some(item) = item else { return };
            self.tally(&item);
            out.push(item.command);
        }
    }

    /// Counts a feed command about to be published.
    fn tally(&mut self, item: &FeedItem) {
        *self.published.entry(item.command.kind()).or_default() += 1;
        let t = item.exchange_ns;
        self.exchange_span = Some(match self.exchange_span {
            None => (t, t),
            Some((a, b)) => (a.min(t), b.max(t)),
        });
    }
}

/// Per file: lines, messages and problems by kind (the bench's wording), then the
/// conversion's problems.
fn feed_problems_line(replay: &Replay) -> String {
    replay.problem_lines().join("; ")
}

/// The feed's part of the summary line.
fn feed_summary(feed: &Feed, src: &Source) -> serde_json::Value {
    let replay = feed.replay();
    let files: Vec<serde_json::Value> = replay
        .source_stats()
        .iter()
        .map(|(name, s)| {
            let r = s.report();
            serde_json::json!({
                "file": name,
                "lines": r.lines,
                "messages": r.messages,
                "problems": r.problems,
            })
        })
        .collect();
    let all = replay.stats();
    let conversion = replay.converter().stats().report();
    let guard = feed.guard().map(
        |g| serde_json::json!({"held": g.held, "dropped": g.dropped, "confirmed": g.confirmed}),
    );
    serde_json::json!({
        "files": files,
        "lines": all.lines,
        "problems": all.total_problems(),
        "conversion_problems": conversion.problems,
        "depth": conversion.depth,
        "converted": conversion.commands,
        "guard": guard,
        "commands": src.published,
        "exchange_ns": src.exchange_span.map(|(a, b)| [a, b]),
        "never_synced": replay
            .converter()
            .never_synced()
            .into_iter()
            .map(|(s, n)| serde_json::json!({"symbol": s, "diffs": n}))
            .collect::<Vec<_>>(),
    })
}

/// The scenario's commands and configuration, or none (and the configuration of
/// `--config` or the built-in one).
fn publish_source(a: &PublishArgs) -> anyhow::Result<(perpcore_types::Config, Source)> {
    let (config, scenario) = match &a.input {
        Some(input) => {
            if a.config.is_some() {
                anyhow::bail!("--config is for --feed or --live without --input (a scenario names its own configuration)");
            }
            let text = std::fs::read_to_string(input)
                .with_context(|| format!("cannot read {}", input.display()))?;
            let base = input.parent().unwrap_or_else(|| Path::new("."));
            perpcore_scenario::load_commands(&text, base)
                .map_err(|e| anyhow::anyhow!("{}:{}: {}", input.display(), e.line, e.message))?
        }
        None => (load_config(a.config.as_deref())?, Vec::new()),
    };
    let mut src = Source {
        scenario: scenario.into_iter(),
        feed: None,
        first: None,
        published: BTreeMap::new(),
        exchange_span: None,
    };
    if !a.feeds.is_empty() {
        let replay = Replay::open(
            &a.feeds,
            &config,
            ReaderOptions::default(),
            ConvertOptions::default(),
        )
        .map_err(|e| anyhow::anyhow!("--feed: {e}"))?;
        let mut feed = match a.guard {
            Some(g) => Feed::Guarded(Box::new(Guarded::new(replay, g))),
            None => Feed::Unguarded(Box::new(replay)),
        };
        // Files that give nothing (empty, foreign, only symbols the configuration lacks,
        // every mark held by the guard) are refused before anything is published.
        src.first = feed.next();
        if src.first.is_none() {
            anyhow::bail!(
                "nothing usable in the feed files: they gave 0 commands ({})",
                feed_problems_line(feed.replay())
            );
        }
        src.feed = Some(feed);
    }
    Ok((config, src))
}

/// Acknowledgements are printed in batch order by a task of their own while newer
/// batches go out (at most max_pending wait for the stream). The task ends with the
/// batches acknowledged and the highest stream sequence once the sender is dropped.
#[allow(clippy::type_complexity)]
fn ack_printer(
    timeout: Duration,
) -> (
    tokio::sync::mpsc::UnboundedSender<perpcore_cluster::producer::Pending>,
    tokio::task::JoinHandle<Result<(u64, u64), perpcore_cluster::PublishFailed>>,
) {
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
            let line = serde_json::json!({"ack": {
                "batch": a.batch_seq,
                "commands": commands,
                "stream_seq": a.stream_seq,
                "duplicate": a.duplicate,
                "attempts": a.attempts,
                "node_stream_seq": a.node_stream_seq,
                "node_engine_seq": a.node_engine_seq,
                "latency_us": a.latency.as_micros() as u64,
            }});
            // Flushed per line: a live publisher's output is read while it runs.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        Ok::<_, perpcore_cluster::PublishFailed>((n, last))
    });
    (tx, printer)
}

pub fn publish(a: PublishArgs) -> anyhow::Result<()> {
    let servers = perpcore_cluster::stream::parse_servers(&a.cluster)
        .map_err(|e| anyhow::anyhow!("--cluster: {e}"))?;
    let names = StreamNames::new(&a.stream)?;
    let (config, source) = publish_source(&a)?;
    let config_hash = blake3::hash(&perpcore_node::genesis(&config));
    let mut cfg = ProducerConfig::new(servers, names);
    cfg.max_pending = a.max_pending;
    cfg.answer_node = a.answer_node.clone();
    cfg.replicas = a.replicas;
    let timeout = Duration::from_millis(a.timeout_ms);
    let batch = a.batch.max(1);
    let rt = runtime()?;
    let started = Instant::now();
    let live = a.live.clone().map(|o| (o, config.clone()));
    let linger = a.linger;
    let (batches, last_stream_seq, total, source, live) = rt.block_on(async move {
        let mut source = source;
        let producer = Producer::connect(cfg).await?;
        // Acknowledgements are printed in batch order by a task of their own while
        // newer batches go out (at most max_pending wait for the stream).
        let (tx, printer) = ack_printer(timeout);
        let mut chunk = Vec::with_capacity(batch);
        let mut total = 0u64;
        loop {
            chunk.clear();
            source.fill(batch, &mut chunk);
            if chunk.is_empty() {
                break;
            }
            total += chunk.len() as u64;
            let p = producer.send(&chunk).await?;
            if tx.send(p).is_err() {
                break;
            }
        }
        let live = match live {
            Some((opts, config)) => {
                let (n, stats) =
                    publish_live(&producer, &tx, opts, config, batch, linger, &mut source).await?;
                total += n;
                Some(stats)
            }
            None => None,
        };
        drop(tx);
        let (n, last) = printer
            .await
            .map_err(|e| anyhow::anyhow!("ack task: {e}"))??;
        Ok::<_, anyhow::Error>((n, last, total, source, live))
    })?;
    let ms = started.elapsed().as_millis().max(1);
    let feed = source.feed.as_ref().map(|f| feed_summary(f, &source));
    if let Some(f) = &source.feed {
        let replay = f.replay();
        if replay.stats().total_problems() > 0 {
            eprintln!(
                "warning: feed lines not used: {}",
                feed_problems_line(replay)
            );
        }
        let never = replay.converter().never_synced();
        if !never.is_empty() {
            let list: Vec<String> = never
                .iter()
                .map(|(s, n)| format!("{s} ({n} diffs)"))
                .collect();
            eprintln!(
                "warning: depth streams that never synchronised (no usable snapshot): {}",
                list.join(", ")
            );
        }
    }
    if let Some(l) = &live {
        if l.feed.total_problems() > 0 {
            eprintln!("warning: live messages not used: {}", l.feed.report());
        }
    }
    println!(
        "{}",
        serde_json::json!({"published": {
            "commands": total,
            "batches": batches,
            "last_stream_seq": last_stream_seq,
            "answer_node": a.answer_node,
            "config_hash": config_hash.to_hex().to_string(),
            "feed": feed,
            "live": live.as_ref().map(|l| live_summary(l, &source)),
            "wall_ms": ms,
        }})
    );
    Ok(())
}

/// Publishes the live client's commands until SIGINT or SIGTERM (or until the client
/// ends): a batch goes out when it is full or `linger` after its first command. Returns
/// the commands published and the client's counters.
async fn publish_live(
    producer: &Producer,
    acks: &tokio::sync::mpsc::UnboundedSender<perpcore_cluster::producer::Pending>,
    opts: perpcore_feed::live::LiveOptions,
    config: perpcore_types::Config,
    batch: usize,
    linger: Duration,
    src: &mut Source,
) -> anyhow::Result<(u64, perpcore_feed::live::LiveStats)> {
    // A few batches of room: the client is held back (and stops reading its socket)
    // while the stream is slower than the market, never more than this in memory.
    let (items_tx, mut items) = tokio::sync::mpsc::channel::<FeedItem>(batch.saturating_mul(4));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let client =
        tokio::spawn(
            async move { perpcore_feed::live::run(opts, &config, items_tx, stop_rx).await },
        );
    let stop = stop_signal();
    tokio::pin!(stop);
    let mut stopping = false;
    let mut chunk = Vec::with_capacity(batch);
    let mut total = 0u64;
    loop {
        let first = tokio::select! {
            i = items.recv() => i,
            _ = &mut stop, if !stopping => {
                // The client stops, its channel closes, what it handed over still goes out.
                stopping = true;
                let _ = stop_tx.send(true);
                continue;
            }
        };
        let Some(first) = first else { break };
        chunk.clear();
        src.tally(&first);
        chunk.push(first.command);
        let until = tokio::time::Instant::now() + linger;
        while chunk.len() < batch {
            match tokio::time::timeout_at(until, items.recv()).await {
                Ok(Some(i)) => {
                    src.tally(&i);
                    chunk.push(i.command);
                }
                Ok(None) | Err(_) => break,
            }
        }
        total += chunk.len() as u64;
        let p = producer.send(&chunk).await?;
        if acks.send(p).is_err() {
            let _ = stop_tx.send(true);
            break;
        }
    }
    let stats = client
        .await
        .map_err(|e| anyhow::anyhow!("live client task: {e}"))??;
    Ok((total, stats))
}

/// The live client's part of the summary line.
fn live_summary(l: &perpcore_feed::live::LiveStats, src: &Source) -> serde_json::Value {
    let r = l.feed.report();
    serde_json::json!({
        "connections": l.connections,
        "reconnects": l.reconnects,
        "failed_connects": l.failed_connects,
        "disconnects": l.disconnects,
        "idle_timeouts": l.idle_timeouts,
        "oversize": l.oversize,
        "frames": l.frames,
        "snapshot_requests": l.snapshot_requests,
        "snapshot_failures": l.snapshot_failures,
        "messages": r.messages,
        "problems": r.problems,
        "depth": r.depth,
        "guard": {"held": l.guard.held, "dropped": l.guard.dropped, "confirmed": l.guard.confirmed},
        "commands": src.published,
        "exchange_ns": src.exchange_span.map(|(a, b)| [a, b]),
    })
}
