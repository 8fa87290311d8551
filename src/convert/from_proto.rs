//! Wire → domain. Every function validates as it converts and names the offending field and
//! value in its error; unknown enum numbers are refused rather than mapped to a default.

use licensing_core::{
    BillingMode, Channel, MemberSettings, MemberSettingsInput, Permission, Role, Skill,
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
    fn unspecified_billing_preference_is_monthly() {
        let converted = member_settings(Some(settings())).expect("valid");
        assert_eq!(converted.billing_preference(), BillingMode::Monthly);
    }
}
