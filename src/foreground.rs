//! Calls first, background work after: the store operations callers wait for, counted, so that
//! the work nobody waits for (deleting what compaction left, expiring dedupe records, keeping
//! day peaks) steps aside while they run.
//!
//! On a machine of a few cores, a slice of deletions or a pass of the peaks keeper otherwise
//! takes a core from a read for as long as the read lasts, and pulls old pages into sled's cache
//! in place of the ones the read needs: after a month of history had been ingested at once, a
//! `GetUsage` of the month took seconds while the deletion of the month before ran beside it.
//! The background waits for a moment without calls, but never longer than its patience, so that
//! a steady stream of calls slows it without stopping it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::Notify;

/// How long background work waits for the calls under way to end before it takes a short step
/// anyway.
pub const PATIENCE: Duration = Duration::from_millis(50);

/// The store operations of calls under way.
#[derive(Debug, Default)]
pub struct Foreground {
    running: AtomicUsize,
    quiet: Notify,
}

/// One call's store operation, counted until dropped (moved into the operation, so that a call
/// given up by its client still counts until its operation ends).
#[derive(Debug)]
#[must_use = "counted only while held"]
pub struct Running(Arc<Foreground>);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.quiet.notify_waiters();
        }
    }
}

impl Foreground {
    /// Counts a call's store operation while the guard lives.
    pub fn enter(self: &Arc<Self>) -> Running {
        self.running.fetch_add(1, Ordering::AcqRel);
        Running(self.clone())
    }

    /// Whether a call's store operation is under way.
    pub fn busy(&self) -> bool {
        self.running.load(Ordering::Acquire) > 0
    }

    /// Returns once no call's store operation is under way (`true`), or after `patience`
    /// (`false`: calls kept running; the caller takes a short step).
    pub async fn quiet(&self, patience: Duration) -> bool {
        let timeout = tokio::time::sleep(patience);
        tokio::pin!(timeout);
        loop {
            let notified = self.quiet.notified();
            tokio::pin!(notified);
            // Registered before the count is read: an end of the last call after the read
            // wakes it.
            notified.as_mut().enable();
            if !self.busy() {
                return true;
            }
            tokio::select! {
                () = &mut notified => {}
                () = &mut timeout => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn quiet_at_once_without_calls() {
        let foreground = Arc::new(Foreground::default());
        assert!(foreground.quiet(Duration::from_secs(3600)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_does_not_end_is_waited_for_only_the_patience() {
        let foreground = Arc::new(Foreground::default());
        let _call = foreground.enter();
        assert!(!foreground.quiet(PATIENCE).await);
        assert!(foreground.busy());
    }

    /// On a paused clock: a wait not woken by the last call's end would return `false` once the
    /// clock jumped an hour ahead.
    #[tokio::test(start_paused = true)]
    async fn the_end_of_the_last_call_ends_the_wait() {
        let foreground = Arc::new(Foreground::default());
        let (first, second) = (foreground.enter(), foreground.enter());
        let waiting = {
            let foreground = foreground.clone();
            tokio::spawn(async move { foreground.quiet(Duration::from_secs(3600)).await })
        };
        // The one thread runs the waiter until it waits.
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a call is still under way");
        drop(second);
        assert!(waiting.await.expect("the wait ends"), "quiet, not patience");
    }
}
