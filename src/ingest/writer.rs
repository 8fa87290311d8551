//! The one writer of usage events: group commit with isolation.
//!
//! It takes every batch waiting (up to [`MAX_BATCHES_PER_GROUP`]), commits them as one store
//! transaction, flushes once, and only then answers each batch: many small batches share one
//! flush. When a group fails for a reason that is not the storage's (a damaged record of one
//! account, a defect that panicked), its batches are committed again one by one, so only the
//! culprit's batch is refused and every other tenant's batch in the group is applied. A panic
//! while committing is caught on the blocking pool: it fails its batch, never the writer.
//!
//! Between groups it also deletes what compaction left below the accounts' floors and expired
//! dedupe records ([`Tidy`]): a slice after each group, back to back while no batch waits. sled's
//! reads and removals wait for a transaction's write lock, so a sweep on another thread advances
//! by about one record per group commit while ingestion runs; here nothing else holds the lock.
//! While no batch waits, a slice also waits for the calls' store operations under way to end
//! ([`crate::foreground`]), or takes a short one after the foreground's patience.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use licensing_core::{BillingMonth, Outcome, PriceList, Refusal, Timestamp};
use licensing_store::{Batch, OpError, Store, StoreError};
use tokio::sync::{Notify, mpsc, oneshot};
use tonic::Status;
use tonic_health::server::HealthReporter;
use tracing::Instrument as _;

use crate::{
    error::{ApiError, status},
    foreground::{self, Foreground},
    service::report_storage_failure,
};

/// Batches the writer commits in one transaction, at most.
const MAX_BATCHES_PER_GROUP: usize = 256;
/// Records a tidying slice reads after a group commit: a bounded delay for the next group.
const BUSY_SLICE: usize = 256;
/// Records a tidying slice reads while no batch waits and no call's store operation runs.
const IDLE_SLICE: usize = 4096;

/// Per account, what is left to delete: the records below its floor (compaction moved the floor)
/// and its expired dedupe records (a sweep asked); the writer deletes them in slices.
#[derive(Debug, Default)]
pub(super) struct Tidy {
    pending: Mutex<BTreeMap<String, Tidying>>,
    wake: Notify,
    /// The calls' store operations, which idle slices wait for (at most their patience).
    foreground: Arc<Foreground>,
}

/// What is left to delete of one account, and what was since when.
#[derive(Debug)]
struct Tidying {
    below_floor: bool,
    /// The dedupe records' retention after their month's close, the latest month expired when
    /// asked, and the key to go on after.
    dedupe: Option<(u32, BillingMonth, Option<Vec<u8>>)>,
    /// A later month asked while that read was under way: the records it already passed were
    /// judged at the clock of then, so the month is read again from the first once it ends.
    dedupe_next: Option<(u32, BillingMonth)>,
    deleted: usize,
    expired: usize,
    since: Instant,
}

/// The next slice of an account's tidying.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slice {
    BelowFloor,
    Dedupe {
        retention_days: u32,
        through: BillingMonth,
        after: Option<Vec<u8>>,
    },
}

impl Tidy {
    /// Tidying whose idle slices step aside for the store operations `foreground` counts.
    pub(super) fn stepping_aside_for(foreground: Arc<Foreground>) -> Tidy {
        Tidy {
            foreground,
            ..Tidy::default()
        }
    }

    fn entry(pending: &mut BTreeMap<String, Tidying>, account: String) -> &mut Tidying {
        pending.entry(account).or_insert_with(|| Tidying {
            below_floor: false,
            dedupe: None,
            dedupe_next: None,
            deleted: 0,
            expired: 0,
            since: Instant::now(),
        })
    }

    /// `account` has records below its floor.
    pub(super) fn want(&self, account: String) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        Self::entry(&mut pending, account).below_floor = true;
        drop(pending);
        self.wake.notify_one();
    }

    /// `account`'s dedupe records are to be read and those past `retention_days` after their
    /// month's close deleted, from the first, `through` being the latest month expired now:
    /// once read to the end, the store notes it. Asked while a read of them is under way for an
    /// earlier month, they are read again once it ends (the records it passed may have expired
    /// since it judged them), not dropped: nothing would ask again before the hourly sweep.
    pub(super) fn want_dedupe(&self, account: String, retention_days: u32, through: BillingMonth) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let tidying = Self::entry(&mut pending, account);
        match &tidying.dedupe {
            None => tidying.dedupe = Some((retention_days, through, None)),
            Some((_, going, _)) if *going < through => {
                let next = tidying
                    .dedupe_next
                    .map_or(through, |(_, next)| next.max(through));
                tidying.dedupe_next = Some((retention_days, next));
            }
            Some(_) => {}
        }
        drop(pending);
        self.wake.notify_one();
    }

    /// Accounts waiting to be tidied.
    pub(super) fn waiting(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The first account waiting and its next slice.
    fn first(&self) -> Option<(String, Slice)> {
        let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let (account, tidying) = pending.iter().next()?;
        // The records below the floor first; an entry with nothing left is removed by the
        // slice that finds nothing.
        let slice = match (&tidying.dedupe, tidying.below_floor) {
            (Some((retention_days, through, after)), false) => Slice::Dedupe {
                retention_days: *retention_days,
                through: *through,
                after: after.clone(),
            },
            _ => Slice::BelowFloor,
        };
        Some((account.clone(), slice))
    }

    /// Returns once an account waits, with the records of the next slice: [`IDLE_SLICE`] once
    /// no call's store operation is under way, [`BUSY_SLICE`] when calls kept running for the
    /// foreground's patience.
    async fn wanted(&self) -> usize {
        loop {
            let notified = self.wake.notified();
            if self.first().is_some() {
                break;
            }
            notified.await;
        }
        if self.foreground.quiet(foreground::PATIENCE).await {
            IDLE_SLICE
        } else {
            BUSY_SLICE
        }
    }

    /// A slice of `account` deleted `deleted` records; `rest`: where its work goes on (`None`:
    /// that kind of work is done, or given up after a failure).
    fn sliced(&self, account: &str, slice: &Slice, deleted: usize, rest: Option<Option<Vec<u8>>>) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(tidying) = pending.get_mut(account) else {
            return;
        };
        match slice {
            Slice::BelowFloor => {
                tidying.deleted += deleted;
                tidying.below_floor = rest.is_some();
            }
            Slice::Dedupe {
                retention_days,
                through,
                ..
            } => {
                tidying.expired += deleted;
                tidying.dedupe = match rest {
                    Some(after) => Some((*retention_days, *through, after)),
                    None => tidying
                        .dedupe_next
                        .take()
                        .map(|(retention_days, through)| (retention_days, through, None)),
                };
            }
        }
        if tidying.below_floor || tidying.dedupe.is_some() {
            return;
        }
        let Some(tidying) = pending.remove(account) else {
            return;
        };
        let elapsed_ms = tidying.since.elapsed().as_millis() as u64;
        if tidying.deleted > 0 {
            tracing::info!(
                account,
                deleted = tidying.deleted,
                elapsed_ms,
                "records below the floor deleted"
            );
        }
        if tidying.expired > 0 {
            tracing::info!(
                expired = tidying.expired,
                account,
                elapsed_ms,
                "expired dedupe records deleted"
            );
        }
    }
}

/// One batch waiting for the writer, and where its answer goes.
pub(super) struct Job {
    pub(super) batch: Batch,
    pub(super) reply: oneshot::Sender<Result<Vec<Outcome>, Status>>,
    /// The batch's span: the group commit that commits it links to it.
    pub(super) span: tracing::Span,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Job({} events)", self.batch.len())
    }
}

/// What the writer commits to: the store, or a stand-in in tests.
pub(super) trait Commit: Clone + Send + Sync + 'static {
    /// Applies the batches in one transaction: one outcome per event, per batch.
    fn commit(&self, batches: &[Batch]) -> Result<Vec<Vec<Outcome>>, OpError>;
    /// Makes every commit so far durable.
    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Whether storage failed: writes are refused until a restart.
    fn has_failed(&self) -> bool;
    /// Deletes up to `records` of what lies below `account`'s floor; returns how many.
    fn tidy(&self, account: &str, records: usize) -> Result<usize, OpError> {
        let _ = (account, records);
        Ok(0)
    }
    /// Reads up to `records` of `account`'s dedupe records after `after` and deletes those
    /// expired; returns how many, and the key to go on after (`None`: the last was read).
    fn expire(
        &self,
        account: &str,
        retention_days: u32,
        after: Option<&[u8]>,
        records: usize,
    ) -> Result<(usize, Option<Vec<u8>>), OpError> {
        let _ = (account, retention_days, after, records);
        Ok((0, None))
    }
    /// Notes that `account`'s dedupe records were read to their end after `month` expired.
    fn expired_through(&self, account: &str, month: BillingMonth) -> Result<(), OpError> {
        let _ = (account, month);
        Ok(())
    }
}

/// The store under the configured price list, at the real time of each commit.
#[derive(Debug, Clone)]
pub(super) struct StoreCommit {
    pub(super) store: Store,
    pub(super) prices: Arc<PriceList>,
}

impl Commit for StoreCommit {
    fn commit(&self, batches: &[Batch]) -> Result<Vec<Vec<Outcome>>, OpError> {
        self.store.ingest(batches, Timestamp::now(), &self.prices)
    }

    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        let store = self.store.clone();
        async move { store.flush().await }
    }

    fn has_failed(&self) -> bool {
        self.store.has_failed()
    }

    fn tidy(&self, account: &str, records: usize) -> Result<usize, OpError> {
        match self.store.delete_below_floor(account, records) {
            // Deleted since: nothing of it is left to delete.
            Err(OpError::AccountNotFound(_)) => Ok(0),
            deleted => deleted,
        }
    }

    fn expire(
        &self,
        account: &str,
        retention_days: u32,
        after: Option<&[u8]>,
        records: usize,
    ) -> Result<(usize, Option<Vec<u8>>), OpError> {
        let sweep = self.store.expire_dedupe(
            Timestamp::now(),
            retention_days,
            Some(account),
            after,
            records,
        )?;
        Ok((sweep.expired, sweep.next))
    }

    fn expired_through(&self, account: &str, month: BillingMonth) -> Result<(), OpError> {
        self.store.dedupe_expired_through(account, month)
    }
}

/// The writer loop: runs until every sender of `jobs` is gone.
pub(super) async fn write(
    mut jobs: mpsc::Receiver<Job>,
    target: impl Commit,
    health: HealthReporter,
    liveness: Arc<crate::health::Liveness>,
    feed: Arc<super::keeper::Feed>,
    tidy: Arc<Tidy>,
) {
    loop {
        let first = tokio::select! {
            biased;
            job = jobs.recv() => match job {
                Some(job) => job,
                None => return,
            },
            records = tidy.wanted() => {
                tidy_slice(&target, &tidy, records).await;
                continue;
            }
        };
        let mut group = vec![first];
        while group.len() < MAX_BATCHES_PER_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let events: usize = group.iter().map(|job| job.batch.len()).sum();
        let span = group_span(&group, events);
        let (batches, replies): (Vec<Batch>, Vec<_>) =
            group.into_iter().map(|j| (j.batch, j.reply)).unzip();
        let started = Instant::now();
        liveness.busy();
        metrics::histogram!("licensing_group_commit_batches").record(batches.len() as f64);
        metrics::histogram!("licensing_group_commit_events").record(events as f64);
        let batches: Arc<[Batch]> = batches.into();
        let answers = commit_group(&target, batches.clone())
            .instrument(span)
            .await;
        metrics::histogram!("licensing_group_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        liveness.idle();
        if target.has_failed() {
            report_storage_failure(&health);
        }
        count_outcomes(&answers);
        feed.committed(&batches, &answers);
        for (reply, answer) in replies.into_iter().zip(answers) {
            // A stream that went away simply does not hear its answer; it will resend.
            let _ = reply.send(answer);
        }
        tidy_slice(&target, &tidy, BUSY_SLICE).await;
    }
}

/// One slice of the first account's tidying (up to `records` records), on the blocking pool.
async fn tidy_slice(target: &impl Commit, tidy: &Tidy, records: usize) {
    let Some((account, slice)) = tidy.first() else {
        return;
    };
    if target.has_failed() {
        // Nothing is written any more; compaction names the account again after a restart.
        tidy.sliced(&account, &slice, 0, None);
        return;
    }
    let (slice_target, slice_account, what) = (target.clone(), account.clone(), slice.clone());
    let done = tokio::task::spawn_blocking(move || match what {
        Slice::BelowFloor => slice_target.tidy(&slice_account, records).map(|deleted| {
            let rest = (deleted > 0).then_some(None);
            (deleted, rest)
        }),
        Slice::Dedupe {
            retention_days,
            through,
            after,
        } => {
            let (expired, next) =
                slice_target.expire(&slice_account, retention_days, after.as_deref(), records)?;
            if next.is_none() {
                slice_target.expired_through(&slice_account, through)?;
            }
            Ok((expired, next.map(Some)))
        }
    })
    .await;
    // A panic on the pool fails the slice like an error does.
    let done = done
        .map_err(|e| e.to_string())
        .and_then(|done| done.map_err(|e| e.to_string()));
    match done {
        Ok((deleted, rest)) => {
            let counter = match slice {
                Slice::BelowFloor => "licensing_compacted_records_total",
                Slice::Dedupe { .. } => "licensing_dedupe_expired_total",
            };
            metrics::counter!(counter).increment(deleted as u64);
            tidy.sliced(&account, &slice, deleted, rest);
        }
        Err(error) => {
            tracing::warn!(
                account,
                error,
                "deleting old records failed; the next sweep tries again"
            );
            tidy.sliced(&account, &slice, 0, None);
        }
    }
}

/// The span of one group commit, linked to the span of every batch it commits (a group serves
/// many traces, so it is the child of none).
fn group_span(group: &[Job], events: usize) -> tracing::Span {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let span = tracing::info_span!(
        target: crate::telemetry::calls::TRACE_TARGET,
        parent: None,
        "group commit",
        batches = group.len(),
        events,
    );
    if !span.is_disabled() {
        for job in group {
            let context = job.span.context();
            let linked = context.span().span_context().clone();
            if linked.is_valid() {
                span.add_link(linked);
            }
        }
    }
    span
}

/// Counts each event's outcome (`licensing_events_total{outcome, reason}`), and the events of
/// batches that failed whole.
fn count_outcomes(answers: &[Result<Vec<Outcome>, Status>]) {
    let mut applied = 0u64;
    let mut duplicate = 0u64;
    for answer in answers {
        match answer {
            Ok(outcomes) => {
                for outcome in outcomes {
                    match outcome {
                        Outcome::Applied => applied += 1,
                        Outcome::Duplicate => duplicate += 1,
                        Outcome::Refused(refusal) => {
                            metrics::counter!(
                                "licensing_events_total",
                                "outcome" => "refused",
                                "reason" => refusal_reason(refusal),
                            )
                            .increment(1);
                        }
                    }
                }
            }
            Err(_) => metrics::counter!("licensing_failed_batches_total").increment(1),
        }
    }
    if applied > 0 {
        metrics::counter!("licensing_events_total", "outcome" => "applied", "reason" => "")
            .increment(applied);
    }
    if duplicate > 0 {
        metrics::counter!("licensing_events_total", "outcome" => "duplicate", "reason" => "")
            .increment(duplicate);
        metrics::counter!("licensing_dedupe_hits_total").increment(duplicate);
    }
}

/// A refusal's reason as the metrics label it: the proto enum's name, without its prefix.
fn refusal_reason(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::Invalid { .. } => "INVALID",
        Refusal::UnknownAccount(_) => "UNKNOWN_ACCOUNT",
        Refusal::MonthClosed { .. } => "MONTH_CLOSED",
        Refusal::TooFarInFuture { .. } => "TOO_FAR_IN_FUTURE",
        Refusal::ConflictingDuplicate { .. } => "CONFLICTING_DUPLICATE",
        Refusal::MeterLimit { .. } => "METER_LIMIT",
        Refusal::PermissionDenied { .. } => "PERMISSION_DENIED",
    }
}

/// Commits a group and flushes; one answer per batch. Only committed batches wait for the flush,
/// and none is answered before it returned `Ok`.
async fn commit_group(
    target: &impl Commit,
    batches: Arc<[Batch]>,
) -> Vec<Result<Vec<Outcome>, Status>> {
    let mut answers = match commit_on_pool(target, batches.clone(), None).await {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        // The storage failed: every write is refused from now on, so retrying is pointless.
        Err(failure) if target.has_failed() || batches.len() == 1 => {
            vec![Err(failure); batches.len()]
        }
        // One batch's fault, probably: each batch on its own, so only the culprit is refused.
        Err(_) => {
            let mut answers = Vec::with_capacity(batches.len());
            for index in 0..batches.len() {
                answers.push(
                    commit_on_pool(target, batches.clone(), Some(index))
                        .await
                        .and_then(|mut outcomes| {
                            outcomes.pop().ok_or_else(|| {
                                status(ApiError::Internal(
                                    "the store answered no outcomes for a batch".into(),
                                ))
                            })
                        }),
                );
            }
            answers
        }
    };
    let flush_started = Instant::now();
    let flushed = if answers.iter().any(Result::is_ok) {
        let flushed = target.flush().await;
        metrics::histogram!("licensing_flush_seconds")
            .record(flush_started.elapsed().as_secs_f64());
        flushed
    } else {
        Ok(())
    };
    if let Err(e) = flushed {
        let failure = status(OpError::Store(e).into());
        for answer in &mut answers {
            if answer.is_ok() {
                *answer = Err(failure.clone());
            }
        }
    }
    answers
}

/// Commits `batches` (or only the one at `only`) on the blocking pool. A panic is caught there
/// and answered INTERNAL with an error id; its detail goes to the log.
async fn commit_on_pool(
    target: &impl Commit,
    batches: Arc<[Batch]>,
    only: Option<usize>,
) -> Result<Vec<Vec<Outcome>>, Status> {
    let target = target.clone();
    let expected = only.map_or(batches.len(), |_| 1);
    let committed = tokio::task::spawn_blocking(move || match only {
        None => target.commit(&batches),
        Some(index) => target.commit(&batches[index..=index]),
    })
    .await;
    match committed {
        Ok(Ok(outcomes)) if outcomes.len() == expected => Ok(outcomes),
        Ok(Ok(outcomes)) => Err(status(ApiError::Internal(format!(
            "the store answered {} batches for {expected}",
            outcomes.len()
        )))),
        Ok(Err(e)) => Err(status(e.into())),
        Err(e) => Err(status(ApiError::Internal(format!(
            "committing a group of usage events failed: {e}"
        )))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    };

    use licensing_core::{Event, EventKind, Timestamp};

    use super::*;

    /// Commits every event whose member is not a culprit; `panic` panics, `corrupt` is a damaged
    /// record. Counts what it committed.
    #[derive(Debug, Clone, Default)]
    struct Stand(Arc<Mutex<Vec<String>>>, Arc<AtomicUsize>);

    impl Commit for Stand {
        fn commit(&self, batches: &[Batch]) -> Result<Vec<Vec<Outcome>>, OpError> {
            self.1.fetch_add(1, Ordering::Relaxed);
            let mut committed = Vec::new();
            let mut outcomes = Vec::new();
            for batch in batches {
                let mut batch_outcomes = Vec::new();
                for event in batch.iter().flatten() {
                    match event.member_id.as_str() {
                        "panic" => panic!("a defect"),
                        "corrupt" => {
                            return Err(OpError::Store(StoreError::Corrupt(
                                licensing_store::Corrupt {
                                    what: "account",
                                    problem: "month 0-7".into(),
                                },
                            )));
                        }
                        _ => {}
                    }
                    committed.push(event.event_id.clone());
                    batch_outcomes.push(Outcome::Applied);
                }
                outcomes.push(batch_outcomes);
            }
            // A transaction: all or nothing.
            self.0.lock().expect("lock").extend(committed);
            Ok(outcomes)
        }

        async fn flush(&self) -> Result<(), StoreError> {
            Ok(())
        }

        fn has_failed(&self) -> bool {
            false
        }
    }

    fn batch(account: &str, member: &str, id: &str) -> Batch {
        vec![Ok(Event {
            source: "test".into(),
            event_id: id.into(),
            account_id: account.into(),
            member_id: member.into(),
            occurred_at: Timestamp::UNIX_EPOCH,
            kind: EventKind::AgentLogin,
        })]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_batch_fails_alone_and_the_writer_goes_on() {
        let stand = Stand::default();
        let (health, _) = tonic_health::server::health_reporter();
        let (jobs_tx, jobs) = mpsc::channel(64);
        // Queued before the writer starts, so that they form one group.
        let mut answers = Vec::new();
        for (i, member) in ["ann", "panic", "bob", "corrupt", "eve"]
            .into_iter()
            .enumerate()
        {
            let (reply, answer) = oneshot::channel();
            let account = if i % 2 == 0 { "bystander" } else { "culprit" };
            jobs_tx
                .send(Job {
                    batch: batch(account, member, &format!("e{i}")),
                    reply,
                    span: tracing::Span::none(),
                })
                .await
                .expect("queued");
            answers.push(answer);
        }
        let liveness = Arc::new(crate::health::Liveness::default());
        let writer = tokio::spawn(write(
            jobs,
            stand.clone(),
            health,
            liveness,
            Default::default(),
            Default::default(),
        ));
        let mut codes = Vec::new();
        for answer in answers {
            codes.push(match answer.await.expect("answered") {
                Ok(outcomes) => {
                    assert_eq!(outcomes, [Outcome::Applied]);
                    None
                }
                Err(status) => {
                    assert!(status.message().contains("(error id "), "{status:?}");
                    assert!(!status.message().contains("panicked"), "{status:?}");
                    Some(status.code())
                }
            });
        }
        assert_eq!(
            codes,
            [
                None,
                Some(tonic::Code::Internal),
                None,
                Some(tonic::Code::DataLoss),
                None
            ]
        );
        let mut committed = stand.0.lock().expect("lock").clone();
        committed.sort();
        assert_eq!(
            committed,
            ["e0", "e2", "e4"],
            "every bystander applied once"
        );
        // One group commit that failed, then one per batch.
        assert_eq!(stand.1.load(Ordering::Relaxed), 1 + 5);

        // The writer survived the panic: the next batch is applied.
        let (reply, answer) = oneshot::channel();
        jobs_tx
            .send(Job {
                batch: batch("bystander", "ann", "e9"),
                reply,
                span: tracing::Span::none(),
            })
            .await
            .expect("queued");
        assert_eq!(
            answer.await.expect("answered").expect("applied"),
            [Outcome::Applied]
        );
        drop(jobs_tx);
        writer
            .await
            .expect("the writer ends when its senders are gone");
    }

    /// The writer over `target`, tidying with `tidy`.
    fn spawn_tidying(
        jobs: mpsc::Receiver<Job>,
        target: impl Commit,
        tidy: &Arc<Tidy>,
    ) -> tokio::task::JoinHandle<()> {
        let (health, _) = tonic_health::server::health_reporter();
        tokio::spawn(write(
            jobs,
            target,
            health,
            Arc::new(crate::health::Liveness::default()),
            Default::default(),
            tidy.clone(),
        ))
    }

    /// Returns once no account waits to be tidied: polled, within a generous deadline.
    async fn tidied(tidy: &Tidy) {
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        while tidy.waiting() > 0 {
            assert!(
                Instant::now() < deadline,
                "the writer never finished tidying"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Records below a floor, deleted as the writer tidies; and the slices asked for.
    #[derive(Debug, Clone)]
    struct Below(Arc<AtomicUsize>, Arc<Mutex<Vec<usize>>>);

    impl Commit for Below {
        fn commit(&self, batches: &[Batch]) -> Result<Vec<Vec<Outcome>>, OpError> {
            Ok(batches
                .iter()
                .map(|b| vec![Outcome::Applied; b.len()])
                .collect())
        }

        async fn flush(&self) -> Result<(), StoreError> {
            Ok(())
        }

        fn has_failed(&self) -> bool {
            false
        }

        fn tidy(&self, account: &str, records: usize) -> Result<usize, OpError> {
            assert_eq!(account, "acme");
            self.1.lock().expect("lock").push(records);
            let left = self.0.load(Ordering::Relaxed);
            let deleted = left.min(records);
            self.0.store(left - deleted, Ordering::Relaxed);
            Ok(deleted)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_deletes_what_lies_below_a_floor_in_slices_between_its_commits() {
        let below = Below(Arc::new(AtomicUsize::new(10_000)), Arc::default());
        let (jobs_tx, jobs) = mpsc::channel(64);
        let tidy = Arc::new(Tidy::default());
        // A batch queued first: it is committed before any slice (the writer prefers batches).
        let (reply, answer) = oneshot::channel();
        jobs_tx
            .send(Job {
                batch: batch("acme", "ann", "e1"),
                reply,
                span: tracing::Span::none(),
            })
            .await
            .expect("queued");
        tidy.want("acme".into());
        let writer = spawn_tidying(jobs, below.clone(), &tidy);
        assert_eq!(
            answer.await.expect("answered").expect("applied"),
            [Outcome::Applied]
        );
        // Then slices until nothing is left.
        tidied(&tidy).await;
        assert_eq!(below.0.load(Ordering::Relaxed), 0);
        let slices = below.1.lock().expect("lock").clone();
        // After the group commit, a short slice; then, idle, long ones until one deletes none.
        assert_eq!(slices.first(), Some(&BUSY_SLICE), "{slices:?}");
        assert!(slices[1..].iter().all(|&n| n == IDLE_SLICE), "{slices:?}");
        assert_eq!(
            slices.len(),
            1 + (10_000 - BUSY_SLICE).div_ceil(IDLE_SLICE) + 1,
            "{slices:?}"
        );
        drop(jobs_tx);
        writer.await.expect("the writer ends");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn while_a_call_runs_the_idle_slices_are_short_and_wait_the_patience_first() {
        let below = Below(Arc::new(AtomicUsize::new(3 * BUSY_SLICE)), Arc::default());
        let (jobs_tx, jobs) = mpsc::channel(64);
        let foreground = Arc::new(Foreground::default());
        let tidy = Arc::new(Tidy::stepping_aside_for(foreground.clone()));
        let call = foreground.enter();
        let started = Instant::now();
        tidy.want("acme".into());
        let writer = spawn_tidying(jobs, below.clone(), &tidy);
        tidied(&tidy).await;
        let slices = below.1.lock().expect("lock").clone();
        // Three slices that deleted, and the one that found nothing left.
        assert_eq!(slices, [BUSY_SLICE; 4]);
        // Each waited the patience for the call to end.
        assert!(started.elapsed() >= 4 * foreground::PATIENCE);

        // Once the call ended, the next idle slice is a long one, without waiting.
        drop(call);
        below.0.store(1, Ordering::Relaxed);
        tidy.want("acme".into());
        tidied(&tidy).await;
        let slices = below.1.lock().expect("lock").clone();
        assert_eq!(slices[4..], [IDLE_SLICE; 2]);
        drop(jobs_tx);
        writer.await.expect("the writer ends");
    }

    /// Dedupe records read in slices of `IDLE_SLICE`; the months noted as expired.
    #[derive(Debug, Clone)]
    struct Expiring(
        Arc<AtomicUsize>,
        Arc<Mutex<Vec<(String, BillingMonth, usize)>>>,
    );

    impl Commit for Expiring {
        fn commit(&self, _: &[Batch]) -> Result<Vec<Vec<Outcome>>, OpError> {
            Ok(Vec::new())
        }

        async fn flush(&self) -> Result<(), StoreError> {
            Ok(())
        }

        fn has_failed(&self) -> bool {
            false
        }

        fn expire(
            &self,
            account: &str,
            _: u32,
            _: Option<&[u8]>,
            records: usize,
        ) -> Result<(usize, Option<Vec<u8>>), OpError> {
            assert_eq!(account, "acme");
            let left = self.0.load(Ordering::Relaxed);
            let read = left.min(records);
            self.0.store(left - read, Ordering::Relaxed);
            Ok((read, (left > read).then(|| b"cursor".to_vec())))
        }

        fn expired_through(&self, account: &str, month: BillingMonth) -> Result<(), OpError> {
            let left = self.0.load(Ordering::Relaxed);
            self.1
                .lock()
                .expect("lock")
                .push((account.to_owned(), month, left));
            Ok(())
        }
    }

    #[test]
    fn a_later_month_asked_during_a_read_of_the_dedupe_records_reads_them_again_from_the_first() {
        let tidy = Tidy::default();
        let march = BillingMonth::parse("2026-03").expect("month");
        let april = BillingMonth::parse("2026-04").expect("month");
        let dedupe = |through, after: Option<&[u8]>| Slice::Dedupe {
            retention_days: 35,
            through,
            after: after.map(<[u8]>::to_vec),
        };
        tidy.want_dedupe("acme".into(), 35, march);
        let (_, slice) = tidy.first().expect("waiting");
        assert_eq!(slice, dedupe(march, None));
        tidy.sliced("acme", &slice, 10, Some(Some(b"cursor".to_vec())));
        // Asked again for the same month or an earlier one: the read goes on as it was.
        tidy.want_dedupe("acme".into(), 35, march);
        tidy.want_dedupe(
            "acme".into(),
            35,
            BillingMonth::parse("2026-02").expect("month"),
        );
        // A later month: the read under way ends, then the records are read again.
        tidy.want_dedupe("acme".into(), 35, april);
        let (_, slice) = tidy.first().expect("waiting");
        assert_eq!(slice, dedupe(march, Some(b"cursor")));
        tidy.sliced("acme", &slice, 5, None);
        let (_, slice) = tidy.first().expect("asked again");
        assert_eq!(slice, dedupe(april, None));
        tidy.sliced("acme", &slice, 7, None);
        assert_eq!(tidy.waiting(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_month_asked_is_noted_once_the_dedupe_records_are_read_to_their_end() {
        let expiring = Expiring(
            Arc::new(AtomicUsize::new(3 * IDLE_SLICE + 1)),
            Arc::default(),
        );
        let (jobs_tx, jobs) = mpsc::channel(64);
        let tidy = Arc::new(Tidy::default());
        let march = BillingMonth::parse("2026-03").expect("month");
        tidy.want_dedupe("acme".into(), 35, march);
        let writer = spawn_tidying(jobs, expiring.clone(), &tidy);
        tidied(&tidy).await;
        // Noted once, after the last record was read.
        assert_eq!(
            *expiring.1.lock().expect("lock"),
            [("acme".to_owned(), march, 0)]
        );
        drop(jobs_tx);
        writer.await.expect("the writer ends");
    }
}
