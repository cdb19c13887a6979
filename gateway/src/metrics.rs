//! Counters of what happened to the data: readings in, readings dropped and why, errors per
//! device and topic. One place that every component reports to, so a status page and the
//! console summary (and later `/metrics`) read the same numbers.
//!
//! Owns [`Metrics`] and the one list of counter names ([`Counter`]). It does not log: the
//! component that counts also logs, with the device, topic or path that names the problem.
//! Counters are keyed by a [`Counter`] and a small label set; the hot path counts per batch, not
//! per reading, so a mutex is cheap enough. Besides the counters it holds the one gauge that
//! only the engine knows ([`Metrics::engine_channels`]), as an atomic. The console's `/metrics`
//! renders a [`Metrics::snapshot`] (gateway/src/console/exposition.rs).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A counter's identity: the counter plus `label=value` pairs, in the order given.
type CounterKey = (Counter, Vec<(&'static str, String)>);

/// Declares [`Counter`]: one variant per counter, with its exported name, its label names and
/// its help text (the doc comment), in one table so that names cannot drift between the code,
/// `/metrics` and README (a test checks README's table against [`Counter::ALL`]).
macro_rules! counters {
    ($( #[doc = $doc:literal] $variant:ident = $name:literal [$($label:literal),*]; )*) => {
        /// Every counter the gateway keeps. Names follow Prometheus conventions (`_total`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Counter {
            $( #[doc = $doc] $variant, )*
        }

        impl Counter {
            /// Every counter, in declaration order.
            pub const ALL: &'static [Counter] = &[$(Counter::$variant),*];

            /// The exported name.
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self { $(Counter::$variant => $name,)* }
            }

            /// The label names, in the order the code passes them.
            #[must_use]
            pub const fn labels(self) -> &'static [&'static str] {
                match self { $(Counter::$variant => &[$($label),*],)* }
            }

            /// One line saying what it counts.
            #[must_use]
            pub const fn help(self) -> &'static str {
                match self { $(Counter::$variant => $doc.trim_ascii(),)* }
            }
        }
    };
}

counters! {
    /// Modbus requests sent (every attempt).
    ModbusRequests = "modbus_requests_total" ["device"];
    /// Modbus request failures, by reason (timeout, exception, garbled reply, connect, ...).
    ModbusErrors = "modbus_errors_total" ["device", "reason"];
    /// Modbus requests sent again after a failure within one poll.
    ModbusRetries = "modbus_retries_total" ["device"];
    /// Polls in which a device answered no request.
    ModbusFailedPolls = "modbus_failed_polls_total" ["device"];
    /// Read plans rebuilt after an exception 02 (illegal data address).
    ModbusReplans = "modbus_replans_total" ["device"];
    /// Readings produced by Modbus polls.
    ModbusReadings = "modbus_readings_total" ["device"];
    /// Polls that started later than their schedule by more than one interval.
    ModbusPollOverruns = "modbus_poll_overruns_total" ["device"];
    /// Modbus writes (FC 05/06/16) the device confirmed.
    ModbusWrites = "modbus_writes_total" ["device"];
    /// Modbus write attempts that failed, by reason (an exception code, timeout, connect, ...).
    ModbusWriteErrors = "modbus_write_errors_total" ["device", "reason"];
    /// MQTT messages received per subscription.
    MqttMessages = "mqtt_messages_total" ["subscription"];
    /// Readings decoded from MQTT messages.
    MqttReadings = "mqtt_readings_total" ["subscription"];
    /// Values in MQTT payloads skipped (not numeric, or not mapped).
    MqttValuesSkipped = "mqtt_values_skipped_total" ["subscription"];
    /// MQTT readings refused because the source's channel limit (`max_channels`) was reached.
    MqttSeriesLimitDropped = "mqtt_series_limit_dropped_total" ["subscription"];
    /// MQTT channels evicted from a source's memory after `channel_idle_evict` without readings.
    MqttChannelsEvicted = "mqtt_channels_evicted_total" ["source"];
    /// MQTT payloads that could not be decoded, by reason.
    MqttPayloadErrors = "mqtt_payload_errors_total" ["subscription", "reason"];
    /// MQTT messages that matched no subscription of the source.
    MqttUnmatchedMessages = "mqtt_unmatched_messages_total" ["source"];
    /// MQTT connections established (ConnAck received).
    MqttConnects = "mqtt_connects_total" ["source"];
    /// MQTT connection errors.
    MqttConnectionErrors = "mqtt_connection_errors_total" ["source"];
    /// MQTT connections refused in the TLS handshake (an untrusted or misnamed certificate, a client certificate the broker refused); also counted in `mqtt_connection_errors_total`.
    MqttTlsErrors = "mqtt_tls_errors_total" ["source"];
    /// MQTT subscribe requests the client could not queue.
    MqttSubscribeFailures = "mqtt_subscribe_failures_total" ["source"];
    /// Readings committed to the spool.
    ReadingsSpooled = "readings_spooled_total" [];
    /// Steps of the gateway's wall clock (more than 2 s away from the monotonic clock between two looks).
    ClockJumps = "clock_jumps_total" [];
    /// Readings the gateway stamped while its clock was not synchronised, held and stamped again once it was.
    ReadingsRestamped = "readings_restamped_total" [];
    /// Readings refused by the engine, by reason (implausible time, unwritable name).
    ReadingsRejected = "readings_rejected_total" ["reason", "device"];
    /// Readings lost, by reason (spool full, spool error, uncommitted at shutdown).
    ReadingsDropped = "readings_dropped_total" ["reason"];
    /// Spool commits that failed.
    SpoolErrors = "spool_errors_total" [];
    /// Spool file compactions run to keep the file within `spool.max_bytes` on disk.
    SpoolCompactions = "spool_compactions_total" [];
    /// Alert events raised, by kind and state.
    Alerts = "alerts_total" ["kind", "state"];
    /// Alert events committed to the spool.
    AlertsSpooled = "alerts_spooled_total" [];
    /// Alert events lost, by reason (spool full: the alerts share; uncommitted at shutdown).
    AlertsDropped = "alerts_dropped_total" ["reason"];
    /// Alert events that could not be serialised.
    AlertsUnserialisable = "alerts_unserialisable_total" [];
    /// Rule states that could not be serialised for saving.
    RuleStateSaveErrors = "rule_state_save_errors_total" [];
    /// Bytes of rule state entries committed to the spool (keys and values; only changed entries are written).
    RuleStateBytesWritten = "rule_state_bytes_written_total" [];
    /// Saved rule state that could not be used, by reason (the rules started fresh for it).
    RuleStateLost = "rule_state_lost_total" ["reason"];
    /// Config reloads (SIGHUP, `systemctl reload`), by result: applied, or refused (invalid, or a change that needs a restart; the old config keeps running).
    ConfigReloads = "config_reloads_total" ["result"];
    /// Channels dropped from the engine's memory after `channel_idle_evict` without readings.
    ChannelsEvicted = "engine_channels_evicted_total" [];
    /// Points accepted by the InfluxDB store.
    InfluxWrittenRecords = "influx_written_records_total" ["sink"];
    /// Batches accepted by the InfluxDB store.
    InfluxWriteBatches = "influx_write_batches_total" ["sink"];
    /// InfluxDB writes sent again after a failure.
    InfluxWriteRetries = "influx_write_retries_total" ["sink"];
    /// Points the InfluxDB store refused for good (kept as dead letters).
    InfluxRejectedRecords = "influx_rejected_records_total" ["sink"];
    /// Alert events published to the upstream MQTT broker.
    MqttAlertsPublished = "mqtt_alerts_published_total" ["sink"];
    /// Retained active-alert summaries published.
    MqttAlertsSummariesPublished = "mqtt_alerts_summaries_published_total" ["sink"];
    /// Connection failures of the MQTT alert sink.
    MqttAlertsConnectionFailures = "mqtt_alerts_connection_failures_total" ["sink"];
    /// Lines of the alerts stream the MQTT alert sink could not publish (dead letters).
    MqttAlertsRejected = "mqtt_alerts_rejected_total" ["sink"];
    /// Alert events delivered by the webhook sink.
    WebhookAlertsDelivered = "webhook_alerts_delivered_total" ["sink"];
    /// Webhook posts sent again after a failure.
    WebhookAlertsRetries = "webhook_alerts_retries_total" ["sink"];
    /// Alert events the webhook receiver refused for good (dead letters).
    WebhookAlertsRejected = "webhook_alerts_rejected_total" ["sink"];
    /// Alert events of kinds the webhook sink is not configured for.
    WebhookAlertsSkipped = "webhook_alerts_skipped_total" ["sink"];
    /// Alert events a Modbus output sink took (its cursor advanced past them).
    ModbusOutputAlerts = "modbus_output_alerts_total" ["sink"];
    /// Writes of a Modbus output sink's state the device confirmed, by state (on, off).
    ModbusOutputWrites = "modbus_output_writes_total" ["sink", "state"];
    /// Writes of a Modbus output sink's state that failed (retried after the backoff).
    ModbusOutputFailures = "modbus_output_failures_total" ["sink"];
}

/// The gateway's counters. Shared as `Arc<Metrics>`.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<CounterKey, u64>>,
    /// Channels the engine holds in memory now (set by the engine after each batch).
    engine_channels: AtomicU64,
}

/// One counter's value for one label set, as [`Metrics::snapshot`] copies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterSample {
    /// The counter.
    pub counter: Counter,
    /// Its `label=value` pairs, in the counter's label order.
    pub labels: Vec<(&'static str, String)>,
    /// Its value.
    pub value: u64,
}

impl Metrics {
    /// A fresh set of counters, all zero.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `by` to the counter `counter{labels}`.
    pub fn add(&self, counter: Counter, labels: &[(&'static str, &str)], by: u64) {
        let key = (
            counter,
            labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        );
        // A poisoned lock only means another thread panicked while counting; the map is
        // still a valid map, so keep counting rather than losing the numbers.
        let mut map = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *map.entry(key).or_insert(0) += by;
    }

    /// Add one to the counter `name{labels}`.
    pub fn incr(&self, counter: Counter, labels: &[(&'static str, &str)]) {
        self.add(counter, labels, 1);
    }

    /// The value of `name{labels}` (0 if never counted).
    #[must_use]
    pub fn get(&self, counter: Counter, labels: &[(&'static str, &str)]) -> u64 {
        let key = (
            counter,
            labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        );
        let map = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&key).copied().unwrap_or(0)
    }

    /// The sum of `name` over all label sets.
    #[must_use]
    pub fn total(&self, counter: Counter) -> u64 {
        let map = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter()
            .filter(|((c, _), _)| *c == counter)
            .map(|(_, v)| *v)
            .sum()
    }

    /// Every counter with its labels and value, sorted by counter then labels (one short lock).
    #[must_use]
    pub fn snapshot(&self) -> Vec<CounterSample> {
        let map = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter()
            .map(|((counter, labels), value)| CounterSample {
                counter: *counter,
                labels: labels.clone(),
                value: *value,
            })
            .collect()
    }

    /// Record how many channels the engine holds in memory.
    pub fn set_engine_channels(&self, channels: usize) {
        self.engine_channels.store(
            u64::try_from(channels).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// How many channels the engine holds in memory (as last recorded).
    #[must_use]
    pub fn engine_channels(&self) -> u64 {
        self.engine_channels.load(Ordering::Relaxed)
    }

    /// Every counter as `name{k="v",...} value`, sorted, one per line (Prometheus text style).
    #[must_use]
    pub fn render(&self) -> String {
        let map = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::new();
        for ((counter, labels), value) in map.iter() {
            out.push_str(counter.name());
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(
                        out,
                        "{k}=\"{}\"",
                        v.replace('\\', "\\\\").replace('"', "\\\"")
                    );
                }
                out.push('}');
            }
            let _ = writeln!(out, " {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_names_are_unique_prometheus_names() {
        let mut names: Vec<&str> = Counter::ALL.iter().map(|c| c.name()).collect();
        assert!(names.iter().all(
            |n| n.ends_with("_total") && n.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        ));
        assert!(Counter::ALL.iter().all(|c| !c.help().is_empty()));
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a counter name is declared twice");
    }

    /// README's counter table lists exactly the counters the code keeps, with their labels.
    #[test]
    fn readme_lists_exactly_the_counters() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("<!-- counters:start -->")
            .expect("README has a counters table");
        let end = readme
            .find("<!-- counters:end -->")
            .expect("README's counters table ends");
        let mut listed: Vec<(String, String)> = readme[start..end]
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                Some((name.to_owned(), (*cells.get(2)?).to_owned()))
            })
            .collect();
        listed.sort();
        let mut declared: Vec<(String, String)> = Counter::ALL
            .iter()
            .map(|c| (c.name().to_owned(), c.labels().join(", ")))
            .collect();
        declared.sort();
        assert_eq!(listed, declared);
    }

    #[test]
    fn counters_add_up_per_label_set_and_in_total() {
        let m = Metrics::new();
        m.incr(
            Counter::ModbusErrors,
            &[("device", "a"), ("reason", "timeout")],
        );
        m.add(
            Counter::ModbusErrors,
            &[("device", "b"), ("reason", "timeout")],
            2,
        );
        assert_eq!(
            m.get(
                Counter::ModbusErrors,
                &[("device", "a"), ("reason", "timeout")]
            ),
            1
        );
        assert_eq!(m.total(Counter::ModbusErrors), 3);
        assert_eq!(m.get(Counter::SpoolErrors, &[]), 0);
        assert!(m
            .render()
            .contains("modbus_errors_total{device=\"b\",reason=\"timeout\"} 2\n"));
    }
}
