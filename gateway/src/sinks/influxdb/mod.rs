//! The InfluxDB v2 sink: delivers the spool's points stream to the central store (InfluxDB v2,
//! or VictoriaMetrics through its InfluxDB-compatible `/api/v2/write`).
//!
//! Owns the sink's configuration ([`config`]) and the delivery task ([`sink`]). The records it
//! sends are line protocol already ([`crate::record`]). It does not own the data: the spool keeps every batch until this sink
//! has a 204 for it, and keeps refused batches as dead letters.
//!
//! Use: validate an [`InfluxSinkConfig`] into a [`ResolvedInflux`], open the spool with the
//! sink's name registered, build an [`InfluxSink`] and spawn [`InfluxSink::run`].

pub mod config;
pub mod sink;

pub use config::{InfluxSinkConfig, ResolvedInflux};
pub use sink::{classify, InfluxSink, InfluxSinkError};
