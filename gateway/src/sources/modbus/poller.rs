//! Polling the devices of one bus.
//!
//! Owns the connection to one bus (a TCP device, a serial line, or a serial device server
//! reached by TCP), the schedule of its devices, retries, backoff while a device is dead, and
//! turning replies into [`Reading`]s. It does not decide which registers to read ([`ReadPlan`])
//! or how to decode them ([`super::decode`]).
//!
//! Design:
//! - One task per bus, so a slow or dead device delays only devices on its own wire; devices on
//!   one RS-485 line must be polled one at a time anyway (Modbus over serial line V1.02 §2.1:
//!   a single master, one outstanding request).
//! - Modbus TCP goes through tokio-modbus, which matches the MBAP transaction id and unit of a
//!   reply to its request (Modbus Messaging on TCP/IP V1.0b §3.1.3); every request runs under
//!   `tokio::time::timeout` (tokio-modbus has none of its own), the register or bit count of a
//!   reply is checked against the request here (tokio-modbus only `debug_assert`s it), and after
//!   a timeout or a garbled reply the connection is dropped and reopened.
//! - RTU, on a serial line or through a serial device server, has no transaction id: a late
//!   reply would be taken as the answer to the next request (issue 10). It goes through our own
//!   framing ([`super::rtu_link`]), which checks every reply against its request and drains and
//!   discards late and mismatched frames; each discarded frame is counted per device and reason
//!   (`modbus_errors_total{reason="late_reply"|"mismatched_reply"|"garbled"}`) and logged at
//!   most once per [`DISCARD_LOG_INTERVAL`] per device.
//! - A device that fails a whole poll is polled again after an exponentially growing delay
//!   (poll interval × 2^n, capped at `max_backoff`) and returns to its normal schedule as soon as
//!   it answers.
//! - An exception, a timeout or a garbled frame becomes a quality flag on the affected readings
//!   and a counter per device and reason; it never ends the task.
//! - Writes ([`super::write`]) arrive on the poller's command channel and are sent between two
//!   polls on the same connection, with the device's timeout and retries; the reply must echo
//!   the request (Modbus application protocol V1.1b3 §6.5, §6.6, §6.12). A refused or
//!   unanswered write is counted (`modbus_write_errors_total`) and answered to the writer, which
//!   logs it naming device and address; polling goes on.

use crate::metrics::Counter;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_modbus::client::{tcp, Context, Reader};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::Slave;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::config::{Device, Endpoint, Parity, SerialLine, Transport};
use super::decode;
use super::plan::{Part, ReadPlan, ReadRequest};
use super::rtu_frame::{self, Answer, Expect};
use super::rtu_link::{
    reason as rtu_link_reason, Discard, ExchangeError, PendingRequests, RtuLink,
};
use super::write::{WriteCommand, WriteError, WriteRx, WriteTarget};
use crate::log_limit::LogLimiter;
use crate::metrics::Metrics;
use crate::model::{Clock, Quality, Reading, Series};
use crate::sources::ReadingTx;

/// How long to wait before reopening a serial port or device-server connection that failed
/// with an I/O error (a USB adapter re-enumerating, a device server restarting), so a broken
/// port is not reopened in a tight loop. Late replies are handled by [`super::rtu_link`], not by
/// this delay.
pub const RTU_RECOVERY_DELAY: Duration = Duration::from_millis(100);

/// At most one WARN per device in this interval about discarded late or mismatched replies;
/// the counter has the full numbers.
pub const DISCARD_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// How long to wait before retrying a request answered with exception 06 (server device busy,
/// Modbus application protocol V1.1b3 §7).
pub const BUSY_RETRY_DELAY: Duration = Duration::from_millis(200);

/// The wire a group of devices shares.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Link {
    /// Modbus TCP to one device.
    Tcp(Endpoint),
    /// RTU frames through a serial device server.
    RtuOverTcp(Endpoint),
    /// RTU on a local serial port.
    Serial(SerialLine),
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "tcp://{a}"),
            Self::RtuOverTcp(a) => write!(f, "rtu-over-tcp://{a}"),
            Self::Serial(l) => write!(f, "serial {} ({})", l.name, l.path),
        }
    }
}

/// Devices that share one wire and are polled by one task (kept through a config reload when
/// equal, `crate::reload`).
#[derive(Debug, Clone, PartialEq)]
pub struct Bus {
    /// The wire.
    pub link: Link,
    /// The devices on it, in config order.
    pub devices: Vec<Device>,
}

/// Group devices into buses: one per TCP device, one per serial port, one per serial device
/// server address.
#[must_use]
pub fn group_into_buses(devices: &[Device]) -> Vec<Bus> {
    let mut buses: Vec<Bus> = Vec::new();
    for d in devices {
        let link = match &d.transport {
            Transport::Tcp(a) => Link::Tcp(a.clone()),
            Transport::RtuOverTcp(a) => Link::RtuOverTcp(a.clone()),
            Transport::Rtu(line) => Link::Serial(line.clone()),
        };
        let shared = !matches!(link, Link::Tcp(_));
        match buses.iter_mut().find(|b| shared && b.link == link) {
            Some(bus) => bus.devices.push(d.clone()),
            None => buses.push(Bus {
                link,
                devices: vec![d.clone()],
            }),
        }
    }
    buses
}

/// What one request came back with.
enum Reply {
    Registers(Vec<u16>),
    Bits(Vec<bool>),
}

/// An open connection.
enum Conn {
    /// Modbus TCP through tokio-modbus.
    Tcp(Context),
    /// RTU through our own framing.
    Rtu(RtuLink),
}

/// What one attempt of a request came back with, whichever the transport.
enum Attempt {
    Data(Reply),
    Exception(u8),
    Timeout,
    /// A reply that is not the answer to the request (wrong length): discarded.
    Mismatched(String),
    /// A garbled reply or a protocol error.
    Garbled(String),
    /// The connection failed; reopen it.
    Io(String),
}

/// How a request (with its retries) ended.
enum Outcome {
    Data(Reply),
    Exception(u8),
    Failed(Quality, &'static str),
}

/// Values and times read in separate requests during one poll (see [`Part`]).
#[derive(Default)]
struct SplitReads {
    /// Point index, value, poll time.
    values: Vec<(usize, f64, i64)>,
    /// Point index, device sample time.
    times: Vec<(usize, i64)>,
}

/// Per-device state kept by the poller.
struct DeviceState {
    device: Device,
    /// One series per point, same order as `device.points`.
    series: Vec<Arc<Series>>,
    plan: ReadPlan,
    next_due: Instant,
    /// Consecutive failed polls (0 = healthy).
    failed_polls: u32,
    /// Points already reported as refused on their own, so the ERROR is logged once.
    refused_points: HashSet<usize>,
}

/// Polls the devices of one bus until shut down.
pub struct Poller {
    link: Link,
    devices: Vec<DeviceState>,
    /// The open connection, if any. TCP: dropped after any timeout or garbled reply. RTU:
    /// dropped after an I/O error only.
    ctx: Option<Conn>,
    /// Requests of a dropped RTU connection that may still be answered late, for the next one.
    rtu_pending: Option<PendingRequests>,
    /// Discarded replies: one WARN per device per [`DISCARD_LOG_INTERVAL`].
    discard_log: LogLimiter,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    /// Writes for this bus's devices ([`super::write::BusWriters`]); `None` without writers.
    writes: Option<WriteRx>,
}

impl fmt::Debug for Poller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Poller")
            .field("link", &self.link)
            .field(
                "devices",
                &self
                    .devices
                    .iter()
                    .map(|d| &d.device.name)
                    .collect::<Vec<_>>(),
            )
            .field("connected", &self.ctx.is_some())
            .finish_non_exhaustive()
    }
}

impl Poller {
    /// A poller for `bus`, tagging readings with `site` and `gateway`.
    #[must_use]
    pub fn new(
        bus: Bus,
        site: &str,
        gateway: &str,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let start = Instant::now();
        let devices = bus
            .devices
            .into_iter()
            .map(|device| {
                let series = device
                    .points
                    .iter()
                    .map(|p| {
                        Arc::new(Series::new(
                            site,
                            gateway,
                            &device.name,
                            &p.name,
                            p.quantity,
                            &p.unit,
                            &device.tags,
                        ))
                    })
                    .collect();
                let plan = ReadPlan::with_holes(&device.points, device.max_gap, &device.holes);
                DeviceState {
                    device,
                    series,
                    plan,
                    next_due: start,
                    failed_polls: 0,
                    refused_points: HashSet::new(),
                }
            })
            .collect();
        Self {
            link: bus.link,
            devices,
            ctx: None,
            rtu_pending: None,
            // One key per device on the bus, so the bound is never reached.
            discard_log: LogLimiter::new(DISCARD_LOG_INTERVAL, 256),
            metrics,
            clock,
            writes: None,
        }
    }

    /// Take writes for this bus's devices from `rx` (see [`super::write::BusWriters`]).
    #[must_use]
    pub fn with_writes(mut self, rx: WriteRx) -> Self {
        self.writes = Some(rx);
        self
    }

    /// Poll until `shutdown` is cancelled or the engine goes away.
    pub async fn run(mut self, out: ReadingTx, shutdown: CancellationToken) {
        if self.devices.is_empty() {
            return;
        }
        info!(bus = %self.link, devices = self.devices.len(), "Modbus poller started.");
        loop {
            let Some((idx, due)) = self
                .devices
                .iter()
                .enumerate()
                .map(|(i, d)| (i, d.next_due))
                .min_by_key(|&(_, t)| t)
            else {
                return;
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                command = next_write(&mut self.writes) => {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = self.execute_write(command) => {}
                    }
                    continue;
                }
                () = sleep_until(due) => {}
            }
            let readings = tokio::select! {
                () = shutdown.cancelled() => break,
                r = self.poll_device(idx) => r,
            };
            self.schedule_next(idx);
            if !readings.is_empty() {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    sent = out.send(readings.into()) => if sent.is_err() { break },
                }
            }
        }
        debug!(bus = %self.link, "Modbus poller stopped.");
    }

    /// Send one write with the device's timeout and retries (exception 06, busy, is retried
    /// after [`BUSY_RETRY_DELAY`]; other exceptions are final) and answer the writer.
    async fn execute_write(&mut self, command: WriteCommand) {
        let WriteCommand {
            device: idx,
            target,
            reply,
        } = command;
        let Some(st) = self.devices.get(idx) else {
            let _ = reply.send(Err(WriteError::UnknownDevice(format!("#{idx}"))));
            return;
        };
        let (name, unit, wait, retries) = (
            st.device.name.clone(),
            st.device.unit,
            st.device.timeout,
            st.device.retries,
        );
        let mut last = String::from("not sent");
        let mut result = None;
        for attempt in 0..=retries {
            if let Err(reason) = self.ensure_connected(unit, wait).await {
                self.count_write_error(&name, "connect");
                last = reason;
                sleep(wait.min(Duration::from_secs(1))).await;
                continue;
            }
            let reason = match self.write_attempt(idx, unit, &target, wait).await {
                Attempt::Data(_) => {
                    self.metrics
                        .incr(Counter::ModbusWrites, &[("device", &name)]);
                    debug!(device = %name, write = %target, "Write confirmed.");
                    result = Some(Ok(()));
                    break;
                }
                Attempt::Exception(code) => {
                    self.count_write_error(&name, exception_reason(code));
                    if code == 6 && attempt < retries {
                        sleep(BUSY_RETRY_DELAY).await;
                        last = format!("exception {code:02X}");
                        continue;
                    }
                    result = Some(Err(WriteError::Exception {
                        device: name.clone(),
                        target: target.clone(),
                        code,
                    }));
                    break;
                }
                Attempt::Timeout => "timeout".to_owned(),
                Attempt::Mismatched(e) | Attempt::Garbled(e) => e,
                Attempt::Io(e) => {
                    self.drop_connection().await;
                    e
                }
            };
            self.count_write_error(
                &name,
                if reason == "timeout" {
                    "timeout"
                } else {
                    "comm_error"
                },
            );
            last = reason;
            // As for reads: a fresh TCP connection after any failure.
            if matches!(self.ctx, Some(Conn::Tcp(_))) {
                self.drop_connection().await;
            }
        }
        let result = result.unwrap_or_else(|| {
            Err(WriteError::Failed {
                device: name.clone(),
                target: target.clone(),
                reason: last,
            })
        });
        // The writer logs a failure at WARN with its own context (the sink, the command).
        if let Err(e) = &result {
            debug!(device = %name, unit, bus = %self.link, address = target.address(),
                   function = target.function_code(), error = %e, "Modbus write failed.");
        }
        // The writer may have given up waiting; the write was still sent.
        let _ = reply.send(result);
    }

    fn count_write_error(&self, device: &str, reason: &'static str) {
        self.metrics.incr(
            Counter::ModbusWriteErrors,
            &[("device", device), ("reason", reason)],
        );
    }

    /// One attempt of a write on the open connection; the reply must echo the request.
    async fn write_attempt(
        &mut self,
        idx: usize,
        unit: u8,
        target: &WriteTarget,
        wait: Duration,
    ) -> Attempt {
        match self.ctx.as_mut() {
            None => Attempt::Io("not connected".to_owned()),
            Some(Conn::Tcp(ctx)) => {
                ctx.set_slave(Slave(unit));
                match timeout(wait, send_write(ctx, target)).await {
                    Ok(Ok(Ok(response))) => match echo_error(target, &response) {
                        None => Attempt::Data(Reply::Bits(Vec::new())),
                        Some(e) => Attempt::Mismatched(e),
                    },
                    Ok(Ok(Err(exception))) => Attempt::Exception(u8::from(exception)),
                    Ok(Err(e)) => Attempt::Garbled(e.to_string()),
                    Err(_elapsed) => Attempt::Timeout,
                }
            }
            Some(Conn::Rtu(link)) => {
                let (echo, request) = rtu_frame::write_request(unit, target);
                let result = link.exchange_write(echo, &request, wait).await;
                let discards = link.take_discards();
                self.count_discards(idx, &discards);
                match result {
                    Ok(Answer::Exception(code)) => Attempt::Exception(code),
                    Ok(_) => Attempt::Data(Reply::Bits(Vec::new())),
                    Err(ExchangeError::Timeout) => Attempt::Timeout,
                    Err(ExchangeError::Garbled) => Attempt::Garbled("garbled reply".to_owned()),
                    Err(ExchangeError::Io(e)) => Attempt::Io(e.to_string()),
                }
            }
        }
    }

    /// Set the device's next poll: its interval when healthy, exponential backoff when not.
    fn schedule_next(&mut self, idx: usize) {
        let now = Instant::now();
        let st = &mut self.devices[idx];
        let interval = st.device.poll_interval;
        if st.failed_polls == 0 {
            // Fixed rate; a poll that overran a whole interval restarts the grid from now
            // instead of firing a burst of catch-up polls.
            let next = st.next_due + interval;
            st.next_due = if next <= now {
                self.metrics
                    .incr(Counter::ModbusPollOverruns, &[("device", &st.device.name)]);
                now + interval
            } else {
                next
            };
        } else {
            let exp = st.failed_polls.saturating_sub(1).min(16);
            let delay = interval
                .saturating_mul(1 << exp)
                .min(st.device.max_backoff.max(interval));
            st.next_due = now + delay;
        }
    }

    /// Poll every request of one device, returning its readings (good and flagged).
    async fn poll_device(&mut self, idx: usize) -> Vec<Reading> {
        let mut readings = Vec::new();
        // Values and times of points read in two parts (see `plan::Part`), joined at the end.
        let mut split = SplitReads::default();
        let mut i = 0;
        while i < self.devices[idx].plan.requests.len() {
            let req = self.devices[idx].plan.requests[i].clone();
            match self.request(idx, &req).await {
                Outcome::Data(reply) => {
                    self.devices[idx].plan.mark_read(&req);
                    self.decode_reply(idx, &req, &reply, &mut readings, &mut split);
                    i += 1;
                }
                Outcome::Exception(2) if self.split_request(idx, i, &req) => {}
                Outcome::Exception(code) => {
                    self.flag_refused(idx, &req, code);
                    let ts = self.clock.now_ns();
                    let st = &self.devices[idx];
                    for &p in &req.points {
                        readings.push(Reading::bad(
                            Arc::clone(&st.series[p]),
                            ts,
                            Quality::Exception(code),
                        ));
                    }
                    i += 1;
                }
                Outcome::Failed(quality, reason) => {
                    let ts = self.clock.now_ns();
                    let st = &mut self.devices[idx];
                    for r in &st.plan.requests[i..] {
                        for &p in &r.points {
                            readings.push(Reading::bad(Arc::clone(&st.series[p]), ts, quality));
                        }
                    }
                    // Readings of the requests answered before the failure are converted too.
                    decode::convert_poll(&st.device.points, &mut readings);
                    st.failed_polls += 1;
                    self.metrics
                        .incr(Counter::ModbusFailedPolls, &[("device", &st.device.name)]);
                    if st.failed_polls == 1 {
                        warn!(
                            device = %st.device.name, unit = st.device.unit, bus = %self.link, reason,
                            "Device did not answer after {} attempts; its readings are flagged and it is polled with backoff until it answers.",
                            st.device.retries + 1
                        );
                    } else {
                        debug!(device = %st.device.name, reason, failed_polls = st.failed_polls, "Device still not answering.");
                    }
                    return readings;
                }
            }
        }
        self.join_split_reads(idx, split, &mut readings);
        let st = &mut self.devices[idx];
        decode::convert_poll(&st.device.points, &mut readings);
        if st.plan.rebuild_if_replanned(&st.device.points) {
            info!(
                device = %st.device.name, requests = st.plan.requests.len(),
                holes = ?st.plan.holes(),
                "Re-planned the device's reads around the registers it refuses."
            );
        }
        if st.failed_polls > 0 {
            info!(device = %st.device.name, failed_polls = st.failed_polls, "Device answers again.");
            st.failed_polls = 0;
        }
        self.metrics.add(
            Counter::ModbusReadings,
            &[("device", &st.device.name)],
            readings.len() as u64,
        );
        readings
    }

    /// Re-plan request `i` after an exception 02; false when it cannot be split further.
    fn split_request(&mut self, idx: usize, i: usize, req: &ReadRequest) -> bool {
        let st = &mut self.devices[idx];
        let n = st.plan.split(i, &st.device.points);
        if n == 0 {
            return false;
        }
        warn!(
            device = %st.device.name, request = %req, requests = n,
            "Device refused a read with exception 02 (illegal data address); re-planned it as smaller requests."
        );
        self.metrics
            .incr(Counter::ModbusReplans, &[("device", &st.device.name)]);
        true
    }

    /// Pair values read without their time with the times read on their own in this poll.
    fn join_split_reads(&self, idx: usize, split: SplitReads, readings: &mut Vec<Reading>) {
        let st = &self.devices[idx];
        for (p, value, poll_ts) in split.values {
            let series = Arc::clone(&st.series[p]);
            match split.times.iter().find(|(q, _)| *q == p) {
                Some(&(_, ts)) => readings.push(Reading::good(series, ts, value)),
                // The time request failed after the value request succeeded.
                None => readings.push(Reading::bad(series, poll_ts, Quality::CommError)),
            }
        }
    }

    /// Report a point the device refuses even on its own (logged once per point).
    fn flag_refused(&mut self, idx: usize, req: &ReadRequest, code: u8) {
        let st = &mut self.devices[idx];
        if code == 2
            && req.points.len() == 1
            && req.part != Part::Time
            && st.refused_points.insert(req.points[0])
        {
            let p = &st.device.points[req.points[0]];
            error!(
                device = %st.device.name, point = %p.name, request = %req,
                "Device refuses this point's registers (exception 02, illegal data address); check its address in the register map."
            );
        }
    }

    fn decode_reply(
        &self,
        idx: usize,
        req: &ReadRequest,
        reply: &Reply,
        out: &mut Vec<Reading>,
        split: &mut SplitReads,
    ) {
        let st = &self.devices[idx];
        let poll_ts = self.clock.now_ns();
        for &p in &req.points {
            let point = &st.device.points[p];
            let series = Arc::clone(&st.series[p]);
            let value = match (reply, req.part) {
                (_, Part::Time) => Ok(0.0),
                (Reply::Registers(regs), _) => decode::register_point(point, req.start, regs),
                (Reply::Bits(bits), _) => decode::bit_point(point, req.start, bits),
            };
            let ts = match (reply, point.time, req.part) {
                (Reply::Registers(regs), Some((addr, order)), Part::Whole | Part::Time) => {
                    decode::sample_time(addr, order, req.start, regs)
                }
                _ => Ok(poll_ts),
            };
            match (value, ts, req.part) {
                (Ok(v), Ok(ts), Part::Whole) => out.push(Reading::good(series, ts, v)),
                // A point without a sample time in a value-only request is complete.
                (Ok(v), Ok(ts), Part::Value) if point.time.is_none() => {
                    out.push(Reading::good(series, ts, v));
                }
                (Ok(v), Ok(_), Part::Value) => split.values.push((p, v, poll_ts)),
                (Ok(_), Ok(ts), Part::Time) => split.times.push((p, ts)),
                (Err(e), _, _) | (_, Err(e), _) => {
                    // The device answered with fewer registers than asked: a garbled reply.
                    self.metrics.incr(
                        Counter::ModbusErrors,
                        &[("device", &st.device.name), ("reason", "short_reply")],
                    );
                    debug!(device = %st.device.name, point = %point.name, error = %e, "Short reply.");
                    if req.part != Part::Time {
                        out.push(Reading::bad(series, poll_ts, Quality::CommError));
                    }
                }
            }
        }
    }

    /// Send one request with the device's retries, reconnecting after any failure.
    async fn request(&mut self, idx: usize, req: &ReadRequest) -> Outcome {
        let (name, unit, wait, retries) = {
            let d = &self.devices[idx].device;
            (d.name.clone(), d.unit, d.timeout, d.retries)
        };
        let mut last = Outcome::Failed(Quality::Timeout, "timeout");
        for attempt in 0..=retries {
            if attempt > 0 {
                self.metrics
                    .incr(Counter::ModbusRetries, &[("device", &name)]);
            }
            if let Err(reason) = self.ensure_connected(unit, wait).await {
                self.metrics.incr(
                    Counter::ModbusErrors,
                    &[("device", &name), ("reason", "connect")],
                );
                debug!(device = %name, bus = %self.link, error = %reason, "Connect failed.");
                last = Outcome::Failed(Quality::CommError, "connect");
                sleep(wait.min(Duration::from_secs(1))).await;
                continue;
            }
            self.metrics
                .incr(Counter::ModbusRequests, &[("device", &name)]);
            let (reason, quality) = match self.attempt(idx, unit, req, wait).await {
                Attempt::Data(reply) => return Outcome::Data(reply),
                Attempt::Exception(code) => {
                    let reason = exception_reason(code);
                    self.metrics.incr(
                        Counter::ModbusErrors,
                        &[("device", &name), ("reason", reason)],
                    );
                    debug!(device = %name, request = %req, code, "Modbus exception.");
                    // Exception 06, server device busy (Modbus application protocol V1.1b3 §7).
                    if code == 6 && attempt < retries {
                        sleep(BUSY_RETRY_DELAY).await;
                        last = Outcome::Exception(code);
                        continue;
                    }
                    return Outcome::Exception(code);
                }
                Attempt::Timeout => {
                    debug!(device = %name, request = %req, timeout = ?wait, "No reply in time.");
                    ("timeout", Quality::Timeout)
                }
                Attempt::Mismatched(e) => {
                    debug!(device = %name, request = %req, error = %e, "Reply does not fit the request; discarded.");
                    (rtu_link_reason::MISMATCHED_REPLY, Quality::CommError)
                }
                Attempt::Garbled(e) => {
                    debug!(device = %name, request = %req, error = %e, "Garbled reply or protocol error.");
                    ("comm_error", Quality::CommError)
                }
                Attempt::Io(e) => {
                    debug!(device = %name, request = %req, error = %e, "Connection failed; reopening.");
                    self.drop_connection().await;
                    ("comm_error", Quality::CommError)
                }
            };
            self.metrics.incr(
                Counter::ModbusErrors,
                &[("device", &name), ("reason", reason)],
            );
            last = Outcome::Failed(quality, reason);
            // A TCP stream after a failure may still deliver the late reply; the MBAP transaction
            // id would reject it, but a fresh connection is the simpler guarantee. An RTU link
            // has drained the line itself and stays open.
            if matches!(self.ctx, Some(Conn::Tcp(_))) {
                self.drop_connection().await;
            }
        }
        last
    }

    /// One attempt of `req` on the open connection.
    async fn attempt(
        &mut self,
        idx: usize,
        unit: u8,
        req: &ReadRequest,
        wait: Duration,
    ) -> Attempt {
        match self.ctx.as_mut() {
            None => Attempt::Io("not connected".to_owned()),
            Some(Conn::Tcp(ctx)) => {
                ctx.set_slave(Slave(unit));
                match timeout(wait, send(ctx, req)).await {
                    Ok(Ok(Ok(reply))) => match reply_count_error(&reply, req) {
                        None => Attempt::Data(reply),
                        Some(e) => Attempt::Mismatched(e),
                    },
                    Ok(Ok(Err(exception))) => Attempt::Exception(u8::from(exception)),
                    Ok(Err(e)) => Attempt::Garbled(e.to_string()),
                    Err(_elapsed) => Attempt::Timeout,
                }
            }
            Some(Conn::Rtu(link)) => {
                let expect = Expect {
                    unit,
                    function: req.function,
                    start: req.start,
                    count: req.count,
                };
                let result = link.exchange(expect, wait).await;
                let discards = link.take_discards();
                self.count_discards(idx, &discards);
                match result {
                    Ok(Answer::Registers(r)) => Attempt::Data(Reply::Registers(r)),
                    Ok(Answer::Bits(b)) => Attempt::Data(Reply::Bits(b)),
                    Ok(Answer::Exception(code)) => Attempt::Exception(code),
                    // `check_reply` never gives a write's echo.
                    Ok(Answer::Written) => Attempt::Mismatched("a write's echo".to_owned()),
                    Err(ExchangeError::Timeout) => Attempt::Timeout,
                    Err(ExchangeError::Garbled) => Attempt::Garbled("garbled reply".to_owned()),
                    Err(ExchangeError::Io(e)) => Attempt::Io(e.to_string()),
                }
            }
        }
    }

    /// Count the frames an RTU exchange of device `idx` discarded, per device (the unit in the
    /// frame if it is on this bus, else the device in flight) and reason; WARN at most once per
    /// [`DISCARD_LOG_INTERVAL`] per device.
    fn count_discards(&mut self, idx: usize, discards: &[Discard]) {
        for d in discards {
            let owner = d
                .frame_unit
                .and_then(|u| self.devices.iter().position(|s| s.device.unit == u))
                .unwrap_or(idx);
            let st = &mut self.devices[owner];
            self.metrics.incr(
                Counter::ModbusErrors,
                &[("device", &st.device.name), ("reason", d.reason)],
            );
            if let Some(suppressed) = self.discard_log.allow(&st.device.name) {
                warn!(
                    device = %st.device.name, bus = %self.link, reason = d.reason,
                    detail = ?d.detail, suppressed,
                    "Discarded a reply that is not the answer to the request in flight (RTU has no transaction id); its value was not stored. A late reply means the device's timeout is shorter than its reply time."
                );
            } else {
                debug!(device = %st.device.name, reason = d.reason, detail = ?d.detail, "Discarded a reply.");
            }
        }
    }

    /// Drop the connection after an I/O error (and any TCP failure). On a serial line, let the
    /// port settle before it is reopened; RTU requests still pending are kept for the new link.
    async fn drop_connection(&mut self) {
        if let Some(Conn::Rtu(link)) = self.ctx.take() {
            self.rtu_pending = Some(link.into_pending());
        }
        if matches!(self.link, Link::Serial(_) | Link::RtuOverTcp(_)) {
            sleep(RTU_RECOVERY_DELAY).await;
        }
    }

    async fn ensure_connected(&mut self, unit: u8, wait: Duration) -> Result<(), String> {
        if self.ctx.is_some() {
            return Ok(());
        }
        let ctx = match &self.link {
            // A host name is looked up here, within the connect timeout; a failed lookup is a
            // failed connect.
            Link::Tcp(addr) => Conn::Tcp(
                timeout(wait, async {
                    tcp::connect_slave(addr.resolve().await?, Slave(unit)).await
                })
                .await
                .map_err(|_| format!("connect to {addr} timed out"))?
                .map_err(|e| format!("connect to {addr}: {e}"))?,
            ),
            Link::RtuOverTcp(addr) => {
                let stream = timeout(wait, async {
                    tokio::net::TcpStream::connect(addr.resolve().await?).await
                })
                .await
                .map_err(|_| format!("connect to {addr} timed out"))?
                .map_err(|e| format!("connect to {addr}: {e}"))?;
                self.rtu_conn(Box::new(stream))
            }
            Link::Serial(line) => self.rtu_conn(Box::new(open_serial(line)?)),
        };
        self.ctx = Some(ctx);
        Ok(())
    }

    /// An RTU link on a freshly opened stream, with the line's t3.5 (Modbus over serial line
    /// V1.02 §2.5.1.1; a device server's baud is unknown, so the fast-line value) and the pending
    /// requests of the previous link.
    fn rtu_conn(&mut self, io: Box<dyn super::rtu_link::RtuIo>) -> Conn {
        let gap = match &self.link {
            Link::Serial(line) => rtu_frame::t35(line.baud),
            _ => rtu_frame::T35_FAST_LINE,
        };
        let mut link = RtuLink::new(io, gap);
        if let Some(pending) = self.rtu_pending.take() {
            link.inherit_pending(pending);
        }
        Conn::Rtu(link)
    }
}

/// Why a TCP reply of the right transaction does not carry exactly the quantity asked for.
fn reply_count_error(reply: &Reply, req: &ReadRequest) -> Option<String> {
    let got = match reply {
        Reply::Registers(r) => r.len(),
        Reply::Bits(b) => b.len(),
    };
    (got != usize::from(req.count)).then(|| format!("{got} values for a request of {}", req.count))
}

/// Open a serial port with the line's settings and discard anything already buffered.
fn open_serial(line: &SerialLine) -> Result<tokio_serial::SerialStream, String> {
    use tokio_serial::SerialPort as _;
    let builder = tokio_serial::new(&line.path, line.baud)
        .parity(match line.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        })
        .data_bits(if line.data_bits == 7 {
            tokio_serial::DataBits::Seven
        } else {
            tokio_serial::DataBits::Eight
        })
        .stop_bits(if line.stop_bits == 2 {
            tokio_serial::StopBits::Two
        } else {
            tokio_serial::StopBits::One
        });
    let port = tokio_serial::SerialStream::open(&builder)
        .map_err(|e| format!("open {}: {e}", line.path))?;
    // A failure to flush is not fatal: the reopened port is still usable, and the read plan's
    // timeouts catch a stale frame.
    if let Err(e) = port.clear(tokio_serial::ClearBuffer::Input) {
        debug!(port = %line.path, error = %e, "Could not clear the serial input buffer.");
    }
    Ok(port)
}

async fn send(ctx: &mut Context, req: &ReadRequest) -> tokio_modbus::Result<Reply> {
    use super::config::Function;
    Ok(match req.function {
        Function::Coil => ctx.read_coils(req.start, req.count).await?.map(Reply::Bits),
        Function::Discrete => ctx
            .read_discrete_inputs(req.start, req.count)
            .await?
            .map(Reply::Bits),
        Function::Holding => ctx
            .read_holding_registers(req.start, req.count)
            .await?
            .map(Reply::Registers),
        Function::Input => ctx
            .read_input_registers(req.start, req.count)
            .await?
            .map(Reply::Registers),
    })
}

/// The next write, or never when there is no command channel (or it closed).
async fn next_write(rx: &mut Option<WriteRx>) -> WriteCommand {
    if let Some(r) = rx.as_mut() {
        if let Some(command) = r.recv().await {
            return command;
        }
        *rx = None;
    }
    std::future::pending().await
}

/// Send a write through tokio-modbus; the echo is checked by [`echo_error`].
async fn send_write(
    ctx: &mut Context,
    target: &WriteTarget,
) -> tokio_modbus::Result<tokio_modbus::Response> {
    use std::borrow::Cow;
    use tokio_modbus::client::Client as _;
    use tokio_modbus::Request;
    let request = match target {
        WriteTarget::Coil { address, on } => Request::WriteSingleCoil(*address, *on),
        WriteTarget::Register { address, value } => Request::WriteSingleRegister(*address, *value),
        WriteTarget::Registers { address, values } => {
            Request::WriteMultipleRegisters(*address, Cow::Owned(values.clone()))
        }
    };
    ctx.call(request).await
}

/// Why a write's reply is not its confirmation: FC 05 and 06 echo address and value, FC 16
/// address and quantity (V1.1b3 §6.5, §6.6, §6.12); tokio-modbus only `debug_assert`s it.
fn echo_error(target: &WriteTarget, response: &tokio_modbus::Response) -> Option<String> {
    use tokio_modbus::Response;
    let echoed = match (target, response) {
        (WriteTarget::Coil { address, on }, Response::WriteSingleCoil(a, c)) => {
            a == address && c == on
        }
        (WriteTarget::Register { address, value }, Response::WriteSingleRegister(a, v)) => {
            a == address && v == value
        }
        (WriteTarget::Registers { address, values }, Response::WriteMultipleRegisters(a, n)) => {
            a == address && usize::from(*n) == values.len()
        }
        _ => false,
    };
    (!echoed).then(|| format!("the reply {response:?} does not echo {target}"))
}

/// A static counter label per exception code (Modbus application protocol V1.1b3 §7).
fn exception_reason(code: u8) -> &'static str {
    match code {
        1 => "exception_01_illegal_function",
        2 => "exception_02_illegal_data_address",
        3 => "exception_03_illegal_data_value",
        4 => "exception_04_device_failure",
        5 => "exception_05_acknowledge",
        6 => "exception_06_busy",
        8 => "exception_08_memory_parity",
        10 => "exception_0a_gateway_path",
        11 => "exception_0b_gateway_target",
        _ => "exception_other",
    }
}
