//! The durable spool: events waiting to be acknowledged by `licensing`, and the checkpoints of
//! followed files, in the collector's own sled database.
//!
//! A chunk of a file's lines and the file's new checkpoint are written in one transaction: after
//! a crash the file resumes exactly after what was spooled. Events leave the spool only when
//! `licensing` acknowledged them.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use prost::Message as _;
use sled::{Transactional as _, transaction::TransactionError};
use tokio::sync::Notify;

use crate::api;

/// Where a followed file was read up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The file's identity (device, inode): a rotated file is another file.
    pub identity: (u64, u64),
    /// Bytes consumed (complete lines only).
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
        let word = |i: usize| Some(u64::from_be_bytes(bytes.get(i..i + 8)?.try_into().ok()?));
        Some(Checkpoint {
            identity: (word(0)?, word(8)?),
            offset: word(16)?,
            line: word(24)?,
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
    db: sled::Db,
    events: sled::Tree,
    checkpoints: sled::Tree,
    path: PathBuf,
    next: Arc<AtomicU64>,
    added: Arc<Notify>,
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
            .cache_capacity(16 << 20)
            .open()
            .map_err(fail)?;
        let events = db.open_tree("events").map_err(fail)?;
        let checkpoints = db.open_tree("checkpoints").map_err(fail)?;
        let next = match events.last().map_err(fail)? {
            Some((key, _)) => sequence(&key).map_or(0, |s| s + 1),
            None => 0,
        };
        Ok(Spool {
            db,
            events,
            checkpoints,
            path: dir.to_owned(),
            next: Arc::new(AtomicU64::new(next)),
            added: Arc::new(Notify::new()),
        })
    }

    fn error(&self, problem: impl ToString) -> SpoolError {
        SpoolError {
            path: self.path.clone(),
            problem: problem.to_string(),
        }
    }

    /// Appends `events` and, for a followed file, its new checkpoint, in one transaction. Not
    /// durable until [`Spool::flush`].
    pub fn append(
        &self,
        events: &[api::Event],
        checkpoint: Option<(&str, Checkpoint)>,
    ) -> Result<(), SpoolError> {
        let count = events.len() as u64;
        // Sequences are taken before the transaction, which may rerun: gaps are harmless.
        let first = self.next.fetch_add(count, Ordering::SeqCst);
        let encoded: Vec<Vec<u8>> = events.iter().map(|e| e.encode_to_vec()).collect();
        let result = (&self.events, &self.checkpoints).transaction(|(events, checkpoints)| {
            for (i, event) in encoded.iter().enumerate() {
                events.insert(&(first + i as u64).to_be_bytes(), event.as_slice())?;
            }
            if let Some((key, checkpoint)) = checkpoint {
                checkpoints.insert(key.as_bytes(), &checkpoint.encode())?;
            }
            Ok(())
        });
        result.map_err(|e: TransactionError<()>| self.error(format!("{e:?}")))?;
        if count > 0 {
            self.added.notify_one();
        }
        Ok(())
    }

    /// Makes every append so far durable.
    pub async fn flush(&self) -> Result<(), SpoolError> {
        self.db
            .flush_async()
            .await
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// The checkpoint of the followed file `key`.
    pub fn checkpoint(&self, key: &str) -> Result<Option<Checkpoint>, SpoolError> {
        Ok(self
            .checkpoints
            .get(key.as_bytes())
            .map_err(|e| self.error(e))?
            .and_then(|b| Checkpoint::decode(&b)))
    }

    /// Up to `limit` spooled events after sequence `after` (from the start when `None`).
    pub fn read(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, api::Event)>, SpoolError> {
        let start = after.map_or(0, |s| s + 1);
        let mut events = Vec::with_capacity(limit.min(1024));
        for item in self.events.range(start.to_be_bytes()..).take(limit) {
            let (key, value) = item.map_err(|e| self.error(e))?;
            let seq = sequence(&key).ok_or_else(|| self.error("a malformed sequence key"))?;
            let event = api::Event::decode(value.as_ref())
                .map_err(|e| self.error(format!("event {seq}: {e}")))?;
            events.push((seq, event));
        }
        Ok(events)
    }

    /// Removes acknowledged events.
    pub fn remove(&self, sequences: &[u64]) -> Result<(), SpoolError> {
        let mut batch = sled::Batch::default();
        for seq in sequences {
            batch.remove(&seq.to_be_bytes());
        }
        self.events.apply_batch(batch).map_err(|e| self.error(e))
    }

    /// Events waiting.
    pub fn depth(&self) -> usize {
        self.events.len()
    }

    /// Wakes when events are appended.
    pub fn added(&self) -> Arc<Notify> {
        self.added.clone()
    }
}

fn sequence(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> api::Event {
        api::Event {
            source: "s".into(),
            event_id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn events_and_checkpoints_survive_a_reopen_and_leave_only_when_removed() {
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
                    &[event("a"), event("b")],
                    Some(("/var/log/events", checkpoint)),
                )
                .expect("append");
            spool.append(&[event("c")], None).expect("append");
            spool.db.flush().expect("flush");
        }
        let spool = Spool::open(dir.path()).expect("reopen");
        assert_eq!(
            spool.checkpoint("/var/log/events").expect("read"),
            Some(checkpoint)
        );
        let read = spool.read(None, 10).expect("read");
        let ids: Vec<&str> = read.iter().map(|(_, e)| e.event_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        spool.remove(&[read[0].0, read[1].0]).expect("remove");
        assert_eq!(spool.depth(), 1);
        spool.append(&[event("d")], None).expect("append");
        let after_c: Vec<String> = spool
            .read(Some(read[2].0), 10)
            .expect("read")
            .into_iter()
            .map(|(_, e)| e.event_id)
            .collect();
        assert_eq!(after_c, ["d"], "new sequences follow the old ones");
    }
}
