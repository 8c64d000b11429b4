//! Cluster mode (`ServeOptions::cluster`; docs/CLUSTER.md, "The gateway on the stream"):
//! the gateway is a producer of the cluster's NATS JetStream stream and runs an engine
//! node of its own in the same process, instead of the single-node sequencer.
//!
//! ```text
//!  HTTP ─► bridge thread ── encode batch (producer id, batch seq) ─► producer task ─► stream
//!            ▲  (view, writes in flight by (batch seq, index))                          │
//!            └──── NodeOutput::Applied (after the node's fsync) ◄── node (applier) ◄────┘
//! ```
//!
//! A write is prepared on the view as in single-node mode and becomes one command; the
//! commands of the writes that arrive together go out as one batch under a batch
//! sequence number the bridge knows before publishing ([`Producer::encode`]). The node
//! applies every command of the stream, from every producer, in stream order; after the
//! fsync that made them durable in the node's own journal it hands them, with their
//! events, to the bridge ([`NodeOutput`]). The bridge applies each to its view (the read
//! replica, as in single-node mode) and, when it is one of its own (this producer's id,
//! a batch and index in flight), builds and sends that request's answer. So an answer
//! means: the stream acknowledged the command (it was applied, so it was stored) and this
//! node applied it and made it durable — docs/CLUSTER.md's acknowledgement rule.
//!
//! A batch the stream never acknowledges within the producer's retry budget is answered
//! -1007 (outcome unknown: a copy may still land, and is then applied like any
//! command). Must never: answer a write before the node handed its command back, or
//! send batches to the producer out of their numbering order.

use crate::bridge::{FinishFn, Reply, Request};
use crate::error::ApiError;
use crate::view::View;
use crossbeam_channel::{select, Receiver};
use perpcore_cluster::{EncodedBatch, NodeOutput, Producer, ProducerId};
use perpcore_types::Command;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the gateway joins a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub servers: Vec<async_nats::ServerAddr>,
    pub names: perpcore_cluster::StreamNames,
    /// The node id of the gateway's own engine node (consumer `node-<id>`, progress
    /// reports on `perpcore.<STREAM>.progress.<id>`).
    pub node_id: String,
    /// Stream replicas, if the stream has to be created.
    pub replicas: usize,
    /// Order ids this gateway allocates are `order_id_slot` modulo `order_id_slots`:
    /// every gateway on one stream needs its own slot.
    pub order_id_slot: u64,
    pub order_id_slots: u64,
    /// Most commands in one batch (one stream message).
    pub max_batch: usize,
    /// Most batches published and not yet acknowledged by the stream.
    pub max_pending: usize,
    /// How long a batch is retried before its outcome is answered unknown.
    pub retry_budget: Duration,
    /// Journal snapshots every N commands (0: never).
    pub snapshot_every: u64,
}

impl ClusterOptions {
    pub fn new(
        servers: Vec<async_nats::ServerAddr>,
        names: perpcore_cluster::StreamNames,
        node_id: &str,
    ) -> ClusterOptions {
        ClusterOptions {
            servers,
            names,
            node_id: node_id.to_string(),
            replicas: 3,
            order_id_slot: 0,
            order_id_slots: 1,
            max_batch: 256,
            max_pending: 256,
            retry_budget: Duration::from_secs(30),
            snapshot_every: 1_000_000,
        }
    }
}

/// A batch whose stream acknowledgement never came (its outcome is unknown).
pub struct BatchFailed {
    pub batch_seq: u64,
    pub what: String,
}

struct Waiting {
    finish: FinishFn,
    reply: Reply,
    submitted: Instant,
}

/// Most writes published and not yet handed back by the node; more are answered -1008.
const MAX_IN_FLIGHT: usize = 65_536;

/// How long a stopping bridge waits for the writes in flight.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// Everything the cluster bridge works with.
pub struct Links {
    pub producer: Arc<Producer>,
    /// Encoded batches, in numbering order, to the producer task.
    pub to_producer: tokio::sync::mpsc::UnboundedSender<EncodedBatch>,
    pub failed: Receiver<BatchFailed>,
    pub node: Receiver<NodeOutput>,
    /// Writes in flight (for the metrics' queue probe).
    pub in_flight: Arc<AtomicUsize>,
    pub max_batch: usize,
}

/// The bridge in cluster mode: as `bridge::run`, with the producer and the node in place
/// of the sequencer. Returns (last engine seq, commands applied, result).
pub fn run(
    links: Links,
    requests: Receiver<Request>,
    mut view: View,
    metrics: Arc<crate::metrics::Metrics>,
    mut publisher: crate::publish::Publisher,
) -> crate::bridge::BridgeExit {
    let me: ProducerId = links.producer.id();
    let mut waiting: BTreeMap<u64, Vec<Option<Waiting>>> = BTreeMap::new();
    let mut open = 0usize;
    let mut scratch = Vec::new();
    let mut commands = 0u64;
    let mut stop_by: Option<Instant> = None;
    let mut failure: Option<String> = None;
    let never = crossbeam_channel::never();
    let mut batch: Vec<(Command, Waiting)> = Vec::new();
    loop {
        links.in_flight.store(open, Ordering::Relaxed);
        metrics.writes_in_flight.set(open as i64);
        if stop_by.is_some() && open == 0 {
            break;
        }
        let requests = if stop_by.is_some() { &never } else { &requests };
        let deadline = match stop_by {
            Some(t) => crossbeam_channel::at(t),
            None => crossbeam_channel::never(),
        };
        select! {
            recv(links.node) -> msg => match msg {
                Ok(NodeOutput::Applied(list)) => {
                    for a in list {
                        crate::bridge::apply_durable(
                            &mut view, &mut publisher, &mut scratch,
                            a.seq, a.ts_ns, &a.command, &a.events,
                        );
                        commands += 1;
                        let mine = (a.producer == me)
                            .then(|| waiting.get_mut(&a.batch_seq))
                            .flatten();
                        let Some(entries) = mine else {
                            metrics.on_applied(&a.events);
                            continue;
                        };
                        if let Some(w) = entries.get_mut(a.index as usize).and_then(Option::take) {
                            metrics.on_committed(&a.events, w.submitted);
                            let _ = w.reply.send((w.finish)(&mut view, Ok(&a.events)));
                            open -= 1;
                        } else {
                            metrics.on_applied(&a.events);
                        }
                        if entries.iter().all(Option::is_none) {
                            waiting.remove(&a.batch_seq);
                        }
                    }
                    publisher.flush();
                }
                Ok(NodeOutput::Opened { .. }) => {
                    failure = Some("the cluster node opened twice".into());
                    break;
                }
                Err(_) => {
                    failure = Some("the cluster node stopped".into());
                    break;
                }
            },
            recv(links.failed) -> msg => {
                let Ok(f) = msg else {
                    failure = Some("the producer task stopped".into());
                    break;
                };
                for w in waiting.remove(&f.batch_seq).into_iter().flatten().flatten() {
                    let e = ApiError::outcome_unknown(&f.what);
                    let _ = w.reply.send((w.finish)(&mut view, Err(e)));
                    open -= 1;
                }
            },
            recv(requests) -> msg => {
                let mut next = msg.ok();
                loop {
                    match next {
                        Some(Request::Read(f, reply)) => {
                            let _ = reply.send(f(&view));
                        }
                        Some(Request::Write(prepare, reply)) => match prepare(&mut view) {
                            Err(e) => {
                                let _ = reply.send(Err(e));
                            }
                            Ok((command, finish)) if open + batch.len() >= MAX_IN_FLIGHT => {
                                let _ = reply.send(crate::bridge::not_submitted(&mut view, &command, finish, ApiError::overloaded()));
                            }
                            Ok((command, finish)) => batch.push((
                                command,
                                Waiting { finish, reply, submitted: Instant::now() }, // determinism-ok: accept→durable latency for the metrics only
                            )),
                        },
                        Some(Request::Stop) | None => {
                            stop_by = Some(Instant::now() + STOP_WAIT); // determinism-ok: bounds how long a stopping gateway waits; never reaches the engine
                            break;
                        }
                    }
                    if batch.len() >= links.max_batch.max(1) {
                        break;
                    }
                    next = match requests.try_recv() {
                        Ok(r) => Some(r),
                        Err(_) => break,
                    };
                }
                if !batch.is_empty() {
                    open += submit(&links, &mut view, &mut batch, &mut waiting);
                }
            },
            recv(deadline) -> _ => {
                failure = Some(format!("{open} writes still in flight when stopping"));
                break;
            },
        }
    }
    for w in waiting.into_values().flatten().flatten() {
        let e = ApiError::outcome_unknown("the gateway stopped before its node applied it");
        let _ = w.reply.send(Err(e));
    }
    crate::bridge::BridgeExit {
        last_seq: view.last_seq,
        commands,
        result: failure.map_or(Ok(()), Err),
    }
}

/// Encodes the writes gathered as one batch and hands it to the producer task. Returns
/// how many now wait for their command.
fn submit(
    links: &Links,
    view: &mut View,
    batch: &mut Vec<(Command, Waiting)>,
    waiting: &mut BTreeMap<u64, Vec<Option<Waiting>>>,
) -> usize {
    let (cmds, waits): (Vec<Command>, Vec<Waiting>) = batch.drain(..).unzip();
    let refuse = |view: &mut View, waits: Vec<Waiting>, what: String| {
        for w in waits {
            let _ = w
                .reply
                .send((w.finish)(view, Err(ApiError::internal(&what))));
        }
        0
    };
    let encoded = match links.producer.encode(&cmds) {
        Ok(b) => b,
        Err(e) => return refuse(view, waits, e.to_string()),
    };
    let n = waits.len();
    let batch_seq = encoded.batch_seq;
    if links.to_producer.send(encoded).is_err() {
        return refuse(view, waits, "the producer stopped".into());
    }
    waiting.insert(batch_seq, waits.into_iter().map(Some).collect());
    n
}

/// The producer task: publishes the bridge's batches in their order, each awaited by a
/// task of its own; a batch the stream never acknowledged goes back to the bridge as
/// failed.
pub async fn producer_task(
    producer: Arc<Producer>,
    mut batches: tokio::sync::mpsc::UnboundedReceiver<EncodedBatch>,
    failed: crossbeam_channel::Sender<BatchFailed>,
) {
    while let Some(b) = batches.recv().await {
        let batch_seq = b.batch_seq;
        match producer.send_encoded(b).await {
            Err(e) => {
                let _ = failed.send(BatchFailed {
                    batch_seq,
                    what: e.to_string(),
                });
            }
            Ok(pending) => {
                let failed = failed.clone();
                tokio::spawn(async move {
                    // No answering node here: the bridge waits for its own node's output.
                    if let Err(e) = pending.acknowledged(Duration::ZERO).await {
                        let _ = failed.send(BatchFailed {
                            batch_seq,
                            what: e.to_string(),
                        });
                    }
                });
            }
        }
    }
}
