//! The durable spool: events waiting to be acknowledged by `licensing`, and the checkpoints of
//! followed files, in the collector's own sled database (one collector per folder: sled locks it).
//!
//! | tree          | key                        | value                                        |
//! |---------------|----------------------------|----------------------------------------------|
//! | `events`      | sequence (`u64` BE)        | the prost-encoded `licensing.v1.Event`       |
//! | `checkpoints` | followed file (its path)   | device, inode, byte offset, line (`u64` BE each) |
//! | `spooled_at`  | first sequence of an append | when it was spooled (Unix ms, `u64` BE)     |
//!
//! A chunk of a file's lines and the file's new checkpoint are one transaction: after a crash
//! the file resumes exactly after what was spooled. Events leave the spool only when `licensing`
//! acknowledged them. Appends are serialized, so sequences become visible in increasing order:
//! the uploader reads forward from its last sequence and would never see one that committed late.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use prost::Message as _;
use sled::{
    Transactional as _,
    transaction::{ConflictableTransactionError, TransactionError},
};
use tokio::sync::Notify;

use crate::api;

/// The spool's page cache bound: the spool is a queue, read once from its head.
const CACHE_CAPACITY_BYTES: u64 = 16 << 20;

/// Where a followed file was read up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The file's identity (device, inode): a rotated file is another file.
    pub identity: (u64, u64),
    /// Bytes consumed: complete lines (and skipped over-long ones) only.
    pub offset: u64,
    /// Lines consumed.
    pub line: u64,
}

impl Checkpoint {
    fn encode(&self) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&self.identity.0.to_be_bytes());
        bytes[8..16].copy_from_slice(&self.identity.1.to_be_bytes());
        bytes[16..24].copy_from_slice(&self.offset.to_be_bytes());
        bytes[24..].copy_from_slice(&self.line.to_be_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<Checkpoint> {
        Some(Checkpoint {
            identity: (word(bytes, 0)?, word(bytes, 8)?),
            offset: word(bytes, 16)?,
            line: word(bytes, 24)?,
        })
    }
}

/// A spool failure: the collector stops taking events rather than risk losing them.
#[derive(Debug, thiserror::Error)]
#[error("spool in {path}: {problem}")]
pub struct SpoolError {
    path: PathBuf,
    problem: String,
}

/// The spool. Clones share it.
#[derive(Debug, Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: sled::Db,
    events: sled::Tree,
    checkpoints: sled::Tree,
    spooled_at: sled::Tree,
    path: PathBuf,
    /// The next sequence. Held across a whole append or removal: see the module docs.
    writing: Mutex<u64>,
    /// Events in the spool, kept here because sled counts a tree by scanning it.
    depth: AtomicU64,
    appended: Notify,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`.
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        let fail = |e: sled::Error| SpoolError {
            path: dir.to_owned(),
            problem: e.to_string(),
        };
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_CAPACITY_BYTES)
            .open()
            .map_err(fail)?;
        let events = db.open_tree("events").map_err(fail)?;
        let checkpoints = db.open_tree("checkpoints").map_err(fail)?;
        let spooled_at = db.open_tree("spooled_at").map_err(fail)?;
        // After the last of either tree: a `spooled_at` record left by a crash must never be taken
        // for the time of a later append that reuses its sequence.
        let after = |tree: &sled::Tree| -> Result<u64, SpoolError> {
            Ok(tree
                .last()
                .map_err(fail)?
                .and_then(|(key, _)| word(&key, 0))
                .map_or(0, |s| s + 1))
        };
        let next = after(&events)?.max(after(&spooled_at)?);
        let depth = events.len() as u64;
        Ok(Spool {
            inner: Arc::new(Inner {
                db,
                events,
                checkpoints,
                spooled_at,
                path: dir.to_owned(),
                writing: Mutex::new(next),
                depth: AtomicU64::new(depth),
                appended: Notify::new(),
            }),
        })
    }

    fn error(&self, problem: impl ToString) -> SpoolError {
        SpoolError {
            path: self.inner.path.clone(),
            problem: problem.to_string(),
        }
    }

    fn writing(&self) -> MutexGuard<'_, u64> {
        // The guarded counter is only ever advanced after a commit: a panic elsewhere while
        // holding the lock cannot leave it wrong.
        self.inner
            .writing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends `events` and, for a followed file, its new checkpoint, in one transaction, and
    /// flushes: when this returns `Ok`, both are durable.
    pub async fn append(
        &self,
        events: Vec<api::Event>,
        checkpoint: Option<(String, Checkpoint)>,
    ) -> Result<(), SpoolError> {
        let spool = self.clone();
        let now = unix_millis();
        tokio::task::spawn_blocking(move || {
            spool.commit(&events, checkpoint.as_ref(), now)?;
            spool.flush_blocking()
        })
        .await
        .map_err(|e| self.error(format!("append task failed: {e}")))?
    }

    /// The transaction of [`Spool::append`], without the flush.
    fn commit(
        &self,
        events: &[api::Event],
        checkpoint: Option<&(String, Checkpoint)>,
        now_millis: u64,
    ) -> Result<(), SpoolError> {
        let count = events.len() as u64;
        let encoded: Vec<Vec<u8>> = events.iter().map(|e| e.encode_to_vec()).collect();
        let mut next = self.writing();
        let first = *next;
        let trees = (
            &self.inner.events,
            &self.inner.checkpoints,
            &self.inner.spooled_at,
        );
        trees
            .transaction(|(events, checkpoints, spooled_at)| {
                for (sequence, event) in (first..).zip(&encoded) {
                    events.insert(&sequence.to_be_bytes(), event.as_slice())?;
                }
                if count > 0 {
                    spooled_at.insert(&first.to_be_bytes(), &now_millis.to_be_bytes())?;
                }
                if let Some((key, checkpoint)) = checkpoint {
                    checkpoints.insert(key.as_bytes(), &checkpoint.encode())?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| self.error(transaction_problem(e)))?;
        *next = first + count;
        drop(next);
        self.inner.depth.fetch_add(count, Ordering::Relaxed);
        if count > 0 {
            self.inner.appended.notify_one();
        }
        Ok(())
    }

    /// Makes every write so far durable.
    pub async fn flush(&self) -> Result<(), SpoolError> {
        let spool = self.clone();
        tokio::task::spawn_blocking(move || spool.flush_blocking())
            .await
            .map_err(|e| self.error(format!("flush task failed: {e}")))?
    }

    /// The flush, on the calling thread. Not sled's `flush_async`: in sled 0.34 concurrent
    /// `flush_async` calls can wait for each other forever (spacejam/sled#1308, reproduced by
    /// `concurrent_appends_become_visible_in_sequence_order`), and the sources, the local
    /// endpoint and the uploader all flush concurrently.
    fn flush_blocking(&self) -> Result<(), SpoolError> {
        self.inner.db.flush().map(drop).map_err(|e| self.error(e))
    }

    /// The checkpoint of the followed file `key`.
    pub fn checkpoint(&self, key: &str) -> Result<Option<Checkpoint>, SpoolError> {
        Ok(self
            .inner
            .checkpoints
            .get(key.as_bytes())
            .map_err(|e| self.error(e))?
            .and_then(|b| Checkpoint::decode(&b)))
    }

    /// Up to `limit` spooled events after sequence `after` (from the head when `None`), in
    /// sequence order.
    pub async fn read(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, api::Event)>, SpoolError> {
        let spool = self.clone();
        tokio::task::spawn_blocking(move || spool.read_blocking(after, limit))
            .await
            .map_err(|e| self.error(format!("read task failed: {e}")))?
    }

    fn read_blocking(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, api::Event)>, SpoolError> {
        let start = after.map_or(0, |s| s.saturating_add(1));
        let mut events = Vec::with_capacity(limit.min(1024));
        for item in self.inner.events.range(start.to_be_bytes()..).take(limit) {
            let (key, value) = item.map_err(|e| self.error(e))?;
            let sequence = word(&key, 0).ok_or_else(|| self.error("a malformed sequence key"))?;
            let event = api::Event::decode(value.as_ref())
                .map_err(|e| self.error(format!("event {sequence}: {e}")))?;
            events.push((sequence, event));
        }
        Ok(events)
    }

    /// Removes acknowledged events in one transaction, and flushes.
    pub async fn remove(&self, sequences: Vec<u64>) -> Result<(), SpoolError> {
        let spool = self.clone();
        tokio::task::spawn_blocking(move || {
            spool.remove_blocking(&sequences)?;
            spool.flush_blocking()
        })
        .await
        .map_err(|e| self.error(format!("remove task failed: {e}")))?
    }

    fn remove_blocking(&self, sequences: &[u64]) -> Result<(), SpoolError> {
        let _appends_wait = self.writing();
        let removed = self
            .inner
            .events
            .transaction(|events| {
                let mut removed = 0u64;
                for sequence in sequences {
                    if events.remove(&sequence.to_be_bytes())?.is_some() {
                        removed += 1;
                    }
                }
                Ok::<_, ConflictableTransactionError<()>>(removed)
            })
            .map_err(|e| self.error(transaction_problem(e)))?;
        self.inner.depth.fetch_sub(removed, Ordering::Relaxed);
        // Housekeeping, outside the transaction: an append time is kept while an event it covers
        // is spooled. A crash here leaves records that only the lag lookup skips over.
        let oldest = self.oldest()?;
        let keep_from = match oldest {
            Some(oldest) => self
                .spooled_at_record(oldest)?
                .map_or(0, |(first, _)| first),
            None => u64::MAX,
        };
        for item in self.inner.spooled_at.range(..keep_from.to_be_bytes()) {
            let (key, _) = item.map_err(|e| self.error(e))?;
            self.inner
                .spooled_at
                .remove(key)
                .map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    fn oldest(&self) -> Result<Option<u64>, SpoolError> {
        Ok(self
            .inner
            .events
            .first()
            .map_err(|e| self.error(e))?
            .and_then(|(key, _)| word(&key, 0)))
    }

    /// The append that spooled `sequence`: its first sequence and its time.
    fn spooled_at_record(&self, sequence: u64) -> Result<Option<(u64, u64)>, SpoolError> {
        Ok(self
            .inner
            .spooled_at
            .range(..=sequence.to_be_bytes())
            .next_back()
            .transpose()
            .map_err(|e| self.error(e))?
            .and_then(|(key, value)| Some((word(&key, 0)?, word(&value, 0)?))))
    }

    /// How long the oldest spooled event has been in the spool (zero when it is empty, or when
    /// the event came from a spool written before append times were kept).
    pub fn lag(&self) -> Result<Duration, SpoolError> {
        let Some(oldest) = self.oldest()? else {
            return Ok(Duration::ZERO);
        };
        let spooled = self.spooled_at_record(oldest)?.map_or(0, |(_, at)| at);
        let now = unix_millis();
        Ok(Duration::from_millis(if spooled == 0 {
            0
        } else {
            now.saturating_sub(spooled)
        }))
    }

    /// Events in the spool.
    pub fn depth(&self) -> u64 {
        self.inner.depth.load(Ordering::Relaxed)
    }

    /// Completes when events were appended since the last call returned (a permit is kept, so
    /// an append between a read and this call is not missed).
    pub async fn appended(&self) {
        self.inner.appended.notified().await;
    }

    /// The spool's folder.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

fn transaction_problem(e: TransactionError<()>) -> String {
    match e {
        TransactionError::Storage(e) => e.to_string(),
        // No closure here aborts.
        TransactionError::Abort(()) => "transaction aborted".to_owned(),
    }
}

/// The big-endian `u64` at `at`.
fn word(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spool in `dir`, once a spool of it dropped just before let go of the folder's lock
    /// (sled's background flusher holds it a little after the last handle): polled, within a
    /// deadline.
    fn reopen(dir: &Path) -> Spool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match Spool::open(dir) {
                Err(e)
                    if e.problem.contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                opened => return opened.expect("reopen"),
            }
        }
    }

    fn event(id: &str) -> api::Event {
        api::Event {
            source: "s".into(),
            event_id: id.into(),
            ..Default::default()
        }
    }

    async fn ids(spool: &Spool, after: Option<u64>) -> Vec<String> {
        spool
            .read(after, 100)
            .await
            .expect("read")
            .into_iter()
            .map(|(_, e)| e.event_id)
            .collect()
    }

    #[tokio::test]
    async fn events_and_checkpoints_survive_a_reopen_and_leave_only_when_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let checkpoint = Checkpoint {
            identity: (1, 2),
            offset: 300,
            line: 3,
        };
        {
            let spool = Spool::open(dir.path()).expect("open");
            spool
                .append(
                    vec![event("a"), event("b")],
                    Some(("/var/log/events".into(), checkpoint)),
                )
                .await
                .expect("append");
            spool.append(vec![event("c")], None).await.expect("append");
        }
        let spool = reopen(dir.path());
        assert_eq!(spool.depth(), 3);
        assert_eq!(
            spool.checkpoint("/var/log/events").expect("read"),
            Some(checkpoint)
        );
        let read = spool.read(None, 10).await.expect("read");
        assert_eq!(ids(&spool, None).await, ["a", "b", "c"]);
        spool
            .remove(vec![read[0].0, read[1].0])
            .await
            .expect("remove");
        // Removing again changes nothing: the depth counts what was there.
        spool.remove(vec![read[0].0]).await.expect("remove");
        assert_eq!(spool.depth(), 1);
        spool.append(vec![event("d")], None).await.expect("append");
        assert_eq!(
            ids(&spool, Some(read[2].0)).await,
            ["d"],
            "new sequences follow the old ones"
        );
    }

    #[tokio::test]
    async fn sequences_are_not_reused_after_the_spool_was_emptied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = {
            let spool = Spool::open(dir.path()).expect("open");
            spool.append(vec![event("a")], None).await.expect("append");
            let read = spool.read(None, 10).await.expect("read");
            spool.remove(vec![read[0].0]).await.expect("remove");
            assert_eq!(spool.depth(), 0);
            // A crash between the removal and the housekeeping leaves the append's time behind.
            spool
                .inner
                .spooled_at
                .insert(read[0].0.to_be_bytes(), &1u64.to_be_bytes())
                .expect("insert");
            read[0].0
        };
        let spool = reopen(dir.path());
        spool.append(vec![event("b")], None).await.expect("append");
        let read = spool.read(None, 10).await.expect("read");
        assert!(read[0].0 > first, "sequence {} reused", read[0].0);
        assert!(
            spool.lag().expect("lag") < Duration::from_secs(60),
            "the stale time of an old append was used"
        );
    }

    #[tokio::test]
    async fn lag_is_the_age_of_the_oldest_spooled_event() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("open");
        assert_eq!(spool.lag().expect("lag"), Duration::ZERO);
        let an_hour_ago = unix_millis() - 3_600_000;
        spool
            .commit(&[event("old-1"), event("old-2")], None, an_hour_ago)
            .expect("commit");
        spool
            .append(vec![event("new")], None)
            .await
            .expect("append");
        let lag = spool.lag().expect("lag");
        assert!(
            lag >= Duration::from_secs(3_599) && lag < Duration::from_secs(3_700),
            "{lag:?}"
        );
        // The first old event acknowledged: the second is as old.
        let read = spool.read(None, 10).await.expect("read");
        spool.remove(vec![read[0].0]).await.expect("remove");
        assert!(spool.lag().expect("lag") >= Duration::from_secs(3_599));
        spool.remove(vec![read[1].0]).await.expect("remove");
        assert!(spool.lag().expect("lag") < Duration::from_secs(60));
        assert_eq!(
            spool.inner.spooled_at.len(),
            1,
            "the old append's time is deleted once its events are gone"
        );
        spool.remove(vec![read[2].0]).await.expect("remove");
        assert_eq!(spool.lag().expect("lag"), Duration::ZERO);
        assert_eq!(spool.inner.spooled_at.len(), 0);
    }

    #[tokio::test]
    async fn concurrent_appends_become_visible_in_sequence_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("open");
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let spool = spool.clone();
                tokio::spawn(async move {
                    for i in 0..20 {
                        spool
                            .append(vec![event(&format!("{w}-{i}"))], None)
                            .await
                            .expect("append");
                    }
                })
            })
            .collect();
        // A reader following from its last sequence, as the uploader does, sees every event.
        let mut seen = 0;
        let mut after = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while seen < 160 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the reader saw {seen} of 160"
            );
            let read = spool.read(after, 7).await.expect("read");
            if let Some(&(last, _)) = read.last() {
                after = Some(last);
            }
            seen += read.len();
            tokio::task::yield_now().await;
        }
        for writer in writers {
            writer.await.expect("writer");
        }
        assert_eq!(seen, 160);
        assert_eq!(spool.depth(), 160);
    }
}
