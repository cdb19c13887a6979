//! The Modbus output alert sink: a siren, beacon or relay on site, switched on while an alert of
//! a configured level holds it and off when none does, so the site is warned even when the
//! uplink to the bureau is down.
//!
//! Owns its configuration ([`config`]: device, coil or register, level, kinds, rules,
//! structures, re-assert interval), the wanted state computed from the set of active alerts
//! ([`holds`]) and the task that reads the spool's alerts stream and writes the state
//! ([`sink`]). It does not own the bus: writes go through the poller that owns the device's
//! connection ([`crate::sources::modbus::write`]), never a second connection.
//!
//! Use: validate a [`ModbusOutputConfig`] into a [`ResolvedModbusOutput`], check it against the
//! devices ([`config::check_device`]), open the spool with the sink's name registered for the
//! alerts stream, build a [`ModbusOutputSink`] with the gateway's [`BusWriters`] and spawn
//! [`ModbusOutputSink::run`].
//!
//! [`BusWriters`]: crate::sources::modbus::write::BusWriters

pub mod config;
pub mod holds;
pub mod sink;

pub use config::{AlertFilter, ModbusOutputConfig, Output, ResolvedModbusOutput};
pub use holds::Holds;
pub use sink::{ModbusOutputSink, SavedRules};
