//! The committed binary journal `replay-fixtures/journal-v4/journal/`, written by journal
//! format 3 / payload version 4 from a small deterministic stream holding every command
//! kind. Old journals must stay readable: CI opens it read-only, replays it from genesis
//! and recovers it from its snapshot, and compares both with the pinned state hash in
//! `expected_hash.txt` (see `replay-fixtures/journal-v4/README.md`).
//!
//! - `PERPCORE_BLESS=1`: rewrites `expected_hash.txt` from a replay of the committed
//!   journal (the engine's state hash changed; the journal's bytes did not).
//! - `PERPCORE_BLESS=journal`: regenerates the journal itself, then the hash. Only for a
//!   deliberate format or payload version change (or when the engine can no longer
//!   restore the fixture's snapshot): the committed journal is the evidence that old
//!   journals still read.

use perpcore_journal::{BatchBuilder, Journal, JournalError, JournalOptions};
use perpcore_node::{genesis, Core};
use perpcore_sequencer::{self as sequencer, SequencerError, StateMachine};
use perpcore_testkit::gen::{test_config, Gen};
use perpcore_types::{
    AccountId, AssetId, Command, IndexPrice, InstrumentId, MarginMode, Money, OrderId, Price,
    PriceTicks, QtyLots, Rate,
};
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

const BLESS_ENV: &str = "PERPCORE_BLESS";
/// Commands per batch (several batches, so the hash chain is exercised).
const BATCH_COMMANDS: usize = 16;
/// First timestamp: 2023-11-14T22:13:20Z; commands are 1 ms apart.
const TS0_NS: u64 = 1_700_000_000_000_000_000;
const TS_STEP_NS: u64 = 1_000_000;
/// The whole fixture directory must stay well under this.
const MAX_FIXTURE_BYTES: u64 = 1 << 20;

fn fixture_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .nth(2)
        .unwrap_or(here)
        .join("replay-fixtures/journal-v4")
}

fn journal_dir() -> PathBuf {
    fixture_dir().join("journal")
}

fn hash_path() -> PathBuf {
    fixture_dir().join("expected_hash.txt")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One command of every kind the generator may not produce, for the accounts,
/// instruments and assets of `Gen::setup` (accounts 1..=6; instruments 0..=3; assets
/// 0 USDT, 1 USDC, 2 BTC).
fn every_kind(round: u64) -> Vec<Command> {
    let order = 9_000 + round * 10;
    vec![
        Command::CreateAccount {
            account: AccountId(100 + round),
            parent: Some(AccountId(1)),
        },
        Command::Deposit {
            account: AccountId(1),
            asset: AssetId(0),
            amount: Money::from_int(1_000),
        },
        Command::Transfer {
            from: AccountId(1),
            to: AccountId(100 + round),
            asset: AssetId(0),
            amount: Money::from_int(100),
        },
        Command::Withdraw {
            account: AccountId(100 + round),
            asset: AssetId(0),
            amount: Money::from_int(10),
        },
        Command::SetLeverage {
            account: AccountId(2),
            instrument: InstrumentId(0),
            leverage: 10,
        },
        Command::SetMarginMode {
            account: AccountId(2),
            instrument: InstrumentId(1),
            mode: MarginMode::Isolated,
        },
        Command::AdjustIsolatedMargin {
            account: AccountId(2),
            instrument: InstrumentId(1),
            delta: Money::from_int(5),
            position_side: perpcore_types::PositionSide::Both,
        },
        Command::PlaceOrder(perpcore_types::NewOrder {
            account: AccountId(1),
            instrument: InstrumentId(0),
            order_id: OrderId(order),
            side: perpcore_types::Side::Buy,
            order_type: perpcore_types::OrderType::Limit,
            tif: perpcore_types::TimeInForce::Gtc,
            price: PriceTicks(590_000),
            qty: QtyLots(1),
            reduce_only: false,
            close_position: false,
            stp: perpcore_types::StpMode::ExpireTaker,
        }),
        Command::AmendOrder {
            account: AccountId(1),
            order_id: OrderId(order),
            price: Some(PriceTicks(591_000)),
            qty: None,
        },
        Command::CancelOrder {
            account: AccountId(1),
            order_id: OrderId(order),
        },
        Command::CancelAll {
            account: AccountId(3),
            instrument: None,
        },
        Command::SetMarkPrice {
            instrument: InstrumentId(0),
            price: Price::from_int(60_000),
        },
        Command::SetIndexPrice {
            instrument: InstrumentId(0),
            price: Price::from_int(60_010),
        },
        Command::SetAssetIndex {
            asset: AssetId(2),
            quote: perpcore_types::IndexQuote::Usdt,
            price: IndexPrice::from_int(60_000),
        },
        Command::SetAssetMode {
            account: AccountId(4),
            mode: perpcore_types::AssetMode::Multi,
        },
        Command::SetFundingRate {
            instrument: InstrumentId(0),
            rate: Rate::parse("0.0001").expect("rate"),
            next_funding_ns: TS0_NS + 8 * 3_600 * 1_000_000_000,
        },
        Command::SetReferencePrices {
            instrument: InstrumentId(0),
            best_bid: Some(Price::from_int(59_990)),
            best_ask: Some(Price::from_int(60_010)),
            last_trade: None,
        },
        Command::PlaceConditional(perpcore_types::ConditionalOrder {
            account: AccountId(1),
            instrument: InstrumentId(0),
            order_id: OrderId(order + 1),
            side: perpcore_types::Side::Sell,
            kind: perpcore_types::ConditionalKind::StopMarket,
            trigger: Price::from_int(55_000),
            callback_rate: Rate::ZERO,
            working: perpcore_types::WorkingPrice::Mark,
            price: PriceTicks(0),
            tif: perpcore_types::TimeInForce::Gtc,
            qty: QtyLots(1),
            reduce_only: false,
            close_position: false,
            stp: perpcore_types::StpMode::ExpireTaker,
        }),
        // One-way → one-way: accepted, changes nothing (the stream's accounts trade one
        // way).
        Command::SetPositionMode {
            account: AccountId(100 + round),
            mode: perpcore_types::PositionMode::OneWay,
        },
    ]
}

/// The fixture's command stream: set-up, one of every kind, 160 generated commands, one
/// of every kind again. Deterministic (seeded generator).
fn stream() -> Vec<Command> {
    let mut gen = Gen::new(14, 6);
    let mut v = gen.setup();
    v.extend(every_kind(0));
    for _ in 0..160 {
        v.push(gen.next_command());
    }
    v.extend(every_kind(1));
    v
}

/// Writes the fixture journal into `dir` (which must not exist): the stream in batches
/// of `BATCH_COMMANDS`, a snapshot after the batch that passes the middle. Returns the
/// final state hash.
fn write_journal(dir: &Path) -> [u8; 32] {
    let config = test_config();
    let (mut journal, _) =
        Journal::create_fresh(dir, &genesis(&config), JournalOptions::default()).expect("create");
    let mut core = Core::from_genesis(journal.genesis()).expect("genesis");
    let commands = stream();
    let middle = commands.len() / 2;
    let mut batch = BatchBuilder::new();
    let mut bytes = Vec::new();
    let mut events = Vec::new();
    let mut snapshot_taken = false;
    for (chunk_index, chunk) in commands.chunks(BATCH_COMMANDS).enumerate() {
        batch.clear();
        for (i, cmd) in chunk.iter().enumerate() {
            let n = u64::try_from(chunk_index * BATCH_COMMANDS + i).expect("fits");
            let seq = n + 1;
            let ts_ns = TS0_NS + n * TS_STEP_NS;
            bytes.clear();
            Core::encode_command(cmd, &mut bytes);
            batch.push(seq, ts_ns, &bytes).expect("push");
            events.clear();
            core.apply(seq, ts_ns, cmd, &mut events);
        }
        journal.append(&mut batch).expect("append");
        if !snapshot_taken && journal.last_seq() >= u64::try_from(middle).expect("fits") {
            let seq = journal.last_seq();
            journal
                .write_snapshot(seq, core.state_hash(), &core.snapshot())
                .expect("snapshot");
            snapshot_taken = true;
        }
    }
    core.state_hash()
}

fn regenerate_journal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fresh = tmp.path().join("journal");
    write_journal(&fresh);
    let target = journal_dir();
    if target.exists() {
        std::fs::remove_dir_all(&target).expect("remove the old fixture journal");
    }
    copy_dir(&fresh, &target);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let path = entry.path();
        let dest = to.join(entry.file_name());
        if path.is_dir() {
            copy_dir(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).expect("copy");
        }
    }
}

/// Every file under `dir` with its length and blake3, sorted by path.
fn dir_digest(dir: &Path) -> Vec<(PathBuf, u64, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read");
                let len = u64::try_from(bytes.len()).expect("fits");
                out.push((path, len, blake3::hash(&bytes).to_hex().to_string()));
            }
        }
    }
    out.sort();
    out
}

fn expected_hash() -> String {
    std::fs::read_to_string(hash_path())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Blessing (when asked), then replay from genesis: the pinned hash, every command kind
/// decoded from the committed bytes, nothing in the directory written.
#[test]
fn committed_journal_replays_to_the_pinned_hash() {
    let bless = std::env::var(BLESS_ENV).unwrap_or_default();
    if bless == "journal" {
        regenerate_journal();
    }
    let before = dir_digest(&journal_dir());
    let replayed = perpcore_node::replay(&journal_dir(), None, |_| {}).unwrap_or_else(|e| {
        panic!(
            "the committed journal {} no longer replays: {e}\n\
             A journal written by an older build must stay readable. If the format or \
             payload version was bumped on purpose, regenerate it with \
             {BLESS_ENV}=journal cargo test -p perpcore-cli --test journal_fixture",
            journal_dir().display()
        )
    });
    let got = hex(&replayed.state_hash);
    assert_eq!(
        replayed.last_seq,
        u64::try_from(stream().len()).expect("fits")
    );
    if bless == "1" || bless == "journal" {
        if got != expected_hash() {
            // Straight to stderr (the harness captures `eprintln!`): a bless always
            // shows what it changed.
            let _ = writeln!(
                std::io::stderr(),
                "blessed {}: {} -> {got}",
                hash_path().display(),
                expected_hash()
            );
        }
        std::fs::write(hash_path(), format!("{got}\n")).expect("write expected_hash.txt");
    }
    assert_eq!(
        got,
        expected_hash(),
        "the committed journal replays to another state hash. If the engine's state hash \
         changed on purpose, rewrite it with {BLESS_ENV}=1 cargo test -p perpcore-cli \
         --test journal_fixture"
    );
    assert_eq!(
        dir_digest(&journal_dir()),
        before,
        "a read-only replay wrote into the fixture"
    );

    let mut tags = BTreeSet::new();
    perpcore_node::inspect(&journal_dir(), |_, _, cmd| {
        tags.insert(cmd.tag());
    })
    .expect("inspect");
    let all: BTreeSet<u16> = Command::TAGS.iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, all, "the fixture must hold every command kind");
}

/// Recovery from the fixture's snapshot (payload version 3, section "state") reaches the
/// same hash as the replay from genesis.
#[test]
fn committed_journal_recovers_from_its_snapshot() {
    if std::env::var(BLESS_ENV).is_ok_and(|v| v == "journal") {
        // The other test regenerates the journal; running against a half-written one
        // would race it.
        return;
    }
    let rec = sequencer::recover_with::<Core>(journal_dir(), JournalOptions::read_only())
        .expect("recover");
    let used = rec.report.snapshot_used.unwrap_or_else(|| {
        panic!(
            "the fixture's snapshot was not used ({:?}): the engine can no longer restore \
             the state it wrote. That changes what snapshot section 1 means (a payload \
             change, docs/JOURNAL_FORMAT.md); regenerate with {BLESS_ENV}=journal cargo \
             test -p perpcore-cli --test journal_fixture",
            rec.report.snapshots_rejected
        )
    });
    assert_eq!(used.payload_version, perpcore_journal::PAYLOAD_VERSION);
    assert_eq!(used.section, perpcore_journal::SECTION_STATE);
    assert!(
        rec.report.replayed_commands > 0,
        "the tail must be replayed"
    );
    let replayed = perpcore_node::replay(&journal_dir(), None, |_| {}).expect("replay");
    assert_eq!(rec.report.state_hash, replayed.state_hash);
    if std::env::var(BLESS_ENV).is_err() {
        // (While blessing, the other test is rewriting the file.)
        assert_eq!(hex(&rec.report.state_hash), expected_hash());
    }
}

/// The fixture stays small enough to live in git.
#[test]
fn committed_journal_is_small() {
    if std::env::var(BLESS_ENV).is_ok_and(|v| v == "journal") {
        return;
    }
    let total: u64 = dir_digest(&fixture_dir())
        .iter()
        .map(|(_, len, _)| len)
        .sum();
    assert!(
        total < MAX_FIXTURE_BYTES,
        "fixture is {total} bytes (limit {MAX_FIXTURE_BYTES})"
    );
}

/// A copy of the fixture whose snapshot claims another payload version is refused by
/// name, not recovered from genesis behind the caller's back.
#[test]
fn a_snapshot_of_another_payload_version_refuses_recovery() {
    if std::env::var(BLESS_ENV).is_ok_and(|v| v == "journal") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = tmp.path().join("journal");
    copy_dir(&journal_dir(), &copy);
    {
        let db = perpcore_journal::open_raw_db(&copy).expect("sled");
        let tree = db.open_tree("snapshots").expect("tree");
        let (key, value) = tree.first().expect("read").expect("a snapshot");
        let view = perpcore_journal::decode_snapshot(&value).expect("valid snapshot");
        let meta = perpcore_journal::SnapshotMeta {
            payload_version: perpcore_journal::PAYLOAD_VERSION + 1,
            ..view.meta
        };
        let record = perpcore_journal::encode_snapshot(&meta, view.state);
        tree.insert(key, record).expect("insert");
        db.flush().expect("flush");
    }
    match sequencer::recover_with::<Core>(&copy, JournalOptions::read_only()) {
        Err(SequencerError::Journal(JournalError::UnsupportedPayloadVersion {
            found,
            supported,
            ..
        })) => assert_eq!(
            (found, supported),
            (
                perpcore_journal::PAYLOAD_VERSION + 1,
                perpcore_journal::PAYLOAD_VERSION
            )
        ),
        Err(e) => panic!("expected UnsupportedPayloadVersion, got {e}"),
        Ok(_) => panic!("recovered from a snapshot of an unknown payload version"),
    }
}
