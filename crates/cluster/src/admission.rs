//! The node's deterministic rules for turning stream messages into engine envelopes:
//! which batches are applied (duplicates are not) and which timestamp each command gets.
//!
//! Owns: the per-producer de-duplication window (`Admission`), its eviction by log time,
//! its byte encoding (kept in the node's cursor), and the timestamp rule (`next_ts`).
//! Must never: read a clock, iterate anything in an undefined order, or depend on
//! anything but the stream's messages (their bytes, stream sequence and stored
//! timestamp), so that every node decides exactly the same.
//!
//! # The de-duplication rule
//! JetStream drops a re-published batch whose `Nats-Msg-Id` it has seen within the
//! stream's duplicate window. A copy stored outside that window (a publisher that retried
//! for longer than the window, a process that published one batch twice under two ids)
//! reaches every node, and this rule drops it: each batch names its producer and a batch
//! sequence number (1, 2, 3, … per producer). A producer never has more than
//! `DEDUP_WINDOW_BATCHES` batches published but not acknowledged by the stream (the
//! producer enforces it), so when batch `b` is first stored, every batch up to
//! `b − DEDUP_WINDOW_BATCHES` already has a copy earlier in the stream (or its producer
//! gave up on it, reporting an unknown outcome). Per producer the node keeps the highest
//! batch sequence applied, `high`, and which of the `DEDUP_WINDOW_BATCHES` batches up to
//! `high` were applied. A batch is applied when it is above `high`, or inside the window
//! and not yet applied; anything else (inside the window and applied, or at or below
//! `high − DEDUP_WINDOW_BATCHES`) is a duplicate and skipped.
//!
//! A producer whose last applied batch is older than `PRODUCER_EVICT_NS` of log time is
//! forgotten (checked every `EVICT_EVERY_MESSAGES` stream messages), so the table holds
//! only producers active in the last day; a copy of one of its batches stored later still
//! would be applied again. Producers retry for seconds, JetStream's window is minutes.
//!
//! # The timestamp rule
//! The stream leader stamps every message when it stores it (nanoseconds since the Unix
//! epoch); the stamp is replicated with the message, so every replica and every consumer
//! sees the same one. Command `i` of a message stored at `t` gets
//! `ts = max(previous command's ts + 1, t)`: strictly increasing even when a new stream
//! leader's clock is behind the old one's, equal on every node.

use std::collections::BTreeMap;

use crate::wire::ProducerId;

/// Batches a producer may have published and not yet acknowledged by the stream; the
/// node's window per producer. A multiple of 64.
pub const DEDUP_WINDOW_BATCHES: u64 = 1024;
const WORDS: usize = (DEDUP_WINDOW_BATCHES / 64) as usize;
/// A producer unseen for this long (log time) is forgotten: one day.
pub const PRODUCER_EVICT_NS: u64 = 24 * 3600 * 1_000_000_000;
/// Eviction runs after stream messages whose sequence is a multiple of this.
pub const EVICT_EVERY_MESSAGES: u64 = 4096;

/// The timestamp of the next command: `max(last + 1, stored)`; `None` only when `last`
/// is `u64::MAX`.
pub fn next_ts(last_ts_ns: u64, stored_ts_ns: u64) -> Option<u64> {
    Some(last_ts_ns.checked_add(1)?.max(stored_ts_ns))
}

/// One producer's window.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Window {
    /// Highest batch sequence applied.
    high: u64,
    /// Bit `i` (word `i / 64`, bit `i % 64`): batch `high − i` was applied.
    bits: [u64; WORDS],
    /// Stored timestamp of the producer's last applied batch.
    last_ts_ns: u64,
}

impl Window {
    fn get(&self, i: u64) -> bool {
        self.bits[(i / 64) as usize] & (1u64 << (i % 64)) != 0
    }

    fn set(&mut self, i: u64) {
        self.bits[(i / 64) as usize] |= 1u64 << (i % 64);
    }

    /// Moves `high` up by `by` (> 0): bit i becomes bit i + by.
    fn shift(&mut self, by: u64) {
        if by >= DEDUP_WINDOW_BATCHES {
            self.bits = [0; WORDS];
            return;
        }
        let words = (by / 64) as usize;
        let bits = (by % 64) as u32;
        let mut out = [0u64; WORDS];
        for (i, slot) in out.iter_mut().enumerate().skip(words) {
            let src = i - words;
            let mut v = self.bits[src] << bits;
            if bits > 0 && src > 0 {
                v |= self.bits[src - 1] >> (64 - bits);
            }
            *slot = v;
        }
        self.bits = out;
    }
}

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not seen before: apply its commands.
    Apply,
    /// A copy of a batch already applied (or given up on by its producer): skip it.
    Duplicate,
}

/// The de-duplication table: one window per producer, in producer-id order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    producers: BTreeMap<ProducerId, Window>,
}

/// Bytes per producer in the encoding.
const ENTRY_LEN: usize = 16 + 8 + 8 + WORDS * 8;

impl Admission {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Producers in the table.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// True when no producer is known.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Decides about batch `batch_seq` (≥ 1) of `producer`, stored at `stored_ts_ns`, and
    /// records it when it is applied.
    pub fn admit(&mut self, producer: ProducerId, batch_seq: u64, stored_ts_ns: u64) -> Verdict {
        debug_assert!(batch_seq >= 1);
        let Some(w) = self.producers.get_mut(&producer) else {
            let mut w = Window {
                high: batch_seq,
                bits: [0; WORDS],
                last_ts_ns: stored_ts_ns,
            };
            w.set(0);
            self.producers.insert(producer, w);
            return Verdict::Apply;
        };
        let verdict = if batch_seq > w.high {
            w.shift(batch_seq - w.high);
            w.high = batch_seq;
            w.set(0);
            Verdict::Apply
        } else {
            let back = w.high - batch_seq;
            if back >= DEDUP_WINDOW_BATCHES || w.get(back) {
                Verdict::Duplicate
            } else {
                w.set(back);
                Verdict::Apply
            }
        };
        if verdict == Verdict::Apply {
            w.last_ts_ns = w.last_ts_ns.max(stored_ts_ns);
        }
        verdict
    }

    /// Forgets producers whose last applied batch was stored more than
    /// `PRODUCER_EVICT_NS` before `now_log_ns`. Returns how many.
    pub fn evict(&mut self, now_log_ns: u64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, w| w.last_ts_ns.saturating_add(PRODUCER_EVICT_NS) >= now_log_ns);
        before - self.producers.len()
    }

    /// Appends the table's encoding: u32 count, then per producer (ascending id): id,
    /// high u64, last_ts_ns u64, the window's words (u64 each), all little-endian.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let n = u32::try_from(self.producers.len()).expect("fewer than 2^32 producers");
        out.extend_from_slice(&n.to_le_bytes());
        for (id, w) in &self.producers {
            out.extend_from_slice(&id.0);
            out.extend_from_slice(&w.high.to_le_bytes());
            out.extend_from_slice(&w.last_ts_ns.to_le_bytes());
            for word in &w.bits {
                out.extend_from_slice(&word.to_le_bytes());
            }
        }
    }

    /// Decodes `encode`'s output, which must use `bytes` exactly; `None` on anything else.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let n = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
        let body = &bytes[4..];
        if body.len() != n.checked_mul(ENTRY_LEN)? {
            return None;
        }
        let mut producers = BTreeMap::new();
        for e in body.chunks_exact(ENTRY_LEN) {
            let mut id = [0u8; 16];
            id.copy_from_slice(&e[0..16]);
            let u64_at = |at: usize| {
                let mut a = [0u8; 8];
                a.copy_from_slice(&e[at..at + 8]);
                u64::from_le_bytes(a)
            };
            let mut bits = [0u64; WORDS];
            for (i, word) in bits.iter_mut().enumerate() {
                *word = u64_at(32 + i * 8);
            }
            let w = Window {
                high: u64_at(16),
                bits,
                last_ts_ns: u64_at(24),
            };
            // Ids ascend strictly, as `encode` writes them; the newest batch is marked.
            if w.high == 0 || !w.get(0) {
                return None;
            }
            if producers
                .last_key_value()
                .is_some_and(|(k, _)| *k >= ProducerId(id))
            {
                return None;
            }
            producers.insert(ProducerId(id), w);
        }
        Some(Self { producers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: ProducerId = ProducerId([1; 16]);
    const Q: ProducerId = ProducerId([2; 16]);

    #[test]
    fn in_order_batches_apply_once() {
        let mut a = Admission::new();
        for b in 1..=3000 {
            assert_eq!(a.admit(P, b, 10), Verdict::Apply, "batch {b}");
        }
        // Every re-delivery is a duplicate: inside the window by its bit, below it by
        // the producer's bound on batches in flight.
        for b in [3000, 2999, 2000, 1977, 1, 5] {
            assert_eq!(a.admit(P, b, 10), Verdict::Duplicate, "batch {b}");
        }
    }

    #[test]
    fn late_copies_inside_the_window_apply_once() {
        let mut a = Admission::new();
        // Batch 2 stored before batch 1 (1 was retried after a lost ack): both apply once.
        assert_eq!(a.admit(P, 2, 10), Verdict::Apply);
        assert_eq!(a.admit(P, 1, 11), Verdict::Apply);
        assert_eq!(a.admit(P, 1, 12), Verdict::Duplicate);
        assert_eq!(a.admit(P, 2, 12), Verdict::Duplicate);
        // Jump ahead by 100 and by 64 (word boundary): gaps stay applicable.
        assert_eq!(a.admit(P, 102, 13), Verdict::Apply);
        assert_eq!(a.admit(P, 166, 13), Verdict::Apply);
        assert_eq!(a.admit(P, 101, 14), Verdict::Apply);
        assert_eq!(a.admit(P, 101, 14), Verdict::Duplicate);
        assert_eq!(a.admit(P, 102, 14), Verdict::Duplicate);
        assert_eq!(a.admit(P, 165, 14), Verdict::Apply);
        // 166 − 1024 = −858: batch 1 and 2 are still inside the window, and applied.
        assert_eq!(a.admit(P, 2, 15), Verdict::Duplicate);
        assert_eq!(a.admit(P, 3, 15), Verdict::Apply);
        // Producers are independent.
        assert_eq!(a.admit(Q, 1, 15), Verdict::Apply);
        assert_eq!(a.admit(Q, 1, 15), Verdict::Duplicate);
    }

    #[test]
    fn shifting_keeps_bits_across_words() {
        // Applied: 1..=200 except 50. After jumping to 300, batch 50 (back 250) is still
        // open and 51 (back 249) is applied; after a jump of the whole window, nothing
        // at or below high − window is open any more.
        let mut a = Admission::new();
        for b in (1..=200).filter(|b| *b != 50) {
            assert_eq!(a.admit(P, b, 0), Verdict::Apply);
        }
        assert_eq!(a.admit(P, 300, 0), Verdict::Apply);
        assert_eq!(a.admit(P, 51, 0), Verdict::Duplicate);
        assert_eq!(a.admit(P, 50, 0), Verdict::Apply);
        assert_eq!(a.admit(P, 50, 0), Verdict::Duplicate);
        // high = 1324: the window is 301..=1324; 300 is below it (back 1024), 301 is its
        // oldest slot (back 1023), never applied.
        assert_eq!(a.admit(P, 300 + DEDUP_WINDOW_BATCHES, 0), Verdict::Apply);
        assert_eq!(a.admit(P, 300, 0), Verdict::Duplicate);
        assert_eq!(a.admit(P, 301, 0), Verdict::Apply);
        assert_eq!(a.admit(P, 301, 0), Verdict::Duplicate);
    }

    #[test]
    fn eviction_is_by_log_time() {
        let mut a = Admission::new();
        a.admit(P, 1, 1_000);
        a.admit(Q, 1, 1_000 + PRODUCER_EVICT_NS);
        assert_eq!(a.evict(1_000 + PRODUCER_EVICT_NS), 0);
        assert_eq!(a.evict(1_001 + PRODUCER_EVICT_NS), 1);
        assert_eq!(a.len(), 1);
        // Forgotten: a copy of its batch would apply again (documented).
        assert_eq!(a.admit(P, 1, 2_000 + PRODUCER_EVICT_NS), Verdict::Apply);
    }

    #[test]
    fn encoding_round_trips_and_refuses_damage() {
        let mut a = Admission::new();
        for b in [3, 1, 700, 5] {
            a.admit(P, b, b * 10);
        }
        a.admit(Q, 9, 1);
        let mut bytes = Vec::new();
        a.encode(&mut bytes);
        assert_eq!(bytes.len(), 4 + 2 * ENTRY_LEN);
        assert_eq!(Admission::decode(&bytes), Some(a.clone()));
        assert_eq!(Admission::decode(&bytes[..bytes.len() - 1]), None);
        // The two entries swapped: ids no longer ascend.
        let mut swapped = bytes[..4].to_vec();
        swapped.extend_from_slice(&bytes[4 + ENTRY_LEN..]);
        swapped.extend_from_slice(&bytes[4..4 + ENTRY_LEN]);
        assert_eq!(Admission::decode(&swapped), None);
    }

    #[test]
    fn timestamps_are_strictly_increasing() {
        assert_eq!(next_ts(0, 1_700), Some(1_700));
        assert_eq!(next_ts(1_700, 1_700), Some(1_701));
        // A new stream leader whose clock is 5 s behind: time still moves forward.
        assert_eq!(next_ts(10_000_000_000, 5_000_000_000), Some(10_000_000_001));
        assert_eq!(next_ts(u64::MAX, 0), None);
    }
}
