//! API keys and Binance's request signing.
//!
//! The operator's keys file (TOML) maps an API key to an account and an HMAC secret:
//!
//! ```toml
//! [[keys]]
//! api_key = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
//! secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
//! account = 1
//! ```
//!
//! Only the HMAC's keyed state is kept after loading (the inner and outer padded key
//! blocks hashed once, `Hmac<Sha256>` ready to clone per request); the secret text itself
//! is dropped. On Unix the file must not be readable by group or others (as ssh demands
//! of private keys).
//!
//! A signed request's parameters are the raw query string (GET, DELETE) or the raw form
//! body (POST, PUT; Binance's `totalParams` = query string followed by body when both are
//! present); `signature` must be the last parameter, and the signature is the lower- or
//! upper-case hex HMAC-SHA256 of every byte before `&signature=`, verified in constant
//! time (`Mac::verify_slice`). Then `timestamp` must lie within `recvWindow` (default
//! 5000 ms, at most 60000) before the server's clock and at most 1000 ms after it.

use crate::error::{ApiError, GatewayError};
use hmac::{Hmac, Mac};
use perpcore_types::AccountId;
use sha2::Sha256;
use std::collections::BTreeMap;
use std::path::Path;

type HmacSha256 = Hmac<Sha256>;

/// Default and largest `recvWindow` (ms).
pub const DEFAULT_RECV_WINDOW_MS: u64 = 5_000;
pub const MAX_RECV_WINDOW_MS: u64 = 60_000;
/// How far a timestamp may lie ahead of the server's clock (ms), as Binance allows.
pub const MAX_AHEAD_MS: u64 = 1_000;

struct KeyEntry {
    account: AccountId,
    mac: HmacSha256,
}

/// The loaded keys.
#[derive(Default)]
pub struct ApiKeys {
    keys: BTreeMap<String, KeyEntry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<KeyLine>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyLine {
    api_key: String,
    secret: String,
    account: u64,
}

impl ApiKeys {
    /// Parse a keys file's text.
    pub fn from_toml_str(text: &str) -> Result<ApiKeys, String> {
        let file: KeysFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut keys = ApiKeys::default();
        for line in file.keys {
            keys.insert(
                &line.api_key,
                line.secret.as_bytes(),
                AccountId(line.account),
            )?;
        }
        Ok(keys)
    }

    /// Load the operator's keys file (refused if group- or world-readable on Unix).
    pub fn load(path: &Path) -> Result<ApiKeys, GatewayError> {
        let err = |what: String| GatewayError::Keys {
            path: path.display().to_string(),
            what,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path)
                .map_err(|e| err(e.to_string()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(err(format!(
                    "mode {:o} lets others read the secrets; chmod 600 it",
                    mode & 0o777
                )));
            }
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        ApiKeys::from_toml_str(&text).map_err(err)
    }

    /// Add a key (used by the file loader and tests).
    pub fn insert(
        &mut self,
        api_key: &str,
        secret: &[u8],
        account: AccountId,
    ) -> Result<(), String> {
        if api_key.is_empty()
            || api_key.len() > 128
            || !api_key.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err("an api_key must be 1 to 128 printable ASCII characters".into());
        }
        if secret.is_empty() {
            return Err(format!("empty secret for api_key {api_key}"));
        }
        let mac = HmacSha256::new_from_slice(secret).map_err(|e| e.to_string())?;
        if self
            .keys
            .insert(api_key.to_string(), KeyEntry { account, mac })
            .is_some()
        {
            return Err(format!("api_key {api_key} listed twice"));
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The account of an API key alone, without a signature (the listen key endpoints,
    /// as on Binance).
    pub fn account_of(&self, api_key: Option<&[u8]>) -> Result<AccountId, ApiError> {
        let api_key = api_key.ok_or_else(ApiError::key_format)?;
        let api_key = std::str::from_utf8(api_key).map_err(|_| ApiError::key_format())?;
        self.keys
            .get(api_key)
            .map(|e| e.account)
            .ok_or_else(ApiError::key_invalid)
    }

    /// Authenticate a signed request: the key from `X-MBX-APIKEY`, the signature over
    /// the raw parameters, the timestamp against `now_ms`. Returns the account and the
    /// decoded parameters (without `signature`).
    pub fn verify(
        &self,
        api_key: Option<&[u8]>,
        query: &str,
        body: &[u8],
        now_ms: u64,
    ) -> Result<(AccountId, Params), ApiError> {
        let api_key = api_key.ok_or_else(ApiError::key_format)?;
        let api_key = std::str::from_utf8(api_key).map_err(|_| ApiError::key_format())?;
        let entry = self.keys.get(api_key).ok_or_else(ApiError::key_invalid)?;
        let body = std::str::from_utf8(body).map_err(|_| ApiError::bad_signature())?;
        // The signed text borrows the query or the body; only both together are copied.
        let joined;
        let total = match (query.is_empty(), body.is_empty()) {
            (_, true) => query,
            (true, false) => body,
            (false, false) => {
                joined = format!("{query}{body}");
                joined.as_str()
            }
        };
        let (signed, signature) = match total.rfind("&signature=") {
            Some(i) => (&total[..i], &total[i + "&signature=".len()..]),
            None => match total.strip_prefix("signature=") {
                Some(s) => ("", s),
                None => return Err(ApiError::missing("signature")),
            },
        };
        if signature.contains('&') {
            // `signature` must be the last parameter: what follows it would be unsigned.
            return Err(ApiError::bad_signature());
        }
        let account = Self::check_mac(entry, signed, signature)?;
        let params = Params::parse(signed)?;
        check_timestamp(&params, now_ms)?;
        Ok((account, params))
    }

    /// Authenticate a WebSocket API request (`/ws-fapi/v1`) from its `params`, sorted by
    /// name, each value as text (strings unquoted and unescaped, numbers and booleans as
    /// sent): they carry `apiKey`, `timestamp` and `signature` besides the call's own. The
    /// signed text is every parameter but `signature`, `name=value` joined by `&`, as
    /// Binance defines it. Returns the account and the parameters (without `signature`).
    pub fn verify_sorted(
        &self,
        params: &[Param<'_>],
        now_ms: u64,
    ) -> Result<(AccountId, Params), ApiError> {
        let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| &**v);
        let api_key = get("apiKey").ok_or_else(ApiError::key_format)?;
        let entry = self.keys.get(api_key).ok_or_else(ApiError::key_invalid)?;
        let signature = get("signature").ok_or_else(|| ApiError::missing("signature"))?;
        let mut signed = String::with_capacity(256);
        let mut p = Params::default();
        for (name, value) in params.iter().filter(|(k, _)| k != "signature") {
            if !signed.is_empty() {
                signed.push('&');
            }
            signed.push_str(name);
            signed.push('=');
            signed.push_str(value);
            p.push(name, value);
        }
        let account = Self::check_mac(entry, &signed, signature)?;
        check_timestamp(&p, now_ms)?;
        Ok((account, p))
    }

    /// Verify `signature` (hex) over `signed` in constant time.
    fn check_mac(entry: &KeyEntry, signed: &str, signature: &str) -> Result<AccountId, ApiError> {
        let sig = decode_hex(signature).ok_or_else(ApiError::bad_signature)?;
        let mut mac = entry.mac.clone();
        mac.update(signed.as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| ApiError::bad_signature())?;
        Ok(entry.account)
    }
}

/// A WebSocket API parameter: its name and its value as text.
pub type Param<'a> = (std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>);

/// `timestamp` must lie within `recvWindow` before `now_ms` and at most
/// [`MAX_AHEAD_MS`] after it.
fn check_timestamp(params: &Params, now_ms: u64) -> Result<(), ApiError> {
    let ts: u64 = params.required("timestamp")?;
    let window: u64 = params
        .optional("recvWindow")?
        .unwrap_or(DEFAULT_RECV_WINDOW_MS);
    if window > MAX_RECV_WINDOW_MS {
        return Err(ApiError::recv_window_too_large());
    }
    if ts > now_ms + MAX_AHEAD_MS || now_ms.saturating_sub(ts) > window {
        return Err(ApiError::timestamp_outside());
    }
    Ok(())
}

/// Sign `payload` as a client does: lower-case hex HMAC-SHA256 (for tests and tools).
pub fn sign_hex(secret: &[u8], payload: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any size");
    mac.update(payload.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The 32 bytes of a 64-digit hex signature (either case), or `None`.
fn decode_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (o, p) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        *o = digit(p[0])? << 4 | digit(p[1])?;
    }
    Some(out)
}

/// Decoded `application/x-www-form-urlencoded` parameters (the last value of a repeated
/// name wins).
///
/// Held as one string of the decoded names and values back to back, and where each
/// pair ends in it: parsing a request costs two allocations whatever the number of
/// parameters, and a lookup scans the (few) pairs from the last.
#[derive(Clone, Debug, Default)]
pub struct Params {
    text: String,
    /// Per pair in order: (end of its name, end of its value) in `text`; its name starts
    /// where the previous pair's value ends.
    pairs: Vec<(usize, usize)>,
}

impl Params {
    pub fn parse(text: &str) -> Result<Params, ApiError> {
        let mut p = Params {
            text: String::with_capacity(text.len()),
            pairs: Vec::with_capacity(text.bytes().filter(|&b| b == b'&').count() + 1),
        };
        let mut scratch = Vec::new();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let start = p.text.len();
            if !percent_decode_into(k, &mut p.text, &mut scratch) {
                return Err(ApiError::illegal(k, "bad percent-encoding"));
            }
            let name_end = p.text.len();
            if !percent_decode_into(v, &mut p.text, &mut scratch) {
                return Err(ApiError::illegal(
                    &p.text[start..name_end],
                    "bad percent-encoding",
                ));
            }
            p.pairs.push((name_end, p.text.len()));
        }
        Ok(p)
    }

    /// The parameters of an unsigned WebSocket API request.
    pub fn from_pairs(params: &[Param<'_>]) -> Params {
        let mut p = Params::default();
        for (name, value) in params {
            p.push(name, value);
        }
        p
    }

    /// Append one decoded pair.
    pub fn push(&mut self, name: &str, value: &str) {
        self.text.push_str(name);
        let name_end = self.text.len();
        self.text.push_str(value);
        self.pairs.push((name_end, self.text.len()));
    }

    /// The last value given for `name` (empty or not).
    fn last(&self, name: &str) -> Option<&str> {
        (0..self.pairs.len()).rev().find_map(|i| {
            let start = if i == 0 { 0 } else { self.pairs[i - 1].1 };
            let (name_end, value_end) = self.pairs[i];
            (&self.text[start..name_end] == name).then(|| &self.text[name_end..value_end])
        })
    }

    /// The value, if present and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.last(name).filter(|v| !v.is_empty())
    }
    pub fn str(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name).ok_or_else(|| ApiError::missing(name))
    }
    pub fn required<T: std::str::FromStr>(&self, name: &str) -> Result<T, ApiError> {
        self.str(name)?
            .parse()
            .map_err(|_| ApiError::illegal(name, "not a valid value"))
    }
    pub fn optional<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| ApiError::illegal(name, "not a valid value"))
            })
            .transpose()
    }
    /// `true` / `false` (any case); absent is `false`.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name) {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(_) => Err(ApiError::illegal(name, "expected true or false")),
        }
    }
}

/// Append the decoding of `s` (`+` is a space, `%XX` a byte) to `out`; false if an
/// escape is malformed or the bytes are not UTF-8 (`out` may then hold a part). Text
/// without escapes is copied as it is.
fn percent_decode_into(s: &str, out: &mut String, scratch: &mut Vec<u8>) -> bool {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        out.push_str(s);
        return true;
    }
    scratch.clear();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => scratch.push(b' '),
            b'%' => {
                let Some(byte) = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                else {
                    return false;
                };
                scratch.push(byte);
                i += 2;
            }
            c => scratch.push(c),
        }
        i += 1;
    }
    match std::str::from_utf8(scratch) {
        Ok(t) => {
            out.push_str(t);
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Binance's published signing example (USDⓈ-M futures "SIGNED endpoint examples for
    // POST /fapi/v1/order", https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info):
    // the key, secret, parameters and resulting signature below are theirs.
    const KEY: &str = "dbefbc809e3e83c283a984c3a1459732ea7db1360ca80c5c2c8867408d28cc83";
    const SECRET: &str = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9";
    const PAYLOAD: &str = "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC&recvWindow=5000&timestamp=1591702613943";
    const SIGNATURE: &str = "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9";

    fn keys() -> ApiKeys {
        let mut k = ApiKeys::default();
        k.insert(KEY, SECRET.as_bytes(), AccountId(7)).unwrap();
        k
    }

    #[test]
    fn binance_published_signature_verifies() {
        assert_eq!(sign_hex(SECRET.as_bytes(), PAYLOAD), SIGNATURE);
        let body = format!("{PAYLOAD}&signature={SIGNATURE}");
        let (acct, p) = keys()
            .verify(
                Some(KEY.as_bytes()),
                "",
                body.as_bytes(),
                1591702613943 + 100,
            )
            .unwrap();
        assert_eq!(acct, AccountId(7));
        assert_eq!(p.get("price"), Some("9000"));
        assert_eq!(p.get("signature"), None);
    }

    #[test]
    fn refusals() {
        let k = keys();
        let ts = 1591702613943u64;
        let body = format!("{PAYLOAD}&signature={SIGNATURE}");
        // One changed byte of the parameters: -1022.
        let tampered = body.replace("price=9000", "price=9001");
        let e = k
            .verify(Some(KEY.as_bytes()), "", tampered.as_bytes(), ts)
            .unwrap_err();
        assert_eq!(e.code, -1022);
        // Unknown key -2015, no key -2014.
        assert_eq!(
            k.verify(Some(b"nope"), "", body.as_bytes(), ts)
                .unwrap_err()
                .code,
            -2015
        );
        assert_eq!(
            k.verify(None, "", body.as_bytes(), ts).unwrap_err().code,
            -2014
        );
        // 5000 ms window: 5001 ms late is refused, 5000 ms late is not; 1001 ms ahead is.
        assert_eq!(
            k.verify(Some(KEY.as_bytes()), "", body.as_bytes(), ts + 5001)
                .unwrap_err()
                .code,
            -1021
        );
        assert!(k
            .verify(Some(KEY.as_bytes()), "", body.as_bytes(), ts + 5000)
            .is_ok());
        assert_eq!(
            k.verify(Some(KEY.as_bytes()), "", body.as_bytes(), ts - 1001)
                .unwrap_err()
                .code,
            -1021
        );
        // A parameter after the signature is refused (it would be unsigned).
        let extra = format!("{body}&quantity=100");
        assert_eq!(
            k.verify(Some(KEY.as_bytes()), "", extra.as_bytes(), ts)
                .unwrap_err()
                .code,
            -1022
        );
    }

    #[test]
    fn form_decoding() {
        let p = Params::parse("a=1&newClientOrderId=x%2By+z&b=").unwrap();
        assert_eq!(p.get("newClientOrderId"), Some("x+y z"));
        assert_eq!(p.get("b"), None);
        assert!(Params::parse("a=%zz").is_err());
        // A repeated name: the last value wins, even an empty one (then absent).
        let p = Params::parse("a=1&b=2&a=3&c=4&c=").unwrap();
        assert_eq!(
            (p.get("a"), p.get("b"), p.get("c")),
            (Some("3"), Some("2"), None)
        );
        // Escapes in names too; a name that only prefixes another is not it.
        let p = Params::parse("x%41y=1&xAyz=2&%E2%82%AC=euro").unwrap();
        assert_eq!(
            (p.get("xAy"), p.get("xA"), p.get("€")),
            (Some("1"), None, Some("euro"))
        );
        // Invalid UTF-8 after decoding is refused like a bad escape.
        assert!(Params::parse("a=%FF").is_err());
    }
}
