//! Time sources for the sequencer.
//!
//! Owns: the `Clock` trait, `SystemClock` (the only place in the sequencer that reads
//! the wall clock) and `ManualClock` (deterministic, for tests and simulations).
//! Must never: be relied on for monotonicity (the sequencer enforces that itself) or
//! use floating point.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of nanosecond timestamps. It may jump backwards; the sequencer stamps
/// `max(last_ts + 1, now_ns())`, so stamps are strictly increasing regardless.
pub trait Clock: Send {
    /// Current time in nanoseconds since the Unix epoch (or any fixed origin).
    fn now_ns(&self) -> u64;
}

/// The wall clock. The only place the sequencer reads real time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> u64 {
        let now = SystemTime::now(); // determinism-ok: the ingress stamp, journaled
        match now.duration_since(UNIX_EPOCH) {
            // u64 nanoseconds last until the year 2554; saturate rather than wrap.
            Ok(d) => u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            // A wall clock set before 1970: report the origin, the sequencer's
            // max(last + 1, now) keeps stamps moving forward.
            Err(_) => 0,
        }
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading `start_ns`.
    pub fn new(start_ns: u64) -> Self {
        Self {
            now: Arc::new(AtomicU64::new(start_ns)),
        }
    }

    /// Sets the time (backwards is allowed: that is what it is for).
    pub fn set(&self, ns: u64) {
        self.now.store(ns, Ordering::SeqCst);
    }

    /// Moves the time forward by `ns`, saturating at `u64::MAX`.
    pub fn advance(&self, ns: u64) {
        // fetch_update with a closure that always returns Some cannot fail.
        let _ = self
            .now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(ns))
            });
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}
