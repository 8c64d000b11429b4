//! A local NATS JetStream cluster of `nats-server` processes on 127.0.0.1, for tests,
//! benchmarks and demos.
//!
//! Owns: finding the `nats-server` binary, free ports, one configuration file and store
//! directory per server, starting, SIGKILLing and restarting servers, and reading the
//! monitoring endpoint (`/jsz`: the metadata leader, each stream's leader). Must never:
//! listen anywhere but 127.0.0.1, or leave a server running after it is dropped.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `nats-server` to run: `$PERPCORE_NATS_SERVER`, else the first on `PATH` (or in
/// `/usr/sbin`, `/usr/bin`).
pub fn nats_server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PERPCORE_NATS_SERVER") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// [`nats_server_binary`] for tests: `None` (after a loud SKIPPED message) when there
/// is none, unless `PERPCORE_REQUIRE_NATS` is set (as `.ci/run` does), which makes a
/// missing nats-server a panic.
pub fn nats_server_or_skip() -> Option<PathBuf> {
    match nats_server_binary() {
        Some(b) => Some(b),
        None if std::env::var_os("PERPCORE_REQUIRE_NATS").is_some() => panic!(
            "PERPCORE_REQUIRE_NATS is set but nats-server is not installed (apt-get install nats-server)"
        ),
        None => {
            eprintln!("\n*** SKIPPED: nats-server not found (apt-get install nats-server, or set PERPCORE_NATS_SERVER); set PERPCORE_REQUIRE_NATS=1 to make this a failure ***\n");
            None
        }
    }
}

/// One server of the cluster.
#[derive(Debug)]
pub struct Server {
    /// `server_name` (n1, n2, …): what `/jsz` names leaders by.
    pub name: String,
    pub client_port: u16,
    pub cluster_port: u16,
    pub http_port: u16,
    /// Its JetStream store directory.
    pub store: PathBuf,
    pub conf: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Server {
    /// `nats://127.0.0.1:<client port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }
}

/// A running local cluster. Dropping it SIGKILLs every server it started.
#[derive(Debug)]
pub struct LocalNats {
    bin: PathBuf,
    pub servers: Vec<Server>,
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}

/// Ports nobody listens on right now (held until all are chosen, so they differ).
fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// `GET path` on 127.0.0.1:`port` (HTTP/1.0); the body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => {
            Ok(body.to_string())
        }
        _ => Err(std::io::Error::other(format!(
            "GET {path} on port {port}: {}",
            text.lines().next().unwrap_or("no answer")
        ))),
    }
}

impl LocalNats {
    /// [`LocalNats::start`], then [`LocalNats::wait_ready`] within `timeout`.
    pub fn start_ready(
        bin: &Path,
        root: &Path,
        n: usize,
        timeout: Duration,
    ) -> std::io::Result<Self> {
        let cluster = Self::start(bin, root, n)?;
        cluster.wait_ready(timeout)?;
        Ok(cluster)
    }

    /// Writes the configuration of `n` servers under `root` (one store directory each)
    /// and starts them. Call `wait_ready` before use.
    pub fn start(bin: &Path, root: &Path, n: usize) -> std::io::Result<Self> {
        let ports = free_ports(3 * n)?;
        let mut servers = Vec::with_capacity(n);
        let routes: Vec<String> = (0..n)
            .map(|i| format!("nats://127.0.0.1:{}", ports[3 * i + 1]))
            .collect();
        for i in 0..n {
            let name = format!("n{}", i + 1);
            let dir = root.join(&name);
            std::fs::create_dir_all(&dir)?;
            let store = dir.join("store");
            let conf = dir.join("nats.conf");
            let (client_port, cluster_port, http_port) =
                (ports[3 * i], ports[3 * i + 1], ports[3 * i + 2]);
            let text = format!(
                "server_name: {name}\n\
                 listen: 127.0.0.1:{client_port}\n\
                 http: 127.0.0.1:{http_port}\n\
                 jetstream {{ store_dir: {store:?} }}\n\
                 cluster {{\n  name: perpcore\n  listen: 127.0.0.1:{cluster_port}\n  routes: [{}]\n}}\n",
                routes.join(", ")
            );
            std::fs::write(&conf, text)?;
            servers.push(Server {
                name,
                client_port,
                cluster_port,
                http_port,
                store,
                conf,
                log: dir.join("nats.log"),
                child: None,
            });
        }
        let mut cluster = LocalNats {
            bin: bin.to_path_buf(),
            servers,
        };
        for i in 0..n {
            cluster.start_server(i)?;
        }
        Ok(cluster)
    }

    /// Starts server `i` (again), appending to its log.
    pub fn start_server(&mut self, i: usize) -> std::io::Result<()> {
        let s = &mut self.servers[i];
        if s.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&s.log)?;
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&s.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        s.child = Some(child);
        Ok(())
    }

    /// SIGKILLs server `i` (if running) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.servers[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// True if server `i` was started and has not been killed.
    pub fn is_running(&self, i: usize) -> bool {
        self.servers[i].child.is_some()
    }

    /// The client URLs of every server.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(Server::url).collect()
    }

    /// The client URLs as one comma-separated list (`--cluster`).
    pub fn url_list(&self) -> String {
        self.urls().join(",")
    }

    /// The client addresses, parsed.
    pub fn addrs(&self) -> Vec<async_nats::ServerAddr> {
        self.urls().iter().filter_map(|u| u.parse().ok()).collect()
    }

    /// Index of the server named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.name == name)
    }

    /// `/jsz` of server `i` with `query`, parsed.
    pub fn jsz(&self, i: usize, query: &str) -> std::io::Result<serde_json::Value> {
        let body = http_get(self.servers[i].http_port, &format!("/jsz{query}"))?;
        serde_json::from_str(&body).map_err(std::io::Error::other)
    }

    /// Waits (at most `timeout`) until every running server reports the same JetStream
    /// metadata leader.
    pub fn wait_ready(&self, timeout: Duration) -> std::io::Result<String> {
        let deadline = Instant::now() + timeout; // determinism-ok: test harness wait for nats-server, bounded
        loop {
            let leaders: Vec<Option<String>> = (0..self.servers.len())
                .filter(|i| self.is_running(*i))
                .map(|i| {
                    self.jsz(i, "").ok().and_then(|v| {
                        v["meta_cluster"]["leader"]
                            .as_str()
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                    })
                })
                .collect();
            if let Some(Some(first)) = leaders.first() {
                if leaders.iter().all(|l| l.as_deref() == Some(first)) {
                    return Ok(first.clone());
                }
            }
            let now = Instant::now(); // determinism-ok: test harness wait deadline
            if now >= deadline {
                return Err(std::io::Error::other(format!(
                    "no JetStream metadata leader within {timeout:?} (leaders seen: {leaders:?})"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server that leads `stream`, as any running server's `/jsz` reports it.
    pub fn stream_leader(&self, stream: &str) -> Option<String> {
        (0..self.servers.len())
            .filter(|i| self.is_running(*i))
            .find_map(|i| {
                let v = self.jsz(i, "?streams=true").ok()?;
                v["account_details"]
                    .as_array()?
                    .iter()
                    .filter_map(|a| a["stream_detail"].as_array())
                    .flatten()
                    .find(|s| s["name"] == stream)
                    .and_then(|s| s["cluster"]["leader"].as_str())
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
            })
    }

    /// `last_seq` of `stream` on server `i` (its replica's state).
    pub fn stream_last_seq(&self, i: usize, stream: &str) -> Option<u64> {
        let v = self.jsz(i, "?streams=true").ok()?;
        v["account_details"]
            .as_array()?
            .iter()
            .filter_map(|a| a["stream_detail"].as_array())
            .flatten()
            .find(|s| s["name"] == stream)
            .and_then(|s| s["state"]["last_seq"].as_u64())
    }
}
