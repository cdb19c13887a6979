//! The service manager's side of a running gateway: systemd's notify protocol for
//! `Type=notify` and `WatchdogSec=` (packaging/anju-gateway.service).
//!
//! Owns when each notification is sent:
//! - `READY=1` once start-up is through (spool open, broker and console listening, every task
//!   spawned), so `systemctl start` returns only then and a start-up failure is a failed start;
//! - `WATCHDOG=1` at half the watchdog period, and only when the engine's [`Heartbeat`] moved
//!   since the last one: an engine stuck in a commit that never returns, or a runtime whose
//!   threads are blocked, stops the keep-alives, and systemd kills and restarts the gateway;
//! - `RELOADING=1` (with `MONOTONIC_USEC`) when a config reload begins, `READY=1` when it is
//!   done, applied or refused (`crate::run`);
//! - `STOPPING=1` when the shutdown begins.
//!
//! It does not decide what alive means for the engine (the engine beats on its own tick), and
//! outside systemd (no `NOTIFY_SOCKET`, no `WATCHDOG_USEC`) it sends nothing.

use std::sync::Arc;
use std::time::Duration;

pub use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::engine::Heartbeat;

/// Sends notifications: systemd's socket in the gateway ([`notify`]), a recorder in tests.
pub type Notifier = fn(&[NotifyState<'_>]);

/// Send `states` to the service manager, if there is one. A failure is logged, never fatal: the
/// gateway's job does not depend on it (a missed `WATCHDOG=1` ends in a restart, which is what
/// the watchdog is for).
pub fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "Cannot notify the service manager (NOTIFY_SOCKET).");
    }
}

/// Tell the service manager a config reload begins: `RELOADING=1` with `MONOTONIC_USEC` (which
/// systemd 253 and later require with it, sd_notify(3)); `READY=1` follows when it is done,
/// applied or refused.
pub fn notify_reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(e) => {
            warn!(error = %e, "Cannot read the monotonic clock for RELOADING=1; sending it without.");
            notify(&[NotifyState::Reloading]);
        }
    }
}

/// How often to send `WATCHDOG=1`: half the period systemd asked for (`WATCHDOG_USEC`, as
/// sd_watchdog_enabled(3) advises), or `None` when there is no watchdog.
#[must_use]
pub fn keep_alive_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|period| period / 2)
}

/// Until `stop`: every `period`, send `WATCHDOG=1` through `send` if `heartbeat` moved since the
/// last look; if it did not, send nothing and say so, so that the journal shows why systemd is
/// about to restart the gateway.
pub async fn keep_alive(
    heartbeat: Arc<Heartbeat>,
    period: Duration,
    send: Notifier,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(period);
    // The first tick of `interval` is immediate; the engine has had no time to beat yet.
    ticker.tick().await;
    let mut seen = heartbeat.count();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = heartbeat.count();
        if now == seen {
            error!(
                waited = ?period,
                "The engine's loop has not turned; withholding the systemd watchdog keep-alive (systemd restarts the gateway when the watchdog period passes without one)."
            );
        } else {
            seen = now;
            send(&[NotifyState::Watchdog]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Keep-alives sent by [`record`] (one test in this module uses it).
    static SENT: AtomicUsize = AtomicUsize::new(0);

    fn record(states: &[NotifyState<'_>]) {
        let keep_alives = states
            .iter()
            .filter(|s| matches!(s, NotifyState::Watchdog))
            .count();
        SENT.fetch_add(keep_alives, Ordering::SeqCst);
    }

    /// Beat `heartbeat` every few milliseconds for `how_long`, as the engine's tick does.
    async fn turn(heartbeat: &Heartbeat, how_long: Duration) {
        let until = tokio::time::Instant::now() + how_long;
        while tokio::time::Instant::now() < until {
            heartbeat.beat();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn keep_alives_follow_the_heartbeat_and_stop_when_it_stops() {
        // Real time, short: the test asserts only what holds however late a tick comes.
        let period = Duration::from_millis(50);
        let heartbeat = Arc::new(Heartbeat::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(keep_alive(
            Arc::clone(&heartbeat),
            period,
            record,
            stop.clone(),
        ));
        turn(&heartbeat, Duration::from_millis(300)).await;
        assert!(
            SENT.load(Ordering::SeqCst) >= 1,
            "a turning engine earns keep-alives"
        );
        // Hung for nine periods: at most the one keep-alive the last beats earned (sent
        // unconditionally, there would be about nine).
        let at_hang = SENT.load(Ordering::SeqCst);
        tokio::time::sleep(period * 9).await;
        let after_hang = SENT.load(Ordering::SeqCst);
        assert!(
            after_hang - at_hang <= 1,
            "{} keep-alives while the engine did not turn",
            after_hang - at_hang
        );
        // Turning again: keep-alives again.
        turn(&heartbeat, Duration::from_millis(300)).await;
        assert!(SENT.load(Ordering::SeqCst) > after_hang);
        stop.cancel();
        task.await.expect("keep_alive ends when stopped");
    }
}
