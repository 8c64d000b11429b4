//! What the gateway's integration tests share: one HTTP/1.1 request on a fresh
//! connection (Connection: close, 10 s socket timeouts), from a chosen loopback address,
//! and the host clock a signed request carries.

#![allow(dead_code)] // each test file uses its own part

use perpcore_gateway::sign_hex;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A connection to `to` from the loopback address `from` (127.0.0.0/8 is all loopback on
/// Linux; tokio's socket binds before connecting, which std's cannot).
/// From 127.0.0.1 it is a plain std connect, so that async tests (inside a runtime) can
/// use it too.
pub fn connect(from: IpAddr, to: SocketAddr) -> TcpStream {
    if from == LOCAL {
        let s = TcpStream::connect(to).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        return s;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(from, 0)).unwrap();
        sock.connect(to).await.unwrap().into_std().unwrap()
    });
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// An HTTP answer: status, headers (names lower-case), the body as JSON (`Null` when
/// empty, a JSON string when not JSON) and as text.
pub struct Answer {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// One HTTP/1.1 request from `from` to `to`.
pub fn request(
    from: IpAddr,
    to: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut s = connect(from, to);
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read answer");
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or(Value::String(body.to_string()))
    };
    Answer {
        status,
        headers,
        body: json,
        text: body.to_string(),
    }
}

/// [`request`] from 127.0.0.1: the status and the JSON body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let a = request(LOCAL, addr, method, target, headers, body);
    (a.status, a.body)
}

/// A signed client as ccxt's binanceusdm signs (see serve.rs's header).
pub struct Client {
    pub addr: SocketAddr,
    pub key: &'static str,
    pub secret: &'static str,
}

impl Client {
    /// A signed call as ccxt makes it, from the loopback address `from`, with `timestamp`
    /// given: the whole answer.
    pub fn answer_from(
        &self,
        from: IpAddr,
        method: &str,
        path: &str,
        params: &str,
        ts: u64,
    ) -> Answer {
        let mut payload = format!("timestamp={ts}");
        if !params.is_empty() {
            payload.push('&');
            payload.push_str(params);
        }
        payload.push_str("&recvWindow=5000");
        let signed = format!(
            "{payload}&signature={}",
            sign_hex(self.secret.as_bytes(), &payload)
        );
        let key = ("X-MBX-APIKEY", self.key);
        if method == "GET" || method == "DELETE" {
            request(
                from,
                self.addr,
                method,
                &format!("{path}?{signed}"),
                &[key],
                "",
            )
        } else {
            let form = ("Content-Type", "application/x-www-form-urlencoded");
            request(from, self.addr, method, path, &[key, form], &signed)
        }
    }
    /// A signed call with `timestamp` given (to test the window).
    pub fn call_at(&self, method: &str, path: &str, params: &str, ts: u64) -> (u16, Value) {
        let a = self.answer_from(LOCAL, method, path, params, ts);
        (a.status, a.body)
    }
    pub fn call(&self, method: &str, path: &str, params: &str) -> (u16, Value) {
        self.call_at(method, path, params, now_ms())
    }
    pub fn ok(&self, method: &str, path: &str, params: &str) -> Value {
        let (status, v) = self.call(method, path, params);
        assert_eq!(status, 200, "{method} {path} {params}: {v}");
        v
    }
    pub fn code(&self, method: &str, path: &str, params: &str) -> i64 {
        let (status, v) = self.call(method, path, params);
        assert_ne!(status, 200, "{method} {path} {params} should fail: {v}");
        v["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("no code in {v}"))
    }
    /// A new order's id.
    pub fn order(&self, params: &str) -> u64 {
        self.ok("POST", "/fapi/v1/order", params)["orderId"]
            .as_u64()
            .unwrap()
    }
    /// `POST/PUT/DELETE /fapi/v1/listenKey`: the API key header only, no signature.
    pub fn listen_key(&self, method: &str) -> (u16, Value) {
        http(
            self.addr,
            method,
            "/fapi/v1/listenKey",
            &[("X-MBX-APIKEY", self.key)],
            "",
        )
    }
}

/// A POST to the admin API with the bearer `token`; must answer 200.
pub fn admin_with(addr: SocketAddr, token: &str, path: &str, body: &str) -> Value {
    let auth = format!("Bearer {token}");
    let (status, v) = http(
        addr,
        "POST",
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body,
    );
    assert_eq!(status, 200, "{path} {body}: {v}");
    v
}

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const KEY_A: &str = "key-a";
pub const SECRET_A: &str = "secret-a-0123456789";
pub const KEY_B: &str = "key-b";
pub const SECRET_B: &str = "secret-b-0123456789";

/// Serve options on `dir` with keys A (account 1) and B (account 2), both listeners on
/// 127.0.0.1 with ports chosen by the OS, the default configuration.
pub fn two_key_options(dir: &std::path::Path) -> perpcore_gateway::ServeOptions {
    let mut keys = perpcore_gateway::ApiKeys::default();
    keys.insert(KEY_A, SECRET_A.as_bytes(), perpcore_types::AccountId(1))
        .unwrap();
    keys.insert(KEY_B, SECRET_B.as_bytes(), perpcore_types::AccountId(2))
        .unwrap();
    let mut opts = perpcore_gateway::ServeOptions::new(
        dir.to_path_buf(),
        perpcore_config::default_config(),
        keys,
        ADMIN_TOKEN.to_string(),
    );
    opts.listen = "127.0.0.1:0".parse().unwrap();
    opts.admin_listen = "127.0.0.1:0".parse().unwrap();
    opts
}
