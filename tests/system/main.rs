//! System tests: the simulator, the gateway, a real mosquitto and a real VictoriaMetrics on
//! loopback, compared against the simulator's truth.
//!
//! - [`modbus_to_influx`]: Modbus TCP and RTU values and device times land exactly.

mod modbus_to_influx;
