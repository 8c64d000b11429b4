//! Counters of what a feed did: lines read, messages by kind, problems by kind, the
//! depth-book sequencing outcomes and the commands produced by kind.
//!
//! Owns the vocabulary of problems ([`Problem`]) and their stable names. Must never decide
//! anything: readers and converters count here, callers report. No floats.

use serde::Serialize;
use std::collections::BTreeMap;

/// Why an input line (or live frame) was not turned into commands. Every kind is counted
/// separately; none stops a replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Problem {
    /// Longer than the reader's line limit (skipped without being held in memory).
    LineTooLong,
    /// No `<integer local timestamp> ` prefix.
    BadPrefix,
    /// Not JSON (syntax error, truncated line, invalid UTF-8).
    BadJson,
    /// Valid JSON that is not a message kind this adapter reads (other streams,
    /// subscription replies).
    UnknownEvent,
    /// A known message with a missing field or a field of the wrong type.
    BadField,
    /// A decimal field that is not a number (anything but `-?DIGITS(.DIGITS)?` in ASCII:
    /// no exponent, sign `+`, spaces, underscores, leading or trailing dot), is negative
    /// or is out of range. Checked by `perpcore_types::parse_decimal`, never rounded.
    BadNumber,
    /// A decimal with more places than the fixed-point type holds (price 8, rate 10,
    /// size 8): counted, never rounded.
    TooPrecise,
    /// A price that is zero (the engine only takes positive prices).
    NonPositivePrice,
    /// A timestamp whose nanosecond value overflows `u64`.
    BadTime,
    /// Exchange time more than the tolerance behind the latest seen in the same source.
    OutOfOrder,
    /// Exchange time more than the jump bound past the latest seen in the same source,
    /// and not confirmed by the next message (a corrupt or bogus timestamp): skipped
    /// without moving the watermark (see [`crate::reader`]).
    TimeJump,
    /// A symbol the configuration does not define.
    UnknownSymbol,
    /// A depth snapshot without a `symbol` that cannot be attributed: its source names
    /// two or more symbols, or none at all (see [`crate::reader`]).
    SnapshotWithoutSymbol,
    /// The file could not be read any further (corrupt gzip, I/O error): the rest of that
    /// file is skipped, other files go on.
    ReadError,
}

/// Number of [`Problem`] kinds.
const PROBLEM_KINDS: usize = 14;

impl Problem {
    pub const ALL: [Problem; PROBLEM_KINDS] = [
        Problem::LineTooLong,
        Problem::BadPrefix,
        Problem::BadJson,
        Problem::UnknownEvent,
        Problem::BadField,
        Problem::BadNumber,
        Problem::TooPrecise,
        Problem::NonPositivePrice,
        Problem::BadTime,
        Problem::OutOfOrder,
        Problem::TimeJump,
        Problem::UnknownSymbol,
        Problem::SnapshotWithoutSymbol,
        Problem::ReadError,
    ];

    /// Stable snake_case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Problem::LineTooLong => "line_too_long",
            Problem::BadPrefix => "bad_prefix",
            Problem::BadJson => "bad_json",
            Problem::UnknownEvent => "unknown_event",
            Problem::BadField => "bad_field",
            Problem::BadNumber => "bad_number",
            Problem::TooPrecise => "too_precise",
            Problem::NonPositivePrice => "non_positive_price",
            Problem::BadTime => "bad_time",
            Problem::OutOfOrder => "out_of_order",
            Problem::TimeJump => "time_jump",
            Problem::UnknownSymbol => "unknown_symbol",
            Problem::SnapshotWithoutSymbol => "snapshot_without_symbol",
            Problem::ReadError => "read_error",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Message kinds the adapter reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MessageKind {
    DepthUpdate,
    DepthSnapshot,
    BookTicker,
    Trade,
    AggTrade,
    MarkPriceUpdate,
}

impl MessageKind {
    pub const ALL: [MessageKind; 6] = [
        MessageKind::DepthUpdate,
        MessageKind::DepthSnapshot,
        MessageKind::BookTicker,
        MessageKind::Trade,
        MessageKind::AggTrade,
        MessageKind::MarkPriceUpdate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MessageKind::DepthUpdate => "depth_update",
            MessageKind::DepthSnapshot => "depth_snapshot",
            MessageKind::BookTicker => "book_ticker",
            MessageKind::Trade => "trade",
            MessageKind::AggTrade => "agg_trade",
            MessageKind::MarkPriceUpdate => "mark_price_update",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Outcomes of keeping local L2 books from snapshots and diffs (Binance rules: drop
/// events older than the snapshot, bridge with `U ≤ lastUpdateId ≤ u`, then each event's
/// `pu` must equal the previous `u`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DepthStats {
    /// Snapshots loaded.
    pub snapshots: u64,
    /// Diffs applied to a synchronised book.
    pub applied: u64,
    /// Diffs older than the book (`u` below the snapshot's or the last applied id).
    pub stale: u64,
    /// Breaks in the `pu`/`u` chain (or a snapshot older than the buffered diffs): the
    /// book is cleared and waits for the next snapshot.
    pub gaps: u64,
    /// Diffs held while waiting for a snapshot.
    pub buffered: u64,
    /// Buffered diffs dropped because the bounded buffer was full.
    pub buffer_overflow: u64,
    /// Top-of-book changes not emitted because the local book was crossed.
    pub crossed_top: u64,
    /// Levels dropped (farthest from the top) to keep a side within its bound.
    pub levels_trimmed: u64,
}

impl DepthStats {
    fn add(&mut self, o: &DepthStats) {
        self.snapshots += o.snapshots;
        self.applied += o.applied;
        self.stale += o.stale;
        self.gaps += o.gaps;
        self.buffered += o.buffered;
        self.buffer_overflow += o.buffer_overflow;
        self.crossed_top += o.crossed_top;
        self.levels_trimmed += o.levels_trimmed;
    }
}

/// Everything counted while reading and converting. Add the stats of several sources
/// with [`FeedStats::add`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedStats {
    /// Lines (or frames) seen.
    pub lines: u64,
    messages: [u64; 6],
    problems: [u64; PROBLEM_KINDS],
    /// First line number (1-based, per source) of each problem kind, for diagnostics.
    first_line: [u64; PROBLEM_KINDS],
    pub depth: DepthStats,
    /// Commands produced, by `Command::kind()`.
    pub commands: BTreeMap<&'static str, u64>,
}

impl FeedStats {
    pub fn count_message(&mut self, k: MessageKind) {
        self.messages[k.index()] += 1;
    }
    /// Count one problem seen at `line` (0 when unknown).
    pub fn count_problem(&mut self, p: Problem, line: u64) {
        let i = p.index();
        self.problems[i] += 1;
        if self.first_line[i] == 0 {
            self.first_line[i] = line;
        }
    }
    pub fn count_command(&mut self, kind: &'static str) {
        *self.commands.entry(kind).or_default() += 1;
    }
    pub fn messages(&self, k: MessageKind) -> u64 {
        self.messages[k.index()]
    }
    pub fn problems(&self, p: Problem) -> u64 {
        self.problems[p.index()]
    }
    /// First line where `p` was seen, if it was.
    pub fn first_line(&self, p: Problem) -> Option<u64> {
        (self.problems[p.index()] > 0 && self.first_line[p.index()] > 0)
            .then_some(self.first_line[p.index()])
    }
    /// Every message read (all kinds).
    pub fn total_messages(&self) -> u64 {
        self.messages.iter().sum()
    }
    /// Every problem counted (all kinds).
    pub fn total_problems(&self) -> u64 {
        self.problems.iter().sum()
    }
    pub fn total_commands(&self) -> u64 {
        self.commands.values().sum()
    }

    /// Adds `o` into `self` (first lines keep the earlier source's).
    pub fn add(&mut self, o: &FeedStats) {
        self.lines += o.lines;
        for (a, b) in self.messages.iter_mut().zip(o.messages) {
            *a += b;
        }
        for i in 0..self.problems.len() {
            self.problems[i] += o.problems[i];
            if self.first_line[i] == 0 {
                self.first_line[i] = o.first_line[i];
            }
        }
        self.depth.add(&o.depth);
        for (k, v) in &o.commands {
            *self.commands.entry(k).or_default() += v;
        }
    }

    /// The report by kind: non-zero message, problem and command counts and the depth
    /// counters, with stable names (what `perpcore bench` prints and the golden files hold).
    pub fn report(&self) -> StatsReport {
        StatsReport {
            lines: self.lines,
            messages: MessageKind::ALL
                .iter()
                .filter(|k| self.messages(**k) > 0)
                .map(|k| (k.name(), self.messages(*k)))
                .collect(),
            problems: Problem::ALL
                .iter()
                .filter(|p| self.problems(**p) > 0)
                .map(|p| (p.name(), self.problems(*p)))
                .collect(),
            depth: self.depth,
            commands: self.commands.clone(),
        }
    }
}

/// A serialisable view of [`FeedStats`] (zero counts left out).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatsReport {
    pub lines: u64,
    pub messages: BTreeMap<&'static str, u64>,
    pub problems: BTreeMap<&'static str, u64>,
    pub depth: DepthStats,
    pub commands: BTreeMap<&'static str, u64>,
}

impl std::fmt::Display for StatsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lines {}", self.lines)?;
        let list = |m: &BTreeMap<&'static str, u64>| {
            if m.is_empty() {
                "none".to_string()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        write!(f, "; messages: {}", list(&self.messages))?;
        write!(f, "; problems: {}", list(&self.problems))?;
        let d = &self.depth;
        write!(
            f,
            "; depth: snapshots {}, applied {}, stale {}, gaps {}, buffered {}, overflow {}, crossed {}, trimmed {}",
            d.snapshots, d.applied, d.stale, d.gaps, d.buffered, d.buffer_overflow, d.crossed_top, d.levels_trimmed
        )?;
        write!(f, "; commands: {}", list(&self.commands))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_match_the_lists() {
        for (i, p) in Problem::ALL.iter().enumerate() {
            assert_eq!(p.index(), i);
        }
        for (i, k) in MessageKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
    }

    #[test]
    fn add_sums_and_keeps_first_lines() {
        let mut a = FeedStats::default();
        a.count_problem(Problem::BadJson, 7);
        let mut b = FeedStats::default();
        b.count_problem(Problem::BadJson, 3);
        b.count_problem(Problem::OutOfOrder, 9);
        b.count_command("set_mark_price");
        a.add(&b);
        assert_eq!(a.problems(Problem::BadJson), 2);
        assert_eq!(a.first_line(Problem::BadJson), Some(7));
        assert_eq!(a.first_line(Problem::OutOfOrder), Some(9));
        assert_eq!(a.total_commands(), 1);
        let r = a.report();
        assert_eq!(r.problems.get("bad_json"), Some(&2));
    }
}
