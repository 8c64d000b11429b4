//! Property tests: the decoders never panic on arbitrary bytes, and any change to a
//! valid record (bit flip, truncation, extension) is rejected.

use perpcore_journal::{
    decode_batch, decode_genesis_record, decode_snapshot, encode_genesis_record, encode_snapshot,
    scan_records, BatchBuilder, SnapshotMeta, BATCH_HEADER_LEN, BATCH_MAGIC, FORMAT_VERSION,
    PAYLOAD_VERSION, SECTION_STATE,
};
use proptest::prelude::*;

/// A valid sealed batch record built from arbitrary commands.
fn valid_record(first_seq: u64, ts0: u64, cmds: &[(u64, Vec<u8>)], prev: [u8; 32]) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    let mut ts = ts0;
    for (i, (dt, bytes)) in cmds.iter().enumerate() {
        ts = ts.saturating_add(*dt);
        let seq = first_seq + u64::try_from(i).expect("fits");
        b.push(seq, ts, bytes).expect("push");
    }
    b.seal(prev).expect("seal");
    b.record().to_vec()
}

/// A record with arbitrary header fields and payload but *correct* checksums, so the
/// decoder's checks past the checksums get exercised by random input.
fn checksummed_record(
    fields: (u16, u16, u64, u32, u64, u64),
    payload: &[u8],
    prev: [u8; 32],
) -> Vec<u8> {
    let (version, reserved, first_seq, count, first_ts, last_ts) = fields;
    let mut out = Vec::new();
    out.extend_from_slice(&BATCH_MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&reserved.to_le_bytes());
    out.extend_from_slice(&first_seq.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_le_bytes());
    out.extend_from_slice(&first_ts.to_le_bytes());
    out.extend_from_slice(&last_ts.to_le_bytes());
    out.extend_from_slice(blake3::hash(payload).as_bytes());
    out.extend_from_slice(&prev);
    let h = blake3::hash(&out);
    out.extend_from_slice(h.as_bytes());
    assert_eq!(out.len(), BATCH_HEADER_LEN);
    out.extend_from_slice(payload);
    out
}

fn cmds_strategy() -> impl Strategy<Value = Vec<(u64, Vec<u8>)>> {
    prop::collection::vec((0u64..5, prop::collection::vec(any::<u8>(), 0..24)), 1..8)
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { pos: usize, mask: u8 },
    Truncate { keep: usize },
    Extend { extra: Vec<u8> },
    Overwrite { pos: usize, bytes: Vec<u8> },
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(pos, mask)| Mutation::Flip { pos, mask }),
        any::<usize>().prop_map(|keep| Mutation::Truncate { keep }),
        prop::collection::vec(any::<u8>(), 1..16).prop_map(|extra| Mutation::Extend { extra }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(pos, bytes)| Mutation::Overwrite { pos, bytes }),
    ]
}

fn mutate(rec: &[u8], m: &Mutation) -> Vec<u8> {
    let mut v = rec.to_vec();
    match m {
        Mutation::Flip { pos, mask } => {
            let p = pos % v.len();
            v[p] ^= mask;
        }
        Mutation::Truncate { keep } => v.truncate(keep % v.len()),
        Mutation::Extend { extra } => v.extend_from_slice(extra),
        Mutation::Overwrite { pos, bytes } => {
            let start = pos % v.len();
            for (i, b) in bytes.iter().enumerate() {
                if let Some(slot) = v.get_mut(start + i) {
                    *slot = *b;
                }
            }
        }
    }
    v
}

proptest! {
    // Cheap cases, so many of them. No regression files: a failure prints its minimal
    // input, which belongs in a named unit test.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..perpcore_testkit::prop::config(4096)
    })]

    #[test]
    fn batch_decoder_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode_batch(&bytes);
        let mut with_magic = BATCH_MAGIC.to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = decode_batch(&with_magic);
    }

    #[test]
    fn batch_decoder_never_panics_past_the_checksums(
        version in prop_oneof![Just(FORMAT_VERSION), any::<u16>()],
        reserved in prop_oneof![Just(0u16), any::<u16>()],
        first_seq in prop_oneof![Just(0u64), Just(1u64), Just(u64::MAX), any::<u64>()],
        count in prop_oneof![Just(0u32), 1u32..6, any::<u32>()],
        first_ts in any::<u64>(),
        last_ts in any::<u64>(),
        payload in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let rec = checksummed_record((version, reserved, first_seq, count, first_ts, last_ts), &payload, [0; 32]);
        if let Ok(view) = decode_batch(&rec) {
            // Anything accepted must iterate exactly `count` entries.
            prop_assert_eq!(view.entries().count(), usize::try_from(view.header.count).expect("fits"));
        }
    }

    #[test]
    fn mutated_valid_batches_are_rejected(
        first_seq in 1u64..1_000_000,
        ts0 in 0u64..1_000_000,
        cmds in cmds_strategy(),
        prev in any::<[u8; 32]>(),
        m in mutation_strategy(),
    ) {
        let rec = valid_record(first_seq, ts0, &cmds, prev);
        let view = decode_batch(&rec).expect("valid record decodes");
        prop_assert_eq!(view.header.count, u32::try_from(cmds.len()).expect("fits"));
        let got: Vec<Vec<u8>> = view.entries().map(|e| e.bytes.to_vec()).collect();
        let want: Vec<Vec<u8>> = cmds.iter().map(|c| c.1.clone()).collect();
        prop_assert_eq!(got, want);

        let bad = mutate(&rec, &m);
        if bad != rec {
            prop_assert!(decode_batch(&bad).is_err(), "mutation {:?} accepted", m);
        }
    }

    #[test]
    fn scan_never_panics_on_arbitrary_logs(
        records in prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 0..10), prop::collection::vec(any::<u8>(), 0..200)),
            0..5,
        ),
    ) {
        let _ = scan_records([0; 32], records.iter().map(|(k, v)| Ok((k, v))));
    }

    #[test]
    fn snapshot_decoder_rejects_mutations_and_never_panics(
        state in prop::collection::vec(any::<u8>(), 0..200),
        seq in any::<u64>(),
        hash in any::<[u8; 32]>(),
        m in mutation_strategy(),
        junk in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let _ = decode_snapshot(&junk);
        let meta = SnapshotMeta {
            payload_version: PAYLOAD_VERSION,
            section: SECTION_STATE,
            seq,
            last_ts_ns: seq / 2,
            state_len: 0,
            state_hash: hash,
            chain_hash: [5; 32],
        };
        let rec = encode_snapshot(&meta, &state);
        let view = decode_snapshot(&rec).expect("valid snapshot");
        prop_assert_eq!(view.state, &state[..]);
        prop_assert_eq!(view.meta.state_len, u64::try_from(state.len()).expect("fits"));
        prop_assert_eq!(view.meta.payload_version, PAYLOAD_VERSION);
        prop_assert_eq!(view.meta.section, SECTION_STATE);
        let bad = mutate(&rec, &m);
        if bad != rec {
            prop_assert!(decode_snapshot(&bad).is_err());
        }
    }

    #[test]
    fn genesis_decoder_rejects_mutations_and_never_panics(
        genesis in prop::collection::vec(any::<u8>(), 0..100),
        m in mutation_strategy(),
        junk in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let _ = decode_genesis_record(&junk);
        let rec = encode_genesis_record(PAYLOAD_VERSION, &genesis);
        let decoded = decode_genesis_record(&rec).expect("valid genesis");
        prop_assert_eq!(decoded.genesis, &genesis[..]);
        prop_assert_eq!(decoded.payload_version, PAYLOAD_VERSION);
        let bad = mutate(&rec, &m);
        if bad != rec {
            prop_assert!(decode_genesis_record(&bad).is_err());
        }
    }
}
