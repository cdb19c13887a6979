//! Sinks deliver what the spool holds to the outside world.
//!
//! Owns the sink implementations. A sink reads a batch from the spool, delivers it, and only
//! then advances its own cursor; it never deletes what the receiver has not accepted.

pub mod influxdb;
