//! The human-written file format (TOML, or the same structure as JSON) and its exact
//! conversion to and from [`Config`].
//!
//! Owns [`ConfigFile`] and friends: assets by symbol, instruments referencing assets by
//! symbol, every decimal as a *string* (`"0.1"`), sizes in decimal units converted to lots
//! exactly, bracket `cum` optional (computed when absent, checked when present). It parses
//! text with the types crate's exact parsers and never through a float (a JSON or TOML
//! float where a decimal belongs is refused), and never panics on bad input. The checks
//! that apply to any [`Config`] live in `validate`; this module adds only what can be seen
//! in the file (unknown symbols, non-multiples of the lot, bad decimal text).

use crate::error::{ConfigError, Result};
use crate::validate::{self, BracketRow, PathFn};
use perpcore_types::{
    bracket_cums, format_fixed, AssetId, AssetSpec, Bracket, CollateralSpec, CollateralTier,
    Config, ContractKind, FundingMethod, InstrumentId, InstrumentSpec, MarginConvention,
    MarkMethod, Money, Price, Qty, QtyLots, Rate, TierUnit, DEFAULT_FUNDING_INTERVAL_NS,
    DEFAULT_MARK_STEP_NS, DEFAULT_MARK_WINDOW, DEFAULT_MAX_OPEN_ORDERS, DEFAULT_PREMIUM_STEP_NS,
    HOUR_NS, PRICE_DECIMALS,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Asset `i` of this list becomes `AssetId(i)`.
    #[serde(default)]
    pub assets: Vec<AssetFile>,
    /// Instrument `j` of this list becomes `InstrumentId(j)`.
    #[serde(default)]
    pub instruments: Vec<InstrumentFile>,
}

/// `[[assets]]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetFile {
    pub symbol: String,
    /// Collateral and lending parameters (multi-asset mode, unified account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collateral: Option<CollateralFile>,
}

/// `[assets.collateral]`: decimals as strings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollateralFile {
    /// `"usd"` (tier floors are USD values) or `"quantity"` (coin quantities).
    pub unit: TierUnit,
    pub tiers: Vec<TierFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub individual_cap: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_cap: Option<String>,
    /// Borrowing rate per day.
    #[serde(default = "zero")]
    pub daily_interest: String,
    /// Interest-free quota (quantity) for loans caused by unrealized losses.
    #[serde(default = "zero")]
    pub interest_free: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_exchange_threshold: Option<String>,
}

fn zero() -> String {
    "0".into()
}

/// One collateral tier: from `floor` on, each unit counts at `ratio`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierFile {
    pub floor: String,
    pub ratio: String,
}

/// Contract family as written in the file: `kind = "linear"` or `kind = "inverse"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KindFile {
    Linear,
    Inverse,
}

/// `[[instruments]]`. Decimals are strings; sizes are in base units (linear) or contracts
/// (inverse), not lots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentFile {
    pub symbol: String,
    pub kind: KindFile,
    /// USD per contract; inverse only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract_value: Option<String>,
    /// Asset symbols.
    pub base: String,
    pub quote: String,
    /// Defaults to `quote` for linear and `base` for inverse (the only allowed values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle: Option<String>,
    pub tick_size: String,
    pub lot_size: String,
    pub min_qty: String,
    pub max_qty: String,
    /// Defaults to the first bracket's `max_leverage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_leverage: Option<u32>,
    pub maker_fee: String,
    pub taker_fee: String,
    pub price_band: String,
    pub liquidation_fee: String,
    /// Add the estimated fee to close to IM and MM. Absent: implied by the convention
    /// (set for `bybit`, unset for `binance`); `bybit` with `false` is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee_to_close: Option<bool>,
    /// Most open orders per account on this instrument; defaults to 200 (Binance's
    /// limit), at most 10,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_open_orders: Option<u32>,
    /// Hours between funding times: 1, 4 or 8 (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funding_interval_hours: Option<u32>,
    /// May be left empty and filled from a Binance bracket table
    /// ([`crate::fill_brackets`]) before conversion.
    #[serde(default)]
    pub brackets: Vec<BracketFile>,
    /// `[instruments.mark]`: absent for a recorded mark (the feed's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<MarkFile>,
    /// `[instruments.funding]`: absent for a recorded funding rate (the feed's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funding: Option<FundingFile>,
    /// `binance` (the default) or `bybit`: docs/MARGIN.md, "Conventions".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convention: Option<MarginConvention>,
}

/// `[instruments.mark]`: `method = "derived"` (or `"recorded"`, the default), with
/// Binance's window of 300 one-second samples unless given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkFile {
    pub method: MethodFile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_ms: Option<u64>,
}

/// `[instruments.funding]`: `method = "derived"` (or `"recorded"`, the default); the
/// impact margin (default 200), the interest per interval (default 0.01% per 8 h, scaled
/// to the interval), the cap (default 75% of the first bracket's mmr) and the premium
/// sample step (default 5 s).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FundingFile {
    pub method: MethodFile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impact_margin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_ms: Option<u64>,
}

/// Where a price or rate comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodFile {
    Recorded,
    Derived,
}

/// `[[instruments.brackets]]`: notional floor and cap in the settlement asset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BracketFile {
    pub floor: String,
    pub cap: String,
    pub max_leverage: u32,
    pub mmr: String,
    /// Maintenance amount; computed when absent, and must equal the computed value when
    /// present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cum: Option<String>,
}

/// Hint appended to serde messages about floats.
fn explain_serde(msg: String) -> String {
    if msg.contains("floating point") {
        format!("{msg} (decimals are written as strings, e.g. \"0.1\"; floats are never parsed)")
    } else {
        msg
    }
}

impl ConfigFile {
    /// Parse TOML text (structure only; see [`config_from_file`] for the checks).
    pub fn from_toml_str(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| ConfigError::new("toml", explain_serde(e.to_string())))
    }
    /// Parse JSON text of the same structure.
    pub fn from_json_str(text: &str) -> Result<Self> {
        serde_json::from_str(text)
            .map_err(|e| ConfigError::new("json", explain_serde(e.to_string())))
    }
    /// Take the structure from an already-parsed JSON value (e.g. a scenario's inline
    /// `config` object).
    pub fn from_json_value(value: &serde_json::Value) -> Result<Self> {
        Self::deserialize(value).map_err(|e| ConfigError::new("json", explain_serde(e.to_string())))
    }
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| ConfigError::new("toml", e.to_string()))
    }
    pub fn to_json_string(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| ConfigError::new("json", e.to_string()))
    }
}

fn money(field: String, text: &str) -> Result<Money> {
    Money::parse(text).map_err(|e| ConfigError::num(field, e))
}
fn rate(field: String, text: &str) -> Result<Rate> {
    Rate::parse(text).map_err(|e| ConfigError::num(field, e))
}
fn price(field: String, text: &str) -> Result<Price> {
    Price::parse(text).map_err(|e| ConfigError::num(field, e))
}
fn qty(field: String, text: &str) -> Result<Qty> {
    Qty::parse(text).map_err(|e| ConfigError::num(field, e))
}

/// `qty` in whole lots of `lot` (already checked positive), or an error naming `field`.
fn to_lots(field: String, q: Qty, lot: Qty) -> Result<QtyLots> {
    if q.0 % lot.0 != 0 {
        return Err(ConfigError::new(
            field,
            format!("{q} is not a multiple of lot_size {lot}"),
        ));
    }
    Ok(QtyLots(q.0 / lot.0))
}

/// Parse the brackets of one instrument, check their structure, compute the `cum`s and
/// compare them with any given in the file.
pub(crate) fn brackets_from_rows(
    rows: &[BracketRow],
    given_cums: &[Option<Money>],
    instrument_max_leverage: u32,
    path: &PathFn<'_>,
) -> Result<Vec<Bracket>> {
    validate::check_bracket_structure(rows, instrument_max_leverage, path)?;
    let pairs: Vec<(Money, Rate)> = rows.iter().map(|r| (r.floor, r.mmr)).collect();
    let cums = bracket_cums(&pairs);
    let mut out = Vec::with_capacity(rows.len());
    for (n, (row, cum)) in rows.iter().zip(cums).enumerate() {
        if let Some(Some(given)) = given_cums.get(n) {
            if *given != cum {
                return Err(ConfigError::new(
                    path(n, "cum"),
                    format!("{given} does not equal the computed maintenance amount {cum}"),
                ));
            }
        }
        out.push(Bracket {
            notional_floor: row.floor,
            notional_cap: row.cap,
            max_leverage: row.max_leverage,
            mmr: row.mmr,
            cum,
        });
    }
    Ok(out)
}

/// Convert the file structure to a validated [`Config`].
pub fn config_from_file(file: &ConfigFile) -> Result<Config> {
    if file.assets.len() > usize::from(u16::MAX) + 1 {
        return Err(ConfigError::new("assets", "more than 65536 assets"));
    }
    if u32::try_from(file.instruments.len()).is_err() {
        return Err(ConfigError::new("instruments", "too many instruments"));
    }
    let mut assets = Vec::with_capacity(file.assets.len());
    let mut by_symbol: HashMap<&str, AssetId> = HashMap::new();
    for (i, a) in file.assets.iter().enumerate() {
        let id = AssetId(i as u16); // bounded above
        by_symbol.entry(a.symbol.as_str()).or_insert(id);
        let collateral = match &a.collateral {
            None => None,
            Some(c) => Some(collateral_from_file(i, c)?),
        };
        assets.push(AssetSpec {
            id,
            symbol: a.symbol.clone(),
            collateral,
        });
    }
    // Duplicate and empty symbols are reported by `validate` with both indices; check the
    // assets first so that an unknown-symbol error is never caused by a duplicate.
    validate::check_assets(&assets)?;

    let mut instruments = Vec::with_capacity(file.instruments.len());
    for (j, f) in file.instruments.iter().enumerate() {
        instruments.push(instrument_from_file(j, f, &by_symbol)?);
    }
    let config = Config {
        assets,
        instruments,
    };
    validate::validate(&config)?;
    Ok(config)
}

fn collateral_from_file(i: usize, c: &CollateralFile) -> Result<CollateralSpec> {
    let p = |name: &str| format!("assets[{i}].collateral.{name}");
    let mut tiers = Vec::with_capacity(c.tiers.len());
    for (t, tier) in c.tiers.iter().enumerate() {
        tiers.push(CollateralTier {
            floor: money(p(&format!("tiers[{t}].floor")), &tier.floor)?,
            ratio: rate(p(&format!("tiers[{t}].ratio")), &tier.ratio)?,
        });
    }
    let opt = |name: &str, v: &Option<String>| -> Result<Option<Money>> {
        v.as_deref().map(|t| money(p(name), t)).transpose()
    };
    Ok(CollateralSpec {
        unit: c.unit,
        tiers,
        individual_cap: opt("individual_cap", &c.individual_cap)?,
        platform_cap: opt("platform_cap", &c.platform_cap)?,
        daily_interest: rate(p("daily_interest"), &c.daily_interest)?,
        interest_free: money(p("interest_free"), &c.interest_free)?,
        auto_exchange_threshold: opt("auto_exchange_threshold", &c.auto_exchange_threshold)?,
    })
}

fn instrument_from_file(
    j: usize,
    f: &InstrumentFile,
    by_symbol: &HashMap<&str, AssetId>,
) -> Result<InstrumentSpec> {
    let p = |name: &str| format!("instruments[{j}].{name}");
    let asset = |name: &str, sym: &str| -> Result<AssetId> {
        by_symbol
            .get(sym)
            .copied()
            .ok_or_else(|| ConfigError::new(p(name), format!("unknown asset symbol {sym:?}")))
    };
    let base_asset = asset("base", &f.base)?;
    let quote_asset = asset("quote", &f.quote)?;
    let settle_asset = match &f.settle {
        Some(s) => asset("settle", s)?,
        None => match f.kind {
            KindFile::Linear => quote_asset,
            KindFile::Inverse => base_asset,
        },
    };
    let kind = match (f.kind, &f.contract_value) {
        (KindFile::Linear, None) => ContractKind::Linear,
        (KindFile::Linear, Some(_)) => {
            return Err(ConfigError::new(
                p("contract_value"),
                "only inverse instruments have a contract_value",
            ))
        }
        (KindFile::Inverse, Some(cv)) => ContractKind::Inverse {
            contract_value: money(p("contract_value"), cv)?,
        },
        (KindFile::Inverse, None) => {
            return Err(ConfigError::new(
                p("contract_value"),
                "required for inverse instruments",
            ))
        }
    };
    let tick_size = price(p("tick_size"), &f.tick_size)?;
    let lot_size = qty(p("lot_size"), &f.lot_size)?;
    validate::check_lot_size(lot_size, &p("lot_size"))?;
    let min_q = qty(p("min_qty"), &f.min_qty)?;
    let max_q = qty(p("max_qty"), &f.max_qty)?;
    let min_qty = to_lots(p("min_qty"), min_q, lot_size)?;
    let max_qty = to_lots(p("max_qty"), max_q, lot_size)?;

    let bp = |n: usize, name: &str| format!("instruments[{j}].brackets[{n}].{name}");
    if f.brackets.is_empty() {
        return Err(ConfigError::new(p("brackets"), "must not be empty"));
    }
    let max_leverage = f.max_leverage.unwrap_or(f.brackets[0].max_leverage);
    let mut rows = Vec::with_capacity(f.brackets.len());
    let mut given = Vec::with_capacity(f.brackets.len());
    for (n, b) in f.brackets.iter().enumerate() {
        rows.push(BracketRow {
            floor: money(bp(n, "floor"), &b.floor)?,
            cap: money(bp(n, "cap"), &b.cap)?,
            max_leverage: b.max_leverage,
            mmr: rate(bp(n, "mmr"), &b.mmr)?,
        });
        given.push(match &b.cum {
            Some(c) => Some(money(bp(n, "cum"), c)?),
            None => None,
        });
    }
    if max_leverage == 0 {
        return Err(ConfigError::new(p("max_leverage"), "must be positive"));
    }
    let brackets = brackets_from_rows(&rows, &given, max_leverage, &bp)?;
    let convention = f.convention.unwrap_or_default();

    let mut spec = InstrumentSpec {
        id: InstrumentId(j as u32), // bounded by the caller
        symbol: f.symbol.clone(),
        kind,
        base_asset,
        quote_asset,
        settle_asset,
        tick_size,
        lot_size,
        min_qty,
        max_qty,
        max_leverage,
        brackets,
        maker_fee: rate(p("maker_fee"), &f.maker_fee)?,
        taker_fee: rate(p("taker_fee"), &f.taker_fee)?,
        price_band: rate(p("price_band"), &f.price_band)?,
        liquidation_fee: rate(p("liquidation_fee"), &f.liquidation_fee)?,
        fee_to_close: f
            .fee_to_close
            .unwrap_or(convention == MarginConvention::Bybit),
        max_open_orders: validate::max_open_orders(
            f.max_open_orders.unwrap_or(DEFAULT_MAX_OPEN_ORDERS),
            &p("max_open_orders"),
        )?,
        funding_interval_ns: validate::funding_interval(
            f.funding_interval_hours
                .map_or(DEFAULT_FUNDING_INTERVAL_NS, |h| {
                    u64::from(h).saturating_mul(HOUR_NS)
                }),
            &p("funding_interval_hours"),
        )?,
        mark_method: MarkMethod::Recorded,
        funding_method: FundingMethod::Recorded,
        convention,
    };
    set_methods(&mut spec, f, &p)?;
    Ok(spec)
}

/// Milliseconds as nanoseconds, refusing an overflow.
fn ms(field: String, v: u64) -> Result<u64> {
    v.checked_mul(1_000_000)
        .ok_or_else(|| ConfigError::new(field, format!("{v} ms is too long")))
}

/// The mark and funding methods of `f` (defaults in [`MarkFile`], [`FundingFile`]),
/// checked by `validate`.
fn set_methods(
    this: &mut InstrumentSpec,
    f: &InstrumentFile,
    p: &dyn Fn(&str) -> String,
) -> Result<()> {
    if let Some(m) = f.mark.as_ref().filter(|m| m.method == MethodFile::Derived) {
        this.mark_method = MarkMethod::Derived {
            window: m.window.unwrap_or(DEFAULT_MARK_WINDOW),
            step_ns: match m.step_ms {
                Some(v) => ms(p("mark.step_ms"), v)?,
                None => DEFAULT_MARK_STEP_NS,
            },
        };
    }
    if let Some(g) = f
        .funding
        .as_ref()
        .filter(|g| g.method == MethodFile::Derived)
    {
        let interest = match &g.interest {
            Some(t) => rate(p("funding.interest"), t)?,
            // 0.01% per 8 h, in proportion for 4 h and 1 h (exact: 8 divides by both
            // in Rate units, 10^6 / 8 = 125,000).
            None => Rate(
                i64::try_from(
                    i128::from(Rate::parse("0.0001").expect("literal").raw())
                        * i128::from(this.funding_interval_ns)
                        / i128::from(DEFAULT_FUNDING_INTERVAL_NS),
                )
                .expect("at most 0.01%"),
            ),
        };
        let cap = match &g.cap {
            Some(t) => rate(p("funding.cap"), t)?,
            // 75% of the first bracket's mmr (Binance's rule; 0.3% at 0.4%).
            None => Rate(this.brackets[0].mmr.raw() * 3 / 4),
        };
        this.funding_method = FundingMethod::Derived {
            impact_margin: match &g.impact_margin {
                Some(t) => money(p("funding.impact_margin"), t)?,
                None => Money::from_int(200),
            },
            interest,
            cap,
            step_ns: match g.step_ms {
                Some(v) => ms(p("funding.step_ms"), v)?,
                None => DEFAULT_PREMIUM_STEP_NS,
            },
        };
    }
    Ok(())
}

/// The file structure of a [`Config`] (every `cum` written out, `settle` and
/// `max_leverage` explicit). Converting the result back gives an equal `Config` when the
/// input was valid. Never panics: an id with no asset is written as `#<id>`.
pub fn file_from_config(config: &Config) -> ConfigFile {
    let sym = |id: AssetId| {
        config
            .asset(id)
            .map(|a| a.symbol.clone())
            .unwrap_or_else(|| format!("#{id}"))
    };
    let size = |lots: QtyLots, lot: Qty| {
        format_fixed(i128::from(lots.0) * i128::from(lot.0), PRICE_DECIMALS, 0)
    };
    ConfigFile {
        assets: config
            .assets
            .iter()
            .map(|a| AssetFile {
                symbol: a.symbol.clone(),
                collateral: a.collateral.as_ref().map(|c| CollateralFile {
                    unit: c.unit,
                    tiers: c
                        .tiers
                        .iter()
                        .map(|t| TierFile {
                            floor: t.floor.to_string(),
                            ratio: t.ratio.to_string(),
                        })
                        .collect(),
                    individual_cap: c.individual_cap.map(|m| m.to_string()),
                    platform_cap: c.platform_cap.map(|m| m.to_string()),
                    daily_interest: c.daily_interest.to_string(),
                    interest_free: c.interest_free.to_string(),
                    auto_exchange_threshold: c.auto_exchange_threshold.map(|m| m.to_string()),
                }),
            })
            .collect(),
        instruments: config
            .instruments
            .iter()
            .map(|i| {
                let (kind, contract_value) = match i.kind {
                    ContractKind::Linear => (KindFile::Linear, None),
                    ContractKind::Inverse { contract_value } => {
                        (KindFile::Inverse, Some(contract_value.to_string()))
                    }
                };
                InstrumentFile {
                    symbol: i.symbol.clone(),
                    kind,
                    contract_value,
                    base: sym(i.base_asset),
                    quote: sym(i.quote_asset),
                    settle: Some(sym(i.settle_asset)),
                    tick_size: i.tick_size.to_string(),
                    lot_size: i.lot_size.to_string(),
                    min_qty: size(i.min_qty, i.lot_size),
                    max_qty: size(i.max_qty, i.lot_size),
                    max_leverage: Some(i.max_leverage),
                    maker_fee: i.maker_fee.to_string(),
                    taker_fee: i.taker_fee.to_string(),
                    price_band: i.price_band.to_string(),
                    liquidation_fee: i.liquidation_fee.to_string(),
                    fee_to_close: Some(i.fee_to_close),
                    max_open_orders: Some(i.max_open_orders),
                    funding_interval_hours: u32::try_from(i.funding_interval_ns / HOUR_NS).ok(),
                    brackets: i.brackets.iter().map(bracket_file).collect(),
                    mark: match i.mark_method {
                        MarkMethod::Recorded => None,
                        MarkMethod::Derived { window, step_ns } => Some(MarkFile {
                            method: MethodFile::Derived,
                            window: Some(window),
                            step_ms: Some(step_ns / 1_000_000),
                        }),
                    },
                    funding: match i.funding_method {
                        FundingMethod::Recorded => None,
                        FundingMethod::Derived {
                            impact_margin,
                            interest,
                            cap,
                            step_ns,
                        } => Some(FundingFile {
                            method: MethodFile::Derived,
                            impact_margin: Some(impact_margin.to_string()),
                            interest: Some(interest.to_string()),
                            cap: Some(cap.to_string()),
                            step_ms: Some(step_ns / 1_000_000),
                        }),
                    },
                    convention: Some(i.convention),
                }
            })
            .collect(),
    }
}

pub(crate) fn bracket_file(b: &Bracket) -> BracketFile {
    BracketFile {
        floor: b.notional_floor.to_string(),
        cap: b.notional_cap.to_string(),
        max_leverage: b.max_leverage,
        mmr: b.mmr.to_string(),
        cum: Some(b.cum.to_string()),
    }
}
