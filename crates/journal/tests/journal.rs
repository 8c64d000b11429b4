//! Integration tests of the journal on a real sled database: round trip, corruption
//! detection (byte flips, truncation, missing batches), torn-tail repair, snapshots,
//! poisoning. Raw damage is done by opening the sled database directly after the
//! journal is dropped, as a disk fault or a crashed writer would leave it.

use std::path::{Path, PathBuf};

use perpcore_journal::{
    genesis_hash, scan_records, BatchBuilder, Journal, JournalError, JournalOptions, OpenCheck,
    OpenReport, BATCH_HEADER_LEN,
};

const GENESIS: &[u8] = b"test-genesis: engine config v1";

fn cmd_bytes(seq: u64) -> Vec<u8> {
    // Varying lengths, including empty commands.
    let len = usize::try_from(seq % 7).unwrap_or(0);
    let mut v = vec![u8::try_from(seq % 251).unwrap_or(0); len];
    v.extend_from_slice(&seq.to_le_bytes());
    if seq.is_multiple_of(5) {
        v.clear();
    }
    v
}

/// Appends batches of the given sizes; timestamps are 1000 * seq.
fn append_batches(j: &mut Journal, sizes: &[u32]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut b = BatchBuilder::new();
    for &n in sizes {
        b.clear();
        let first = j.last_seq() + 1;
        for seq in first..first + u64::from(n) {
            b.push(seq, seq * 1000, &cmd_bytes(seq)).expect("push");
        }
        let info = j.append(&mut b).expect("append");
        assert_eq!(info.first_seq, first);
        assert_eq!(info.count, n);
        out.push((info.first_seq, info.last_seq));
    }
    out
}

fn create(path: &Path) -> Journal {
    let (j, report) =
        Journal::open_or_create(path, GENESIS, JournalOptions::default()).expect("create");
    assert!(report.created);
    j
}

/// The raw sled database of a dropped journal (waits for sled to release its lock).
fn sled_open(path: &Path) -> sled::Db {
    perpcore_journal::open_raw_db(path).expect("sled open")
}

/// A raw sled record of the `batches` tree: (key, value).
type RawRecord = (Vec<u8>, Vec<u8>);

/// A journal at `dir/j` with batches of `sizes` appended and closed, and its raw records.
fn written(dir: &Path, sizes: &[u32]) -> (PathBuf, Vec<RawRecord>) {
    let path = dir.join("j");
    {
        let mut j = create(&path);
        append_batches(&mut j, sizes);
    }
    let records = raw_batches(&path);
    (path, records)
}

fn raw_batches(path: &Path) -> Vec<RawRecord> {
    let db = sled_open(path);
    let t = db.open_tree("batches").expect("tree");
    t.iter()
        .map(|r| {
            let (k, v) = r.expect("iter");
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

/// Replaces (or with `None` removes) a raw batch record.
fn set_raw(path: &Path, tree: &str, key: &[u8], value: Option<Vec<u8>>) {
    let db = sled_open(path);
    let t = db.open_tree(tree).expect("tree");
    match value {
        Some(v) => {
            t.insert(key, v).expect("insert");
        }
        None => {
            t.remove(key).expect("remove");
        }
    }
    db.flush().expect("flush");
}

fn collect_entries(j: &Journal) -> Vec<(u64, u64, Vec<u8>)> {
    let mut out = Vec::new();
    for b in j.read_from_genesis() {
        let b = b.expect("batch");
        let mut n = 0u32;
        for e in b.entries() {
            out.push((e.seq, e.ts_ns, e.bytes.to_vec()));
            n += 1;
        }
        assert_eq!(n, b.header.count);
    }
    out
}

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j");
    let ranges = {
        let mut j = create(&path);
        assert_eq!(j.genesis(), GENESIS);
        append_batches(&mut j, &[1, 3, 10, 2, 64])
    };
    assert_eq!(ranges.last().map(|r| r.1), Some(80));
    let (j, report) = Journal::open(&path, JournalOptions::default()).expect("reopen");
    assert!(!report.created);
    assert_eq!(report.batches, Some(5));
    assert_eq!(report.last_seq, 80);
    assert_eq!(report.dropped_tail, None);
    assert_eq!(j.genesis(), GENESIS);
    assert_eq!(j.genesis_hash(), genesis_hash(GENESIS));
    assert_eq!(j.tip().last_ts_ns, 80_000);
    let entries = collect_entries(&j);
    assert_eq!(entries.len(), 80);
    for (i, (seq, ts, bytes)) in entries.iter().enumerate() {
        let expect = u64::try_from(i).expect("fits") + 1;
        assert_eq!(*seq, expect);
        assert_eq!(*ts, expect * 1000);
        assert_eq!(bytes, &cmd_bytes(expect));
    }
}

#[test]
fn open_or_create_checks_genesis_and_open_needs_a_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j");
    assert!(matches!(
        Journal::open(&path, JournalOptions::default()),
        Err(JournalError::NotAJournal(_))
    ));
    drop(create(&path));
    match Journal::open_or_create(&path, b"other config", JournalOptions::default()) {
        Err(JournalError::GenesisMismatch) => {}
        other => panic!("expected GenesisMismatch, got {other:?}"),
    }
    let (_j, report) =
        Journal::open_or_create(&path, GENESIS, JournalOptions::default()).expect("same genesis");
    assert!(!report.created);
}

#[test]
fn append_rejects_bad_batches_without_poisoning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut j = create(&dir.path().join("j"));
    append_batches(&mut j, &[2]);
    let mut b = BatchBuilder::new();
    assert!(matches!(
        j.append(&mut b),
        Err(JournalError::InvalidBatch(_))
    ));
    b.push(5, 10_000, b"x").expect("push");
    assert!(matches!(
        j.append(&mut b),
        Err(JournalError::InvalidBatch(_))
    ));
    b.clear();
    b.push(3, 1, b"ts before tip").expect("push");
    assert!(matches!(
        j.append(&mut b),
        Err(JournalError::InvalidBatch(_))
    ));
    // The builder itself refuses non-contiguous seqs and backwards timestamps.
    b.clear();
    b.push(3, 5000, b"a").expect("push");
    assert!(b.push(5, 6000, b"b").is_err());
    assert!(b.push(4, 4000, b"b").is_err());
    assert!(!j.is_poisoned());
    append_batches(&mut j, &[1]);
    assert_eq!(j.last_seq(), 3);
}

/// Every single-byte change of every stored batch is detected: in a batch that is not
/// the last it is an error naming that batch's first seq; in the last batch it is a
/// torn tail and the log ends at the previous batch.
#[test]
fn every_byte_flip_is_detected_with_the_right_seq() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j");
    let ranges = {
        let mut j = create(&path);
        append_batches(&mut j, &[3, 4, 2])
    };
    let records = raw_batches(&path);
    assert_eq!(records.len(), 3);
    let g = genesis_hash(GENESIS);
    let clean = scan_records(g, records.iter().map(|(k, v)| Ok((k, v)))).expect("clean");
    assert_eq!(clean.position.last_seq(), 9);
    assert_eq!(clean.torn_tail, None);

    for (idx, (first, _last)) in ranges.iter().enumerate() {
        let len = records[idx].1.len();
        assert!(len > BATCH_HEADER_LEN);
        for pos in 0..len {
            for mask in [0x01u8, 0x80] {
                let mut damaged = records.clone();
                damaged[idx].1[pos] ^= mask;
                let r = scan_records(g, damaged.iter().map(|(k, v)| Ok((k, v))));
                if idx + 1 < records.len() {
                    match r {
                        Err(JournalError::Corrupt { seq, .. }) => {
                            assert_eq!(seq, *first, "batch {idx} byte {pos}")
                        }
                        other => panic!("batch {idx} byte {pos}: expected Corrupt, got {other:?}"),
                    }
                } else {
                    let out = r.expect("torn tail is not an error");
                    let torn = out.torn_tail.expect("torn tail reported");
                    assert_eq!(torn.first_seq, *first);
                    assert_eq!(out.position.last_seq(), first - 1);
                }
            }
        }
    }
}

#[test]
fn flips_through_sled_header_and_payload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, records) = written(dir.path(), &[3, 4, 2]);
    // Header byte (first_seq field) of the middle batch.
    let mut v = records[1].1.clone();
    v[9] ^= 0x40;
    set_raw(&path, "batches", &records[1].0, Some(v));
    match Journal::open(&path, JournalOptions::default()) {
        Err(JournalError::Corrupt { seq: 4, what }) => assert!(what.contains("header"), "{what}"),
        other => panic!("expected Corrupt at 4, got {other:?}"),
    }
    // Restore it, then damage a payload byte of the first batch.
    set_raw(&path, "batches", &records[1].0, Some(records[1].1.clone()));
    let mut v = records[0].1.clone();
    let last = v.len() - 1;
    v[last] ^= 0x01;
    set_raw(&path, "batches", &records[0].0, Some(v));
    match Journal::open(&path, JournalOptions::default()) {
        Err(JournalError::Corrupt { seq: 1, what }) => assert!(what.contains("payload"), "{what}"),
        other => panic!("expected Corrupt at 1, got {other:?}"),
    }
    set_raw(&path, "batches", &records[0].0, Some(records[0].1.clone()));
    let (_j, report) = Journal::open(&path, JournalOptions::default()).expect("repaired by hand");
    assert_eq!(report.last_seq, 9);
}

#[test]
fn truncation_and_missing_batches_are_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, records) = written(dir.path(), &[3, 4, 2, 5]);

    // A truncated record that is not the last: error naming its seq.
    let v = records[1].1[..records[1].1.len() - 3].to_vec();
    set_raw(&path, "batches", &records[1].0, Some(v));
    assert!(matches!(
        Journal::open(&path, JournalOptions::default()),
        Err(JournalError::Corrupt { seq: 4, .. })
    ));
    // Truncated inside the header.
    let v = records[1].1[..BATCH_HEADER_LEN - 1].to_vec();
    set_raw(&path, "batches", &records[1].0, Some(v));
    assert!(matches!(
        Journal::open(&path, JournalOptions::default()),
        Err(JournalError::Corrupt { seq: 4, .. })
    ));
    // A missing middle batch: a gap, named by the first missing seq.
    set_raw(&path, "batches", &records[1].0, None);
    match Journal::open(&path, JournalOptions::default()) {
        Err(JournalError::Corrupt { seq: 4, what }) => assert!(what.contains("gap"), "{what}"),
        other => panic!("expected gap at 4, got {other:?}"),
    }
    // A missing first batch.
    set_raw(&path, "batches", &records[1].0, Some(records[1].1.clone()));
    set_raw(&path, "batches", &records[0].0, None);
    assert!(matches!(
        Journal::open(&path, JournalOptions::default()),
        Err(JournalError::Corrupt { seq: 1, .. })
    ));
    // A batch swapped for a self-consistent one from elsewhere: chain broken.
    set_raw(&path, "batches", &records[0].0, Some(records[0].1.clone()));
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other_path = other_dir.path().join("j");
    {
        let (mut o, _) =
            Journal::open_or_create(&other_path, b"another genesis", JournalOptions::default())
                .expect("other");
        append_batches(&mut o, &[3, 4]);
    }
    let foreign = raw_batches(&other_path);
    set_raw(&path, "batches", &foreign[1].0, Some(foreign[1].1.clone()));
    match Journal::open(&path, JournalOptions::default()) {
        Err(JournalError::Corrupt { seq: 4, what }) => assert!(what.contains("chain"), "{what}"),
        other => panic!("expected chain break at 4, got {other:?}"),
    }
}

/// Stores, raw, the first half of a batch of `n` commands that continues the journal at
/// `path`: what a writer that crashed after flushing, before its fsync and mark, leaves.
/// Returns the record's full length and the half stored.
fn store_unacknowledged_torn_batch(path: &Path, n: u32) -> (usize, usize) {
    let tip = {
        let (j, _) = Journal::open(path, JournalOptions::default()).expect("open");
        j.tip()
    };
    let mut b = BatchBuilder::new();
    for seq in tip.last_seq + 1..=tip.last_seq + u64::from(n) {
        b.push(seq, seq * 1000, &cmd_bytes(seq)).expect("push");
    }
    b.seal(tip.link).expect("seal");
    let record = b.record().to_vec();
    let half = record.len() / 2;
    set_raw(
        path,
        "batches",
        &(tip.last_seq + 1).to_be_bytes(),
        Some(record[..half].to_vec()),
    );
    (record.len(), half)
}

#[test]
fn torn_last_batch_is_dropped_and_appends_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = written(dir.path(), &[3, 4]);
    let (_, half) = store_unacknowledged_torn_batch(&path, 5);
    {
        let (mut j, report) = Journal::open(&path, JournalOptions::default()).expect("open");
        let torn = report.dropped_tail.expect("dropped");
        assert_eq!(torn.first_seq, 8);
        assert_eq!(torn.record_len, u64::try_from(half).expect("fits"));
        assert_eq!(report.last_seq, 7);
        assert_eq!(report.durable_mark, 7);
        assert_eq!(j.tip().last_ts_ns, 7000);
        // New appends continue from the last good batch, with different content.
        let mut b = BatchBuilder::new();
        b.push(8, 9_000_000, b"after repair").expect("push");
        let info = j.append(&mut b).expect("append after repair");
        assert_eq!((info.first_seq, info.last_seq), (8, 8));
    }
    let (j, report) = Journal::open(&path, JournalOptions::default()).expect("reopen");
    assert_eq!(report.dropped_tail, None);
    assert_eq!(report.batches, Some(3));
    let entries = collect_entries(&j);
    assert_eq!(entries.len(), 8);
    assert_eq!(entries[7], (8, 9_000_000, b"after repair".to_vec()));
}

/// The reported defect at the journal's level: damage in the last batch looked like a
/// torn write and was dropped, silently losing acknowledged commands. The mark says the
/// batch was acknowledged, so it is damage.
#[test]
fn damage_in_the_last_acknowledged_batch_is_an_error_not_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, records) = written(dir.path(), &[3, 4, 5]);
    let mut v = records[2].1.clone();
    v[BATCH_HEADER_LEN + 3] ^= 0xFF;
    set_raw(&path, "batches", &records[2].0, Some(v));
    for opts in [
        JournalOptions::default(),
        last_batch_only(),
        JournalOptions::read_only(),
    ] {
        match Journal::open(&path, opts) {
            Err(JournalError::Corrupt { seq: 8, what }) => {
                assert!(what.contains("acknowledged"), "{what}")
            }
            other => panic!("expected damage at seq 8, got {other:?}"),
        }
    }
}

/// The reported defect: sled drops the end of its log after a checksum failure, and the
/// chain then sees a shorter, valid log. The mark catches it and names both seqs.
#[test]
fn a_log_that_ends_before_the_durable_mark_is_refused_naming_both_seqs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, records) = written(dir.path(), &[3, 4, 5]);
    set_raw(&path, "batches", &records[2].0, None);
    for opts in [
        JournalOptions::default(),
        last_batch_only(),
        JournalOptions::read_only(),
    ] {
        match Journal::open(&path, opts) {
            Err(
                e @ JournalError::Truncated {
                    log_end: 7,
                    durable: 12,
                    ..
                },
            ) => {
                let text = e.to_string();
                assert!(text.contains("seq 7") && text.contains("seq 12"), "{text}");
            }
            other => panic!("expected a truncation error, got {other:?}"),
        }
    }
}

#[test]
fn snapshots_write_list_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j");
    {
        let mut j = create(&path);
        let s0 = j
            .write_snapshot(0, [7u8; 32], b"initial")
            .expect("snapshot at 0");
        assert_eq!(s0.chain_hash, genesis_hash(GENESIS));
        append_batches(&mut j, &[3, 4]);
        assert!(matches!(
            j.write_snapshot(3, [1u8; 32], b"x"),
            Err(JournalError::SnapshotNotAtTip {
                requested: 3,
                tip: 7
            })
        ));
        let s7 = j
            .write_snapshot(7, [2u8; 32], b"state at seven")
            .expect("snapshot");
        assert_eq!(s7.last_ts_ns, 7000);
        assert_eq!(s7.chain_hash, j.tip().link);
        append_batches(&mut j, &[2]);
        // A big snapshot (goes to a sled blob file, which the journal must fsync).
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        j.write_snapshot(9, [3u8; 32], &big).expect("big snapshot");
        assert!(!j.is_poisoned());
    }
    let (j, _) = Journal::open(&path, JournalOptions::default()).expect("reopen");
    let list = j.list_snapshots().expect("list");
    assert_eq!(
        list.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![0, 7, 9]
    );
    let newest = j.newest_snapshot(None).expect("newest").expect("some");
    assert_eq!(newest.meta.seq, 9);
    assert_eq!(newest.state.len(), 1_000_000);
    j.check_snapshot_position(&newest.meta).expect("at tip");
    let s = j
        .newest_snapshot(Some(8))
        .expect("at or before 8")
        .expect("some");
    assert_eq!(
        (s.meta.seq, s.meta.state_hash, s.state.as_slice()),
        (7, [2u8; 32], &b"state at seven"[..])
    );
    j.check_snapshot_position(&s.meta).expect("below tip");
    // Reading resumes after the snapshot and chains onto it.
    let tail: Vec<u64> = j
        .read_after_snapshot(&s.meta)
        .flat_map(|b| {
            b.expect("batch")
                .entries()
                .map(|e| e.seq)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(tail, vec![8, 9]);
    assert!(j.load_snapshot(5).expect("load").is_none());
    drop(j);

    // A damaged snapshot is reported, not loaded.
    let db = sled_open(&path);
    let t = db.open_tree("snapshots").expect("tree");
    let mut v = t
        .get(7u64.to_be_bytes())
        .expect("get")
        .expect("present")
        .to_vec();
    v[140] ^= 0x20;
    t.insert(7u64.to_be_bytes(), v).expect("insert");
    db.flush().expect("flush");
    drop(t);
    drop(db);
    let (j, _) = Journal::open(&path, JournalOptions::default()).expect("reopen");
    assert!(matches!(
        j.load_snapshot(7),
        Err(JournalError::SnapshotCorrupt { seq: 7, .. })
    ));
    assert!(j.list_snapshots().is_err());
    // A snapshot claiming the wrong chain link is caught by read_after_snapshot.
    let mut meta = j.load_snapshot(0).expect("load").expect("some").meta;
    meta.chain_hash = [9u8; 32];
    let first = j.read_after_snapshot(&meta).next().expect("one item");
    assert!(matches!(first, Err(JournalError::Corrupt { seq: 1, .. })));
}

#[test]
fn big_batches_round_trip() {
    // Records larger than sled's blob threshold (~128 KiB) are stored as blob files.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j");
    let big = vec![0xABu8; 300_000];
    {
        let mut j = create(&path);
        let mut b = BatchBuilder::new();
        for seq in 1..=3u64 {
            b.push(seq, seq, &big).expect("push");
        }
        j.append(&mut b).expect("append");
    }
    let (j, report) = Journal::open(&path, JournalOptions::default()).expect("reopen");
    assert_eq!(report.last_seq, 3);
    let entries = collect_entries(&j);
    assert!(entries.iter().all(|e| e.2 == big));
}

#[test]
fn failed_write_poisons_until_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j");
    {
        let mut j = create(&path);
        append_batches(&mut j, &[2]);
        j.fail_next_sync();
        let mut b = BatchBuilder::new();
        b.push(3, 3000, b"never acknowledged").expect("push");
        assert!(matches!(j.append(&mut b), Err(JournalError::Injected(_))));
        assert!(j.is_poisoned());
        b.clear();
        b.push(3, 3000, b"retry").expect("push");
        assert!(matches!(j.append(&mut b), Err(JournalError::Poisoned)));
        assert!(matches!(
            j.write_snapshot(2, [0; 32], b""),
            Err(JournalError::Poisoned)
        ));
    }
    // Reopening verifies what actually reached the disk and accepts writes again.
    let (mut j, report) = Journal::open(&path, JournalOptions::default()).expect("reopen");
    assert!(!j.is_poisoned());
    assert!(report.last_seq == 2 || report.last_seq == 3);
    let next = report.last_seq + 1;
    let mut b = BatchBuilder::new();
    b.push(next, 10_000, b"after reopen").expect("push");
    j.append(&mut b).expect("append after reopen");
}

#[test]
fn durable_observer_sees_each_append() {
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut j = create(&dir.path().join("j"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    j.set_durable_observer(Box::new(move |seq| s.lock().expect("lock").push(seq)));
    append_batches(&mut j, &[2, 3]);
    assert_eq!(*seen.lock().expect("lock"), vec![2, 5]);
}

/// Builders for consecutive batches of the given sizes starting after `last_seq`.
fn builders(last_seq: u64, sizes: &[u32]) -> Vec<BatchBuilder> {
    let mut next = last_seq + 1;
    sizes
        .iter()
        .map(|&n| {
            let mut b = BatchBuilder::new();
            for seq in next..next + u64::from(n) {
                b.push(seq, seq * 1000, &cmd_bytes(seq)).expect("push");
            }
            next += u64::from(n);
            b
        })
        .collect()
}

#[test]
fn a_group_of_batches_is_one_append_and_reads_back_as_its_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j");
    {
        let mut j = create(&path);
        append_batches(&mut j, &[3]);
        let mut group = builders(3, &[5, 1, 7]);
        let info = j.append_group(&mut group).expect("group");
        // 5 + 1 + 7 commands after seq 3: seqs 4..=16.
        assert_eq!((info.first_seq, info.last_seq, info.count), (4, 16, 13));
        assert_eq!(j.read_from_genesis().count(), 4);
        append_batches(&mut j, &[2]);
    }
    let (j, report) = Journal::open(&path, JournalOptions::default()).expect("reopen");
    assert_eq!(report.batches, Some(5));
    assert_eq!(report.last_seq, 18);
    let entries = collect_entries(&j);
    assert_eq!(entries.len(), 18);
    for (i, (seq, _, bytes)) in entries.iter().enumerate() {
        assert_eq!(*seq, u64::try_from(i).expect("fits") + 1);
        assert_eq!(bytes, &cmd_bytes(*seq));
    }
    drop(j);
    let firsts: Vec<u64> = raw_batches(&path)
        .iter()
        .map(|(k, _)| u64::from_be_bytes(k[..8].try_into().expect("8-byte key")))
        .collect();
    assert_eq!(firsts, vec![1, 4, 9, 10, 17]);
}

#[test]
fn a_bad_batch_anywhere_in_a_group_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j");
    let mut j = create(&path);
    append_batches(&mut j, &[2]);
    let tip = j.tip();
    // The third batch skips seq 10 (a gap inside the group).
    let mut group = builders(2, &[3, 4]);
    group.extend(builders(10, &[2]));
    assert!(matches!(
        j.append_group(&mut group),
        Err(JournalError::InvalidBatch(_))
    ));
    assert!(matches!(
        j.append_group(&mut []),
        Err(JournalError::InvalidBatch(_))
    ));
    assert_eq!(j.tip(), tip);
    // Not poisoned: the well-formed group goes in.
    let mut group = builders(2, &[3, 4]);
    j.append_group(&mut group).expect("good group");
    assert_eq!(j.last_seq(), 9);
    drop(j);
    assert_eq!(raw_batches(&path).len(), 3);
}

fn last_batch_only() -> JournalOptions {
    JournalOptions {
        open_check: OpenCheck::LastBatch,
        ..JournalOptions::default()
    }
}

#[test]
fn last_batch_open_finds_the_same_tip_and_drops_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j");
    {
        let mut j = create(&path);
        append_batches(&mut j, &[3, 4, 5]);
    }
    let (full_tip, full_report) = {
        let (j, r) = Journal::open(&path, JournalOptions::default()).expect("full");
        (j.tip(), r)
    };
    let (j, report) = Journal::open(&path, last_batch_only()).expect("last batch");
    assert_eq!(j.tip(), full_tip);
    // The same report, but for the batch count a last-batch open does not take.
    assert_eq!(full_report.batches, Some(3));
    assert_eq!(
        report,
        OpenReport {
            batches: None,
            ..full_report
        }
    );
    drop(j);
    // A torn, never acknowledged last batch is dropped as in a full open.
    store_unacknowledged_torn_batch(&path, 2);
    let (j, report) = Journal::open(&path, last_batch_only()).expect("open");
    assert_eq!(report.dropped_tail.map(|t| t.first_seq), Some(13));
    assert_eq!((report.last_seq, report.batches), (12, None));
    assert_eq!(j.tip().last_ts_ns, 12000);
}

#[test]
fn last_batch_open_leaves_older_damage_to_the_reader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, records) = written(dir.path(), &[3, 4, 2, 5]);
    let mut v = records[1].1.clone();
    let last = v.len() - 1;
    v[last] ^= 0x40;
    set_raw(&path, "batches", &records[1].0, Some(v));
    // A full open refuses the journal; a last-batch open does not look that far back,
    // and reading the log finds the damage with the same seq.
    assert!(matches!(
        Journal::open(&path, JournalOptions::default()),
        Err(JournalError::Corrupt { seq: 4, .. })
    ));
    let (j, report) = Journal::open(&path, last_batch_only()).expect("last batch");
    assert_eq!(report.last_seq, 14);
    let first_error = j.read_from_genesis().find_map(Result::err);
    assert!(
        matches!(first_error, Some(JournalError::Corrupt { seq: 4, .. })),
        "{first_error:?}"
    );
    drop(j);
    // Damage in the batch before the last is refused by a last-batch open too.
    let mut v = records[2].1.clone();
    v[BATCH_HEADER_LEN + 1] ^= 1;
    set_raw(&path, "batches", &records[2].0, Some(v));
    assert!(matches!(
        Journal::open(&path, last_batch_only()),
        Err(JournalError::Corrupt { seq: 8, .. })
    ));
}

#[test]
fn flushed_groups_are_durable_at_the_next_sync_and_a_failed_sync_poisons_the_journal() {
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j");
    {
        let mut j = create(&path);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        j.set_durable_observer(Box::new(move |seq| s.lock().expect("lock").push(seq)));
        let mut sync = j.sync_handle().expect("sync handle");
        // Two groups (2 and 3 commands) flushed, then one sync covers both: the observer
        // (moved to the handle) hears of seq 5 only once it is synced.
        let info = j
            .append_group_flushed(&mut builders(0, &[2]))
            .expect("flushed");
        assert_eq!((info.first_seq, info.last_seq), (1, 2));
        j.append_group_flushed(&mut builders(2, &[1, 2]))
            .expect("flushed");
        assert_eq!(j.last_seq(), 5);
        assert!(seen.lock().expect("lock").is_empty());
        sync.sync(5).expect("sync");
        assert_eq!(*seen.lock().expect("lock"), vec![5]);
        // A plain append still works and is durable by itself; the observer is the
        // handle's now, so it is not told.
        append_batches(&mut j, &[1]);
        assert_eq!(*seen.lock().expect("lock"), vec![5]);
        // A failed sync poisons the journal as well as the handle.
        j.fail_next_sync();
        j.append_group_flushed(&mut builders(6, &[4]))
            .expect("flushed");
        assert!(matches!(sync.sync(10), Err(JournalError::Injected(_))));
        assert!(j.is_poisoned());
        assert!(matches!(
            j.append_group_flushed(&mut builders(10, &[1])),
            Err(JournalError::Poisoned)
        ));
        assert!(matches!(sync.sync(10), Err(JournalError::Poisoned)));
        assert_eq!(*seen.lock().expect("lock"), vec![5]);
    }
    // What was flushed is in sled's file: reopening finds all ten commands in order.
    let (j, report) = Journal::open(&path, JournalOptions::default()).expect("reopen");
    assert_eq!(report.last_seq, 10);
    let seqs: Vec<u64> = collect_entries(&j).iter().map(|e| e.0).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<u64>>());
}

fn open_err(path: &Path, opts: JournalOptions) -> JournalError {
    match Journal::open(path, opts) {
        Ok(_) => panic!("open succeeded"),
        Err(e) => e,
    }
}

#[test]
fn a_journal_of_another_format_version_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = written(dir.path(), &[3]);
    // What a version-2 build wrote: format record and mark slots of version 2 (the mark
    // is otherwise read first, and must not turn the answer into "damaged").
    let mut format = perpcore_journal::encode_format_record();
    format[4..6].copy_from_slice(&2u16.to_le_bytes());
    set_raw(
        &path,
        "meta",
        perpcore_journal::META_FORMAT_KEY,
        Some(format),
    );
    let mark_path = path.join(perpcore_journal::MARK_FILE);
    let mut mark = std::fs::read(&mark_path).expect("mark");
    let mut patched = 0;
    for stride in [0, perpcore_journal::MARK_SLOT_STRIDE] {
        let slot = usize::try_from(stride).expect("fits");
        if mark.get(slot..slot + 4) == Some(&perpcore_journal::MARK_MAGIC[..]) {
            mark[slot + 4..slot + 6].copy_from_slice(&2u16.to_le_bytes());
            let sum = *blake3::hash(&mark[slot..slot + 104]).as_bytes();
            mark[slot + 104..slot + 136].copy_from_slice(&sum);
            patched += 1;
        }
    }
    assert!(patched > 0, "no mark slot found");
    std::fs::write(&mark_path, &mark).expect("write mark");
    for opts in [JournalOptions::default(), JournalOptions::read_only()] {
        match open_err(&path, opts) {
            JournalError::UnsupportedVersion { found, supported } => {
                assert_eq!((found, supported), (2, 3));
                assert_eq!(supported, perpcore_journal::FORMAT_VERSION);
            }
            other => panic!("expected UnsupportedVersion, got {other}"),
        }
    }
}

#[test]
fn a_journal_of_an_unknown_payload_version_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = written(dir.path(), &[3]);
    let genesis = perpcore_journal::encode_genesis_record(99, GENESIS);
    set_raw(
        &path,
        "meta",
        perpcore_journal::META_GENESIS_KEY,
        Some(genesis),
    );
    for opts in [JournalOptions::default(), JournalOptions::read_only()] {
        let err = open_err(&path, opts);
        match &err {
            JournalError::UnsupportedPayloadVersion {
                found, supported, ..
            } => {
                assert_eq!(
                    (*found, *supported),
                    (99, perpcore_journal::PAYLOAD_VERSION)
                );
            }
            other => panic!("expected UnsupportedPayloadVersion, got {other}"),
        }
        let text = err.to_string();
        assert!(text.contains("99") && text.contains("genesis"), "{text}");
    }
}

#[test]
fn snapshots_carry_payload_version_and_section() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j");
    let mut j = create(&path);
    append_batches(&mut j, &[2]);
    let meta = j.write_snapshot(2, [7; 32], b"state").expect("snapshot");
    assert_eq!(meta.payload_version, perpcore_journal::PAYLOAD_VERSION);
    assert_eq!(meta.section, perpcore_journal::SECTION_STATE);
    let loaded = j.load_snapshot(2).expect("load").expect("stored");
    assert_eq!(loaded.meta, meta);
    assert_eq!(loaded.state, b"state");
    drop(j);

    // Another payload version: refused by name, not skipped as damage.
    let other = perpcore_journal::SnapshotMeta {
        payload_version: perpcore_journal::PAYLOAD_VERSION + 1,
        ..meta
    };
    set_raw(
        &path,
        "snapshots",
        &perpcore_journal::seq_key(2),
        Some(perpcore_journal::encode_snapshot(&other, b"state")),
    );
    let (j, _) = Journal::open(&path, JournalOptions::read_only()).expect("open");
    match j.load_snapshot(2) {
        Err(JournalError::UnsupportedPayloadVersion {
            found, supported, ..
        }) => assert_eq!(
            (found, supported),
            (
                perpcore_journal::PAYLOAD_VERSION + 1,
                perpcore_journal::PAYLOAD_VERSION
            )
        ),
        other => panic!("expected UnsupportedPayloadVersion, got {other:?}"),
    }
    drop(j);

    // An unknown section tag: the snapshot is unusable (corrupt), naming the tag.
    let unknown = perpcore_journal::SnapshotMeta {
        section: 77,
        ..meta
    };
    set_raw(
        &path,
        "snapshots",
        &perpcore_journal::seq_key(2),
        Some(perpcore_journal::encode_snapshot(&unknown, b"state")),
    );
    let (j, _) = Journal::open(&path, JournalOptions::read_only()).expect("open");
    match j.load_snapshot(2) {
        Err(JournalError::SnapshotCorrupt { seq: 2, what }) => {
            assert!(what.contains("77"), "{what}")
        }
        other => panic!("expected SnapshotCorrupt, got {other:?}"),
    }
}

#[test]
fn section_tags_are_unique_and_never_retired() {
    let mut seen = std::collections::BTreeSet::new();
    for (tag, name) in perpcore_journal::SNAPSHOT_SECTIONS {
        assert_ne!(*tag, 0, "{name}");
        assert!(seen.insert(*tag), "section tag {tag} used twice");
        assert!(
            !perpcore_journal::RETIRED_SNAPSHOT_SECTIONS.contains(tag),
            "section tag {tag} ({name}) is retired"
        );
        assert_eq!(perpcore_journal::section_name(*tag), Some(*name));
    }
}
