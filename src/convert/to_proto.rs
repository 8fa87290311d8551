//! Domain → wire.

use licensing_core::{
    AddOn, AddOnLine, BillingMode, BillingReason, Currency, Permission, PermissionSet, PriceItem,
    PriceLine, PriceList, Reason, Resolution, Tier, Trigger,
};

use crate::api;

/// A resolved licence.
pub fn licence(resolution: &Resolution, prices: &PriceList) -> api::Licence {
    let currency = prices.currency();
    api::Licence {
        tier: tier(resolution.tier) as i32,
        reasons: resolution.reasons().iter().map(reason).collect(),
        add_ons: resolution.add_ons().iter().map(add_on_line).collect(),
        billing: Some(api::BillingDecision {
            preference: billing_mode(resolution.billing.preference) as i32,
            effective: billing_mode(resolution.billing.effective) as i32,
            reason: billing_reason(resolution.billing.reason) as i32,
            explanation: resolution.billing.to_string(),
        }),
        price: Some(api::MemberPrice {
            lines: resolution
                .price
                .lines()
                .iter()
                .map(|line| price_line(line, currency))
                .collect(),
            per_month: Some(money(resolution.price.per_month, currency)),
            per_login_day: Some(money(resolution.price.per_login_day, currency)),
            price_list: Some(api::PriceListRef {
                name: prices.name().to_owned(),
                version: prices.version(),
            }),
        }),
    }
}

/// A tier.
pub fn tier(tier: Tier) -> api::Tier {
    match tier {
        Tier::Dashboard => api::Tier::Dashboard,
        Tier::Standard => api::Tier::Standard,
        Tier::Professional => api::Tier::Professional,
        Tier::Enterprise => api::Tier::Enterprise,
        Tier::Developer => api::Tier::Developer,
    }
}

/// An amount of money.
pub fn money(minor_units: i64, currency: Currency) -> api::Money {
    api::Money {
        currency_code: currency.as_str().to_owned(),
        minor_units,
    }
}

fn reason(reason: &Reason) -> api::Reason {
    api::Reason {
        trigger: trigger(reason.trigger) as i32,
        minimum_tier: tier(reason.minimum_tier) as i32,
        skills: reason.skills,
        permissions: permissions(reason.permissions),
        description: reason.to_string(),
    }
}

fn trigger(trigger: Trigger) -> api::Trigger {
    match trigger {
        Trigger::CommunicationPermission => api::Trigger::CommunicationPermission,
        Trigger::OneSkill => api::Trigger::OneSkill,
        Trigger::SeveralSkills => api::Trigger::SeveralSkills,
        Trigger::StatisticsTracking => api::Trigger::StatisticsTracking,
        Trigger::ReportingPermission => api::Trigger::ReportingPermission,
        Trigger::WorkspacePermission => api::Trigger::WorkspacePermission,
        Trigger::DeveloperPermission => api::Trigger::DeveloperPermission,
        Trigger::CallRecording => api::Trigger::CallRecording,
        Trigger::OutboundCalling => api::Trigger::OutboundCalling,
    }
}

fn permissions(set: PermissionSet) -> Vec<i32> {
    set.iter()
        .map(|p| {
            (match p {
                Permission::Communication => api::Permission::Communication,
                Permission::Dashboard => api::Permission::Dashboard,
                Permission::Statistics => api::Permission::Statistics,
                Permission::Settings => api::Permission::Settings,
                Permission::Team => api::Permission::Team,
                Permission::Workspace => api::Permission::Workspace,
                Permission::Workflow => api::Permission::Workflow,
                Permission::Api => api::Permission::Api,
            }) as i32
        })
        .collect()
}

fn add_on_line(line: &AddOnLine) -> api::AddOnLine {
    api::AddOnLine {
        add_on: (match line.add_on {
            AddOn::CallRecording => api::AddOn::CallRecording,
            AddOn::Outbound => api::AddOn::Outbound,
        }) as i32,
        units: line.units,
        included_units: line.included_units,
        billed_units: line.billed_units,
    }
}

fn billing_mode(mode: BillingMode) -> api::BillingMode {
    match mode {
        BillingMode::Monthly => api::BillingMode::Monthly,
        BillingMode::Daily => api::BillingMode::Daily,
    }
}

fn billing_reason(reason: BillingReason) -> api::BillingReason {
    match reason {
        BillingReason::MonthlyPreferred => api::BillingReason::MonthlyPreferred,
        BillingReason::DailyAvailable => api::BillingReason::DailyAvailable,
        BillingReason::DailyNotAvailable => api::BillingReason::DailyNotAvailable,
    }
}

fn price_line(line: &PriceLine, currency: Currency) -> api::PriceLine {
    api::PriceLine {
        product: (match line.item {
            PriceItem::Seat(t) => seat_product(t),
            PriceItem::CallRecording => api::Product::CallRecordingUnit,
            PriceItem::Outbound => api::Product::OutboundSeat,
        }) as i32,
        period: (match line.period {
            licensing_core::Period::Month => api::Period::Month,
            licensing_core::Period::LoginDay => api::Period::LoginDay,
        }) as i32,
        quantity: line.quantity,
        unit_price: Some(money(line.unit_price, currency)),
        amount: Some(money(line.amount, currency)),
    }
}

/// The seat product of a tier.
pub fn seat_product(tier: Tier) -> api::Product {
    match tier {
        Tier::Dashboard => api::Product::DashboardSeat,
        Tier::Standard => api::Product::StandardSeat,
        Tier::Professional => api::Product::ProfessionalSeat,
        Tier::Enterprise => api::Product::EnterpriseSeat,
        Tier::Developer => api::Product::DeveloperSeat,
    }
}
