//! The simulated clock: wall time, optionally running N× faster.
//!
//! Owns the mapping between simulated UTC time (what devices put in their time registers and
//! messages) and tokio instants (when ticks fire). With speed 1 the simulated time is the wall
//! time. It does not schedule anything itself ([`crate::site`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Nanoseconds per second.
pub const NANOS_PER_SEC: i64 = 1_000_000_000;
/// Fastest supported speed-up (a day of 1 s samples in under 10 s; beyond this a tick's work
/// outlasts its slot).
pub const MAX_SPEED: u32 = 10_000;

/// How sample ticks are driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockMode {
    /// Ticks fire by themselves at `sample_interval / speed` of wall time; simulated time runs
    /// `speed`× faster than the wall clock (1 = real time).
    Realtime {
        /// Speed-up, 1..=[`MAX_SPEED`].
        speed: u32,
    },
    /// Only the first tick fires at start; the caller takes every further sample with
    /// `RunningSite::step` (deterministic tests: nothing changes between two reads).
    Manual,
}

impl Default for ClockMode {
    fn default() -> Self {
        Self::Realtime { speed: 1 }
    }
}

/// One sample tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// Sample index (0 = the sample taken at start).
    pub index: u64,
    /// Seconds since the scenario started (`index × sample_interval`): physics and fault time.
    pub rel_s: i64,
    /// The sample's UTC second on the simulated clock.
    pub unix_s: i64,
}

/// Simulated time anchored at a wall-clock instant.
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    origin: Instant,
    origin_ns: i64,
    speed: u32,
}

/// The wall clock as UTC ns (0 if the system clock is before 1970).
#[must_use]
pub fn wall_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl SimClock {
    /// A clock starting now at the wall time, running `speed`× (clamped to 1..=[`MAX_SPEED`]).
    #[must_use]
    pub fn start(speed: u32) -> Self {
        Self {
            origin: Instant::now(),
            origin_ns: wall_ns(),
            speed: speed.clamp(1, MAX_SPEED),
        }
    }

    /// The speed-up.
    #[must_use]
    pub const fn speed(&self) -> u32 {
        self.speed
    }

    /// Simulated UTC ns now.
    #[must_use]
    pub fn now_ns(&self) -> i64 {
        let real = i64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(i64::MAX);
        self.origin_ns
            .saturating_add(real.saturating_mul(i64::from(self.speed)))
    }

    /// The tokio instant at which the simulated clock reads `sim_ns` (now, if already past).
    #[must_use]
    pub fn instant_at(&self, sim_ns: i64) -> Instant {
        let ahead = sim_ns.saturating_sub(self.origin_ns).max(0) / i64::from(self.speed);
        self.origin + Duration::from_nanos(u64::try_from(ahead).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn speed_scales_time() {
        let c = SimClock::start(10);
        let t0 = c.now_ns();
        tokio::time::advance(Duration::from_secs(1)).await;
        let dt = c.now_ns() - t0;
        assert!(
            (10 * NANOS_PER_SEC..11 * NANOS_PER_SEC).contains(&dt),
            "{dt}"
        );
        assert_eq!(
            c.instant_at(c.origin_ns + 20 * NANOS_PER_SEC) - c.origin,
            Duration::from_secs(2)
        );
    }
}
