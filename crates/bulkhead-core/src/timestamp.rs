//! UTC timestamps, serialised as RFC 3339.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A point in time, always UTC, with microsecond precision so that it
/// survives a round trip through text unchanged (hash chains depend on it).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// The current time.
    #[expect(
        clippy::disallowed_methods,
        reason = "the one sanctioned wall clock of the domain crates: every timestamp is read here"
    )]
    pub fn now() -> Self {
        Self::from_datetime(OffsetDateTime::now_utc())
    }

    /// Normalises to UTC and truncates to microseconds.
    pub fn from_datetime(dt: OffsetDateTime) -> Self {
        let dt = dt.to_offset(time::UtcOffset::UTC);
        let micros = dt.microsecond();
        Self(dt.replace_microsecond(micros).unwrap_or(dt))
    }

    /// Seconds since the Unix epoch.
    pub fn unix_seconds(self) -> i64 {
        self.0.unix_timestamp()
    }

    /// Microseconds since the Unix epoch (for ordered storage).
    pub fn unix_micros(self) -> i64 {
        (self.0.unix_timestamp_nanos() / 1000) as i64
    }

    /// The UTC calendar day, `YYYY-MM-DD`.
    pub fn day(self) -> String {
        let d = self.0.date();
        format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
    }

    /// Parses RFC 3339 text.
    pub fn parse(s: &str) -> Result<Self, time::error::Parse> {
        OffsetDateTime::parse(s, &Rfc3339).map(Self::from_datetime)
    }

    /// The UTC calendar month, `YYYY-MM`.
    pub fn month(self) -> String {
        let d = self.0.date();
        format!("{:04}-{:02}", d.year(), u8::from(d.month()))
    }

    /// Midnight UTC that starts this timestamp's day.
    pub fn start_of_day(self) -> Self {
        Self(self.0.replace_time(time::Time::MIDNIGHT))
    }

    /// Midnight UTC of the first day of this timestamp's month.
    pub fn start_of_month(self) -> Self {
        let day = self.start_of_day();
        Self(day.0 - time::Duration::days(i64::from(day.0.day()) - 1))
    }

    /// Midnight UTC that starts the next day.
    pub fn next_day(self) -> Self {
        Self(self.start_of_day().0 + time::Duration::days(1))
    }

    /// Midnight UTC of the first day of the next month.
    pub fn next_month(self) -> Self {
        let start = self.start_of_month().0;
        let days = start.month().length(start.year());
        Self(start + time::Duration::days(i64::from(days)))
    }

    /// The timestamp `seconds` later.
    pub fn plus_seconds(self, seconds: i64) -> Self {
        Self(self.0 + time::Duration::seconds(seconds))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.format(&Rfc3339) {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(|_| serde::de::Error::custom("expected an RFC 3339 timestamp"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_is_exact() {
        let t = Timestamp::now();
        assert_eq!(Timestamp::parse(&t.to_string()).unwrap(), t);
        let t = Timestamp::parse("2026-01-02T03:04:05.123456789+02:00").unwrap();
        assert_eq!(t.to_string(), "2026-01-02T01:04:05.123456Z");
        assert_eq!(t.day(), "2026-01-02");
        assert_eq!(t.unix_micros() % 1_000_000, 123_456);
    }

    #[test]
    fn period_boundaries_are_utc_days_and_months() {
        let t = Timestamp::parse("2028-02-29T23:59:59.5Z").unwrap();
        assert_eq!(t.month(), "2028-02");
        assert_eq!(t.start_of_day().to_string(), "2028-02-29T00:00:00Z");
        assert_eq!(t.next_day().to_string(), "2028-03-01T00:00:00Z");
        assert_eq!(t.start_of_month().to_string(), "2028-02-01T00:00:00Z");
        assert_eq!(t.next_month().to_string(), "2028-03-01T00:00:00Z");
        let dec = Timestamp::parse("2026-12-31T10:00:00Z").unwrap();
        assert_eq!(dec.next_month().to_string(), "2027-01-01T00:00:00Z");
    }
}
