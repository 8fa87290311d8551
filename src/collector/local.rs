//! The local endpoint: `licensing.v1.IngestionService` for workloads in the pod. A pushed batch is
//! answered once its events are in the durable spool: APPLIED here means "accepted into the
//! spool"; what `licensing` makes of them shows in the collector's metrics and logs. Events that
//! `licensing` would refuse as malformed are refused here already.

use std::{pin::Pin, sync::Arc};

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{metrics::Metrics, spool::Spool};
use crate::{
    api::{self, ingestion_service_server::IngestionService},
    convert::{from_proto, to_proto},
    ingest::MAX_EVENTS_PER_BATCH,
};

/// The local `IngestionService`.
#[derive(Debug, Clone)]
pub struct LocalIngestion {
    spool: Spool,
    metrics: Arc<Metrics>,
}

impl LocalIngestion {
    /// Spooling into `spool`.
    pub fn new(spool: Spool, metrics: Arc<Metrics>) -> LocalIngestion {
        LocalIngestion { spool, metrics }
    }
}

#[tonic::async_trait]
impl IngestionService for LocalIngestion {
    type IngestStream =
        Pin<Box<dyn Stream<Item = Result<api::IngestResponse, Status>> + Send + 'static>>;

    async fn ingest(
        &self,
        request: Request<Streaming<api::IngestRequest>>,
    ) -> Result<Response<Self::IngestStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let (spool, metrics) = (self.spool.clone(), self.metrics.clone());
        tokio::spawn(async move {
            while let Ok(Some(request)) = inbound.message().await {
                if request.events.len() > MAX_EVENTS_PER_BATCH {
                    let _ = tx
                        .send(Err(Status::invalid_argument(format!(
                            "invalid batch {} events ({} events): at most {MAX_EVENTS_PER_BATCH} per batch",
                            request.batch_id,
                            request.events.len()
                        ))))
                        .await;
                    return;
                }
                let mut accepted = Vec::with_capacity(request.events.len());
                let mut outcomes = Vec::with_capacity(request.events.len());
                for event in request.events {
                    let id = event.event_id.clone();
                    let checked =
                        from_proto::event(event.clone()).and_then(|e| e.validate().map(|()| e));
                    match checked {
                        Ok(_) => {
                            accepted.push(event);
                            outcomes.push(to_proto::event_outcome(
                                id,
                                &licensing_core::Outcome::Applied,
                            ));
                        }
                        Err(refusal) => {
                            outcomes.push(to_proto::event_outcome(
                                id,
                                &licensing_core::Outcome::Refused(refusal),
                            ));
                        }
                    }
                }
                let stored = match spool.append(&accepted, None) {
                    Ok(()) => spool.flush().await,
                    Err(e) => Err(e),
                };
                if let Err(e) = stored {
                    let _ = tx.send(Err(Status::unavailable(e.to_string()))).await;
                    return;
                }
                Metrics::add(&metrics.spooled, accepted.len() as u64);
                if tx
                    .send(Ok(api::IngestResponse {
                        batch_id: request.batch_id,
                        outcomes,
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
