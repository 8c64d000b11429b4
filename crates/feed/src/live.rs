//! The live adapter: a websocket client (tokio + tokio-tungstenite) for the same Binance
//! futures message format, with reconnects and a bounded hand-off to the sequencer.
//!
//! ```text
//!  websocket ──frames──▶ run() ──FeedItem──▶ bounded tokio mpsc ──▶ submit bridge thread ──▶ SequencerHandle::submit
//!  (reconnect with          parse, order,      (capacity C)            (blocking_recv,          (bounded crossbeam
//!   bounded backoff)        convert                                    blocking submit)          queue)
//! ```
//!
//! **Back-pressure.** Nothing is dropped and nothing grows without bound: when the
//! sequencer's queue is full, `SequencerHandle::submit` blocks the bridge thread (a plain
//! OS thread, never a tokio worker); the mpsc channel then fills and `run` waits in
//! `send().await`, so it stops reading the socket; the kernel's TCP window fills and the
//! exchange eventually drops a consumer that stays too slow. The client then reconnects
//! with backoff, and the local depth books are reset (the diff chain is broken) until a
//! snapshot arrives on the stream; `bookTicker`, trades and marks resume at once.
//!
//! **Reconnects.** After a failed connect or a dropped connection the client waits
//! `backoff`, doubling from `backoff_initial` up to `backoff_max` (bounded exponential);
//! a connection that delivered at least one frame resets it. `max_failed_attempts`
//! consecutive failed connects end the run with [`LiveError::GaveUp`].
//!
//! Owns the connection loop and the bridge. Must never block a tokio worker, drop a
//! converted command silently, or fetch a REST snapshot (the stream alone is used: a
//! depth book syncs only if a snapshot message arrives on it). It stamps each frame's
//! local receive time from the system clock for ordering only; command times are the
//! exchange's.

use crate::convert::{ConvertOptions, Converter, FeedItem};
use crate::message::parse_json;
use crate::reader::{ReaderOptions, SourceState, DEFAULT_TOLERANCE_NS};
use crate::stats::{FeedStats, Problem};
use futures_util::StreamExt as _;
use perpcore_types::{Command, Config};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Client settings.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// `ws://…` (or `wss://…` with the `live-tls` feature), e.g.
    /// `wss://fstream.binance.com/stream?streams=btcusdt@depth@0ms/btcusdt@bookTicker`.
    pub url: String,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Stop after this many connections have ended (tests); `None`: run until shut down.
    pub max_connections: Option<u64>,
    /// Give up after this many consecutive failed connects; `None`: never.
    pub max_failed_attempts: Option<u32>,
    /// Out-of-order tolerance (see [`crate::reader`]).
    pub tolerance_ns: u64,
    pub convert: ConvertOptions,
}

impl LiveOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            max_connections: None,
            max_failed_attempts: None,
            tolerance_ns: DEFAULT_TOLERANCE_NS,
            convert: ConvertOptions::default(),
        }
    }
}

/// What a live run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveStats {
    /// Connections established.
    pub connections: u64,
    /// Connect attempts that failed.
    pub failed_connects: u64,
    /// Connections that ended by error or by the server (not by shutdown).
    pub disconnects: u64,
    /// Text or binary frames received.
    pub frames: u64,
    /// Commands handed to the channel.
    pub commands: u64,
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
    /// Server closed or the connection broke; reconnect.
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

/// Runs the client until shutdown (`shutdown` set to true or its sender dropped), the
/// consumer closes `tx`, `max_connections` is reached, or it gives up reconnecting.
pub async fn run(
    opts: LiveOptions,
    config: &Config,
    tx: mpsc::Sender<FeedItem>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<LiveStats, LiveError> {
    let mut converter = Converter::new(config, opts.convert);
    let mut state = SourceState::new(
        0,
        &ReaderOptions {
            tolerance_ns: opts.tolerance_ns,
            ..ReaderOptions::default()
        },
    );
    let mut stats = LiveStats::default();
    let mut backoff = opts.backoff_initial;
    let mut failed_in_a_row = 0u32;
    let mut ended_connections = 0u64;
    let finish = |mut stats: LiveStats, state: &SourceState, converter: &Converter| {
        stats.feed.add(&state.stats);
        stats.feed.add(converter.stats());
        stats
    };
    loop {
        if *shutdown.borrow() {
            return Ok(finish(stats, &state, &converter));
        }
        let connect = tokio::select! {
            r = tokio_tungstenite::connect_async(opts.url.as_str()) => Some(r),
            _ = shutdown.changed() => None,
        };
        let Some(connect) = connect else {
            return Ok(finish(stats, &state, &converter));
        };
        let mut ws = match connect {
            Ok((ws, _)) => ws,
            Err(e) => {
                stats.failed_connects += 1;
                failed_in_a_row += 1;
                tracing::warn!(url = %opts.url, error = %e, attempt = failed_in_a_row, "connect failed");
                if opts
                    .max_failed_attempts
                    .is_some_and(|m| failed_in_a_row >= m)
                {
                    return Err(LiveError::GaveUp {
                        url: opts.url.clone(),
                        attempts: failed_in_a_row,
                        last: e.to_string(),
                    });
                }
                if wait(backoff, &mut shutdown).await {
                    return Ok(finish(stats, &state, &converter));
                }
                backoff = (backoff * 2).min(opts.backoff_max);
                continue;
            }
        };
        failed_in_a_row = 0;
        stats.connections += 1;
        // A new connection continues no diff chain.
        converter.reset_books();
        let frames_before = stats.frames;
        let mut out = Vec::new();
        let mut ready = Vec::new();
        let ended = loop {
            let frame = tokio::select! {
                f = ws.next() => f,
                _ = shutdown.changed() => break Ended::Stop,
            };
            let text = match frame {
                None => break Ended::Dropped,
                Some(Err(e)) => {
                    tracing::warn!(url = %opts.url, error = %e, "connection lost");
                    break Ended::Dropped;
                }
                Some(Ok(WsMessage::Text(t))) => t.as_str().to_string(),
                Some(Ok(WsMessage::Binary(b))) => match String::from_utf8(b.to_vec()) {
                    Ok(s) => s,
                    Err(_) => {
                        stats.frames += 1;
                        state.stats.lines += 1;
                        state.stats.count_problem(Problem::BadJson, stats.frames);
                        continue;
                    }
                },
                Some(Ok(WsMessage::Close(_))) => break Ended::Dropped,
                // Pings are answered by tungstenite on the next read.
                Some(Ok(_)) => continue,
            };
            stats.frames += 1;
            state.stats.lines += 1;
            let parsed = parse_json(&text).map(|p| (now_ns(), p));
            state.accept(stats.frames, parsed, &mut ready);
            for msg in ready.drain(..) {
                converter.convert(msg, &mut out);
            }
            for item in out.drain(..) {
                if tx.send(item).await.is_err() {
                    return Ok(finish(stats, &state, &converter));
                }
                stats.commands += 1;
            }
        };
        let _ = ws.close(None).await;
        if matches!(ended, Ended::Stop) {
            return Ok(finish(stats, &state, &converter));
        }
        stats.disconnects += 1;
        ended_connections += 1;
        if opts.max_connections.is_some_and(|m| ended_connections >= m) {
            return Ok(finish(stats, &state, &converter));
        }
        if stats.frames > frames_before {
            backoff = opts.backoff_initial;
        }
        if wait(backoff, &mut shutdown).await {
            return Ok(finish(stats, &state, &converter));
        }
        backoff = (backoff * 2).min(opts.backoff_max);
    }
}

/// Sleeps `d` unless shutdown comes first (returns true then).
async fn wait(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        r = shutdown.changed() => r.is_err() || *shutdown.borrow(),
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
