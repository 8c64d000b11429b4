//! perpcore-node: the engine wired to the sequencer and the journal — what a running core
//! is. Owns the `StateMachine` implementation for the engine (command codec, genesis =
//! the configuration), and the operations the CLI offers on a journal directory: run,
//! replay, audit, inspect, snapshot.
//!
//! Must never: change engine semantics (it only moves commands and events), or release an
//! event before the sequencer says it is durable.

use perpcore_engine::{AccountReport, Engine};
use perpcore_journal::{Journal, JournalOptions};
use perpcore_sequencer::{
    self as sequencer, Committed, Recovered, ReplayProgress, Replayed, Sequencer, SequencerConfig,
    SequencerError, StateMachine, SystemClock,
};
use perpcore_types::{bincode_config, AccountId, Command, Config, Event};
use std::path::Path;

/// The engine as the sequencer's state machine.
pub struct Core(pub Engine);

/// The journal's genesis record: the configuration, bincode (fixed-int LE).
pub fn genesis(config: &Config) -> Vec<u8> {
    bincode::encode_to_vec(config, bincode_config()).expect("encode config")
}

/// Why the engine could not be built from a genesis record, decode a command, or be
/// restored from a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("genesis decode: {0}")]
    GenesisDecode(bincode::error::DecodeError),
    #[error("genesis has {0} trailing bytes")]
    GenesisTrailing(usize),
    #[error("genesis config: {0}")]
    GenesisConfig(perpcore_config::ConfigError),
    #[error("command decode: {0}")]
    CommandDecode(bincode::error::DecodeError),
    #[error("command has {0} trailing bytes")]
    CommandTrailing(usize),
    #[error(transparent)]
    Restore(#[from] perpcore_engine::RestoreError),
}

/// Decode and validate a genesis record.
pub fn config_from_genesis(bytes: &[u8]) -> Result<Config, CoreError> {
    let (config, used): (Config, usize) =
        bincode::decode_from_slice(bytes, bincode_config().with_limit::<{ 64 << 20 }>())
            .map_err(CoreError::GenesisDecode)?;
    if used != bytes.len() {
        return Err(CoreError::GenesisTrailing(bytes.len() - used));
    }
    perpcore_config::validate(&config).map_err(CoreError::GenesisConfig)?;
    Ok(config)
}

impl StateMachine for Core {
    type Command = Command;
    type Event = Event;
    type Error = CoreError;

    fn from_genesis(genesis: &[u8]) -> Result<Self, CoreError> {
        Ok(Core(Engine::new(config_from_genesis(genesis)?)))
    }

    fn encode_command(cmd: &Command, out: &mut Vec<u8>) {
        bincode::encode_into_std_write(cmd, out, bincode_config()).expect("encode into a Vec");
    }

    fn decode_command(bytes: &[u8]) -> Result<Command, CoreError> {
        // Commands hold no collections; the limit only bounds what a corrupt length
        // field could make the decoder allocate.
        let (cmd, used): (Command, usize) =
            bincode::decode_from_slice(bytes, bincode_config().with_limit::<4096>())
                .map_err(CoreError::CommandDecode)?;
        if used != bytes.len() {
            return Err(CoreError::CommandTrailing(bytes.len() - used));
        }
        Ok(cmd)
    }

    fn apply(&mut self, seq: u64, ts_ns: u64, cmd: &Command, events: &mut Vec<Event>) {
        self.0.apply_command(seq, ts_ns, cmd, events);
    }

    fn state_hash(&self) -> [u8; 32] {
        self.0.state_hash()
    }

    fn snapshot(&self) -> Vec<u8> {
        self.0.snapshot()
    }

    fn restore(bytes: &[u8]) -> Result<Self, CoreError> {
        Ok(Core(Engine::restore(bytes)?))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Sequencer(#[from] SequencerError),
    #[error(transparent)]
    Journal(#[from] perpcore_journal::JournalError),
    #[error("the journal in {dir} was made with a different configuration")]
    ConfigMismatch { dir: String },
    #[error("no journal in {0}")]
    NoJournal(String),
}

/// How to run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub sequencer: SequencerConfig,
    pub journal: JournalOptions,
    /// Take a snapshot after every this many submitted commands.
    pub snapshot_every: Option<u64>,
    /// Start a new journal, removing the one in the directory (`Journal::create_fresh`:
    /// under the journal's lock, and only a journal is ever removed).
    pub fresh: bool,
}

/// What a run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSummary {
    /// Last sequence number found in the journal at start (0 for a new journal).
    pub resumed_after: u64,
    pub commands: u64,
    pub last_seq: u64,
    pub events: u64,
    pub rejected: u64,
    pub trades: u64,
    /// Group commits (one flush each; one fsync covers every group flushed before it).
    pub groups: u64,
    /// Journal batches written (a group holds one or more).
    pub batches: u64,
    pub snapshots: u64,
    pub state_hash: [u8; 32],
}

/// True when `dir` holds (part of) a perpcore journal; whether it is intact is for the
/// open to tell.
fn has_journal(dir: &Path) -> bool {
    dir.join(perpcore_journal::MARK_FILE).exists() || dir.join(perpcore_journal::SLED_DIR).exists()
}

/// Run commands through the sequencer with the journal in `dir` (created with `config`,
/// or recovered and continued if it exists: its configuration must equal `config`).
/// `on_committed` sees every command's events once they are durable, in order.
pub fn run(
    dir: &Path,
    config: &Config,
    commands: impl IntoIterator<Item = Command> + Send,
    opts: &RunOptions,
    mut on_committed: impl FnMut(&Committed<Event>),
) -> Result<RunSummary, NodeError> {
    let genesis = genesis(config);
    let (started, resumed_after) = if !opts.fresh && has_journal(dir) {
        let rec: Recovered<Core> = sequencer::recover_with(dir, opts.journal)?;
        if rec.journal.genesis() != genesis.as_slice() {
            return Err(NodeError::ConfigMismatch {
                dir: dir.display().to_string(),
            });
        }
        let after = rec.last_seq;
        (
            Sequencer::resume(rec, Box::new(SystemClock), opts.sequencer)?,
            after,
        )
    } else {
        let (journal, _) = if opts.fresh {
            Journal::create_fresh(dir, &genesis, opts.journal)?
        } else {
            Journal::open_or_create(dir, &genesis, opts.journal)?
        };
        (
            Sequencer::start(
                Core(Engine::new(config.clone())),
                Some(journal),
                Box::new(SystemClock),
                opts.sequencer,
            )?,
            0,
        )
    };
    let (seq_runner, rx) = started;
    let snapshot_every = opts.snapshot_every;
    let mut summary = RunSummary {
        resumed_after,
        commands: 0,
        last_seq: resumed_after,
        events: 0,
        rejected: 0,
        trades: 0,
        groups: 0,
        batches: 0,
        snapshots: 0,
        state_hash: [0; 32],
    };
    let stopped = std::thread::scope(|scope| {
        // The producer submits and then stops the sequencer; this thread consumes the
        // output so that the sequencer never stalls on a full output queue.
        let producer = scope.spawn(move || {
            let handle = seq_runner.handle();
            // Submitted in runs of up to one queue message, each ending where a
            // snapshot is due, so snapshots fall exactly after every k-th command.
            let mut run = Vec::with_capacity(sequencer::MAX_COMMANDS_PER_MESSAGE);
            let mut snapshot_failed = None;
            for (n, cmd) in (1u64..).zip(commands) {
                run.push(cmd);
                let snapshot_due = snapshot_every.is_some_and(|k| k > 0 && n.is_multiple_of(k));
                if snapshot_due || run.len() == sequencer::MAX_COMMANDS_PER_MESSAGE {
                    let full = std::mem::replace(
                        &mut run,
                        Vec::with_capacity(sequencer::MAX_COMMANDS_PER_MESSAGE),
                    );
                    if handle.submit_many(full).is_err() {
                        break;
                    }
                }
                if snapshot_due {
                    // A failed snapshot means the sequencer stopped: submit no more.
                    if let Err(e) = handle.snapshot() {
                        snapshot_failed = Some(e);
                        break;
                    }
                }
            }
            if snapshot_failed.is_none() {
                let _ = handle.submit_many(run);
            }
            drop(handle);
            // The sequencer's own error is the cause; the snapshot's only reports it.
            match (seq_runner.shutdown(), snapshot_failed) {
                (Ok(_), Some(e)) => Err(e),
                (stopped, _) => stopped,
            }
        });
        for c in rx.iter().flatten() {
            summary.commands += 1;
            summary.last_seq = c.seq;
            summary.events += c.events.len() as u64;
            for e in &c.events {
                match e {
                    Event::Rejected { .. } => summary.rejected += 1,
                    Event::Trade { .. } => summary.trades += 1,
                    _ => {}
                }
            }
            on_committed(&c);
        }
        producer.join().expect("producer thread")
    })?;
    summary.groups = stopped.stats.groups;
    summary.batches = stopped.stats.batches;
    summary.snapshots = stopped.stats.snapshots;
    summary.state_hash = stopped.state.state_hash();
    Ok(summary)
}

/// Rebuild the state from genesis, up to `to` (inclusive) or the end.
pub fn replay(
    dir: &Path,
    to: Option<u64>,
    progress: impl FnMut(&ReplayProgress),
) -> Result<Replayed<Core>, NodeError> {
    if !has_journal(dir) {
        return Err(NodeError::NoJournal(dir.display().to_string()));
    }
    let mut progress = progress;
    Ok(sequencer::replay(dir, to, &mut progress)?)
}

/// The account report as of sequence number `at` (or the end).
pub fn audit(
    dir: &Path,
    account: AccountId,
    at: Option<u64>,
) -> Result<(u64, Option<AccountReport>), NodeError> {
    let r = replay(dir, at, |_| {})?;
    Ok((r.last_seq, r.state.0.report(account)))
}

/// Recover (newest snapshot + tail) without running anything.
pub fn recover(dir: &Path) -> Result<Recovered<Core>, NodeError> {
    if !has_journal(dir) {
        return Err(NodeError::NoJournal(dir.display().to_string()));
    }
    Ok(sequencer::recover(dir)?)
}

/// Write a snapshot of the recovered state at the journal's tip.
pub fn snapshot(dir: &Path) -> Result<(u64, [u8; 32]), NodeError> {
    let mut rec = recover(dir)?;
    let hash = rec.state.state_hash();
    rec.journal
        .write_snapshot(rec.last_seq, hash, &rec.state.snapshot())?;
    Ok((rec.last_seq, hash))
}

/// Journal statistics for `inspect`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    pub batches: u64,
    pub commands: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
    pub payload_bytes: u64,
    pub largest_batch: u64,
    pub snapshots: Vec<u64>,
    pub commands_by_kind: std::collections::BTreeMap<&'static str, u64>,
}

/// Walk the journal, verifying it, and call `each` for every entry in order.
pub fn inspect(
    dir: &Path,
    mut each: impl FnMut(u64, u64, &Command),
) -> Result<(Config, JournalStats), NodeError> {
    if !has_journal(dir) {
        return Err(NodeError::NoJournal(dir.display().to_string()));
    }
    let (journal, _) = Journal::open(dir, JournalOptions::read_only())?;
    let config = config_from_genesis(journal.genesis())
        .map_err(|e| perpcore_journal::JournalError::MetaCorrupt(e.to_string()))?;
    let mut st = JournalStats {
        snapshots: journal.snapshot_seqs()?,
        ..JournalStats::default()
    };
    for batch in journal.read_from_genesis() {
        let batch = batch?;
        st.batches += 1;
        let mut n = 0u64;
        for e in batch.entries() {
            let cmd = Core::decode_command(e.bytes).map_err(|what| {
                perpcore_journal::JournalError::Corrupt {
                    seq: e.seq,
                    what: what.to_string(),
                }
            })?;
            if st.commands == 0 {
                st.first_seq = e.seq;
                st.first_ts_ns = e.ts_ns;
            }
            st.commands += 1;
            st.last_seq = e.seq;
            st.last_ts_ns = e.ts_ns;
            st.payload_bytes += e.bytes.len() as u64;
            *st.commands_by_kind.entry(cmd.kind()).or_default() += 1;
            n += 1;
            each(e.seq, e.ts_ns, &cmd);
        }
        st.largest_batch = st.largest_batch.max(n);
    }
    Ok((config, st))
}

/// Replay the journal from genesis command by command, calling `each` with the engine
/// state right after each command and the events it produced (for audits that need more
/// than the final state, such as campaigns).
pub fn replay_events(
    dir: &Path,
    mut each: impl FnMut(u64, u64, &Engine, &[Event]),
) -> Result<u64, NodeError> {
    if !has_journal(dir) {
        return Err(NodeError::NoJournal(dir.display().to_string()));
    }
    let (journal, _) = Journal::open(dir, JournalOptions::read_only())?;
    let mut core = Core::from_genesis(journal.genesis())
        .map_err(|e| perpcore_journal::JournalError::MetaCorrupt(e.to_string()))?;
    let mut events = Vec::new();
    let mut last = 0;
    for batch in journal.read_from_genesis() {
        let batch = batch?;
        for e in batch.entries() {
            let cmd = Core::decode_command(e.bytes).map_err(|what| {
                perpcore_journal::JournalError::Corrupt {
                    seq: e.seq,
                    what: what.to_string(),
                }
            })?;
            events.clear();
            core.apply(e.seq, e.ts_ns, &cmd, &mut events);
            each(e.seq, e.ts_ns, &core.0, &events);
            last = e.seq;
        }
    }
    Ok(last)
}

/// The campaign fills in a journal: one record per side of every trade, with the
/// account's parent and the position's margin mode as they were at that fill (a command
/// cannot both trade and switch margin mode, so the state right after the command shows
/// the mode the fill happened in). Insurance-fund fills are left out.
pub fn campaign_fills(dir: &Path) -> Result<Vec<perpcore_campaign::FillRecord>, NodeError> {
    use perpcore_campaign::{ContractFamily, FillRecord};
    use perpcore_types::{ContractKind, MarginMode, QtyLots};
    let mut fills = Vec::new();
    replay_events(dir, |_, ts_ns, engine, events| {
        for ev in events {
            let Event::Trade {
                instrument,
                price,
                qty,
                taker_account,
                maker_account,
                ..
            } = ev
            else {
                continue;
            };
            let spec = &engine.config().instruments[instrument.0 as usize];
            let settle = &engine.config().assets[spec.settle_asset.0 as usize].symbol;
            let contract = match spec.kind {
                ContractKind::Inverse { .. } => ContractFamily::CoinM,
                ContractKind::Linear if settle == "USDC" => ContractFamily::UsdcM,
                ContractKind::Linear => ContractFamily::UsdtM,
            };
            // Notional in the quote asset: qty × price, exact (money scale = campaign scale).
            let lots = QtyLots(qty.raw() / spec.lot_size.raw());
            let notional = spec.notional(lots, *price).raw();
            for id in [taker_account, maker_account] {
                let Some(a) = engine.account(*id) else {
                    continue;
                };
                if a.system {
                    continue;
                }
                let cross = a
                    .legs_of(*instrument)
                    .next()
                    .is_none_or(|l| l.mode == MarginMode::Cross);
                fills.push(FillRecord {
                    ts_ns,
                    account: id.0,
                    parent: a.parent.map(|p| p.0),
                    contract,
                    cross_margin: cross,
                    notional,
                });
            }
        }
    })?;
    Ok(fills)
}
