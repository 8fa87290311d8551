//! Resolution (SPEC 3): which triggers fire for a member's settings, the tier they demand, the
//! add-ons, the effective billing mode and the price — every part explained.
//!
//! [`resolve`] allocates nothing and cannot fail: the live preview calls it on every toggle.

use std::fmt;

use crate::{
    member::{BillingMode, MemberSettings, Permission, PermissionSet},
    price::{MemberPrice, Period, PriceItem, PriceList},
    retention::RecordingRetention,
    tier::Tier,
};

/// A setting that demands a minimum tier: one row of SPEC 3's trigger table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Trigger {
    /// The COMMUNICATION permission: STANDARD.
    CommunicationPermission,
    /// Exactly one skill: STANDARD.
    OneSkill,
    /// Two or more distinct skills: PROFESSIONAL.
    SeveralSkills,
    /// Statistics tracking on: PROFESSIONAL.
    StatisticsTracking,
    /// STATISTICS, SETTINGS or TEAM permission: PROFESSIONAL.
    ReportingPermission,
    /// WORKSPACE permission: ENTERPRISE.
    WorkspacePermission,
    /// WORKFLOW or API permission: DEVELOPER.
    DeveloperPermission,
    /// Call recording on: STANDARD (recording needs a member who takes calls).
    CallRecording,
    /// Outbound calling on: STANDARD.
    OutboundCalling,
}

impl Trigger {
    /// Every trigger, in the order of the SPEC's table (and of the reasons in an answer).
    pub const ALL: [Trigger; 9] = [
        Trigger::CommunicationPermission,
        Trigger::OneSkill,
        Trigger::SeveralSkills,
        Trigger::StatisticsTracking,
        Trigger::ReportingPermission,
        Trigger::WorkspacePermission,
        Trigger::DeveloperPermission,
        Trigger::CallRecording,
        Trigger::OutboundCalling,
    ];

    /// The tier this trigger demands.
    pub fn minimum_tier(self) -> Tier {
        match self {
            Trigger::CommunicationPermission
            | Trigger::OneSkill
            | Trigger::CallRecording
            | Trigger::OutboundCalling => Tier::Standard,
            Trigger::SeveralSkills | Trigger::StatisticsTracking | Trigger::ReportingPermission => {
                Tier::Professional
            }
            Trigger::WorkspacePermission => Tier::Enterprise,
            Trigger::DeveloperPermission => Tier::Developer,
        }
    }

    /// The trigger's name as the contract spells it.
    pub fn name(self) -> &'static str {
        match self {
            Trigger::CommunicationPermission => "COMMUNICATION_PERMISSION",
            Trigger::OneSkill => "ONE_SKILL",
            Trigger::SeveralSkills => "SEVERAL_SKILLS",
            Trigger::StatisticsTracking => "STATISTICS_TRACKING",
            Trigger::ReportingPermission => "REPORTING_PERMISSION",
            Trigger::WorkspacePermission => "WORKSPACE_PERMISSION",
            Trigger::DeveloperPermission => "DEVELOPER_PERMISSION",
            Trigger::CallRecording => "CALL_RECORDING",
            Trigger::OutboundCalling => "OUTBOUND_CALLING",
        }
    }

    /// The permissions that fire this trigger, for the permission triggers.
    fn permissions(self) -> PermissionSet {
        use Permission::*;
        match self {
            Trigger::CommunicationPermission => [Communication].into_iter().collect(),
            Trigger::ReportingPermission => [Statistics, Settings, Team].into_iter().collect(),
            Trigger::WorkspacePermission => [Workspace].into_iter().collect(),
            Trigger::DeveloperPermission => [Workflow, Api].into_iter().collect(),
            Trigger::OneSkill
            | Trigger::SeveralSkills
            | Trigger::StatisticsTracking
            | Trigger::CallRecording
            | Trigger::OutboundCalling => PermissionSet::EMPTY,
        }
    }
}

/// A trigger that fired, with what made it fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason {
    /// The trigger.
    pub trigger: Trigger,
    /// The tier it demands.
    pub minimum_tier: Tier,
    /// For the skill triggers, the number of skills; otherwise zero.
    pub skills: u32,
    /// For the permission triggers, the member's permissions that fired it; otherwise empty.
    pub permissions: PermissionSet,
}

impl fmt::Display for Reason {
    /// The phrase the UI shows after "because": `3 skills`, `permissions STATISTICS, TEAM`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.trigger {
            Trigger::OneSkill | Trigger::SeveralSkills => {
                write!(
                    f,
                    "{} skill{}",
                    self.skills,
                    if self.skills == 1 { "" } else { "s" }
                )
            }
            Trigger::CommunicationPermission
            | Trigger::ReportingPermission
            | Trigger::WorkspacePermission
            | Trigger::DeveloperPermission => {
                let plural = if self.permissions.len() == 1 { "" } else { "s" };
                write!(f, "permission{plural} {}", self.permissions)
            }
            Trigger::StatisticsTracking => f.write_str("statistics tracking"),
            Trigger::CallRecording => f.write_str("call recording"),
            Trigger::OutboundCalling => f.write_str("outbound calling"),
        }
    }
}

/// An add-on of a member's licence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddOn {
    /// Call recording, in units of 3 months of retention.
    CallRecording,
    /// The outbound add-on seat.
    Outbound,
}

/// An add-on the member needs: `units` in all, of which `included_units` come with the tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddOnLine {
    /// The add-on.
    pub add_on: AddOn,
    /// Units needed.
    pub units: u32,
    /// Units included in the tier.
    pub included_units: u32,
    /// Units billed: `units - included_units`.
    pub billed_units: u32,
}

/// Why the effective billing mode is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BillingReason {
    /// Monthly billing was preferred.
    MonthlyPreferred,
    /// Daily billing was preferred and the tier allows it.
    DailyAvailable,
    /// Daily billing was preferred but the tier does not allow it: billed monthly.
    DailyNotAvailable,
}

/// The billing decision: the preference as given, the mode in effect, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Billing {
    /// The member's preference.
    pub preference: BillingMode,
    /// The mode billed.
    pub effective: BillingMode,
    /// Why.
    pub reason: BillingReason,
    /// The tier the decision was made for.
    pub tier: Tier,
}

impl Billing {
    fn decide(preference: BillingMode, tier: Tier) -> Billing {
        let (effective, reason) = match preference {
            BillingMode::Monthly => (BillingMode::Monthly, BillingReason::MonthlyPreferred),
            BillingMode::Daily if tier.allows_daily_billing() => {
                (BillingMode::Daily, BillingReason::DailyAvailable)
            }
            BillingMode::Daily => (BillingMode::Monthly, BillingReason::DailyNotAvailable),
        };
        Billing {
            preference,
            effective,
            reason,
            tier,
        }
    }
}

impl fmt::Display for Billing {
    /// A sentence for the UI.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            BillingReason::MonthlyPreferred => f.write_str("billed monthly, as preferred"),
            BillingReason::DailyAvailable => {
                write!(
                    f,
                    "billed per login day, as preferred: {} allows daily billing",
                    self.tier
                )
            }
            BillingReason::DailyNotAvailable => write!(
                f,
                "billed monthly: daily billing is available only for PROFESSIONAL and ENTERPRISE, not {}",
                self.tier
            ),
        }
    }
}

/// A member's resolved licence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution {
    /// The lowest tier satisfying every trigger.
    pub tier: Tier,
    /// The billing decision.
    pub billing: Billing,
    /// The price under the price list.
    pub price: MemberPrice,
    reasons: [Reason; 9],
    reasons_len: u8,
    add_ons: [AddOnLine; 2],
    add_ons_len: u8,
}

impl Resolution {
    /// Every trigger that fired, in [`Trigger::ALL`] order; empty exactly for DASHBOARD.
    pub fn reasons(&self) -> &[Reason] {
        &self.reasons[..usize::from(self.reasons_len)]
    }

    /// The add-ons: call recording first, then outbound.
    pub fn add_ons(&self) -> &[AddOnLine] {
        &self.add_ons[..usize::from(self.add_ons_len)]
    }
}

const NO_REASON: Reason = Reason {
    trigger: Trigger::CommunicationPermission,
    minimum_tier: Tier::Dashboard,
    skills: 0,
    permissions: PermissionSet::EMPTY,
};

const NO_ADD_ON: AddOnLine = AddOnLine {
    add_on: AddOn::Outbound,
    units: 0,
    included_units: 0,
    billed_units: 0,
};

/// Resolves `settings` into a tier, reasons, add-ons, billing mode and price. `retention` is the
/// account's call-recording retention, which sets the recording units.
pub fn resolve(
    settings: &MemberSettings,
    retention: RecordingRetention,
    prices: &PriceList,
) -> Resolution {
    let permissions = settings.permissions();
    // At most MAX_SKILLS (256), so the conversion never saturates in practice.
    let skills = u32::try_from(settings.skills().len()).unwrap_or(u32::MAX);

    let mut reasons = [NO_REASON; 9];
    let mut reasons_len = 0;
    let mut tier = Tier::Dashboard;
    for trigger in Trigger::ALL {
        let fired = match trigger {
            Trigger::OneSkill => skills == 1,
            Trigger::SeveralSkills => skills >= 2,
            Trigger::StatisticsTracking => settings.track_statistics(),
            Trigger::CallRecording => settings.call_recording(),
            Trigger::OutboundCalling => settings.outbound_calling(),
            Trigger::CommunicationPermission
            | Trigger::ReportingPermission
            | Trigger::WorkspacePermission
            | Trigger::DeveloperPermission => {
                !permissions.intersection(trigger.permissions()).is_empty()
            }
        };
        if !fired {
            continue;
        }
        let is_skill_trigger = matches!(trigger, Trigger::OneSkill | Trigger::SeveralSkills);
        reasons[reasons_len] = Reason {
            trigger,
            minimum_tier: trigger.minimum_tier(),
            skills: if is_skill_trigger { skills } else { 0 },
            permissions: permissions.intersection(trigger.permissions()),
        };
        reasons_len = reasons_len.saturating_add(1);
        tier = tier.max(trigger.minimum_tier());
    }

    let mut add_ons = [NO_ADD_ON; 2];
    let mut add_ons_len = 0;
    if settings.call_recording() {
        let units = retention.units();
        let included_units = if tier.includes_recording() {
            units.min(1)
        } else {
            0
        };
        add_ons[add_ons_len] = AddOnLine {
            add_on: AddOn::CallRecording,
            units,
            included_units,
            billed_units: units.saturating_sub(included_units),
        };
        add_ons_len = add_ons_len.saturating_add(1);
    }
    if settings.outbound_calling() {
        add_ons[add_ons_len] = AddOnLine {
            add_on: AddOn::Outbound,
            units: 1,
            included_units: 0,
            billed_units: 1,
        };
        add_ons_len = add_ons_len.saturating_add(1);
    }

    let billing = Billing::decide(settings.billing_preference(), tier);
    let mut price = MemberPrice::new(prices.currency());
    match (billing.effective, prices.seat_daily(tier)) {
        (BillingMode::Daily, Some(daily)) => {
            price.push(PriceItem::Seat(tier), Period::LoginDay, 1, daily)
        }
        _ => price.push(
            PriceItem::Seat(tier),
            Period::Month,
            1,
            prices.seat_monthly(tier),
        ),
    }
    for line in &add_ons[..add_ons_len] {
        if line.billed_units == 0 {
            continue;
        }
        let (item, unit_price) = match line.add_on {
            AddOn::CallRecording => (PriceItem::CallRecording, prices.recording_unit_monthly()),
            AddOn::Outbound => (PriceItem::Outbound, prices.outbound_seat_monthly()),
        };
        price.push(item, Period::Month, line.billed_units, unit_price);
    }

    Resolution {
        tier,
        billing,
        price,
        reasons,
        // Both counts are bounded by the array lengths (9 and 2).
        reasons_len: reasons_len as u8,
        add_ons,
        add_ons_len: add_ons_len as u8,
    }
}

#[cfg(test)]
pub(crate) mod tests;
