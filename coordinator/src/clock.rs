//! Time: the wall clock in milliseconds, and the two text forms the database
//! uses (Optuna's naive-UTC datetimes, and RFC 3339 for our own tables).
//!
//! Lease expiries are wall-clock milliseconds so that they survive a restart;
//! see `study::Coordinator::open` for how leases are reconciled then.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

/// Milliseconds since the Unix epoch, now, from the system clock.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The coordinator's time: the system clock read once, when the coordinator
/// opens, and advanced by the monotonic clock from then on. A step of the
/// system clock (NTP correcting a VM after a resume, an operator's `date`)
/// then neither expires every lease at once nor stretches them; a restart
/// reads the system clock again.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start_ms: i64,
    start: std::time::Instant,
}

impl Clock {
    /// A clock starting at the system clock's time now.
    pub fn start() -> Clock {
        Clock { start_ms: now_ms(), start: std::time::Instant::now() }
    }

    /// Milliseconds since the Unix epoch, now, by this clock.
    pub fn now_ms(&self) -> i64 {
        let elapsed = i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.start_ms.saturating_add(elapsed)
    }
}

/// Optuna's `DateTime` column text: naive UTC with microseconds,
/// e.g. `2026-11-26 05:29:18.361975` (what SQLAlchemy writes for SQLite).
pub fn optuna_datetime(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        None => "1970-01-01 00:00:00.000000".to_string(),
    }
}

/// Parses Optuna's datetime text (with or without fractional seconds) to ms.
pub fn parse_optuna_datetime(s: &str) -> Option<i64> {
    let s = s.trim();
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f"))
        .ok()
        .map(|n| n.and_utc().timestamp_millis())
}

/// RFC 3339 text with milliseconds, UTC (our own tables).
pub fn rfc3339(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => String::new(),
    }
}

/// Parses RFC 3339 text to ms.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis())
}

/// A protobuf timestamp for `ms`.
pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optuna_format_round_trips() {
        let ms = 1_795_000_000_123;
        let s = optuna_datetime(ms);
        assert_eq!(s.len(), "2026-11-26 05:29:18.361975".len());
        assert_eq!(parse_optuna_datetime(&s), Some(ms));
        assert_eq!(parse_optuna_datetime("2026-11-26 05:29:18"), Some(parse_optuna_datetime("2026-11-26 05:29:18.000").unwrap_or(0)));
        assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        let t = timestamp(-1);
        assert_eq!((t.seconds, t.nanos), (-1, 999_000_000));
    }

    #[test]
    fn the_clock_starts_at_the_system_time_and_never_goes_back() {
        let c = Clock::start();
        let a = c.now_ms();
        assert!((a - now_ms()).abs() < 1_000, "starts at the system clock");
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = c.now_ms();
        assert!(b >= a + 20, "advances with the monotonic clock: {a} -> {b}");
    }
}
