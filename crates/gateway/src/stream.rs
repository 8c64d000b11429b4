//! The stream hub: one tokio task between the bridge and the websocket connections.
//!
//! ```text
//!  bridge thread ── try_send(Batch) ──► hub task ── try_send(frame) ──► connection outboxes
//!  (publish.rs)     bounded queue        topics, depth batching,        (bounded: frames and
//!                                         mark price timers, listen      bytes) ──► writer task
//!                                         keys                                      ──► socket
//! ```
//!
//! The hub owns the subscriptions (`Topic` → connections), the per-user-stream routing
//! (account → connections) and the depth accumulators. It never waits on a connection:
//! every frame goes into the connection's bounded outbox with `try_send`, and a
//! connection whose outbox is full (its client reads slower than the streams produce)
//! is disconnected at once with close code 1008 and a reason; the other connections,
//! the bridge and the sequencer never notice. The bridge never waits on the hub either
//! (`publish.rs`).
//!
//! Depth diffs (`<symbol>@depth[@100ms|@250ms|@500ms]`) are accumulated per instrument
//! and speed: every level a command changed, with its quantity after the command, keyed
//! by (side, price), so a later change of the same level replaces the earlier one. The
//! update ids are sequence numbers (`GET /fapi/v1/depth`'s `lastUpdateId` is the last
//! durable seq). At each flush, one `depthUpdate` carries the levels changed by the
//! commands `pu + 1 ..= u`, where `u` is the last command that changed the book and `pu`
//! the previous event's `u`; `U = pu`. The event therefore applies to any book state
//! from seq `pu` to seq `u` (its levels are absolute), which is what Binance's rule for a
//! first event, `U <= lastUpdateId <= u`, asks: whatever `lastUpdateId` a snapshot taken
//! after subscribing has, some event covers it. Later events chain by `pu` = previous `u`.
//!
//! Must never: block on a connection, reorder one account's or one topic's frames, or
//! send a private frame to a connection of another account.

use crate::publish::{AggTrade, Batch, LevelChange, MarkState, Top};
use crate::shape::{price_str, qty_str};
use perpcore_types::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Limits of the websocket side.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// Open websocket connections (public and user streams together).
    pub max_connections: usize,
    /// Streams one connection may subscribe to (Binance USDⓈ-M: 1024).
    pub max_streams_per_connection: usize,
    /// A connection's outbound buffer: frames queued and not yet written to its socket.
    pub outbound_frames: usize,
    /// … and their bytes. Either bound reached: the client is too slow, disconnected.
    pub outbound_bytes: usize,
    /// Largest message (and frame) a client may send.
    pub max_message_bytes: usize,
    /// Messages a client may send per second (Binance USDⓈ-M: 10); above, disconnected.
    pub max_messages_per_second: u32,
    /// A listen key lives this long after its last POST/PUT (Binance: 60 minutes).
    pub listen_key_ttl: Duration,
    /// How long a connection being closed may take to write its close frame.
    pub close_grace: Duration,
    /// The kernel's send buffer of the public listener's sockets (SO_SNDBUF, set on the
    /// listening socket and inherited by every accepted one; Linux doubles it for its
    /// bookkeeping). With the outbox it bounds what one websocket connection holds;
    /// `None` leaves the operating system's autotuning (Linux: up to `tcp_wmem`'s
    /// maximum, 4 MiB by default, per socket).
    pub socket_send_buffer: Option<usize>,
    /// Batches the bridge may queue for the hub before they are dropped (and every
    /// stream connection closed).
    pub update_queue: usize,
}

impl Default for StreamOptions {
    fn default() -> StreamOptions {
        StreamOptions {
            max_connections: 1024,
            max_streams_per_connection: 1024,
            outbound_frames: 4096,
            outbound_bytes: 1 << 20,
            max_message_bytes: 64 * 1024,
            max_messages_per_second: 10,
            listen_key_ttl: Duration::from_secs(3600),
            close_grace: Duration::from_secs(5),
            socket_send_buffer: Some(256 * 1024),
            update_queue: 16 * 1024,
        }
    }
}

/// State shared by the hub, the bridge's publisher and the HTTP handlers.
pub struct Shared {
    /// Open websocket connections.
    pub connections: AtomicUsize,
    /// Accounts with an open user stream, with how many connections each.
    pub watched: RwLock<BTreeMap<AccountId, usize>>,
    /// Bumped on every change of `watched` (the publisher re-reads it then).
    pub watched_generation: AtomicU64,
    pub listen_keys: Mutex<ListenKeys>,
    /// Batches the bridge dropped because the hub's queue was full.
    pub batches_dropped: AtomicU64,
    /// Connections closed because their outbound buffer was full.
    pub slow_disconnects: AtomicU64,
    /// Frames queued to connections.
    pub frames_queued: AtomicU64,
}

impl Shared {
    pub fn new(opts: &StreamOptions) -> Shared {
        Shared {
            connections: AtomicUsize::new(0),
            watched: RwLock::new(BTreeMap::new()),
            watched_generation: AtomicU64::new(0),
            listen_keys: Mutex::new(ListenKeys::new(opts.listen_key_ttl)),
            batches_dropped: AtomicU64::new(0),
            slow_disconnects: AtomicU64::new(0),
            frames_queued: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> StreamStats {
        StreamStats {
            connections: self.connections.load(Ordering::Relaxed),
            user_streams: self.watched.read().map(|w| w.values().sum()).unwrap_or(0),
            slow_disconnects: self.slow_disconnects.load(Ordering::Relaxed),
            batches_dropped: self.batches_dropped.load(Ordering::Relaxed),
            frames_queued: self.frames_queued.load(Ordering::Relaxed),
        }
    }
}

/// Counters of the websocket side (for tests and metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    pub connections: usize,
    pub user_streams: usize,
    pub slow_disconnects: u64,
    pub batches_dropped: u64,
    pub frames_queued: u64,
}

/// Listen keys: one per account, as on Binance (a POST while one is active returns it).
pub struct ListenKeys {
    ttl: Duration,
    by_key: BTreeMap<String, (AccountId, Instant)>,
    by_account: BTreeMap<AccountId, String>,
}

impl ListenKeys {
    pub fn new(ttl: Duration) -> ListenKeys {
        ListenKeys {
            ttl,
            by_key: BTreeMap::new(),
            by_account: BTreeMap::new(),
        }
    }

    /// The account's active key with its validity extended, or a new one.
    pub fn create_or_extend(&mut self, account: AccountId, now: Instant) -> String {
        if let Some(key) = self.extend(account, now) {
            return key;
        }
        let key = new_listen_key();
        self.by_key.insert(key.clone(), (account, now + self.ttl));
        self.by_account.insert(account, key.clone());
        key
    }

    /// Extend the account's active key; `None` if it has none (Binance -1125).
    pub fn extend(&mut self, account: AccountId, now: Instant) -> Option<String> {
        let key = self.by_account.get(&account)?.clone();
        match self.by_key.get_mut(&key) {
            Some((_, expires)) if *expires > now => {
                *expires = now + self.ttl;
                Some(key)
            }
            _ => None,
        }
    }

    pub fn remove(&mut self, account: AccountId) -> Option<String> {
        let key = self.by_account.remove(&account)?;
        self.by_key.remove(&key);
        Some(key)
    }

    /// The account of a live key.
    pub fn account_of(&self, key: &str, now: Instant) -> Option<AccountId> {
        self.by_key
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(a, _)| *a)
    }

    /// Remove and return the keys that expired by `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let gone: Vec<String> = self
            .by_key
            .iter()
            .filter(|(_, (_, expires))| *expires <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            if let Some((a, _)) = self.by_key.remove(k) {
                self.by_account.remove(&a);
            }
        }
        gone
    }
}

/// 64 random alphanumeric characters (Binance's listen keys look the same), from the
/// operating system's generator: a listen key is a bearer credential for the account's
/// private stream.
fn new_listen_key() -> String {
    use rand::RngCore as _;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 64];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    // 248 = 4 × 62: bytes above are redrawn, so every character is equally likely.
    bytes
        .iter()
        .map(|&b| {
            let mut b = b;
            while b >= 248 {
                let mut one = [0u8; 1];
                rand::rngs::OsRng.fill_bytes(&mut one);
                b = one[0];
            }
            ALPHABET[(b % 62) as usize] as char
        })
        .collect()
}

/// Whether `s` has the shape of a listen key.
pub fn looks_like_listen_key(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Depth diff speeds: `@depth@100ms`, `@depth` (= 250 ms), `@depth@500ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DepthSpeed {
    Ms100,
    Ms250,
    Ms500,
}

const SPEEDS: [DepthSpeed; 3] = [DepthSpeed::Ms100, DepthSpeed::Ms250, DepthSpeed::Ms500];

/// A public stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Topic {
    Depth(InstrumentId, DepthSpeed),
    BookTicker(InstrumentId),
    AggTrade(InstrumentId),
    /// Every 1 s (`true`) or 3 s.
    MarkPrice(InstrumentId, bool),
}

impl Topic {
    /// Parse a stream name (`btcusdt@depth@100ms`); the symbol is matched without regard
    /// to case (Binance's are lower case), USDⓈ-M (linear) instruments only.
    pub fn parse(config: &Config, name: &str) -> Option<Topic> {
        let (symbol, stream) = name.split_once('@')?;
        let spec = crate::shape::usdm_instruments(config)
            .find(|s| s.symbol.eq_ignore_ascii_case(symbol))?;
        let i = spec.id;
        Some(match stream {
            "depth" | "depth@250ms" => Topic::Depth(i, DepthSpeed::Ms250),
            "depth@100ms" => Topic::Depth(i, DepthSpeed::Ms100),
            "depth@500ms" => Topic::Depth(i, DepthSpeed::Ms500),
            "bookTicker" => Topic::BookTicker(i),
            "aggTrade" => Topic::AggTrade(i),
            "markPrice" | "markPrice@3s" => Topic::MarkPrice(i, false),
            "markPrice@1s" => Topic::MarkPrice(i, true),
            _ => return None,
        })
    }

    /// The canonical stream name (what LIST_SUBSCRIPTIONS and combined streams show).
    pub fn name(self, config: &Config) -> String {
        let symbol = |i: InstrumentId| config.instruments[i.0 as usize].symbol.to_lowercase();
        match self {
            Topic::Depth(i, DepthSpeed::Ms100) => format!("{}@depth@100ms", symbol(i)),
            Topic::Depth(i, DepthSpeed::Ms250) => format!("{}@depth", symbol(i)),
            Topic::Depth(i, DepthSpeed::Ms500) => format!("{}@depth@500ms", symbol(i)),
            Topic::BookTicker(i) => format!("{}@bookTicker", symbol(i)),
            Topic::AggTrade(i) => format!("{}@aggTrade", symbol(i)),
            Topic::MarkPrice(i, true) => format!("{}@markPrice@1s", symbol(i)),
            Topic::MarkPrice(i, false) => format!("{}@markPrice", symbol(i)),
        }
    }
}

/// What a connection's writer gets.
#[derive(Debug)]
pub enum Out {
    Text(Utf8Bytes),
    /// Send this close frame and end the connection.
    Close(CloseFrame),
}

pub fn close_frame(code: CloseCode, reason: &str) -> CloseFrame {
    // A close frame's reason is at most 123 bytes.
    let mut r = reason.to_string();
    while r.len() > 123 {
        r.pop();
    }
    CloseFrame {
        code,
        reason: r.into(),
    }
}

/// A connection's bounded outbound buffer (the sending side).
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Out>,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// The buffer is full: the client is too slow.
    Full,
    Closed,
}

impl Outbox {
    /// An outbox, its receiving end and the queued byte count, from which the receiver
    /// subtracts each frame it takes.
    pub fn new(frames: usize, max_bytes: usize) -> (Outbox, mpsc::Receiver<Out>, Arc<AtomicUsize>) {
        let (tx, rx) = mpsc::channel(frames.max(1));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        (
            Outbox {
                tx,
                queued_bytes: queued_bytes.clone(),
                max_bytes,
            },
            rx,
            queued_bytes,
        )
    }

    pub fn push(&self, frame: &Utf8Bytes) -> Push {
        let len = frame.len();
        if self.queued_bytes.load(Ordering::Acquire) + len > self.max_bytes {
            return Push::Full;
        }
        match self.tx.try_send(Out::Text(frame.clone())) {
            Ok(()) => {
                self.queued_bytes.fetch_add(len, Ordering::AcqRel);
                Push::Queued
            }
            Err(mpsc::error::TrySendError::Full(_)) => Push::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Push::Closed,
        }
    }

    /// Queue a close frame (best effort: a full buffer drops it).
    pub fn close(&self, frame: CloseFrame) {
        let _ = self.tx.try_send(Out::Close(frame));
    }
}

/// A method frame, parsed and checked by the connection.
#[derive(Debug)]
pub enum Method {
    Subscribe(Vec<Topic>),
    Unsubscribe(Vec<Topic>),
    List,
    SetCombined(bool),
    GetCombined,
}

/// What connections and HTTP handlers tell the hub.
pub enum Control {
    Open {
        id: u64,
        out: Outbox,
        kill: oneshot::Sender<CloseFrame>,
        combined: bool,
        /// A user stream: the account and the listen key it connected with.
        user: Option<(AccountId, String)>,
        topics: Vec<Topic>,
        /// Answered once the connection is registered (its streams flow from then on).
        registered: oneshot::Sender<()>,
    },
    Method {
        id: u64,
        method: Method,
        request_id: u64,
    },
    Closed {
        id: u64,
    },
    /// The listen key was deleted: close its connections.
    CloseUser {
        key: String,
    },
}

struct Conn {
    out: Outbox,
    kill: Option<oneshot::Sender<CloseFrame>>,
    topics: BTreeSet<Topic>,
    combined: bool,
    user: Option<(AccountId, String)>,
}

#[derive(Default)]
struct DepthAcc {
    /// The `u` of the previous event (the chain's base).
    pu: u64,
    /// The last command whose changes are pending.
    u: u64,
    ts_ms: u64,
    bids: BTreeMap<PriceTicks, QtyLots>,
    asks: BTreeMap<PriceTicks, QtyLots>,
}

impl DepthAcc {
    fn is_empty(&self) -> bool {
        self.bids.is_empty() && self.asks.is_empty()
    }
    fn clear(&mut self) {
        self.bids.clear();
        self.asks.clear();
    }
}

/// The hub's state (run by [`run`]).
pub struct Hub {
    config: Arc<Config>,
    shared: Arc<Shared>,
    opts: StreamOptions,
    conns: BTreeMap<u64, Conn>,
    subs: BTreeMap<Topic, BTreeSet<u64>>,
    users: BTreeMap<AccountId, BTreeSet<u64>>,
    depth: BTreeMap<(InstrumentId, DepthSpeed), DepthAcc>,
    marks: Vec<MarkState>,
}

impl Hub {
    /// A hub whose depth chains start at `start_seq` (the view's last seq).
    pub fn new(
        config: Arc<Config>,
        shared: Arc<Shared>,
        opts: StreamOptions,
        start_seq: u64,
    ) -> Hub {
        let n = config.instruments.len();
        let mut depth = BTreeMap::new();
        for i in 0..n {
            for s in SPEEDS {
                depth.insert(
                    (InstrumentId(i as u32), s),
                    DepthAcc {
                        pu: start_seq,
                        u: start_seq,
                        ..DepthAcc::default()
                    },
                );
            }
        }
        Hub {
            config,
            shared,
            opts,
            conns: BTreeMap::new(),
            subs: BTreeMap::new(),
            users: BTreeMap::new(),
            depth,
            marks: vec![MarkState::default(); n],
        }
    }

    fn symbol(&self, i: InstrumentId) -> &InstrumentSpec {
        &self.config.instruments[i.0 as usize]
    }

    fn has_subscribers(&self, t: Topic) -> bool {
        self.subs.get(&t).is_some_and(|s| !s.is_empty())
    }

    /// Queue `payload` to every subscriber of `topic`; slow subscribers are dropped.
    fn publish(&mut self, topic: Topic, payload: String) {
        let Some(ids) = self.subs.get(&topic) else {
            return;
        };
        let name = topic.name(&self.config);
        let raw: Utf8Bytes = payload.clone().into();
        let mut combined: Option<Utf8Bytes> = None;
        let mut slow = Vec::new();
        for id in ids {
            let Some(c) = self.conns.get(id) else {
                continue;
            };
            let frame = if c.combined {
                combined.get_or_insert_with(|| wrap(&name, &payload).into())
            } else {
                &raw
            };
            match c.out.push(frame) {
                Push::Queued => {
                    self.shared.frames_queued.fetch_add(1, Ordering::Relaxed);
                }
                Push::Full | Push::Closed => slow.push(*id),
            }
        }
        for id in slow {
            self.slow(id);
        }
    }

    /// A private frame to the account's user-stream connections.
    fn publish_user(&mut self, account: AccountId, payload: &str) {
        let Some(ids) = self.users.get(&account) else {
            return;
        };
        let raw: Utf8Bytes = payload.to_string().into();
        let mut slow = Vec::new();
        for id in ids {
            let Some(c) = self.conns.get(id) else {
                continue;
            };
            let frame: Utf8Bytes = match (&c.user, c.combined) {
                (Some((_, key)), true) => wrap(key, payload).into(),
                _ => raw.clone(),
            };
            match c.out.push(&frame) {
                Push::Queued => {
                    self.shared.frames_queued.fetch_add(1, Ordering::Relaxed);
                }
                Push::Full | Push::Closed => slow.push(*id),
            }
        }
        for id in slow {
            self.slow(id);
        }
    }

    fn slow(&mut self, id: u64) {
        if self.conns.contains_key(&id) {
            self.shared.slow_disconnects.fetch_add(1, Ordering::Relaxed);
            self.kill(
                id,
                close_frame(
                    CloseCode::Policy,
                    "slow consumer: outbound buffer full, disconnected",
                ),
            );
        }
    }

    /// Forget a connection; its writer sends what is queued, then `frame` (or closes at
    /// once when the outbox is full).
    fn close(&mut self, id: u64, frame: CloseFrame) {
        if let Some(mut c) = self.remove(id) {
            if let Err(mpsc::error::TrySendError::Full(Out::Close(frame))) =
                c.out.tx.try_send(Out::Close(frame))
            {
                if let Some(k) = c.kill.take() {
                    let _ = k.send(frame);
                }
            }
        }
    }

    /// Forget a connection and tell its writer to close with `frame` at once (frames
    /// still queued are dropped).
    fn kill(&mut self, id: u64, frame: CloseFrame) {
        if let Some(mut c) = self.remove(id) {
            if let Some(k) = c.kill.take() {
                let _ = k.send(frame);
            }
        }
    }

    fn remove(&mut self, id: u64) -> Option<Conn> {
        let c = self.conns.remove(&id)?;
        for t in &c.topics {
            if let Some(s) = self.subs.get_mut(t) {
                s.remove(&id);
                if s.is_empty() {
                    self.subs.remove(t);
                }
            }
        }
        if let Some((account, _)) = &c.user {
            if let Some(s) = self.users.get_mut(account) {
                s.remove(&id);
                if s.is_empty() {
                    self.users.remove(account);
                }
            }
            self.set_watched(*account, -1);
        }
        Some(c)
    }

    fn set_watched(&self, account: AccountId, delta: i64) {
        if let Ok(mut w) = self.shared.watched.write() {
            let n = w.entry(account).or_insert(0);
            *n = n.saturating_add_signed(delta as isize);
            if *n == 0 {
                w.remove(&account);
            }
        }
        self.shared
            .watched_generation
            .fetch_add(1, Ordering::AcqRel);
    }

    pub fn close_all(&mut self, frame: CloseFrame) {
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            self.kill(id, frame.clone());
        }
    }

    fn reply(&mut self, id: u64, v: serde_json::Value) {
        if let Some(c) = self.conns.get(&id) {
            if c.out.push(&v.to_string().into()) != Push::Queued {
                self.slow(id);
            }
        }
    }

    pub fn on_control(&mut self, c: Control) {
        match c {
            Control::Open {
                id,
                out,
                kill,
                combined,
                user,
                topics,
                registered,
            } => {
                if let Some((account, _)) = &user {
                    self.users.entry(*account).or_default().insert(id);
                    self.set_watched(*account, 1);
                }
                for t in &topics {
                    self.subs.entry(*t).or_default().insert(id);
                }
                self.conns.insert(
                    id,
                    Conn {
                        out,
                        kill: Some(kill),
                        topics: topics.into_iter().collect(),
                        combined,
                        user,
                    },
                );
                let _ = registered.send(());
            }
            Control::Closed { id } => {
                self.remove(id);
            }
            Control::CloseUser { key } => {
                let ids: Vec<u64> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.user.as_ref().is_some_and(|(_, k)| *k == key))
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    self.close(id, close_frame(CloseCode::Normal, "listen key deleted"));
                }
            }
            Control::Method {
                id,
                method,
                request_id,
            } => self.on_method(id, method, request_id),
        }
    }

    fn on_method(&mut self, id: u64, method: Method, request_id: u64) {
        let max = self.opts.max_streams_per_connection;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let reply = match method {
            Method::Subscribe(topics) => {
                let new: BTreeSet<Topic> = topics
                    .into_iter()
                    .filter(|t| !c.topics.contains(t))
                    .collect();
                if c.topics.len() + new.len() > max {
                    json!({"code": 2, "msg": format!("Invalid request: at most {max} streams per connection"), "id": request_id})
                } else {
                    for t in new {
                        c.topics.insert(t);
                        self.subs.entry(t).or_default().insert(id);
                    }
                    json!({"result": null, "id": request_id})
                }
            }
            Method::Unsubscribe(topics) => {
                for t in topics {
                    if c.topics.remove(&t) {
                        if let Some(s) = self.subs.get_mut(&t) {
                            s.remove(&id);
                            if s.is_empty() {
                                self.subs.remove(&t);
                            }
                        }
                    }
                }
                json!({"result": null, "id": request_id})
            }
            Method::List => {
                let names: Vec<String> = c.topics.iter().map(|t| t.name(&self.config)).collect();
                json!({"result": names, "id": request_id})
            }
            Method::SetCombined(b) => {
                c.combined = b;
                json!({"result": null, "id": request_id})
            }
            Method::GetCombined => json!({"result": c.combined, "id": request_id}),
        };
        self.reply(id, reply);
    }

    pub fn on_batch(&mut self, batch: Batch) {
        if batch.lost_before {
            // Stream data was dropped: no connection can trust its chain any more.
            self.close_all(close_frame(
                CloseCode::Again,
                "server overloaded: stream data lost, reconnect",
            ));
            if let Some(first) = batch.updates.first() {
                let base = first.seq.saturating_sub(1);
                for acc in self.depth.values_mut() {
                    acc.clear();
                    acc.pu = base;
                    acc.u = base;
                }
            }
        }
        for u in batch.updates {
            for l in &u.levels {
                self.on_level(l, u.seq, u.ts_ms);
            }
            for (i, top) in &u.tops {
                if self.has_subscribers(Topic::BookTicker(*i)) {
                    let payload = self.book_ticker(*i, top, u.seq, u.ts_ms);
                    self.publish(Topic::BookTicker(*i), payload);
                }
            }
            for t in &u.trades {
                if self.has_subscribers(Topic::AggTrade(t.instrument)) {
                    let payload = self.agg_trade(t, u.ts_ms);
                    self.publish(Topic::AggTrade(t.instrument), payload);
                }
            }
            for (i, m) in &u.marks {
                self.marks[i.0 as usize] = *m;
            }
            for (account, frame) in &u.user {
                self.publish_user(*account, frame);
            }
        }
    }

    fn on_level(&mut self, l: &LevelChange, seq: u64, ts_ms: u64) {
        for s in SPEEDS {
            if let Some(acc) = self.depth.get_mut(&(l.instrument, s)) {
                match l.side {
                    Side::Buy => acc.bids.insert(l.price, l.qty),
                    Side::Sell => acc.asks.insert(l.price, l.qty),
                };
                acc.u = seq;
                acc.ts_ms = ts_ms;
            }
        }
    }

    /// Emit the pending depth diffs of `speed`.
    pub fn flush_depth(&mut self, speed: DepthSpeed) {
        for i in 0..self.config.instruments.len() {
            let i = InstrumentId(i as u32);
            let topic = Topic::Depth(i, speed);
            let subscribed = self.has_subscribers(topic);
            let Some(acc) = self.depth.get_mut(&(i, speed)) else {
                continue;
            };
            if acc.is_empty() {
                continue;
            }
            let bids = std::mem::take(&mut acc.bids);
            let asks = std::mem::take(&mut acc.asks);
            let (pu, u, ts_ms) = (acc.pu, acc.u, acc.ts_ms);
            acc.pu = acc.u;
            if !subscribed {
                continue;
            }
            let spec = self.symbol(i);
            let level = |(p, q): (&PriceTicks, &QtyLots)| {
                json!([
                    price_str(spec, spec.price_of(*p)),
                    qty_str(spec, spec.qty_of(*q))
                ])
            };
            // Bids best (highest) first, asks best (lowest) first.
            let bids: Vec<_> = bids.iter().rev().map(level).collect();
            let asks: Vec<_> = asks.iter().map(level).collect();
            let payload = json!({
                "e": "depthUpdate",
                "E": crate::http::now_ms(),
                "T": ts_ms,
                "s": spec.symbol,
                "U": pu,
                "u": u,
                "pu": pu,
                "b": bids,
                "a": asks,
            })
            .to_string();
            self.publish(topic, payload);
        }
    }

    /// Emit every instrument's mark price frame to the subscribers of that period.
    pub fn emit_marks(&mut self, every_1s: bool) {
        let now = crate::http::now_ms();
        for i in 0..self.config.instruments.len() {
            let i = InstrumentId(i as u32);
            let topic = Topic::MarkPrice(i, every_1s);
            let m = self.marks[i.0 as usize];
            let Some(mark) = m.mark else { continue };
            if !self.has_subscribers(topic) {
                continue;
            }
            let opt = |p: Option<String>| p.unwrap_or_default();
            let payload = json!({
                "e": "markPriceUpdate",
                "E": now,
                "s": self.symbol(i).symbol,
                "p": crate::publish::fixed8(mark),
                "i": opt(m.index.map(crate::publish::fixed8)),
                "P": "",
                "r": opt(m.funding_rate.map(|r| format_fixed(r.raw() as i128, Rate::DECIMALS, 8))),
                "T": m.next_funding_ms,
            })
            .to_string();
            self.publish(topic, payload);
        }
    }

    /// Close the user streams whose listen key expired (after a `listenKeyExpired` event).
    pub fn expire_listen_keys(&mut self, now: Instant) {
        let expired = match self.shared.listen_keys.lock() {
            Ok(mut k) => k.expire(now),
            Err(_) => return,
        };
        for key in expired {
            let ids: Vec<u64> = self
                .conns
                .iter()
                .filter(|(_, c)| c.user.as_ref().is_some_and(|(_, k)| *k == key))
                .map(|(id, _)| *id)
                .collect();
            let event =
                json!({"e": "listenKeyExpired", "E": crate::http::now_ms(), "listenKey": key})
                    .to_string();
            for id in ids {
                if let Some(c) = self.conns.get(&id) {
                    let frame: Utf8Bytes = if c.combined {
                        wrap(&key, &event).into()
                    } else {
                        event.clone().into()
                    };
                    let _ = c.out.push(&frame);
                }
                self.close(id, close_frame(CloseCode::Normal, "listen key expired"));
            }
        }
    }

    fn book_ticker(&self, i: InstrumentId, top: &Top, seq: u64, ts_ms: u64) -> String {
        let spec = self.symbol(i);
        let side = |l: Option<(PriceTicks, QtyLots)>| match l {
            Some((p, q)) => (
                price_str(spec, spec.price_of(p)),
                qty_str(spec, spec.qty_of(q)),
            ),
            None => (price_str(spec, Price::ZERO), qty_str(spec, Qty::ZERO)),
        };
        let (b, bq) = side(top.bid);
        let (a, aq) = side(top.ask);
        json!({
            "e": "bookTicker",
            "u": seq,
            "E": crate::http::now_ms(),
            "T": ts_ms,
            "s": spec.symbol,
            "b": b,
            "B": bq,
            "a": a,
            "A": aq,
        })
        .to_string()
    }

    fn agg_trade(&self, t: &AggTrade, ts_ms: u64) -> String {
        let spec = self.symbol(t.instrument);
        json!({
            "e": "aggTrade",
            "E": crate::http::now_ms(),
            "s": spec.symbol,
            "a": t.first_id,
            "p": price_str(spec, t.price),
            "q": qty_str(spec, t.qty),
            "f": t.first_id,
            "l": t.last_id,
            "T": ts_ms,
            "m": t.buyer_maker,
        })
        .to_string()
    }
}

/// Binance's combined-stream envelope.
fn wrap(stream: &str, payload: &str) -> String {
    format!(
        "{{\"stream\":{},\"data\":{}}}",
        serde_json::Value::String(stream.to_string()),
        payload
    )
}

/// Run the hub until `stop` fires or the bridge's queue closes; then close every
/// connection (code 1001).
pub async fn run(
    mut hub: Hub,
    mut batches: mpsc::Receiver<Batch>,
    mut control: mpsc::Receiver<Control>,
    mut stop: oneshot::Receiver<()>,
) {
    // 50 ms: the greatest common divisor of the depth speeds and the mark periods.
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            b = batches.recv() => match b {
                Some(b) => hub.on_batch(b),
                None => break,
            },
            c = control.recv() => match c {
                Some(c) => hub.on_control(c),
                None => break,
            },
            _ = tick.tick() => {
                n += 1;
                if n.is_multiple_of(2) {
                    hub.flush_depth(DepthSpeed::Ms100);
                }
                if n.is_multiple_of(5) {
                    hub.flush_depth(DepthSpeed::Ms250);
                }
                if n.is_multiple_of(10) {
                    hub.flush_depth(DepthSpeed::Ms500);
                }
                if n.is_multiple_of(20) {
                    hub.emit_marks(true);
                    hub.expire_listen_keys(Instant::now());
                }
                if n.is_multiple_of(60) {
                    hub.emit_marks(false);
                }
            }
        }
    }
    hub.close_all(close_frame(CloseCode::Away, "server shutting down"));
}
