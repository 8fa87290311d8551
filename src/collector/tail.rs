//! Sources of event lines: a file followed like `tail -F`, and standard input.
//!
//! A followed file is polled. Complete lines are parsed and spooled together with the file's new
//! checkpoint (identity and offset) in one transaction, so a restart resumes exactly after what
//! was spooled. Rotation (the path names a new file) is noticed once the old file is drained;
//! truncation (the file is shorter than the offset) starts it over from the beginning.

use std::{
    io::SeekFrom,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    fs::File,
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncSeekExt as _, BufReader},
    sync::watch,
};

use super::{
    line,
    metrics::Metrics,
    spool::{Checkpoint, Spool, SpoolError},
};
use crate::api;

/// How often a followed file is looked at when there is nothing new.
const POLL: Duration = Duration::from_millis(100);
/// The most read from a file at once.
const CHUNK_BYTES: usize = 1 << 20;
/// Lines from standard input spooled together.
const STDIN_LINES: usize = 500;

struct Open {
    file: File,
    identity: (u64, u64),
    offset: u64,
    line: u64,
}

async fn identity_of(path: &Path) -> Option<(u64, u64)> {
    let meta = tokio::fs::metadata(path).await.ok()?;
    Some((meta.dev(), meta.ino()))
}

async fn open_at(path: &Path, resume: Option<Checkpoint>) -> Option<Open> {
    let mut file = File::open(path).await.ok()?;
    let meta = file.metadata().await.ok()?;
    let identity = (meta.dev(), meta.ino());
    let (offset, line) = match resume {
        Some(c) if c.identity == identity && c.offset <= meta.len() => (c.offset, c.line),
        _ => (0, 0),
    };
    file.seek(SeekFrom::Start(offset)).await.ok()?;
    Some(Open {
        file,
        identity,
        offset,
        line,
    })
}

/// Parses complete lines, counting and logging the malformed ones with their position.
fn parse_lines(
    text: &[u8],
    path: &str,
    first_line: u64,
    first_offset: u64,
    source: &str,
    metrics: &Metrics,
) -> Vec<api::Event> {
    let mut events = Vec::new();
    let mut offset = first_offset;
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let number = first_line + i as u64 + 1;
        let at = offset;
        offset += raw.len() as u64 + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match std::str::from_utf8(raw)
            .map_err(|e| e.to_string())
            .and_then(|t| line::parse(t, source))
        {
            Ok(event) => events.push(event),
            Err(problem) => {
                Metrics::add(&metrics.malformed, 1);
                tracing::warn!(path, line = number, byte_offset = at, %problem, "malformed event line skipped");
            }
        }
    }
    events
}

/// Follows `path` until `stop` turns true, spooling its events.
pub async fn follow(
    path: PathBuf,
    spool: Spool,
    metrics: Arc<Metrics>,
    source: String,
    mut stop: watch::Receiver<bool>,
) -> Result<(), SpoolError> {
    let key = path.to_string_lossy().into_owned();
    let mut open = open_at(&path, spool.checkpoint(&key)?).await;
    let mut pending = Vec::new();
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let Some(current) = open.as_mut() else {
            open = open_at(&path, spool.checkpoint(&key)?).await;
            if open.is_none() {
                let _ = tokio::time::timeout(POLL, stop.changed()).await;
            }
            continue;
        };
        let mut buffer = vec![0u8; CHUNK_BYTES];
        let read = current.file.read(&mut buffer).await.unwrap_or(0);
        if read > 0 {
            pending.extend_from_slice(&buffer[..read]);
            if let Some(end) = pending.iter().rposition(|&b| b == b'\n') {
                let complete: Vec<u8> = pending.drain(..=end).collect();
                let text = &complete[..complete.len() - 1];
                let lines = text.split(|&b| b == b'\n').count() as u64;
                let events =
                    parse_lines(text, &key, current.line, current.offset, &source, &metrics);
                current.offset += complete.len() as u64;
                current.line += lines;
                let checkpoint = Checkpoint {
                    identity: current.identity,
                    offset: current.offset,
                    line: current.line,
                };
                spool.append(&events, Some((&key, checkpoint)))?;
                Metrics::add(&metrics.spooled, events.len() as u64);
            }
            continue;
        }
        // Nothing new: truncated, rotated, or just quiet.
        let length = current.file.metadata().await.map(|m| m.len()).unwrap_or(0);
        if length < current.offset {
            tracing::warn!(path = %key, offset = current.offset, length, "file truncated: reading it from the start");
            pending.clear();
            current.offset = 0;
            current.line = 0;
            let _ = current.file.seek(SeekFrom::Start(0)).await;
            continue;
        }
        if let Some(identity) = identity_of(&path).await
            && identity != current.identity
        {
            if !pending.is_empty() {
                tracing::warn!(path = %key, bytes = pending.len(), "rotated file ended without a newline: its last partial line is dropped");
                pending.clear();
            }
            tracing::info!(path = %key, "file rotated: following the new file");
            open = open_at(&path, None).await;
            continue;
        }
        let _ = tokio::time::timeout(POLL, stop.changed()).await;
    }
}

/// Spools lines from standard input until it ends or `stop` turns true. Standard input has no
/// checkpoint: what was read before a crash is not read again.
pub async fn stdin(
    spool: Spool,
    metrics: Arc<Metrics>,
    source: String,
    mut stop: watch::Receiver<bool>,
) -> Result<(), SpoolError> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut number = 0u64;
    let mut events = Vec::new();
    loop {
        let next = tokio::select! {
            line = lines.next_line() => line,
            _ = stop.changed() => Ok(None),
        };
        let Ok(Some(text)) = next else { break };
        number += 1;
        match line::parse(&text, &source) {
            Ok(event) => events.push(event),
            Err(problem) => {
                Metrics::add(&metrics.malformed, 1);
                tracing::warn!(path = "<stdin>", line = number, %problem, "malformed event line skipped");
            }
        }
        if events.len() >= STDIN_LINES {
            spool.append(&events, None)?;
            Metrics::add(&metrics.spooled, events.len() as u64);
            spool.flush().await?;
            events.clear();
        }
    }
    spool.append(&events, None)?;
    Metrics::add(&metrics.spooled, events.len() as u64);
    spool.flush().await
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn line(id: u32) -> String {
        format!(
            "{{\"event_id\":\"{id}\",\"account_id\":\"acme\",\"member_id\":\"alice\",\"occurred_at\":\"2026-05-10T08:00:00Z\",\"kind\":\"agent_login\"}}\n"
        )
    }

    async fn wait_for(spool: &Spool, depth: usize) {
        for _ in 0..200 {
            if spool.depth() >= depth {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("spool depth stayed {} (wanted {depth})", spool.depth());
    }

    fn ids(spool: &Spool) -> Vec<String> {
        spool
            .read(None, 1000)
            .expect("read")
            .into_iter()
            .map(|(_, e)| e.event_id)
            .collect()
    }

    #[tokio::test]
    async fn follows_appends_rotation_and_truncation_and_resumes_from_the_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        let spool = Spool::open(&dir.path().join("spool")).expect("spool");
        let metrics = Arc::new(Metrics::default());
        let write = |text: &str, append: bool| {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(append)
                .write(true)
                .truncate(!append)
                .open(&path)
                .expect("open");
            file.write_all(text.as_bytes()).expect("write");
        };
        write(
            &format!("{}{}not json\n{}", line(1), line(2), &line(3)[..20]),
            true,
        );
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(follow(
            path.clone(),
            spool.clone(),
            metrics.clone(),
            "s".into(),
            stop.clone(),
        ));
        wait_for(&spool, 2).await;
        assert_eq!(
            metrics.malformed.load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        // The partial third line completes.
        write(&line(3)[20..], true);
        wait_for(&spool, 3).await;
        // Rotation: the old file is renamed, a new one takes the path.
        std::fs::rename(&path, dir.path().join("events.jsonl.1")).expect("rotate");
        write(&format!("{}{}", line(4), line(40)), true);
        wait_for(&spool, 5).await;
        // Truncation: the new file is emptied and written again, shorter than what was read.
        write(&line(5), false);
        wait_for(&spool, 6).await;
        let _ = stop_tx.send(true);
        task.await.expect("task").expect("follow");
        assert_eq!(ids(&spool), ["1", "2", "3", "4", "40", "5"]);

        // A restart resumes after the checkpoint: nothing is spooled twice.
        write(&line(6), true);
        let (_stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(follow(
            path.clone(),
            spool.clone(),
            metrics,
            "s".into(),
            stop,
        ));
        wait_for(&spool, 7).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        task.abort();
        assert_eq!(ids(&spool), ["1", "2", "3", "4", "40", "5", "6"]);
    }
}
