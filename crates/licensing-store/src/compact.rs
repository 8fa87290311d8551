//! Compaction: once an account's months have closed, their raw session changes are not needed
//! any more. Their concurrency peaks are kept per month, who was logged in at the end is kept as
//! the account's floor, and the session changes before the floor are deleted in bounded chunks.
//! What GetUsage and statements read of a closed month (login days, meters, statements, the
//! month's peaks) is kept.

use jiff::Timestamp;
use licensing_core::{Account, BillingMonth, Concurrency, month_closes_at};
use sled::{Transactional as _, transaction::ConflictableTransactionError};

use crate::{
    OpError, Store, StoreError,
    records::{CheckpointRecord, FloorRecord, MonthPeaksRecord, Time, decode, encode},
};

/// The floor stays this many days before the first month still open, so that no zone's first
/// open month starts before it (zones are at most 26 hours apart) after a change of zone.
pub(crate) const FLOOR_MARGIN_DAYS: i64 = 2;

/// An account's floor, decoded.
#[derive(Debug, Default)]
pub(crate) struct Floor {
    /// The instant the history is compacted up to, and who was logged in at it.
    pub(crate) complete: Option<(Timestamp, Concurrency)>,
    /// Events before this are refused (the latest of the two floors).
    pub(crate) refuse_before: Option<Timestamp>,
    /// The account's time when the floor was last moved.
    pub(crate) moved_at: Option<Timestamp>,
}

fn corrupt_floor(e: crate::Corrupt) -> StoreError {
    StoreError::Corrupt(e)
}

pub(crate) fn decode_floor(bytes: &[u8]) -> Result<Floor, StoreError> {
    let FloorRecord::V1 {
        complete,
        pending,
        moved_at,
    } = decode::<FloorRecord>("session floor", bytes).map_err(corrupt_floor)?;
    let complete = match complete {
        None => None,
        Some((at, open)) => Some((
            at.decode("session floor").map_err(corrupt_floor)?,
            open.decode().map_err(corrupt_floor)?,
        )),
    };
    let pending = pending
        .map(|at| at.decode("session floor"))
        .transpose()
        .map_err(corrupt_floor)?;
    let refuse_before = match (&complete, pending) {
        (Some((at, _)), Some(pending)) => Some((*at).max(pending)),
        (Some((at, _)), None) => Some(*at),
        (None, pending) => pending,
    };
    Ok(Floor {
        complete,
        refuse_before,
        moved_at: Some(moved_at.decode("session floor").map_err(corrupt_floor)?),
    })
}

/// What one chunk of [`Store::compact`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Compacted {
    /// Accounts whose floor moved.
    pub floors_moved: usize,
    /// Closed months whose peaks were kept.
    pub months_kept: usize,
    /// Records deleted (session changes, and the checkpoints and day peaks before the floor).
    pub deleted: usize,
    /// Accounts with records below their floor still to delete ([`Store::delete_below_floor`]).
    pub pending: Vec<String>,
    /// The account to go on after; `None` when every account was seen.
    pub next: Option<Vec<u8>>,
}

/// The keys below an account's floor ([`Store::below_floor`]).
struct BelowFloor {
    /// Session changes: from the deletion cursor to the floor.
    sessions: (Vec<u8>, Vec<u8>),
    /// Where the deletion cursor is kept (`session_floor` tree).
    cursor_key: Vec<u8>,
    /// Checkpoints and day peaks of the floor's zone before its month.
    months: (Vec<u8>, Vec<u8>),
}

fn month_key(account_id: &str, month: BillingMonth) -> Vec<u8> {
    let mut key = crate::accounts::prefix(account_id);
    key.extend_from_slice(month.to_string().as_bytes());
    key
}

/// The first month of `account` not closed yet and where its floor belongs, when the floor is
/// behind it (some month before it closed since the floor last moved).
fn floor_to_move(
    account: &Account,
    real_now: Timestamp,
    floor: &Floor,
) -> Option<(BillingMonth, Timestamp)> {
    let zone = &account.settings.zone;
    let now = account.now(real_now);
    let created = zone.month(account.created_at);
    let current = zone.month(now);
    let mut first_open = created;
    while first_open < current && month_closes_at(account, first_open) <= now {
        first_open = first_open.next();
    }
    let target = zone.add_days(zone.start_of(first_open), -FLOOR_MARGIN_DAYS);
    let complete_at = floor.complete.as_ref().map(|(at, _)| *at);
    (first_open > created && complete_at.is_none_or(|at| at < target))
        .then_some((first_open, target))
}

/// The background work an account still waits for ([`Store::backlog`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Days whose concurrency peaks are to be counted again (reads count them themselves).
    pub marked_days: usize,
    /// A month closed and the floor has not moved past it yet.
    pub floor_behind: bool,
    /// Records below the floor are still to be deleted.
    pub below_floor: bool,
    /// A month's dedupe records expired and the account's were not read to their end since
    /// ([`Store::dedupe_expiry_due`]).
    pub dedupe_due: bool,
}

impl Backlog {
    /// Nothing left to do.
    pub fn is_empty(&self) -> bool {
        *self == Backlog::default()
    }
}

impl Store {
    pub(crate) fn floor(&self, account_id: &str) -> Result<Floor, OpError> {
        match self
            .session_floor
            .get(account_id.as_bytes())
            .map_err(|source| self.storage(source))?
        {
            None => Ok(Floor::default()),
            Some(bytes) => Ok(decode_floor(&bytes)?),
        }
    }

    /// A compacted month's peaks, as kept when it was compacted (none kept: nobody logged in).
    pub(crate) fn frozen_peaks(
        &self,
        account_id: &str,
        month: BillingMonth,
    ) -> Result<[u32; 5], OpError> {
        match self
            .month_peaks
            .get(month_key(account_id, month))
            .map_err(|source| self.storage(source))?
        {
            None => Ok([0; 5]),
            Some(bytes) => {
                let MonthPeaksRecord::V1 { peaks, .. } =
                    decode::<MonthPeaksRecord>("month peaks", &bytes).map_err(StoreError::from)?;
                Ok(peaks)
            }
        }
    }

    /// What background work `account_id` waits for: the peaks keeper's marked days, a floor
    /// to move, records below the floor to delete, dedupe records to expire (after
    /// `dedupe_retention_days`); a few reads. For operators and benchmarks that wait for the
    /// service to catch up.
    pub fn backlog(
        &self,
        account_id: &str,
        real_now: Timestamp,
        dedupe_retention_days: u32,
    ) -> Result<Backlog, OpError> {
        let account = self.account(account_id)?;
        let marked = self
            .day_peaks_dirty
            .get(account_id.as_bytes())
            .map_err(|source| self.storage(source))?
            .map(|bytes| decode::<crate::records::PeaksDirty>("day peaks dirty", &bytes))
            .transpose()
            .map_err(StoreError::from)?;
        let (_, _, marks) = crate::day_peaks::view(marked, account.settings.zone.name());
        let floor = self.floor(account_id)?;
        Ok(Backlog {
            marked_days: marks.len(),
            floor_behind: floor_to_move(&account, real_now, &floor).is_some(),
            below_floor: self.below_floor_left(&account)?,
            dedupe_due: self
                .dedupe_expiry_due(&account, real_now, dedupe_retention_days)?
                .is_some(),
        })
    }

    /// Where the month is kept through which `account_id`'s dedupe records were last expired
    /// (`session_floor` tree, next to the deletion cursor).
    fn dedupe_expired_key(account_id: &str) -> Vec<u8> {
        let mut key = crate::accounts::prefix(account_id);
        key.extend_from_slice(b"dedupe-expired");
        key
    }

    /// The latest month of `account` whose dedupe records expire by now (`retention_days`
    /// after it closed) if its records were not read to their end since that month expired
    /// ([`Store::dedupe_expired_through`]); `None` when nothing is due.
    pub fn dedupe_expiry_due(
        &self,
        account: &Account,
        real_now: Timestamp,
        retention_days: u32,
    ) -> Result<Option<BillingMonth>, OpError> {
        let Some(month) =
            licensing_core::last_expired_month(account, account.now(real_now), retention_days)
        else {
            return Ok(None);
        };
        let done = self
            .session_floor
            .get(Self::dedupe_expired_key(&account.id))
            .map_err(|source| self.storage(source))?
            .and_then(|bytes| BillingMonth::parse(std::str::from_utf8(&bytes).ok()?).ok());
        Ok(done.is_none_or(|done| done < month).then_some(month))
    }

    /// Notes that every dedupe record of `account_id` of `month` and before that expired was
    /// deleted: a sweep read them all to their end after `month` expired. Needs no flush: lost in
    /// a crash, the records are read again.
    pub fn dedupe_expired_through(
        &self,
        account_id: &str,
        month: BillingMonth,
    ) -> Result<(), OpError> {
        self.session_floor
            .insert(
                Self::dedupe_expired_key(account_id),
                month.to_string().as_bytes(),
            )
            .map_err(|source| self.storage(source))?;
        Ok(())
    }

    /// Compacts up to `limit` accounts after `after`, deleting at most `chunk` records of each
    /// (none with 0: only the floors move): call again with `next` until it is `None`, and
    /// again later for what is left, or delete it with [`Store::delete_below_floor`].
    pub fn compact(
        &self,
        real_now: Timestamp,
        after: Option<&[u8]>,
        limit: usize,
        chunk: usize,
    ) -> Result<Compacted, OpError> {
        let mut done = Compacted::default();
        let range = crate::after(&self.accounts, after);
        let mut seen = 0;
        for item in range {
            if self.has_failed() || seen == limit {
                break;
            }
            let (key, _) = item.map_err(|source| self.storage(source))?;
            seen += 1;
            done.next = Some(key.to_vec());
            let Some(account) = self.account_of_key(&key)? else {
                continue;
            };
            self.compact_account(&account, real_now, chunk, &mut done)?;
        }
        if seen < limit {
            done.next = None;
        }
        Ok(done)
    }

    fn compact_account(
        &self,
        account: &Account,
        real_now: Timestamp,
        chunk: usize,
        done: &mut Compacted,
    ) -> Result<(), OpError> {
        let floor = self.floor(&account.id)?;
        if let Some((first_open, target)) = floor_to_move(account, real_now, &floor) {
            self.move_floor(account, real_now, first_open, target, floor, done)?;
        }
        if chunk > 0 {
            self.delete_before_floor(account, chunk, done)?;
        }
        if self.below_floor_left(account)? {
            done.pending.push(account.id.clone());
        }
        Ok(())
    }

    /// Deletes up to `chunk` of the records below `account_id`'s floor (session changes, then
    /// the checkpoints and kept day peaks of the months before it); returns how many, 0 once
    /// none is left.
    pub fn delete_below_floor(&self, account_id: &str, chunk: usize) -> Result<usize, OpError> {
        let account = self.account(account_id)?;
        let mut done = Compacted::default();
        self.delete_before_floor(&account, chunk, &mut done)?;
        Ok(done.deleted)
    }

    /// Where the session changes below the account's floor start (the least key not deleted yet)
    /// and end, and the zone's range of checkpoints and day peaks before the floor's month;
    /// `None` without a complete floor.
    fn below_floor(&self, account: &Account) -> Result<Option<BelowFloor>, OpError> {
        let Some((floor_at, _)) = self.floor(&account.id)?.complete else {
            return Ok(None);
        };
        let zone = &account.settings.zone;
        let prefix = crate::accounts::prefix(&account.id);
        let mut sessions_to = prefix.clone();
        sessions_to.extend_from_slice(&crate::ingest::sortable(floor_at));
        // Where the last chunk stopped: every session change before it is deleted. Starting
        // there, a chunk never walks again over the (emptied) part of the tree already done.
        let mut cursor_key = prefix.clone();
        cursor_key.extend_from_slice(b"swept");
        let sessions_from = match self
            .session_floor
            .get(&cursor_key)
            .map_err(|source| self.storage(source))?
        {
            Some(swept) if swept.as_ref() > prefix.as_slice() => swept.to_vec(),
            _ => prefix.clone(),
        };
        let mut months_from = prefix;
        months_from.extend_from_slice(zone.name().as_bytes());
        months_from.push(0);
        let mut months_to = months_from.clone();
        months_to.extend_from_slice(zone.month(floor_at).to_string().as_bytes());
        Ok(Some(BelowFloor {
            sessions: (sessions_from, sessions_to),
            cursor_key,
            months: (months_from, months_to),
        }))
    }

    /// Whether any record below the account's floor is left: one key looked up per tree.
    fn below_floor_left(&self, account: &Account) -> Result<bool, OpError> {
        let Some(below) = self.below_floor(account)? else {
            return Ok(false);
        };
        let any_in = |tree: &sled::Tree, (from, to): &(Vec<u8>, Vec<u8>)| {
            if from >= to {
                return Ok(false);
            }
            let first = tree
                .range(from.as_slice()..to.as_slice())
                .next()
                .transpose();
            first
                .map(|first| first.is_some())
                .map_err(|source| self.storage(source))
        };
        Ok(any_in(&self.sessions, &below.sessions)?
            || any_in(&self.checkpoints, &below.months)?
            || any_in(&self.day_peaks, &below.months)?)
    }

    /// Moves the floor to `target` (before `first_open`, every month before which is closed).
    fn move_floor(
        &self,
        account: &Account,
        real_now: Timestamp,
        first_open: BillingMonth,
        target: Timestamp,
        floor: Floor,
        done: &mut Compacted,
    ) -> Result<(), OpError> {
        let zone = &account.settings.zone;
        let moved_at: Time = account.now(real_now).into();
        // First the pending floor: from its commit on, no event before `target` is applied, so
        // the session changes before it are final.
        let complete = floor
            .complete
            .as_ref()
            .map(|(at, state)| ((*at).into(), CheckpointRecord::new(state)));
        let pending = FloorRecord::V1 {
            complete: complete.clone(),
            pending: Some(target.into()),
            moved_at,
        };
        if floor.refuse_before.is_none_or(|at| at < target) {
            self.session_floor
                .insert(account.id.as_bytes(), encode(&pending))
                .map_err(|source| self.storage(source))?;
        }
        // The peaks of the closed months not kept yet, while their session changes are there.
        let from = match &floor.complete {
            Some((at, _)) => zone.month(*at),
            None => zone.month(account.created_at),
        };
        let mut kept = Vec::new();
        let mut month = from;
        while month < first_open {
            let key = month_key(&account.id, month);
            let exists = self
                .month_peaks
                .contains_key(&key)
                .map_err(|source| self.storage(source))?;
            if !exists {
                let peaks = self.concurrency_peaks(account, month, real_now)?;
                let record = MonthPeaksRecord::V1 {
                    zone: zone.name().to_owned(),
                    peaks,
                };
                kept.push((key, encode(&record)));
            }
            month = month.next();
        }
        // Who was logged in at `target` (the start of a day): from the start of its month, by
        // the kept days before it, else by the session changes up to it.
        let target_month = zone.month(target);
        let dirty = self
            .day_peaks_dirty
            .get(account.id.as_bytes())
            .map_err(|source| self.storage(source))?;
        let start = self.month_start_state(account, target_month, real_now, floor.complete)?;
        let target_day = zone.day(target);
        let from_days = (zone.start_of_day(target_day) == target)
            .then(|| {
                self.state_from_kept_days(
                    account,
                    target_month,
                    Some(target_day),
                    &start,
                    dirty.as_ref(),
                )
            })
            .transpose()?
            .flatten();
        let state = match from_days {
            Some(state) => state,
            None => {
                let mut state = start;
                for transition in
                    self.transitions(&account.id, Some(zone.start_of(target_month)), target)
                {
                    state.apply(transition?);
                }
                state
            }
        };
        let record = FloorRecord::V1 {
            complete: Some((target.into(), CheckpointRecord::new(&state))),
            pending: None,
            moved_at,
        };
        let months_kept = kept.len();
        let result = (&self.session_floor, &self.month_peaks).transaction(|(floors, peaks)| {
            for (key, value) in &kept {
                peaks.insert(key.as_slice(), value.as_slice())?;
            }
            floors.insert(account.id.as_bytes(), encode(&record))?;
            Ok::<(), ConflictableTransactionError<StoreError>>(())
        });
        self.finish_store(result)?;
        done.floors_moved += 1;
        done.months_kept += months_kept;
        tracing::debug!(
            account = %account.id,
            floor = %target,
            months_kept,
            "session history compacted up to a new floor"
        );
        Ok(())
    }

    /// Deletes up to `chunk` records the floor made useless: session changes before it, and
    /// the checkpoints and kept day peaks of the months before its month.
    fn delete_before_floor(
        &self,
        account: &Account,
        chunk: usize,
        done: &mut Compacted,
    ) -> Result<(), OpError> {
        let Some(below) = self.below_floor(account)? else {
            return Ok(());
        };
        let mut deleted = 0;
        let (sessions_from, sessions_to) = below.sessions;
        let cursor_key = below.cursor_key;
        let mut last = None;
        if sessions_from < sessions_to {
            for item in self
                .sessions
                .range(sessions_from..sessions_to)
                .keys()
                .take(chunk)
            {
                let key = item.map_err(|source| self.storage(source))?;
                self.forget(&self.sessions, &key)?;
                last = Some(key);
                deleted += 1;
            }
        }
        if let Some(last) = last {
            // The least key after `last`.
            let mut swept = last.to_vec();
            swept.push(0);
            self.session_floor
                .insert(cursor_key, swept)
                .map_err(|source| self.storage(source))?;
        }
        // Checkpoints and day peaks of this zone's months before the floor's month.
        let (within_zone, before) = below.months;
        for tree in [&self.checkpoints, &self.day_peaks] {
            for item in tree
                .range(within_zone.clone()..before.clone())
                .keys()
                .take(chunk.saturating_sub(deleted))
            {
                self.forget(tree, &item.map_err(|source| self.storage(source))?)?;
                deleted += 1;
            }
        }
        done.deleted += deleted;
        Ok(())
    }

    /// Deletes one record nothing reads any more. One by one, not in a batch: a sled batch
    /// (like a transaction) takes the database's one write lock, which every read and the
    /// ingest's transactions wait for, while a single removal only shares it. A crash halfway
    /// leaves some of a chunk deleted and the cursor behind them; the next chunk starts there
    /// again and finds them gone.
    fn forget(&self, tree: &sled::Tree, key: &[u8]) -> Result<(), StoreError> {
        tree.remove(key).map_err(|source| self.storage(source))?;
        Ok(())
    }
}
