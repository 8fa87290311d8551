//! Upkeep off the writer's path: the dedupe sweep deletes dedupe records whose retention after
//! their month's close has passed, and compaction moves the floor below which the session
//! changes of closed months are deleted (by the writer, between its commits).

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
/// Dedupe records the sweep reads per step on the blocking pool.
const DEDUPE_SWEEP_CHUNK: usize = 1024;
/// Accounts compaction looks at per step.
const COMPACTION_ACCOUNTS: usize = 8;
/// How often a long compaction logs its progress.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Deletes expired dedupe records and compacts closed months every [`DEDUPE_SWEEP_INTERVAL`],
/// and whenever an account's clock moved (`moves`): compaction then looks at every account, the
/// dedupe sweep only at the accounts that moved. Off the writer's path: in chunks on the
/// blocking pool, so that neither the writer nor the pool is held for long however large the
/// trees. Deletions need no flush: one lost in a crash is deleted again by the next sweep.
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
        // floor (a record or two each), the dedupe sweep reads the records of the accounts
        // that moved; the hourly sweep reads every dedupe record.
        let accounts = tokio::select! {
            _ = every.tick() => None,
            moved = moves.next() => Some(moved),
            () = &mut stopping => return,
        };
        compact(&store, &tidy).await;
        match accounts {
            None => expire_dedupe(&store, retention_days, None).await,
            Some(accounts) => {
                for account in &accounts {
                    expire_dedupe(&store, retention_days, Some(account)).await;
                }
            }
        }
    }
}

/// Deletes the expired dedupe records (of the account `within`, or all), in chunks.
async fn expire_dedupe(store: &Store, retention_days: u32, within: Option<&str>) {
    let within = within.map(str::to_owned);
    let (mut after, mut expired) = (None::<Vec<u8>>, 0);
    while !store.has_failed() {
        let (chunk_store, from, account) = (store.clone(), after.take(), within.clone());
        let chunk = tokio::task::spawn_blocking(move || {
            chunk_store.expire_dedupe(
                Timestamp::now(),
                retention_days,
                account.as_deref(),
                from.as_deref(),
                DEDUPE_SWEEP_CHUNK,
            )
        })
        .await;
        match chunk {
            Ok(Ok(chunk)) => {
                expired += chunk.expired;
                match chunk.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "dedupe sweep failed; it runs again next hour");
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "dedupe sweep task failed; it runs again next hour");
                break;
            }
        }
    }
    metrics::counter!("licensing_dedupe_expired_total").increment(expired as u64);
    if expired > 0 {
        tracing::info!(
            expired,
            retention_days,
            account = within.as_deref().unwrap_or("(all)"),
            "expired dedupe records deleted"
        );
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
