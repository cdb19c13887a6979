//! Sources turn device data into [`Reading`]s and send them, in batches, to the engine.
//!
//! Owns the channel type between sources and the engine. Each source runs as its own task and
//! never blocks another: a slow Modbus slave delays only its own bus.

use tokio::sync::mpsc;

use crate::model::Reading;

pub mod modbus;
pub mod mqtt;

/// A batch of readings from one source. Batching keeps the engine's per-message overhead off
/// the per-reading path at MQTT rates of 100k readings/s.
pub type ReadingBatch = Vec<Reading>;

/// Sending half of the engine's input channel.
pub type ReadingTx = mpsc::Sender<ReadingBatch>;

/// Receiving half of the engine's input channel.
pub type ReadingRx = mpsc::Receiver<ReadingBatch>;

/// Capacity of the engine's input channel, in batches. When it is full, sources wait (MQTT
/// backpressure reaches the broker through the TCP window; a Modbus poll simply runs late).
pub const READING_CHANNEL_CAPACITY: usize = 256;
