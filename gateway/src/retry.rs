//! Waiting between attempts: exponential [`Backoff`] and a sleep that ends early on shutdown.
//!
//! Owns the one backoff rule every reconnecting or redelivering task uses (the sinks, the MQTT
//! source): start at `initial`, double after every failure, never above `max`, back to
//! `initial` on success. For connections, "success" can be made to mean "stayed up for a
//! while" ([`Backoff::with_healthy_after`]): a connection that is accepted and then fails at
//! once (a message the client cannot take redelivered on every connect, a broker that kicks the
//! client after its ConnAck) would otherwise reset the wait on every ConnAck and retry every
//! `initial`, forever (issue 10 item 2). It does not decide what counts as a failure or a
//! success; the caller does.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Exponential backoff between `initial` and `max` (doubling).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    /// How long a connection must stay up before a failure starts again from `initial`.
    healthy_after: Duration,
    /// When the current connection came up ([`Backoff::connected_at`]).
    up_since: Option<Instant>,
}

impl Backoff {
    /// Start at `initial`; never wait longer than `max`.
    #[must_use]
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
            healthy_after: Duration::ZERO,
            up_since: None,
        }
    }

    /// Reset by [`Backoff::failed_at`] only when the connection had been up for at least
    /// `healthy_after`; a connection that fails sooner keeps doubling the wait.
    #[must_use]
    pub fn with_healthy_after(mut self, healthy_after: Duration) -> Self {
        self.healthy_after = healthy_after;
        self
    }

    /// A connection came up at `now`. Does not reset the wait by itself: see
    /// [`Backoff::failed_at`].
    pub fn connected_at(&mut self, now: Instant) {
        self.up_since = Some(now);
    }

    /// The connection failed (or could not be made) at `now`: the wait before the next
    /// attempt. Starts again from `initial` if the connection that just failed had stayed up for
    /// `healthy_after`; otherwise keeps doubling.
    pub fn failed_at(&mut self, now: Instant) -> Duration {
        if let Some(up) = self.up_since.take() {
            if now.saturating_duration_since(up) >= self.healthy_after {
                self.reset();
            }
        }
        self.next_delay()
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

    #[test]
    fn a_connection_that_fails_soon_after_connecting_does_not_reset_the_wait() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(5))
            .with_healthy_after(Duration::from_secs(10));
        let t0 = Instant::now();
        let mut waits = Vec::new();
        let mut t = t0;
        // Connected, then dropped 100 ms later (the broker redelivers what kills the link).
        for _ in 0..6 {
            b.connected_at(t);
            t += Duration::from_millis(100);
            let d = b.failed_at(t);
            waits.push(d.as_millis());
            t += d;
        }
        assert_eq!(waits, [500, 1000, 2000, 4000, 5000, 5000]);
        // Failing to connect at all also keeps doubling (no `connected_at`).
        assert_eq!(b.failed_at(t), Duration::from_secs(5));
        // A connection that stayed up for the healthy period starts again from the beginning.
        b.connected_at(t);
        assert_eq!(
            b.failed_at(t + Duration::from_secs(10)),
            Duration::from_millis(500)
        );
        assert_eq!(b.failed_at(t), Duration::from_secs(1));
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
