//! A streaming reader of one recorded file: lines → [`Message`]s, in file order.
//!
//! Owns per-source concerns: line numbers, the exchange-time watermark with the
//! out-of-order and forward-jump rules, attributing a symbol-less depth snapshot to its
//! symbol, and counting every line it cannot use by [`Problem`] kind. Must never stop on a
//! bad line, hold more than one line and a few pending messages in memory, or reorder
//! messages (ordering across files is the merge's job).
//!
//! **Out-of-order rule.** The recorder writes messages in local receive order; exchange
//! times of different streams on one connection interleave slightly out of order (up to
//! ~280 ms in the bundled captures). A message whose exchange time is more than
//! `tolerance_ns` (default 1 s) behind the watermark (the latest trusted exchange time of
//! the same source) is dropped and counted as [`Problem::OutOfOrder`]; anything within
//! the tolerance passes in file order.
//!
//! **Forward-jump rule.** One corrupt timestamp must not move the watermark: a single
//! flipped digit (+81 days) used to make every later line "out of order". A message more
//! than `max_jump_ns` (default 5 s; the largest forward step in the bundled captures is
//! 1 s, the mark stream's cadence) past the watermark is *held*, and the next message
//! with a time decides:
//!
//! - if its time agrees with the held one (no more than `tolerance_ns` behind it and no
//!   more than `max_jump_ns` past it), the jump is real (a recorder reconnecting after
//!   minutes, a quiet market): the held message is released, the watermark moves to it,
//!   and nothing is lost;
//! - otherwise the held message is counted as [`Problem::TimeJump`] and skipped, the
//!   watermark stays where it was, and the deciding message is judged against it.
//!
//! The first timed message of a source has no watermark to be judged against, so it is
//! held the same way: a second message more than the tolerance behind it makes it the
//! time jump (a bogus first line must not make the rest of the file out of order); a
//! second message that agrees with it, or jumps past it, lets it stand. A message without
//! a time of its own (a spot REST snapshot) decides nothing: it takes the watermark, a
//! held first message stands before it and a held jump is counted. At the end of input a
//! held jump is counted (nothing confirmed it) and a held first message stands. The cost
//! of a real jump is that its first message waits for the next one; a corrupt timestamp
//! repeated on two consecutive lines is taken as real. The local receive stamps are not
//! used: their unit differs between recordings (µs in 2023, ns in 2024).
//! The live client sets `trust_first`: the first message of each connection is trusted
//! rather than held (holding would delay the first data of every connection), and the
//! watermark starts again with each connection.
//!
//! **Snapshot attribution.** USDⓈ-M REST snapshots carry no symbol. One goes to, in
//! order: `symbol_hint` if given; else the one symbol its source has named so far; if the
//! source has named none yet, the first symbol it names next (the snapshot waits for it).
//! If the source has named two or more symbols, the snapshot cannot be attributed: it is
//! counted as [`Problem::SnapshotWithoutSymbol`] and dropped (update ids do not tell the
//! symbols apart: Binance numbers the diffs of all symbols of a market from one
//! sequence). A snapshot still waiting at the end of input is counted the same way. A
//! snapshot at the very top of a multi-symbol file is given to the first symbol named
//! after it: give `symbol_hint` for such files.

use crate::lines::{open_maybe_gzip, LineRead, LineReader, DEFAULT_MAX_LINE};
use crate::message::{parse_line, Body, Parsed};
use crate::stats::{FeedStats, Problem};
use crate::FeedError;
use std::io::BufRead;
use std::path::Path;

/// Default out-of-order tolerance: 1 s of exchange time.
pub const DEFAULT_TOLERANCE_NS: u64 = 1_000_000_000;

/// Default bound on a forward jump of exchange time: 5 s (see the module docs).
pub const DEFAULT_MAX_JUMP_NS: u64 = 5_000_000_000;

/// A message read from a source, with where and when it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Index of the source in the merge (0 for a lone reader).
    pub source: u16,
    /// 1-based line number in its source.
    pub line: u64,
    /// The recorder's local receive stamp (unit as recorded; only for order).
    pub local_ts: u64,
    /// Exchange event time, ns since the epoch.
    pub exchange_ns: u64,
    pub body: Body,
}

/// Reader tuning.
#[derive(Clone, Debug)]
pub struct ReaderOptions {
    /// Longest line kept; longer ones are counted and skipped.
    pub max_line: usize,
    /// How far behind the watermark a message may be (see the module docs).
    pub tolerance_ns: u64,
    /// How far past the watermark a message may jump before it needs the next message
    /// to confirm it (see the module docs); `u64::MAX`: no bound.
    pub max_jump_ns: u64,
    /// Trust the first timed message of the source (and of each restart) instead of
    /// holding it for the next one: for a live connection, where holding would delay the
    /// first data and a bogus first time costs only until the next reconnect.
    pub trust_first: bool,
    /// Symbol for depth snapshots that carry none (the operator knows the file). Without
    /// it a symbol-less snapshot goes to the one symbol its source names, or is counted
    /// (see the module docs).
    pub symbol_hint: Option<String>,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        Self {
            max_line: DEFAULT_MAX_LINE,
            tolerance_ns: DEFAULT_TOLERANCE_NS,
            max_jump_ns: DEFAULT_MAX_JUMP_NS,
            trust_first: false,
            symbol_hint: None,
        }
    }
}

/// The symbols a source has named so far (only "none, one, more" matters).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Named {
    None,
    One(String),
    Many,
}

/// A timed message not yet trusted: the first of its source, or one that jumped past
/// the bound. The next timed message decides.
#[derive(Debug)]
struct Held {
    msg: Message,
    first: bool,
}

/// The per-source rules shared by the file reader and the live client: the exchange-time
/// watermark, the out-of-order drop and the forward-jump hold, message counting, and
/// symbol attribution of symbol-less snapshots.
#[derive(Debug)]
pub(crate) struct SourceState {
    source: u16,
    tolerance_ns: u64,
    max_jump_ns: u64,
    trust_first: bool,
    symbol_hint: Option<String>,
    pub(crate) stats: FeedStats,
    /// Latest trusted exchange time (`None` before the first).
    watermark_ns: Option<u64>,
    held: Option<Held>,
    named: Named,
    /// A symbol-less snapshot read before the source named any symbol.
    pending_snapshot: Option<Message>,
}

impl SourceState {
    pub(crate) fn new(source: u16, opts: &ReaderOptions) -> Self {
        Self {
            source,
            tolerance_ns: opts.tolerance_ns,
            max_jump_ns: opts.max_jump_ns,
            trust_first: opts.trust_first,
            symbol_hint: opts.symbol_hint.clone(),
            stats: FeedStats::default(),
            watermark_ns: None,
            held: None,
            named: Named::None,
            pending_snapshot: None,
        }
    }

    /// Takes one parsed message (or the problem parsing it) and appends what is ready to
    /// `out`, in source order: nothing (counted, or held), the message, or held messages
    /// released before it.
    pub(crate) fn accept(
        &mut self,
        line: u64,
        parsed: Result<(u64, Parsed), Problem>,
        out: &mut Vec<Message>,
    ) {
        let (local_ts, parsed) = match parsed {
            Ok(v) => v,
            Err(p) => {
                self.stats.count_problem(p, line);
                return;
            }
        };
        let Some(t) = parsed.exchange_ns else {
            // No time of its own (a spot REST snapshot): it neither confirms nor refutes
            // a held time. A held first message stands (nothing contradicts it), a held
            // jump does not (nothing confirmed it).
            if let Some(h) = self.held.take() {
                if h.first {
                    self.trust(h.msg, out);
                } else {
                    self.stats.count_problem(Problem::TimeJump, h.msg.line);
                }
            }
            let msg = self.message(line, local_ts, self.watermark_ns.unwrap_or(0), parsed);
            self.release(msg, out);
            return;
        };
        let msg = self.message(line, local_ts, t, parsed);
        if let Some(h) = self.held.take() {
            let th = h.msg.exchange_ns;
            let agrees = t.saturating_add(self.tolerance_ns) >= th
                && t <= th.saturating_add(self.max_jump_ns);
            if agrees || (h.first && t > th) {
                // Confirmed; or a first message that `t` only jumps away from (then `t`
                // is the one that needs confirming, below).
                self.trust(h.msg, out);
            } else {
                self.stats.count_problem(Problem::TimeJump, h.msg.line);
                if h.first {
                    // `msg` is now the first: it waits for the next time in turn.
                    self.held = Some(Held { msg, first: true });
                    return;
                }
            }
        }
        match self.watermark_ns {
            None if self.trust_first => self.trust(msg, out),
            None => self.held = Some(Held { msg, first: true }),
            Some(w) if t.saturating_add(self.tolerance_ns) < w => {
                self.stats.count_problem(Problem::OutOfOrder, line);
            }
            Some(w) if t > w.saturating_add(self.max_jump_ns) => {
                self.held = Some(Held { msg, first: false });
            }
            Some(_) => self.trust(msg, out),
        }
    }

    fn message(&self, line: u64, local_ts: u64, exchange_ns: u64, parsed: Parsed) -> Message {
        Message {
            source: self.source,
            line,
            local_ts,
            exchange_ns,
            body: parsed.body,
        }
    }

    /// A timed message whose time is trusted: it moves the watermark and is released.
    fn trust(&mut self, msg: Message, out: &mut Vec<Message>) {
        let w = self.watermark_ns.unwrap_or(0).max(msg.exchange_ns);
        self.watermark_ns = Some(w);
        self.release(msg, out);
    }

    /// Counts the message and releases it, attributing a symbol-less snapshot first.
    fn release(&mut self, mut msg: Message, out: &mut Vec<Message>) {
        self.stats.count_message(msg.body.kind());
        if let Body::Snapshot(s) = &mut msg.body {
            if s.symbol.is_none() {
                s.symbol = match (&self.symbol_hint, &self.named) {
                    (Some(hint), _) => Some(hint.clone()),
                    (None, Named::One(sym)) => Some(sym.clone()),
                    (None, Named::Many) => {
                        // Two or more symbols in this source: whose it is cannot be told.
                        self.stats
                            .count_problem(Problem::SnapshotWithoutSymbol, msg.line);
                        return;
                    }
                    (None, Named::None) => {
                        // Wait for the first message that names a symbol; a second
                        // symbol-less snapshot replaces (and counts) the first.
                        if let Some(old) = self.pending_snapshot.replace(msg) {
                            self.stats
                                .count_problem(Problem::SnapshotWithoutSymbol, old.line);
                        }
                        return;
                    }
                };
            }
        }
        if let Some(sym) = msg.body.symbol() {
            self.named = match std::mem::replace(&mut self.named, Named::Many) {
                Named::None => Named::One(sym.to_string()),
                Named::One(s) if s == sym => Named::One(s),
                _ => Named::Many,
            };
            if let Some(mut snap) = self.pending_snapshot.take() {
                // The first symbol the source names.
                if let Body::Snapshot(s) = &mut snap.body {
                    s.symbol = Some(sym.to_string());
                }
                out.push(snap);
            }
        }
        out.push(msg);
    }

    /// End of input: a held first message stands (nothing contradicts it), a held jump
    /// is counted and dropped (nothing confirmed it), and a snapshot still waiting for a
    /// symbol is counted and dropped.
    pub(crate) fn finish(&mut self, out: &mut Vec<Message>) {
        if let Some(h) = self.held.take() {
            if h.first {
                self.trust(h.msg, out);
            } else {
                self.stats.count_problem(Problem::TimeJump, h.msg.line);
            }
        }
        if let Some(snap) = self.pending_snapshot.take() {
            self.stats
                .count_problem(Problem::SnapshotWithoutSymbol, snap.line);
        }
    }

    /// A new connection of a live source: what the old one left held is settled as at
    /// the end of input, and the watermark starts again (the new stream's times are
    /// judged among themselves).
    pub(crate) fn restart(&mut self, out: &mut Vec<Message>) {
        self.finish(out);
        self.watermark_ns = None;
    }
}

/// Streams the messages of one file (plain or gzip).
pub struct Reader {
    name: String,
    lines: LineReader<Box<dyn BufRead + Send>>,
    buf: Vec<u8>,
    state: SourceState,
    line_no: u64,
    /// Messages released and not yet returned (in source order; at most a held message,
    /// a pending snapshot and the current one).
    ready: std::collections::VecDeque<Message>,
    scratch: Vec<Message>,
    done: bool,
    finished: bool,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("name", &self.name)
            .field("line", &self.line_no)
            .finish()
    }
}

impl Reader {
    /// Opens a recorded file (gzip by magic bytes, else plain).
    pub fn open(path: &Path, source: u16, opts: ReaderOptions) -> Result<Reader, FeedError> {
        let r = open_maybe_gzip(path).map_err(|e| FeedError::Open {
            path: path.display().to_string(),
            source: e,
        })?;
        Ok(Self::from_bufread(
            path.display().to_string(),
            r,
            source,
            opts,
        ))
    }

    /// Reads from any buffered reader (already decompressed, or see
    /// [`crate::lines::maybe_gzip`]).
    pub fn from_bufread(
        name: String,
        r: Box<dyn BufRead + Send>,
        source: u16,
        opts: ReaderOptions,
    ) -> Reader {
        Reader {
            name,
            lines: LineReader::new(r, opts.max_line),
            buf: Vec::new(),
            state: SourceState::new(source, &opts),
            line_no: 0,
            ready: std::collections::VecDeque::new(),
            scratch: Vec::new(),
            done: false,
            finished: false,
        }
    }

    /// Reads from text in memory (tests).
    pub fn from_text(name: &str, text: String, source: u16, opts: ReaderOptions) -> Reader {
        let r: Box<dyn BufRead + Send> = Box::new(std::io::Cursor::new(text.into_bytes()));
        Self::from_bufread(name.to_string(), r, source, opts)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    /// What this source has read and refused so far.
    pub fn stats(&self) -> &FeedStats {
        &self.state.stats
    }
    /// Lines read so far.
    pub fn lines_read(&self) -> u64 {
        self.line_no
    }

    fn next_message(&mut self) -> Option<Message> {
        loop {
            if let Some(m) = self.ready.pop_front() {
                return Some(m);
            }
            if self.done {
                if self.finished {
                    return None;
                }
                self.finished = true;
                self.state.finish(&mut self.scratch);
                self.ready.extend(self.scratch.drain(..));
                continue;
            }
            let step = match self.lines.next_line(&mut self.buf) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(file = %self.name, line = self.line_no + 1, error = %e,
                        "read error: skipping the rest of this file");
                    self.state
                        .stats
                        .count_problem(Problem::ReadError, self.line_no + 1);
                    self.done = true;
                    continue;
                }
            };
            match step {
                LineRead::Eof => {
                    self.done = true;
                    continue;
                }
                LineRead::TooLong => {
                    self.line_no += 1;
                    self.state.stats.lines += 1;
                    self.state
                        .stats
                        .count_problem(Problem::LineTooLong, self.line_no);
                    continue;
                }
                LineRead::Line => self.line_no += 1,
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                // Blank lines (a trailing newline at the end of a capture) are not data.
                continue;
            }
            self.state.stats.lines += 1;
            let parsed = match std::str::from_utf8(&self.buf) {
                Ok(text) => parse_line(text),
                Err(_) => Err(Problem::BadJson),
            };
            self.state.accept(self.line_no, parsed, &mut self.scratch);
            self.ready.extend(self.scratch.drain(..));
        }
    }
}

impl Iterator for Reader {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        self.next_message()
    }
}
