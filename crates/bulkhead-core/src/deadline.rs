//! Deadlines: the moment by which a request or a run must be done, handed
//! down to every provider and tool call made for it, so that no call (and
//! no retry) outlives the work it is part of.

use std::time::{Duration, Instant};

/// A point on the monotonic clock by which some work must be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// `budget` from now.
    pub fn after(budget: Duration) -> Self {
        Self::at(now() + budget)
    }

    /// At `at`.
    pub fn at(at: Instant) -> Self {
        Self { at }
    }

    /// The instant itself.
    pub fn instant(self) -> Instant {
        self.at
    }

    /// Time left (zero once passed).
    pub fn remaining(self) -> Duration {
        self.at.saturating_duration_since(now())
    }

    /// Whether it has passed.
    pub fn expired(self) -> bool {
        self.remaining().is_zero()
    }

    /// The earlier of this and `other`.
    pub fn min(self, other: Option<Deadline>) -> Self {
        match other {
            Some(o) if o.at < self.at => o,
            _ => self,
        }
    }

    /// `limit`, cut to the time left before `deadline` when there is one.
    pub fn cap(deadline: Option<Deadline>, limit: Duration) -> Duration {
        deadline.map_or(limit, |d| d.remaining().min(limit))
    }
}

/// The monotonic clock: the one reading of it deadlines make.
#[expect(
    clippy::disallowed_methods,
    reason = "a deadline is a point on the monotonic clock; every domain crate's remaining-time checks read it here"
)]
fn now() -> Instant {
    Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_caps_limits_and_picks_the_earlier() {
        let soon = Deadline::after(Duration::from_millis(50));
        let later = Deadline::after(Duration::from_secs(60));
        assert_eq!(later.min(Some(soon)), soon);
        assert_eq!(soon.min(Some(later)), soon);
        assert_eq!(soon.min(None), soon);
        assert!(Deadline::cap(Some(soon), Duration::from_secs(60)) <= Duration::from_millis(50));
        assert_eq!(
            Deadline::cap(None, Duration::from_secs(60)),
            Duration::from_secs(60)
        );
        let past = Deadline::at(now() - Duration::from_millis(1));
        assert!(past.expired());
        assert_eq!(past.remaining(), Duration::ZERO);
        assert!(!later.expired());
    }
}
