//! The baseline service: `bench.v1.EchoService` returns each payload unchanged, so serving it
//! costs what the transport costs and nothing more.

use tonic::{Request, Response, Status};

/// The generated wire types and stubs of `proto/bench/v1/echo.proto`.
#[allow(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    clippy::all,
    clippy::pedantic
)]
pub(crate) mod proto {
    tonic::include_proto!("bench.v1");
}

use proto::{EchoRequest, EchoResponse, echo_service_server::EchoService};

/// The largest reply a sized echo sends.
const MAX_REPLY_BYTES: u32 = 1 << 20;

/// The handler of `EchoService`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Echo;

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let request = request.into_inner();
        let payload = match request.reply_bytes {
            0 => request.payload,
            n => vec![0x2a; n.min(MAX_REPLY_BYTES) as usize],
        };
        Ok(Response::new(EchoResponse { payload }))
    }
}
