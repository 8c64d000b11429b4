//! Crash test: a real `perpcore run` process is killed with SIGKILL at random moments,
//! again and again on the same journal. After each kill:
//! - every command the process acknowledged (printed `{"ack":SEQ}`, which happens only
//!   after its batch is durable) is in the recovered journal;
//! - recovery (newest snapshot + tail, as `run` does at start) gives the same state hash
//!   as a clean replay from genesis of the same prefix;
//! - the journal holds the input commands in order: each run appends a prefix of the
//!   input, nothing reordered, nothing from the middle lost.
//!
//! Cycles: 50 by default; `PERPCORE_CRASH_CYCLES=N` for a longer run.

mod common;

use common::scenario;
use perpcore_node as node;
use perpcore_types::Command;
use rand::{Rng, SeedableRng};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command as Process, Stdio};
use std::time::Duration;

#[test]
fn sigkill_never_loses_an_acknowledged_command() {
    let cycles: usize = std::env::var("PERPCORE_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("input.jsonl");
    let journal = work.path().join("journal");
    std::fs::File::create(&input)
        .unwrap()
        .write_all(scenario(20_000).as_bytes())
        .unwrap();
    let (_, commands) =
        perpcore_scenario::load_commands(&std::fs::read_to_string(&input).unwrap(), work.path())
            .unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut killed_mid_run = 0;
    for cycle in 0..cycles {
        let mut child = Process::new(env!("CARGO_BIN_EXE_perpcore"))
            .args(["run", "--print", "acks", "--snapshot-every", "700"])
            .arg("--journal")
            .arg(&journal)
            .arg("--input")
            .arg(&input)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (first_ack_tx, first_ack) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            let mut max_ack = 0u64;
            let mut finished = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line
                    .strip_prefix("{\"ack\":")
                    .and_then(|r| r.strip_suffix('}'))
                {
                    let _ = first_ack_tx.send(());
                    max_ack = max_ack.max(n.parse().unwrap());
                } else if line.starts_with("{\"summary\"") {
                    finished = true;
                }
            }
            (max_ack, finished)
        });
        // Kill at a random moment after the run has started committing (its first ack),
        // or during start-up one cycle in five: the crash lands mid-commit whatever the
        // machine's speed.
        if rng.gen_range(0..5) == 0 {
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..60)));
        } else {
            let _ = first_ack.recv_timeout(Duration::from_secs(60));
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..40)));
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let (max_ack, finished) = reader.join().unwrap();
        if !finished {
            killed_mid_run += 1;
        }

        let rec = match node::recover(&journal) {
            Ok(rec) => rec,
            // Killed before the journal existed: nothing was acknowledged.
            Err(node::NodeError::NoJournal(_)) if max_ack == 0 => continue,
            Err(e) => panic!("cycle {cycle} (max ack {max_ack}): recovery failed: {e}"),
        };
        assert!(
            rec.last_seq >= max_ack,
            "cycle {cycle}: acknowledged seq {max_ack} lost (journal ends at {})",
            rec.last_seq
        );
        let recovered_hash = perpcore_sequencer::StateMachine::state_hash(&rec.state);
        let last = rec.last_seq;
        drop(rec);
        if last == 0 {
            continue;
        }
        let clean = node::replay(&journal, Some(last), |_| {}).unwrap();
        assert_eq!(clean.last_seq, last);
        assert_eq!(
            clean.state_hash, recovered_hash,
            "cycle {cycle}: recovery != clean replay at {last}"
        );
    }
    // The journal is a concatenation of prefixes of the input, one per run.
    let mut pos = 0usize;
    let mut runs = 0;
    node::inspect(&journal, |seq, _, cmd: &Command| {
        if pos < commands.len() && cmd == &commands[pos] {
            pos += 1;
        } else {
            assert_eq!(
                cmd, &commands[0],
                "journal entry {seq} is neither the next input nor a restart"
            );
            pos = 1;
            runs += 1;
        }
    })
    .unwrap();
    // How many kills land mid-run depends on the machine; the test needs some.
    assert!(
        killed_mid_run > 0 && runs > 0,
        "no run was interrupted mid-way"
    );
    eprintln!(
        "{cycles} cycles, {killed_mid_run} killed mid-run, {} restarts seen in the journal",
        runs + 1
    );
}
