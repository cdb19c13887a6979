//! System tests: the simulator, the gateway, a real mosquitto and a real VictoriaMetrics on
//! loopback, compared against the simulator's truth.
//!
//! - [`alerts`]: a curing pour that breaks the GB 50496 limit alerts the bureau, in order;
//!   a slope accelerating to failure escalates yellow → orange → red; faulty devices raise
//!   device-fault alerts and no quality alert.
//! - [`modbus_to_influx`]: Modbus TCP and RTU values and device times land exactly.
//! - [`mqtt_to_influx`]: JSON and CIGEM messages through mosquitto land exactly.
//! - [`names`]: ids with any printable character land under exactly those ids.
//! - [`restarts`]: a store outage and a gateway restart with a backlog lose nothing.
//! - [`spool_failures`]: a damaged spool file at start and a full disk: the gateway keeps
//!   collecting, keeps the damaged file aside and raises a device-fault alert.

mod alerts;
mod modbus_to_influx;
mod mqtt_to_influx;
mod names;
mod restarts;
mod spool_failures;
