//! A virtual serial cable: two linked pseudo-terminals made by socat.
//!
//! Owns the socat child process and the two symlinks `<dir>/sim` (the simulator's end) and
//! `<dir>/gw` (the gateway's end). socat is killed when the [`PtyPair`] is dropped. A pty
//! ignores the baud rate, so timing on it is far faster than a real RS-485 line. It does not
//! speak Modbus ([`crate::rtu`]) nor decide where pairs are made ([`crate::site`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long to wait for socat to create both links.
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Poll step while waiting for the links.
const POLL_STEP: Duration = Duration::from_millis(10);
/// Name of the simulator's link inside the directory.
pub const SIM_LINK: &str = "sim";
/// Name of the gateway's link inside the directory.
pub const GATEWAY_LINK: &str = "gw";

/// Errors making a pty pair.
#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    /// socat is not installed.
    #[error("socat not found: apt-get install socat")]
    SocatMissing,
    /// socat could not be started.
    #[error("cannot start socat: {0}")]
    Spawn(std::io::Error),
    /// The directory could not be prepared.
    #[error("{}: {source}", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// socat exited before the links appeared.
    #[error("socat exited early ({status}) while creating ptys in {}", dir.display())]
    Exited {
        /// The directory.
        dir: PathBuf,
        /// Its exit status.
        status: std::process::ExitStatus,
    },
    /// The links did not appear in time.
    #[error("socat did not create {}/{{{SIM_LINK},{GATEWAY_LINK}}} within {SPAWN_TIMEOUT:?}", dir.display())]
    Timeout {
        /// The directory.
        dir: PathBuf,
    },
}

/// Two linked ptys; socat runs as long as this value lives.
#[derive(Debug)]
pub struct PtyPair {
    child: Child,
    sim: PathBuf,
    gateway: PathBuf,
}

impl PtyPair {
    /// Runs `socat -d -d pty,raw,echo=0,link=<dir>/sim pty,raw,echo=0,link=<dir>/gw` (creating
    /// `dir` if needed, replacing stale links) and waits until both links exist.
    ///
    /// # Errors
    /// socat missing or failing, or the links not appearing within [`SPAWN_TIMEOUT`].
    pub fn spawn(dir: &Path) -> Result<Self, PtyError> {
        let dir_err = |source| PtyError::Dir {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(dir_err)?;
        let sim = dir.join(SIM_LINK);
        let gateway = dir.join(GATEWAY_LINK);
        for link in [&sim, &gateway] {
            match std::fs::remove_file(link) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(dir_err(e)),
                _ => {}
            }
        }
        let arg = |link: &Path| format!("pty,raw,echo=0,link={}", link.display());
        let child = Command::new("socat")
            .args(["-d", "-d", &arg(&sim), &arg(&gateway)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    PtyError::SocatMissing
                } else {
                    PtyError::Spawn(e)
                }
            })?;
        // From here on, Drop kills socat on every error path.
        let mut pair = Self {
            child,
            sim,
            gateway,
        };
        let deadline = Instant::now() + SPAWN_TIMEOUT;
        loop {
            if pair.sim.exists() && pair.gateway.exists() {
                return Ok(pair);
            }
            if let Ok(Some(status)) = pair.child.try_wait() {
                return Err(PtyError::Exited {
                    dir: dir.to_path_buf(),
                    status,
                });
            }
            if Instant::now() >= deadline {
                return Err(PtyError::Timeout {
                    dir: dir.to_path_buf(),
                });
            }
            std::thread::sleep(POLL_STEP);
        }
    }

    /// The simulator's end.
    #[must_use]
    pub fn sim_path(&self) -> &Path {
        &self.sim
    }

    /// The gateway's end.
    #[must_use]
    pub fn gateway_path(&self) -> &Path {
        &self.gateway
    }

    /// socat's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        // Kill only our own child, by its handle; then reap it so no zombie is left.
        if let Err(e) = self.child.kill() {
            tracing::debug!(error = %e, "socat already gone");
        }
        let _ = self.child.wait();
        // socat removes its links on a clean exit but not on SIGKILL.
        let _ = std::fs::remove_file(&self.sim);
        let _ = std::fs::remove_file(&self.gateway);
    }
}
