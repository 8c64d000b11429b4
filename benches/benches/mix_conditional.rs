//! The exchange mix with 10% conditional orders (issue 16, item 5). Not a test.
//!
//! The exchange-core order mix of `exchange_mix` (82% amend, 9% GTC, 6% cancel, 3% IOC on
//! one instrument, 1,000 accounts) through `Engine::apply`, as is and with one conditional
//! command after every nine mix commands (10% of the stream): alternately a stop-market
//! placed 1–3% away from the mid on the side that does not fire (a buy stop above, a sell
//! stop below; nothing in the mix moves the mark, so none fires) and the cancel of the
//! oldest one still waiting, so ~1,000 wait at any time. Both streams run alternately,
//! `PERPCORE_BENCH_RUNS` times (default 5); printed: the median commands/s of each, the
//! per-command p50/p99 of each (last run), and the ratios. Both must leave the book the
//! workload predicts.
#![allow(clippy::float_arithmetic)]

use hdrhistogram::Histogram;
use perpcore_benches::*;
use perpcore_engine::Engine;
use perpcore_types::*;
use std::collections::VecDeque;
use std::time::Instant;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `base` with a conditional command after every nine commands, renumbered.
fn with_conditionals(base: &[Envelope], mid: i64, accounts: u64) -> Vec<Envelope> {
    let spec = &bench_config().instruments[0];
    let mut out = Vec::with_capacity(base.len() * 10 / 9 + 1);
    let mut waiting: VecDeque<(u64, u64)> = VecDeque::new();
    let (mut seq, mut ts) = (base[0].seq, base[0].ts_ns);
    let mut next_id = 1u64 << 40;
    for (k, env) in base.iter().enumerate() {
        out.push(Envelope {
            seq,
            ts_ns: ts,
            command: env.command.clone(),
        });
        seq += 1;
        ts += 1_000;
        if k % 9 != 8 {
            continue;
        }
        // Up to 1,000 waiting, then alternately one placed and the oldest cancelled.
        let place = waiting.len() < 1_000 || (k / 9).is_multiple_of(2);
        let command = if place {
            let n = k as u64 / 9;
            let account = 1 + n % accounts;
            let buy = n.is_multiple_of(2);
            // 1% to 3% away from the mid, on the side that does not fire.
            let away = mid * (100 + (n % 200) as i64) / 10_000;
            let ticks = if buy { mid + away } else { mid - away };
            next_id += 1;
            waiting.push_back((next_id, account));
            Command::PlaceConditional(ConditionalOrder {
                account: AccountId(account),
                instrument: INSTRUMENT,
                order_id: OrderId(next_id),
                side: if buy { Side::Buy } else { Side::Sell },
                kind: ConditionalKind::StopMarket,
                trigger: spec.price_of(PriceTicks(ticks)),
                callback_rate: Rate::ZERO,
                working: WorkingPrice::Mark,
                price: PriceTicks(0),
                tif: TimeInForce::Gtc,
                qty: QtyLots(1),
                reduce_only: false,
                close_position: false,
                stp: StpMode::ExpireTaker,
            })
        } else {
            let (id, account) = waiting.pop_front().expect("a waiting order");
            Command::CancelOrder {
                account: AccountId(account),
                order_id: OrderId(id),
            }
        };
        out.push(Envelope {
            seq,
            ts_ns: ts,
            command,
        });
        seq += 1;
        ts += 1_000;
    }
    out
}

/// One run: commands/s, the histogram, whether the book ended as predicted, rejects.
fn run(untimed: &[Envelope], timed: &[Envelope], w: &Workload) -> (f64, Histogram<u64>, bool, u64) {
    let mut e = Engine::new(bench_config());
    let mut out = Vec::with_capacity(64);
    for env in untimed {
        e.apply(env, &mut out);
        out.clear();
    }
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram");
    let mut rejects = 0u64;
    let t0 = Instant::now();
    for env in timed {
        let t = Instant::now();
        e.apply(env, &mut out);
        h.saturating_record(t.elapsed().as_nanos() as u64);
        rejects += out
            .iter()
            .filter(|ev| matches!(ev, Event::Rejected { .. }))
            .count() as u64;
        out.clear();
    }
    let rate = timed.len() as f64 / t0.elapsed().as_secs_f64();
    let ok = perpcore_state(e.book(INSTRUMENT).expect("instrument")) == w.final_state;
    (rate, h, ok, rejects)
}

fn main() {
    let ops = env_usize("PERPCORE_BENCH_OPS", 1_000_000);
    let runs = env_usize("PERPCORE_BENCH_RUNS", 5).max(1);
    let params = Params {
        timed: ops,
        warmup: (ops / 10).max(10_000),
        ..Params::default()
    };
    let w = generate(params.clone());
    let s = engine_stream(&w);
    let first_timed_seq = s.timed[0].seq;
    let mixed = with_conditionals(&s.timed, params.mid, params.accounts);
    let conditional = mixed
        .iter()
        .filter(|e| {
            matches!(e.command, Command::PlaceConditional(_))
                || matches!(e.command, Command::CancelOrder { order_id, .. } if order_id.0 > 1 << 40)
        })
        .count();
    assert_eq!(mixed[0].seq, first_timed_seq);
    println!("# exchange mix with 10% conditional orders");
    println!("machine : {}", machine());
    println!(
        "streams : plain {} commands; mixed {} commands of which {} conditional ({:.1}%); {runs} runs each, alternating",
        s.timed.len(),
        mixed.len(),
        conditional,
        100.0 * conditional as f64 / mixed.len() as f64
    );
    let (mut plain, mut with) = (Vec::new(), Vec::new());
    let (mut hp, mut hw) = (None, None);
    for _ in 0..runs {
        let (r, h, ok, rej) = run(&s.untimed, &s.timed, &w);
        assert!(ok, "the plain stream left another book");
        plain.push(r);
        hp = Some((h, rej));
        let (r, h, ok, rej) = run(&s.untimed, &mixed, &w);
        assert!(ok, "the mixed stream left another book");
        with.push(r);
        hw = Some((h, rej));
    }
    let (hp, rp) = hp.expect("a run");
    let (hw, rw) = hw.expect("a run");
    let (mp, mw) = (median(plain.clone()), median(with.clone()));
    println!(
        "plain   : median {} cmd/s (runs {:?}), p50 {} ns, p99 {} ns, {rp} rejects",
        si(mp),
        plain.iter().map(|r| si(*r)).collect::<Vec<_>>(),
        hp.value_at_quantile(0.5),
        hp.value_at_quantile(0.99)
    );
    println!(
        "mixed   : median {} cmd/s (runs {:?}), p50 {} ns, p99 {} ns, {rw} rejects",
        si(mw),
        with.iter().map(|r| si(*r)).collect::<Vec<_>>(),
        hw.value_at_quantile(0.5),
        hw.value_at_quantile(0.99)
    );
    println!(
        "ratio   : mixed / plain throughput {:.3}; p50 {:.2}, p99 {:.2}",
        mw / mp,
        hw.value_at_quantile(0.5) as f64 / hp.value_at_quantile(0.5) as f64,
        hw.value_at_quantile(0.99) as f64 / hp.value_at_quantile(0.99) as f64
    );
}
