//! One scenario line: JSON object → typed [`Line`].
//!
//! Owns the scenario text format (command names, field names, defaults) and the exact
//! conversion of its decimal strings to the engine's integer units: prices to ticks and
//! sizes to lots of the instrument, amounts to [`Money`]. It refuses, with a message naming
//! the field, anything it cannot convert exactly: unknown fields, floats where a decimal
//! string belongs, off-tick prices, off-lot sizes, unknown symbols.
//!
//! It must never round, never touch a float, never panic on any input, and never decide a
//! business rule: a negative amount or a zero quantity is passed to the engine, whose
//! rejection (with its stable code) is part of the scenario's output.

use perpcore_types::{
    AccountId, AssetId, AssetMode, Command, ConditionalKind, ConditionalOrder, Config, IndexPrice,
    IndexQuote, InstrumentSpec, MarginMode, Money, NewOrder, OrderId, OrderType, PositionMode,
    PositionSide, Price, PriceTicks, Qty, QtyLots, Rate, Side, StpMode, TimeInForce, WorkingPrice,
};
use serde_json::{Map, Value};

/// Where the configuration comes from (the first line).
#[derive(Clone, Debug, PartialEq)]
pub enum ConfigSource {
    /// A `.json` or `.toml` file, relative to the scenario file's directory.
    Path(String),
    /// The configuration object itself (same structure as the JSON config file).
    Inline(Value),
    /// `perpcore_config::default_config()`.
    Default,
}

/// An assertion on the state (an account report, or engine-wide values).
#[derive(Clone, Debug, PartialEq)]
pub struct Expect {
    pub account: Option<AccountId>,
    pub field: String,
    pub check: Check,
}

/// What an expectation checks.
#[derive(Clone, Debug, PartialEq)]
pub enum Check {
    /// The value equals this (decimals compared by value).
    Equals(Value),
    /// The path does not exist (e.g. a flat position is absent from the report).
    Absent,
}

/// An assertion on the events of the last engine command.
#[derive(Clone, Debug, PartialEq)]
pub struct ExpectEvent {
    /// The event's tag, e.g. `trade`, `rejected`.
    pub event: String,
    /// Only events with this reject code (for `rejected`).
    pub code: Option<u64>,
    /// How many matching events there must be.
    pub count: Option<u64>,
    /// Which matching event `field` is read from (0 = first).
    pub index: u64,
    /// Field of that event and the value it must have.
    pub field: Option<(String, Value)>,
}

/// A parsed scenario line.
#[derive(Clone, Debug, PartialEq)]
pub enum Line {
    Config(ConfigSource),
    /// An engine command with its timestamp in nanoseconds.
    Engine {
        ts_ns: u64,
        command: Command,
    },
    Report(AccountId),
    Expect(Expect),
    ExpectEvent(ExpectEvent),
    Hash,
    Comment,
}

type Res<T> = Result<T, String>;

/// Parse one line of text into a JSON object and return it with its `cmd`. A key that
/// appears twice in any object of the line is refused (JSON parsers keep the last one,
/// silently: a scenario or an inline config would not mean what it says).
pub fn parse_object(text: &str) -> Res<(String, Map<String, Value>)> {
    serde_json::from_str::<UniqueKeys>(text)
        .map_err(|e| format!("not valid JSON: {}", strip_pos(&e)))?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {}", strip_pos(&e)))?;
    let Value::Object(map) = value else {
        return Err("a scenario line must be a JSON object".into());
    };
    let cmd = match map.get("cmd") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(format!("\"cmd\" must be a string, got {other}")),
        None => return Err("missing \"cmd\"".into()),
    };
    Ok((cmd, map))
}

/// A JSON value read only to check that no object in it repeats a key.
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut seen = std::collections::BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    // determinism-ok: the duplicate-key pass only walks the line's structure; the number is
    // dropped here and parsed (or refused as a float) by the line's own reader.
    #[rustfmt::skip]
    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> { // determinism-ok: dropped
        Ok(UniqueKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
}

/// serde_json appends "at line 1 column N"; the column is useful, the line is not.
fn strip_pos(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => format!("{} (column {})", &s[..i], e.column()),
        None => s,
    }
}

/// Parse the configuration line.
pub fn parse_config(map: &Map<String, Value>) -> Res<ConfigSource> {
    let f = Fields::new("config", map, &["path", "inline", "default"])?;
    let path = f.opt_str("path")?;
    let inline = map.get("inline");
    let default = f.bool_or("default", false)?;
    match (path, inline, default) {
        (Some(p), None, false) => Ok(ConfigSource::Path(p.to_string())),
        (None, Some(v @ Value::Object(_)), false) => Ok(ConfigSource::Inline(v.clone())),
        (None, Some(v), false) => Err(format!("field \"inline\" must be an object, got {v}")),
        (None, None, true) => Ok(ConfigSource::Default),
        _ => Err(
            "config takes exactly one of \"path\" (a .json/.toml file), \"inline\" (an object) \
             or \"default\": true"
                .into(),
        ),
    }
}

/// Parse any line after the configuration.
pub fn parse_line(cmd: &str, map: &Map<String, Value>, config: &Config) -> Res<Line> {
    let engine = |allowed: &[&str]| -> Res<(Fields<'_>, u64)> {
        let mut all = vec!["ts"];
        all.extend_from_slice(allowed);
        let f = Fields::new(cmd, map, &all)?;
        let ts = f.u64("ts")?;
        Ok((f, ts))
    };
    let r = Resolver { config };
    let line = match cmd {
        "config" => return Err("only the first line may be a config line".into()),
        "comment" => {
            Fields::new(cmd, map, &["text"])?;
            Line::Comment
        }
        "hash" => {
            Fields::new(cmd, map, &[])?;
            Line::Hash
        }
        "report" => {
            let f = Fields::new(cmd, map, &["account"])?;
            Line::Report(f.account("account")?)
        }
        "expect" => {
            let f = Fields::new(cmd, map, &["account", "field", "equals", "absent"])?;
            let account = f.opt_u64("account")?.map(AccountId);
            let field = f.str("field")?.to_string();
            let check = match (map.get("equals"), f.bool_or("absent", false)?) {
                (Some(v), false) => Check::Equals(v.clone()),
                (None, true) => Check::Absent,
                _ => {
                    return Err("expect takes exactly one of \"equals\" or \"absent\": true".into())
                }
            };
            Line::Expect(Expect {
                account,
                field,
                check,
            })
        }
        "expect_event" => {
            let f = Fields::new(
                cmd,
                map,
                &["event", "code", "count", "index", "field", "equals"],
            )?;
            let field = match (f.opt_str("field")?, map.get("equals")) {
                (Some(name), Some(v)) => Some((name.to_string(), v.clone())),
                (None, None) => None,
                _ => return Err("\"field\" and \"equals\" go together".into()),
            };
            Line::ExpectEvent(ExpectEvent {
                event: f.str("event")?.to_string(),
                code: f.opt_u64("code")?,
                count: f.opt_u64("count")?,
                index: f.opt_u64("index")?.unwrap_or(0),
                field,
            })
        }
        "create_account" => {
            let (f, ts) = engine(&["account", "parent"])?;
            cmd_line(
                ts,
                Command::CreateAccount {
                    account: f.account("account")?,
                    parent: f.opt_u64("parent")?.map(AccountId),
                },
            )
        }
        "deposit" | "withdraw" => {
            let (f, ts) = engine(&["account", "asset", "amount"])?;
            let account = f.account("account")?;
            let asset = r.asset(f.str("asset")?)?;
            let amount = money(&f, "amount")?;
            let command = if cmd == "deposit" {
                Command::Deposit {
                    account,
                    asset,
                    amount,
                }
            } else {
                Command::Withdraw {
                    account,
                    asset,
                    amount,
                }
            };
            cmd_line(ts, command)
        }
        "transfer" => {
            let (f, ts) = engine(&["from", "to", "asset", "amount"])?;
            cmd_line(
                ts,
                Command::Transfer {
                    from: f.account("from")?,
                    to: f.account("to")?,
                    asset: r.asset(f.str("asset")?)?,
                    amount: money(&f, "amount")?,
                },
            )
        }
        "leverage" => {
            let (f, ts) = engine(&["account", "symbol", "leverage"])?;
            let leverage = f.u64("leverage")?;
            let leverage = u32::try_from(leverage)
                .map_err(|_| format!("field \"leverage\": {leverage} is out of range"))?;
            cmd_line(
                ts,
                Command::SetLeverage {
                    account: f.account("account")?,
                    instrument: r.instrument(f.str("symbol")?)?.id,
                    leverage,
                },
            )
        }
        "margin_mode" => {
            let (f, ts) = engine(&["account", "symbol", "mode"])?;
            let mode = match f.str("mode")? {
                "cross" => MarginMode::Cross,
                "isolated" => MarginMode::Isolated,
                other => return Err(bad_enum("mode", other, "cross, isolated")),
            };
            cmd_line(
                ts,
                Command::SetMarginMode {
                    account: f.account("account")?,
                    instrument: r.instrument(f.str("symbol")?)?.id,
                    mode,
                },
            )
        }
        "isolated_margin" => {
            let (f, ts) = engine(&["account", "symbol", "delta", "position_side"])?;
            let position_side = match f.opt_str("position_side")?.unwrap_or("both") {
                "both" => PositionSide::Both,
                "long" => PositionSide::Long,
                "short" => PositionSide::Short,
                other => return Err(bad_enum("position_side", other, "both, long, short")),
            };
            cmd_line(
                ts,
                Command::AdjustIsolatedMargin {
                    account: f.account("account")?,
                    instrument: r.instrument(f.str("symbol")?)?.id,
                    delta: money(&f, "delta")?,
                    position_side,
                },
            )
        }
        "position_mode" => {
            let (f, ts) = engine(&["account", "mode"])?;
            let mode = match f.str("mode")? {
                "one_way" => PositionMode::OneWay,
                "hedge" => PositionMode::Hedge,
                other => return Err(bad_enum("mode", other, "one_way, hedge")),
            };
            cmd_line(
                ts,
                Command::SetPositionMode {
                    account: f.account("account")?,
                    mode,
                },
            )
        }
        "order" => {
            let (f, ts) = engine(&[
                "account",
                "symbol",
                "id",
                "side",
                "type",
                "tif",
                "price",
                "qty",
                "reduce_only",
                "close_position",
                "stp",
            ])?;
            cmd_line(ts, Command::PlaceOrder(order(&f, &r)?))
        }
        "conditional" => {
            let (f, ts) = engine(&[
                "account",
                "symbol",
                "id",
                "side",
                "kind",
                "trigger",
                "callback",
                "working",
                "price",
                "tif",
                "qty",
                "reduce_only",
                "close_position",
                "stp",
            ])?;
            cmd_line(ts, Command::PlaceConditional(conditional(&f, &r)?))
        }
        "cancel" => {
            let (f, ts) = engine(&["account", "id"])?;
            cmd_line(
                ts,
                Command::CancelOrder {
                    account: f.account("account")?,
                    order_id: OrderId(f.u64("id")?),
                },
            )
        }
        "cancel_all" => {
            let (f, ts) = engine(&["account", "symbol"])?;
            let instrument = match f.opt_str("symbol")? {
                Some(s) => Some(r.instrument(s)?.id),
                None => None,
            };
            cmd_line(
                ts,
                Command::CancelAll {
                    account: f.account("account")?,
                    instrument,
                },
            )
        }
        "amend" => {
            let (f, ts) = engine(&["account", "symbol", "id", "price", "qty"])?;
            // The symbol is needed to convert price and size; the engine finds the
            // instrument from the order itself.
            let spec = r.instrument(f.str("symbol")?)?;
            let price = match f.opt_str("price")? {
                Some(t) => Some(price_ticks(spec, t)?),
                None => None,
            };
            let qty = match f.opt_str("qty")? {
                Some(t) => Some(qty_lots(spec, t)?),
                None => None,
            };
            if price.is_none() && qty.is_none() {
                return Err("amend needs \"price\", \"qty\" or both".into());
            }
            cmd_line(
                ts,
                Command::AmendOrder {
                    account: f.account("account")?,
                    order_id: OrderId(f.u64("id")?),
                    price,
                    qty,
                },
            )
        }
        "asset_index" => {
            let (f, ts) = engine(&["asset", "quote", "price"])?;
            let quote = match f.str("quote")? {
                "usdt" => IndexQuote::Usdt,
                "usd" => IndexQuote::Usd,
                other => return Err(bad_enum("quote", other, "usdt, usd")),
            };
            // Up to 12 decimals: a stablecoin index such as 1.000296667 is exact.
            let price =
                IndexPrice::parse(f.str("price")?).map_err(|e| format!("field \"price\": {e}"))?;
            cmd_line(
                ts,
                Command::SetAssetIndex {
                    asset: r.asset(f.str("asset")?)?,
                    quote,
                    price,
                },
            )
        }
        "asset_mode" => {
            let (f, ts) = engine(&["account", "mode"])?;
            let mode = match f.str("mode")? {
                "single" => AssetMode::Single,
                "multi" => AssetMode::Multi,
                "unified" => AssetMode::Unified,
                other => return Err(bad_enum("mode", other, "single, multi, unified")),
            };
            cmd_line(
                ts,
                Command::SetAssetMode {
                    account: f.account("account")?,
                    mode,
                },
            )
        }
        "funding_rate" => {
            let (f, ts) = engine(&["symbol", "rate", "next_funding_ts"])?;
            let spec = r.instrument(f.str("symbol")?)?;
            let rate = perpcore_types::Rate::parse(f.str("rate")?)
                .map_err(|e| format!("field \"rate\": {e}"))?;
            cmd_line(
                ts,
                Command::SetFundingRate {
                    instrument: spec.id,
                    rate,
                    next_funding_ns: f.u64("next_funding_ts")?,
                },
            )
        }
        "index" => {
            let (f, ts) = engine(&["symbol", "price"])?;
            let spec = r.instrument(f.str("symbol")?)?;
            let price =
                Price::parse(f.str("price")?).map_err(|e| format!("field \"price\": {e}"))?;
            cmd_line(
                ts,
                Command::SetIndexPrice {
                    instrument: spec.id,
                    price,
                },
            )
        }
        "mark" => {
            let (f, ts) = engine(&["symbol", "price"])?;
            let spec = r.instrument(f.str("symbol")?)?;
            let text = f.str("price")?;
            let price = Price::parse(text).map_err(|e| format!("field \"price\": {e}"))?;
            cmd_line(
                ts,
                Command::SetMarkPrice {
                    instrument: spec.id,
                    price,
                },
            )
        }
        other => {
            return Err(format!(
                "unknown cmd {other:?} (expected one of: create_account, deposit, withdraw, \
                 transfer, leverage, margin_mode, isolated_margin, order, cancel, cancel_all, \
                 amend, mark, asset_index, asset_mode, report, expect, expect_event, hash, \
                 comment)"
            ))
        }
    };
    Ok(line)
}

fn cmd_line(ts_ns: u64, command: Command) -> Line {
    Line::Engine { ts_ns, command }
}

fn bad_enum(field: &str, got: &str, allowed: &str) -> String {
    format!("field {field:?}: {got:?} is not one of {allowed}")
}

/// A `conditional` line: the order fields of [`order`] (its `type` is the kind's: market
/// for `stop_market`, `take_profit_market` and `trailing_stop`, limit for `stop_limit`
/// and `take_profit_limit`), plus `kind`, `trigger` (a trailing stop's activation price,
/// optional), `callback` (trailing stops) and `working` (`mark`, the default, or
/// `last_trade`).
fn conditional(f: &Fields<'_>, r: &Resolver<'_>) -> Res<ConditionalOrder> {
    let spec = r.instrument(f.str("symbol")?)?;
    let kind = match f.str("kind")? {
        "stop_market" => ConditionalKind::StopMarket,
        "stop_limit" => ConditionalKind::StopLimit,
        "take_profit_market" => ConditionalKind::TakeProfitMarket,
        "take_profit_limit" => ConditionalKind::TakeProfitLimit,
        "trailing_stop" => ConditionalKind::TrailingStop,
        other => {
            return Err(bad_enum(
                "kind",
                other,
                "stop_market, stop_limit, take_profit_market, take_profit_limit, trailing_stop",
            ))
        }
    };
    let trailing = kind == ConditionalKind::TrailingStop;
    let trigger = match (f.opt_str("trigger")?, trailing) {
        (Some(t), _) => Price::parse(t).map_err(|e| format!("field \"trigger\": {e}"))?,
        (None, true) => Price(0),
        (None, false) => return Err("a conditional order needs \"trigger\"".into()),
    };
    let callback_rate = match (f.opt_str("callback")?, trailing) {
        (Some(t), true) => Rate::parse(t).map_err(|e| format!("field \"callback\": {e}"))?,
        (None, true) => return Err("a trailing stop needs \"callback\"".into()),
        (Some(_), false) => return Err("only a trailing stop takes \"callback\"".into()),
        (None, false) => Rate::ZERO,
    };
    let working = match f.opt_str("working")?.unwrap_or("mark") {
        "mark" => WorkingPrice::Mark,
        "last_trade" => WorkingPrice::LastTrade,
        other => return Err(bad_enum("working", other, "mark, last_trade")),
    };
    let limit = matches!(
        kind,
        ConditionalKind::StopLimit | ConditionalKind::TakeProfitLimit
    );
    let price = match (limit, f.opt_str("price")?) {
        (true, Some(t)) => price_ticks(spec, t)?,
        (true, None) => return Err("a limit kind needs \"price\"".into()),
        (false, None) => PriceTicks(0),
        (false, Some(_)) => return Err("a market kind takes no \"price\"".into()),
    };
    let close_position = f.bool_or("close_position", false)?;
    Ok(ConditionalOrder {
        account: f.account("account")?,
        instrument: spec.id,
        order_id: OrderId(f.u64("id")?),
        side: side(f)?,
        kind,
        trigger,
        callback_rate,
        working,
        price,
        tif: tif(f)?,
        qty: qty_or_close(f, spec, close_position)?,
        reduce_only: f.bool_or("reduce_only", false)?,
        close_position,
        stp: stp(f)?,
    })
}

fn order(f: &Fields<'_>, r: &Resolver<'_>) -> Res<NewOrder> {
    let spec = r.instrument(f.str("symbol")?)?;
    let order_type = match f.opt_str("type")?.unwrap_or("limit") {
        "limit" => OrderType::Limit,
        "market" => OrderType::Market,
        other => return Err(bad_enum("type", other, "limit, market")),
    };
    let price = match (order_type, f.opt_str("price")?) {
        (OrderType::Limit, Some(t)) => price_ticks(spec, t)?,
        (OrderType::Limit, None) => return Err("a limit order needs \"price\"".into()),
        (OrderType::Market, None) => PriceTicks(0),
        (OrderType::Market, Some(_)) => {
            return Err("a market order takes no \"price\" (it fills within the band)".into())
        }
    };
    let close_position = f.bool_or("close_position", false)?;
    Ok(NewOrder {
        account: f.account("account")?,
        instrument: spec.id,
        order_id: OrderId(f.u64("id")?),
        side: side(f)?,
        order_type,
        tif: tif(f)?,
        price,
        qty: qty_or_close(f, spec, close_position)?,
        reduce_only: f.bool_or("reduce_only", false)?,
        close_position,
        stp: stp(f)?,
    })
}

fn side(f: &Fields<'_>) -> Res<Side> {
    match f.str("side")? {
        "buy" => Ok(Side::Buy),
        "sell" => Ok(Side::Sell),
        other => Err(bad_enum("side", other, "buy, sell")),
    }
}

fn tif(f: &Fields<'_>) -> Res<TimeInForce> {
    match f.opt_str("tif")?.unwrap_or("gtc") {
        "gtc" => Ok(TimeInForce::Gtc),
        "ioc" => Ok(TimeInForce::Ioc),
        "fok" => Ok(TimeInForce::Fok),
        "post_only" => Ok(TimeInForce::PostOnly),
        other => Err(bad_enum("tif", other, "gtc, ioc, fok, post_only")),
    }
}

fn stp(f: &Fields<'_>) -> Res<StpMode> {
    match f.opt_str("stp")?.unwrap_or("expire_taker") {
        "expire_taker" => Ok(StpMode::ExpireTaker),
        "expire_maker" => Ok(StpMode::ExpireMaker),
        "expire_both" => Ok(StpMode::ExpireBoth),
        other => Err(bad_enum(
            "stp",
            other,
            "expire_taker, expire_maker, expire_both",
        )),
    }
}

/// `qty`, or none for a close-position order (the engine takes the size from the
/// position).
fn qty_or_close(f: &Fields<'_>, spec: &InstrumentSpec, close_position: bool) -> Res<QtyLots> {
    match (f.opt_str("qty")?, close_position) {
        (Some(t), _) => qty_lots(spec, t),
        (None, true) => Ok(QtyLots::ZERO),
        (None, false) => Err("an order needs \"qty\" (unless close_position)".into()),
    }
}

fn money(f: &Fields<'_>, name: &str) -> Res<Money> {
    Money::parse(f.str(name)?).map_err(|e| format!("field {name:?}: {e}"))
}

/// Exact decimal price → ticks of the instrument; refuses an off-tick price.
pub fn price_ticks(spec: &InstrumentSpec, text: &str) -> Res<PriceTicks> {
    let p = Price::parse(text).map_err(|e| format!("field \"price\": {e}"))?;
    // Validated configs have a positive tick; guard anyway rather than divide by zero.
    if spec.tick_size.0 <= 0 || p.0 % spec.tick_size.0 != 0 {
        return Err(format!(
            "field \"price\": {p} is not a multiple of {} tick_size {}",
            spec.symbol, spec.tick_size
        ));
    }
    Ok(PriceTicks(p.0 / spec.tick_size.0))
}

/// Exact decimal size → lots of the instrument; refuses an off-lot size.
pub fn qty_lots(spec: &InstrumentSpec, text: &str) -> Res<QtyLots> {
    let q = Qty::parse(text).map_err(|e| format!("field \"qty\": {e}"))?;
    if spec.lot_size.0 <= 0 || q.0 % spec.lot_size.0 != 0 {
        return Err(format!(
            "field \"qty\": {q} is not a multiple of {} lot_size {}",
            spec.symbol, spec.lot_size
        ));
    }
    Ok(QtyLots(q.0 / spec.lot_size.0))
}

/// Symbols → ids.
struct Resolver<'a> {
    config: &'a Config,
}

impl Resolver<'_> {
    fn instrument(&self, symbol: &str) -> Res<&InstrumentSpec> {
        self.config.instrument_by_symbol(symbol).ok_or_else(|| {
            let known: Vec<&str> = self
                .config
                .instruments
                .iter()
                .map(|i| i.symbol.as_str())
                .collect();
            format!(
                "unknown symbol {symbol:?} (configured: {})",
                known.join(", ")
            )
        })
    }
    fn asset(&self, symbol: &str) -> Res<AssetId> {
        self.config
            .asset_by_symbol(symbol)
            .map(|a| a.id)
            .ok_or_else(|| {
                let known: Vec<&str> = self
                    .config
                    .assets
                    .iter()
                    .map(|a| a.symbol.as_str())
                    .collect();
                format!(
                    "unknown asset {symbol:?} (configured: {})",
                    known.join(", ")
                )
            })
    }
}

/// Typed access to a line's fields, refusing unknown ones.
struct Fields<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn new(cmd: &str, map: &'a Map<String, Value>, allowed: &[&str]) -> Res<Self> {
        for key in map.keys() {
            if key != "cmd" && !allowed.contains(&key.as_str()) {
                let mut fields: Vec<&str> = allowed.to_vec();
                fields.sort_unstable();
                return Err(format!(
                    "unknown field {key:?} for {cmd:?} (allowed: {})",
                    if fields.is_empty() {
                        "none".to_string()
                    } else {
                        fields.join(", ")
                    }
                ));
            }
        }
        Ok(Fields { map })
    }

    fn opt_u64(&self, name: &str) -> Res<Option<u64>> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(v) => Err(format!(
                "field {name:?} must be a non-negative integer, got {v}"
            )),
        }
    }
    fn u64(&self, name: &str) -> Res<u64> {
        self.opt_u64(name)?
            .ok_or_else(|| format!("missing field {name:?}"))
    }
    fn account(&self, name: &str) -> Res<AccountId> {
        self.u64(name).map(AccountId)
    }
    fn opt_str(&self, name: &str) -> Res<Option<&'a str>> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v @ Value::Number(_)) => Err(format!(
                "field {name:?} must be a string, got the number {v} (decimals are written as \
                 strings, e.g. \"{v}\", so that they are never parsed as floats)"
            )),
            Some(v) => Err(format!("field {name:?} must be a string, got {v}")),
        }
    }
    fn str(&self, name: &str) -> Res<&'a str> {
        self.opt_str(name)?
            .ok_or_else(|| format!("missing field {name:?}"))
    }
    fn bool_or(&self, name: &str, default: bool) -> Res<bool> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(format!("field {name:?} must be true or false, got {v}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13: "Scenario lines with a duplicate key take the last." Refused now, at any
    /// depth (an inline config object too).
    #[test]
    fn scenario_line_with_a_duplicate_key_is_refused() {
        let e = parse_object(r#"{"cmd":"deposit","account":1,"amount":"1","amount":"1000000"}"#)
            .expect_err("duplicate");
        assert!(e.contains("duplicate key \"amount\""), "{e}");
        let e =
            parse_object(r#"{"cmd":"config","config":{"assets":[{"symbol":"A","symbol":"B"}]}}"#)
                .expect_err("nested duplicate");
        assert!(e.contains("duplicate key \"symbol\""), "{e}");
        let (cmd, map) =
            parse_object(r#"{"cmd":"deposit","a":[1,{"b":null}],"c":1.5}"#).expect("fine");
        assert_eq!((cmd.as_str(), map.len()), ("deposit", 3));
    }
}
