//! A deliberately naive reference order book for differential testing of
//! `perpcore_book::Book`.
//!
//! Owns: a second, independent reading of the book rules: each side is a `Vec` kept
//! sorted by (price priority, arrival sequence) and every operation is a linear scan.
//! Fill-or-kill is done by matching a clone as IOC and keeping the clone only if it
//! filled completely (no separate pre-check logic to share a bug with). Must never:
//! reuse the real book's code or data structures, aim for speed, or be used outside
//! tests. Its canonical encoding (`hash_into`) is written out here again from the
//! documented format, so it checks the format too.

use perpcore_book::{BookError, Fill, MatchResult, RestingOrder, Taker, TakerOutcome, Tif};
use perpcore_types::{OrderId, PriceTicks, QtyLots, Side, StpMode};

/// The naive reference book.
#[derive(Clone, Debug, Default)]
pub struct RefBook {
    /// (arrival seq, order); best first: price high→low, then seq.
    bids: Vec<(u64, RestingOrder)>,
    /// (arrival seq, order); best first: price low→high, then seq.
    asks: Vec<(u64, RestingOrder)>,
    next_seq: u64,
}

impl RefBook {
    pub fn new() -> Self {
        Self::default()
    }

    fn side(&self, side: Side) -> &Vec<(u64, RestingOrder)> {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    fn side_mut(&mut self, side: Side) -> &mut Vec<(u64, RestingOrder)> {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    fn find(&self, id: OrderId) -> Option<(Side, usize)> {
        for side in [Side::Buy, Side::Sell] {
            if let Some(i) = self.side(side).iter().position(|(_, o)| o.order_id == id) {
                return Some((side, i));
            }
        }
        None
    }

    fn sort(&mut self) {
        self.bids
            .sort_by_key(|(seq, o)| (std::cmp::Reverse(o.price), *seq));
        self.asks.sort_by_key(|(seq, o)| (o.price, *seq));
    }

    /// Same contract as `Book::submit`.
    pub fn submit(&mut self, taker: &Taker, out: &mut MatchResult) -> Result<(), BookError> {
        out.fills.clear();
        out.expired_makers.clear();
        out.outcome = TakerOutcome::Expired {
            unfilled: taker.qty,
        };
        if taker.qty.0 <= 0 {
            return Err(BookError::NonPositiveQty(taker.qty));
        }
        if self.find(taker.order_id).is_some() {
            return Err(BookError::DuplicateOrderId(taker.order_id));
        }
        let crosses = |p: PriceTicks| match taker.side {
            Side::Buy => p <= taker.limit,
            Side::Sell => p >= taker.limit,
        };
        match taker.tif {
            Tif::PostOnly => {
                if self
                    .side(taker.side.opposite())
                    .iter()
                    .any(|(_, o)| crosses(o.price))
                {
                    out.outcome = TakerOutcome::PostOnlyRejected;
                } else {
                    self.add(taker, taker.qty);
                    out.outcome = TakerOutcome::Rested {
                        open_qty: taker.qty,
                    };
                }
                Ok(())
            }
            Tif::Fok => {
                let mut trial = self.clone();
                let (remaining, _) = trial.execute(taker, out);
                if remaining.0 == 0 {
                    *self = trial;
                    out.outcome = TakerOutcome::Filled;
                } else {
                    out.fills.clear();
                    out.expired_makers.clear();
                    out.outcome = TakerOutcome::FokRejected;
                }
                Ok(())
            }
            Tif::Gtc | Tif::Ioc => {
                let (remaining, stp_stopped) = self.execute(taker, out);
                out.outcome = if remaining.0 == 0 {
                    TakerOutcome::Filled
                } else if stp_stopped {
                    TakerOutcome::SelfTradeExpired {
                        unfilled: remaining,
                    }
                } else if taker.tif == Tif::Gtc {
                    self.add(taker, remaining);
                    TakerOutcome::Rested {
                        open_qty: remaining,
                    }
                } else {
                    TakerOutcome::Expired {
                        unfilled: remaining,
                    }
                };
                Ok(())
            }
        }
    }

    fn add(&mut self, taker: &Taker, qty: QtyLots) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let o = RestingOrder {
            order_id: taker.order_id,
            account: taker.account,
            side: taker.side,
            price: taker.limit,
            open_qty: qty,
            reduce_only: taker.reduce_only,
        };
        self.side_mut(taker.side).push((seq, o));
        self.sort();
    }

    /// Takes from the front of the opposite side, one order at a time.
    fn execute(&mut self, taker: &Taker, out: &mut MatchResult) -> (QtyLots, bool) {
        let mut remaining = taker.qty.0;
        let opp = self.side_mut(taker.side.opposite());
        while remaining > 0 {
            let Some((_, front)) = opp.first_mut() else {
                break;
            };
            let ok = match taker.side {
                Side::Buy => front.price <= taker.limit,
                Side::Sell => front.price >= taker.limit,
            };
            if !ok {
                break;
            }
            if front.account == taker.account {
                match taker.stp {
                    StpMode::ExpireTaker => return (QtyLots(remaining), true),
                    StpMode::ExpireMaker => {
                        out.expired_makers.push(opp.remove(0).1);
                    }
                    StpMode::ExpireBoth => {
                        out.expired_makers.push(opp.remove(0).1);
                        return (QtyLots(remaining), true);
                    }
                }
                continue;
            }
            let q = remaining.min(front.open_qty.0);
            remaining -= q;
            front.open_qty.0 -= q;
            out.fills.push(Fill {
                maker_order: front.order_id,
                maker_account: front.account,
                price: front.price,
                qty: QtyLots(q),
                maker_remaining: front.open_qty,
                maker_done: front.open_qty.0 == 0,
                maker_reduce_only: front.reduce_only,
            });
            if front.open_qty.0 == 0 {
                opp.remove(0);
            }
        }
        (QtyLots(remaining), false)
    }

    pub fn cancel(&mut self, id: OrderId) -> Option<RestingOrder> {
        let (side, i) = self.find(id)?;
        Some(self.side_mut(side).remove(i).1)
    }

    /// Same contract as `Book::requeue`: cancel, then rest at the back of the new price
    /// without matching; refused if the new price reaches the other side.
    pub fn requeue(
        &mut self,
        id: OrderId,
        price: PriceTicks,
        open_qty: QtyLots,
    ) -> Result<RestingOrder, BookError> {
        let (side, i) = self.find(id).ok_or(BookError::UnknownOrder(id))?;
        if open_qty.0 <= 0 {
            return Err(BookError::NonPositiveQty(open_qty));
        }
        let reaches = self.side(side.opposite()).iter().any(|(_, o)| match side {
            Side::Buy => o.price <= price,
            Side::Sell => o.price >= price,
        });
        if reaches {
            return Err(BookError::WouldCross(id));
        }
        let (_, mut o) = self.side_mut(side).remove(i);
        o.price = price;
        o.open_qty = open_qty;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.side_mut(side).push((seq, o));
        self.sort();
        Ok(o)
    }

    pub fn reduce_qty(
        &mut self,
        id: OrderId,
        new_open_qty: QtyLots,
    ) -> Result<RestingOrder, BookError> {
        let (side, i) = self.find(id).ok_or(BookError::UnknownOrder(id))?;
        if new_open_qty.0 <= 0 {
            return Err(BookError::NonPositiveQty(new_open_qty));
        }
        let o = &mut self.side_mut(side)[i].1;
        if new_open_qty >= o.open_qty {
            return Err(BookError::QtyNotReduced {
                current: o.open_qty,
                requested: new_open_qty,
            });
        }
        o.open_qty = new_open_qty;
        Ok(*o)
    }

    pub fn get(&self, id: OrderId) -> Option<&RestingOrder> {
        let (side, i) = self.find(id)?;
        Some(&self.side(side)[i].1)
    }

    pub fn best_bid(&self) -> Option<PriceTicks> {
        self.bids.first().map(|(_, o)| o.price)
    }

    pub fn best_ask(&self) -> Option<PriceTicks> {
        self.asks.first().map(|(_, o)| o.price)
    }

    pub fn depth(&self, side: Side, levels: usize) -> Vec<(PriceTicks, QtyLots)> {
        let mut v: Vec<(PriceTicks, QtyLots)> = Vec::new();
        for (_, o) in self.side(side) {
            match v.last_mut() {
                Some((p, q)) if *p == o.price => *q += o.open_qty,
                _ => v.push((o.price, o.open_qty)),
            }
        }
        v.truncate(levels);
        v
    }

    pub fn orders_count(&self) -> u64 {
        (self.bids.len() + self.asks.len()) as u64
    }

    /// Canonical order: bids best→worst (FIFO in a level), then asks best→worst.
    pub fn iter(&self) -> impl Iterator<Item = &RestingOrder> + '_ {
        self.bids.iter().chain(self.asks.iter()).map(|(_, o)| o)
    }

    /// The canonical encoding documented in `perpcore_book::Book::hash_into`.
    pub fn hash_into(&self, h: &mut blake3::Hasher) {
        for side in [&self.bids, &self.asks] {
            h.update(&(side.len() as u64).to_le_bytes());
            for (_, o) in side {
                h.update(&o.order_id.0.to_le_bytes());
                h.update(&o.account.0.to_le_bytes());
                h.update(&o.price.0.to_le_bytes());
                h.update(&o.open_qty.0.to_le_bytes());
                h.update(&[u8::from(o.reduce_only)]);
            }
        }
    }

    /// Sorted sides, positive quantities, unique ids, not crossed. Panics otherwise.
    pub fn check_invariants(&self) {
        let mut sorted = self.clone();
        sorted.sort();
        assert!(
            sorted.bids == self.bids && sorted.asks == self.asks,
            "refbook: unsorted"
        );
        let mut ids: Vec<OrderId> = self.iter().map(|o| o.order_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(
            ids.len() as u64,
            self.orders_count(),
            "refbook: duplicate ids"
        );
        for (side, v) in [(Side::Buy, &self.bids), (Side::Sell, &self.asks)] {
            for (_, o) in v {
                assert!(
                    o.open_qty.0 > 0 && o.side == side,
                    "refbook: bad order {o:?}"
                );
            }
        }
        if let (Some(b), Some(a)) = (self.best_bid(), self.best_ask()) {
            assert!(b < a, "refbook: crossed");
        }
    }

    pub fn digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        self.hash_into(&mut h);
        *h.finalize().as_bytes()
    }
}
