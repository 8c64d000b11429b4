//! Damage sweep: a reference journal is damaged in one place at a time and every command
//! that reads it is run on the damaged journal, each on its own fresh copy. Written
//! against the `perpcore` binary only, and walking every file under the journal
//! directory whatever its name, so it holds whatever the on-disk layout. It proves:
//!
//! - no damage goes unnoticed: `inspect`, `replay`, `audit --account 1`, `campaign` and a
//!   resuming `run` (an input with the same configuration and no command, so its summary
//!   is the recovered state) each either give exactly the intact journal's answer
//!   (HARMLESS: same last seq and state hash; for `inspect` same last seq and command
//!   count; for `audit` and `campaign` the same output) or exit 1 with an `error:` line
//!   naming the journal directory or a file in it (DETECTED). Never a different answer
//!   (SILENT LOSS), a panic (exit 101 or the panic hook's `thread '…' panicked at` on
//!   stderr: PANIC; a storage-engine panic caught and reported as an error naming the file
//!   is DETECTED), a process still running after the timeout (HANG), an error naming no
//!   path (UNNAMED), or anything
//!   else (OTHER: killed by a signal, another exit code, exit 0 without an answer);
//! - the read-only commands (`inspect`, `replay`, `audit`, `campaign`) change nothing: on
//!   the intact journal and on every damaged one, the journal directory holds the same
//!   names with the same blake3 of contents after the command as before.
//!
//! The reference journal is `replay-fixtures/demo.jsonl` run in one process with
//! `--snapshot-every 10`. Damage, one per case, to every file under the directory:
//! (a) `^0xFF` of the byte at every Nth offset; (b) a flip of bit `offset % 8` at every
//! Nth offset starting at N/2 (so (a) and (b) hit different offsets); (c) truncation at
//! every 4 KiB boundary below the file's length, 0 included; (d) deletion.
//!
//! Knobs:
//! - `PERPCORE_FLIP_EVERY=N`: stride of (a) and (b). Default [`DEFAULT_EVERY`] (the test
//!   then takes about a minute on 2 cores), raised if the reference journal is large
//!   enough to give more than [`MAX_DEFAULT_FLIPS`] flip cases;
//! - `PERPCORE_FLIP_FULL=1`: N = 1, every byte once and a bit of every byte once (about
//!   two hours on 2 cores for the demo journal: 53,000 cases);
//! - `PERPCORE_FLIP_BIG=1`: also sweep a 20,000-command journal (`--snapshot-every 5000`,
//!   about 4 MB) with the same stride rule, so by default about 600 flips and a
//!   truncation every 4 KiB;
//! - `PERPCORE_FLIP_ONLY=LABEL[,LABEL...]`: only these cases, labels as the failure list
//!   prints them (`demo:db flip-byte@1234`); any offset, whatever the stride. The demo
//!   journal's layout is the same at every build (only its timestamps differ); the big
//!   one's depends on how the sequencer happened to group its commits;
//! - `PERPCORE_FLIP_TIMEOUT_S=S`: per-process timeout (default 60);
//! - `PERPCORE_FLIP_KINDS=flip-byte,truncate`: only these damage kinds (all by default);
//! - `PERPCORE_FLIP_COMMANDS=inspect,replay,run`: run only these commands on the damaged
//!   copies (all five by default; the intact journal is always checked with all five);
//! - `PERPCORE_FLIP_KEEP=1`: keep the work directory (journal copies, outputs) and print
//!   its path.

mod common;

use common::scenario;
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_perpcore");

/// Default stride of the byte and bit flips: measured at about a minute of wall time on a
/// 2-core machine with the test-profile binary for the demo journal (26.6 KB today).
const DEFAULT_EVERY: u64 = 100;
/// Under the default stride, at most this many flip cases per journal: a layout that
/// makes the journal bigger raises the stride instead of the test's time.
const MAX_DEFAULT_FLIPS: u64 = 600;
const TRUNCATE_STEP: u64 = 4096;
const WORKERS: usize = 2;
/// Offending runs listed on failure (spread over damage kinds and classes).
const LISTED: usize = 20;
/// The resuming run's input: the reference journals' configuration and no command.
const RESUME_INPUT: &str = "{\"cmd\":\"config\",\"default\":true}\n";

/// `crates/cli` → the workspace root.
fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().nth(2).unwrap_or(here).to_path_buf()
}

struct Knobs {
    /// `Some` when the stride was set (EVERY or FULL); otherwise per journal, by size.
    every: Option<u64>,
    big: bool,
    only: Option<Vec<String>>,
    timeout: Duration,
    keep: bool,
    /// The commands run on each damaged copy.
    commands: Vec<Cmd>,
    /// Only these damage kinds (`flip-byte`, `flip-bit`, `truncate`, `delete`).
    kinds: Option<Vec<String>>,
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let n = v
        .parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or_else(|| panic!("{name}={v:?}: expected a positive integer"));
    Some(n)
}

impl Knobs {
    fn from_env() -> Self {
        let only = std::env::var("PERPCORE_FLIP_ONLY").ok().map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        });
        Knobs {
            every: if env_flag("PERPCORE_FLIP_FULL") {
                Some(1)
            } else {
                env_u64("PERPCORE_FLIP_EVERY")
            },
            big: env_flag("PERPCORE_FLIP_BIG"),
            only,
            timeout: Duration::from_secs(env_u64("PERPCORE_FLIP_TIMEOUT_S").unwrap_or(60)),
            keep: env_flag("PERPCORE_FLIP_KEEP"),
            kinds: std::env::var("PERPCORE_FLIP_KINDS")
                .ok()
                .map(|v| v.split(',').map(|k| k.trim().to_string()).collect()),
            commands: match std::env::var("PERPCORE_FLIP_COMMANDS") {
                Ok(v) => v
                    .split(',')
                    .map(|name| {
                        CMDS.into_iter()
                            .find(|c| c.name() == name.trim())
                            .unwrap_or_else(|| panic!("PERPCORE_FLIP_COMMANDS: unknown {name:?}"))
                    })
                    .collect(),
                Err(_) => CMDS.to_vec(),
            },
        }
    }
}

/// The commands run on every journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Cmd {
    Inspect,
    Replay,
    Run,
    Audit,
    Campaign,
}

const CMDS: [Cmd; 5] = [
    Cmd::Inspect,
    Cmd::Replay,
    Cmd::Run,
    Cmd::Audit,
    Cmd::Campaign,
];

impl Cmd {
    fn name(self) -> &'static str {
        match self {
            Cmd::Inspect => "inspect",
            Cmd::Replay => "replay",
            Cmd::Run => "run",
            Cmd::Audit => "audit",
            Cmd::Campaign => "campaign",
        }
    }

    fn read_only(self) -> bool {
        self != Cmd::Run
    }

    fn args(self, journal: &Path, resume_input: &Path) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![self.name().into(), "--journal".into(), journal.into()];
        let extra: &[&str] = match self {
            Cmd::Inspect | Cmd::Replay => &[],
            Cmd::Run => &["--print", "none", "--input"],
            Cmd::Audit => &["--account", "1"],
            Cmd::Campaign => &["--block-hash", "00ab", "--winners", "1"],
        };
        a.extend(extra.iter().map(OsString::from));
        if self == Cmd::Run {
            a.push(resume_input.into());
        }
        a
    }

    /// What a successful run answered, the part that must equal the intact journal's;
    /// `None` if the output holds no answer.
    fn answer(self, stdout: &str) -> Option<String> {
        match self {
            Cmd::Inspect => {
                let j = json_field(stdout, "journal")?;
                Some(format!(
                    "last_seq {} commands {}",
                    u64_of(&j, "last_seq")?,
                    u64_of(&j, "commands")?
                ))
            }
            Cmd::Replay => {
                let r = json_field(stdout, "replay")?;
                Some(format!(
                    "last_seq {} state_hash {}",
                    u64_of(&r, "last_seq")?,
                    str_of(&r, "state_hash")?
                ))
            }
            Cmd::Run => {
                let s = json_field(stdout, "summary")?;
                Some(format!(
                    "resumed_after_seq {} last_seq {} state_hash {}",
                    u64_of(&s, "resumed_after_seq")?,
                    u64_of(&s, "last_seq")?,
                    str_of(&s, "state_hash")?
                ))
            }
            Cmd::Audit => {
                let seq = json_field(stdout, "seq")?.as_u64()?;
                let report = json_field(stdout, "report")?;
                Some(format!(
                    "seq {seq} report blake3 {}",
                    short_hash(report.to_string().as_bytes())
                ))
            }
            Cmd::Campaign => (!stdout.trim().is_empty())
                .then(|| format!("table blake3 {}", short_hash(stdout.as_bytes()))),
        }
    }
}

/// The value under `key` in the last stdout line that is a JSON object holding it.
fn json_field(stdout: &str, key: &str) -> Option<Value> {
    stdout
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get(key).cloned())
}

fn u64_of(v: &Value, key: &str) -> Option<u64> {
    v.get(key)?.as_u64()
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    v.get(key)?.as_str().map(str::to_owned)
}

fn short_hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex()[..16].to_string()
}

/// How one command fared on one journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Harmless,
    Detected,
    Unnamed,
    SilentLoss,
    Panic,
    Hang,
    Other,
}

const CLASSES: [Class; 7] = [
    Class::Harmless,
    Class::Detected,
    Class::Unnamed,
    Class::SilentLoss,
    Class::Panic,
    Class::Hang,
    Class::Other,
];

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Harmless => "HARMLESS",
            Class::Detected => "DETECTED",
            Class::Unnamed => "UNNAMED",
            Class::SilentLoss => "SILENT LOSS",
            Class::Panic => "PANIC",
            Class::Hang => "HANG",
            Class::Other => "OTHER",
        }
    }

    fn ok(self) -> bool {
        matches!(self, Class::Harmless | Class::Detected)
    }
}

/// One damage; `Intact` is the reference itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Damage {
    Intact,
    FlipByte,
    FlipBit,
    Truncate,
    Delete,
}

impl Damage {
    fn name(self) -> &'static str {
        match self {
            Damage::Intact => "intact",
            Damage::FlipByte => "flip-byte",
            Damage::FlipBit => "flip-bit",
            Damage::Truncate => "truncate",
            Damage::Delete => "delete",
        }
    }
}

struct Case {
    /// Index into the references.
    journal: usize,
    /// Path relative to the journal directory, `/`-separated.
    file: String,
    damage: Damage,
    /// Offset of the flip, or length after truncation.
    at: u64,
}

impl Case {
    /// How the case is named in reports and in `PERPCORE_FLIP_ONLY`; `j` is the
    /// journal's name.
    fn label(&self, j: &str) -> String {
        match self.damage {
            Damage::Intact => format!("{j}: intact"),
            Damage::Delete => format!("{j}:{} delete", self.file),
            d => format!("{j}:{} {}@{}", self.file, d.name(), self.at),
        }
    }

    fn describe(&self) -> String {
        match self.damage {
            Damage::FlipByte => format!("byte {} ^= 0xff", self.at),
            Damage::FlipBit => format!("byte {} ^= 1 << {}", self.at, self.at % 8),
            Damage::Truncate => format!("truncated to {} bytes", self.at),
            Damage::Delete => "deleted".into(),
            Damage::Intact => "no damage".into(),
        }
    }

    fn apply(&self, dir: &Path) -> std::io::Result<()> {
        let path = dir.join(&self.file);
        match self.damage {
            Damage::Intact => Ok(()),
            Damage::FlipByte | Damage::FlipBit => {
                let mask = if self.damage == Damage::FlipByte {
                    0xff
                } else {
                    1u8 << (self.at % 8)
                };
                let mut f = OpenOptions::new().read(true).write(true).open(&path)?;
                let mut b = [0u8];
                f.seek(SeekFrom::Start(self.at))?;
                f.read_exact(&mut b)?;
                b[0] ^= mask;
                f.seek(SeekFrom::Start(self.at))?;
                f.write_all(&b)
            }
            Damage::Truncate => OpenOptions::new().write(true).open(&path)?.set_len(self.at),
            Damage::Delete => fs::remove_file(&path),
        }
    }
}

/// An intact journal and what every command answered on it.
struct Reference {
    name: &'static str,
    dir: PathBuf,
    resume_input: PathBuf,
    /// Every file under `dir` (relative path, length).
    files: Vec<(String, u64)>,
    answers: BTreeMap<Cmd, String>,
}

/// What one file-system entry under a journal directory is.
#[derive(Clone, PartialEq, Eq)]
enum Entry {
    Dir,
    File {
        len: u64,
        hash: blake3::Hash,
    },
    /// Not a directory or a regular file, or unreadable: what it is.
    Other(String),
}

fn describe_entry(e: Option<&Entry>) -> String {
    match e {
        None => "absent".into(),
        Some(Entry::Dir) => "a directory".into(),
        Some(Entry::File { len, .. }) => format!("{len} bytes"),
        Some(Entry::Other(what)) => what.clone(),
    }
}

type Manifest = BTreeMap<String, Entry>;

/// Every entry under `dir` by relative path: the names and the blake3 of every file.
fn manifest(dir: &Path) -> Manifest {
    fn walk(dir: &Path, rel: &str, out: &mut Manifest) {
        // A missing directory (a journal deleted whole) has no entries.
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let e = e.unwrap_or_else(|err| panic!("listing {}: {err}", dir.display()));
            let name = format!("{rel}{}", e.file_name().to_string_lossy());
            let entry = match e.file_type() {
                Ok(ft) if ft.is_dir() => {
                    walk(&e.path(), &format!("{name}/"), out);
                    Entry::Dir
                }
                Ok(ft) if ft.is_file() => match fs::read(e.path()) {
                    Ok(bytes) => Entry::File {
                        len: bytes.len() as u64,
                        hash: blake3::hash(&bytes),
                    },
                    Err(err) => Entry::Other(format!("unreadable ({err})")),
                },
                Ok(ft) => Entry::Other(format!("{ft:?}")),
                Err(err) => Entry::Other(format!("unreadable ({err})")),
            };
            out.insert(name, entry);
        }
    }
    let mut out = Manifest::new();
    walk(dir, "", &mut out);
    out
}

/// The differences between two manifests, one line per path.
fn manifest_diff(before: &Manifest, after: &Manifest) -> Vec<String> {
    let mut out = Vec::new();
    for name in before
        .keys()
        .chain(after.keys().filter(|k| !before.contains_key(*k)))
    {
        let (b, a) = (before.get(name), after.get(name));
        if b == a {
            continue;
        }
        let (db, da) = (describe_entry(b), describe_entry(a));
        out.push(if db == da {
            format!("{name}: contents changed ({db})")
        } else {
            format!("{name}: {db} -> {da}")
        });
    }
    out
}

fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap_or_else(|e| panic!("create {}: {e}", dst.display()));
    for e in fs::read_dir(src).unwrap_or_else(|e| panic!("read {}: {e}", src.display())) {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        let to = dst.join(e.file_name());
        if ft.is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            fs::copy(e.path(), &to)
                .unwrap_or_else(|err| panic!("copy {}: {err}", e.path().display()));
        }
    }
}

/// A finished (or killed) process.
struct Exec {
    /// `None`: still running at the timeout, killed.
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

/// Run the binary with `args`, its output going to files in `out_dir` (never inside a
/// journal directory); killed after `timeout`.
fn execute(args: &[OsString], out_dir: &Path, tag: &str, timeout: Duration) -> Exec {
    let out_path = out_dir.join(format!("{tag}.stdout"));
    let err_path = out_dir.join(format!("{tag}.stderr"));
    let mut child = Process::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn perpcore");
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for perpcore") {
            break Some(s);
        }
        if started.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    let read = |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
    Exec {
        status,
        stdout: read(&out_path),
        stderr: read(&err_path),
    }
}

fn clip(s: &str) -> String {
    const MAX: usize = 320;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// Classify a run of `cmd` on the journal copy `journal`; also returns the exit status
/// as text and the detail to show (the telling stderr line, or the wrong answer).
fn classify(
    cmd: Cmd,
    exec: &Exec,
    journal: &Path,
    intact: &str,
    timeout: Duration,
) -> (Class, String, String) {
    let Some(status) = exec.status else {
        return (
            Class::Hang,
            "timeout".into(),
            format!("still running after {} s, killed", timeout.as_secs()),
        );
    };
    let code = status.to_string();
    let first_line = |s: &str| {
        s.lines()
            .find(|l| !l.trim().is_empty())
            .map(clip)
            .unwrap_or_else(|| "(empty)".into())
    };
    // A panic that escaped: exit 101, or the panic hook's report (`thread '…' panicked
    // at`) on stderr. A storage-engine panic the journal caught and turned into an error
    // ("the storage engine panicked while …", exit 1, naming the file) is DETECTED.
    let escaped = |l: &str| l.starts_with("thread '") && l.contains("' panicked at");
    if status.code() == Some(101) || exec.stderr.lines().any(escaped) {
        // The location line and the message after it.
        let mut lines = exec.stderr.lines().skip_while(|l| !escaped(l));
        let line = match (lines.next(), lines.next()) {
            (Some(at), Some(msg)) => clip(&format!("{at} {msg}")),
            (Some(at), None) => clip(at),
            _ => first_line(&exec.stderr),
        };
        return (Class::Panic, code, line);
    }
    match status.code() {
        Some(0) => match cmd.answer(&exec.stdout) {
            Some(a) if a == intact => (Class::Harmless, code, String::new()),
            Some(a) => (
                Class::SilentLoss,
                code,
                format!("answered {a}; intact: {intact}"),
            ),
            None => (
                Class::Other,
                code,
                format!("exit 0 without an answer: {}", first_line(&exec.stdout)),
            ),
        },
        Some(1) => {
            let errors: Vec<&str> = exec
                .stderr
                .lines()
                .filter(|l| l.starts_with("error:"))
                .collect();
            let canonical = fs::canonicalize(journal).ok();
            let names = |l: &str| {
                l.contains(&*journal.to_string_lossy())
                    || canonical
                        .as_ref()
                        .is_some_and(|c| l.contains(&*c.to_string_lossy()))
            };
            match errors.iter().find(|l| names(l)).or(errors.first()) {
                Some(l) if names(l) => (Class::Detected, code, clip(l)),
                Some(l) => (Class::Unnamed, code, clip(l)),
                None => (
                    Class::Other,
                    code,
                    format!(
                        "exit 1 without an error: line: {}",
                        first_line(&exec.stderr)
                    ),
                ),
            }
        }
        _ => (Class::Other, code, first_line(&exec.stderr)),
    }
}

/// One command on one case.
struct Outcome {
    case: usize,
    cmd: Cmd,
    class: Class,
    status: String,
    detail: String,
    /// For a read-only command: what it changed in the journal directory.
    writes: Vec<String>,
}

/// Copy `src` to `dir/<cmd>`, run `cmd` on the copy, classify and check for writes.
fn run_on_copy(
    case: usize,
    cmd: Cmd,
    src: &Path,
    dir: &Path,
    r: &Reference,
    intact: &str,
    knobs: &Knobs,
) -> (Outcome, Exec) {
    let journal = dir.join(format!("j-{}", cmd.name()));
    copy_dir(src, &journal);
    let before = manifest(&journal);
    let exec = execute(
        &cmd.args(&journal, &r.resume_input),
        dir,
        cmd.name(),
        knobs.timeout,
    );
    let writes = if cmd.read_only() {
        manifest_diff(&before, &manifest(&journal))
    } else {
        Vec::new()
    };
    let (class, status, detail) = classify(cmd, &exec, &journal, intact, knobs.timeout);
    if !knobs.keep {
        let _ = fs::remove_dir_all(&journal);
    }
    let outcome = Outcome {
        case,
        cmd,
        class,
        status,
        detail,
        writes,
    };
    (outcome, exec)
}

/// Build a reference journal in one `run` and record what every command answers on
/// intact copies of it (the intact runs' outcomes, writes included, go to `outcomes`).
fn build_reference(
    name: &'static str,
    input: &str,
    snapshot_every: u64,
    work: &Path,
    knobs: &Knobs,
    case: usize,
    outcomes: &mut Vec<Outcome>,
) -> Reference {
    let root = work.join(name);
    fs::create_dir_all(&root).unwrap();
    let input_path = root.join("input.jsonl");
    let resume_input = root.join("resume.jsonl");
    fs::write(&input_path, input).unwrap();
    fs::write(&resume_input, RESUME_INPUT).unwrap();
    let dir = root.join("journal");
    let mut args: Vec<OsString> = vec!["run".into(), "--journal".into(), dir.clone().into()];
    args.extend(["--input".into(), input_path.into()]);
    args.extend(["--print", "none", "--snapshot-every"].map(OsString::from));
    args.push(snapshot_every.to_string().into());
    let built = execute(&args, &root, "build", Duration::from_secs(600));
    assert!(
        built.status.is_some_and(|s| s.success()),
        "{name}: building the reference journal failed ({:?}): {}",
        built.status,
        built.stderr
    );
    let summary = json_field(&built.stdout, "summary").expect("build summary");
    let last_seq = u64_of(&summary, "last_seq").unwrap();
    let hash = str_of(&summary, "state_hash").unwrap();
    assert_eq!(
        u64_of(&summary, "resumed_after_seq"),
        Some(0),
        "{name}: not a new journal"
    );
    assert!(last_seq > 0, "{name}: empty reference journal");
    // What the intact journal must answer, from the run that wrote it: the replay from
    // genesis and the recovery reach the writer's state; audit and campaign as they come.
    let mut answers = BTreeMap::from([
        (
            Cmd::Inspect,
            format!("last_seq {last_seq} commands {last_seq}"),
        ),
        (
            Cmd::Replay,
            format!("last_seq {last_seq} state_hash {hash}"),
        ),
        (
            Cmd::Run,
            format!("resumed_after_seq {last_seq} last_seq {last_seq} state_hash {hash}"),
        ),
    ]);
    let files = manifest(&dir)
        .into_iter()
        .filter_map(|(path, e)| match e {
            Entry::File { len, .. } => Some((path, len)),
            _ => None,
        })
        .collect();
    let mut r = Reference {
        name,
        dir,
        resume_input,
        files,
        answers: BTreeMap::new(),
    };
    let intact_dir = root.join("intact");
    fs::create_dir_all(&intact_dir).unwrap();
    for cmd in CMDS {
        let (mut o, exec) = run_on_copy(case, cmd, &r.dir, &intact_dir, &r, "", knobs);
        let answer = exec
            .status
            .filter(ExitStatus::success)
            .and_then(|_| cmd.answer(&exec.stdout))
            .unwrap_or_else(|| {
                panic!(
                    "{name}: `{}` on the intact journal failed ({}): {}",
                    cmd.name(),
                    o.status,
                    exec.stderr
                )
            });
        let expected = answers.entry(cmd).or_insert_with(|| answer.clone());
        assert_eq!(
            &answer,
            expected,
            "{name}: `{}` on the intact journal",
            cmd.name()
        );
        (o.class, o.detail) = (Class::Harmless, String::new());
        outcomes.push(o);
    }
    r.answers = answers;
    eprintln!(
        "byteflip: {name}: {last_seq} commands, files {}",
        r.files
            .iter()
            .map(|(p, len)| format!("{p} ({len} B)"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    r
}

/// Every damage case of `r` (flips at stride `every`, truncations, deletions) that
/// `wanted` accepts.
fn enumerate(
    journal: usize,
    r: &Reference,
    every: u64,
    wanted: &mut dyn FnMut(&Case) -> bool,
    out: &mut Vec<Case>,
) {
    let shift = every / 2;
    for (file, len) in &r.files {
        let mut add = |damage, at| {
            let case = Case {
                journal,
                file: file.clone(),
                damage,
                at,
            };
            if wanted(&case) {
                out.push(case);
            }
        };
        let step = usize::try_from(every).unwrap_or(usize::MAX);
        for at in (0..*len).step_by(step) {
            add(Damage::FlipByte, at);
        }
        for at in (shift..*len).step_by(step) {
            add(Damage::FlipBit, at);
        }
        for at in (0..*len).step_by(TRUNCATE_STEP as usize) {
            add(Damage::Truncate, at);
        }
        add(Damage::Delete, 0);
    }
}

/// Damage a copy of the case's journal and run every command on a copy of that.
fn run_case(i: usize, case: &Case, refs: &[Reference], work: &Path, knobs: &Knobs) -> Vec<Outcome> {
    let r = &refs[case.journal];
    let tmp = tempfile::Builder::new()
        .prefix(&format!("case{i}-"))
        .tempdir_in(work)
        .unwrap();
    let damaged = tmp.path().join("damaged");
    copy_dir(&r.dir, &damaged);
    case.apply(&damaged).unwrap_or_else(|e| {
        panic!("{}: cannot apply the damage: {e}", case.label(r.name));
    });
    let out = CMDS
        .iter()
        .filter(|cmd| knobs.commands.contains(cmd))
        .map(|&cmd| run_on_copy(i, cmd, &damaged, tmp.path(), r, &r.answers[&cmd], knobs).0)
        .collect();
    if knobs.keep {
        let _ = tmp.keep();
    }
    out
}

fn print_table(cases: &[Case], refs: &[Reference], outcomes: &[Outcome]) {
    type Row = (usize, Damage, Cmd);
    let mut rows: BTreeMap<Row, ([u64; 7], u64, u64)> = BTreeMap::new();
    for o in outcomes {
        let c = &cases[o.case];
        let row = rows.entry((c.journal, c.damage, o.cmd)).or_default();
        row.0[CLASSES.iter().position(|&k| k == o.class).unwrap()] += 1;
        row.1 += 1;
        row.2 += u64::from(!o.writes.is_empty());
    }
    let mut t = format!(
        "{:<7} {:<10} {:<9} {:>6}",
        "journal", "damage", "command", "runs"
    );
    for k in CLASSES {
        t += &format!(" {:>11}", k.name());
    }
    t += &format!(" {:>9}\n", "RO WRITES");
    for ((j, d, cmd), (counts, runs, writes)) in &rows {
        t += &format!(
            "{:<7} {:<10} {:<9} {:>6}",
            refs[*j].name,
            d.name(),
            cmd.name(),
            runs
        );
        for n in counts {
            t += &format!(" {n:>11}");
        }
        let w = if cmd.read_only() {
            writes.to_string()
        } else {
            "-".into()
        };
        t += &format!(" {w:>9}\n");
    }
    eprint!("{t}");
}

/// Up to `LISTED` of `bad`, spread over the groups `key` makes (the first of each group,
/// then the second, ...), in case order.
fn spread<'a, K: Ord>(bad: &[&'a Outcome], key: impl Fn(&Outcome) -> K) -> Vec<&'a Outcome> {
    let mut groups: BTreeMap<K, Vec<&Outcome>> = BTreeMap::new();
    for o in bad {
        groups.entry(key(o)).or_default().push(o);
    }
    let deepest = groups.values().map(Vec::len).max().unwrap_or(0);
    let mut picked: Vec<&Outcome> = (0..deepest)
        .flat_map(|round| groups.values().filter_map(move |g| g.get(round).copied()))
        .take(LISTED)
        .collect();
    picked.sort_by_key(|o| (o.case, o.cmd));
    picked
}

#[test]
fn damage_is_detected_and_reads_write_nothing() {
    let knobs = Knobs::from_env();
    let started = Instant::now();
    let work_dir = tempfile::Builder::new()
        .prefix("byteflip")
        .tempdir()
        .unwrap();
    let work = work_dir.path().to_path_buf();

    let demo = fs::read_to_string(workspace_root().join("replay-fixtures/demo.jsonl")).unwrap();
    let mut journals: Vec<(&'static str, String, u64)> = vec![("demo", demo, 10)];
    if knobs.big {
        journals.push(("big", scenario(20_000), 5000));
    }
    let mut cases = Vec::new();
    let mut refs: Vec<Reference> = Vec::new();
    let mut outcomes = Vec::new();
    // PERPCORE_FLIP_ONLY's labels that name a case.
    let mut matched = std::collections::BTreeSet::new();
    for (j, (name, input, snapshot_every)) in journals.into_iter().enumerate() {
        cases.push(Case {
            journal: j,
            file: String::new(),
            damage: Damage::Intact,
            at: 0,
        });
        let case = cases.len() - 1;
        let r = build_reference(
            name,
            &input,
            snapshot_every,
            &work,
            &knobs,
            case,
            &mut outcomes,
        );
        let bytes: u64 = r.files.iter().map(|(_, len)| len).sum();
        let every = match (&knobs.only, knobs.every) {
            (Some(_), _) => 1,
            (None, Some(n)) => n,
            (None, None) => DEFAULT_EVERY.max((2 * bytes).div_ceil(MAX_DEFAULT_FLIPS)),
        };
        matched.insert(cases[case].label(name));
        let first = cases.len();
        let mut wanted = |c: &Case| match &knobs.only {
            None => knobs
                .kinds
                .as_ref()
                .is_none_or(|k| k.iter().any(|k| k == c.damage.name())),
            Some(only) => {
                let l = c.label(name);
                only.contains(&l) && matched.insert(l)
            }
        };
        enumerate(j, &r, every, &mut wanted, &mut cases);
        eprintln!(
            "byteflip: {name}: {bytes} bytes in {} files, stride {every}: {} damage cases",
            r.files.len(),
            cases.len() - first
        );
        refs.push(r);
    }
    for l in knobs.only.iter().flatten() {
        assert!(
            matched.contains(l),
            "PERPCORE_FLIP_ONLY: no case is labelled {l:?} (big: cases need PERPCORE_FLIP_BIG=1)"
        );
    }
    // The damage cases to run (the intact ones have run).
    let todo: Vec<usize> = (0..cases.len())
        .filter(|&i| cases[i].damage != Damage::Intact)
        .collect();

    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = todo.get(k) else { break };
                let out = run_case(i, &cases[i], &refs, &work, &knobs);
                results.lock().unwrap().extend(out);
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n * 10 / todo.len() > (n - 1) * 10 / todo.len() {
                    eprintln!(
                        "byteflip: {n}/{} cases, {} s",
                        todo.len(),
                        started.elapsed().as_secs()
                    );
                }
            });
        }
    });
    outcomes.extend(results.into_inner().unwrap());
    outcomes.sort_by_key(|o| (o.case, o.cmd));

    let wall = started.elapsed();
    print_table(&cases, &refs, &outcomes);
    eprintln!(
        "byteflip: {} damage cases, {} command runs, wall time {:.1} s",
        todo.len(),
        outcomes.len(),
        wall.as_secs_f64()
    );

    let bad: Vec<&Outcome> = outcomes.iter().filter(|o| !o.class.ok()).collect();
    let wrote: Vec<&Outcome> = outcomes.iter().filter(|o| !o.writes.is_empty()).collect();
    if !bad.is_empty() {
        eprintln!(
            "\nbyteflip: {} runs neither HARMLESS nor DETECTED; some of them:",
            bad.len()
        );
        for o in spread(&bad, |o| {
            (cases[o.case].journal, cases[o.case].damage, o.class)
        }) {
            let c = &cases[o.case];
            eprintln!(
                "  [{}] {:<10} {} ({}): {}: {}",
                c.label(refs[c.journal].name),
                o.cmd.name(),
                o.class.name(),
                c.describe(),
                o.status,
                o.detail
            );
        }
    }
    if !wrote.is_empty() {
        eprintln!(
            "\nbyteflip: {} read-only runs changed the journal directory; some of them:",
            wrote.len()
        );
        for o in spread(&wrote, |o| (cases[o.case].journal, cases[o.case].damage)) {
            eprintln!(
                "  [{}] {}: {}",
                cases[o.case].label(refs[cases[o.case].journal].name),
                o.cmd.name(),
                o.writes.join("; ")
            );
        }
    }
    if knobs.keep {
        eprintln!(
            "byteflip: work directory kept: {}",
            work_dir.keep().display()
        );
    }
    if !bad.is_empty() || !wrote.is_empty() {
        let mut counts = BTreeMap::<Class, usize>::new();
        for o in &bad {
            *counts.entry(o.class).or_default() += 1;
        }
        let mut msg: Vec<String> = counts
            .iter()
            .map(|(k, n)| format!("{n} {}", k.name()))
            .collect();
        msg.push(format!("{} read-only runs that wrote", wrote.len()));
        panic!(
            "byteflip: {} (listed above; reproduce one with PERPCORE_FLIP_ONLY='<label>' \
             PERPCORE_FLIP_KEEP=1 cargo test -p perpcore-cli --test byteflip -- --nocapture)",
            msg.join(", ")
        );
    }
}
