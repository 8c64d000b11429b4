//! A toy ledger state machine for the sequencer tests. Its state hash covers a rolling
//! blake3 of every (seq, ts, command) applied, so any reordering, loss or duplication
//! of commands, or any timestamp difference, changes it.

use std::collections::BTreeMap;

use perpcore_sequencer::StateMachine;

pub const GENESIS: &[u8] = b"toy:genesis-v1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub producer: u32,
    pub n: u64,
    pub amount: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    Applied {
        producer: u32,
        n: u64,
        amount: u64,
        total: u64,
    },
    Rejected {
        producer: u32,
        n: u64,
    },
}

impl Ev {
    pub fn cmd(&self) -> Cmd {
        match *self {
            Ev::Applied {
                producer,
                n,
                amount,
                ..
            } => Cmd {
                producer,
                n,
                amount,
            },
            // Rejected amounts are not recorded; tests do not produce overflows.
            Ev::Rejected { producer, n } => Cmd {
                producer,
                n,
                amount: 0,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toy {
    last_seq: u64,
    last_ts: u64,
    total: u64,
    per_producer: BTreeMap<u32, u64>,
    rolling: [u8; 32],
}

fn encode(cmd: &Cmd, out: &mut Vec<u8>) {
    out.extend_from_slice(&cmd.producer.to_le_bytes());
    out.extend_from_slice(&cmd.n.to_le_bytes());
    out.extend_from_slice(&cmd.amount.to_le_bytes());
}

fn take<const N: usize>(b: &[u8], at: &mut usize) -> Result<[u8; N], String> {
    let end = at.checked_add(N).ok_or("overflow")?;
    let s = b.get(*at..end).ok_or("short input")?;
    *at = end;
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    Ok(a)
}

/// The toy's decode errors (a message).
#[derive(Debug)]
pub struct ToyError(pub String);

impl std::fmt::Display for ToyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ToyError {}

impl From<String> for ToyError {
    fn from(s: String) -> ToyError {
        ToyError(s)
    }
}

impl StateMachine for Toy {
    type Command = Cmd;
    type Event = Ev;
    type Error = ToyError;

    fn from_genesis(genesis: &[u8]) -> Result<Self, ToyError> {
        if !genesis.starts_with(b"toy:") {
            return Err(ToyError("not a toy genesis".to_string()));
        }
        Ok(Self {
            last_seq: 0,
            last_ts: 0,
            total: 0,
            per_producer: BTreeMap::new(),
            rolling: *blake3::hash(genesis).as_bytes(),
        })
    }

    fn encode_command(cmd: &Cmd, out: &mut Vec<u8>) {
        encode(cmd, out);
    }

    fn decode_command(bytes: &[u8]) -> Result<Cmd, ToyError> {
        if bytes.len() != 20 {
            return Err(ToyError(format!(
                "command is {} bytes, not 20",
                bytes.len()
            )));
        }
        let mut at = 0;
        Ok(Cmd {
            producer: u32::from_le_bytes(take(bytes, &mut at)?),
            n: u64::from_le_bytes(take(bytes, &mut at)?),
            amount: u64::from_le_bytes(take(bytes, &mut at)?),
        })
    }

    fn apply(&mut self, seq: u64, ts_ns: u64, cmd: &Cmd, events: &mut Vec<Ev>) {
        let mut h = blake3::Hasher::new();
        h.update(&self.rolling);
        h.update(&seq.to_le_bytes());
        h.update(&ts_ns.to_le_bytes());
        let mut enc = Vec::new();
        encode(cmd, &mut enc);
        h.update(&enc);
        self.rolling = *h.finalize().as_bytes();
        self.last_seq = seq;
        self.last_ts = ts_ns;
        let count = self.per_producer.entry(cmd.producer).or_insert(0);
        *count = count.saturating_add(1);
        match self.total.checked_add(cmd.amount) {
            Some(t) => {
                self.total = t;
                events.push(Ev::Applied {
                    producer: cmd.producer,
                    n: cmd.n,
                    amount: cmd.amount,
                    total: t,
                });
            }
            None => events.push(Ev::Rejected {
                producer: cmd.producer,
                n: cmd.n,
            }),
        }
    }

    fn state_hash(&self) -> [u8; 32] {
        *blake3::hash(&self.snapshot()).as_bytes()
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.last_seq.to_le_bytes());
        out.extend_from_slice(&self.last_ts.to_le_bytes());
        out.extend_from_slice(&self.total.to_le_bytes());
        out.extend_from_slice(&self.rolling);
        let n = u32::try_from(self.per_producer.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&n.to_le_bytes());
        for (p, c) in &self.per_producer {
            out.extend_from_slice(&p.to_le_bytes());
            out.extend_from_slice(&c.to_le_bytes());
        }
        out
    }

    fn restore(bytes: &[u8]) -> Result<Self, ToyError> {
        let mut at = 0;
        let last_seq = u64::from_le_bytes(take(bytes, &mut at)?);
        let last_ts = u64::from_le_bytes(take(bytes, &mut at)?);
        let total = u64::from_le_bytes(take(bytes, &mut at)?);
        let rolling = take::<32>(bytes, &mut at)?;
        let n = u32::from_le_bytes(take(bytes, &mut at)?);
        let mut per_producer = BTreeMap::new();
        for _ in 0..n {
            let p = u32::from_le_bytes(take(bytes, &mut at)?);
            let c = u64::from_le_bytes(take(bytes, &mut at)?);
            per_producer.insert(p, c);
        }
        if at != bytes.len() {
            return Err(ToyError("trailing bytes".to_string()));
        }
        Ok(Self {
            last_seq,
            last_ts,
            total,
            per_producer,
            rolling,
        })
    }
}

/// The state reached by applying `outputs` (as released by the sequencer) to a fresh toy.
pub fn rebuild(outputs: &[(u64, u64, Cmd)]) -> Toy {
    let mut t = Toy::from_genesis(GENESIS).expect("genesis");
    let mut ev = Vec::new();
    for (seq, ts, cmd) in outputs {
        t.apply(*seq, *ts, cmd, &mut ev);
    }
    t
}
