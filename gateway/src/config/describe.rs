//! `gateway check`: a plain-text account of what a validated config would do, for the site
//! technician. Owns only formatting; never connects to anything and never prints a secret.

use std::fmt::Write as _;

use super::{Config, Sink};
use crate::sources::modbus::config::{Device, Transport};
use crate::sources::modbus::plan::ReadPlan;

fn transport(d: &Device) -> String {
    match &d.transport {
        Transport::Tcp(a) => format!("Modbus TCP {a} unit {}", d.unit),
        Transport::RtuOverTcp(a) => format!("Modbus RTU over TCP {a} unit {}", d.unit),
        Transport::Rtu(l) => format!(
            "Modbus RTU {} ({}, {} baud, {:?} parity, {}{}) unit {}",
            l.name, l.path, l.baud, l.parity, l.data_bits, l.stop_bits, d.unit
        ),
    }
}

/// Describe `cfg`: site, devices with their channels and read plans, and the rest.
#[must_use]
pub fn describe(cfg: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "site {} / gateway {}", cfg.site, cfg.gateway_id);
    let _ = writeln!(
        out,
        "data dir {} (spool bound {} bytes)",
        cfg.data_dir.display(),
        cfg.spool.max_bytes
    );
    let _ = match &cfg.console {
        Some(c) => writeln!(
            out,
            "console http://{}/ (overview, /device, /channel, /alerts, /reports, /config, /metrics, /healthz, /readyz), {}; {}; {}",
            c.listen,
            if c.token.is_some() {
                "access token <redacted> required"
            } else {
                "no access token"
            },
            c.history.map_or_else(
                || "no local history".to_owned(),
                |h| format!(
                    "local history {} in {} bytes at most",
                    humantime::format_duration(h.window),
                    h.max_bytes
                )
            ),
            c.report.map_or_else(
                || "no daily report by itself".to_owned(),
                |r| format!(
                    "daily report at {:02}:{:02} (UTC+8)",
                    r.at_secs / 3600,
                    r.at_secs % 3600 / 60
                )
            )
        ),
        None => writeln!(out, "console off"),
    };
    let _ = writeln!(out, "\nModbus devices: {}", cfg.devices.len());
    for d in &cfg.devices {
        let _ = writeln!(
            out,
            "\n  {}: {}; poll every {:?}, timeout {:?}, {} retries, max gap {}",
            d.name,
            transport(d),
            d.poll_interval,
            d.timeout,
            d.retries,
            d.max_gap
        );
        let _ = writeln!(out, "    channels ({}):", d.points.len());
        for p in &d.points {
            let time = p.time.map_or(String::new(), |(a, o)| {
                format!(", sample time u32 at {a} ({o:?})")
            });
            let _ = writeln!(
                out,
                "      {}/{} [{}{}] {} @ {} {:?} {:?} x{} {:+}{}{}",
                d.name,
                p.name,
                p.quantity,
                if p.unit.is_empty() {
                    String::new()
                } else {
                    format!(", {}", p.unit)
                },
                p.function,
                p.address,
                p.data_type,
                p.word_order,
                p.scale,
                p.offset,
                time,
                if p.writable { ", writable" } else { "" }
            );
        }
        for h in &d.holes {
            let _ = writeln!(
                out,
                "    hole (never read): {} {}..={}",
                h.function, h.first, h.last
            );
        }
        let plan = ReadPlan::with_holes(&d.points, d.max_gap, &d.holes);
        let _ = writeln!(
            out,
            "    read plan ({} requests per poll):",
            plan.requests.len()
        );
        for r in &plan.requests {
            let names: Vec<&str> = r
                .points
                .iter()
                .map(|&i| d.points[i].name.as_str())
                .collect();
            let _ = writeln!(out, "      {r}: {}", names.join(", "));
        }
    }
    if let Some(b) = &cfg.embedded_broker {
        let users: Vec<&str> = b.users.iter().map(|(u, _)| u.as_str()).collect();
        let _ = writeln!(
            out,
            "\nembedded MQTT broker on {}{} (max {} clients), {}",
            b.listen,
            b.tls
                .as_ref()
                .map_or_else(String::new, |t| format!(" and TLS on {}", t.listen)),
            b.max_connections,
            if users.is_empty() {
                "anonymous clients (loopback only)".to_owned()
            } else {
                format!("users {} (passwords <redacted>)", users.join(", "))
            }
        );
    }
    let _ = writeln!(out, "\nMQTT sources: {}", cfg.mqtt.len());
    for m in &cfg.mqtt {
        let auth = match (&m.username, &m.password) {
            (Some(u), Some(_)) => format!(", user {u}, password <redacted>"),
            (Some(u), None) => format!(", user {u}"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "\n  {}: broker {}{}{}, {} session, max payload {} bytes",
            m.name,
            m.broker(),
            tls_note(m.tls.as_ref()),
            auth,
            if m.clean_session {
                "clean"
            } else {
                "persistent"
            },
            m.max_payload_bytes
        );
        for s in &m.subscriptions {
            let _ = writeln!(
                out,
                "    {}: subscribe {:?} (from {:?}) QoS {:?}, payload {}, quantity {}{}",
                s.name,
                s.pattern.filter(),
                s.pattern.as_str(),
                s.qos,
                s.payload.name(),
                s.quantity,
                if s.unit.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", s.unit)
                }
            );
        }
    }
    let _ = writeln!(out, "\nderived channels: {}", cfg.derived.specs.len());
    for d in &cfg.derived.specs {
        let _ = writeln!(out, "{d}");
    }
    if !cfg.pours.is_empty() {
        let _ = writeln!(out, "\npours: {}", cfg.pours.pours.len());
        for p in &cfg.pours.pours {
            let _ = writeln!(out, "{p}");
        }
    }
    let _ = writeln!(out, "\nsinks: {}", cfg.sinks.len());
    if cfg.sinks.is_empty() {
        let _ = writeln!(
            out,
            "  none: readings stay in the spool, oldest dropped past the bound"
        );
    }
    for s in &cfg.sinks {
        match s {
            Sink::Influxdb(r) => {
                let _ = writeln!(
                    out,
                    "  {}: InfluxDB v2 {}{} org {} bucket {}, token {}, batches of {} lines or {:?}, timeout {:?}, gzip {}",
                    r.name,
                    r.url,
                    tls_note(r.tls.as_ref()),
                    r.org,
                    r.bucket,
                    if r.token.is_none() { "none" } else { "<redacted>" },
                    r.batch_max_records,
                    r.batch_max_age,
                    r.timeout,
                    r.gzip
                );
            }
            Sink::Mqtt(r) => {
                let _ =
                    writeln!(
                    out,
                    "  {}: alerts to MQTT {}:{}{} as {}{}, topic {:?}, retained summary {:?}, QoS 1",
                    r.name,
                    r.host,
                    r.port,
                    tls_note(r.tls.as_ref()),
                    r.client_id,
                    if r.credentials.is_some() { " (password <redacted>)" } else { "" },
                    r.topic,
                    r.summary_topic
                );
            }
            Sink::Webhook(r) => {
                let _ = writeln!(
                    out,
                    "  {}: alerts to a {:?} webhook (URL <redacted>)",
                    r.name, r.format
                );
            }
            Sink::ModbusOutput(r) => {
                let f = &r.filter;
                let _ = writeln!(
                    out,
                    "  {}: device {} {} while a {:?} alert of level {} or above is active{}{} and not acknowledged; re-asserted every {}",
                    r.name,
                    r.device,
                    r.output.write(true),
                    f.kinds,
                    f.level,
                    f.rules.as_ref().map_or_else(String::new, |x| format!(", rules {x:?}")),
                    f.structures.as_ref().map_or_else(String::new, |x| format!(", structures {x:?}")),
                    crate::sinks::fmt_dur(r.reassert_interval)
                );
            }
        }
    }
    out
}

/// " over TLS (CA <file>)" for a connection with a `tls` table, else nothing.
fn tls_note(tls: Option<&crate::tls::ClientTls>) -> String {
    tls.map_or_else(String::new, |t| {
        format!(" over TLS (CA {})", t.ca_file.display())
    })
}
