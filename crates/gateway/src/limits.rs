//! Request weights and rate limits as Binance USDⓈ-M counts them
//! (<https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info>,
//! "LIMITS"; the default figures are those of
//! <https://www.binance.com/en/support/faq/rate-limits-on-binance-futures-281596e222414cdd9051664ea621cdc3>):
//!
//! - `REQUEST_WEIGHT`: every request of the public API costs its endpoint's weight
//!   ([`request_weight`]) against its client address, 2,400 per minute by default; the
//!   address's use is in every answer's `X-MBX-USED-WEIGHT-1M`. Over the limit: HTTP 429,
//!   code -1003.
//! - `ORDERS`: new and amended orders count against the account of the signing key, 300
//!   per 10 seconds and 1,200 per minute by default, in `X-MBX-ORDER-COUNT-10S` / `-1M`.
//!   Over either: HTTP 429, code -1015 (counted only once the signature is verified, so a
//!   leaked API key alone cannot use up an account's orders).
//! - A client address refused more than `ban_after_refusals` times within one minute is
//!   banned (HTTP 418, code -1003 with the time the ban ends) for `ban_ms`: Binance's
//!   first ban lasts 2 minutes; the threshold is ours, Binance does not publish one.
//!
//! Windows are fixed and aligned to the host clock (a minute window is `[k·60 s,
//! (k+1)·60 s)`), as Binance's counters reset on the minute. Each window is one hash map
//! from key to count, cleared when the next window starts: a request costs one lookup
//! under a short lock (O(1)), and an address idle for a window is forgotten. At most
//! `max_addresses` addresses are tracked per window (IPv6 addresses by their /64
//! prefix, as one host usually owns one); a new address past that is refused -1003 until
//! the window ends, so memory stays bounded whatever the traffic.
//!
//! The host's clock is used here (never in the engine). Must never: count a request
//! against another address or account, or keep state that grows with traffic.

use crate::conn::ClientAddr;
use crate::error::ApiError;
use crate::http::now_ms;
use crate::metrics::Metrics;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use perpcore_types::AccountId;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The limits (0 disables one). Defaults are Binance's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// `REQUEST_WEIGHT` per minute per client address (Binance: 2,400).
    pub weight_per_minute: u32,
    /// `ORDERS` per 10 seconds per account (Binance: 300).
    pub orders_per_10s: u32,
    /// `ORDERS` per minute per account (Binance: 1,200).
    pub orders_per_minute: u32,
    /// Refusals of one address within a minute after which it is banned (0: never).
    pub ban_after_refusals: u32,
    /// How long a ban lasts (ms).
    pub ban_ms: u64,
    /// Client addresses tracked per window, at most.
    pub max_addresses: usize,
    /// Open TCP connections per listener, at most (0: no limit).
    pub max_connections: usize,
    /// Open TCP connections of one client address per listener, at most (0: no limit).
    pub max_connections_per_address: usize,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            weight_per_minute: 2_400,
            orders_per_10s: 300,
            orders_per_minute: 1_200,
            ban_after_refusals: 100,
            ban_ms: 120_000,
            max_addresses: 65_536,
            max_connections: 4_096,
            max_connections_per_address: 1_024,
        }
    }
}

impl RateLimits {
    /// No request or order limit (benchmarks); connection limits stay.
    pub fn unlimited() -> RateLimits {
        RateLimits {
            weight_per_minute: 0,
            orders_per_10s: 0,
            orders_per_minute: 0,
            ban_after_refusals: 0,
            ..RateLimits::default()
        }
    }

    /// exchangeInfo's `rateLimits`: the limits in force (a disabled one is not listed).
    pub fn exchange_info(&self) -> Value {
        let mut out = Vec::new();
        let mut add = |kind: &str, interval: &str, num: u32, limit: u32| {
            if limit > 0 {
                out.push(json!({
                    "rateLimitType": kind,
                    "interval": interval,
                    "intervalNum": num,
                    "limit": limit,
                }));
            }
        };
        add("REQUEST_WEIGHT", "MINUTE", 1, self.weight_per_minute);
        add("ORDERS", "MINUTE", 1, self.orders_per_minute);
        add("ORDERS", "SECOND", 10, self.orders_per_10s);
        Value::Array(out)
    }
}

/// What a request costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weight {
    /// Against the client address's `REQUEST_WEIGHT`.
    pub ip: u32,
    /// Whether it counts against the account's `ORDERS` (new and amended orders).
    pub order: bool,
}

/// The value of `name` in a query string, if present and not empty (raw, undecoded:
/// only used for `symbol` presence and `limit`, which need no decoding).
fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// Binance's weight of a public-API request (each endpoint's "Request Weight" on its
/// page of the USDⓈ-M docs). An unknown path costs 1.
pub fn request_weight(method: &Method, path: &str, query: &str) -> Weight {
    let w = |ip| Weight { ip, order: false };
    let get = method == Method::GET;
    match path {
        "/fapi/v1/order" if method == Method::POST || method == Method::PUT => {
            Weight { ip: 0, order: true }
        }
        "/fapi/v1/depth" => {
            // limit 5, 10, 20, 50: 2; 100: 5; 500 (the default): 10; 1000: 20.
            let limit: u32 = query_value(query, "limit")
                .and_then(|v| v.parse().ok())
                .unwrap_or(500);
            w(match limit {
                0..=50 => 2,
                51..=100 => 5,
                101..=500 => 10,
                _ => 20,
            })
        }
        "/fapi/v1/openOrders" if query_value(query, "symbol").is_none() => w(40),
        "/fapi/v2/account"
        | "/fapi/v3/account"
        | "/fapi/v2/positionRisk"
        | "/fapi/v3/positionRisk"
        | "/fapi/v1/userTrades" => w(5),
        "/fapi/v1/income" => w(30),
        "/fapi/v1/positionSide/dual" if get => w(30),
        _ => w(1),
    }
}

/// The key a client address is counted under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressKey {
    V4(u32),
    /// The /64 prefix.
    V6(u64),
}

/// IPv4 as is, IPv6 by its /64 prefix, IPv4-mapped IPv6 as the IPv4 address.
pub fn address_key(ip: IpAddr) -> AddressKey {
    match ip {
        IpAddr::V4(v4) => AddressKey::V4(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => AddressKey::V4(u32::from(v4)),
            None => AddressKey::V6((u128::from(v6) >> 64) as u64),
        },
    }
}

/// One fixed window's counts.
struct Window<K> {
    len_ms: u64,
    /// `now_ms / len_ms` of the window the counts belong to.
    index: u64,
    counts: HashMap<K, u32>,
}

impl<K: std::hash::Hash + Eq> Window<K> {
    fn new(len_ms: u64) -> Self {
        Window {
            len_ms,
            index: 0,
            counts: HashMap::new(),
        }
    }

    /// Move to the window of `now_ms` (a clock that stepped back stays in the current).
    fn roll(&mut self, now_ms: u64) {
        let index = now_ms / self.len_ms;
        if index > self.index {
            self.index = index;
            self.counts.clear();
        }
    }

    /// Seconds until the window ends, rounded up (Retry-After).
    fn retry_after_s(&self, now_ms: u64) -> u64 {
        ((self.index + 1) * self.len_ms)
            .saturating_sub(now_ms)
            .div_ceil(1000)
            .max(1)
    }
}

struct AddressState {
    weight: Window<AddressKey>,
    /// Refusals per address in the current minute.
    refusals: Window<AddressKey>,
    /// Banned addresses and when their ban ends (ms); expired ones are dropped at each
    /// minute's start.
    bans: HashMap<AddressKey, u64>,
}

struct OrderState {
    ten_s: Window<AccountId>,
    minute: Window<AccountId>,
}

/// The rate limiter of one server (shared by the public listener's requests).
pub struct Limiter {
    cfg: RateLimits,
    addresses: Mutex<AddressState>,
    orders: Mutex<OrderState>,
    metrics: Arc<Metrics>,
}

/// Counts to report in an order's answer headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderCounts {
    pub ten_s: u32,
    pub minute: u32,
}

impl OrderCounts {
    pub fn write(&self, headers: &mut HeaderMap) {
        headers.insert("x-mbx-order-count-10s", HeaderValue::from(self.ten_s));
        headers.insert("x-mbx-order-count-1m", HeaderValue::from(self.minute));
    }
}

fn too_many(status: StatusCode, msg: String, retry_after_s: u64) -> ApiError {
    ApiError::new(status, -1003, msg).with_retry_after(retry_after_s)
}

impl Limiter {
    pub fn new(cfg: RateLimits, metrics: Arc<Metrics>) -> Limiter {
        Limiter {
            cfg,
            addresses: Mutex::new(AddressState {
                weight: Window::new(60_000),
                refusals: Window::new(60_000),
                bans: HashMap::new(),
            }),
            orders: Mutex::new(OrderState {
                ten_s: Window::new(10_000),
                minute: Window::new(60_000),
            }),
            metrics,
        }
    }

    pub fn limits(&self) -> &RateLimits {
        &self.cfg
    }

    /// Charge `weight` to the address `ip` at `now_ms`. Ok: the address's weight used in
    /// this minute (for `X-MBX-USED-WEIGHT-1M`). Err: 429 (or 418 while banned) with
    /// that figure.
    pub fn charge_address(
        &self,
        ip: IpAddr,
        weight: u32,
        now_ms: u64,
    ) -> Result<u32, (ApiError, u32)> {
        let key = address_key(ip);
        let mut s = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        let s = &mut *s;
        let new_minute = now_ms / 60_000 > s.weight.index;
        s.weight.roll(now_ms);
        s.refusals.roll(now_ms);
        if new_minute {
            s.bans.retain(|_, until| *until > now_ms);
        }
        let used = s.weight.counts.get(&key).copied().unwrap_or(0);
        if let Some(until) = s.bans.get(&key).copied() {
            if until > now_ms {
                self.metrics.rate_limited("BANNED");
                let msg = format!(
                    "Way too many requests; IP banned until {until}. Please use the websocket for live updates to avoid bans."
                );
                let retry = (until - now_ms).div_ceil(1000);
                return Err((too_many(StatusCode::IM_A_TEAPOT, msg, retry), used));
            }
        }
        let limit = self.cfg.weight_per_minute;
        if limit == 0 {
            return Ok(used);
        }
        let full =
            !s.weight.counts.contains_key(&key) && s.weight.counts.len() >= self.cfg.max_addresses;
        if used.saturating_add(weight) > limit || full {
            self.metrics.rate_limited(if full {
                "ADDRESSES_FULL"
            } else {
                "REQUEST_WEIGHT_1M"
            });
            let retry = s.weight.retry_after_s(now_ms);
            if !full && self.cfg.ban_after_refusals > 0 {
                let n = s.refusals.counts.entry(key).or_insert(0);
                *n += 1;
                if *n > self.cfg.ban_after_refusals && s.bans.len() < self.cfg.max_addresses {
                    s.bans.insert(key, now_ms + self.cfg.ban_ms);
                }
            }
            let msg = format!(
                "Too many requests; current limit is {limit} requests per minute. Please use the websocket for live updates to avoid polling the API."
            );
            return Err((too_many(StatusCode::TOO_MANY_REQUESTS, msg, retry), used));
        }
        let used = used + weight;
        s.weight.counts.insert(key, used);
        Ok(used)
    }

    /// Count one order of `account` at `now_ms` against both order windows (neither is
    /// charged if either is full).
    pub fn count_order(&self, account: AccountId, now_ms: u64) -> Result<OrderCounts, ApiError> {
        let mut s = self.orders.lock().unwrap_or_else(|e| e.into_inner());
        let s = &mut *s;
        s.ten_s.roll(now_ms);
        s.minute.roll(now_ms);
        let ten_s = s.ten_s.counts.get(&account).copied().unwrap_or(0);
        let minute = s.minute.counts.get(&account).copied().unwrap_or(0);
        let over = |used: u32, limit: u32| limit > 0 && used >= limit;
        let refused = if over(ten_s, self.cfg.orders_per_10s) {
            Some(("ORDERS_10S", self.cfg.orders_per_10s, "10 SECOND", &s.ten_s))
        } else if over(minute, self.cfg.orders_per_minute) {
            Some((
                "ORDERS_1M",
                self.cfg.orders_per_minute,
                "1 MINUTE",
                &s.minute,
            ))
        } else {
            None
        };
        if let Some((label, limit, per, window)) = refused {
            self.metrics.rate_limited(label);
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                -1015,
                format!("Too many new orders; current limit is {limit} orders per {per}."),
            )
            .with_retry_after(window.retry_after_s(now_ms)));
        }
        s.ten_s.counts.insert(account, ten_s + 1);
        s.minute.counts.insert(account, minute + 1);
        Ok(OrderCounts {
            ten_s: ten_s + 1,
            minute: minute + 1,
        })
    }
}

/// Middleware of the public listener: charges the request's weight to its client
/// address (refusing it with 429/418 past the limit, before the body is read), reports
/// the address's use in `X-MBX-USED-WEIGHT-1M`, and counts the request in the metrics.
pub async fn guard_public(
    State(app): State<Arc<crate::http::App>>,
    ConnectInfo(ClientAddr(addr)): ConnectInfo<ClientAddr>,
    req: Request,
    next: Next,
) -> Response {
    let endpoint = crate::metrics::endpoint_of(&req);
    let method = req.method().clone();
    let w = request_weight(&method, req.uri().path(), req.uri().query().unwrap_or(""));
    let (mut response, used) = match app.limiter.charge_address(addr.ip(), w.ip, now_ms()) {
        Ok(used) => (next.run(req).await, used),
        Err((e, used)) => (e.into_response(), used),
    };
    response
        .headers_mut()
        .insert("x-mbx-used-weight-1m", HeaderValue::from(used));
    app.metrics
        .observe_request("public", endpoint, &method, &response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn weights_of_binance_endpoints() {
        // Binance's documented weights: depth by limit, openOrders with/without symbol,
        // account/positionRisk/userTrades 5, income 30, orders 0 on the IP but counted.
        let q = |m: Method, p: &str, q: &str| request_weight(&m, p, q);
        assert_eq!(q(Method::GET, "/fapi/v1/depth", "symbol=X&limit=5").ip, 2);
        assert_eq!(q(Method::GET, "/fapi/v1/depth", "symbol=X&limit=100").ip, 5);
        assert_eq!(q(Method::GET, "/fapi/v1/depth", "symbol=X").ip, 10);
        assert_eq!(q(Method::GET, "/fapi/v1/depth", "limit=1000").ip, 20);
        assert_eq!(q(Method::GET, "/fapi/v1/openOrders", "symbol=X").ip, 1);
        assert_eq!(q(Method::GET, "/fapi/v1/openOrders", "timestamp=1").ip, 40);
        assert_eq!(q(Method::GET, "/fapi/v3/account", "").ip, 5);
        assert_eq!(q(Method::GET, "/fapi/v1/income", "").ip, 30);
        assert_eq!(q(Method::GET, "/fapi/v1/positionSide/dual", "").ip, 30);
        assert_eq!(q(Method::POST, "/fapi/v1/positionSide/dual", "").ip, 1);
        let o = q(Method::POST, "/fapi/v1/order", "");
        assert_eq!((o.ip, o.order), (0, true));
        let c = q(Method::DELETE, "/fapi/v1/order", "");
        assert_eq!((c.ip, c.order), (1, false));
    }

    #[test]
    fn weight_window_resets_on_the_minute_and_keeps_addresses_apart() {
        let cfg = RateLimits {
            weight_per_minute: 10,
            ban_after_refusals: 2,
            ..RateLimits::default()
        };
        let l = Limiter::new(cfg, Arc::new(Metrics::new()));
        // 1_700_000_040_000 ms is a whole number of minutes (28_333_334 × 60_000): 40 s in.
        let t0 = 1_700_000_080_000;
        assert_eq!(l.charge_address(ip("10.0.0.1"), 5, t0).unwrap(), 5);
        assert_eq!(l.charge_address(ip("10.0.0.1"), 5, t0 + 1).unwrap(), 10);
        // 10 + 1 > 10: refused with the use unchanged; 20 s left in the minute.
        let (e, used) = l.charge_address(ip("10.0.0.1"), 1, t0 + 2).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code, used), (429, -1003, 10));
        assert_eq!(e.retry_after_s, Some(20));
        // Another address has its own budget.
        assert_eq!(l.charge_address(ip("10.0.0.2"), 10, t0 + 3).unwrap(), 10);
        // Two more refusals (3 > 2): banned for 120 s, 418 even after the minute rolls.
        assert!(l.charge_address(ip("10.0.0.1"), 1, t0 + 4).is_err());
        assert!(l.charge_address(ip("10.0.0.1"), 1, t0 + 5).is_err());
        let (e, _) = l
            .charge_address(ip("10.0.0.1"), 1, t0 + 20_000)
            .unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (418, -1003));
        // The next minute: 10.0.0.2 starts from zero again.
        assert_eq!(l.charge_address(ip("10.0.0.2"), 1, t0 + 20_000).unwrap(), 1);
        // The ban (until t0 + 5 + 120 000) is over after that.
        assert_eq!(
            l.charge_address(ip("10.0.0.1"), 1, t0 + 121_000).unwrap(),
            1
        );
    }

    #[test]
    fn address_table_is_bounded() {
        let cfg = RateLimits {
            max_addresses: 2,
            ..RateLimits::default()
        };
        let l = Limiter::new(cfg, Arc::new(Metrics::new()));
        let t = 1_700_000_000_000;
        l.charge_address(ip("10.0.0.1"), 1, t).unwrap();
        l.charge_address(ip("10.0.0.2"), 1, t).unwrap();
        assert_eq!(
            l.charge_address(ip("10.0.0.3"), 1, t).unwrap_err().0.code,
            -1003
        );
        // Known addresses go on; a new window forgets them all.
        l.charge_address(ip("10.0.0.1"), 1, t).unwrap();
        assert_eq!(l.charge_address(ip("10.0.0.3"), 1, t + 60_000).unwrap(), 1);
        // IPv6 hosts of one /64 are one key; IPv4-mapped is the IPv4 address.
        assert_eq!(
            address_key(ip("2001:db8::1")),
            address_key(ip("2001:db8::ffff"))
        );
        assert_ne!(
            address_key(ip("2001:db8::1")),
            address_key(ip("2001:db9::1"))
        );
        assert_eq!(
            address_key(ip("::ffff:10.0.0.1")),
            address_key(ip("10.0.0.1"))
        );
    }

    #[test]
    fn orders_per_account_in_two_windows() {
        let cfg = RateLimits {
            orders_per_10s: 3,
            orders_per_minute: 4,
            ..RateLimits::default()
        };
        let l = Limiter::new(cfg, Arc::new(Metrics::new()));
        let (a, b) = (AccountId(1), AccountId(2));
        let t = 1_699_999_980_000; // 28_333_333 × 60_000: on a minute boundary
        for n in 1..=3 {
            assert_eq!(l.count_order(a, t).unwrap().ten_s, n);
        }
        let e = l.count_order(a, t + 1).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (429, -1015));
        assert_eq!(
            e.msg,
            "Too many new orders; current limit is 3 orders per 10 SECOND."
        );
        assert_eq!(l.count_order(b, t + 1).unwrap().ten_s, 1);
        // 10 s later: the 10 s window is fresh, the minute holds 3 of 4.
        let c = l.count_order(a, t + 10_000).unwrap();
        assert_eq!((c.ten_s, c.minute), (1, 4));
        let e = l.count_order(a, t + 10_001).unwrap_err();
        assert!(e.msg.ends_with("4 orders per 1 MINUTE."), "{}", e.msg);
    }

    #[test]
    fn exchange_info_lists_what_is_in_force() {
        let v = RateLimits::default().exchange_info();
        assert_eq!(
            v,
            json!([
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
            ])
        );
        assert_eq!(RateLimits::unlimited().exchange_info(), json!([]));
    }
}
