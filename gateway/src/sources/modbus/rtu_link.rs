//! One RTU request/reply exchange at a time on a byte stream: a local serial port or a TCP
//! socket to a serial device server.
//!
//! Owns the receive buffer, the silences required between frames, draining the line after a
//! failed exchange, the list of requests still possibly answered late, and the record of every
//! frame it discarded (for the poller to count). It does not decide what to read or retry
//! ([`super::poller`]) and does not know the frame layout beyond [`super::rtu_frame`].
//!
//! Why: RTU has no transaction id (Modbus over serial line V1.02 §2.5.1.1 frames carry only
//! unit, function, data, CRC). A slave that answers after our timeout puts its answer on the
//! line while we wait for the answer to the next request, and a frame of the same unit,
//! function and length would then be stored as the next request's value: silent wrong data.
//! The defences, in order:
//! 1. Every reply is checked against its request ([`check_reply`]): CRC, unit, function,
//!    byte count = 2 × registers or ⌈bits / 8⌉.
//! 2. Before a request, whatever is on the line is read and discarded until it has been silent
//!    for t3.5 (V1.02 §2.5.1.1 requires that silence before a frame anyway).
//! 3. After a timeout or a garbled reply, the line is drained until it has been silent for the
//!    device's whole reply timeout (the slave had that long to start answering; a reply later
//!    than two timeouts after its request is the slave's fault), at most
//!    [`DRAIN_MAX_TIMEOUTS`] timeouts in all.
//! 4. A request that timed out stays *pending* for [`LATE_REPLY_HORIZON_TIMEOUTS`] timeouts.
//!    A frame that fits a pending request is that request's late reply and is discarded, even
//!    when it also fits the request in flight (a slave answers in order, so the older request
//!    is answered first). An accepted reply from a unit ends all its pending requests, since
//!    the slave will not answer an older request after a newer one.
//!
//! Limit: a reply arriving more than [`LATE_REPLY_HORIZON_TIMEOUTS`] timeouts after its request,
//! with the same unit, function and byte count as the request then in flight, cannot be told
//! apart from that request's answer; a device's timeout must be within that factor of its
//! slowest answer.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::time::{timeout_at, Instant};

use super::rtu_frame::{
    check_echo, check_reply, crc16, frame_len, Answer, Echo, Expect, Mismatch, NotAReply,
    MAX_FRAME_LEN,
};

/// How many timeouts after its request a timed-out request may still be answered late and have
/// its answer recognised and discarded. Long enough for a slave that is ten times slower than
/// configured; short enough that a request the slave never answered (a frame lost to noise)
/// stops shadowing requests of the same shape soon.
pub const LATE_REPLY_HORIZON_TIMEOUTS: u32 = 10;
/// Upper bound on one drain after a failure, in device timeouts: a line that never falls silent
/// (a babbling slave, another master) must not stop the poller; defence 4 still applies.
pub const DRAIN_MAX_TIMEOUTS: u32 = 3;
/// Most requests kept pending at once; older ones are forgotten first. A bus rarely has more
/// than a few devices timing out in one horizon.
pub const MAX_PENDING: usize = 32;
/// The receive buffer never holds more than this: a longer run of bytes without a complete
/// frame is noise and is dropped.
const MAX_BUFFERED: usize = 4 * MAX_FRAME_LEN;
/// Most frames handled in one exchange or drain, so a flood of frames cannot keep one
/// exchange running past its deadline checks.
const MAX_FRAMES_PER_CALL: usize = 1_000;

/// A byte stream an RTU link can run on.
pub trait RtuIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> RtuIo for T {}

/// Why a frame was discarded, as a static counter label.
pub mod reason {
    /// A frame that fits a request which had already timed out.
    pub const LATE_REPLY: &str = "late_reply";
    /// A well-formed frame that fits neither the request in flight nor a pending one.
    pub const MISMATCHED_REPLY: &str = "mismatched_reply";
    /// Bytes that do not form a frame, or a frame with a bad CRC.
    pub const GARBLED: &str = "garbled";
}

/// One discarded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discard {
    /// The unit id in the frame (may be noise).
    pub frame_unit: Option<u8>,
    /// The unit whose exchange was running when it was discarded.
    pub inflight_unit: u8,
    /// One of [`reason`].
    pub reason: &'static str,
    /// What was wrong with it, for the log.
    pub detail: Option<Mismatch>,
}

/// How an exchange failed.
#[derive(Debug)]
pub enum ExchangeError {
    /// No matching reply within the timeout.
    Timeout,
    /// A garbled frame arrived where the reply was due.
    Garbled,
    /// The stream failed or closed; reopen it.
    Io(io::Error),
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => write!(f, "no matching reply in time"),
            Self::Garbled => write!(f, "garbled reply"),
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

#[derive(Debug)]
struct Pending {
    expect: Expect,
    until: Instant,
}

/// The requests of a closed link that may still be answered late (see the module doc), handed
/// to the link that replaces it: a device server may deliver them on the new connection, and a
/// reopened serial port on the same wire will receive them.
#[derive(Debug, Default)]
pub struct PendingRequests(VecDeque<Pending>);

/// An RTU master on one stream.
pub struct RtuLink {
    io: Box<dyn RtuIo>,
    buf: Vec<u8>,
    /// t3.5 of the line (V1.02 §2.5.1.1).
    gap: Duration,
    pending: VecDeque<Pending>,
    discards: Vec<Discard>,
}

impl std::fmt::Debug for RtuLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtuLink")
            .field("gap", &self.gap)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl RtuLink {
    /// A link on `io`, whose line needs `gap` (t3.5) of silence between frames.
    #[must_use]
    pub fn new(io: Box<dyn RtuIo>, gap: Duration) -> Self {
        Self {
            io,
            buf: Vec::with_capacity(MAX_BUFFERED),
            gap,
            pending: VecDeque::new(),
            discards: Vec::new(),
        }
    }

    /// Close the link, keeping the requests that may still be answered late.
    #[must_use]
    pub fn into_pending(self) -> PendingRequests {
        PendingRequests(self.pending)
    }

    /// Take over the pending requests of a closed link.
    pub fn inherit_pending(&mut self, old: PendingRequests) {
        self.pending = old.0;
    }

    /// The frames discarded since the last call.
    pub fn take_discards(&mut self) -> Vec<Discard> {
        std::mem::take(&mut self.discards)
    }

    /// Send `expect`'s request and return its checked reply, waiting at most `wait` for it.
    ///
    /// # Errors
    /// [`ExchangeError`]; after a timeout or a garbled reply the line has been drained.
    pub async fn exchange(
        &mut self,
        expect: Expect,
        wait: Duration,
    ) -> Result<Answer, ExchangeError> {
        let now = Instant::now();
        self.pending.retain(|p| p.until > now);
        // Defence 2: discard what is on the line and leave t3.5 of silence before sending.
        self.drain(self.gap, wait, expect.unit).await?;
        let sent = Instant::now();
        let deadline = sent + wait;
        let request = expect.request();
        match timeout_at(deadline, async {
            self.io.write_all(&request).await?;
            self.io.flush().await
        })
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ExchangeError::Io(e)),
            Err(_) => return self.fail(expect, sent, wait, ExchangeError::Timeout).await,
        }
        for _ in 0..MAX_FRAMES_PER_CALL {
            let frame = match self.next_frame(deadline).await {
                Ok(Some(frame)) => frame,
                Ok(None) => return self.fail(expect, sent, wait, ExchangeError::Timeout).await,
                Err(ReadError::Garbled) => {
                    self.record(None, expect.unit, reason::GARBLED, None);
                    return self.fail(expect, sent, wait, ExchangeError::Garbled).await;
                }
                Err(ReadError::Io(e)) => return Err(ExchangeError::Io(e)),
            };
            match self.classify(&frame, Some(&expect)) {
                Verdict::Answer(answer) => {
                    // Defence 4: the unit answered this request, so it will not answer an older one.
                    self.pending.retain(|p| p.expect.unit != expect.unit);
                    return Ok(answer);
                }
                Verdict::Garbled => {
                    return self.fail(expect, sent, wait, ExchangeError::Garbled).await;
                }
                // Discarded and recorded; keep waiting for our reply until the deadline.
                Verdict::Discarded => {}
            }
        }
        self.fail(expect, sent, wait, ExchangeError::Timeout).await
    }

    /// Send a write's `request` and return its checked echo ([`check_echo`]) or exception,
    /// waiting at most `wait`. The same line discipline as [`Self::exchange`]: t3.5 of silence
    /// before, late replies of pending reads discarded and recorded, the line drained after a
    /// failure. A write that timed out is not kept pending: its late echo can fit no read, so it
    /// is discarded as a mismatched reply.
    ///
    /// # Errors
    /// [`ExchangeError`]; after a timeout or a garbled reply the line has been drained.
    pub async fn exchange_write(
        &mut self,
        echo: Echo,
        request: &[u8],
        wait: Duration,
    ) -> Result<Answer, ExchangeError> {
        let now = Instant::now();
        self.pending.retain(|p| p.until > now);
        self.drain(self.gap, wait, echo.unit).await?;
        let deadline = Instant::now() + wait;
        let outcome = match timeout_at(deadline, async {
            self.io.write_all(request).await?;
            self.io.flush().await
        })
        .await
        {
            Ok(Ok(())) => self.await_echo(&echo, deadline).await,
            Ok(Err(e)) => Err(ExchangeError::Io(e)),
            Err(_) => Err(ExchangeError::Timeout),
        };
        match outcome {
            Err(failed @ (ExchangeError::Timeout | ExchangeError::Garbled)) => {
                self.drain(wait, wait.saturating_mul(DRAIN_MAX_TIMEOUTS), echo.unit)
                    .await?;
                Err(failed)
            }
            other => other,
        }
    }

    /// Read frames until `echo`'s reply (or an exception), discarding and recording the
    /// others, until `deadline`.
    async fn await_echo(
        &mut self,
        echo: &Echo,
        deadline: Instant,
    ) -> Result<Answer, ExchangeError> {
        for _ in 0..MAX_FRAMES_PER_CALL {
            let frame = match self.next_frame(deadline).await {
                Ok(Some(frame)) => frame,
                Ok(None) => return Err(ExchangeError::Timeout),
                Err(ReadError::Garbled) => {
                    self.record(None, echo.unit, reason::GARBLED, None);
                    return Err(ExchangeError::Garbled);
                }
                Err(ReadError::Io(e)) => return Err(ExchangeError::Io(e)),
            };
            if let Ok(answer) = check_echo(&frame, echo) {
                // The unit answered this request, so it will not answer an older one.
                self.pending.retain(|p| p.expect.unit != echo.unit);
                return Ok(answer);
            }
            if matches!(self.classify(&frame, None), Verdict::Garbled) {
                return Err(ExchangeError::Garbled);
            }
        }
        Err(ExchangeError::Timeout)
    }

    /// Remember `expect` as possibly answered late, drain the line, and return `err`.
    async fn fail(
        &mut self,
        expect: Expect,
        sent: Instant,
        wait: Duration,
        err: ExchangeError,
    ) -> Result<Answer, ExchangeError> {
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(Pending {
            expect,
            until: sent + wait.saturating_mul(LATE_REPLY_HORIZON_TIMEOUTS),
        });
        // Defence 3.
        self.drain(wait, wait.saturating_mul(DRAIN_MAX_TIMEOUTS), expect.unit)
            .await?;
        Err(err)
    }

    /// Read and discard frames until the line has been silent for `quiet`, or `max` has passed.
    async fn drain(
        &mut self,
        quiet: Duration,
        max: Duration,
        inflight_unit: u8,
    ) -> Result<(), ExchangeError> {
        let end = Instant::now() + max;
        for _ in 0..MAX_FRAMES_PER_CALL {
            // Whole frames already buffered.
            while let Ok(Some(len)) = frame_len(&self.buf) {
                if self.buf.len() < len {
                    break;
                }
                let frame: Vec<u8> = self.buf.drain(..len).collect();
                let _ = self.classify(&frame, None);
            }
            if frame_len(&self.buf).is_err() {
                self.record(None, inflight_unit, reason::GARBLED, None);
                self.buf.clear();
            }
            let now = Instant::now();
            if now >= end {
                break;
            }
            let until = (now + quiet).min(end);
            match self.read_some(until).await {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return Err(ExchangeError::Io(e)),
            }
        }
        if !self.buf.is_empty() {
            // A partial frame followed by silence: noise or a frame cut short.
            self.record(
                self.buf.first().copied(),
                inflight_unit,
                reason::GARBLED,
                None,
            );
            self.buf.clear();
        }
        Ok(())
    }

    /// Sort out one complete frame: the answer to `expect` (the request in flight, if any), or
    /// a discarded and recorded late, mismatched or garbled frame.
    fn classify(&mut self, frame: &[u8], expect: Option<&Expect>) -> Verdict {
        let inflight = expect.map_or(0, |e| e.unit);
        if crc16(frame) != 0 {
            self.record(
                frame.first().copied(),
                inflight,
                reason::GARBLED,
                Some(Mismatch::BadCrc),
            );
            return Verdict::Garbled;
        }
        // Defence 4: a frame fitting a pending request is that request's late reply, even when
        // it fits the one in flight too.
        if let Some(i) = self
            .pending
            .iter()
            .position(|p| check_reply(frame, &p.expect).is_ok())
        {
            let unit = self.pending[i].expect.unit;
            // The slave answered pending request i; it will not answer its older ones.
            let mut k = 0;
            self.pending.retain(|p| {
                let keep = k > i || p.expect.unit != unit;
                k += 1;
                keep
            });
            self.record(Some(unit), inflight, reason::LATE_REPLY, None);
            return Verdict::Discarded;
        }
        let Some(expect) = expect else {
            self.record(
                frame.first().copied(),
                inflight,
                reason::MISMATCHED_REPLY,
                None,
            );
            return Verdict::Discarded;
        };
        match check_reply(frame, expect) {
            Ok(answer) => Verdict::Answer(answer),
            Err(m) => {
                self.record(
                    frame.first().copied(),
                    inflight,
                    reason::MISMATCHED_REPLY,
                    Some(m),
                );
                Verdict::Discarded
            }
        }
    }

    fn record(
        &mut self,
        frame_unit: Option<u8>,
        inflight_unit: u8,
        reason: &'static str,
        detail: Option<Mismatch>,
    ) {
        self.discards.push(Discard {
            frame_unit,
            inflight_unit,
            reason,
            detail,
        });
    }

    /// The next complete frame, `Ok(None)` at the deadline.
    async fn next_frame(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>, ReadError> {
        for _ in 0..MAX_FRAMES_PER_CALL {
            match frame_len(&self.buf) {
                Ok(Some(len)) if self.buf.len() >= len => {
                    return Ok(Some(self.buf.drain(..len).collect()));
                }
                Ok(_) => {}
                Err(NotAReply) => {
                    self.buf.clear();
                    return Err(ReadError::Garbled);
                }
            }
            match self.read_some(deadline).await {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
        Ok(None)
    }

    /// Read what arrives before `until` into the buffer: `Ok(false)` if nothing did.
    async fn read_some(&mut self, until: Instant) -> io::Result<bool> {
        let mut chunk = [0u8; MAX_FRAME_LEN];
        match timeout_at(until, self.io.read(&mut chunk)).await {
            Err(_) => Ok(false),
            Ok(Ok(0)) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the line was closed",
            )),
            Ok(Ok(n)) => {
                if self.buf.len() + n > MAX_BUFFERED {
                    self.record(None, 0, reason::GARBLED, None);
                    self.buf.clear();
                }
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Ok(Err(e)) => Err(e),
        }
    }
}

/// What a complete frame turned out to be.
enum Verdict {
    /// The checked reply to the request in flight.
    Answer(Answer),
    /// A late or mismatched frame, recorded and dropped.
    Discarded,
    /// A frame with a bad CRC, recorded and dropped.
    Garbled,
}

enum ReadError {
    Garbled,
    Io(io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::modbus::config::Function;

    /// Timeout of the exchanges in these tests.
    const WAIT: Duration = Duration::from_millis(50);

    fn holding(start: u16, count: u16) -> Expect {
        Expect {
            unit: 1,
            function: Function::Holding,
            start,
            count,
        }
    }

    fn reply(words: &[u16]) -> Vec<u8> {
        let mut f = vec![1, 3, u8::try_from(2 * words.len()).unwrap_or(0)];
        for w in words {
            f.extend_from_slice(&w.to_be_bytes());
        }
        let crc = crc16(&f);
        f.extend_from_slice(&crc.to_le_bytes());
        f
    }

    #[tokio::test]
    async fn a_late_reply_of_the_same_shape_is_not_taken_for_the_next_request() {
        let (ours, mut slave) = tokio::io::duplex(1024);
        let mut link = RtuLink::new(Box::new(ours), Duration::from_millis(2));
        let slave_task = tokio::spawn(async move {
            let mut req = [0u8; 8];
            // Request p03 (register 6): no answer in time.
            slave.read_exact(&mut req).await?;
            let p03 = req;
            // Request p04 (register 8): first the late answer to p03, then a 2-register frame
            // that fits neither, then the answer to p04.
            slave.read_exact(&mut req).await?;
            slave.write_all(&reply(&[0x1003])).await?;
            slave.write_all(&reply(&[0x68E7, 0x1234])).await?;
            slave.write_all(&reply(&[0x1004])).await?;
            io::Result::Ok((p03, req))
        });
        let p03 = link.exchange(holding(6, 1), WAIT).await;
        assert!(matches!(p03, Err(ExchangeError::Timeout)));
        let p04 = link.exchange(holding(8, 1), WAIT).await;
        assert_eq!(p04.ok(), Some(Answer::Registers(vec![0x1004])));
        let reasons: Vec<_> = link.take_discards().iter().map(|d| d.reason).collect();
        assert_eq!(reasons, vec![reason::LATE_REPLY, reason::MISMATCHED_REPLY]);
        let sent = slave_task.await.ok().and_then(Result::ok);
        assert_eq!(
            sent,
            Some((holding(6, 1).request(), holding(8, 1).request()))
        );
    }

    #[tokio::test]
    async fn a_late_reply_during_the_drain_is_discarded_and_counted() {
        let (ours, mut slave) = tokio::io::duplex(1024);
        let mut link = RtuLink::new(Box::new(ours), Duration::from_millis(2));
        let slave_task = tokio::spawn(async move {
            let mut req = [0u8; 8];
            slave.read_exact(&mut req).await?;
            // Answer 1.5 timeouts late: inside the drain that follows the timeout.
            tokio::time::sleep(WAIT * 3 / 2).await;
            slave.write_all(&reply(&[0x0777])).await?;
            slave.read_exact(&mut req).await?;
            slave.write_all(&reply(&[0x0888])).await?;
            io::Result::Ok(())
        });
        assert!(matches!(
            link.exchange(holding(0, 1), WAIT).await,
            Err(ExchangeError::Timeout)
        ));
        let reasons: Vec<_> = link.take_discards().iter().map(|d| d.reason).collect();
        assert_eq!(reasons, vec![reason::LATE_REPLY]);
        assert_eq!(
            link.exchange(holding(2, 1), WAIT).await.ok(),
            Some(Answer::Registers(vec![0x0888]))
        );
        assert!(slave_task.await.is_ok_and(|r| r.is_ok()));
    }
}
