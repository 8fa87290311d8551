//! Usage events: each batch group is one sled transaction in which every event's dedupe record is
//! written together with its effects (login day, session change, unlicensed usage, metered use).
//! A replayed event finds its dedupe record and changes nothing.

use std::collections::{BTreeMap, HashMap, hash_map::Entry};

use jiff::{Timestamp, civil};
use licensing_core::{
    Account, BillingMonth, Concurrency, Effects, Event, EventKind, LoginDay, MemberUse, Meter,
    MeterTotals, MeterUse, Outcome, PriceList, Refusal, SessionChange, SessionKind, Transition,
    accept, effects, month_closes_at,
};
use sled::{Transactional as _, transaction::ConflictableTransactionError};

use crate::{
    OpError, Store, StoreError,
    accounts::prefix,
    compact::decode_floor,
    records::{
        AccountRecord, CheckpointRecord, CheckpointsValid, DayRecord, DedupeRecord, MemberRecord,
        MeterRecord, PeaksDirty, SessionRecord, UnlicensedRecord, decode, encode, tier_of,
    },
};

/// A batch of events to ingest: each converted event, or the refusal its conversion met.
pub type Batch = Vec<Result<Event, Refusal>>;

/// What one chunk of [`Store::expire_dedupe`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DedupeSweep {
    /// Records deleted.
    pub expired: usize,
    /// The key to go on after; `None` when the tree was read to its end.
    pub next: Option<Vec<u8>>,
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(part);
    }
    key
}

/// A login day's key: account id, 0, `YYYY-MM`, 0, member id, 0, `YYYY-MM-DD`. The month comes
/// before the member, so that a month's days of every member lie together: reading them touches
/// that month's pages only, however many months the account keeps.
pub(crate) fn day_key(account_id: &str, member_id: &str, date: &str) -> Vec<u8> {
    let month = date.get(..7).unwrap_or(date);
    join(&[
        account_id.as_bytes(),
        month.as_bytes(),
        member_id.as_bytes(),
        date.as_bytes(),
    ])
}

/// The prefix of the keys of `account_id`'s login days in `month` (of one member's, given one).
fn month_days_prefix(account_id: &str, month: &str, member_id: Option<&str>) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = vec![account_id.as_bytes(), month.as_bytes()];
    if let Some(member) = member_id {
        parts.push(member.as_bytes());
    }
    parts.push(b"");
    join(&parts)
}

/// A login day's member id and date, from its key under `prefix` (the month's).
fn day_of_key<'k>(key: &'k [u8], prefix: &[u8]) -> Option<(&'k str, &'k str)> {
    let rest = key.get(prefix.len()..)?;
    let separator = rest.iter().position(|&b| b == 0)?;
    let member = std::str::from_utf8(rest.get(..separator)?).ok()?;
    let date = std::str::from_utf8(rest.get(separator.checked_add(1)?..)?).ok()?;
    Some((member, date))
}

/// Twelve bytes that sort like the instant: seconds with the sign bit flipped, then nanoseconds.
pub(crate) fn sortable(at: Timestamp) -> [u8; 12] {
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(&((at.as_second() as u64) ^ (1 << 63)).to_be_bytes());
    bytes[8..].copy_from_slice(&(at.subsec_nanosecond() as u32).to_be_bytes());
    bytes
}

fn unsortable(bytes: &[u8]) -> Option<Timestamp> {
    let seconds = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?) ^ (1 << 63);
    let nanos = u32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?);
    Timestamp::new(seconds as i64, nanos as i32).ok()
}

fn meter_code(meter: Meter) -> u8 {
    meter as u8
}

/// How a session change is kept in a [`SessionRecord`].
fn session_code(change: SessionKind) -> u8 {
    match change {
        SessionKind::Login => 0,
        SessionKind::Logout => 1,
        SessionKind::QueueLogin => 2,
        SessionKind::QueueLogout => 3,
    }
}

type TxError = ConflictableTransactionError<StoreError>;

/// `dirty` with `marked` (days in `zone`, each with its earliest session change of this commit)
/// marked by its next generation; a zone other than the record's starts a new epoch, in which
/// only these days are marked. A day marked already keeps the earlier of the two instants (and
/// stays unknown if it was).
fn mark_dirty(
    dirty: Option<PeaksDirty>,
    zone: &str,
    marked: &BTreeMap<civil::Date, Timestamp>,
) -> PeaksDirty {
    let (epoch, next, mut days) = crate::day_peaks::view(dirty, zone);
    for (day, at) in marked {
        let earliest = match days.get(&day.to_string()) {
            Some(mark) => mark.earliest.map(|e| e.min(*at)),
            None => Some(*at),
        };
        days.insert(
            day.to_string(),
            crate::day_peaks::Mark {
                generation: next,
                earliest,
            },
        );
    }
    crate::day_peaks::dirty_record(zone, epoch, next.wrapping_add(1), days)
}

fn corrupt(e: crate::records::Corrupt) -> TxError {
    ConflictableTransactionError::Abort(StoreError::Corrupt(e))
}

impl Store {
    /// Applies a group of batches in one transaction; returns one outcome per event, per batch.
    /// The caller makes it durable with [`Store::flush`] before acknowledging any of it.
    pub fn ingest(
        &self,
        batches: &[Batch],
        real_now: Timestamp,
        prices: &PriceList,
    ) -> Result<Vec<Vec<Outcome>>, OpError> {
        if self.has_failed() {
            return Err(OpError::Store(StoreError::Failed {
                path: self.path.clone(),
            }));
        }
        let trees = (
            &self.accounts,
            &self.members,
            &self.dedupe,
            &self.days,
            &self.sessions,
            &self.unlicensed,
            &self.meters,
            &self.checkpoints_valid,
            &self.day_peaks_dirty,
            &self.session_floor,
        );
        let result = trees.transaction(
            |(
                accounts,
                members,
                dedupe,
                days,
                sessions,
                unlicensed,
                meters,
                checkpoints_valid,
                day_peaks_dirty,
                session_floor,
            )| {
                // Caches live inside the closure: a rerun starts from the transaction's view again.
                let mut account_cache: HashMap<&str, Option<Account>> = HashMap::new();
                let mut member_cache: HashMap<(&str, &str), Option<MemberUse>> = HashMap::new();
                let mut valid_cache: HashMap<&str, Option<CheckpointsValid>> = HashMap::new();
                // Before what instant each account refuses events (its history is compacted).
                let mut floor_cache: HashMap<&str, (Option<Timestamp>, Option<Timestamp>)> =
                    HashMap::new();
                // The days given session changes, per account, in its zone: marked dirty once,
                // at the end.
                let mut dirty_days: HashMap<&str, (String, BTreeMap<civil::Date, Timestamp>)> =
                    HashMap::new();
                let mut outcomes = Vec::with_capacity(batches.len());
                for batch in batches {
                    let mut batch_outcomes = Vec::with_capacity(batch.len());
                    for event in batch {
                        let event = match event {
                            Ok(event) => event,
                            Err(refusal) => {
                                batch_outcomes.push(Outcome::Refused(refusal.clone()));
                                continue;
                            }
                        };
                        if let Err(refusal) = event.validate() {
                            batch_outcomes.push(Outcome::Refused(refusal));
                            continue;
                        }
                        let account = match account_cache.get(event.account_id.as_str()) {
                            Some(account) => account.clone(),
                            None => {
                                let account = match accounts.get(event.account_id.as_bytes())? {
                                    None => None,
                                    Some(bytes) => Some(
                                        decode::<AccountRecord>("account", &bytes)
                                            .and_then(|r| r.decode(&event.account_id))
                                            .map_err(corrupt)?,
                                    ),
                                };
                                account_cache.insert(&event.account_id, account.clone());
                                account
                            }
                        };
                        let Some(account) = account else {
                            batch_outcomes.push(Outcome::Refused(Refusal::UnknownAccount(
                                event.account_id.clone(),
                            )));
                            continue;
                        };
                        // The dedupe record first: an event applied before is a duplicate even
                        // after its month closed, for as long as its record is kept.
                        let dedupe_key = join(&[
                            event.account_id.as_bytes(),
                            event.source.as_bytes(),
                            event.event_id.as_bytes(),
                        ]);
                        let fingerprint = event.fingerprint();
                        if let Some(bytes) = dedupe.get(&dedupe_key)? {
                            let record: DedupeRecord = decode("dedupe", &bytes).map_err(corrupt)?;
                            batch_outcomes.push(if record.fingerprint() == fingerprint {
                                Outcome::Duplicate
                            } else {
                                Outcome::Refused(Refusal::ConflictingDuplicate {
                                    origin: event.source.clone(),
                                    event_id: event.event_id.clone(),
                                })
                            });
                            continue;
                        }
                        let month = match accept(&account, event.occurred_at, real_now) {
                            Ok(month) => month,
                            Err(refusal) => {
                                batch_outcomes.push(Outcome::Refused(refusal));
                                continue;
                            }
                        };
                        let (refuse_before, moved_at) = match floor_cache
                            .entry(event.account_id.as_str())
                        {
                            Entry::Occupied(entry) => *entry.get(),
                            Entry::Vacant(entry) => {
                                let floor = match session_floor.get(event.account_id.as_bytes())? {
                                    None => (None, None),
                                    Some(bytes) => {
                                        let floor = decode_floor(&bytes)
                                            .map_err(ConflictableTransactionError::Abort)?;
                                        (floor.refuse_before, floor.moved_at)
                                    }
                                };
                                *entry.insert(floor)
                            }
                        };
                        if refuse_before.is_some_and(|floor| event.occurred_at < floor) {
                            // Its month closed, and its history was compacted since.
                            let closed_at = month_closes_at(&account, month);
                            let closed_at = moved_at.map_or(closed_at, |m| m.min(closed_at));
                            batch_outcomes
                                .push(Outcome::Refused(Refusal::MonthClosed { month, closed_at }));
                            continue;
                        }
                        let member = if matches!(event.kind, EventKind::Metered { .. }) {
                            None
                        } else {
                            let member_key = (event.account_id.as_str(), event.member_id.as_str());
                            match member_cache.get(&member_key) {
                                Some(member) => *member,
                                None => {
                                    let key = join(&[
                                        event.account_id.as_bytes(),
                                        event.member_id.as_bytes(),
                                    ]);
                                    let member = match members.get(key)? {
                                        None => None,
                                        Some(bytes) => {
                                            let stored = decode::<MemberRecord>("member", &bytes)
                                                .and_then(|r| r.decode(&event.member_id))
                                                .map_err(corrupt)?;
                                            Some(MemberUse::of(
                                                &stored.settings,
                                                &account.settings,
                                                prices,
                                            ))
                                        }
                                    };
                                    member_cache.insert(member_key, member);
                                    member
                                }
                            }
                        };
                        let (tier, change, queue, login_day) =
                            match effects(event, &account.settings, &account.settings.zone, member)
                            {
                                Effects::Metered {
                                    meter,
                                    quantity,
                                    on,
                                } => {
                                    let key = join(&[
                                        event.account_id.as_bytes(),
                                        month.to_string().as_bytes(),
                                        &[meter_code(meter)],
                                    ]);
                                    let usage = match meters.get(&key)? {
                                        None => MeterUse::default(),
                                        Some(bytes) => MeterUse::from(
                                            decode::<MeterRecord>("meter", &bytes)
                                                .map_err(corrupt)?,
                                        ),
                                    };
                                    match usage.add(meter, month, quantity, on) {
                                        Ok(usage) => {
                                            dedupe.insert_blind(
                                                dedupe_key,
                                                encode(&DedupeRecord::new(fingerprint, month)),
                                            )?;
                                            meters.insert_blind(
                                                key,
                                                encode(&MeterRecord::from(usage)),
                                            )?;
                                            batch_outcomes.push(Outcome::Applied);
                                        }
                                        // Refused, so no dedupe record: the same event is refused
                                        // again.
                                        Err(refusal) => {
                                            batch_outcomes.push(Outcome::Refused(refusal));
                                        }
                                    }
                                    continue;
                                }
                                Effects::Unlicensed => {
                                    dedupe.insert_blind(
                                        dedupe_key,
                                        encode(&DedupeRecord::new(fingerprint, month)),
                                    )?;
                                    let key = join(&[
                                        event.account_id.as_bytes(),
                                        event.member_id.as_bytes(),
                                    ]);
                                    let (events, last_seen) = match unlicensed.get(&key)? {
                                        None => (0, event.occurred_at),
                                        Some(bytes) => {
                                            decode::<UnlicensedRecord>("unlicensed", &bytes)
                                                .and_then(UnlicensedRecord::decode)
                                                .map_err(corrupt)?
                                        }
                                    };
                                    let record = UnlicensedRecord::V1 {
                                        events: events + 1,
                                        last_seen: last_seen.max(event.occurred_at).into(),
                                    };
                                    unlicensed.insert_blind(key, encode(&record))?;
                                    batch_outcomes.push(Outcome::Applied);
                                    continue;
                                }
                                Effects::Session {
                                    member,
                                    change,
                                    queue,
                                    login_day,
                                } => (member.tier, change, queue, login_day),
                            };
                        dedupe.insert_blind(
                            dedupe_key,
                            encode(&DedupeRecord::new(fingerprint, month)),
                        )?;
                        if let Some(date) = login_day {
                            let date = date.to_string();
                            let key = day_key(&event.account_id, &event.member_id, &date);
                            let day = match days.get(&key)? {
                                None => None,
                                Some(bytes) => Some(
                                    decode::<DayRecord>("login day", &bytes)
                                        .and_then(DayRecord::decode)
                                        .map_err(corrupt)?,
                                ),
                            };
                            let id = format!("{}/{}", event.source, event.event_id);
                            let daily = member.is_some_and(|m| m.daily);
                            let queue = (change == SessionKind::QueueLogin).then_some(queue);
                            let day = LoginDay::add(day, tier, daily, &id, queue);
                            days.insert_blind(key, encode(&DayRecord::from(&day)))?;
                        }
                        {
                            let change = session_code(change);
                            let key = join(&[
                                event.account_id.as_bytes(),
                                &sortable(event.occurred_at),
                                event.member_id.as_bytes(),
                                event.source.as_bytes(),
                                event.event_id.as_bytes(),
                            ]);
                            let record = SessionRecord::V1 {
                                tier: tier as u8,
                                change,
                                queue: queue.to_owned(),
                            };
                            // Blind, as every write of this transaction: sled's `insert` looks
                            // the key up to return its old value, a whole descent of the tree
                            // for a session change, whose key is new.
                            sessions.insert_blind(key, encode(&record))?;
                            let zone = &account.settings.zone;
                            dirty_days
                                .entry(event.account_id.as_str())
                                .or_insert_with(|| (zone.name().to_owned(), BTreeMap::new()))
                                .1
                                .entry(zone.day(event.occurred_at))
                                .and_modify(|at| *at = (*at).min(event.occurred_at))
                                .or_insert(event.occurred_at);
                            // The checkpoints of the months after this one no longer say who
                            // was logged in at their start; and a read counting those months
                            // now may have missed it.
                            let valid = match valid_cache.entry(event.account_id.as_str()) {
                                Entry::Occupied(entry) => entry.into_mut(),
                                Entry::Vacant(entry) => {
                                    let valid = match checkpoints_valid
                                        .get(event.account_id.as_bytes())?
                                    {
                                        None => None,
                                        Some(bytes) => Some(
                                            decode::<CheckpointsValid>("checkpoints valid", &bytes)
                                                .map_err(corrupt)?,
                                        ),
                                    };
                                    entry.insert(valid)
                                }
                            };
                            if let Some(record) = valid {
                                let CheckpointsValid::V1 { through, late, .. } = record;
                                let month = account.settings.zone.month(event.occurred_at);
                                let current = account.settings.zone.month(account.now(real_now));
                                if month < current {
                                    if BillingMonth::parse(through).map_or(true, |t| month < t) {
                                        *through = month.to_string();
                                    }
                                    *late = late.wrapping_add(1);
                                    checkpoints_valid.insert_blind(
                                        event.account_id.as_bytes(),
                                        encode(&*record),
                                    )?;
                                }
                            }
                        }
                        batch_outcomes.push(Outcome::Applied);
                    }
                    outcomes.push(batch_outcomes);
                }
                for (account_id, (zone, marked)) in &dirty_days {
                    let dirty = match day_peaks_dirty.get(account_id.as_bytes())? {
                        None => None,
                        Some(bytes) => {
                            Some(decode::<PeaksDirty>("day peaks dirty", &bytes).map_err(corrupt)?)
                        }
                    };
                    let dirty = mark_dirty(dirty, zone, marked);
                    day_peaks_dirty.insert_blind(account_id.as_bytes(), encode(&dirty))?;
                }
                Ok(outcomes)
            },
        );
        self.finish_store(result)
    }

    /// A member's login days in `month`, oldest first.
    pub fn login_days(
        &self,
        account_id: &str,
        member_id: &str,
        month: BillingMonth,
    ) -> Result<Vec<(String, LoginDay)>, OpError> {
        let start = month_days_prefix(account_id, &month.to_string(), Some(member_id));
        let mut result = Vec::new();
        for item in self.days.scan_prefix(&start) {
            let (key, value) = item.map_err(|source| self.storage(source))?;
            let date = String::from_utf8_lossy(&key[start.len()..]).into_owned();
            let day = decode::<DayRecord>("login day", &value)
                .and_then(DayRecord::decode)
                .map_err(StoreError::from)?;
            result.push((date, day));
        }
        Ok(result)
    }

    /// The login days in `month` of each of `members` (ascending ids, as [`Store::members`]
    /// lists them), oldest first. One pass over the month's days from the first member's:
    /// members without days cost nothing, and other months' days are never read.
    pub fn members_login_days(
        &self,
        account_id: &str,
        members: &[&str],
        month: BillingMonth,
    ) -> Result<Vec<Vec<(String, LoginDay)>>, OpError> {
        let prefix = month_days_prefix(account_id, &month.to_string(), None);
        let mut result = Vec::with_capacity(members.len());
        let Some(first) = members.first() else {
            return Ok(result);
        };
        let mut end = prefix.clone();
        // The separator byte plus one bounds the month's keys: ids never contain byte 0.
        if let Some(last) = end.last_mut() {
            *last = 1;
        }
        let mut from = prefix.clone();
        from.extend_from_slice(first.as_bytes());
        let mut days = self.days.range(from..end);
        let mut next = days
            .next()
            .transpose()
            .map_err(|source| self.storage(source))?;
        for member in members {
            let mut member_days = Vec::new();
            while let Some((key, value)) = &next {
                let Some((of, date)) = day_of_key(key, &prefix) else {
                    return Err(StoreError::Corrupt(crate::Corrupt {
                        what: "login day",
                        problem: "key".into(),
                    })
                    .into());
                };
                match of.cmp(member) {
                    // A member not asked for (of another tier, say): passed over.
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => {
                        let day = decode::<DayRecord>("login day", value)
                            .and_then(DayRecord::decode)
                            .map_err(StoreError::from)?;
                        member_days.push((date.to_owned(), day));
                    }
                    std::cmp::Ordering::Greater => break,
                }
                next = days
                    .next()
                    .transpose()
                    .map_err(|source| self.storage(source))?;
            }
            result.push(member_days);
        }
        Ok(result)
    }

    /// The login days in `month` of every member the account has days for (removed members
    /// too), by member id then date: one pass over the month's own keys, whatever the history.
    pub fn month_login_days(
        &self,
        account_id: &str,
        month: BillingMonth,
    ) -> Result<Vec<(String, String, LoginDay)>, OpError> {
        let prefix = month_days_prefix(account_id, &month.to_string(), None);
        let mut result = Vec::new();
        for item in self.days.scan_prefix(&prefix) {
            let (key, value) = item.map_err(|source| self.storage(source))?;
            let Some((member, date)) = day_of_key(&key, &prefix) else {
                return Err(StoreError::Corrupt(crate::Corrupt {
                    what: "login day",
                    problem: "key".into(),
                })
                .into());
            };
            let day = decode::<DayRecord>("login day", &value)
                .and_then(DayRecord::decode)
                .map_err(StoreError::from)?;
            result.push((member.to_owned(), date.to_owned(), day));
        }
        Ok(result)
    }

    /// The login days of each of `members` (ascending ids, as [`Store::members`] lists them)
    /// in each of `months` (ascending), dated, oldest first: one pass per month over the
    /// month's days from the first member's to the last's, as [`Store::members_login_days`].
    pub fn members_days(
        &self,
        account_id: &str,
        members: &[&str],
        months: &[BillingMonth],
    ) -> Result<Vec<Vec<(civil::Date, LoginDay)>>, OpError> {
        let mut result: Vec<Vec<(civil::Date, LoginDay)>> = vec![Vec::new(); members.len()];
        for month in months {
            let read = self.members_login_days(account_id, members, *month)?;
            for (days, member_days) in result.iter_mut().zip(read) {
                for (date, day) in member_days {
                    let date: civil::Date = date.parse().map_err(|_| {
                        StoreError::Corrupt(crate::Corrupt {
                            what: "login day",
                            problem: format!("date {date:?}"),
                        })
                    })?;
                    days.push((date, day));
                }
            }
        }
        Ok(result)
    }

    /// The peak number of concurrently logged-in agents per tier in `month`.
    ///
    /// The month's peak is the highest of its days' kept peaks (see `day_peaks.rs`): a read
    /// costs a record per day, plus counting again the days a session change landed in since.
    /// The state the month starts in comes from the checkpoint of who was logged in at its
    /// start. Without a valid checkpoint for the month, the count starts from the latest valid
    /// one before it (or from the account's first session change) and walks the months in
    /// between, and their checkpoints are written for the next read (unless a session change
    /// invalidated them meanwhile).
    pub fn concurrency_peaks(
        &self,
        account: &Account,
        month: BillingMonth,
        real_now: Timestamp,
    ) -> Result<[u32; 5], OpError> {
        Ok(self.concurrency_peaks_counted(account, month, real_now)?.0)
    }

    /// [`Store::concurrency_peaks`], and how many of the month's days it counted from their
    /// session changes (the others' kept peaks were valid).
    #[doc(hidden)]
    pub fn concurrency_peaks_counted(
        &self,
        account: &Account,
        month: BillingMonth,
        real_now: Timestamp,
    ) -> Result<([u32; 5], usize), OpError> {
        // Before any session change is read: a commit after this marks the days it changed
        // with a generation this read did not see, so what the read counts of them is not kept.
        let dirty = self
            .day_peaks_dirty
            .get(account.id.as_bytes())
            .map_err(|source| self.storage(source))?;
        let floor = self.floor(&account.id)?.complete;
        if let Some((floor_at, _)) = &floor
            && account.settings.zone.start_of(month) < *floor_at
        {
            // A month compacted away: its peaks as kept when it was.
            return Ok((self.frozen_peaks(&account.id, month)?, 0));
        }
        let state = self.month_start_state(account, month, real_now, floor)?;
        self.peaks_by_day(account, month, state, dirty.as_ref())
    }

    /// Who was logged in at the first instant of `month`: from the latest valid checkpoint at or
    /// before it, else from `floor` (who was logged in when the account's history was compacted
    /// up to), else from the account's first session change; the checkpoints of the months
    /// walked are written for the next read.
    pub(crate) fn month_start_state(
        &self,
        account: &Account,
        month: BillingMonth,
        real_now: Timestamp,
        floor: Option<(Timestamp, Concurrency)>,
    ) -> Result<Concurrency, OpError> {
        let zone = &account.settings.zone;
        let valid_key = account.id.as_bytes();
        let seen = self
            .checkpoints_valid
            .get(valid_key)
            .map_err(|source| self.storage(source))?;
        let through = match seen.as_deref() {
            None => None,
            Some(bytes) => match decode::<CheckpointsValid>("checkpoints valid", bytes)
                .map_err(StoreError::from)?
            {
                CheckpointsValid::V1 {
                    zone: valid_in,
                    through,
                    ..
                } if valid_in == zone.name() => {
                    Some(BillingMonth::parse(&through).map_err(|_| {
                        StoreError::Corrupt(crate::Corrupt {
                            what: "checkpoints valid",
                            problem: "month".into(),
                        })
                    })?)
                }
                // Another zone's months: none of its checkpoints count.
                CheckpointsValid::V1 { .. } => None,
            },
        };
        // The latest valid checkpoint at or before `month` (and not before the floor: the
        // session changes after such a checkpoint may be compacted away).
        let mut start = None;
        let checkpoints = join(&[account.id.as_bytes(), zone.name().as_bytes(), b""]);
        if let Some(through) = through {
            let last = month.min(through);
            let to = join(&[
                account.id.as_bytes(),
                zone.name().as_bytes(),
                last.to_string().as_bytes(),
            ]);
            if let Some(item) = self.checkpoints.range(checkpoints.clone()..=to).next_back() {
                let (key, value) = item.map_err(|source| self.storage(source))?;
                let at = BillingMonth::parse(&String::from_utf8_lossy(&key[checkpoints.len()..]))
                    .map_err(|_| {
                    StoreError::Corrupt(crate::Corrupt {
                        what: "checkpoint",
                        problem: "key month".into(),
                    })
                })?;
                if floor
                    .as_ref()
                    .is_none_or(|(floor_at, _)| zone.start_of(at) >= *floor_at)
                {
                    let state = decode::<CheckpointRecord>("checkpoint", &value)
                        .and_then(CheckpointRecord::decode)
                        .map_err(StoreError::from)?;
                    start = Some((at, state));
                }
            }
        }
        let mut written = Vec::new();
        let (mut at, mut state) = match (start, floor) {
            (Some(start), _) => start,
            (None, Some((floor_at, mut state))) => {
                // From the floor to the start of the first month after it.
                let at = zone.month(floor_at);
                let at = if zone.start_of(at) == floor_at {
                    at
                } else {
                    let next = at.next();
                    for transition in
                        self.transitions(&account.id, Some(floor_at), zone.start_of(next))
                    {
                        state.apply(transition?);
                    }
                    next
                };
                written.push((at, CheckpointRecord::new(&state)));
                (at, state)
            }
            (None, None) => {
                // From the month of the account's first session change: before it, nobody was
                // logged in. Every month from there on gets its checkpoint written.
                let first = self
                    .transitions(&account.id, None, zone.start_of(month))
                    .next()
                    .transpose()?;
                let at = first.map_or(month, |t| zone.month(t.at));
                let state = Concurrency::default();
                written.push((at, CheckpointRecord::new(&state)));
                (at, state)
            }
        };
        // Month by month: from the month's kept days (a record per day), else day by day, the
        // days kept as they are and the others counted from their session changes and kept (the
        // keeper, compaction and the next read then find them counted).
        let dirty = if at < month {
            self.day_peaks_dirty
                .get(account.id.as_bytes())
                .map_err(|source| self.storage(source))?
        } else {
            None
        };
        while at < month {
            let next = at.next();
            state = match self.state_from_kept_days(account, at, None, &state, dirty.as_ref())? {
                Some(end) => end,
                None => self.month_end_by_day(account, at, state, dirty.as_ref())?,
            };
            at = next;
            written.push((at, CheckpointRecord::new(&state)));
        }
        if !written.is_empty() {
            let current = zone.month(account.now(real_now));
            self.keep_checkpoints(account, seen.as_deref(), through, current, &written)?;
        }
        Ok(state)
    }

    /// Writes the checkpoints a read counted, up to the account's `current` month, and raises
    /// their account's validity to the last of them, unless a session change moved it since the
    /// read saw `seen`.
    fn keep_checkpoints(
        &self,
        account: &Account,
        seen: Option<&[u8]>,
        through: Option<BillingMonth>,
        current: BillingMonth,
        written: &[(BillingMonth, CheckpointRecord)],
    ) -> Result<(), OpError> {
        if self.has_failed() {
            return Ok(());
        }
        // Only up to the current month: a session change in it or later is not counted as late
        // (it changes no record), so a read counting those months could miss one unseen.
        let written: Vec<_> = written.iter().filter(|(at, _)| *at <= current).collect();
        let Some(last) = written.last().map(|(at, _)| *at) else {
            return Ok(());
        };
        let late = match seen.map(|bytes| decode::<CheckpointsValid>("checkpoints valid", bytes)) {
            Some(Ok(CheckpointsValid::V1 { late, .. })) => late,
            _ => 0,
        };
        let valid = CheckpointsValid::V1 {
            zone: account.settings.zone.name().to_owned(),
            through: through.map_or(last, |t| t.max(last)).to_string(),
            late,
        };
        let result = (&self.checkpoints, &self.checkpoints_valid).transaction(
            |(checkpoints, checkpoints_valid)| {
                let now = checkpoints_valid.get(account.id.as_bytes())?;
                if now.as_deref() != seen {
                    return Ok(());
                }
                for (at, record) in &written {
                    let key = join(&[
                        account.id.as_bytes(),
                        account.settings.zone.name().as_bytes(),
                        at.to_string().as_bytes(),
                    ]);
                    checkpoints.insert(key, encode(record))?;
                }
                checkpoints_valid.insert(account.id.as_bytes(), encode(&valid))?;
                Ok::<(), ConflictableTransactionError<StoreError>>(())
            },
        );
        self.finish_store(result)
    }

    /// The account's session changes in `[from, to)` (from its first when `from` is `None`), in
    /// key order.
    pub(crate) fn transitions<'a>(
        &'a self,
        account_id: &str,
        from: Option<Timestamp>,
        to: Timestamp,
    ) -> impl Iterator<Item = Result<Transition, OpError>> + 'a {
        let start = match from {
            Some(from) => join(&[account_id.as_bytes(), &sortable(from)]),
            None => prefix(account_id),
        };
        let end = join(&[account_id.as_bytes(), &sortable(to)]);
        let skip = prefix(account_id).len();
        self.sessions.range(start..end).map(move |item| {
            let (key, value) = item.map_err(|source| self.storage(source))?;
            let rest = &key[skip..];
            let at = unsortable(rest).ok_or_else(|| {
                StoreError::Corrupt(crate::Corrupt {
                    what: "session",
                    problem: "key time".into(),
                })
            })?;
            let member = rest
                .get(13..)
                .and_then(|r| r.split(|&b| b == 0).next())
                .unwrap_or_default();
            let SessionRecord::V1 {
                tier,
                change,
                queue,
            } = decode("session", &value).map_err(StoreError::from)?;
            let change = match change {
                0 => SessionChange::Login,
                1 => SessionChange::Logout,
                2 => SessionChange::QueueLogin(queue),
                _ => SessionChange::QueueLogout(queue),
            };
            Ok(Transition {
                at,
                member_id: String::from_utf8_lossy(member).into_owned(),
                tier: tier_of(tier, "session").map_err(StoreError::from)?,
                change,
            })
        })
    }

    /// The peaks of `month` counted over the whole history, without checkpoints: what
    /// [`Store::concurrency_peaks`] must always agree with (for tests).
    #[doc(hidden)]
    pub fn concurrency_peaks_from_the_beginning(
        &self,
        account: &Account,
        month: BillingMonth,
    ) -> Result<[u32; 5], OpError> {
        let zone = &account.settings.zone;
        let (from, to) = (zone.start_of(month), zone.start_of(month.next()));
        let (start, mut state) = match self.floor(&account.id)?.complete {
            Some((floor_at, _)) if from < floor_at => {
                return self.frozen_peaks(&account.id, month);
            }
            Some((floor_at, state)) => (Some(floor_at), state),
            None => (None, Concurrency::default()),
        };
        let mut within = Vec::new();
        for transition in self.transitions(&account.id, start, to) {
            let transition = transition?;
            if transition.at < from {
                state.apply(transition);
            } else {
                within.push(transition);
            }
        }
        Ok(state.peaks_over(within).0)
    }

    /// Usage by members the account does not know: `(member id, events, last seen)`.
    pub fn unlicensed(&self, account_id: &str) -> Result<Vec<(String, u64, Timestamp)>, OpError> {
        self.unlicensed_after(account_id, None).collect()
    }

    /// Usage by members the account does not know, in member id order after `after`, read as
    /// the iterator is: `(member id, events, last seen)`.
    pub fn unlicensed_after<'a>(
        &'a self,
        account_id: &str,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<(String, u64, Timestamp), OpError>> + 'a {
        let start = prefix(account_id);
        let skip = start.len();
        let range = crate::range_after(&start, after.map(str::as_bytes));
        self.unlicensed.range(range).map(move |item| {
            let (key, value) = item.map_err(|source| self.storage(source))?;
            let (events, last_seen) = decode::<UnlicensedRecord>("unlicensed", &value)
                .and_then(UnlicensedRecord::decode)
                .map_err(StoreError::from)?;
            Ok((
                String::from_utf8_lossy(&key[skip..]).into_owned(),
                events,
                last_seen,
            ))
        })
    }

    /// Metered use in `month`.
    pub fn meter_totals(
        &self,
        account_id: &str,
        month: BillingMonth,
    ) -> Result<MeterTotals, OpError> {
        let mut totals = MeterTotals::new();
        for meter in Meter::ALL {
            let key = join(&[
                account_id.as_bytes(),
                month.to_string().as_bytes(),
                &[meter_code(meter)],
            ]);
            if let Some(bytes) = self
                .meters
                .get(key)
                .map_err(|source| self.storage(source))?
            {
                let record: MeterRecord = decode("meter", &bytes).map_err(StoreError::from)?;
                totals.insert(meter, record.into());
            }
        }
        Ok(totals)
    }

    /// Deletes, among at most `limit` dedupe records after the key `after` (from the first when
    /// `None`), those whose month closed more than `retention_days` ago in their account's
    /// calendar: until then a redelivered event is answered DUPLICATE, after that MONTH_CLOSED.
    /// Returns how many were deleted and the key to go on after, `None` once the tree (or the
    /// records of the account `within`, when given) was read to its end. Bounded chunks let the
    /// caller sweep the whole tree without holding anything long.
    pub fn expire_dedupe(
        &self,
        real_now: Timestamp,
        retention_days: u32,
        within: Option<&str>,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<DedupeSweep, OpError> {
        let mut sweep = DedupeSweep::default();
        let mut accounts: HashMap<Vec<u8>, Option<Account>> = HashMap::new();
        let prefix = within.map(crate::accounts::prefix);
        let items = match (&prefix, after) {
            (Some(prefix), None) => self.dedupe.range(prefix.as_slice()..),
            (_, after) => crate::after(&self.dedupe, after),
        };
        for (read, item) in items.enumerate() {
            if read == limit {
                return Ok(sweep);
            }
            let (key, value) = item.map_err(|source| self.storage(source))?;
            if prefix
                .as_ref()
                .is_some_and(|prefix| !key.starts_with(prefix))
            {
                break;
            }
            sweep.next = Some(key.to_vec());
            let account_id = key.split(|&b| b == 0).next().unwrap_or_default().to_vec();
            let account = match accounts.get(&account_id) {
                Some(account) => account.clone(),
                None => {
                    let id = String::from_utf8_lossy(&account_id).into_owned();
                    let account = match self.account(&id) {
                        Ok(account) => Some(account),
                        Err(OpError::AccountNotFound(_)) => None,
                        Err(e) => return Err(e),
                    };
                    accounts.insert(account_id, account.clone());
                    account
                }
            };
            let Some(account) = account else { continue };
            let record: DedupeRecord = decode("dedupe", &value).map_err(StoreError::from)?;
            let month = record.month().map_err(StoreError::from)?;
            let expires_at = account
                .settings
                .zone
                .add_days(month_closes_at(&account, month), i64::from(retention_days));
            if account.now(real_now) >= expires_at {
                // Only if unchanged since read: a concurrent ingest never loses its record.
                if self
                    .dedupe
                    .compare_and_swap(&key, Some(&value), None::<&[u8]>)
                    .map_err(|source| self.storage(source))?
                    .is_ok()
                {
                    sweep.expired += 1;
                }
            }
        }
        sweep.next = None;
        Ok(sweep)
    }

    pub(crate) fn storage(&self, source: sled::Error) -> StoreError {
        self.failed_with(StoreError::Storage {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests;
