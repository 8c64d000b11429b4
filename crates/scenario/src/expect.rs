//! Expectations: resolving a dotted field path in a JSON document (an account report,
//! the engine-wide view, an event) and comparing the value found with the expected one.
//!
//! Owns the path syntax (`positions.BTCUSDT.liquidation_price`: array elements are picked
//! by their `instrument`/`asset`/`symbol` name or by index) and the comparison rule:
//! decimals compare by exact value (`"1340"` equals `"1340.000"`), everything else
//! exactly. It must never parse a float (a float in `equals` is refused) and never round.

use perpcore_types::{parse_decimal, MONEY_DECIMALS};
use serde_json::Value;

/// The value at `path` in `doc`, if any.
pub fn resolve<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = doc;
    for seg in path.split('.') {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(items) => match seg.parse::<usize>() {
                Ok(i) => items.get(i)?,
                Err(_) => items.iter().find(|item| names(item, seg))?,
            },
            _ => return None,
        };
    }
    Some(cur)
}

/// An array element is named by its `instrument`, `asset` or `symbol` field.
fn names(item: &Value, seg: &str) -> bool {
    ["instrument", "asset", "symbol"]
        .iter()
        .any(|k| item.get(k).and_then(Value::as_str) == Some(seg))
}

/// A value reduced to what comparison needs.
#[derive(Debug, PartialEq, Eq)]
enum Canon {
    /// Decimal text or an integer, at 10^-12.
    Decimal(i128),
    Text(String),
    Bool(bool),
    Null,
    /// Objects and arrays compare by their JSON text.
    Other(String),
}

fn canon(v: &Value) -> Result<Canon, String> {
    Ok(match v {
        Value::Null => Canon::Null,
        Value::Bool(b) => Canon::Bool(*b),
        Value::String(s) => match parse_decimal(s, MONEY_DECIMALS) {
            Ok(d) => Canon::Decimal(d),
            Err(_) => Canon::Text(s.clone()),
        },
        Value::Number(n) => {
            let text = if let Some(u) = n.as_u64() {
                u.to_string()
            } else if let Some(i) = n.as_i64() {
                i.to_string()
            } else {
                return Err(format!(
                    "{n} is a float; write decimals as strings, e.g. \"{n}\""
                ));
            };
            Canon::Decimal(parse_decimal(&text, MONEY_DECIMALS).map_err(|e| e.to_string())?)
        }
        other => Canon::Other(other.to_string()),
    })
}

/// `Ok(())` when `actual` equals `expected`, else a message showing both.
pub fn compare(actual: &Value, expected: &Value) -> Result<(), String> {
    let want = canon(expected).map_err(|e| format!("\"equals\": {e}"))?;
    let got = canon(actual)?;
    if want == got {
        Ok(())
    } else {
        Err(format!("expected {expected}, got {actual}"))
    }
}

/// The keys available at the deepest resolvable prefix of `path`, for error messages.
pub fn hint(doc: &Value, path: &str) -> String {
    let mut cur = doc;
    let mut seen = Vec::new();
    for seg in path.split('.') {
        match resolve(cur, seg) {
            Some(next) => {
                seen.push(seg);
                cur = next;
            }
            None => break,
        }
    }
    let keys: Vec<String> = match cur {
        Value::Object(m) => m.keys().cloned().collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                ["instrument", "asset", "symbol"]
                    .iter()
                    .find_map(|k| item.get(k).and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_else(|| i.to_string())
            })
            .collect(),
        _ => Vec::new(),
    };
    let at = if seen.is_empty() {
        "the top level".to_string()
    } else {
        format!("{:?}", seen.join("."))
    };
    if keys.is_empty() {
        format!("nothing below {at}")
    } else {
        format!("{at} has: {}", keys.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_pick_array_elements_by_name_or_index() {
        let doc = json!({"positions": [{"instrument": "BTCUSDT", "size": "1"}],
                         "assets": [{"asset": "USDT", "wallet": "5"}]});
        assert_eq!(resolve(&doc, "positions.BTCUSDT.size"), Some(&json!("1")));
        assert_eq!(resolve(&doc, "positions.0.size"), Some(&json!("1")));
        assert_eq!(resolve(&doc, "assets.USDT.wallet"), Some(&json!("5")));
        assert_eq!(resolve(&doc, "assets.USDC.wallet"), None);
        assert!(hint(&doc, "assets.USDC.wallet").contains("USDT"));
    }

    #[test]
    fn decimals_compare_by_value() {
        assert!(compare(&json!("1340"), &json!("1340.000")).is_ok());
        assert!(compare(&json!("1340"), &json!(1340)).is_ok());
        assert!(compare(&json!(10), &json!("10")).is_ok());
        assert!(compare(&json!("-0.5"), &json!("-0.50")).is_ok());
        assert!(compare(&json!("1340.000000000001"), &json!("1340")).is_err());
        assert!(compare(&json!("cross"), &json!("cross")).is_ok());
        assert!(compare(&json!(null), &json!(null)).is_ok());
        assert!(compare(&json!("0"), &json!(null)).is_err());
    }

    #[test]
    fn float_expectations_are_refused() {
        // Parsed from text so that no float literal appears in this crate.
        let float: Value = serde_json::from_str("1.5").unwrap();
        let e = compare(&json!("1.5"), &float).unwrap_err();
        assert!(e.contains("float"), "{e}");
    }
}
