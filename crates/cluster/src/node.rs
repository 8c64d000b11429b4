//! An engine node: consumes the stream through its durable pull consumer, applies it
//! (`Applier`) and reports its progress.
//!
//! Owns: the NATS side of a node (connection, the stream check, the durable consumer and
//! its re-creation at the next needed message after a gap or an error, progress reports)
//! and the threads around the applier. Must never: hand the applier a message out of
//! stream order, or report progress the applier did not make durable.
//!
//! Four pieces: the fetch task (tokio) pulls messages and passes them on in stream
//! order; the applier thread (plain thread: the engine and the journal are blocking
//! work) takes everything queued, applies it and stores it as one group (flushed, not
//! yet fsynced); the sync thread fsyncs every group stored so far at once, records it in
//! the journal's durable mark and only then releases the groups' progress reports and
//! the newest cursor (written at most every `cursor_interval`, and at the end), while
//! the applier works on the next group; the report task publishes reports (JSON) on
//! `perpcore.<STREAM>.progress.<node>` and sends the applier a tick every
//! `progress_interval`, on which it reports again (with a state hash at its position
//! once it has caught up).

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt as _;
use perpcore_types::Config;
use tokio::sync::{mpsc, watch};

use crate::applier::{Applied, ApplierOptions, ApplierStats, ApplyError, LogMsg, OpenInfo};
use crate::cursor::Cursor;
use crate::stream::{ensure_stream, StreamNames};
use crate::wire::Progress;
use crate::Applier;

/// How to run a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// NATS servers (any of the cluster's; the client fails over between them).
    pub servers: Vec<async_nats::ServerAddr>,
    pub names: StreamNames,
    /// This node's id: its consumer is `node-<id>`, its reports go to
    /// `…progress.<id>`.
    pub node_id: String,
    /// The node directory (journal + cursor).
    pub dir: PathBuf,
    /// The engine configuration (every node of a stream must use the same).
    pub config: Config,
    /// Stream replicas (when the node creates the stream; an existing stream must match).
    pub replicas: usize,
    pub applier: ApplierOptions,
    /// Most stream messages in one group commit.
    pub max_group_messages: usize,
    /// Messages per pull request.
    pub fetch_batch: usize,
    /// Ticks: periodic progress reports and the caught-up state hash.
    pub progress_interval: Duration,
    /// The cursor is written at most this often (and when the node stops).
    pub cursor_interval: Duration,
    /// Where the node hands what it applies, for a gateway running on it (`None` for a
    /// plain node). See [`NodeOutput`].
    pub sink: Option<crossbeam_channel::Sender<NodeOutput>>,
}

/// What a node hands its [`NodeOptions::sink`], in this order: `Opened` once, then
/// `Applied` for every group of commands, only after the fsync that made them durable,
/// in engine sequence order without gaps (commands re-read and verified after a restart
/// are not applied again and are not handed on: they are in the `Opened` state). A full
/// sink holds the node back (the sync thread waits), so a sink must be drained.
#[derive(Debug)]
pub enum NodeOutput {
    /// The engine state the node starts from (a snapshot encoding, `StateMachine::
    /// snapshot`), as of engine sequence `seq` with that command's timestamp.
    Opened {
        snapshot: Vec<u8>,
        seq: u64,
        ts_ns: u64,
    },
    /// Commands applied and durable, with their events.
    Applied(Vec<Applied>),
}

impl NodeOptions {
    /// Defaults for everything but the names, servers, id, directory and configuration.
    pub fn new(
        servers: Vec<async_nats::ServerAddr>,
        names: StreamNames,
        node_id: &str,
        dir: PathBuf,
        config: Config,
    ) -> Self {
        Self {
            servers,
            names,
            node_id: node_id.to_string(),
            dir,
            config,
            replicas: 3,
            applier: ApplierOptions::default(),
            max_group_messages: 1024,
            fetch_batch: 256,
            progress_interval: Duration::from_millis(200),
            cursor_interval: Duration::from_millis(500),
            sink: None,
        }
    }
}

/// Why a node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("NATS: {0}")]
    Nats(String),
    #[error(transparent)]
    Name(#[from] crate::stream::BadName),
    #[error("stream {stream} no longer holds message {needed} (its first is later): a node that far behind must be rebuilt from a peer's directory")]
    StreamTruncated { stream: String, needed: u64 },
    #[error("stream {stream} ends before message {needed}, but this node has applied every message before it: the stream was recreated or lost acknowledged messages (docs/CLUSTER.md, failure model)")]
    StreamBehind { stream: String, needed: u64 },
    #[error("the applier thread panicked")]
    ApplierPanicked,
}

/// What a node did, when it stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSummary {
    pub open: OpenInfo,
    pub stream_seq: u64,
    pub engine_seq: u64,
    pub state_hash: [u8; 32],
    pub stats: ApplierStats,
}

enum Input {
    Msg(LogMsg),
    Tick,
}

/// The stream sequence and stored timestamp of a JetStream message, from its reply
/// subject: `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending>`
/// (or the form with a domain and account hash in front, and a token after).
pub fn parse_ack_subject(reply: &str) -> Option<(u64, u64)> {
    let rest = reply.strip_prefix("$JS.ACK.")?;
    let tokens: Vec<&str> = rest.split('.').take(12).collect();
    let (seq, ts) = match tokens.len() {
        7 => (tokens[3], tokens[5]),
        n if n >= 9 => (tokens[5], tokens[7]),
        _ => return None,
    };
    Some((seq.parse().ok()?, ts.parse().ok()?))
}

/// Connects to NATS, retrying in the background until a server answers.
pub async fn connect(
    servers: &[async_nats::ServerAddr],
    name: &str,
) -> Result<async_nats::Client, String> {
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .max_reconnects(None)
        .connect(servers.to_vec())
        .await
        .map_err(|e| e.to_string())
}

/// Retries `f` with a growing pause (50 ms … 1 s) until it succeeds or `stop` is set.
/// An attempt in progress is abandoned when `stop` is set: with every server down, a
/// NATS request can wait for a reconnection that never comes, and a stopping node must
/// not wait with it.
async fn retry<T, E: std::fmt::Display, F, Fut>(
    what: &str,
    stop: &watch::Receiver<bool>,
    mut f: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut pause = Duration::from_millis(50);
    let mut stop = stop.clone();
    loop {
        if *stop.borrow() {
            return None;
        }
        let attempt = tokio::select! {
            r = f() => r,
            _ = stop.wait_for(|s| *s) => return None,
        };
        match attempt {
            Ok(v) => return Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed; retrying in {pause:?}");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.wait_for(|s| *s) => return None,
                }
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Deletes the node's durable consumer (if any) and creates it again, delivering from
/// stream message `next` on. A durable consumer (replicated with the stream) rather than
/// an ephemeral one: ephemeral consumers made right after a failover could be placed on
/// the dead server.
///
/// `Ok(None)`: the stream's last message is before `next − 1`, so this node has applied
/// messages the stream no longer has (it was recreated, or lost acknowledged messages):
/// the node must stop rather than wait for new messages under old numbers.
async fn recreate_consumer(
    js: &jetstream::Context,
    names: &StreamNames,
    node: &str,
    next: u64,
) -> Result<Option<(consumer::Consumer<consumer::pull::Config>, u64)>, String> {
    let mut stream = js
        .get_stream(&names.stream)
        .await
        .map_err(|e| e.to_string())?;
    let last = stream
        .info()
        .await
        .map_err(|e| e.to_string())?
        .state
        .last_sequence;
    if last.saturating_add(1) < next {
        return Ok(None);
    }
    let name = names.consumer(node);
    match stream.delete_consumer(&name).await {
        Ok(_) => {}
        Err(e) if e.to_string().contains("not found") => {}
        Err(e) => return Err(format!("delete consumer {name}: {e}")),
    }
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.clone()),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: next,
            },
            // The node keeps its own position (journal + cursor) and re-creates the
            // consumer where it needs it; nothing is acknowledged, nothing redelivered.
            ack_policy: consumer::AckPolicy::None,
            replay_policy: consumer::ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map(|c| Some((c, last)))
        .map_err(|e| format!("create consumer {name}: {e}"))
}

/// The fetch task: pulls from the durable consumer and sends messages on in stream
/// order; re-creates the consumer after an error or a gap.
async fn fetch(
    js: jetstream::Context,
    opts: NodeOptions,
    mut next: u64,
    tx: mpsc::Sender<Input>,
    stop: watch::Receiver<bool>,
) -> Result<(), NodeError> {
    let mut fresh_gaps = 0u32;
    loop {
        let Some(made) = retry("creating the durable consumer", &stop, || {
            recreate_consumer(&js, &opts.names, &opts.node_id, next)
        })
        .await
        else {
            return Ok(());
        };
        let Some((consumer, _)) = made else {
            return Err(NodeError::StreamBehind {
                stream: opts.names.stream.clone(),
                needed: next,
            });
        };
        let messages = consumer
            .stream()
            .max_messages_per_batch(opts.fetch_batch)
            .heartbeat(Duration::from_secs(1))
            .expires(Duration::from_secs(5))
            .messages()
            .await;
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "pulling from the consumer failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut fresh = true;
        let mut stop_rx = stop.clone();
        loop {
            let item = tokio::select! {
                _ = stop_rx.wait_for(|s| *s) => return Ok(()),
                item = messages.next() => item,
            };
            let m = match item {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, next, "consumer stream error; re-creating the consumer");
                    break;
                }
                Some(Ok(m)) => m,
            };
            let Some((seq, ts)) = m.reply.as_deref().and_then(parse_ack_subject) else {
                tracing::warn!(reply = ?m.reply, "a message without JetStream metadata; re-creating the consumer");
                break;
            };
            if seq < next {
                continue;
            }
            if seq > next {
                if fresh {
                    fresh_gaps += 1;
                    if fresh_gaps >= 3 {
                        return Err(NodeError::StreamTruncated {
                            stream: opts.names.stream.clone(),
                            needed: next,
                        });
                    }
                }
                tracing::warn!(
                    expected = next,
                    got = seq,
                    "gap in the stream sequence; re-creating the consumer"
                );
                break;
            }
            fresh = false;
            fresh_gaps = 0;
            let msg = LogMsg {
                stream_seq: seq,
                stored_ts_ns: ts,
                payload: m.message.payload.clone(),
            };
            if tx.send(Input::Msg(msg)).await.is_err() {
                // The applier stopped (its error is reported by the caller).
                return Ok(());
            }
            next += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A point the applier reached: released (reported, its cursor written) by the sync
/// thread once the journal has made it durable.
struct Release {
    engine_seq: u64,
    progress: Progress,
    cursor: Option<Cursor>,
    applied: Vec<Applied>,
}

/// The sync thread: takes every point the applier has flushed so far, makes them durable
/// with one fsync and one mark write (`SyncHandle::sync`: it covers every group flushed
/// before it began), then publishes their reports in order and writes the newest cursor
/// (at most every `cursor_interval`, and at the end). Meanwhile the applier applies and
/// stores the next group.
fn sync_loop(
    mut sync: perpcore_journal::SyncHandle,
    dir: PathBuf,
    mut synced: u64,
    rx: std::sync::mpsc::Receiver<Release>,
    progress: mpsc::UnboundedSender<Progress>,
    cursor_interval: Duration,
    sink: Option<crossbeam_channel::Sender<NodeOutput>>,
) -> Result<(), ApplyError> {
    let mut last_cursor = Instant::now(); // determinism-ok: only paces how often the cursor file is stored; the cursor's content and the engine never see it
    let mut cursor: Option<Cursor> = None;
    while let Ok(first) = rx.recv() {
        let mut round = vec![first];
        round.extend(rx.try_iter());
        let target = round.iter().map(|r| r.engine_seq).max().unwrap_or(0);
        if target > synced {
            sync.sync(target)?;
            synced = target;
        }
        for r in round {
            if let Some(sink) = &sink {
                if !r.applied.is_empty() {
                    // A sink that is gone (its gateway stopped) no longer needs them.
                    let _ = sink.send(NodeOutput::Applied(r.applied));
                }
            }
            let _ = progress.send(r.progress);
            if r.cursor.is_some() {
                cursor = r.cursor;
            }
        }
        if last_cursor.elapsed() >= cursor_interval {
            if let Some(c) = cursor.take() {
                c.store(&dir)?;
                last_cursor = Instant::now(); // determinism-ok: as above
            }
        }
    }
    if let Some(c) = cursor {
        c.store(&dir)?;
    }
    Ok(())
}

/// The applier thread's loop.
fn apply_loop(
    mut applier: Applier,
    node: String,
    opts: NodeOptions,
    mut rx: mpsc::Receiver<Input>,
    progress: mpsc::UnboundedSender<Progress>,
) -> Result<Applier, ApplyError> {
    let sync = applier.sync_handle()?;
    let (release_tx, release_rx) = std::sync::mpsc::channel::<Release>();
    let syncer = {
        let dir = applier.dir().to_path_buf();
        let synced = applier.journal().tip().last_seq;
        let interval = opts.cursor_interval;
        let sink = opts.sink.clone();
        std::thread::Builder::new()
            .name(format!("perpcore-node-{node}-sync"))
            .spawn(move || sync_loop(sync, dir, synced, release_rx, progress, interval, sink))
            .map_err(|e| ApplyError::Io(applier.dir().to_path_buf(), e))?
    };
    let result = apply_rounds(&mut applier, &node, &opts, &mut rx, &release_tx);
    // The sync thread ends once every point is released (or on its own error).
    drop(release_tx);
    let synced = syncer.join().unwrap_or_else(|_| {
        Err(ApplyError::Io(
            applier.dir().to_path_buf(),
            std::io::Error::other("the sync thread panicked"),
        ))
    });
    result?;
    synced?;
    Ok(applier)
}

fn apply_rounds(
    applier: &mut Applier,
    node: &str,
    opts: &NodeOptions,
    rx: &mut mpsc::Receiver<Input>,
    release: &std::sync::mpsc::Sender<Release>,
) -> Result<(), ApplyError> {
    let mut batch: Vec<LogMsg> = Vec::with_capacity(opts.max_group_messages);
    let mut changed_since_tick = true;
    let send = |applier: &mut Applier| -> Result<(), ApplyError> {
        let r = Release {
            engine_seq: applier.engine_seq(),
            progress: applier.progress(node),
            cursor: applier.cursor(),
            applied: applier.take_applied(),
        };
        release.send(r).map_err(|_| {
            ApplyError::Io(
                applier.dir().to_path_buf(),
                std::io::Error::other("the sync thread stopped"),
            )
        })
    };
    loop {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        let mut tick = false;
        let mut push = |input: Input, batch: &mut Vec<LogMsg>| match input {
            Input::Msg(m) => batch.push(m),
            Input::Tick => tick = true,
        };
        push(first, &mut batch);
        while batch.len() < opts.max_group_messages {
            match rx.try_recv() {
                Ok(input) => push(input, &mut batch),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            applier.apply_flushed(&batch)?;
            batch.clear();
            changed_since_tick = true;
            send(applier)?;
        }
        if tick {
            if changed_since_tick && rx.is_empty() {
                applier.checkpoint_at_tip();
                changed_since_tick = false;
            }
            send(applier)?;
        }
    }
    applier.checkpoint_at_tip();
    send(applier)
}

/// Runs a node until `shutdown` completes (then it finishes the group in flight, writes
/// its cursor and returns) or an error stops it. `on_progress` sees every report.
pub async fn run_node(
    opts: NodeOptions,
    shutdown: impl Future<Output = ()>,
    mut on_progress: impl FnMut(&Progress) + Send + 'static,
) -> Result<NodeSummary, NodeError> {
    crate::stream::check_name("node id", &opts.node_id)?;
    let mut opts = opts;
    opts.applier.capture = opts.sink.is_some();
    let (applier, open) = {
        let o = opts.clone();
        tokio::task::spawn_blocking(move || {
            Applier::open(&o.dir, &o.config, &o.names.stream, o.applier)
        })
        .await
        .map_err(|_| NodeError::ApplierPanicked)??
    };
    if let Some(sink) = &opts.sink {
        let (snapshot, seq, ts_ns) = applier.state_snapshot();
        let _ = sink.send(NodeOutput::Opened {
            snapshot,
            seq,
            ts_ns,
        });
    }
    tracing::info!(?open, node = %opts.node_id, "node directory opened");
    let next = applier.next_stream_seq();

    let client = connect(&opts.servers, &format!("perpcore-node-{}", opts.node_id))
        .await
        .map_err(NodeError::Nats)?;
    let js = jetstream::new(client.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let names = opts.names.clone();
    let replicas = opts.replicas;
    // The stream must exist before the consumer; made here if this node is the first.
    let ensured = {
        let js = js.clone();
        let names = names.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            retry("creating or checking the stream", &stop, || {
                ensure_stream(&js, &names, replicas)
            })
            .await
            .is_some()
        })
    };

    let (tx, rx) = mpsc::channel::<Input>(4 * opts.max_group_messages.max(1));
    let (progress_tx, mut progress_rx) = mpsc::unbounded_channel::<Progress>();
    let applier_thread = {
        let node = opts.node_id.clone();
        let o = opts.clone();
        std::thread::Builder::new()
            .name(format!("perpcore-node-{}", opts.node_id))
            .spawn(move || apply_loop(applier, node, o, rx, progress_tx))
            .map_err(|e| NodeError::Nats(format!("spawning the applier thread: {e}")))?
    };

    // Reports out, ticks in.
    let reporter = {
        let client = client.clone();
        let subject = names.progress(&opts.node_id);
        // Weak: once the fetch task has dropped its sender, the applier's queue closes and
        // it finishes; its last report still comes through here.
        let ticks = tx.downgrade();
        let interval = opts.progress_interval;
        tokio::spawn(async move {
            let mut timer = tokio::time::interval(interval);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    p = progress_rx.recv() => {
                        let Some(p) = p else { break };
                        on_progress(&p);
                        if let Ok(json) = serde_json::to_vec(&p) {
                            let _ = client.publish(subject.clone(), json.into()).await;
                        }
                    }
                    _ = timer.tick() => {
                        // A full queue means the applier is busy: it reports anyway.
                        if let Some(t) = ticks.upgrade() {
                            let _ = t.try_send(Input::Tick);
                        }
                    }
                }
            }
            // Bounded: with every server down a flush waits for a reconnection.
            let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
        })
    };

    let fetcher = {
        let js = js.clone();
        let o = opts.clone();
        let stop = stop_rx.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            if !ensured.await.unwrap_or(false) {
                return Ok(());
            }
            fetch(js, o, next, tx, stop).await
        })
    };
    drop(tx);

    // Stop on `shutdown`, or as soon as the fetch task ends on its own (an error, or
    // the applier stopped).
    let mut fetcher = fetcher;
    let fetched = tokio::select! {
        _ = shutdown => {
            let _ = stop_tx.send(true);
            (&mut fetcher).await
        }
        r = &mut fetcher => {
            let _ = stop_tx.send(true);
            r
        }
    };
    let fetched = fetched.map_err(|_| NodeError::ApplierPanicked)?;
    // The fetch task's sender is gone: the applier drains its queue and ends, then the
    // reporter publishes its last reports and ends.
    let applied = tokio::task::spawn_blocking(move || applier_thread.join())
        .await
        .map_err(|_| NodeError::ApplierPanicked)?
        .map_err(|_| NodeError::ApplierPanicked)?;
    let _ = reporter.await;
    let applier = applied?;
    fetched?;
    Ok(NodeSummary {
        open,
        stream_seq: applier.stream_seq(),
        engine_seq: applier.engine_seq(),
        state_hash: applier.state_hash(),
        stats: applier.stats(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_subjects() {
        // As nats-server 2.9.10 sends it (seen in a pull with AckPolicy::None).
        assert_eq!(
            parse_ack_subject("$JS.ACK.T.n1.1.2.1.1796294050540112029.1"),
            Some((2, 1796294050540112029))
        );
        // The form with domain and account hash (ADR-15), with a trailing token.
        assert_eq!(
            parse_ack_subject("$JS.ACK.dom.acc.T.n1.1.7.3.1796294050540112029.0.tok"),
            Some((7, 1796294050540112029))
        );
        assert_eq!(parse_ack_subject("_INBOX.x"), None);
        assert_eq!(parse_ack_subject("$JS.ACK.T.n1.1.x.1.5.1"), None);
        assert_eq!(parse_ack_subject("$JS.ACK.T.n1.1"), None);
    }
}
