//! Domain → wire.

use licensing_core::{
    Account, AccountSettings, AddOn, AddOnLine, AuditEntry, BillingMode, BillingReason, CartLine,
    Change, Channel, Currency, Inventory, LoginDay, MemberSettings, Meter, Outcome, Permission,
    PermissionSet, PriceItem, PriceLine, PriceList, Product, Reason, RecordingRetention, Refusal,
    Resolution, Role, StoredMember, Tier, Timestamp, Trigger, resolve,
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

pub fn trigger(trigger: Trigger) -> api::Trigger {
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

pub fn permissions(set: PermissionSet) -> Vec<i32> {
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

pub fn billing_mode(mode: BillingMode) -> api::BillingMode {
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

/// An instant.
pub fn timestamp(at: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.as_second(),
        nanos: at.subsec_nanosecond(),
    }
}

/// A recording retention.
pub fn retention(retention: RecordingRetention) -> api::RecordingRetention {
    use api::recording_retention::Period as P;
    api::RecordingRetention {
        period: Some(match retention.as_months() {
            None => P::FourteenDays(true),
            Some(months) => P::Months(months),
        }),
    }
}

/// An account's settings.
pub fn account_settings(s: &AccountSettings) -> api::AccountSettings {
    api::AccountSettings {
        time_zone: s.zone.name().to_owned(),
        auto_growth: s.auto_growth,
        recording_retention: Some(retention(s.recording_retention)),
        grace_period_days: s.grace_period_days,
        speech_to_text: s.speech_to_text,
        speech_to_text_extra_minutes_cap: s.speech_to_text_extra_minutes_cap,
        power_pack: s.power_pack,
        smart_routing_packs_cap: s.smart_routing_packs_cap,
        ai_topics_packs_cap: s.ai_topics_packs_cap,
        ai_qa_packs_cap: s.ai_qa_packs_cap,
        ai_topics_on_calls: s.ai_topics_on_calls,
        recording_retention_required: s.recording_retention_required.map(retention),
    }
}

/// An account, with its current time.
pub fn account(account: &Account, real_now: Timestamp) -> api::Account {
    api::Account {
        account_id: account.id.clone(),
        settings: Some(account_settings(&account.settings)),
        sandbox: account.sandbox,
        now: Some(timestamp(account.now(real_now))),
        created_at: Some(timestamp(account.created_at)),
    }
}

/// Member settings as the caller gave them (listed permissions, not the effective set).
pub fn member_settings(settings: &MemberSettings) -> api::MemberSettings {
    api::MemberSettings {
        role: (match settings.role() {
            None => api::Role::Unspecified,
            Some(Role::User) => api::Role::User,
            Some(Role::TeamLeader) => api::Role::TeamLeader,
            Some(Role::Administrator) => api::Role::Administrator,
        }) as i32,
        permissions: permissions(settings.listed_permissions()),
        skills: settings
            .skills()
            .iter()
            .map(|skill| api::Skill {
                id: skill.id.clone(),
                channel: (match skill.channel {
                    Channel::Voice => api::Channel::Voice,
                    Channel::Email => api::Channel::Email,
                    Channel::Chat => api::Channel::Chat,
                    Channel::Sms => api::Channel::Sms,
                }) as i32,
            })
            .collect(),
        track_statistics: settings.track_statistics(),
        call_recording: settings.call_recording(),
        outbound_calling: settings.outbound_calling(),
        billing_preference: billing_mode(settings.billing_preference()) as i32,
    }
}

/// A stored member, with the licence their settings resolve to under the account's retention.
pub fn member(account: &Account, member: &StoredMember, prices: &PriceList) -> api::Member {
    let resolution = resolve(
        &member.settings,
        account.settings.recording_retention,
        prices,
    );
    api::Member {
        account_id: account.id.clone(),
        member_id: member.member_id.clone(),
        settings: Some(member_settings(&member.settings)),
        licence: Some(licence(&resolution, prices)),
        updated_at: Some(timestamp(member.updated_at)),
    }
}

/// A seat product.
pub fn product(product: Product) -> api::Product {
    match product {
        Product::DashboardSeat => api::Product::DashboardSeat,
        Product::StandardSeat => api::Product::StandardSeat,
        Product::ProfessionalSeat => api::Product::ProfessionalSeat,
        Product::EnterpriseSeat => api::Product::EnterpriseSeat,
        Product::DeveloperSeat => api::Product::DeveloperSeat,
        Product::OutboundSeat => api::Product::OutboundSeat,
    }
}

/// Each product's seats, use and peak.
pub fn seat_counts(inventory: &Inventory) -> Vec<api::SeatCount> {
    Product::ALL
        .into_iter()
        .map(|p| api::SeatCount {
            product: product(p) as i32,
            seats: inventory.seats.get(p),
            in_use: inventory.in_use.get(p),
            peak_this_month: inventory.peak.get(p),
        })
        .collect()
}

/// An inventory, as of the month it is in.
pub fn inventory(inventory: &Inventory) -> api::Inventory {
    api::Inventory {
        seats: seat_counts(inventory),
        revision: inventory.revision,
        month: inventory.month.to_string(),
    }
}

/// A cart line.
pub fn cart_line(line: &CartLine, currency: Currency) -> api::CartLine {
    api::CartLine {
        product: product(line.product) as i32,
        from: line.from,
        to: line.to,
        this_month: Some(money(line.this_month, currency)),
        next_month: Some(money(line.next_month, currency)),
    }
}

/// One member's row of the usage overview, with their login days of the month shown.
/// A member's usage row; its tier's reasons only `with_reasons` (the full view).
pub fn member_usage(
    member: &StoredMember,
    resolution: &Resolution,
    days: Vec<api::LoginDay>,
    with_reasons: bool,
) -> api::MemberUsage {
    api::MemberUsage {
        billable_days: days.iter().filter(|d| d.billable).count() as u32,
        login_days: days,
        member_id: member.member_id.clone(),
        tier: tier(resolution.tier) as i32,
        add_ons: resolution.add_ons().iter().map(add_on_line).collect(),
        billing_mode: billing_mode(resolution.billing.effective) as i32,
        reasons: if with_reasons {
            resolution.reasons().iter().map(reason).collect()
        } else {
            Vec::new()
        },
    }
}

/// An audit entry. Members in it are shown with the licence of their settings under the
/// account's current retention and price list.
pub fn audit_entry(account: &Account, entry: &AuditEntry, prices: &PriceList) -> api::AuditEntry {
    use api::audit_entry::Change as C;
    let change = match &entry.change {
        Change::AccountSettings { before, after } => {
            C::AccountSettings(api::AccountSettingsChange {
                before: before.as_ref().map(account_settings),
                after: Some(account_settings(after)),
            })
        }
        Change::Member { before, after } => C::Member(api::MemberChange {
            before: before.as_ref().map(|m| member(account, m, prices)),
            after: after.as_ref().map(|m| member(account, m, prices)),
        }),
        Change::Inventory {
            lines,
            auto_growth_for,
        } => C::Inventory(api::InventoryChange {
            lines: lines
                .iter()
                .map(|l| cart_line(l, prices.currency()))
                .collect(),
            auto_growth: auto_growth_for.is_some(),
            member_id: auto_growth_for.clone().unwrap_or_default(),
        }),
        Change::Clock { from, to } => C::Clock(api::ClockChange {
            from: Some(timestamp(*from)),
            to: Some(timestamp(*to)),
        }),
    };
    api::AuditEntry {
        sequence: entry.sequence,
        time: Some(timestamp(entry.time)),
        actor: Some(api::Actor {
            principal: entry.actor.clone(),
        }),
        change: Some(change),
    }
}

/// What became of an event.
pub fn event_outcome(event_id: String, outcome: &Outcome) -> api::EventOutcome {
    let (outcome, refusal, detail) = match outcome {
        Outcome::Applied => (
            api::Outcome::Applied,
            api::RefusalReason::Unspecified,
            String::new(),
        ),
        Outcome::Duplicate => (
            api::Outcome::Duplicate,
            api::RefusalReason::Unspecified,
            String::new(),
        ),
        Outcome::Refused(refusal) => (
            api::Outcome::Refused,
            match refusal {
                Refusal::Invalid { .. } => api::RefusalReason::Invalid,
                Refusal::UnknownAccount(_) => api::RefusalReason::UnknownAccount,
                Refusal::MonthClosed { .. } => api::RefusalReason::MonthClosed,
                Refusal::TooFarInFuture { .. } => api::RefusalReason::TooFarInFuture,
                Refusal::ConflictingDuplicate { .. } => api::RefusalReason::ConflictingDuplicate,
                Refusal::MeterLimit { .. } => api::RefusalReason::MeterLimit,
                Refusal::PermissionDenied { .. } => api::RefusalReason::PermissionDenied,
            },
            refusal.to_string(),
        ),
    };
    api::EventOutcome {
        event_id,
        outcome: outcome as i32,
        refusal: refusal as i32,
        detail,
    }
}

/// A meter.
pub fn meter(meter: Meter) -> api::Meter {
    match meter {
        Meter::SpeechToTextMinutes => api::Meter::SpeechToTextMinutes,
        Meter::SmartRoutingPacks => api::Meter::SmartRoutingPacks,
        Meter::AiTopicsPacks => api::Meter::AiTopicsPacks,
        Meter::AiQaPacks => api::Meter::AiQaPacks,
    }
}

/// A member's login day.
pub fn login_day(date: String, day: LoginDay) -> api::LoginDay {
    api::LoginDay {
        date,
        tier: tier(day.tier) as i32,
        billable: day.billable,
        logins: day.logins,
        event_ids: day.event_ids,
        queues: day.queues,
        queues_incomplete: day.queues_truncated,
    }
}

/// A month's statement.
pub fn statement(
    account: &Account,
    statement: &licensing_core::Statement,
    is_final: bool,
) -> api::Statement {
    use licensing_core::{LineKind, LineSubject};
    let kind = |kind: LineKind| match kind {
        LineKind::Seats => api::StatementLineKind::Seats,
        LineKind::Daily => api::StatementLineKind::Daily,
        LineKind::CallRecording => api::StatementLineKind::CallRecording,
        LineKind::SpeechToText => api::StatementLineKind::SpeechToText,
        LineKind::PowerPack => api::StatementLineKind::PowerPack,
    };
    let currency = statement.currency;
    api::Statement {
        account_id: account.id.clone(),
        month: statement.month.to_string(),
        status: if is_final {
            api::StatementStatus::Final
        } else {
            api::StatementStatus::Provisional
        } as i32,
        sandbox: account.sandbox,
        price_list: Some(api::PriceListRef {
            name: statement.price_list.clone(),
            version: statement.price_list_version,
        }),
        lines: statement
            .lines
            .iter()
            .map(|l| {
                let (product, tier_, meter_) = match l.subject {
                    LineSubject::Product(p) => {
                        (product(p), api::Tier::Unspecified, api::Meter::Unspecified)
                    }
                    LineSubject::Tier(t) => {
                        (api::Product::Unspecified, tier(t), api::Meter::Unspecified)
                    }
                    LineSubject::Meter(m) => {
                        (api::Product::Unspecified, api::Tier::Unspecified, meter(m))
                    }
                    LineSubject::CallRecording => (
                        api::Product::CallRecordingUnit,
                        api::Tier::Unspecified,
                        api::Meter::Unspecified,
                    ),
                };
                api::StatementLine {
                    kind: kind(l.kind) as i32,
                    product: product as i32,
                    tier: tier_ as i32,
                    meter: meter_ as i32,
                    quantity: l.quantity,
                    unit_price: Some(money(l.unit_price, currency)),
                    amount: Some(money(l.amount, currency)),
                    description: l.description.clone(),
                    member_ids: l.member_ids.clone(),
                }
            })
            .collect(),
        subtotals: statement
            .subtotals
            .iter()
            .map(|(k, amount)| api::StatementSubtotal {
                kind: kind(*k) as i32,
                amount: Some(money(*amount, currency)),
            })
            .collect(),
        total: Some(money(statement.total, currency)),
        unbilled: statement
            .unbilled
            .iter()
            .map(|u| api::UnbilledUse {
                meter: meter(u.meter) as i32,
                quantity: u.quantity,
                reason: match u.reason {
                    licensing_core::UnbilledReason::ServiceOff => api::UnbilledReason::ServiceOff,
                    licensing_core::UnbilledReason::OverCap => api::UnbilledReason::OverCap,
                } as i32,
                description: u.description.clone(),
            })
            .collect(),
    }
}
