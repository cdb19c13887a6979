//! Counters of what happened to the data: readings in, readings dropped and why, errors per
//! device and topic. One place that every component reports to, so a status page and the
//! console summary (and later `/metrics`) read the same numbers.
//!
//! Owns [`Metrics`]. It does not log: the component that counts also logs, with the device,
//! topic or path that names the problem. Counters are keyed by a static name and a small label
//! set; the hot path counts per batch, not per reading, so a mutex is cheap enough.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// A counter's identity: a static name plus `label=value` pairs, in the order given.
type CounterKey = (&'static str, Vec<(&'static str, String)>);

/// The gateway's counters. Shared as `Arc<Metrics>`.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<CounterKey, u64>>,
}

impl Metrics {
    /// A fresh set of counters, all zero.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `by` to the counter `name{labels}`.
    pub fn add(&self, name: &'static str, labels: &[(&'static str, &str)], by: u64) {
        let key = (
            name,
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
    pub fn incr(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        self.add(name, labels, 1);
    }

    /// The value of `name{labels}` (0 if never counted).
    #[must_use]
    pub fn get(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        let key = (
            name,
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
    pub fn total(&self, name: &'static str) -> u64 {
        let map = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter()
            .filter(|((n, _), _)| *n == name)
            .map(|(_, v)| *v)
            .sum()
    }

    /// Every counter as `name{k="v",...} value`, sorted, one per line (Prometheus text style).
    #[must_use]
    pub fn render(&self) -> String {
        let map = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::new();
        for ((name, labels), value) in map.iter() {
            out.push_str(name);
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
    fn counters_add_up_per_label_set_and_in_total() {
        let m = Metrics::new();
        m.incr(
            "modbus_errors_total",
            &[("device", "a"), ("reason", "timeout")],
        );
        m.add(
            "modbus_errors_total",
            &[("device", "b"), ("reason", "timeout")],
            2,
        );
        assert_eq!(
            m.get(
                "modbus_errors_total",
                &[("device", "a"), ("reason", "timeout")]
            ),
            1
        );
        assert_eq!(m.total("modbus_errors_total"), 3);
        assert_eq!(m.get("other", &[]), 0);
        assert!(m
            .render()
            .contains("modbus_errors_total{device=\"b\",reason=\"timeout\"} 2\n"));
    }
}
