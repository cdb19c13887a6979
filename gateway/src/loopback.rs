//! Free TCP ports on 127.0.0.1 for the tests, the benchmarks and the demo, which start servers
//! (mosquitto, VictoriaMetrics, the embedded broker, the console) on ports chosen beforehand.
//!
//! Owns how such a port is chosen; not used by the daemon itself, which listens where its
//! config says. A port found free by binding port 0 and releasing it comes from the kernel's
//! ephemeral range, the same range every outgoing connection's local port and every other
//! `bind(0)` draws from, so with many tests in parallel another socket could take it before the
//! server bound it (a TLS broker test failed once with `AddrInUse`). These ports come from below
//! that range instead (Linux's default is 32768-60999, `/proc/sys/net/ipv4/ip_local_port_range`),
//! where nothing is handed out by the kernel, each one checked free by binding it.

use std::sync::atomic::{AtomicU32, Ordering};

/// First port handed out.
pub const FIRST_PORT: u16 = 20_000;
/// Last port handed out: just below Linux's default ephemeral range.
pub const LAST_PORT: u16 = 32_767;

/// Ports handed out so far by this process; the sequence starts at an offset taken from the
/// process id, so that test processes running side by side walk different ports.
static HANDED_OUT: AtomicU32 = AtomicU32::new(0);

/// A TCP port on 127.0.0.1 that was free when checked, not handed out before by this process
/// (until all [`FIRST_PORT`]..=[`LAST_PORT`] have been).
///
/// # Errors
/// When no port of the range can be bound.
pub fn free_port() -> std::io::Result<u16> {
    let span = u32::from(LAST_PORT - FIRST_PORT) + 1;
    let offset = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = HANDED_OUT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST_PORT + u16::try_from((offset + n) % span).unwrap_or(0);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrNotAvailable,
        format!("no free port on 127.0.0.1 in {FIRST_PORT}-{LAST_PORT}"),
    ))
}

/// [`free_port`] for this crate's own tests, which have no use for the error.
#[cfg(test)]
pub(crate) fn test_port() -> u16 {
    free_port().expect("a free port on 127.0.0.1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_distinct_and_bindable() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().expect("a port")).collect();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        for port in ports {
            assert!((FIRST_PORT..=LAST_PORT).contains(&port));
            // Still free: nothing of ours holds it.
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("bindable");
        }
    }

    #[test]
    fn a_port_in_use_is_skipped() {
        let next = free_port().expect("a port");
        // Hold the next one or two the sequence would give, then ask again.
        let held: Vec<_> = (1..=2)
            .filter_map(|k| std::net::TcpListener::bind(("127.0.0.1", next + k)).ok())
            .collect();
        let got = free_port().expect("a port");
        for l in &held {
            assert_ne!(Some(got), l.local_addr().ok().map(|a| a.port()));
        }
    }
}
