//! Sources of event lines: files followed like `tail -F`, and standard input.
//!
//! A followed file is polled (no inotify: the same code works on every file system, network
//! ones included). Each chunk of complete lines is parsed and spooled together with the file's
//! new checkpoint (identity, byte offset, line number) in one transaction, then flushed, so a
//! restart resumes exactly after what was spooled: nothing lost, nothing spooled twice.
//!
//! - Only complete lines (ending in `\n`) are consumed; a partial last line waits.
//! - Rotation (the path names another file): the old file is read to its end first, then the new
//!   one from its start.
//! - Truncation (the file is shorter than what was read): read again from the start.
//! - A restart resumes from the checkpoint when the path still names the same file, and starts
//!   at 0 when it names another one (rotated while the collector was down).

use std::{
    io::SeekFrom,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    fs::File,
    io::{AsyncReadExt as _, AsyncSeekExt as _},
    sync::watch,
};

use super::{
    line,
    metrics::Metrics,
    spool::{Checkpoint, Spool, SpoolError},
};
use crate::api;

/// How often a quiet file is looked at again.
const POLL: Duration = Duration::from_millis(200);
/// The most read from a file at once: one chunk, one transaction.
const CHUNK_BYTES: usize = 1 << 20;
/// The longest line taken; a longer one is malformed and skipped without being held in memory.
pub const MAX_LINE_BYTES: usize = 64 << 10;
/// The most read from standard input at once.
const STDIN_CHUNK_BYTES: usize = 64 << 10;

/// A piece of a file cut at newlines.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    /// A complete line, without its newline.
    Line {
        number: u64,
        offset: u64,
        text: Vec<u8>,
    },
    /// A line longer than [`MAX_LINE_BYTES`]; its bytes are skipped.
    TooLong { number: u64, offset: u64 },
}

/// Cuts bytes into lines, keeping a partial last line until its newline arrives. `offset` and
/// `line` count what was consumed: what a checkpoint may record.
#[derive(Debug, Default)]
struct Lines {
    offset: u64,
    line: u64,
    partial: Vec<u8>,
    /// Inside a line already reported too long: bytes are dropped up to its newline.
    skipping: bool,
}

impl Lines {
    fn at(checkpoint: Checkpoint) -> Lines {
        Lines {
            offset: checkpoint.offset,
            line: checkpoint.line,
            ..Lines::default()
        }
    }

    /// Where the next byte read comes from.
    fn position(&self) -> u64 {
        self.offset + self.partial.len() as u64
    }

    fn feed(&mut self, mut bytes: &[u8]) -> Vec<Piece> {
        let mut pieces = Vec::new();
        while !bytes.is_empty() {
            let newline = bytes.iter().position(|&b| b == b'\n');
            let (head, rest) = match newline {
                Some(i) => (&bytes[..i], &bytes[i + 1..]),
                None => (bytes, &[][..]),
            };
            if self.skipping {
                self.offset += head.len() as u64;
                if newline.is_some() {
                    self.offset += 1;
                    self.line += 1;
                    self.skipping = false;
                }
            } else {
                self.partial.extend_from_slice(head);
                let (number, offset) = (self.line + 1, self.offset);
                if self.partial.len() > MAX_LINE_BYTES {
                    pieces.push(Piece::TooLong { number, offset });
                    self.offset += self.partial.len() as u64;
                    self.partial.clear();
                    self.skipping = true;
                    if newline.is_some() {
                        self.offset += 1;
                        self.line += 1;
                        self.skipping = false;
                    }
                } else if newline.is_some() {
                    self.offset += self.partial.len() as u64 + 1;
                    self.line += 1;
                    let text = std::mem::take(&mut self.partial);
                    pieces.push(Piece::Line {
                        number,
                        offset,
                        text,
                    });
                }
            }
            bytes = rest;
        }
        pieces
    }
}

/// Parses pieces into events; a malformed one is logged with its position, counted, skipped.
fn events_of(pieces: Vec<Piece>, path: &str, source: &str, metrics: &Metrics) -> Vec<api::Event> {
    let mut events = Vec::with_capacity(pieces.len());
    for piece in pieces {
        let (number, offset, problem) = match piece {
            Piece::Line {
                number,
                offset,
                text,
            } => {
                let text = text.strip_suffix(b"\r").unwrap_or(&text);
                if text.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let parsed = std::str::from_utf8(text)
                    .map_err(|e| format!("not UTF-8: {e}"))
                    .and_then(|t| line::parse(t, source).map_err(|e| e.to_string()));
                match parsed {
                    Ok(event) => {
                        events.push(event);
                        continue;
                    }
                    Err(problem) => (number, offset, problem),
                }
            }
            Piece::TooLong { number, offset } => (
                number,
                offset,
                format!("longer than {MAX_LINE_BYTES} bytes"),
            ),
        };
        malformed(metrics, path, number, Some(offset), &problem);
    }
    events
}

fn malformed(metrics: &Metrics, path: &str, line: u64, byte_offset: Option<u64>, problem: &str) {
    Metrics::add(&metrics.malformed, 1);
    tracing::warn!(
        path,
        line,
        byte_offset,
        problem,
        "malformed event line skipped"
    );
}

/// An open followed file.
#[derive(Debug)]
struct Followed {
    file: File,
    identity: (u64, u64),
    lines: Lines,
    /// The path names another file now: this one is read to its end, then left.
    rotated: bool,
}

async fn identity_of(path: &Path) -> Option<(u64, u64)> {
    let meta = tokio::fs::metadata(path).await.ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Opens `path`, at `resume` when it is the same file and not shorter, else at its start.
async fn open_at(path: &Path, resume: Option<Checkpoint>) -> std::io::Result<Followed> {
    let mut file = File::open(path).await?;
    let meta = file.metadata().await?;
    let identity = (meta.dev(), meta.ino());
    let lines = match resume {
        Some(c) if c.identity == identity && c.offset <= meta.len() => Lines::at(c),
        Some(c) if c.identity == identity => {
            tracing::warn!(path = %path.display(), checkpoint = c.offset, length = meta.len(), "file truncated while the collector was stopped: reading it from the start");
            Lines::default()
        }
        _ => Lines::default(),
    };
    file.seek(SeekFrom::Start(lines.offset)).await?;
    Ok(Followed {
        file,
        identity,
        lines,
        rotated: false,
    })
}

/// A file followed like `tail -F`, spooling its events.
#[derive(Debug)]
pub struct Follow {
    /// The file (absolute, so that its checkpoint does not depend on the working directory).
    pub path: PathBuf,
    /// The spool.
    pub spool: Spool,
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// The source of lines that name none.
    pub source: String,
}

impl Follow {
    /// Follows the file until `stop` turns true; the chunk being spooled then is finished first.
    /// Fails only when the spool fails.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Result<(), SpoolError> {
        let key = self.path.to_string_lossy().into_owned();
        let mut buffer = vec![0u8; CHUNK_BYTES];
        let mut current: Option<Followed> = None;
        // Said once per state, not at every poll.
        let mut waiting_said = false;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let Some(followed) = current.as_mut() else {
                match open_at(&self.path, self.spool.checkpoint(&key)?).await {
                    Ok(followed) => {
                        tracing::info!(path = %key, offset = followed.lines.offset, line = followed.lines.line, "following");
                        current = Some(followed);
                        waiting_said = false;
                    }
                    Err(e) => {
                        if !waiting_said {
                            tracing::info!(path = %key, error = %e, "waiting for the file to appear");
                            waiting_said = true;
                        }
                        if pause(&mut stop).await {
                            return Ok(());
                        }
                    }
                }
                continue;
            };
            let read = match followed.file.read(&mut buffer).await {
                Ok(read) => read,
                Err(e) => {
                    tracing::warn!(path = %key, error = %e, "reading failed; trying again");
                    if pause(&mut stop).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            if read > 0 {
                super::metrics::read_bytes(&key, read as u64);
                let consumed = followed.lines.offset;
                let pieces = followed.lines.feed(&buffer[..read]);
                if followed.lines.offset != consumed {
                    let events = events_of(pieces, &key, &self.source, &self.metrics);
                    let count = events.len() as u64;
                    let checkpoint = Checkpoint {
                        identity: followed.identity,
                        offset: followed.lines.offset,
                        line: followed.lines.line,
                    };
                    self.spool
                        .append(events, Some((key.clone(), checkpoint)))
                        .await?;
                    Metrics::add(&self.metrics.spooled, count);
                }
                continue;
            }
            // At the end of the file: rotated, truncated, or just quiet.
            if followed.rotated {
                if !followed.lines.partial.is_empty() {
                    malformed(
                        &self.metrics,
                        &key,
                        followed.lines.line + 1,
                        Some(followed.lines.offset),
                        "the rotated file ended inside this line (no newline)",
                    );
                }
                tracing::info!(path = %key, "file rotated: the old file is read to its end; following the new one");
                current = None;
                continue;
            }
            let length = match followed.file.metadata().await {
                Ok(meta) => meta.len(),
                Err(_) => followed.lines.position(),
            };
            if length < followed.lines.position() {
                tracing::warn!(path = %key, offset = followed.lines.position(), length, "file truncated: reading it from the start");
                followed.lines = Lines::default();
                if let Err(e) = followed.file.seek(SeekFrom::Start(0)).await {
                    tracing::warn!(path = %key, error = %e, "seeking failed; opening the file again");
                    current = None;
                }
                continue;
            }
            if let Some(identity) = identity_of(&self.path).await
                && identity != followed.identity
            {
                // Lines written to the old file just before the rename are read before leaving it.
                followed.rotated = true;
                continue;
            }
            if pause(&mut stop).await {
                return Ok(());
            }
        }
    }
}

/// Waits one poll interval; true when the collector is stopping.
async fn pause(stop: &mut watch::Receiver<bool>) -> bool {
    match tokio::time::timeout(POLL, stop.changed()).await {
        Ok(Ok(())) => *stop.borrow(),
        // The sender is gone: nobody will ever say stop, so stop now.
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

/// Standard input, spooled line by line. It has no checkpoint: lines read before a crash are not
/// read again (after a clean stop, only a partial last line is lost).
#[derive(Debug)]
pub struct Stdin {
    /// The spool.
    pub spool: Spool,
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// The source of lines that name none.
    pub source: String,
}

impl Stdin {
    /// Reads until standard input ends or `stop` turns true. What one read returns is spooled at
    /// once, so a slow writer's events are not held back waiting for more.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Result<(), SpoolError> {
        const PATH: &str = "<stdin>";
        let mut input = tokio::io::stdin();
        let mut buffer = vec![0u8; STDIN_CHUNK_BYTES];
        let mut lines = Lines::default();
        loop {
            let read = tokio::select! {
                read = input.read(&mut buffer) => read,
                _ = stop.wait_for(|stop| *stop) => return Ok(()),
            };
            let pieces = match read {
                Ok(0) => {
                    // The input ended: a last line without a newline is complete.
                    let pieces = if lines.partial.is_empty() {
                        Vec::new()
                    } else {
                        lines.feed(b"\n")
                    };
                    self.spool_pieces(pieces, PATH).await?;
                    tracing::info!(lines = lines.line, "standard input ended");
                    return Ok(());
                }
                Ok(read) => {
                    super::metrics::read_bytes("stdin", read as u64);
                    lines.feed(&buffer[..read])
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading standard input failed; it is not read any more");
                    return Ok(());
                }
            };
            self.spool_pieces(pieces, PATH).await?;
        }
    }

    async fn spool_pieces(&self, pieces: Vec<Piece>, path: &str) -> Result<(), SpoolError> {
        let events = events_of(pieces, path, &self.source, &self.metrics);
        if events.is_empty() {
            return Ok(());
        }
        let count = events.len() as u64;
        self.spool.append(events, None).await?;
        Metrics::add(&self.metrics.spooled, count);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Write as _, sync::atomic::Ordering};

    use super::*;

    fn line(id: u32) -> String {
        format!(
            "{{\"event_id\":\"{id}\",\"account_id\":\"acme\",\"member_id\":\"alice\",\"occurred_at\":\"2026-05-10T08:00:00Z\",\"kind\":\"agent_login\"}}\n"
        )
    }

    #[test]
    fn lines_are_cut_at_newlines_and_a_partial_line_waits() {
        let mut lines = Lines::default();
        assert_eq!(lines.feed(b"ab"), []);
        assert_eq!(lines.offset, 0);
        assert_eq!(lines.position(), 2);
        assert_eq!(
            lines.feed(b"c\nde\n\nf"),
            [
                Piece::Line {
                    number: 1,
                    offset: 0,
                    text: b"abc".to_vec()
                },
                Piece::Line {
                    number: 2,
                    offset: 4,
                    text: b"de".to_vec()
                },
                Piece::Line {
                    number: 3,
                    offset: 7,
                    text: Vec::new()
                },
            ]
        );
        assert_eq!((lines.offset, lines.line, lines.position()), (8, 3, 9));
    }

    #[test]
    fn an_over_long_line_is_reported_once_and_skipped_without_being_kept() {
        let mut lines = Lines::default();
        let long = vec![b'x'; MAX_LINE_BYTES + 10];
        assert_eq!(
            lines.feed(&long),
            [Piece::TooLong {
                number: 1,
                offset: 0
            }]
        );
        assert!(lines.partial.is_empty(), "the long line is not held");
        assert_eq!(lines.feed(b"xxxx"), []);
        assert_eq!(
            lines.feed(b"x\nok\n"),
            [Piece::Line {
                number: 2,
                offset: MAX_LINE_BYTES as u64 + 16,
                text: b"ok".to_vec()
            }]
        );
        assert_eq!(lines.offset, MAX_LINE_BYTES as u64 + 19);
        // A long line ending in the same chunk.
        let mut lines = Lines::default();
        let mut chunk = vec![b'y'; MAX_LINE_BYTES + 1];
        chunk.extend_from_slice(b"\nz\n");
        assert_eq!(
            lines.feed(&chunk),
            [
                Piece::TooLong {
                    number: 1,
                    offset: 0
                },
                Piece::Line {
                    number: 2,
                    offset: MAX_LINE_BYTES as u64 + 2,
                    text: b"z".to_vec()
                }
            ]
        );
    }

    async fn wait_for(spool: &Spool, depth: u64) {
        for _ in 0..250 {
            if spool.depth() >= depth {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("spool depth stayed {} (wanted {depth})", spool.depth());
    }

    async fn ids(spool: &Spool) -> Vec<String> {
        spool
            .read(None, 1000)
            .await
            .expect("read")
            .into_iter()
            .map(|(_, e)| e.event_id)
            .collect()
    }

    fn write(path: &Path, text: &str, append: bool) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(path)
            .expect("open");
        file.write_all(text.as_bytes()).expect("write");
    }

    fn follow(path: &Path, spool: &Spool, metrics: &Arc<Metrics>) -> Follow {
        Follow {
            path: path.to_owned(),
            spool: spool.clone(),
            metrics: metrics.clone(),
            source: "s".into(),
        }
    }

    #[tokio::test]
    async fn follows_appends_rotation_and_truncation_and_resumes_from_the_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        let spool = Spool::open(&dir.path().join("spool")).expect("spool");
        let metrics = Arc::new(Metrics::default());
        write(
            &path,
            &format!("{}{}not json\n{}", line(1), line(2), &line(3)[..20]),
            true,
        );
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(follow(&path, &spool, &metrics).run(stop.clone()));
        wait_for(&spool, 2).await;
        assert_eq!(metrics.malformed.load(Ordering::Relaxed), 1);
        // The partial third line completes.
        write(&path, &line(3)[20..], true);
        wait_for(&spool, 3).await;
        // Rotation: the old file is renamed, gets one more line, and a new file takes the path.
        let old = dir.path().join("events.jsonl.1");
        std::fs::rename(&path, &old).expect("rotate");
        write(&old, &line(30), true);
        write(&path, &format!("{}{}", line(4), line(40)), true);
        wait_for(&spool, 6).await;
        // Truncation: the new file is emptied and written again, shorter than what was read.
        write(&path, &line(5), false);
        wait_for(&spool, 7).await;
        let _ = stop_tx.send(true);
        task.await.expect("task").expect("follow");
        assert_eq!(ids(&spool).await, ["1", "2", "3", "30", "4", "40", "5"]);

        // A restart resumes after the checkpoint: nothing is spooled twice.
        write(&path, &line(6), true);
        let (_stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(follow(&path, &spool, &metrics).run(stop));
        wait_for(&spool, 8).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        task.abort();
        assert_eq!(
            ids(&spool).await,
            ["1", "2", "3", "30", "4", "40", "5", "6"]
        );
        let checkpoint = spool
            .checkpoint(&path.to_string_lossy())
            .expect("checkpoint")
            .expect("a checkpoint");
        assert_eq!(checkpoint.offset, (line(5).len() + line(6).len()) as u64);
        assert_eq!(checkpoint.line, 2);
    }

    #[tokio::test]
    async fn a_file_replaced_while_stopped_is_read_from_its_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        let spool = Spool::open(&dir.path().join("spool")).expect("spool");
        let metrics = Arc::new(Metrics::default());
        write(&path, &format!("{}{}", line(1), line(2)), true);
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(follow(&path, &spool, &metrics).run(stop));
        wait_for(&spool, 2).await;
        let _ = stop_tx.send(true);
        task.await.expect("task").expect("follow");
        // Rotated while stopped: the new file is at least as long as the old checkpoint.
        std::fs::rename(&path, dir.path().join("old")).expect("rotate");
        write(&path, &format!("{}{}{}", line(3), line(4), line(5)), true);
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(follow(&path, &spool, &metrics).run(stop));
        wait_for(&spool, 5).await;
        let _ = stop_tx.send(true);
        task.await.expect("task").expect("follow");
        assert_eq!(ids(&spool).await, ["1", "2", "3", "4", "5"]);
    }
}
