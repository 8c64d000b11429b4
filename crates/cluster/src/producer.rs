//! Producers: commands in, batches published to the stream, acknowledgements out by the
//! cluster's rule.
//!
//! Owns: batching commands into one message, the batch sequence numbers of this
//! producer, publishing with a `Nats-Msg-Id` and retrying with the same id within a time
//! budget, the bound on batches not yet acknowledged by the stream (the node's
//! de-duplication window relies on it), and waiting for the answering node. Must never:
//! acknowledge a batch to its caller before the stream acknowledged it and (with an
//! answering node) that node reported it applied and durable; reuse a batch sequence
//! number; retry past the budget (it stays inside JetStream's duplicate window).
//!
//! Many batches are in flight at once: each is published and awaited by a task of its
//! own, so acknowledgements are awaited concurrently while newer batches go out. The
//! order of the batches in the stream is the order they were sent while nothing fails; a
//! batch that had to be retried can land after batches sent later. A caller that needs
//! two commands in order sends them in one batch, or waits for the first one's
//! acknowledgement (`ProducerConfig::max_pending = 1` does that for every batch).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use futures_util::StreamExt as _;
use perpcore_node::Core;
use perpcore_sequencer::StateMachine;
use perpcore_types::Command;
use tokio::sync::{oneshot, watch, Semaphore};

use crate::admission::DEDUP_WINDOW_BATCHES;
use crate::stream::{ensure_stream, StreamNames, DUPLICATE_WINDOW};
use crate::wire::{msg_id, BatchEncoder, ProducerId, Progress};

/// How a producer publishes.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub servers: Vec<async_nats::ServerAddr>,
    pub names: StreamNames,
    /// Replicas, if the producer has to create the stream.
    pub replicas: usize,
    /// Most batches published and not yet acknowledged by the stream (1 ..=
    /// `DEDUP_WINDOW_BATCHES`); `send` waits for a slot.
    pub max_pending: usize,
    /// How long one batch is retried (with the same `Nats-Msg-Id`) before its outcome is
    /// reported unknown. At most half of JetStream's duplicate window.
    pub retry_budget: Duration,
    /// How long one attempt waits for the stream's acknowledgement.
    pub attempt_timeout: Duration,
    /// The node whose progress acknowledges batches (`None`: the stream's
    /// acknowledgement is the end, and nothing says a node has applied the batch).
    pub answer_node: Option<String>,
    /// This producer's identity (default: a fresh one).
    pub id: Option<ProducerId>,
}

impl ProducerConfig {
    /// Defaults: 256 batches in flight, a 30 s retry budget, 2 s per attempt, no
    /// answering node, a fresh identity.
    pub fn new(servers: Vec<async_nats::ServerAddr>, names: StreamNames) -> Self {
        Self {
            servers,
            names,
            replicas: 3,
            max_pending: 256,
            retry_budget: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(2),
            answer_node: None,
            id: None,
        }
    }
}

/// Why a batch was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishFailed {
    /// The stream never acknowledged it within the retry budget. Its outcome is
    /// unknown: a copy may have been stored (and then applied) all the same.
    #[error("batch {batch_seq}: no stream acknowledgement after {attempts} attempts in the retry budget (outcome unknown): {last_error}")]
    Stream {
        batch_seq: u64,
        attempts: u32,
        last_error: String,
    },
    /// The stream acknowledged it, but the answering node did not report it applied in
    /// time (it is in the stream: every node will apply it).
    #[error("batch {batch_seq} is stream message {stream_seq}, but node {node} had not applied it after {waited:?}")]
    Node {
        batch_seq: u64,
        stream_seq: u64,
        node: String,
        waited: Duration,
    },
    #[error("the producer was closed")]
    Closed,
    #[error("{0}")]
    Setup(String),
}

/// The acknowledgement of one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub batch_seq: u64,
    /// Where the stream stored it (for a de-duplicated retry: where the first copy is).
    pub stream_seq: u64,
    /// The stream said the last attempt was a duplicate of a stored copy.
    pub duplicate: bool,
    /// Publish attempts.
    pub attempts: u32,
    /// When the stream's acknowledgement arrived.
    pub stream_acked_at: Instant,
    /// From `send` to the stream's acknowledgement.
    pub stream_latency: Duration,
    /// From `send` to the answering node's report (equal to `stream_latency` without
    /// one).
    pub latency: Duration,
    /// The answering node's position when it acknowledged (0 without one).
    pub node_stream_seq: u64,
    pub node_engine_seq: u64,
}

/// The stream's answer to one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StreamAck {
    stream_seq: u64,
    duplicate: bool,
    attempts: u32,
    at: Instant,
}

/// A batch on its way.
#[derive(Debug)]
pub struct Pending {
    pub batch_seq: u64,
    pub commands: u32,
    pub sent_at: Instant,
    stream: oneshot::Receiver<Result<StreamAck, PublishFailed>>,
    answer: Option<(String, watch::Receiver<(u64, u64)>)>,
}

impl Pending {
    /// Waits for the stream's acknowledgement, then (with an answering node) for the
    /// node's report that it applied and made durable every stream message up to this
    /// batch's, for at most `node_timeout`.
    pub async fn acknowledged(self, node_timeout: Duration) -> Result<Acked, PublishFailed> {
        let ack = self.stream.await.map_err(|_| PublishFailed::Closed)??;
        let mut acked = Acked {
            batch_seq: self.batch_seq,
            stream_seq: ack.stream_seq,
            duplicate: ack.duplicate,
            attempts: ack.attempts,
            stream_acked_at: ack.at,
            stream_latency: ack.at.duration_since(self.sent_at),
            latency: ack.at.duration_since(self.sent_at),
            node_stream_seq: 0,
            node_engine_seq: 0,
        };
        if let Some((node, mut rx)) = self.answer {
            let waited = tokio::time::timeout(node_timeout, rx.wait_for(|p| p.0 >= ack.stream_seq))
                .await
                .map_err(|_| PublishFailed::Node {
                    batch_seq: self.batch_seq,
                    stream_seq: ack.stream_seq,
                    node: node.clone(),
                    waited: node_timeout,
                })?
                .map(|p| *p)
                .map_err(|_| PublishFailed::Closed)?;
            acked.latency = self.sent_at.elapsed();
            acked.node_stream_seq = waited.0;
            acked.node_engine_seq = waited.1;
        }
        Ok(acked)
    }
}

/// A batch encoded under its batch sequence number, not yet published
/// ([`Producer::encode`]).
#[derive(Debug)]
pub struct EncodedBatch {
    pub batch_seq: u64,
    pub count: u32,
    message: Vec<u8>,
    sent_at: Instant,
}

/// A connected producer. Cheap to share by reference across tasks; `send` may be called
/// concurrently.
pub struct Producer {
    client: async_nats::Client,
    js: jetstream::Context,
    names: StreamNames,
    id: ProducerId,
    next_batch: AtomicU64,
    slots: Arc<Semaphore>,
    budget: Duration,
    attempt_timeout: Duration,
    answer: Option<(String, watch::Receiver<(u64, u64)>)>,
    answer_task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Producer {
    fn drop(&mut self) {
        if let Some(t) = &self.answer_task {
            t.abort();
        }
    }
}

impl Producer {
    /// Connects, makes sure the stream exists (retrying for up to the retry budget) and,
    /// with an answering node, subscribes to its progress reports.
    pub async fn connect(cfg: ProducerConfig) -> Result<Self, PublishFailed> {
        if cfg.max_pending == 0 || cfg.max_pending as u64 > DEDUP_WINDOW_BATCHES {
            return Err(PublishFailed::Setup(format!(
                "max_pending must be 1..={DEDUP_WINDOW_BATCHES} (the nodes' de-duplication window)"
            )));
        }
        if cfg.retry_budget > DUPLICATE_WINDOW / 2 {
            return Err(PublishFailed::Setup(format!(
                "the retry budget must stay within half the stream's duplicate window ({DUPLICATE_WINDOW:?})"
            )));
        }
        let id = cfg.id.unwrap_or_else(ProducerId::fresh);
        let client = crate::node::connect(&cfg.servers, &format!("perpcore-producer-{}", id.hex()))
            .await
            .map_err(PublishFailed::Setup)?;
        let js = jetstream::ContextBuilder::new()
            .timeout(cfg.attempt_timeout)
            .max_ack_inflight(cfg.max_pending * 2 + 16)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let deadline = Instant::now() + cfg.retry_budget; // determinism-ok: the producer's retry budget; envelopes come from the stream
        loop {
            match ensure_stream(&js, &cfg.names, cfg.replicas).await {
                Ok(_) => break,
                Err(e) if before(deadline) => {
                    tracing::warn!(error = %e, "stream not ready; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(PublishFailed::Setup(e.to_string())),
            }
        }
        let (answer, answer_task) = match &cfg.answer_node {
            None => (None, None),
            Some(node) => {
                crate::stream::check_name("node id", node)
                    .map_err(|e| PublishFailed::Setup(e.to_string()))?;
                let mut sub = client
                    .subscribe(cfg.names.progress(node))
                    .await
                    .map_err(|e| PublishFailed::Setup(e.to_string()))?;
                let (tx, rx) = watch::channel((0u64, 0u64));
                let task = tokio::spawn(async move {
                    while let Some(m) = sub.next().await {
                        let Ok(p) = serde_json::from_slice::<Progress>(&m.payload) else {
                            continue;
                        };
                        // Reports only move forward: after a restart a node reports from
                        // its cursor again, but what it reported before stays durable.
                        tx.send_if_modified(|cur| {
                            if p.stream_seq > cur.0 {
                                *cur = (p.stream_seq, p.engine_seq);
                                true
                            } else {
                                false
                            }
                        });
                    }
                });
                (Some((node.clone(), rx)), Some(task))
            }
        };
        Ok(Self {
            client,
            js,
            names: cfg.names,
            id,
            next_batch: AtomicU64::new(1),
            slots: Arc::new(Semaphore::new(cfg.max_pending)),
            budget: cfg.retry_budget,
            attempt_timeout: cfg.attempt_timeout,
            answer,
            answer_task,
        })
    }

    /// This producer's identity.
    pub fn id(&self) -> ProducerId {
        self.id
    }

    /// The NATS client (for tests and tools).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Publishes `commands` as one batch: waits for a free slot, then returns at once
    /// while a task publishes and retries. `commands` must not be empty.
    pub async fn send(&self, commands: &[Command]) -> Result<Pending, PublishFailed> {
        let batch = self.encode(commands)?;
        self.send_encoded(batch).await
    }

    /// Takes the next batch sequence number and encodes `commands` as that batch, without
    /// publishing: for a caller that must know the number before the batch can land (a
    /// gateway matching the commands its node applies to its requests). Encoded batches
    /// must be passed to `send_encoded` in the order they were made (the nodes'
    /// de-duplication window counts on it); one that is dropped unsent leaves a gap,
    /// which is harmless.
    pub fn encode(&self, commands: &[Command]) -> Result<EncodedBatch, PublishFailed> {
        let sent_at = Instant::now(); // determinism-ok: latency measured for the producer's report only
        let batch_seq = self.next_batch.fetch_add(1, Ordering::Relaxed);
        let mut enc = BatchEncoder::new(self.id, batch_seq);
        let mut scratch = Vec::with_capacity(64);
        for c in commands {
            scratch.clear();
            Core::encode_command(c, &mut scratch);
            enc.push(&scratch);
        }
        if enc.is_empty() {
            return Err(PublishFailed::Setup("an empty batch".into()));
        }
        Ok(EncodedBatch {
            batch_seq,
            count: enc.count(),
            message: enc.finish(),
            sent_at,
        })
    }

    /// Publishes a batch made by `encode` (see `send`).
    pub async fn send_encoded(&self, batch: EncodedBatch) -> Result<Pending, PublishFailed> {
        self.publish(
            batch.batch_seq,
            batch.count,
            batch.message,
            msg_id(self.id, batch.batch_seq),
            batch.sent_at,
        )
        .await
    }

    /// Publishes an already encoded batch message under batch sequence `batch_seq` (for
    /// tests that publish copies outside JetStream's duplicate window). The caller keeps
    /// the producer's rules.
    pub async fn send_raw(
        &self,
        batch_seq: u64,
        message: Vec<u8>,
        msg_id: String,
    ) -> Result<Pending, PublishFailed> {
        let sent_at = Instant::now(); // determinism-ok: latency measured for the producer's report only
        self.publish(batch_seq, 0, message, msg_id, sent_at).await
    }

    async fn publish(
        &self,
        batch_seq: u64,
        count: u32,
        message: Vec<u8>,
        id: String,
        sent_at: Instant,
    ) -> Result<Pending, PublishFailed> {
        let slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| PublishFailed::Closed)?;
        let (tx, rx) = oneshot::channel();
        let js = self.js.clone();
        let subject = self.names.commands.clone();
        let stream = self.names.stream.clone();
        let budget = self.budget;
        let attempt_timeout = self.attempt_timeout;
        let payload = bytes::Bytes::from(message);
        tokio::spawn(async move {
            let r = publish_with_retry(
                &js,
                &subject,
                &stream,
                batch_seq,
                &id,
                payload,
                budget,
                attempt_timeout,
            )
            .await;
            // The slot is free once the stream has answered or the budget is spent.
            drop(slot);
            let _ = tx.send(r);
        });
        Ok(Pending {
            batch_seq,
            commands: count,
            sent_at,
            stream: rx,
            answer: self.answer.clone(),
        })
    }
}

/// Publishes one batch, retrying with the same message id (so JetStream stores it at
/// most once inside its duplicate window) until the stream acknowledges it or `budget`
/// is spent. A budget, not a count: while the stream has no leader (a few seconds after
/// its leader died) attempts fail at once.
#[allow(clippy::too_many_arguments)]
async fn publish_with_retry(
    js: &jetstream::Context,
    subject: &str,
    stream: &str,
    batch_seq: u64,
    id: &str,
    payload: bytes::Bytes,
    budget: Duration,
    attempt_timeout: Duration,
) -> Result<StreamAck, PublishFailed> {
    let start = Instant::now(); // determinism-ok: ack wait deadline in the producer
    let deadline = start + budget;
    let mut pause = Duration::from_millis(20);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now()); // determinism-ok: ack wait deadline
        let attempt = async {
            let msg = PublishMessage::build()
                .payload(payload.clone())
                .message_id(id);
            js.send_publish(subject.to_string(), msg).await?.await
        };
        let last_error = match tokio::time::timeout(left.min(attempt_timeout), attempt).await {
            Ok(Ok(ack)) if ack.stream == stream => {
                return Ok(StreamAck {
                    stream_seq: ack.sequence,
                    duplicate: ack.duplicate,
                    attempts,
                    at: Instant::now(), // determinism-ok: when a publish failed, for the retry pause only
                });
            }
            Ok(Ok(ack)) => format!("acknowledged by stream {}", ack.stream),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_string(),
        };
        if deadline.checked_sub(pause).is_none_or(|d| !before(d)) {
            return Err(PublishFailed::Stream {
                batch_seq,
                attempts,
                last_error,
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// Whether the host clock is still before `deadline` (retry budgets and waits only).
fn before(deadline: Instant) -> bool {
    Instant::now() < deadline // determinism-ok: retry budget of the producer, not engine time
}
