//! Property tests for `perpcore_book::Book`. Invariants checked after every operation
//! of a random (shrinkable) sequence of submits, cancels, reduce_qty and price amends
//! from 4 accounts over a narrow price range (so crossing and STP are frequent):
//!
//! 1. `Book::check_invariants` holds: not crossed, best caches right, no empty level,
//!    level totals = sum of their orders, FIFO links, open_qty > 0, index ↔ arena, free
//!    list.
//! 2. Every return value, every `MatchResult` and the canonical digest equal those of
//!    the naive `RefBook`.
//! 3. Quantity conservation: resting quantity after = before − filled − STP-expired
//!    makers + rested remainder (submit); − the returned order (cancel); − the decrease
//!    (reduce_qty).
//! 4. Taker accounting: filled + rested/unfilled = qty for the outcome; `Filled` means
//!    filled = qty; IOC and FOK never rest; post-only never fills.
//! 5. Fills are at the maker's resting price, within the taker's limit, never
//!    improving for the maker as the walk goes on (buy: non-decreasing prices, sell:
//!    non-increasing), and never against the taker's own account.
//! 6. Refusals (`PostOnlyRejected`, `FokRejected`, any `Err`) change nothing (digest).
//! 7. The digest has no history in it: rebuilding a fresh book from `iter()` gives the
//!    same digest. Replaying the same operations on a second book gives identical
//!    digests (determinism).
//!
//! Owns: these properties. Must never: use unseeded randomness outside proptest's own
//! (reproducible, shrinkable) runner.

use perpcore_book::{Book, BookError, MatchResult, RestingOrder, Taker, TakerOutcome, Tif};
use perpcore_testkit::refbook::RefBook;
use perpcore_types::{AccountId, OrderId, PriceTicks, QtyLots, Side, StpMode};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// `dup` reuses a resting id (must be refused).
    Submit {
        acct: u64,
        buy: bool,
        px: i64,
        qty: i64,
        tif: u8,
        stp: u8,
        ro: bool,
        dup: Option<usize>,
    },
    Cancel {
        pick: usize,
        unknown: bool,
    },
    Reduce {
        pick: usize,
        qty: i64,
    },
    Amend {
        pick: usize,
        px: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u64..=4, any::<bool>(), 95i64..=105, -1i64..=12, 0u8..4, 0u8..3, any::<bool>(),
              proptest::option::weighted(0.05, any::<usize>()))
            .prop_map(|(acct, buy, px, qty, tif, stp, ro, dup)| Op::Submit { acct, buy, px, qty, tif, stp, ro, dup }),
        2 => (any::<usize>(), proptest::bool::weighted(0.1)).prop_map(|(pick, unknown)| Op::Cancel { pick, unknown }),
        1 => (any::<usize>(), -1i64..=12).prop_map(|(pick, qty)| Op::Reduce { pick, qty }),
        2 => (any::<usize>(), 95i64..=105).prop_map(|(pick, px)| Op::Amend { pick, px }),
    ]
}

fn total_open(b: &Book) -> i64 {
    b.iter().map(|o| o.open_qty.0).sum()
}

fn pick(b: &Book, k: usize) -> Option<RestingOrder> {
    let n = b.orders_count() as usize;
    if n == 0 {
        None
    } else {
        b.iter().nth(k % n).copied()
    }
}

struct World {
    book: Book,
    twin: Book,
    reference: RefBook,
    out: MatchResult,
    twin_out: MatchResult,
    ref_out: MatchResult,
    next_id: u64,
}

impl World {
    fn new() -> Self {
        World {
            book: Book::new(),
            twin: Book::new(),
            reference: RefBook::new(),
            out: MatchResult::new(),
            twin_out: MatchResult::new(),
            ref_out: MatchResult::new(),
            next_id: 1,
        }
    }

    fn submit(&mut self, t: &Taker) -> Result<(), TestCaseError> {
        let before = self.book.digest();
        let open_before = total_open(&self.book);
        let snapshot = self.book.clone();
        let r = self.book.submit(t, &mut self.out);
        let rt = self.twin.submit(t, &mut self.twin_out);
        let rr = self.reference.submit(t, &mut self.ref_out);
        prop_assert_eq!(r, rr);
        prop_assert_eq!(r, rt);
        prop_assert_eq!(&self.out, &self.ref_out);
        prop_assert_eq!(&self.out, &self.twin_out);
        let out = &self.out;
        if r.is_err() {
            prop_assert!(out.fills.is_empty() && out.expired_makers.is_empty());
            prop_assert_eq!(self.book.digest(), before);
            return Ok(());
        }
        let filled: i64 = out.fills.iter().map(|f| f.qty.0).sum();
        let expired: i64 = out.expired_makers.iter().map(|o| o.open_qty.0).sum();
        let rested = match out.outcome {
            TakerOutcome::Rested { open_qty } => open_qty.0,
            _ => 0,
        };
        // 3. conservation.
        prop_assert_eq!(
            total_open(&self.book),
            open_before - filled - expired + rested
        );
        // 4. taker accounting.
        match out.outcome {
            TakerOutcome::Rested { open_qty } => {
                prop_assert!(matches!(t.tif, Tif::Gtc | Tif::PostOnly));
                prop_assert_eq!(filled + open_qty.0, t.qty.0);
                prop_assert_eq!(
                    self.book.get(t.order_id).map(|o| o.open_qty),
                    Some(open_qty)
                );
            }
            TakerOutcome::Filled => prop_assert_eq!(filled, t.qty.0),
            TakerOutcome::Expired { unfilled } => {
                prop_assert_eq!(t.tif, Tif::Ioc);
                prop_assert_eq!(filled + unfilled.0, t.qty.0);
            }
            TakerOutcome::SelfTradeExpired { unfilled } => {
                prop_assert!(t.stp != StpMode::ExpireMaker);
                prop_assert!(unfilled.0 > 0);
                prop_assert_eq!(filled + unfilled.0, t.qty.0);
            }
            TakerOutcome::PostOnlyRejected | TakerOutcome::FokRejected => {
                // 6. refusals change nothing.
                prop_assert!(out.fills.is_empty() && out.expired_makers.is_empty());
                prop_assert_eq!(self.book.digest(), before);
            }
        }
        if t.tif == Tif::PostOnly {
            prop_assert!(out.fills.is_empty());
        }
        if matches!(t.tif, Tif::Ioc | Tif::Fok) {
            prop_assert!(self.book.get(t.order_id).is_none());
        }
        // 5. fills.
        let mut last: Option<PriceTicks> = None;
        for f in &out.fills {
            prop_assert!(f.maker_account != t.account, "self-trade");
            let maker = snapshot.get(f.maker_order).copied();
            prop_assert_eq!(maker.map(|m| m.price), Some(f.price));
            match t.side {
                Side::Buy => prop_assert!(f.price <= t.limit && last.is_none_or(|p| p <= f.price)),
                Side::Sell => prop_assert!(f.price >= t.limit && last.is_none_or(|p| p >= f.price)),
            }
            prop_assert_eq!(f.maker_done, f.maker_remaining.0 == 0);
            prop_assert_eq!(f.maker_done, self.book.get(f.maker_order).is_none());
            last = Some(f.price);
        }
        for m in &out.expired_makers {
            prop_assert_eq!(m.account, t.account);
            prop_assert!(self.book.get(m.order_id).is_none());
        }
        Ok(())
    }

    fn cancel(&mut self, id: OrderId) -> Result<Option<RestingOrder>, TestCaseError> {
        let open_before = total_open(&self.book);
        let before = self.book.digest();
        let r = self.book.cancel(id);
        prop_assert_eq!(r, self.twin.cancel(id));
        prop_assert_eq!(r, self.reference.cancel(id));
        match r {
            Some(o) => prop_assert_eq!(total_open(&self.book), open_before - o.open_qty.0),
            None => prop_assert_eq!(self.book.digest(), before),
        }
        Ok(r)
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Submit {
                acct,
                buy,
                px,
                qty,
                tif,
                stp,
                ro,
                dup,
            } => {
                let order_id = match dup.and_then(|k| pick(&self.book, k)) {
                    Some(o) => o.order_id,
                    None => {
                        self.next_id += 1;
                        OrderId(self.next_id)
                    }
                };
                let t = Taker {
                    order_id,
                    account: AccountId(acct),
                    side: if buy { Side::Buy } else { Side::Sell },
                    limit: PriceTicks(px),
                    qty: QtyLots(qty),
                    tif: [Tif::Gtc, Tif::Ioc, Tif::Fok, Tif::PostOnly][tif as usize],
                    stp: [
                        StpMode::ExpireTaker,
                        StpMode::ExpireMaker,
                        StpMode::ExpireBoth,
                    ][stp as usize],
                    reduce_only: ro,
                };
                self.submit(&t)?;
            }
            Op::Cancel { pick: k, unknown } => {
                let id = match pick(&self.book, k) {
                    Some(o) if !unknown => o.order_id,
                    _ => OrderId(1_000_000 + k as u64 % 1000),
                };
                self.cancel(id)?;
            }
            Op::Reduce { pick: k, qty } => {
                let id = pick(&self.book, k).map_or(OrderId(999_999), |o| o.order_id);
                let open_before = total_open(&self.book);
                let old = self.book.get(id).map(|o| o.open_qty.0);
                let r = self.book.reduce_qty(id, QtyLots(qty));
                prop_assert_eq!(r, self.twin.reduce_qty(id, QtyLots(qty)));
                prop_assert_eq!(r, self.reference.reduce_qty(id, QtyLots(qty)));
                match (r, old) {
                    (Ok(o), Some(old)) => {
                        prop_assert_eq!(o.open_qty.0, qty);
                        prop_assert_eq!(total_open(&self.book), open_before - (old - qty));
                    }
                    (Err(BookError::UnknownOrder(_)), None) => {}
                    (Err(_), Some(_)) => prop_assert_eq!(total_open(&self.book), open_before),
                    (r, old) => prop_assert!(false, "reduce {:?} with old {:?}", r, old),
                }
            }
            Op::Amend { pick: k, px } => {
                if let Some(o) = pick(&self.book, k) {
                    let old = self.cancel(o.order_id)?.expect("picked a resting order");
                    let t = Taker {
                        order_id: old.order_id,
                        account: old.account,
                        side: old.side,
                        limit: PriceTicks(px),
                        qty: old.open_qty,
                        tif: Tif::Gtc,
                        stp: StpMode::ExpireMaker,
                        reduce_only: old.reduce_only,
                    };
                    self.submit(&t)?;
                }
            }
        }
        // 1, 2, 7.
        self.book.check_invariants();
        prop_assert_eq!(self.book.digest(), self.reference.digest());
        prop_assert_eq!(self.book.digest(), self.twin.digest());
        prop_assert_eq!(self.book.best_bid(), self.reference.best_bid());
        prop_assert_eq!(self.book.best_ask(), self.reference.best_ask());
        Ok(())
    }
}

fn rebuild(b: &Book) -> Book {
    let mut fresh = Book::new();
    let mut out = MatchResult::new();
    for o in b.iter() {
        let t = Taker {
            order_id: o.order_id,
            account: o.account,
            side: o.side,
            limit: o.price,
            qty: o.open_qty,
            tif: Tif::PostOnly,
            stp: StpMode::ExpireTaker,
            reduce_only: o.reduce_only,
        };
        fresh.submit(&t, &mut out).expect("rebuild submit");
    }
    fresh
}

proptest! {
    #![proptest_config(perpcore_testkit::prop::config(256))]

    #[test]
    fn book_properties(ops in proptest::collection::vec(op(), 1..200)) {
        let mut w = World::new();
        for op in &ops {
            w.apply(op)?;
        }
        let fresh = rebuild(&w.book);
        fresh.check_invariants();
        prop_assert_eq!(fresh.digest(), w.book.digest());
        prop_assert!(fresh.iter().eq(w.book.iter()));
    }
}
