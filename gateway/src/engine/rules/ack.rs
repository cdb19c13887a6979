//! Acknowledging an active alert (消警, issue 9 item 2): somebody on site or at the bureau says
//! they took it in hand, with a note.
//!
//! Owns the checks on who and the note, and the acknowledgement event: the alert's latest event
//! with the state [`AlertState::Acknowledged`], the next sequence number of the alert (taken
//! from the condition that holds it, so that its later events keep `(id, seq)` unique), the
//! acknowledgement and a message saying who and why. The engine stores and delivers it like any
//! event, with the rule state, so a restart keeps both. An acknowledgement changes no condition:
//! the alert stays active until its condition clears, and a level change afterwards is a new
//! event that asks for attention again. Does not own where requests come from (the console).

use super::{Evaluator, FaultCondition};
use crate::alert::{
    render_message, Acknowledgement, Alert, AlertState, MAX_ACK_BY_CHARS, MAX_ACK_NOTE_CHARS,
};
use crate::engine::rules::condition::Active;
use crate::model::TimestampNs;

/// Why an acknowledgement was refused; the message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckRefused {
    /// No active alert has this id.
    #[error("no active alert {0}: it has been cleared already, or the id is wrong")]
    NotActive(String),
    /// `by` is empty.
    #[error("say who acknowledges the alert (a name or a role)")]
    NoOne,
    /// `by` or the note is too long.
    #[error("{what} is longer than {max} characters; shorten it")]
    TooLong {
        /// `who` or `note`.
        what: &'static str,
        /// The limit.
        max: usize,
    },
}

impl Evaluator {
    /// Acknowledge the active alert `id` for `by` with `note` at gateway time `now`: the event
    /// to store and deliver. The alert's conditions are untouched; its next event continues its
    /// sequence.
    ///
    /// # Errors
    /// [`AckRefused`]: no such active alert, nobody named, or text too long.
    pub fn acknowledge(
        &mut self,
        id: &str,
        by: &str,
        note: &str,
        now: TimestampNs,
    ) -> Result<Alert, AckRefused> {
        let (by, note) = (by.trim(), note.trim());
        if by.is_empty() {
            return Err(AckRefused::NoOne);
        }
        for (what, text, max) in [
            ("who", by, MAX_ACK_BY_CHARS),
            ("note", note, MAX_ACK_NOTE_CHARS),
        ] {
            if text.chars().count() > max {
                return Err(AckRefused::TooLong { what, max });
            }
        }
        let Some(latest) = self.active.get(id).cloned() else {
            return Err(AckRefused::NotActive(id.to_owned()));
        };
        let Some(seq) = self.next_seq_of(id) else {
            return Err(AckRefused::NotActive(id.to_owned()));
        };
        let mut event = Alert {
            seq,
            state: AlertState::Acknowledged,
            previous_level: Some(latest.level),
            event_at: now,
            detected_at: now,
            ack: Some(Acknowledgement {
                by: by.to_owned(),
                note: note.to_owned(),
                at: now,
            }),
            ..latest
        };
        event.message = render_message(&event, self.rules.language);
        self.active.insert(id.to_owned(), event.clone());
        Ok(event)
    }

    /// Move the sequence of the condition that holds alert `id` on by one, marking its owner
    /// changed for the next save; `None` when no condition holds it.
    fn next_seq_of(&mut self, id: &str) -> Option<u32> {
        fn bump(slot: &mut Option<Active>, id: &str) -> Option<u32> {
            slot.as_mut().filter(|a| a.id == id).map(Active::next_seq)
        }
        fn bump_faults<'a>(
            faults: impl Iterator<Item = &'a mut FaultCondition>,
            id: &str,
        ) -> Option<u32> {
            faults.into_iter().find_map(|f| bump(&mut f.active, id))
        }
        for ch in &mut self.channels {
            let found = ch
                .slots
                .iter_mut()
                .find_map(|s| {
                    bump(&mut s.upper.active, id).or_else(|| bump(&mut s.lower.active, id))
                })
                .or_else(|| {
                    // A channel without fault state of its own has no fault alert to bump.
                    let f = ch.data.faults.existing_mut()?;
                    bump_faults(
                        [&mut f.bad_quality, &mut f.range, &mut f.stuck, &mut f.spike].into_iter(),
                        id,
                    )
                })
                .or_else(|| bump_faults(ch.stale.iter_mut(), id));
            if found.is_some() {
                ch.touched = true;
                return found;
            }
        }
        let in_devices = self
            .devices
            .iter_mut()
            .find_map(|d| bump_faults(d.stale.iter_mut(), id));
        if in_devices.is_some() {
            return in_devices;
        }
        // An alert of a pair or rate rule restored from an earlier version's state, whose
        // derived channel has not reported since.
        self.adoptable
            .values_mut()
            .flat_map(|slots| slots.values_mut())
            .find_map(|s| bump(&mut s.upper.active, id).or_else(|| bump(&mut s.lower.active, id)))
    }
}
