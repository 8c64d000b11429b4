//! The journal makes the engine replayable: live state hash = replay hash; snapshot + tail
//! = full replay; a run resumes where the journal ends; a journal refuses a different
//! configuration; replay `--to` stops at an exact sequence number.

use perpcore_engine::Engine;
use perpcore_node::{self as node, Core, RunOptions};
use perpcore_sequencer::StateMachine;
use perpcore_testkit::gen::{test_config, Gen};
use perpcore_types::{Command, Envelope};

fn commands(seed: u64, n: usize) -> Vec<Command> {
    let mut g = Gen::new(seed, 30);
    let mut v = g.setup();
    v.extend((0..n).map(|_| g.next_command()));
    v
}

#[test]
fn live_hash_equals_replay_and_snapshot_plus_tail() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config();
    let cmds = commands(7, 3_000);
    let opts = RunOptions {
        snapshot_every: Some(1_000),
        ..RunOptions::default()
    };
    let mut last = 0;
    let s = node::run(dir.path(), &cfg, cmds.clone(), &opts, |c| {
        assert_eq!(c.seq, last + 1, "events released in sequence order");
        last = c.seq;
    })
    .unwrap();
    assert_eq!(s.commands as usize, cmds.len());
    assert!(s.trades > 100, "the stream trades ({} trades)", s.trades);
    assert!(s.snapshots >= 3);

    // Full replay from genesis.
    let full = node::replay(dir.path(), None, |_| {}).unwrap();
    assert_eq!(full.state_hash, s.state_hash);
    // Recovery: newest snapshot + tail.
    let rec = node::recover(dir.path()).unwrap();
    assert!(
        rec.report.snapshot_used.is_some(),
        "recovery started from a snapshot"
    );
    assert!(rec.report.replayed_commands < cmds.len() as u64);
    assert_eq!(rec.state.state_hash(), s.state_hash);
    drop(rec);

    // An engine fed the journaled envelopes by hand agrees too (the journal holds the
    // exact commands, in order, with their stamps).
    let mut e = Engine::new(cfg.clone());
    let mut out = Vec::new();
    let mut k = 0usize;
    node::inspect(dir.path(), |seq, ts_ns, cmd| {
        assert_eq!(
            cmd, &cmds[k],
            "journal entry {seq} is the submitted command"
        );
        k += 1;
        out.clear();
        e.apply(
            &Envelope {
                seq,
                ts_ns,
                command: cmd.clone(),
            },
            &mut out,
        );
    })
    .unwrap();
    assert_eq!(e.state_hash(), s.state_hash);

    // Replay to an exact sequence number equals the prefix applied by hand.
    let to = 1_234;
    let part = node::replay(dir.path(), Some(to), |_| {}).unwrap();
    assert_eq!(part.last_seq, to);
    let mut e = Engine::new(cfg);
    node::inspect(dir.path(), |seq, ts_ns, cmd| {
        if seq <= to {
            out.clear();
            e.apply(
                &Envelope {
                    seq,
                    ts_ns,
                    command: cmd.clone(),
                },
                &mut out,
            );
        }
    })
    .unwrap();
    assert_eq!(e.state_hash(), part.state_hash);
}

#[test]
fn a_run_resumes_after_the_journal_end() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config();
    let cmds = commands(11, 2_000);
    let (a, b) = cmds.split_at(1_000);
    let opts = RunOptions::default();
    let first = node::run(dir.path(), &cfg, a.to_vec(), &opts, |_| {}).unwrap();
    let (seq, hash) = node::snapshot(dir.path()).unwrap();
    assert_eq!((seq, hash), (first.last_seq, first.state_hash));
    let second = node::run(dir.path(), &cfg, b.to_vec(), &opts, |_| {}).unwrap();
    assert_eq!(second.resumed_after, first.last_seq);
    assert_eq!(second.last_seq as usize, cmds.len());
    let full = node::replay(dir.path(), None, |_| {}).unwrap();
    assert_eq!(full.state_hash, second.state_hash);
}

#[test]
fn a_journal_refuses_another_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config();
    node::run(
        dir.path(),
        &cfg,
        commands(3, 10),
        &RunOptions::default(),
        |_| {},
    )
    .unwrap();
    let mut other = cfg.clone();
    other.instruments[0].taker_fee = perpcore_types::Rate::parse("0.001").unwrap();
    let err = node::run(
        dir.path(),
        &other,
        commands(3, 10),
        &RunOptions::default(),
        |_| {},
    );
    assert!(matches!(err, Err(node::NodeError::ConfigMismatch { .. })));
}

#[test]
fn command_codec_round_trips_and_refuses_garbage() {
    for cmd in commands(5, 500) {
        let mut buf = Vec::new();
        Core::encode_command(&cmd, &mut buf);
        assert_eq!(Core::decode_command(&buf).unwrap(), cmd);
        buf.push(0);
        assert!(Core::decode_command(&buf).is_err(), "trailing byte refused");
    }
    assert!(Core::decode_command(&[]).is_err());
    assert!(Core::decode_command(&[0xff; 40]).is_err());
}
