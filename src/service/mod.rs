//! `licensing.v1.LicensingService`: thin handlers that validate and convert (`from_proto`), call
//! the domain or the store, and convert back (`to_proto`). Handlers return [`ApiError`]; the
//! trait implementation below maps it to a status once per call.
//!
//! Writes run on the blocking pool (sled blocks), are made durable with `Store::flush` and only
//! then answered and announced to `GetUsage` followers. The first storage error turns every
//! service NOT_SERVING and stops writes until a restart.

mod accounts;
mod advisor;
mod billing;
mod inventory;
mod members;
mod usage;
pub use usage::Licences;

use std::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

use licensing_core::{PriceList, Principal, Timestamp};
use licensing_store::{OpError, Store};
use tokio::sync::{Semaphore, broadcast, watch};
use tonic::{Request, Response, Status};
use tonic_health::server::HealthReporter;

use crate::{
    api::{self, licensing_service_server::LicensingService},
    auth::rules::{self, Use},
    error::{ApiError, status},
    outbox::{ResponseStream, Streams},
    telemetry::calls::CallNote,
};

/// Store operations of the handlers running at once on the blocking pool; more wait for a slot.
/// Each is short (none waits for a client), so this bounds the pool's threads without slowing
/// calls, and keeps the pool from growing to hundreds of threads under a burst.
const BLOCKING_CALLS: usize = 64;
/// Of those, the reads that `GetUsage` followers share after a change: a burst of followers
/// cannot take the slots every other call needs.
const FOLLOW_READS: usize = 2;
/// Of those, the pages of snapshots and audit trails: hundreds of streams opened at once read
/// their pages a few at a time, and short calls still find a slot at once.
const STREAM_READS: usize = 8;

/// Committed changes kept for `GetUsage` followers that fall behind; beyond that they resend
/// their snapshot.
const CHANGES_BUFFER: usize = 4096;

/// A change made durable, announced to `GetUsage` followers.
#[derive(Debug, Clone)]
pub(crate) struct Committed {
    /// Numbers the changes, so that followers share one read of each.
    seq: u64,
    account_id: Arc<str>,
    what: CommittedChange,
}

#[derive(Debug, Clone)]
enum CommittedChange {
    /// A member was applied.
    Member(String),
    /// A member was removed.
    Removed(String),
    /// The inventory or the account's settings changed.
    Account,
    /// Ingested events changed the account's usage: these members' login days (none for
    /// metered use alone), and the summary.
    Usage(Arc<[String]>),
}

/// Members whose rows one usage change carries, at most: more are announced as several changes.
const USAGE_MEMBERS_PER_CHANGE: usize = 500;

/// Tells `GetUsage` followers what ingestion changed. Announcing is a send on a broadcast
/// channel: its cost does not depend on the number of followers, who read the change once
/// between them.
#[derive(Debug, Clone)]
pub struct UsageChanges {
    changes: broadcast::Sender<Committed>,
    next_change: Arc<AtomicU64>,
}

impl UsageChanges {
    /// Whether anyone follows usage at all (else nothing needs to be collected).
    pub fn followed(&self) -> bool {
        self.changes.receiver_count() > 0
    }

    /// Announces that ingested events changed `account_id`'s usage, and these members' days.
    pub fn announce(&self, account_id: &str, members: Vec<String>) {
        let mut parts: Vec<Arc<[String]>> = members
            .chunks(USAGE_MEMBERS_PER_CHANGE)
            .map(Arc::from)
            .collect();
        if parts.is_empty() {
            parts.push(Arc::from(Vec::new()));
        }
        for members in parts {
            // No follower is not an error.
            let _ = self.changes.send(Committed {
                seq: self.next_change.fetch_add(1, Ordering::Relaxed),
                account_id: account_id.into(),
                what: CommittedChange::Usage(members),
            });
        }
    }
}

/// The handlers of `LicensingService`.
#[derive(Debug, Clone)]
pub struct Licensing {
    prices: Arc<PriceList>,
    store: Store,
    health: HealthReporter,
    changes: broadcast::Sender<Committed>,
    /// The next change's sequence number.
    next_change: Arc<AtomicU64>,
    shutdown: watch::Receiver<bool>,
    /// The server's bound on open streams.
    streams: Streams,
    /// `GetUsage` streams still being served.
    usage_streams: Arc<AtomicUsize>,
    /// See [`BLOCKING_CALLS`].
    blocking_calls: Arc<Semaphore>,
    /// `licensing_blocking_waiting`: operations waiting for a slot of `blocking_calls`.
    waiting: metrics::Gauge,
    /// See [`FOLLOW_READS`].
    follow_reads: Arc<Semaphore>,
    /// See [`STREAM_READS`].
    stream_reads: Arc<Semaphore>,
    /// What recent changes show, read once for all followers.
    change_reads: Arc<usage::ChangeReads>,
    /// How many such reads were made.
    change_reads_done: Arc<AtomicU64>,
    /// Whether every call must carry a principal (authentication is on).
    authenticated: bool,
    /// Told when an account's clock moved: months may have closed, to compact.
    clock_moved: Arc<crate::ingest::ClockMoves>,
    /// Counts the store operations of calls, which background work steps aside for.
    foreground: Arc<crate::foreground::Foreground>,
}

/// Counts a usage stream while it is alive.
#[derive(Debug)]
struct StreamGuard(Arc<AtomicUsize>);

impl StreamGuard {
    fn new(count: &Arc<AtomicUsize>) -> StreamGuard {
        count.fetch_add(1, Ordering::Relaxed);
        StreamGuard(count.clone())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Licensing {
    /// Handlers over `store`, pricing with `prices`. `health` is turned NOT_SERVING on a storage
    /// failure; streams that follow changes end when `shutdown` turns true; `streams` bounds the
    /// streams open at once. With `authenticated`, every call must carry the principal the
    /// authentication layer puts into it; without, a call without one is `unauthenticated`.
    pub fn new(
        prices: Arc<PriceList>,
        store: Store,
        health: HealthReporter,
        shutdown: watch::Receiver<bool>,
        streams: Streams,
        authenticated: bool,
    ) -> Self {
        let (changes, _) = broadcast::channel(CHANGES_BUFFER);
        Licensing {
            prices,
            store,
            health,
            changes,
            next_change: Arc::new(AtomicU64::new(0)),
            shutdown,
            streams,
            usage_streams: Arc::new(AtomicUsize::new(0)),
            blocking_calls: Arc::new(Semaphore::new(BLOCKING_CALLS)),
            waiting: metrics::gauge!("licensing_blocking_waiting"),
            follow_reads: Arc::new(Semaphore::new(FOLLOW_READS)),
            stream_reads: Arc::new(Semaphore::new(STREAM_READS)),
            change_reads: Arc::default(),
            change_reads_done: Arc::default(),
            authenticated,
            clock_moved: Arc::default(),
            foreground: Arc::default(),
        }
    }

    /// What ingestion announces its changes to `GetUsage` followers with.
    pub fn usage_changes(&self) -> UsageChanges {
        UsageChanges {
            changes: self.changes.clone(),
            next_change: self.next_change.clone(),
        }
    }

    /// Tells `moves` whenever an account's clock moved (and months may have closed).
    pub fn on_clock_moved(mut self, moves: Arc<crate::ingest::ClockMoves>) -> Self {
        self.clock_moved = moves;
        self
    }

    /// Counts every store operation of a call in `foreground`, for the background work to step
    /// aside while they run.
    pub fn in_foreground(mut self, foreground: Arc<crate::foreground::Foreground>) -> Self {
        self.foreground = foreground;
        self
    }

    /// The caller of `request`, as the authentication layer found it, and its message.
    fn caller<T>(&self, request: Request<T>) -> Result<(Caller, T), ApiError> {
        let principal = request.extensions().get::<Arc<Principal>>().cloned();
        let note = request.extensions().get::<Arc<CallNote>>().cloned();
        let message = request.into_inner();
        let principal = match principal {
            Some(principal) => principal,
            None if !self.authenticated => Arc::new(Principal::unauthenticated()),
            None => {
                return Err(ApiError::Internal(
                    "a call reached its handler without a principal".into(),
                ));
            }
        };
        Ok((Caller { principal, note }, message))
    }

    /// Refuses the call unless `caller` holds the right `method` needs for `used` on
    /// `account_id`; checked before anything of the account is read, so the refusal is the same
    /// whether the account exists or not.
    fn authorize(
        caller: &Caller,
        method: &str,
        used: Use,
        account_id: &str,
    ) -> Result<(), ApiError> {
        if let Some(note) = &caller.note {
            note.account(account_id);
        }
        caller
            .principal
            .check(rules::needs(method, used), account_id)
            .map_err(|denied| ApiError::PermissionDenied(denied.to_string()))
    }

    /// `GetUsage` streams being served now (their tasks end when the client leaves).
    pub fn usage_streams(&self) -> usize {
        self.usage_streams.load(Ordering::Relaxed)
    }

    /// The real time. Sandbox accounts replace it with their own clock in the store.
    fn real_now() -> Timestamp {
        Timestamp::now()
    }

    /// Runs a store operation on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Store) -> Result<T, OpError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = self.store.clone();
        // The semaphore is never closed, so the permit always comes.
        let _slot = {
            // Counted while waiting, and no longer once the slot came or the call went.
            let _waiting = crate::telemetry::metrics::Held::new(self.waiting.clone());
            self.blocking_calls.acquire().await
        };
        let running = self.foreground.enter();
        let result = tokio::task::spawn_blocking(move || {
            let _running = running;
            op(&store)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("store task failed: {e}")))?;
        result.map_err(|e| self.refused(e))
    }

    /// Runs one page of a stream's read on the blocking pool, within the streams' share of it.
    async fn stream_blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Store) -> Result<T, OpError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let _slot = self.stream_reads.acquire().await;
        self.blocking(op).await
    }

    /// Runs a store write, then makes it durable. Only an `Ok` from here may be acknowledged.
    async fn write<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Store) -> Result<T, OpError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let value = self.blocking(op).await?;
        self.store
            .flush()
            .await
            .map_err(|e| self.refused(e.into()))?;
        Ok(value)
    }

    /// The error of a refused operation; a storage failure also turns health NOT_SERVING.
    fn refused(&self, error: OpError) -> ApiError {
        if self.store.has_failed() {
            report_storage_failure(&self.health);
        }
        error.into()
    }

    fn announce(&self, account_id: &str, what: CommittedChange) {
        // No follower is not an error.
        let _ = self.changes.send(Committed {
            seq: self.next_change.fetch_add(1, Ordering::Relaxed),
            account_id: account_id.into(),
            what,
        });
    }
}

/// Turns every service NOT_SERVING after a storage failure: writes are refused until a restart.
pub(crate) fn report_storage_failure(health: &HealthReporter) {
    let health = health.clone();
    tokio::spawn(async move {
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        for service in [
            "licensing.v1.LicensingService",
            "licensing.v1.IngestionService",
        ] {
            health
                .set_service_status(service, tonic_health::ServingStatus::NotServing)
                .await;
        }
    });
}

/// Completes once `shutdown` turns true (or its sender is gone).
pub(crate) async fn stopping(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stopping| *stopping).await;
}

/// Who is calling, and the note the call's telemetry reads (the account the call is about).
#[derive(Debug)]
pub(crate) struct Caller {
    principal: Arc<Principal>,
    note: Option<Arc<CallNote>>,
}

impl std::ops::Deref for Caller {
    type Target = Principal;

    fn deref(&self) -> &Principal {
        &self.principal
    }
}

#[tonic::async_trait]
impl LicensingService for Licensing {
    async fn resolve_member(
        &self,
        request: Request<api::ResolveMemberRequest>,
    ) -> Result<Response<api::ResolveMemberResponse>, Status> {
        self.resolve_member(request)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn get_member(
        &self,
        request: Request<api::GetMemberRequest>,
    ) -> Result<Response<api::GetMemberResponse>, Status> {
        self.get_member(request)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn list_members(
        &self,
        request: Request<api::ListMembersRequest>,
    ) -> Result<Response<api::ListMembersResponse>, Status> {
        self.list_members(request)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn remove_member(
        &self,
        request: Request<api::RemoveMemberRequest>,
    ) -> Result<Response<api::RemoveMemberResponse>, Status> {
        self.remove_member(request)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn create_account(
        &self,
        request: Request<api::CreateAccountRequest>,
    ) -> Result<Response<api::CreateAccountResponse>, Status> {
        self.create_account(request)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn get_account(
        &self,
        request: Request<api::GetAccountRequest>,
    ) -> Result<Response<api::GetAccountResponse>, Status> {
        self.get_account(request)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn update_account(
        &self,
        request: Request<api::UpdateAccountRequest>,
    ) -> Result<Response<api::UpdateAccountResponse>, Status> {
        self.update_account(request)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn advance_clock(
        &self,
        request: Request<api::AdvanceClockRequest>,
    ) -> Result<Response<api::AdvanceClockResponse>, Status> {
        self.advance_clock(request)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn get_inventory(
        &self,
        request: Request<api::GetInventoryRequest>,
    ) -> Result<Response<api::GetInventoryResponse>, Status> {
        self.get_inventory(request)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn adjust_inventory(
        &self,
        request: Request<api::AdjustInventoryRequest>,
    ) -> Result<Response<api::AdjustInventoryResponse>, Status> {
        self.adjust_inventory(request)
            .await
            .map(Response::new)
            .map_err(status)
    }

    type GetUsageStream = ResponseStream<api::GetUsageResponse>;

    async fn get_usage(
        &self,
        request: Request<api::GetUsageRequest>,
    ) -> Result<Response<Self::GetUsageStream>, Status> {
        self.get_usage(request)
            .await
            .map(Response::new)
            .map_err(status)
    }

    type ReadAuditTrailStream = ResponseStream<api::ReadAuditTrailResponse>;

    async fn read_audit_trail(
        &self,
        request: Request<api::ReadAuditTrailRequest>,
    ) -> Result<Response<Self::ReadAuditTrailStream>, Status> {
        self.read_audit_trail(request)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn get_statement(
        &self,
        request: Request<api::GetStatementRequest>,
    ) -> Result<Response<api::GetStatementResponse>, Status> {
        self.get_statement(request)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn check_quota(
        &self,
        request: Request<api::CheckQuotaRequest>,
    ) -> Result<Response<api::CheckQuotaResponse>, Status> {
        self.check_quota(request)
            .await
            .map(Response::new)
            .map_err(status)
    }

    type AdviseStream = ResponseStream<api::AdviseResponse>;

    async fn advise(
        &self,
        request: Request<api::AdviseRequest>,
    ) -> Result<Response<Self::AdviseStream>, Status> {
        self.advise(request)
            .await
            .map(Response::new)
            .map_err(status)
    }
}
