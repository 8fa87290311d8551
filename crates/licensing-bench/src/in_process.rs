//! The domain's resolution alone, without gRPC: `licensing_core::resolve` over pre-built member
//! settings, timed per call. It is the floor under every `ResolveMember` call.

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail};
use licensing_core::{
    BillingMode, Channel, MemberSettings, MemberSettingsInput, Permission, PriceList,
    RecordingRetention, Role, Skill, Tier, resolve,
};

/// Representative member settings, with the tier each must resolve to.
#[derive(Debug)]
pub(crate) struct Variant {
    pub(crate) name: &'static str,
    settings: MemberSettings,
    expected: Tier,
}

/// The measured cost of resolving one variant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) name: &'static str,
    pub(crate) ns_per_call: f64,
}

/// Settings from the cheapest member (dashboard only) to the most involved (every trigger).
pub(crate) fn variants() -> anyhow::Result<Vec<Variant>> {
    let input = |role, permissions: &[Permission], skills: &[Channel]| MemberSettingsInput {
        role,
        permissions: permissions.to_vec(),
        skills: skills
            .iter()
            .enumerate()
            .map(|(i, &channel)| Skill {
                id: format!("skill-{i}"),
                channel,
            })
            .collect(),
        track_statistics: false,
        call_recording: false,
        outbound_calling: false,
        billing_preference: BillingMode::Monthly,
    };
    let cases = [
        (
            "dashboard viewer",
            input(None, &[Permission::Dashboard], &[]),
            Tier::Dashboard,
        ),
        (
            "agent, one voice skill",
            input(Some(Role::User), &[], &[Channel::Voice]),
            Tier::Standard,
        ),
        (
            "team leader, 3 skills, statistics, recording",
            MemberSettingsInput {
                track_statistics: true,
                call_recording: true,
                ..input(
                    Some(Role::TeamLeader),
                    &[],
                    &[Channel::Voice, Channel::Email, Channel::Chat],
                )
            },
            Tier::Professional,
        ),
        (
            "administrator, 5 skills, recording, outbound, daily",
            MemberSettingsInput {
                track_statistics: true,
                call_recording: true,
                outbound_calling: true,
                billing_preference: BillingMode::Daily,
                ..input(
                    Some(Role::Administrator),
                    &[],
                    &[
                        Channel::Voice,
                        Channel::Voice,
                        Channel::Email,
                        Channel::Chat,
                        Channel::Sms,
                    ],
                )
            },
            Tier::Enterprise,
        ),
        (
            "developer, explicit permissions, outbound, daily",
            MemberSettingsInput {
                outbound_calling: true,
                billing_preference: BillingMode::Daily,
                ..input(
                    None,
                    &[
                        Permission::Communication,
                        Permission::Statistics,
                        Permission::Workflow,
                        Permission::Api,
                    ],
                    &[Channel::Voice, Channel::Email],
                )
            },
            Tier::Developer,
        ),
    ];
    cases
        .into_iter()
        .map(|(name, input, expected)| {
            let settings =
                MemberSettings::new(input).map_err(|e| anyhow!("variant {name:?}: {e}"))?;
            Ok(Variant {
                name,
                settings,
                expected,
            })
        })
        .collect()
}

/// Times `calls` resolutions of each variant, after checking each resolves to its expected tier.
pub(crate) fn measure(
    variants: &[Variant],
    prices: &PriceList,
    calls: u64,
) -> anyhow::Result<Vec<Timing>> {
    variants
        .iter()
        .map(|variant| {
            let tier = resolve(&variant.settings, RecordingRetention::default(), prices).tier;
            if tier != variant.expected {
                bail!(
                    "variant {:?} resolved to {tier:?}, expected {:?}",
                    variant.name,
                    variant.expected
                );
            }
            time_calls(&variant.settings, prices, calls / 10); // warm caches and branch predictors
            let elapsed = time_calls(&variant.settings, prices, calls);
            Ok(Timing {
                name: variant.name,
                ns_per_call: elapsed.as_nanos() as f64 / calls.max(1) as f64,
            })
        })
        .collect()
}

/// Resolves `settings` `calls` times. `black_box` keeps the compiler from hoisting the call out
/// of the loop or discarding its result; dropping the result is part of the measured cost.
fn time_calls(settings: &MemberSettings, prices: &PriceList, calls: u64) -> Duration {
    let started = Instant::now();
    for _ in 0..calls {
        black_box(resolve(
            black_box(settings),
            black_box(RecordingRetention::default()),
            black_box(prices),
        ));
    }
    started.elapsed()
}
