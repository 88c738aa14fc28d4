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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_means_left_out() {
        assert!(vec::<u8>(&None) && vec::<u8>(&Some(Vec::new())) && !vec(&Some(vec![1])));
        assert!(map::<u8, u8>(&Some(BTreeMap::new())));
        assert!(value(&Some(Value::Null)) && value(&Some(serde_json::json!([]))));
        assert!(!value(&Some(serde_json::json!({"a": 1}))));
    }
}
