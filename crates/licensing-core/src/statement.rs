//! The billing statement of an account's month (SPEC 6 and 7): seat lines at the month's peak,
//! daily lines from billable login days, call-recording units, speech-to-text overage and Power
//! Packs — each line traceable to what caused it, in integer minor units.

use crate::{
    calendar::BillingMonth,
    events::{Meter, MeterTotals},
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
    /// The currency.
    pub currency: Currency,
    /// The price list's name.
    pub price_list: String,
    /// The price list's version.
    pub price_list_version: u32,
}

fn line(
    kind: LineKind,
    subject: LineSubject,
    quantity: u64,
    unit_price: i64,
    description: String,
    member_ids: Vec<String>,
) -> StatementLine {
    // Quantities are counts of seats, days, units, minutes or packs: far below i64::MAX / price.
    let amount = i64::try_from(quantity)
        .unwrap_or(i64::MAX)
        .saturating_mul(unit_price);
    StatementLine {
        kind,
        subject,
        quantity,
        unit_price,
        amount,
        description,
        member_ids,
    }
}

/// Computes the statement of `input` under `prices`. Lines with nothing to bill are left out.
pub fn statement(input: &StatementInput, prices: &PriceList) -> Statement {
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
        ));
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
        let days: u64 = members.iter().map(|d| d.days).sum();
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
        ));
    }
    let mut recorded: Vec<&RecordedMember> = input
        .recording
        .iter()
        .filter(|r| r.billed_units > 0)
        .collect();
    if !recorded.is_empty() {
        recorded.sort_by(|a, b| a.member_id.cmp(&b.member_id));
        let units: u64 = recorded.iter().map(|r| r.billed_units).sum();
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
        ));
    }
    let minutes = input
        .meters
        .get(&Meter::SpeechToTextMinutes)
        .copied()
        .unwrap_or(0);
    let over = minutes.saturating_sub(SPEECH_TO_TEXT_BASE_MINUTES);
    let billed = input
        .caps
        .speech_to_text_extra_minutes
        .map_or(over, |cap| over.min(cap));
    if billed > 0 {
        let cap = input
            .caps
            .speech_to_text_extra_minutes
            .map_or("no cap".to_owned(), |c| format!("cap {c}"));
        let description = format!(
            "{minutes} speech-to-text minutes used, {SPEECH_TO_TEXT_BASE_MINUTES} included, {billed} billed ({cap})"
        );
        lines.push(line(
            LineKind::SpeechToText,
            LineSubject::Meter(Meter::SpeechToTextMinutes),
            billed,
            prices.speech_to_text_minute(),
            description,
            Vec::new(),
        ));
    }
    for (meter, cap) in [
        (Meter::SmartRoutingPacks, input.caps.smart_routing_packs),
        (Meter::AiTopicsPacks, input.caps.ai_topics_packs),
        (Meter::AiQaPacks, input.caps.ai_qa_packs),
    ] {
        let used = input.meters.get(&meter).copied().unwrap_or(0);
        let billed = cap.map_or(used, |cap| used.min(cap));
        if billed == 0 {
            continue;
        }
        let cap = cap.map_or("no cap".to_owned(), |c| format!("cap {c}"));
        let description = format!("{billed} {meter} Power Packs used ({cap})");
        lines.push(line(
            LineKind::PowerPack,
            LineSubject::Meter(meter),
            billed,
            prices.power_pack(),
            description,
            Vec::new(),
        ));
    }
    Statement::from_lines(
        input.month,
        lines,
        prices.currency(),
        prices.name().to_owned(),
        prices.version(),
    )
}

impl Statement {
    /// A statement of these lines, with its subtotals and total.
    pub fn from_lines(
        month: BillingMonth,
        lines: Vec<StatementLine>,
        currency: Currency,
        price_list: String,
        price_list_version: u32,
    ) -> Statement {
        let subtotals = LineKind::ALL
            .into_iter()
            .map(|kind| {
                (
                    kind,
                    lines
                        .iter()
                        .filter(|l| l.kind == kind)
                        .map(|l| l.amount)
                        .sum(),
                )
            })
            .collect();
        Statement {
            month,
            total: lines.iter().map(|l| l.amount).sum(),
            lines,
            subtotals,
            currency,
            price_list,
            price_list_version,
        }
    }
}

#[cfg(test)]
mod tests;
