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
    let statement = statement(&input, &prices()).expect("fits");
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
    let statement = statement(&input, &prices()).expect("fits");
    assert_eq!(amounts(&statement), [(LineKind::CallRecording, 5, 3_500)]);
    assert_eq!(statement.lines[0].member_ids, ["ann", "ben"]);
}

#[test]
fn speech_to_text_bills_the_minutes_beyond_the_base_pack_up_to_the_cap() {
    // 7250 minutes used, 5000 included: 2250 over.
    //   without a cap: 2250 × 2 = 4500
    //   with a cap of 1000: 1000 × 2 = 2000 (the service stopped at base + cap)
    let mut input = input("2026-05");
    input
        .meters
        .insert(Meter::SpeechToTextMinutes, MeterUse::on(7_250));
    assert_eq!(
        amounts(&statement(&input, &prices()).expect("fits")),
        [(LineKind::SpeechToText, 2_250, 4_500)]
    );
    input.caps.speech_to_text_extra_minutes = Some(1_000);
    let capped = statement(&input, &prices()).expect("fits");
    assert_eq!(amounts(&capped), [(LineKind::SpeechToText, 1_000, 2_000)]);
    assert_eq!(
        capped.lines[0].description,
        "7250 speech-to-text minutes used, 5000 included, 1000 billed (cap 1000)"
    );
    // Within the base pack, nothing is billed.
    input
        .meters
        .insert(Meter::SpeechToTextMinutes, MeterUse::on(5_000));
    assert!(statement(&input, &prices()).expect("fits").lines.is_empty());
}

#[test]
fn power_packs_are_billed_as_used_up_to_each_service_cap() {
    // AI QA reached its cap of 2 mid-month (a third use was refused): 2 × 4900 = 9800.
    // Smart routing, no cap, 1 used: 4900. AI topics unused: no line. Total 14700.
    let mut input = input("2026-06");
    input.meters.insert(Meter::AiQaPacks, MeterUse::on(2));
    input
        .meters
        .insert(Meter::SmartRoutingPacks, MeterUse::on(1));
    input.caps.ai_qa_packs = Some(2);
    let statement = statement(&input, &prices()).expect("fits");
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
        input.meters.insert(Meter::SpeechToTextMinutes, MeterUse::on(minutes));
        input.meters.insert(Meter::SmartRoutingPacks, MeterUse::on(u64::from(packs[0])));
        input.meters.insert(Meter::AiTopicsPacks, MeterUse::on(u64::from(packs[1])));
        input.meters.insert(Meter::AiQaPacks, MeterUse::on(u64::from(packs[2])));
        input.caps = MeterCaps {
            speech_to_text_extra_minutes: caps[0].map(u64::from),
            smart_routing_packs: caps[1].map(u64::from),
            ai_topics_packs: caps[2].map(u64::from),
            ai_qa_packs: caps[3].map(u64::from),
        };
        let statement = statement(&input, &prices()).expect("fits");
        prop_assert!(statement.unbilled.iter().all(|u| u.reason == UnbilledReason::OverCap));
        prop_assert_eq!(statement.total, statement.lines.iter().map(|l| l.amount).sum::<i64>());
        prop_assert_eq!(statement.total, statement.subtotals.iter().map(|(_, a)| a).sum::<i64>());
        for line in &statement.lines {
            prop_assert!(line.amount > 0 && line.quantity > 0, "{:?}", line);
            prop_assert_eq!(line.amount, line.quantity as i64 * line.unit_price);
        }
    }
}

#[test]
fn use_of_a_switched_off_service_or_beyond_a_cap_is_shown_unbilled() {
    // Speech-to-text off: 7,000 minutes used anyway. None billed (not even beyond the base),
    // all 7,000 shown as used while off.
    // AI QA with a cap of 2: 3 packs used, 2 × 4900 = 9800 billed, 1 shown beyond the cap.
    let mut input = input("2026-06");
    input.meters.insert(
        Meter::SpeechToTextMinutes,
        MeterUse {
            used: 0,
            while_off: 7_000,
        },
    );
    input.meters.insert(Meter::AiQaPacks, MeterUse::on(3));
    input.caps.ai_qa_packs = Some(2);
    let statement = statement(&input, &prices()).expect("fits");
    assert_eq!(amounts(&statement), [(LineKind::PowerPack, 2, 9_800)]);
    assert_eq!(statement.total, 9_800);
    let unbilled: Vec<(Meter, u64, UnbilledReason, &str)> = statement
        .unbilled
        .iter()
        .map(|u| (u.meter, u.quantity, u.reason, u.description.as_str()))
        .collect();
    assert_eq!(
        unbilled,
        [
            (
                Meter::SpeechToTextMinutes,
                7_000,
                UnbilledReason::ServiceOff,
                "7000 SPEECH_TO_TEXT_MINUTES used while the service was switched off for the account: recorded, not billed"
            ),
            (
                Meter::AiQaPacks,
                1,
                UnbilledReason::OverCap,
                "1 AI_QA_PACKS used beyond the month's limit (cap 2): recorded, not billed"
            ),
        ]
    );
}

#[test]
fn every_unit_used_is_included_billed_or_unbilled() {
    let caps = MeterCaps {
        speech_to_text_extra_minutes: Some(1_000),
        ..MeterCaps::default()
    };
    let billing = meter_billing(
        Meter::SpeechToTextMinutes,
        MeterUse {
            used: 7_250,
            while_off: 30,
        },
        &caps,
    );
    assert_eq!(
        (
            billing.included,
            billing.billed,
            billing.over_cap,
            billing.while_off
        ),
        (5_000, 1_000, 1_250, 30)
    );
}

fn extreme_prices(price: i64) -> PriceList {
    let mut input = crate::price::testing::input();
    input.seat_monthly = [price; 5];
    input.seat_daily_professional = price;
    input.seat_daily_enterprise = price;
    input.recording_unit_monthly = price;
    input.outbound_seat_monthly = price;
    input.speech_to_text_minute = price;
    input.power_pack = price;
    PriceList::new(input).expect("valid")
}

proptest! {
    /// Money never wraps: with quantities and prices up to their extremes, the statement is
    /// either exact (compared with 128-bit sums) or refused as too large, never a wrapped total.
    #[test]
    fn extreme_quantities_and_prices_give_exact_amounts_or_an_overflow_error(
        price in prop_oneof![0i64..=10_000, Just(crate::price::MAX_PRICE)],
        peaks in any::<[u32; 6]>(),
        days in proptest::collection::vec(prop_oneof![0u64..100, Just(u64::MAX / 2), Just(u64::MAX)], 0..4),
        minutes in prop_oneof![0u64..10_000, Just(u64::MAX)],
        packs in prop_oneof![0u64..10, Just(u64::MAX)],
    ) {
        let prices = extreme_prices(price);
        let mut input = input("2026-07");
        input.peaks = Seats(peaks);
        input.daily = days
            .iter()
            .enumerate()
            .map(|(i, &days)| MemberDays { member_id: format!("m{i}"), tier: Tier::Professional, days })
            .collect();
        input.meters.insert(Meter::SpeechToTextMinutes, MeterUse::on(minutes));
        input.meters.insert(Meter::AiQaPacks, MeterUse::on(packs));
        let price = i128::from(price);
        let mut quantities: Vec<i128> = peaks.iter().map(|&p| i128::from(p)).collect();
        quantities.push(days.iter().map(|&d| i128::from(d)).sum());
        quantities.push(i128::from(minutes.saturating_sub(SPEECH_TO_TEXT_BASE_MINUTES)));
        quantities.push(i128::from(packs));
        let exact: i128 = quantities.iter().map(|q| q * price).sum();
        let fits = quantities.iter().all(|q| i64::try_from(*q).is_ok() && i64::try_from(q * price).is_ok())
            && i64::try_from(exact).is_ok();
        match statement(&input, &prices) {
            Ok(statement) => {
                prop_assert!(fits, "accepted amounts that do not fit");
                prop_assert_eq!(i128::from(statement.total), exact);
            }
            Err(_) => prop_assert!(!fits, "refused amounts that fit"),
        }
    }
}
