//! Marks and funding rates derived inside the engine (MARGIN §1 and §9; the formulas are
//! `perpcore_risk::mark`'s), and the time-driven steps they share with funding payments.
//!
//! Sequenced time is the only clock. Before a command runs, every step its timestamp
//! reached is taken, per instrument in id order and in time order:
//!
//! 1. **Samples** up to the instrument's funding time, if that time is reached: a derived
//!    mark samples `mid − index` every `step_ns` (mid from the engine's own book, or from
//!    the feed's best bid and ask when a side of the book is empty) and is then recomputed
//!    once, at the last sample time; a derived funding rate samples the premium index of
//!    the impact bid and ask every `step_ns`. Nothing but a command changes the book or
//!    the index, so the samples of a stretch without commands are all equal: they are
//!    taken in one step (a window push per sample up to the window's length, and O(1)
//!    for the premium average) from the state the previous command left.
//! 2. **The funding settlement** at that time (`funding.rs`), at the mark just derived
//!    and, for a derived rate, the rate of the interval's premium samples.
//! 3. **Samples** up to the command's timestamp, in the new interval.
//!
//! A new mark is set like a recorded one (`MarkPriceSet`, the band, the liquidation
//! check). Samples, windows and next sample times are state, so a replay derives the
//! same marks and rates. A derived instrument refuses `SetMarkPrice`
//! (`MarkPriceDerived`) or `SetFundingRate` (`FundingRateDerived`).

use crate::engine::Engine;
use perpcore_risk::mark::{self, BasisWindow, MarkInputs};
use perpcore_types::*;
use std::sync::Arc;

impl Engine {
    /// Takes every time-driven step `ts_ns` reached (module docs).
    pub(crate) fn advance_time(&mut self, ts_ns: u64, out: &mut Vec<Event>) {
        if ts_ns < self.ix.next_timed_ns {
            return;
        }
        let cfg = Arc::clone(&self.state.config);
        for spec in &cfg.instruments {
            self.start_derivation(spec, ts_ns);
            let m = &self.state.market[spec.id.0 as usize];
            let due = m.next_funding_ns;
            if m.funding_rate.is_some() && due != 0 && due <= ts_ns {
                self.take_samples(spec, due, out);
                self.settle_funding(spec, ts_ns, out);
            }
            self.take_samples(spec, ts_ns, out);
        }
        self.ix.next_timed_ns = crate::indexes::earliest_timed(&self.state);
    }

    /// On the first command: the first sample times (the next multiple of the step after
    /// `ts_ns`), the first funding time of a derived rate (the next multiple of the
    /// interval: 00:00, 08:00 and 16:00 UTC for 8 h) and its rate before any sample.
    fn start_derivation(&mut self, spec: &InstrumentSpec, ts_ns: u64) {
        let next = |step: u64| (ts_ns / step).saturating_add(1).saturating_mul(step);
        let m = &mut self.state.market[spec.id.0 as usize];
        if let MarkMethod::Derived { window, step_ns } = spec.mark_method {
            if m.next_mark_ns == 0 {
                m.next_mark_ns = next(step_ns);
                // The window is 1..=10,000 (the configuration check).
                m.basis = Some(BasisWindow::new(window as usize));
            }
        }
        if let FundingMethod::Derived {
            interest,
            cap,
            step_ns,
            ..
        } = spec.funding_method
        {
            if m.next_premium_ns == 0 {
                m.next_premium_ns = next(step_ns);
                m.next_funding_ns = next(spec.funding_interval_ns);
                m.funding_rate = Some(mark::funding_rate(Rate::ZERO, interest, cap));
            }
        }
    }

    /// The samples due at or before `until` (module docs), then the derived mark.
    fn take_samples(&mut self, spec: &InstrumentSpec, until: u64, out: &mut Vec<Event>) {
        let i = spec.id.0 as usize;
        let mut mark_at = None;
        if let MarkMethod::Derived { step_ns, .. } = spec.mark_method {
            if let Some((n, last)) = due_samples(self.state.market[i].next_mark_ns, step_ns, until)
            {
                let mid = self.mid(spec);
                let m = &mut self.state.market[i];
                if let (Some(mid), Some(index), Some(w)) = (mid, m.index, m.basis.as_mut()) {
                    w.push_n(mid, index, n);
                }
                m.next_mark_ns = last.saturating_add(step_ns);
                mark_at = Some(last);
            }
        }
        if let FundingMethod::Derived {
            interest,
            cap,
            step_ns,
            ..
        } = spec.funding_method
        {
            if let Some((n, last)) =
                due_samples(self.state.market[i].next_premium_ns, step_ns, until)
            {
                let p = self.premium_sample(spec);
                let m = &mut self.state.market[i];
                if let Some(p) = p {
                    m.premium.push_n(p, n);
                }
                m.next_premium_ns = last.saturating_add(step_ns);
                m.funding_rate = Some(mark::funding_rate(m.premium.average(), interest, cap));
            }
        }
        if let Some(at) = mark_at {
            self.derive_mark(spec, at, out);
        }
    }

    /// The mid price: the engine's own book when both sides rest, else the feed's best
    /// bid and ask. Rounded down.
    fn mid(&self, spec: &InstrumentSpec) -> Option<Price> {
        let i = spec.id.0 as usize;
        let book = &self.state.books[i];
        let m = &self.state.market[i];
        let (bid, ask) = match (book.best_bid(), book.best_ask()) {
            (Some(b), Some(a)) => (spec.price_of(b), spec.price_of(a)),
            _ => (m.best_bid?, m.best_ask?),
        };
        // Two prices below 2^62 (the price limit) sum without overflow.
        Some(Price((bid.raw() + ask.raw()).div_euclid(2)))
    }

    /// The premium index of the engine's own book at the impact notional; `None` without
    /// an index price.
    fn premium_sample(&self, spec: &InstrumentSpec) -> Option<Rate> {
        let i = spec.id.0 as usize;
        let index = self.state.market[i].index?;
        let notional = spec.impact_notional()?;
        let book = &self.state.books[i];
        let bid = mark::impact_price(spec, book.levels(Side::Buy), notional);
        let ask = mark::impact_price(spec, book.levels(Side::Sell), notional);
        Some(mark::premium_index(index, bid, ask))
    }

    /// The derived mark at sample time `at`, set as a recorded one would be. Missing terms
    /// are the index (no basis sample yet: a zero basis; no trade yet: the index); without
    /// an index, or with a result off the price grid, the mark stays as it was.
    fn derive_mark(&mut self, spec: &InstrumentSpec, at: u64, out: &mut Vec<Event>) {
        let m = &self.state.market[spec.id.0 as usize];
        let Some(index) = m.index else {
            return;
        };
        let inputs = MarkInputs {
            index,
            funding_rate: m.funding_rate.unwrap_or(Rate::ZERO),
            ns_to_funding: m.next_funding_ns.saturating_sub(at),
            interval_ns: spec.funding_interval_ns,
            basis_average: m.basis.as_ref().and_then(BasisWindow::average).unwrap_or(0),
            last_trade: m.traded.or(m.last_trade).unwrap_or(index),
        };
        let Some(price) = mark::derived_mark(&inputs) else {
            return;
        };
        if crate::prices::check_on_grid(spec, price).is_ok() {
            self.put_mark(spec.id, price, out);
        }
    }
}

/// The samples of a step series whose next sample is at `next` (0: not started) that
/// `until` reached: how many, and the time of the last.
fn due_samples(next: u64, step: u64, until: u64) -> Option<(u64, u64)> {
    if next == 0 || next > until {
        return None;
    }
    let n = (until - next) / step + 1;
    Some((n, next + (n - 1) * step))
}
