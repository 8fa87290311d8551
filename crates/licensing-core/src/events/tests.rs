//! Event acceptance, login days and concurrency peaks.

use std::collections::HashMap;

use jiff::{Timestamp, ToSpan};
use proptest::prelude::*;

use super::*;
use crate::{account::AccountSettings, calendar::Zone, inventory::Inventory};

fn at(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

fn account(zone: &str, grace_days: u32, clock: &str) -> Account {
    let zone = Zone::new(zone).expect("zone");
    let mut settings = AccountSettings::new(zone.clone());
    settings.grace_period_days = grace_days;
    Account {
        id: "acme".into(),
        inventory: Inventory::new(zone.month(at(clock))),
        settings,
        sandbox: true,
        created_at: at(clock),
        clock: Some(at(clock)),
        audit_sequence: 0,
    }
}

#[test]
fn late_events_are_accepted_until_the_grace_period_ends_in_the_account_calendar() {
    // Prague, grace 2 days: October closes at 2026-11-03 00:00 local = 2026-11-02T23:00Z.
    let event = at("2026-10-31T22:30:00Z"); // 23:30 local, still October
    let open = account("Europe/Prague", 2, "2026-11-02T22:59:59Z");
    assert_eq!(
        accept(&open, event, Timestamp::UNIX_EPOCH),
        Ok(BillingMonth::parse("2026-10").expect("month"))
    );
    let closed = account("Europe/Prague", 2, "2026-11-02T23:00:00Z");
    assert_eq!(
        accept(&closed, event, Timestamp::UNIX_EPOCH)
            .expect_err("closed")
            .to_string(),
        "month 2026-10 closed at 2026-11-02T23:00:00Z (end of month plus the account's grace period)"
    );
    // Without grace, the month closes when the next starts.
    let no_grace = account("Asia/Kolkata", 0, "2026-04-30T18:30:00Z");
    assert!(matches!(
        accept(&no_grace, at("2026-04-30T18:29:59Z"), Timestamp::UNIX_EPOCH),
        Err(Refusal::MonthClosed { .. })
    ));
    assert!(accept(&no_grace, at("2026-04-30T18:30:00Z"), Timestamp::UNIX_EPOCH).is_ok());
}

#[test]
fn events_from_the_future_are_refused_beyond_a_small_drift() {
    let account = account("UTC", 0, "2026-05-10T12:00:00Z");
    assert!(accept(&account, at("2026-05-10T12:15:00Z"), Timestamp::UNIX_EPOCH).is_ok());
    let refused =
        accept(&account, at("2026-05-10T12:15:01Z"), Timestamp::UNIX_EPOCH).expect_err("future");
    assert!(
        matches!(refused, Refusal::TooFarInFuture { .. }),
        "{refused}"
    );
}

#[test]
fn fingerprints_tell_payloads_apart() {
    let event = Event {
        source: "collector-1".into(),
        event_id: "e1".into(),
        account_id: "acme".into(),
        member_id: "alice".into(),
        occurred_at: at("2026-05-10T12:00:00Z"),
        kind: EventKind::QueueLogin("sales".into()),
    };
    let same = event.clone();
    let other_queue = Event {
        kind: EventKind::QueueLogin("salez".into()),
        ..event.clone()
    };
    let other_time = Event {
        occurred_at: event.occurred_at + 1.nanosecond(),
        ..event.clone()
    };
    assert_eq!(event.fingerprint(), same.fingerprint());
    assert_ne!(event.fingerprint(), other_queue.fingerprint());
    assert_ne!(event.fingerprint(), other_time.fingerprint());
    // The fingerprint is stable across builds: stored dedupe records rely on it.
    assert_eq!(event.fingerprint(), 0xb6f2_8616_606b_8481);
}

#[test]
fn invalid_events_name_the_field() {
    let event = Event {
        source: "".into(),
        event_id: "e1".into(),
        account_id: "acme".into(),
        member_id: "alice".into(),
        occurred_at: at("2026-05-10T12:00:00Z"),
        kind: EventKind::AgentLogin,
    };
    assert_eq!(
        event.validate().expect_err("empty source").to_string(),
        "invalid source \"\": must not be empty"
    );
    let metered = Event {
        source: "s".into(),
        kind: EventKind::Metered {
            meter: Meter::AiQaPacks,
            quantity: 0,
        },
        ..event
    };
    assert_eq!(
        metered.validate().expect_err("zero").to_string(),
        "invalid metered_usage.quantity 0: must be positive"
    );
}

fn transition(at_minute: i64, member: &str, tier: Tier, change: SessionChange) -> Transition {
    Transition {
        at: Timestamp::UNIX_EPOCH + at_minute.minutes(),
        member_id: member.into(),
        tier,
        change,
    }
}

#[test]
fn concurrency_counts_agents_logged_in_to_the_platform_or_a_queue() {
    use SessionChange::*;
    let s = Tier::Standard;
    let p = Tier::Professional;
    let transitions = vec![
        transition(0, "a", s, Login), // before the window: carried in
        transition(10, "b", s, QueueLogin("q1".into())), // window starts at 10
        transition(11, "b", s, QueueLogin("q2".into())), // same agent, second queue: still one
        transition(12, "c", p, Login),
        transition(13, "b", s, QueueLogout("q1".into())), // still in q2
        transition(14, "a", s, Logout),
        transition(15, "b", s, QueueLogout("q2".into())),
        transition(16, "d", s, Login),
        transition(30, "e", s, Login), // after the window
    ];
    let from = Timestamp::UNIX_EPOCH + 10.minutes();
    let to = Timestamp::UNIX_EPOCH + 20.minutes();
    assert_eq!(concurrency_peaks(transitions, from, to), [0, 2, 1, 0, 0]);
}

#[test]
fn a_quiet_window_has_the_peak_carried_into_it() {
    let transitions = vec![transition(0, "a", Tier::Enterprise, SessionChange::Login)];
    let from = Timestamp::UNIX_EPOCH + 10.minutes();
    let to = Timestamp::UNIX_EPOCH + 20.minutes();
    assert_eq!(concurrency_peaks(transitions, from, to), [0, 0, 0, 1, 0]);
}

fn change() -> impl Strategy<Value = SessionChange> {
    prop_oneof![
        Just(SessionChange::Login),
        Just(SessionChange::Logout),
        (0u8..3).prop_map(|q| SessionChange::QueueLogin(format!("q{q}"))),
        (0u8..3).prop_map(|q| SessionChange::QueueLogout(format!("q{q}"))),
    ]
}

proptest! {
    /// Against a plain model: replay the transitions up to each instant and count.
    #[test]
    fn peaks_match_counting_at_every_instant(
        raw in proptest::collection::vec((0i64..60, 0u8..4, 1usize..3, change()), 0..40),
    ) {
        let mut transitions: Vec<Transition> = raw
            .into_iter()
            .map(|(minute, member, tier, change)| transition(minute, &format!("m{member}"), Tier::ALL[tier], change))
            .collect();
        transitions.sort_by_key(|t| t.at);
        let from = Timestamp::UNIX_EPOCH + 20.minutes();
        let to = Timestamp::UNIX_EPOCH + 40.minutes();
        let peaks = concurrency_peaks(transitions.clone(), from, to);

        // Model: state after the first k transitions, for every k whose instant lies in the
        // window (or the state at its start).
        let mut expected = [0u32; 5];
        for k in 0..=transitions.len() {
            let instant = if k == 0 { from } else { transitions[k - 1].at };
            let visible = k == 0 || (instant >= from && instant < to);
            let start_state = transitions.iter().take_while(|t| t.at < from).count();
            let k = if k == 0 { start_state } else { k };
            if !visible { continue; }
            let mut state: HashMap<&str, (bool, BTreeSet<&str>, Option<Tier>)> = HashMap::new();
            let mut counts = [0u32; 5];
            for t in &transitions[..k] {
                let entry = state.entry(t.member_id.as_str()).or_default();
                match &t.change {
                    SessionChange::Login => entry.0 = true,
                    SessionChange::Logout => entry.0 = false,
                    SessionChange::QueueLogin(q) => { entry.1.insert(q.as_str()); }
                    SessionChange::QueueLogout(q) => { entry.1.remove(q.as_str()); }
                }
                let on = entry.0 || !entry.1.is_empty();
                match (entry.2, on) {
                    (None, true) => { entry.2 = Some(t.tier); counts[t.tier.index()] += 1; }
                    (Some(tier), false) => { entry.2 = None; counts[tier.index()] -= 1; }
                    _ => {}
                }
            }
            for (e, c) in expected.iter_mut().zip(counts) { *e = (*e).max(c); }
        }
        prop_assert_eq!(peaks, expected);
    }

    /// Months counted one after the other, each from the open sessions the month before ended
    /// with (what a month's checkpoint stores), give the peaks of counting each month over the
    /// whole history; and a state survives being written as its open sessions and read back.
    #[test]
    fn months_counted_from_checkpoints_match_the_whole_history(
        raw in proptest::collection::vec((0i64..90, 0u8..5, 0usize..5, change()), 0..60),
    ) {
        let mut transitions: Vec<Transition> = raw
            .into_iter()
            .map(|(minute, member, tier, change)| transition(minute, &format!("m{member}"), Tier::ALL[tier], change))
            .collect();
        transitions.sort_by_key(|t| t.at);
        let bounds: Vec<Timestamp> = [0, 30, 60, 90].iter().map(|m| Timestamp::UNIX_EPOCH + m.minutes()).collect();
        let mut checkpoint: Vec<OpenSession> = Vec::new();
        for window in bounds.windows(2) {
            let (from, to) = (window[0], window[1]);
            let within: Vec<Transition> = transitions.iter().filter(|t| t.at >= from && t.at < to).cloned().collect();
            let start = Concurrency::from_open(checkpoint.clone());
            prop_assert_eq!(Concurrency::from_open(start.open()), start.clone());
            let (peaks, end) = start.peaks_over(within);
            prop_assert_eq!(peaks, concurrency_peaks(transitions.clone(), from, to));
            checkpoint = end.open().collect();
        }
    }

    #[test]
    fn login_days_do_not_depend_on_arrival_order(
        logins in proptest::collection::vec((0usize..5, any::<bool>(), 0u16..500, proptest::option::of(0u16..400)), 1..20),
        seed in any::<u64>(),
    ) {
        let fold = |order: &[(usize, bool, u16, Option<u16>)]| {
            order.iter().fold(None, |day, (tier, billable, id, queue)| {
                let queue = queue.map(|q| format!("q{q}"));
                Some(LoginDay::add(day, Tier::ALL[*tier], *billable, &format!("s/{id:05}"), queue.as_deref()))
            })
        };
        let mut shuffled = logins.clone();
        // A deterministic shuffle from the seed.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(fold(&logins), fold(&shuffled));
    }
}

#[test]
fn only_instants_from_2000_to_before_2200_are_taken() {
    let mut event = Event {
        source: "s".into(),
        event_id: "e".into(),
        account_id: "acme".into(),
        member_id: "ann".into(),
        occurred_at: at("2000-01-01T00:00:00Z"),
        kind: EventKind::AgentLogin,
    };
    assert_eq!(event.validate(), Ok(()));
    event.occurred_at = at("2199-12-31T23:59:59.999999999Z");
    assert_eq!(event.validate(), Ok(()));
    for outside in ["1999-12-31T23:59:59.999999999Z", "2200-01-01T00:00:00Z"] {
        event.occurred_at = at(outside);
        assert_eq!(
            event.validate().expect_err(outside).to_string(),
            format!(
                "invalid occurred_at {outside}: must be from 2000-01-01T00:00:00Z to before 2200-01-01T00:00:00Z"
            )
        );
    }
}

/// Seconds anywhere jiff can represent, often close to either end, where overflows happen.
fn any_second() -> impl Strategy<Value = i64> {
    const NEAR: i64 = 3600;
    let (min, max) = (Timestamp::MIN.as_second(), Timestamp::MAX.as_second());
    prop_oneof![min..=max, (max - NEAR)..=max, min..=(min + NEAR)]
}

#[test]
fn the_last_month_whose_dedupe_records_expired_is_its_close_plus_the_retention_ago() {
    // Created in March; a grace of 2 days: March closes on April 3, April on May 3.
    let account = account("UTC", 2, "2026-03-10T00:00:00Z");
    let at = |text: &str| text.parse::<Timestamp>().expect("time");
    let month = |text: &str| BillingMonth::parse(text).expect("month");
    // With 10 days of retention, March's records expire on April 13.
    assert_eq!(
        last_expired_month(&account, at("2026-04-12T23:59:59Z"), 10),
        None
    );
    assert_eq!(
        last_expired_month(&account, at("2026-04-13T00:00:00Z"), 10),
        Some(month("2026-03"))
    );
    assert_eq!(
        last_expired_month(&account, at("2026-05-13T00:00:00Z"), 10),
        Some(month("2026-04"))
    );
    // No retention: a month's records expire when it closes.
    assert_eq!(
        last_expired_month(&account, at("2026-05-03T00:00:00Z"), 0),
        Some(month("2026-04"))
    );
}

proptest! {
    /// No instant jiff can represent, as the account's clock or the event's time, makes the
    /// acceptance window panic (a clock at 9999-12-30 once overflowed `now + 15 minutes`).
    #[test]
    fn no_instant_makes_the_acceptance_window_panic(
        clock in any_second(),
        occurred in any_second(),
        zone in proptest::sample::select(vec!["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago"]),
        grace in 0u32..=crate::account::MAX_GRACE_PERIOD_DAYS,
    ) {
        let clock = Timestamp::from_second(clock).expect("in range");
        let occurred = Timestamp::from_second(occurred).expect("in range");
        let mut account = account(zone, grace, "2026-01-01T00:00:00Z");
        account.clock = Some(clock);
        let _ = accept(&account, occurred, Timestamp::UNIX_EPOCH);
        let month = account.settings.zone.month(occurred);
        let _ = month_closes_at(&account, month.next());
        let _ = last_expired_month(&account, clock, grace);
    }
}

/// A login day keeps the queues logged into, once each, sorted; past [`QUEUES_PER_DAY`] it
/// keeps the smallest and says it is incomplete.
#[test]
fn a_login_day_keeps_its_queues() {
    let day = LoginDay::add(None, Tier::Standard, false, "s/1", None);
    assert!(day.queues.is_empty());
    let day = LoginDay::add(Some(day), Tier::Standard, false, "s/2", Some("sales"));
    let day = LoginDay::add(Some(day), Tier::Standard, false, "s/3", Some("billing"));
    let day = LoginDay::add(Some(day), Tier::Standard, false, "s/4", Some("sales"));
    assert_eq!(day.queues, vec!["billing".to_owned(), "sales".to_owned()]);
    assert!(!day.queues_truncated);
    let full = (0..=QUEUES_PER_DAY).fold(None, |day, i| {
        Some(LoginDay::add(
            day,
            Tier::Standard,
            false,
            "s/1",
            Some(&format!("q{i:04}")),
        ))
    });
    let full = full.expect("a day");
    assert_eq!(full.queues.len(), QUEUES_PER_DAY);
    assert_eq!(full.queues.first().map(String::as_str), Some("q0000"));
    assert!(full.queues_truncated);
}
