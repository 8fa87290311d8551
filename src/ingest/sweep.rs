//! Upkeep: compaction moves the floor below which the session changes of closed months are
//! deleted, and the dedupe sweep names the accounts whose dedupe records past their retention
//! after their month's close are to be deleted; the writer deletes both, between its commits.

use std::{collections::BTreeSet, sync::Mutex, time::Duration};

use licensing_core::Timestamp;
use licensing_store::Store;
use tokio::sync::Notify;

/// The accounts whose clock moved since the sweep last looked: months of theirs may have closed
/// (to compact) and their dedupe records' retention may have run out (to expire).
#[derive(Debug, Default)]
pub struct ClockMoves {
    accounts: Mutex<BTreeSet<String>>,
    wake: Notify,
}

impl ClockMoves {
    /// `account`'s clock moved.
    pub fn moved(&self, account: &str) {
        self.accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(account.to_owned());
        self.wake.notify_one();
    }

    /// Waits for a clock to move, then takes every account that moved.
    async fn next(&self) -> BTreeSet<String> {
        self.wake.notified().await;
        std::mem::take(
            &mut *self
                .accounts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// How often expired dedupe records are deleted.
const DEDUPE_SWEEP_INTERVAL: Duration = Duration::from_secs(3600);
/// Accounts the hourly dedupe sweep lists per step on the blocking pool.
const DEDUPE_SWEEP_CHUNK: usize = 1024;
/// Accounts compaction looks at per step.
const COMPACTION_ACCOUNTS: usize = 8;
/// How often a long compaction logs its progress.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Compacts closed months and has expired dedupe records deleted every
/// [`DEDUPE_SWEEP_INTERVAL`], and whenever an account's clock moved (`moves`): compaction then
/// looks at every account, the dedupe expiry only at the accounts that moved. The sweep moves
/// floors and names accounts; the deleting is the writer's, in slices between its commits
/// (`tidy`). Deletions need no flush: one lost in a crash is deleted again by the next sweep.
pub(super) async fn sweep_dedupe(
    store: Store,
    retention_days: u32,
    (moves, tidy): (
        std::sync::Arc<ClockMoves>,
        std::sync::Arc<super::writer::Tidy>,
    ),
    stopping: impl Future<Output = ()>,
) {
    tokio::pin!(stopping);
    let mut every = tokio::time::interval(DEDUPE_SWEEP_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // A clock that moved may have closed months: compaction looks at every account's
        // floor (a record or two each), the dedupe expiry at the records of the accounts that
        // moved; every hour, at every account's.
        let accounts = tokio::select! {
            _ = every.tick() => None,
            moved = moves.next() => Some(moved),
            () = &mut stopping => return,
        };
        compact(&store, &tidy).await;
        match accounts {
            None => every_account_to_expire(&store, &tidy, retention_days).await,
            Some(accounts) => {
                ask_due(
                    &store,
                    &tidy,
                    retention_days,
                    accounts.into_iter().collect(),
                )
                .await;
            }
        }
    }
}

/// Asks the writer to expire the dedupe records of those `accounts` for which a month expired
/// since their records were last read to the end ([`Store::dedupe_expiry_due`]): reading an
/// account's records costs what it holds, so they are read once per month that expires.
async fn ask_due(
    store: &Store,
    tidy: &super::writer::Tidy,
    retention_days: u32,
    accounts: Vec<String>,
) {
    let read_store = store.clone();
    let due = tokio::task::spawn_blocking(move || {
        let now = Timestamp::now();
        accounts
            .into_iter()
            .filter_map(|id| {
                let account = read_store.account(&id).ok()?;
                let month = read_store
                    .dedupe_expiry_due(&account, now, retention_days)
                    .ok()??;
                Some((id, month))
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for (account, month) in due {
        tidy.want_dedupe(account, retention_days, month);
    }
}

/// Asks the writer to expire the dedupe records of every account where some are due, listing
/// the accounts in chunks.
async fn every_account_to_expire(store: &Store, tidy: &super::writer::Tidy, retention_days: u32) {
    let mut after = None::<String>;
    while !store.has_failed() {
        let (chunk_store, from) = (store.clone(), after.take());
        let listed = tokio::task::spawn_blocking(move || {
            chunk_store.account_ids(from.as_deref(), DEDUPE_SWEEP_CHUNK)
        })
        .await;
        let ids = match listed {
            Ok(Ok(ids)) => ids,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "dedupe sweep failed; it runs again next hour");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "dedupe sweep task failed; it runs again next hour");
                return;
            }
        };
        let last = ids.len() < DEDUPE_SWEEP_CHUNK;
        after = ids.last().cloned();
        ask_due(store, tidy, retention_days, ids).await;
        if last {
            return;
        }
    }
}

/// Moves the floor of every account whose months closed and hands the accounts with records
/// below their floor to the writer, which deletes them ([`super::writer::Tidy`]); logs whenever
/// a floor moves, its progress every [`PROGRESS_EVERY`], and what it did.
async fn compact(store: &Store, tidy: &super::writer::Tidy) {
    let started = std::time::Instant::now();
    let mut reported = started;
    let mut total = licensing_store::Compacted::default();
    let mut after = None::<Vec<u8>>;
    while !store.has_failed() {
        let (chunk_store, from) = (store.clone(), after.take());
        let chunk = tokio::task::spawn_blocking(move || {
            chunk_store.compact(Timestamp::now(), from.as_deref(), COMPACTION_ACCOUNTS, 0)
        })
        .await;
        let chunk = match chunk {
            Ok(Ok(chunk)) => chunk,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "compaction failed; it runs again next hour");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "compaction task failed; it runs again next hour");
                return;
            }
        };
        total.floors_moved += chunk.floors_moved;
        total.months_kept += chunk.months_kept;
        if chunk.floors_moved > 0 {
            tracing::info!(
                floors_moved = chunk.floors_moved,
                months_kept = chunk.months_kept,
                "compacting closed months"
            );
        } else if reported.elapsed() >= PROGRESS_EVERY {
            reported = std::time::Instant::now();
            tracing::info!(
                floors_moved = total.floors_moved,
                "compacting closed months: still going"
            );
        }
        for account in chunk.pending {
            tidy.want(account);
        }
        match chunk.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if total.floors_moved > 0 {
        tracing::info!(
            floors_moved = total.floors_moved,
            months_kept = total.months_kept,
            accounts_to_tidy = tidy.waiting(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "closed months compacted"
        );
    }
}
