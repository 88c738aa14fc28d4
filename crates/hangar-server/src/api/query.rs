//! Query strings as Fly clients write them: repeated keys (`state=a&state=b`),
//! comma-separated lists, `metadata.KEY=VALUE` filters, and booleans spelled any way
//! Go's `strconv.ParseBool` takes.

use axum::extract::{FromRequestParts, RawQuery};
use axum::http::request::Parts;

use super::ApiError;

/// The decoded query pairs of a request, in order.
#[derive(Debug, Default, Clone)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn parse(raw: &str) -> Params {
        Params(
            form_urlencoded::parse(raw.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The last value given for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value given for `key`, in order, as given.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Every value for `key`, comma-separated values split, empty ones dropped.
    pub fn list(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| v.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// A boolean flag; absent is `false`, a bare `?force` is `true`.
    pub fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(false),
            Some(v) => parse_bool(v).ok_or_else(|| {
                ApiError::invalid(format!("{key} must be true or false, got {v:?}"))
            }),
        }
    }

    /// `metadata.KEY=VALUE` pairs.
    pub fn prefixed(&self, prefix: &str) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
            .collect()
    }
}

pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "" | "1" | "t" | "true" | "yes" => Some(true),
        "0" | "f" | "false" | "no" => Some(false),
        _ => None,
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let RawQuery(raw) = RawQuery::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(Params::parse(raw.as_deref().unwrap_or("")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_and_comma_separated() {
        let p = Params::parse("state=stopped&state=suspended,started&metadata.role=web&kill=");
        assert_eq!(p.list("state"), vec!["stopped", "suspended", "started"]);
        assert_eq!(
            p.prefixed("metadata."),
            vec![("role".to_string(), "web".to_string())]
        );
        assert!(p.flag("kill").unwrap());
        assert!(!p.flag("force").unwrap());
        assert!(Params::parse("force=maybe").flag("force").is_err());
    }
}
