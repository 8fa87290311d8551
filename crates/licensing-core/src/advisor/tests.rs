//! Advisor tests: golden scenarios computed by hand under the test price list (monthly seats
//! DASHBOARD 500, STANDARD 2900, PROFESSIONAL 4900, ENTERPRISE 6900, DEVELOPER 9900; daily
//! PROFESSIONAL 290, ENTERPRISE 390; recording unit 700; outbound seat 1500), then properties
//! over arbitrary settings and use.

use proptest::prelude::*;

use super::*;
use crate::{
    BillingMonth, LoginDay, MemberSettingsInput, Role, Skill, price::testing::prices,
    resolve::tests as strategies,
};

fn skill(id: &str, channel: Channel) -> Skill {
    Skill {
        id: id.to_owned(),
        channel,
    }
}

fn settings(input: MemberSettingsInput) -> MemberSettings {
    MemberSettings::new(input).expect("valid settings")
}

fn activity(queues: &[&str], login_days: u32) -> MemberActivity {
    MemberActivity {
        queues: queues.iter().map(|q| (*q).to_owned()).collect(),
        queues_unknown: false,
        login_days,
    }
}

fn advise(settings: &MemberSettings, activity: &MemberActivity) -> Vec<RightSizing> {
    right_sizings(settings, activity, RecordingRetention::default(), &prices())
}

fn month(m: i8) -> BillingMonth {
    BillingMonth::new(2026, m).expect("valid month")
}

/// An agent (USER: COMMUNICATION) with two voice skills, "sales" and "support", billed monthly,
/// who logged into the "sales" queue only. Today: COMMUNICATION (STANDARD) and two skills
/// (PROFESSIONAL) = PROFESSIONAL, 4900 a month. Without "support": COMMUNICATION and one skill =
/// STANDARD, 2900. Saving 4900 - 2900 = 2000.
#[test]
fn an_agent_with_an_unused_second_skill() {
    let agent = settings(MemberSettingsInput {
        role: Some(Role::User),
        skills: vec![
            skill("sales", Channel::Voice),
            skill("support", Channel::Voice),
        ],
        ..Default::default()
    });
    let found = advise(&agent, &activity(&["sales"], 20));
    assert_eq!(found.len(), 1, "{found:?}");
    let r = &found[0];
    assert_eq!(r.trigger, Trigger::SeveralSkills);
    assert_eq!(
        r.change,
        SettingsChange::RemoveSkills(vec!["support".into()])
    );
    assert_eq!(
        (r.from.tier, r.to.tier),
        (Tier::Professional, Tier::Standard)
    );
    assert_eq!(r.monthly_saving, 2000);
    assert_eq!(r.settings.skills(), &[skill("sales", Channel::Voice)]);
    assert_eq!(r.settings.role(), Some(Role::User));

    // Both queues used: nothing to say.
    assert!(advise(&agent, &activity(&["sales", "support"], 20)).is_empty());
    // A day that does not list all its queues: "support" may have been used.
    let unknown = MemberActivity {
        queues_unknown: true,
        ..activity(&["sales"], 20)
    };
    assert!(advise(&agent, &unknown).is_empty());
}

/// Login days from the window's first date to its last make the activity: a day outside it
/// does not count, queues are the union of the days', one incomplete day makes them unknown.
/// The window crosses a month boundary (October 31st to November 11th).
#[test]
fn activity_over_a_window_of_login_days() {
    let day = |queues: &[&str], truncated| LoginDay {
        tier: Tier::Standard,
        billable: false,
        logins: 1,
        event_ids: vec![],
        queues: queues.iter().map(|q| (*q).to_owned()).collect(),
        queues_truncated: truncated,
    };
    let date = |m: i8, d: i8| jiff::civil::date(2026, m, d);
    let ann = vec![
        (date(10, 30), day(&["before"], false)),
        (date(10, 31), day(&["sales"], false)),
        (date(11, 10), day(&["billing"], false)),
        (date(11, 12), day(&["after"], false)),
    ];
    let found = window_activity(&ann, date(10, 31), date(11, 11)).expect("ann");
    assert_eq!(found.login_days, 2);
    assert_eq!(
        found.queues.iter().map(String::as_str).collect::<Vec<_>>(),
        vec!["billing", "sales"]
    );
    assert!(!found.queues_unknown);

    let bob = vec![(date(11, 1), day(&[], true))];
    assert!(
        window_activity(&bob, date(10, 31), date(11, 11))
            .expect("bob")
            .queues_unknown
    );
    // Only days outside the window: no activity, the idle case.
    assert_eq!(window_activity(&ann[..1], date(10, 31), date(11, 11)), None);
}

/// Each month's login days and the highest tier held on one: September 2 days (STANDARD then
/// PROFESSIONAL: PROFESSIONAL), October none (left out), November 1 day.
#[test]
fn month_uses_count_days_and_keep_the_highest_tier() {
    let day = |tier| LoginDay {
        tier,
        billable: true,
        logins: 1,
        event_ids: vec![],
        queues: vec![],
        queues_truncated: false,
    };
    let date = |m: i8, d: i8| jiff::civil::date(2026, m, d);
    let days = vec![
        (date(9, 3), day(Tier::Standard)),
        (date(9, 4), day(Tier::Professional)),
        (date(11, 20), day(Tier::Standard)),
        (date(12, 1), day(Tier::Enterprise)),
    ];
    let found = month_uses(&days, &[month(9), month(10), month(11)]);
    assert_eq!(
        found,
        vec![
            MonthUse {
                month: month(9),
                tier: Tier::Professional,
                login_days: 2
            },
            MonthUse {
                month: month(11),
                tier: Tier::Standard,
                login_days: 1
            },
        ]
    );
}

/// No queue login at all keeps the first skill: removing every skill is not right-sizing (a
/// member who never works is the idle-member leak). Two skills, none used: "a" is kept, "b" is
/// removed, PROFESSIONAL 4900 -> STANDARD 2900, saving 2000.
#[test]
fn a_member_keeps_one_skill_and_the_voice_skill_outbound_needs() {
    let none_used = settings(MemberSettingsInput {
        role: Some(Role::User),
        skills: vec![skill("a", Channel::Chat), skill("b", Channel::Chat)],
        ..Default::default()
    });
    let found = advise(&none_used, &activity(&[], 3));
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].change,
        SettingsChange::RemoveSkills(vec!["b".into()])
    );
    assert_eq!(found[0].monthly_saving, 2000);

    // Outbound calling needs a voice skill: the unused voice skill "a" stays, so both stay and
    // the member keeps PROFESSIONAL; no recommendation.
    let outbound = settings(MemberSettingsInput {
        role: Some(Role::User),
        skills: vec![skill("a", Channel::Voice), skill("b", Channel::Chat)],
        outbound_calling: true,
        ..Default::default()
    });
    assert!(advise(&outbound, &activity(&["b"], 20)).is_empty());
}

/// A daily-billed PROFESSIONAL agent with two skills, one unused. Dropping to STANDARD also
/// ends daily billing (STANDARD is billed monthly: 2900). With 10 login days today costs
/// 10 x 290 = 2900: no saving, no recommendation. With 12 days: 12 x 290 = 3480, saving 580.
#[test]
fn a_daily_member_saves_only_when_the_month_costs_more_than_the_lower_seat() {
    let daily = settings(MemberSettingsInput {
        role: Some(Role::User),
        skills: vec![
            skill("sales", Channel::Voice),
            skill("support", Channel::Voice),
        ],
        billing_preference: BillingMode::Daily,
        ..Default::default()
    });
    assert!(advise(&daily, &activity(&["sales"], 10)).is_empty());
    let found = advise(&daily, &activity(&["sales"], 12));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].to.billing.effective, BillingMode::Monthly);
    assert_eq!(found[0].monthly_saving, 580);
}

/// Statistics tracked on an agent who cannot see statistics (USER: COMMUNICATION only, one
/// skill): COMMUNICATION, one skill (STANDARD), tracking (PROFESSIONAL) = 4900; tracking off =
/// STANDARD 2900, saving 2000. A TEAM_LEADER holds STATISTICS: not a candidate.
#[test]
fn statistics_tracking_without_statistics_access() {
    let agent = settings(MemberSettingsInput {
        role: Some(Role::User),
        skills: vec![skill("sales", Channel::Voice)],
        track_statistics: true,
        ..Default::default()
    });
    let found = advise(&agent, &activity(&["sales"], 20));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].trigger, Trigger::StatisticsTracking);
    assert_eq!(found[0].change, SettingsChange::StatisticsTrackingOff);
    assert_eq!(found[0].monthly_saving, 2000);

    let leader = settings(MemberSettingsInput {
        role: Some(Role::TeamLeader),
        skills: vec![skill("sales", Channel::Voice)],
        track_statistics: true,
        ..Default::default()
    });
    assert!(advise(&leader, &activity(&["sales"], 20)).is_empty());
}

/// An ADMINISTRATOR preset on an agent with one voice skill: COMMUNICATION, one skill,
/// STATISTICS/SETTINGS/TEAM (PROFESSIONAL), WORKSPACE (ENTERPRISE) = ENTERPRISE 6900. Without
/// WORKSPACE (the rest of the preset listed): PROFESSIONAL 4900, saving 2000. With API listed
/// too (DEVELOPER, 9900): both go, PROFESSIONAL, saving 5000, reported as the API trigger.
#[test]
fn workspace_and_api_on_an_agent_who_only_handles_calls() {
    let admin = settings(MemberSettingsInput {
        role: Some(Role::Administrator),
        skills: vec![skill("sales", Channel::Voice)],
        ..Default::default()
    });
    let found = advise(&admin, &activity(&["sales"], 20));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].trigger, Trigger::WorkspacePermission);
    assert_eq!(found[0].monthly_saving, 2000);
    let listed: Vec<Permission> = found[0].settings.listed_permissions().iter().collect();
    use Permission::*;
    assert_eq!(
        listed,
        vec![Communication, Dashboard, Statistics, Settings, Team]
    );

    let developer = settings(MemberSettingsInput {
        permissions: vec![Communication, Workspace, Api],
        skills: vec![skill("sales", Channel::Voice)],
        ..Default::default()
    });
    let found = advise(&developer, &activity(&["sales"], 20));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].trigger, Trigger::DeveloperPermission);
    assert_eq!(
        (found[0].from.tier, found[0].to.tier),
        (Tier::Developer, Tier::Standard)
    );
    assert_eq!(found[0].monthly_saving, 9900 - 2900);

    // A chat skill: the member does more than calls; nothing is proposed.
    let mixed = settings(MemberSettingsInput {
        permissions: vec![Communication, Workspace],
        skills: vec![skill("sales", Channel::Voice), skill("web", Channel::Chat)],
        ..Default::default()
    });
    assert!(advise(&mixed, &activity(&["sales", "web"], 20)).is_empty());
}

/// Only WORKSPACE listed on a role with a preset: removing it leaves no permission, which must be
/// expressed without the role (listing none would bring the preset back).
#[test]
fn removing_the_last_listed_permission_drops_the_role() {
    let only = settings(MemberSettingsInput {
        role: Some(Role::Administrator),
        permissions: vec![Permission::Workspace],
        skills: vec![skill("sales", Channel::Voice)],
        ..Default::default()
    });
    let changed = apply(
        &only,
        &SettingsChange::RemovePermissions([Permission::Workspace].into_iter().collect()),
    )
    .expect("valid");
    assert_eq!(changed.role(), None);
    assert!(changed.permissions().is_empty());
}

/// A part-timer (TEAM_LEADER: PROFESSIONAL) billed monthly who logs in 6 days a month: monthly
/// 4900 against daily 6 x 290 = 1740, three months of it: daily is cheaper in 3 of 3, saving
/// (4900 - 1740) = 3160 a month. A full-timer's 20 days cost 5800 daily: monthly stays. A daily
/// member with 20 days a month in 2 of 3 months (5800 > 4900, saving 900 each) and 6 in the
/// third (1740 < 4900, losing 3160) would lose in total (900 + 900 - 3160 < 0): no advice.
#[test]
fn daily_or_monthly_from_the_real_login_days() {
    let part_timer: Vec<MonthUse> = (9..=11)
        .map(|m| MonthUse {
            month: month(m),
            tier: Tier::Professional,
            login_days: 6,
        })
        .collect();
    let advice = billing_mode_advice(BillingMode::Monthly, &part_timer, &prices()).expect("advice");
    assert_eq!(advice.recommended, BillingMode::Daily);
    assert_eq!(advice.cheaper_months, 3);
    assert_eq!(advice.monthly_saving, 3160);
    assert_eq!(advice.months[0].daily, 1740);
    assert_eq!(advice.months[0].monthly, 4900);

    let full_timer: Vec<MonthUse> = part_timer
        .iter()
        .map(|m| MonthUse {
            login_days: 20,
            ..*m
        })
        .collect();
    assert_eq!(
        billing_mode_advice(BillingMode::Monthly, &full_timer, &prices()),
        None
    );
    let advice = billing_mode_advice(BillingMode::Daily, &full_timer, &prices()).expect("advice");
    assert_eq!(advice.recommended, BillingMode::Monthly);
    assert_eq!(advice.monthly_saving, 900);

    let mut mixed = full_timer.clone();
    mixed[2].login_days = 6;
    assert_eq!(
        billing_mode_advice(BillingMode::Daily, &mixed, &prices()),
        None
    );

    // STANDARD months allow no daily billing: they are not evidence either way.
    let standard = [MonthUse {
        month: month(11),
        tier: Tier::Standard,
        login_days: 1,
    }];
    assert_eq!(
        billing_mode_advice(BillingMode::Monthly, &standard, &prices()),
        None
    );
}

/// 10 STANDARD seats bought and at most 6 in use all month: 4 unused, 4 x 2900 = 11600 a month.
/// 3 outbound seats, 3 in use: nothing.
#[test]
fn seats_bought_but_unused() {
    let mut bought = Seats::NONE;
    bought.set(Product::StandardSeat, 10);
    bought.set(Product::OutboundSeat, 3);
    let mut peak = Seats::NONE;
    peak.set(Product::StandardSeat, 6);
    peak.set(Product::OutboundSeat, 3);
    let found = unused_seats(bought, peak, &prices());
    assert_eq!(
        found,
        vec![UnusedSeats {
            product: Product::StandardSeat,
            bought: 10,
            peak_in_use: 6,
            monthly_saving: 11600,
        }]
    );
}

/// A member who never logs in: a monthly PROFESSIONAL costs 4900 for nothing; billed daily the
/// same member costs nothing without logins.
#[test]
fn a_member_who_never_logs_in() {
    let leader = |billing_preference| {
        settings(MemberSettingsInput {
            role: Some(Role::TeamLeader),
            billing_preference,
            ..Default::default()
        })
    };
    let resolve_it = |s: &MemberSettings| resolve(s, RecordingRetention::default(), &prices());
    assert_eq!(
        idle_member_cost(&resolve_it(&leader(BillingMode::Monthly))),
        Some(4900)
    );
    assert_eq!(
        idle_member_cost(&resolve_it(&leader(BillingMode::Daily))),
        None
    );
}

/// An account keeping recordings 9 months (3 units per recorded member) that says it needs 3
/// (1 unit). A recorded STANDARD agent is billed 3 units today, 1 at 3 months: 2 saved. A
/// recorded ADMINISTRATOR (WORKSPACE: ENTERPRISE, one unit included) is billed 3 - 1 = 2 today
/// and 1 - 1 = 0 at 3 months: 2 saved. A member who does not record saves nothing. In all 2
/// recorded members, 4 units, 4 x 700 = 2800 a month.
#[test]
fn recordings_kept_longer_than_the_account_needs() {
    let months = |m| RecordingRetention::months(m).expect("retention");
    let recorded = |role| {
        settings(MemberSettingsInput {
            role: Some(role),
            call_recording: true,
            ..Default::default()
        })
    };
    let mut long = LongRetention::new(months(9), Some(months(3))).expect("longer than needed");
    long.add(&recorded(Role::User), &prices());
    long.add(&recorded(Role::Administrator), &prices());
    long.add(
        &settings(MemberSettingsInput {
            role: Some(Role::User),
            ..Default::default()
        }),
        &prices(),
    );
    assert_eq!(
        long,
        LongRetention {
            current: months(9),
            required: months(3),
            recorded_members: 2,
            units_saved: 4,
            monthly_saving: 2800,
        }
    );
    // Down to 14 days: the agent's 3 units and the administrator's 2 are all saved.
    let mut free = LongRetention::new(months(9), Some(RecordingRetention::FOURTEEN_DAYS))
        .expect("longer than needed");
    free.add(&recorded(Role::User), &prices());
    free.add(&recorded(Role::Administrator), &prices());
    assert_eq!((free.units_saved, free.monthly_saving), (5, 3500));
    // Nothing to say when the account needs as long or longer, or does not say.
    assert_eq!(LongRetention::new(months(9), Some(months(9))), None);
    assert_eq!(LongRetention::new(months(3), Some(months(12))), None);
    assert_eq!(LongRetention::new(months(9), None), None);
}

/// Unlicensed usage keeps arriving when its last event is inside the window.
#[test]
fn unlicensed_usage_inside_the_window_keeps_arriving() {
    let at = |s: &str| s.parse::<jiff::Timestamp>().expect("timestamp");
    let since = at("2026-11-01T00:00:00Z");
    assert!(unlicensed_usage_arriving(at("2026-11-20T09:00:00Z"), since));
    assert!(unlicensed_usage_arriving(since, since));
    assert!(!unlicensed_usage_arriving(
        at("2026-10-31T23:59:59Z"),
        since
    ));
}

proptest! {
    /// Applying a right-sizing's settings never raises the member's tier, its saving is exactly
    /// the difference of the two resolved prices, and `to` is what resolving its settings gives.
    #[test]
    fn right_sizing_never_raises_the_tier_and_saves_the_price_difference(
        input in strategies::settings_input(),
        used in proptest::collection::vec(any::<bool>(), 4),
        login_days in 0u32..=31,
        retention in strategies::retention(),
    ) {
        let current = MemberSettings::new(input).expect("valid");
        prop_assert_eq!(MemberSettings::new(current.to_input()), Ok(current.clone()));
        let queues = current
            .skills()
            .iter()
            .zip(&used)
            .filter(|(_, u)| **u)
            .map(|(s, _)| s.id.clone())
            .collect();
        let activity = MemberActivity { queues, queues_unknown: false, login_days };
        let prices = prices();
        for r in right_sizings(&current, &activity, retention, &prices) {
            let from = resolve(&current, retention, &prices);
            let to = resolve(&r.settings, retention, &prices);
            prop_assert_eq!(r.from, from);
            prop_assert_eq!(r.to, to);
            prop_assert!(to.tier <= from.tier, "{:?} -> {:?}", from.tier, to.tier);
            prop_assert!(r.monthly_saving > 0);
            prop_assert_eq!(
                r.monthly_saving,
                monthly_cost(&from, login_days) - monthly_cost(&to, login_days)
            );
            prop_assert_eq!(apply(&current, &r.change), Some(r.settings.clone()));
        }
    }

    /// Shortening the retention saves exactly the difference of each recorded member's two
    /// resolved prices, never a negative amount, and nothing for a member who does not record.
    #[test]
    fn a_shorter_retention_saves_the_difference_of_the_resolved_prices(
        members in proptest::collection::vec(strategies::settings_input(), 0..6),
        current in strategies::retention(),
        required in strategies::retention(),
    ) {
        let prices = prices();
        match LongRetention::new(current, Some(required)) {
            None => prop_assert!(required.units() >= current.units()),
            Some(mut long) => {
                let mut expected = 0;
                let mut recorded = 0;
                for input in members {
                    let member = MemberSettings::new(input).expect("valid");
                    let before = long.monthly_saving;
                    long.add(&member, &prices);
                    prop_assert!(long.monthly_saving >= before);
                    if member.call_recording() {
                        recorded += 1;
                        expected += resolve(&member, current, &prices).price.per_month
                            - resolve(&member, required, &prices).price.per_month;
                    } else {
                        prop_assert_eq!(long.monthly_saving, before);
                    }
                }
                prop_assert_eq!(long.recorded_members, recorded);
                prop_assert_eq!(long.monthly_saving, expected);
                prop_assert_eq!(
                    long.monthly_saving,
                    i64::try_from(long.units_saved).expect("small") * prices.recording_unit_monthly()
                );
            }
        }
    }

    /// A recommended billing mode was strictly cheaper in most months considered, and cheaper in
    /// total: the saving is the total over the months, per month.
    #[test]
    fn a_billing_mode_is_recommended_only_when_it_was_cheaper_in_most_months(
        days in proptest::collection::vec((0u32..=31, any::<bool>()), 1..6),
        daily_now in any::<bool>(),
    ) {
        let months: Vec<MonthUse> = days
            .iter()
            .enumerate()
            .map(|(i, (login_days, enterprise))| MonthUse {
                month: month(i8::try_from(i + 1).expect("small")),
                tier: if *enterprise { Tier::Enterprise } else { Tier::Professional },
                login_days: *login_days,
            })
            .collect();
        let current = if daily_now { BillingMode::Daily } else { BillingMode::Monthly };
        if let Some(advice) = billing_mode_advice(current, &months, &prices()) {
            let cost = |c: &ModeCosts, mode| if mode == BillingMode::Daily { c.daily } else { c.monthly };
            let cheaper = advice
                .months
                .iter()
                .filter(|c| cost(c, advice.recommended) < cost(c, current))
                .count();
            prop_assert_eq!(cheaper, advice.cheaper_months as usize);
            prop_assert!(cheaper * 2 > advice.months.len());
            let total: i64 = advice
                .months
                .iter()
                .map(|c| cost(c, current) - cost(c, advice.recommended))
                .sum();
            prop_assert!(advice.monthly_saving > 0);
            prop_assert_eq!(advice.monthly_saving, total / advice.months.len() as i64);
        }
    }
}
