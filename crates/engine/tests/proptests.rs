//! Property tests of the engine over seeded random command streams.
//!
//! Invariants checked after EVERY command (`Engine::check_invariants`):
//! - every asset conserved exactly (wallets + isolated margins + fee income + insurance
//!   funds − Σ cost basis = deposits − withdrawals, MARGIN §10);
//! - open interest long = short on every instrument;
//! - no crossed book; every resting order known to the engine and vice versa;
//! - every leg's reserved order margin = Σ its orders' reservations, each equal to
//!   `margin notional / leverage` rounded up;
//! - the holders index matches the positions; no negative isolated margin.
//!
//! Also: a rejected command emits exactly one `Rejected` event and changes nothing (the
//! state hash is unchanged); snapshot → restore reproduces the state hash; the same seed
//! gives the same final hash twice.

use perpcore_engine::Engine;
use perpcore_testkit::gen::Gen;
use perpcore_types::*;
use proptest::prelude::*;

fn test_config() -> Config {
    perpcore_testkit::gen::test_config()
}

struct Stats {
    /// Trades per instrument.
    by_instrument: [u64; 4],
    /// Liquidations of coin-M (instrument 3) positions.
    inverse_takeovers: u64,
    interest_charges: u64,
    auto_exchanges: u64,
    trades: u64,
    liquidations: u64,
    takeovers: u64,
    rejects: u64,
    /// Counterparty closes by auto-deleveraging (MARGIN §7 step 4).
    auto_deleveraged: u64,
}

fn run(seed: u64, commands: usize, accounts: u64) -> (String, Stats) {
    let mut e = Engine::new(test_config());
    let mut g = Gen::new(seed, accounts);
    let mut seq = 0u64;
    let mut out = Vec::new();
    let mut stats = Stats {
        by_instrument: [0; 4],
        inverse_takeovers: 0,
        interest_charges: 0,
        auto_exchanges: 0,
        trades: 0,
        liquidations: 0,
        takeovers: 0,
        rejects: 0,
        auto_deleveraged: 0,
    };
    let setup = g.setup();
    let total = setup.len() + commands;
    let mut setup = setup.into_iter();
    for n in 0..total {
        let cmd = setup.next().unwrap_or_else(|| g.next_command());
        seq += 1;
        let before = e.content_hash();
        out.clear();
        e.apply(
            &Envelope {
                seq,
                // Two seconds per command: an hour of sequenced time every 1,800
                // commands, so interest accrues.
                ts_ns: seq * 2_000_000_000,
                command: cmd.clone(),
            },
            &mut out,
        );
        if let Err(msg) = e.check_invariants() {
            panic!("seed {seed} command #{n} {cmd:?}: {msg}\nevents: {out:?}");
        }
        if let Some(Event::Rejected { .. }) = out.last() {
            // Before a rejection only time-driven events may appear (the hour boundary
            // charged interest or auto-exchanged a loan); without them nothing changed.
            let time_driven = &out[..out.len() - 1];
            assert!(
                time_driven.iter().all(|e| matches!(
                    e,
                    Event::InterestCharged { .. } | Event::AutoExchanged { .. }
                )),
                "a rejection comes alone: {out:?}"
            );
            // The first command of a new hour of sequenced time also records that the
            // hour was processed (`interest_slot`), with or without a loan to charge: only
            // a rejection inside an hour must leave the state as it was.
            let hour = |seq: u64| seq * 2_000_000_000 / HOUR_NS;
            if time_driven.is_empty() && hour(seq) == hour(seq - 1) {
                assert_eq!(
                    e.content_hash(),
                    before,
                    "seq {seq}: rejected {cmd:?} changed state"
                );
            }
            stats.rejects += 1;
        }
        for ev in &out {
            match ev {
                Event::Trade { instrument, .. } => {
                    stats.trades += 1;
                    stats.by_instrument[instrument.0 as usize] += 1;
                }
                Event::InterestCharged { .. } => stats.interest_charges += 1,
                Event::AutoExchanged { .. } => stats.auto_exchanges += 1,
                Event::PositionTakenOver { instrument, .. } if instrument.0 == 3 => {
                    stats.takeovers += 1;
                    stats.inverse_takeovers += 1;
                }
                Event::LiquidationTriggered { .. } => stats.liquidations += 1,
                Event::PositionTakenOver { .. } => stats.takeovers += 1,
                Event::AutoDeleveraged { .. } => stats.auto_deleveraged += 1,
                _ => {}
            }
        }
        if n % 500 == 0 {
            let restored = Engine::restore(&e.snapshot()).expect("restore");
            assert_eq!(
                restored.state_hash(),
                e.state_hash(),
                "snapshot round trip at #{n}"
            );
        }
    }
    (e.state_hash_hex(), stats)
}

#[test]
fn random_streams_keep_every_invariant() {
    let mut all = Stats {
        by_instrument: [0; 4],
        inverse_takeovers: 0,
        interest_charges: 0,
        auto_exchanges: 0,
        trades: 0,
        liquidations: 0,
        takeovers: 0,
        rejects: 0,
        auto_deleveraged: 0,
    };
    for seed in 1..=6u64 {
        let (_, s) = run(seed, 4_000, 40);
        all.trades += s.trades;
        all.liquidations += s.liquidations;
        all.takeovers += s.takeovers;
        all.rejects += s.rejects;
        all.inverse_takeovers += s.inverse_takeovers;
        all.interest_charges += s.interest_charges;
        all.auto_exchanges += s.auto_exchanges;
        all.auto_deleveraged += s.auto_deleveraged;
        for i in 0..4 {
            all.by_instrument[i] += s.by_instrument[i];
        }
    }
    // The stream must actually exercise matching and liquidation, or it proves nothing.
    assert!(all.trades > 1_000, "only {} trades", all.trades);
    assert!(
        all.liquidations > 10,
        "only {} liquidations",
        all.liquidations
    );
    assert!(all.takeovers > 0, "no takeover happened");
    assert!(
        all.by_instrument.iter().all(|n| *n > 100),
        "every instrument trades: {:?}",
        all.by_instrument
    );
    assert!(
        all.inverse_takeovers > 0,
        "a coin-M position was liquidated"
    );
    assert!(all.interest_charges > 0, "loans accrued interest");
    assert!(all.auto_exchanges > 0, "a loan was auto-exchanged");
    // The empty insurance funds cannot carry a takeover through a gap: the streams reach
    // auto-deleveraging, and the fund ≥ 0 invariant held after every command above.
    assert!(all.auto_deleveraged > 0, "no auto-deleveraging happened");
    eprintln!(
        "trades {} liquidations {} takeovers {} rejects {} interest {} auto-exchanges {} \
         auto-deleveraged {}",
        all.trades,
        all.liquidations,
        all.takeovers,
        all.rejects,
        all.interest_charges,
        all.auto_exchanges,
        all.auto_deleveraged
    );
}

#[test]
fn same_seed_same_hash() {
    assert_eq!(run(42, 3_000, 30).0, run(42, 3_000, 30).0);
    assert_ne!(run(42, 3_000, 30).0, run(43, 3_000, 30).0);
}

proptest! {
    #![proptest_config(perpcore_testkit::prop::config(12))]
    #[test]
    fn any_seed_keeps_invariants(seed in any::<u64>(), accounts in 2u64..60) {
        run(seed, 1_500, accounts);
    }
}

/// A longer and wider stream (300 accounts): rarer states (a unified account's coin-M
/// position in liquidation, auto-exchange after a takeover) only appear at this scale.
/// Invariants are checked every 25 commands to keep it quick.
#[test]
fn long_wide_stream_keeps_invariants() {
    let mut e = Engine::new(test_config());
    let mut g = Gen::new(1, 300);
    let mut out = Vec::new();
    let setup = g.setup();
    let n = setup.len() + 60_000;
    let mut setup = setup.into_iter();
    for seq in 1..=n as u64 {
        let cmd = setup.next().unwrap_or_else(|| g.next_command());
        out.clear();
        e.apply(
            &Envelope {
                seq,
                ts_ns: seq * 2_000_000_000,
                command: cmd.clone(),
            },
            &mut out,
        );
        if seq % 25 == 0 {
            if let Err(m) = e.check_invariants() {
                panic!("command {seq} {cmd:?}: {m}");
            }
        }
    }
    e.check_invariants().unwrap();
}

/// Drives two engines through the same seeded stream (setup, then `extra` generated
/// commands): the same events after every command, the same state hash every 500
/// commands and at the end. `each` sees every command's events.
fn lockstep(
    seed: u64,
    a: &mut Engine,
    b: &mut Engine,
    extra: usize,
    mut each: impl FnMut(&[Event]),
) {
    let mut g = Gen::new(seed, 120);
    let setup = g.setup();
    let n = setup.len() + extra;
    let mut setup = setup.into_iter();
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    for seq in 1..=n as u64 {
        let cmd = setup.next().unwrap_or_else(|| g.next_command());
        let env = Envelope {
            seq,
            ts_ns: seq * 2_000_000_000,
            command: cmd,
        };
        ea.clear();
        eb.clear();
        a.apply(&env, &mut ea);
        b.apply(&env, &mut eb);
        assert_eq!(ea, eb, "seed {seed} command {seq} {:?}", env.command);
        each(&ea);
        if seq % 500 == 0 {
            assert_eq!(a.state_hash(), b.state_hash(), "seed {seed} at {seq}");
        }
    }
    assert_eq!(a.state_hash(), b.state_hash(), "seed {seed} at the end");
}

/// The liquidation index is an optimisation only: with it, a mark tick re-checks the
/// accounts whose safe band it crosses; without it, every holder. Both must produce the
/// same events and the same state hash after every command.
#[test]
fn liquidation_index_matches_full_scan() {
    for seed in [3u64, 17, 99] {
        let mut indexed = Engine::new(test_config());
        let mut full = Engine::new(test_config()).with_full_scan();
        let mut liquidations = 0;
        lockstep(seed, &mut indexed, &mut full, 8_000, |events| {
            liquidations += events
                .iter()
                .filter(|e| matches!(e, Event::LiquidationTriggered { .. }))
                .count();
        });
        assert!(
            liquidations > 0,
            "seed {seed}: the stream must liquidate to prove anything"
        );
    }
}

/// Amending in place (`Book::requeue`) is an optimisation only: the same streams amended
/// by cancel + submit must produce the same events and the same state hash.
#[test]
fn amend_in_place_matches_cancel_and_resubmit() {
    for seed in [5u64, 41] {
        let mut fast = Engine::new(test_config());
        let mut slow = Engine::new(test_config()).with_amend_by_resubmit();
        let mut requeued = 0;
        lockstep(seed, &mut fast, &mut slow, 25_000, |events| {
            // An amend that lost priority and rested without trading.
            if let [Event::OrderAmended {
                priority_kept: false,
                ..
            }, Event::OrderRested { .. }] = events
            {
                requeued += 1;
            }
        });
        assert!(
            requeued > 30,
            "seed {seed}: only {requeued} in-place amends"
        );
    }
}
