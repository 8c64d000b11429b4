//! perpcore-gateway: a Binance USDⓈ-M-compatible REST and websocket gateway in front of
//! the sequencer (`perpcore serve`). Endpoints, streams, errors and how to point ccxt and
//! ccxt.pro at it: docs/GATEWAY.md.
//!
//! # Threads and how an answer waits for durability
//!
//! ```text
//!  HTTP clients ──► tokio runtime (owned by [`Server`]; axum, public + admin listeners;
//!  WebSocket API ─►   `/ws-fapi/v1` requests run the REST handlers' cores: `ws_api`)
//!                      │ try_send(Request)            ▲ oneshot answer
//!                      ▼                              │
//!                  bridge thread ── try_submit(Command) ──► sequencer ► writer ► fsync ► mark
//!                  (read replica = View, FIFO of writes in flight)  ◄── Vec<Committed> (durable)
//!                      │ publisher: try_send(Batch) per fsync group
//!                      ▼
//!  ws clients ◄── outbox (bounded) ◄── stream hub task (topics, depth batches, listen keys)
//! ```
//!
//! The sequencer and the engine run on their own threads exactly as in `perpcore run`.
//! Every HTTP request becomes a [`bridge::Request`] on a bounded channel to the bridge
//! thread, the sequencer's only producer and only consumer. A write is checked on the
//! bridge's view, turned into one engine [`perpcore_types::Command`], submitted, and
//! parked in a FIFO; the sequencer releases a command's `Committed` output only after the
//! mark thread recorded its group as durable (fsynced), and since no one else submits,
//! outputs arrive in FIFO order. The bridge then applies the same command with the same
//! seq and timestamp to its replica of the engine (asserting identical events: the engine
//! is deterministic), and only then builds and sends the HTTP answer.
//!
//! Reads (depth, account, positions, open orders, order queries) are closures run on the
//! bridge thread against that replica: the engine's state as of the last durable
//! command, never a state the journal could lose, and never a lock on the sequencer
//! (the sequencer's engine is not shared at all). The cost is applying each command
//! twice, on two threads; a read waits at most for the bridge's current step.
//!
//! Websocket streams (`publish`, `stream`, `ws`): the bridge's publisher notes what each
//! durable command changed and hands it, per fsync group, to the stream hub without
//! waiting; the hub fans frames out into each connection's bounded outbox without
//! waiting, and disconnects a connection whose outbox is full.
//!
//! Must never: answer a write before its events are durable, submit to the sequencer
//! from anywhere but the bridge, publish a stream event of a command that is not
//! durable, or change engine semantics or encodings.

mod admin_prices;
pub mod auth;
pub mod bridge;
pub mod cluster;
pub mod conn;
pub mod error;
pub mod history;
mod http;
pub mod limits;
pub mod metrics;
pub mod publish;
pub mod shape;
pub mod stream;
mod user_data;
pub mod view;
mod ws;
mod ws_api;

pub use auth::{sign_hex, ApiKeys};
pub use cluster::ClusterOptions;
pub use error::{reject_to_binance, ApiError, GatewayError};
pub use http::MAX_BODY_BYTES;
pub use limits::RateLimits;
pub use stream::{StreamOptions, StreamStats};

use perpcore_engine::Engine;
use perpcore_journal::{Journal, JournalOptions};
use perpcore_node::Core;
use perpcore_sequencer::{
    self as sequencer, Recovered, Sequencer, SequencerConfig, StateMachine, SystemClock,
};
use perpcore_types::Config;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Capacity of the HTTP → bridge request channel; a full one answers -1008.
pub const REQUEST_QUEUE: usize = 4096;

/// How to serve.
pub struct ServeOptions {
    pub journal: PathBuf,
    pub config: Config,
    pub keys: ApiKeys,
    pub listen: SocketAddr,
    /// The admin listener (127.0.0.1 by default in the CLI).
    pub admin_listen: SocketAddr,
    pub admin_token: String,
    /// Start a new journal, removing the one in the folder.
    pub fresh: bool,
    /// Every request is answered within this time (408 after it).
    pub request_timeout: Duration,
    pub sequencer: SequencerConfig,
    /// Tokio worker threads.
    pub worker_threads: usize,
    /// Request weights, order counts and connection limits (Binance's by default).
    pub limits: RateLimits,
    /// Websocket limits (connections, outbound buffers, listen key lifetime).
    pub streams: StreamOptions,
    /// Cluster mode: publish to a NATS JetStream stream and run an engine node of its own
    /// in `journal` (a node directory) instead of the single-node sequencer
    /// (docs/CLUSTER.md, "The gateway on the stream"). `None`: single-node.
    pub cluster: Option<ClusterOptions>,
}

impl ServeOptions {
    pub fn new(
        journal: PathBuf,
        config: Config,
        keys: ApiKeys,
        admin_token: String,
    ) -> ServeOptions {
        ServeOptions {
            journal,
            config,
            keys,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            admin_token,
            fresh: false,
            request_timeout: Duration::from_secs(10),
            sequencer: SequencerConfig::default(),
            worker_threads: 2,
            limits: RateLimits::default(),
            streams: StreamOptions::default(),
            cluster: None,
        }
    }
}

/// What a stopped server reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeSummary {
    pub resumed_after: u64,
    pub commands: u64,
    pub last_seq: u64,
    /// Cluster mode: the node's last stream message and state hash when it stopped.
    pub node: Option<(u64, [u8; 32])>,
}

type NodeTask =
    tokio::task::JoinHandle<Result<perpcore_cluster::NodeSummary, perpcore_cluster::NodeError>>;

/// What the bridge sits on.
enum Backend {
    /// The single-node sequencer (the default).
    Single(
        Sequencer<Core>,
        crossbeam_channel::Receiver<Vec<sequencer::Committed<perpcore_types::Event>>>,
    ),
    /// A producer of the cluster's stream and the node this process runs.
    Cluster(cluster::Links),
}

/// A running gateway: its runtime, listeners and the bridge thread.
pub struct Server {
    runtime: tokio::runtime::Runtime,
    public_addr: SocketAddr,
    admin_addr: SocketAddr,
    stop_http: Option<tokio::sync::watch::Sender<bool>>,
    /// How long a closing websocket may take to write its close frame.
    close_grace: std::time::Duration,
    servers: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// Ends (`None`) once every WebSocket API connection has ended.
    api_done: tokio::sync::mpsc::Receiver<()>,
    bridge: bridge::BridgeClient,
    bridge_thread: Option<std::thread::JoinHandle<bridge::BridgeExit>>,
    resumed_after: u64,
    hub_stop: Option<tokio::sync::oneshot::Sender<()>>,
    hub: Option<tokio::task::JoinHandle<()>>,
    streams: Arc<stream::Shared>,
    /// Cluster mode: the node's stop signal and task.
    node: Option<(tokio::sync::oneshot::Sender<()>, NodeTask)>,
}

impl Server {
    /// Open (or create) the journal, start the sequencer, the bridge and the listeners.
    pub fn start(opts: ServeOptions) -> Result<Server, GatewayError> {
        if opts.admin_token.len() < 16 {
            return Err(GatewayError::Keys {
                path: "admin token".into(),
                what: "must be at least 16 characters".into(),
            });
        }
        let metrics = Arc::new(metrics::Metrics::new());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.worker_threads.max(1))
            .thread_name("perpcore-gateway-http")
            .enable_all()
            .build()?;
        let (tx, rx) = crossbeam_channel::bounded(REQUEST_QUEUE);
        let req_probe = tx.clone();
        let (backend, view, resumed_after, node) = match &opts.cluster {
            None => {
                let (backend, view) = start_single(&opts, &metrics)?;
                let after = view.last_seq;
                (backend, view, after, None)
            }
            Some(c) => {
                let (links, view, node) = runtime.block_on(start_cluster(&opts, c))?;
                let after = view.last_seq;
                (Backend::Cluster(links), view, after, Some(node))
            }
        };
        let queue_probe: Box<dyn Fn() -> usize + Send + Sync> = match &backend {
            Backend::Single(seq, _) => {
                let h = seq.handle();
                Box::new(move || h.queued())
            }
            Backend::Cluster(links) => {
                let n = links.in_flight.clone();
                Box::new(move || n.load(std::sync::atomic::Ordering::Relaxed))
            }
        };
        metrics.set_probes(queue_probe, Box::new(move || req_probe.len()));
        // The streams: the bridge's publisher feeds the hub (a task on the runtime below).
        let shared = Arc::new(stream::Shared::new(&opts.streams));
        let (batch_tx, batch_rx) = tokio::sync::mpsc::channel(opts.streams.update_queue.max(1));
        let publisher = publish::Publisher::new(batch_tx, shared.clone(), &view);
        let start_seq = view.last_seq;
        let bridge_metrics = metrics.clone();
        let bridge_thread = std::thread::Builder::new()
            .name("perpcore-gateway-bridge".into())
            .spawn(move || match backend {
                Backend::Single(seq, output) => {
                    bridge::run(seq, output, rx, view, bridge_metrics, publisher)
                }
                Backend::Cluster(links) => cluster::run(links, rx, view, bridge_metrics, publisher),
            })?;
        let client = bridge::BridgeClient::new(tx);

        use sha2::Digest as _;
        let app = Arc::new(http::App {
            bridge: client.clone(),
            keys: opts.keys,
            admin_token_sha256: sha2::Sha256::digest(opts.admin_token.as_bytes()).into(),
            config: Arc::new(opts.config),
            limiter: limits::Limiter::new(opts.limits, metrics.clone()),
            metrics: metrics.clone(),
        });
        let (control_tx, control_rx) = tokio::sync::mpsc::channel(4096);
        let (hub_stop, hub_stop_rx) = tokio::sync::oneshot::channel();
        let hub = runtime.spawn(stream::run(
            stream::Hub::new(
                app.config.clone(),
                shared.clone(),
                opts.streams.clone(),
                start_seq,
            ),
            batch_rx,
            control_rx,
            hub_stop_rx,
        ));
        let ws_state = Arc::new(ws::WsState::new(
            app.clone(),
            shared.clone(),
            control_tx,
            opts.streams.clone(),
        ));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // Every WebSocket API connection holds a sender: all dropped = all ended.
        let (api_alive, api_done) = tokio::sync::mpsc::channel::<()>(1);
        let bind = |addr| runtime.block_on(tokio::net::TcpListener::bind(addr));
        let (public, admin) = match (bind(opts.listen), bind(opts.admin_listen)) {
            (Ok(p), Ok(a)) => (p, a),
            (Err(e), _) | (_, Err(e)) => {
                client.stop();
                let _ = bridge_thread.join();
                if let Some((stop, task)) = node {
                    let _ = stop.send(());
                    let _ = runtime.block_on(task);
                }
                return Err(e.into());
            }
        };
        if let Some(n) = opts.streams.socket_send_buffer {
            // Inherited by the accepted sockets (see `StreamOptions::socket_send_buffer`).
            if let Err(e) = socket2::SockRef::from(&public).set_send_buffer_size(n) {
                tracing::warn!("SO_SNDBUF {n} on the public listener: {e}");
            }
        }
        let public_addr = public.local_addr()?;
        let admin_addr = admin.local_addr()?;
        let mut servers = Vec::new();
        let lim = opts.limits;
        for (listener, name, router) in [
            (
                public,
                "public",
                http::public_router(
                    app.clone(),
                    opts.request_timeout,
                    ws::router(ws_state.clone(), opts.request_timeout).merge(ws_api::router(
                        ws_state,
                        stop_rx.clone(),
                        api_alive,
                    )),
                ),
            ),
            (
                admin,
                "admin",
                http::admin_router(
                    app.clone(),
                    opts.request_timeout,
                    admin_prices::router(app, opts.request_timeout),
                ),
            ),
        ] {
            let mut stop = stop_rx.clone();
            let listener = conn::Guarded::new(
                listener,
                name,
                lim.max_connections,
                lim.max_connections_per_address,
                metrics.clone(),
            );
            let service = router.into_make_service_with_connect_info::<conn::ClientAddr>();
            servers.push(runtime.spawn(async move {
                axum::serve(listener, service)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await
            }));
        }
        Ok(Server {
            runtime,
            public_addr,
            admin_addr,
            stop_http: Some(stop_tx),
            close_grace: opts.streams.close_grace,
            servers,
            api_done,
            bridge: client,
            bridge_thread: Some(bridge_thread),
            resumed_after,
            hub_stop: Some(hub_stop),
            hub: Some(hub),
            streams: shared,
            node,
        })
    }

    /// Counters of the websocket side.
    pub fn stream_stats(&self) -> StreamStats {
        self.streams.stats()
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.public_addr
    }
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Block until Ctrl-C (SIGINT), then stop.
    pub fn run_until_ctrl_c(self) -> Result<ServeSummary, GatewayError> {
        let _ = self.runtime.block_on(tokio::signal::ctrl_c());
        self.shutdown()
    }

    /// Stop accepting, finish the requests in flight (bounded by the request timeout),
    /// let the bridge finish the writes in flight, stop the sequencer.
    pub fn shutdown(mut self) -> Result<ServeSummary, GatewayError> {
        if let Some(stop) = self.stop_http.take() {
            let _ = stop.send(true);
        }
        for s in std::mem::take(&mut self.servers) {
            let _ = self.runtime.block_on(s);
        }
        // The WebSocket API's connections saw the stop: each writes the answers of the
        // requests it has in flight (the bridge still runs) and closes with 1001.
        let bound = ws_api::WRITE_STALL + self.close_grace;
        let api_done = &mut self.api_done;
        let waited = self
            .runtime
            .block_on(async { tokio::time::timeout(bound, api_done.recv()).await });
        if waited.is_err() {
            tracing::warn!("WebSocket API connections still open after {bound:?}; dropped");
        }
        // Close the websocket connections (code 1001) before the core stops.
        if let Some(stop) = self.hub_stop.take() {
            let _ = stop.send(());
        }
        if let Some(hub) = self.hub.take() {
            let _ = self.runtime.block_on(hub);
        }
        self.bridge.stop();
        let exit = self
            .bridge_thread
            .take()
            .expect("joined once")
            .join()
            .map_err(|_| GatewayError::CoreStopped("the bridge thread panicked".into()))?;
        // Cluster mode: the node finishes the group in flight and writes its cursor.
        let node = match self.node.take() {
            None => None,
            Some((stop, task)) => {
                let _ = stop.send(());
                let summary = self
                    .runtime
                    .block_on(task)
                    .map_err(|_| GatewayError::Cluster("the node task panicked".into()))?
                    .map_err(|e| GatewayError::Cluster(e.to_string()))?;
                Some((summary.stream_seq, summary.state_hash))
            }
        };
        exit.result.map_err(GatewayError::CoreStopped)?;
        Ok(ServeSummary {
            resumed_after: self.resumed_after,
            commands: exit.commands,
            last_seq: exit.last_seq,
            node,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop_http.take() {
            let _ = stop.send(true);
        }
        if let Some(stop) = self.hub_stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.bridge_thread.take() {
            self.bridge.stop();
            let _ = t.join();
        }
        if let Some((stop, task)) = self.node.take() {
            let _ = stop.send(());
            let _ = self.runtime.block_on(task);
        }
    }
}

/// Single-node mode: the journal recovered (or created) and the sequencer started on it;
/// the view is a replica of the recovered state.
fn start_single(
    opts: &ServeOptions,
    metrics: &Arc<metrics::Metrics>,
) -> Result<(Backend, view::View), GatewayError> {
    let genesis = perpcore_node::genesis(&opts.config);
    let dir = &opts.journal;
    let has_journal = dir.join(perpcore_journal::MARK_FILE).exists()
        || dir.join(perpcore_journal::SLED_DIR).exists();
    let (started, replica, resumed_after, last_ts_ns) = if !opts.fresh && has_journal {
        let mut rec: Recovered<Core> = sequencer::recover_with(dir, JournalOptions::default())?;
        rec.journal.set_sync_timer(metrics.sync_timer());
        if rec.journal.genesis() != genesis.as_slice() {
            return Err(GatewayError::ConfigMismatch(dir.display().to_string()));
        }
        let replica = Core::restore(&rec.state.snapshot())
            .map_err(|e| GatewayError::Replica(e.to_string()))?
            .0;
        let (after, ts) = (rec.last_seq, rec.last_ts_ns);
        (
            Sequencer::resume(rec, Box::new(SystemClock), opts.sequencer)?,
            replica,
            after,
            ts,
        )
    } else {
        let (mut journal, _) = if opts.fresh {
            Journal::create_fresh(dir, &genesis, JournalOptions::default())?
        } else {
            Journal::open_or_create(dir, &genesis, JournalOptions::default())?
        };
        journal.set_sync_timer(metrics.sync_timer());
        (
            Sequencer::start(
                Core(Engine::new(opts.config.clone())),
                Some(journal),
                Box::new(SystemClock),
                opts.sequencer,
            )?,
            Engine::new(opts.config.clone()),
            0,
            0,
        )
    };
    let (seq, output) = started;
    let view = view::View::new(replica, resumed_after, last_ts_ns);
    Ok((Backend::Single(seq, output), view))
}

/// Where a gateway in cluster mode starts its order ids: the host's time in milliseconds
/// × 1,024. The view alone cannot know the ids of orders that ended before a restart
/// (the engine forgets them), and with several gateways allocating, ids outrun the
/// journal's sequence; so each start begins above every id the previous run can have
/// allocated, unless it allocated more than 1,024 per millisecond on average or the host
/// clock went back. ≈ 1.8·10^15 today: below 2^53, so JavaScript clients read it exactly.
/// The ids are in the journaled commands; the engine never sees this clock.
fn order_id_floor() -> u64 {
    let now = std::time::SystemTime::now(); // determinism-ok: order id allocation in the gateway; ids reach the engine only inside journaled commands
    let ms = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    ms.saturating_mul(1024)
}

/// How long a starting gateway waits for its node to open its directory.
const NODE_OPEN_WAIT: Duration = Duration::from_secs(120);

/// Cluster mode: the producer connected, the node started in `opts.journal` (a node
/// directory), the view a replica of the state the node opened with.
async fn start_cluster(
    opts: &ServeOptions,
    c: &ClusterOptions,
) -> Result<
    (
        cluster::Links,
        view::View,
        (tokio::sync::oneshot::Sender<()>, NodeTask),
    ),
    GatewayError,
> {
    use perpcore_cluster::{NodeOptions, NodeOutput, Producer, ProducerConfig};
    if opts.fresh {
        return Err(GatewayError::Cluster(
            "--fresh does not apply in cluster mode: a node directory is rebuilt from the stream by starting with an empty one".into(),
        ));
    }
    if c.order_id_slots == 0 || c.order_id_slot >= c.order_id_slots {
        return Err(GatewayError::Cluster(format!(
            "order id slot {} of {}: the slot must be below the number of slots",
            c.order_id_slot, c.order_id_slots
        )));
    }
    let mut pc = ProducerConfig::new(c.servers.clone(), c.names.clone());
    pc.replicas = c.replicas;
    pc.max_pending = c.max_pending;
    pc.retry_budget = c.retry_budget;
    let producer = Arc::new(
        Producer::connect(pc)
            .await
            .map_err(|e| GatewayError::Cluster(e.to_string()))?,
    );
    let (sink, outputs) = crossbeam_channel::bounded(1024);
    let mut no = NodeOptions::new(
        c.servers.clone(),
        c.names.clone(),
        &c.node_id,
        opts.journal.clone(),
        opts.config.clone(),
    );
    no.replicas = c.replicas;
    no.applier.snapshot_every = c.snapshot_every;
    no.sink = Some(sink);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task: NodeTask = tokio::spawn(perpcore_cluster::run_node(
        no,
        async move {
            let _ = stop_rx.await;
        },
        |_| {},
    ));
    // The node's first output is the state it opened with; if it stops first, its
    // error says why.
    let first = {
        let outputs = outputs.clone();
        tokio::task::spawn_blocking(move || outputs.recv_timeout(NODE_OPEN_WAIT))
            .await
            .map_err(|_| GatewayError::Cluster("waiting for the node panicked".into()))?
    };
    let (snapshot, seq, ts_ns) = match first {
        Ok(NodeOutput::Opened {
            snapshot,
            seq,
            ts_ns,
        }) => (snapshot, seq, ts_ns),
        Ok(NodeOutput::Applied(_)) => {
            return Err(GatewayError::Cluster(
                "the node applied before it opened".into(),
            ))
        }
        Err(_) => {
            let _ = stop_tx.send(());
            let why = match task.await {
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(_)) => "the node stopped".into(),
                Err(_) => "the node task panicked".into(),
            };
            return Err(GatewayError::Cluster(format!(
                "the node did not open: {why}"
            )));
        }
    };
    let replica = Core::restore(&snapshot)
        .map_err(|e| GatewayError::Replica(e.to_string()))?
        .0;
    let mut view = view::View::new(replica, seq, ts_ns);
    view.set_order_id_slot(c.order_id_slot, c.order_id_slots);
    view.raise_next_order_id(order_id_floor());
    let (to_producer, batches) = tokio::sync::mpsc::unbounded_channel();
    let (failed_tx, failed) = crossbeam_channel::unbounded();
    tokio::spawn(cluster::producer_task(producer.clone(), batches, failed_tx));
    let links = cluster::Links {
        producer,
        to_producer,
        failed,
        node: outputs,
        in_flight: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        max_batch: c.max_batch,
    };
    Ok((links, view, (stop_tx, task)))
}
