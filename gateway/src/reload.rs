//! What a config reload (SIGHUP, `systemctl reload`) would change: the running config compared
//! with the new one, validated by [`Config::load`] exactly as at start-up.
//!
//! Owns the rules of a reload: which changes it refuses because they need a restart
//! ([`Refusal`]), which sources, sinks and buses it keeps running (equal validated settings,
//! secrets and TLS files' contents included) and which it restarts ([`Plan`]), and the names of
//! those tasks. It does not carry a reload out ([`crate::run`] stops and starts the tasks) nor
//! decide when one happens (the signal, `main.rs`). docs/ARCHITECTURE.md §Reload.
//!
//! The engine is restarted by every applied reload (its rules, derived channels and pours are
//! built at its start, and it restores their state from the spool as at start-up); what it
//! holds is committed first. The spool, the readings channel, the embedded broker, the console's
//! local history and daily report live as long as the process.

use std::fmt;
use std::time::Duration;

use crate::config::{Config, Sink};
use crate::sources::modbus::poller::{group_into_buses, Bus};
use crate::sources::mqtt::MqttSettings;

/// A change a reload cannot apply: the running config stays in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The key or section (`data_dir`, `sinks`).
    pub at: String,
    /// Why, and what to do instead.
    pub fix: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.fix)
    }
}

/// The tasks of one kind (Modbus buses, MQTT sources, sinks) by task name: kept as they run,
/// stopped (changed or gone), started (changed or new). A changed one is stopped and started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Running on, untouched (an MQTT source keeps its session).
    pub kept: Vec<String>,
    /// Stopped by the reload.
    pub stopped: Vec<String>,
    /// Started by the reload.
    pub started: Vec<String>,
}

impl Changes {
    /// Compare `old` with `new`, each a list of (task name, validated settings).
    fn between<T: PartialEq>(old: &[(String, T)], new: &[(String, T)]) -> Self {
        let mut c = Self::default();
        for (name, settings) in old {
            match new.iter().find(|(n, _)| n == name) {
                Some((_, s)) if s == settings => c.kept.push(name.clone()),
                _ => c.stopped.push(name.clone()),
            }
        }
        for (name, _) in new {
            if !c.kept.contains(name) {
                c.started.push(name.clone());
            }
        }
        c
    }
}

/// What an accepted reload does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Modbus pollers, one per bus.
    pub buses: Changes,
    /// MQTT sources.
    pub mqtt: Changes,
    /// Sinks (their cursors are in the spool: a restarted sink continues where it stopped). A
    /// Modbus output sink is restarted also when a bus is, as it holds the write routes.
    pub sinks: Changes,
    /// The console is restarted: its settings, the sinks its readiness watches, the Modbus
    /// buses its `/write` reaches, or the configuration it shows changed (browsers sign in
    /// again: the session key is new).
    pub console: bool,
    /// `[embedded_broker]` changed: not applied (its clients' sessions live in it), the old
    /// broker keeps running until a restart.
    pub broker_needs_restart: bool,
}

/// The task name of the poller of `bus`: its link and devices (two TCP devices at one address
/// are two buses).
#[must_use]
pub fn poller_task(bus: &Bus) -> String {
    let devices: Vec<&str> = bus.devices.iter().map(|d| d.name.as_str()).collect();
    format!("poller {} [{}]", bus.link, devices.join(", "))
}

/// The task name of an MQTT source.
#[must_use]
pub fn mqtt_task(settings: &MqttSettings) -> String {
    format!("mqtt source {}", settings.name)
}

/// The task name of a sink.
#[must_use]
pub fn sink_task(sink: &Sink) -> String {
    format!("sink {}", sink.name())
}

/// The configuration as the console's `/config` page shows it (and `gateway check` prints it).
#[must_use]
pub fn console_config_text(cfg: &Config) -> String {
    format!(
        "{}{}",
        crate::config::describe(cfg),
        crate::config::rule_coverage(cfg).text
    )
}

/// Compare the running config `old` with the validated `new` one.
///
/// # Errors
/// Every change that needs a restart, each naming its key and the fix.
pub fn plan(old: &Config, new: &Config) -> Result<Plan, Vec<Refusal>> {
    let refusals = refusals(old, new);
    if !refusals.is_empty() {
        return Err(refusals);
    }
    let buses = |cfg: &Config| -> Vec<(String, Bus)> {
        group_into_buses(&cfg.devices)
            .into_iter()
            .map(|b| (poller_task(&b), b))
            .collect()
    };
    let mqtt = |cfg: &Config| -> Vec<(String, MqttSettings)> {
        cfg.mqtt.iter().map(|m| (mqtt_task(m), m.clone())).collect()
    };
    let sinks = |cfg: &Config| -> Vec<(String, Sink)> {
        cfg.sinks
            .iter()
            .map(|s| (sink_task(s), s.clone()))
            .collect()
    };
    let buses = Changes::between(&buses(old), &buses(new));
    // Writes reach a device through its bus's poller (`sources::modbus::write`): a bus started
    // or stopped changes the routes the console and the Modbus output sinks hold.
    let routes_changed = !buses.stopped.is_empty() || !buses.started.is_empty();
    let mut sinks = Changes::between(&sinks(old), &sinks(new));
    if routes_changed {
        for s in &new.sinks {
            let name = sink_task(s);
            if matches!(s, Sink::ModbusOutput(_)) && sinks.kept.contains(&name) {
                sinks.kept.retain(|k| *k != name);
                sinks.stopped.push(name.clone());
                sinks.started.push(name);
            }
        }
    }
    Ok(Plan {
        buses,
        mqtt: Changes::between(&mqtt(old), &mqtt(new)),
        sinks,
        console: old.console != new.console
            || old.sinks != new.sinks
            || routes_changed
            || console_config_text(old) != console_config_text(new),
        broker_needs_restart: !same_broker(
            old.embedded_broker.as_ref(),
            new.embedded_broker.as_ref(),
        ),
    })
}

/// What cannot change without a restart, and why.
fn refusals(old: &Config, new: &Config) -> Vec<Refusal> {
    let mut found = Vec::new();
    let mut refuse = |changed: bool, at: &str, why: &str| {
        if changed {
            found.push(Refusal {
                at: at.to_owned(),
                fix: format!(
                    "{why}; restart the service to change {at} (systemctl restart anju-gateway)"
                ),
            });
        }
    };
    refuse(
        old.site != new.site,
        "site",
        "every stored series and saved state is tagged with it",
    );
    refuse(
        old.gateway_id != new.gateway_id,
        "gateway_id",
        "every stored series, MQTT client id and saved state is tagged with it",
    );
    refuse(
        old.data_dir != new.data_dir,
        "data_dir",
        "the spool is open there (one handle per process)",
    );
    refuse(
        old.clock != new.clock,
        "clock",
        "every source and the engine read the clock made at start",
    );
    refuse(
        old.spool != new.spool,
        "spool",
        "the spool's settings are read when it opens",
    );
    // A sink's cursor is registered in the spool when it opens (docs/ARCHITECTURE.md §Spool
    // layout, Cursors): a new one would have none, a removed one would pin data.
    let kinds = |cfg: &Config| -> Vec<(String, &'static str)> {
        let mut k: Vec<(String, &'static str)> = cfg
            .sinks
            .iter()
            .map(|s| {
                let kind = match s {
                    Sink::Influxdb(_) => "influxdb",
                    Sink::Mqtt(_) => "mqtt",
                    Sink::Webhook(_) => "webhook",
                    Sink::ModbusOutput(_) => "modbus_output",
                };
                (s.name().to_owned(), kind)
            })
            .collect();
        k.sort();
        k
    };
    refuse(
        kinds(old) != kinds(new),
        "sinks",
        "a sink was added, removed, renamed or changed its type, and each sink's cursor is registered when the spool opens (a sink's other settings reload)",
    );
    let history = |cfg: &Config| cfg.console.as_ref().and_then(|c| c.history);
    refuse(
        history(old) != history(new),
        "console.history",
        "the local history's file is open",
    );
    let report = |cfg: &Config| cfg.console.as_ref().and_then(|c| c.report);
    refuse(
        report(old) != report(new),
        "console.report",
        "the daily report's task starts with the history",
    );
    found
}

/// Whether two embedded broker settings are the same (the TLS listener by its address: its
/// certificate is not compared, so a renewed certificate also takes a restart).
fn same_broker(
    a: Option<&crate::broker::BrokerSettings>,
    b: Option<&crate::broker::BrokerSettings>,
) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.listen == b.listen
                && a.max_connections == b.max_connections
                && a.max_payload_bytes == b.max_payload_bytes
                && a.users == b.users
                && a.tls.as_ref().map(|t| t.listen) == b.tls.as_ref().map(|t| t.listen)
        }
        _ => false,
    }
}

/// What became of a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new config runs.
    Applied {
        /// From the request to the new engine running.
        took: Duration,
        /// What was kept, stopped and started.
        plan: Box<Plan>,
    },
    /// The old config keeps running; why (every problem, as `gateway check` prints them).
    Refused {
        /// The problems.
        reason: String,
    },
}

#[cfg(test)]
mod tests;
