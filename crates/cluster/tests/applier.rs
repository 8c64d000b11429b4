//! The node's apply side without a network: the same stream messages give the same
//! journal and state hash on every node; duplicates and undecodable messages are skipped
//! alike; a restart re-reads the stream from the cursor and checks it against the
//! journal; a journal that disagrees with the stream stops the node.

use perpcore_cluster::applier::{Applier, ApplierOptions, ApplyError, LogMsg};
use perpcore_cluster::wire::{BatchEncoder, ProducerId};
use perpcore_node::Core;
use perpcore_sequencer::StateMachine;
use perpcore_types::{AccountId, AssetId, Command, Money};
use std::path::Path;

const STREAM: &str = "TEST";

fn config() -> perpcore_types::Config {
    perpcore_config::default_config()
}

fn opts() -> ApplierOptions {
    ApplierOptions {
        hash_every: 4,
        snapshot_every: 25,
        ..ApplierOptions::default()
    }
}

/// Deposit `k` raw units (1e-12 USDT) into account 1: the amount names the command.
fn deposit(k: u64) -> Command {
    Command::Deposit {
        account: AccountId(1),
        asset: AssetId(0),
        amount: Money(i128::from(k)),
    }
}

fn batch(producer: ProducerId, batch_seq: u64, commands: &[Command]) -> bytes::Bytes {
    let mut e = BatchEncoder::new(producer, batch_seq);
    let mut buf = Vec::new();
    for c in commands {
        buf.clear();
        Core::encode_command(c, &mut buf);
        e.push(&buf);
    }
    e.finish().into()
}

const P: ProducerId = ProducerId([1; 16]);
const Q: ProducerId = ProducerId([2; 16]);
const T0: u64 = 1_800_000_000_000_000_000;

/// A stream of 40 messages: account creation, then batches of 3 deposits from two
/// producers, with a duplicate of P's batch 2 at message 9 (outside JetStream's window),
/// an undecodable message at 12, and a stored timestamp that goes back 1 s at 20 (a new
/// leader with a slower clock).
fn stream() -> Vec<LogMsg> {
    let mut msgs = Vec::new();
    let mut k = 0u64;
    let mut p_seq = 0u64;
    let mut q_seq = 0u64;
    for s in 1..=40u64 {
        let ts = if s >= 20 {
            T0 + s * 1_000 - 1_000_000_000
        } else {
            T0 + s * 1_000
        };
        let payload = match s {
            1 => {
                p_seq += 1;
                batch(
                    P,
                    p_seq,
                    &[Command::CreateAccount {
                        account: AccountId(1),
                        parent: None,
                    }],
                )
            }
            9 => batch(P, 2, &[deposit(4), deposit(5), deposit(6)]),
            12 => bytes::Bytes::from_static(b"not a batch"),
            _ => {
                let cmds = [deposit(k + 1), deposit(k + 2), deposit(k + 3)];
                k += 3;
                if s % 2 == 0 {
                    p_seq += 1;
                    batch(P, p_seq, &cmds)
                } else {
                    q_seq += 1;
                    batch(Q, q_seq, &cmds)
                }
            }
        };
        msgs.push(LogMsg {
            stream_seq: s,
            stored_ts_ns: ts,
            payload,
        });
    }
    msgs
}

/// Every journal entry (seq, ts, command bytes).
fn entries(dir: &Path) -> Vec<(u64, u64, Vec<u8>)> {
    let mut out = Vec::new();
    perpcore_node::inspect(&dir.join("journal"), |seq, ts, cmd| {
        let mut b = Vec::new();
        Core::encode_command(cmd, &mut b);
        out.push((seq, ts, b));
    })
    .unwrap();
    out
}

fn run_all(
    dir: &Path,
    msgs: &[LogMsg],
    group: usize,
) -> (Applier, Vec<perpcore_cluster::Checkpoint>) {
    let (mut a, _) = Applier::open(dir, &config(), STREAM, opts()).unwrap();
    let mut cps = Vec::new();
    for chunk in msgs.chunks(group) {
        a.apply(chunk).unwrap();
        cps.extend(a.progress("x").checkpoints);
    }
    (a, cps)
}

#[test]
fn same_messages_same_journal_and_hash_whatever_the_grouping() {
    let msgs = stream();
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let (a1, cp1) = run_all(d1.path(), &msgs, 1);
    let (a2, cp2) = run_all(d2.path(), &msgs, 7);
    // 40 messages: 1 creation, 1 duplicate (9), 1 invalid (12), 37 deposit batches of 3
    // → 1 + 111 = 112 commands.
    assert_eq!(a1.engine_seq(), 112);
    assert_eq!(a1.stats().duplicates, 1);
    assert_eq!(a1.stats().invalid, 1);
    assert_eq!(a1.state_hash(), a2.state_hash());
    assert_eq!(a1.engine_seq(), a2.engine_seq());
    // Checkpoints at every 4th message, the same on both (grouping does not matter).
    assert_eq!(cp1.len(), 10);
    assert_eq!(cp1, cp2);
    // Account 1 holds 1 + 2 + … + 111 = 111·112/2 = 6216 raw units: every deposit once,
    // the duplicate batch (4, 5, 6 again) not at all.
    let report = a1.engine().report(AccountId(1)).unwrap();
    let usdt = report.assets.iter().find(|a| a.asset == "USDT").unwrap();
    assert_eq!(usdt.wallet, Money(6216));
    drop((a1, a2));
    let e1 = entries(d1.path());
    assert_eq!(e1, entries(d2.path()));
    // Timestamps: message s carries T0 + 1000·s until 19; from 20 the stored stamps are
    // 1 s lower, so the rule max(last + 1, stored) continues 1 ns apart instead.
    assert_eq!(e1[0], (1, T0 + 1_000, e1[0].2.clone()));
    assert!(e1.windows(2).all(|w| w[1].1 > w[0].1));
    // Message 19 (the last with its own stamp) holds commands with ts T0+19000, +1, +2;
    // message 20 (stored 1 s earlier) continues at T0+19003.
    let before: Vec<u64> = e1
        .iter()
        .map(|e| e.1)
        .filter(|t| *t >= T0 + 19_000)
        .take(4)
        .collect();
    assert_eq!(
        before,
        vec![T0 + 19_000, T0 + 19_001, T0 + 19_002, T0 + 19_003]
    );
}

#[test]
fn restart_re_reads_from_the_cursor_and_checks_the_journal() {
    let msgs = stream();
    let whole = tempfile::tempdir().unwrap();
    let (reference, ref_cps) = run_all(whole.path(), &msgs, 5);
    let ref_hash = reference.state_hash();
    drop(reference);

    let dir = tempfile::tempdir().unwrap();
    {
        let (mut a, info) = Applier::open(dir.path(), &config(), STREAM, opts()).unwrap();
        assert_eq!(info.journal_seq, 0);
        a.apply(&msgs[..10]).unwrap();
        assert!(a.store_cursor().unwrap());
        // Applied and durable, but the cursor still says 10 (a crash before the next
        // cursor write).
        a.apply(&msgs[10..25]).unwrap();
    }
    let (mut a, info) = Applier::open(dir.path(), &config(), STREAM, opts()).unwrap();
    assert_eq!(info.cursor_stream_seq, 10);
    assert!(info.journal_seq > info.cursor_engine_seq);
    assert!(a.verifying());
    assert_eq!(a.next_stream_seq(), 11);
    // The cursor cannot be written while re-reading.
    assert!(!a.store_cursor().unwrap());
    a.apply(&msgs[10..20]).unwrap();
    assert!(a.verifying());
    a.apply(&msgs[20..40]).unwrap();
    assert!(!a.verifying());
    assert_eq!(
        a.stats().verified,
        info.journal_seq - info.cursor_engine_seq
    );
    assert_eq!(a.state_hash(), ref_hash);
    // Checkpoints after the re-read equal the reference's at the same stream messages.
    let cps = a.progress("x").checkpoints;
    assert!(!cps.is_empty());
    for c in &cps {
        assert!(ref_cps.contains(c), "{c:?}");
    }
    drop(a);
    assert_eq!(entries(dir.path()), entries(whole.path()));
}

#[test]
fn without_a_cursor_the_node_re_reads_from_the_first_message() {
    let msgs = stream();
    let dir = tempfile::tempdir().unwrap();
    let hash = {
        let (mut a, _) = Applier::open(dir.path(), &config(), STREAM, opts()).unwrap();
        a.apply(&msgs[..30]).unwrap();
        a.store_cursor().unwrap();
        a.state_hash()
    };
    std::fs::remove_file(dir.path().join("cursor")).unwrap();
    let (mut a, info) = Applier::open(dir.path(), &config(), STREAM, opts()).unwrap();
    assert_eq!(info.cursor_stream_seq, 0);
    assert_eq!(a.next_stream_seq(), 1);
    a.apply(&msgs[..30]).unwrap();
    assert!(!a.verifying());
    assert_eq!(a.state_hash(), hash);
    // A damaged cursor is ignored the same way (warning, re-read from the start).
    a.store_cursor().unwrap();
    drop(a);
    let path = dir.path().join("cursor");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let (_, info) = Applier::open(dir.path(), &config(), STREAM, opts()).unwrap();
    assert!(info.cursor_damaged);
    assert_eq!(info.cursor_stream_seq, 0);
}

#[test]
fn a_stream_that_disagrees_with_the_journal_stops_the_node() {
    let msgs = stream();
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut a, _) = Applier::open(dir.path(), &config(), STREAM, opts()).unwrap();
        a.apply(&msgs[..5]).unwrap();
        a.store_cursor().unwrap();
        a.apply(&msgs[5..10]).unwrap();
    }
    // Message 6 now carries other commands (a stream recreated under the same name).
    let mut other = msgs[5..10].to_vec();
    other[0].payload = batch(ProducerId([9; 16]), 1, &[deposit(999_999)]);
    let (mut a, _) = Applier::open(dir.path(), &config(), STREAM, opts()).unwrap();
    match a.apply(&other) {
        Err(ApplyError::Diverged { stream_seq, .. }) => assert_eq!(stream_seq, 6),
        other => panic!("expected Diverged, got {other:?}"),
    }
    // Another stream name, or another configuration, is refused at open.
    drop(a);
    assert!(matches!(
        Applier::open(dir.path(), &config(), "OTHER", opts()),
        Err(ApplyError::OtherStream { .. })
    ));
    let mut cfg = config();
    cfg.instruments.pop();
    assert!(matches!(
        Applier::open(dir.path(), &cfg, STREAM, opts()),
        Err(ApplyError::ConfigMismatch(_))
    ));
}

#[test]
fn messages_must_come_in_stream_order() {
    let msgs = stream();
    let dir = tempfile::tempdir().unwrap();
    let (mut a, _) = Applier::open(dir.path(), &config(), STREAM, opts()).unwrap();
    a.apply(&msgs[..3]).unwrap();
    // Already processed ones are ignored; a gap is an error and changes nothing.
    a.apply(&msgs[1..3]).unwrap();
    assert_eq!(a.stream_seq(), 3);
    let seq = a.engine_seq();
    assert!(matches!(
        a.apply(&msgs[4..6]),
        Err(ApplyError::Gap {
            expected: 4,
            got: 5
        })
    ));
    assert_eq!(a.engine_seq(), seq);
}
