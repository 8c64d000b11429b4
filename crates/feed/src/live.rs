//! The live adapter: a websocket client (tokio + tokio-tungstenite) for the same Binance
//! futures message format, with timeouts, reconnects, a REST depth snapshot per book, a
//! plausibility guard on marks and index prices, and a bounded hand-off to the sequencer.
//!
//! ```text
//!  websocket ──frames──▶ run() ──FeedItem──▶ bounded tokio mpsc ──▶ submit bridge thread ──▶ SequencerHandle::submit
//!  (timeouts, size       parse, order,      (capacity C)            (blocking_recv,          (bounded crossbeam
//!   limits, reconnect)   convert, guard                             blocking submit)          queue)
//!  REST GET /fapi/v1/depth ──snapshot──▶ run() (one request per unsynced book)
//! ```
//!
//! **Back-pressure.** Nothing is dropped and nothing grows without bound: when the
//! sequencer's queue is full, `SequencerHandle::submit` blocks the bridge thread (a plain
//! OS thread, never a tokio worker); the mpsc channel then fills and `run` waits in
//! `send().await`, so it stops reading the socket; the kernel's TCP window fills and the
//! exchange eventually drops a consumer that stays too slow. The client then reconnects.
//!
//! **Timeouts and reconnects.** A connect (TCP and websocket handshake) that takes longer
//! than `connect_timeout` is a failed connect. A connection on which no data message (text
//! or binary; pings do not count) arrives for `idle_timeout` is dropped: a silent peer must
//! not leave the marks stale. After a failed connect or an ended connection the client
//! waits `backoff`, doubling from `backoff_initial` up to `backoff_max` (bounded
//! exponential); a connection that delivered at least one frame resets it. The run ends
//! on shutdown, when the consumer closes the channel, after `max_connections` ended
//! connections, or with [`LiveError::GaveUp`] after `max_failed_attempts` consecutive
//! failed connects.
//!
//! **Size limits.** A message above `max_message_bytes` or a frame above
//! `max_frame_bytes` (default 1 MiB each, against tungstenite's 64 MiB / 16 MiB) ends the
//! connection and is counted in [`LiveStats::oversize`]. Sizing, from the bundled Binance
//! captures (`replay-fixtures/ticks`, `@depth@0ms` streams with 1000-level REST
//! snapshots, USDⓈ-M and COIN-M): the largest `depthUpdate` is 26 KB (BTCUSDT,
//! 2024-08-08), the largest snapshot 46 KB, every other message under 300 bytes; a
//! 1000-level snapshot is at most 2000 levels of ~40 bytes, about 80 KB. So 1 MiB is
//! over ten times the largest real message, and a peer can make the client hold about
//! 1 MiB per connection instead of 64 MiB.
//!
//! **Depth books.** Each connection starts every local book over (the diff chain of the
//! old one is broken). When a `depthUpdate` arrives for a configured symbol whose book is
//! not synchronised, the client requests `GET {base_url}/fapi/v1/depth?symbol=S&limit=L`
//! (Binance's "how to manage a local order book": open the stream, buffer the diffs, get
//! a snapshot, drop diffs with `u < lastUpdateId`, the first applied has
//! `U ≤ lastUpdateId ≤ u`, then each `pu` is the previous `u`; [`crate::book`] does the
//! sequencing). Diffs are buffered while the request runs. A failed request (refused,
//! timed out, not 200, over `max_body_bytes`, not a snapshot) is counted and retried
//! after `retry_delay`; so is a snapshot older than the buffered diffs, and a gap later
//! on makes the next diff ask again. After `max_attempts` consecutive attempts that did
//! not sync a book, that book stays unsynchronised for the rest of the connection. An
//! unsynchronised book emits nothing (see [`crate::book`]); `bookTicker`, trades and
//! marks do not depend on it. With `snapshot: None` no request is made and a book syncs
//! only from snapshots carried on the stream itself (recorded captures replayed).
//!
//! **Plausibility.** Mark and index prices pass through a [`MarkGuard`] (see
//! [`crate::guard`]) kept across reconnects: a jump beyond `guard.max_jump_ppm` from the
//! last applied value is held until confirmed by later updates; a lone outlier is dropped.
//! Both are counted in [`LiveStats::guard`].
//!
//! Owns the connection loop, the snapshot requests and the bridge. Must never block a
//! tokio worker, drop a converted command silently, wait without a bound on the network,
//! or leave a task running after `run` returns. It stamps each frame's local receive time
//! from the system clock for ordering only; command times are the exchange's.

use crate::convert::{ConvertOptions, Converter, FeedItem};
use crate::guard::{GuardOptions, GuardStats, MarkGuard};
use crate::message::{parse_json, Body};
use crate::reader::{Message, ReaderOptions, SourceState, DEFAULT_TOLERANCE_NS};
use crate::stats::{FeedStats, Problem};
use futures_util::StreamExt as _;
use perpcore_types::{Command, Config, InstrumentId};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

/// One MiB: the default message and frame limit (see the module docs for the sizing).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Where and how depth snapshots are requested.
#[derive(Clone, Debug)]
pub struct SnapshotOptions {
    /// REST base URL, `http://…` (or `https://…` with the `live-tls` feature), e.g.
    /// `https://fapi.binance.com`; the request is `{base_url}/fapi/v1/depth?…`.
    pub base_url: String,
    /// Levels per side (`limit`): 1000, the most Binance serves.
    pub limit: u32,
    /// Bound on one request, connect to last body byte.
    pub timeout: Duration,
    /// Largest body read (a 1000-level snapshot is about 80 KB).
    pub max_body_bytes: usize,
    /// Wait before asking again after an attempt that did not sync the book.
    pub retry_delay: Duration,
    /// Consecutive attempts per book and connection that did not sync it, before giving
    /// up on that book until the next connection.
    pub max_attempts: u32,
}

impl SnapshotOptions {
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            limit: 1000,
            timeout: Duration::from_secs(10),
            max_body_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            retry_delay: Duration::from_secs(1),
            max_attempts: 5,
        }
    }
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// `ws://…` (or `wss://…` with the `live-tls` feature), e.g.
    /// `wss://fstream.binance.com/stream?streams=btcusdt@depth@0ms/btcusdt@bookTicker`.
    pub url: String,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Bound on a connect (TCP and websocket handshake).
    pub connect_timeout: Duration,
    /// A connection with no data message for this long is dropped and reconnected.
    pub idle_timeout: Duration,
    /// Largest message accepted (larger ones end the connection, counted).
    pub max_message_bytes: usize,
    /// Largest frame accepted.
    pub max_frame_bytes: usize,
    /// Stop after this many connections have ended (tests); `None`: run until shut down.
    pub max_connections: Option<u64>,
    /// Give up after this many consecutive failed connects; `None`: never.
    pub max_failed_attempts: Option<u32>,
    /// Out-of-order tolerance (see [`crate::reader`]).
    pub tolerance_ns: u64,
    pub convert: ConvertOptions,
    /// The plausibility guard on marks and index prices.
    pub guard: GuardOptions,
    /// Depth snapshots by REST; `None`: only snapshots carried on the stream.
    pub snapshot: Option<SnapshotOptions>,
}

impl LiveOptions {
    /// Defaults for Binance USDⓈ-M futures: snapshots from `https://fapi.binance.com`,
    /// 10 s connect timeout, 10 s idle timeout (the mark price stream alone pushes every
    /// 1 s or 3 s), 1 MiB message and frame limits.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_frame_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_connections: None,
            max_failed_attempts: None,
            tolerance_ns: DEFAULT_TOLERANCE_NS,
            convert: ConvertOptions::default(),
            guard: GuardOptions::default(),
            snapshot: Some(SnapshotOptions::new("https://fapi.binance.com")),
        }
    }
}

/// What a live run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveStats {
    /// Connections established.
    pub connections: u64,
    /// Connect attempts after the first one.
    pub reconnects: u64,
    /// Connect attempts that failed (timeouts included).
    pub failed_connects: u64,
    /// Connect attempts that timed out.
    pub connect_timeouts: u64,
    /// Connections that ended by error, by the server or by a timeout (not by shutdown).
    pub disconnects: u64,
    /// Connections dropped because no data message came within the idle timeout.
    pub idle_timeouts: u64,
    /// Connections dropped for a message or frame over the size limits.
    pub oversize: u64,
    /// Text or binary frames received.
    pub frames: u64,
    /// Commands handed to the channel.
    pub commands: u64,
    /// Depth snapshot requests made.
    pub snapshot_requests: u64,
    /// Snapshot requests that delivered no snapshot: refused, timed out, not 200, too
    /// large, not a snapshot, or still running when the connection ended. Every request
    /// either delivers a snapshot to its book (counted in `feed.depth.snapshots`, with any
    /// carried on the stream) or is counted here.
    pub snapshot_failures: u64,
    /// The plausibility guard's counters.
    pub guard: GuardStats,
    /// Parsing, ordering, conversion and depth counters.
    pub feed: FeedStats,
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("gave up after {attempts} failed connects to {url}: {last}")]
    GaveUp {
        url: String,
        attempts: u32,
        last: String,
    },
}

/// Why one connection ended.
enum Ended {
    /// Server closed, the connection broke or timed out; reconnect.
    Dropped,
    /// Shutdown requested or the consumer is gone; stop.
    Stop,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Snapshot requests of one book on one connection.
#[derive(Default)]
struct BookSync {
    in_flight: bool,
    /// Consecutive attempts that did not sync the book.
    failed: u32,
}

/// A finished snapshot request: the symbol and the body or why there is none.
type Fetched = (String, Result<String, String>);

/// Everything one run keeps across connections.
struct Client<'a> {
    opts: &'a LiveOptions,
    converter: Converter,
    state: SourceState,
    guard: MarkGuard,
    by_symbol: HashMap<String, InstrumentId>,
    stats: LiveStats,
    /// Exchange time of the last message converted (a snapshot without `E` takes it).
    last_exchange_ns: u64,
    out: Vec<FeedItem>,
}

impl Client<'_> {
    fn finish(mut self) -> LiveStats {
        self.stats.feed.add(&self.state.stats);
        self.stats.feed.add(self.converter.stats());
        self.stats.guard = *self.guard.stats();
        self.stats
    }

    /// Converts one message, guards the marks and hands the commands on; false when the
    /// consumer is gone.
    async fn convert_and_send(&mut self, msg: Message, tx: &mpsc::Sender<FeedItem>) -> bool {
        self.last_exchange_ns = self.last_exchange_ns.max(msg.exchange_ns);
        self.converter.convert(msg, &mut self.out);
        self.guard.filter(&mut self.out);
        for item in self.out.drain(..) {
            if tx.send(item).await.is_err() {
                return false;
            }
            self.stats.commands += 1;
        }
        true
    }

    fn synced(&self, symbol: &str) -> Option<bool> {
        let id = self.by_symbol.get(symbol)?;
        self.converter.book(*id).map(|b| b.is_synced())
    }

    /// Starts a snapshot request for `symbol` if its book needs one and none is running.
    fn want_snapshot(
        &mut self,
        symbol: &str,
        books: &mut BTreeMap<String, BookSync>,
        fetches: &mut JoinSet<Fetched>,
    ) {
        let Some(snap) = &self.opts.snapshot else {
            return;
        };
        if self.synced(symbol) != Some(false) {
            return;
        }
        let book = books.entry(symbol.to_string()).or_default();
        if book.in_flight || book.failed >= snap.max_attempts {
            return;
        }
        book.in_flight = true;
        self.stats.snapshot_requests += 1;
        let delay = if book.failed > 0 {
            snap.retry_delay
        } else {
            Duration::ZERO
        };
        let (snap, symbol) = (snap.clone(), symbol.to_string());
        fetches.spawn(async move {
            tokio::time::sleep(delay).await;
            let r = match tokio::time::timeout(snap.timeout, http::fetch_snapshot(&snap, &symbol))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {:?}", snap.timeout)),
            };
            (symbol, r)
        });
    }

    /// Applies a finished snapshot request; false when the consumer is gone.
    async fn on_fetched(
        &mut self,
        (symbol, result): Fetched,
        books: &mut BTreeMap<String, BookSync>,
        fetches: &mut JoinSet<Fetched>,
        tx: &mpsc::Sender<FeedItem>,
    ) -> bool {
        let book = books.entry(symbol.clone()).or_default();
        book.in_flight = false;
        let parsed = result.and_then(|body| match parse_json(&body) {
            Ok(p) => match p.body {
                Body::Snapshot(s) => Ok((p.exchange_ns, s)),
                other => Err(format!("a {} instead of a snapshot", other.kind().name())),
            },
            Err(p) => Err(format!("unusable body: {}", p.name())),
        });
        match parsed {
            Ok((exchange_ns, mut s)) => {
                s.symbol = Some(symbol.clone());
                let msg = Message {
                    source: 0,
                    line: self.stats.frames,
                    local_ts: now_ns(),
                    exchange_ns: exchange_ns.unwrap_or(self.last_exchange_ns),
                    body: Body::Snapshot(s),
                };
                if !self.convert_and_send(msg, tx).await {
                    return false;
                }
            }
            Err(e) => {
                self.stats.snapshot_failures += 1;
                tracing::warn!(%symbol, error = %e, "depth snapshot failed");
            }
        }
        let synced = self.synced(&symbol) == Some(true);
        let book = books.entry(symbol.clone()).or_default();
        if synced {
            book.failed = 0;
        } else {
            book.failed = book.failed.saturating_add(1);
            self.want_snapshot(&symbol, books, fetches);
        }
        true
    }
}

/// Runs the client until shutdown (`shutdown` set to true or its sender dropped), the
/// consumer closes `tx`, `max_connections` is reached, or it gives up reconnecting.
pub async fn run(
    opts: LiveOptions,
    config: &Config,
    tx: mpsc::Sender<FeedItem>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<LiveStats, LiveError> {
    let mut c = Client {
        opts: &opts,
        converter: Converter::new(config, opts.convert),
        state: SourceState::new(
            0,
            &ReaderOptions {
                tolerance_ns: opts.tolerance_ns,
                trust_first: true,
                ..ReaderOptions::default()
            },
        ),
        guard: MarkGuard::new(opts.guard),
        by_symbol: config
            .instruments
            .iter()
            .map(|i| (i.symbol.clone(), i.id))
            .collect(),
        stats: LiveStats::default(),
        last_exchange_ns: 0,
        out: Vec::new(),
    };
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(opts.max_message_bytes))
        .max_frame_size(Some(opts.max_frame_bytes));
    let mut backoff = opts.backoff_initial;
    let mut failed_in_a_row = 0u32;
    let mut ended_connections = 0u64;
    let mut attempts = 0u64;
    loop {
        if *shutdown.borrow() {
            return Ok(c.finish());
        }
        if attempts > 0 {
            c.stats.reconnects += 1;
        }
        attempts += 1;
        let connect = tokio::select! {
            r = tokio::time::timeout(
                opts.connect_timeout,
                tokio_tungstenite::connect_async_with_config(opts.url.as_str(), Some(ws_config), false),
            ) => Some(r),
            _ = shutdown.changed() => None,
        };
        let Some(connect) = connect else {
            return Ok(c.finish());
        };
        let failure = match connect {
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => {
                c.stats.connect_timeouts += 1;
                Err(format!("no connection within {:?}", opts.connect_timeout))
            }
        };
        let mut ws = match failure {
            Ok(ws) => ws,
            Err(e) => {
                c.stats.failed_connects += 1;
                failed_in_a_row += 1;
                tracing::warn!(url = %opts.url, error = %e, attempt = failed_in_a_row, "connect failed");
                if opts
                    .max_failed_attempts
                    .is_some_and(|m| failed_in_a_row >= m)
                {
                    return Err(LiveError::GaveUp {
                        url: opts.url.clone(),
                        attempts: failed_in_a_row,
                        last: e,
                    });
                }
                if wait(backoff, &mut shutdown).await {
                    return Ok(c.finish());
                }
                backoff = backoff.saturating_mul(2).min(opts.backoff_max);
                continue;
            }
        };
        failed_in_a_row = 0;
        c.stats.connections += 1;
        // A new connection continues no diff chain, and its exchange times start a new
        // watermark. With `trust_first` nothing is ever held as a first message, so the
        // restart releases nothing (a jump the old connection left unconfirmed is counted).
        c.converter.reset_books();
        let mut ready = Vec::new();
        c.state.restart(&mut ready);
        debug_assert!(ready.is_empty(), "a live source holds no first message");
        ready.clear();
        let mut books: BTreeMap<String, BookSync> = BTreeMap::new();
        // Dropped (every request aborted) when the connection ends.
        let mut fetches: JoinSet<Fetched> = JoinSet::new();
        let frames_before = c.stats.frames;
        let mut idle_deadline = deadline(opts.idle_timeout);
        let ended = loop {
            let frame = tokio::select! {
                f = ws.next() => f,
                Some(done) = fetches.join_next(), if !fetches.is_empty() => {
                    // A request task cannot panic by design; a join error (abort) is a failure.
                    let done = done.unwrap_or_else(|e| (String::new(), Err(e.to_string())));
                    let started = Instant::now();
                    if !c.on_fetched(done, &mut books, &mut fetches, &tx).await {
                        break Ended::Stop;
                    }
                    // Time spent waiting for the consumer is not idle time.
                    idle_deadline = idle_deadline
                        .checked_add(started.elapsed())
                        .unwrap_or(idle_deadline);
                    continue;
                }
                () = tokio::time::sleep_until(idle_deadline) => {
                    c.stats.idle_timeouts += 1;
                    tracing::warn!(url = %opts.url, timeout = ?opts.idle_timeout, "no data: reconnecting");
                    break Ended::Dropped;
                }
                _ = shutdown.changed() => break Ended::Stop,
            };
            let text = match frame {
                None => break Ended::Dropped,
                Some(Err(WsError::Capacity(e))) => {
                    c.stats.oversize += 1;
                    tracing::warn!(url = %opts.url, error = %e, "message over the size limit: reconnecting");
                    break Ended::Dropped;
                }
                Some(Err(e)) => {
                    tracing::warn!(url = %opts.url, error = %e, "connection lost");
                    break Ended::Dropped;
                }
                Some(Ok(WsMessage::Text(t))) => t.as_str().to_string(),
                Some(Ok(WsMessage::Binary(b))) => match String::from_utf8(b.to_vec()) {
                    Ok(s) => s,
                    Err(_) => {
                        idle_deadline = deadline(opts.idle_timeout);
                        c.stats.frames += 1;
                        c.state.stats.lines += 1;
                        c.state
                            .stats
                            .count_problem(Problem::BadJson, c.stats.frames);
                        continue;
                    }
                },
                Some(Ok(WsMessage::Close(_))) => break Ended::Dropped,
                // Pings are answered by tungstenite on the next read; they are not data.
                Some(Ok(_)) => continue,
            };
            c.stats.frames += 1;
            c.state.stats.lines += 1;
            let parsed = parse_json(&text).map(|p| (now_ns(), p));
            c.state.accept(c.stats.frames, parsed, &mut ready);
            let mut gone = false;
            for msg in ready.drain(..) {
                let depth_symbol = match &msg.body {
                    Body::Depth(d) => Some(d.symbol.clone()),
                    _ => None,
                };
                if !c.convert_and_send(msg, &tx).await {
                    gone = true;
                    break;
                }
                if let Some(symbol) = depth_symbol {
                    c.want_snapshot(&symbol, &mut books, &mut fetches);
                }
            }
            if gone {
                break Ended::Stop;
            }
            // Counted from after the hand-off: time spent waiting for the consumer
            // (back-pressure) is not idle time.
            idle_deadline = deadline(opts.idle_timeout);
        };
        // Requests still running did not deliver: counted as failed, then aborted.
        c.stats.snapshot_failures += u64::try_from(fetches.len()).unwrap_or(u64::MAX);
        fetches.abort_all();
        let _ = ws.close(None).await;
        if matches!(ended, Ended::Stop) {
            return Ok(c.finish());
        }
        c.stats.disconnects += 1;
        ended_connections += 1;
        if opts.max_connections.is_some_and(|m| ended_connections >= m) {
            return Ok(c.finish());
        }
        if c.stats.frames > frames_before {
            backoff = opts.backoff_initial;
        }
        if wait(backoff, &mut shutdown).await {
            return Ok(c.finish());
        }
        backoff = backoff.saturating_mul(2).min(opts.backoff_max);
    }
}

/// `d` from now; an unrepresentable instant (a huge timeout) is as good as never.
fn deadline(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(1 << 32)))
        .unwrap_or(now)
}

/// Sleeps `d` unless shutdown comes first (returns true then).
async fn wait(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        r = shutdown.changed() => r.is_err() || *shutdown.borrow(),
    }
}

/// The snapshot request over hyper's HTTP/1 client.
mod http {
    use super::SnapshotOptions;
    use http_body_util::{BodyExt as _, Empty, LengthLimitError, Limited};
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpStream;

    /// Aborts a spawned task when dropped (the request timed out or finished).
    struct AbortOnDrop(tokio::task::JoinHandle<()>);

    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }

    /// `GET {base_url}/fapi/v1/depth?symbol=…&limit=…`: the body of a 200 answer, at most
    /// `max_body_bytes`. The caller bounds the time.
    pub(super) async fn fetch_snapshot(
        opts: &SnapshotOptions,
        symbol: &str,
    ) -> Result<String, String> {
        let url = format!(
            "{}/fapi/v1/depth?symbol={symbol}&limit={}",
            opts.base_url.trim_end_matches('/'),
            opts.limit
        );
        let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
        let host = uri.host().ok_or_else(|| format!("no host in {url}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("not an http(s) URL: {url}")),
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri.authority().map_or(host, |a| a.as_str());
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        if https {
            tls::get(host, tcp, request, opts.max_body_bytes).await
        } else {
            get(TokioIo::new(tcp), request, opts.max_body_bytes).await
        }
    }

    pub(super) async fn get<T>(
        io: T,
        request: hyper::Request<Empty<Bytes>>,
        max_body_bytes: usize,
    ) -> Result<String, String>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        let _conn = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != hyper::StatusCode::OK {
            return Err(format!("HTTP {}", response.status()));
        }
        let body = Limited::new(response.into_body(), max_body_bytes)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<LengthLimitError>() {
                    format!("body over {max_body_bytes} bytes")
                } else {
                    e.to_string()
                }
            })?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| "body is not UTF-8".to_string())
    }

    #[cfg(feature = "live-tls")]
    mod tls {
        use http_body_util::Empty;
        use hyper::body::Bytes;
        use hyper_util::rt::TokioIo;
        use std::sync::Arc;
        use tokio::net::TcpStream;
        use tokio_rustls::rustls;

        pub(in super::super) async fn get(
            host: &str,
            tcp: TcpStream,
            request: hyper::Request<Empty<Bytes>>,
            max_body_bytes: usize,
        ) -> Result<String, String> {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| format!("bad TLS name {host}: {e}"))?;
            let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {host}: {e}"))?;
            super::get(TokioIo::new(stream), request, max_body_bytes).await
        }
    }

    #[cfg(not(feature = "live-tls"))]
    mod tls {
        use http_body_util::Empty;
        use hyper::body::Bytes;
        use tokio::net::TcpStream;

        pub(in super::super) async fn get(
            _host: &str,
            _tcp: TcpStream,
            _request: hyper::Request<Empty<Bytes>>,
            _max_body_bytes: usize,
        ) -> Result<String, String> {
            Err("https snapshot URLs need the live-tls feature".to_string())
        }
    }
}

/// Moves commands from the live channel into a blocking sink (the sequencer:
/// `move |c| handle.submit(c).is_ok()`) on a dedicated OS thread, so the sink may block
/// (back-pressure) without stalling the async runtime. Ends when the channel closes or
/// the sink returns false; returns the number of commands submitted.
pub fn spawn_submit_bridge<F>(
    mut rx: mpsc::Receiver<FeedItem>,
    mut submit: F,
) -> std::io::Result<std::thread::JoinHandle<u64>>
where
    F: FnMut(Command) -> bool + Send + 'static,
{
    std::thread::Builder::new()
        .name("perpcore-feed-bridge".into())
        .spawn(move || {
            let mut n = 0u64;
            while let Some(item) = rx.blocking_recv() {
                if !submit(item.command) {
                    break;
                }
                n += 1;
            }
            n
        })
}
