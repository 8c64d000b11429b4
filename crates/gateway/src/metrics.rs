//! The gateway's Prometheus metrics, served as text at `GET /metrics` on the admin
//! listener (docs/GATEWAY.md, "Metrics").
//!
//! Owns: [`Metrics`] (one registry per [`crate::Server`], no global state, so several
//! servers in one process, as in the tests, count apart) and the middleware that counts
//! every request by endpoint, method and status. Counters are bumped where things happen:
//! requests and Binance error codes by the middleware, engine rejections, durable commands
//! and the accept→durable latency by the bridge, fsync and mark latencies by the journal's
//! sync timer (`perpcore_journal::SyncTimer`), connections by the listener
//! (`crate::conn`), rate-limit refusals by the limiter (`crate::limits`). Queue depths are
//! read when scraped. Must never: block the bridge or the sequencer (every update is an
//! atomic add or a short lock of one label family), or label by anything unbounded
//! (endpoints are the router's matched paths, codes come from fixed tables).
//!
//! Why `prometheus-client` (the Prometheus organisation's own Rust client) rather than
//! the older `prometheus` crate: no process-global default registry (each server owns
//! its registry), typed label sets, OpenMetrics text output, and no protobuf dependency
//! (its default features are empty; it brings dtoa, itoa and parking_lot only).

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The Binance error code of an error answer, left in the response's extensions by
/// [`crate::ApiError`] for the middleware to count.
#[derive(Clone, Copy, Debug)]
pub struct BinanceCode(pub i32);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub listener: &'static str,
    pub endpoint: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// `REQUEST_WEIGHT_1M`, `ORDERS_10S`, `ORDERS_1M`, `BANNED` or `ADDRESSES_FULL`.
    pub limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// `data` (the fsync of the journal's files) or `mark` (the durable mark's write and
    /// fsync).
    pub stage: &'static str,
}

type Probe = Box<dyn Fn() -> usize + Send + Sync>;

/// Every metric of one server.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub binance_errors: Family<CodeLabels, Counter>,
    pub engine_rejects: Family<CodeLabels, Counter>,
    pub rate_limited: Family<LimitLabels, Counter>,
    pub commands: Counter,
    pub accept_to_durable: Histogram,
    pub journal_sync: Family<StageLabels, Histogram>,
    pub open_connections: Family<ListenerLabels, Gauge>,
    pub refused_connections: Family<ListenerLabels, Counter>,
    pub writes_in_flight: Gauge,
    sequencer_queue: Gauge,
    request_queue: Gauge,
    sequencer_probe: OnceLock<Probe>,
    request_probe: OnceLock<Probe>,
}

/// 50 µs to ~6.7 s in ×2 steps (18 buckets): covers a loopback request and a slow disk.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("perpcore"),
            requests: Family::default(),
            binance_errors: Family::default(),
            engine_rejects: Family::default(),
            rate_limited: Family::default(),
            commands: Counter::default(),
            accept_to_durable: latency_buckets(),
            journal_sync: Family::new_with_constructor(latency_buckets),
            open_connections: Family::default(),
            refused_connections: Family::default(),
            writes_in_flight: Gauge::default(),
            sequencer_queue: Gauge::default(),
            request_queue: Gauge::default(),
            sequencer_probe: OnceLock::new(),
            request_probe: OnceLock::new(),
        };
        let r = &mut m.registry;
        r.register(
            "gateway_requests",
            "HTTP requests answered, by listener, endpoint (the route's path), method and status",
            m.requests.clone(),
        );
        r.register(
            "gateway_errors",
            "Error answers by Binance code (gateway refusals and engine rejections alike)",
            m.binance_errors.clone(),
        );
        r.register(
            "engine_rejects",
            "Durable engine rejections (Rejected and ConditionalRejected events) by engine code",
            m.engine_rejects.clone(),
        );
        r.register(
            "gateway_rate_limited",
            "Requests refused by a rate limit (HTTP 429 or 418), by limit",
            m.rate_limited.clone(),
        );
        r.register(
            "commands",
            "Commands durable and applied to the gateway's replica (rate() gives commands/s)",
            m.commands.clone(),
        );
        r.register(
            "gateway_accept_to_durable_seconds",
            "From a command's submission to the sequencer to its durable output reaching the bridge",
            m.accept_to_durable.clone(),
        );
        r.register(
            "journal_sync_seconds",
            "Journal group-commit syncs: the fsync of the store's files (stage=data) and the durable mark's write and fsync (stage=mark)",
            m.journal_sync.clone(),
        );
        r.register(
            "gateway_open_connections",
            "TCP connections open, by listener",
            m.open_connections.clone(),
        );
        r.register(
            "gateway_refused_connections",
            "TCP connections closed at once by a connection limit, by listener",
            m.refused_connections.clone(),
        );
        r.register(
            "gateway_writes_in_flight",
            "Commands submitted by the bridge and not yet durable",
            m.writes_in_flight.clone(),
        );
        r.register(
            "sequencer_queue_depth",
            "Messages waiting in the sequencer's input queue (read when scraped)",
            m.sequencer_queue.clone(),
        );
        r.register(
            "gateway_request_queue_depth",
            "Requests waiting in the HTTP → bridge queue (read when scraped)",
            m.request_queue.clone(),
        );
        m
    }

    /// Where the queue depths are read when scraped (set once at start).
    pub fn set_probes(&self, sequencer: Probe, requests: Probe) {
        let _ = self.sequencer_probe.set(sequencer);
        let _ = self.request_probe.set(requests);
    }

    /// The journal's sync timer, feeding `perpcore_journal_sync_seconds`.
    pub fn sync_timer(self: &Arc<Self>) -> perpcore_journal::SyncTimer {
        let m = Arc::clone(self);
        Arc::new(move |stage, took: Duration| {
            let stage = match stage {
                perpcore_journal::SyncStage::Data => "data",
                perpcore_journal::SyncStage::Mark => "mark",
            };
            m.journal_sync
                .get_or_create(&StageLabels { stage })
                .observe(took.as_secs_f64());
        })
    }

    pub fn rate_limited(&self, limit: &'static str) {
        self.rate_limited
            .get_or_create(&LimitLabels { limit })
            .inc();
    }

    /// The durable events of one of this gateway's commands (on the bridge thread).
    pub fn on_committed(&self, events: &[perpcore_types::Event], submitted: std::time::Instant) {
        self.accept_to_durable
            .observe(submitted.elapsed().as_secs_f64());
        self.on_applied(events);
    }

    /// The durable events of any command (in cluster mode, also other producers').
    pub fn on_applied(&self, events: &[perpcore_types::Event]) {
        self.commands.inc();
        for e in events {
            let code = match e {
                perpcore_types::Event::Rejected { code, .. }
                | perpcore_types::Event::ConditionalRejected { code, .. } => *code,
                _ => continue,
            };
            self.engine_rejects
                .get_or_create(&CodeLabels {
                    code: code.to_string(),
                })
                .inc();
        }
    }

    /// The text exposition (OpenMetrics), queue depths read now.
    pub fn render(&self) -> String {
        if let Some(p) = self.sequencer_probe.get() {
            self.sequencer_queue.set(p() as i64);
        }
        if let Some(p) = self.request_probe.get() {
            self.request_queue.set(p() as i64);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Count one answered request.
    pub fn observe_request(
        &self,
        listener: &'static str,
        endpoint: String,
        method: &Method,
        response: &Response,
    ) {
        // Any token is a valid HTTP method: only the usual ones get their own label, so a
        // client cannot make the label set grow.
        let method = match *method {
            Method::GET
            | Method::POST
            | Method::PUT
            | Method::DELETE
            | Method::HEAD
            | Method::OPTIONS
            | Method::PATCH => method.as_str(),
            _ => "OTHER",
        };
        self.requests
            .get_or_create(&RequestLabels {
                listener,
                endpoint,
                method: method.to_string(),
                status: response.status().as_u16(),
            })
            .inc();
        if let Some(BinanceCode(code)) = response.extensions().get::<BinanceCode>() {
            self.binance_errors
                .get_or_create(&CodeLabels {
                    code: code.to_string(),
                })
                .inc();
        }
    }
}

impl Metrics {
    /// Count one answered WebSocket API request (`listener="ws-api"`, the endpoint is
    /// its method name from a fixed set, the method `WS`), and its error code if any.
    pub fn observe_ws_api(&self, method: &'static str, status: u16, code: Option<i32>) {
        self.requests
            .get_or_create(&RequestLabels {
                listener: "ws-api",
                endpoint: method.to_string(),
                method: "WS".to_string(),
                status,
            })
            .inc();
        if let Some(code) = code {
            self.binance_errors
                .get_or_create(&CodeLabels {
                    code: code.to_string(),
                })
                .inc();
        }
    }
}

/// The route a request matched (`unmatched` for a 404): bounded label values.
pub fn endpoint_of(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string()
}

/// Middleware of the admin listener: counts every request.
pub async fn count_admin(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let endpoint = endpoint_of(&req);
    let method = req.method().clone();
    let response = next.run(req).await;
    m.observe_request("admin", endpoint, &method, &response);
    response
}

/// The answer of `GET /metrics` (admin listener).
pub fn metrics_response(m: &Metrics) -> Response {
    use axum::response::IntoResponse as _;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
        .into_response()
}
