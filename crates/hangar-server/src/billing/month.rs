//! Calendar months in UTC, as billing counts them: the month a moment falls in
//! (`YYYY-MM`), where a month begins and ends, and an interval split at month ends.

use time::{Date, Month, OffsetDateTime};

/// The month of `ms` (milliseconds since the epoch), as `YYYY-MM`.
pub fn of(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!("{:04}-{:02}", t.year(), u8::from(t.month()))
}

/// Parses `YYYY-MM`; an error saying what is expected.
pub fn parse(s: &str) -> Result<(i32, Month), String> {
    let bad = || format!("invalid month {s:?}: use YYYY-MM, e.g. 2026-12");
    let (y, m) = s.split_once('-').ok_or_else(bad)?;
    if y.len() != 4 || m.len() != 2 {
        return Err(bad());
    }
    let year: i32 = y.parse().map_err(|_| bad())?;
    let month = m
        .parse::<u8>()
        .ok()
        .and_then(|m| Month::try_from(m).ok())
        .ok_or_else(bad)?;
    Ok((year, month))
}

/// Where the month `(year, month)` begins, in milliseconds since the epoch.
pub fn start_ms(year: i32, month: Month) -> i64 {
    Date::from_calendar_date(year, month, 1)
        .map(|d| (d.midnight().assume_utc().unix_timestamp_nanos() / 1_000_000) as i64)
        .unwrap_or(0)
}

/// Where the month after the one `ms` falls in begins.
fn next_start_ms(ms: i64) -> i64 {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let (year, month) = match t.month() {
        Month::December => (t.year() + 1, Month::January),
        m => (t.year(), m.next()),
    };
    start_ms(year, month)
}

/// `[from, to)` cut at month ends: each month with the milliseconds in it.
pub fn split(from: i64, to: i64) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let mut at = from;
    while at < to {
        let end = next_start_ms(at).min(to);
        out.push((of(at), end - at));
        at = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_split_at_their_ends() {
        let dec = start_ms(2026, Month::December);
        let jan = start_ms(2027, Month::January);
        assert_eq!(of(dec), "2026-12");
        assert_eq!(of(jan - 1), "2026-12");
        assert_eq!(of(jan), "2027-01");
        assert_eq!(
            split(jan - 500, jan + 1500),
            vec![("2026-12".to_string(), 500), ("2027-01".to_string(), 1500)]
        );
        assert!(split(jan, jan).is_empty());
        assert_eq!(parse("2026-12"), Ok((2026, Month::December)));
        assert!(parse("2026-13").is_err() && parse("26-1").is_err() && parse("x").is_err());
    }
}
