//! Sources turn device data into [`Reading`]s and send them, in batches, to the engine.
//!
//! Owns the channel type between sources and the engine. Each source runs as its own task and
//! never blocks another: a slow Modbus slave delays only its own bus.

use tokio::sync::{mpsc, oneshot};

use crate::model::Reading;

pub mod modbus;
pub mod mqtt;

/// A batch of readings from one source. Batching keeps the engine's per-message overhead off
/// the per-reading path at MQTT rates of 100k readings/s.
#[derive(Debug, Default)]
pub struct ReadingBatch {
    /// The readings, in arrival order.
    pub readings: Vec<Reading>,
    /// Fired by the engine once every reading of the batch is committed to the spool, so that
    /// a source can acknowledge upstream (an MQTT PUBACK) only then: "acknowledged to nobody
    /// until committed" (docs/ARCHITECTURE.md §Invariants). Dropped unfired if the readings could
    /// not be committed; the source then does not acknowledge and the sender delivers again.
    pub on_commit: Option<oneshot::Sender<()>>,
}

impl From<Vec<Reading>> for ReadingBatch {
    fn from(readings: Vec<Reading>) -> Self {
        Self {
            readings,
            on_commit: None,
        }
    }
}

/// Sending half of the engine's input channel.
pub type ReadingTx = mpsc::Sender<ReadingBatch>;

/// Receiving half of the engine's input channel.
pub type ReadingRx = mpsc::Receiver<ReadingBatch>;

/// Capacity of the engine's input channel, in batches. When it is full, sources wait (MQTT
/// backpressure reaches the broker through the TCP window; a Modbus poll simply runs late).
pub const READING_CHANNEL_CAPACITY: usize = 256;
