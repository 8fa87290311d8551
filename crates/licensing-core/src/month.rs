//! What a month's statement needs from the audit trail: who was recorded (billed at the tier
//! that owed the most units), the highest recording retention, and when each seat peak was set.
//! Folded from the state the month starts in ([`MonthStart`]), so a statement reads only its own
//! month's entries; the state at a month's start is the fold of every entry before it, and never
//! changes once the month has started (entries are appended at the account's time).

use std::collections::BTreeMap;

use crate::{
    AuditEntry, Change, PriceList, Product, RecordedMember, RecordingRetention, Seats,
    StoredMember, Tier, Zone, resolve,
};

/// Who records calls, and the account's retention, at an instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonthStart {
    /// The members whose settings record calls, with the tier their settings resolve to.
    pub recorded: BTreeMap<String, Tier>,
    /// The retention in force; `None` before the account's first settings entry.
    pub retention: Option<RecordingRetention>,
}

/// The tier `member` is recorded at, if their settings record calls.
fn recorded_tier(member: &StoredMember, prices: &PriceList) -> Option<Tier> {
    member
        .settings
        .call_recording()
        .then(|| resolve(&member.settings, RecordingRetention::default(), prices).tier)
}

impl MonthStart {
    /// The state after `change`.
    pub fn apply(&mut self, change: &Change, prices: &PriceList) {
        match change {
            Change::AccountSettings { after, .. } => {
                self.retention = Some(after.recording_retention)
            }
            Change::Member { before, after } => {
                if let Some(before) = before {
                    self.recorded.remove(&before.member_id);
                }
                if let Some(after) = after {
                    match recorded_tier(after, prices) {
                        Some(tier) => {
                            self.recorded.insert(after.member_id.clone(), tier);
                        }
                        None => {
                            self.recorded.remove(&after.member_id);
                        }
                    }
                }
            }
            Change::Inventory { .. } | Change::Clock { .. } => {}
        }
    }
}

/// A month's facts from the audit trail, for its statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthFacts {
    /// How each product's peak came about ("set on 2026-05-10", "carried into the month").
    pub peak_notes: [String; 6],
    /// Every member recorded at some time in the month, billed at the state that owed the most.
    pub recording: Vec<RecordedMember>,
    /// The highest retention in force in the month, in units of three months (0 = 14 days).
    pub retention_units: u32,
}

/// The facts of a month that starts in `start` and has `entries` (its own, in order), whose
/// seat peaks are `peaks`, in the account's `zone`.
pub fn month_facts(
    start: &MonthStart,
    entries: impl IntoIterator<Item = AuditEntry>,
    peaks: Seats,
    zone: &Zone,
    prices: &PriceList,
) -> MonthFacts {
    let mut highest_units = start.retention.map_or(0, RecordingRetention::units);
    let mut recorded: BTreeMap<String, Vec<Tier>> = start
        .recorded
        .iter()
        .map(|(member, tier)| (member.clone(), vec![*tier]))
        .collect();
    let mut peak_notes: [String; 6] = Default::default();
    for AuditEntry { time, change, .. } in entries {
        match change {
            Change::AccountSettings { after, .. } => {
                highest_units = highest_units.max(after.recording_retention.units());
            }
            Change::Member {
                after: Some(after), ..
            } => {
                if let Some(tier) = recorded_tier(&after, prices) {
                    recorded.entry(after.member_id).or_default().push(tier);
                }
            }
            Change::Inventory { lines, .. } => {
                for line in lines {
                    let i = line.product.index();
                    if peak_notes[i].is_empty()
                        && line.to == peaks.get(line.product)
                        && line.to > line.from
                    {
                        peak_notes[i] = format!("set on {}", zone.day(time));
                    }
                }
            }
            Change::Member { after: None, .. } | Change::Clock { .. } => {}
        }
    }
    for product in Product::ALL {
        let i = product.index();
        if peak_notes[i].is_empty() && peaks.get(product) > 0 {
            peak_notes[i] = "carried into the month".to_owned();
        }
    }
    let units = u64::from(highest_units);
    let recording = recorded
        .into_iter()
        .map(|(member_id, tiers)| {
            // Billed at the month's highest: the state that owed the most units.
            let billed_units = tiers
                .into_iter()
                .map(|tier| {
                    if tier.includes_recording() {
                        units.saturating_sub(1)
                    } else {
                        units
                    }
                })
                .max()
                .unwrap_or(0);
            RecordedMember {
                member_id,
                billed_units,
            }
        })
        .collect();
    MonthFacts {
        peak_notes,
        recording,
        retention_units: highest_units,
    }
}

#[cfg(test)]
mod tests;
