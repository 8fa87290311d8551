//! The dedupe sweep: deletes dedupe records whose retention after their month's close has passed.

use std::time::Duration;

use licensing_core::Timestamp;
use licensing_store::Store;

/// How often expired dedupe records are deleted.
const DEDUPE_SWEEP_INTERVAL: Duration = Duration::from_secs(3600);
/// Dedupe records the sweep reads per step on the blocking pool.
const DEDUPE_SWEEP_CHUNK: usize = 1024;

/// Deletes expired dedupe records every [`DEDUPE_SWEEP_INTERVAL`], off the writer's path: in
/// chunks of [`DEDUPE_SWEEP_CHUNK`] on the blocking pool, so that neither the writer nor the
/// pool is held for long however large the tree. Deletions need no flush: one lost in a crash is
/// deleted again by the next sweep.
pub(super) async fn sweep_dedupe(
    store: Store,
    retention_days: u32,
    stopping: impl Future<Output = ()>,
) {
    tokio::pin!(stopping);
    let mut every = tokio::time::interval(DEDUPE_SWEEP_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = &mut stopping => return,
        }
        let (mut after, mut expired) = (None::<Vec<u8>>, 0);
        while !store.has_failed() {
            let (chunk_store, from) = (store.clone(), after.take());
            let chunk = tokio::task::spawn_blocking(move || {
                chunk_store.expire_dedupe(
                    Timestamp::now(),
                    retention_days,
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
        if expired > 0 {
            tracing::info!(expired, retention_days, "expired dedupe records deleted");
        }
    }
}
