//! Ingestion on temporary databases: exactly once, order independence, late and odd events.

use std::path::Path;

use jiff::ToSpan;
use licensing_core::{
    AccountSettings, BillingMode, Channel, Inventory, MemberSettings, MemberSettingsInput,
    Permission, Skill, Tier, UNAUTHENTICATED, Zone,
};
use proptest::prelude::*;

use super::*;
use crate::{Backlog, Compacted, KeptDays, StoreConfig};
use licensing_core::price::testing::prices;

fn at(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

/// The store in `dir` (reopened once a store of it dropped before let go of its lock).
fn open(dir: &Path) -> Store {
    crate::open_when_free(&StoreConfig {
        path: dir.join("db"),
        cache_capacity_bytes: 8 << 20,
    })
    .expect("open")
}

/// A sandbox account (its clock is `clock`) with a daily-billed PROFESSIONAL member `pro` and a
/// monthly STANDARD member `std`.
fn setup(store: &Store, zone: &str, clock: &str, grace: u32) {
    let zone = Zone::new(zone).expect("zone");
    let mut settings = AccountSettings::new(zone.clone());
    settings.auto_growth = true;
    settings.grace_period_days = grace;
    let account = Account {
        id: "acme".into(),
        inventory: Inventory::new(zone.month(at(clock))),
        settings,
        sandbox: true,
        created_at: at(clock),
        clock: Some(at(clock)),
        audit_sequence: 0,
    };
    store
        .create_account(account, UNAUTHENTICATED)
        .expect("account");
    let pro = MemberSettings::new(MemberSettingsInput {
        permissions: vec![Permission::Statistics],
        billing_preference: BillingMode::Daily,
        ..Default::default()
    })
    .expect("valid");
    let std = MemberSettings::new(MemberSettingsInput {
        permissions: vec![Permission::Communication],
        skills: vec![Skill {
            id: "voice".into(),
            channel: Channel::Voice,
        }],
        ..Default::default()
    })
    .expect("valid");
    store
        .apply_member("acme", "pro", &pro, at(clock), &prices(), "test")
        .expect("pro");
    store
        .apply_member("acme", "std", &std, at(clock), &prices(), "test")
        .expect("std");
}

fn event(id: &str, member: &str, when: &str, kind: EventKind) -> Event {
    Event {
        source: "collector-1".into(),
        event_id: id.into(),
        account_id: "acme".into(),
        member_id: member.into(),
        occurred_at: at(when),
        kind,
    }
}

/// A deterministic shuffle from `seed` (xorshift, Fisher-Yates).
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed | 1;
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        items.swap(i, (state % (i as u64 + 1)) as usize);
    }
}

/// Session changes from `(member, kind, minute)`: the member by index into `members`; kind 0
/// agent login, 1 agent logout, 2 queue login, 3 queue logout (of queue "q1"); the minute after
/// `from`. Event ids are `e0`, `e1`, ... in `raw`'s order.
fn session_events(raw: &[(u8, u8, i64)], members: &[&str], from: &str) -> Vec<Event> {
    raw.iter()
        .enumerate()
        .map(|(i, (member, kind, minute))| {
            let member = members[usize::from(*member)];
            let kind = match kind {
                0 => EventKind::AgentLogin,
                1 => EventKind::AgentLogout,
                2 => EventKind::QueueLogin("q1".into()),
                _ => EventKind::QueueLogout("q1".into()),
            };
            Event {
                occurred_at: at(from) + minute.minutes(),
                ..event(&format!("e{i}"), member, from, kind)
            }
        })
        .collect()
}

/// `events` in time order, then shuffled within windows of `window`: arrivals mostly in order,
/// some late.
fn late_within_windows(events: &mut [Event], window: usize, seed: u64) {
    events.sort_by_key(|e| e.occurred_at);
    for (n, part) in events.chunks_mut(window).enumerate() {
        shuffle(part, seed.wrapping_add(n as u64));
    }
}

fn ingest(store: &Store, events: Vec<Event>) -> Vec<Outcome> {
    let batch: Batch = events.into_iter().map(Ok).collect();
    store
        .ingest(&[batch], Timestamp::UNIX_EPOCH, &prices())
        .expect("ingest")
        .remove(0)
}

#[test]
fn each_event_counts_once_and_a_reused_id_with_another_payload_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    setup(&store, "UTC", "2026-05-20T00:00:00Z", 0);
    let login = event("e1", "pro", "2026-05-10T08:00:00Z", EventKind::AgentLogin);
    assert_eq!(
        ingest(&store, vec![login.clone(), login.clone()]),
        [Outcome::Applied, Outcome::Duplicate]
    );
    assert_eq!(ingest(&store, vec![login.clone()]), [Outcome::Duplicate]);
    let other = Event {
        occurred_at: at("2026-05-10T09:00:00Z"),
        ..login
    };
    assert!(matches!(
        ingest(&store, vec![other])[0],
        Outcome::Refused(Refusal::ConflictingDuplicate { .. })
    ));
    let days = store
        .login_days(
            "acme",
            "pro",
            BillingMonth::parse("2026-05").expect("month"),
        )
        .expect("days");
    assert_eq!(days.len(), 1);
    assert_eq!(days[0].0, "2026-05-10");
    assert_eq!(
        (days[0].1.logins, days[0].1.billable, days[0].1.tier),
        (1, true, Tier::Professional)
    );
    assert_eq!(days[0].1.event_ids, ["collector-1/e1"]);
}

#[test]
fn replays_after_a_restart_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = vec![
        event("e1", "std", "2026-05-10T08:00:00Z", EventKind::AgentLogin),
        event(
            "e2",
            "std",
            "2026-05-10T09:00:00Z",
            EventKind::Metered {
                meter: Meter::SpeechToTextMinutes,
                quantity: 7,
            },
        ),
    ];
    {
        let store = open(dir.path());
        setup(&store, "UTC", "2026-05-20T00:00:00Z", 0);
        assert_eq!(
            ingest(&store, events.clone()),
            [Outcome::Applied, Outcome::Applied]
        );
    }
    let store = open(dir.path());
    assert_eq!(
        ingest(&store, events),
        [Outcome::Duplicate, Outcome::Duplicate]
    );
    let totals = store
        .meter_totals("acme", BillingMonth::parse("2026-05").expect("month"))
        .expect("meters");
    // Speech-to-text is off for this account: recorded, as used while off.
    assert_eq!(
        totals.get(&Meter::SpeechToTextMinutes),
        Some(&MeterUse {
            used: 0,
            while_off: 7
        })
    );
}

#[test]
fn a_meter_month_cannot_pass_its_limit_and_what_passes_it_is_refused_every_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    setup(&store, "UTC", "2026-05-20T00:00:00Z", 0);
    store
        .update_account("acme", Timestamp::UNIX_EPOCH, "test", |s| {
            s.power_pack = true;
            Ok(())
        })
        .expect("power pack on");
    let packs = |id: &str, quantity: u64| {
        event(
            id,
            "std",
            "2026-05-10T08:00:00Z",
            EventKind::Metered {
                meter: Meter::AiQaPacks,
                quantity,
            },
        )
    };
    // 1,000 events of the most one event may carry reach the month's limit exactly.
    let full: Vec<Event> = (0..1_000)
        .map(|i| packs(&format!("e{i}"), licensing_core::MAX_METERED_QUANTITY))
        .collect();
    assert!(ingest(&store, full).iter().all(|o| *o == Outcome::Applied));
    for _ in 0..2 {
        assert!(matches!(
            ingest(&store, vec![packs("over", 1)]).as_slice(),
            [Outcome::Refused(Refusal::MeterLimit {
                total: 1_000_000_000,
                quantity: 1,
                ..
            })]
        ));
    }
    let totals = store
        .meter_totals("acme", BillingMonth::parse("2026-05").expect("month"))
        .expect("meters");
    assert_eq!(
        totals.get(&Meter::AiQaPacks),
        Some(&MeterUse::on(licensing_core::MAX_METER_MONTH_TOTAL))
    );
}

#[test]
fn odd_events_are_refused_with_a_reason_or_kept_as_unlicensed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    // Clock on 2026-06-02 in Los Angeles with 1 day of grace: May closed on June 2 at 00:00 local.
    setup(&store, "America/Los_Angeles", "2026-06-02T08:00:00Z", 1);
    let outcomes = ingest(
        &store,
        vec![
            event("late", "std", "2026-05-31T12:00:00Z", EventKind::AgentLogin),
            event(
                "future",
                "std",
                "2026-06-02T09:00:00Z",
                EventKind::AgentLogin,
            ),
            event(
                "ghost",
                "nobody",
                "2026-06-01T12:00:00Z",
                EventKind::AgentLogin,
            ),
            Event {
                account_id: "nope".into(),
                ..event("x", "std", "2026-06-01T12:00:00Z", EventKind::AgentLogin)
            },
        ],
    );
    assert!(
        matches!(&outcomes[0], Outcome::Refused(Refusal::MonthClosed { .. })),
        "{outcomes:?}"
    );
    assert!(
        matches!(
            &outcomes[1],
            Outcome::Refused(Refusal::TooFarInFuture { .. })
        ),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[2], Outcome::Applied);
    assert_eq!(
        outcomes[3],
        Outcome::Refused(Refusal::UnknownAccount("nope".into()))
    );
    let unlicensed = store.unlicensed("acme").expect("unlicensed");
    assert_eq!(
        unlicensed,
        [("nobody".to_owned(), 1, at("2026-06-01T12:00:00Z"))]
    );

    // Read a page at a time after a member id: "nobody", then "nobody2" (an id that extends
    // the first), then nothing after the last.
    let more = ingest(
        &store,
        vec![event(
            "ghost2",
            "nobody2",
            "2026-06-01T13:00:00Z",
            EventKind::AgentLogin,
        )],
    );
    assert_eq!(more, vec![Outcome::Applied]);
    let ids = |after| {
        store
            .unlicensed_after("acme", after)
            .map(|u| u.expect("unlicensed").0)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(None), ["nobody", "nobody2"]);
    assert_eq!(ids(Some("nobody")), ["nobody2"]);
    assert!(ids(Some("nobody2")).is_empty());
    assert!(store.unlicensed_after("acm", None).next().is_none());
}

#[test]
fn login_days_follow_the_account_zone_across_daylight_saving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    setup(&store, "Europe/Prague", "2026-11-01T12:00:00Z", 3);
    ingest(
        &store,
        vec![
            // 23:30 UTC on Oct 24 is Oct 25 01:30 in Prague (UTC+2 before the change).
            event("a", "pro", "2026-10-24T23:30:00Z", EventKind::AgentLogin),
            // 23:30 UTC on Oct 25 is Oct 26 00:30 (UTC+1 after it).
            event(
                "b",
                "pro",
                "2026-10-25T23:30:00Z",
                EventKind::QueueLogin("sales".into()),
            ),
            // 22:30 UTC on Oct 31 is still Oct 31 (23:30 local).
            event("c", "pro", "2026-10-31T22:30:00Z", EventKind::AgentLogin),
        ],
    );
    let days = store
        .login_days(
            "acme",
            "pro",
            BillingMonth::parse("2026-10").expect("month"),
        )
        .expect("days");
    let dates: Vec<&str> = days.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(dates, ["2026-10-25", "2026-10-26", "2026-10-31"]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    /// Delivering the same events in any order, in any batching, gives the same days and peaks.
    #[test]
    fn arrival_order_does_not_change_days_or_peaks(
        raw in proptest::collection::vec((0u8..2, 0u8..4, 0i64..3 * 24 * 60), 1..40),
        seed in any::<u64>(),
    ) {
        let events: Vec<Event> = raw
            .iter()
            .enumerate()
            .map(|(i, (member, kind, minute))| {
                let member = ["pro", "std"][usize::from(*member)];
                let kind = match kind {
                    0 => EventKind::AgentLogin,
                    1 => EventKind::AgentLogout,
                    2 => EventKind::QueueLogin("q".into()),
                    _ => EventKind::QueueLogout("q".into()),
                };
                Event { occurred_at: at("2026-05-09T00:00:00Z") + minute.minutes(), ..event(&format!("e{i}"), member, "2026-05-09T00:00:00Z", kind) }
            })
            .collect();
        let mut shuffled = events.clone();
        shuffle(&mut shuffled, seed);
        let month = BillingMonth::parse("2026-05").expect("month");
        let observe = |events: Vec<Event>, batch_size: usize| {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = open(dir.path());
            setup(&store, "Asia/Kolkata", "2026-05-20T00:00:00Z", 0);
            for chunk in events.chunks(batch_size) {
                ingest(&store, chunk.to_vec());
            }
            let account = store.account("acme").expect("account");
            let peaks = store.concurrency_peaks(&account, month, Timestamp::UNIX_EPOCH).expect("peaks");
            let days: Vec<_> = ["pro", "std"].iter().map(|m| store.login_days("acme", m, month).expect("days")).collect();
            (peaks, days)
        };
        prop_assert_eq!(observe(events, 7), observe(shuffled, 3));
    }
}

/// Sweeps the whole dedupe tree in chunks of `limit`, returning how many records expired.
fn sweep(store: &Store, retention_days: u32, limit: usize) -> usize {
    sweep_within(store, retention_days, None, limit)
}

/// Sweeps the dedupe records (of the account `within`, or all) in chunks of `limit`, returning
/// how many expired.
fn sweep_within(store: &Store, retention_days: u32, within: Option<&str>, limit: usize) -> usize {
    let mut expired = 0;
    let mut after = None;
    loop {
        let chunk = store
            .expire_dedupe(
                Timestamp::UNIX_EPOCH,
                retention_days,
                within,
                after.as_deref(),
                limit,
            )
            .expect("sweep");
        expired += chunk.expired;
        match chunk.next {
            None => return expired,
            Some(next) => after = Some(next),
        }
    }
}

#[test]
fn a_redelivery_after_the_month_closed_is_a_duplicate_while_its_record_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    setup(&store, "UTC", "2026-05-31T12:00:00Z", 0);
    let login = event("e1", "std", "2026-05-31T11:00:00Z", EventKind::AgentLogin);
    assert_eq!(ingest(&store, vec![login.clone()]), [Outcome::Applied]);
    assert_eq!(sweep(&store, 10, 1), 0, "May is still open");
    // May closed at 2026-06-01; its records are kept 10 days more.
    store
        .advance_clock("acme", at("2026-06-10T23:59:59Z"), "test")
        .expect("advance");
    assert_eq!(sweep(&store, 10, 1), 0, "still kept");
    assert_eq!(
        ingest(&store, vec![login.clone()]),
        [Outcome::Duplicate],
        "an event that was billed is a duplicate, not refused"
    );
    store
        .advance_clock("acme", at("2026-06-11T00:00:00Z"), "test")
        .expect("advance");
    assert_eq!(sweep(&store, 10, 1), 1);
    assert!(matches!(
        ingest(&store, vec![login]).as_slice(),
        [Outcome::Refused(Refusal::MonthClosed { .. })]
    ));
}

/// A store in `dir` with `count` logins of May 31 (events `e00`, `e01`, ...), its clock on
/// June 2: May is closed (no grace period), so with no retention their dedupe records expire.
fn logins_of_a_closed_may(dir: &std::path::Path, count: usize) -> Store {
    let store = open(dir);
    setup(&store, "UTC", "2026-05-31T12:00:00Z", 0);
    let events: Vec<Event> = (0..count)
        .map(|i| {
            event(
                &format!("e{i:02}"),
                "std",
                "2026-05-31T11:00:00Z",
                EventKind::AgentLogin,
            )
        })
        .collect();
    ingest(&store, events);
    store
        .advance_clock("acme", at("2026-06-02T00:00:00Z"), "test")
        .expect("advance");
    store
}

#[test]
fn the_dedupe_sweep_goes_through_the_tree_in_bounded_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = logins_of_a_closed_may(dir.path(), 25);
    let first = store
        .expire_dedupe(Timestamp::UNIX_EPOCH, 0, None, None, 10)
        .expect("sweep");
    assert_eq!(first.expired, 10, "one chunk reads at most its limit");
    assert!(first.next.is_some());
    assert_eq!(sweep(&store, 0, 7), 15, "the rest, in chunks of 7");
    assert_eq!(store.dedupe.len(), 0);
}

#[test]
fn a_dedupe_sweep_within_one_account_reads_and_deletes_only_its_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = logins_of_a_closed_may(dir.path(), 9);
    // "acm" is a prefix of "acme", not its account.
    let other = store
        .expire_dedupe(Timestamp::UNIX_EPOCH, 0, Some("acm"), None, 100)
        .expect("sweep");
    assert_eq!((other.expired, other.next), (0, None));
    assert_eq!(store.dedupe.len(), 9);
    assert_eq!(
        sweep_within(&store, 0, Some("acme"), 4),
        9,
        "in chunks of 4, from the account's first record"
    );
    assert_eq!(store.dedupe.len(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Peaks read through month checkpoints, with reads between arrivals (which write
    /// checkpoints) and session changes arriving late and out of order (which invalidate them),
    /// always equal the peaks counted over the whole history.
    #[test]
    fn peaks_read_through_checkpoints_match_the_whole_history_in_any_arrival_order(
        raw in proptest::collection::vec((0u8..2, 0u8..6, 0i64..(79 * 1440)), 1..50),
        reads in proptest::collection::vec(0u8..4, 1..12),
        chunk in 1usize..6,
        seed in any::<u64>(),
    ) {
        let mut events: Vec<Event> = raw
            .iter()
            .enumerate()
            .map(|(i, (member, kind, minute))| {
                let member = ["pro", "std"][usize::from(*member)];
                let kind = match kind {
                    0 => EventKind::AgentLogin,
                    1 => EventKind::AgentLogout,
                    2 => EventKind::QueueLogin("q1".into()),
                    3 => EventKind::QueueLogout("q1".into()),
                    4 => EventKind::QueueLogin("q2".into()),
                    _ => EventKind::QueueLogout("q2".into()),
                };
                Event {
                    occurred_at: at("2026-04-01T00:00:00Z") + minute.minutes(),
                    ..event(&format!("e{i}"), member, "2026-04-01T00:00:00Z", kind)
                }
            })
            .collect();
        shuffle(&mut events, seed);
        let months: Vec<BillingMonth> = ["2026-03", "2026-04", "2026-05", "2026-06"]
            .iter()
            .map(|m| BillingMonth::parse(m).expect("month"))
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        // Every month from April to June open: closes 62 days after its end, the clock in June.
        setup(&store, "Asia/Kolkata", "2026-06-20T00:00:00Z", 62);
        let mut reads = reads.into_iter().cycle();
        for arrived in events.chunks(chunk) {
            for outcome in ingest(&store, arrived.to_vec()) {
                prop_assert_eq!(outcome, Outcome::Applied);
            }
            let account = store.account("acme").expect("account");
            let month = months[usize::from(reads.next().unwrap_or(0))];
            prop_assert_eq!(
                store.concurrency_peaks(&account, month, Timestamp::UNIX_EPOCH).expect("peaks"),
                store.concurrency_peaks_from_the_beginning(&account, month).expect("peaks"),
                "{} after {} events", month, arrived.len()
            );
        }
        let account = store.account("acme").expect("account");
        for month in months {
            prop_assert_eq!(
                store.concurrency_peaks(&account, month, Timestamp::UNIX_EPOCH).expect("peaks"),
                store.concurrency_peaks_from_the_beginning(&account, month).expect("peaks"),
                "{}", month
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A busy day read while it fills up: session changes of two days arriving mostly in order
    /// (shuffled within small windows, some at the same minute), a read after every group. Each
    /// read counts a marked day on from its kept record when the new changes all come after
    /// the last one it counted, and from the day's start otherwise: both give the peaks counted
    /// over the whole history.
    #[test]
    fn a_day_counted_on_from_its_record_as_it_fills_up_matches_the_whole_history(
        raw in proptest::collection::vec((0u8..3, 0u8..4, 0i64..(2 * 1440)), 1..80),
        window in 1usize..4,
        chunk in 1usize..8,
        seed in any::<u64>(),
    ) {
        let mut events = session_events(&raw, &["pro", "std", "std2"], "2026-04-10T00:00:00Z");
        late_within_windows(&mut events, window, seed);
        let april = BillingMonth::parse("2026-04").expect("month");
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        setup(&store, "UTC", "2026-04-12T00:00:00Z", 0);
        // A second STANDARD member, so that a tier's peak can reach two.
        let std = store
            .members("acme", None)
            .map(|m| m.expect("member"))
            .find(|m| m.member_id == "std")
            .expect("std");
        store
            .apply_member("acme", "std2", &std.settings, at("2026-04-12T00:00:00Z"), &prices(), "test")
            .expect("std2");
        for arrived in events.chunks(chunk) {
            for outcome in ingest(&store, arrived.to_vec()) {
                prop_assert_eq!(outcome, Outcome::Applied);
            }
            let account = store.account("acme").expect("account");
            prop_assert_eq!(
                store.concurrency_peaks(&account, april, Timestamp::UNIX_EPOCH).expect("peaks"),
                store.concurrency_peaks_from_the_beginning(&account, april).expect("peaks"),
                "after {} events", arrived.len()
            );
        }
    }
}

/// An agent login of each of `members` at each of `times`.
fn logins(times: &[&str], members: &[&str]) -> Vec<Event> {
    let mut events = Vec::new();
    for (i, when) in times.iter().enumerate() {
        for member in members {
            events.push(event(
                &format!("{member}-{i}"),
                member,
                when,
                EventKind::AgentLogin,
            ));
        }
    }
    events
}

#[test]
fn a_month_of_login_days_is_read_from_the_month_alone_for_every_member() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    setup(&store, "UTC", "2026-06-20T00:00:00Z", 62);
    ingest(
        &store,
        logins(
            &[
                "2026-04-30T23:00:00Z",
                "2026-05-01T08:00:00Z",
                "2026-05-17T08:00:00Z",
                "2026-05-31T23:59:59Z",
                "2026-06-01T00:00:00Z",
            ],
            &["pro", "std", "unknown"],
        ),
    );
    let may = BillingMonth::parse("2026-05").expect("month");
    let days = store.month_login_days("acme", may).expect("days");
    let mut expected = Vec::new();
    for member in ["pro", "std"] {
        for (date, day) in store.login_days("acme", member, may).expect("days") {
            expected.push((member.to_owned(), date, day));
        }
    }
    assert_eq!(days, expected);
    // Members listed for a page: each gets their month only, a member without days nothing.
    let pages = store
        .members_login_days("acme", &["aaa", "pro", "quiet", "std", "zzz"], may)
        .expect("days");
    let of = |member| store.login_days("acme", member, may).expect("days");
    assert_eq!(pages, [vec![], of("pro"), vec![], of("std"), vec![]]);
    assert_eq!(pages[1].len(), 3);
    let dates: Vec<&str> = days.iter().map(|(_, date, _)| date.as_str()).collect();
    assert_eq!(
        dates,
        [
            "2026-05-01",
            "2026-05-17",
            "2026-05-31",
            "2026-05-01",
            "2026-05-17",
            "2026-05-31"
        ]
    );
}

#[test]
fn kept_day_peaks_are_counted_again_only_for_the_days_that_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    setup(&store, "UTC", "2026-06-20T00:00:00Z", 62);
    let may = BillingMonth::parse("2026-05").expect("month");
    let june = BillingMonth::parse("2026-06").expect("month");
    let read = |month| {
        let account = store.account("acme").expect("account");
        let (peaks, counted) = store
            .concurrency_peaks_counted(&account, month, Timestamp::UNIX_EPOCH)
            .expect("peaks");
        let whole = store
            .concurrency_peaks_from_the_beginning(&account, month)
            .expect("peaks");
        assert_eq!(peaks, whole, "{month}");
        (peaks, counted)
    };
    let (pro, std) = (Tier::Professional.index(), Tier::Standard.index());
    ingest(
        &store,
        vec![
            event("p1", "pro", "2026-05-03T08:00:00Z", EventKind::AgentLogin),
            event("p2", "pro", "2026-05-03T16:00:00Z", EventKind::AgentLogout),
            event("s1", "std", "2026-05-10T08:00:00Z", EventKind::AgentLogin),
            event("s2", "std", "2026-05-10T12:00:00Z", EventKind::AgentLogout),
        ],
    );
    let (peaks, counted) = read(may);
    assert_eq!(counted, 31, "the first read counts every day of May");
    assert_eq!((peaks[pro], peaks[std]), (1, 1));
    assert_eq!(
        read(may).1,
        0,
        "nothing changed: every day's kept peak holds"
    );

    // A late session that opens and closes within May 3: that day alone, since the state it
    // ends in is the same as before.
    ingest(
        &store,
        vec![
            event("s3", "std", "2026-05-03T09:00:00Z", EventKind::AgentLogin),
            event("s4", "std", "2026-05-03T10:00:00Z", EventKind::AgentLogout),
        ],
    );
    assert_eq!(read(may).1, 1);

    // A late queue login left open on May 20: that day and every day after it start otherwise.
    ingest(
        &store,
        vec![event(
            "s5",
            "std",
            "2026-05-20T08:00:00Z",
            EventKind::QueueLogin("sales".into()),
        )],
    );
    assert_eq!(read(may).1, 12, "May 20 to May 31");
    assert_eq!(read(may).1, 0);
    let (peaks, counted) = read(june);
    assert_eq!(counted, 30, "June starts with the queue session open");
    assert_eq!((peaks[pro], peaks[std]), (0, 1));
    assert_eq!(read(june).1, 0);

    // Another zone: no day counted in UTC counts, there or back in UTC.
    let to_zone = |name: &str| {
        let zone = Zone::new(name).expect("zone");
        store
            .update_account("acme", Timestamp::UNIX_EPOCH, "test", |s| {
                s.zone = zone.clone();
                Ok(())
            })
            .expect("zone");
    };
    to_zone("Pacific/Kiritimati");
    assert_eq!(read(may).1, 31);
    assert_eq!(read(may).1, 0);
    ingest(
        &store,
        vec![event(
            "p3",
            "pro",
            "2026-05-12T08:00:00Z",
            EventKind::AgentLogin,
        )],
    );
    to_zone("UTC");
    assert_eq!(
        read(may).1,
        31,
        "May 12 changed while the account was in another zone"
    );
    assert_eq!(read(may).1, 0);
}

#[test]
fn the_keeper_counts_the_marked_days_so_that_reads_find_them_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    setup(&store, "UTC", "2026-06-20T00:00:00Z", 62);
    ingest(
        &store,
        vec![
            event("p1", "pro", "2026-05-03T08:00:00Z", EventKind::AgentLogin),
            event("s1", "std", "2026-06-10T08:00:00Z", EventKind::AgentLogin),
        ],
    );
    let mut after = None;
    let mut total = KeptDays::default();
    loop {
        // One account per chunk: the sweep goes on where it stopped.
        let chunk = store
            .keep_day_peaks(Timestamp::UNIX_EPOCH, after.as_deref(), 1)
            .expect("keep");
        total.accounts += chunk.accounts;
        total.days += chunk.days;
        match chunk.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!((total.accounts, total.days), (1, 31 + 30), "May and June");
    let account = store.account("acme").expect("account");
    for month in ["2026-05", "2026-06"] {
        let month = BillingMonth::parse(month).expect("month");
        let (peaks, counted) = store
            .concurrency_peaks_counted(&account, month, Timestamp::UNIX_EPOCH)
            .expect("peaks");
        assert_eq!(counted, 0, "{month}: kept");
        assert_eq!(
            peaks,
            store
                .concurrency_peaks_from_the_beginning(&account, month)
                .expect("peaks")
        );
    }
    let again = store
        .keep_day_peaks(Timestamp::UNIX_EPOCH, None, 16)
        .expect("keep");
    assert_eq!(
        (again.accounts, again.days),
        (0, 0),
        "nothing marked any more"
    );
}

/// Compacts every account until a pass deletes nothing; returns the sum of what it did.
fn compact_all(store: &Store, chunk: usize) -> Compacted {
    let mut total = Compacted::default();
    loop {
        let mut after = None;
        let mut deleted = 0;
        loop {
            let step = store
                .compact(Timestamp::UNIX_EPOCH, after.as_deref(), 8, chunk)
                .expect("compact");
            deleted += step.deleted;
            total.floors_moved += step.floors_moved;
            total.months_kept += step.months_kept;
            total.deleted += step.deleted;
            match step.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        if deleted == 0 {
            return total;
        }
    }
}

#[test]
fn compaction_deletes_closed_months_session_changes_and_keeps_what_they_show() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    setup(&store, "UTC", "2026-03-01T00:00:00Z", 0);
    let months: Vec<BillingMonth> = ["2026-03", "2026-04", "2026-05"]
        .iter()
        .map(|m| BillingMonth::parse(m).expect("month"))
        .collect();
    let advance = |to: &str| {
        store
            .advance_clock("acme", at(to), "test")
            .expect("advance");
    };
    advance("2026-03-31T00:00:00Z");
    ingest(
        &store,
        vec![
            event("p1", "pro", "2026-03-02T08:00:00Z", EventKind::AgentLogin),
            event("p2", "pro", "2026-03-02T16:00:00Z", EventKind::AgentLogout),
            // Open across the end of March.
            event("s1", "std", "2026-03-05T08:00:00Z", EventKind::AgentLogin),
        ],
    );
    advance("2026-04-30T00:00:00Z");
    ingest(
        &store,
        vec![
            event("s2", "std", "2026-04-02T08:00:00Z", EventKind::AgentLogout),
            // Open across the floor, two days before May.
            event(
                "p3",
                "pro",
                "2026-04-03T08:00:00Z",
                EventKind::QueueLogin("q".into()),
            ),
        ],
    );
    advance("2026-05-10T00:00:00Z");
    let account = store.account("acme").expect("account");
    let before: Vec<[u32; 5]> = months
        .iter()
        .map(|m| {
            store
                .concurrency_peaks_from_the_beginning(&account, *m)
                .expect("peaks")
        })
        .collect();
    let days_before = store.login_days("acme", "pro", months[0]).expect("days");
    assert_eq!(store.sessions.len(), 5);

    // A chunk of 2: the deletion goes on over several passes.
    let done = compact_all(&store, 2);
    assert_eq!(
        (done.floors_moved, done.months_kept),
        (1, 2),
        "March and April kept"
    );
    // Every session change before April 29 is gone; none after it was there.
    assert_eq!(store.sessions.len(), 0);
    assert!(done.deleted >= 5, "{done:?}");
    let account = store.account("acme").expect("account");
    for (month, peaks) in months.iter().zip(&before) {
        assert_eq!(
            &store
                .concurrency_peaks(&account, *month, Timestamp::UNIX_EPOCH)
                .expect("peaks"),
            peaks,
            "{month}"
        );
    }
    assert_eq!(
        before[2][Tier::Professional.index()],
        1,
        "May starts with the queue session open"
    );
    assert_eq!(
        store.login_days("acme", "pro", months[0]).expect("days"),
        days_before
    );

    // An event before the floor is refused, whatever the grace period says now; one after it
    // in May counts from the floor's state.
    store
        .update_account("acme", Timestamp::UNIX_EPOCH, "test", |s| {
            s.grace_period_days = 60;
            Ok(())
        })
        .expect("grace");
    assert!(matches!(
        ingest(
            &store,
            vec![event(
                "late",
                "std",
                "2026-04-28T08:00:00Z",
                EventKind::AgentLogin
            )]
        )
        .as_slice(),
        [Outcome::Refused(Refusal::MonthClosed { .. })]
    ));
    assert_eq!(
        ingest(
            &store,
            vec![event(
                "s3",
                "std",
                "2026-05-04T08:00:00Z",
                EventKind::AgentLogin
            )]
        ),
        [Outcome::Applied]
    );
    let account = store.account("acme").expect("account");
    let may = store
        .concurrency_peaks(&account, months[2], Timestamp::UNIX_EPOCH)
        .expect("peaks");
    assert_eq!(
        may,
        store
            .concurrency_peaks_from_the_beginning(&account, months[2])
            .expect("peaks")
    );
    assert_eq!(
        (may[Tier::Professional.index()], may[Tier::Standard.index()]),
        (1, 1)
    );
    // Nothing more to do until another month closes.
    assert_eq!(compact_all(&store, 2), Compacted::default());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// With the clock moving on and closed months compacted between arrivals (some late), every
    /// month's peaks and every event's outcome equal those of a store that never compacts.
    #[test]
    fn compaction_changes_no_peak_and_no_outcome(
        raw in proptest::collection::vec((0u8..2, 0u8..4, 0i64..(120 * 1440)), 1..60),
        chunk in 1usize..8,
        window in 1usize..6,
        compact_every in 1usize..4,
        seed in any::<u64>(),
    ) {
        let mut events = session_events(&raw, &["pro", "std"], "2026-03-01T00:00:00Z");
        // Late arrivals: shuffled within windows.
        late_within_windows(&mut events, window, seed);
        let (dir_a, dir_b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
        let (compacted, whole) = (open(dir_a.path()), open(dir_b.path()));
        for store in [&compacted, &whole] {
            setup(store, "UTC", "2026-03-01T00:00:00Z", 0);
        }
        let mut clock = at("2026-03-01T00:00:00Z");
        for (n, arrived) in events.chunks(chunk).enumerate() {
            let latest = arrived.iter().map(|e| e.occurred_at).max().unwrap_or(clock);
            if latest > clock {
                clock = latest;
                for store in [&compacted, &whole] {
                    store.advance_clock("acme", clock, "test").expect("advance");
                }
            }
            let a = ingest(&compacted, arrived.to_vec());
            let b = ingest(&whole, arrived.to_vec());
            prop_assert_eq!(a, b);
            if n % compact_every == 0 {
                compact_all(&compacted, 3);
            }
        }
        let account = compacted.account("acme").expect("account");
        let reference = whole.account("acme").expect("account");
        for month in ["2026-03", "2026-04", "2026-05", "2026-06", "2026-07"] {
            let month = BillingMonth::parse(month).expect("month");
            prop_assert_eq!(
                compacted.concurrency_peaks(&account, month, Timestamp::UNIX_EPOCH).expect("peaks"),
                whole.concurrency_peaks_from_the_beginning(&reference, month).expect("peaks"),
                "{}", month
            );
        }
    }
}

#[test]
fn compaction_month_after_month_keeps_only_the_open_months_session_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    setup(&store, "UTC", "2026-01-01T00:00:00Z", 5);
    // More session changes a month than one chunk deletes.
    const PER_DAY: usize = 40;
    let mut n = 0;
    for month in 1..=4i8 {
        let first = jiff::civil::date(2026, month, 1);
        let last = first.last_of_month();
        store
            .advance_clock(
                "acme",
                last.to_zoned(jiff::tz::TimeZone::UTC)
                    .expect("zoned")
                    .timestamp()
                    + 86_399.seconds(),
                "test",
            )
            .expect("advance");
        compact_all(&store, 4096);
        let mut events = Vec::new();
        let mut day = first;
        while day <= last {
            for (member, hour) in [("pro", 8), ("std", 9)] {
                for k in 0..PER_DAY {
                    let kind = if k % 2 == 0 {
                        EventKind::AgentLogin
                    } else {
                        EventKind::AgentLogout
                    };
                    n += 1;
                    let at = day
                        .to_zoned(jiff::tz::TimeZone::UTC)
                        .expect("zoned")
                        .timestamp()
                        + i64::from(hour).hours()
                        + (k as i64).minutes();
                    events.push(Event {
                        occurred_at: at,
                        ..event(&format!("e{n}"), member, "2026-01-01T00:00:00Z", kind)
                    });
                }
            }
            day = day.tomorrow().expect("tomorrow");
        }
        for outcome in ingest(&store, events) {
            assert_eq!(outcome, Outcome::Applied);
        }
    }
    // The clock on April 30: March closed on April 6, so the floor is March 30.
    let kept: Vec<Timestamp> = store
        .sessions
        .iter()
        .keys()
        .map(|k| unsortable(&k.expect("key")[5..]).expect("time"))
        .collect();
    assert!(
        kept.iter().all(|t| *t >= at("2026-03-30T00:00:00Z")),
        "{} kept, first {:?}",
        kept.len(),
        kept.first()
    );
    assert_eq!(kept.len(), (2 + 30) * 2 * PER_DAY);
}

#[test]
fn a_later_month_starts_from_the_kept_days_of_the_months_before_not_their_session_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    setup(&store, "UTC", "2026-05-03T10:00:00Z", 40);
    // std logs in on May 3 and stays logged in.
    let login = event("e1", "std", "2026-05-03T09:00:00Z", EventKind::AgentLogin);
    assert_eq!(ingest(&store, vec![login]), [Outcome::Applied]);
    store
        .advance_clock("acme", at("2026-06-10T12:00:00Z"), "test")
        .expect("advance");
    let account = store.account("acme").expect("account");
    let may = BillingMonth::parse("2026-05").expect("month");
    let june = may.next();
    // Reading May keeps its days (and May's start checkpoint).
    let (may_peaks, counted) = store
        .concurrency_peaks_counted(&account, may, Timestamp::UNIX_EPOCH)
        .expect("peaks");
    assert_eq!((may_peaks.iter().sum::<u32>(), counted), (1, 31));
    // Take May's session changes away: June can only know std is logged in from May's days.
    for key in store.sessions.iter().keys() {
        store.sessions.remove(key.expect("key")).expect("remove");
    }
    let june_peaks = store
        .concurrency_peaks(&account, june, Timestamp::UNIX_EPOCH)
        .expect("peaks");
    assert_eq!(june_peaks.iter().sum::<u32>(), 1, "{june_peaks:?}");
}

/// A month read before the month before it was: the walk to its start counts the days of the
/// month before (they were marked) and keeps them, so that reading that month, the keeper and
/// compaction count them no more.
#[test]
fn the_walk_to_a_month_start_keeps_the_days_it_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    setup(&store, "UTC", "2026-05-03T10:00:00Z", 40);
    let events = vec![
        event("e1", "std", "2026-05-03T09:00:00Z", EventKind::AgentLogin),
        event("e2", "std", "2026-05-20T17:00:00Z", EventKind::AgentLogout),
        event("e3", "std", "2026-06-02T09:00:00Z", EventKind::AgentLogin),
    ];
    store
        .advance_clock("acme", at("2026-06-10T12:00:00Z"), "test")
        .expect("advance");
    assert_eq!(ingest(&store, events), vec![Outcome::Applied; 3]);
    let account = store.account("acme").expect("account");
    let may = BillingMonth::parse("2026-05").expect("month");
    let june = may.next();
    let marked = || {
        store
            .backlog("acme", Timestamp::UNIX_EPOCH, 5)
            .expect("backlog")
            .marked_days
    };
    assert_eq!(marked(), 3);
    let (june_peaks, counted) = store
        .concurrency_peaks_counted(&account, june, Timestamp::UNIX_EPOCH)
        .expect("peaks");
    assert_eq!((june_peaks.iter().sum::<u32>(), counted), (1, 30));
    assert_eq!(marked(), 0, "May's days were kept on the way to June");
    let (may_peaks, counted) = store
        .concurrency_peaks_counted(&account, may, Timestamp::UNIX_EPOCH)
        .expect("peaks");
    assert_eq!((may_peaks.iter().sum::<u32>(), counted), (1, 0));
}

/// The backlog names each kind of background work while it is due, and nothing once it is done:
/// marked days until the peaks are kept, a floor behind a closed month until compaction moves
/// it, records below the floor until they are deleted.
#[test]
fn the_backlog_names_the_work_left_until_it_is_done() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    setup(&store, "UTC", "2026-03-01T00:00:00Z", 0);
    // Dedupe records are kept 5 days after their month closed.
    let backlog = || {
        store
            .backlog("acme", Timestamp::UNIX_EPOCH, 5)
            .expect("backlog")
    };
    assert!(backlog().is_empty(), "a new account: {:?}", backlog());

    store
        .advance_clock("acme", at("2026-03-31T00:00:00Z"), "test")
        .expect("advance");
    ingest(
        &store,
        vec![
            event("p1", "pro", "2026-03-02T08:00:00Z", EventKind::AgentLogin),
            event("p2", "pro", "2026-03-03T16:00:00Z", EventKind::AgentLogout),
        ],
    );
    assert_eq!(
        backlog(),
        Backlog {
            marked_days: 2,
            floor_behind: false,
            below_floor: false,
            dedupe_due: false,
        }
    );
    store
        .keep_day_peaks(Timestamp::UNIX_EPOCH, None, 16)
        .expect("keep");
    assert!(backlog().is_empty(), "peaks kept: {:?}", backlog());

    // March closes: its floor is due, then what lies below it.
    store
        .advance_clock("acme", at("2026-05-10T00:00:00Z"), "test")
        .expect("advance");
    assert!(backlog().floor_behind, "{:?}", backlog());
    store
        .compact(Timestamp::UNIX_EPOCH, None, 8, 0)
        .expect("move the floor");
    let left = backlog();
    assert!(!left.floor_behind && left.below_floor, "{left:?}");
    while store.delete_below_floor("acme", 1).expect("delete") > 0 {}
    // March's dedupe records expired on April 6th, April's (none) on May 6th: due until read to
    // the end and noted.
    let left = backlog();
    assert!(!left.below_floor && left.dedupe_due, "{left:?}");
    let account = store.account("acme").expect("account");
    let due = store
        .dedupe_expiry_due(&account, Timestamp::UNIX_EPOCH, 5)
        .expect("due");
    assert_eq!(due, Some(BillingMonth::parse("2026-04").expect("month")));
    let mut after = None;
    loop {
        let sweep = store
            .expire_dedupe(Timestamp::UNIX_EPOCH, 5, Some("acme"), after.as_deref(), 1)
            .expect("expire");
        match sweep.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert!(backlog().dedupe_due, "read, not noted yet: {:?}", backlog());
    store
        .dedupe_expired_through("acme", due.expect("due"))
        .expect("note");
    assert!(backlog().is_empty(), "all done: {:?}", backlog());
    assert_eq!(store.dedupe.len(), 0, "March's records expired");
}

/// Marks the database as written by format `version`, durably.
fn mark_version(store: &Store, version: u32) {
    let meta = store.db.open_tree(crate::META_TREE).expect("meta");
    meta.insert(crate::FORMAT_VERSION_KEY, &version.to_be_bytes())
        .expect("version");
    store.db.flush().expect("flush");
}

fn assert_current_version(store: &Store) {
    let meta = store.db.open_tree(crate::META_TREE).expect("meta");
    assert_eq!(
        meta.get(crate::FORMAT_VERSION_KEY)
            .expect("version")
            .as_deref(),
        Some(&crate::FORMAT_VERSION.to_be_bytes()[..])
    );
}

/// A version-1 database (login days keyed account, member, date) opens as the current version with every
/// login day where this version reads it, and the old tree gone; opening again changes nothing.
#[test]
fn a_version_1_database_is_upgraded_with_its_login_days() {
    let dir = tempfile::tempdir().expect("tempdir");
    let months: Vec<BillingMonth> = ["2026-04", "2026-05", "2026-06"]
        .iter()
        .map(|m| BillingMonth::parse(m).expect("month"))
        .collect();
    let read = |store: &Store| -> Vec<_> {
        months
            .iter()
            .map(|m| store.month_login_days("acme", *m).expect("days"))
            .collect()
    };
    let before = {
        let store = open(dir.path());
        setup(&store, "UTC", "2026-06-20T00:00:00Z", 62);
        ingest(
            &store,
            logins(
                &[
                    "2026-04-30T23:00:00Z",
                    "2026-05-01T08:00:00Z",
                    "2026-05-17T08:00:00Z",
                    "2026-06-01T00:00:00Z",
                ],
                &["pro", "std"],
            ),
        );
        let before = read(&store);
        assert_eq!(before.iter().map(Vec::len).sum::<usize>(), 8);
        // Back to version 1's layout: the same records under account, member, date.
        let old = store.db.open_tree(crate::DAYS_TREE_V1).expect("old tree");
        for item in store.days.iter() {
            let (key, value) = item.expect("day");
            let parts: Vec<&[u8]> = key.split(|&b| b == 0).collect();
            assert_eq!(parts.len(), 4, "account, month, member, date");
            old.insert(join(&[parts[0], parts[2], parts[3]]), value)
                .expect("old day");
        }
        store.days.clear().expect("clear");
        mark_version(&store, 1);
        before
    };
    for _ in 0..2 {
        let store = open(dir.path());
        assert_eq!(read(&store), before);
        assert_current_version(&store);
        assert!(
            !store
                .db
                .tree_names()
                .iter()
                .any(|name| name.as_ref() == crate::DAYS_TREE_V1.as_bytes()),
            "the old tree is dropped"
        );
    }
}

/// A version-2 database opens as the current version: its login days (written without queues) read with
/// their queues unknown, and new queue logins are kept with their queue.
#[test]
fn a_version_2_database_is_upgraded_and_its_days_have_unknown_queues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let may = BillingMonth::parse("2026-05").expect("month");
    {
        let store = open(dir.path());
        setup(&store, "UTC", "2026-05-20T00:00:00Z", 0);
        ingest(&store, logins(&["2026-05-17T08:00:00Z"], &["std"]));
        // Back to version 2: the day as version 2 wrote it.
        for item in store.days.iter() {
            let (key, value) = item.expect("day");
            let day = crate::records::decode::<crate::records::DayRecord>("login day", &value)
                .expect("record")
                .decode()
                .expect("day");
            let v1 = crate::records::DayRecord::V1 {
                tier: day.tier as u8,
                billable: day.billable,
                logins: day.logins,
                event_ids: day.event_ids,
            };
            store
                .days
                .insert(key, crate::records::encode(&v1))
                .expect("v1 day");
        }
        mark_version(&store, 2);
    }
    let store = open(dir.path());
    assert_current_version(&store);
    let days = store.month_login_days("acme", may).expect("days");
    assert_eq!(days.len(), 1);
    assert!(days[0].2.queues.is_empty() && days[0].2.queues_truncated);

    let queue_login = event(
        "q1",
        "std",
        "2026-05-18T08:00:00Z",
        EventKind::QueueLogin("sales".into()),
    );
    assert_eq!(ingest(&store, vec![queue_login]), vec![Outcome::Applied]);
    let days = store.month_login_days("acme", may).expect("days");
    let day = &days
        .iter()
        .find(|(_, date, _)| date == "2026-05-18")
        .expect("the 18th")
        .2;
    assert_eq!(day.queues, vec!["sales".to_owned()]);
    assert!(!day.queues_truncated);
}

/// The advisor's reads: each member's login days over the months asked for, dated and in
/// order, with the queues logged into; months not asked for are not read, and a member with
/// no day in them gets none.
#[test]
fn members_days_cover_the_months_asked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    setup(&store, "UTC", "2026-06-20T00:00:00Z", 62);
    let queue =
        |id: &str, when: &str, q: &str| event(id, "std", when, EventKind::QueueLogin(q.into()));
    let events = vec![
        queue("q1", "2026-04-30T08:00:00Z", "before"),
        queue("q2", "2026-05-30T08:00:00Z", "sales"),
        queue("q3", "2026-06-02T08:00:00Z", "billing"),
        event("l1", "pro", "2026-06-03T08:00:00Z", EventKind::AgentLogin),
    ];
    assert!(
        ingest(&store, events)
            .iter()
            .all(|o| *o == Outcome::Applied)
    );
    let months = [
        BillingMonth::new(2026, 5).expect("May"),
        BillingMonth::new(2026, 6).expect("June"),
    ];
    let found = store
        .members_days("acme", &["absent", "pro", "std"], &months)
        .expect("days");
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[0].is_empty());
    let dates = |days: &[(jiff::civil::Date, LoginDay)]| {
        days.iter().map(|(d, _)| d.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(dates(&found[1]), vec!["2026-06-03"]);
    assert!(found[1][0].1.queues.is_empty());
    assert_eq!(dates(&found[2]), vec!["2026-05-30", "2026-06-02"]);
    assert_eq!(found[2][0].1.queues, vec!["sales".to_owned()]);
    assert_eq!(found[2][1].1.queues, vec!["billing".to_owned()]);
}

/// A version-3 database opens as the current version with nothing rewritten: its account
/// records (written without the seats in use) read their peak in use as the month's peak.
#[test]
fn a_version_3_database_is_upgraded_and_its_accounts_read_as_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let before = {
        let store = open(dir.path());
        setup(&store, "UTC", "2026-05-20T00:00:00Z", 0);
        let bytes = store.accounts.get("acme").expect("read").expect("account");
        let record: crate::records::AccountRecord =
            crate::records::decode("account", &bytes).expect("record");
        store
            .accounts
            .insert("acme", crate::records::encode(&record.into_v1()))
            .expect("v1 account");
        mark_version(&store, 3);
        store.account("acme").expect("account").inventory
    };
    let store = open(dir.path());
    assert_current_version(&store);
    let after = store.account("acme").expect("account").inventory;
    assert_eq!(after, before);
    assert_eq!(after.peak_in_use, after.peak);
}
