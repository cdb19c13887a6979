//! `/readyz`: whether the gateway does its job now: the engine runs, the spool is writable, and
//! no sink has delivered nothing for longer than [`SINK_STALL_BOUND`] while records wait for it.
//!
//! Owns the readiness rule and the memory it needs (each sink's delivery count and when it last
//! moved). It does not fetch spool stats or serve HTTP ([`super::router`] does), and it does not
//! look inside sinks: a sink's progress is read from the counters it already keeps.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Sink;
use crate::metrics::{Counter, Metrics};
use crate::spool::SpoolStats;

/// How long a sink may deliver nothing while records wait for it before the gateway is reported
/// not ready. Well above the sinks' default longest wait between tries
/// ([`crate::sinks::DEFAULT_RETRY_MAX`], 60 s), so one slow retry does not flap readiness.
pub const SINK_STALL_BOUND: Duration = Duration::from_secs(10 * 60);

/// How often the console samples readiness on its own, so that a stall is timed from when it
/// began, not from the first `/readyz` request.
pub const READINESS_SAMPLE_INTERVAL: Duration = Duration::from_secs(15);

/// The counters that move when a sink of this kind passes records (delivered, or kept as dead
/// letters: either way its cursor advances).
fn delivery_counters(sink: &Sink) -> &'static [Counter] {
    match sink {
        Sink::Influxdb(_) => &[
            Counter::InfluxWrittenRecords,
            Counter::InfluxRejectedRecords,
        ],
        Sink::Mqtt(_) => &[Counter::MqttAlertsPublished, Counter::MqttAlertsRejected],
        Sink::Webhook(_) => &[
            Counter::WebhookAlertsDelivered,
            Counter::WebhookAlertsRejected,
            Counter::WebhookAlertsSkipped,
        ],
        Sink::ModbusOutput(_) => &[Counter::ModbusOutputAlerts],
    }
}

/// A sink's delivery count when last seen to move, and when.
#[derive(Debug, Clone, Copy)]
struct Progress {
    delivered: u64,
    since: Instant,
}

/// The readiness rule with each sink's progress.
#[derive(Debug)]
pub struct Readiness {
    sinks: Vec<(String, &'static [Counter])>,
    progress: Mutex<HashMap<String, Progress>>,
}

impl Readiness {
    /// Readiness for the configured sinks.
    #[must_use]
    pub fn new(sinks: &[Sink]) -> Self {
        Self::with_sinks(
            sinks
                .iter()
                .map(|s| (s.name().to_owned(), delivery_counters(s)))
                .collect(),
        )
    }

    /// Readiness for sinks named with the counters that show their progress.
    fn with_sinks(sinks: Vec<(String, &'static [Counter])>) -> Self {
        Self {
            sinks,
            progress: Mutex::new(HashMap::new()),
        }
    }

    /// `Ok` when ready at `now`, else every reason, one short sentence each.
    ///
    /// # Errors
    /// The reasons the gateway is not ready.
    pub fn check(
        &self,
        engine_running: bool,
        spool: &SpoolStats,
        metrics: &Metrics,
        now: Instant,
    ) -> Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        if !engine_running {
            reasons.push("engine not running".to_owned());
        }
        if !spool.available {
            reasons.push("spool not writable (its file is unavailable and retried)".to_owned());
        }
        let mut progress = self
            .progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (name, counters) in &self.sinks {
            let delivered: u64 = counters
                .iter()
                .map(|c| metrics.get(*c, &[("sink", name)]))
                .sum();
            let waiting = spool
                .sinks
                .get(name)
                .map_or(0, |b| b.points_records + b.alerts_records);
            let seen = progress.entry(name.clone()).or_insert(Progress {
                delivered,
                since: now,
            });
            if waiting == 0 || delivered != seen.delivered {
                *seen = Progress {
                    delivered,
                    since: now,
                };
            } else if now.saturating_duration_since(seen.since) >= SINK_STALL_BOUND {
                reasons.push(format!(
                    "sink {name} delivered nothing for {}s with {waiting} records waiting",
                    now.saturating_duration_since(seen.since).as_secs()
                ));
            }
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::SinkBacklog;

    fn stats(backlog: u64) -> SpoolStats {
        let mut s = SpoolStats {
            available: true,
            ..SpoolStats::default()
        };
        s.sinks.insert(
            "central".into(),
            SinkBacklog {
                points_records: backlog,
                alerts_records: 0,
            },
        );
        s
    }

    #[test]
    fn readiness_fails_on_a_stopped_engine_an_unavailable_spool_and_a_stalled_sink() {
        let r = Readiness::with_sinks(vec![(
            "central".to_owned(),
            &[
                Counter::InfluxWrittenRecords,
                Counter::InfluxRejectedRecords,
            ],
        )]);
        let m = Metrics::new();
        let t0 = Instant::now();
        assert_eq!(r.check(true, &stats(10), &m, t0), Ok(()));
        // Nothing delivered with records waiting: ready until the bound, then not.
        let almost = t0 + SINK_STALL_BOUND - Duration::from_secs(1);
        assert_eq!(r.check(true, &stats(10), &m, almost), Ok(()));
        let late = t0 + SINK_STALL_BOUND;
        let reasons = r.check(true, &stats(10), &m, late).expect_err("stalled");
        assert_eq!(
            reasons,
            ["sink central delivered nothing for 600s with 10 records waiting"]
        );
        // A delivery resets the clock.
        m.add(Counter::InfluxWrittenRecords, &[("sink", "central")], 5);
        assert_eq!(r.check(true, &stats(5), &m, late), Ok(()));
        // Nothing waiting is never a stall.
        let later = late + SINK_STALL_BOUND * 2;
        assert_eq!(r.check(true, &stats(0), &m, later), Ok(()));

        let mut down = stats(0);
        down.available = false;
        let reasons = r.check(false, &down, &m, later).expect_err("not ready");
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert_eq!(reasons[0], "engine not running");
        assert!(reasons[1].starts_with("spool not writable"));
    }
}
