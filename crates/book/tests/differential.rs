//! Differential test: `perpcore_book::Book` against the naive
//! `perpcore_testkit::refbook::RefBook`.
//!
//! Owns: a seeded (ChaCha8, fixed seeds) stream of 100,000 commands per seed mixing
//! GTC / IOC / FOK / post-only submits, cancels, reduce_qty, requeue, cancel + resubmit (price
//! amend), duplicate ids and bad quantities, from 50 accounts with every STP mode.
//! Every return value and every `MatchResult` must be equal; the canonical digests and
//! depth must be equal every 100 commands; `Book::check_invariants` runs after every
//! command. Must never: use an unseeded RNG, a clock, or anything that varies between
//! runs.

use perpcore_book::{Book, MatchResult, RestingOrder, Taker, TakerOutcome, Tif};
use perpcore_testkit::refbook::RefBook;
use perpcore_types::{AccountId, OrderId, PriceTicks, QtyLots, Side, StpMode};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const COMMANDS: u64 = 100_000;
const ACCOUNTS: u64 = 50;
const TARGET_ORDERS: u64 = 600;

#[derive(Default, Debug)]
struct Coverage {
    fills: u64,
    rested: u64,
    filled: u64,
    expired: u64,
    stp_taker: u64,
    stp_makers: u64,
    post_only_rejected: u64,
    fok_rejected: u64,
    fok_filled: u64,
    cancels_hit: u64,
    cancels_missed: u64,
    reduces_ok: u64,
    reduces_err: u64,
    requeues_ok: u64,
    requeues_err: u64,
    submit_err: u64,
    amends: u64,
    multi_level: u64,
    /// Sum over steps of the resting order count (for the average depth).
    orders_sum: u64,
}

struct Harness {
    rng: ChaCha8Rng,
    book: Book,
    reference: RefBook,
    out: MatchResult,
    ref_out: MatchResult,
    next_id: u64,
    mid: i64,
    cov: Coverage,
}

impl Harness {
    fn new(seed: u64) -> Self {
        Harness {
            rng: ChaCha8Rng::seed_from_u64(seed),
            book: Book::with_capacity(1024),
            reference: RefBook::new(),
            out: MatchResult::new(),
            ref_out: MatchResult::new(),
            next_id: 1,
            mid: 10_000,
            cov: Coverage::default(),
        }
    }

    fn pick_resting(&mut self) -> Option<RestingOrder> {
        let n = self.reference.orders_count();
        if n == 0 {
            return None;
        }
        let k = self.rng.gen_range(0..n) as usize;
        self.reference.iter().nth(k).copied()
    }

    fn random_stp(&mut self) -> StpMode {
        match self.rng.gen_range(0..3) {
            0 => StpMode::ExpireTaker,
            1 => StpMode::ExpireMaker,
            _ => StpMode::ExpireBoth,
        }
    }

    /// A price for `side`: mostly passive around the mid, sometimes aggressive.
    fn price(&mut self, side: Side, aggressive: bool) -> PriceTicks {
        let off = if !aggressive {
            self.rng.gen_range(-60..=2)
        } else if self.rng.gen_ratio(1, 20) {
            self.rng.gen_range(10..=60)
        } else {
            self.rng.gen_range(-2..=8)
        };
        PriceTicks(self.mid + side.sign() * off)
    }

    fn qty(&mut self) -> QtyLots {
        if self.rng.gen_ratio(1, 10) {
            QtyLots(self.rng.gen_range(1..=120))
        } else {
            QtyLots(self.rng.gen_range(1..=10))
        }
    }

    fn taker(&mut self, tif: Tif, aggressive: bool) -> Taker {
        let side = if self.rng.gen_bool(0.5) {
            Side::Buy
        } else {
            Side::Sell
        };
        let id = self.next_id;
        self.next_id += 1;
        Taker {
            order_id: OrderId(id),
            account: AccountId(self.rng.gen_range(1..=ACCOUNTS)),
            side,
            limit: self.price(side, aggressive),
            qty: self.qty(),
            tif,
            stp: self.random_stp(),
            reduce_only: self.rng.gen_ratio(1, 10),
        }
    }

    fn submit(&mut self, t: &Taker, step: u64) {
        let a = self.book.submit(t, &mut self.out);
        let b = self.reference.submit(t, &mut self.ref_out);
        assert_eq!(a, b, "step {step}: submit result differs for {t:?}");
        assert_eq!(
            self.out, self.ref_out,
            "step {step}: match result differs for {t:?}"
        );
        if a.is_err() {
            self.cov.submit_err += 1;
            return;
        }
        let c = &mut self.cov;
        c.fills += self.out.fills.len() as u64;
        c.stp_makers += self.out.expired_makers.len() as u64;
        if self.out.fills.windows(2).any(|w| w[0].price != w[1].price) {
            c.multi_level += 1;
        }
        match (self.out.outcome, t.tif) {
            (TakerOutcome::Rested { .. }, _) => c.rested += 1,
            (TakerOutcome::Filled, Tif::Fok) => c.fok_filled += 1,
            (TakerOutcome::Filled, _) => c.filled += 1,
            (TakerOutcome::Expired { .. }, _) => c.expired += 1,
            (TakerOutcome::SelfTradeExpired { .. }, _) => c.stp_taker += 1,
            (TakerOutcome::PostOnlyRejected, _) => c.post_only_rejected += 1,
            (TakerOutcome::FokRejected, _) => c.fok_rejected += 1,
        }
    }

    fn cancel(&mut self, id: OrderId, step: u64) -> Option<RestingOrder> {
        let a = self.book.cancel(id);
        let b = self.reference.cancel(id);
        assert_eq!(a, b, "step {step}: cancel {id} differs");
        if a.is_some() {
            self.cov.cancels_hit += 1;
        } else {
            self.cov.cancels_missed += 1;
        }
        a
    }

    fn step(&mut self, step: u64) {
        // Drift the mid so levels come and go.
        if self.rng.gen_ratio(1, 20) {
            self.mid += self.rng.gen_range(-3..=3);
        }
        let crowded = self.reference.orders_count() > TARGET_ORDERS;
        let r = self.rng.gen_range(0..100);
        match r {
            0..=29 if !crowded => {
                let aggressive = self.rng.gen_ratio(1, 5);
                let t = self.taker(Tif::Gtc, aggressive);
                self.submit(&t, step);
            }
            30..=36 => {
                let t = self.taker(Tif::Ioc, true);
                self.submit(&t, step);
            }
            37..=41 => {
                let t = self.taker(Tif::Fok, true);
                self.submit(&t, step);
            }
            42..=51 if !crowded => {
                let aggressive = self.rng.gen_ratio(1, 4);
                let t = self.taker(Tif::PostOnly, aggressive);
                self.submit(&t, step);
            }
            52..=59 => {
                let reduce = self.pick_resting();
                let q = reduce.map_or(1, |o| o.open_qty.0);
                let new = QtyLots(self.rng.gen_range(-1..=q + 1));
                let id = match reduce {
                    Some(o) if !self.rng.gen_ratio(1, 20) => o.order_id,
                    _ => OrderId(self.next_id + 1_000_000),
                };
                let a = self.book.reduce_qty(id, new);
                let b = self.reference.reduce_qty(id, new);
                assert_eq!(a, b, "step {step}: reduce_qty {id} to {new:?} differs");
                if a.is_ok() {
                    self.cov.reduces_ok += 1;
                } else {
                    self.cov.reduces_err += 1;
                }
            }
            60..=74 => {
                // Amend in place: requeue at a new price/size (loses priority); if the
                // new price would cross, both refuse and nothing changes.
                let Some(o) = self.pick_resting() else { return };
                let id = if self.rng.gen_ratio(1, 20) {
                    OrderId(self.next_id + 1_000_000)
                } else {
                    o.order_id
                };
                let aggressive = self.rng.gen_ratio(1, 5);
                let price = self.price(o.side, aggressive);
                let qty = QtyLots(self.rng.gen_range(-1..=o.open_qty.0 + 3));
                let a = self.book.requeue(id, price, qty);
                let b = self.reference.requeue(id, price, qty);
                assert_eq!(
                    a, b,
                    "step {step}: requeue {id} to {price:?} x {qty:?} differs"
                );
                if a.is_ok() {
                    self.cov.requeues_ok += 1;
                } else {
                    self.cov.requeues_err += 1;
                }
            }
            75..=89 => {
                // Amend price: cancel + resubmit with the same id (loses priority).
                let Some(o) = self.pick_resting() else { return };
                let old = self
                    .cancel(o.order_id, step)
                    .expect("picked a resting order");
                let tif = if self.rng.gen_ratio(1, 3) {
                    Tif::PostOnly
                } else {
                    Tif::Gtc
                };
                let aggressive = self.rng.gen_ratio(1, 10);
                let t = Taker {
                    order_id: old.order_id,
                    account: old.account,
                    side: old.side,
                    limit: self.price(old.side, aggressive),
                    qty: old.open_qty,
                    tif,
                    stp: self.random_stp(),
                    reduce_only: old.reduce_only,
                };
                self.submit(&t, step);
                self.cov.amends += 1;
            }
            90..=92 => {
                // Bad input: a duplicate id or a non-positive quantity.
                let mut t = self.taker(Tif::Gtc, false);
                match self.pick_resting() {
                    Some(o) if self.rng.gen_bool(0.5) => t.order_id = o.order_id,
                    _ => t.qty = QtyLots(self.rng.gen_range(-2..=0)),
                }
                self.submit(&t, step);
            }
            _ => {
                let id = match self.pick_resting() {
                    Some(o) if !self.rng.gen_ratio(1, 10) => o.order_id,
                    _ => OrderId(self.rng.gen_range(0..self.next_id + 10)),
                };
                self.cancel(id, step);
            }
        }
        self.book.check_invariants();
        self.cov.orders_sum += self.book.orders_count();
        assert_eq!(
            self.book.best_bid(),
            self.reference.best_bid(),
            "step {step}: best bid"
        );
        assert_eq!(
            self.book.best_ask(),
            self.reference.best_ask(),
            "step {step}: best ask"
        );
        assert_eq!(
            self.book.orders_count(),
            self.reference.orders_count(),
            "step {step}: count"
        );
        if step.checked_rem(100) == Some(0) {
            self.reference.check_invariants();
            assert_eq!(
                self.book.digest(),
                self.reference.digest(),
                "step {step}: digest"
            );
            for side in [Side::Buy, Side::Sell] {
                assert_eq!(
                    self.book.depth(side, 10),
                    self.reference.depth(side, 10),
                    "step {step}"
                );
            }
        }
    }
}

fn run(seed: u64) {
    let mut h = Harness::new(seed);
    for step in 1..=COMMANDS {
        h.step(step);
    }
    assert_eq!(h.book.digest(), h.reference.digest());
    assert!(
        h.book.iter().eq(h.reference.iter()),
        "canonical iteration differs"
    );

    // Rebuilding from the canonical iteration reproduces the digest (no history in it).
    let mut rebuilt = Book::new();
    let mut out = MatchResult::new();
    for o in h.book.iter() {
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
        rebuilt.submit(&t, &mut out).expect("rebuild");
        assert!(matches!(out.outcome, TakerOutcome::Rested { .. }));
    }
    rebuilt.check_invariants();
    assert_eq!(rebuilt.digest(), h.book.digest());

    eprintln!(
        "seed {seed}: final orders {} cov {:?}",
        h.book.orders_count(),
        h.cov
    );
    // The stream must have exercised every rule.
    let c = &h.cov;
    for (name, v) in [
        ("fills", c.fills),
        ("rested", c.rested),
        ("filled", c.filled),
        ("expired", c.expired),
        ("stp_taker", c.stp_taker),
        ("stp_makers", c.stp_makers),
        ("post_only_rejected", c.post_only_rejected),
        ("fok_rejected", c.fok_rejected),
        ("fok_filled", c.fok_filled),
        ("cancels_hit", c.cancels_hit),
        ("cancels_missed", c.cancels_missed),
        ("reduces_ok", c.reduces_ok),
        ("reduces_err", c.reduces_err),
        ("requeues_ok", c.requeues_ok),
        ("requeues_err", c.requeues_err),
        ("submit_err", c.submit_err),
        ("amends", c.amends),
        ("multi_level", c.multi_level),
    ] {
        assert!(
            v >= 100,
            "seed {seed}: too little coverage of {name}: {c:?}"
        );
    }
}

#[test]
fn differential_seed_1() {
    run(1);
}

#[test]
fn differential_seed_2() {
    run(0x5eed_0002);
}

#[test]
fn differential_seed_3() {
    run(0xdead_beef);
}

#[test]
fn differential_seed_4() {
    run(42);
}
