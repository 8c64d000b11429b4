//! A streaming reader of one recorded file: lines → [`Message`]s, in file order.
//!
//! Owns per-source concerns: line numbers, the exchange-time watermark and the
//! out-of-order rule, attributing a symbol-less USDⓈ-M depth snapshot to the source's
//! symbol, and counting every line it cannot use by [`Problem`] kind. Must never stop on a
//! bad line, hold more than one line and one pending message in memory, or reorder
//! messages (ordering across files is the merge's job).
//!
//! **Out-of-order rule.** The recorder writes messages in local receive order; exchange
//! times of different streams on one connection interleave slightly out of order (up to
//! ~280 ms in the bundled captures). A message whose exchange time is more than
//! `tolerance_ns` (default 1 s) behind the latest exchange time already read from the
//! same source is dropped and counted as [`Problem::OutOfOrder`]; anything within the
//! tolerance passes in file order. A snapshot without `E` takes the latest time seen.

use crate::lines::{open_maybe_gzip, LineRead, LineReader, DEFAULT_MAX_LINE};
use crate::message::{parse_line, Body, Parsed};
use crate::stats::{FeedStats, Problem};
use crate::FeedError;
use std::io::BufRead;
use std::path::Path;

/// Default out-of-order tolerance: 1 s of exchange time.
pub const DEFAULT_TOLERANCE_NS: u64 = 1_000_000_000;

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
    /// See the module docs.
    pub tolerance_ns: u64,
    /// Symbol for depth snapshots that carry none; by default the symbol of the most
    /// recent message of the same source (or the next one, if none came before).
    pub symbol_hint: Option<String>,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        Self {
            max_line: DEFAULT_MAX_LINE,
            tolerance_ns: DEFAULT_TOLERANCE_NS,
            symbol_hint: None,
        }
    }
}

/// The per-source rules shared by the file reader and the live client: the exchange-time
/// watermark and out-of-order drop, message counting, and symbol attribution of
/// symbol-less snapshots.
#[derive(Debug)]
pub(crate) struct SourceState {
    source: u16,
    tolerance_ns: u64,
    symbol_hint: Option<String>,
    pub(crate) stats: FeedStats,
    /// Latest exchange time accepted (0 before any).
    watermark_ns: u64,
    last_symbol: Option<String>,
    /// A snapshot waiting for its symbol.
    pending_snapshot: Option<Message>,
}

impl SourceState {
    pub(crate) fn new(source: u16, opts: &ReaderOptions) -> Self {
        Self {
            source,
            tolerance_ns: opts.tolerance_ns,
            symbol_hint: opts.symbol_hint.clone(),
            stats: FeedStats::default(),
            watermark_ns: 0,
            last_symbol: None,
            pending_snapshot: None,
        }
    }

    /// Takes one parsed message (or the problem parsing it) and returns what is ready:
    /// nothing, the message, or a held snapshot followed by the message.
    pub(crate) fn accept(
        &mut self,
        line: u64,
        parsed: Result<(u64, Parsed), Problem>,
    ) -> (Option<Message>, Option<Message>) {
        let (local_ts, parsed) = match parsed {
            Ok(v) => v,
            Err(p) => {
                self.stats.count_problem(p, line);
                return (None, None);
            }
        };
        let exchange_ns = parsed.exchange_ns.unwrap_or(self.watermark_ns);
        if exchange_ns.saturating_add(self.tolerance_ns) < self.watermark_ns {
            self.stats.count_problem(Problem::OutOfOrder, line);
            return (None, None);
        }
        self.watermark_ns = self.watermark_ns.max(exchange_ns);
        self.stats.count_message(parsed.body.kind());
        let mut msg = Message {
            source: self.source,
            line,
            local_ts,
            exchange_ns,
            body: parsed.body,
        };
        if let Body::Snapshot(s) = &mut msg.body {
            if s.symbol.is_none() {
                s.symbol = self
                    .symbol_hint
                    .clone()
                    .or_else(|| self.last_symbol.clone());
                if s.symbol.is_none() {
                    // Wait for the next message that names the symbol; a second
                    // symbol-less snapshot replaces (and counts) the first.
                    if self.pending_snapshot.replace(msg).is_some() {
                        self.stats
                            .count_problem(Problem::SnapshotWithoutSymbol, line);
                    }
                    return (None, None);
                }
            }
            return (Some(msg), None);
        }
        if let Some(sym) = msg.body.symbol() {
            if self.last_symbol.as_deref() != Some(sym) {
                self.last_symbol = Some(sym.to_string());
            }
            if let Some(mut snap) = self.pending_snapshot.take() {
                if let Body::Snapshot(s) = &mut snap.body {
                    s.symbol = Some(sym.to_string());
                }
                return (Some(snap), Some(msg));
            }
        }
        (Some(msg), None)
    }

    /// End of input: a snapshot still waiting for a symbol is counted and dropped.
    pub(crate) fn finish(&mut self, line: u64) {
        if self.pending_snapshot.take().is_some() {
            self.stats
                .count_problem(Problem::SnapshotWithoutSymbol, line);
        }
    }
}

/// Streams the messages of one file (plain or gzip).
pub struct Reader {
    name: String,
    lines: LineReader<Box<dyn BufRead + Send>>,
    buf: Vec<u8>,
    state: SourceState,
    line_no: u64,
    /// A message to return after a released snapshot.
    queued: Option<Message>,
    done: bool,
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
            queued: None,
            done: false,
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
            if self.done {
                self.state.finish(self.line_no);
                return None;
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
            match self.state.accept(self.line_no, parsed) {
                (Some(first), second) => {
                    self.queued = second;
                    return Some(first);
                }
                (None, _) => continue,
            }
        }
    }
}

impl Iterator for Reader {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        if let Some(m) = self.queued.take() {
            return Some(m);
        }
        self.next_message()
    }
}
