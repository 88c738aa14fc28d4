//! The legacy shapes of fly.toml (v1 apps, the old GraphQL config) rewritten into the
//! current ones, on the generic document before it is typed — as flyctl does, so files
//! written years ago still load (flytoml-and-deploys.md §1.3).
//!
//! It owns only these rewrites; typing and validation come after it.

use serde_json::{Map, Value};

/// A legacy value that cannot be normalised; flyctl's own wording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchError {
    /// Where, as a key path (`services[0].concurrency`).
    pub path: String,
    pub message: String,
}

type Obj = Map<String, Value>;

/// Applies every patch, in flyctl's order.
pub fn apply(doc: &mut Obj) -> Result<(), PatchError> {
    patch_env(doc);
    patch_services(doc)?;
    patch_processes(doc);
    patch_experimental(doc);
    patch_checks(doc);
    patch_compute(doc);
    patch_mounts(doc);
    patch_metrics(doc);
    patch_top_fields(doc);
    patch_build(doc);
    Ok(())
}

/// Go's `%v` of a scalar.
fn stringify(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn patch_env(doc: &mut Obj) {
    let merged = match doc.remove("env") {
        None => return,
        Some(Value::Array(tables)) => {
            let mut m = Obj::new();
            for t in tables {
                if let Value::Object(t) = t {
                    m.extend(t);
                }
            }
            m
        }
        Some(Value::Object(m)) => m,
        Some(other) => {
            doc.insert("env".into(), other);
            return;
        }
    };
    let env: Obj = merged
        .into_iter()
        .map(|(k, v)| (k, Value::String(stringify(&v))))
        .collect();
    doc.insert("env".into(), Value::Object(env));
}

/// A single table where an array of tables is expected becomes a one-element array.
fn as_array(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

fn go_type_name(v: &Value) -> &'static str {
    match v {
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int64",
        Value::Bool(_) => "bool",
        Value::Array(_) => "[]interface {}",
        Value::Null => "<nil>",
        Value::String(_) => "string",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// A numeric string where an integer belongs becomes the integer.
fn atoi(obj: &mut Obj, key: &str) {
    if let Some(Value::String(s)) = obj.get(key) {
        if let Ok(n) = s.trim().parse::<i64>() {
            obj.insert(key.into(), Value::from(n));
        }
    }
}

/// Numeric check durations in the legacy sections are milliseconds; empty strings unset.
fn patch_check_durations(check: &mut Obj) {
    for key in ["interval", "timeout", "grace_period"] {
        match check.get(key) {
            Some(Value::Number(n)) => {
                let ms = n.as_f64().unwrap_or(0.0).max(0.0) as u64;
                check.insert(key.into(), Value::String(format!("{ms}ms")));
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                check.remove(key);
            }
            _ => {}
        }
    }
}

/// `headers = [{name, value}]` becomes a map; `headers = []` is dropped; values that
/// are numbers or booleans (`fly-healthcheck = 1`) become strings, as flyctl reads them.
fn patch_check_headers(check: &mut Obj) {
    if let Some(Value::Object(map)) = check.get_mut("headers") {
        for v in map.values_mut() {
            if matches!(v, Value::Number(_) | Value::Bool(_)) {
                *v = Value::String(stringify(v));
            }
        }
        return;
    }
    if let Some(Value::Array(list)) = check.get("headers") {
        if list.is_empty() {
            check.remove("headers");
            return;
        }
        let mut m = Obj::new();
        for h in list {
            if let Some(name) = h.get("name").and_then(Value::as_str) {
                let value = h.get("value").map(stringify).unwrap_or_default();
                m.insert(name.to_string(), Value::String(value));
            }
        }
        check.insert("headers".into(), Value::Object(m));
    }
}

fn patch_services(doc: &mut Obj) -> Result<(), PatchError> {
    let Some(services) = doc.remove("services") else {
        return Ok(());
    };
    let mut out = Vec::new();
    for (i, service) in as_array(services).into_iter().enumerate() {
        let Value::Object(mut s) = service else {
            out.push(service);
            continue;
        };
        if s.is_empty() {
            continue;
        }
        match s.remove("concurrency") {
            None => {}
            Some(Value::String(text)) => {
                let mut parts = text.split(',').map(|p| p.trim().parse::<u32>());
                let mut c = Obj::new();
                c.insert("type".into(), "requests".into());
                if let Some(Ok(soft)) = parts.next() {
                    c.insert("soft_limit".into(), soft.into());
                }
                if let Some(Ok(hard)) = parts.next() {
                    c.insert("hard_limit".into(), hard.into());
                }
                s.insert("concurrency".into(), Value::Object(c));
            }
            Some(Value::Object(c)) => {
                s.insert("concurrency".into(), Value::Object(c));
            }
            Some(other) => {
                return Err(PatchError {
                    path: format!("services[{i}].concurrency"),
                    message: format!(
                        "Unknown type for service concurrency: {}; write it as a table, e.g. concurrency = {{ type = \"requests\", soft_limit = 20, hard_limit = 25 }}",
                        go_type_name(&other)
                    ),
                })
            }
        }
        atoi(&mut s, "internal_port");
        if let Some(ports) = s.remove("ports") {
            let ports: Vec<Value> = as_array(ports)
                .into_iter()
                .map(|mut p| {
                    if let Value::Object(o) = &mut p {
                        atoi(o, "port");
                        atoi(o, "start_port");
                        atoi(o, "end_port");
                    }
                    p
                })
                .collect();
            s.insert("ports".into(), Value::Array(ports));
        }
        for key in ["tcp_checks", "http_checks"] {
            if let Some(checks) = s.remove(key) {
                let checks: Vec<Value> = as_array(checks)
                    .into_iter()
                    .map(|mut c| {
                        if let Value::Object(o) = &mut c {
                            patch_check_durations(o);
                            patch_check_headers(o);
                        }
                        c
                    })
                    .collect();
                s.insert(key.into(), Value::Array(checks));
            }
        }
        out.push(Value::Object(s));
    }
    if !out.is_empty() {
        doc.insert("services".into(), Value::Array(out));
    }
    Ok(())
}

fn patch_processes(doc: &mut Obj) {
    if let Some(Value::Array(list)) = doc.get("processes") {
        let mut m = Obj::new();
        for p in list {
            if let Some(name) = p.get("name").and_then(Value::as_str) {
                let cmd = p.get("command").map(stringify).unwrap_or_default();
                m.insert(name.to_string(), Value::String(cmd));
            }
        }
        if m.is_empty() {
            doc.remove("processes");
        } else {
            doc.insert("processes".into(), Value::Object(m));
        }
    }
}

fn patch_experimental(doc: &mut Obj) {
    let Some(Value::Object(mut exp)) = doc.remove("experimental") else {
        return;
    };
    for key in ["cmd", "entrypoint", "exec"] {
        if let Some(Value::String(s)) = exp.get(key) {
            let one = Value::Array(vec![Value::String(s.clone())]);
            exp.insert(key.into(), one);
        }
    }
    if let Some(kt) = exp.remove("kill_timeout") {
        doc.entry("kill_timeout").or_insert(kt);
    }
    let port = exp.remove("metrics_port");
    let path = exp.remove("metrics_path");
    if port.is_some() && !doc.contains_key("metrics") && !doc.contains_key("metric") {
        let mut m = Obj::new();
        if let Some(p) = port {
            m.insert("port".into(), p);
        }
        if let Some(p) = path {
            m.insert("path".into(), p);
        }
        doc.insert("metrics".into(), Value::Array(vec![Value::Object(m)]));
    }
    if !exp.is_empty() {
        doc.insert("experimental".into(), Value::Object(exp));
    }
}

fn patch_checks(doc: &mut Obj) {
    let checks = match doc.remove("checks") {
        None => return,
        Some(Value::Array(list)) => {
            let mut m = Obj::new();
            for c in list {
                if let Value::Object(mut c) = c {
                    if let Some(Value::String(name)) = c.remove("name") {
                        m.insert(name, Value::Object(c));
                    }
                }
            }
            m
        }
        Some(Value::Object(m)) => m,
        Some(other) => {
            doc.insert("checks".into(), other);
            return;
        }
    };
    if checks.is_empty() {
        return;
    }
    let checks: Obj = checks
        .into_iter()
        .map(|(k, mut c)| {
            if let Value::Object(o) = &mut c {
                patch_check_durations(o);
                patch_check_headers(o);
            }
            (k, c)
        })
        .collect();
    doc.insert("checks".into(), Value::Object(checks));
}

fn patch_compute(doc: &mut Obj) {
    let mut all = Vec::new();
    for key in ["vm", "compute", "computes"] {
        if let Some(v) = doc.remove(key) {
            all.extend(as_array(v));
        }
    }
    if all.is_empty() {
        return;
    }
    for c in &mut all {
        if let Some(Value::Number(n)) = c.get("memory") {
            let s = n.to_string();
            if let Value::Object(o) = c {
                o.insert("memory".into(), Value::String(s));
            }
        }
    }
    doc.insert("vm".into(), Value::Array(all));
}

fn size_to_string(o: &mut Obj, key: &str) {
    if let Some(Value::Number(n)) = o.get(key) {
        let s = n.to_string();
        o.insert(key.into(), Value::String(s));
    }
}

fn patch_mounts(doc: &mut Obj) {
    let mut all = Vec::new();
    for key in ["mount", "mounts"] {
        if let Some(v) = doc.remove(key) {
            all.extend(as_array(v));
        }
    }
    if all.is_empty() {
        return;
    }
    for m in &mut all {
        if let Value::Object(o) = m {
            // flyctl reads a zero threshold, and empty sizes, as "not set": only a
            // non-zero threshold turns auto-extend on.
            if o.get("auto_extend_size_threshold")
                .is_some_and(|t| t.as_f64() == Some(0.0))
            {
                o.remove("auto_extend_size_threshold");
            }
            for key in ["auto_extend_size_increment", "auto_extend_size_limit"] {
                if o.get(key)
                    .is_some_and(|v| v.as_str() == Some("") || v.as_f64() == Some(0.0))
                {
                    o.remove(key);
                }
            }
            size_to_string(o, "initial_size");
            size_to_string(o, "auto_extend_size_increment");
            size_to_string(o, "auto_extend_size_limit");
        }
    }
    doc.insert("mounts".into(), Value::Array(all));
}

fn patch_metrics(doc: &mut Obj) {
    let mut all = Vec::new();
    for key in ["metric", "metrics"] {
        if let Some(v) = doc.remove(key) {
            all.extend(as_array(v));
        }
    }
    if !all.is_empty() {
        doc.insert("metrics".into(), Value::Array(all));
    }
}

fn patch_top_fields(doc: &mut Obj) {
    if let Some(Value::Number(n)) = doc.get("kill_timeout") {
        let secs = n.as_f64().unwrap_or(0.0).max(0.0).trunc() as u64;
        doc.insert("kill_timeout".into(), Value::String(format!("{secs}s")));
    }
}

fn patch_build(doc: &mut Obj) {
    let Some(Value::Object(mut build)) = doc.remove("build") else {
        return;
    };
    if let Some(t) = build.remove("build_target") {
        build.entry("build-target").or_insert(t);
    }
    if let Some(Value::Object(args)) = build.remove("args") {
        let args: Obj = args
            .into_iter()
            .map(|(k, v)| (k, Value::String(stringify(&v))))
            .collect();
        build.insert("args".into(), Value::Object(args));
    }
    if !build.is_empty() {
        doc.insert("build".into(), Value::Object(build));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patched(v: Value) -> Value {
        let Value::Object(mut o) = v else {
            panic!("not an object")
        };
        apply(&mut o).expect("patch");
        Value::Object(o)
    }

    #[test]
    fn legacy_shapes_become_current_ones() {
        let out = patched(json!({
            "env": [{"A": 2}, {"B": true, "A": "x"}],
            "processes": [{"name": "web", "command": "run web"}],
            "experimental": {"cmd": "serve", "kill_timeout": 3, "metrics_port": 9091, "metrics_path": "/m"},
            "services": [{"internal_port": "8080", "concurrency": "12,23",
                          "ports": [{"port": "80"}],
                          "http_checks": [{"interval": 10000, "timeout": "", "headers": [{"name": "X", "value": "y"}]}]},
                         {}],
            "vm": {"memory": 512},
            "mount": {"source": "data", "destination": "/data", "initial_size": 200},
            "checks": [{"name": "pg", "type": "http", "headers": []}],
            "build": {"build_target": "prod"}
        }));
        assert_eq!(out["env"], json!({"A": "x", "B": "true"}));
        assert_eq!(out["processes"], json!({"web": "run web"}));
        assert_eq!(out["experimental"], json!({"cmd": ["serve"]}));
        assert_eq!(out["kill_timeout"], json!("3s"));
        assert_eq!(out["metrics"], json!([{"port": 9091, "path": "/m"}]));
        let s = &out["services"];
        assert_eq!(s.as_array().map(Vec::len), Some(1), "empty service dropped");
        assert_eq!(s[0]["internal_port"], json!(8080));
        assert_eq!(
            s[0]["concurrency"],
            json!({"type": "requests", "soft_limit": 12, "hard_limit": 23})
        );
        assert_eq!(s[0]["ports"][0]["port"], json!(80));
        assert_eq!(s[0]["http_checks"][0]["interval"], json!("10000ms"));
        assert!(s[0]["http_checks"][0].get("timeout").is_none());
        assert_eq!(s[0]["http_checks"][0]["headers"], json!({"X": "y"}));
        assert_eq!(out["vm"], json!([{"memory": "512"}]));
        assert_eq!(out["mounts"][0]["initial_size"], json!("200"));
        assert_eq!(out["checks"], json!({"pg": {"type": "http"}}));
        assert_eq!(out["build"], json!({"build-target": "prod"}));
    }

    #[test]
    fn integer_concurrency_is_refused_with_go_wording() {
        let mut o = json!({"services": [{"concurrency": 20}]});
        let Some(o) = o.as_object_mut() else {
            panic!("object")
        };
        let e = apply(o).expect_err("must fail");
        assert!(e
            .message
            .contains("Unknown type for service concurrency: int64"));
        assert_eq!(e.path, "services[0].concurrency");
    }
}
