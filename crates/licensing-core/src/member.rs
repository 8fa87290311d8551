//! A team member's settings, validated: role presets, effective permissions, skills and flags.

use std::{collections::HashMap, fmt};

/// At most this many skills per member.
pub const MAX_SKILLS: usize = 256;
/// At most this many bytes per skill id.
pub const MAX_SKILL_ID_BYTES: usize = crate::ids::IdKind::Skill.max_bytes();

/// A capability (a tab of the product, or an API right) a member may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// Taking contacts.
    Communication,
    /// Viewing dashboards.
    Dashboard,
    /// Statistics and reporting.
    Statistics,
    /// Account settings.
    Settings,
    /// Team management.
    Team,
    /// Workspace administration.
    Workspace,
    /// Workflow configuration.
    Workflow,
    /// The advanced API.
    Api,
}

impl Permission {
    /// Every permission, in contract order.
    pub const ALL: [Permission; 8] = [
        Permission::Communication,
        Permission::Dashboard,
        Permission::Statistics,
        Permission::Settings,
        Permission::Team,
        Permission::Workspace,
        Permission::Workflow,
        Permission::Api,
    ];

    /// The permission's name as the contract spells it.
    pub fn name(self) -> &'static str {
        match self {
            Permission::Communication => "COMMUNICATION",
            Permission::Dashboard => "DASHBOARD",
            Permission::Statistics => "STATISTICS",
            Permission::Settings => "SETTINGS",
            Permission::Team => "TEAM",
            Permission::Workspace => "WORKSPACE",
            Permission::Workflow => "WORKFLOW",
            Permission::Api => "API",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of permissions, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PermissionSet(u8);

impl PermissionSet {
    /// No permissions.
    pub const EMPTY: PermissionSet = PermissionSet(0);

    /// Whether `permission` is in the set.
    pub fn contains(self, permission: Permission) -> bool {
        self.0 & permission.bit() != 0
    }

    /// Adds `permission`.
    pub fn insert(&mut self, permission: Permission) {
        self.0 |= permission.bit();
    }

    /// The permissions in both sets.
    pub fn intersection(self, other: PermissionSet) -> PermissionSet {
        PermissionSet(self.0 & other.0)
    }

    /// Whether every permission of `self` is in `other`.
    pub fn is_subset(self, other: PermissionSet) -> bool {
        self.0 & !other.0 == 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Number of permissions in the set.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The permissions, in contract order.
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        let mut set = PermissionSet::EMPTY;
        for permission in iter {
            set.insert(permission);
        }
        set
    }
}

impl fmt::Display for PermissionSet {
    /// `STATISTICS, TEAM`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, permission) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(permission.name())?;
        }
        Ok(())
    }
}

/// A role: a preset of permissions, used when a member's permissions are not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// {COMMUNICATION}.
    User,
    /// {COMMUNICATION, DASHBOARD, STATISTICS}.
    TeamLeader,
    /// {COMMUNICATION, DASHBOARD, STATISTICS, SETTINGS, TEAM, WORKSPACE}.
    Administrator,
}

impl Role {
    /// The role's permissions (SPEC 3).
    pub fn preset(self) -> PermissionSet {
        use Permission::*;
        match self {
            Role::User => [Communication].into_iter().collect(),
            Role::TeamLeader => [Communication, Dashboard, Statistics].into_iter().collect(),
            Role::Administrator => [
                Communication,
                Dashboard,
                Statistics,
                Settings,
                Team,
                Workspace,
            ]
            .into_iter()
            .collect(),
        }
    }
}

/// The channel a skill serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Phone calls.
    Voice,
    /// E-mail.
    Email,
    /// Web chat.
    Chat,
    /// Text messages.
    Sms,
}

/// A skill: a queue of contacts the member can take, on one channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Skill {
    /// Identifier, unique among the member's skills.
    pub id: String,
    /// The channel the skill serves.
    pub channel: Channel,
}

/// How a member's licence is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BillingMode {
    /// A seat per month.
    #[default]
    Monthly,
    /// Per calendar day with at least one login.
    Daily,
}

/// Settings as a caller gives them, before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberSettingsInput {
    /// The role, if any.
    pub role: Option<Role>,
    /// The permissions exactly, when not empty; otherwise the role's preset applies.
    pub permissions: Vec<Permission>,
    /// The member's skills.
    pub skills: Vec<Skill>,
    /// Whether the member's statistics are tracked.
    pub track_statistics: bool,
    /// Whether the member's calls are recorded.
    pub call_recording: bool,
    /// Whether the member may place outbound calls.
    pub outbound_calling: bool,
    /// The billing mode the member would like.
    pub billing_preference: BillingMode,
}

/// A settings field that is not acceptable, named as in the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {value}: {problem}")]
pub struct InvalidSettings {
    /// The field's path, e.g. `settings.skills[1].id`.
    pub field: String,
    /// The refused value, rendered (strings quoted).
    pub value: String,
    /// What is wrong with it.
    pub problem: String,
}

impl InvalidSettings {
    fn new(field: impl Into<String>, value: impl Into<String>, problem: impl Into<String>) -> Self {
        InvalidSettings {
            field: field.into(),
            value: value.into(),
            problem: problem.into(),
        }
    }
}

/// Validated settings: skill ids non-empty and distinct, outbound only with a voice skill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSettings {
    role: Option<Role>,
    listed_permissions: PermissionSet,
    permissions: PermissionSet,
    skills: Vec<Skill>,
    track_statistics: bool,
    call_recording: bool,
    outbound_calling: bool,
    billing_preference: BillingMode,
}

impl MemberSettings {
    /// Validates `input`. The first problem found is reported, naming the field and its value.
    pub fn new(input: MemberSettingsInput) -> Result<Self, InvalidSettings> {
        if input.skills.len() > MAX_SKILLS {
            return Err(InvalidSettings::new(
                "settings.skills",
                format!("({} skills)", input.skills.len()),
                format!("at most {MAX_SKILLS} skills per member"),
            ));
        }
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(input.skills.len());
        for (i, skill) in input.skills.iter().enumerate() {
            let field = || format!("settings.skills[{i}].id");
            crate::ids::check(crate::ids::IdKind::Skill, &field(), &skill.id)
                .map_err(|e| InvalidSettings::new(e.field, e.value, e.problem))?;
            if let Some(first) = seen.insert(skill.id.as_str(), i) {
                return Err(InvalidSettings::new(
                    field(),
                    format!("{:?}", skill.id),
                    format!("duplicates settings.skills[{first}].id"),
                ));
            }
        }
        if input.outbound_calling && !input.skills.iter().any(|s| s.channel == Channel::Voice) {
            return Err(InvalidSettings::new(
                "settings.outbound_calling",
                "true",
                "requires a skill on the VOICE channel",
            ));
        }
        let listed_permissions: PermissionSet = input.permissions.iter().copied().collect();
        let permissions = if listed_permissions.is_empty() {
            input.role.map(Role::preset).unwrap_or_default()
        } else {
            listed_permissions
        };
        Ok(MemberSettings {
            role: input.role,
            listed_permissions,
            permissions,
            skills: input.skills,
            track_statistics: input.track_statistics,
            call_recording: input.call_recording,
            outbound_calling: input.outbound_calling,
            billing_preference: input.billing_preference,
        })
    }

    /// The role as given.
    pub fn role(&self) -> Option<Role> {
        self.role
    }

    /// The permissions listed in the request (empty when the role's preset applies).
    pub fn listed_permissions(&self) -> PermissionSet {
        self.listed_permissions
    }

    /// The effective permissions: the listed ones, or else the role's preset.
    pub fn permissions(&self) -> PermissionSet {
        self.permissions
    }

    /// The skills, distinct by id.
    pub fn skills(&self) -> &[Skill] {
        &self.skills
    }

    /// Whether statistics are tracked.
    pub fn track_statistics(&self) -> bool {
        self.track_statistics
    }

    /// Whether calls are recorded.
    pub fn call_recording(&self) -> bool {
        self.call_recording
    }

    /// Whether outbound calling is on.
    pub fn outbound_calling(&self) -> bool {
        self.outbound_calling
    }

    /// The billing mode the member would like, stored as given.
    pub fn billing_preference(&self) -> BillingMode {
        self.billing_preference
    }

    /// The settings as a request gives them: `MemberSettings::new(s.to_input())` is `s` again.
    pub fn to_input(&self) -> MemberSettingsInput {
        MemberSettingsInput {
            role: self.role,
            permissions: self.listed_permissions.iter().collect(),
            skills: self.skills.clone(),
            track_statistics: self.track_statistics,
            call_recording: self.call_recording,
            outbound_calling: self.outbound_calling,
            billing_preference: self.billing_preference,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skill(id: &str, channel: Channel) -> Skill {
        Skill {
            id: id.to_owned(),
            channel,
        }
    }

    fn error(input: MemberSettingsInput) -> String {
        MemberSettings::new(input)
            .expect_err("accepted")
            .to_string()
    }

    #[test]
    fn listed_permissions_replace_the_role_preset() {
        let input = MemberSettingsInput {
            role: Some(Role::Administrator),
            permissions: vec![Permission::Dashboard],
            ..Default::default()
        };
        let settings = MemberSettings::new(input).expect("valid");
        assert_eq!(
            settings.permissions(),
            [Permission::Dashboard].into_iter().collect()
        );
    }

    #[test]
    fn presets_apply_when_no_permission_is_listed() {
        for (role, expected) in [
            (None, ""),
            (Some(Role::User), "COMMUNICATION"),
            (
                Some(Role::TeamLeader),
                "COMMUNICATION, DASHBOARD, STATISTICS",
            ),
            (
                Some(Role::Administrator),
                "COMMUNICATION, DASHBOARD, STATISTICS, SETTINGS, TEAM, WORKSPACE",
            ),
        ] {
            let settings = MemberSettings::new(MemberSettingsInput {
                role,
                ..Default::default()
            })
            .expect("valid");
            assert_eq!(settings.permissions().to_string(), expected, "{role:?}");
        }
    }

    #[test]
    fn skill_ids_must_be_present_and_distinct() {
        let input = |skills| MemberSettingsInput {
            skills,
            ..Default::default()
        };
        assert_eq!(
            error(input(vec![
                skill("a", Channel::Voice),
                skill("", Channel::Chat)
            ])),
            "invalid settings.skills[1].id \"\": must not be empty"
        );
        assert_eq!(
            error(input(vec![
                skill("a", Channel::Voice),
                skill("b", Channel::Chat),
                skill("a", Channel::Email)
            ])),
            "invalid settings.skills[2].id \"a\": duplicates settings.skills[0].id"
        );
        assert_eq!(
            error(input(vec![skill(&"x".repeat(129), Channel::Voice)])),
            "invalid settings.skills[0].id (129 bytes): must be at most 128 bytes"
        );
        let many = (0..=MAX_SKILLS)
            .map(|i| skill(&i.to_string(), Channel::Chat))
            .collect();
        assert_eq!(
            error(input(many)),
            "invalid settings.skills (257 skills): at most 256 skills per member"
        );
    }

    #[test]
    fn outbound_needs_a_voice_skill() {
        let input = |skills| MemberSettingsInput {
            skills,
            outbound_calling: true,
            ..Default::default()
        };
        assert_eq!(
            error(input(vec![skill("mail", Channel::Email)])),
            "invalid settings.outbound_calling true: requires a skill on the VOICE channel"
        );
        assert!(
            MemberSettings::new(input(vec![
                skill("mail", Channel::Email),
                skill("call", Channel::Voice)
            ]))
            .is_ok()
        );
    }
}
