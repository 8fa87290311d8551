//! `licensing.v1.IngestionService`: the collector's event stream.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    api::{self, ingestion_service_server::IngestionService},
    error::{ApiError, status},
};

/// The handlers of `IngestionService`.
#[derive(Debug, Clone, Default)]
pub struct Ingestion;

#[tonic::async_trait]
impl IngestionService for Ingestion {
    type IngestStream =
        Pin<Box<dyn Stream<Item = Result<api::IngestResponse, Status>> + Send + 'static>>;

    async fn ingest(
        &self,
        _: Request<Streaming<api::IngestRequest>>,
    ) -> Result<Response<Self::IngestStream>, Status> {
        Err(status(ApiError::Unimplemented(
            "Ingest is not available in this version yet",
        )))
    }
}
