//! Modbus sources: TCP, RTU on a serial port, and RTU over TCP.
//!
//! Owns the register-map config ([`config`]), value decoding ([`decode`]), read planning
//! ([`plan`]), RTU framing ([`rtu_frame`]) and exchanges ([`rtu_link`]), and the per-bus
//! [`poller`], and writes ([`write`]) carried into the poller that owns the device's bus. One poller task per bus: devices on one serial line
//! (or behind one serial device server) are polled one at a time, separate buses in parallel.

pub mod config;
pub mod decode;
pub mod plan;
pub mod poller;
pub mod rtu_frame;
pub mod rtu_link;
pub mod write;
