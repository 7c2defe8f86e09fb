//! Deadlines: one rule for every timeout of the crates above.
//!
//! A call with a timeout computes its deadline once, on entry ([`after`]), and every wait inside
//! it waits for what is [`left`]: a call that retries (a spurious wake-up, a slice of a sliced
//! wait) never waits longer in total than it was asked to. A timeout so large that `now + timeout`
//! overflows `Instant` means no deadline (`None`: wait as long as needed), the same as the
//! timeout-free call.

use std::time::{Duration, Instant};

/// The deadline `timeout` from now; `None` (no deadline) when that overflows `Instant`.
#[inline]
pub fn after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// The deadline `timeout` from now for code that needs an `Instant`: a timeout that overflows
/// `Instant` gives a deadline about a century away (no panic, and in practice no deadline).
#[inline]
pub fn saturating_after(timeout: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(CENTURY))
        .unwrap_or(now)
}

/// The time left until `deadline`: zero once it has passed.
#[inline]
pub fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// The time left until `deadline`, or `None` once it has passed (for loops that stop there).
#[inline]
pub fn left_nonzero(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_is_no_deadline_and_a_passed_deadline_leaves_nothing() {
        assert_eq!(after(Duration::MAX), None);
        assert!(
            saturating_after(Duration::MAX) > Instant::now() + Duration::from_secs(3600 * 24 * 365)
        );
        let soon = saturating_after(Duration::from_millis(5));
        assert!(soon <= Instant::now() + Duration::from_millis(5));
        let d = after(Duration::from_secs(60)).unwrap();
        assert!(left(d) > Duration::from_secs(59) && left(d) <= Duration::from_secs(60));
        assert!(left_nonzero(d).is_some());
        let past = Instant::now();
        std::thread::sleep(Duration::from_millis(1));
        assert_eq!(left(past), Duration::ZERO);
        assert_eq!(left_nonzero(past), None);
    }
}
