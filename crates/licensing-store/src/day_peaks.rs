//! Concurrency peaks kept day by day: a month's peak is the highest of its days' peaks, and a
//! day is counted again only when a session change landed in it or the state it starts in
//! changed. What a read of a month costs is one small record per day, plus the session changes
//! since the days were last counted (a day whose new changes all came after those it counted is
//! counted on from its record, not again from its start): not the month's session changes, and
//! not the history's.

use std::collections::BTreeMap;

use jiff::civil;
use licensing_core::{Account, BillingMonth, Concurrency};
use sha2::{Digest as _, Sha256};
use sled::{IVec, Transactional as _, transaction::ConflictableTransactionError};

use crate::{
    OpError, Store, StoreError,
    records::{CheckpointRecord, DayPeaks, DayPeaksRecord, PeaksDirty, Time, decode, encode},
};

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A day's mark: the generation that marked it, and when the earliest session change marking
/// it happened (`None`: not known, as in version-1 records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) generation: u64,
    pub(crate) earliest: Option<jiff::Timestamp>,
}

/// The marked days of an account, by date (`YYYY-MM-DD`).
pub(crate) type Marks = BTreeMap<String, Mark>;

/// The epoch, next generation and marked days `record` means for an account now in `zone`:
/// another zone's record means the next epoch, with nothing marked in it yet.
pub(crate) fn view(record: Option<PeaksDirty>, zone: &str) -> (u64, u64, Marks) {
    let (in_zone, epoch, next, days): (_, _, _, Vec<(String, u64, Option<Time>)>) = match record {
        None => return (0, 0, BTreeMap::new()),
        Some(PeaksDirty::V1 {
            zone,
            epoch,
            next,
            days,
        }) => (
            zone,
            epoch,
            next,
            days.into_iter().map(|(day, g)| (day, g, None)).collect(),
        ),
        Some(PeaksDirty::V2 {
            zone,
            epoch,
            next,
            days,
        }) => (
            zone,
            epoch,
            next,
            days.into_iter().map(|(day, (g, t))| (day, g, t)).collect(),
        ),
    };
    if in_zone != zone {
        return (epoch.wrapping_add(1), next, BTreeMap::new());
    }
    let marks = days
        .into_iter()
        .map(|(day, generation, earliest)| {
            // An instant that does not decode is not known: the day is counted whole.
            let earliest = earliest.and_then(|t| t.decode("day peaks dirty").ok());
            (
                day,
                Mark {
                    generation,
                    earliest,
                },
            )
        })
        .collect();
    (epoch, next, marks)
}

/// The record of `marks` in `zone`.
pub(crate) fn dirty_record(zone: &str, epoch: u64, next: u64, marks: Marks) -> PeaksDirty {
    PeaksDirty::V2 {
        zone: zone.to_owned(),
        epoch,
        next,
        days: marks
            .into_iter()
            .map(|(day, mark)| (day, (mark.generation, mark.earliest.map(Into::into))))
            .collect(),
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

/// Who was logged in, as a day's record encodes it (its start or end state).
fn decode_state(bytes: &[u8]) -> Result<Concurrency, StoreError> {
    Ok(decode::<CheckpointRecord>("day peaks", bytes).and_then(CheckpointRecord::decode)?)
}

/// The state a month ends in: counted by this read, or the encoded end of its last day's record.
enum DayEnd {
    Counted(Concurrency),
    Kept(Vec<u8>),
}

/// A day counted by this read, to keep if its mark did not move meanwhile.
struct Counted {
    day: String,
    /// The day's mark when the read began (`None`: unmarked).
    seen: Option<Mark>,
    record: DayPeaks,
}

fn max_peaks(peaks: &mut [u32; 5], more: &[u32; 5]) {
    for (peak, day) in peaks.iter_mut().zip(more) {
        *peak = (*peak).max(*day);
    }
}

impl Store {
    /// The peaks of `month`, from `start` (who was logged in at its first instant), and how many
    /// of its days had to be counted from their session changes. `seen` is the account's
    /// `day_peaks_dirty` record as read before any session change was.
    ///
    /// A kept day is taken as it is when unmarked and counted from the state the day starts in
    /// now. A marked one whose earliest new change is after the last change its record counted
    /// (changes arriving in order, as they mostly do) is counted on from the record's end state
    /// with those later changes only; any other is counted again from its start.
    pub(crate) fn peaks_by_day(
        &self,
        account: &Account,
        month: BillingMonth,
        start: Concurrency,
        seen: Option<&IVec>,
    ) -> Result<([u32; 5], usize), OpError> {
        let (peaks, counted, _) = self.count_days(account, month, start, seen)?;
        Ok((peaks, counted))
    }

    /// Who was logged in at the end of `month`, from `start` (who was at its first instant), as
    /// [`Self::peaks_by_day`] counts it: the days kept are taken as they are, the others
    /// counted from their session changes and kept, for the reads, the keeper and compaction
    /// that follow.
    pub(crate) fn month_end_by_day(
        &self,
        account: &Account,
        month: BillingMonth,
        start: Concurrency,
        seen: Option<&IVec>,
    ) -> Result<Concurrency, OpError> {
        let (_, _, end) = self.count_days(account, month, start, seen)?;
        match end {
            DayEnd::Counted(state) => Ok(state),
            DayEnd::Kept(bytes) => Ok(decode_state(&bytes)?),
        }
    }

    /// [`Self::peaks_by_day`], and the state the month ends in.
    fn count_days(
        &self,
        account: &Account,
        month: BillingMonth,
        start: Concurrency,
        seen: Option<&IVec>,
    ) -> Result<([u32; 5], usize, DayEnd), OpError> {
        let zone = &account.settings.zone;
        let (epoch, _, marks) = view(decode_dirty(seen.map(|b| &b[..]))?, zone.name());

        let month_text = month.to_string();
        let mut prefix = day_key(account, &month_text);
        prefix.push(b'-');
        let mut kept: BTreeMap<i8, DayPeaks> = BTreeMap::new();
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
            let record = decode::<DayPeaksRecord>("day peaks", &value)
                .and_then(DayPeaksRecord::decode)
                .map_err(StoreError::from)?;
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
            let chained = kept
                .remove(&day.day())
                .filter(|record| record.epoch == epoch && record.start == start_digest);
            let record = match (chained, mark) {
                (Some(record), None) => {
                    max_peaks(&mut peaks, &record.peaks);
                    start_digest = record.end_digest;
                    previous_end = Some(record.end);
                    state = None;
                    continue;
                }
                (record, _) => record,
            };
            let ends = match days.get(n + 1) {
                Some(next) => zone.start_of_day(*next),
                None => zone.start_of(month.next()),
            };
            // Counted on from the record when every change marking the day came after the last
            // one it counted: then the changes after that instant are exactly the new ones.
            let resume = record.filter(|record| {
                matches!(
                    (record.through, mark.and_then(|m| m.earliest)),
                    (Some(through), Some(earliest)) if earliest > through
                )
            });
            let (from, begins, base, through) = match resume {
                Some(record) => {
                    let from = decode_state(&record.end)?;
                    let after = record
                        .through
                        .and_then(|t| t.checked_add(jiff::SignedDuration::from_nanos(1)).ok());
                    (from, after, record.peaks, record.through)
                }
                None => {
                    let from = match state.take() {
                        Some(state) => state,
                        None => {
                            let bytes = previous_end.take().unwrap_or_default();
                            decode_state(&bytes)?
                        }
                    };
                    (from, Some(zone.start_of_day(*day)), [0; 5], None)
                }
            };
            let transitions = self
                .transitions(&account.id, begins, ends)
                .collect::<Result<Vec<_>, _>>()?;
            let through = transitions.last().map(|t| t.at).or(through);
            let (mut day_peaks, end) = from.peaks_over(transitions);
            max_peaks(&mut day_peaks, &base);
            max_peaks(&mut peaks, &day_peaks);
            let end_bytes = encode(&CheckpointRecord::new(&end));
            let end_digest = digest(&end_bytes);
            counted.push(Counted {
                day: text,
                seen: mark,
                record: DayPeaks {
                    epoch,
                    start: start_digest,
                    peaks: day_peaks,
                    end: end_bytes,
                    end_digest,
                    through,
                },
            });
            start_digest = end_digest;
            state = Some(end);
        }
        let count = counted.len();
        if !counted.is_empty() {
            self.keep_days(account, epoch, counted)?;
        }
        // The last day was counted here (`state`), else taken from its kept record.
        let end = match state {
            Some(state) => DayEnd::Counted(state),
            None => DayEnd::Kept(previous_end.unwrap_or_default()),
        };
        Ok((peaks, count, end))
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
            let DayPeaks {
                epoch: in_epoch,
                start: day_start,
                end: day_end,
                end_digest,
                ..
            } = decode::<DayPeaksRecord>("day peaks", &value)
                .and_then(DayPeaksRecord::decode)
                .map_err(StoreError::from)?;
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
        let state = decode_state(&end)?;
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
            let mut changed = record.as_ref().is_some_and(|r| r.zone() != zone);
            let (now_epoch, next, mut marks) = view(record, zone);
            if now_epoch != epoch {
                // The zone changed since the read began: what it counted is another epoch's.
                return Ok(());
            }
            for Counted { day, seen, record } in &counted {
                if marks.get(day).copied() != *seen {
                    continue;
                }
                days.insert(day_key(account, day), encode(&DayPeaksRecord::from(record)))?;
                changed |= marks.remove(day).is_some();
            }
            if changed {
                let record = dirty_record(zone, epoch, next, marks);
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
