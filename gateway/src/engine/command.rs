//! Requests to the running engine from outside the reading path: acknowledging an alert (消警)
//! from the console, and notices made elsewhere (the daily report's summary) to deliver like
//! alert events.
//!
//! Owns the request and its answer. The engine takes requests in its own loop, between batches,
//! so an acknowledgement is ordered with the alert's other events and committed with the rule
//! state like them. Does not own the acknowledgement's rules (`rules::ack`) or the form that
//! sends it (the console).

use tokio::sync::{mpsc, oneshot};

use super::rules::AckRefused;
use crate::alert::Alert;

/// Requests waiting for the engine; a console sending more waits (the engine answers each
/// within one commit).
pub const COMMAND_CAPACITY: usize = 16;

/// Acknowledge the active alert `id` for `by` with `note`.
#[derive(Debug)]
pub struct AckRequest {
    /// The alert's id.
    pub id: String,
    /// Who acknowledges.
    pub by: String,
    /// Their note.
    pub note: String,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Acked, AckRefused>>,
}

/// An acknowledgement the engine took.
#[derive(Debug, Clone)]
pub struct Acked {
    /// The acknowledgement event.
    pub event: Alert,
    /// True when it is committed to the spool (and on its way to the alert sinks); false while
    /// the spool cannot be written: it is held with the other alerts and committed later.
    pub stored: bool,
}

/// The console's end.
pub type CommandTx = mpsc::Sender<AckRequest>;
/// The engine's end.
pub type CommandRx = mpsc::Receiver<AckRequest>;

/// A command channel.
#[must_use]
pub fn channel() -> (CommandTx, CommandRx) {
    mpsc::channel(COMMAND_CAPACITY)
}

/// Where notices made outside the engine go (the daily report's summary): the engine spools
/// each with the alerts, so every alert sink delivers it (WeCom, DingTalk, MQTT, InfluxDB).
pub type NoticeTx = mpsc::Sender<Alert>;
/// The engine's end of [`NoticeTx`].
pub type NoticeRx = mpsc::Receiver<Alert>;

/// A notice channel.
#[must_use]
pub fn notice_channel() -> (NoticeTx, NoticeRx) {
    mpsc::channel(COMMAND_CAPACITY)
}

/// The next message, or never when there is no channel or it closed.
pub(super) async fn next<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}
