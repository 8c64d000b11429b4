//! perpcore-campaign: the promotions audit library (trading-volume tiers and the
//! block-hash lucky draw).
//!
//! Owns: the pure, deterministic pipeline `fills -> per-main-account volume -> tiers ->
//! draw winners -> report (table / JSON)`.
//!
//! Must never: use floating point (money is `i128` fixed-point, scale 10^12, see
//! [`money`]), let `HashMap` iteration order reach output (only `BTreeMap`/`BTreeSet`
//! and sorted `Vec`s), read clocks, randomness, files or the network, or panic on bad
//! input (every rejection is a typed [`CampaignError`]).
//!
//! Same inputs produce the same [`CampaignResult`], table and JSON, byte for byte.
//! See `docs/CAMPAIGN.md` for the rules and the documented policy choices.

pub mod draw;
pub mod error;
pub mod money;
pub mod report;
pub mod volume;

pub use draw::{
    account_digits, match_level, select_winners, DrawNumber, Winner, ACCOUNT_DIGITS,
    MAX_DRAW_ACCOUNT_ID, MAX_LEVEL,
};
pub use error::CampaignError;
pub use money::{format_amount, parse_amount, SCALE, SCALE_DIGITS};
pub use report::{run_campaign, CampaignParams, CampaignResult};
pub use volume::{compute_volume, AccountVolume, ContractFamily, FillRecord, VolumeParams};
