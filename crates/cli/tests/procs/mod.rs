//! A `perpcore` child process for the CLI's integration tests (each test file that needs
//! it says `mod procs;`): output to a file, bounded waits, SIGKILLed when dropped.

#![allow(dead_code)] // each test file uses its own part

use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

/// A child process, SIGKILLed when dropped; its stdout and stderr go to `log`.
pub struct Proc {
    name: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Proc {
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(
        name: &str,
        log: PathBuf,
        args: impl IntoIterator<Item = S>,
    ) -> Proc {
        let f = std::fs::File::create(&log).unwrap();
        let child = Process::new(env!("CARGO_BIN_EXE_perpcore"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Proc {
            name: name.to_string(),
            log,
            child: Some(child),
        }
    }

    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits at most `limit` for the process to exit on its own; its exit status.
    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "{} did not finish within {limit:?}:\n{}",
                    self.name,
                    self.text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL now, and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then a clean exit within 30 s.
    pub fn stop(&mut self) {
        self.stop_with("-TERM");
    }

    /// `signal` (as `kill` takes it: "-TERM", "-INT"), then a clean exit within 30 s.
    pub fn stop_with(&mut self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let _ = Process::new("kill")
            .args([signal, &pid.to_string()])
            .status();
        let status = self.wait(Duration::from_secs(30));
        assert!(
            status.success(),
            "{} exited with {status}:\n{}",
            self.name,
            self.text()
        );
    }

    /// Polls its output (every 20 ms, at most 60 s) until `f` finds something in it.
    pub fn wait_for<T>(&self, what: &str, f: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(v) = f(&self.text()) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {what} within 60 s:\n{}",
                self.name,
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `perpcore serve`'s API and admin addresses, from its start line ("serving the API
    /// on http://A and the admin API on http://B ..."), waited for as [`Proc::wait_for`].
    pub fn serving_addrs(&self) -> (std::net::SocketAddr, std::net::SocketAddr) {
        self.wait_for("start line", |t| {
            let line = t
                .lines()
                .find(|l| l.starts_with("serving the API on http://"))?;
            let mut addrs = line
                .split("http://")
                .skip(1)
                .map(|s| s.split(' ').next().unwrap().parse().unwrap());
            Some((addrs.next()?, addrs.next()?))
        })
    }

    /// The JSON lines of its output that have `key` at the top.
    pub fn lines_with(&self, key: &str) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v.get(key).cloned())
            .collect()
    }
}

/// One HTTP/1.1 request (Connection: close, 10 s timeouts): status and body.
pub fn http(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// A POST to `perpcore serve`'s admin API with the bearer `token`; must answer 200.
pub fn admin(addr: std::net::SocketAddr, token: &str, path: &str, body: &str) {
    let auth = format!("Bearer {token}");
    let (status, answer) = http(
        addr,
        "POST",
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body,
    );
    assert_eq!(status, 200, "{path} {body}: {answer}");
}

/// Account 1 created with `usdt` USDT, and BTCUSDT's mark at 30,000, through the admin
/// API at `addr`.
pub fn account_1_with(addr: std::net::SocketAddr, token: &str, usdt: &str) {
    admin(addr, token, "/admin/v1/account", r#"{"account":1}"#);
    let deposit = format!(r#"{{"account":1,"asset":"USDT","amount":"{usdt}"}}"#);
    admin(addr, token, "/admin/v1/deposit", &deposit);
    admin(
        addr,
        token,
        "/admin/v1/markPrice",
        r#"{"symbol":"BTCUSDT","price":"30000"}"#,
    );
}
