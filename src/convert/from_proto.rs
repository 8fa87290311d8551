//! Wire → domain. Every function validates as it converts and names the offending field and
//! value in its error; unknown enum numbers are refused rather than mapped to a default.

use licensing_core::{
    AccountSettings, BillingMode, BillingMonth, Channel, EARLIEST, EARLIEST_MONTH, END, Event,
    EventKind, IdKind, LAST_MONTH, MAX_SEATS, MemberSettings, MemberSettingsInput, Meter,
    Permission, Product, RecordingRetention, Refusal, Role, SeatChange, Skill, Tier, Timestamp,
    Zone, check_id, check_in_range,
};

use crate::{api, error::ApiError};

/// Member settings from a request. The message itself is required: an absent `settings` is a
/// client bug, while `{}` is the legitimate "no settings at all".
pub fn member_settings(settings: Option<api::MemberSettings>) -> Result<MemberSettings, ApiError> {
    let settings =
        settings.ok_or_else(|| ApiError::invalid("settings", "(unset)", "must be set"))?;
    let role = match api::Role::try_from(settings.role) {
        Ok(api::Role::Unspecified) => None,
        Ok(api::Role::User) => Some(Role::User),
        Ok(api::Role::TeamLeader) => Some(Role::TeamLeader),
        Ok(api::Role::Administrator) => Some(Role::Administrator),
        Err(_) => return Err(unknown_enum("settings.role", settings.role, "role")),
    };
    let permissions = settings
        .permissions
        .iter()
        .enumerate()
        .map(|(i, &number)| permission(&format!("settings.permissions[{i}]"), number))
        .collect::<Result<Vec<_>, _>>()?;
    let skills = settings
        .skills
        .into_iter()
        .enumerate()
        .map(|(i, skill)| {
            let channel = channel(&format!("settings.skills[{i}].channel"), skill.channel)?;
            Ok(Skill {
                id: skill.id,
                channel,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let billing_preference = match api::BillingMode::try_from(settings.billing_preference) {
        // Documented in the contract: unspecified means monthly.
        Ok(api::BillingMode::Unspecified | api::BillingMode::Monthly) => BillingMode::Monthly,
        Ok(api::BillingMode::Daily) => BillingMode::Daily,
        Err(_) => {
            return Err(unknown_enum(
                "settings.billing_preference",
                settings.billing_preference,
                "billing mode",
            ));
        }
    };
    Ok(MemberSettings::new(MemberSettingsInput {
        role,
        permissions,
        skills,
        track_statistics: settings.track_statistics,
        call_recording: settings.call_recording,
        outbound_calling: settings.outbound_calling,
        billing_preference,
    })?)
}

fn permission(field: &str, number: i32) -> Result<Permission, ApiError> {
    Ok(match api::Permission::try_from(number) {
        Ok(api::Permission::Communication) => Permission::Communication,
        Ok(api::Permission::Dashboard) => Permission::Dashboard,
        Ok(api::Permission::Statistics) => Permission::Statistics,
        Ok(api::Permission::Settings) => Permission::Settings,
        Ok(api::Permission::Team) => Permission::Team,
        Ok(api::Permission::Workspace) => Permission::Workspace,
        Ok(api::Permission::Workflow) => Permission::Workflow,
        Ok(api::Permission::Api) => Permission::Api,
        Ok(api::Permission::Unspecified) => {
            return Err(ApiError::invalid(
                field,
                "PERMISSION_UNSPECIFIED",
                "must be a permission",
            ));
        }
        Err(_) => return Err(unknown_enum(field, number, "permission")),
    })
}

fn channel(field: &str, number: i32) -> Result<Channel, ApiError> {
    Ok(match api::Channel::try_from(number) {
        Ok(api::Channel::Voice) => Channel::Voice,
        Ok(api::Channel::Email) => Channel::Email,
        Ok(api::Channel::Chat) => Channel::Chat,
        Ok(api::Channel::Sms) => Channel::Sms,
        Ok(api::Channel::Unspecified) => {
            return Err(ApiError::invalid(
                field,
                "CHANNEL_UNSPECIFIED",
                "must be set",
            ));
        }
        Err(_) => return Err(unknown_enum(field, number, "channel")),
    })
}

fn unknown_enum(field: &str, number: i32, what: &str) -> ApiError {
    ApiError::invalid(field, number.to_string(), format!("unknown {what} number"))
}

/// An account id from the request field `account_id`.
pub fn account_id(value: &str) -> Result<&str, ApiError> {
    check_id(IdKind::Account, "account_id", value)?;
    Ok(value)
}

/// A member id from the request field `member_id`.
pub fn member_id(value: &str) -> Result<&str, ApiError> {
    check_id(IdKind::Member, "member_id", value)?;
    Ok(value)
}

/// A time zone by IANA name.
fn zone(field: &str, name: &str) -> Result<Zone, ApiError> {
    if name.is_empty() {
        return Err(ApiError::invalid(
            field,
            "\"\"",
            "must be an IANA time zone such as \"Europe/Prague\"",
        ));
    }
    Zone::new(name)
        .map_err(|_| ApiError::invalid(field, format!("{name:?}"), "is not a known IANA time zone"))
}

/// A recording retention; `None` when the message is absent.
fn retention(
    field: &str,
    retention: Option<api::RecordingRetention>,
) -> Result<Option<RecordingRetention>, ApiError> {
    use api::recording_retention::Period;
    match retention.and_then(|r| r.period) {
        None => Ok(None),
        Some(Period::FourteenDays(true)) => Ok(Some(RecordingRetention::FOURTEEN_DAYS)),
        Some(Period::FourteenDays(false)) => Err(ApiError::invalid(
            format!("{field}.fourteen_days"),
            "false",
            "set it to true, or set months",
        )),
        Some(Period::Months(months)) => {
            RecordingRetention::months(months).map(Some).map_err(|_| {
                ApiError::invalid(
                    format!("{field}.months"),
                    months.to_string(),
                    "must be a positive multiple of 3, at most 1200 (or choose fourteen_days)",
                )
            })
        }
    }
}

/// The settings of a new account: `time_zone` is required, the rest has defaults.
pub fn new_account_settings(
    settings: Option<api::AccountSettings>,
) -> Result<AccountSettings, ApiError> {
    let settings = settings
        .ok_or_else(|| ApiError::invalid("settings", "(unset)", "must be set, with a time_zone"))?;
    let mut account = AccountSettings::new(zone("settings.time_zone", &settings.time_zone)?);
    if let Some(retention) =
        retention("settings.recording_retention", settings.recording_retention)?
    {
        account.recording_retention = retention;
    }
    account.recording_retention_required = retention(
        "settings.recording_retention_required",
        settings.recording_retention_required,
    )?;
    account.auto_growth = settings.auto_growth;
    account.grace_period_days = settings.grace_period_days;
    account.speech_to_text = settings.speech_to_text;
    account.speech_to_text_extra_minutes_cap = settings.speech_to_text_extra_minutes_cap;
    account.power_pack = settings.power_pack;
    account.smart_routing_packs_cap = settings.smart_routing_packs_cap;
    account.ai_topics_packs_cap = settings.ai_topics_packs_cap;
    account.ai_qa_packs_cap = settings.ai_qa_packs_cap;
    account.ai_topics_on_calls = settings.ai_topics_on_calls;
    account.validate("settings.")?;
    Ok(account)
}

/// A validated change of account settings: each `Some` replaces the stored value.
#[derive(Debug, Clone, Default)]
pub struct SettingsUpdate {
    zone: Option<Zone>,
    auto_growth: Option<bool>,
    recording_retention: Option<RecordingRetention>,
    recording_retention_required: Option<Option<RecordingRetention>>,
    grace_period_days: Option<u32>,
    speech_to_text: Option<bool>,
    speech_to_text_extra_minutes_cap: Option<Option<u32>>,
    power_pack: Option<bool>,
    smart_routing_packs_cap: Option<u32>,
    ai_topics_packs_cap: Option<u32>,
    ai_qa_packs_cap: Option<u32>,
    ai_topics_on_calls: Option<bool>,
}

impl SettingsUpdate {
    /// Applies the change; the rules between fields are checked on the result by the caller.
    pub fn apply(&self, settings: &mut AccountSettings) {
        let s = settings;
        if let Some(zone) = &self.zone {
            s.zone = zone.clone();
        }
        s.auto_growth = self.auto_growth.unwrap_or(s.auto_growth);
        s.recording_retention = self.recording_retention.unwrap_or(s.recording_retention);
        if let Some(required) = self.recording_retention_required {
            s.recording_retention_required = required;
        }
        s.grace_period_days = self.grace_period_days.unwrap_or(s.grace_period_days);
        s.speech_to_text = self.speech_to_text.unwrap_or(s.speech_to_text);
        if let Some(cap) = self.speech_to_text_extra_minutes_cap {
            s.speech_to_text_extra_minutes_cap = cap;
        }
        s.power_pack = self.power_pack.unwrap_or(s.power_pack);
        s.smart_routing_packs_cap = self.smart_routing_packs_cap.or(s.smart_routing_packs_cap);
        s.ai_topics_packs_cap = self.ai_topics_packs_cap.or(s.ai_topics_packs_cap);
        s.ai_qa_packs_cap = self.ai_qa_packs_cap.or(s.ai_qa_packs_cap);
        s.ai_topics_on_calls = self.ai_topics_on_calls.unwrap_or(s.ai_topics_on_calls);
    }
}

/// The change an `UpdateAccount` request asks for.
pub fn settings_update(request: &api::UpdateAccountRequest) -> Result<SettingsUpdate, ApiError> {
    if request.clear_speech_to_text_extra_minutes_cap
        && request.speech_to_text_extra_minutes_cap.is_some()
    {
        return Err(ApiError::invalid(
            "clear_speech_to_text_extra_minutes_cap",
            "true",
            "contradicts speech_to_text_extra_minutes_cap: set one of them",
        ));
    }
    let required = retention(
        "recording_retention_required",
        request.recording_retention_required,
    )?;
    if request.clear_recording_retention_required && required.is_some() {
        return Err(ApiError::invalid(
            "clear_recording_retention_required",
            "true",
            "contradicts recording_retention_required: set one of them",
        ));
    }
    Ok(SettingsUpdate {
        zone: request
            .time_zone
            .as_deref()
            .map(|name| zone("time_zone", name))
            .transpose()?,
        auto_growth: request.auto_growth,
        recording_retention: retention("recording_retention", request.recording_retention)?,
        recording_retention_required: if request.clear_recording_retention_required {
            Some(None)
        } else {
            required.map(Some)
        },
        grace_period_days: request.grace_period_days,
        speech_to_text: request.speech_to_text,
        speech_to_text_extra_minutes_cap: if request.clear_speech_to_text_extra_minutes_cap {
            Some(None)
        } else {
            request.speech_to_text_extra_minutes_cap.map(Some)
        },
        power_pack: request.power_pack,
        smart_routing_packs_cap: request.smart_routing_packs_cap,
        ai_topics_packs_cap: request.ai_topics_packs_cap,
        ai_qa_packs_cap: request.ai_qa_packs_cap,
        ai_topics_on_calls: request.ai_topics_on_calls,
    })
}

/// A seat product.
fn product(field: &str, number: i32) -> Result<Product, ApiError> {
    Ok(match api::Product::try_from(number) {
        Ok(api::Product::DashboardSeat) => Product::DashboardSeat,
        Ok(api::Product::StandardSeat) => Product::StandardSeat,
        Ok(api::Product::ProfessionalSeat) => Product::ProfessionalSeat,
        Ok(api::Product::EnterpriseSeat) => Product::EnterpriseSeat,
        Ok(api::Product::DeveloperSeat) => Product::DeveloperSeat,
        Ok(api::Product::OutboundSeat) => Product::OutboundSeat,
        Ok(api::Product::CallRecordingUnit) => {
            return Err(ApiError::invalid(
                field,
                "PRODUCT_CALL_RECORDING_UNIT",
                "is not a seat product: recording units follow the recorded members",
            ));
        }
        Ok(api::Product::Unspecified) => {
            return Err(ApiError::invalid(
                field,
                "PRODUCT_UNSPECIFIED",
                "must be set",
            ));
        }
        Err(_) => return Err(unknown_enum(field, number, "product")),
    })
}

/// The seat counts of a cart.
pub fn seat_changes(changes: &[api::SeatChange]) -> Result<Vec<SeatChange>, ApiError> {
    if changes.is_empty() {
        return Err(ApiError::invalid(
            "changes",
            "[]",
            "must name at least one product",
        ));
    }
    changes
        .iter()
        .enumerate()
        .map(|(i, change)| {
            let product = product(&format!("changes[{i}].product"), change.product)?;
            if change.seats > MAX_SEATS {
                return Err(ApiError::invalid(
                    format!("changes[{i}].seats"),
                    change.seats.to_string(),
                    format!("must be at most {MAX_SEATS}"),
                ));
            }
            Ok(SeatChange {
                product,
                seats: change.seats,
            })
        })
        .collect()
}

/// A tier filter; empty means every tier.
pub fn tiers(field: &str, numbers: &[i32]) -> Result<Vec<Tier>, ApiError> {
    numbers
        .iter()
        .enumerate()
        .map(|(i, &number)| {
            let field = format!("{field}[{i}]");
            Ok(match api::Tier::try_from(number) {
                Ok(api::Tier::Dashboard) => Tier::Dashboard,
                Ok(api::Tier::Standard) => Tier::Standard,
                Ok(api::Tier::Professional) => Tier::Professional,
                Ok(api::Tier::Enterprise) => Tier::Enterprise,
                Ok(api::Tier::Developer) => Tier::Developer,
                Ok(api::Tier::Unspecified) => {
                    return Err(ApiError::invalid(
                        field,
                        "TIER_UNSPECIFIED",
                        "must be a tier",
                    ));
                }
                Err(_) => return Err(unknown_enum(&field, number, "tier")),
            })
        })
        .collect()
}

/// Whether the usage rows of `view` carry the reasons of each member's tier.
pub fn usage_view_has_reasons(field: &str, number: i32) -> Result<bool, ApiError> {
    match api::UsageView::try_from(number) {
        Ok(api::UsageView::Unspecified | api::UsageView::Full) => Ok(true),
        Ok(api::UsageView::Billing) => Ok(false),
        Err(_) => Err(unknown_enum(field, number, "usage view")),
    }
}

/// An instant of a request, in the range the service takes (`licensing_core::EARLIEST..END`).
pub fn timestamp(field: &str, value: &prost_types::Timestamp) -> Result<Timestamp, ApiError> {
    in_range(field, value).map_err(|(value, problem)| ApiError::invalid(field, value, problem))
}

/// The instant of `value` if it is valid and in range, else its rendering and the problem.
fn in_range(field: &str, value: &prost_types::Timestamp) -> Result<Timestamp, (String, String)> {
    let at = Timestamp::new(value.seconds, value.nanos).map_err(|_| {
        (
            format!("{}s {}ns", value.seconds, value.nanos),
            "is not a valid timestamp".to_owned(),
        )
    })?;
    check_in_range(field, at).map_err(|_| {
        (
            at.to_string(),
            format!("must be from {EARLIEST} to before {END}"),
        )
    })
}

/// A usage event, or the refusal it meets before reaching the store.
pub fn event(event: api::Event) -> Result<Event, Refusal> {
    let invalid = |field: &str, value: String, problem: &str| Refusal::Invalid {
        field: field.to_owned(),
        value,
        problem: problem.to_owned(),
    };
    let occurred_at = match &event.occurred_at {
        None => return Err(invalid("occurred_at", "(unset)".into(), "must be set")),
        Some(t) => in_range("occurred_at", t).map_err(|(value, problem)| Refusal::Invalid {
            field: "occurred_at".to_owned(),
            value,
            problem,
        })?,
    };
    use api::event::Kind;
    let kind = match event.kind {
        None => {
            return Err(invalid(
                "kind",
                "(unset)".into(),
                "must be one of agent_login, agent_logout, queue_login, queue_logout, metered_usage",
            ));
        }
        Some(Kind::AgentLogin(_)) => EventKind::AgentLogin,
        Some(Kind::AgentLogout(_)) => EventKind::AgentLogout,
        Some(Kind::QueueLogin(q)) => EventKind::QueueLogin(q.queue_id),
        Some(Kind::QueueLogout(q)) => EventKind::QueueLogout(q.queue_id),
        Some(Kind::MeteredUsage(m)) => {
            let meter = match api::Meter::try_from(m.meter) {
                Ok(api::Meter::SpeechToTextMinutes) => Meter::SpeechToTextMinutes,
                Ok(api::Meter::SmartRoutingPacks) => Meter::SmartRoutingPacks,
                Ok(api::Meter::AiTopicsPacks) => Meter::AiTopicsPacks,
                Ok(api::Meter::AiQaPacks) => Meter::AiQaPacks,
                Ok(api::Meter::Unspecified) => {
                    return Err(invalid(
                        "metered_usage.meter",
                        "METER_UNSPECIFIED".into(),
                        "must be set",
                    ));
                }
                Err(_) => {
                    return Err(invalid(
                        "metered_usage.meter",
                        m.meter.to_string(),
                        "unknown meter number",
                    ));
                }
            };
            EventKind::Metered {
                meter,
                quantity: m.quantity,
            }
        }
    };
    Ok(Event {
        source: event.source,
        event_id: event.event_id,
        account_id: event.account_id,
        member_id: event.member_id,
        occurred_at,
        kind,
    })
}

/// A month `YYYY-MM` in the range the service takes; empty is `None`.
pub fn month(field: &str, text: &str) -> Result<Option<BillingMonth>, ApiError> {
    if text.is_empty() {
        return Ok(None);
    }
    let month = BillingMonth::parse(text).map_err(|_| {
        ApiError::invalid(
            field,
            format!("{text:?}"),
            "must be YYYY-MM, e.g. \"2026-03\"",
        )
    })?;
    if !(EARLIEST_MONTH..=LAST_MONTH).contains(&month) {
        return Err(ApiError::invalid(
            field,
            format!("{text:?}"),
            format!("must be from {EARLIEST_MONTH} to {LAST_MONTH}"),
        ));
    }
    Ok(Some(month))
}

/// The recommendation kinds asked for in `field`; empty: every kind.
pub fn recommendation_kinds(
    field: &str,
    numbers: &[i32],
) -> Result<Vec<api::RecommendationKind>, ApiError> {
    numbers
        .iter()
        .enumerate()
        .map(|(i, &number)| {
            let field = format!("{field}[{i}]");
            match api::RecommendationKind::try_from(number) {
                Ok(api::RecommendationKind::Unspecified) => Err(ApiError::invalid(
                    field,
                    "RECOMMENDATION_KIND_UNSPECIFIED",
                    "must be a recommendation kind",
                )),
                Ok(kind) => Ok(kind),
                Err(_) => Err(unknown_enum(&field, number, "recommendation kind")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> api::MemberSettings {
        api::MemberSettings::default()
    }

    fn message(result: Result<MemberSettings, ApiError>) -> String {
        result.expect_err("invalid settings accepted").to_string()
    }

    #[test]
    fn absent_settings_are_refused_but_empty_ones_are_valid() {
        assert_eq!(
            message(member_settings(None)),
            "invalid settings (unset): must be set"
        );
        assert!(member_settings(Some(settings())).is_ok());
    }

    #[test]
    fn unknown_enum_numbers_are_refused_naming_field_and_number() {
        let cases = [
            (
                api::MemberSettings {
                    role: 9,
                    ..settings()
                },
                "invalid settings.role 9: unknown role number",
            ),
            (
                api::MemberSettings {
                    permissions: vec![1, 42],
                    ..settings()
                },
                "invalid settings.permissions[1] 42: unknown permission number",
            ),
            (
                api::MemberSettings {
                    permissions: vec![0],
                    ..settings()
                },
                "invalid settings.permissions[0] PERMISSION_UNSPECIFIED: must be a permission",
            ),
            (
                api::MemberSettings {
                    skills: vec![api::Skill {
                        id: "a".into(),
                        channel: 77,
                    }],
                    ..settings()
                },
                "invalid settings.skills[0].channel 77: unknown channel number",
            ),
            (
                api::MemberSettings {
                    skills: vec![api::Skill {
                        id: "a".into(),
                        channel: 0,
                    }],
                    ..settings()
                },
                "invalid settings.skills[0].channel CHANNEL_UNSPECIFIED: must be set",
            ),
            (
                api::MemberSettings {
                    billing_preference: -3,
                    ..settings()
                },
                "invalid settings.billing_preference -3: unknown billing mode number",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(message(member_settings(Some(input))), expected);
        }
    }

    #[test]
    fn times_and_months_outside_2000_to_2200_are_refused_naming_the_field() {
        let year_zero = prost_types::Timestamp {
            seconds: -62_151_148_800,
            nanos: 0,
        };
        assert_eq!(
            timestamp("sandbox_clock_start", &year_zero)
                .expect_err("year 0 accepted")
                .to_string(),
            "invalid sandbox_clock_start 0000-07-05T00:00:00Z: must be from 2000-01-01T00:00:00Z to before 2200-01-01T00:00:00Z"
        );
        let late = prost_types::Timestamp {
            seconds: 253_402_207_200, // 9999-12-30T22:00:00Z
            nanos: 0,
        };
        assert!(timestamp("to", &late).is_err());
        let event = api::Event {
            occurred_at: Some(late),
            ..api::Event::default()
        };
        assert!(
            matches!(super::event(event), Err(Refusal::Invalid { field, .. }) if field == "occurred_at")
        );
        assert_eq!(
            month("month", "9999-12").expect_err("accepted").to_string(),
            "invalid month \"9999-12\": must be from 1999-12 to 2200-01"
        );
        assert!(month("month", "2199-12").is_ok());
    }

    #[test]
    fn unspecified_billing_preference_is_monthly() {
        let converted = member_settings(Some(settings())).expect("valid");
        assert_eq!(converted.billing_preference(), BillingMode::Monthly);
    }
}
