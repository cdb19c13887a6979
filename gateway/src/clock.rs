//! Whether the gateway's clock can be trusted, and what happens to readings it stamped while it
//! could not (issue 13 item 6).
//!
//! Site boxes without a battery-backed clock boot at 1970 or at their image's build date, and
//! NTP sets the clock some time later, if the uplink is up. Owns:
//! - the rule for a synchronised clock ([`synchronised`]): not earlier than this software's
//!   build ([`BUILD_FLOOR_NS`], from `build.rs`). A box cannot run software built after its
//!   clock's date, so such a clock is certainly wrong; a clock later than the build is trusted
//!   (it may still be wrong by less: README §Install on a site box says how to set up time
//!   sync);
//! - the detection of clock jumps ([`ClockWatch`]): the wall clock compared with the monotonic
//!   clock, which never jumps; a step of more than [`JUMP_TOLERANCE`] is reported;
//! - what becomes of a reading the gateway stamped itself (its time within
//!   [`OWN_STAMP_TOLERANCE`] of the gateway's clock when it arrived) while the clock is not
//!   synchronised: it is stored at once as it is, flagged
//!   [`crate::model::Quality::ClockUnsynchronised`] (205), so it is committed (and an MQTT
//!   message acknowledged) as any reading and never stored as good at a wrong time; and a copy
//!   is held ([`HeldReadings`]) with the monotonic time of its stamp. Once the clock is
//!   synchronised the copy is stamped again, `now - (monotonic now - monotonic at the stamp)`,
//!   i.e. with the time the synchronised clock would have given, and stored good. At most
//!   [`MAX_HELD_READINGS`] copies are held (the oldest go first) and none survives a restart:
//!   those readings stay stored flagged only.
//!
//! - with `[clock] sync = "ntp"` ([`ClockConfig`]), the system's own word as well
//!   ([`NtpClock`]): until `timedatectl` says the clock is synchronised by NTP
//!   (`NTPSynchronized=yes`, from the kernel's `adjtimex` status through systemd-timedated,
//!   whichever NTP daemon set it), the clock is not trusted either, so a box without a battery
//!   that boots at its image's date or at the time `fake-hwclock` saved at shutdown (both later
//!   than the build) does not store readings as good at a time hours or days wrong.
//!
//! It does not decide what the engine does with readings (`engine::Engine::ingest`). The build
//! date is the one check that needs neither systemd nor a daemon, and the default.

use std::collections::VecDeque;

use crate::model::{Reading, TimestampNs};

/// When this gateway was built, in UTC nanoseconds (`build.rs`); 0 if the build could not say.
pub const BUILD_FLOOR_NS: TimestampNs = build_floor_ns();

const fn build_floor_ns() -> TimestampNs {
    // `env!` is checked at compile time; the parse cannot fail on what build.rs writes, and a
    // floor of 0 (1970) would only make every clock count as synchronised, as before.
    let digits = env!("ANJU_BUILD_UNIX_S").as_bytes();
    let mut secs: i64 = 0;
    let mut i = 0;
    while i < digits.len() {
        let d = digits[i];
        if !d.is_ascii_digit() {
            return 0;
        }
        secs = secs.saturating_mul(10).saturating_add((d - b'0') as i64);
        i += 1;
    }
    secs.saturating_mul(1_000_000_000)
}

/// A wall-clock step (forward or back) larger than this between two looks at the clock is a
/// jump; smaller differences from the monotonic clock are NTP slewing and scheduling.
pub const JUMP_TOLERANCE: std::time::Duration = std::time::Duration::from_secs(2);
/// A reading whose time is this close to the gateway's clock when it arrives counts as stamped
/// by the gateway (a Modbus poll without a device time, an MQTT message without one): a slow
/// RS-485 bus delivers its poll's readings within seconds, a batch of MQTT messages within a
/// fraction of one. A device's own clock in the same wrong year would be taken for the
/// gateway's, which is then what it needs too.
pub const OWN_STAMP_TOLERANCE: std::time::Duration = std::time::Duration::from_secs(300);
/// Most readings held while the clock is not synchronised: about 100 bytes each, so at most
/// about 5 MB; a site of 2,000 channels read every minute fills it in 25 minutes, long enough
/// for NTP after a boot with the uplink up.
pub const MAX_HELD_READINGS: usize = 50_000;

/// Whether a clock reading `now` can be trusted (not earlier than the build).
#[must_use]
pub const fn synchronised(now: TimestampNs) -> bool {
    now >= BUILD_FLOOR_NS
}

/// `[clock]`: what makes the clock trusted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    /// `"build_date"` (default) or `"ntp"`.
    #[serde(default)]
    pub sync: SyncRule,
}

/// The rule for a synchronised clock. Closed set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncRule {
    /// Not earlier than the build ([`synchronised`]): for boxes with a battery-backed clock, or
    /// without systemd.
    #[default]
    BuildDate,
    /// That, and NTP's status as `timedatectl` gives it ([`NtpClock`]): for boxes without a
    /// battery-backed clock that run systemd-timesyncd or chrony (README, Install on a site box).
    Ntp,
}

/// Where `timedatectl` is on Debian (systemd).
pub const TIMEDATECTL: &str = "/usr/bin/timedatectl";
/// How often NTP's status is asked until it says synchronised.
pub const NTP_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The system clock, trusted once NTP has synchronised it (and not earlier than the build). A
/// thread asks `timedatectl show -p NTPSynchronized --value` every [`NTP_POLL_INTERVAL`] until
/// it answers `yes`, then ends: a clock NTP has set stays trusted (a later step is a jump,
/// [`ClockWatch`]). When the command cannot be run at all the thread says so at ERROR once and
/// trusts the clock from its date alone, as [`SyncRule::BuildDate`] does: nothing is held back
/// for ever because a tool is missing.
#[derive(Debug)]
pub struct NtpClock {
    synced: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl NtpClock {
    /// Start asking `command` (normally [`TIMEDATECTL`]) every `every`.
    #[must_use]
    pub fn start(command: &std::path::Path, every: std::time::Duration) -> Self {
        let synced = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&synced);
        let command = command.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("ntp-status".into())
            .spawn(move || loop {
                match ntp_status(&command) {
                    Ok(true) => {
                        tracing::info!("NTP reports the system clock synchronised.");
                        flag.store(true, std::sync::atomic::Ordering::Release);
                        return;
                    }
                    Ok(false) => std::thread::sleep(every),
                    Err(e) => {
                        tracing::error!(command = %command.display(), error = %e,
                            "Cannot ask whether NTP has synchronised the clock; trusting it from its date alone ([clock] sync = \"ntp\" needs systemd's timedatectl).");
                        flag.store(true, std::sync::atomic::Ordering::Release);
                        return;
                    }
                }
            });
        if spawned.is_err() {
            synced.store(true, std::sync::atomic::Ordering::Release);
        }
        Self { synced }
    }
}

impl crate::model::Clock for NtpClock {
    fn now_ns(&self) -> TimestampNs {
        crate::model::now_ns()
    }

    /// Not earlier than the build, and synchronised by NTP.
    fn synchronised(&self, now: TimestampNs) -> bool {
        synchronised(now) && self.synced.load(std::sync::atomic::Ordering::Acquire)
    }

    fn monotonic_ns(&self) -> i64 {
        crate::model::SystemClock.monotonic_ns()
    }
}

/// `NTPSynchronized` as `command show -p NTPSynchronized --value` prints it (`yes` / `no`).
///
/// # Errors
/// The command cannot be run, fails, or prints something else.
pub fn ntp_status(command: &std::path::Path) -> Result<bool, String> {
    let out = std::process::Command::new(command)
        .args(["show", "-p", "NTPSynchronized", "--value"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// The gateway's clock under `cfg`.
#[must_use]
pub fn for_config(cfg: &ClockConfig) -> std::sync::Arc<dyn crate::model::Clock> {
    match cfg.sync {
        SyncRule::BuildDate => std::sync::Arc::new(crate::model::SystemClock),
        SyncRule::Ntp => std::sync::Arc::new(NtpClock::start(
            std::path::Path::new(TIMEDATECTL),
            NTP_POLL_INTERVAL,
        )),
    }
}

/// A clock step seen by [`ClockWatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jump {
    /// Wall-clock time before the step (as extrapolated to the moment of the step).
    pub from: TimestampNs,
    /// Wall-clock time after it.
    pub to: TimestampNs,
}

impl Jump {
    /// How far the clock stepped (negative: back).
    #[must_use]
    pub const fn by_ns(&self) -> i64 {
        self.to.saturating_sub(self.from)
    }
}

/// Compares the wall clock with the monotonic clock at each look.
#[derive(Debug, Default)]
pub struct ClockWatch {
    /// Wall and monotonic time of the last look.
    last: Option<(TimestampNs, i64)>,
}

impl ClockWatch {
    /// Look at the clocks (`now` wall, `mono` monotonic, both ns); the jump since the last look,
    /// if the wall clock moved more than [`JUMP_TOLERANCE`] away from the monotonic clock.
    pub fn look(&mut self, now: TimestampNs, mono: i64) -> Option<Jump> {
        let last = self.last.replace((now, mono));
        let (then, then_mono) = last?;
        let expected = then.saturating_add(mono.saturating_sub(then_mono));
        let step = now.saturating_sub(expected);
        let tolerance = i64::try_from(JUMP_TOLERANCE.as_nanos()).unwrap_or(i64::MAX);
        (step.unsigned_abs() > tolerance.unsigned_abs()).then_some(Jump {
            from: expected,
            to: now,
        })
    }
}

/// Readings stamped by the gateway while its clock was not synchronised, oldest first, with the
/// monotonic time of their stamp.
#[derive(Debug, Default)]
pub struct HeldReadings {
    held: VecDeque<(Reading, i64)>,
}

impl HeldReadings {
    /// Whether `r`, arriving at wall time `now`, was stamped by the gateway itself.
    #[must_use]
    pub fn stamped_by_gateway(r: &Reading, now: TimestampNs) -> bool {
        let tolerance = i64::try_from(OWN_STAMP_TOLERANCE.as_nanos()).unwrap_or(i64::MAX);
        r.ts.saturating_sub(now).unsigned_abs() <= tolerance.unsigned_abs()
    }

    /// Hold `r`, which arrived when the clocks read `now` (wall) and `mono` (monotonic); false
    /// when the oldest copy had to go to keep within [`MAX_HELD_READINGS`] (that reading stays
    /// stored flagged only).
    pub fn hold(&mut self, r: Reading, now: TimestampNs, mono: i64) -> bool {
        // The stamp on the monotonic clock: a poll stamped a moment before the engine got it.
        let stamped = mono.saturating_sub(now.saturating_sub(r.ts));
        self.held.push_back((r, stamped));
        if self.held.len() > MAX_HELD_READINGS {
            self.held.pop_front();
            return false;
        }
        true
    }

    /// How many are held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether none are held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Every held reading stamped again from the synchronised clock (`now` wall, `mono`
    /// monotonic): its time becomes `now - (mono - its stamp's monotonic time)`.
    pub fn restamp(&mut self, now: TimestampNs, mono: i64) -> Vec<Reading> {
        self.held
            .drain(..)
            .map(|(mut r, stamped)| {
                r.ts = now.saturating_sub(mono.saturating_sub(stamped));
                r
            })
            .collect()
    }
}

/// `r` flagged as stamped by an unsynchronised clock (a worse quality it already had is kept:
/// the value's own problem says more).
#[must_use]
pub fn flagged(mut r: Reading) -> Reading {
    if r.quality.is_good() {
        r.quality = crate::model::Quality::ClockUnsynchronised;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::{ntp_status, NtpClock, BUILD_FLOOR_NS};
    use crate::model::Clock as _;

    /// A stand-in for `timedatectl` (a real process, as the gateway runs it): answers `no`
    /// `nos` times, then `yes`; with `nos = None`, something `timedatectl` never prints.
    fn fake_timedatectl(dir: &std::path::Path, nos: Option<u32>) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let script = dir.join("timedatectl");
        let count = dir.join("count");
        let body = match nos {
            Some(n) => format!(
                "#!/bin/sh\n[ \"$*\" = \"show -p NTPSynchronized --value\" ] || exit 3\nc=$(cat {c} 2>/dev/null || echo 0)\necho $((c + 1)) > {c}\nif [ \"$c\" -lt {n} ]; then echo no; else echo yes; fi\n",
                c = count.display()
            ),
            None => "#!/bin/sh\necho maybe\n".to_owned(),
        };
        std::fs::write(&script, body).expect("script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("mode");
        script
    }

    #[test]
    fn an_ntp_clock_is_trusted_once_timedatectl_says_synchronised() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = fake_timedatectl(dir.path(), Some(2));
        assert_eq!(ntp_status(&script), Ok(false));
        std::fs::remove_file(dir.path().join("count")).expect("reset");
        let clock = NtpClock::start(&script, std::time::Duration::from_millis(20));
        let now = BUILD_FLOOR_NS + 1;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut untrusted_seen = false;
        while !clock.synchronised(now) {
            untrusted_seen = true;
            assert!(std::time::Instant::now() < deadline, "never synchronised");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(untrusted_seen, "trusted before NTP said so");
        let asked: u32 = std::fs::read_to_string(dir.path().join("count"))
            .expect("count")
            .trim()
            .parse()
            .expect("number");
        assert_eq!(asked, 3, "two noes, then yes, then no more asking");
        // A clock earlier than the build is not trusted, whatever NTP says.
        assert!(!clock.synchronised(BUILD_FLOOR_NS - 1));
    }

    #[test]
    fn an_answer_that_is_not_yes_or_no_and_a_missing_command_are_errors_and_trust_the_date() {
        let dir = tempfile::tempdir().expect("tempdir");
        let odd = fake_timedatectl(dir.path(), None);
        assert!(ntp_status(&odd).is_err());
        let missing = dir.path().join("no-such-timedatectl");
        assert!(ntp_status(&missing).is_err());
        // The gateway then trusts the clock from its date alone (nothing held for ever).
        let clock = NtpClock::start(&missing, std::time::Duration::from_millis(20));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !clock.synchronised(BUILD_FLOOR_NS + 1) {
            assert!(std::time::Instant::now() < deadline, "held back for ever");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    use super::*;
    use crate::model::{Quality, QuantityKind, Series};
    use std::sync::Arc;

    const S: i64 = 1_000_000_000;

    fn reading(ts: TimestampNs, value: f64) -> Reading {
        let series = Arc::new(Series::new(
            "xa",
            "gw",
            "plate-1",
            "s1",
            QuantityKind::Settlement,
            "mm",
            &std::collections::BTreeMap::new(),
        ));
        Reading::good(series, ts, value)
    }

    #[test]
    fn the_build_date_is_the_floor() {
        // Built after 2026-01-01 (this code did not exist before); a 1970 clock is not trusted.
        // (Through `black_box`: the value is the build's, not one for the compiler to judge.)
        let floor = std::hint::black_box(BUILD_FLOOR_NS);
        assert!(floor > 1_767_225_600 * S, "{floor}");
        assert!(
            floor <= crate::model::now_ns(),
            "built in the future: {floor}"
        );
        assert!(!synchronised(0));
        assert!(!synchronised(BUILD_FLOOR_NS - 1));
        assert!(synchronised(BUILD_FLOOR_NS));
    }

    #[test]
    fn a_step_beyond_the_tolerance_is_a_jump_and_slewing_is_not() {
        let mut w = ClockWatch::default();
        assert_eq!(w.look(1_000 * S, 10 * S), None);
        // 60 s later on both clocks, plus 1.5 s of drift correction: not a jump.
        assert_eq!(w.look(1_061 * S + S / 2, 70 * S), None);
        // NTP steps the clock from 1970 to 2026 between two looks 1 s apart.
        let jump = w.look(1_764_460_000 * S, 71 * S).expect("jump");
        assert_eq!(jump.from, 1_062 * S + S / 2);
        assert_eq!(jump.by_ns(), 1_764_460_000 * S - (1_062 * S + S / 2));
        // And back by an hour.
        let back = w.look(1_764_460_001 * S - 3_600 * S, 72 * S).expect("back");
        assert_eq!(back.by_ns(), -3_600 * S);
    }

    #[test]
    fn held_readings_get_the_time_the_synchronised_clock_would_have_given() {
        let mut held = HeldReadings::default();
        // Stamped at boot (1970 + 100 s), 5 s and 65 s after the monotonic origin; the second
        // reached the engine 2 s after its stamp (a slow bus).
        let boot = 100 * S;
        assert!(HeldReadings::stamped_by_gateway(
            &reading(boot, 1.0),
            boot + S
        ));
        assert!(!HeldReadings::stamped_by_gateway(
            &reading(boot, 1.0),
            boot + 400 * S
        ));
        assert!(held.hold(reading(boot + 5 * S, 1.5), boot + 5 * S, 5 * S));
        assert!(held.hold(reading(boot + 65 * S, 2.5), boot + 67 * S, 67 * S));
        // Synchronised at monotonic 125 s: the wall clock reads 2026-11-30T00:00:00Z.
        let now = 1_795_996_800 * S;
        let back = held.restamp(now, 125 * S);
        assert!(held.is_empty());
        let times: Vec<i64> = back.iter().map(|r| r.ts).collect();
        assert_eq!(times, [now - 120 * S, now - 60 * S]);
        assert_eq!(back[0].value, Some(1.5));
        assert!(back.iter().all(|r| r.quality == Quality::Good));
    }

    #[test]
    fn past_the_bound_the_oldest_copy_goes_and_flags_keep_a_worse_quality() {
        let mut held = HeldReadings::default();
        for i in 0..MAX_HELD_READINGS {
            let t = i64::try_from(i).expect("i") * S;
            assert!(held.hold(reading(t, 1.0), t, t));
        }
        assert!(!held.hold(reading(1_000_000 * S, 2.0), 1_000_000 * S, 1_000_000 * S));
        assert_eq!(held.len(), MAX_HELD_READINGS);
        let back = held.restamp(2_000_000 * S, 2_000_000 * S);
        assert_eq!(back[0].ts, S, "the oldest (at 0) went");
        let f = flagged(reading(0, 1.0));
        assert_eq!(
            (f.quality, f.quality.code()),
            (Quality::ClockUnsynchronised, 205)
        );
        let mut timeout = reading(0, 1.0);
        timeout.quality = Quality::Timeout;
        assert_eq!(flagged(timeout).quality, Quality::Timeout);
    }
}
