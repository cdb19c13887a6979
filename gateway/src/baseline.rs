//! `gateway baseline`: the initial values (初始值) of levelling blocks, for the technician
//! (issue 7 item 2; docs/DOMAIN.md §Derived channels; README "On a site", `gateway
//! baseline`).
//!
//! Owns the command's three actions: list every initial value in force (configured, and
//! established in the spool with its time, method and history), ask the gateway to establish
//! missing ones from the mean of the next N good readings, and re-zero a channel after a sensor
//! replacement (the old value kept in the history). It works on the spool file while the
//! service is stopped: redb lets one process open the file, so with the service running the
//! changes are refused with a message saying to stop it first, and the listing shows the
//! configured values only. Requests are saved as state entries; the engine collects the readings
//! when it runs again ([`crate::engine::derived`]). Does not own the record format or its
//! transitions ([`crate::engine::derived::initial`]) or the file access
//! ([`crate::spool::offline`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use crate::config::Config;
use crate::engine::derived::config::MAX_ESTABLISH_READINGS;
use crate::engine::derived::initial::{Baseline, Change};
use crate::engine::derived::{initial_key, DerivedKind, DerivedPlan, DerivedSpec, INITIAL_PREFIX};
use crate::engine::rules::selector::ChannelInfo;
use crate::model::{Series, TimestampNs};
use crate::spool::offline::{self, OfflineError, StateEntries};
use crate::spool::StateDelta;

/// Good readings averaged when neither `--readings` nor the block's `establish_readings` says:
/// 10 polls smooth a cell's noise (about ±0.1 mm) and take under two minutes at 10 s.
pub const DEFAULT_READINGS: u32 = 10;

/// Why a request was not saved (nothing was written).
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// The command's arguments do not fit the config or the saved values; one line each.
    #[error("{}", .0.join("\n"))]
    Refused(Vec<String>),
    /// The spool cannot be used now.
    #[error(transparent)]
    Spool(#[from] OfflineError),
}

/// The file `cfg`'s gateway keeps the engine's state in: the spool's alerts file
/// (docs/ARCHITECTURE.md §Spool layout, Two files).
#[must_use]
pub fn state_path(cfg: &Config) -> PathBuf {
    crate::spool::alerts_path(&cfg.data_dir)
}

/// The saved state entries, as the listing takes them.
pub type Saved = Result<Option<StateEntries>, OfflineError>;

/// Every initial value of the levelling blocks of `plan`: the configured ones when
/// `with_configured` (`gateway check` lists those with the block), then those in the spool
/// (`saved`) with their time, method and history, or why the spool cannot be read.
#[must_use]
pub fn listing(plan: &DerivedPlan, saved: &Saved, with_configured: bool) -> String {
    let mut out = String::new();
    let levelling: Vec<_> = plan
        .specs
        .iter()
        .filter(|s| s.kind == DerivedKind::Levelling)
        .collect();
    if levelling.is_empty() {
        return out;
    }
    let _ = writeln!(out, "\ninitial values:");
    let (entries, note) = match saved {
        Ok(Some(e)) => (e.as_slice(), None),
        Ok(None) => (&[][..], Some("none (no spool file yet)".to_owned())),
        Err(e) => (&[][..], Some(format!("not shown, {e}"))),
    };
    let mut listed = vec![false; entries.len()];
    for spec in levelling {
        let _ = writeln!(out, "  {}:", spec.name);
        if with_configured {
            for (channel, i) in &spec.initial {
                let date = if i.surveyed.is_empty() {
                    "no survey date"
                } else {
                    i.surveyed.as_str()
                };
                let _ = writeln!(out, "    {channel} = {} (configured, {date})", i.value);
            }
        }
        let prefix = initial_key(&spec.name, "");
        for (i, (key, bytes)) in entries.iter().enumerate() {
            let Some(channel) = key.strip_prefix(&prefix) else {
                continue;
            };
            listed[i] = true;
            let overridden = if spec.initial.contains_key(channel) {
                " [not used: the config's value wins]"
            } else {
                ""
            };
            match serde_json::from_slice::<Baseline>(bytes) {
                Ok(b) => {
                    let _ = writeln!(out, "    {channel} = {}{overridden}", b.describe());
                    for h in b.history() {
                        let _ = writeln!(out, "      before: {}", h.describe());
                    }
                }
                Err(_) => {
                    let _ = writeln!(
                        out,
                        "    {channel} = unreadable in the spool: its settlements stay 411 until `gateway baseline rezero`{overridden}"
                    );
                }
            }
        }
    }
    for (i, (key, _)) in entries.iter().enumerate() {
        if !listed[i] && key.starts_with(INITIAL_PREFIX) {
            let _ = writeln!(
                out,
                "  {key}: in the spool, of no levelling block in this config (unused)"
            );
        }
    }
    if let Some(note) = note {
        let _ = writeln!(out, "  in the spool: {note}");
    }
    out
}

/// What `gateway baseline establish` or `rezero` asks: `change` for `channels` of `block`,
/// from the mean of `readings` good readings (default: the block's `establish_readings`, else
/// [`DEFAULT_READINGS`]).
#[derive(Debug, Clone)]
pub struct Order<'a> {
    /// The `[[derived]]` block's name.
    pub block: &'a str,
    /// Channel keys (`device/point`), cells or the reference.
    pub channels: &'a [String],
    /// Establish or re-zero.
    pub change: Change,
    /// `--readings`.
    pub readings: Option<u32>,
}

/// The state entries `order` writes, given the saved `entries`, at `now`; one refusal per
/// problem (nothing is written when there is any).
///
/// # Errors
/// [`BaselineError::Refused`] naming the block or channel and what to do instead.
pub fn plan_order(
    plan: &DerivedPlan,
    order: &Order<'_>,
    entries: &[(String, Vec<u8>)],
    now: TimestampNs,
) -> Result<StateDelta, BaselineError> {
    let Some((bi, spec)) = plan
        .specs
        .iter()
        .enumerate()
        .find(|(_, s)| s.name == order.block)
    else {
        let names: Vec<&str> = plan
            .specs
            .iter()
            .filter(|s| s.kind == DerivedKind::Levelling)
            .map(|s| s.name.as_str())
            .collect();
        return Err(BaselineError::Refused(vec![format!(
            "--block {}: no [[derived]] block of that name; levelling blocks: {names:?}",
            order.block
        )]));
    };
    let at = format!("derived[{bi}] ({})", spec.name);
    if spec.kind != DerivedKind::Levelling {
        return Err(BaselineError::Refused(vec![format!(
            "{at}: kind {} has no initial values; only levelling blocks do",
            spec.kind.as_str()
        )]));
    }
    let readings = order
        .readings
        .or(spec.establish_readings)
        .unwrap_or(DEFAULT_READINGS);
    if !(1..=MAX_ESTABLISH_READINGS).contains(&readings) {
        return Err(BaselineError::Refused(vec![format!(
            "--readings {readings}: give 1 to {MAX_ESTABLISH_READINGS}"
        )]));
    }
    if order.channels.is_empty() {
        return Err(BaselineError::Refused(vec![format!(
            "{at}: name the channels with --channel device/point (the cells, or the reference{})",
            spec.reference
                .as_ref()
                .map(|r| format!(" {r}"))
                .unwrap_or_default()
        )]));
    }
    let saved: BTreeMap<&str, &[u8]> = entries
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    let mut delta = StateDelta::default();
    let mut refusals = Vec::new();
    for channel in order.channels {
        if !channel.contains('/') {
            refusals.push(format!(
                "--channel {channel}: write it device/point, e.g. block-a-lvl/ch1"
            ));
            continue;
        }
        if spec.initial.contains_key(channel.as_str()) {
            refusals.push(format!(
                "{at}.initial.\"{channel}\": configured in the config file, which always wins; change it there (keep the old value and its date in a comment), or remove it to use the spool"
            ));
            continue;
        }
        let key = initial_key(&spec.name, channel);
        let current = saved
            .get(key.as_str())
            .map(|b| serde_json::from_slice::<Baseline>(b).map_err(|_| ()));
        match Baseline::change(current, &order.change, readings, now) {
            Ok(b) => match serde_json::to_vec(&b) {
                Ok(bytes) => {
                    delta.entries.insert(key, Some(bytes));
                }
                Err(e) => refusals.push(format!("{channel}: cannot be saved ({e})")),
            },
            Err(r) => refusals.push(format!("{at} {channel}: {r}")),
        }
    }
    if refusals.is_empty() {
        Ok(delta)
    } else {
        Err(BaselineError::Refused(refusals))
    }
}

/// Carry out `order` on `cfg`'s spool at `now`; the text for the technician.
///
/// # Errors
/// A refusal (nothing written), or the spool in use or unusable.
pub fn carry_out(
    cfg: &Config,
    order: &Order<'_>,
    now: TimestampNs,
) -> Result<String, BaselineError> {
    if let Some(spec) = cfg.derived.specs.iter().find(|s| s.name == order.block) {
        let unknown: Vec<String> = order
            .channels
            .iter()
            .filter_map(|c| unknown_channel(cfg, spec, c))
            .collect();
        if !unknown.is_empty() {
            return Err(BaselineError::Refused(unknown));
        }
    }
    let path = state_path(cfg);
    let entries = offline::read_saved_state(&cfg.data_dir)?.unwrap_or_default();
    let delta = plan_order(&cfg.derived, order, &entries, now)?;
    offline::write_state(&path, &delta)?;
    let readings = order
        .readings
        .or_else(|| {
            cfg.derived
                .specs
                .iter()
                .find(|s| s.name == order.block)
                .and_then(|s| s.establish_readings)
        })
        .unwrap_or(DEFAULT_READINGS);
    let what = match &order.change {
        Change::Establish => "establishing".to_owned(),
        Change::Rezero { reason } => {
            format!("re-zeroing ({reason}; the old value is kept in the history)")
        }
    };
    let mut out = String::new();
    for c in order.channels {
        let _ = writeln!(
            out,
            "{} {c}: {what} from the mean of the next {readings} good readings; its settlements are flagged 411 until then",
            order.block
        );
    }
    let _ = writeln!(
        out,
        "Saved in {}. Start the service: the gateway collects the readings, logs the value at INFO, and `gateway baseline show` lists it.",
        path.display()
    );
    Ok(out)
}

/// The Modbus channels of levelling block `block` (its selected cells and its reference) that
/// have no initial value: none configured and none in the spool, established or being
/// collected (`--all-missing`). MQTT channels exist only at run time: name those.
///
/// # Errors
/// A refusal for an unknown or non-levelling block; the spool in use or unusable.
pub fn missing_channels(cfg: &Config, block: &str) -> Result<Vec<String>, BaselineError> {
    let Some(spec) = cfg
        .derived
        .specs
        .iter()
        .find(|s| s.name == block && s.kind == DerivedKind::Levelling)
    else {
        return Err(BaselineError::Refused(vec![format!(
            "--block {block}: no levelling [[derived]] block of that name"
        )]));
    };
    let entries = offline::read_saved_state(&cfg.data_dir)?.unwrap_or_default();
    let mut out = Vec::new();
    for d in &cfg.devices {
        for p in &d.points {
            let key = format!("{}/{}", d.name, p.name);
            let saved = entries.iter().any(|(k, _)| *k == initial_key(block, &key));
            if !saved
                && !spec.initial.contains_key(&key)
                && unknown_channel(cfg, spec, &key).is_none()
            {
                out.push(key);
            }
        }
    }
    if out.is_empty() {
        return Err(BaselineError::Refused(vec![format!(
            "--block {block} --all-missing: every Modbus cell and the reference have an initial value or one being collected (`gateway baseline show`); name MQTT channels with --channel"
        )]));
    }
    Ok(out)
}

/// Why `channel` cannot be an input of levelling block `spec` in `cfg`, if it cannot: a Modbus
/// device's point that does not exist or that the block neither selects nor names as its
/// reference, or a device the config does not have when no MQTT source could bring it.
#[must_use]
pub fn unknown_channel(cfg: &Config, spec: &DerivedSpec, channel: &str) -> Option<String> {
    let (device, point) = channel.split_once('/')?;
    let Some(d) = cfg.devices.iter().find(|d| d.name == device) else {
        return cfg.mqtt.is_empty().then(|| {
            format!("--channel {channel}: the config has no device {device} (and no MQTT source)")
        });
    };
    let Some(p) = d.points.iter().find(|p| p.name == point) else {
        let points: Vec<&str> = d.points.iter().map(|p| p.name.as_str()).collect();
        return Some(format!(
            "--channel {channel}: device {device} has no point {point}; its points: {points:?}"
        ));
    };
    let series = std::sync::Arc::new(Series::new(
        &cfg.site,
        &cfg.gateway_id,
        &d.name,
        &p.name,
        p.quantity,
        &p.unit,
        &d.tags,
    ));
    let info = ChannelInfo::from_series(&series);
    let input = spec.reference.as_deref() == Some(channel)
        || spec.select.as_ref().is_some_and(|s| s.matches(&info));
    (!input).then(|| {
        format!(
            "--channel {channel}: neither the reference nor a cell of block {} (its `select` does not match it)",
            spec.name
        )
    })
}

#[cfg(test)]
mod tests;
