//! Unit tests: one or more per matching rule of the crate docs.
//!
//! Owns: hand-built scenarios with exact expected fills and outcomes. Must never: depend
//! on anything but the book's public behaviour (no peeking at arena indices).

use crate::{Book, BookError, Fill, MatchResult, RestingOrder, Taker, TakerOutcome, Tif};
use perpcore_types::{AccountId, OrderId, PriceTicks, QtyLots, Side, StpMode};

fn taker(id: u64, acct: u64, side: Side, px: i64, qty: i64, tif: Tif) -> Taker {
    Taker {
        order_id: OrderId(id),
        account: AccountId(acct),
        side,
        limit: PriceTicks(px),
        qty: QtyLots(qty),
        tif,
        stp: StpMode::ExpireTaker,
        reduce_only: false,
    }
}

fn stp(mut t: Taker, m: StpMode) -> Taker {
    t.stp = m;
    t
}

/// Submits and checks invariants; returns the result.
fn go(b: &mut Book, t: Taker) -> MatchResult {
    let mut out = MatchResult::new();
    b.submit(&t, &mut out).expect("valid submit");
    b.check_invariants();
    out
}

/// Rests a GTC order that must not cross.
fn rest(b: &mut Book, id: u64, acct: u64, side: Side, px: i64, qty: i64) {
    let out = go(b, taker(id, acct, side, px, qty, Tif::Gtc));
    assert_eq!(
        out.outcome,
        TakerOutcome::Rested {
            open_qty: QtyLots(qty)
        }
    );
    assert!(out.fills.is_empty());
}

/// (maker order id, price, qty) of each fill.
fn fills(out: &MatchResult) -> Vec<(u64, i64, i64)> {
    out.fills
        .iter()
        .map(|f| (f.maker_order.0, f.price.0, f.qty.0))
        .collect()
}

fn ids(b: &Book) -> Vec<u64> {
    b.iter().map(|o| o.order_id.0).collect()
}

/// Asks: 100 [1 (acct 1) 5, 2 (acct 2) 5], 101 [3 (acct 3) 5]; bid 98 [4 (acct 4) 5].
fn sample() -> Book {
    let mut b = Book::new();
    rest(&mut b, 1, 1, Side::Sell, 100, 5);
    rest(&mut b, 2, 2, Side::Sell, 100, 5);
    rest(&mut b, 3, 3, Side::Sell, 101, 5);
    rest(&mut b, 4, 4, Side::Buy, 98, 5);
    b
}

#[test]
fn price_time_priority_and_maker_price() {
    let mut b = sample();
    let out = go(&mut b, taker(10, 9, Side::Buy, 105, 12, Tif::Gtc));
    assert_eq!(fills(&out), vec![(1, 100, 5), (2, 100, 5), (3, 101, 2)]);
    assert_eq!(out.outcome, TakerOutcome::Filled);
    assert!(out.fills[0].maker_done && out.fills[1].maker_done && !out.fills[2].maker_done);
    assert_eq!(out.fills[2].maker_remaining, QtyLots(3));
    assert_eq!(b.best_ask(), Some(PriceTicks(101)));
    assert_eq!(b.get(OrderId(3)).map(|o| o.open_qty), Some(QtyLots(3)));
    assert!(b.get(OrderId(1)).is_none());
}

#[test]
fn better_price_beats_earlier_time() {
    let mut b = Book::new();
    rest(&mut b, 1, 1, Side::Buy, 99, 5);
    rest(&mut b, 2, 2, Side::Buy, 100, 5);
    let out = go(&mut b, taker(3, 3, Side::Sell, 90, 6, Tif::Ioc));
    assert_eq!(fills(&out), vec![(2, 100, 5), (1, 99, 1)]);
    assert_eq!(out.outcome, TakerOutcome::Filled);
}

#[test]
fn limit_is_respected() {
    let mut b = sample();
    let out = go(&mut b, taker(10, 9, Side::Buy, 100, 20, Tif::Ioc));
    assert_eq!(fills(&out), vec![(1, 100, 5), (2, 100, 5)]);
    assert_eq!(
        out.outcome,
        TakerOutcome::Expired {
            unfilled: QtyLots(10)
        }
    );
    assert_eq!(b.best_ask(), Some(PriceTicks(101)));
}

#[test]
fn partial_maker_fill_keeps_front_of_queue() {
    let mut b = sample();
    let out = go(&mut b, taker(10, 9, Side::Buy, 100, 3, Tif::Gtc));
    assert_eq!(fills(&out), vec![(1, 100, 3)]);
    let out = go(&mut b, taker(11, 9, Side::Buy, 100, 3, Tif::Gtc));
    assert_eq!(fills(&out), vec![(1, 100, 2), (2, 100, 1)]);
}

#[test]
fn gtc_remainder_rests_at_limit() {
    let mut b = sample();
    let out = go(&mut b, taker(10, 9, Side::Buy, 100, 13, Tif::Gtc));
    assert_eq!(out.filled_qty(), QtyLots(10));
    assert_eq!(
        out.outcome,
        TakerOutcome::Rested {
            open_qty: QtyLots(3)
        }
    );
    let o = *b.get(OrderId(10)).expect("rested");
    assert_eq!(
        (o.side, o.price, o.open_qty),
        (Side::Buy, PriceTicks(100), QtyLots(3))
    );
    assert_eq!(b.best_bid(), Some(PriceTicks(100)));
    assert_eq!(b.best_ask(), Some(PriceTicks(101)));
}

#[test]
fn ioc_remainder_expires_and_never_rests() {
    let mut b = sample();
    let out = go(&mut b, taker(10, 9, Side::Sell, 97, 8, Tif::Ioc));
    assert_eq!(fills(&out), vec![(4, 98, 5)]);
    assert_eq!(
        out.outcome,
        TakerOutcome::Expired {
            unfilled: QtyLots(3)
        }
    );
    assert!(b.get(OrderId(10)).is_none());
    assert_eq!(b.best_bid(), None);
    // An IOC that cannot trade at all expires whole.
    let out = go(&mut b, taker(11, 9, Side::Sell, 200, 8, Tif::Ioc));
    assert_eq!(
        out.outcome,
        TakerOutcome::Expired {
            unfilled: QtyLots(8)
        }
    );
    assert_eq!(b.orders_count(), 3);
}

#[test]
fn post_only_rejects_when_it_would_take_and_changes_nothing() {
    let mut b = sample();
    let before = b.digest();
    let out = go(&mut b, taker(10, 9, Side::Buy, 100, 1, Tif::PostOnly));
    assert_eq!(out.outcome, TakerOutcome::PostOnlyRejected);
    assert!(out.fills.is_empty() && out.expired_makers.is_empty());
    assert_eq!(b.digest(), before);
    // Own orders count too (GTX): account 1 owns the best ask.
    let out = go(
        &mut b,
        stp(
            taker(11, 1, Side::Buy, 100, 1, Tif::PostOnly),
            StpMode::ExpireMaker,
        ),
    );
    assert_eq!(out.outcome, TakerOutcome::PostOnlyRejected);
    assert_eq!(b.digest(), before);
}

#[test]
fn post_only_rests_when_it_does_not_cross() {
    let mut b = sample();
    let out = go(&mut b, taker(10, 9, Side::Buy, 99, 4, Tif::PostOnly));
    assert_eq!(
        out.outcome,
        TakerOutcome::Rested {
            open_qty: QtyLots(4)
        }
    );
    assert_eq!(b.best_bid(), Some(PriceTicks(99)));
}

#[test]
fn fok_fills_completely_across_levels() {
    let mut b = sample();
    let out = go(&mut b, taker(10, 9, Side::Buy, 101, 15, Tif::Fok));
    assert_eq!(out.outcome, TakerOutcome::Filled);
    assert_eq!(fills(&out), vec![(1, 100, 5), (2, 100, 5), (3, 101, 5)]);
    assert_eq!(b.best_ask(), None);
}

#[test]
fn fok_rejects_with_nothing_changed() {
    let mut b = sample();
    let before = b.digest();
    // 10 lots within 100, 15 within 101: 16 cannot fill.
    let out = go(&mut b, taker(10, 9, Side::Buy, 101, 16, Tif::Fok));
    assert_eq!(out.outcome, TakerOutcome::FokRejected);
    assert!(out.fills.is_empty() && out.expired_makers.is_empty());
    assert_eq!(b.digest(), before);
    // Limit excludes the 101 level.
    let out = go(&mut b, taker(11, 9, Side::Buy, 100, 11, Tif::Fok));
    assert_eq!(out.outcome, TakerOutcome::FokRejected);
    // Nothing crosses at all.
    let out = go(&mut b, taker(12, 9, Side::Buy, 99, 1, Tif::Fok));
    assert_eq!(out.outcome, TakerOutcome::FokRejected);
    assert_eq!(b.digest(), before);
}

#[test]
fn fok_with_expire_taker_stops_at_own_order() {
    let mut b = sample();
    let before = b.digest();
    // Account 2 owns order 2 (second at 100): only 5 lots come before it.
    for m in [StpMode::ExpireTaker, StpMode::ExpireBoth] {
        let out = go(&mut b, stp(taker(10, 2, Side::Buy, 101, 6, Tif::Fok), m));
        assert_eq!(out.outcome, TakerOutcome::FokRejected, "{m:?}");
        assert_eq!(b.digest(), before);
    }
    let out = go(
        &mut b,
        stp(
            taker(10, 2, Side::Buy, 101, 5, Tif::Fok),
            StpMode::ExpireBoth,
        ),
    );
    assert_eq!(out.outcome, TakerOutcome::Filled);
    assert_eq!(fills(&out), vec![(1, 100, 5)]);
    assert!(
        out.expired_makers.is_empty(),
        "filled before meeting its own order"
    );
    assert!(b.get(OrderId(2)).is_some());
}

#[test]
fn fok_with_expire_maker_skips_own_orders() {
    let mut b = sample();
    let before = b.digest();
    // Others: 5 @100 (order 1) + 5 @101 (order 3) = 10. Own order 2 does not count.
    let out = go(
        &mut b,
        stp(
            taker(10, 2, Side::Buy, 101, 11, Tif::Fok),
            StpMode::ExpireMaker,
        ),
    );
    assert_eq!(out.outcome, TakerOutcome::FokRejected);
    assert_eq!(
        b.digest(),
        before,
        "the own maker must not expire on a rejected FOK"
    );
    let out = go(
        &mut b,
        stp(
            taker(10, 2, Side::Buy, 101, 10, Tif::Fok),
            StpMode::ExpireMaker,
        ),
    );
    assert_eq!(out.outcome, TakerOutcome::Filled);
    assert_eq!(fills(&out), vec![(1, 100, 5), (3, 101, 5)]);
    assert_eq!(
        out.expired_makers
            .iter()
            .map(|o| o.order_id.0)
            .collect::<Vec<_>>(),
        vec![2]
    );
    assert!(b.is_empty() || b.best_ask().is_none());
}

#[test]
fn stp_expire_taker_keeps_maker() {
    let mut b = sample();
    let out = go(
        &mut b,
        stp(
            taker(10, 2, Side::Buy, 101, 8, Tif::Gtc),
            StpMode::ExpireTaker,
        ),
    );
    assert_eq!(fills(&out), vec![(1, 100, 5)]);
    assert!(out.expired_makers.is_empty());
    assert_eq!(
        out.outcome,
        TakerOutcome::SelfTradeExpired {
            unfilled: QtyLots(3)
        }
    );
    assert!(
        b.get(OrderId(10)).is_none(),
        "an STP-expired GTC remainder does not rest"
    );
    assert_eq!(b.get(OrderId(2)).map(|o| o.open_qty), Some(QtyLots(5)));
    assert_eq!(ids(&b), vec![4, 2, 3]);
}

#[test]
fn stp_expire_maker_removes_maker_and_continues() {
    let mut b = sample();
    let out = go(
        &mut b,
        stp(
            taker(10, 2, Side::Buy, 101, 8, Tif::Gtc),
            StpMode::ExpireMaker,
        ),
    );
    assert_eq!(fills(&out), vec![(1, 100, 5), (3, 101, 3)]);
    let expired = RestingOrder {
        order_id: OrderId(2),
        account: AccountId(2),
        side: Side::Sell,
        price: PriceTicks(100),
        open_qty: QtyLots(5),
        reduce_only: false,
    };
    assert_eq!(out.expired_makers, vec![expired]);
    assert_eq!(out.outcome, TakerOutcome::Filled);
    assert!(b.get(OrderId(2)).is_none());
    // GTC remainder after ExpireMaker rests.
    let mut b = sample();
    let out = go(
        &mut b,
        stp(
            taker(10, 3, Side::Buy, 101, 20, Tif::Gtc),
            StpMode::ExpireMaker,
        ),
    );
    assert_eq!(fills(&out), vec![(1, 100, 5), (2, 100, 5)]);
    assert_eq!(out.expired_makers.len(), 1);
    assert_eq!(
        out.outcome,
        TakerOutcome::Rested {
            open_qty: QtyLots(10)
        }
    );
    assert_eq!(b.best_bid(), Some(PriceTicks(101)));
    assert_eq!(b.best_ask(), None);
}

#[test]
fn stp_expire_both_removes_maker_and_expires_taker() {
    let mut b = sample();
    let out = go(
        &mut b,
        stp(
            taker(10, 2, Side::Buy, 101, 8, Tif::Gtc),
            StpMode::ExpireBoth,
        ),
    );
    assert_eq!(fills(&out), vec![(1, 100, 5)]);
    assert_eq!(
        out.expired_makers
            .iter()
            .map(|o| o.order_id.0)
            .collect::<Vec<_>>(),
        vec![2]
    );
    assert_eq!(
        out.outcome,
        TakerOutcome::SelfTradeExpired {
            unfilled: QtyLots(3)
        }
    );
    assert!(b.get(OrderId(2)).is_none() && b.get(OrderId(10)).is_none());
    assert_eq!(ids(&b), vec![4, 3]);
    // The taker stops even when more makers wait in the same level.
    let mut b = sample();
    rest(&mut b, 5, 5, Side::Sell, 100, 5);
    let out = go(
        &mut b,
        stp(
            taker(10, 2, Side::Buy, 101, 8, Tif::Ioc),
            StpMode::ExpireBoth,
        ),
    );
    assert_eq!(fills(&out), vec![(1, 100, 5)]);
    assert_eq!(
        out.outcome,
        TakerOutcome::SelfTradeExpired {
            unfilled: QtyLots(3)
        }
    );
    assert_eq!(ids(&b), vec![4, 5, 3]);
}

#[test]
fn stp_not_triggered_once_taker_is_filled() {
    for m in [
        StpMode::ExpireTaker,
        StpMode::ExpireMaker,
        StpMode::ExpireBoth,
    ] {
        let mut b = sample();
        let out = go(&mut b, stp(taker(10, 2, Side::Buy, 101, 5, Tif::Ioc), m));
        assert_eq!(out.outcome, TakerOutcome::Filled, "{m:?}");
        assert!(out.expired_makers.is_empty(), "{m:?}");
        assert!(b.get(OrderId(2)).is_some());
    }
}

#[test]
fn reduce_qty_keeps_priority_cancel_resubmit_loses_it() {
    let mut b = Book::new();
    rest(&mut b, 1, 1, Side::Sell, 100, 5);
    rest(&mut b, 2, 2, Side::Sell, 100, 5);
    let r = b.reduce_qty(OrderId(1), QtyLots(2)).expect("reduce");
    assert_eq!(r.open_qty, QtyLots(2));
    b.check_invariants();
    assert_eq!(b.depth(Side::Sell, 5), vec![(PriceTicks(100), QtyLots(7))]);
    let out = go(&mut b, taker(9, 9, Side::Buy, 100, 1, Tif::Ioc));
    assert_eq!(
        fills(&out),
        vec![(1, 100, 1)],
        "reduced order keeps the front"
    );

    // Cancel + resubmit at the same price goes to the back.
    let old = b.cancel(OrderId(1)).expect("resting");
    assert_eq!(old.open_qty, QtyLots(1));
    rest(&mut b, 1, 1, Side::Sell, 100, 1);
    let out = go(&mut b, taker(10, 9, Side::Buy, 100, 1, Tif::Ioc));
    assert_eq!(fills(&out), vec![(2, 100, 1)]);
}

#[test]
fn reduce_qty_refuses_bad_input() {
    let mut b = sample();
    let before = b.digest();
    assert_eq!(
        b.reduce_qty(OrderId(77), QtyLots(1)),
        Err(BookError::UnknownOrder(OrderId(77)))
    );
    assert_eq!(
        b.reduce_qty(OrderId(1), QtyLots(0)),
        Err(BookError::NonPositiveQty(QtyLots(0)))
    );
    assert_eq!(
        b.reduce_qty(OrderId(1), QtyLots(5)),
        Err(BookError::QtyNotReduced {
            current: QtyLots(5),
            requested: QtyLots(5)
        })
    );
    assert!(b.reduce_qty(OrderId(1), QtyLots(6)).is_err());
    assert_eq!(b.digest(), before);
}

#[test]
fn cancel_unknown_and_twice() {
    let mut b = sample();
    let before = b.digest();
    assert_eq!(b.cancel(OrderId(77)), None);
    assert_eq!(b.digest(), before);
    assert!(b.cancel(OrderId(1)).is_some());
    assert_eq!(b.cancel(OrderId(1)), None);
    b.check_invariants();
    // Removing the last order of the best level moves the best price.
    b.cancel(OrderId(2));
    assert_eq!(b.best_ask(), Some(PriceTicks(101)));
    b.cancel(OrderId(4));
    assert_eq!(b.best_bid(), None);
    b.check_invariants();
}

#[test]
fn bad_submits_are_refused_without_change() {
    let mut b = sample();
    let before = b.digest();
    let mut out = MatchResult::new();
    let dup = taker(1, 9, Side::Buy, 200, 1, Tif::Ioc);
    assert_eq!(
        b.submit(&dup, &mut out),
        Err(BookError::DuplicateOrderId(OrderId(1)))
    );
    assert!(out.fills.is_empty());
    for q in [0, -3] {
        let t = taker(20, 9, Side::Buy, 200, q, Tif::Gtc);
        assert_eq!(
            b.submit(&t, &mut out),
            Err(BookError::NonPositiveQty(QtyLots(q)))
        );
    }
    assert_eq!(b.digest(), before);
    b.check_invariants();
}

#[test]
fn iter_depth_and_canonical_order() {
    let mut b = sample();
    rest(&mut b, 5, 5, Side::Buy, 99, 2);
    rest(&mut b, 6, 6, Side::Buy, 99, 3);
    assert_eq!(ids(&b), vec![5, 6, 4, 1, 2, 3]);
    assert_eq!(b.depth(Side::Buy, 1), vec![(PriceTicks(99), QtyLots(5))]);
    assert_eq!(
        b.depth(Side::Sell, 9),
        vec![
            (PriceTicks(100), QtyLots(10)),
            (PriceTicks(101), QtyLots(5))
        ]
    );
    assert_eq!(b.orders_count(), 6);
}

#[test]
fn hash_is_independent_of_history() {
    let mut a = Book::new();
    // Churn the arena so slots get reused in a different order.
    for i in 0..50u64 {
        rest(&mut a, 1000 + i, 1, Side::Buy, 50 + (i as i64 % 7), 1);
    }
    for i in (0..50u64).rev() {
        a.cancel(OrderId(1000 + i));
    }
    let mut b = sample();
    for o in b.iter().copied().collect::<Vec<_>>() {
        rest(
            &mut a,
            o.order_id.0,
            o.account.0,
            o.side,
            o.price.0,
            o.open_qty.0,
        );
    }
    a.check_invariants();
    assert_eq!(a.digest(), b.digest());
    b.reduce_qty(OrderId(3), QtyLots(4)).expect("reduce");
    assert_ne!(a.digest(), b.digest());
}

#[test]
fn fill_carries_maker_reduce_only() {
    let mut b = Book::new();
    let mut t = taker(1, 1, Side::Sell, 100, 5, Tif::Gtc);
    t.reduce_only = true;
    go(&mut b, t);
    assert!(b.get(OrderId(1)).is_some_and(|o| o.reduce_only));
    let out = go(&mut b, taker(2, 2, Side::Buy, 100, 5, Tif::Ioc));
    assert_eq!(
        out.fills,
        vec![Fill {
            maker_order: OrderId(1),
            maker_account: AccountId(1),
            price: PriceTicks(100),
            qty: QtyLots(5),
            maker_remaining: QtyLots(0),
            maker_done: true,
            maker_reduce_only: true,
        }]
    );
    assert!(b.is_empty());
}

#[test]
fn requeue_moves_to_the_back_and_refuses_crossing_or_stale_places() {
    let mut b = sample();
    // Order 1 (ask 100) to 101: behind order 3, which was there first.
    let (slot, o) = b.find(OrderId(1)).expect("resting");
    assert_eq!(o.price, PriceTicks(100));
    let moved = b
        .requeue_at(slot, OrderId(1), PriceTicks(101), QtyLots(7))
        .expect("requeue");
    assert_eq!((moved.price, moved.open_qty), (PriceTicks(101), QtyLots(7)));
    b.check_invariants();
    assert_eq!(ids(&b), vec![4, 2, 3, 1]);
    // Reaching the bid at 98 would cross: refused, nothing changed.
    assert_eq!(
        b.requeue(OrderId(2), PriceTicks(98), QtyLots(5)),
        Err(BookError::WouldCross(OrderId(2)))
    );
    assert_eq!(
        b.requeue(OrderId(2), PriceTicks(99), QtyLots(0)),
        Err(BookError::NonPositiveQty(QtyLots(0)))
    );
    assert_eq!(ids(&b), vec![4, 2, 3, 1]);
    // A place that no longer holds the order (cancelled, then reused by another one).
    let (slot, _) = b.find(OrderId(3)).expect("resting");
    b.cancel(OrderId(3)).expect("cancel");
    assert_eq!(
        b.requeue_at(slot, OrderId(3), PriceTicks(102), QtyLots(1)),
        Err(BookError::UnknownOrder(OrderId(3)))
    );
    rest(&mut b, 9, 9, Side::Sell, 105, 1);
    assert_eq!(
        b.requeue_at(slot, OrderId(3), PriceTicks(102), QtyLots(1)),
        Err(BookError::UnknownOrder(OrderId(3)))
    );
    b.check_invariants();
    assert_eq!(ids(&b), vec![4, 2, 1, 9]);
}

#[test]
fn level_qty_is_the_sum_of_the_orders_resting_at_a_price() {
    let mut b = Book::new();
    rest(&mut b, 1, 1, Side::Sell, 100, 5);
    rest(&mut b, 2, 2, Side::Sell, 100, 3);
    rest(&mut b, 3, 3, Side::Buy, 98, 4);
    // Asks at 100: 5 + 3 = 8; nothing at 101 or on the bid side at 100.
    assert_eq!(b.level_qty(Side::Sell, PriceTicks(100)), QtyLots(8));
    assert_eq!(b.level_qty(Side::Sell, PriceTicks(101)), QtyLots(0));
    assert_eq!(b.level_qty(Side::Buy, PriceTicks(100)), QtyLots(0));
    assert_eq!(b.level_qty(Side::Buy, PriceTicks(98)), QtyLots(4));
    // A buy of 6 at 100 takes order 1 (5) and 1 of order 2: 2 left at 100.
    go(&mut b, taker(4, 4, Side::Buy, 100, 6, Tif::Ioc));
    assert_eq!(b.level_qty(Side::Sell, PriceTicks(100)), QtyLots(2));
    b.cancel(OrderId(2));
    assert_eq!(b.level_qty(Side::Sell, PriceTicks(100)), QtyLots(0));
}
