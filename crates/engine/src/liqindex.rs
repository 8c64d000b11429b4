//! The liquidation index: which accounts a mark tick must re-check.
//!
//! For every holder of a linear instrument in a single-asset pool (cross or isolated), a
//! safe band of that instrument's mark: the pool's cushion `C = margin balance − MM` is
//! split evenly over its `n` positions, and a position of `q` lots moves `equity − MM`
//! by at most `|q| · lot value · (1 + max mmr)` per unit of price (the bracket's MM is
//! piecewise linear with slope at most the top mmr). While every mark stays inside its
//! band the pool consumes less than `C` and cannot be liquidatable, so a tick only
//! re-checks the accounts whose band it crosses — the cost follows the accounts near
//! liquidation, not every holder. Positions whose pool spans prices the band cannot
//! bound (USD pools, coin-M) and pools already at or below their maintenance margin are
//! checked on every tick of their instruments.
//!
//! Derived state: rebuilt from the accounts on restore, never hashed. Every account a
//! command's events name is marked dirty and re-banded just before the next tick consults
//! the index.

use crate::engine::Engine;
use crate::indexes::DENSE_IDS;
use crate::state::State;
use perpcore_risk::{self as risk};
use perpcore_types::*;
use std::collections::BTreeSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Band {
    /// Re-check when the mark leaves `(lo, hi)`.
    Range(Price, Price),
    /// Re-check on every tick.
    Always,
}

#[derive(Default)]
pub(crate) struct LiqIndex {
    /// Per instrument: re-check when the mark is at or below the price.
    lower: Vec<BTreeSet<(Price, AccountId)>>,
    /// Per instrument: re-check when the mark is at or above the price.
    upper: Vec<BTreeSet<(Price, AccountId)>>,
    always: Vec<BTreeSet<AccountId>>,
    /// Lookup only (to remove an account's entries); never iterated.
    bands: LookupMap<AccountId, Vec<(InstrumentId, Band)>>,
}

impl LiqIndex {
    pub(crate) fn new(instruments: usize) -> LiqIndex {
        LiqIndex {
            lower: vec![BTreeSet::new(); instruments],
            upper: vec![BTreeSet::new(); instruments],
            always: vec![BTreeSet::new(); instruments],
            bands: Default::default(),
        }
    }

    fn remove(&mut self, id: AccountId) {
        for (i, band) in self.bands.remove(&id).unwrap_or_default() {
            let i = i.0 as usize;
            match band {
                Band::Range(lo, hi) => {
                    self.lower[i].remove(&(lo, id));
                    self.upper[i].remove(&(hi, id));
                }
                Band::Always => {
                    self.always[i].remove(&id);
                }
            }
        }
    }

    fn insert(&mut self, id: AccountId, bands: Vec<(InstrumentId, Band)>) {
        for (i, band) in &bands {
            let i = i.0 as usize;
            match *band {
                Band::Range(lo, hi) => {
                    self.lower[i].insert((lo, id));
                    self.upper[i].insert((hi, id));
                }
                Band::Always => {
                    self.always[i].insert(id);
                }
            }
        }
        if !bands.is_empty() {
            self.bands.insert(id, bands);
        }
    }

    /// Accounts a tick to `mark` on instrument `i` must re-check, in ascending id.
    pub(crate) fn candidates(&self, i: InstrumentId, mark: Price) -> BTreeSet<AccountId> {
        let i = i.0 as usize;
        let mut c: BTreeSet<AccountId> = self.always[i].clone();
        c.extend(self.lower[i].range((mark, AccountId(0))..).map(|(_, a)| *a));
        c.extend(
            self.upper[i]
                .range(..=(mark, AccountId(u64::MAX)))
                .map(|(_, a)| *a),
        );
        c
    }
}

/// The accounts marked dirty since the index was last used, each once. Membership is a
/// bit per id for the dense ids (every command's events are marked, so the test must be
/// cheap, and a repeat costs nothing) and a hash set for the few others (insurance funds,
/// sparse client ids). Derived state; the sets are lookup only, the list is sorted before
/// use, so no hash order reaches anything.
#[derive(Default)]
pub(crate) struct DirtySet {
    /// In marking order.
    ids: Vec<AccountId>,
    /// Bit `id` is set when `id < DENSE_IDS` is in `ids`.
    dense: Vec<u64>,
    /// The members of `ids` at or above `DENSE_IDS`. Never iterated.
    sparse: LookupSet<AccountId>,
}

impl DirtySet {
    #[inline]
    pub(crate) fn insert(&mut self, id: AccountId) {
        if id.0 < DENSE_IDS {
            let (w, bit) = ((id.0 / 64) as usize, 1u64 << (id.0 % 64));
            if w >= self.dense.len() {
                self.dense.resize(w + 1, 0);
            }
            if self.dense[w] & bit != 0 {
                return;
            }
            self.dense[w] |= bit;
        } else if !self.sparse.insert(id) {
            return;
        }
        self.ids.push(id);
    }

    /// Empty the set (keeping its allocations).
    fn clear(&mut self) {
        // Every set bit is a member, so zeroing the members' words clears them all.
        for id in self.ids.drain(..) {
            if id.0 < DENSE_IDS {
                self.dense[(id.0 / 64) as usize] = 0;
            }
        }
        self.sparse.clear();
    }
}

impl LiqIndex {
    /// The index of every account of `state`, banded at the state's marks.
    pub(crate) fn rebuild(state: &State) -> LiqIndex {
        let mut index = LiqIndex::new(state.config.instruments.len());
        for k in 0..state.accounts.len() {
            index.reband(state, k);
        }
        index
    }

    /// Recompute account `k`'s bands on every instrument it holds.
    fn reband(&mut self, state: &State, k: usize) {
        let id = state.accounts[k].id;
        self.remove(id);
        self.insert(id, bands_of(state, k));
    }

    #[cfg(feature = "reference-paths")]
    /// What the index holds for each account, without the band edges (which depend on
    /// the mark each account was last banded at): sorted (account, instrument, re-check
    /// on every tick). For comparing a live index with a rebuilt one.
    pub(crate) fn shape(&self) -> Vec<(AccountId, InstrumentId, bool)> {
        let mut out: Vec<(AccountId, InstrumentId, bool)> = Vec::new();
        for (i, set) in self.always.iter().enumerate() {
            let i = InstrumentId(u32::try_from(i).expect("instrument ids are u32"));
            out.extend(set.iter().map(|&a| (a, i, true)));
        }
        for (i, set) in self.lower.iter().enumerate() {
            let i = InstrumentId(u32::try_from(i).expect("instrument ids are u32"));
            out.extend(set.iter().map(|&(_, a)| (a, i, false)));
        }
        out.sort_unstable();
        out
    }
}

impl Engine {
    /// Recompute account `k`'s bands on every instrument it holds.
    pub(crate) fn reindex(&mut self, k: usize) {
        self.ix.liq_index.reband(&self.state, k);
    }

    /// Re-band every account marked dirty since the index was last used, in ascending id.
    pub(crate) fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.ix.dirty);
        dirty.ids.sort_unstable();
        debug_assert!(
            dirty.ids.windows(2).all(|w| w[0] < w[1]),
            "dirty set holds an account twice"
        );
        for &id in &dirty.ids {
            if let Some(k) = self.idx(id) {
                self.reindex(k);
            }
        }
        dirty.clear();
        self.ix.dirty = dirty;
    }
}

/// Account `k`'s safe bands (see the module docs).
fn bands_of(state: &State, k: usize) -> Vec<(InstrumentId, Band)> {
    let a = &state.accounts[k];
    let mut out = Vec::new();
    if a.system {
        return out;
    }
    for leg in &a.legs {
        if leg.is_flat() {
            continue;
        }
        let spec = &state.config.instruments[leg.instrument.0 as usize];
        let Some(mark) = state.marks[leg.instrument.0 as usize] else {
            continue;
        };
        let pooled = leg.mode == MarginMode::Cross && risk::is_pooled(a.asset_mode, spec);
        if pooled || spec.is_inverse() {
            out.push((leg.instrument, Band::Always));
            continue;
        }
        let (cushion, n) = if leg.mode == MarginMode::Isolated {
            (
                leg.isolated_margin + risk::upnl(leg, spec, mark)
                    - risk::position_mm(leg, spec, mark),
                1i128,
            )
        } else {
            let p = risk::pool(
                a,
                spec.settle_asset,
                &state.config.instruments,
                &state.marks,
            );
            (
                p.margin_balance() - p.cross_mm,
                p.cross_positions.max(1) as i128,
            )
        };
        if !cushion.is_positive() {
            out.push((leg.instrument, Band::Always));
            continue;
        }
        let max_mmr = spec.brackets.iter().map(|b| b.mmr.raw()).max().unwrap_or(0) as i128;
        let per_price_unit = spec.linear_value(leg.qty.abs(), Price(1)).raw(); // money raw per price raw
        let den = n * per_price_unit * (RATE_SCALE as i128 + max_mmr);
        let d = div_round(cushion.raw() * RATE_SCALE as i128, den, Rounding::Floor);
        let d = i64::try_from(d).unwrap_or(i64::MAX);
        let lo = Price(mark.raw().saturating_sub(d));
        let hi = Price(mark.raw().saturating_add(d));
        out.push((leg.instrument, Band::Range(lo, hi)));
    }
    out
}
