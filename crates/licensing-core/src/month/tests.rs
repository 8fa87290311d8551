//! The month's facts folded from the state it starts in, by hand.

use super::*;
use crate::{
    AccountSettings, CartLine, Channel, MemberSettings, MemberSettingsInput, Permission, Skill,
    price::testing::prices,
};

fn at(text: &str) -> jiff::Timestamp {
    text.parse().expect("timestamp")
}

/// A STANDARD agent (voice skill), recording calls or not; with `statistics`, PROFESSIONAL.
fn member(id: &str, recording: bool, statistics: bool) -> StoredMember {
    let mut permissions = vec![Permission::Communication];
    if statistics {
        permissions.push(Permission::Statistics);
    }
    StoredMember {
        member_id: id.into(),
        settings: MemberSettings::new(MemberSettingsInput {
            permissions,
            skills: vec![Skill {
                id: "voice".into(),
                channel: Channel::Voice,
            }],
            call_recording: recording,
            ..Default::default()
        })
        .expect("valid"),
        held: Seats::NONE,
        updated_at: at("2026-01-01T00:00:00Z"),
    }
}

fn entry(sequence: u64, time: &str, change: Change) -> AuditEntry {
    AuditEntry {
        sequence,
        time: at(time),
        actor: "test".into(),
        change,
    }
}

fn retention(months: u32) -> Change {
    let mut after = AccountSettings::new(Zone::utc());
    after.recording_retention = RecordingRetention::months(months).expect("valid");
    Change::AccountSettings {
        before: None,
        after,
    }
}

fn applied(member: StoredMember) -> Change {
    Change::Member {
        before: None,
        after: Some(member),
    }
}

fn billed(facts: &MonthFacts) -> Vec<(&str, u64)> {
    facts
        .recording
        .iter()
        .map(|r| (r.member_id.as_str(), r.billed_units))
        .collect()
}

#[test]
fn the_month_start_is_the_fold_of_what_came_before() {
    let prices = prices();
    let mut start = MonthStart::default();
    for change in [
        retention(6),
        applied(member("ann", true, false)),
        applied(member("bob", true, false)),
        applied(member("cid", false, false)),
        // Bob stops recording; Cid starts; Dan comes and goes.
        applied(member("bob", false, false)),
        applied(member("cid", true, true)),
        applied(member("dan", true, false)),
        Change::Member {
            before: Some(member("dan", true, false)),
            after: None,
        },
    ] {
        start.apply(&change, &prices);
    }
    assert_eq!(
        start.recorded.into_iter().collect::<Vec<_>>(),
        [
            ("ann".to_owned(), Tier::Standard),
            ("cid".to_owned(), Tier::Professional)
        ]
    );
    assert_eq!(start.retention.map(RecordingRetention::units), Some(2));
}

#[test]
fn recording_is_billed_at_the_month_highest_retention_and_state() {
    let prices = prices();
    // March starts with 3 months of retention (1 unit) and Ann recorded as STANDARD.
    let start = MonthStart {
        recorded: [("ann".to_owned(), Tier::Standard)].into(),
        retention: RecordingRetention::months(3).ok(),
    };
    let entries = vec![
        // 9 months for a week (3 units), then back to 3.
        entry(10, "2026-03-10T18:00:00Z", retention(9)),
        entry(11, "2026-03-17T18:00:00Z", retention(3)),
        // Bea recorded for a day, then removed: billed all the same.
        entry(
            12,
            "2026-03-20T09:00:00Z",
            applied(member("bea", true, false)),
        ),
        entry(
            13,
            "2026-03-21T09:00:00Z",
            Change::Member {
                before: Some(member("bea", true, false)),
                after: None,
            },
        ),
        // Ann stops recording: she was recorded in March, so she is billed.
        entry(
            14,
            "2026-03-25T09:00:00Z",
            applied(member("ann", false, false)),
        ),
    ];
    let facts = month_facts(&start, entries, Seats::NONE, &Zone::utc(), &prices);
    assert_eq!(facts.retention_units, 3);
    assert_eq!(billed(&facts), [("ann", 3), ("bea", 3)]);
    assert_eq!(
        facts.peak_notes,
        <[String; 6]>::default(),
        "no seats, no notes"
    );
}

#[test]
fn a_peak_is_noted_on_the_day_it_was_set_else_as_carried() {
    let prices = prices();
    let mut peaks = Seats::NONE;
    peaks.set(Product::StandardSeat, 5);
    peaks.set(Product::ProfessionalSeat, 2);
    let cart = |from: u32, to: u32| Change::Inventory {
        lines: vec![CartLine {
            product: Product::StandardSeat,
            from,
            to,
            this_month: 0,
            next_month: 0,
        }],
        auto_growth_for: None,
    };
    let entries = vec![
        entry(3, "2026-03-04T10:00:00Z", cart(2, 4)),
        // Reached on the 9th (in Prague already the 10th).
        entry(4, "2026-03-09T23:30:00Z", cart(4, 5)),
        entry(5, "2026-03-12T10:00:00Z", cart(5, 3)),
        entry(6, "2026-03-20T10:00:00Z", cart(3, 5)),
    ];
    let prague = Zone::new("Europe/Prague").expect("zone");
    let facts = month_facts(&MonthStart::default(), entries, peaks, &prague, &prices);
    assert_eq!(
        facts.peak_notes[Product::StandardSeat.index()],
        "set on 2026-03-10"
    );
    assert_eq!(
        facts.peak_notes[Product::ProfessionalSeat.index()],
        "carried into the month"
    );
    assert_eq!(facts.retention_units, 0);
}
