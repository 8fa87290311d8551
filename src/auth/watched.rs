//! A credentials file that is read again when it changes, so that keys can be added, rotated and
//! revoked without a restart.
//!
//! The file is polled every [`RELOAD_INTERVAL`]: its bytes are hashed and, when the hash differs
//! from the last one read, parsed again. A file that no longer parses (or cannot be read) is
//! logged as an error and the credentials in force stay as they were: a half-written file never
//! locks every caller out, and never lets one in. Polling, rather than file-change notifications,
//! also sees Kubernetes' Secret volumes, which swap a symbolic link instead of writing the file.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError, Weak},
    time::Duration,
};

use arc_swap::ArcSwap;
use sha2::{Digest as _, Sha256};

/// How often a credentials file is checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

type Parse<T> = Box<dyn Fn(&str) -> Result<T, String> + Send + Sync>;

/// The parsed contents of a file, replaced whole when the file changes.
pub struct Watched<T> {
    path: PathBuf,
    what: &'static str,
    parse: Parse<T>,
    current: ArcSwap<T>,
    seen: Mutex<[u8; 32]>,
}

impl<T> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("path", &self.path)
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> Watched<T> {
    /// Reads and parses `path` now; `what` names its contents in logs (e.g. "API keys").
    pub fn load(
        path: &Path,
        what: &'static str,
        parse: impl Fn(&str) -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Arc<Watched<T>>, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
        let text = std::str::from_utf8(&bytes).map_err(|_| "not UTF-8 text".to_owned())?;
        let parsed = parse(text)?;
        Ok(Arc::new(Watched {
            path: path.to_owned(),
            what,
            parse: Box::new(parse),
            current: ArcSwap::from_pointee(parsed),
            seen: Mutex::new(Sha256::digest(&bytes).into()),
        }))
    }

    /// What is in force now.
    pub fn current(&self) -> arc_swap::Guard<Arc<T>> {
        self.current.load()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file again and, if its bytes changed and it parses, puts it in force. Returns
    /// whether it did.
    pub fn reload(&self) -> bool {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(
                    path = %self.path.display(),
                    error = %e,
                    "cannot read the {} file: the ones read before stay in force", self.what
                );
                return false;
            }
        };
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if *seen == hash {
            return false;
        }
        *seen = hash;
        let parsed = std::str::from_utf8(&bytes)
            .map_err(|_| "not UTF-8 text".to_owned())
            .and_then(|text| (self.parse)(text));
        match parsed {
            Ok(parsed) => {
                self.current.store(Arc::new(parsed));
                tracing::info!(path = %self.path.display(), "{} reloaded", self.what);
                true
            }
            Err(problem) => {
                tracing::error!(
                    path = %self.path.display(),
                    problem = %problem,
                    "the {} file changed and is not valid: the ones read before stay in force",
                    self.what
                );
                false
            }
        }
    }

    /// Checks the file every [`RELOAD_INTERVAL`] until every other reference is dropped.
    pub fn watch(self: &Arc<Self>) {
        let watched: Weak<Watched<T>> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(RELOAD_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(watched) = watched.upgrade() else {
                    return;
                };
                // A small file, but still file I/O: off the runtime's workers.
                let _ = tokio::task::spawn_blocking(move || watched.reload()).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_is_put_in_force_and_an_invalid_one_is_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("numbers");
        std::fs::write(&path, "1").expect("write");
        let parse = |text: &str| text.trim().parse::<u32>().map_err(|e| e.to_string());
        let watched = Watched::load(&path, "numbers", parse).expect("valid");
        assert_eq!(**watched.current(), 1);
        assert!(!watched.reload(), "unchanged");
        std::fs::write(&path, "2").expect("write");
        assert!(watched.reload());
        assert_eq!(**watched.current(), 2);
        std::fs::write(&path, "two").expect("write");
        assert!(!watched.reload(), "invalid");
        assert_eq!(**watched.current(), 2, "the last valid contents stay");
        std::fs::remove_file(&path).expect("remove");
        assert!(!watched.reload(), "gone");
        assert_eq!(**watched.current(), 2);
        std::fs::write(&path, "3").expect("write");
        assert!(watched.reload());
        assert_eq!(**watched.current(), 3);
    }
}
