//! Statements: gathering a month's billable quantities from the stored state (peaks, login days,
//! the audit trail for who was recorded, metered totals), and keeping a closed month's statement
//! so that it reads the same every time.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use licensing_core::{
    Account, AuditEntry, BillingMonth, Change, MemberDays, MeterCaps, PriceList, Product,
    RecordedMember, RecordingRetention, Seats, Statement, StatementInput, StoredMember, Tier,
    month_closes_at, resolve, statement,
};

use crate::{
    OpError, Store, StoreError,
    records::{StatementRecord, decode, encode},
};

/// A statement and whether it is final.
#[derive(Debug, Clone)]
pub struct MonthStatement {
    /// The statement.
    pub statement: Statement,
    /// True once the month is closed: the statement will not change.
    pub is_final: bool,
}

fn statement_key(account_id: &str, month: BillingMonth) -> Vec<u8> {
    let mut key = crate::accounts::prefix(account_id);
    key.extend_from_slice(month.to_string().as_bytes());
    key
}

impl Store {
    /// The statement of `month`: stored and final once the month is closed (the first read after
    /// the close computes and keeps it), computed afresh and provisional before.
    pub fn statement(
        &self,
        account: &Account,
        month: BillingMonth,
        real_now: Timestamp,
        prices: &PriceList,
    ) -> Result<MonthStatement, OpError> {
        let zone = &account.settings.zone;
        let created = zone.month(account.created_at);
        if month < created {
            return Err(OpError::StatementNotFound {
                account: account.id.clone(),
                month,
                created,
            });
        }
        let current = zone.month(account.now(real_now));
        if month > current {
            return Err(OpError::Precondition(format!(
                "month {month} has not started: the account's current month is {current}"
            )));
        }
        let is_final = account.now(real_now) >= month_closes_at(account, month);
        let key = statement_key(&account.id, month);
        if is_final {
            let stored = self
                .statements
                .get(&key)
                .map_err(|source| self.storage_error(source))?;
            if let Some(bytes) = stored {
                let statement = decode::<StatementRecord>("statement", &bytes)
                    .and_then(|r| r.decode(month))
                    .map_err(StoreError::from)?;
                return Ok(MonthStatement {
                    statement,
                    is_final,
                });
            }
        }
        let statement = statement(
            &self.statement_input(account, month, real_now, prices)?,
            prices,
        )
        .map_err(|e| OpError::Precondition(e.to_string()))?;
        if is_final {
            if self.has_failed() {
                return Err(OpError::Store(StoreError::Failed {
                    path: self.path.clone(),
                }));
            }
            // Keep the first one computed; a concurrent reader's identical copy loses the race.
            let record = encode(&StatementRecord::from(&statement));
            let _ = self
                .statements
                .compare_and_swap(&key, None::<&[u8]>, Some(record))
                .map_err(|source| self.storage_error(source))?;
            let bytes = self
                .statements
                .get(&key)
                .map_err(|source| self.storage_error(source))?
                .ok_or_else(|| StoreError::Failed {
                    path: self.path.clone(),
                })?;
            let statement = decode::<StatementRecord>("statement", &bytes)
                .and_then(|r| r.decode(month))
                .map_err(StoreError::from)?;
            return Ok(MonthStatement {
                statement,
                is_final,
            });
        }
        Ok(MonthStatement {
            statement,
            is_final,
        })
    }

    fn storage_error(&self, source: sled::Error) -> StoreError {
        self.failed_with(StoreError::Storage {
            path: self.path.clone(),
            source,
        })
    }

    /// The month's peak seats: from the inventory for its month and after, else as kept when
    /// the months closed.
    fn peak_of(
        &self,
        account: &Account,
        month: BillingMonth,
        current: BillingMonth,
    ) -> Result<Seats, OpError> {
        let inventory = &account.inventory;
        Ok(if month == inventory.month {
            inventory.peak
        } else if month > inventory.month && month <= current {
            // No change since the inventory's month: the counts were carried through.
            inventory.seats
        } else if month > current {
            Seats::NONE
        } else {
            self.closed_peak(&account.id, month)?
        })
    }

    fn statement_input(
        &self,
        account: &Account,
        month: BillingMonth,
        real_now: Timestamp,
        prices: &PriceList,
    ) -> Result<StatementInput, OpError> {
        let zone = &account.settings.zone;
        let current = zone.month(account.now(real_now));
        let peaks = self.peak_of(account, month, current)?;
        let (from, to) = (zone.start_of(month), zone.start_of(month.next()));

        // Replay the audit trail: when each peak was set, who was recorded in the month, and the
        // month's highest retention.
        let mut peak_notes: [String; 6] = Default::default();
        let mut members: HashMap<String, StoredMember> = HashMap::new();
        let mut retention: Option<RecordingRetention> = None;
        let mut highest_units = 0;
        let mut recorded_tiers: BTreeMap<String, Vec<Tier>> = BTreeMap::new();
        let note_recorded = |recorded: &mut BTreeMap<String, Vec<Tier>>, member: &StoredMember| {
            if member.settings.call_recording() {
                let tier = resolve(&member.settings, RecordingRetention::default(), prices).tier;
                recorded
                    .entry(member.member_id.clone())
                    .or_default()
                    .push(tier);
            }
        };
        let mut month_started = false;
        for entry in self.audit_trail(&account.id, 1) {
            let AuditEntry { time, change, .. } = entry?;
            if time >= to {
                break;
            }
            if !month_started && time >= from {
                month_started = true;
                highest_units = retention.map_or(0, RecordingRetention::units);
                for member in members.values() {
                    note_recorded(&mut recorded_tiers, member);
                }
            }
            match change {
                Change::AccountSettings { after, .. } => {
                    retention = Some(after.recording_retention);
                    if month_started {
                        highest_units = highest_units.max(after.recording_retention.units());
                    }
                }
                Change::Member { before, after } => {
                    if let Some(after) = after {
                        if month_started {
                            note_recorded(&mut recorded_tiers, &after);
                        }
                        members.insert(after.member_id.clone(), after);
                    } else if let Some(before) = before {
                        members.remove(&before.member_id);
                    }
                }
                Change::Inventory { lines, .. } if month_started => {
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
                Change::Inventory { .. } | Change::Clock { .. } => {}
            }
        }
        if !month_started {
            highest_units = retention.map_or(0, RecordingRetention::units);
            for member in members.values() {
                note_recorded(&mut recorded_tiers, member);
            }
        }
        for product in Product::ALL {
            let i = product.index();
            if peak_notes[i].is_empty() && peaks.get(product) > 0 {
                peak_notes[i] = "carried into the month".to_owned();
            }
        }
        let units = u64::from(highest_units);
        let recording = recorded_tiers
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

        let mut days: BTreeMap<(String, Tier), u64> = BTreeMap::new();
        for (member, _, day) in self.month_login_days(&account.id, month)? {
            if day.billable {
                *days.entry((member, day.tier)).or_default() += 1;
            }
        }
        let daily = days
            .into_iter()
            .map(|((member_id, tier), days)| MemberDays {
                member_id,
                tier,
                days,
            })
            .collect();

        let settings = &account.settings;
        Ok(StatementInput {
            month,
            peaks,
            peak_notes,
            daily,
            recording,
            retention_months: highest_units * 3,
            meters: self.meter_totals(&account.id, month)?,
            caps: MeterCaps::of(settings),
        })
    }
}

#[cfg(test)]
mod tests {
    use licensing_core::{
        AccountSettings, Channel, Inventory, LineKind, MemberSettings, MemberSettingsInput,
        Permission, RecordingRetention, Skill, UNAUTHENTICATED, Zone, price::testing::prices,
    };

    use super::*;
    use crate::StoreConfig;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn a_retention_change_mid_month_is_billed_at_the_month_highest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&StoreConfig {
            path: dir.path().join("db"),
            cache_capacity_bytes: 8 << 20,
        })
        .expect("open");
        let zone = Zone::new("America/Los_Angeles").expect("zone");
        let start = at("2026-03-02T18:00:00Z");
        let mut settings = AccountSettings::new(zone.clone());
        settings.auto_growth = true;
        let account = Account {
            id: "acme".into(),
            inventory: Inventory::new(zone.month(start)),
            settings,
            sandbox: true,
            created_at: start,
            clock: Some(start),
            audit_sequence: 0,
        };
        store
            .create_account(account, UNAUTHENTICATED)
            .expect("account");
        let recorded = MemberSettings::new(MemberSettingsInput {
            permissions: vec![Permission::Communication],
            skills: vec![Skill {
                id: "voice".into(),
                channel: Channel::Voice,
            }],
            call_recording: true,
            ..Default::default()
        })
        .expect("valid");
        store
            .apply_member("acme", "ann", &recorded, start, &prices(), "test")
            .expect("apply");
        // Mid-March: 9 months for a week, then back to 3.
        for (when, months) in [("2026-03-10T18:00:00Z", 9), ("2026-03-17T18:00:00Z", 3)] {
            store
                .advance_clock("acme", at(when), "test")
                .expect("advance");
            store
                .update_account("acme", at(when), "test", |s| {
                    s.recording_retention = RecordingRetention::months(months).expect("valid");
                    Ok(())
                })
                .expect("update");
        }
        let account = store.account("acme").expect("account");
        let march = BillingMonth::parse("2026-03").expect("month");
        let month = store
            .statement(&account, march, at("2026-03-20T00:00:00Z"), &prices())
            .expect("statement");
        assert!(!month.is_final);
        let recording: Vec<_> = month
            .statement
            .lines
            .iter()
            .filter(|l| l.kind == LineKind::CallRecording)
            .collect();
        // 9 months at their highest: 3 units × 700.
        assert_eq!(recording.len(), 1);
        assert_eq!((recording[0].quantity, recording[0].amount), (3, 2_100));
        // April starts at 3 months: 1 unit.
        store
            .advance_clock("acme", at("2026-04-05T18:00:00Z"), "test")
            .expect("advance");
        let account = store.account("acme").expect("account");
        let april = BillingMonth::parse("2026-04").expect("month");
        let month = store
            .statement(&account, april, at("2026-04-06T00:00:00Z"), &prices())
            .expect("statement");
        let units: Vec<u64> = month
            .statement
            .lines
            .iter()
            .filter(|l| l.kind == LineKind::CallRecording)
            .map(|l| l.quantity)
            .collect();
        assert_eq!(units, [1]);
    }
}
