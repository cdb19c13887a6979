//! Writes to Modbus devices, carried to the poller that owns their bus.
//!
//! Owns what a write is ([`WriteTarget`]: one coil, one register, or several registers), how it
//! fails ([`WriteError`]), and the way in: [`BusWriters`], a sender per device into the command
//! channel of its bus's [`super::poller::Poller`]. The poller sends the request between two polls
//! on the connection it already holds, so a write never opens a second connection and never
//! interleaves with a read on a serial line (Modbus over serial line V1.02 §2.1: one master, one
//! outstanding request). It does not decide what to write (the modbus output sink, `gateway
//! write`) nor how a value becomes registers ([`super::decode::encode_point`]).
//!
//! Function codes (Modbus application protocol V1.1b3): 05 write single coil (§6.5: ON is
//! 0xFF00, OFF 0x0000; the reply echoes the request), 06 write single register (§6.6: the reply
//! echoes address and value), 16 (0x10) write multiple registers (§6.12: the reply echoes
//! address and quantity). On Modbus TCP the echo is checked by the poller; on RTU by
//! [`super::rtu_frame::check_echo`], with the line discipline of the reads
//! ([`super::rtu_link::RtuLink::exchange_write`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::config::{Device, Function, Point};
use super::decode::{encode_point, EncodeError};

/// Writes waiting for one bus's poller. A writer sending more waits; the poller takes them
/// between polls, so the queue holds at most a few (an alert sink re-asserting, a technician).
pub const WRITE_QUEUE: usize = 16;

/// What one write sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteTarget {
    /// FC 05: one coil on or off.
    Coil {
        /// 0-based coil address.
        address: u16,
        /// On (0xFF00 on the wire) or off (0x0000).
        on: bool,
    },
    /// FC 06: one holding register.
    Register {
        /// 0-based register address.
        address: u16,
        /// The value.
        value: u16,
    },
    /// FC 16: consecutive holding registers (a 32- or 64-bit value).
    Registers {
        /// First 0-based register address.
        address: u16,
        /// The values, in wire order.
        values: Vec<u16>,
    },
}

impl WriteTarget {
    /// The function code on the wire.
    #[must_use]
    pub const fn function_code(&self) -> u8 {
        match self {
            Self::Coil { .. } => 0x05,
            Self::Register { .. } => 0x06,
            Self::Registers { .. } => 0x10,
        }
    }

    /// The first address written.
    #[must_use]
    pub const fn address(&self) -> u16 {
        match self {
            Self::Coil { address, .. }
            | Self::Register { address, .. }
            | Self::Registers { address, .. } => *address,
        }
    }

    /// The write that makes writable `point` read `value`: FC 05 for a coil, FC 06 for a
    /// one-register value, FC 16 for a wider one.
    ///
    /// # Errors
    /// [`WriteError::NotWritable`] for a point not declared `writable`, [`WriteError::Value`]
    /// for a value the point cannot take.
    pub fn for_point(device: &str, point: &Point, value: f64) -> Result<Self, WriteError> {
        if !point.writable {
            return Err(WriteError::NotWritable {
                device: device.to_owned(),
                point: point.name.clone(),
            });
        }
        let regs = encode_point(point, value).map_err(|e| WriteError::Value {
            device: device.to_owned(),
            point: point.name.clone(),
            error: e,
        })?;
        Ok(match (point.function, regs.as_slice()) {
            (Function::Coil, [bit]) => Self::Coil {
                address: point.address,
                on: *bit != 0,
            },
            (_, [one]) => Self::Register {
                address: point.address,
                value: *one,
            },
            _ => Self::Registers {
                address: point.address,
                values: regs,
            },
        })
    }
}

impl fmt::Display for WriteTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Coil { address, on } => {
                write!(f, "FC 05 coil {address} {}", if *on { "on" } else { "off" })
            }
            Self::Register { address, value } => write!(f, "FC 06 register {address} = {value}"),
            Self::Registers { address, values } => {
                write!(
                    f,
                    "FC 16 registers {address}+{} = {values:04X?}",
                    values.len()
                )
            }
        }
    }
}

/// Why a write did not happen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    /// No Modbus device of that name.
    #[error("no Modbus device \"{0}\" in the config")]
    UnknownDevice(String),
    /// The device has no point of that name.
    #[error("device \"{device}\" has no point \"{point}\"")]
    UnknownPoint {
        /// The device.
        device: String,
        /// The point asked for.
        point: String,
    },
    /// The point is not declared writable.
    #[error("point \"{point}\" of device \"{device}\" is not writable; only points the profile declares `writable = true` can be written")]
    NotWritable {
        /// The device.
        device: String,
        /// The point.
        point: String,
    },
    /// The value does not fit the point.
    #[error("cannot write to \"{device}/{point}\": {error}")]
    Value {
        /// The device.
        device: String,
        /// The point.
        point: String,
        /// Why.
        error: EncodeError,
    },
    /// The device answered with an exception (Modbus application protocol V1.1b3 §7).
    #[error("device \"{device}\" refused {target} with exception {code:02X}")]
    Exception {
        /// The device.
        device: String,
        /// What was written.
        target: WriteTarget,
        /// The exception code.
        code: u8,
    },
    /// No (valid) answer after the device's retries: timeout, connection failure, a reply that
    /// does not echo the request.
    #[error("device \"{device}\" did not confirm {target}: {reason}")]
    Failed {
        /// The device.
        device: String,
        /// What was written.
        target: WriteTarget,
        /// The last failure.
        reason: String,
    },
    /// The bus's poller is not running (the gateway is shutting down).
    #[error("the poller of device \"{0}\" is not running")]
    PollerGone(String),
}

impl WriteError {
    /// A static label for counters and logs.
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::UnknownDevice(_) | Self::UnknownPoint { .. } => "unknown",
            Self::NotWritable { .. } => "not_writable",
            Self::Value { .. } => "value",
            Self::Exception { .. } => "exception",
            Self::Failed { .. } => "failed",
            Self::PollerGone(_) => "poller_gone",
        }
    }
}

/// One write for a poller, with where its answer goes.
#[derive(Debug)]
pub struct WriteCommand {
    /// Index of the device in its bus (the poller's order).
    pub device: usize,
    /// What to write.
    pub target: WriteTarget,
    /// The answer.
    pub reply: oneshot::Sender<Result<(), WriteError>>,
}

/// A poller's end of its command channel.
pub type WriteRx = mpsc::Receiver<WriteCommand>;

/// A bus's command channel: the sending half for [`BusWriters::for_channels`], the receiving
/// half for its poller.
#[must_use]
pub fn write_channel() -> (mpsc::Sender<WriteCommand>, WriteRx) {
    mpsc::channel(WRITE_QUEUE)
}

/// The way to every Modbus TCP device's poller, by device name. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct BusWriters {
    /// Device name → (its index in its bus, its bus's command channel).
    by_device: Arc<HashMap<String, (usize, mpsc::Sender<WriteCommand>)>>,
    /// Every device's points, by device name, to resolve a write by point name.
    points: Arc<HashMap<String, Vec<Point>>>,
}

impl BusWriters {
    /// The writers of `buses` (each bus's devices in its order, and the receiver its poller
    /// takes), and the receivers to hand to each poller, in the same order as `buses`.
    #[must_use]
    pub fn for_buses(buses: &[&[Device]]) -> (Self, Vec<WriteRx>) {
        let mut by_device = HashMap::new();
        let points = buses
            .iter()
            .flat_map(|devices| devices.iter())
            .map(|d| (d.name.clone(), d.points.clone()))
            .collect();
        let mut receivers = Vec::with_capacity(buses.len());
        for devices in buses {
            let (tx, rx) = mpsc::channel(WRITE_QUEUE);
            for (i, d) in devices.iter().enumerate() {
                by_device.insert(d.name.clone(), (i, tx.clone()));
            }
            receivers.push(rx);
        }
        (
            Self {
                by_device: Arc::new(by_device),
                points: Arc::new(points),
            },
            receivers,
        )
    }

    /// The writers of `buses`, each bus's devices in its poller's order with the sending half
    /// of the command channel that poller takes ([`write_channel`]): a config reload
    /// (`crate::run`) keeps the channels of the buses it keeps running.
    #[must_use]
    pub fn for_channels(buses: &[(&[Device], mpsc::Sender<WriteCommand>)]) -> Self {
        let mut by_device = HashMap::new();
        let mut points = HashMap::new();
        for (devices, tx) in buses {
            for (i, d) in devices.iter().enumerate() {
                by_device.insert(d.name.clone(), (i, tx.clone()));
                points.insert(d.name.clone(), d.points.clone());
            }
        }
        Self {
            by_device: Arc::new(by_device),
            points: Arc::new(points),
        }
    }

    /// The write that sets `device`'s `point` to `value` (engineering units as the point reads
    /// them), checked without sending anything: the point exists, is writable, and takes the
    /// value ([`WriteTarget::for_point`]).
    ///
    /// # Errors
    /// An unknown device or point, a point not declared writable, a value it cannot take.
    pub fn resolve(
        &self,
        device: &str,
        point: &str,
        value: f64,
    ) -> Result<WriteTarget, WriteError> {
        resolve_in(
            self.points
                .get(device)
                .map(|p| p.as_slice())
                .ok_or_else(|| WriteError::UnknownDevice(device.to_owned()))?,
            device,
            point,
            value,
        )
    }

    /// Send `target` to `device` through its bus's poller and wait for the answer.
    ///
    /// # Errors
    /// An unknown device, a stopped poller, or the device's refusal or silence.
    pub async fn write(&self, device: &str, target: WriteTarget) -> Result<(), WriteError> {
        let Some((index, tx)) = self.by_device.get(device) else {
            return Err(WriteError::UnknownDevice(device.to_owned()));
        };
        let (reply, answer) = oneshot::channel();
        let command = WriteCommand {
            device: *index,
            target,
            reply,
        };
        if tx.send(command).await.is_err() {
            return Err(WriteError::PollerGone(device.to_owned()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(WriteError::PollerGone(device.to_owned())))
    }
}

/// The write that sets `point` of `device` (whose points are `points`) to `value`.
///
/// # Errors
/// An unknown point, a point not declared writable, a value it cannot take.
pub fn resolve_in(
    points: &[Point],
    device: &str,
    point: &str,
    value: f64,
) -> Result<WriteTarget, WriteError> {
    let p = points
        .iter()
        .find(|p| p.name == point)
        .ok_or_else(|| WriteError::UnknownPoint {
            device: device.to_owned(),
            point: point.to_owned(),
        })?;
    WriteTarget::for_point(device, p, value)
}
