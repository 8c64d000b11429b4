//! Everything the engine derives from its [`State`]: lookup indexes and caches that make
//! commands fast but hold no information of their own. Never hashed or snapshotted;
//! [`Indexes::rebuild`] recomputes them from a state (on restore, and in the property
//! test that compares a rebuild with the live indexes after random streams).

use crate::liqindex::{DirtySet, LiqIndex};
use crate::state::State;
use perpcore_types::*;

/// Account id → slot in `State::accounts`. Ids below `DENSE_IDS` (exchanges number
/// accounts densely from 1) are found in a vector, others (the insurance funds' ids at
/// the top of the range, sparse client schemes) in a hash map. Lookup only; never
/// iterated, so no order reaches an output.
#[derive(Clone, Debug, Default)]
pub(crate) struct AccountIndex {
    dense: Vec<u32>,
    sparse: LookupMap<AccountId, u32>,
}

/// Ids below this are indexed densely (at most 4 MiB of index).
pub(crate) const DENSE_IDS: u64 = 1 << 20;
const NO_SLOT: u32 = u32::MAX;

/// The dense index of an id below [`DENSE_IDS`] (2^20 fits any `usize` we build for).
#[inline]
fn dense_slot(id: AccountId) -> usize {
    debug_assert!(id.0 < DENSE_IDS);
    usize::try_from(id.0).expect("a dense account id fits a usize")
}

impl AccountIndex {
    #[inline]
    pub(crate) fn get(&self, id: AccountId) -> Option<u32> {
        if id.0 < DENSE_IDS {
            self.dense
                .get(dense_slot(id))
                .copied()
                .filter(|&k| k != NO_SLOT)
        } else {
            self.sparse.get(&id).copied()
        }
    }

    /// Returns the slot `id` had before, if any (then nothing changed).
    pub(crate) fn insert(&mut self, id: AccountId, slot: u32) -> Option<u32> {
        assert!(slot != NO_SLOT, "account slot space exhausted");
        if let Some(prev) = self.get(id) {
            return Some(prev);
        }
        if id.0 < DENSE_IDS {
            let i = dense_slot(id);
            if self.dense.len() <= i {
                self.dense.resize(i + 1, NO_SLOT);
            }
            self.dense[i] = slot;
        } else {
            self.sparse.insert(id, slot);
        }
        None
    }
}

/// The derived part of an engine.
pub struct Indexes {
    /// Account id → slot in `State::accounts`.
    pub(crate) account_index: AccountIndex,
    /// Per instrument, the limit-price band derived from its mark.
    pub(crate) bands: Vec<(PriceTicks, PriceTicks)>,
    /// Per instrument: accounts holding a position, sorted by id (liquidation checks walk it).
    pub(crate) holders: Vec<Vec<AccountId>>,
    /// The asset named "USDT", if configured (derived from the configuration).
    pub(crate) usdt: Option<AssetId>,
    /// USD price per asset derived from the indexes (`multi::usd_prices`).
    pub(crate) usd_cache: Vec<Option<IndexPrice>>,
    /// Which accounts a mark tick re-checks (see `liqindex`).
    pub(crate) liq_index: LiqIndex,
    /// Accounts whose cushion may have changed since they were last banded; re-banded
    /// just before the index is next consulted.
    pub(crate) dirty: DirtySet,
    /// The earliest time-driven step over every instrument (`u64::MAX`: none): a funding
    /// time to settle, a derived mark's or funding rate's next sample (0 before the first
    /// command of a configuration that derives any), so that a command checks one number,
    /// not every instrument.
    pub(crate) next_timed_ns: u64,
    /// Waiting conditional orders per instrument, [on the mark, on the last trade].
    pub(crate) triggers: Vec<[crate::conditional::Triggers; 2]>,
    /// How many conditional orders each account has waiting per instrument (the
    /// open-order limit counts them).
    pub(crate) conditional_counts: crate::conditional::ConditionalCounts,
    /// The waiting conditional orders of each account (cancel-all and liquidation visit
    /// only these).
    pub(crate) conditionals_by_account: crate::conditional::ConditionalsByAccount,
}

/// The earliest time-driven step in `state` (see `Indexes::next_timed_ns`).
pub(crate) fn earliest_timed(state: &State) -> u64 {
    state
        .config
        .instruments
        .iter()
        .zip(&state.market)
        .flat_map(|(spec, m)| {
            let derived_mark = matches!(spec.mark_method, MarkMethod::Derived { .. });
            let derived_rate = matches!(spec.funding_method, FundingMethod::Derived { .. });
            let funding = derived_rate || (m.funding_rate.is_some() && m.next_funding_ns > 0);
            [
                derived_mark.then_some(m.next_mark_ns),
                derived_rate.then_some(m.next_premium_ns),
                funding.then_some(m.next_funding_ns),
            ]
        })
        .flatten()
        .min()
        .unwrap_or(u64::MAX)
}

impl Indexes {
    /// Every index of `state`, as the engine would hold it after the state's commands
    /// (the liquidation index banded at the state's marks, nothing dirty). Fails on a
    /// state no engine could have reached (an account twice, a leg on an unknown
    /// instrument, index prices out of range).
    pub fn rebuild(state: &State) -> Result<Indexes, crate::RestoreError> {
        let config = &state.config;
        let instruments = config.instruments.len();
        let (triggers, conditional_counts, conditionals_by_account) =
            crate::conditional::rebuild_triggers(state)?;
        let mut account_index = AccountIndex::default();
        let mut holders = vec![Vec::new(); instruments];
        for (k, a) in state.accounts.iter().enumerate() {
            let slot = u32::try_from(k).map_err(|_| crate::RestoreError::TooManyAccounts)?;
            if account_index.insert(a.id, slot).is_some() {
                return Err(crate::RestoreError::DuplicateAccount(a.id));
            }
            for leg in &a.legs {
                let h = holders
                    .get_mut(leg.instrument.0 as usize)
                    .ok_or(crate::RestoreError::UnknownInstrument(leg.instrument))?;
                // A hedge account's two legs make it one holder.
                if !leg.qty.is_zero() && h.last() != Some(&a.id) {
                    h.push(a.id);
                }
            }
        }
        for h in &mut holders {
            h.sort_unstable();
        }
        let mut bands = vec![(PriceTicks(0), PriceTicks(0)); instruments];
        for (i, m) in state.marks.iter().enumerate() {
            if let Some(m) = m {
                bands[i] = crate::prices::band(&config.instruments[i], *m);
            }
        }
        let usdt = config.asset_by_symbol("USDT").map(|a| a.id);
        let usd_cache = crate::multi::usd_prices(usdt, &state.index_usdt, &state.index_usd)
            .map_err(|_| crate::RestoreError::UsdPriceOutOfRange)?;
        Ok(Indexes {
            account_index,
            bands,
            holders,
            usdt,
            usd_cache,
            liq_index: LiqIndex::rebuild(state),
            dirty: DirtySet::default(),
            next_timed_ns: earliest_timed(state),
            triggers,
            conditional_counts,
            conditionals_by_account,
        })
    }
}

#[cfg(feature = "reference-paths")]
impl Indexes {
    /// Where `self` (an engine's live indexes, nothing dirty) differs from `rebuilt`
    /// (`Indexes::rebuild` of the same state). The liquidation index is compared by shape
    /// (which accounts are banded on which instruments, and which are checked on every
    /// tick): its band edges depend on the mark each account was last banded at.
    pub(crate) fn compare(&self, rebuilt: &Indexes, state: &State) -> Result<(), String> {
        for (k, a) in state.accounts.iter().enumerate() {
            let (live, fresh) = (
                self.account_index.get(a.id),
                rebuilt.account_index.get(a.id),
            );
            if live != fresh || live.map(|s| s as usize) != Some(k) {
                return Err(format!(
                    "account {} slot: live {live:?}, rebuilt {fresh:?}",
                    a.id
                ));
            }
        }
        if self.bands != rebuilt.bands {
            return Err(format!(
                "price bands: live {:?}, rebuilt {:?}",
                self.bands, rebuilt.bands
            ));
        }
        if self.holders != rebuilt.holders {
            return Err(format!(
                "holders: live {:?}, rebuilt {:?}",
                self.holders, rebuilt.holders
            ));
        }
        if self.triggers != rebuilt.triggers {
            return Err("conditional-order triggers differ from a rebuild".to_string());
        }
        for c in state.conditionals.values() {
            let key = (c.order.account, c.order.instrument);
            if self.conditional_counts.get(&key) != rebuilt.conditional_counts.get(&key) {
                return Err(format!("conditional count of {key:?}"));
            }
        }
        if self.conditional_counts.len() != rebuilt.conditional_counts.len() {
            return Err("conditional counts: stale entries".to_string());
        }
        for c in state.conditionals.values() {
            let a = c.order.account;
            if self.conditionals_by_account.get(&a) != rebuilt.conditionals_by_account.get(&a) {
                return Err(format!("conditional orders of account {a}"));
            }
        }
        if self.conditionals_by_account.len() != rebuilt.conditionals_by_account.len() {
            return Err("conditional orders by account: stale entries".to_string());
        }
        if self.next_timed_ns != rebuilt.next_timed_ns {
            return Err(format!(
                "next timed step: live {}, rebuilt {}",
                self.next_timed_ns, rebuilt.next_timed_ns
            ));
        }
        if (self.usdt, &self.usd_cache) != (rebuilt.usdt, &rebuilt.usd_cache) {
            return Err(format!(
                "USD prices: live {:?}, rebuilt {:?}",
                self.usd_cache, rebuilt.usd_cache
            ));
        }
        let (live, fresh) = (self.liq_index.shape(), rebuilt.liq_index.shape());
        if live != fresh {
            return Err(format!(
                "liquidation index: live {live:?}, rebuilt {fresh:?}"
            ));
        }
        Ok(())
    }
}
