//! When an optional field is left out of a response, as Fly's servers leave it out (Go's
//! `omitempty`): absent, null, or an empty list or map. Strict clients fail on a `null`
//! or `[]` where Fly sends nothing.

use std::collections::BTreeMap;

use serde_json::Value;

/// An absent or empty list.
pub fn vec<T>(v: &Option<Vec<T>>) -> bool {
    v.as_ref().is_none_or(Vec::is_empty)
}

/// An absent or empty map.
pub fn map<K, V>(v: &Option<BTreeMap<K, V>>) -> bool {
    v.as_ref().is_none_or(BTreeMap::is_empty)
}

/// An absent value, `null`, or an empty list.
pub fn value(v: &Option<Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(_) => false,
    }
}

/// Where a JSON value holds a `null`, an empty list or an empty map — what Fly's
/// servers leave out — each as a path from `at` (`config.services[0].checks`).
pub fn empties(v: &Value, at: &str) -> Vec<String> {
    let mut out = Vec::new();
    walk(v, at, &mut out);
    out
}

fn walk(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Null => out.push(format!("null at {at}")),
        Value::Array(a) => {
            if a.is_empty() {
                out.push(format!("[] at {at}"));
            }
            for (i, x) in a.iter().enumerate() {
                walk(x, &format!("{at}[{i}]"), out);
            }
        }
        Value::Object(o) => {
            if o.is_empty() {
                out.push(format!("{{}} at {at}"));
            }
            for (k, x) in o {
                walk(x, &format!("{at}.{k}"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_means_left_out() {
        assert!(vec::<u8>(&None) && vec::<u8>(&Some(Vec::new())) && !vec(&Some(vec![1])));
        assert!(map::<u8, u8>(&Some(BTreeMap::new())));
        assert!(value(&Some(Value::Null)) && value(&Some(serde_json::json!([]))));
        assert!(!value(&Some(serde_json::json!({"a": 1}))));
        assert_eq!(
            empties(
                &serde_json::json!({"a": [], "b": {"c": null}, "d": {}}),
                "x"
            ),
            vec!["[] at x.a", "null at x.b.c", "{} at x.d"]
        );
    }
}
