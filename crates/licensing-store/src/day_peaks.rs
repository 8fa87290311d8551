//! Concurrency peaks kept day by day: a month's peak is the highest of its days' peaks, and a
//! day is counted again only when a session change landed in it or the state it starts in
//! changed. What a read of a month costs is one small record per day, plus the days that
//! changed since they were last counted: not the month's session changes, and not the history's.

use std::collections::BTreeMap;

use jiff::civil;
use licensing_core::{Account, BillingMonth, Concurrency};
use sha2::{Digest as _, Sha256};
use sled::{IVec, Transactional as _, transaction::ConflictableTransactionError};

use crate::{
    OpError, Store, StoreError,
    records::{CheckpointRecord, DayPeaksRecord, PeaksDirty, decode, encode},
};

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The epoch and marked days `record` means for an account now in `zone`: another zone's
/// record means the next epoch, with nothing marked in it yet.
pub(crate) fn view(record: Option<PeaksDirty>, zone: &str) -> (u64, u64, BTreeMap<String, u64>) {
    match record {
        None => (0, 0, BTreeMap::new()),
        Some(PeaksDirty::V1 {
            zone: in_zone,
            epoch,
            next,
            days,
        }) if in_zone == zone => (epoch, next, days),
        Some(PeaksDirty::V1 { epoch, next, .. }) => (epoch.wrapping_add(1), next, BTreeMap::new()),
    }
}

fn decode_dirty(bytes: Option<&[u8]>) -> Result<Option<PeaksDirty>, StoreError> {
    bytes
        .map(|bytes| decode::<PeaksDirty>("day peaks dirty", bytes))
        .transpose()
        .map_err(StoreError::from)
}

/// The key of a day's record, and (without the day) the prefix of a month's.
fn day_key(account: &Account, day: &str) -> Vec<u8> {
    let zone = account.settings.zone.name();
    let mut key = Vec::with_capacity(account.id.len() + zone.len() + day.len() + 2);
    key.extend_from_slice(account.id.as_bytes());
    key.push(0);
    key.extend_from_slice(zone.as_bytes());
    key.push(0);
    key.extend_from_slice(day.as_bytes());
    key
}

/// A day counted by this read, to keep if its mark did not move meanwhile.
struct Counted {
    day: String,
    /// The generation of the day's mark when the read began (`None`: unmarked).
    seen: Option<u64>,
    record: DayPeaksRecord,
}

impl Store {
    /// The peaks of `month`, from `start` (who was logged in at its first instant), and how many
    /// of its days had to be counted from their session changes. `seen` is the account's
    /// `day_peaks_dirty` record as read before any session change was.
    pub(crate) fn peaks_by_day(
        &self,
        account: &Account,
        month: BillingMonth,
        start: Concurrency,
        seen: Option<&IVec>,
    ) -> Result<([u32; 5], usize), OpError> {
        let zone = &account.settings.zone;
        let (epoch, _, marks) = view(decode_dirty(seen.map(|b| &b[..]))?, zone.name());

        let month_text = month.to_string();
        let mut prefix = day_key(account, &month_text);
        prefix.push(b'-');
        let mut kept: BTreeMap<i8, DayPeaksRecord> = BTreeMap::new();
        for item in self.day_peaks.scan_prefix(&prefix) {
            let (key, value) = item.map_err(|source| self.storage(source))?;
            let day = std::str::from_utf8(&key[prefix.len()..])
                .ok()
                .and_then(|d| d.parse::<i8>().ok());
            let Some(day) = day else {
                return Err(StoreError::Corrupt(crate::Corrupt {
                    what: "day peaks",
                    problem: "key day".into(),
                })
                .into());
            };
            let record = decode::<DayPeaksRecord>("day peaks", &value).map_err(StoreError::from)?;
            kept.insert(day, record);
        }

        let mut peaks = [0u32; 5];
        let mut counted = Vec::new();
        // The state the next day starts in: known when this read counted the day before, or
        // else the encoded end of the day before's kept record (decoded only if needed).
        let mut state = Some(start);
        let mut previous_end: Option<Vec<u8>> = None;
        let mut start_digest = match &state {
            Some(state) => digest(&encode(&CheckpointRecord::new(state))),
            None => [0; 32],
        };
        let days: Vec<civil::Date> = month.days().collect();
        for (n, day) in days.iter().enumerate() {
            let text = day.to_string();
            let mark = marks.get(&text).copied();
            let valid = kept.get(&day.day()).filter(|record| {
                let DayPeaksRecord::V1 {
                    epoch: in_epoch,
                    start,
                    ..
                } = record;
                *in_epoch == epoch && mark.is_none() && *start == start_digest
            });
            if let Some(record) = valid {
                let DayPeaksRecord::V1 {
                    peaks: day_peaks,
                    end,
                    end_digest,
                    ..
                } = record;
                for (peak, day) in peaks.iter_mut().zip(day_peaks) {
                    *peak = (*peak).max(*day);
                }
                start_digest = *end_digest;
                previous_end = Some(end.clone());
                state = None;
                continue;
            }
            let from = match state.take() {
                Some(state) => state,
                None => {
                    let bytes = previous_end.take().unwrap_or_default();
                    decode::<CheckpointRecord>("day peaks", &bytes)
                        .and_then(CheckpointRecord::decode)
                        .map_err(StoreError::from)?
                }
            };
            let begins = zone.start_of_day(*day);
            let ends = match days.get(n + 1) {
                Some(next) => zone.start_of_day(*next),
                None => zone.start_of(month.next()),
            };
            let transitions = self
                .transitions(&account.id, Some(begins), ends)
                .collect::<Result<Vec<_>, _>>()?;
            let (day_peaks, end) = from.peaks_over(transitions);
            for (peak, day) in peaks.iter_mut().zip(day_peaks) {
                *peak = (*peak).max(day);
            }
            let end_bytes = encode(&CheckpointRecord::new(&end));
            let end_digest = digest(&end_bytes);
            counted.push(Counted {
                day: text,
                seen: mark,
                record: DayPeaksRecord::V1 {
                    epoch,
                    start: start_digest,
                    peaks: day_peaks,
                    end: end_bytes,
                    end_digest,
                },
            });
            start_digest = end_digest;
            state = Some(end);
        }
        let count = counted.len();
        if !counted.is_empty() {
            self.keep_days(account, epoch, counted)?;
        }
        Ok((peaks, count))
    }

    /// Who was logged in at the start of `until` (a day of `month`; `None`: the start of the
    /// next month), from the kept records of `month`'s days before it, when each of them is
    /// kept in the current epoch, unmarked, and follows from `start` (who was logged in at the
    /// month's first instant); `None` when one is not, and the caller counts from the session
    /// changes. `seen` is the account's `day_peaks_dirty` record, as for [`Self::peaks_by_day`].
    /// At most a month's day records are read, whatever the number of session changes.
    pub(crate) fn state_from_kept_days(
        &self,
        account: &Account,
        month: BillingMonth,
        until: Option<civil::Date>,
        start: &Concurrency,
        seen: Option<&IVec>,
    ) -> Result<Option<Concurrency>, OpError> {
        let zone = &account.settings.zone;
        let (epoch, _, marks) = view(decode_dirty(seen.map(|b| &b[..]))?, zone.name());
        let days: Vec<civil::Date> = month
            .days()
            .take_while(|day| until.is_none_or(|until| *day < until))
            .collect();
        let Some(last) = days.last() else {
            return Ok(Some(start.clone()));
        };
        let mut chain = digest(&encode(&CheckpointRecord::new(start)));
        let mut end = None;
        for day in &days {
            let text = day.to_string();
            if marks.contains_key(&text) {
                return Ok(None);
            }
            let Some(value) = self
                .day_peaks
                .get(day_key(account, &text))
                .map_err(|source| self.storage(source))?
            else {
                return Ok(None);
            };
            let DayPeaksRecord::V1 {
                epoch: in_epoch,
                start: day_start,
                end: day_end,
                end_digest,
                ..
            } = decode::<DayPeaksRecord>("day peaks", &value).map_err(StoreError::from)?;
            if in_epoch != epoch || day_start != chain {
                return Ok(None);
            }
            chain = end_digest;
            if day == last {
                end = Some(day_end);
            }
        }
        let Some(end) = end else {
            return Ok(None);
        };
        let state = decode::<CheckpointRecord>("day peaks", &end)
            .and_then(CheckpointRecord::decode)
            .map_err(StoreError::from)?;
        Ok(Some(state))
    }

    /// Writes the days a read counted, each only if its mark is still the one the read saw (a
    /// commit since may have changed the day), and removes their marks.
    fn keep_days(
        &self,
        account: &Account,
        epoch: u64,
        counted: Vec<Counted>,
    ) -> Result<(), OpError> {
        if self.has_failed() {
            return Ok(());
        }
        let zone = account.settings.zone.name();
        let result = (&self.day_peaks, &self.day_peaks_dirty).transaction(|(days, dirty)| {
            let now = dirty.get(account.id.as_bytes())?;
            let record =
                decode_dirty(now.as_deref()).map_err(ConflictableTransactionError::Abort)?;
            // Another zone's record is kept as this zone's next epoch, so that the days counted
            // in it are never taken for the other zone's again.
            let mut changed =
                matches!(&record, Some(PeaksDirty::V1 { zone: in_zone, .. }) if in_zone != zone);
            let (now_epoch, next, mut marks) = view(record, zone);
            if now_epoch != epoch {
                // The zone changed since the read began: what it counted is another epoch's.
                return Ok(());
            }
            for Counted { day, seen, record } in &counted {
                if marks.get(day).copied() != *seen {
                    continue;
                }
                days.insert(day_key(account, day), encode(record))?;
                changed |= marks.remove(day).is_some();
            }
            if changed {
                let record = PeaksDirty::V1 {
                    zone: zone.to_owned(),
                    epoch,
                    next,
                    days: marks,
                };
                dirty.insert(account.id.as_bytes(), encode(&record))?;
            }
            Ok::<(), ConflictableTransactionError<StoreError>>(())
        });
        self.finish_store(result)
    }
}

/// What one chunk of [`Store::keep_day_peaks`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeptDays {
    /// Accounts whose marked days were counted.
    pub accounts: usize,
    /// Days counted.
    pub days: usize,
    /// The account to go on after; `None` when every account was seen.
    pub next: Option<Vec<u8>>,
}

impl Store {
    /// Counts the marked days of up to `limit` accounts after `after`, so that the reads that
    /// follow find every day's peak kept. A read counts what is still marked itself: this only
    /// moves the work off the reads.
    pub fn keep_day_peaks(
        &self,
        real_now: jiff::Timestamp,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<KeptDays, OpError> {
        let mut kept = KeptDays::default();
        let range = crate::after(&self.day_peaks_dirty, after);
        for item in range {
            if self.has_failed() {
                break;
            }
            let (key, value) = item.map_err(|source| self.storage(source))?;
            if kept.accounts == limit {
                break;
            }
            kept.next = Some(key.to_vec());
            let Some(account) = self.account_of_key(&key)? else {
                continue;
            };
            let (_, _, marks) = view(decode_dirty(Some(&value))?, account.settings.zone.name());
            let months: std::collections::BTreeSet<BillingMonth> = marks
                .keys()
                .filter_map(|day| BillingMonth::parse(day.get(..7)?).ok())
                .collect();
            if months.is_empty() {
                continue;
            }
            kept.accounts += 1;
            for month in months {
                kept.days += self.concurrency_peaks_counted(&account, month, real_now)?.1;
            }
        }
        if kept.accounts < limit {
            kept.next = None;
        }
        Ok(kept)
    }
}
