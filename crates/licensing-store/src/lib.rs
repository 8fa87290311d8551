//! Persistence of the licensing service on embedded sled.
//!
//! This is the only crate that knows sled. It owns the on-disk layout (see `ARCHITECTURE.md`,
//! "Storage"), the format version of the database, and the durability contract: a write is
//! acknowledged only after [`Store::flush`] returned `Ok`.

mod accounts;
mod compact;
mod day_peaks;
mod ingest;
mod records;
mod statement;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

pub use accounts::{Adjusted, Applied, OpError, RawMember};
pub use compact::{Backlog, Compacted};
pub use day_peaks::KeptDays;
pub use ingest::{Batch, DedupeSweep};
pub use records::Corrupt;
pub use statement::MonthStatement;

/// The on-disk format this build reads and writes. Bumped on any incompatible change of the key
/// layout or record encoding. A database of version 1 is upgraded at open ([`upgrade_from_1`]),
/// ones of versions 2 and 3 too, by marking only: their records are read as they are, and the
/// mark keeps their builds from reading records they cannot (version 3 added a login-day record
/// with queues, version 4 account and peak records with the seats in use, settings with the
/// retention the account needs, and day-peak records and marks with the instants a day is
/// counted on from). One of any other version is refused, never rewritten.
pub const FORMAT_VERSION: u32 = 4;

const META_TREE: &str = "meta";
const ACCOUNTS_TREE: &str = "accounts";
const MEMBERS_TREE: &str = "members";
const PEAKS_TREE: &str = "peaks";
const AUDIT_TREE: &str = "audit";
const DEDUPE_TREE: &str = "dedupe";
/// Login days, keyed account, month, member, date (since version 2).
const DAYS_TREE: &str = "login_days";
/// Version 1's login days, keyed account, member, date: moved to [`DAYS_TREE`] by the upgrade.
const DAYS_TREE_V1: &str = "days";
const SESSIONS_TREE: &str = "sessions";
const CHECKPOINTS_TREE: &str = "checkpoints";
const CHECKPOINTS_VALID_TREE: &str = "checkpoints_valid";
const DAY_PEAKS_TREE: &str = "day_peaks";
const DAY_PEAKS_DIRTY_TREE: &str = "day_peaks_dirty";
const SESSION_FLOOR_TREE: &str = "session_floor";
const MONTH_PEAKS_TREE: &str = "month_peaks";
const MONTH_STARTS_TREE: &str = "month_starts";
const UNLICENSED_TREE: &str = "unlicensed";
const METERS_TREE: &str = "meters";
const STATEMENTS_TREE: &str = "statements";
const FORMAT_VERSION_KEY: &[u8] = b"format_version";

/// Where and how to open the database.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The folder holding the database; created when missing.
    pub path: PathBuf,
    /// Upper bound of sled's page cache, in bytes. sled's default (1 GiB) lets the resident
    /// memory grow far beyond what a sidecar-sized pod allows, so it is always set explicitly.
    pub cache_capacity_bytes: u64,
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an I/O or corruption error. Writes must stop: the state on disk is unknown.
    #[error("storage error in {path}: {source}")]
    Storage {
        /// The database folder.
        path: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// The database was written by an incompatible version of the service.
    #[error(
        "database in {path} has format version {found}, this build reads only version {FORMAT_VERSION} (and upgrades versions 1 to 3)"
    )]
    UnsupportedFormat {
        /// The database folder.
        path: PathBuf,
        /// The version found on disk.
        found: String,
    },
    /// A stored record could not be decoded: the database is damaged or from a broken build.
    #[error(transparent)]
    Corrupt(#[from] Corrupt),
    /// An earlier storage error stopped all writes; a restart reopens and checks the database.
    #[error("storage in {path} failed earlier; writes are stopped until the service restarts")]
    Failed {
        /// The database folder.
        path: PathBuf,
    },
}

/// The licensing database. Clones share it.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    accounts: sled::Tree,
    members: sled::Tree,
    peaks: sled::Tree,
    audit: sled::Tree,
    dedupe: sled::Tree,
    days: sled::Tree,
    sessions: sled::Tree,
    checkpoints: sled::Tree,
    checkpoints_valid: sled::Tree,
    day_peaks: sled::Tree,
    day_peaks_dirty: sled::Tree,
    session_floor: sled::Tree,
    month_peaks: sled::Tree,
    month_starts: sled::Tree,
    unlicensed: sled::Tree,
    meters: sled::Tree,
    statements: sled::Tree,
    path: PathBuf,
    /// Set by the first storage error; from then on every write is refused.
    failed: Arc<AtomicBool>,
}

/// The records of `tree` after the key `after` (all of them without one), in key order: where a
/// sweep in chunks goes on.
pub(crate) fn after(tree: &sled::Tree, after: Option<&[u8]>) -> sled::Iter {
    match after {
        Some(after) => {
            tree.range::<&[u8], _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
        }
        None => tree.iter(),
    }
}

/// The key range of the records under `prefix` (which ends with the separator, byte 0) whose
/// rest of the key sorts after `after` (all of them without one): where a listing by id goes on.
/// Ids never contain byte 0, so `after` followed by 0 is the smallest key after its own.
pub(crate) fn range_after(prefix: &[u8], after: Option<&[u8]>) -> std::ops::Range<Vec<u8>> {
    let start = match after {
        Some(after) => {
            let mut key = Vec::with_capacity(prefix.len() + after.len() + 1);
            key.extend_from_slice(prefix);
            key.extend_from_slice(after);
            key.push(0);
            key
        }
        None => prefix.to_vec(),
    };
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last = last.saturating_add(1);
    }
    start..end
}

/// Why an upgrade stopped (nothing is lost: the old records stay until it is complete).
enum Upgrade {
    Storage(sled::Error),
    Corrupt(Corrupt),
}

impl From<sled::Error> for Upgrade {
    fn from(e: sled::Error) -> Upgrade {
        Upgrade::Storage(e)
    }
}

/// Version 1 to 2: every login day moves from `days` (account, member, date) to `login_days`
/// (account, month, member, date), in batches; the version is written once all are copied and
/// durable, then the old tree is dropped. Interrupted, the database is still version 1 with its
/// old tree whole, and the next open copies again (the same keys and values).
fn upgrade_from_1(db: &sled::Db, meta: &sled::Tree) -> Result<(), Upgrade> {
    const BATCH: usize = 10_000;
    let old = db.open_tree(DAYS_TREE_V1)?;
    let new = db.open_tree(DAYS_TREE)?;
    let mut batch = sled::Batch::default();
    let mut in_batch = 0usize;
    for item in old.iter() {
        let (key, value) = item?;
        let parts: Vec<&[u8]> = key.splitn(3, |&b| b == 0).collect();
        let (Some(account), Some(member), Some(date)) = (
            parts.first().and_then(|p| std::str::from_utf8(p).ok()),
            parts.get(1).and_then(|p| std::str::from_utf8(p).ok()),
            parts.get(2).and_then(|p| std::str::from_utf8(p).ok()),
        ) else {
            return Err(Upgrade::Corrupt(Corrupt {
                what: "login day",
                problem: "version 1 key".into(),
            }));
        };
        batch.insert(ingest::day_key(account, member, date), value);
        in_batch += 1;
        if in_batch == BATCH {
            new.apply_batch(std::mem::take(&mut batch))?;
            in_batch = 0;
        }
    }
    new.apply_batch(batch)?;
    db.flush()?;
    meta.insert(FORMAT_VERSION_KEY, &FORMAT_VERSION.to_be_bytes())?;
    db.flush()?;
    db.drop_tree(DAYS_TREE_V1)?;
    Ok(())
}

impl Store {
    /// Opens (or creates) the database, checking its format version.
    ///
    /// sled takes an exclusive file lock: a second process opening the same folder fails here
    /// instead of corrupting it.
    pub fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        let path = config.path.clone();
        let storage = |source| StoreError::Storage {
            path: path.clone(),
            source,
        };
        let db = sled::Config::new()
            .path(&config.path)
            .cache_capacity(config.cache_capacity_bytes)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(storage)?;
        let meta = db.open_tree(META_TREE).map_err(storage)?;
        let current = FORMAT_VERSION.to_be_bytes();
        // compare_and_swap from "absent" writes the version exactly once, on creation.
        match meta
            .compare_and_swap(FORMAT_VERSION_KEY, None::<&[u8]>, Some(&current[..]))
            .map_err(storage)?
        {
            Ok(()) => {
                db.flush().map_err(storage)?;
                tracing::info!(path = %path.display(), version = FORMAT_VERSION, "created database");
            }
            Err(existing) if existing.current.as_deref() == Some(&current[..]) => {}
            Err(existing)
                if [2u32, 3]
                    .iter()
                    .any(|v| existing.current.as_deref() == Some(&v.to_be_bytes()[..])) =>
            {
                // Nothing to rewrite: marking the version keeps an older build from reading the
                // records this one writes.
                let from = if existing.current.as_deref() == Some(&2u32.to_be_bytes()[..]) {
                    2
                } else {
                    3
                };
                meta.insert(FORMAT_VERSION_KEY, &current[..])
                    .map_err(storage)?;
                db.flush().map_err(storage)?;
                tracing::info!(path = %path.display(), from, to = FORMAT_VERSION, "upgraded database");
            }
            Err(existing) if existing.current.as_deref() == Some(&1u32.to_be_bytes()[..]) => {
                upgrade_from_1(&db, &meta).map_err(|e| match e {
                    Upgrade::Storage(source) => storage(source),
                    Upgrade::Corrupt(corrupt) => StoreError::Corrupt(corrupt),
                })?;
                tracing::info!(path = %path.display(), from = 1, to = FORMAT_VERSION, "upgraded database");
            }
            Err(existing) => {
                let found = match existing.current.as_deref() {
                    Some(bytes) if bytes.len() == 4 => {
                        let mut raw = [0u8; 4];
                        raw.copy_from_slice(bytes);
                        u32::from_be_bytes(raw).to_string()
                    }
                    other => format!("{other:?}"),
                };
                return Err(StoreError::UnsupportedFormat { path, found });
            }
        }
        Ok(Store {
            accounts: db.open_tree(ACCOUNTS_TREE).map_err(storage)?,
            members: db.open_tree(MEMBERS_TREE).map_err(storage)?,
            peaks: db.open_tree(PEAKS_TREE).map_err(storage)?,
            audit: db.open_tree(AUDIT_TREE).map_err(storage)?,
            dedupe: db.open_tree(DEDUPE_TREE).map_err(storage)?,
            days: db.open_tree(DAYS_TREE).map_err(storage)?,
            sessions: db.open_tree(SESSIONS_TREE).map_err(storage)?,
            checkpoints: db.open_tree(CHECKPOINTS_TREE).map_err(storage)?,
            checkpoints_valid: db.open_tree(CHECKPOINTS_VALID_TREE).map_err(storage)?,
            day_peaks: db.open_tree(DAY_PEAKS_TREE).map_err(storage)?,
            day_peaks_dirty: db.open_tree(DAY_PEAKS_DIRTY_TREE).map_err(storage)?,
            session_floor: db.open_tree(SESSION_FLOOR_TREE).map_err(storage)?,
            month_peaks: db.open_tree(MONTH_PEAKS_TREE).map_err(storage)?,
            month_starts: db.open_tree(MONTH_STARTS_TREE).map_err(storage)?,
            unlicensed: db.open_tree(UNLICENSED_TREE).map_err(storage)?,
            meters: db.open_tree(METERS_TREE).map_err(storage)?,
            statements: db.open_tree(STATEMENTS_TREE).map_err(storage)?,
            db,
            path,
            failed: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The database's files' size on disk, in bytes (their metadata: no scan of records).
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        // Reading file metadata is not a write: a failure here does not stop writes.
        self.db
            .size_on_disk()
            .map_err(|source| StoreError::Storage {
                path: self.path.clone(),
                source,
            })
    }

    /// Every tree's name, record count and bytes of keys and values: what the database holds,
    /// whatever its files' size. A scan of every record (for benchmarks and tests).
    #[doc(hidden)]
    pub fn live_records(&self) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let mut trees = Vec::new();
        for name in self.db.tree_names() {
            let tree = self
                .db
                .open_tree(&name)
                .map_err(|source| StoreError::Storage {
                    path: self.path.clone(),
                    source,
                })?;
            let (mut records, mut bytes) = (0u64, 0u64);
            for item in tree.iter() {
                let (key, value) = item.map_err(|source| StoreError::Storage {
                    path: self.path.clone(),
                    source,
                })?;
                records += 1;
                bytes += (key.len() + value.len()) as u64;
            }
            if records > 0 {
                trees.push((String::from_utf8_lossy(&name).into_owned(), records, bytes));
            }
        }
        Ok(trees)
    }

    /// Whether a storage error has stopped writes.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// The account a per-account tree's key names (the whole key is the id), or `None` when it
    /// names none (any more): what a sweep over such a tree skips.
    /// Up to `limit` account ids after `after` (from the first when `None`), in key order; fewer
    /// than `limit` once the last was listed.
    pub fn account_ids(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>, OpError> {
        let mut ids = Vec::new();
        for item in crate::after(&self.accounts, after.map(str::as_bytes)).keys() {
            if ids.len() == limit {
                break;
            }
            let key = item.map_err(|source| self.storage(source))?;
            if let Ok(id) = std::str::from_utf8(&key) {
                ids.push(id.to_owned());
            }
        }
        Ok(ids)
    }

    pub(crate) fn account_of_key(
        &self,
        key: &[u8],
    ) -> Result<Option<licensing_core::Account>, OpError> {
        let Ok(id) = std::str::from_utf8(key) else {
            return Ok(None);
        };
        match self.account(id) {
            Ok(account) => Ok(Some(account)),
            Err(OpError::AccountNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Turns the result of a transaction over derived or ingested records into an operation
    /// result, remembering storage failures.
    pub(crate) fn finish_store<T>(
        &self,
        result: Result<T, sled::transaction::TransactionError<StoreError>>,
    ) -> Result<T, OpError> {
        match result {
            Ok(value) => Ok(value),
            Err(sled::transaction::TransactionError::Abort(e)) => Err(OpError::Store(e)),
            Err(sled::transaction::TransactionError::Storage(source)) => {
                Err(OpError::Store(self.failed_with(StoreError::Storage {
                    path: self.path.clone(),
                    source,
                })))
            }
        }
    }

    /// Records that storage failed with `error` (for I/O errors, not refusals) and returns it.
    fn failed_with(&self, error: StoreError) -> StoreError {
        if matches!(error, StoreError::Storage { .. }) && !self.failed.swap(true, Ordering::AcqRel)
        {
            tracing::error!(path = %self.path.display(), %error, "storage failed: refusing writes until restart");
        }
        error
    }

    /// The database folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes every write so far durable. Only after this returned `Ok` may a write be
    /// acknowledged to a caller.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await.map(drop).map_err(|source| {
            self.failed_with(StoreError::Storage {
                path: self.path.clone(),
                source,
            })
        })
    }
}

/// Opens `config`'s database, or the error a lock does not explain. sled's background flusher
/// lets go of the folder's lock shortly after a store's last handle is dropped, so a test that
/// reopens a folder polls for it, within a deadline.
#[cfg(test)]
pub(crate) fn open_when_free(config: &StoreConfig) -> Result<Store, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match Store::open(config) {
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            opened => return opened,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> StoreConfig {
        StoreConfig {
            path: dir.join("db"),
            cache_capacity_bytes: 8 << 20,
        }
    }

    fn stored_version(store: &Store) -> Option<sled::IVec> {
        let meta = store.db.open_tree(META_TREE).expect("meta tree");
        meta.get(FORMAT_VERSION_KEY).expect("read format version")
    }

    #[test]
    fn a_new_database_gets_the_current_format_version_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Store::open(&config(dir.path())).expect("create"));
        let reopened = open_when_free(&config(dir.path())).expect("reopen");
        assert_eq!(
            stored_version(&reopened).as_deref(),
            Some(&FORMAT_VERSION.to_be_bytes()[..])
        );
    }

    #[test]
    fn another_format_version_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(&config(dir.path())).expect("create");
            let meta = store.db.open_tree(META_TREE).expect("meta tree");
            meta.insert(FORMAT_VERSION_KEY, &7u32.to_be_bytes())
                .expect("write version");
            store.db.flush().expect("flush");
        }
        let message = open_when_free(&config(dir.path()))
            .expect_err("opened version 7")
            .to_string();
        assert!(message.contains("format version 7"), "{message}");
        assert!(
            message.contains(&format!("only version {FORMAT_VERSION}")),
            "{message}"
        );
    }

    #[test]
    fn after_a_storage_error_every_write_is_refused_until_reopened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&config(dir.path())).expect("create");
        assert!(!store.has_failed());
        let io = std::io::Error::other("disk on fire");
        store.failed_with(StoreError::Storage {
            path: store.path.clone(),
            source: sled::Error::Io(io),
        });
        assert!(store.has_failed());
        let zone = licensing_core::Zone::utc();
        let now = licensing_core::Timestamp::UNIX_EPOCH;
        let account = licensing_core::Account {
            id: "acme".into(),
            inventory: licensing_core::Inventory::new(zone.month(now)),
            settings: licensing_core::AccountSettings::new(zone),
            sandbox: false,
            created_at: now,
            clock: None,
            audit_sequence: 0,
        };
        let refused = store.create_account(account.clone(), "test");
        assert!(
            matches!(refused, Err(OpError::Store(StoreError::Failed { .. }))),
            "{refused:?}"
        );
        assert!(matches!(
            store.account("acme"),
            Err(OpError::AccountNotFound(_))
        ));
        drop(store);
        let reopened = open_when_free(&config(dir.path())).expect("reopen");
        assert!(!reopened.has_failed());
        reopened
            .create_account(account, "test")
            .expect("writes again after a restart");
    }

    #[test]
    fn a_second_open_of_the_same_folder_is_refused_by_the_lock() {
        // sled locks the folder for the lifetime of the Db, so two processes can never share it.
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = Store::open(&config(dir.path())).expect("first open");
        assert!(
            Store::open(&config(dir.path())).is_err(),
            "second open of a locked database succeeded"
        );
    }
}
