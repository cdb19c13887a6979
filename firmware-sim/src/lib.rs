//! Simulated resettlement site: the gateway's test oracle.
//!
//! Serves Modbus TCP and RTU slaves and publishes MQTT sensor messages from a scenario file
//! (`config/sim/*.toml`), and records the TRUE values it served ([`Truth`]) so system tests can
//! compare what landed in the database. It shares only data with the gateway (the profile files
//! `config/profiles/*.toml`): its profile structs, register encoding, CRC and message formats
//! are its own, so a decoding bug in the gateway makes the tests fail instead of cancelling out.
//!
//! Where values come from: a scenario may declare physics models ([`physics`]: settlement,
//! curing, slope; pure functions of simulated time) and map device points onto their channels
//! through a sensor ([`sensor`]: gain, offset, seeded noise, resolution); unmapped points keep a
//! plausible random walk ([`signal`]). Scheduled faults ([`fault`]) then alter values, samples,
//! replies, serial bytes, payloads and clocks. The [`Truth`] records the served samples, the
//! true channel values and every fault window.
//!
//! Module map: [`scenario`] (file format) → [`site`] (start, ticks, fault schedule) →
//! [`device`] + [`tcp`] + [`rtu`] (Modbus), [`nodes`] + [`messages`] + [`mqtt`] (MQTT);
//! [`profile`] and [`encode`] (register maps), [`clock`], [`pty`], [`quantity`], [`truth`].
//!
//! Layers (a module imports only modules of the layers below it; no cycles):
//! 1. [`validation`] (error types and shared field checks), [`quantity`], [`truth`],
//!    [`clock`], [`messages`], [`pty`]: import nothing of the crate;
//! 2. [`physics`] (its models import only their kernels and [`validation`]), [`signal`],
//!    [`profile`], [`fault`], then [`sensor`] and [`encode`];
//! 3. [`scenario`]: the file format, built on the tables of layer 2;
//! 4. [`device`] and [`mqtt`], then [`nodes`], [`tcp`] and [`rtu`]: the running devices and
//!    transports, built from a validated [`Scenario`];
//! 5. [`site`]: starts and ticks all of them.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use firmware_sim::{ClockMode, Scenario, Site, StartOptions};
//! let scenario = Scenario::load("config/sim/basic.toml".as_ref())?;
//! let site = Site::start(&scenario, StartOptions { clock: ClockMode::Manual, ..Default::default() }).await?;
//! let addr = site.tcp_addr("lvl-1");
//! site.step();
//! let truth = site.truth().samples();
//! site.shutdown().await;
//! # Ok(()) }
//! ```

pub mod clock;
pub mod device;
pub mod encode;
pub mod fault;
pub mod messages;
pub mod mqtt;
pub mod nodes;
pub mod physics;
pub mod profile;
pub mod pty;
pub mod quantity;
pub mod rtu;
pub mod scenario;
pub mod sensor;
pub mod signal;
pub mod site;
pub mod tcp;
pub mod truth;
pub mod validation;

pub use clock::ClockMode;
pub use device::SampleStamp;
pub use pty::{PtyError, PtyPair};
pub use scenario::{Scenario, ScenarioError};
pub use site::{RtuEndpoint, RunningSite, Site, SiteError, StartOptions};
pub use truth::{ChannelSample, FaultKind, FaultRecord, TrueSample, Truth};
