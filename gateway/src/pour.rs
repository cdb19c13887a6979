//! `gateway pour`: the technician's commands on a pour (issue 8 item 1; README "On a site",
//! `gateway pour`): list each pour's saved state, and record when the insulation came off a
//! pour whose config does not say (GB 50496-2018 §3.0.4-4 judges surface − air from then on).
//!
//! Like `gateway baseline`, it works on the spool file while the service is stopped (redb lets
//! one process open it; with the service running the change is refused with a message saying
//! to stop it first) and writes the pour's state entry, which the engine reads at its next
//! start. Does not own the entry's format ([`crate::engine::curing::PourState`]) or the file
//! access ([`crate::spool::offline`]).

use std::fmt::Write as _;

use crate::baseline::state_path;
use crate::config::Config;
use crate::engine::curing::{pour_key, PourState};
use crate::engine::derived::initial::format_ts as utc;
use crate::model::TimestampNs;
use crate::spool::offline::{self, OfflineError, StateEntries};
use crate::spool::StateDelta;

/// Why nothing was saved.
#[derive(Debug, thiserror::Error)]
pub enum PourCommandError {
    /// The command does not fit the config or the saved state.
    #[error("{0}")]
    Refused(String),
    /// The spool cannot be used now.
    #[error(transparent)]
    Spool(#[from] OfflineError),
}

/// The saved state of `pour` among `entries`: `Ok(None)` when none was saved yet.
fn saved_state(entries: &StateEntries, pour: &str) -> Result<Option<PourState>, String> {
    let key = pour_key(pour);
    entries
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, bytes)| serde_json::from_slice(bytes).map_err(|e| e.to_string()))
        .transpose()
}

/// Record that the insulation came off `pour` at `at`: saved in the spool for the gateway's
/// next start. Returns what was done, for the technician.
///
/// # Errors
/// A refusal for an unknown pour, a pour whose config gives the time, a time before placing,
/// or a saved state that cannot be read (writing over it would forget the milestones already
/// announced); the spool in use or unusable.
pub fn remove_insulation(
    cfg: &Config,
    pour: &str,
    at: TimestampNs,
) -> Result<String, PourCommandError> {
    let Some((i, spec)) = cfg
        .pours
        .pours
        .iter()
        .enumerate()
        .find(|(_, p)| p.name == pour)
    else {
        let known: Vec<&str> = cfg.pours.pours.iter().map(|p| p.name.as_str()).collect();
        return Err(PourCommandError::Refused(format!(
            "no pour \"{pour}\" in the config; the [[pours]] are {known:?}"
        )));
    };
    if let Some(t) = spec.insulation_removed_ns {
        return Err(PourCommandError::Refused(format!(
            "pours[{i}].insulation_removed_at says {} in the config, which wins over the command; change it there and restart the service",
            utc(t)
        )));
    }
    if at < spec.placed_ns {
        return Err(PourCommandError::Refused(format!(
            "{} is before the pour was placed ({}): the insulation cannot come off before the pour",
            utc(at),
            utc(spec.placed_ns)
        )));
    }
    let path = state_path(cfg);
    let entries = offline::read_saved_state(&cfg.data_dir)?.unwrap_or_default();
    let mut state = saved_state(&entries, pour).map_err(|e| {
        PourCommandError::Refused(format!(
            "the saved state of pour \"{pour}\" cannot be read ({e}); writing over it would announce its milestones again, so nothing was changed"
        ))
    })?
    .unwrap_or_default();
    let before = state.insulation_removed_ns.replace(at);
    let bytes = serde_json::to_vec(&state)
        .map_err(|e| PourCommandError::Refused(format!("cannot write the state: {e}")))?;
    let mut delta = StateDelta::default();
    delta.entries.insert(pour_key(pour), Some(bytes));
    offline::write_state(&path, &delta)?;
    let mut out = format!("{pour}: insulation removed at {}", utc(at));
    if let Some(b) = before {
        let _ = write!(out, " (replaces {})", utc(b));
    }
    let _ = writeln!(
        out,
        "; surface − air (GB 50496-2018 §3.0.4-4, ≤ 20 °C) is judged from then on.\nSaved in {}. Start the service.",
        path.display()
    );
    Ok(out)
}

/// Each pour with its saved state (placing temperature, insulation removal, milestones
/// announced), or why the spool cannot be read.
#[must_use]
pub fn listing(cfg: &Config, saved: &Result<Option<StateEntries>, OfflineError>) -> String {
    let mut out = String::new();
    let entries = match saved {
        Ok(e) => e.clone().unwrap_or_default(),
        Err(e) => {
            let _ = writeln!(out, "pour state not shown, {e}");
            Vec::new()
        }
    };
    for p in &cfg.pours.pours {
        let _ = write!(
            out,
            "  {} ({}), placed {}",
            p.name,
            p.element,
            utc(p.placed_ns)
        );
        match saved_state(&entries, &p.name) {
            Err(e) => {
                let _ = writeln!(out, ": saved state unreadable ({e})");
                continue;
            }
            Ok(state) => {
                let state = state.unwrap_or_default();
                match p.placing_c.or(state.placing_c) {
                    Some(t) => {
                        let _ = write!(out, ", placing {t} °C");
                    }
                    None => out.push_str(", placing temperature not read yet"),
                }
                match p.insulation_removed_ns.or(state.insulation_removed_ns) {
                    Some(t) => {
                        let _ = write!(out, ", insulation off {}", utc(t));
                    }
                    None => out.push_str(", insulated"),
                }
                let announced: Vec<&str> = state.announced.iter().map(String::as_str).collect();
                let _ = writeln!(out, ", milestones announced {announced:?}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{Spool, SpoolConfig};

    fn config(dir: &std::path::Path, removed: &str) -> Config {
        let text = format!(
            r#"
site = "xa"
gateway_id = "gw1"
data_dir = "{}"

[[mixes]]
name = "c30"
design_strength_mpa = 30.0
curve = {{ form = "logarithmic", a_mpa = -20.0, b_mpa = 10.0 }}

[[pours]]
name = "raft"
element = "A栋 筏板"
placed_at = "2026-11-30T08:00:00+08:00"
mix = "c30"
{removed}
sensors = {{ core = {{ channel = "therm/t01" }}, surface = {{ channel = "therm/t02" }}, ambient = {{ channel = "therm/air" }} }}
"#,
            dir.display()
        );
        Config::from_str_at(&text, &dir.join("gateway.toml")).expect("valid")
    }

    #[test]
    fn the_removal_time_is_saved_for_the_next_start_and_refused_where_it_cannot_apply() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path(), "");
        // A spool as the gateway leaves it.
        drop(Spool::open(&state_path(&cfg), &SpoolConfig::default(), &[]).expect("spool"));
        // 2026-11-30T10:00:00Z = 18:00 +08:00, ten hours after placing.
        let at = crate::sources::mqtt::timestamp::parse_rfc3339("2026-11-30T10:00:00Z").expect("t");
        let text = remove_insulation(&cfg, "raft", at).expect("saved");
        assert!(
            text.contains("raft: insulation removed at 2026-11-30T10:00:00Z"),
            "{text}"
        );
        let entries = offline::read_state(&state_path(&cfg))
            .expect("read")
            .expect("file");
        let state = saved_state(&entries, "raft")
            .expect("readable")
            .expect("saved");
        assert_eq!(state.insulation_removed_ns, Some(at));
        assert!(listing(&cfg, &Ok(Some(entries))).contains("insulation off 2026-11-30T10:00:00Z"));

        // Refused: an unknown pour, a time before placing (00:00Z is before 08:00 +08:00).
        let e = remove_insulation(&cfg, "slab", at).expect_err("unknown");
        assert!(e.to_string().contains("no pour \"slab\""), "{e}");
        let early =
            crate::sources::mqtt::timestamp::parse_rfc3339("2026-11-29T23:00:00Z").expect("t");
        let e = remove_insulation(&cfg, "raft", early).expect_err("before placing");
        assert!(e.to_string().contains("before the pour was placed"), "{e}");
        // Refused: the config gives the time.
        let cfg = config(
            dir.path(),
            "insulation_removed_at = \"2026-12-02T08:00:00+08:00\"",
        );
        let e = remove_insulation(&cfg, "raft", at).expect_err("configured");
        assert!(
            e.to_string().contains("pours[0].insulation_removed_at"),
            "{e}"
        );
    }

    #[test]
    fn the_engine_judges_surface_minus_air_from_the_saved_removal_time() {
        use crate::engine::curing::PourSet;
        use crate::model::{QuantityKind, Reading, Series};
        use std::sync::Arc;
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path(), "");
        drop(Spool::open(&state_path(&cfg), &SpoolConfig::default(), &[]).expect("spool"));
        let at = crate::sources::mqtt::timestamp::parse_rfc3339("2026-11-30T10:00:00Z").expect("t");
        remove_insulation(&cfg, "raft", at).expect("saved");
        let entries = offline::read_state(&state_path(&cfg))
            .expect("read")
            .expect("file");
        let mut set = PourSet::new(cfg.pours.clone(), "xa", crate::alert::Language::En);
        assert!(set.restore(&entries).is_empty());
        let s = |p: &str| {
            Arc::new(Series::new(
                "xa",
                "gw1",
                "therm",
                p,
                QuantityKind::Temperature,
                "°C",
                &std::collections::BTreeMap::new(),
            ))
        };
        let (surface, air) = (s("t02"), s("air"));
        let hour = 3_600_000_000_000;
        for (ts, want) in [(at - hour, None), (at, Some(6.0)), (at + hour, Some(6.0))] {
            let out = set.on_batch(
                &[
                    Reading::good(Arc::clone(&surface), ts, 20.0),
                    Reading::good(Arc::clone(&air), ts, 14.0),
                ],
                ts,
            );
            let got = out
                .iter()
                .find(|r| r.series.key == "therm/t02.surface-ambient")
                .and_then(|r| r.value);
            assert_eq!(got, want, "at {ts}");
        }
    }
}
