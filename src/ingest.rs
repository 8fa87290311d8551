//! `licensing.v1.IngestionService`: the collector's event stream.
//!
//! Each stream reads batches and hands them to the one writer, keeping up to
//! [`MAX_BATCHES_IN_FLIGHT`] per stream; answers go back in the order the batches came. The writer
//! takes every batch waiting, commits them as one store transaction (each event's dedupe record
//! with its effects), flushes, and only then answers them: an acknowledged event is durable.

use std::{pin::Pin, sync::Arc, time::Duration};

use futures::{Stream, StreamExt as _, stream::FuturesOrdered};
use licensing_core::{Outcome, PriceList, Timestamp};
use licensing_store::{Batch, OpError, Store};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tonic_health::server::HealthReporter;

use crate::{
    api::{self, ingestion_service_server::IngestionService},
    convert::{from_proto, to_proto},
    error::{ApiError, status},
    service::report_storage_failure,
};

/// Events per batch, at most (the contract's limit).
pub const MAX_EVENTS_PER_BATCH: usize = 1000;
/// Batches a stream may have waiting for their acknowledgement.
pub const MAX_BATCHES_IN_FLIGHT: usize = 64;
/// Batches the writer commits in one transaction, at most.
const MAX_BATCHES_PER_GROUP: usize = 256;
/// Batches queued for the writer across all streams.
const WRITER_QUEUE: usize = 1024;
/// Days a dedupe record is kept after its month closed, unless configured otherwise: longer than
/// a collector's longest outage, so that every resend of an event that was billed is answered
/// DUPLICATE.
pub const DEFAULT_DEDUPE_RETENTION_DAYS: u32 = 35;
/// How often expired dedupe records are deleted.
const DEDUPE_SWEEP_INTERVAL: Duration = Duration::from_secs(3600);
/// Dedupe records the sweep reads per step on the blocking pool.
const DEDUPE_SWEEP_CHUNK: usize = 1024;

struct Job {
    batch: Batch,
    reply: oneshot::Sender<Result<Vec<Outcome>, Status>>,
}

/// The handlers of `IngestionService`.
#[derive(Debug, Clone)]
pub struct Ingestion {
    writer: mpsc::Sender<Job>,
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Job({} events)", self.batch.len())
    }
}

impl Ingestion {
    /// Starts the writer and the dedupe sweep on the current runtime. The writer stops when every
    /// handle is dropped, the sweep when `shutdown` turns true. Dedupe records are kept
    /// `dedupe_retention_days` after their month closed.
    pub fn start(
        store: Store,
        prices: Arc<PriceList>,
        health: HealthReporter,
        shutdown: watch::Receiver<bool>,
        dedupe_retention_days: u32,
    ) -> Ingestion {
        let (writer, jobs) = mpsc::channel(WRITER_QUEUE);
        tokio::spawn(write(jobs, store.clone(), prices, health));
        tokio::spawn(sweep_dedupe(
            store,
            dedupe_retention_days,
            crate::service::stopping(shutdown.clone()),
        ));
        Ingestion { writer, shutdown }
    }
}

/// Deletes expired dedupe records every [`DEDUPE_SWEEP_INTERVAL`], off the writer's path: in
/// chunks of [`DEDUPE_SWEEP_CHUNK`] on the blocking pool, so that neither the writer nor the
/// pool is held for long however large the tree. Deletions need no flush: one lost in a crash is
/// deleted again by the next sweep.
async fn sweep_dedupe(store: Store, retention_days: u32, stopping: impl Future<Output = ()>) {
    tokio::pin!(stopping);
    let mut every = tokio::time::interval(DEDUPE_SWEEP_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = &mut stopping => return,
        }
        let (mut after, mut expired) = (None::<Vec<u8>>, 0);
        while !store.has_failed() {
            let (chunk_store, from) = (store.clone(), after.take());
            let chunk = tokio::task::spawn_blocking(move || {
                chunk_store.expire_dedupe(
                    Timestamp::now(),
                    retention_days,
                    from.as_deref(),
                    DEDUPE_SWEEP_CHUNK,
                )
            })
            .await;
            match chunk {
                Ok(Ok(chunk)) => {
                    expired += chunk.expired;
                    match chunk.next {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "dedupe sweep failed; it runs again next hour");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dedupe sweep task failed; it runs again next hour");
                    break;
                }
            }
        }
        if expired > 0 {
            tracing::info!(expired, retention_days, "expired dedupe records deleted");
        }
    }
}

/// The writer: commits whatever is waiting as one group, flushes, answers.
async fn write(
    mut jobs: mpsc::Receiver<Job>,
    store: Store,
    prices: Arc<PriceList>,
    health: HealthReporter,
) {
    loop {
        let Some(first) = jobs.recv().await else {
            return;
        };
        let mut group = vec![first];
        while group.len() < MAX_BATCHES_PER_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let (batches, replies): (Vec<Batch>, Vec<_>) =
            group.into_iter().map(|j| (j.batch, j.reply)).unzip();
        let committed = {
            let (store, prices) = (store.clone(), prices.clone());
            tokio::task::spawn_blocking(move || store.ingest(&batches, Timestamp::now(), &prices))
                .await
        };
        let result = match committed {
            Ok(Ok(outcomes)) => match store.flush().await {
                Ok(()) => Ok(outcomes),
                Err(e) => Err(OpError::Store(e)),
            },
            Ok(Err(e)) => Err(e),
            Err(e) => {
                let status = status(ApiError::Internal(format!("ingest task failed: {e}")));
                for reply in replies {
                    let _ = reply.send(Err(status.clone()));
                }
                continue;
            }
        };
        match result {
            Ok(outcomes) => {
                for (reply, outcomes) in replies.into_iter().zip(outcomes) {
                    // A stream that went away simply does not hear its answer; it will resend.
                    let _ = reply.send(Ok(outcomes));
                }
            }
            Err(e) => {
                if store.has_failed() {
                    report_storage_failure(&health);
                }
                let status = status(e.into());
                for reply in replies {
                    let _ = reply.send(Err(status.clone()));
                }
            }
        }
    }
}

type Answer = Result<api::IngestResponse, Status>;

#[tonic::async_trait]
impl IngestionService for Ingestion {
    type IngestStream = Pin<Box<dyn Stream<Item = Answer> + Send + 'static>>;

    async fn ingest(
        &self,
        request: Request<Streaming<api::IngestRequest>>,
    ) -> Result<Response<Self::IngestStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel::<Answer>(MAX_BATCHES_IN_FLIGHT);
        let writer = self.writer.clone();
        let stopping = crate::service::stopping(self.shutdown.clone());
        tokio::spawn(async move {
            tokio::pin!(stopping);
            let mut pending = FuturesOrdered::new();
            let mut reading = true;
            while reading || !pending.is_empty() {
                tokio::select! {
                    message = inbound.message(), if reading && pending.len() < MAX_BATCHES_IN_FLIGHT => {
                        match message {
                            Ok(Some(request)) => match submit(&writer, request).await {
                                Ok(answer) => pending.push_back(answer),
                                Err(status) => {
                                    let _ = tx.send(Err(status)).await;
                                    return;
                                }
                            },
                            // The client finished sending, or the stream broke: answer what is
                            // in flight (a broken stream's answers will not arrive; it resends).
                            Ok(None) | Err(_) => reading = false,
                        }
                    }
                    Some(answer) = pending.next(), if !pending.is_empty() => {
                        if tx.send(answer).await.is_err() {
                            return;
                        }
                    }
                    // Stop taking batches; those in flight are still answered.
                    () = &mut stopping, if reading => reading = false,
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Validates a batch's shape and queues it; the future resolves to its acknowledgement.
async fn submit(
    writer: &mpsc::Sender<Job>,
    request: api::IngestRequest,
) -> Result<impl Future<Output = Answer> + use<>, Status> {
    if request.events.len() > MAX_EVENTS_PER_BATCH {
        return Err(status(ApiError::invalid(
            format!("batch {} events", request.batch_id),
            format!("({} events)", request.events.len()),
            format!("at most {MAX_EVENTS_PER_BATCH} per batch"),
        )));
    }
    let batch_id = request.batch_id;
    let ids: Vec<String> = request.events.iter().map(|e| e.event_id.clone()).collect();
    let batch: Batch = request.events.into_iter().map(from_proto::event).collect();
    let (reply, answer) = oneshot::channel();
    writer
        .send(Job { batch, reply })
        .await
        .map_err(|_| status(ApiError::Unavailable("the service is stopping".into())))?;
    Ok(async move {
        let outcomes = answer.await.map_err(|_| {
            status(ApiError::Unavailable(
                "the service stopped before the batch was committed".into(),
            ))
        })??;
        Ok(api::IngestResponse {
            batch_id,
            outcomes: ids
                .into_iter()
                .zip(&outcomes)
                .map(|(id, o)| to_proto::event_outcome(id, o))
                .collect(),
        })
    })
}
