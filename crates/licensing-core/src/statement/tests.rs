//! Golden statements, computed by hand in the comments, and the statement's arithmetic properties.

use proptest::prelude::*;

use super::*;
use crate::price::testing::prices;

fn input(month: &str) -> StatementInput {
    StatementInput {
        month: BillingMonth::parse(month).expect("month"),
        peaks: Seats::NONE,
        peak_notes: Default::default(),
        daily: Vec::new(),
        recording: Vec::new(),
        retention_months: 3,
        meters: MeterTotals::new(),
        caps: MeterCaps::default(),
    }
}

fn amounts(statement: &Statement) -> Vec<(LineKind, u64, i64)> {
    statement
        .lines
        .iter()
        .map(|l| (l.kind, l.quantity, l.amount))
        .collect()
}

#[test]
fn a_reduction_mid_month_is_billed_at_the_peak_and_a_switch_to_daily_bills_days() {
    // 10 STANDARD seats from the 3rd, reduced to 4 on the 15th: the month's peak is 10.
    //   seats    10 × 2900 = 29000
    //   outbound  2 × 1500 =  3000
    // dana was STANDARD (monthly: her seat is among the 10) and became PROFESSIONAL billed daily
    // on the 20th, then logged in on 8 days; eve, ENTERPRISE daily, logged in on 3 days.
    //   PRO days  8 ×  290 =  2320
    //   ENT days  3 ×  390 =  1170
    //   total              = 35490
    let mut input = input("2026-03");
    input.peaks = Seats([0, 10, 0, 0, 0, 2]);
    input.peak_notes[1] = "set on 2026-03-03".into();
    input.daily = vec![
        MemberDays {
            member_id: "eve".into(),
            tier: Tier::Enterprise,
            days: 3,
        },
        MemberDays {
            member_id: "dana".into(),
            tier: Tier::Professional,
            days: 8,
        },
    ];
    let statement = statement(&input, &prices());
    assert_eq!(
        amounts(&statement),
        [
            (LineKind::Seats, 10, 29_000),
            (LineKind::Seats, 2, 3_000),
            (LineKind::Daily, 8, 2_320),
            (LineKind::Daily, 3, 1_170),
        ]
    );
    assert_eq!(statement.total, 35_490);
    assert_eq!(
        statement.lines[0].description,
        "peak of 10 STANDARD_SEAT in 2026-03: set on 2026-03-03"
    );
    assert_eq!(statement.lines[2].member_ids, ["dana"]);
    assert_eq!(
        statement.lines[2].description,
        "8 billable login days at PROFESSIONAL in 2026-03: dana 8"
    );
    assert_eq!(
        statement.subtotals,
        [
            (LineKind::Seats, 32_000),
            (LineKind::Daily, 3_490),
            (LineKind::CallRecording, 0),
            (LineKind::SpeechToText, 0),
            (LineKind::PowerPack, 0),
        ]
    );
    assert_eq!(
        (statement.price_list.as_str(), statement.price_list_version),
        ("test", 1)
    );
}

#[test]
fn nine_months_of_retention_bill_three_units_per_recorded_member() {
    // 9 months = 3 units per recorded member. ann (STANDARD) pays 3; ben (ENTERPRISE) has one
    // included and pays 2: 5 units × 700 = 3500.
    let mut input = input("2026-04");
    input.retention_months = 9;
    input.recording = vec![
        RecordedMember {
            member_id: "ann".into(),
            billed_units: 3,
        },
        RecordedMember {
            member_id: "ben".into(),
            billed_units: 2,
        },
    ];
    let statement = statement(&input, &prices());
    assert_eq!(amounts(&statement), [(LineKind::CallRecording, 5, 3_500)]);
    assert_eq!(statement.lines[0].member_ids, ["ann", "ben"]);
}

#[test]
fn speech_to_text_bills_the_minutes_beyond_the_base_pack_up_to_the_cap() {
    // 7250 minutes used, 5000 included: 2250 over.
    //   without a cap: 2250 × 2 = 4500
    //   with a cap of 1000: 1000 × 2 = 2000 (the service stopped at base + cap)
    let mut input = input("2026-05");
    input.meters.insert(Meter::SpeechToTextMinutes, 7_250);
    assert_eq!(
        amounts(&statement(&input, &prices())),
        [(LineKind::SpeechToText, 2_250, 4_500)]
    );
    input.caps.speech_to_text_extra_minutes = Some(1_000);
    let capped = statement(&input, &prices());
    assert_eq!(amounts(&capped), [(LineKind::SpeechToText, 1_000, 2_000)]);
    assert_eq!(
        capped.lines[0].description,
        "7250 speech-to-text minutes used, 5000 included, 1000 billed (cap 1000)"
    );
    // Within the base pack, nothing is billed.
    input.meters.insert(Meter::SpeechToTextMinutes, 5_000);
    assert!(statement(&input, &prices()).lines.is_empty());
}

#[test]
fn power_packs_are_billed_as_used_up_to_each_service_cap() {
    // AI QA reached its cap of 2 mid-month (a third use was refused): 2 × 4900 = 9800.
    // Smart routing, no cap, 1 used: 4900. AI topics unused: no line. Total 14700.
    let mut input = input("2026-06");
    input.meters.insert(Meter::AiQaPacks, 2);
    input.meters.insert(Meter::SmartRoutingPacks, 1);
    input.caps.ai_qa_packs = Some(2);
    let statement = statement(&input, &prices());
    assert_eq!(
        amounts(&statement),
        [
            (LineKind::PowerPack, 1, 4_900),
            (LineKind::PowerPack, 2, 9_800)
        ]
    );
    assert_eq!(statement.total, 14_700);
}

proptest! {
    #[test]
    fn the_total_is_the_sum_of_the_lines_and_no_line_is_negative(
        peaks in any::<[u16; 6]>(),
        daily in proptest::collection::vec((0usize..5, 0u64..31), 0..6),
        recording in proptest::collection::vec(0u64..400, 0..6),
        minutes in 0u64..100_000,
        packs in any::<[u8; 3]>(),
        caps in any::<[Option<u16>; 4]>(),
    ) {
        let mut input = input("2026-07");
        input.peaks = Seats(peaks.map(u32::from));
        input.daily = daily
            .into_iter()
            .enumerate()
            .map(|(i, (tier, days))| MemberDays { member_id: format!("m{i}"), tier: Tier::ALL[tier], days })
            .collect();
        input.recording = recording
            .into_iter()
            .enumerate()
            .map(|(i, units)| RecordedMember { member_id: format!("r{i}"), billed_units: units })
            .collect();
        input.meters.insert(Meter::SpeechToTextMinutes, minutes);
        input.meters.insert(Meter::SmartRoutingPacks, u64::from(packs[0]));
        input.meters.insert(Meter::AiTopicsPacks, u64::from(packs[1]));
        input.meters.insert(Meter::AiQaPacks, u64::from(packs[2]));
        input.caps = MeterCaps {
            speech_to_text_extra_minutes: caps[0].map(u64::from),
            smart_routing_packs: caps[1].map(u64::from),
            ai_topics_packs: caps[2].map(u64::from),
            ai_qa_packs: caps[3].map(u64::from),
        };
        let statement = statement(&input, &prices());
        prop_assert_eq!(statement.total, statement.lines.iter().map(|l| l.amount).sum::<i64>());
        prop_assert_eq!(statement.total, statement.subtotals.iter().map(|(_, a)| a).sum::<i64>());
        for line in &statement.lines {
            prop_assert!(line.amount > 0 && line.quantity > 0, "{:?}", line);
            prop_assert_eq!(line.amount, line.quantity as i64 * line.unit_price);
        }
    }
}
