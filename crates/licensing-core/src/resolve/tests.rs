//! Resolution tests: one table row per row of SPEC 3's trigger table and per role preset, then
//! properties over arbitrary valid settings.

use proptest::prelude::*;

use super::*;
use crate::member::{Channel, MemberSettingsInput, Role, Skill};
use crate::price::testing::prices;

pub(crate) fn skills(channels: &[Channel]) -> Vec<Skill> {
    channels
        .iter()
        .enumerate()
        .map(|(i, &channel)| Skill {
            id: format!("skill-{i}"),
            channel,
        })
        .collect()
}

fn perms(list: &[Permission]) -> Vec<Permission> {
    list.to_vec()
}

fn run(input: MemberSettingsInput) -> Resolution {
    let settings = MemberSettings::new(input).expect("valid settings");
    resolve(&settings, RecordingRetention::default(), &prices())
}

fn fired(resolution: &Resolution) -> Vec<(Trigger, Tier)> {
    resolution
        .reasons()
        .iter()
        .map(|r| (r.trigger, r.minimum_tier))
        .collect()
}

/// SPEC 3's trigger table, one case per row (and per permission of multi-permission rows). Each
/// case fires exactly one trigger, so the expected tier is that row's minimum tier: changing a row
/// of the table, or the trigger it maps to, fails its case.
#[test]
fn every_row_of_the_trigger_table() {
    use Channel::*;
    use Permission::*;
    let none = MemberSettingsInput::default;
    let rows: Vec<(&str, MemberSettingsInput, Trigger, Tier)> = vec![
        (
            "COMMUNICATION permission",
            MemberSettingsInput {
                permissions: perms(&[Communication]),
                ..none()
            },
            Trigger::CommunicationPermission,
            Tier::Standard,
        ),
        (
            "exactly one skill",
            MemberSettingsInput {
                skills: skills(&[Chat]),
                ..none()
            },
            Trigger::OneSkill,
            Tier::Standard,
        ),
        (
            "two distinct skills",
            MemberSettingsInput {
                skills: skills(&[Chat, Email]),
                ..none()
            },
            Trigger::SeveralSkills,
            Tier::Professional,
        ),
        (
            "five distinct skills",
            MemberSettingsInput {
                skills: skills(&[Chat, Email, Voice, Sms, Voice]),
                ..none()
            },
            Trigger::SeveralSkills,
            Tier::Professional,
        ),
        (
            "statistics tracking",
            MemberSettingsInput {
                track_statistics: true,
                ..none()
            },
            Trigger::StatisticsTracking,
            Tier::Professional,
        ),
        (
            "STATISTICS permission",
            MemberSettingsInput {
                permissions: perms(&[Statistics]),
                ..none()
            },
            Trigger::ReportingPermission,
            Tier::Professional,
        ),
        (
            "SETTINGS permission",
            MemberSettingsInput {
                permissions: perms(&[Settings]),
                ..none()
            },
            Trigger::ReportingPermission,
            Tier::Professional,
        ),
        (
            "TEAM permission",
            MemberSettingsInput {
                permissions: perms(&[Team]),
                ..none()
            },
            Trigger::ReportingPermission,
            Tier::Professional,
        ),
        (
            "WORKSPACE permission",
            MemberSettingsInput {
                permissions: perms(&[Workspace]),
                ..none()
            },
            Trigger::WorkspacePermission,
            Tier::Enterprise,
        ),
        (
            "WORKFLOW permission",
            MemberSettingsInput {
                permissions: perms(&[Workflow]),
                ..none()
            },
            Trigger::DeveloperPermission,
            Tier::Developer,
        ),
        (
            "API permission",
            MemberSettingsInput {
                permissions: perms(&[Api]),
                ..none()
            },
            Trigger::DeveloperPermission,
            Tier::Developer,
        ),
        (
            "call recording",
            MemberSettingsInput {
                call_recording: true,
                ..none()
            },
            Trigger::CallRecording,
            Tier::Standard,
        ),
    ];
    for (row, input, trigger, tier) in rows {
        let resolution = run(input);
        assert_eq!(fired(&resolution), [(trigger, tier)], "row {row:?}");
        assert_eq!(resolution.tier, tier, "row {row:?}");
    }

    // Outbound needs a voice skill, so its row always comes with the one-skill trigger.
    let resolution = run(MemberSettingsInput {
        outbound_calling: true,
        skills: skills(&[Voice]),
        ..none()
    });
    assert_eq!(
        fired(&resolution),
        [
            (Trigger::OneSkill, Tier::Standard),
            (Trigger::OutboundCalling, Tier::Standard)
        ]
    );
    assert_eq!(resolution.tier, Tier::Standard);

    // Nothing fires: DASHBOARD, also with the DASHBOARD permission.
    for input in [
        none(),
        MemberSettingsInput {
            permissions: perms(&[Dashboard]),
            ..none()
        },
    ] {
        let resolution = run(input);
        assert!(resolution.reasons().is_empty());
        assert_eq!(resolution.tier, Tier::Dashboard);
    }
}

#[test]
fn every_trigger_is_covered_by_the_table() {
    // The table above names each trigger; this keeps a new trigger from slipping past it.
    let expected = [
        (Trigger::CommunicationPermission, Tier::Standard),
        (Trigger::OneSkill, Tier::Standard),
        (Trigger::SeveralSkills, Tier::Professional),
        (Trigger::StatisticsTracking, Tier::Professional),
        (Trigger::ReportingPermission, Tier::Professional),
        (Trigger::WorkspacePermission, Tier::Enterprise),
        (Trigger::DeveloperPermission, Tier::Developer),
        (Trigger::CallRecording, Tier::Standard),
        (Trigger::OutboundCalling, Tier::Standard),
    ];
    assert_eq!(Trigger::ALL.map(|t| (t, t.minimum_tier())), expected);
}

#[test]
fn role_presets_resolve_through_their_permissions() {
    use Trigger::*;
    let cases = [
        (None, Tier::Dashboard, vec![]),
        (
            Some(Role::User),
            Tier::Standard,
            vec![CommunicationPermission],
        ),
        (
            Some(Role::TeamLeader),
            Tier::Professional,
            vec![CommunicationPermission, ReportingPermission],
        ),
        (
            Some(Role::Administrator),
            Tier::Enterprise,
            vec![
                CommunicationPermission,
                ReportingPermission,
                WorkspacePermission,
            ],
        ),
    ];
    for (role, tier, triggers) in cases {
        let resolution = run(MemberSettingsInput {
            role,
            ..Default::default()
        });
        assert_eq!(resolution.tier, tier, "{role:?}");
        assert_eq!(
            resolution
                .reasons()
                .iter()
                .map(|r| r.trigger)
                .collect::<Vec<_>>(),
            triggers,
            "{role:?}"
        );
    }
    // The licence follows the effective permissions, never the role's name.
    let resolution = run(MemberSettingsInput {
        role: Some(Role::Administrator),
        permissions: vec![Permission::Dashboard],
        ..Default::default()
    });
    assert_eq!(resolution.tier, Tier::Dashboard);
}

#[test]
fn reasons_explain_themselves() {
    use Permission::*;
    let resolution = run(MemberSettingsInput {
        permissions: vec![Communication, Team, Statistics, Api],
        skills: skills(&[Channel::Voice, Channel::Chat, Channel::Email]),
        track_statistics: true,
        call_recording: true,
        outbound_calling: true,
        ..Default::default()
    });
    let described: Vec<String> = resolution
        .reasons()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        described,
        [
            "permission COMMUNICATION",
            "3 skills",
            "statistics tracking",
            "permissions STATISTICS, TEAM",
            "permission API",
            "call recording",
            "outbound calling"
        ]
    );
    let one = run(MemberSettingsInput {
        skills: skills(&[Channel::Chat]),
        ..Default::default()
    });
    assert_eq!(one.reasons()[0].to_string(), "1 skill");
    assert_eq!(one.reasons()[0].skills, 1);
}

#[test]
fn recording_is_billed_below_enterprise_and_one_unit_included_from_it() {
    let settings = |permissions: Vec<Permission>| {
        MemberSettings::new(MemberSettingsInput {
            permissions,
            call_recording: true,
            ..Default::default()
        })
        .expect("valid")
    };
    let standard = settings(vec![Permission::Communication]);
    let enterprise = settings(vec![Permission::Workspace]);
    let nine_months = RecordingRetention::months(9).expect("valid");
    let cases = [
        (
            &standard,
            RecordingRetention::default(),
            1,
            0,
            1,
            2900 + 700,
        ),
        (&standard, nine_months, 3, 0, 3, 2900 + 3 * 700),
        (&standard, RecordingRetention::FOURTEEN_DAYS, 0, 0, 0, 2900),
        (&enterprise, RecordingRetention::default(), 1, 1, 0, 6900),
        (&enterprise, nine_months, 3, 1, 2, 6900 + 2 * 700),
        (
            &enterprise,
            RecordingRetention::FOURTEEN_DAYS,
            0,
            0,
            0,
            6900,
        ),
    ];
    for (settings, retention, units, included, billed, per_month) in cases {
        let resolution = resolve(settings, retention, &prices());
        let line = resolution.add_ons()[0];
        assert_eq!(line.add_on, AddOn::CallRecording);
        assert_eq!(
            (line.units, line.included_units, line.billed_units),
            (units, included, billed),
            "{} at {retention}",
            resolution.tier
        );
        assert_eq!(
            resolution.price.per_month, per_month,
            "{} at {retention}",
            resolution.tier
        );
    }
}

#[test]
fn outbound_is_an_add_on_seat_for_any_tier() {
    let resolution = run(MemberSettingsInput {
        permissions: vec![Permission::Workflow],
        skills: skills(&[Channel::Voice]),
        outbound_calling: true,
        ..Default::default()
    });
    assert_eq!(resolution.tier, Tier::Developer);
    assert_eq!(
        resolution.add_ons(),
        [AddOnLine {
            add_on: AddOn::Outbound,
            units: 1,
            included_units: 0,
            billed_units: 1
        }]
    );
    assert_eq!(resolution.price.per_month, 9900 + 1500);
}

#[test]
fn daily_billing_only_where_the_tier_allows_it() {
    use BillingReason::*;
    use Permission::*;
    let cases = [
        (
            vec![Communication],
            BillingMode::Daily,
            BillingMode::Monthly,
            DailyNotAvailable,
        ),
        (
            vec![Statistics],
            BillingMode::Daily,
            BillingMode::Daily,
            DailyAvailable,
        ),
        (
            vec![Workspace],
            BillingMode::Daily,
            BillingMode::Daily,
            DailyAvailable,
        ),
        (
            vec![Api],
            BillingMode::Daily,
            BillingMode::Monthly,
            DailyNotAvailable,
        ),
        (
            vec![Dashboard],
            BillingMode::Daily,
            BillingMode::Monthly,
            DailyNotAvailable,
        ),
        (
            vec![Statistics],
            BillingMode::Monthly,
            BillingMode::Monthly,
            MonthlyPreferred,
        ),
    ];
    for (permissions, preference, effective, reason) in cases {
        let resolution = run(MemberSettingsInput {
            permissions,
            billing_preference: preference,
            ..Default::default()
        });
        assert_eq!(
            (resolution.billing.effective, resolution.billing.reason),
            (effective, reason),
            "{}",
            resolution.tier
        );
        assert_eq!(resolution.billing.preference, preference);
    }
    let daily = run(MemberSettingsInput {
        permissions: vec![Statistics],
        billing_preference: BillingMode::Daily,
        ..Default::default()
    });
    assert_eq!((daily.price.per_month, daily.price.per_login_day), (0, 290));
    assert_eq!(
        daily.billing.to_string(),
        "billed per login day, as preferred: PROFESSIONAL allows daily billing"
    );
    let refused = run(MemberSettingsInput {
        permissions: vec![Communication],
        billing_preference: BillingMode::Daily,
        ..Default::default()
    });
    assert_eq!(
        refused.billing.to_string(),
        "billed monthly: daily billing is available only for PROFESSIONAL and ENTERPRISE, not STANDARD"
    );
}

// ---- properties ----

fn channel() -> impl Strategy<Value = Channel> {
    prop_oneof![
        Just(Channel::Voice),
        Just(Channel::Email),
        Just(Channel::Chat),
        Just(Channel::Sms)
    ]
}

fn permission() -> impl Strategy<Value = Permission> {
    proptest::sample::select(Permission::ALL.to_vec())
}

fn role() -> impl Strategy<Value = Option<Role>> {
    prop_oneof![
        Just(None),
        Just(Some(Role::User)),
        Just(Some(Role::TeamLeader)),
        Just(Some(Role::Administrator))
    ]
}

fn billing_mode() -> impl Strategy<Value = BillingMode> {
    prop_oneof![Just(BillingMode::Monthly), Just(BillingMode::Daily)]
}

/// Valid settings: distinct skill ids, and outbound only when a voice skill is present.
pub(crate) fn settings_input() -> impl Strategy<Value = MemberSettingsInput> {
    (
        role(),
        proptest::collection::vec(permission(), 0..4),
        proptest::collection::vec(channel(), 0..4),
        any::<[bool; 3]>(),
        any::<bool>(),
        billing_mode(),
    )
        .prop_map(
            |(
                role,
                permissions,
                channels,
                [track_statistics, call_recording, outbound],
                _,
                billing_preference,
            )| {
                let skills = skills(&channels);
                let outbound_calling =
                    outbound && skills.iter().any(|s| s.channel == Channel::Voice);
                MemberSettingsInput {
                    role,
                    permissions,
                    skills,
                    track_statistics,
                    call_recording,
                    outbound_calling,
                    billing_preference,
                }
            },
        )
}

pub(crate) fn retention() -> impl Strategy<Value = RecordingRetention> {
    prop_oneof![
        Just(RecordingRetention::FOURTEEN_DAYS),
        (1u32..=400).prop_map(|p| RecordingRetention::months(p * 3).expect("multiple of 3")),
    ]
}

/// The same settings with the effective permissions listed explicitly, so that adding one is
/// a pure addition (adding to an empty list would replace the role's preset).
fn explicit(input: &MemberSettingsInput) -> MemberSettingsInput {
    let settings = MemberSettings::new(input.clone()).expect("valid");
    MemberSettingsInput {
        permissions: settings.permissions().iter().collect(),
        ..input.clone()
    }
}

fn tier_of(input: MemberSettingsInput) -> Tier {
    run(input).tier
}

proptest! {
    #[test]
    fn adding_a_permission_a_skill_or_a_flag_never_lowers_the_tier(
        input in settings_input(),
        extra in permission(),
        extra_channel in channel(),
        flag in 0usize..4,
    ) {
        let base = explicit(&input);
        let before = tier_of(base.clone());

        let mut more = base.clone();
        more.permissions.push(extra);
        prop_assert!(tier_of(more) >= before);

        let mut more = base.clone();
        more.skills.push(Skill { id: "extra".into(), channel: extra_channel });
        prop_assert!(tier_of(more) >= before);

        let mut more = base.clone();
        match flag {
            0 => more.track_statistics = true,
            1 => more.call_recording = true,
            2 => {
                more.skills.push(Skill { id: "extra-voice".into(), channel: Channel::Voice });
                more.outbound_calling = true;
            }
            _ => more.billing_preference = BillingMode::Daily,
        }
        prop_assert!(tier_of(more) >= before);
    }

    #[test]
    fn the_tier_is_the_highest_reason(input in settings_input()) {
        let resolution = run(input);
        let highest = resolution.reasons().iter().map(|r| r.minimum_tier).max().unwrap_or(Tier::Dashboard);
        prop_assert_eq!(resolution.tier, highest);
        for reason in resolution.reasons() {
            prop_assert_eq!(reason.minimum_tier, reason.trigger.minimum_tier());
        }
        let triggers: Vec<Trigger> = resolution.reasons().iter().map(|r| r.trigger).collect();
        let mut sorted = triggers.clone();
        sorted.sort();
        sorted.dedup();
        prop_assert_eq!(triggers, sorted, "reasons are in table order, each at most once");
    }

    #[test]
    fn dashboard_exactly_when_the_spec_says(input in settings_input()) {
        let settings = MemberSettings::new(input.clone()).expect("valid");
        let dashboard_only: PermissionSet = [Permission::Dashboard].into_iter().collect();
        let expected = settings.skills().is_empty()
            && !settings.track_statistics()
            && !settings.call_recording()
            && !settings.outbound_calling()
            && settings.permissions().is_subset(dashboard_only);
        let resolution = run(input);
        prop_assert_eq!(resolution.tier == Tier::Dashboard, expected);
        prop_assert_eq!(resolution.reasons().is_empty(), expected);
    }

    #[test]
    fn prices_add_up(input in settings_input(), retention in retention()) {
        let settings = MemberSettings::new(input).expect("valid");
        let prices = prices();
        let resolution = resolve(&settings, retention, &prices);
        let price = resolution.price;
        let mut per_month = 0;
        let mut per_day = 0;
        for line in price.lines() {
            prop_assert_eq!(line.amount, i64::from(line.quantity) * line.unit_price);
            prop_assert!(line.amount >= 0);
            match line.period {
                Period::Month => per_month += line.amount,
                Period::LoginDay => per_day += line.amount,
            }
        }
        prop_assert_eq!((price.per_month, price.per_login_day), (per_month, per_day));
        let seat = price.lines()[0];
        prop_assert_eq!(seat.item, PriceItem::Seat(resolution.tier));
        let daily = resolution.billing.effective == BillingMode::Daily;
        prop_assert_eq!(seat.period == Period::LoginDay, daily);
        prop_assert!(!daily || resolution.tier.allows_daily_billing());
        for add_on in resolution.add_ons() {
            prop_assert_eq!(add_on.units, add_on.included_units + add_on.billed_units);
        }
    }
}
