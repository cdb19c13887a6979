//! A minimal Modbus RTU slave on a socat pty pair, written for these tests only.
//!
//! Owns the socat child (two linked ptys), a thread that answers FC 03/04 read requests from a
//! fixed register map, and a log of every request it received. It does not share code with the
//! gateway or the simulator, so a framing bug in the gateway cannot be mirrored here.
//!
//! Behaviour, per Modbus over serial line V1.02 and Modbus application protocol V1.1b3:
//! - A request for a unit the slave does not serve gets no answer (V1.02 §2.1).
//! - A read that touches an address missing from the unit's map is answered with exception 02,
//!   illegal data address (V1.1b3 §7), as many field devices do for unmapped holes.
//! - The answer to request number `n` (counted from 0 over all units) is delayed by
//!   `delay(n)`; the slave handles requests one at a time, in order, like a real device, so
//!   requests that arrive while it waits are answered afterwards.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

/// How long socat may take to create both pty links.
const SOCAT_START_TIMEOUT: Duration = Duration::from_secs(10);
/// Length of a FC 01..04 read request: unit, function, address (2), quantity (2), CRC (2)
/// (V1.1b3 §6.1–6.4, V1.02 §2.5.1.1).
const READ_REQUEST_LEN: usize = 8;
/// The slave thread stops after this many read calls, so it can never spin forever even if the
/// pty misbehaves.
const MAX_READS: usize = 1_000_000;

/// One request as the slave saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// When it was complete.
    pub at: Instant,
    /// Unit id.
    pub unit: u8,
    /// Function code.
    pub function: u8,
    /// First address.
    pub start: u16,
    /// Quantity.
    pub count: u16,
    /// The exception code answered, if any.
    pub exception: Option<u8>,
}

/// Register maps per unit: address → value. An address missing from a map is a hole.
pub type Units = BTreeMap<u8, BTreeMap<u16, u16>>;

/// A running slave; socat is killed on drop, which ends the slave thread.
pub struct RtuSlave {
    socat: Child,
    /// socat relaying a loopback TCP port to the gateway's pty (a serial device server).
    tcp_relay: Option<Child>,
    gateway_path: PathBuf,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl RtuSlave {
    /// Start socat in `dir` and a slave thread serving `units`, delaying answer `n` by
    /// `delay(n)`.
    pub fn start(
        dir: &Path,
        units: Units,
        delay: impl Fn(u64) -> Duration + Send + 'static,
    ) -> Result<Self> {
        let slave_path = dir.join("slave");
        let gateway_path = dir.join("gw");
        let arg = |p: &Path| format!("pty,raw,echo=0,link={}", p.display());
        let mut socat = Command::new("socat")
            .args([arg(&slave_path), arg(&gateway_path)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn socat (apt-get install socat)")?;
        let deadline = Instant::now() + SOCAT_START_TIMEOUT;
        while !(slave_path.exists() && gateway_path.exists()) {
            if Instant::now() > deadline {
                let _ = socat.kill();
                let _ = socat.wait();
                bail!("socat did not create the ptys within {SOCAT_START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let port = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&slave_path)
            .with_context(|| format!("open {}", slave_path.display()))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let thread_log = Arc::clone(&log);
        std::thread::spawn(move || serve(port, &units, &delay, &thread_log));
        Ok(Self {
            socat,
            tcp_relay: None,
            gateway_path,
            log,
        })
    }

    /// Make the slave reachable as a serial device server on 127.0.0.1 (RTU over TCP): socat
    /// relays each TCP connection to the gateway's end of the pty pair. Returns `host:port`.
    pub fn expose_tcp(&mut self) -> Result<String> {
        let port = anju_system::free_port()?;
        let mut relay = Command::new("socat")
            .args([
                format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"),
                format!("FILE:{},raw,echo=0", self.gateway_path.display()),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn socat TCP relay")?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        // Not `wait_for_port`: its probe connection would fork a relay child that opens the pty
        // too, and while it lingers it reads the slave's replies meant for the gateway's
        // connection (under load the test saw 1-2 requests in 15 s). Wait for the listening
        // socket in /proc/net/tcp instead (state 0A = LISTEN).
        let deadline = Instant::now() + Duration::from_secs(10);
        let needle = format!("0100007F:{port:04X} 00000000:0000 0A");
        loop {
            let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
            if table.contains(&needle) {
                break;
            }
            if let Some(status) = relay.try_wait()? {
                bail!("socat TCP relay exited with {status} before listening on {addr}");
            }
            if Instant::now() > deadline {
                bail!("socat TCP relay did not listen on {addr} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.tcp_relay = Some(relay);
        Ok(addr.to_string())
    }

    /// The pty the gateway opens.
    pub fn gateway_path(&self) -> &Path {
        &self.gateway_path
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for RtuSlave {
    fn drop(&mut self) {
        if let Some(mut relay) = self.tcp_relay.take() {
            let _ = relay.kill();
            let _ = relay.wait();
        }
        let _ = self.socat.kill();
        let _ = self.socat.wait();
    }
}

/// CRC-16/Modbus (V1.02 §6.2.2): polynomial 0xA001 reflected, initial 0xFFFF, sent low byte
/// first.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

fn with_crc(mut frame: Vec<u8>) -> Vec<u8> {
    let crc = crc16(&frame);
    frame.extend_from_slice(&crc.to_le_bytes());
    frame
}

fn serve(
    mut port: std::fs::File,
    units: &Units,
    delay: &dyn Fn(u64) -> Duration,
    log: &Mutex<Vec<Seen>>,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 256];
    let mut n: u64 = 0;
    for _ in 0..MAX_READS {
        let got = match port.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(got) => got,
        };
        buf.extend_from_slice(&chunk[..got]);
        while buf.len() >= READ_REQUEST_LEN {
            let frame: Vec<u8> = buf.drain(..READ_REQUEST_LEN).collect();
            if crc16(&frame) != 0 {
                // Out of step (the gateway only sends 8-byte reads): drop everything buffered.
                buf.clear();
                break;
            }
            let (unit, function) = (frame[0], frame[1]);
            let start = u16::from_be_bytes([frame[2], frame[3]]);
            let count = u16::from_be_bytes([frame[4], frame[5]]);
            let Some(map) = units.get(&unit) else {
                continue;
            };
            let values: Option<Vec<u16>> = (0..count)
                .map(|i| start.checked_add(i).and_then(|a| map.get(&a).copied()))
                .collect();
            let (reply, exception) = match (function, values) {
                (3 | 4, Some(v)) if (1..=125).contains(&count) => {
                    let mut r = vec![unit, function, (2 * v.len()) as u8];
                    for w in v {
                        r.extend_from_slice(&w.to_be_bytes());
                    }
                    (with_crc(r), None)
                }
                (3 | 4, _) => (with_crc(vec![unit, function | 0x80, 2]), Some(2)),
                _ => (with_crc(vec![unit, function | 0x80, 1]), Some(1)),
            };
            log.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(Seen {
                    at: Instant::now(),
                    unit,
                    function,
                    start,
                    count,
                    exception,
                });
            std::thread::sleep(delay(n));
            n += 1;
            if port.write_all(&reply).is_err() {
                return;
            }
        }
    }
}

#[test]
fn crc_of_the_spec_example() {
    // V1.02 §6.2.2 worked example style check against a well-known frame: read holding
    // registers of unit 1, address 0, quantity 1 → CRC 0x0A84, sent 84 0A.
    assert_eq!(crc16(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x01]), 0x0A84);
}
