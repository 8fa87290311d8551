//! The local endpoint: `licensing.v1.IngestionService` for workloads in the pod, with the same
//! `Ingest` contract as `licensing` itself, and standard health (`grpc.health.v1.Health`).
//!
//! A pushed batch is answered once its events are in the flushed spool, so OUTCOME_APPLIED here
//! means "accepted into the durable spool", not "counted by licensing": what `licensing` makes
//! of the events later shows in the collector's metrics and logs. Events that `licensing` would
//! refuse as malformed (missing ids, a bad timestamp, no kind, a zero quantity) are refused here
//! already, REFUSED with REFUSAL_REASON_INVALID and the same detail, and are not spooled. An
//! unknown account, a closed month and the like can only be known by `licensing`.

use std::{pin::Pin, sync::Arc};

use futures::Stream;
use tokio::{
    net::TcpListener,
    sync::{mpsc, watch},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{line, metrics::Metrics, spool::Spool};
use crate::{
    api::{
        self,
        ingestion_service_server::{IngestionService, IngestionServiceServer},
    },
    convert::to_proto,
    error::{ApiError, status},
    ingest::{MAX_BATCHES_IN_FLIGHT, MAX_EVENTS_PER_BATCH},
    server::{MAX_DECODING_MESSAGE_BYTES, MAX_ENCODING_MESSAGE_BYTES, server_builder},
    transport::{self, ConnectionLimits},
};

/// The local `IngestionService`.
#[derive(Debug, Clone)]
pub struct LocalIngestion {
    spool: Spool,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
}

impl LocalIngestion {
    /// Spooling into `spool`; streams end when `stop` turns true.
    pub fn new(spool: Spool, metrics: Arc<Metrics>, stop: watch::Receiver<bool>) -> LocalIngestion {
        LocalIngestion {
            spool,
            metrics,
            stop,
        }
    }

    /// Checks a batch, spools and flushes its valid events, and answers it.
    async fn accept(&self, request: api::IngestRequest) -> Result<api::IngestResponse, Status> {
        if request.events.len() > MAX_EVENTS_PER_BATCH {
            return Err(status(ApiError::invalid(
                format!("batch {} events", request.batch_id),
                format!("({} events)", request.events.len()),
                format!("at most {MAX_EVENTS_PER_BATCH} per batch"),
            )));
        }
        let mut accepted = Vec::with_capacity(request.events.len());
        let mut outcomes = Vec::with_capacity(request.events.len());
        for event in request.events {
            let outcome = match line::check(&event) {
                Ok(()) => licensing_core::Outcome::Applied,
                Err(refusal) => {
                    Metrics::add(&self.metrics.refused_locally, 1);
                    licensing_core::Outcome::Refused(refusal)
                }
            };
            outcomes.push(to_proto::event_outcome(event.event_id.clone(), &outcome));
            if outcome == licensing_core::Outcome::Applied {
                accepted.push(event);
            }
        }
        let count = accepted.len() as u64;
        if count > 0 {
            self.spool.append(accepted, None).await.map_err(|e| {
                tracing::error!(error = %e, "spooling a pushed batch failed");
                status(ApiError::Storage(format!(
                    "the collector could not spool the batch: {e}"
                )))
            })?;
            Metrics::add(&self.metrics.spooled, count);
        }
        Ok(api::IngestResponse {
            batch_id: request.batch_id,
            outcomes,
        })
    }
}

type Answer = Result<api::IngestResponse, Status>;

#[tonic::async_trait]
impl IngestionService for LocalIngestion {
    type IngestStream = Pin<Box<dyn Stream<Item = Answer> + Send + 'static>>;

    async fn ingest(
        &self,
        request: Request<Streaming<api::IngestRequest>>,
    ) -> Result<Response<Self::IngestStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel::<Answer>(MAX_BATCHES_IN_FLIGHT);
        let local = self.clone();
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            loop {
                // Batches are taken one at a time, so answers go back in order; a batch being
                // spooled when the collector stops is finished and answered.
                let request = tokio::select! {
                    message = inbound.message() => match message {
                        Ok(Some(request)) => request,
                        Ok(None) => return,
                        // An undecodable or oversized message ends the stream with the reason.
                        Err(error) => {
                            if let Some(refused) = crate::ingest::inbound_error(error) {
                                let _ = tx.send(Err(refused)).await;
                            }
                            return;
                        }
                    },
                    () = stopping(&mut stop) => {
                        let _ = tx
                            .send(Err(status(ApiError::Unavailable(
                                "the collector is stopping: send unacknowledged batches again".into(),
                            ))))
                            .await;
                        return;
                    }
                };
                let answer = local.accept(request).await;
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Completes when the collector stops (the guard `wait_for` returns must not be held across an
/// await: it is not `Send`).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Serves the local endpoint on `listener` until `stop` turns true: health turns NOT_SERVING,
/// open streams are told to resend, and the server returns once its connections are closed.
/// Connections are accepted within `limits` (see [`transport`]).
pub async fn serve(
    listener: TcpListener,
    limits: ConnectionLimits,
    spool: Spool,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<IngestionServiceServer<LocalIngestion>>()
        .await;
    let ingestion = IngestionServiceServer::new(LocalIngestion::new(spool, metrics, stop.clone()))
        .max_decoding_message_size(MAX_DECODING_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_ENCODING_MESSAGE_BYTES);
    let mut stopping = stop;
    let signal = async move {
        let _ = stopping.wait_for(|stop| *stop).await;
        health
            .set_not_serving::<IngestionServiceServer<LocalIngestion>>()
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    };
    server_builder()
        .add_service(health_service)
        .add_service(ingestion)
        .serve_with_incoming_shutdown(transport::incoming(listener, limits), signal)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, seconds: i64) -> api::Event {
        api::Event {
            source: "workload".into(),
            event_id: id.into(),
            account_id: "acme".into(),
            member_id: "alice".into(),
            occurred_at: Some(prost_types::Timestamp { seconds, nanos: 0 }),
            kind: Some(api::event::Kind::AgentLogin(api::AgentLogin {})),
        }
    }

    #[tokio::test]
    async fn valid_events_are_spooled_before_the_answer_and_malformed_ones_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("spool");
        let metrics = Arc::new(Metrics::default());
        let (_stop_tx, stop) = watch::channel(false);
        let local = LocalIngestion::new(spool.clone(), metrics.clone(), stop);
        let mut no_id = event("", 1_778_400_000);
        no_id.event_id.clear();
        let bad_time = api::Event {
            occurred_at: Some(prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: 0,
            }),
            ..event("late", 0)
        };
        let answer = local
            .accept(api::IngestRequest {
                batch_id: 7,
                events: vec![event("a", 1_778_400_000), no_id, bad_time],
                traceparent: String::new(),
            })
            .await
            .expect("answered");
        assert_eq!(answer.batch_id, 7);
        let outcomes: Vec<(i32, i32)> = answer
            .outcomes
            .iter()
            .map(|o| (o.outcome, o.refusal))
            .collect();
        let refused = (
            api::Outcome::Refused as i32,
            api::RefusalReason::Invalid as i32,
        );
        assert_eq!(
            outcomes,
            [(api::Outcome::Applied as i32, 0), refused, refused]
        );
        assert!(
            answer.outcomes[1].detail.contains("event_id"),
            "{}",
            answer.outcomes[1].detail
        );
        assert_eq!(spool.depth(), 1, "only the valid event is spooled");
        let too_many = local
            .accept(api::IngestRequest {
                batch_id: 8,
                events: vec![event("b", 1_778_400_000); MAX_EVENTS_PER_BATCH + 1],
                traceparent: String::new(),
            })
            .await
            .expect_err("too many events");
        assert_eq!(too_many.code(), tonic::Code::InvalidArgument);
    }
}
