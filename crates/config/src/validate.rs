//! The rules every [`Config`] must satisfy before an engine is built from it.
//!
//! Owns [`validate`] and the bracket and lot checks shared with the file and CSV loaders.
//! Each error names the field path as spelled in the file format
//! (`instruments[2].brackets[1].mmr: must be in (0, 1)`). It only reads: it never fixes a
//! value up, never rounds, never uses a float, and never panics — in particular it bounds
//! every number before any arithmetic that could overflow (`bracket_cums`, `qty_of`).

use crate::error::{ConfigError, Result};
use perpcore_types::{
    bracket_cums, AssetSpec, Config, ContractKind, FundingMethod, InstrumentSpec, MarginConvention,
    MarkMethod, Money, Qty, Rate, MONEY_SCALE, RATE_SCALE,
};
use std::collections::HashMap;

/// Largest accepted notional floor or cap: 10^15 units of the settlement asset. Bounds
/// `floor × mmr` far below `i128::MAX` (10^27 × 10^10 raw).
pub const MAX_NOTIONAL_UNITS: i128 = 1_000_000_000_000_000;
/// Most brackets one instrument may have.
pub const MAX_BRACKETS: usize = 64;
/// A lot must be a multiple of 0.0001 (10^4 raw `Qty` units): the spec's lot factor.
pub const LOT_QUANTUM_RAW: i64 = 10_000;

/// Fee rates must lie in (−1 %, 5 %).
const FEE_MIN_EXCL: Rate = Rate(-RATE_SCALE / 100);
const FEE_MAX_EXCL: Rate = Rate(RATE_SCALE / 20);
/// Liquidation fee in [0, 10 %).
const LIQ_FEE_MAX_EXCL: Rate = Rate(RATE_SCALE / 10);

/// Builds the path of field `name` of bracket `n`.
pub(crate) type PathFn<'a> = dyn Fn(usize, &str) -> String + 'a;

/// One bracket before its `cum` is known.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BracketRow {
    pub floor: Money,
    pub cap: Money,
    pub max_leverage: u32,
    pub mmr: Rate,
}

/// Check a whole configuration. Ids must be dense (asset `i` has `AssetId(i)`,
/// instrument `j` has `InstrumentId(j)`).
pub fn validate(config: &Config) -> Result<()> {
    check_assets(&config.assets)?;
    if u32::try_from(config.instruments.len()).is_err() {
        return Err(ConfigError::new("instruments", "too many instruments"));
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (j, inst) in config.instruments.iter().enumerate() {
        let p = |name: &str| format!("instruments[{j}].{name}");
        if inst.id.0 as usize != j {
            return Err(ConfigError::new(
                p("id"),
                format!("is {} but must equal its index {j}", inst.id),
            ));
        }
        check_symbol(&inst.symbol, &p("symbol"))?;
        if let Some(first) = seen.insert(inst.symbol.as_str(), j) {
            return Err(ConfigError::new(
                p("symbol"),
                format!(
                    "duplicate symbol {:?} (also instruments[{first}])",
                    inst.symbol
                ),
            ));
        }
        check_instrument(config, inst, &p)?;
    }
    Ok(())
}

pub(crate) fn check_assets(assets: &[AssetSpec]) -> Result<()> {
    if assets.len() > usize::from(u16::MAX) + 1 {
        return Err(ConfigError::new("assets", "more than 65536 assets"));
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, a) in assets.iter().enumerate() {
        let path = format!("assets[{i}].symbol");
        if a.id.0 as usize != i {
            return Err(ConfigError::new(
                format!("assets[{i}].id"),
                format!("is {} but must equal its index {i}", a.id),
            ));
        }
        check_symbol(&a.symbol, &path)?;
        if let Some(c) = &a.collateral {
            check_collateral(i, c)?;
        }
        if let Some(first) = seen.insert(a.symbol.as_str(), i) {
            return Err(ConfigError::new(
                path,
                format!("duplicate symbol {:?} (also assets[{first}])", a.symbol),
            ));
        }
    }
    Ok(())
}

fn check_collateral(i: usize, c: &perpcore_types::CollateralSpec) -> Result<()> {
    let p = |name: &str| format!("assets[{i}].collateral.{name}");
    if c.tiers.is_empty() {
        return Err(ConfigError::new(p("tiers"), "must not be empty"));
    }
    if c.tiers.len() > 64 {
        return Err(ConfigError::new(p("tiers"), "more than 64 tiers"));
    }
    let limit = Money::from_int(1_000_000_000_000_000);
    for (t, tier) in c.tiers.iter().enumerate() {
        let f = p(&format!("tiers[{t}].floor"));
        if t == 0 && !tier.floor.is_zero() {
            return Err(ConfigError::new(f, "the first tier must start at 0"));
        }
        if t > 0 && tier.floor <= c.tiers[t - 1].floor {
            return Err(ConfigError::new(f, "floors must increase"));
        }
        if tier.floor > limit {
            return Err(ConfigError::new(f, "above 10^15"));
        }
        if tier.ratio.is_negative() || tier.ratio > Rate::ONE {
            return Err(ConfigError::new(
                p(&format!("tiers[{t}].ratio")),
                "must be in [0, 1]",
            ));
        }
    }
    for (name, v) in [
        ("individual_cap", c.individual_cap),
        ("platform_cap", c.platform_cap),
        ("auto_exchange_threshold", c.auto_exchange_threshold),
    ] {
        if let Some(v) = v {
            if !v.is_positive() || v > limit {
                return Err(ConfigError::new(p(name), "must be in (0, 10^15]"));
            }
        }
    }
    if c.daily_interest.is_negative() || c.daily_interest > Rate::ONE {
        return Err(ConfigError::new(p("daily_interest"), "must be in [0, 1]"));
    }
    if c.interest_free.is_negative() || c.interest_free > limit {
        return Err(ConfigError::new(
            p("interest_free"),
            "must be in [0, 10^15]",
        ));
    }
    Ok(())
}

fn check_symbol(symbol: &str, path: &str) -> Result<()> {
    if symbol.is_empty() {
        return Err(ConfigError::new(path, "must not be empty"));
    }
    if symbol.trim() != symbol || symbol.chars().any(char::is_control) {
        return Err(ConfigError::new(
            path,
            format!("{symbol:?} has surrounding whitespace or control characters"),
        ));
    }
    Ok(())
}

/// Lot size: positive and a multiple of 0.0001.
pub(crate) fn check_lot_size(lot: Qty, path: &str) -> Result<()> {
    if !lot.is_positive() {
        return Err(ConfigError::new(path, format!("{lot} must be positive")));
    }
    if lot.0 % LOT_QUANTUM_RAW != 0 {
        return Err(ConfigError::new(
            path,
            format!("{lot} is not a multiple of 0.0001"),
        ));
    }
    Ok(())
}

/// The largest open-order limit a configuration may set: it bounds the work of one
/// cancel-all or liquidation (every open order of the account on the instrument).
pub const MAX_OPEN_ORDERS_LIMIT: u32 = 10_000;

/// An open-order limit: between 1 and [`MAX_OPEN_ORDERS_LIMIT`].
pub(crate) fn max_open_orders(n: u32, path: &str) -> Result<u32> {
    if n == 0 || n > MAX_OPEN_ORDERS_LIMIT {
        return Err(ConfigError::new(
            path,
            format!("{n} is not between 1 and {MAX_OPEN_ORDERS_LIMIT}"),
        ));
    }
    Ok(n)
}

/// A funding interval: 1, 4 or 8 hours (the intervals Binance uses).
pub(crate) fn funding_interval(ns: u64, path: &str) -> Result<u64> {
    use perpcore_types::HOUR_NS;
    if ![HOUR_NS, 4 * HOUR_NS, 8 * HOUR_NS].contains(&ns) {
        return Err(ConfigError::new(
            path,
            format!("{ns} ns is not 1, 4 or 8 hours"),
        ));
    }
    Ok(ns)
}

/// A sample step: at least 1 ms and a divisor of the funding interval, so that a funding
/// time is always a sample time.
fn check_step(step_ns: u64, interval_ns: u64, path: &str) -> Result<()> {
    if step_ns < 1_000_000 || !interval_ns.is_multiple_of(step_ns) {
        return Err(ConfigError::new(
            path,
            format!("{step_ns} ns is not at least 1 ms dividing the funding interval"),
        ));
    }
    Ok(())
}

/// The derived mark's and funding rate's parameters.
fn check_methods(inst: &InstrumentSpec, p: &dyn Fn(&str) -> String) -> Result<()> {
    if let MarkMethod::Derived { window, step_ns } = inst.mark_method {
        if !(1..=MAX_MARK_WINDOW).contains(&window) {
            return Err(ConfigError::new(
                p("mark.window"),
                format!("{window} is not between 1 and {MAX_MARK_WINDOW} samples"),
            ));
        }
        check_step(step_ns, inst.funding_interval_ns, &p("mark.step_ms"))?;
    }
    if let FundingMethod::Derived {
        impact_margin,
        interest,
        cap,
        step_ns,
    } = inst.funding_method
    {
        if !impact_margin.is_positive() || impact_margin > Money::from_int(1_000_000_000) {
            return Err(ConfigError::new(
                p("funding.impact_margin"),
                "must be positive and at most 10^9",
            ));
        }
        if !cap.is_positive() || cap >= Rate::ONE {
            return Err(ConfigError::new(p("funding.cap"), "must lie in (0, 1)"));
        }
        if interest.abs() > cap {
            return Err(ConfigError::new(
                p("funding.interest"),
                "must not exceed the cap in magnitude",
            ));
        }
        check_step(step_ns, inst.funding_interval_ns, &p("funding.step_ms"))?;
    }
    Ok(())
}

/// Most samples a derived mark's moving average may hold.
pub const MAX_MARK_WINDOW: u32 = 10_000;

fn check_instrument(
    config: &Config,
    inst: &InstrumentSpec,
    p: &dyn Fn(&str) -> String,
) -> Result<()> {
    // Asset references.
    let asset = |name: &str, id: perpcore_types::AssetId| -> Result<&AssetSpec> {
        config.asset(id).ok_or_else(|| {
            ConfigError::new(p(name), format!("asset id {id} is not in the asset table"))
        })
    };
    let base = asset("base", inst.base_asset)?;
    let quote = asset("quote", inst.quote_asset)?;
    asset("settle", inst.settle_asset)?;
    max_open_orders(inst.max_open_orders, &p("max_open_orders"))?;
    funding_interval(inst.funding_interval_ns, &p("funding_interval_hours"))?;
    check_methods(inst, p)?;
    if inst.convention == MarginConvention::Bybit && !inst.fee_to_close {
        return Err(ConfigError::new(
            p("fee_to_close"),
            "the bybit convention includes the fee to close (leave it out or set it true)",
        ));
    }
    if inst.base_asset == inst.quote_asset {
        return Err(ConfigError::new(
            p("quote"),
            format!("must differ from base ({})", base.symbol),
        ));
    }
    match inst.kind {
        ContractKind::Linear => {
            if inst.settle_asset != inst.quote_asset {
                return Err(ConfigError::new(
                    p("settle"),
                    format!(
                        "a linear instrument settles in its quote asset ({})",
                        quote.symbol
                    ),
                ));
            }
        }
        ContractKind::Inverse { contract_value } => {
            if !contract_value.is_positive() {
                return Err(ConfigError::new(
                    p("contract_value"),
                    format!("{contract_value} must be positive"),
                ));
            }
            if contract_value.0 > MAX_NOTIONAL_UNITS * MONEY_SCALE {
                return Err(ConfigError::new(
                    p("contract_value"),
                    format!("{contract_value} is too large"),
                ));
            }
            if inst.settle_asset != inst.base_asset {
                return Err(ConfigError::new(
                    p("settle"),
                    format!(
                        "an inverse instrument settles in its base asset ({})",
                        base.symbol
                    ),
                ));
            }
        }
    }

    // Sizes.
    if !inst.tick_size.is_positive() {
        return Err(ConfigError::new(
            p("tick_size"),
            format!("{} must be positive", inst.tick_size),
        ));
    }
    check_lot_size(inst.lot_size, &p("lot_size"))?;
    if inst.min_qty.0 <= 0 {
        return Err(ConfigError::new(p("min_qty"), "must be positive"));
    }
    if inst.min_qty > inst.max_qty {
        return Err(ConfigError::new(
            p("min_qty"),
            format!(
                "{} lots is above max_qty ({} lots)",
                inst.min_qty.0, inst.max_qty.0
            ),
        ));
    }
    if inst.max_qty.0.checked_mul(inst.lot_size.0).is_none() {
        return Err(ConfigError::new(
            p("max_qty"),
            "is too large to express in base units",
        ));
    }

    // Leverage and brackets.
    if inst.max_leverage == 0 {
        return Err(ConfigError::new(p("max_leverage"), "must be positive"));
    }
    let bp = |n: usize, name: &str| p(&format!("brackets[{n}].{name}"));
    if inst.brackets.is_empty() {
        return Err(ConfigError::new(p("brackets"), "must not be empty"));
    }
    let rows: Vec<BracketRow> = inst
        .brackets
        .iter()
        .map(|b| BracketRow {
            floor: b.notional_floor,
            cap: b.notional_cap,
            max_leverage: b.max_leverage,
            mmr: b.mmr,
        })
        .collect();
    check_bracket_structure(&rows, inst.max_leverage, &bp)?;
    let pairs: Vec<(Money, Rate)> = rows.iter().map(|r| (r.floor, r.mmr)).collect();
    for (n, (b, cum)) in inst.brackets.iter().zip(bracket_cums(&pairs)).enumerate() {
        if b.cum != cum {
            return Err(ConfigError::new(
                bp(n, "cum"),
                format!(
                    "{} does not equal the computed maintenance amount {cum}",
                    b.cum
                ),
            ));
        }
    }

    // Rates.
    for (name, fee) in [("maker_fee", inst.maker_fee), ("taker_fee", inst.taker_fee)] {
        if fee <= FEE_MIN_EXCL || fee >= FEE_MAX_EXCL {
            return Err(ConfigError::new(
                p(name),
                format!("{fee} must be in (-0.01, 0.05)"),
            ));
        }
    }
    if !inst.price_band.is_positive() || inst.price_band >= Rate::ONE {
        return Err(ConfigError::new(
            p("price_band"),
            format!("{} must be in (0, 1)", inst.price_band),
        ));
    }
    if inst.liquidation_fee.is_negative() || inst.liquidation_fee >= LIQ_FEE_MAX_EXCL {
        return Err(ConfigError::new(
            p("liquidation_fee"),
            format!("{} must be in [0, 0.1)", inst.liquidation_fee),
        ));
    }
    Ok(())
}

/// Everything about a bracket list except `cum`: non-empty, first floor 0, contiguous
/// (`floor_n == cap_{n−1}`), `cap > floor`, caps bounded, mmr in (0, 1) and strictly
/// increasing, leverage positive, at most the instrument's and strictly decreasing, and
/// `mmr < 1 / max_leverage` (maintenance below initial). After this, `bracket_cums`
/// cannot overflow.
pub(crate) fn check_bracket_structure(
    rows: &[BracketRow],
    instrument_max_leverage: u32,
    path: &PathFn<'_>,
) -> Result<()> {
    if rows.is_empty() {
        // Callers report the empty list itself; this is a second line of defence.
        return Err(ConfigError::new(
            path(0, "floor"),
            "brackets must not be empty",
        ));
    }
    if rows.len() > MAX_BRACKETS {
        return Err(ConfigError::new(
            path(MAX_BRACKETS, "floor"),
            format!("more than {MAX_BRACKETS} brackets"),
        ));
    }
    let max_notional = Money(MAX_NOTIONAL_UNITS * MONEY_SCALE);
    for (n, b) in rows.iter().enumerate() {
        if n == 0 {
            if !b.floor.is_zero() {
                return Err(ConfigError::new(
                    path(n, "floor"),
                    format!("{} but the first bracket must start at 0", b.floor),
                ));
            }
        } else if b.floor != rows[n - 1].cap {
            return Err(ConfigError::new(
                path(n, "floor"),
                format!(
                    "{} but must equal the previous bracket's cap {} (brackets are contiguous)",
                    b.floor,
                    rows[n - 1].cap
                ),
            ));
        }
        if b.cap <= b.floor {
            return Err(ConfigError::new(
                path(n, "cap"),
                format!("{} must be above the floor {}", b.cap, b.floor),
            ));
        }
        if b.cap > max_notional {
            return Err(ConfigError::new(
                path(n, "cap"),
                format!("{} is above the limit {MAX_NOTIONAL_UNITS}", b.cap),
            ));
        }
        if b.max_leverage == 0 {
            return Err(ConfigError::new(
                path(n, "max_leverage"),
                "must be positive",
            ));
        }
        if b.max_leverage > instrument_max_leverage {
            return Err(ConfigError::new(
                path(n, "max_leverage"),
                format!(
                    "{} is above the instrument's max_leverage {instrument_max_leverage}",
                    b.max_leverage
                ),
            ));
        }
        if n > 0 && b.max_leverage >= rows[n - 1].max_leverage {
            return Err(ConfigError::new(
                path(n, "max_leverage"),
                format!(
                    "{} must be below the previous bracket's {} (leverage decreases)",
                    b.max_leverage,
                    rows[n - 1].max_leverage
                ),
            ));
        }
        if !b.mmr.is_positive() || b.mmr >= Rate::ONE {
            return Err(ConfigError::new(
                path(n, "mmr"),
                format!("{} must be in (0, 1)", b.mmr),
            ));
        }
        if n > 0 && b.mmr <= rows[n - 1].mmr {
            return Err(ConfigError::new(
                path(n, "mmr"),
                format!(
                    "{} must be above the previous bracket's {} (mmr increases)",
                    b.mmr,
                    rows[n - 1].mmr
                ),
            ));
        }
        // mmr < 1 / L  <=>  mmr × L < 1 (exact in integers).
        if i128::from(b.mmr.0) * i128::from(b.max_leverage) >= i128::from(RATE_SCALE) {
            return Err(ConfigError::new(
                path(n, "mmr"),
                format!(
                    "{} is not below the initial margin rate 1/{} (maintenance must be below initial)",
                    b.mmr, b.max_leverage
                ),
            ));
        }
    }
    Ok(())
}
