//! The wanted state of the output: on while at least one alert holds it.
//!
//! Owns [`Holds`], the set of alerts that hold the output, kept from their latest events. The
//! state is computed from that set, never by counting raise and clear edges: an event seen twice
//! (at-least-once delivery, a batch re-read after a restart) or an alert acknowledged and then
//! escalated changes the set, not a counter, so two alerts on one siren release it only when
//! both ended. It does not read the spool or write anything ([`super::sink`]).

use std::collections::BTreeMap;

use super::config::AlertFilter;
use crate::alert::Alert;

/// The active alerts seen, by id, with the sequence number of the latest event and whether it
/// holds the output. A cleared alert is forgotten; a batch read again after a restart replays
/// its events in order, so a re-sent raise is followed by its re-sent clear.
#[derive(Debug, Clone)]
pub struct Holds {
    filter: AlertFilter,
    /// Alert id → `seq` of its latest event seen, for every alert seen that is still active.
    latest: BTreeMap<String, (u32, bool)>,
}

impl Holds {
    /// No alert seen yet.
    #[must_use]
    pub const fn new(filter: AlertFilter) -> Self {
        Self {
            filter,
            latest: BTreeMap::new(),
        }
    }

    /// Take one alert event. An event older than the latest one seen of its alert (a re-sent
    /// event) changes nothing; a clear forgets the alert.
    pub fn apply(&mut self, alert: &Alert) {
        if let Some(&(seq, _)) = self.latest.get(&alert.id) {
            if alert.seq < seq {
                return;
            }
        }
        if alert.is_active() {
            self.latest
                .insert(alert.id.clone(), (alert.seq, self.filter.holds(alert)));
        } else {
            self.latest.remove(&alert.id);
        }
    }

    /// True while at least one alert holds the output.
    #[must_use]
    pub fn wanted(&self) -> bool {
        self.latest.values().any(|&(_, holds)| holds)
    }

    /// The ids of the alerts holding the output (for the log).
    #[must_use]
    pub fn holders(&self) -> Vec<&str> {
        self.latest
            .iter()
            .filter(|(_, &(_, holds))| holds)
            .map(|(id, _)| id.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertKind, AlertState, Cause, Level};

    fn filter() -> AlertFilter {
        AlertFilter {
            level: Level::Orange,
            kinds: vec![AlertKind::Quality],
            rules: None,
            structures: Some(vec!["block-a".into()]),
        }
    }

    fn event(id: &str, seq: u32, state: AlertState, level: Level) -> Alert {
        Alert {
            id: id.into(),
            seq,
            kind: AlertKind::Quality,
            cause: Cause::Absolute,
            site: "s".into(),
            structure: Some("block-a".into()),
            device: "d".into(),
            point: "p".into(),
            channel: "d/p".into(),
            channels: vec!["d/p".into()],
            quantity: None,
            rule: "r".into(),
            label: None,
            side: None,
            level,
            previous_level: None,
            state,
            value: None,
            threshold: None,
            unit: String::new(),
            quality: None,
            started_at: 0,
            event_at: 0,
            detected_at: 0,
            message: String::new(),
            ack: None,
        }
    }

    #[test]
    fn two_alerts_on_one_output_release_it_only_when_both_ended() {
        let mut h = Holds::new(filter());
        assert!(!h.wanted());
        h.apply(&event("a", 0, AlertState::Raised, Level::Red));
        h.apply(&event("b", 0, AlertState::Raised, Level::Orange));
        assert!(h.wanted());
        assert_eq!(h.holders(), ["a", "b"]);
        // The raise of `a` delivered twice: still one holder, not two.
        h.apply(&event("a", 0, AlertState::Raised, Level::Red));
        h.apply(&event("a", 1, AlertState::Cleared, Level::Red));
        assert!(h.wanted(), "b still holds it");
        h.apply(&event("b", 1, AlertState::Cleared, Level::Orange));
        assert!(!h.wanted());
        assert!(h.holders().is_empty());
    }

    #[test]
    fn acknowledgement_and_de_escalation_release_and_escalation_holds_again() {
        let mut h = Holds::new(filter());
        h.apply(&event("a", 0, AlertState::Raised, Level::Red));
        assert!(h.wanted());
        h.apply(&event("a", 1, AlertState::Acknowledged, Level::Red));
        assert!(!h.wanted(), "消警 releases the siren");
        // A re-sent older event does not undo the acknowledgement.
        h.apply(&event("a", 0, AlertState::Raised, Level::Red));
        assert!(!h.wanted());
        h.apply(&event("a", 2, AlertState::DeEscalated, Level::Yellow));
        assert!(!h.wanted(), "yellow is below the orange level");
        h.apply(&event("a", 3, AlertState::Escalated, Level::Orange));
        assert!(h.wanted(), "a new level change asks for attention again");
    }

    #[test]
    fn only_the_configured_kinds_structures_and_levels_hold_it() {
        let mut h = Holds::new(filter());
        let mut fault = event("f", 0, AlertState::Raised, Level::Red);
        fault.kind = AlertKind::DeviceFault;
        h.apply(&fault);
        let mut elsewhere = event("e", 0, AlertState::Raised, Level::Red);
        elsewhere.structure = Some("block-b".into());
        h.apply(&elsewhere);
        h.apply(&event("y", 0, AlertState::Raised, Level::Yellow));
        assert!(!h.wanted());
    }
}
