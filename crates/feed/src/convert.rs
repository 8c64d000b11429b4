//! Messages → engine commands.
//!
//! | message | commands |
//! |---|---|
//! | `markPriceUpdate` | `SetMarkPrice` (`p`), `SetIndexPrice` (`i`), `SetFundingRate` (`r`, next funding `T` ms → ns) |
//! | `bookTicker` | `SetReferencePrices` best bid/ask |
//! | `trade`, `aggTrade` | `SetReferencePrices` last trade |
//! | REST snapshot + `depthUpdate` | a local L2 book ([`crate::book`]); `SetReferencePrices` best bid/ask when its top changes |
//!
//! Reference prices are emitted only when they change: best bid/ask (from either the
//! book ticker or the local book) against the last pair emitted for the instrument, the
//! last trade against the last trade price emitted. A crossed top (bid ≥ ask, which the
//! engine refuses) is counted and not emitted. Mark, index and funding are emitted on every
//! mark update, except the mark and the rate of an instrument whose configuration has the
//! engine derive them (`MarkMethod::Derived`, `FundingMethod::Derived`).
//!
//! Owns the symbol → instrument mapping (from the [`Config`]; unknown symbols are counted)
//! and the per-instrument books and last emitted references. Must never invent a price,
//! round one, read a clock, or emit a command for an instrument the configuration lacks.
//! Each command carries the message's exchange time in ns.

use crate::book::{BookOptions, DepthBook};
use crate::message::Body;
use crate::reader::Message;
use crate::stats::{FeedStats, Problem};
use perpcore_types::{Command, Config, FundingMethod, InstrumentId, MarkMethod, Price};
use std::collections::HashMap;

/// Where a produced command came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Converted from a recorded or live market-data message.
    Feed,
    /// The generated order flow (accounts, orders).
    Flow,
    /// A mark price the flow derived from the reference mid (captures without a mark
    /// stream); see [`crate::flow`].
    SyntheticMark,
}

/// One command with its exchange time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedItem {
    /// Exchange time (ns since the epoch) of the message the command came from, or the
    /// scheduled time of a generated command.
    pub exchange_ns: u64,
    pub origin: Origin,
    pub command: Command,
}

/// Converter tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConvertOptions {
    pub book: BookOptions,
}

#[derive(Clone, Debug)]
struct PerInstrument {
    book: DepthBook,
    /// Last best bid/ask emitted.
    top: Option<(Price, Price)>,
    last_trade: Option<Price>,
    /// Depth diffs received.
    diffs: u64,
    /// The engine derives this instrument's mark / funding rate: the feed's are not sent.
    derived_mark: bool,
    derived_rate: bool,
    /// The book has been synchronised at some point.
    ever_synced: bool,
}

/// Turns messages into commands; stateful (books, last references).
#[derive(Clone, Debug)]
pub struct Converter {
    by_symbol: HashMap<String, InstrumentId>,
    /// Symbol of each instrument, by id.
    symbols: Vec<String>,
    per: Vec<PerInstrument>,
    stats: FeedStats,
}

impl Converter {
    pub fn new(config: &Config, opts: ConvertOptions) -> Self {
        let by_symbol = config
            .instruments
            .iter()
            .map(|i| (i.symbol.clone(), i.id))
            .collect();
        let per = config
            .instruments
            .iter()
            .map(|spec| PerInstrument {
                book: DepthBook::new(opts.book),
                top: None,
                last_trade: None,
                diffs: 0,
                derived_mark: matches!(spec.mark_method, MarkMethod::Derived { .. }),
                derived_rate: matches!(spec.funding_method, FundingMethod::Derived { .. }),
                ever_synced: false,
            })
            .collect();
        Self {
            by_symbol,
            symbols: config
                .instruments
                .iter()
                .map(|i| i.symbol.clone())
                .collect(),
            per,
            stats: FeedStats::default(),
        }
    }

    /// Counters of conversion (unknown symbols, depth sequencing, commands by kind).
    pub fn stats(&self) -> &FeedStats {
        &self.stats
    }

    /// The local book of an instrument.
    pub fn book(&self, i: InstrumentId) -> Option<&DepthBook> {
        self.per.get(i.0 as usize).map(|p| &p.book)
    }

    /// Depth streams that never synchronised: the symbols whose books received diffs but
    /// never a usable snapshot (so they gave no prices), with the diffs received.
    pub fn never_synced(&self) -> Vec<(&str, u64)> {
        self.per
            .iter()
            .zip(&self.symbols)
            .filter(|(p, _)| p.diffs > 0 && !p.ever_synced)
            .map(|(p, s)| (s.as_str(), p.diffs))
            .collect()
    }

    /// Forget every local book (after a reconnect the diff chain is broken): books wait
    /// for a new snapshot.
    pub fn reset_books(&mut self) {
        for p in &mut self.per {
            p.book.reset();
        }
    }

    fn instrument(&mut self, symbol: Option<&str>, line: u64) -> Option<InstrumentId> {
        let Some(symbol) = symbol else {
            self.stats
                .count_problem(Problem::SnapshotWithoutSymbol, line);
            return None;
        };
        match self.by_symbol.get(symbol) {
            Some(id) => Some(*id),
            None => {
                self.stats.count_problem(Problem::UnknownSymbol, line);
                None
            }
        }
    }

    fn push(&mut self, out: &mut Vec<FeedItem>, exchange_ns: u64, command: Command) {
        self.stats.count_command(command.kind());
        out.push(FeedItem {
            exchange_ns,
            origin: Origin::Feed,
            command,
        });
    }

    fn emit_top(&mut self, out: &mut Vec<FeedItem>, t: u64, id: InstrumentId, top: (Price, Price)) {
        let (bid, ask) = top;
        if bid >= ask {
            self.stats.depth.crossed_top += 1;
            return;
        }
        let p = &mut self.per[id.0 as usize];
        if p.top == Some(top) {
            return;
        }
        p.top = Some(top);
        self.push(
            out,
            t,
            Command::SetReferencePrices {
                instrument: id,
                best_bid: Some(bid),
                best_ask: Some(ask),
                last_trade: None,
            },
        );
    }

    /// Converts one message, appending its commands (zero or more) to `out`.
    pub fn convert(&mut self, msg: Message, out: &mut Vec<FeedItem>) {
        let t = msg.exchange_ns;
        let Some(id) = self.instrument(msg.body.symbol(), msg.line) else {
            return;
        };
        let k = id.0 as usize;
        match msg.body {
            Body::Depth(d) => {
                self.per[k].diffs += 1;
                self.per[k].book.on_update(d, &mut self.stats.depth);
                self.per[k].ever_synced |= self.per[k].book.is_synced();
                if let Some(top) = self.per[k].book.top() {
                    self.emit_top(out, t, id, top);
                }
            }
            Body::Snapshot(s) => {
                self.per[k].book.on_snapshot(s, &mut self.stats.depth);
                self.per[k].ever_synced |= self.per[k].book.is_synced();
                if let Some(top) = self.per[k].book.top() {
                    self.emit_top(out, t, id, top);
                }
            }
            Body::BookTicker { bid, ask, .. } => self.emit_top(out, t, id, (bid, ask)),
            Body::Trade { price, .. } => {
                if self.per[k].last_trade != Some(price) {
                    self.per[k].last_trade = Some(price);
                    self.push(
                        out,
                        t,
                        Command::SetReferencePrices {
                            instrument: id,
                            best_bid: None,
                            best_ask: None,
                            last_trade: Some(price),
                        },
                    );
                }
            }
            Body::MarkPrice {
                mark,
                index,
                funding_rate,
                next_funding_ns,
                ..
            } => {
                // The rate first: the first update after a funding time names that time
                // with the rate it settled at, which the engine applies to the settlement
                // the command sets off (MARGIN §9).
                if !self.per[k].derived_rate {
                    self.push(
                        out,
                        t,
                        Command::SetFundingRate {
                            instrument: id,
                            rate: funding_rate,
                            next_funding_ns,
                        },
                    );
                }
                if !self.per[k].derived_mark {
                    self.push(
                        out,
                        t,
                        Command::SetMarkPrice {
                            instrument: id,
                            price: mark,
                        },
                    );
                }
                self.push(
                    out,
                    t,
                    Command::SetIndexPrice {
                        instrument: id,
                        price: index,
                    },
                );
            }
        }
    }
}
