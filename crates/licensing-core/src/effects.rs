//! What an accepted usage event changes, decided from the event, its account and what the
//! account knows of its member: the store only reads and writes the records these name.

use jiff::civil;

use crate::{
    AccountSettings, BillingMode, Event, EventKind, MemberSettings, Meter, PriceList, Tier, Zone,
    resolve, service_on,
};

/// What usage needs of a known member: the tier their settings resolve to (the tier their
/// sessions and login days count in) and whether they are billed per login day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberUse {
    /// The tier.
    pub tier: Tier,
    /// Billed per login day.
    pub daily: bool,
}

impl MemberUse {
    /// From the member's settings, under the account's settings and the price list.
    pub fn of(
        settings: &MemberSettings,
        account: &AccountSettings,
        prices: &PriceList,
    ) -> MemberUse {
        let resolution = resolve(settings, account.recording_retention, prices);
        MemberUse {
            tier: resolution.tier,
            daily: resolution.billing.effective == BillingMode::Daily,
        }
    }
}

/// A change of a member's session, as the store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// Platform login.
    Login,
    /// Platform logout.
    Logout,
    /// Queue login.
    QueueLogin,
    /// Queue logout.
    QueueLogout,
}

/// What an accepted event changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effects<'a> {
    /// Metered use in the event's month, added with [`crate::MeterUse::add`]; billed only if
    /// the service was on.
    Metered {
        /// The meter.
        meter: Meter,
        /// How much.
        quantity: u64,
        /// Whether the account had the service on.
        on: bool,
    },
    /// An event of a member the account does not know: kept as unlicensed usage, nothing else.
    Unlicensed,
    /// A known member's session change.
    Session {
        /// The member's tier and billing.
        member: MemberUse,
        /// The change.
        change: SessionKind,
        /// The queue, for a queue change.
        queue: &'a str,
        /// The login day it makes, in the account's zone (a platform or a queue login).
        login_day: Option<civil::Date>,
    },
}

/// The effects of `event`, accepted for an account with `settings` in `zone`, whose member is
/// `member` (`None`: unknown to the account).
pub fn effects<'a>(
    event: &'a Event,
    settings: &AccountSettings,
    zone: &Zone,
    member: Option<MemberUse>,
) -> Effects<'a> {
    let (change, queue) = match &event.kind {
        EventKind::Metered { meter, quantity } => {
            return Effects::Metered {
                meter: *meter,
                quantity: *quantity,
                on: service_on(settings, *meter),
            };
        }
        EventKind::AgentLogin => (SessionKind::Login, ""),
        EventKind::AgentLogout => (SessionKind::Logout, ""),
        EventKind::QueueLogin(queue) => (SessionKind::QueueLogin, queue.as_str()),
        EventKind::QueueLogout(queue) => (SessionKind::QueueLogout, queue.as_str()),
    };
    let Some(member) = member else {
        return Effects::Unlicensed;
    };
    let login_day = matches!(change, SessionKind::Login | SessionKind::QueueLogin)
        .then(|| zone.day(event.occurred_at));
    Effects::Session {
        member,
        change,
        queue,
        login_day,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, at: &str) -> Event {
        Event {
            source: "s".into(),
            event_id: "e".into(),
            account_id: "acme".into(),
            member_id: "ann".into(),
            occurred_at: at.parse().expect("timestamp"),
            kind,
        }
    }

    #[test]
    fn each_kind_of_event_has_its_effects() {
        let zone = Zone::new("Europe/Prague").expect("zone");
        let mut settings = AccountSettings::new(zone.clone());
        settings.speech_to_text = true;
        settings.power_pack = false;
        let ann = MemberUse {
            tier: Tier::Professional,
            daily: true,
        };
        let day = |text: &str| Some(text.parse::<civil::Date>().expect("date"));
        // 23:30 UTC on May 9 is May 10 in Prague.
        let late = "2026-05-09T23:30:00Z";
        let cases = [
            (
                event(EventKind::AgentLogin, late),
                Some(ann),
                Effects::Session {
                    member: ann,
                    change: SessionKind::Login,
                    queue: "",
                    login_day: day("2026-05-10"),
                },
            ),
            (
                event(EventKind::QueueLogin("sales".into()), late),
                Some(ann),
                Effects::Session {
                    member: ann,
                    change: SessionKind::QueueLogin,
                    queue: "sales",
                    login_day: day("2026-05-10"),
                },
            ),
            (
                event(EventKind::QueueLogout("sales".into()), late),
                Some(ann),
                Effects::Session {
                    member: ann,
                    change: SessionKind::QueueLogout,
                    queue: "sales",
                    login_day: None,
                },
            ),
            (
                event(EventKind::AgentLogout, late),
                Some(ann),
                Effects::Session {
                    member: ann,
                    change: SessionKind::Logout,
                    queue: "",
                    login_day: None,
                },
            ),
            (
                event(EventKind::AgentLogin, late),
                None,
                Effects::Unlicensed,
            ),
            (
                event(
                    EventKind::Metered {
                        meter: Meter::SpeechToTextMinutes,
                        quantity: 7,
                    },
                    late,
                ),
                None,
                Effects::Metered {
                    meter: Meter::SpeechToTextMinutes,
                    quantity: 7,
                    on: true,
                },
            ),
            (
                event(
                    EventKind::Metered {
                        meter: Meter::AiQaPacks,
                        quantity: 1,
                    },
                    late,
                ),
                Some(ann),
                Effects::Metered {
                    meter: Meter::AiQaPacks,
                    quantity: 1,
                    on: false,
                },
            ),
        ];
        for (event, member, expected) in &cases {
            assert_eq!(
                effects(event, &settings, &zone, *member),
                *expected,
                "{:?}",
                event.kind
            );
        }
    }
}
