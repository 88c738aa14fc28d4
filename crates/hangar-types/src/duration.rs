//! Go `time.Duration` as Fly puts it on the wire: accepted as a duration string
//! (`"15s"`, `"1m0s"`, `"500ms"`, `"1h2m3.5s"`) or as a JSON number of nanoseconds,
//! and always emitted as Go formats it (`"1m0s"`).

use std::fmt;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A duration that reads and writes the way Go's `time.Duration` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct GoDuration(pub Duration);

/// What was wrong with a duration string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (use a Go duration such as \"10s\", \"1m30s\" or \"500ms\")")]
pub struct DurationError {
    pub input: String,
    pub reason: &'static str,
}

impl GoDuration {
    pub fn from_secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }

    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }

    /// Parses a Go duration string. A bare integer is taken as nanoseconds, as Go's JSON
    /// encoding of `time.Duration` does; negative durations are rejected.
    pub fn parse(input: &str) -> Result<Self, DurationError> {
        let err = |reason| DurationError {
            input: input.to_string(),
            reason,
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("empty"));
        }
        if s.starts_with('-') {
            return Err(err("negative durations are not allowed"));
        }
        let s = s.strip_prefix('+').unwrap_or(s);
        if s == "0" {
            return Ok(Self::default());
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            let ns: u64 = s.parse().map_err(|_| err("number out of range"))?;
            return Ok(Self(Duration::from_nanos(ns)));
        }
        let mut total: f64 = 0.0;
        let mut rest = s;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| err("missing unit"))?;
            if num_len == 0 {
                return Err(err("expected a number"));
            }
            let value: f64 = rest[..num_len].parse().map_err(|_| err("bad number"))?;
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let nanos_per_unit = match &rest[..unit_len] {
                "ns" => 1.0,
                "us" | "µs" | "μs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                _ => return Err(err("unknown unit")),
            };
            rest = &rest[unit_len..];
            total += value * nanos_per_unit;
        }
        if !total.is_finite() || total > u64::MAX as f64 {
            return Err(err("too large"));
        }
        Ok(Self(Duration::from_nanos(total.round() as u64)))
    }
}

impl fmt::Display for GoDuration {
    /// Formats like Go's `Duration.String()`: `0s`, `1.5s`, `1m0s`, `2h3m4s`, `500ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0.as_nanos();
        if ns == 0 {
            return f.write_str("0s");
        }
        if ns < 1_000 {
            return write!(f, "{ns}ns");
        }
        if ns < 1_000_000 {
            return write!(f, "{}µs", trim_fraction(ns, 1_000));
        }
        if ns < 1_000_000_000 {
            return write!(f, "{}ms", trim_fraction(ns, 1_000_000));
        }
        let hours = ns / 3_600_000_000_000;
        let minutes = (ns / 60_000_000_000) % 60;
        let secs = trim_fraction(ns % 60_000_000_000, 1_000_000_000);
        if hours > 0 {
            write!(f, "{hours}h{minutes}m{secs}s")
        } else if minutes > 0 {
            write!(f, "{minutes}m{secs}s")
        } else {
            write!(f, "{secs}s")
        }
    }
}

/// `value / unit` as a decimal with trailing zeros trimmed (`1500, 1000` → `1.5`).
fn trim_fraction(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = GoDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Go duration string such as \"10s\" or a number of nanoseconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GoDuration, E> {
                GoDuration::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<GoDuration, E> {
                Ok(GoDuration(Duration::from_nanos(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<GoDuration, E> {
                u64::try_from(v)
                    .map(|n| GoDuration(Duration::from_nanos(n)))
                    .map_err(|_| E::custom("negative durations are not allowed"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<GoDuration, E> {
                if v.is_finite() && v >= 0.0 && v < u64::MAX as f64 {
                    Ok(GoDuration(Duration::from_nanos(v as u64)))
                } else {
                    Err(E::custom("duration out of range"))
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_strings_and_nanoseconds() {
        let cases = [
            ("15s", 15_000),
            ("1m0s", 60_000),
            ("500ms", 500),
            ("1h2m3.5s", 3_723_500),
            ("0s", 0),
            ("0", 0),
            ("5000000000", 5_000),
        ];
        for (input, ms) in cases {
            assert_eq!(
                GoDuration::parse(input).unwrap().0.as_millis(),
                ms,
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_garbage_with_a_clear_message() {
        for bad in ["", "ten seconds", "5x", "-1s", "s", "1.2.3s"] {
            let e = GoDuration::parse(bad).unwrap_err();
            assert!(e.to_string().contains("invalid duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn formats_like_go() {
        let cases = [
            (0, "0s"),
            (1_500, "1.5s"),
            (60_000, "1m0s"),
            (7_384_000, "2h3m4s"),
            (500, "500ms"),
            (5_000, "5s"),
        ];
        for (ms, out) in cases {
            assert_eq!(GoDuration(Duration::from_millis(ms)).to_string(), out);
        }
    }

    #[test]
    fn json_accepts_both_encodings() {
        let a: GoDuration = serde_json::from_str("\"10s\"").unwrap();
        let b: GoDuration = serde_json::from_str("10000000000").unwrap();
        assert_eq!(a, b);
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"10s\"");
        assert!(serde_json::from_str::<GoDuration>("-5").is_err());
    }
}
