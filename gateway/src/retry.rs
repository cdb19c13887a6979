//! Waiting between attempts: exponential [`Backoff`] and a sleep that ends early on shutdown.
//!
//! Owns the one backoff rule every reconnecting or redelivering task uses (the sinks, the MQTT
//! source): start at `initial`, double after every failure, never above `max`, back to
//! `initial` on success. It does not decide what counts as a failure or a success; the caller
//! does.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Exponential backoff between `initial` and `max` (doubling).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Start at `initial`; never wait longer than `max`.
    #[must_use]
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The wait before the next attempt; doubles up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        d
    }

    /// The wait the next failure would get, without consuming it.
    #[must_use]
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Back to `initial` after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Sleep for `delay` unless shut down first; false when shut down.
pub async fn sleep_or_shutdown(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_ceiling_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(3));
        let ms: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, [500, 1000, 2000, 3000, 3000]);
        assert_eq!(b.peek(), Duration::from_secs(3));
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(500));
    }

    #[tokio::test]
    async fn sleep_ends_early_on_shutdown() {
        let stop = CancellationToken::new();
        assert!(sleep_or_shutdown(Duration::from_millis(1), &stop).await);
        stop.cancel();
        // An hour-long wait that returns at all has ended early.
        let waited = tokio::time::timeout(
            Duration::from_secs(10),
            sleep_or_shutdown(Duration::from_secs(3600), &stop),
        )
        .await;
        assert_eq!(waited, Ok(false));
    }
}
