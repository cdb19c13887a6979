//! `gateway run` under a service manager, as systemd runs it (packaging/anju-gateway.service:
//! `Type=notify`, `WatchdogSec=`): the real binary with `NOTIFY_SOCKET` pointing at a socket this
//! test reads, and `WATCHDOG_USEC` set. It must say `READY=1` once started, send `WATCHDOG=1`
//! while its engine turns, `RELOADING=1` (with `MONOTONIC_USEC`) and `READY=1` around a reload on
//! SIGHUP (`ExecReload=`), refusing a file that needs a restart and applying a valid change, and
//! `STOPPING=1` on SIGTERM, then exit 0; and its log, a file here as the journal's pipe is there,
//! must carry no ANSI colour codes. Started without `MALLOC_ARENA_MAX`, it must run with it set
//! to 1 (one glibc heap; main.rs).
//!
//! Owns that end-to-end check only; when keep-alives are withheld is `src/systemd.rs`'s unit test.

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The watchdog period the test claims systemd set: keep-alives every 2 s, twice the engine's
/// tick, so the first look already finds the engine turned.
const WATCHDOG_USEC: &str = "4000000";
/// Longest wait for any one notification (the debug binary on a loaded machine).
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);

/// Kills the gateway if the test fails before it stopped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait for a datagram holding `wanted` (a line such as `READY=1`); every datagram seen before it
/// is returned too, for the failure message.
fn wait_for(socket: &UnixDatagram, wanted: &str, seen: &mut Vec<String>) -> bool {
    let deadline = Instant::now() + NOTIFY_TIMEOUT;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let found = text.lines().any(|l| l == wanted);
                seen.push(text);
                if found {
                    return true;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading the notify socket: {e}"),
        }
    }
    false
}

#[test]
fn run_says_ready_keeps_the_watchdog_fed_reloads_on_sighup_and_says_stopping() {
    let dir = tempfile::tempdir().expect("temp dir");
    // An MQTT source whose broker is not there: it retries, so the gateway (and its engine)
    // runs until told to stop, and nothing outside the test is touched.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = dir.path().join("gateway.toml");
    let text = format!(
        r#"
site = "notify-test"
gateway_id = "gw-notify"
data_dir = "{data}"

[console]
enabled = false

[[mqtt]]
name = "absent"
address = "127.0.0.1:{closed_port}"

[[mqtt.subscriptions]]
name = "nodes"
topic = "t/{{device}}/up"
point = "t"
quantity = "temperature"
unit = "°C"
payload = {{ format = "plain" }}
"#,
        data = dir.path().join("data").display()
    );
    std::fs::write(&config, &text).expect("write config");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("socket timeout");
    let log = std::fs::File::create(dir.path().join("gateway.log")).expect("log file");

    let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["run", "-c"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", WATCHDOG_USEC)
        .env_remove("WATCHDOG_PID")
        .env_remove("MALLOC_ARENA_MAX")
        .env("ANJU_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the gateway");
    let mut gateway = Running(child);
    let log_text = || std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();

    let mut seen = Vec::new();
    assert!(
        wait_for(&socket, "READY=1", &mut seen),
        "no READY=1; received {seen:?}; log:\n{}",
        log_text()
    );
    assert!(
        wait_for(&socket, "WATCHDOG=1", &mut seen),
        "no WATCHDOG=1; received {seen:?}; log:\n{}",
        log_text()
    );

    let pid = gateway.0.id().to_string();
    // Started without MALLOC_ARENA_MAX, it runs with one glibc heap (main.rs `one_malloc_heap`:
    // an exec of itself, same process id, so the READY=1 above came through it).
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("read its environment");
    assert!(
        environ
            .split(|&b| b == 0)
            .any(|v| v == b"MALLOC_ARENA_MAX=1"),
        "the gateway runs without MALLOC_ARENA_MAX=1: {}",
        String::from_utf8_lossy(&environ).replace('\0', " ")
    );
    let signal = |name: &str| {
        let sent = Command::new("kill")
            .args([name, &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill {name} {pid}");
    };
    // A reload the gateway must refuse (the spool is open in data_dir), then one it applies (a
    // unit changed: the source is restarted). Each: RELOADING=1 with its time, then READY=1.
    for (edit, logged) in [
        (
            ("/data\"", "/elsewhere\""),
            "restart the service to change data_dir",
        ),
        (("unit = \"°C\"", "unit = \"K\""), "Config reloaded."),
    ] {
        std::fs::write(&config, text.replace(edit.0, edit.1)).expect("write config");
        signal("-HUP");
        assert!(
            wait_for(&socket, "RELOADING=1", &mut seen),
            "no RELOADING=1; received {seen:?}; log:\n{}",
            log_text()
        );
        let reloading = seen.last().cloned().unwrap_or_default();
        assert!(
            reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
            "RELOADING=1 without MONOTONIC_USEC (systemd 253+ fails the reload): {reloading:?}"
        );
        assert!(
            wait_for(&socket, "READY=1", &mut seen),
            "no READY=1 after the reload; received {seen:?}; log:\n{}",
            log_text()
        );
        assert!(
            log_text().contains(logged),
            "no {logged:?} in the log:\n{}",
            log_text()
        );
    }
    signal("-TERM");
    assert!(
        wait_for(&socket, "STOPPING=1", &mut seen),
        "no STOPPING=1; received {seen:?}; log:\n{}",
        log_text()
    );
    let deadline = Instant::now() + NOTIFY_TIMEOUT;
    let status = loop {
        if let Some(status) = gateway.0.try_wait().expect("wait for the gateway") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not exit after SIGTERM; log:\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        log_text()
    );
    // The journal takes stderr as a pipe, as this file does: plain text, no colour codes.
    let log = log_text();
    assert!(log.contains("Gateway starting."), "log:\n{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape codes in a log that is no terminal:\n{log}"
    );
}
