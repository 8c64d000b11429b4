//! The `perpcore` binary: argument parsing and printing only.
//!
//! Owns the command line (`perpcore scenario FILE [--check-invariants]`), where output
//! goes (event, report and hash lines to stdout as they happen, errors to stderr as
//! `error: FILE:LINE: message`) and the exit code (0 success, 1 failure). All work is in
//! the library; this file must never hold scenario logic, read a clock into a command, or
//! touch a float.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use perpcore_cli::{run_scenario_with, RunOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// perpcore: an event-sourced matching-and-risk core for crypto perpetual futures.
#[derive(Parser, Debug)]
#[command(name = "perpcore", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Replay a JSON Lines scenario (format: docs/SCENARIOS.md) and print every engine
    /// event, the requested reports and the final state hash.
    Scenario {
        /// The scenario file (`.jsonl`). A config `path` in it is relative to its directory.
        file: PathBuf,
        /// Check every engine invariant after every command; a violation fails the run.
        #[arg(long)]
        check_invariants: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Scenario {
            file,
            check_invariants,
        } => match scenario(&file, check_invariants) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn scenario(file: &Path, check_invariants: bool) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let base = file.parent().unwrap_or_else(|| Path::new("."));
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    let mut write_err: Option<std::io::Error> = None;
    let result = run_scenario_with(
        &text,
        base,
        RunOptions { check_invariants },
        &mut |_, line| {
            if write_err.is_none() {
                if let Err(e) = writeln!(w, "{line}") {
                    write_err = Some(e);
                }
            }
        },
    );
    // Flush what ran before reporting a failure, so the output leads up to it.
    let flushed = w.flush();
    if let Err(e) = result {
        anyhow::bail!("{}:{}: {}", file.display(), e.line, e.message);
    }
    if let Some(e) = write_err {
        return Err(e).context("writing to stdout");
    }
    flushed.context("writing to stdout")
}
