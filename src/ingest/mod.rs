//! `licensing.v1.IngestionService`: the collector's event stream.
//!
//! Each stream reads batches and hands them to the one writer (`writer.rs`), keeping up to
//! [`MAX_BATCHES_IN_FLIGHT`] per stream; answers go back in the order the batches came, each
//! batch answered exactly once and only once its effects are durable.
//!
//! A stream ends with an error only after every batch before the cause was answered: a batch
//! that breaks the contract (too many events, a batch id already in flight) ends the stream with
//! INVALID_ARGUMENT naming its batch id; a message that cannot be decoded with INVALID_ARGUMENT,
//! one over the size limit with RESOURCE_EXHAUSTED; a stopping service with UNAVAILABLE. A stream
//! never ends OK while the client is still sending: a client that hears OK knows every batch it
//! sent was answered.

mod keeper;
mod sweep;

pub use sweep::ClockMoves;
mod writer;

use std::{collections::HashSet, future::Future, sync::Arc};

use futures::{StreamExt as _, stream::FuturesOrdered};
use licensing_core::{PriceList, Principal, Refusal};
use licensing_store::{Batch, Store};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_health::server::HealthReporter;
use tracing::{Instrument as _, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::{
    api::{self, ingestion_service_server::IngestionService},
    auth::rules::{self, Use},
    convert::{from_proto, to_proto},
    error::{ApiError, status},
    outbox::{Outbox, ResponseStream, Streams},
};
use writer::{Job, StoreCommit};

/// Events per batch, at most (the contract's limit).
pub const MAX_EVENTS_PER_BATCH: usize = 1000;
/// Batches a stream may have waiting for their acknowledgement.
pub const MAX_BATCHES_IN_FLIGHT: usize = 64;
/// Batches queued for the writer across all streams.
const WRITER_QUEUE: usize = 1024;
/// Days a dedupe record is kept after its month closed, unless configured otherwise: longer than
/// a collector's longest outage, so that every resend of an event that was billed is answered
/// DUPLICATE.
pub const DEFAULT_DEDUPE_RETENTION_DAYS: u32 = 35;

/// The handlers of `IngestionService`.
#[derive(Debug, Clone)]
pub struct Ingestion {
    writer: mpsc::Sender<Job>,
    shutdown: watch::Receiver<bool>,
    streams: Streams,
    /// Whether every stream must carry a principal (authentication is on).
    authenticated: bool,
}

impl Ingestion {
    /// Starts the writer, the peaks keeper and the sweep (dedupe records, compaction) on the
    /// current runtime. The writer stops when every handle is dropped, the others when
    /// `shutdown` turns true; they also run whenever a clock moves (`clock_moved`), and the
    /// keeper announces what ingestion changed with `usage_changes`. Dedupe records are kept
    /// `dedupe_retention_days` after their month closed. The writer reports a storage failure to
    /// `health` and its progress to `liveness`.
    pub fn start(
        store: Store,
        prices: Arc<PriceList>,
        (health, liveness): (HealthReporter, Arc<crate::health::Liveness>),
        shutdown: watch::Receiver<bool>,
        (dedupe_retention_days, clock_moved, usage_changes, foreground): (
            u32,
            Arc<ClockMoves>,
            Option<crate::service::UsageChanges>,
            Arc<crate::foreground::Foreground>,
        ),
        streams: Streams,
        authenticated: bool,
    ) -> Ingestion {
        let (writer, jobs) = mpsc::channel(WRITER_QUEUE);
        let target = StoreCommit {
            store: store.clone(),
            prices,
        };
        let feed = Arc::new(keeper::Feed::new(usage_changes));
        let tidy = Arc::new(writer::Tidy::stepping_aside_for(foreground.clone()));
        tokio::spawn(writer::write(
            jobs,
            target,
            health,
            liveness,
            feed.clone(),
            tidy.clone(),
        ));
        tokio::spawn(keeper::keep_peaks(
            store.clone(),
            (feed, foreground),
            crate::service::stopping(shutdown.clone()),
        ));
        tokio::spawn(sweep::sweep_dedupe(
            store,
            dedupe_retention_days,
            (clock_moved, tidy),
            crate::service::stopping(shutdown.clone()),
        ));
        Ingestion {
            writer,
            shutdown,
            streams,
            authenticated,
        }
    }
}

/// The status a stream ends with when reading its next message failed, or `None` when the
/// client went away (nobody hears an answer). tonic reports undecodable messages as INTERNAL;
/// they are the client's fault.
pub fn inbound_error(error: Status) -> Option<Status> {
    match error.code() {
        Code::Cancelled => None,
        Code::OutOfRange | Code::ResourceExhausted => Some(Status::resource_exhausted(format!(
            "a message of the stream is too large: {}",
            error.message()
        ))),
        Code::Internal | Code::InvalidArgument => Some(Status::invalid_argument(format!(
            "a message of the stream could not be decoded: {}",
            error.message()
        ))),
        // A transport error (the connection broke): whatever is sent is not heard.
        _ => None,
    }
}

#[tonic::async_trait]
impl IngestionService for Ingestion {
    type IngestStream = ResponseStream<api::IngestResponse>;

    async fn ingest(
        &self,
        request: Request<Streaming<api::IngestRequest>>,
    ) -> Result<Response<Self::IngestStream>, Status> {
        let caller = match request.extensions().get::<Arc<Principal>>() {
            Some(caller) => caller.clone(),
            None if !self.authenticated => Arc::new(Principal::unauthenticated()),
            None => {
                return Err(status(ApiError::Internal(
                    "an Ingest stream reached its handler without a principal".into(),
                )));
            }
        };
        // The call's trace context: the parent of batches that bring none of their own.
        let call = request
            .extensions()
            .get::<Arc<crate::telemetry::calls::CallNote>>()
            .and_then(|note| note.trace_context());
        let inbound = request.into_inner();
        let (outbox, answers) = self
            .streams
            .open_stream(MAX_BATCHES_IN_FLIGHT)
            .map_err(status)?;
        let writer = self.writer.clone();
        let stopping = crate::service::stopping(self.shutdown.clone());
        tokio::spawn(serve_stream(
            inbound, outbox, writer, caller, stopping, call,
        ));
        Ok(Response::new(answers))
    }
}

/// Reads a stream's batches, queues them to the writer and answers them in order, until the
/// client finishes (OK) or the stream must end with an error (after the answers before it).
async fn serve_stream(
    mut inbound: Streaming<api::IngestRequest>,
    mut outbox: Outbox<api::IngestResponse>,
    writer: mpsc::Sender<Job>,
    caller: Arc<Principal>,
    stopping: impl Future<Output = ()>,
    call: Option<opentelemetry::Context>,
) {
    tokio::pin!(stopping);
    let mut pending = FuturesOrdered::new();
    let mut in_flight: HashSet<u64> = HashSet::new();
    // `Some(end)`: reading stopped; the stream ends with `end` (`None`: OK) once all is answered.
    let mut ending: Option<Option<Status>> = None;
    while ending.is_none() || !pending.is_empty() {
        tokio::select! {
            message = inbound.message(), if ending.is_none() && pending.len() < MAX_BATCHES_IN_FLIGHT => {
                match message {
                    Ok(Some(request)) => match check(&request, &in_flight) {
                        Err(refused) => ending = Some(Some(refused)),
                        Ok(()) => {
                            in_flight.insert(request.batch_id);
                            match submit(&writer, &caller, request, &call).await {
                                Ok(answer) => pending.push_back(answer),
                                Err(refused) => ending = Some(Some(refused)),
                            }
                        }
                    },
                    Ok(None) => ending = Some(None),
                    Err(error) => match inbound_error(error) {
                        Some(refused) => ending = Some(Some(refused)),
                        // The client is gone: nobody hears the answers (it resends them).
                        None => return,
                    },
                }
            }
            Some((batch_id, answer)) = pending.next(), if !pending.is_empty() => {
                in_flight.remove(&batch_id);
                match answer {
                    Ok(answer) => {
                        if outbox.send(answer).await.is_err() {
                            return;
                        }
                    }
                    // An error ends the stream: the batches after it are sent again.
                    Err(failed) => {
                        outbox.finish(failed);
                        return;
                    }
                }
            }
            () = &mut stopping, if ending.is_none() => {
                ending = Some(Some(status(ApiError::Unavailable(
                    "the service is stopping: send the batches not acknowledged again".into(),
                ))));
            }
            () = outbox.closed() => return,
        }
    }
    if let Some(Some(end)) = ending {
        outbox.finish(end);
    }
}

/// A batch that breaks the stream's contract, named by its id.
fn check(request: &api::IngestRequest, in_flight: &HashSet<u64>) -> Result<(), Status> {
    let batch_id = request.batch_id;
    if request.events.len() > MAX_EVENTS_PER_BATCH {
        return Err(status(ApiError::invalid(
            format!("batch {batch_id} events"),
            format!("({} events)", request.events.len()),
            format!(
                "at most {MAX_EVENTS_PER_BATCH} per batch: split it; the batches before it were answered"
            ),
        )));
    }
    if in_flight.contains(&batch_id) {
        return Err(status(ApiError::invalid(
            "batch_id",
            batch_id.to_string(),
            "is already in flight on this stream: batch ids must be unique among unanswered batches",
        )));
    }
    Ok(())
}

/// Queues a batch; the future resolves to its id and its acknowledgement (an error names the
/// batch).
async fn submit(
    writer: &mpsc::Sender<Job>,
    caller: &Principal,
    request: api::IngestRequest,
    call: &Option<opentelemetry::Context>,
) -> Result<impl Future<Output = (u64, Result<api::IngestResponse, Status>)> + use<>, Status> {
    let batch_id = request.batch_id;
    let span = batch_span(batch_id, request.events.len(), &request.traceparent, call);
    let ids: Vec<String> = request.events.iter().map(|e| e.event_id.clone()).collect();
    let right = rules::needs("IngestionService/Ingest", Use::Write);
    // Each event on its own account: one outside the caller's grant is refused, never dropped.
    let batch: Batch = request
        .events
        .into_iter()
        .map(|event| {
            from_proto::event(event).and_then(|event| {
                if caller.may(right, &event.account_id) {
                    Ok(event)
                } else {
                    Err(Refusal::PermissionDenied {
                        account_id: event.account_id,
                        right,
                    })
                }
            })
        })
        .collect();
    let (reply, answer) = oneshot::channel();
    writer
        .send(Job {
            batch,
            reply,
            span: span.clone(),
        })
        .await
        .map_err(|_| status(ApiError::Unavailable("the service is stopping".into())))?;
    Ok(async move {
        let outcomes = match answer.await {
            Ok(Ok(outcomes)) => outcomes,
            Ok(Err(failed)) => {
                let named = Status::new(
                    failed.code(),
                    format!("batch {batch_id}: {}", failed.message()),
                );
                return (batch_id, Err(named));
            }
            Err(_) => {
                let stopped = status(ApiError::Unavailable(format!(
                    "batch {batch_id}: the service stopped before the batch was committed"
                )));
                return (batch_id, Err(stopped));
            }
        };
        let answer = api::IngestResponse {
            batch_id,
            outcomes: ids
                .into_iter()
                .zip(&outcomes)
                .map(|(id, o)| to_proto::event_outcome(id, o))
                .collect(),
        };
        (batch_id, Ok(answer))
    }
    .instrument(span))
}

/// The span of one batch, from its queueing to its answer: a child of the batch's own trace
/// context when it brings one (the collector's upload), else of the `Ingest` call.
fn batch_span(
    batch_id: u64,
    events: usize,
    traceparent: &str,
    call: &Option<opentelemetry::Context>,
) -> Span {
    let span = tracing::info_span!(
        target: crate::telemetry::calls::TRACE_TARGET,
        "ingest batch",
        otel.kind = "server",
        batch_id,
        events,
    );
    if span.is_disabled() {
        return span;
    }
    let parent = crate::telemetry::context_of_traceparent(traceparent).or_else(|| call.clone());
    if let Some(parent) = parent {
        let _ = span.set_parent(parent);
    }
    span
}
