//! A plausibility guard on mark and index prices before they reach the engine.
//!
//! A mark price liquidates positions the moment it is applied: one bad `markPriceUpdate`
//! (a mark of 0.00000001 is a valid positive price) would liquidate every long. The guard
//! keeps, per instrument and per kind (mark, index), the last value it let through and
//! applies this rule to each new value `v`:
//!
//! - `v` within `max_jump_ppm` of the last accepted value: applied. A value still held
//!   (see below) is then dropped and counted: it was a lone outlier.
//! - Otherwise (a jump, or no value accepted yet) `v` is held and counted, not applied.
//!   The held value is the anchor of a candidate move: each later value within
//!   `max_jump_ppm` of the anchor counts as one confirmation, and after `confirmations` of
//!   them the latest value is applied (counted as confirmed) and becomes the last accepted
//!   value. A later jump that disagrees with the anchor drops it (counted) and becomes the
//!   new anchor.
//!
//! So a sustained move (the market did move, or the feed was down while it moved) is
//! applied `confirmations` updates late, and a lone outlier is never applied. The first
//! value of an instrument is a jump from nothing: it is confirmed like any other jump.
//!
//! Owns the accepted and held values and the counters. Must never apply an unconfirmed
//! jump, use a float (the comparison is `|v − ref| · 10^6 ≤ ref · max_jump_ppm` in `i128`),
//! read a clock, or panic on any price.

use crate::convert::FeedItem;
use perpcore_types::{Command, InstrumentId, Price};
use std::collections::BTreeMap;

/// Guard settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardOptions {
    /// Largest move from the last accepted value applied at once, in parts per million
    /// (100_000 = 10%).
    pub max_jump_ppm: u32,
    /// Updates that must agree with a held value before a jump is applied (0: jumps are
    /// applied at once and only counted).
    pub confirmations: u32,
}

impl Default for GuardOptions {
    /// 10% and two confirmations: Binance pushes the mark every 1 s or 3 s and moves it far
    /// less than 10% between two pushes in ordinary markets, so a real jump is applied
    /// 2–6 s late and a lone bad value never.
    fn default() -> Self {
        Self {
            max_jump_ppm: 100_000,
            confirmations: 2,
        }
    }
}

/// What the guard did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardStats {
    /// Values held instead of applied (jumps and first values).
    pub held: u64,
    /// Held values dropped: lone outliers, and non-positive values (refused outright).
    pub dropped: u64,
    /// Jumps applied after their confirmations.
    pub confirmed: u64,
}

impl GuardStats {
    pub fn add(&mut self, o: &GuardStats) {
        self.held += o.held;
        self.dropped += o.dropped;
        self.confirmed += o.confirmed;
    }
}

/// `|v − reference| ≤ reference · ppm / 10^6`, exactly.
fn within(v: Price, reference: Price, ppm: u32) -> bool {
    let diff = (i128::from(v.0) - i128::from(reference.0)).abs();
    diff * 1_000_000 <= i128::from(reference.0) * i128::from(ppm)
}

/// The guard of one price series.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PriceGuard {
    last: Option<Price>,
    /// Anchor of a candidate jump and the confirmations it has had.
    held: Option<(Price, u32)>,
}

impl PriceGuard {
    /// The last value applied.
    pub fn last(&self) -> Option<Price> {
        self.last
    }

    /// Takes one value; true when it is to be applied.
    pub fn check(&mut self, v: Price, opts: GuardOptions, stats: &mut GuardStats) -> bool {
        if !v.is_positive() {
            stats.dropped += 1;
            return false;
        }
        if let Some(last) = self.last {
            if within(v, last, opts.max_jump_ppm) {
                if self.held.take().is_some() {
                    stats.dropped += 1;
                }
                self.last = Some(v);
                return true;
            }
        }
        let confirmed = match self.held {
            Some((anchor, n)) if within(v, anchor, opts.max_jump_ppm) => n.saturating_add(1),
            Some(_) => {
                stats.dropped += 1;
                stats.held += 1;
                0
            }
            None => {
                stats.held += 1;
                0
            }
        };
        if confirmed >= opts.confirmations {
            self.held = None;
            self.last = Some(v);
            stats.confirmed += 1;
            return true;
        }
        let anchor = match self.held {
            Some((anchor, _)) if confirmed > 0 => anchor,
            _ => v,
        };
        self.held = Some((anchor, confirmed));
        false
    }
}

/// Which price of an instrument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Series {
    Mark,
    Index,
}

/// Guards for every instrument's mark and index price, applied to converted commands.
#[derive(Clone, Debug, Default)]
pub struct MarkGuard {
    opts: GuardOptions,
    series: BTreeMap<(InstrumentId, Series), PriceGuard>,
    stats: GuardStats,
}

impl MarkGuard {
    pub fn new(opts: GuardOptions) -> Self {
        Self {
            opts,
            series: BTreeMap::new(),
            stats: GuardStats::default(),
        }
    }

    pub fn stats(&self) -> &GuardStats {
        &self.stats
    }

    /// Removes from `items` the mark and index prices not to be applied (in place, order
    /// kept); every other command passes.
    pub fn filter(&mut self, items: &mut Vec<FeedItem>) {
        items.retain(|item| {
            let (key, price) = match item.command {
                Command::SetMarkPrice { instrument, price } => ((instrument, Series::Mark), price),
                Command::SetIndexPrice { instrument, price } => {
                    ((instrument, Series::Index), price)
                }
                _ => return true,
            };
            self.series
                .entry(key)
                .or_default()
                .check(price, self.opts, &mut self.stats)
        });
    }
}

/// A stream of [`FeedItem`]s with its mark and index prices passed through a [`MarkGuard`]
/// (`perpcore publish --feed`: recorded files guarded as the live client guards its
/// stream). Item by item, so the outcome is the one [`MarkGuard::filter`] gives on the
/// whole stream at once.
#[derive(Debug)]
pub struct Guarded<I> {
    inner: I,
    guard: MarkGuard,
    one: Vec<FeedItem>,
}

impl<I: Iterator<Item = FeedItem>> Guarded<I> {
    pub fn new(inner: I, opts: GuardOptions) -> Self {
        Self {
            inner,
            guard: MarkGuard::new(opts),
            one: Vec::with_capacity(1),
        }
    }

    /// The guard's counters so far.
    pub fn stats(&self) -> &GuardStats {
        self.guard.stats()
    }

    /// The wrapped stream (for its own statistics).
    pub fn inner(&self) -> &I {
        &self.inner
    }
}

impl<I: Iterator<Item = FeedItem>> Iterator for Guarded<I> {
    type Item = FeedItem;

    fn next(&mut self) -> Option<FeedItem> {
        loop {
            self.one.clear();
            self.one.push(self.inner.next()?);
            self.guard.filter(&mut self.one);
            if let Some(item) = self.one.pop() {
                return Some(item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::Origin;

    fn p(s: &str) -> Price {
        Price::parse(s).expect("price")
    }

    /// Runs `values` through a guard; returns the applied ones.
    fn run(opts: GuardOptions, values: &[&str]) -> (Vec<Price>, GuardStats) {
        let mut g = PriceGuard::default();
        let mut st = GuardStats::default();
        let out = values
            .iter()
            .map(|v| p(v))
            .filter(|&v| g.check(v, opts, &mut st))
            .collect();
        (out, st)
    }

    const OPTS: GuardOptions = GuardOptions {
        max_jump_ppm: 100_000,
        confirmations: 2,
    };

    #[test]
    fn a_first_value_waits_for_its_confirmations() {
        let (out, st) = run(OPTS, &["100", "101", "99"]);
        assert_eq!(out, vec![p("99")]);
        assert_eq!((st.held, st.dropped, st.confirmed), (1, 0, 1));
        let (out, _) = run(OPTS, &["100", "101"]);
        assert!(out.is_empty());
    }

    #[test]
    fn a_lone_outlier_is_dropped_and_never_applied() {
        let (out, st) = run(OPTS, &["100", "100", "100", "0.00000001", "100.5", "100.4"]);
        assert_eq!(out, vec![p("100"), p("100.5"), p("100.4")]);
        assert_eq!((st.held, st.dropped, st.confirmed), (2, 1, 1));
    }

    #[test]
    fn a_sustained_jump_is_applied_once_confirmed() {
        let (out, st) = run(OPTS, &["100", "100", "100", "150", "151", "149", "150"]);
        assert_eq!(out, vec![p("100"), p("149"), p("150")]);
        assert_eq!((st.held, st.dropped, st.confirmed), (2, 0, 2));
    }

    #[test]
    fn a_second_jump_that_disagrees_replaces_the_held_one() {
        // 150 held, then 300 (a jump from 100 and far from 150): 150 dropped, 300 held.
        let (out, st) = run(OPTS, &["100", "100", "100", "150", "300", "300", "300"]);
        assert_eq!(out, vec![p("100"), p("300")]);
        assert_eq!((st.held, st.dropped, st.confirmed), (3, 1, 2));
    }

    #[test]
    fn the_bound_is_inclusive_and_exact() {
        // 10% of 100 is exactly 10: 110 and 90 pass, one raw unit beyond does not.
        for edge in ["110", "90"] {
            let (out, _) = run(OPTS, &["100", "100", "100", edge]);
            assert_eq!(out.last(), Some(&p(edge)));
        }
        for beyond in ["110.00000001", "89.99999999"] {
            let (out, st) = run(OPTS, &["100", "100", "100", beyond]);
            assert_eq!(out, vec![p("100")]);
            assert_eq!(st.held, 2);
        }
    }

    #[test]
    fn extreme_and_non_positive_prices_do_not_panic() {
        let mut g = PriceGuard::default();
        let mut st = GuardStats::default();
        for raw in [i64::MAX, 1, i64::MAX, 0, -1, i64::MIN, i64::MAX, i64::MAX] {
            let _ = g.check(Price(raw), OPTS, &mut st);
        }
        assert_eq!(g.last(), Some(Price(i64::MAX)));
        // 1 and the first MAX disagreed with the held anchor; 0, -1 and MIN are refused.
        assert_eq!(st.dropped, 5);
    }

    #[test]
    fn zero_confirmations_apply_jumps_at_once_and_count_them() {
        let opts = GuardOptions {
            confirmations: 0,
            ..OPTS
        };
        let (out, st) = run(opts, &["100", "1"]);
        assert_eq!(out, vec![p("100"), p("1")]);
        assert_eq!((st.held, st.confirmed), (2, 2));
    }

    #[test]
    fn marks_and_indexes_are_guarded_separately_per_instrument() {
        let item = |command| FeedItem {
            exchange_ns: 0,
            origin: Origin::Feed,
            command,
        };
        let mark = |i, v: &str| {
            item(Command::SetMarkPrice {
                instrument: InstrumentId(i),
                price: p(v),
            })
        };
        let index = |i, v: &str| {
            item(Command::SetIndexPrice {
                instrument: InstrumentId(i),
                price: p(v),
            })
        };
        let mut g = MarkGuard::new(GuardOptions {
            confirmations: 1,
            ..OPTS
        });
        let mut items = vec![
            mark(0, "100"),
            index(0, "50"),
            mark(1, "7"),
            mark(0, "100"),
            index(0, "50"),
            item(Command::SetFundingRate {
                instrument: InstrumentId(0),
                rate: perpcore_types::Rate::ZERO,
                next_funding_ns: 0,
            }),
            mark(1, "7"),
        ];
        g.filter(&mut items);
        assert_eq!(items.len(), 4);
        assert_eq!(items[0], mark(0, "100"));
        assert_eq!(items[1], index(0, "50"));
        assert!(matches!(items[2].command, Command::SetFundingRate { .. }));
        assert_eq!(items[3], mark(1, "7"));
        assert_eq!(g.stats().held, 3);
    }

    #[test]
    fn guarded_stream_equals_the_filter_on_the_whole_stream() {
        let item = |i: u32, v: &str, mark: bool| FeedItem {
            exchange_ns: u64::from(i),
            origin: Origin::Feed,
            command: if mark {
                Command::SetMarkPrice {
                    instrument: InstrumentId(i % 2),
                    price: p(v),
                }
            } else {
                Command::SetIndexPrice {
                    instrument: InstrumentId(i % 2),
                    price: p(v),
                }
            },
        };
        // Two instruments, marks and indexes interleaved, with a lone outlier and a
        // sustained jump: 12 values of which the filter keeps some, in order.
        let values = [
            "100", "100", "100", "100", "100", "100", "1", "100", "150", "150", "150", "150",
        ];
        let items: Vec<FeedItem> = values
            .iter()
            .enumerate()
            .map(|(k, v)| item(k as u32, v, k % 4 < 2))
            .collect();
        let mut whole = items.clone();
        let mut g = MarkGuard::new(OPTS);
        g.filter(&mut whole);
        let mut guarded = Guarded::new(items.into_iter(), OPTS);
        let streamed: Vec<FeedItem> = guarded.by_ref().collect();
        assert_eq!(streamed, whole);
        assert_eq!(guarded.stats(), g.stats());
        assert!(whole.len() < values.len());
    }
}
