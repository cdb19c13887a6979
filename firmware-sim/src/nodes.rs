//! The simulated MQTT sensor nodes: JSON nodes and CIGEM universal geo-hazard devices.
//!
//! Owns what each node sends at a sample tick: the values (a physics channel through its sensor
//! when the scenario maps one, else the default series of [`crate::signal`]; rounded to the
//! node's resolution), the payload ([`crate::messages`]), the topic, the truth entries carrying
//! exactly the numbers written into the JSON, and the node's scheduled faults ([`crate::fault`]):
//! value faults, dropped ticks, a skewed clock, malformed and oversized payloads, CIGEM
//! `sensor_state` flags. It does not connect to a broker ([`crate::mqtt`]); going offline and the
//! last will are the site's ([`crate::site`]).
//!
//! Malformed payloads cycle through three shapes a real node produces, by sample index:
//! JSON cut off halfway (a radio frame lost), a non-JSON firmware log line, and well-formed JSON
//! with an unusable value (a JSON node's `readings` not an array / a string value; a CIGEM
//! timestamp that is no date). Oversized payloads are valid JSON padded with a `"pad"` string to
//! the fault's size; a CIGEM one wraps its 16-bit length field, as a firmware that never checks
//! would.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::clock::Tick;
use crate::fault::{faulted_value, Action, FaultSpec, DEFAULT_CIGEM_STATE};
use crate::messages::{
    cigem_data_json, cigem_frame, cigem_status_json, iso8601_ms, json_batch, json_single, round_to,
    CigemStatus, CigemType, CigemValue, Reading, CIGEM_HEADER_LEN,
};
use crate::mqtt::Outgoing;
use crate::physics::Physics;
use crate::quantity::{Behaviour, Quantity, Range, Wander};
use crate::scenario::{CigemDevice, CigemKind, JsonNode, MessageForm};
use crate::sensor::Reader;
use crate::signal::{series_id, splitmix64, uniform, Series};
use crate::truth::TrueSample;

/// Nanoseconds per millisecond.
const NANOS_PER_MS: i64 = 1_000_000;
/// Milliseconds per second.
const MS_PER_S: i64 = 1000;
/// A JSON node stamps its reading up to this many ms before the tick (it measures, then sends).
const MAX_STAMP_LEAD_MS: u64 = 1000;
/// Tipping-bucket resolution of the simulated rain gauge, in tenths of a mm (0.2 mm).
const RAIN_TIP_TENTHS: u64 = 2;
/// One tip of the rain gauge, mm.
const RAIN_TIP_MM: f64 = 0.2;
/// Most tips in one sample during a storm (2 mm per sample at 0.2 mm a tip, far below the
/// 50 mm/sample spike limit of docs/DOMAIN.md §Data quality).
const MAX_TIPS_PER_SAMPLE: f64 = 10.0;
/// Decimals of CIGEM data values (the platform examples carry two).
const CIGEM_DECIMALS: u8 = 2;
/// Decimals of the CIGEM solar voltage (`6.185` in the platform example).
const SOLAR_DECIMALS: u8 = 3;
/// The CIGEM status object's id.
pub const STATUS_POINT: &str = "S1_ZT_1";
/// The CIGEM firmware's error sentinel (`cigemPacket.h`, docs/DOMAIN.md §CIGEM): a point in error
/// carries it instead of a value.
pub const CIGEM_ERROR_SENTINEL: f64 = -4321.0;
/// Series-name suffix of a node's dropout draws.
const DROPOUT_SERIES: &str = "#dropout";
/// A non-JSON payload: what a firmware prints to its uplink when its sensor bus hangs.
const NOT_JSON: &[u8] = b"\xff\xfe\x00ERR sensor bus timeout\r\n";
/// A timestamp that is no date (month 13, hour 25).
const BAD_TIMESTAMP: &str = "2026-13-45T25:61:61.000Z";
/// Number of malformed shapes cycled through.
const MALFORMED_SHAPES: u64 = 3;

/// Li-cell voltage → charge, from one CIGEM firmware (docs/DOMAIN.md §Data quality): (V, %).
const LI_CURVE: [(f64, f64); 5] = [
    (2.83, 0.0),
    (3.12, 8.0),
    (3.20, 40.0),
    (3.30, 94.0),
    (3.40, 100.0),
];

/// Battery charge in % by linear interpolation on `LI_CURVE`.
#[must_use]
pub fn battery_percent(volt: f64) -> i64 {
    let mut pct = LI_CURVE[LI_CURVE.len() - 1].1;
    if volt <= LI_CURVE[0].0 {
        pct = 0.0;
    } else {
        for w in LI_CURVE.windows(2) {
            let ((v0, p0), (v1, p1)) = (w[0], w[1]);
            if volt <= v1 {
                pct = p0 + (volt - v0) / (v1 - v0) * (p1 - p0);
                break;
            }
        }
    }
    // 0-100 by construction.
    #[allow(clippy::cast_possible_truncation)]
    let pct = pct.round() as i64;
    pct
}

/// The ms a reading is stamped before its tick, fixed per (seed, node, sensor, tick).
fn stamp_lead_ms(seed: u64, node: &str, sensor: &str, k: u64) -> i64 {
    let lead = splitmix64(series_id(seed, node, sensor) ^ k) % MAX_STAMP_LEAD_MS;
    i64::try_from(lead).unwrap_or(0)
}

/// Everything a node needs besides its own table.
#[derive(Debug, Clone)]
pub struct NodeSetup {
    /// Scenario seed.
    pub seed: u64,
    /// Site name (topics).
    pub site: String,
    /// The scenario's physics.
    pub physics: Arc<Physics>,
    /// Seconds between samples.
    pub interval_s: i64,
    /// The scenario's faults aimed at this node.
    pub faults: Vec<FaultSpec>,
}

impl NodeSetup {
    /// No physics, no faults.
    #[must_use]
    pub fn plain(seed: u64, site: &str) -> Self {
        Self {
            seed,
            site: site.to_owned(),
            physics: Arc::new(Physics::default()),
            interval_s: 1,
            faults: Vec::new(),
        }
    }
}

/// A value source of a node.
#[derive(Debug)]
enum Gen {
    Series(Series),
    Channel(Reader),
}

/// How a payload is spoiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spoil {
    Malformed,
    Oversized(usize),
}

/// A node's faults and the decisions made from them.
#[derive(Debug)]
struct NodeFaults {
    faults: Vec<FaultSpec>,
    dropout_id: u64,
    interval_s: i64,
    physics: Arc<Physics>,
}

impl NodeFaults {
    fn new(name: &str, setup: &NodeSetup) -> Self {
        Self {
            faults: setup.faults.clone(),
            dropout_id: series_id(setup.seed, name, DROPOUT_SERIES),
            interval_s: setup.interval_s.max(1),
            physics: Arc::clone(&setup.physics),
        }
    }

    fn active(&self, tick: Tick) -> impl Iterator<Item = &FaultSpec> {
        self.faults.iter().filter(move |f| f.active_at(tick.rel_s))
    }

    fn dropped(&self, tick: Tick) -> bool {
        self.active(tick).any(|f| match f.action {
            Action::Dropout { probability } => uniform(self.dropout_id, tick.index) < probability,
            _ => false,
        })
    }

    fn skew_ms(&self, tick: Tick) -> i64 {
        self.active(tick)
            .map(|f| match f.action {
                Action::ClockSkew { offset_s } => offset_s.saturating_mul(MS_PER_S),
                _ => 0,
            })
            .sum()
    }

    fn spoil(&self, tick: Tick) -> Option<Spoil> {
        self.active(tick).find_map(|f| match f.action {
            Action::Malformed => Some(Spoil::Malformed),
            Action::Oversized { bytes } => Some(Spoil::Oversized(bytes)),
            _ => None,
        })
    }

    /// The CIGEM `sensor_state` flagged on `point` now, if any.
    fn flag(&self, tick: Tick, point: &str) -> Option<i64> {
        self.active(tick).find_map(|f| match f.action {
            Action::StatusFlag { state } if f.applies_to(point) => {
                Some(state.unwrap_or(DEFAULT_CIGEM_STATE))
            }
            _ => None,
        })
    }

    /// The value of `point` from `gen` at `tick`, value faults applied.
    fn value(&self, gen: &Gen, point: &str, tick: Tick) -> f64 {
        let reading = |k: u64| match gen {
            Gen::Series(s) => s.value(k),
            Gen::Channel(r) => {
                let t_s = i64::try_from(k)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(self.interval_s);
                #[allow(clippy::cast_precision_loss)] // seconds since the start ≪ 2^53
                let t = t_s as f64;
                r.value(&self.physics, k, t)
            }
        };
        let value_faults = self.faults.iter().filter(|f| {
            matches!(
                f.action,
                Action::Stuck | Action::Spike { .. } | Action::Drift { .. }
            ) && f.applies_to(point)
        });
        faulted_value(
            value_faults,
            tick.index,
            tick.rel_s,
            self.interval_s,
            &reading,
        )
    }
}

/// Pads a JSON object text with `"pad":"xx…"` so it is at least `bytes` long.
fn pad_json(json: &str, bytes: usize) -> String {
    let body = json.strip_suffix('}').unwrap_or(json);
    let overhead = body.len() + ",\"pad\":\"\"}".len();
    format!(
        "{body},\"pad\":\"{}\"}}",
        "x".repeat(bytes.saturating_sub(overhead))
    )
}

/// A CIGEM frame whose length field wraps at 16 bits, as a firmware that never checks sends it.
fn wrapped_cigem_frame(kind: CigemType, json: &str) -> Vec<u8> {
    let len = json.len().to_be_bytes();
    let mut out = Vec::with_capacity(CIGEM_HEADER_LEN + json.len());
    out.push(kind.byte());
    // The two low bytes of the length, big-endian.
    out.extend_from_slice(&len[len.len() - 2..]);
    out.extend_from_slice(json.as_bytes());
    out
}

/// A JSON node.
#[derive(Debug)]
pub struct JsonNodeSim {
    node: JsonNode,
    site: String,
    seed: u64,
    gens: Vec<Gen>,
    faults: NodeFaults,
    online: AtomicBool,
}

impl JsonNodeSim {
    /// The node of a scenario, without physics or faults.
    #[must_use]
    pub fn new(node: &JsonNode, site: &str, seed: u64) -> Self {
        Self::build(node, &NodeSetup::plain(seed, site))
    }

    /// The node of a scenario with its physics and faults.
    #[must_use]
    pub fn build(node: &JsonNode, setup: &NodeSetup) -> Self {
        let gens = node
            .sensors
            .iter()
            .map(|s| match &s.channel {
                Some(map) => Gen::Channel(Reader::new(map.clone(), setup.seed, &node.name, &s.id)),
                None => Gen::Series(Series::new(
                    setup.seed,
                    &node.name,
                    &s.id,
                    s.quantity.behaviour(),
                )),
            })
            .collect();
        Self {
            node: node.clone(),
            site: setup.site.clone(),
            seed: setup.seed,
            gens,
            faults: NodeFaults::new(&node.name, setup),
            online: AtomicBool::new(true),
        }
    }

    /// Node name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.node.name
    }

    /// True if the node has a last will (and so a connection of its own).
    #[must_use]
    pub fn has_will(&self) -> bool {
        self.node.will.is_some()
    }

    /// Sets whether the node publishes; returns the previous state.
    pub fn set_online(&self, online: bool) -> bool {
        self.online.swap(online, Ordering::SeqCst)
    }

    /// A malformed rendering of a message (shape chosen by the sample index).
    fn malformed(&self, k: u64, good: &[u8], sensor: Option<&str>, ms: i64) -> Vec<u8> {
        match k % MALFORMED_SHAPES {
            0 => good[..good.len() / 2].to_vec(),
            1 => NOT_JSON.to_vec(),
            _ => match sensor {
                None => format!(
                    "{{\"ts\":\"{}\",\"readings\":{{\"sensor\":\"?\"}}}}",
                    iso8601_ms(ms)
                )
                .into_bytes(),
                Some(s) => {
                    format!("{{\"sensor\":\"{s}\",\"value\":\"--\",\"ts\":{ms}}}").into_bytes()
                }
            },
        }
    }

    /// Applies a payload fault to `msg`: the payload is replaced and carries no truth.
    fn spoiled(
        &self,
        spoil: Option<Spoil>,
        k: u64,
        mut msg: Outgoing,
        sensor: Option<&str>,
        ms: i64,
    ) -> Outgoing {
        match spoil {
            None => return msg,
            Some(Spoil::Malformed) => msg.payload = self.malformed(k, &msg.payload, sensor, ms),
            Some(Spoil::Oversized(bytes)) => {
                let text = String::from_utf8_lossy(&msg.payload).into_owned();
                msg.payload = pad_json(&text, bytes).into_bytes();
            }
        }
        msg.truth.clear();
        msg
    }

    /// The messages of `tick` (none when offline, not a publishing tick, or dropped).
    #[must_use]
    pub fn messages(&self, tick: Tick) -> Vec<Outgoing> {
        let k = tick.index;
        if !self.online.load(Ordering::SeqCst) || !k.is_multiple_of(u64::from(self.node.every)) {
            return Vec::new();
        }
        if self.faults.dropped(tick) {
            return Vec::new();
        }
        let tick_ms = tick.unix_s.saturating_mul(MS_PER_S) + self.faults.skew_ms(tick);
        let spoil = self.faults.spoil(tick);
        let values: Vec<f64> = self
            .node
            .sensors
            .iter()
            .zip(&self.gens)
            .map(|(s, g)| round_to(self.faults.value(g, &s.id, tick), s.decimals))
            .collect();
        let truth = |sensor: &str, ms: i64, value: f64| TrueSample {
            device: self.node.name.clone(),
            point: sensor.to_owned(),
            ts_ns: ms.saturating_mul(NANOS_PER_MS),
            value,
        };
        match self.node.message {
            MessageForm::Batch => {
                let ms = tick_ms - stamp_lead_ms(self.seed, &self.node.name, "", k);
                let readings: Vec<Reading<'_>> = self
                    .node
                    .sensors
                    .iter()
                    .zip(&values)
                    .map(|(s, &value)| Reading {
                        sensor: &s.id,
                        value,
                        unit: &s.unit,
                    })
                    .collect();
                let msg = Outgoing {
                    topic: self.node.topic_for(&self.site, None),
                    payload: json_batch(ms, &readings).into_bytes(),
                    truth: readings
                        .iter()
                        .map(|r| truth(r.sensor, ms, r.value))
                        .collect(),
                };
                vec![self.spoiled(spoil, k, msg, None, ms)]
            }
            MessageForm::Single => self
                .node
                .sensors
                .iter()
                .zip(&values)
                .map(|(s, &value)| {
                    let ms = tick_ms - stamp_lead_ms(self.seed, &self.node.name, &s.id, k);
                    let msg = Outgoing {
                        topic: self.node.topic_for(&self.site, Some(&s.id)),
                        payload: json_single(&s.id, value, ms).into_bytes(),
                        truth: vec![truth(&s.id, ms, value)],
                    };
                    self.spoiled(spoil, k, msg, Some(&s.id), ms)
                })
                .collect(),
        }
    }
}

/// An analogue behaviour with the given base range and limits, small drift and noise.
const fn wander(base: Range, noise: f64, limits: Range) -> Behaviour {
    Behaviour::Wander(Wander {
        base,
        drift: Range {
            lo: -0.000_5,
            hi: 0.000_5,
        },
        amplitude: Range {
            lo: 0.005,
            hi: 0.05,
        },
        period: Range {
            lo: 60.0,
            hi: 600.0,
        },
        noise,
        limits,
    })
}

/// Default behaviours of the fields of a CIGEM point kind (docs/DOMAIN.md §CIGEM). Empty = scalar,
/// whose behaviour is the second element.
fn kind_fields(kind: CigemKind) -> (Vec<(&'static str, Behaviour)>, Behaviour) {
    /// CIGEM tilt angles are absolute, −90…90°.
    const TILT_LIMITS: Range = Range {
        lo: -90.0,
        hi: 90.0,
    };
    let scalar = |q: Quantity| (Vec::new(), q.behaviour());
    let fields = |q: Quantity| {
        (
            kind.fields().iter().map(|n| (*n, q.behaviour())).collect(),
            q.behaviour(),
        )
    };
    match kind {
        CigemKind::Crack => scalar(Quantity::Crack),
        CigemKind::EarthPressure => scalar(Quantity::Pressure),
        CigemKind::PorePressure => scalar(Quantity::PorePressure),
        CigemKind::SoilMoisture => scalar(Quantity::Humidity),
        CigemKind::SoilTemperature => scalar(Quantity::Temperature),
        CigemKind::Acceleration => fields(Quantity::Acceleration),
        CigemKind::Gnss | CigemKind::DeepDisplacement => fields(Quantity::Displacement),
        CigemKind::Tilt => (
            vec![
                ("X", wander(Range { lo: -6.0, hi: 6.0 }, 0.002, TILT_LIMITS)),
                ("Y", wander(Range { lo: -6.0, hi: 6.0 }, 0.002, TILT_LIMITS)),
                (
                    "Z",
                    wander(Range { lo: 82.0, hi: 89.5 }, 0.002, TILT_LIMITS),
                ),
                (
                    "angle",
                    wander(Range { lo: -8.0, hi: 8.0 }, 0.002, TILT_LIMITS),
                ),
                (
                    "AZI",
                    wander(
                        Range { lo: 0.0, hi: 360.0 },
                        0.05,
                        Range { lo: 0.0, hi: 360.0 },
                    ),
                ),
            ],
            Quantity::Tilt.behaviour(),
        ),
        // Rain is built from a storm flag and a tip count, not from field behaviours.
        CigemKind::Rain => (Vec::new(), Quantity::Rainfall.behaviour()),
    }
}

/// One generated CIGEM point.
#[derive(Debug)]
enum PointGen {
    Scalar(Gen),
    Fields(Vec<(&'static str, Gen)>),
    /// Rain gauge without physics: a storm flag, a tips-per-sample series.
    Rain {
        storm: Series,
        tips: Series,
    },
    /// Rain gauge on a cumulative-rain channel (floored to whole tips by its sensor).
    RainChannel(Reader),
}

/// Rain tip counters (in tips) of one rain point.
#[derive(Debug, Default, Clone, Copy)]
struct RainCount {
    /// Random gauge: tips since the last upload. Channel gauge: unused.
    since_upload: u64,
    /// Random gauge: tips so far. Channel gauge: tips at the last upload.
    total: u64,
}

/// A CIGEM device.
#[derive(Debug)]
pub struct CigemSim {
    device: CigemDevice,
    points: Vec<PointGen>,
    rain: Mutex<HashMap<usize, RainCount>>,
    ext_power: Series,
    solar: Series,
    signal: Series,
    faults: NodeFaults,
    online: AtomicBool,
}

impl CigemSim {
    /// The device of a scenario, without physics or faults.
    #[must_use]
    pub fn new(device: &CigemDevice, seed: u64) -> Self {
        Self::build(device, &NodeSetup::plain(seed, ""))
    }

    /// The device of a scenario with its physics and faults.
    #[must_use]
    pub fn build(device: &CigemDevice, setup: &NodeSetup) -> Self {
        let seed = setup.seed;
        let id = &device.device_id;
        let reader = |point: &str, map: &crate::sensor::ChannelRef| {
            Reader::new(map.clone(), seed, id, point)
        };
        let points = device
            .points
            .iter()
            .map(|p| {
                let (fields, scalar) = kind_fields(p.kind);
                match p.kind {
                    CigemKind::Rain => match &p.channel {
                        Some(map) => PointGen::RainChannel(reader(&p.id, map)),
                        None => PointGen::Rain {
                            storm: Series::new(
                                seed,
                                id,
                                &format!("{}#storm", p.id),
                                Behaviour::Flag {
                                    probability: 0.3,
                                    hold: 30,
                                },
                            ),
                            tips: Series::new(
                                seed,
                                id,
                                &format!("{}#tips", p.id),
                                wander(
                                    Range {
                                        lo: 0.0,
                                        hi: MAX_TIPS_PER_SAMPLE,
                                    },
                                    2.0,
                                    Range {
                                        lo: 0.0,
                                        hi: MAX_TIPS_PER_SAMPLE,
                                    },
                                ),
                            ),
                        },
                    },
                    _ if fields.is_empty() => PointGen::Scalar(match &p.channel {
                        Some(map) => Gen::Channel(reader(&p.id, map)),
                        None => Gen::Series(Series::new(seed, id, &p.id, scalar)),
                    }),
                    _ => PointGen::Fields(
                        fields
                            .into_iter()
                            .map(|(f, b)| {
                                let name = format!("{}.{f}", p.id);
                                let g = match p.fields.get(f) {
                                    Some(map) => Gen::Channel(reader(&name, map)),
                                    None => Gen::Series(Series::new(seed, id, &name, b)),
                                };
                                (f, g)
                            })
                            .collect(),
                    ),
                }
            })
            .collect();
        let status = |field: &str, b: Behaviour| {
            Series::new(seed, id, &format!("{STATUS_POINT}.{field}"), b)
        };
        Self {
            device: device.clone(),
            points,
            rain: Mutex::new(HashMap::new()),
            ext_power: status(
                "ext_power_volt",
                wander(
                    Range { lo: 3.2, hi: 3.45 },
                    0.005,
                    Range { lo: 2.9, hi: 3.6 },
                ),
            ),
            solar: status(
                "solar_volt",
                Behaviour::Wander(Wander {
                    base: Range { lo: 4.0, hi: 6.5 },
                    drift: Range { lo: 0.0, hi: 0.0 },
                    amplitude: Range { lo: 0.5, hi: 1.5 },
                    period: Range {
                        lo: 120.0,
                        hi: 1200.0,
                    },
                    noise: 0.01,
                    limits: Range { lo: 0.0, hi: 7.5 },
                }),
            ),
            signal: status("signal_4g", Quantity::Signal.behaviour()),
            faults: NodeFaults::new(id, setup),
            online: AtomicBool::new(true),
        }
    }

    /// Device id.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.device.device_id
    }

    /// True if the device has a last will (and so a connection of its own).
    #[must_use]
    pub fn has_will(&self) -> bool {
        self.device.will.is_some()
    }

    /// Sets whether the device publishes; returns the previous state.
    pub fn set_online(&self, online: bool) -> bool {
        self.online.swap(online, Ordering::SeqCst)
    }

    /// A malformed data frame (shape chosen by the sample index) of `json` stamped `ts_ms`.
    fn malformed(k: u64, json: &str, ts_ms: i64) -> Vec<u8> {
        let frame = |text: &str| {
            cigem_frame(CigemType::Data, text)
                .unwrap_or_else(|_| wrapped_cigem_frame(CigemType::Data, text))
        };
        match k % MALFORMED_SHAPES {
            0 => frame(&json[..json.len() / 2]),
            1 => {
                let mut out = vec![CigemType::Data.byte()];
                out.extend_from_slice(
                    &u16::try_from(NOT_JSON.len())
                        .unwrap_or(u16::MAX)
                        .to_be_bytes(),
                );
                out.extend_from_slice(NOT_JSON);
                out
            }
            // Same length as the real timestamp, so the header stays right.
            _ => frame(&json.replace(&iso8601_ms(ts_ms), BAD_TIMESTAMP)),
        }
    }

    /// The messages of `tick`: data every `data_every` ticks, status every `status_every` ticks.
    /// Rain keeps counting while the device is offline, drops ticks or is between uploads.
    #[must_use]
    #[allow(clippy::too_many_lines)] // one pass over the points, then the two messages
    pub fn messages(&self, tick: Tick) -> Vec<Outgoing> {
        let k = tick.index;
        let id = self.device.device_id.as_str();
        let ts_ms = tick.unix_s.saturating_mul(MS_PER_S) + self.faults.skew_ms(tick);
        let ts_ns = ts_ms.saturating_mul(NANOS_PER_MS);
        let data_tick = k.is_multiple_of(u64::from(self.device.data_every));
        let status_tick = k.is_multiple_of(u64::from(self.device.status_every));
        let online = self.online.load(Ordering::SeqCst);
        let sends = online && !self.faults.dropped(tick);
        let sample = |point: &str, value: f64| TrueSample {
            device: id.to_owned(),
            point: point.to_owned(),
            ts_ns,
            value,
        };

        let mut values: Vec<(&str, CigemValue)> = Vec::with_capacity(self.points.len());
        let mut truth = Vec::new();
        {
            let mut rain = self
                .rain
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (i, (p, g)) in self.device.points.iter().zip(&self.points).enumerate() {
                let flagged = self.faults.flag(tick, &p.id).is_some();
                let v = match g {
                    PointGen::Scalar(gen) => {
                        let v = if flagged {
                            CIGEM_ERROR_SENTINEL
                        } else {
                            round_to(self.faults.value(gen, &p.id, tick), CIGEM_DECIMALS)
                        };
                        truth.push(sample(&p.id, v));
                        CigemValue::Scalar(v)
                    }
                    PointGen::Fields(fs) => CigemValue::Fields(
                        fs.iter()
                            .map(|(f, gen)| {
                                let name = format!("{}.{f}", p.id);
                                let v = if flagged {
                                    CIGEM_ERROR_SENTINEL
                                } else {
                                    round_to(self.faults.value(gen, &name, tick), CIGEM_DECIMALS)
                                };
                                truth.push(sample(&name, v));
                                (*f, v)
                            })
                            .collect(),
                    ),
                    PointGen::Rain { storm, tips } => {
                        let count = rain.entry(i).or_default();
                        if storm.value(k) >= 0.5 {
                            // Whole tips by construction (0..=MAX_TIPS_PER_SAMPLE).
                            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                            let n = tips.value(k).round() as u64;
                            count.since_upload += n;
                            count.total += n;
                        }
                        if !(data_tick && sends) {
                            continue;
                        }
                        // Tips × 0.2 mm, as a one-decimal number (exact decimal via round_to).
                        let mm = |tips: u64| round_to((tips * RAIN_TIP_TENTHS) as f64 / 10.0, 1);
                        let (now, total) = (mm(count.since_upload), mm(count.total));
                        count.since_upload = 0;
                        truth.push(sample(&format!("{}.value", p.id), now));
                        truth.push(sample(&format!("{}.totalValue", p.id), total));
                        CigemValue::Fields(vec![("value", now), ("totalValue", total)])
                    }
                    PointGen::RainChannel(reader) => {
                        if !(data_tick && sends) {
                            continue;
                        }
                        let count = rain.entry(i).or_default();
                        #[allow(clippy::cast_precision_loss)] // seconds since the start ≪ 2^53
                        let t = tick.rel_s as f64;
                        // The reader floors to whole tips; count them.
                        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                        let tips = (reader.value(&self.faults.physics, k, t) / RAIN_TIP_MM)
                            .round()
                            .max(0.0) as u64;
                        let mm = |tips: u64| round_to((tips * RAIN_TIP_TENTHS) as f64 / 10.0, 1);
                        let (now, total) = (mm(tips.saturating_sub(count.total)), mm(tips));
                        count.total = tips;
                        truth.push(sample(&format!("{}.value", p.id), now));
                        truth.push(sample(&format!("{}.totalValue", p.id), total));
                        CigemValue::Fields(vec![("value", now), ("totalValue", total)])
                    }
                };
                values.push((&p.id, v));
            }
        }
        let mut out = Vec::new();
        if !sends {
            return out;
        }
        if data_tick {
            let json = cigem_data_json(id, ts_ms, &values);
            let payload = match self.faults.spoil(tick) {
                None => cigem_frame(CigemType::Data, &json)
                    .map_err(
                        |e| tracing::error!(device = id, error = %e, "CIGEM data frame not sent"),
                    )
                    .ok(),
                Some(Spoil::Malformed) => {
                    truth.clear();
                    Some(Self::malformed(k, &json, ts_ms))
                }
                Some(Spoil::Oversized(bytes)) => {
                    truth.clear();
                    Some(wrapped_cigem_frame(
                        CigemType::Data,
                        &pad_json(&json, bytes),
                    ))
                }
            };
            if let Some(payload) = payload {
                out.push(Outgoing {
                    topic: self.device.topic.clone(),
                    payload,
                    truth,
                });
            }
        }
        if status_tick {
            out.extend(self.status(tick, ts_ns));
        }
        out
    }

    fn status(&self, tick: Tick, ts_ns: i64) -> Option<Outgoing> {
        let k = tick.index;
        let id = self.device.device_id.as_str();
        let ext = round_to(self.ext_power.value(k), CIGEM_DECIMALS);
        let solar = round_to(self.solar.value(k), SOLAR_DECIMALS);
        // dBm within −120…−30 by the Signal limits.
        #[allow(clippy::cast_possible_truncation)]
        let signal = self.signal.value(k).round() as i64;
        let status = CigemStatus {
            ext_power_volt: ext,
            solar_volt: solar,
            battery_dump_energy: battery_percent(ext),
            signal_4g: signal,
            sensor_state: self
                .device
                .points
                .iter()
                .map(|p| (p.id.as_str(), self.faults.flag(tick, &p.id).unwrap_or(0)))
                .collect(),
        };
        let json = cigem_status_json(id, &status);
        let payload = cigem_frame(CigemType::Status, &json)
            .map_err(|e| tracing::error!(device = id, error = %e, "CIGEM status frame not sent"))
            .ok()?;
        let field = |f: &str, value: f64| TrueSample {
            device: id.to_owned(),
            point: format!("{STATUS_POINT}.{f}"),
            ts_ns,
            value,
        };
        #[allow(clippy::cast_precision_loss)] // small integers
        let mut truth = vec![
            field("ext_power_volt", ext),
            field("solar_volt", solar),
            field("battery_dump_energy", status.battery_dump_energy as f64),
            field("signal_4g", signal as f64),
        ];
        truth.extend(status.sensor_state.iter().map(|(p, s)| {
            #[allow(clippy::cast_precision_loss)]
            let s = *s as f64;
            field(&format!("sensor_state.{p}"), s)
        }));
        Some(Outgoing {
            topic: self.device.topic.clone(),
            payload,
            truth,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{CigemPoint, JsonSensor};
    use std::collections::BTreeMap;

    /// Tick `k` at `unix_s`, samples every second.
    fn tick(k: u64, unix_s: i64) -> Tick {
        Tick {
            index: k,
            rel_s: i64::try_from(k).expect("small"),
            unix_s,
        }
    }

    #[test]
    fn battery_curve_points() {
        // docs/DOMAIN.md §Data quality: 3.40 V = 100 %, 3.30 V = 94 %, 3.20 V = 40 %, 3.12 V = 8 %,
        // 2.83 V = 0 %.
        assert_eq!(battery_percent(3.40), 100);
        assert_eq!(battery_percent(3.30), 94);
        assert_eq!(battery_percent(3.20), 40);
        assert_eq!(battery_percent(3.12), 8);
        assert_eq!(battery_percent(2.83), 0);
        assert_eq!(battery_percent(2.0), 0);
        assert_eq!(battery_percent(4.2), 100);
        // Halfway 3.20-3.30: 67 %.
        assert_eq!(battery_percent(3.25), 67);
    }

    fn node(form: MessageForm, topic: &str) -> JsonNode {
        JsonNode {
            name: "n1".into(),
            topic: topic.into(),
            message: form,
            every: 2,
            will: None,
            sensors: vec![
                JsonSensor {
                    id: "t1".into(),
                    quantity: Quantity::Temperature,
                    unit: "°C".into(),
                    decimals: 2,
                    channel: None,
                },
                JsonSensor {
                    id: "h1".into(),
                    quantity: Quantity::Humidity,
                    unit: "%".into(),
                    decimals: 1,
                    channel: None,
                },
            ],
        }
    }

    #[test]
    fn batch_node_truth_matches_the_json_numbers() {
        let sim = JsonNodeSim::new(
            &node(MessageForm::Batch, "sites/{site}/nodes/{node}/up"),
            "s1",
            5,
        );
        assert!(sim.messages(tick(1, 1_764_410_001)).is_empty(), "every = 2");
        let msgs = sim.messages(tick(2, 1_764_410_002));
        assert_eq!(msgs.len(), 1);
        let m = &msgs[0];
        assert_eq!(m.topic, "sites/s1/nodes/n1/up");
        let v: serde_json::Value = serde_json::from_slice(&m.payload).expect("json");
        let readings = v["readings"].as_array().expect("array");
        assert_eq!(readings.len(), 2);
        for (r, t) in readings.iter().zip(&m.truth) {
            assert_eq!(r["sensor"].as_str(), Some(t.point.as_str()));
            assert_eq!(r["value"].as_f64(), Some(t.value));
            assert_eq!(t.device, "n1");
        }
        // Stamped within the second before the tick.
        let ts = m.truth[0].ts_ns;
        assert!(ts <= 1_764_410_002_000_000_000 && ts > 1_764_410_001_000_000_000);
        sim.set_online(false);
        assert!(sim.messages(tick(4, 1_764_410_004)).is_empty());
    }

    #[test]
    fn single_node_sends_one_message_per_sensor() {
        let sim = JsonNodeSim::new(&node(MessageForm::Single, "x/{node}/{sensor}"), "s1", 5);
        let msgs = sim.messages(tick(0, 1_764_410_000));
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[1].topic, "x/n1/h1");
        let v: serde_json::Value = serde_json::from_slice(&msgs[1].payload).expect("json");
        assert_eq!(v["sensor"].as_str(), Some("h1"));
        assert_eq!(v["value"].as_f64(), Some(msgs[1].truth[0].value));
        assert_eq!(
            v["ts"].as_i64().map(|ms| ms * 1_000_000),
            Some(msgs[1].truth[0].ts_ns)
        );
    }

    #[test]
    fn cigem_frames_carry_their_truth() {
        let dev = CigemDevice {
            device_id: "GH1".into(),
            topic: "$dp".into(),
            data_every: 1,
            status_every: 3,
            will: None,
            points: vec![
                CigemPoint {
                    id: "L1_LF_1".into(),
                    kind: CigemKind::Crack,
                    channel: None,
                    fields: BTreeMap::new(),
                },
                CigemPoint {
                    id: "L1_QJ_1".into(),
                    kind: CigemKind::Tilt,
                    channel: None,
                    fields: BTreeMap::new(),
                },
                CigemPoint {
                    id: "L3_YL_1".into(),
                    kind: CigemKind::Rain,
                    channel: None,
                    fields: BTreeMap::new(),
                },
            ],
        };
        let sim = CigemSim::new(&dev, 9);
        let msgs = sim.messages(tick(0, 1_764_410_000));
        assert_eq!(msgs.len(), 2, "data and status at tick 0");
        let data = &msgs[0];
        assert_eq!(data.payload[0], 2);
        let len = usize::from(u16::from_be_bytes([data.payload[1], data.payload[2]]));
        assert_eq!(len, data.payload.len() - 3);
        let v: serde_json::Value = serde_json::from_slice(&data.payload[3..]).expect("json");
        let ts = "2025-11-29T09:53:20.000Z";
        let lf = &v["GH1"]["L1_LF_1"][ts];
        let find = |p: &str| data.truth.iter().find(|t| t.point == p).map(|t| t.value);
        assert_eq!(lf.as_f64(), find("L1_LF_1"));
        assert_eq!(v["GH1"]["L1_QJ_1"][ts]["AZI"].as_f64(), find("L1_QJ_1.AZI"));
        assert_eq!(
            v["GH1"]["L3_YL_1"][ts]["totalValue"].as_f64(),
            find("L3_YL_1.totalValue")
        );
        assert_eq!(data.truth[0].ts_ns, 1_764_410_000_000_000_000);
        let status = &msgs[1];
        assert_eq!(status.payload[0], 1);
        let s: serde_json::Value = serde_json::from_slice(&status.payload[3..]).expect("json");
        let body = &s["GH1"]["S1_ZT_1"];
        let sfind = |p: &str| status.truth.iter().find(|t| t.point == p).map(|t| t.value);
        assert_eq!(
            body["ext_power_volt"].as_f64(),
            sfind("S1_ZT_1.ext_power_volt")
        );
        assert_eq!(body["sensor_state"]["L1_QJ_1"].as_i64(), Some(0));
        assert_eq!(
            sim.messages(tick(1, 1_764_410_001)).len(),
            1,
            "no status at tick 1"
        );
    }

    #[test]
    fn rain_total_is_the_running_sum() {
        let dev = CigemDevice {
            device_id: "GH2".into(),
            topic: "$dp".into(),
            data_every: 1,
            status_every: 1000,
            will: None,
            points: vec![CigemPoint {
                id: "L3_YL_1".into(),
                kind: CigemKind::Rain,
                channel: None,
                fields: BTreeMap::new(),
            }],
        };
        let sim = CigemSim::new(&dev, 1);
        let mut sum_tenths = 0_i64;
        for k in 0..300 {
            let m = sim.messages(tick(k, 1_764_410_000 + i64::try_from(k).expect("small")));
            let now = m[0]
                .truth
                .iter()
                .find(|t| t.point == "L3_YL_1.value")
                .expect("value")
                .value;
            let total = m[0]
                .truth
                .iter()
                .find(|t| t.point == "L3_YL_1.totalValue")
                .expect("total")
                .value;
            #[allow(clippy::cast_possible_truncation)]
            let now_tenths = (now * 10.0).round() as i64;
            sum_tenths += now_tenths;
            assert_eq!(total, round_to(sum_tenths as f64 / 10.0, 1));
        }
        assert!(sum_tenths > 0, "300 samples at 30 % storms must rain");
    }
}
