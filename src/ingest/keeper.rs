//! The peaks keeper: after commits, counts the days whose concurrency peaks they changed, so that
//! a read of a month finds every day's peak kept and costs a record per day.

use std::{sync::Arc, time::Duration};

use licensing_core::Timestamp;
use licensing_store::Store;
use tokio::sync::Notify;

/// The keeper runs at most this often: the days of a busy hour are counted once a second, not
/// once per commit.
const KEEPER_PAUSE: Duration = Duration::from_secs(1);
/// Accounts the keeper counts per step on the blocking pool.
const KEEPER_CHUNK: usize = 16;

/// Counts every marked day each time `wake` is notified (at most every [`KEEPER_PAUSE`]), in
/// chunks of [`KEEPER_CHUNK`] accounts on the blocking pool, until `stopping` completes. What it
/// writes needs no flush: a day whose kept peak was lost in a crash is still marked, and is
/// counted again.
pub(super) async fn keep_peaks(
    store: Store,
    wake: Arc<Notify>,
    stopping: impl Future<Output = ()>,
) {
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            () = wake.notified() => {}
            () = &mut stopping => return,
        }
        let started = std::time::Instant::now();
        let (mut after, mut days, mut accounts) = (None::<Vec<u8>>, 0, 0);
        while !store.has_failed() {
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
        if days > 0 {
            tracing::debug!(
                accounts,
                days,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "concurrency peaks kept"
            );
        }
        tokio::select! {
            () = tokio::time::sleep(KEEPER_PAUSE) => {}
            () = &mut stopping => return,
        }
    }
}
