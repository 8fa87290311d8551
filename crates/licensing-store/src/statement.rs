//! Statements: gathering a month's billable quantities from the stored state (peaks, login days,
//! the audit trail for who was recorded, metered totals), and keeping a closed month's statement
//! so that it reads the same every time.

use std::collections::BTreeMap;

use jiff::Timestamp;
use licensing_core::{
    Account, BillingMonth, MemberDays, MeterCaps, MonthStart, PriceList, Seats, Statement,
    StatementInput, Tier, month_closes_at, month_facts, statement,
};

use crate::{
    OpError, Store, StoreError,
    records::{MonthStartRecord, StatementRecord, decode, encode},
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

    /// Who recorded calls, and the retention, when `month` started, and the audit sequence its
    /// own entries start at: from the month's kept record, else folded from the latest month
    /// kept before it (or from the first entry), and kept once the month is a day old.
    fn month_start(
        &self,
        account: &Account,
        month: BillingMonth,
        real_now: Timestamp,
        prices: &PriceList,
    ) -> Result<(MonthStart, u64), OpError> {
        let zone = &account.settings.zone;
        let mut within = crate::accounts::prefix(&account.id);
        within.extend_from_slice(zone.name().as_bytes());
        within.push(0);
        let mut key = within.clone();
        key.extend_from_slice(month.to_string().as_bytes());
        let decoded = |bytes: &[u8]| {
            decode::<MonthStartRecord>("month start", bytes)
                .and_then(MonthStartRecord::decode)
                .map_err(StoreError::from)
        };
        if let Some(bytes) = self
            .month_starts
            .get(&key)
            .map_err(|source| self.storage_error(source))?
        {
            return Ok(decoded(&bytes)?);
        }
        let (mut start, mut sequence) =
            match self.month_starts.range(within..key.clone()).next_back() {
                Some(item) => decoded(&item.map_err(|source| self.storage_error(source))?.1)?,
                None => (MonthStart::default(), 1),
            };
        let from = zone.start_of(month);
        for entry in self.audit_trail(&account.id, sequence) {
            let entry = entry?;
            if entry.time >= from {
                break;
            }
            start.apply(&entry.change, prices);
            sequence = entry.sequence + 1;
        }
        // A day into the month, nothing can be appended before its start any more (a clock
        // that steps back a little included).
        if account.now(real_now) >= zone.add_days(from, 1) && !self.has_failed() {
            self.month_starts
                .insert(key, encode(&MonthStartRecord::new(&start, sequence)))
                .map_err(|source| self.storage_error(source))?;
        }
        Ok((start, sequence))
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
        let to = zone.start_of(month.next());

        // The month's own audit entries, from who was recorded when it started.
        let (start, sequence) = self.month_start(account, month, real_now, prices)?;
        let mut entries = Vec::new();
        for entry in self.audit_trail(&account.id, sequence) {
            let entry = entry?;
            if entry.time >= to {
                break;
            }
            entries.push(entry);
        }
        let facts = month_facts(&start, entries, peaks, zone, prices);

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
            peak_notes: facts.peak_notes,
            daily,
            recording: facts.recording,
            retention_months: facts.retention_units * 3,
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
