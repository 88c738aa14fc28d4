//! The `fly-replay` response header: `;`-separated `key=value` pairs (values with
//! commas quoted) that tell the proxy to deliver the original request again — to
//! another region, machine or app. Parsing only; `http` carries the replays out.

/// A parsed `fly-replay` header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    pub regions: Vec<String>,
    pub instance: Option<String>,
    pub prefer_instance: Option<String>,
    pub app: Option<String>,
    pub state: Option<String>,
    pub elsewhere: bool,
}

/// Fly's limit on replays of one request.
pub const MAX_REPLAYS: usize = 10;

/// Splits on `;` outside double quotes.
fn fields(header: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in header.chars() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Parses a `fly-replay` value; the error says which part is wrong.
pub fn parse(header: &str) -> Result<Replay, String> {
    let mut r = Replay::default();
    for field in fields(header) {
        let field = field.trim();
        if field.is_empty() {
            continue;
        }
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| format!("{field:?} is not key=value"))?;
        let value = value.trim().to_string();
        match key.trim().to_ascii_lowercase().as_str() {
            "region" => {
                r.regions = value
                    .split(',')
                    .map(|s| s.trim().to_ascii_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect();
            }
            "instance" => r.instance = Some(value),
            "prefer_instance" => r.prefer_instance = Some(value),
            "app" => r.app = Some(value),
            "state" => r.state = Some(value),
            "elsewhere" => r.elsewhere = value.eq_ignore_ascii_case("true"),
            // Bounds and fallbacks are accepted; every replay here is bounded by the
            // proxy's own start wait.
            "timeout" | "fallback" => {}
            other => return Err(format!("unknown field {other:?}")),
        }
    }
    if r.regions.is_empty()
        && r.instance.is_none()
        && r.prefer_instance.is_none()
        && r.app.is_none()
        && !r.elsewhere
    {
        return Err("names no region, instance, app or elsewhere".into());
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fly_examples() {
        assert_eq!(
            parse("region=sjc").map(|r| r.regions),
            Ok(vec!["sjc".to_string()])
        );
        let r = parse(r#"region="sjc,any";app=target-app"#).expect("valid");
        assert_eq!(r.regions, vec!["sjc", "any"]);
        assert_eq!(r.app.as_deref(), Some("target-app"));
        let r = parse("instance=00bb33ff;state=abc").expect("valid");
        assert_eq!(r.instance.as_deref(), Some("00bb33ff"));
        assert_eq!(r.state.as_deref(), Some("abc"));
        assert!(parse("elsewhere=true").expect("valid").elsewhere);
        assert!(parse("app=my-worker;timeout=10s;fallback=force_self").is_ok());
        assert!(parse("nonsense").is_err());
        assert!(parse("colour=blue").is_err());
        assert!(parse("state=only").is_err());
    }
}
