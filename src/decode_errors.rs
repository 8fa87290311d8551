//! Requests the server cannot decode are the caller's fault, not ours.
//!
//! tonic answers a request body that is not valid protobuf, or whose gRPC framing is broken, with
//! INTERNAL, and one over the size limit with OUT_OF_RANGE, before any handler runs. INTERNAL
//! must mean a defect of this service, so this layer rewrites those answers (trailers-only
//! responses: the status is in the headers) to INVALID_ARGUMENT and RESOURCE_EXHAUSTED, keeping
//! tonic's explanation. Handlers' own statuses and streamed responses pass untouched; `Ingest`
//! maps the errors of its incoming stream itself (`ingest::inbound_error`).

use futures::{TryFutureExt as _, future::MapOk};
use http::HeaderMap;
use tonic::{Code, Status};
use tower_layer::Layer;
use tower_service::Service;

/// How tonic's codec begins the messages of requests it could not decode.
const DECODE_FAILURES: &[&str] = &[
    "failed to decode Protobuf message",
    "protocol error: received message with",
    "Unexpected EOF decoding stream",
    "Error decompressing",
];

/// The layer, for `Server::layer`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeErrorsLayer;

impl<S> Layer<S> for DecodeErrorsLayer {
    type Service = DecodeErrors<S>;

    fn layer(&self, inner: S) -> DecodeErrors<S> {
        DecodeErrors(inner)
    }
}

/// The service the layer wraps around the server's routes.
#[derive(Debug, Clone)]
pub struct DecodeErrors<S>(S);

impl<S, Request, Body> Service<Request> for DecodeErrors<S>
where
    S: Service<Request, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = MapOk<S::Future, fn(http::Response<Body>) -> http::Response<Body>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        self.0.call(request).map_ok(|mut response| {
            blame_the_caller(response.headers_mut());
            response
        })
    }
}

/// Rewrites a decode failure's status in trailers-only response headers.
fn blame_the_caller(headers: &mut HeaderMap) {
    // Successful calls carry their status in the trailers: nothing to look at.
    if !headers.contains_key(Status::GRPC_STATUS) {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let message = status.message();
    let code = match status.code() {
        Code::Internal if DECODE_FAILURES.iter().any(|p| message.starts_with(p)) => {
            Code::InvalidArgument
        }
        Code::OutOfRange if message.contains("message length too large") => Code::ResourceExhausted,
        _ => return,
    };
    let rewritten = Status::new(code, format!("the request could not be decoded: {message}"));
    // Only fails for a message that is not a valid header, which tonic's own never are.
    let _ = rewritten.add_header(headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: Status) -> Status {
        let mut headers = HeaderMap::new();
        status.add_header(&mut headers).expect("valid headers");
        blame_the_caller(&mut headers);
        Status::from_header_map(&headers).expect("a status")
    }

    #[test]
    fn undecodable_requests_are_invalid_arguments_and_our_errors_stay_as_they_are() {
        let decode = answered(Status::internal(
            "failed to decode Protobuf message: invalid wire type value: 7",
        ));
        assert_eq!(decode.code(), Code::InvalidArgument);
        assert_eq!(
            decode.message(),
            "the request could not be decoded: failed to decode Protobuf message: invalid wire type value: 7"
        );
        let flag = answered(Status::internal(
            "protocol error: received message with invalid compression flag: 9 (valid flags are 0 and 1), while sending request",
        ));
        assert_eq!(flag.code(), Code::InvalidArgument);
        let large = answered(Status::out_of_range(
            "Error, decoded message length too large: found 5000000 bytes, the limit is: 4194304 bytes",
        ));
        assert_eq!(large.code(), Code::ResourceExhausted);
        let ours = answered(Status::internal(
            "internal error (error id 0123456789abcdef)",
        ));
        assert_eq!(ours.code(), Code::Internal);
        assert_eq!(ours.message(), "internal error (error id 0123456789abcdef)");
    }
}
