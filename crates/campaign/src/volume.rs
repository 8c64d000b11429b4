//! Campaign trading volume and tiers.
//!
//! Owns: the eligibility filter for fills and the per-main-account volume sum
//! ([`compute_volume`]), plus the tier flags (share tier, draw tier).
//!
//! Counted fills: `parent == None` (main account), `contract == UsdtM`,
//! `cross_margin == true`, `start_ns <= ts_ns < end_ns`. Sub-account fills
//! (`parent == Some(_)`) are never counted, neither for the sub-account nor for its
//! parent. A tier is reached when `volume >= threshold`.
//!
//! Must never: use floats, let `HashMap` order reach output (results come from a
//! `BTreeMap`, ascending account id), read clocks, or panic on bad input.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::CampaignError;
use crate::money::serialize_amount;

/// Margin-currency family of a perpetual contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ContractFamily {
    /// USDT-margined linear perpetual. The only family counted by the campaign.
    UsdtM,
    /// USDC-margined linear perpetual (not counted).
    UsdcM,
    /// Coin-margined inverse perpetual (not counted).
    CoinM,
}

/// One executed fill, as seen by the campaign audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillRecord {
    /// Execution time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Account that traded.
    pub account: u64,
    /// `None` = main account; `Some(main)` = sub-account of `main`.
    pub parent: Option<u64>,
    /// Contract family traded.
    pub contract: ContractFamily,
    /// `true` = cross margin, `false` = isolated margin.
    pub cross_margin: bool,
    /// Traded notional in quote money, fixed-point scale 10^12 (1 USDT = 10^12).
    /// Must be `>= 0` (it is a magnitude, for buys and sells alike).
    pub notional: i128,
}

/// Parameters of the volume computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VolumeParams {
    /// Inclusive window start, ns.
    pub start_ns: u64,
    /// Exclusive window end, ns. `start_ns == end_ns` is an empty window.
    pub end_ns: u64,
    /// Volume needed for the share tier (fixed-point, scale 10^12), e.g. 500 USDT.
    #[serde(serialize_with = "serialize_amount")]
    pub share_threshold: i128,
    /// Volume needed to enter the draw (fixed-point, scale 10^12), e.g. 1000 USDT.
    #[serde(serialize_with = "serialize_amount")]
    pub draw_threshold: i128,
}

impl VolumeParams {
    /// Checks the window and thresholds.
    pub fn validate(&self) -> Result<(), CampaignError> {
        if self.start_ns > self.end_ns {
            return Err(CampaignError::InvalidWindow {
                start_ns: self.start_ns,
                end_ns: self.end_ns,
            });
        }
        for (name, value) in [
            ("share_threshold", self.share_threshold),
            ("draw_threshold", self.draw_threshold),
        ] {
            if value < 0 {
                return Err(CampaignError::NegativeThreshold { name, value });
            }
        }
        Ok(())
    }

    /// `true` if the fill is counted towards its account's campaign volume.
    #[must_use]
    pub fn counts(&self, fill: &FillRecord) -> bool {
        fill.parent.is_none()
            && fill.contract == ContractFamily::UsdtM
            && fill.cross_margin
            && fill.ts_ns >= self.start_ns
            && fill.ts_ns < self.end_ns
    }
}

/// Campaign volume of one main account and the tiers it reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountVolume {
    /// Main account id.
    pub account: u64,
    /// Counted volume, fixed-point scale 10^12; serialised as exact decimal text.
    #[serde(serialize_with = "serialize_amount")]
    pub volume: i128,
    /// `volume >= share_threshold`.
    pub reached_share: bool,
    /// `volume >= draw_threshold`: the account enters the draw.
    pub reached_draw: bool,
}

/// Sums counted volume per main account.
///
/// Returns one entry per main account with at least one counted fill, ascending by
/// account id (accounts whose fills were all filtered out are not listed).
///
/// Input checks, over *every* fill (counted or not), so a corrupt feed is never
/// half-audited: notional must be `>= 0`; an account may not be its own parent; an
/// account must carry the same `parent` on every fill. Volume sums are overflow-checked.
pub fn compute_volume<I>(
    fills: I,
    params: &VolumeParams,
) -> Result<Vec<AccountVolume>, CampaignError>
where
    I: IntoIterator,
    I::Item: Borrow<FillRecord>,
{
    params.validate()?;
    let mut parents: BTreeMap<u64, Option<u64>> = BTreeMap::new();
    let mut totals: BTreeMap<u64, i128> = BTreeMap::new();
    for (index, fill) in fills.into_iter().enumerate() {
        let fill: &FillRecord = fill.borrow();
        if fill.notional < 0 {
            return Err(CampaignError::NegativeNotional {
                index,
                account: fill.account,
                notional: fill.notional,
            });
        }
        if fill.parent == Some(fill.account) {
            return Err(CampaignError::SelfParent {
                index,
                account: fill.account,
            });
        }
        let first = *parents.entry(fill.account).or_insert(fill.parent);
        if first != fill.parent {
            return Err(CampaignError::InconsistentParent {
                index,
                account: fill.account,
                first,
                second: fill.parent,
            });
        }
        if !params.counts(fill) {
            continue;
        }
        let total = totals.entry(fill.account).or_insert(0);
        *total = total
            .checked_add(fill.notional)
            .ok_or(CampaignError::VolumeOverflow {
                account: fill.account,
            })?;
    }
    Ok(totals
        .into_iter()
        .map(|(account, volume)| AccountVolume {
            account,
            volume,
            reached_share: volume >= params.share_threshold,
            reached_draw: volume >= params.draw_threshold,
        })
        .collect())
}
