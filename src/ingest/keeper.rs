//! The peaks keeper: after commits, counts the days whose concurrency peaks they changed, so that
//! a read of a month finds every day's peak kept and costs a record per day; then tells
//! `GetUsage` followers which accounts and members ingestion changed.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use licensing_core::{Outcome, Timestamp};
use licensing_store::{Batch, Store};
use tokio::sync::Notify;

use crate::{
    foreground::{self, Foreground},
    service::UsageChanges,
};

/// What the writer tells the keeper after a commit: that events were applied (`wake`), and, when
/// someone follows usage, which accounts and members they changed, until the keeper announces
/// them to the followers, coalesced.
#[derive(Debug, Default)]
pub(super) struct Feed {
    wake: Notify,
    changes: Option<UsageChanges>,
    /// Account id to the members whose events were applied since the last announcement.
    touched: Mutex<HashMap<String, BTreeSet<String>>>,
}

impl Feed {
    pub(super) fn new(changes: Option<UsageChanges>) -> Feed {
        Feed {
            changes,
            ..Feed::default()
        }
    }

    /// After a commit: notes what its applied events changed (only when usage is followed: a
    /// few map inserts per event, whatever the number of followers) and wakes the keeper.
    pub(super) fn committed(
        &self,
        batches: &[Batch],
        answers: &[Result<Vec<Outcome>, tonic::Status>],
    ) {
        let mut any = false;
        let followed = self.changes.as_ref().is_some_and(UsageChanges::followed);
        let mut touched = followed.then(|| {
            self.touched
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        });
        for (batch, answer) in batches.iter().zip(answers) {
            let Ok(outcomes) = answer else { continue };
            for (event, outcome) in batch.iter().zip(outcomes) {
                let (Ok(event), Outcome::Applied) = (event, outcome) else {
                    continue;
                };
                any = true;
                let Some(touched) = touched.as_mut() else {
                    break;
                };
                let members = match touched.get_mut(&event.account_id) {
                    Some(members) => members,
                    None => touched.entry(event.account_id.clone()).or_default(),
                };
                if !matches!(event.kind, licensing_core::EventKind::Metered { .. })
                    && !members.contains(&event.member_id)
                {
                    members.insert(event.member_id.clone());
                }
            }
        }
        drop(touched);
        if any {
            // The keeper counts the days this changed (a notification waiting is not doubled).
            self.wake.notify_one();
        }
    }

    /// Announces every account changed since the last time, with its members.
    fn announce(&self) {
        let Some(changes) = &self.changes else { return };
        let touched = std::mem::take(
            &mut *self
                .touched
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for (account_id, members) in touched {
            changes.announce(&account_id, members.into_iter().collect());
        }
    }
}

/// The keeper runs at most this often: the days of a busy hour are counted once a second, not
/// once per commit.
const KEEPER_PAUSE: Duration = Duration::from_secs(1);
/// And it pauses at least this many times as long as its last pass took: a marked day is
/// counted from its first session change, so a pass costs more as a busy day fills up; this
/// keeps the keeper to at most a twentieth of one core whatever the day's size (reads count
/// what is still marked themselves).
const KEEPER_REST_FACTOR: u32 = 19;

/// How long the keeper rests after a pass that took `took`.
fn rest_after(took: Duration) -> Duration {
    KEEPER_PAUSE.max(took.saturating_mul(KEEPER_REST_FACTOR))
}
/// Accounts the keeper counts per step on the blocking pool.
const KEEPER_CHUNK: usize = 16;

/// Counts every marked day each time the writer applied events (at most every
/// [`KEEPER_PAUSE`], and resting [`KEEPER_REST_FACTOR`] times as long as a pass took), in chunks
/// of [`KEEPER_CHUNK`] accounts on the blocking pool, each after the calls' store operations
/// under way ended (or the foreground's patience passed: a read counts the days still marked
/// itself, and two counts of the same days side by side halve the speed of each), then tells
/// `GetUsage` followers what changed, until `stopping` completes. What it writes needs no flush:
/// a day whose kept peak was lost in a crash is still marked, and is counted again.
pub(super) async fn keep_peaks(
    store: Store,
    (feed, foreground): (Arc<Feed>, Arc<Foreground>),
    stopping: impl Future<Output = ()>,
) {
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            () = feed.wake.notified() => {}
            () = &mut stopping => return,
        }
        let started = std::time::Instant::now();
        let (mut after, mut days, mut accounts) = (None::<Vec<u8>>, 0, 0);
        while !store.has_failed() {
            tokio::select! {
                _ = foreground.quiet(foreground::PATIENCE) => {}
                () = &mut stopping => return,
            }
            let (chunk_store, from) = (store.clone(), after.take());
            let chunk = tokio::task::spawn_blocking(move || {
                chunk_store.keep_day_peaks(Timestamp::now(), from.as_deref(), KEEPER_CHUNK)
            })
            .await;
            match chunk {
                Ok(Ok(chunk)) => {
                    days += chunk.days;
                    accounts += chunk.accounts;
                    match chunk.next {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "counting peaks failed; reads count the days themselves");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the peaks keeper's task failed; reads count the days themselves");
                    break;
                }
            }
        }
        metrics::counter!("licensing_peak_days_counted_total").increment(days as u64);
        // After the count: the followers' reads find the days kept.
        feed.announce();
        let took = started.elapsed();
        let rest = rest_after(took);
        if days > 0 {
            tracing::debug!(
                accounts,
                days,
                elapsed_ms = took.as_millis() as u64,
                rest_ms = rest.as_millis() as u64,
                "concurrency peaks kept"
            );
        }
        tokio::select! {
            () = tokio::time::sleep(rest) => {}
            () = &mut stopping => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keeper_rests_a_second_or_nineteen_times_its_pass() {
        assert_eq!(rest_after(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(
            rest_after(Duration::from_millis(50)),
            Duration::from_secs(1)
        );
        assert_eq!(
            rest_after(Duration::from_millis(100)),
            Duration::from_millis(1900)
        );
        assert_eq!(rest_after(Duration::MAX), Duration::MAX);
    }
}
