//! System tests: the simulator, the gateway, a real mosquitto and a real VictoriaMetrics on
//! loopback, compared against the simulator's truth.
//!
//! - [`alerts`]: a curing pour that breaks the GB 50496 limit alerts the bureau, in order;
//!   a slope accelerating to failure escalates yellow → orange → red; faulty devices raise
//!   device-fault alerts and no quality alert; stuck and spiking readings are stored flagged.
//! - [`modbus_to_influx`]: Modbus TCP and RTU values and device times land exactly.
//! - [`modbus_holes`]: reads are re-planned around refused holes to the minimum per cycle.
//! - [`modbus_late_reply`]: an RTU slave answering after the timeout never gets its late answer
//!   stored as another request's value.
//! - [`console`]: `/metrics` counts exactly the readings sent (parsed by a Prometheus text
//!   parser); with an access token, requests without it get 401 and nothing else.
//! - [`console_browser`]: headless Chromium opens the overview, a device, a channel and the
//!   alert history of the simulated site: rows, curves and an alert checked against its truth.
//! - [`curing`]: the strength milestones of two pours (hyperbolic and logarithmic curves) are
//!   announced once each, within 1 h of the times the truth temperatures give.
//! - [`derived`]: settlement from levelling heads and tilt per pair of corners, derived by the
//!   gateway and stored as series, equal the truth across a restart (configured and established
//!   initial values); a pour's core − surface and cooling rate equal those of the truth.
//! - [`engineering`]: the benchmark's node message (kind and unit from the payload) lands.
//! - [`mqtt_to_influx`]: JSON and CIGEM messages through mosquitto land exactly.
//! - [`mqtt_robustness`]: a 5 MB message in the session, a barrage of malformed payloads and
//!   50,000 sensor ids never stop MQTT intake.
//! - [`names`]: ids with any printable character land under exactly those ids.
//! - [`slope`]: the slope-failure scenario's crack meter over CIGEM: the gateway's failure-time
//!   forecast raises its advisory once fewer than 72 h are forecast, and the tangent-angle alert
//!   climbs yellow → orange → red after the onset of acceleration, never orange or red before.
//! - [`reload`]: 20 config reloads (and one invalid file, refused) under 1,000 QoS 1 readings/s:
//!   every reading committed once and landed, the MQTT session never dropped, each change in
//!   force right after its reload; ten reloads that restart one Modbus bus and keep two miss
//!   no sample the simulator served.
//! - [`siren`]: a Modbus output alert sink switches the simulator's relay coil on with a red
//!   alert, keeps it on while a second alert holds it, releases it on 消警 and on the clear; a
//!   write the device refuses is counted and polling of the device goes on; after a restart the
//!   siren follows the saved active alerts; on an RS-485 line the writes go between the polls of
//!   the line without a late or mismatched reply.
//! - [`restarts`]: a store outage and a gateway restart with a backlog lose nothing.
//! - [`tls`]: MQTT over TLS (with a client certificate) from a real mosquitto and https to a
//!   real VictoriaMetrics, both with certificates of a CA made in the test: readings land
//!   exactly; without the client certificate, or trusting another CA, nothing is delivered and
//!   the refusals are counted; the embedded broker's TLS listener takes a node with the right
//!   password and refuses a wrong one.
//! - [`spool_failures`]: a damaged spool file at start and a full disk: the gateway keeps
//!   collecting, keeps the damaged file aside and raises a device-fault alert; a filling disk
//!   takes the console's local history first and no reading.

mod alerts;
mod console;
mod console_browser;
mod curing;
mod derived;
mod engineering;
mod modbus_holes;
mod modbus_late_reply;
mod modbus_to_influx;
mod mqtt_robustness;
mod mqtt_to_influx;
mod names;
mod reload;
mod restarts;
mod rtu_slave;
mod siren;
mod slope;
mod spool_failures;
mod tls;
