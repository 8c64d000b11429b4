//! perpcore-scenario: the scenario runner, a JSON Lines script of engine commands,
//! reports and expectations replayed through a fresh [`Engine`] (format:
//! `docs/SCENARIOS.md`), and the golden-file comparison of replays ([`golden`]). Its tests
//! are the conformance cases (`replay-fixtures/cases/`), the golden replays
//! (`replay-fixtures/golden/`, `replay-fixtures/ticks/`) and the liquidation regressions;
//! the `perpcore scenario` subcommand (`crates/cli`) is a front end over [`run_scenario_with`].
//!
//! Owns the order of a run: the configuration line first, then every line in file order;
//! sequence numbers 1, 2, 3… for engine commands; the non-decreasing timestamp rule; the
//! output lines (`{"seq","ts","event"}`, `{"report"}`, `{"seq","hash"}`,
//! `{"final_hash"}`); the optional invariant check after every command. Every failure is
//! a [`ScenarioError`] naming the 1-based line of the scenario text.
//!
//! It must never change what the engine decides (a rejected command is an event, not an
//! error), never read a clock (time comes only from the `ts` fields), never touch a float,
//! and never panic on bad input: an engine panic on a command (a bug, or an input the edge
//! should refuse) is caught and reported as an error on that line.

mod expect;
pub mod golden;
mod line;

pub use line::{price_ticks, qty_lots, Check, ConfigSource, Expect, ExpectEvent, Line};

use perpcore_engine::{AccountReport, Engine};
use perpcore_types::{Config, Envelope, Event};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// How to run a scenario.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Run `Engine::check_invariants` after every engine command; a violation is an error
    /// naming the line.
    pub check_invariants: bool,
}

/// What kind of output line is being emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// `{"seq":..,"ts":..,"event":{..}}`
    Event,
    /// `{"report":{..}}`
    Report,
    /// `{"seq":..,"hash":".."}`
    Hash,
    /// `{"final_hash":".."}` (always the last line)
    FinalHash,
}

/// Everything a run printed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScenarioOutput {
    /// Every output line in order (events, reports, hashes, the final hash).
    pub lines: Vec<String>,
    /// Only the event lines, in order (what golden files compare).
    pub events: Vec<String>,
    /// State hash after the last line.
    pub final_hash: String,
    /// Engine commands applied (the last sequence number).
    pub commands: u64,
}

/// A scenario failure at a line (1-based) of the scenario text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ScenarioError {
    pub line: usize,
    pub message: String,
}

/// Run a scenario and collect its output. `base_dir` resolves a config `path` (normally
/// the directory of the scenario file).
pub fn run_scenario(
    text: &str,
    base_dir: &Path,
    opts: RunOptions,
) -> Result<ScenarioOutput, ScenarioError> {
    let mut out = ScenarioOutput::default();
    let summary = run_scenario_with(text, base_dir, opts, &mut |kind, line| {
        if kind == OutputKind::Event {
            out.events.push(line.to_string());
        }
        out.lines.push(line.to_string());
    })?;
    out.final_hash = summary.final_hash;
    out.commands = summary.commands;
    Ok(out)
}

/// What a streamed run returns at the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSummary {
    pub final_hash: String,
    pub commands: u64,
}

/// Run a scenario, handing each output line to `sink` as soon as it exists (the binary
/// prints them, so the output up to a failing line is still seen).
pub fn run_scenario_with(
    text: &str,
    base_dir: &Path,
    opts: RunOptions,
    sink: &mut dyn FnMut(OutputKind, &str),
) -> Result<RunSummary, ScenarioError> {
    let mut runner: Option<Runner> = None;
    let mut last_line = 0;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        last_line = n;
        let at = |message: String| ScenarioError { line: n, message };
        let t = raw.trim_start_matches('\u{feff}').trim();
        if t.is_empty() {
            continue;
        }
        let (cmd, map) = line::parse_object(t).map_err(at)?;
        match runner.as_mut() {
            None => {
                if cmd == "comment" {
                    let empty = Config {
                        assets: Vec::new(),
                        instruments: Vec::new(),
                    };
                    parse_after_config(&cmd, &map, &empty).map_err(at)?;
                    continue;
                }
                if cmd != "config" {
                    return Err(at(format!(
                        "the first line must be {{\"cmd\":\"config\",...}}, got {cmd:?}"
                    )));
                }
                let source = line::parse_config(&map).map_err(at)?;
                let config = load_config(&source, base_dir).map_err(at)?;
                runner = Some(Runner::new(config, opts));
            }
            Some(r) => {
                let parsed = parse_after_config(&cmd, &map, r.engine.config()).map_err(at)?;
                r.exec(parsed, sink).map_err(at)?;
            }
        }
    }
    let Some(r) = runner else {
        return Err(ScenarioError {
            line: last_line.max(1),
            message: "no config line: a scenario starts with {\"cmd\":\"config\",...}".into(),
        });
    };
    let final_hash = r.engine.state_hash_hex();
    let line = to_json(&FinalLine {
        final_hash: &final_hash,
    })
    .map_err(|message| ScenarioError {
        line: last_line,
        message,
    })?;
    sink(OutputKind::FinalHash, &line);
    Ok(RunSummary {
        final_hash,
        commands: r.seq,
    })
}

/// The configuration and the engine commands of a scenario, in order, for feeding a
/// sequencer (`perpcore run`). Report, expect, hash and comment lines are skipped, and the
/// scenario's timestamps are dropped: the sequencer stamps its own.
pub fn load_commands(
    text: &str,
    base_dir: &Path,
) -> Result<(Config, Vec<perpcore_types::Command>), ScenarioError> {
    let mut config: Option<Config> = None;
    let mut commands = Vec::new();
    let mut last_line = 0;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        last_line = n;
        let at = |message: String| ScenarioError { line: n, message };
        let t = raw.trim_start_matches('\u{feff}').trim();
        if t.is_empty() {
            continue;
        }
        let (cmd, map) = line::parse_object(t).map_err(at)?;
        match &config {
            None if cmd == "comment" => continue,
            None if cmd == "config" => {
                let source = line::parse_config(&map).map_err(at)?;
                config = Some(load_config(&source, base_dir).map_err(at)?);
            }
            None => {
                return Err(at(format!(
                    "the first line must be {{\"cmd\":\"config\",...}}, got {cmd:?}"
                )))
            }
            Some(c) => {
                if let Line::Engine { command, .. } =
                    parse_after_config(&cmd, &map, c).map_err(at)?
                {
                    commands.push(command);
                }
            }
        }
    }
    let config = config.ok_or(ScenarioError {
        line: last_line.max(1),
        message: "no config line: a scenario starts with {\"cmd\":\"config\",...}".into(),
    })?;
    Ok((config, commands))
}

fn parse_after_config(
    cmd: &str,
    map: &Map<String, Value>,
    config: &Config,
) -> Result<Line, String> {
    line::parse_line(cmd, map, config)
}

/// Load the configuration the first line names.
fn load_config(source: &ConfigSource, base_dir: &Path) -> Result<Config, String> {
    match source {
        ConfigSource::Default => Ok(perpcore_config::default_config()),
        ConfigSource::Inline(v) => {
            perpcore_config::load_json_value(v).map_err(|e| format!("inline config: {e}"))
        }
        ConfigSource::Path(p) => {
            let path = base_dir.join(p);
            perpcore_config::load_path(&path).map_err(|e| format!("config: {e}"))
        }
    }
}

#[derive(Serialize)]
struct EventLine<'a> {
    seq: u64,
    ts: u64,
    event: &'a Event,
}

#[derive(Serialize)]
struct ReportLine<'a> {
    report: &'a AccountReport,
}

#[derive(Serialize)]
struct HashLine<'a> {
    seq: u64,
    hash: &'a str,
}

#[derive(Serialize)]
struct FinalLine<'a> {
    final_hash: &'a str,
}

/// Typed structs (not `serde_json::Value` maps) fix the key order of every output line,
/// whatever serde_json features other crates enable.
fn to_json<T: Serialize>(v: &T) -> Result<String, String> {
    serde_json::to_string(v).map_err(|e| format!("cannot serialize output: {e}"))
}

fn to_value<T: Serialize>(v: &T) -> Result<Value, String> {
    serde_json::to_value(v).map_err(|e| format!("cannot serialize: {e}"))
}

/// Run `f`, turning a panic into an error message that starts with `what`. The engine is
/// not used again after a panic: the run stops with the error.
fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| format!("{what}: {}", panic_message(&*p)))
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

struct Runner {
    engine: Engine,
    opts: RunOptions,
    /// Last sequence number assigned.
    seq: u64,
    last_ts_ns: Option<u64>,
    /// Events of the last engine command (what `expect_event` looks at).
    last_events: Option<Vec<Event>>,
}

impl Runner {
    fn new(config: Config, opts: RunOptions) -> Runner {
        Runner {
            engine: Engine::new(config),
            opts,
            seq: 0,
            last_ts_ns: None,
            last_events: None,
        }
    }

    fn exec(&mut self, line: Line, sink: &mut dyn FnMut(OutputKind, &str)) -> Result<(), String> {
        match line {
            Line::Config(_) => Err("only the first line may be a config line".into()),
            Line::Comment => Ok(()),
            Line::Engine { ts_ns, command } => self.apply(ts_ns, command, sink),
            Line::Report(account) => {
                let report = self
                    .engine
                    .report(account)
                    .ok_or_else(|| format!("account {account} does not exist"))?;
                sink(
                    OutputKind::Report,
                    &to_json(&ReportLine { report: &report })?,
                );
                Ok(())
            }
            Line::Hash => {
                let hash = self.engine.state_hash_hex();
                sink(
                    OutputKind::Hash,
                    &to_json(&HashLine {
                        seq: self.seq,
                        hash: &hash,
                    })?,
                );
                Ok(())
            }
            Line::Expect(x) => self.expect(&x),
            Line::ExpectEvent(x) => self.expect_event(&x),
        }
    }

    fn apply(
        &mut self,
        ts_ns: u64,
        command: perpcore_types::Command,
        sink: &mut dyn FnMut(OutputKind, &str),
    ) -> Result<(), String> {
        if let Some(last) = self.last_ts_ns {
            if ts_ns < last {
                return Err(format!(
                    "ts {ts_ns} is before the previous command's ts {last} (timestamps must \
                     not decrease)"
                ));
            }
        }
        let seq = self
            .seq
            .checked_add(1)
            .ok_or_else(|| "too many commands".to_string())?;
        let env = Envelope {
            seq,
            ts_ns,
            command,
        };
        let mut out = Vec::new();
        let engine = &mut self.engine;
        guarded(
            "the engine panicked on this command (an engine bug, or an input the edge \
             should refuse)",
            || engine.apply(&env, &mut out),
        )?;
        self.seq = seq;
        self.last_ts_ns = Some(ts_ns);
        for event in &out {
            sink(
                OutputKind::Event,
                &to_json(&EventLine {
                    seq,
                    ts: ts_ns,
                    event,
                })?,
            );
        }
        self.last_events = Some(out);
        if self.opts.check_invariants {
            let engine = &self.engine;
            let r = guarded("the invariant check panicked", || engine.check_invariants())?;
            r.map_err(|e| format!("invariant violated after this command: {e}"))?;
        }
        Ok(())
    }

    /// The engine-wide document engine-level expectations (no `account`) look into.
    fn engine_view(&self) -> Result<Value, String> {
        let config = self.engine.config();
        let mut funds = Map::new();
        let mut fees = Map::new();
        let mut desk = Map::new();
        for a in &config.assets {
            desk.insert(
                a.symbol.clone(),
                Value::String(self.engine.conversion_desk(a.id).to_string()),
            );
            funds.insert(
                a.symbol.clone(),
                Value::String(self.engine.insurance_fund(a.id).to_string()),
            );
            fees.insert(
                a.symbol.clone(),
                Value::String(self.engine.fee_income(a.id).to_string()),
            );
        }
        let mut marks = Map::new();
        let mut books = Map::new();
        for spec in &config.instruments {
            marks.insert(spec.symbol.clone(), to_value(&self.engine.mark(spec.id))?);
            let Some(book) = self.engine.book(spec.id) else {
                continue;
            };
            let levels = |side| -> Vec<Value> {
                book.depth(side, 50)
                    .into_iter()
                    .map(|(p, q)| {
                        json!({
                            "price": spec.price_of(p).to_string(),
                            "qty": spec.qty_of(q).to_string(),
                        })
                    })
                    .collect()
            };
            books.insert(
                spec.symbol.clone(),
                json!({
                    "best_bid": book.best_bid().map(|p| spec.price_of(p).to_string()),
                    "best_ask": book.best_ask().map(|p| spec.price_of(p).to_string()),
                    "orders_count": book.orders_count(),
                    "bids": levels(perpcore_types::Side::Buy),
                    "asks": levels(perpcore_types::Side::Sell),
                }),
            );
        }
        Ok(json!({
            "seq": self.seq,
            "insurance_fund": funds,
            "fee_income": fees,
            "conversion_desk": desk,
            "marks": marks,
            "books": books,
        }))
    }

    fn expect(&self, x: &Expect) -> Result<(), String> {
        let (doc, whose) = match x.account {
            Some(a) => {
                let report = self
                    .engine
                    .report(a)
                    .ok_or_else(|| format!("expect: account {a} does not exist"))?;
                (to_value(&report)?, format!("account {a}"))
            }
            None => (self.engine_view()?, "the engine".to_string()),
        };
        let found = expect::resolve(&doc, &x.field);
        match (&x.check, found) {
            (Check::Absent, None) => Ok(()),
            (Check::Absent, Some(v)) => Err(format!(
                "expectation failed: {} of {whose} should be absent, got {v}",
                x.field
            )),
            (Check::Equals(_), None) => Err(format!(
                "expectation failed: {} not found in {whose} ({})",
                x.field,
                expect::hint(&doc, &x.field)
            )),
            (Check::Equals(want), Some(got)) => expect::compare(got, want)
                .map_err(|e| format!("expectation failed: {} of {whose}: {e}", x.field)),
        }
    }

    fn expect_event(&self, x: &ExpectEvent) -> Result<(), String> {
        let events = self
            .last_events
            .as_ref()
            .ok_or_else(|| "expect_event: no engine command has run yet".to_string())?;
        let mut all = Vec::with_capacity(events.len());
        for e in events {
            all.push(to_value(e)?);
        }
        let matching: Vec<&Value> = all
            .iter()
            .filter(|v| v.get("event").and_then(Value::as_str) == Some(x.event.as_str()))
            .filter(|v| x.code.is_none() || v.get("code").and_then(Value::as_u64) == x.code)
            .collect();
        let what = match x.code {
            Some(c) => format!("{:?} event with code {c}", x.event),
            None => format!("{:?} event", x.event),
        };
        let seen = || {
            let tags: Vec<String> = all
                .iter()
                .map(|v| match (v.get("event"), v.get("code")) {
                    (Some(Value::String(t)), Some(c)) => format!("{t}({c})"),
                    (Some(Value::String(t)), None) => t.clone(),
                    _ => "?".into(),
                })
                .collect();
            if tags.is_empty() {
                "the last command emitted no events".to_string()
            } else {
                format!("the last command emitted: {}", tags.join(", "))
            }
        };
        if let Some(count) = x.count {
            if matching.len() as u64 != count {
                return Err(format!(
                    "expectation failed: {count} × {what} expected, found {}; {}",
                    matching.len(),
                    seen()
                ));
            }
        }
        let needs_one = x.count.is_none() || x.field.is_some();
        let index = usize::try_from(x.index).unwrap_or(usize::MAX);
        let Some(event) = matching.get(index) else {
            if !needs_one {
                return Ok(());
            }
            return Err(format!(
                "expectation failed: no {what} at index {} ({} found); {}",
                x.index,
                matching.len(),
                seen()
            ));
        };
        if let Some((field, want)) = &x.field {
            let got = expect::resolve(event, field).ok_or_else(|| {
                format!(
                    "expectation failed: {what} has no field {field:?} ({})",
                    expect::hint(event, field)
                )
            })?;
            expect::compare(got, want)
                .map_err(|e| format!("expectation failed: {what} field {field}: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error() {
        let r: Result<(), String> = guarded("the engine panicked", || panic!("boom {}", 7));
        assert_eq!(r.unwrap_err(), "the engine panicked: boom 7");
        let r: Result<(), String> = guarded("x", || std::panic::panic_any(5u8));
        assert_eq!(r.unwrap_err(), "x: unknown panic payload");
        assert_eq!(guarded("x", || 3), Ok(3));
    }
}
