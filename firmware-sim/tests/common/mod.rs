//! Test helpers: a client-side decoder written separately from the simulator's encoder, and
//! timeouts around every client call (tokio-modbus has none of its own).

#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use firmware_sim::profile::{DataType, Point, WordOrder};

/// Longest wait for one Modbus reply in the tests (loopback answers in well under 1 ms).
pub const REPLY_TIMEOUT: Duration = Duration::from_millis(500);
/// Wait used where silence is expected.
pub const SILENCE_TIMEOUT: Duration = Duration::from_millis(300);

/// Runs `f` with [`REPLY_TIMEOUT`], panicking with `what` on timeout.
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(REPLY_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no reply within {REPLY_TIMEOUT:?}"))
}

/// The repository root (firmware-sim's parent).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Wire bytes (register by register, high byte first) back to the value's big-endian bytes.
/// Formulated per order as a byte permutation: `dcba` is the byte array reversed, `cdab` the
/// words reversed, `badc` the bytes of each word swapped.
fn be_bytes(regs: &[u16], order: WordOrder) -> Vec<u8> {
    let wire: Vec<u8> = regs
        .iter()
        .flat_map(|r| [(r >> 8) as u8, (r & 0xFF) as u8])
        .collect();
    if regs.len() == 1 {
        return wire;
    }
    match order {
        WordOrder::Abcd => wire,
        WordOrder::Dcba => wire.into_iter().rev().collect(),
        WordOrder::Cdab => wire.chunks(2).rev().flatten().copied().collect(),
        WordOrder::Badc => wire.chunks(2).flat_map(|w| [w[1], w[0]]).collect(),
    }
}

/// Decodes a point from the registers starting at its address (bits as 0/1 words).
pub fn decode(point: &Point, regs: &[u16]) -> f64 {
    if let Some(bit) = point.bit {
        return f64::from((regs[0] >> bit) & 1);
    }
    let b = be_bytes(
        &regs[..usize::from(point.data_type.registers())],
        point.word_order,
    );
    let raw = match point.data_type {
        DataType::Bool => return f64::from(regs[0] & 1),
        DataType::U16 => f64::from(u16::from_be_bytes([b[0], b[1]])),
        DataType::I16 => f64::from(i16::from_be_bytes([b[0], b[1]])),
        DataType::U32 => f64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        DataType::I32 => f64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        DataType::F32 => f64::from(f32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        DataType::U64 => u64::from_be_bytes(b[..8].try_into().expect("8 bytes")) as f64,
        DataType::I64 => i64::from_be_bytes(b[..8].try_into().expect("8 bytes")) as f64,
        DataType::F64 => f64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
    };
    raw * point.scale + point.offset
}

/// Decodes a u32 sample time.
pub fn decode_time(regs: &[u16], order: WordOrder) -> i64 {
    let b = be_bytes(&regs[..2], order);
    i64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The mosquitto binary the MQTT tests run (installed by `tests/run.sh`).
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";
/// Longest wait for the broker, a publisher or a subscriber.
pub const MQTT_WAIT: Duration = Duration::from_secs(10);

/// mosquitto, killed (by its own handle) on drop.
pub struct Broker(std::process::Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port (bound and released; the broker takes it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Starts mosquitto on `port` with its config in `dir`; fails (does not skip) when it is not
/// installed.
pub async fn start_broker_on(dir: &std::path::Path, port: u16) -> (Broker, std::net::SocketAddr) {
    assert!(
        std::path::Path::new(MOSQUITTO).exists(),
        "{MOSQUITTO} not installed: run `bash tests/run.sh`, which installs it"
    );
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
    )
    .expect("conf");
    let child = std::process::Command::new(MOSQUITTO)
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn mosquitto");
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let broker = Broker(child);
    let deadline = tokio::time::Instant::now() + MQTT_WAIT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "mosquitto did not listen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (broker, addr)
}

/// Starts mosquitto on a free port.
pub async fn start_broker(dir: &std::path::Path) -> (Broker, std::net::SocketAddr) {
    start_broker_on(dir, free_port()).await
}

/// The gateway side of an RTU bus as a tokio-modbus client on `unit`.
pub fn open_rtu(path: &std::path::Path, unit: u8) -> tokio_modbus::client::Context {
    use tokio_serial::SerialPortBuilderExt;
    let port = tokio_serial::new(path.to_string_lossy(), 9600)
        .open_native_async()
        .expect("open gateway side");
    tokio_modbus::client::rtu::attach_slave(port, tokio_modbus::Slave(unit))
}
