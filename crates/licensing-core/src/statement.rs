//! The billing statement of an account's month (SPEC 6 and 7): seat lines at the month's peak,
//! daily lines from billable login days, call-recording units, speech-to-text overage and Power
//! Packs — each line traceable to what caused it, in integer minor units.

use crate::{
    account::AccountSettings,
    calendar::BillingMonth,
    events::{Meter, MeterTotals, MeterUse},
    inventory::{Product, Seats},
    price::{Currency, PriceList},
    tier::Tier,
};

/// Speech-to-text minutes included every month.
pub const SPEECH_TO_TEXT_BASE_MINUTES: u64 = 5_000;

/// The kind of a statement line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LineKind {
    /// Peak seats × monthly price.
    Seats,
    /// Billable member-days × daily price.
    Daily,
    /// Call-recording units.
    CallRecording,
    /// Speech-to-text minutes beyond the base pack.
    SpeechToText,
    /// Power Packs used.
    PowerPack,
}

impl LineKind {
    /// Every kind, in statement order.
    pub const ALL: [LineKind; 5] = [
        LineKind::Seats,
        LineKind::Daily,
        LineKind::CallRecording,
        LineKind::SpeechToText,
        LineKind::PowerPack,
    ];
}

/// What a line is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineSubject {
    /// A seat product.
    Product(Product),
    /// Login days at a tier.
    Tier(Tier),
    /// A meter.
    Meter(Meter),
    /// Call-recording units.
    CallRecording,
}

/// One line: `quantity × unit_price = amount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementLine {
    /// The kind.
    pub kind: LineKind,
    /// What it is for.
    pub subject: LineSubject,
    /// Units billed.
    pub quantity: u64,
    /// Price of one unit, minor units.
    pub unit_price: i64,
    /// `quantity × unit_price`, minor units.
    pub amount: i64,
    /// What caused it, in words.
    pub description: String,
    /// The members whose days or units make up the line.
    pub member_ids: Vec<String>,
}

/// A member's billable login days at one tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDays {
    /// The member.
    pub member_id: String,
    /// The tier held on those days.
    pub tier: Tier,
    /// How many billable days.
    pub days: u64,
}

/// A recorded member's billed recording units for the month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedMember {
    /// The member.
    pub member_id: String,
    /// Units billed (after the unit an ENTERPRISE or DEVELOPER seat includes).
    pub billed_units: u64,
}

/// Why metered use is not billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UnbilledReason {
    /// Used while the account had the service switched off.
    ServiceOff,
    /// Used beyond the month's limit (the base pack plus the cap).
    OverCap,
}

/// Metered use that was recorded but is not billed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnbilledUse {
    /// The meter.
    pub meter: Meter,
    /// Minutes or packs not billed.
    pub quantity: u64,
    /// Why.
    pub reason: UnbilledReason,
    /// The reason in words.
    pub description: String,
}

/// How a meter's month of use is billed: every unit used is either included, billed or unbilled
/// (with its reason): `used + while_off = included + billed + over_cap + while_off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterBilling {
    /// Used while the service was on.
    pub used: u64,
    /// Of those, included in the base pack (speech-to-text's 5,000 minutes).
    pub included: u64,
    /// Of those, billed.
    pub billed: u64,
    /// Of those, beyond the month's limit: not billed.
    pub over_cap: u64,
    /// Used while the service was off: not billed.
    pub while_off: u64,
    /// The cap in force, `None` for none.
    pub cap: Option<u64>,
}

/// How `usage` of `meter` is billed under `caps`.
pub fn meter_billing(meter: Meter, usage: MeterUse, caps: &MeterCaps) -> MeterBilling {
    let (base, cap) = match meter {
        Meter::SpeechToTextMinutes => (
            SPEECH_TO_TEXT_BASE_MINUTES,
            caps.speech_to_text_extra_minutes,
        ),
        Meter::SmartRoutingPacks => (0, caps.smart_routing_packs),
        Meter::AiTopicsPacks => (0, caps.ai_topics_packs),
        Meter::AiQaPacks => (0, caps.ai_qa_packs),
    };
    let included = usage.used.min(base);
    let beyond = usage.used.saturating_sub(included);
    let billed = cap.map_or(beyond, |cap| beyond.min(cap));
    MeterBilling {
        used: usage.used,
        included,
        billed,
        over_cap: beyond.saturating_sub(billed),
        while_off: usage.while_off,
        cap,
    }
}

/// Caps of the metered services for the month; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MeterCaps {
    /// Speech-to-text minutes beyond the base pack.
    pub speech_to_text_extra_minutes: Option<u64>,
    /// Smart-routing packs.
    pub smart_routing_packs: Option<u64>,
    /// AI-topics packs.
    pub ai_topics_packs: Option<u64>,
    /// AI-QA packs.
    pub ai_qa_packs: Option<u64>,
}

impl MeterCaps {
    /// The caps an account's settings set.
    pub fn of(settings: &AccountSettings) -> MeterCaps {
        MeterCaps {
            speech_to_text_extra_minutes: settings.speech_to_text_extra_minutes_cap.map(u64::from),
            smart_routing_packs: settings.smart_routing_packs_cap.map(u64::from),
            ai_topics_packs: settings.ai_topics_packs_cap.map(u64::from),
            ai_qa_packs: settings.ai_qa_packs_cap.map(u64::from),
        }
    }
}

/// Everything a month's statement is computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementInput {
    /// The month.
    pub month: BillingMonth,
    /// The month's peak seats per product.
    pub peaks: Seats,
    /// How each peak came about, per product (e.g. "set on 2026-05-10"), for the descriptions.
    pub peak_notes: [String; 6],
    /// Billable login days per member and tier.
    pub daily: Vec<MemberDays>,
    /// Recorded members and their billed units.
    pub recording: Vec<RecordedMember>,
    /// The account's highest recording retention in the month, in months (0 = 14 days).
    pub retention_months: u32,
    /// Metered use.
    pub meters: MeterTotals,
    /// Caps in force.
    pub caps: MeterCaps,
}

/// A computed statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The month.
    pub month: BillingMonth,
    /// The lines, in kind order.
    pub lines: Vec<StatementLine>,
    /// Subtotal per kind (every kind, zero included).
    pub subtotals: Vec<(LineKind, i64)>,
    /// Sum of the lines.
    pub total: i64,
    /// Metered use recorded but not billed, with the reason, in meter order.
    pub unbilled: Vec<UnbilledUse>,
    /// The currency.
    pub currency: Currency,
    /// The price list's name.
    pub price_list: String,
    /// The price list's version.
    pub price_list_version: u32,
}

/// A statement whose amounts do not fit the integer minor units money is kept in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the statement's amounts exceed {max} minor units ({what})", max = i64::MAX)]
pub struct AmountOverflow {
    /// Which amount.
    pub what: String,
}

fn line(
    kind: LineKind,
    subject: LineSubject,
    quantity: u64,
    unit_price: i64,
    description: String,
    member_ids: Vec<String>,
) -> Result<StatementLine, AmountOverflow> {
    // Inputs are bounded far below this, but money is never allowed to wrap or saturate.
    let amount = i64::try_from(quantity)
        .ok()
        .and_then(|quantity| quantity.checked_mul(unit_price))
        .ok_or_else(|| AmountOverflow {
            what: format!("{quantity} × {unit_price} for {description}"),
        })?;
    Ok(StatementLine {
        kind,
        subject,
        quantity,
        unit_price,
        amount,
        description,
        member_ids,
    })
}

fn checked_sum(amounts: impl IntoIterator<Item = u64>, what: &str) -> Result<u64, AmountOverflow> {
    amounts
        .into_iter()
        .try_fold(0u64, u64::checked_add)
        .ok_or_else(|| AmountOverflow {
            what: what.to_owned(),
        })
}

/// Computes the statement of `input` under `prices`. Lines with nothing to bill are left out;
/// every sum is checked, so amounts that would not fit are an error, never a wrapped total.
pub fn statement(input: &StatementInput, prices: &PriceList) -> Result<Statement, AmountOverflow> {
    let mut lines = Vec::new();
    for product in Product::ALL {
        let peak = u64::from(input.peaks.get(product));
        if peak == 0 {
            continue;
        }
        let note = &input.peak_notes[product.index()];
        let description = if note.is_empty() {
            format!("peak of {peak} {product} in {}", input.month)
        } else {
            format!("peak of {peak} {product} in {}: {note}", input.month)
        };
        lines.push(line(
            LineKind::Seats,
            LineSubject::Product(product),
            peak,
            product.monthly_price(prices),
            description,
            Vec::new(),
        )?);
    }
    for tier in Tier::ALL {
        let Some(price) = prices.seat_daily(tier) else {
            continue;
        };
        let mut members: Vec<&MemberDays> = input
            .daily
            .iter()
            .filter(|d| d.tier == tier && d.days > 0)
            .collect();
        if members.is_empty() {
            continue;
        }
        members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
        let days = checked_sum(members.iter().map(|d| d.days), "billable days")?;
        let detail: Vec<String> = members
            .iter()
            .map(|d| format!("{} {}", d.member_id, d.days))
            .collect();
        let description = format!(
            "{days} billable login days at {tier} in {}: {}",
            input.month,
            detail.join(", ")
        );
        let ids = members.iter().map(|d| d.member_id.clone()).collect();
        lines.push(line(
            LineKind::Daily,
            LineSubject::Tier(tier),
            days,
            price,
            description,
            ids,
        )?);
    }
    let mut recorded: Vec<&RecordedMember> = input
        .recording
        .iter()
        .filter(|r| r.billed_units > 0)
        .collect();
    if !recorded.is_empty() {
        recorded.sort_by(|a, b| a.member_id.cmp(&b.member_id));
        let units = checked_sum(recorded.iter().map(|r| r.billed_units), "recording units")?;
        let members = match recorded.len() {
            1 => "1 recorded member".to_owned(),
            n => format!("{n} recorded members"),
        };
        let description = format!(
            "{units} recording units: {members} at {} months of retention (one unit per 3 months, one included from ENTERPRISE)",
            input.retention_months
        );
        let ids = recorded.iter().map(|r| r.member_id.clone()).collect();
        lines.push(line(
            LineKind::CallRecording,
            LineSubject::CallRecording,
            units,
            prices.recording_unit_monthly(),
            description,
            ids,
        )?);
    }
    let mut unbilled = Vec::new();
    for meter in Meter::ALL {
        let usage = input.meters.get(&meter).copied().unwrap_or_default();
        let billing = meter_billing(meter, usage, &input.caps);
        let cap = billing
            .cap
            .map_or("no cap".to_owned(), |c| format!("cap {c}"));
        if billing.billed > 0 {
            let (kind, unit_price, description) = match meter {
                Meter::SpeechToTextMinutes => (
                    LineKind::SpeechToText,
                    prices.speech_to_text_minute(),
                    format!(
                        "{} speech-to-text minutes used, {SPEECH_TO_TEXT_BASE_MINUTES} included, {} billed ({cap})",
                        billing.used, billing.billed
                    ),
                ),
                _ => (
                    LineKind::PowerPack,
                    prices.power_pack(),
                    format!("{} {meter} Power Packs used ({cap})", billing.billed),
                ),
            };
            lines.push(line(
                kind,
                LineSubject::Meter(meter),
                billing.billed,
                unit_price,
                description,
                Vec::new(),
            )?);
        }
        if billing.over_cap > 0 {
            unbilled.push(UnbilledUse {
                meter,
                quantity: billing.over_cap,
                reason: UnbilledReason::OverCap,
                description: format!(
                    "{} {meter} used beyond the month's limit ({cap}): recorded, not billed",
                    billing.over_cap
                ),
            });
        }
        if billing.while_off > 0 {
            unbilled.push(UnbilledUse {
                meter,
                quantity: billing.while_off,
                reason: UnbilledReason::ServiceOff,
                description: format!(
                    "{} {meter} used while the service was switched off for the account: recorded, not billed",
                    billing.while_off
                ),
            });
        }
    }
    let mut statement = Statement::from_lines(
        input.month,
        lines,
        prices.currency(),
        prices.name().to_owned(),
        prices.version(),
    )?;
    statement.unbilled = unbilled;
    Ok(statement)
}

impl Statement {
    /// A statement of these lines, with its subtotals and total (and no unbilled use), or the
    /// overflow when a sum does not fit.
    pub fn from_lines(
        month: BillingMonth,
        lines: Vec<StatementLine>,
        currency: Currency,
        price_list: String,
        price_list_version: u32,
    ) -> Result<Statement, AmountOverflow> {
        let sum = |kind: Option<LineKind>| {
            lines
                .iter()
                .filter(|l| kind.is_none_or(|kind| l.kind == kind))
                .try_fold(0i64, |sum, l| sum.checked_add(l.amount))
                .ok_or_else(|| AmountOverflow {
                    what: kind.map_or("the total".to_owned(), |kind| format!("{kind:?} lines")),
                })
        };
        let subtotals = LineKind::ALL
            .into_iter()
            .map(|kind| Ok((kind, sum(Some(kind))?)))
            .collect::<Result<_, AmountOverflow>>()?;
        Ok(Statement {
            month,
            total: sum(None)?,
            lines,
            subtotals,
            currency,
            price_list,
            price_list_version,
            unbilled: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests;
