//! Parsing one Binance futures websocket message (or REST depth snapshot) into a typed
//! [`Body`], with every decimal converted exactly.
//!
//! Owns the wire format: the combined-stream wrapper `{"stream":…,"data":{…}}` or a bare
//! object; `depthUpdate`, `bookTicker`, `trade`, `aggTrade`, `markPriceUpdate` and the REST
//! snapshot `{"lastUpdateId":…,"bids":…,"asks":…}`; the recorder's
//! `<local timestamp> <json>` line prefix. Must never round a decimal (extra places are
//! [`Problem::TooPrecise`]), go through a float, panic on any input, or know about
//! instruments, books or time ordering.
//!
//! Time: every message's exchange time is its event time `E` (milliseconds → ns); the
//! `markPriceUpdate` `T` is the next funding time, not a transaction time. A snapshot
//! without `E` (spot REST) has no time of its own (`None`).

use crate::stats::{MessageKind, Problem};
use perpcore_types::{NumError, Price, Qty, Rate};
use serde::Deserialize;
use serde_json::value::RawValue;

/// One price level: price and size (size zero removes the level).
pub type Level = (Price, Qty);

/// An L2 diff (`depthUpdate`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepthUpdate {
    pub symbol: String,
    /// `U`: first update id in the event.
    pub first_id: u64,
    /// `u`: last update id in the event.
    pub last_id: u64,
    /// `pu`: the previous event's `u` (futures only; spot streams chain by `U = u + 1`).
    pub prev_last_id: Option<u64>,
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
}

/// A REST depth snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepthSnapshot {
    /// `symbol` (coin-M snapshots carry it; USDⓈ-M ones do not: the reader fills it in
    /// from the source's other messages).
    pub symbol: Option<String>,
    pub last_update_id: u64,
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
}

/// What a message says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Depth(DepthUpdate),
    Snapshot(DepthSnapshot),
    /// Best bid and ask (`b`, `a`).
    BookTicker {
        symbol: String,
        bid: Price,
        ask: Price,
    },
    /// A trade (`trade`) or aggregated trade (`aggTrade`) at `price`.
    Trade {
        symbol: String,
        price: Price,
        aggregated: bool,
    },
    /// `markPriceUpdate`: mark `p`, index `i`, funding rate `r`, next funding time `T`.
    MarkPrice {
        symbol: String,
        mark: Price,
        index: Price,
        funding_rate: Rate,
        next_funding_ns: u64,
    },
}

impl Body {
    pub fn kind(&self) -> MessageKind {
        match self {
            Body::Depth(_) => MessageKind::DepthUpdate,
            Body::Snapshot(_) => MessageKind::DepthSnapshot,
            Body::BookTicker { .. } => MessageKind::BookTicker,
            Body::Trade {
                aggregated: false, ..
            } => MessageKind::Trade,
            Body::Trade {
                aggregated: true, ..
            } => MessageKind::AggTrade,
            Body::MarkPrice { .. } => MessageKind::MarkPriceUpdate,
        }
    }

    /// The symbol the message is about (a snapshot may have none yet).
    pub fn symbol(&self) -> Option<&str> {
        match self {
            Body::Depth(d) => Some(&d.symbol),
            Body::Snapshot(s) => s.symbol.as_deref(),
            Body::BookTicker { symbol, .. }
            | Body::Trade { symbol, .. }
            | Body::MarkPrice { symbol, .. } => Some(symbol),
        }
    }
}

/// A parsed message with its times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// Exchange event time in ns (`E`); `None` only for a snapshot without `E`.
    pub exchange_ns: Option<u64>,
    pub body: Body,
}

/// Splits `<local timestamp> <json>`; the timestamp is an unsigned integer in whatever
/// unit the recorder used (µs in the 2023 captures, ns in the 2024 ones).
pub fn split_prefix(line: &str) -> Result<(u64, &str), Problem> {
    let (ts, rest) = line.split_once(' ').ok_or(Problem::BadPrefix)?;
    if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::BadPrefix);
    }
    let ts: u64 = ts.parse().map_err(|_| Problem::BadPrefix)?;
    Ok((ts, rest.trim_start()))
}

fn json_problem(e: &serde_json::Error) -> Problem {
    match e.classify() {
        serde_json::error::Category::Data => Problem::BadField,
        _ => Problem::BadJson,
    }
}

fn num_problem(e: NumError) -> Problem {
    match e {
        NumError::TooPrecise(..) => Problem::TooPrecise,
        _ => Problem::BadNumber,
    }
}

fn price(text: &str) -> Result<Price, Problem> {
    let p = Price::parse(text).map_err(num_problem)?;
    if !p.is_positive() {
        return Err(if p.is_zero() {
            Problem::NonPositivePrice
        } else {
            Problem::BadNumber
        });
    }
    Ok(p)
}

fn size(text: &str) -> Result<Qty, Problem> {
    let q = Qty::parse(text).map_err(num_problem)?;
    if q.is_negative() {
        return Err(Problem::BadNumber);
    }
    Ok(q)
}

fn rate(text: &str) -> Result<Rate, Problem> {
    Rate::parse(text).map_err(num_problem)
}

/// Milliseconds since the epoch → nanoseconds.
pub fn ms_to_ns(ms: u64) -> Result<u64, Problem> {
    ms.checked_mul(1_000_000).ok_or(Problem::BadTime)
}

fn levels(raw: &[[&str; 2]]) -> Result<Vec<Level>, Problem> {
    raw.iter().map(|[p, q]| Ok((price(p)?, size(q)?))).collect()
}

#[derive(Deserialize)]
struct Outer<'a> {
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default)]
    e: Option<&'a str>,
    #[serde(rename = "lastUpdateId", default)]
    last_update_id: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct RawDepth<'a> {
    #[serde(rename = "E")]
    time: u64,
    #[serde(borrow, rename = "s")]
    symbol: &'a str,
    #[serde(rename = "U")]
    first: u64,
    #[serde(rename = "u")]
    last: u64,
    #[serde(rename = "pu", default)]
    prev: Option<u64>,
    #[serde(borrow, rename = "b")]
    bids: Vec<[&'a str; 2]>,
    #[serde(borrow, rename = "a")]
    asks: Vec<[&'a str; 2]>,
}

#[derive(Deserialize)]
struct RawSnapshot<'a> {
    #[serde(rename = "lastUpdateId")]
    last_update_id: u64,
    #[serde(rename = "E", default)]
    time: Option<u64>,
    #[serde(borrow, default)]
    symbol: Option<&'a str>,
    #[serde(borrow)]
    bids: Vec<[&'a str; 2]>,
    #[serde(borrow)]
    asks: Vec<[&'a str; 2]>,
}

#[derive(Deserialize)]
struct RawBookTicker<'a> {
    #[serde(rename = "E")]
    time: u64,
    #[serde(borrow, rename = "s")]
    symbol: &'a str,
    #[serde(borrow, rename = "b")]
    bid: &'a str,
    #[serde(borrow, rename = "a")]
    ask: &'a str,
}

#[derive(Deserialize)]
struct RawTrade<'a> {
    #[serde(rename = "E")]
    time: u64,
    #[serde(borrow, rename = "s")]
    symbol: &'a str,
    #[serde(borrow, rename = "p")]
    price: &'a str,
}

#[derive(Deserialize)]
struct RawMark<'a> {
    #[serde(rename = "E")]
    time: u64,
    #[serde(borrow, rename = "s")]
    symbol: &'a str,
    #[serde(borrow, rename = "p")]
    mark: &'a str,
    #[serde(borrow, rename = "i")]
    index: &'a str,
    #[serde(borrow, rename = "r")]
    rate: &'a str,
    #[serde(rename = "T")]
    next_funding_ms: u64,
}

fn de<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, Problem> {
    serde_json::from_str(text).map_err(|e| json_problem(&e))
}

/// Parses one websocket frame or snapshot body (no prefix).
pub fn parse_json(json: &str) -> Result<Parsed, Problem> {
    // Serde would also read a struct from a JSON array: only objects are messages.
    let not_object = |text: &str| {
        if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
            Problem::UnknownEvent
        } else {
            Problem::BadJson
        }
    };
    if !json.trim_start().starts_with('{') {
        return Err(not_object(json));
    }
    let outer: Outer<'_> = serde_json::from_str(json).map_err(|e| match json_problem(&e) {
        Problem::BadField => Problem::UnknownEvent,
        p => p,
    })?;
    let data = outer.data.map_or(json, RawValue::get);
    if !data.trim_start().starts_with('{') {
        return Err(Problem::UnknownEvent);
    }
    let probe: Probe<'_> = de(data).map_err(|p| match p {
        Problem::BadField => Problem::UnknownEvent,
        p => p,
    })?;
    match (probe.e, probe.last_update_id.is_some()) {
        (Some("depthUpdate"), _) => {
            let r: RawDepth<'_> = de(data)?;
            Ok(Parsed {
                exchange_ns: Some(ms_to_ns(r.time)?),
                body: Body::Depth(DepthUpdate {
                    symbol: r.symbol.to_string(),
                    first_id: r.first,
                    last_id: r.last,
                    prev_last_id: r.prev,
                    bids: levels(&r.bids)?,
                    asks: levels(&r.asks)?,
                }),
            })
        }
        (Some("bookTicker"), _) => {
            let r: RawBookTicker<'_> = de(data)?;
            Ok(Parsed {
                exchange_ns: Some(ms_to_ns(r.time)?),
                body: Body::BookTicker {
                    symbol: r.symbol.to_string(),
                    bid: price(r.bid)?,
                    ask: price(r.ask)?,
                },
            })
        }
        (Some(e @ ("trade" | "aggTrade")), _) => {
            let r: RawTrade<'_> = de(data)?;
            Ok(Parsed {
                exchange_ns: Some(ms_to_ns(r.time)?),
                body: Body::Trade {
                    symbol: r.symbol.to_string(),
                    price: price(r.price)?,
                    aggregated: e == "aggTrade",
                },
            })
        }
        (Some("markPriceUpdate"), _) => {
            let r: RawMark<'_> = de(data)?;
            Ok(Parsed {
                exchange_ns: Some(ms_to_ns(r.time)?),
                body: Body::MarkPrice {
                    symbol: r.symbol.to_string(),
                    mark: price(r.mark)?,
                    index: price(r.index)?,
                    funding_rate: rate(r.rate)?,
                    next_funding_ns: ms_to_ns(r.next_funding_ms)?,
                },
            })
        }
        (None, true) => {
            let r: RawSnapshot<'_> = de(data)?;
            Ok(Parsed {
                exchange_ns: r.time.map(ms_to_ns).transpose()?,
                body: Body::Snapshot(DepthSnapshot {
                    symbol: r.symbol.map(str::to_string),
                    last_update_id: r.last_update_id,
                    bids: levels(&r.bids)?,
                    asks: levels(&r.asks)?,
                }),
            })
        }
        _ => Err(Problem::UnknownEvent),
    }
}

/// Parses one recorded line `<local timestamp> <json>`.
pub fn parse_line(line: &str) -> Result<(u64, Parsed), Problem> {
    let (local, json) = split_prefix(line)?;
    Ok((local, parse_json(json)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_must_be_an_integer() {
        assert_eq!(split_prefix("123 {}"), Ok((123, "{}")));
        assert_eq!(split_prefix("{}"), Err(Problem::BadPrefix));
        assert_eq!(split_prefix("-1 {}"), Err(Problem::BadPrefix));
        assert_eq!(split_prefix("1.5 {}"), Err(Problem::BadPrefix));
        assert_eq!(
            split_prefix("99999999999999999999999 {}"),
            Err(Problem::BadPrefix)
        );
    }

    #[test]
    fn extra_precision_is_counted_not_rounded() {
        let j = r#"{"e":"bookTicker","E":1,"s":"X","b":"1.123456789","a":"2"}"#;
        assert_eq!(parse_json(j), Err(Problem::TooPrecise));
        let j = r#"{"e":"bookTicker","E":1,"s":"X","b":"28452.23456522","a":"28452.3"}"#;
        let p = parse_json(j).unwrap();
        assert_eq!(
            p.body,
            Body::BookTicker {
                symbol: "X".into(),
                bid: Price(2_845_223_456_522),
                ask: Price(2_845_230_000_000)
            }
        );
    }

    #[test]
    fn classifies_problems() {
        assert_eq!(parse_json("{"), Err(Problem::BadJson));
        assert_eq!(parse_json("[1,2]"), Err(Problem::UnknownEvent));
        assert_eq!(parse_json("[1,"), Err(Problem::BadJson));
        assert_eq!(
            parse_json(r#"{"stream":"x","data":["depthUpdate"]}"#),
            Err(Problem::UnknownEvent)
        );
        assert_eq!(parse_json(r#"{"e":"kline"}"#), Err(Problem::UnknownEvent));
        assert_eq!(
            parse_json(r#"{"result":null,"id":1}"#),
            Err(Problem::UnknownEvent)
        );
        assert_eq!(
            parse_json(r#"{"e":"trade","E":1,"s":"X"}"#),
            Err(Problem::BadField)
        );
        assert_eq!(
            parse_json(r#"{"e":"trade","E":1,"s":"X","p":"abc"}"#),
            Err(Problem::BadNumber)
        );
        assert_eq!(
            parse_json(r#"{"e":"trade","E":1,"s":"X","p":"0.0"}"#),
            Err(Problem::NonPositivePrice)
        );
        assert_eq!(
            parse_json(r#"{"e":"trade","E":18446744073709551615,"s":"X","p":"1"}"#),
            Err(Problem::BadTime)
        );
        assert_eq!(
            parse_json(r#"{"e":"trade","E":1.5,"s":"X","p":"1"}"#),
            Err(Problem::BadField)
        );
    }
}
