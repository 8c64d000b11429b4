//! A local L2 book of one symbol kept from a REST snapshot and `depthUpdate` diffs, by
//! Binance's rules for futures streams:
//!
//! 1. Diffs that arrive before a snapshot are buffered (bounded; the oldest are dropped
//!    and counted when full).
//! 2. On a snapshot with `lastUpdateId = L`: buffered and later diffs with `u < L` are
//!    stale and dropped; the first diff applied must bridge the snapshot,
//!    `U ≤ L + 1` and `u ≥ L` (futures send `U ≤ L ≤ u`; `L + 1` also admits spot).
//! 3. From then on each diff's `pu` must equal the previous diff's `u` (spot streams,
//!    which have no `pu`, need `U = previous u + 1`). A diff with `u` at or below the last
//!    applied one is stale. Any other diff is a gap: counted, the book is cleared and it
//!    waits (buffering) for the next snapshot.
//!
//! Owns the levels and the synchronisation state. Must never report a top of book while
//! unsynchronised, grow without bound (levels per side and the buffer are capped), or
//! panic on any diff.

use crate::message::{DepthSnapshot, DepthUpdate, Level};
use crate::stats::DepthStats;
use perpcore_types::Price;
use std::collections::{BTreeMap, VecDeque};

/// Bounds of a book.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BookOptions {
    /// Diffs held while waiting for a snapshot.
    pub max_buffered: usize,
    /// Price levels kept per side (the farthest from the top are dropped beyond this).
    pub max_levels: usize,
}

impl Default for BookOptions {
    fn default() -> Self {
        Self {
            max_buffered: 4096,
            max_levels: 20_000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sync {
    /// No usable snapshot: diffs are buffered.
    WaitingSnapshot,
    /// Snapshot loaded with this `lastUpdateId`; waiting for the bridging diff.
    Bridging(u64),
    /// Synchronised; the last applied diff's `u`.
    Live(u64),
}

/// One symbol's book. Prices and sizes are raw fixed-point (`Price`, `Qty` scale 10^8).
#[derive(Clone, Debug)]
pub struct DepthBook {
    bids: BTreeMap<i64, i64>,
    asks: BTreeMap<i64, i64>,
    sync: Sync,
    buffer: VecDeque<DepthUpdate>,
    opts: BookOptions,
}

impl DepthBook {
    pub fn new(opts: BookOptions) -> Self {
        Self {
            bids: BTreeMap::new(),
            asks: BTreeMap::new(),
            sync: Sync::WaitingSnapshot,
            buffer: VecDeque::new(),
            opts,
        }
    }

    /// True when the levels reflect the exchange's book (a snapshot is loaded and no gap
    /// has been seen since).
    pub fn is_synced(&self) -> bool {
        !matches!(self.sync, Sync::WaitingSnapshot)
    }

    /// Best bid and best ask, when synchronised and both sides have a level.
    pub fn top(&self) -> Option<(Price, Price)> {
        if !self.is_synced() {
            return None;
        }
        let (&b, _) = self.bids.last_key_value()?;
        let (&a, _) = self.asks.first_key_value()?;
        Some((Price(b), Price(a)))
    }

    /// Levels per side (bids, asks).
    pub fn depth(&self) -> (usize, usize) {
        (self.bids.len(), self.asks.len())
    }

    /// Forget everything (a reconnect): wait for a new snapshot.
    pub fn reset(&mut self) {
        self.clear();
        self.buffer.clear();
    }

    fn clear(&mut self) {
        self.bids.clear();
        self.asks.clear();
        self.sync = Sync::WaitingSnapshot;
    }

    /// Loads a snapshot and replays the buffered diffs against it.
    pub fn on_snapshot(&mut self, s: DepthSnapshot, stats: &mut DepthStats) {
        self.clear();
        stats.snapshots += 1;
        apply_levels(&mut self.bids, &s.bids, true, self.opts.max_levels, stats);
        apply_levels(&mut self.asks, &s.asks, false, self.opts.max_levels, stats);
        self.sync = Sync::Bridging(s.last_update_id);
        let held = std::mem::take(&mut self.buffer);
        for ev in held {
            self.step(ev, stats);
        }
    }

    /// Applies (or buffers, or drops) one diff.
    pub fn on_update(&mut self, ev: DepthUpdate, stats: &mut DepthStats) {
        self.step(ev, stats);
    }

    fn step(&mut self, ev: DepthUpdate, stats: &mut DepthStats) {
        match self.sync {
            Sync::WaitingSnapshot => {
                if self.buffer.len() >= self.opts.max_buffered.max(1) {
                    self.buffer.pop_front();
                    stats.buffer_overflow += 1;
                }
                stats.buffered += 1;
                self.buffer.push_back(ev);
            }
            Sync::Bridging(l) => {
                if ev.last_id < l {
                    stats.stale += 1;
                } else if ev.first_id <= l.saturating_add(1) {
                    self.apply(&ev, stats);
                } else {
                    self.gap(ev, stats);
                }
            }
            Sync::Live(last) => {
                if ev.last_id <= last {
                    stats.stale += 1;
                    return;
                }
                let continuous = match ev.prev_last_id {
                    Some(pu) => pu == last,
                    None => Some(ev.first_id) == last.checked_add(1),
                };
                if continuous {
                    self.apply(&ev, stats);
                } else {
                    self.gap(ev, stats);
                }
            }
        }
    }

    fn apply(&mut self, ev: &DepthUpdate, stats: &mut DepthStats) {
        apply_levels(&mut self.bids, &ev.bids, true, self.opts.max_levels, stats);
        apply_levels(&mut self.asks, &ev.asks, false, self.opts.max_levels, stats);
        stats.applied += 1;
        self.sync = Sync::Live(ev.last_id);
    }

    fn gap(&mut self, ev: DepthUpdate, stats: &mut DepthStats) {
        stats.gaps += 1;
        self.clear();
        self.buffer.clear();
        stats.buffered += 1;
        self.buffer.push_back(ev);
    }
}

/// Sets each level (size zero removes it), then trims the side to `max` levels by
/// dropping those farthest from the top.
fn apply_levels(
    side: &mut BTreeMap<i64, i64>,
    levels: &[Level],
    is_bid: bool,
    max: usize,
    stats: &mut DepthStats,
) {
    for (p, q) in levels {
        if q.is_zero() {
            side.remove(&p.0);
        } else {
            side.insert(p.0, q.0);
        }
    }
    while side.len() > max.max(1) {
        let _ = if is_bid {
            side.pop_first()
        } else {
            side.pop_last()
        };
        stats.levels_trimmed += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use perpcore_types::Qty;

    fn lv(p: i64, q: i64) -> Level {
        (Price::from_int(p), Qty::from_int(q))
    }
    fn diff(u0: u64, u1: u64, pu: u64, bids: Vec<Level>, asks: Vec<Level>) -> DepthUpdate {
        DepthUpdate {
            symbol: "X".into(),
            first_id: u0,
            last_id: u1,
            prev_last_id: Some(pu),
            bids,
            asks,
        }
    }
    fn snap(l: u64) -> DepthSnapshot {
        DepthSnapshot {
            symbol: Some("X".into()),
            last_update_id: l,
            bids: vec![lv(99, 1), lv(98, 2)],
            asks: vec![lv(101, 1), lv(102, 2)],
        }
    }

    #[test]
    fn buffered_diffs_bridge_the_snapshot() {
        let mut b = DepthBook::new(BookOptions::default());
        let mut st = DepthStats::default();
        b.on_update(diff(1, 5, 0, vec![lv(97, 1)], vec![]), &mut st);
        b.on_update(diff(6, 12, 5, vec![lv(100, 3)], vec![]), &mut st);
        assert_eq!(b.top(), None);
        b.on_snapshot(snap(10), &mut st);
        // 1..5 is stale; 6..12 bridges 10 and sets bid 100.
        assert_eq!(st.stale, 1);
        assert_eq!(st.applied, 1);
        assert_eq!(b.top(), Some((Price::from_int(100), Price::from_int(101))));
        b.on_update(
            diff(13, 14, 12, vec![lv(100, 0)], vec![lv(101, 0)]),
            &mut st,
        );
        assert_eq!(b.top(), Some((Price::from_int(99), Price::from_int(102))));
        // A stale repeat is dropped; a broken chain is a gap.
        b.on_update(diff(13, 14, 12, vec![], vec![]), &mut st);
        assert_eq!(st.stale, 2);
        b.on_update(diff(20, 21, 19, vec![], vec![]), &mut st);
        assert_eq!(st.gaps, 1);
        assert_eq!(b.top(), None);
        assert!(!b.is_synced());
    }

    #[test]
    fn a_snapshot_older_than_the_stream_is_a_gap() {
        let mut b = DepthBook::new(BookOptions::default());
        let mut st = DepthStats::default();
        b.on_update(diff(50, 60, 49, vec![], vec![]), &mut st);
        b.on_snapshot(snap(10), &mut st);
        assert_eq!(st.gaps, 1);
        assert!(!b.is_synced());
        // The newer snapshot syncs with the held diff.
        b.on_snapshot(snap(55), &mut st);
        assert_eq!(st.applied, 1);
        assert!(b.is_synced());
    }

    #[test]
    fn buffer_and_levels_are_bounded() {
        let mut b = DepthBook::new(BookOptions {
            max_buffered: 2,
            max_levels: 3,
        });
        let mut st = DepthStats::default();
        for i in 0..5u64 {
            b.on_update(diff(i, i, i.saturating_sub(1), vec![], vec![]), &mut st);
        }
        assert_eq!(st.buffer_overflow, 3);
        let mut s = snap(3);
        s.bids = (1..=10).map(|p| lv(p, 1)).collect();
        b.on_snapshot(s, &mut st);
        assert_eq!(b.depth().0, 3);
        assert_eq!(st.levels_trimmed, 7);
        assert_eq!(b.top().map(|t| t.0), Some(Price::from_int(10)));
    }
}
