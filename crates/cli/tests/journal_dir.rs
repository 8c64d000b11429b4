//! The journal directory as an operator meets it, through the `perpcore` binary:
//! - `run --fresh` takes the journal's lock before touching anything, refuses a directory
//!   that is neither empty nor a journal (`--journal .` included), never touches a journal
//!   another process is running, and keeps a README;
//! - read-only commands (`inspect`, `replay`, `audit`, `campaign`) leave every file of the
//!   journal directory byte-identical, also when the disk holding it is full and when the
//!   disk for their private copy is full (then they fail, naming what);
//! - a lost snapshot is a warning naming its seq; a missing mark is damage, not "no
//!   journal".
//!
//! The full-disk cases mount small tmpfs file systems in a private mount namespace
//! (`unshare --mount --map-root-user`), so they need no privileges beyond user namespaces.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn perpcore() -> Command {
    Command::new(env!("CARGO_BIN_EXE_perpcore"))
}

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../replay-fixtures/demo.jsonl")
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn perpcore");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A journal of the demo scenario (30 commands, snapshots at 10, 20, 30).
fn demo_journal(dir: &Path) {
    run_ok(
        perpcore()
            .args([
                "run",
                "--print",
                "none",
                "--snapshot-every",
                "10",
                "--journal",
            ])
            .arg(dir)
            .arg("--input")
            .arg(demo()),
    );
}

/// Every file under `dir` (relative path) with blake3 of its contents.
fn hash_tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let bytes = std::fs::read(&p).expect("read");
                let rel = p.strip_prefix(root).expect("under root").to_path_buf();
                out.insert(rel, blake3::hash(&bytes).to_hex().to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn run_fresh_refuses_a_directory_that_is_not_a_journal() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("precious");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("thesis.tex"), "years of work").expect("write");
    let out = perpcore()
        .args(["run", "--fresh", "--print", "none", "--journal"])
        .arg(&dir)
        .arg("--input")
        .arg(demo())
        .output()
        .expect("spawn");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("thesis.tex"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(dir.join("thesis.tex")).expect("still there"),
        "years of work"
    );
    assert_eq!(std::fs::read_dir(&dir).expect("ls").count(), 1);
}

#[test]
fn run_fresh_with_journal_dot_refuses_the_current_directory() {
    let work = tempfile::tempdir().expect("tempdir");
    std::fs::write(work.path().join("notes.txt"), "keep me").expect("write");
    let out = perpcore()
        .current_dir(work.path())
        .args(["run", "--fresh", "--print", "none", "--journal", "."])
        .arg("--input")
        .arg(demo())
        .output()
        .expect("spawn");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("notes.txt"), "{}", stderr(&out));
    assert!(work.path().join("notes.txt").exists());
    assert!(!work.path().join("sled").exists() && !work.path().join("mark").exists());
}

#[test]
fn run_fresh_replaces_a_journal_and_keeps_its_readme() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("journal");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("README.md"), "# journal\n").expect("write");
    demo_journal(&dir);
    demo_journal(&dir); // resumes: 60 commands
    let inspect = |dir: &Path| {
        let out = run_ok(perpcore().args(["inspect", "--journal"]).arg(dir));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(inspect(&dir).contains("\"last_seq\":60"));
    run_ok(
        perpcore()
            .args(["run", "--fresh", "--print", "none", "--journal"])
            .arg(&dir)
            .arg("--input")
            .arg(demo()),
    );
    assert!(inspect(&dir).contains("\"last_seq\":30"));
    assert_eq!(
        std::fs::read_to_string(dir.join("README.md")).expect("readme"),
        "# journal\n"
    );
}

/// Input for a run that lasts: 20 funded accounts and many resting orders.
fn long_input(path: &Path, orders: u64) {
    let mut s = String::from("{\"cmd\":\"config\",\"default\":true}\n");
    for a in 1..=20 {
        s += &format!("{{\"cmd\":\"create_account\",\"ts\":1,\"account\":{a}}}\n");
        s += &format!("{{\"cmd\":\"deposit\",\"ts\":1,\"account\":{a},\"asset\":\"USDT\",\"amount\":\"100000000\"}}\n");
    }
    s += "{\"cmd\":\"mark\",\"ts\":1,\"symbol\":\"BTCUSDT\",\"price\":\"60000\"}\n";
    for id in 1..=orders {
        let a = id % 20 + 1;
        // Bids below the mark, never crossing: every order rests.
        s += &format!("{{\"cmd\":\"order\",\"ts\":1,\"account\":{a},\"symbol\":\"BTCUSDT\",\"id\":{id},\"side\":\"buy\",\"price\":\"{}.0\",\"qty\":\"0.001\"}}\n", 59000 + id % 500);
    }
    std::fs::write(path, s).expect("write input");
}

#[test]
fn run_fresh_never_touches_a_journal_another_process_is_running() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("live");
    let input = work.path().join("long.jsonl");
    long_input(&input, 200_000);
    // One snapshot per command batch keeps the first run busy (and slow) for a while.
    let mut first = perpcore()
        .args([
            "run",
            "--print",
            "acks",
            "--snapshot-every",
            "50",
            "--journal",
        ])
        .arg(&dir)
        .arg("--input")
        .arg(&input)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = first.stdout.take().expect("stdout");
    let (acked_tx, acked) = std::sync::mpsc::channel::<u64>();
    let reader = std::thread::spawn(move || {
        let mut max_ack = 0u64;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line
                .strip_prefix("{\"ack\":")
                .and_then(|r| r.strip_suffix('}'))
            {
                max_ack = max_ack.max(n.parse().expect("seq"));
                let _ = acked_tx.send(max_ack);
            }
        }
        max_ack
    });
    // Wait until the first run is acknowledging (bounded).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = 0;
    while seen < 1_000 && Instant::now() < deadline {
        if let Ok(n) = acked.recv_timeout(Duration::from_secs(1)) {
            seen = n;
        }
    }
    assert!(seen >= 1_000, "the first run never got going");
    let fresh = perpcore()
        .args(["run", "--fresh", "--print", "none", "--journal"])
        .arg(&dir)
        .arg("--input")
        .arg(demo())
        .output()
        .expect("spawn");
    let still_running = first.try_wait().expect("try_wait").is_none();
    assert_eq!(fresh.status.code(), Some(1), "{}", stderr(&fresh));
    assert!(stderr(&fresh).contains("in use"), "{}", stderr(&fresh));
    // Stop the first run, then everything it acknowledged is there.
    let _ = first.kill();
    let _ = first.wait();
    let max_ack = reader.join().expect("reader");
    assert!(
        still_running,
        "the first run ended before the check; make it longer"
    );
    let out = run_ok(perpcore().args(["inspect", "--journal"]).arg(&dir));
    let text = String::from_utf8_lossy(&out.stdout);
    let last_seq: u64 = text
        .split("\"last_seq\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect("last_seq");
    assert!(
        last_seq >= max_ack,
        "acknowledged seq {max_ack} lost (journal ends at {last_seq})"
    );
}

#[test]
fn a_missing_mark_is_damage_not_an_empty_directory() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("j");
    demo_journal(&dir);
    std::fs::remove_file(dir.join("mark")).expect("rm mark");
    for args in [&["inspect"][..], &["replay"][..]] {
        let out = perpcore()
            .args(args)
            .arg("--journal")
            .arg(&dir)
            .output()
            .expect("spawn");
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(err.contains("mark") && !err.contains("no journal"), "{err}");
    }
    // And `run` does not start a new journal over it.
    let out = perpcore()
        .args(["run", "--print", "none", "--journal"])
        .arg(&dir)
        .arg("--input")
        .arg(demo())
        .output()
        .expect("spawn");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn a_lost_snapshot_is_a_warning_naming_its_seq() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("j");
    demo_journal(&dir);
    // Remove the newest snapshot (seq 30) behind the journal's back.
    {
        let db = perpcore_journal_raw(&dir);
        let t = db.open_tree("snapshots").expect("tree");
        t.remove(30u64.to_be_bytes()).expect("remove");
        db.flush().expect("flush");
    }
    let out = run_ok(
        perpcore()
            .args(["run", "--print", "none", "--journal"])
            .arg(&dir)
            .arg("--input")
            .arg(demo()),
    );
    let err = stderr(&out);
    assert!(
        err.contains("WARN") && err.contains("snapshot at seq 30"),
        "{err}"
    );
}

fn perpcore_journal_raw(dir: &Path) -> sled::Db {
    perpcore_journal::open_raw_db(dir).expect("sled open")
}

/// Runs `script` in a private mount namespace (tmpfs mounts vanish with it).
fn in_mount_namespace(script: &str) -> Output {
    let out = Command::new("unshare")
        .args(["--mount", "--map-root-user", "sh", "-ec", script])
        .output()
        .expect("unshare (util-linux) is needed for the full-disk tests");
    assert!(
        out.status.success(),
        "namespace script failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn read_only_commands_change_nothing_on_a_full_disk() {
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("j");
    demo_journal(&src);
    let before = hash_tree(&src);
    let bin = env!("CARGO_BIN_EXE_perpcore");
    let mnt = work.path().join("full");
    let scratch = work.path().join("scratch");
    std::fs::create_dir(&mnt).expect("mkdir");
    std::fs::create_dir(&scratch).expect("mkdir");
    let results = work.path().join("results");
    std::fs::create_dir(&results).expect("mkdir");
    // Inside the namespace: the journal copied onto a small tmpfs that is then filled to
    // the last byte; the read-only commands run on it twice, once with their private
    // copy on a roomy disk (they must succeed) and once with $TMPDIR on the full disk
    // too (they must fail, naming the copy); the journal is copied back out for hashing.
    let script = format!(
        r#"
mount -t tmpfs -o size=1m tmpfs "{mnt}"
cp -r "{src}" "{mnt}/j"
dd if=/dev/zero of="{mnt}/filler" bs=4k 2>/dev/null || true
dd if=/dev/zero of="{mnt}/filler2" bs=1 2>/dev/null || true
for c in inspect replay "audit --account 1" "campaign --block-hash 00ff --winners 1"; do
  name=$(echo $c | cut -d' ' -f1)
  TMPDIR="{scratch}" "{bin}" $c --journal "{mnt}/j" > "{res}/$name.roomy.out" 2> "{res}/$name.roomy.err"; echo $? > "{res}/$name.roomy.rc"
  TMPDIR="{mnt}" "{bin}" $c --journal "{mnt}/j" > "{res}/$name.full.out" 2> "{res}/$name.full.err" && echo 0 > "{res}/$name.full.rc" || echo $? > "{res}/$name.full.rc"
done
cp -r "{mnt}/j" "{res}/after"
"#,
        mnt = mnt.display(),
        src = src.display(),
        scratch = scratch.display(),
        bin = bin,
        res = results.display(),
    );
    in_mount_namespace(&script);
    let after = hash_tree(&results.join("after"));
    assert_eq!(before, after, "a read-only command changed the journal");
    for name in ["inspect", "replay", "audit", "campaign"] {
        let read = |suffix: &str| {
            std::fs::read_to_string(results.join(format!("{name}.{suffix}"))).unwrap_or_default()
        };
        assert_eq!(
            read("roomy.rc").trim(),
            "0",
            "{name}: {}",
            read("roomy.err")
        );
        assert_eq!(read("full.rc").trim(), "1", "{name}: {}", read("full.err"));
        let err = read("full.err");
        assert!(
            err.contains("private copy") && err.contains("No space left"),
            "{name}: {err}"
        );
    }
}

/// The reported defect: with `--snapshot-every` on a full file system, about half the runs
/// hung after the last acknowledgement. Now the run stops with an error naming what
/// failed, and everything it acknowledged is in the journal once there is room again.
#[test]
fn disk_full_during_a_run_stops_with_an_error_and_loses_nothing_acknowledged() {
    let work = tempfile::tempdir().expect("tempdir");
    let input = work.path().join("long.jsonl");
    long_input(&input, 60_000);
    let mnt = work.path().join("small");
    std::fs::create_dir(&mnt).expect("mkdir");
    let res = work.path().join("results");
    std::fs::create_dir(&res).expect("mkdir");
    // Three runs: the failure lands at a different point of the pipeline each time.
    let script = format!(
        r#"
mount -t tmpfs -o size=3m tmpfs "{mnt}"
for i in 1 2 3; do
  rm -rf "{mnt}/j"
  timeout 120 "{bin}" run --journal "{mnt}/j" --input "{input}" --print acks --snapshot-every 500 > "{res}/acks.$i" 2> "{res}/err.$i" && echo 0 > "{res}/rc.$i" || echo $? > "{res}/rc.$i"
  mount -o remount,size=512m "{mnt}"
  "{bin}" inspect --journal "{mnt}/j" > "{res}/inspect.$i" 2> "{res}/inspect.err.$i" && echo 0 > "{res}/inspect.rc.$i" || echo $? > "{res}/inspect.rc.$i"
  mount -o remount,size=3m "{mnt}" 2>/dev/null || true
done
"#,
        mnt = mnt.display(),
        bin = env!("CARGO_BIN_EXE_perpcore"),
        input = input.display(),
        res = res.display(),
    );
    in_mount_namespace(&script);
    for i in 1..=3 {
        let read = |name: &str| {
            std::fs::read_to_string(res.join(format!("{name}.{i}"))).unwrap_or_default()
        };
        let rc = read("rc");
        assert_ne!(rc.trim(), "124", "run {i} hung on a full disk");
        assert_eq!(rc.trim(), "1", "run {i}: exit {rc}, stderr {}", read("err"));
        let err = read("err");
        assert!(
            err.contains("No space left") && err.contains("error:") && !err.contains("panicked"),
            "run {i}: {err}"
        );
        let max_ack: u64 = read("acks")
            .lines()
            .filter_map(|l| l.strip_prefix("{\"ack\":")?.strip_suffix('}')?.parse().ok())
            .max()
            .unwrap_or(0);
        assert_eq!(read("inspect.rc").trim(), "0", "{}", read("inspect.err"));
        let inspect = read("inspect");
        let last_seq: u64 = inspect
            .split("\"last_seq\":")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .expect("last_seq");
        assert!(
            last_seq >= max_ack,
            "run {i}: acknowledged seq {max_ack} lost (journal ends at {last_seq})"
        );
    }
}
