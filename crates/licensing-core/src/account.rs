//! Account settings: the calendar, seat growth, recording retention, late-event grace and the
//! metered services' switches and caps.

use crate::{calendar::Zone, ids::IdKind, retention::RecordingRetention};

/// The longest grace period for late events, in days.
pub const MAX_GRACE_PERIOD_DAYS: u32 = 62;

/// An account's validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSettings {
    /// The account's calendar.
    pub zone: Zone,
    /// Whether applying a member grows the inventory when no seat is free.
    pub auto_growth: bool,
    /// Call-recording retention.
    pub recording_retention: RecordingRetention,
    /// The retention the account's recordings must be kept for (by law or contract), if it
    /// says: the advisor offers to shorten a longer retention to it. Nothing else reads it.
    pub recording_retention_required: Option<RecordingRetention>,
    /// Days after a month's end during which late events are accepted.
    pub grace_period_days: u32,
    /// Speech-to-text on.
    pub speech_to_text: bool,
    /// Speech-to-text minutes beyond the base pack per month; `None` is unlimited.
    pub speech_to_text_extra_minutes_cap: Option<u32>,
    /// Power Pack on.
    pub power_pack: bool,
    /// Smart-routing packs per month; `None` is unlimited.
    pub smart_routing_packs_cap: Option<u32>,
    /// AI-topics packs per month; `None` is unlimited.
    pub ai_topics_packs_cap: Option<u32>,
    /// AI-QA packs per month; `None` is unlimited.
    pub ai_qa_packs_cap: Option<u32>,
    /// AI topics run on calls (needs speech-to-text).
    pub ai_topics_on_calls: bool,
}

/// A settings field that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {value}: {problem}")]
pub struct InvalidAccountSettings {
    /// The field, as named in requests.
    pub field: String,
    /// The refused value, rendered.
    pub value: String,
    /// What is wrong with it.
    pub problem: String,
}

impl AccountSettings {
    /// Defaults for an account in `zone`: no auto-growth, 3-month retention, no grace, metered
    /// services off.
    pub fn new(zone: Zone) -> AccountSettings {
        AccountSettings {
            zone,
            auto_growth: false,
            recording_retention: RecordingRetention::default(),
            recording_retention_required: None,
            grace_period_days: 0,
            speech_to_text: false,
            speech_to_text_extra_minutes_cap: None,
            power_pack: false,
            smart_routing_packs_cap: None,
            ai_topics_packs_cap: None,
            ai_qa_packs_cap: None,
            ai_topics_on_calls: false,
        }
    }

    /// Checks the rules between fields; `prefix` is the request's path to the settings.
    pub fn validate(&self, prefix: &str) -> Result<(), InvalidAccountSettings> {
        if self.grace_period_days > MAX_GRACE_PERIOD_DAYS {
            return Err(InvalidAccountSettings {
                field: format!("{prefix}grace_period_days"),
                value: self.grace_period_days.to_string(),
                problem: format!("must be at most {MAX_GRACE_PERIOD_DAYS}"),
            });
        }
        if self.ai_topics_on_calls && !self.speech_to_text {
            return Err(InvalidAccountSettings {
                field: format!("{prefix}ai_topics_on_calls"),
                value: "true".to_owned(),
                problem: "requires speech_to_text to be on".to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ai_topics_on_calls_needs_speech_to_text() {
        let mut settings = AccountSettings::new(Zone::utc());
        settings.ai_topics_on_calls = true;
        let error = settings.validate("settings.").expect_err("accepted");
        assert_eq!(
            error.to_string(),
            "invalid settings.ai_topics_on_calls true: requires speech_to_text to be on"
        );
        settings.speech_to_text = true;
        assert!(settings.validate("settings.").is_ok());
    }

    #[test]
    fn the_grace_period_is_bounded() {
        let mut settings = AccountSettings::new(Zone::utc());
        settings.grace_period_days = 63;
        let error = settings.validate("").expect_err("accepted");
        assert_eq!(
            error.to_string(),
            "invalid grace_period_days 63: must be at most 62"
        );
    }
}

/// The longest account id, in bytes.
pub const MAX_ACCOUNT_ID_BYTES: usize = IdKind::Account.max_bytes();
/// The longest member id, in bytes.
pub const MAX_MEMBER_ID_BYTES: usize = IdKind::Member.max_bytes();

/// Checks an account id (`IdKind::Account`) or member id (`IdKind::Member`).
pub fn check_id(kind: IdKind, field: &str, value: &str) -> Result<(), InvalidAccountSettings> {
    crate::ids::check(kind, field, value).map_err(|e| InvalidAccountSettings {
        field: e.field,
        value: e.value,
        problem: e.problem,
    })
}

/// A stored account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account's id.
    pub id: String,
    /// Its settings.
    pub settings: AccountSettings,
    /// A sandbox account's clock moves only when advanced; it is never billable.
    pub sandbox: bool,
    /// When it was created, on its own clock.
    pub created_at: jiff::Timestamp,
    /// A sandbox's clock; `None` for other accounts, which use the real time.
    pub clock: Option<jiff::Timestamp>,
    /// Seats, seats in use, peaks, revision.
    pub inventory: crate::inventory::Inventory,
    /// The sequence number of the last audit entry.
    pub audit_sequence: u64,
}

#[cfg(test)]
mod id_tests {
    use super::*;

    #[test]
    fn ids_are_short_and_plain() {
        assert!(check_id(IdKind::Account, "account_id", "acme-eu_1.prod@x:y").is_ok());
        for (value, problem) in [
            ("", "must not be empty"),
            ("a b", "may hold only ASCII letters, digits and . _ - @ :"),
            ("a\0b", "may hold only ASCII letters, digits and . _ - @ :"),
        ] {
            let error = check_id(IdKind::Account, "account_id", value).expect_err("accepted");
            assert_eq!(error.problem, problem, "{value:?}");
            assert_eq!(error.field, "account_id");
        }
        assert_eq!(
            check_id(IdKind::Member, "member_id", &"m".repeat(129))
                .expect_err("long")
                .problem,
            "must be at most 128 bytes"
        );
    }
}

impl Account {
    /// The account's current time: its own clock for a sandbox, else `real_now`.
    pub fn now(&self, real_now: jiff::Timestamp) -> jiff::Timestamp {
        self.clock.unwrap_or(real_now)
    }
}

/// Why a clock could not be advanced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// Only sandbox accounts have a clock of their own.
    #[error("account {0:?} is not a sandbox: its clock is the real time and cannot be advanced")]
    NotSandbox(String),
    /// Clocks only move forward.
    #[error(
        "invalid to {to}: before the sandbox clock's current time {now}; clocks only move forward"
    )]
    Backwards {
        /// The clock's time.
        now: jiff::Timestamp,
        /// The requested time.
        to: jiff::Timestamp,
    },
}

impl Account {
    /// Moves a sandbox's clock to `to` and the inventory into the month `to` falls in, returning
    /// the month left behind, if any (see [`crate::Inventory::roll_to`]). Advancing to the current
    /// time changes nothing.
    pub fn advance_clock(
        &mut self,
        to: jiff::Timestamp,
    ) -> Result<Option<crate::inventory::ClosedPeak>, ClockError> {
        let Some(now) = self.clock else {
            return Err(ClockError::NotSandbox(self.id.clone()));
        };
        if to < now {
            return Err(ClockError::Backwards { now, to });
        }
        self.clock = Some(to);
        Ok(self.inventory.roll_to(self.settings.zone.month(to)))
    }
}

#[cfg(test)]
mod clock_tests {
    use jiff::{Timestamp, ToSpan};
    use proptest::prelude::*;

    use super::*;
    use crate::{
        calendar::Zone,
        inventory::{ClosedPeak, Inventory, Seats},
    };

    fn sandbox(zone: &str, start: Timestamp, seats: [u32; 6]) -> Account {
        let zone = Zone::new(zone).expect("known zone");
        let mut inventory = Inventory::new(zone.month(start));
        inventory.seats = Seats(seats);
        inventory.peak = Seats(seats);
        Account {
            id: "sandbox".into(),
            settings: AccountSettings::new(zone),
            sandbox: true,
            created_at: start,
            clock: Some(start),
            inventory,
            audit_sequence: 0,
        }
    }

    #[test]
    fn only_sandboxes_advance_and_only_forward() {
        let start: Timestamp = "2026-03-29T00:30:00Z".parse().expect("timestamp");
        let mut account = sandbox("Europe/Prague", start, [0; 6]);
        let back = start - 1.second();
        assert_eq!(
            account
                .advance_clock(back)
                .expect_err("went back")
                .to_string(),
            format!(
                "invalid to {back}: before the sandbox clock's current time {start}; clocks only move forward"
            )
        );
        assert_eq!(account.advance_clock(start), Ok(None));
        account.clock = None;
        assert_eq!(
            account.advance_clock(start),
            Err(ClockError::NotSandbox("sandbox".into()))
        );
    }

    proptest! {
        #[test]
        fn advancing_in_steps_or_at_once_gives_the_same_state(
            zone in proptest::sample::select(vec!["Europe/Prague", "America/Los_Angeles", "Asia/Kolkata"]),
            seats in any::<[u8; 6]>(),
            steps in proptest::collection::vec(0i64..40 * 24, 0..12),
        ) {
            let start: Timestamp = "2026-10-24T12:00:00Z".parse().expect("timestamp");
            let seats = seats.map(u32::from);
            let to = steps.iter().fold(start, |at, hours| at + hours.hours());

            let mut stepped = sandbox(zone, start, seats);
            let mut closed_in_steps = Vec::new();
            let mut at = start;
            for hours in &steps {
                at += hours.hours();
                closed_in_steps.extend(stepped.advance_clock(at).expect("forward"));
            }
            let mut jumped = sandbox(zone, start, seats);
            let closed_at_once = jumped.advance_clock(to).expect("forward");

            prop_assert_eq!(&stepped, &jumped);
            // Every month left behind is billed the same, whether closed in steps or at once.
            let zone = stepped.settings.zone.clone();
            let mut month = zone.month(start);
            while month < stepped.inventory.month {
                let latest = |closed: &[ClosedPeak]| {
                    closed.iter().rev().find(|c| c.month <= month).copied()
                };
                prop_assert_eq!(
                    ClosedPeak::peak_of(month, latest(&closed_in_steps).as_ref()),
                    ClosedPeak::peak_of(month, latest(closed_at_once.as_slice()).as_ref()),
                    "{}", month
                );
                month = month.next();
            }
        }
    }
}
