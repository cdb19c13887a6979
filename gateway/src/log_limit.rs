//! Bounded logging of repeated conditions: the first occurrence is logged, then at most one line
//! per key and interval, carrying how many were suppressed since.
//!
//! Owns [`LogLimiter`], used wherever one bad input could repeat a log line per message or per
//! reading (a malformed topic, a channel whose names cannot be written, a failing spool). It
//! does not count for metrics (the caller does that for every occurrence) and does not log.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Decides, per key, whether a repeated condition may be logged now.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    max_keys: usize,
    /// Key → (last line logged, occurrences suppressed since).
    keys: HashMap<String, (Instant, u64)>,
}

impl LogLimiter {
    /// At most one line per key per `interval`. At most `max_keys` keys are tracked: when more
    /// misbehave at once, lines about new keys are suppressed until old entries expire.
    #[must_use]
    pub fn new(interval: Duration, max_keys: usize) -> Self {
        Self {
            interval,
            max_keys: max_keys.max(1),
            keys: HashMap::new(),
        }
    }

    /// `Some(suppressed)` if a line about `key` may be logged now; `suppressed` is how many
    /// occurrences were not logged since the last line.
    pub fn allow(&mut self, key: &str) -> Option<u64> {
        self.allow_at(key, Instant::now())
    }

    fn allow_at(&mut self, key: &str, now: Instant) -> Option<u64> {
        if let Some((last, suppressed)) = self.keys.get_mut(key) {
            if now.saturating_duration_since(*last) >= self.interval {
                let n = *suppressed;
                *last = now;
                *suppressed = 0;
                return Some(n);
            }
            *suppressed += 1;
            return None;
        }
        if self.keys.len() >= self.max_keys {
            let interval = self.interval;
            self.keys
                .retain(|_, (last, _)| now.saturating_duration_since(*last) < interval);
            if self.keys.len() >= self.max_keys {
                return None;
            }
        }
        self.keys.insert(key.to_owned(), (now, 0));
        Some(0)
    }

    /// Forget `key`: its next occurrence is logged at once (the condition ended, e.g. the spool
    /// is writable again).
    pub fn reset(&mut self, key: &str) {
        self.keys.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_and_interval_with_the_suppressed_count() {
        let mut w = LogLimiter::new(Duration::from_secs(10), 16);
        let t0 = Instant::now();
        assert_eq!(w.allow_at("a", t0), Some(0));
        assert_eq!(w.allow_at("a", t0), None);
        assert_eq!(w.allow_at("a", t0 + Duration::from_secs(9)), None);
        assert_eq!(w.allow_at("b", t0), Some(0));
        assert_eq!(w.allow_at("a", t0 + Duration::from_secs(10)), Some(2));
        w.reset("a");
        assert_eq!(w.allow_at("a", t0 + Duration::from_secs(11)), Some(0));
    }

    #[test]
    fn keys_beyond_the_bound_are_suppressed_until_old_ones_expire() {
        let mut w = LogLimiter::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        assert_eq!(w.allow_at("a", t0), Some(0));
        assert_eq!(w.allow_at("b", t0), Some(0));
        assert_eq!(w.allow_at("c", t0), None);
        assert_eq!(w.allow_at("c", t0 + Duration::from_secs(10)), Some(0));
    }
}
