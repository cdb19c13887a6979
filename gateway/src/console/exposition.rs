//! `/metrics`: the gateway's counters and gauges in the Prometheus/OpenMetrics text format,
//! encoded by `prometheus-client`.
//!
//! Owns the exported names of the gauges ([`Gauge`]) and the rendering of one scrape. It does
//! not count anything: [`Metrics`] stays the source of truth for counters (components keep
//! counting per batch under its one short lock) and [`SpoolStats`] for the spool. Each scrape
//! copies a snapshot into a fresh registry and encodes it (docs/ARCHITECTURE.md §Console).

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter as PromCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge as PromGauge;
use prometheus_client::registry::Registry;

use crate::history::HistoryStats;
use crate::metrics::{Counter, Metrics};
use crate::spool::SpoolStats;

/// Prefix of every exported name (`anju_modbus_requests_total`).
pub const PREFIX: &str = "anju";

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A label value, escaped as the text format requires (`\\`, `\"`, `\n`); prometheus-client
/// writes label values as given, and device or subscription names may hold any of these.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Escaped(String);

impl Escaped {
    fn new(raw: &str) -> Self {
        let mut out = String::with_capacity(raw.len());
        for c in raw.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        Self(out)
    }
}

impl EncodeLabelValue for Escaped {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.0.as_str(), encoder)
    }
}

type Labels = Vec<(&'static str, Escaped)>;

/// Every gauge of `/metrics`. Closed set: names and help live here only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gauge {
    /// Seconds since the gateway started.
    Uptime,
    /// Channels the engine holds in memory.
    EngineChannels,
    /// Records in the spool not yet delivered, per sink and stream.
    SpoolBacklog,
    /// Logical bytes stored in the spool, per stream (points, alerts, dead letters).
    SpoolBytes,
    /// Size of the spool file on disk.
    SpoolFileBytes,
    /// Dead letters kept in the spool.
    SpoolDeadLetters,
    /// 1 while the spool file is open and writable, 0 while it is unavailable and retried.
    SpoolAvailable,
    /// Size of the local history's file on disk (0 without a history).
    HistoryFileBytes,
    /// 1 while the local history is written, 0 while it is given up (free space, an error) or
    /// off.
    HistoryAvailable,
}

impl Gauge {
    /// Every gauge, in export order.
    pub const ALL: &'static [Gauge] = &[
        Gauge::Uptime,
        Gauge::EngineChannels,
        Gauge::SpoolBacklog,
        Gauge::SpoolBytes,
        Gauge::SpoolFileBytes,
        Gauge::SpoolDeadLetters,
        Gauge::SpoolAvailable,
        Gauge::HistoryFileBytes,
        Gauge::HistoryAvailable,
    ];

    /// The exported name, without the prefix.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Uptime => "uptime_seconds",
            Self::EngineChannels => "engine_channels",
            Self::SpoolBacklog => "spool_backlog_records",
            Self::SpoolBytes => "spool_bytes",
            Self::SpoolFileBytes => "spool_file_bytes",
            Self::SpoolDeadLetters => "spool_dead_letters",
            Self::SpoolAvailable => "spool_available",
            Self::HistoryFileBytes => "history_file_bytes",
            Self::HistoryAvailable => "history_available",
        }
    }

    /// The label names.
    #[must_use]
    pub const fn labels(self) -> &'static [&'static str] {
        match self {
            Self::SpoolBacklog => &["sink", "stream"],
            Self::SpoolBytes => &["stream"],
            _ => &[],
        }
    }

    /// What it measures.
    #[must_use]
    pub const fn help(self) -> &'static str {
        match self {
            Self::Uptime => "Seconds since the gateway started.",
            Self::EngineChannels => "Channels the engine holds in memory.",
            Self::SpoolBacklog => "Records in the spool not yet delivered, per sink and stream.",
            Self::SpoolBytes => "Logical bytes stored in the spool, per stream.",
            Self::SpoolFileBytes => "Size of the spool file on disk, bytes.",
            Self::SpoolDeadLetters => "Dead letters kept in the spool.",
            Self::SpoolAvailable => "1 while the spool file is open and writable, else 0.",
            Self::HistoryFileBytes => "Size of the local history's file on disk, bytes.",
            Self::HistoryAvailable => "1 while the local history is written, else 0.",
        }
    }

    /// Its samples now.
    fn samples(
        self,
        metrics: &Metrics,
        spool: &SpoolStats,
        history: Option<&HistoryStats>,
        uptime: Duration,
    ) -> Vec<(Labels, i64)> {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        match self {
            Self::Uptime => vec![(Vec::new(), n(uptime.as_secs()))],
            Self::EngineChannels => vec![(Vec::new(), n(metrics.engine_channels()))],
            Self::SpoolBacklog => spool
                .sinks
                .iter()
                .flat_map(|(sink, b)| {
                    [("points", b.points_records), ("alerts", b.alerts_records)].map(
                        |(stream, records)| {
                            (
                                vec![
                                    ("sink", Escaped::new(sink)),
                                    ("stream", Escaped::new(stream)),
                                ],
                                n(records),
                            )
                        },
                    )
                })
                .collect(),
            Self::SpoolBytes => [
                ("points", spool.points_bytes),
                ("alerts", spool.alerts_bytes),
                ("dead_letters", spool.dead_letter_bytes),
            ]
            .into_iter()
            .map(|(stream, bytes)| (vec![("stream", Escaped::new(stream))], n(bytes)))
            .collect(),
            Self::SpoolFileBytes => vec![(Vec::new(), n(spool.file_bytes))],
            Self::SpoolDeadLetters => vec![(Vec::new(), n(spool.dead_letter_count))],
            Self::SpoolAvailable => vec![(Vec::new(), i64::from(spool.available))],
            Self::HistoryFileBytes => vec![(Vec::new(), n(history.map_or(0, |h| h.file_bytes)))],
            Self::HistoryAvailable => {
                vec![(Vec::new(), i64::from(history.is_some_and(|h| h.available)))]
            }
        }
    }
}

/// One scrape: every counter of `metrics` (label-less ones also at 0) and every [`Gauge`].
///
/// # Errors
/// Only if formatting into a `String` fails (it does not).
pub fn render(
    metrics: &Metrics,
    spool: &SpoolStats,
    history: Option<&HistoryStats>,
    uptime: Duration,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix(PREFIX);
    let samples = metrics.snapshot();
    // prometheus-client ends each help text with a period itself.
    let help = |h: &'static str| h.trim_end_matches('.');
    for &counter in Counter::ALL {
        let of_counter = samples.iter().filter(|s| s.counter == counter);
        // prometheus-client adds `_total` to a counter's name itself.
        let name = counter.name().trim_end_matches("_total");
        if counter.labels().is_empty() {
            let single = PromCounter::<u64>::default();
            single.inc_by(of_counter.map(|s| s.value).sum());
            registry.register(name, help(counter.help()), single);
            continue;
        }
        let family = Family::<Labels, PromCounter>::default();
        for s in of_counter {
            let labels: Labels = s
                .labels
                .iter()
                .map(|(k, v)| (*k, Escaped::new(v)))
                .collect();
            family.get_or_create(&labels).inc_by(s.value);
        }
        registry.register(name, help(counter.help()), family);
    }
    for &gauge in Gauge::ALL {
        let samples = gauge.samples(metrics, spool, history, uptime);
        if gauge.labels().is_empty() {
            let single = PromGauge::<i64>::default();
            single.set(samples.iter().map(|(_, v)| *v).sum());
            registry.register(gauge.name(), help(gauge.help()), single);
            continue;
        }
        let family = Family::<Labels, PromGauge>::default();
        for (labels, value) in samples {
            family.get_or_create(&labels).set(value);
        }
        registry.register(gauge.name(), help(gauge.help()), family);
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::SinkBacklog;

    #[test]
    fn exposition_has_every_counter_prefixed_with_labels_escaped_and_the_gauges() {
        let m = Metrics::new();
        m.add(
            Counter::ModbusErrors,
            &[("device", "pier \"A\\1\""), ("reason", "timeout")],
            3,
        );
        m.set_engine_channels(7);
        let mut spool = SpoolStats {
            available: true,
            points_bytes: 120,
            ..SpoolStats::default()
        };
        spool.sinks.insert(
            "influx".into(),
            SinkBacklog {
                points_records: 5,
                alerts_records: 0,
            },
        );
        let history = crate::history::HistoryStats {
            available: true,
            file_bytes: 4096,
            ..crate::history::HistoryStats::default()
        };
        let text = render(&m, &spool, Some(&history), Duration::from_secs(90)).expect("renders");
        assert!(
            text.contains(
                "anju_modbus_errors_total{device=\"pier \\\"A\\\\1\\\"\",reason=\"timeout\"} 3\n"
            ),
            "{text}"
        );
        assert!(text.contains("anju_readings_spooled_total 0\n"), "{text}");
        for c in Counter::ALL {
            let family = format!(
                "# TYPE {PREFIX}_{} counter\n",
                c.name().trim_end_matches("_total")
            );
            assert!(text.contains(&family), "{family} missing");
        }
        assert!(text.contains("anju_uptime_seconds 90\n"), "{text}");
        assert!(text.contains("anju_engine_channels 7\n"), "{text}");
        assert!(
            text.contains("anju_spool_backlog_records{sink=\"influx\",stream=\"points\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("anju_spool_bytes{stream=\"points\"} 120\n"),
            "{text}"
        );
        assert!(text.contains("anju_spool_available 1\n"), "{text}");
        assert!(text.contains("anju_history_file_bytes 4096\n"), "{text}");
        assert!(text.contains("anju_history_available 1\n"), "{text}");
        assert!(text.ends_with("# EOF\n"));
        assert!(
            text.contains("# HELP anju_spool_errors Spool commits that failed.\n"),
            "{text}"
        );
        assert!(!text.contains("{}"), "{text}");
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("# HELP") && l.ends_with("..")),
            "{text}"
        );
    }
}
