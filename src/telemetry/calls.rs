//! One tower layer, outermost, that sees every call as the client will (after authentication,
//! decode-error mapping and the handler): it counts it in the standard gRPC server metrics,
//! wraps it in a span with the OpenTelemetry RPC attributes (its parent taken from the caller's
//! `traceparent`), and logs one line when it ends: method, account, code, latency, trace id, and
//! the error id of an error only an operator can act on.
//!
//! A call ends when its status is known: in the response headers for a trailers-only answer (an
//! error, or a refused call), in the trailers otherwise, which for a stream is after its last
//! message. A response body dropped before its trailers is a call the client cancelled.
//!
//! Metric labels come from the methods served, never from the request's path, so a client
//! cannot make new series: unknown paths count as `grpc_service="unknown"`.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Instant,
};

use http_body::{Body, Frame};
use metrics::{Counter, Histogram};
use prost::Message as _;
use tonic::{Code, Status};
use tower_layer::Layer;
use tower_service::Service;
use tracing::{Instrument as _, field::Empty};

/// The target of the line logged per call.
pub const TARGET: &str = "licensing::call";
/// The target of the `tracing` span around each call: in the log, the context of what a handler
/// logs. It is not exported: the call's exported span is made with the OpenTelemetry API directly
/// (see [`CallsLayer`]).
pub const SPAN_TARGET: &str = "licensing::rpc";
/// The target of the `tracing` spans that are exported (an Ingest batch, a group commit, a
/// collector upload).
pub const TRACE_TARGET: &str = "licensing::trace";

/// What a handler learns about its call that the layer reports (the account it is about), and
/// the call's trace context, for the spans of work done for it.
#[derive(Debug, Default)]
pub struct CallNote {
    account: OnceLock<Arc<str>>,
    span: OnceLock<opentelemetry::trace::SpanContext>,
}

impl CallNote {
    /// The trace context of the call's exported span, when spans are exported: the parent of the
    /// spans of work done for the call.
    pub fn trace_context(&self) -> Option<opentelemetry::Context> {
        use opentelemetry::trace::TraceContextExt as _;
        let span = self.span.get()?.clone();
        Some(opentelemetry::Context::new().with_remote_span_context(span))
    }

    /// Records the account the call is about (the first one named wins), on the call's span too.
    pub fn account(&self, account_id: &str) {
        if self.account.set(account_id.into()).is_ok() {
            tracing::Span::current().record("account", account_id);
        }
    }
}

/// A method's labels and its metric handles, made once.
#[derive(Debug)]
struct Method {
    // Made once per method served and kept for the process's life: a span's name and
    // attributes can then borrow them instead of copying them for every call.
    path: &'static str,
    service: &'static str,
    method: &'static str,
    kind: &'static str,
    recorded: bool,
    started: Counter,
    handling: Histogram,
    handled: [OnceLock<Counter>; 17],
}

impl Method {
    fn new(service: &str, method: &str, kind: &'static str, recorded: bool) -> Method {
        let labels = [
            ("grpc_type", kind.to_owned()),
            ("grpc_service", service.to_owned()),
            ("grpc_method", method.to_owned()),
        ];
        let (started, handling) = if recorded {
            (
                metrics::counter!("grpc_server_started_total", &labels),
                metrics::histogram!("grpc_server_handling_seconds", &labels),
            )
        } else {
            (Counter::noop(), Histogram::noop())
        };
        let leak = |text: String| -> &'static str { Box::leak(text.into_boxed_str()) };
        Method {
            path: leak(format!("/{service}/{method}")),
            service: leak(service.to_owned()),
            method: leak(method.to_owned()),
            kind,
            recorded,
            started,
            handling,
            handled: Default::default(),
        }
    }

    fn handled(&self, code: Code) -> &Counter {
        let index = (code as usize).min(16);
        self.handled[index].get_or_init(|| {
            if !self.recorded {
                return Counter::noop();
            }
            metrics::counter!(
                "grpc_server_handled_total",
                "grpc_type" => self.kind,
                "grpc_service" => self.service,
                "grpc_method" => self.method,
                "grpc_code" => code_name(code),
            )
        })
    }
}

/// The layer, for `Server::layer`. Build it after the metrics recorder is installed: the
/// handles it makes belong to the recorder in force then.
#[derive(Debug, Clone)]
pub struct CallsLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    methods: HashMap<&'static str, Arc<Method>>,
    unknown: Arc<Method>,
    tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
}

impl CallsLayer {
    /// The layer for the methods of the encoded descriptor sets `served`; `metrics` says
    /// whether to record in the installed recorder; `tracer`, when spans are exported, makes
    /// each call's span.
    pub fn new(
        served: &[&[u8]],
        metrics: bool,
        tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
    ) -> CallsLayer {
        let mut methods = HashMap::new();
        for set in served {
            // The sets are compiled in; one that does not decode describes nothing.
            let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
                continue;
            };
            for file in &set.file {
                for service in &file.service {
                    let name = match file.package() {
                        "" => service.name().to_owned(),
                        package => format!("{package}.{}", service.name()),
                    };
                    for method in &service.method {
                        let kind = match (method.client_streaming(), method.server_streaming()) {
                            (false, false) => "unary",
                            (false, true) => "server_stream",
                            (true, false) => "client_stream",
                            (true, true) => "bidi_stream",
                        };
                        let method = Arc::new(Method::new(&name, method.name(), kind, metrics));
                        methods.insert(method.path, method);
                    }
                }
            }
        }
        CallsLayer {
            shared: Arc::new(Shared {
                methods,
                unknown: Arc::new(Method::new("unknown", "unknown", "unknown", metrics)),
                tracer,
            }),
        }
    }
}

impl<S> Layer<S> for CallsLayer {
    type Service = Calls<S>;

    fn layer(&self, inner: S) -> Calls<S> {
        Calls {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service the layer wraps around the server.
#[derive(Debug, Clone)]
pub struct Calls<S> {
    inner: S,
    shared: Arc<Shared>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for Calls<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResponseBody: Body + Send + 'static,
{
    type Response = http::Response<Observed<ResponseBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<RequestBody>) -> Self::Future {
        let started = Instant::now();
        let method = self
            .shared
            .methods
            .get(request.uri().path())
            .unwrap_or(&self.shared.unknown)
            .clone();
        method.started.increment(1);
        let note = Arc::new(CallNote::default());
        request.extensions_mut().insert(note.clone());
        let span = tracing::info_span!(
            target: SPAN_TARGET,
            "rpc",
            method = method.path,
            account = Empty,
        );
        // The exported span, with the OpenTelemetry RPC attributes, a child of the caller's
        // trace context.
        let exported = self.shared.tracer.as_ref().map(|tracer| {
            use opentelemetry::trace::{SpanKind, Tracer as _};
            let parent = super::extract_context(request.headers());
            let exported = tracer
                .span_builder(method.path)
                .with_kind(SpanKind::Server)
                .with_attributes({
                    // Room for the two set when the call ends: no reallocation then.
                    let mut attributes = Vec::with_capacity(5);
                    attributes.extend([
                        opentelemetry::KeyValue::new("rpc.system", "grpc"),
                        opentelemetry::KeyValue::new("rpc.service", method.service),
                        opentelemetry::KeyValue::new("rpc.method", method.method),
                    ]);
                    attributes
                })
                .start_with_context(tracer, &parent);
            let _ = note
                .span
                .set(opentelemetry::trace::Span::span_context(&exported).clone());
            exported
        });
        let incoming_trace = super::traceparent_trace_id(request.headers()).map(Box::<str>::from);
        let mut end = End {
            method,
            note,
            exported,
            started,
            incoming_trace,
            done: false,
        };
        let answer = self.inner.call(request).instrument(span);
        Box::pin(async move {
            let response = answer.await?;
            let (parts, body) = response.into_parts();
            if let Some(status) = status_in(&parts.headers) {
                end.finish(&status);
            }
            Ok(http::Response::from_parts(
                parts,
                Observed {
                    inner: body,
                    end: (!end.done).then_some(end),
                },
            ))
        })
    }
}

/// The status a trailers-only answer (or trailers) carries, if any.
fn status_in(headers: &http::HeaderMap) -> Option<Status> {
    headers
        .contains_key(Status::GRPC_STATUS)
        .then(|| Status::from_header_map(headers))
        .flatten()
}

/// What is reported when the call ends.
#[derive(Debug)]
struct End {
    method: Arc<Method>,
    note: Arc<CallNote>,
    exported: Option<opentelemetry_sdk::trace::Span>,
    started: Instant,
    incoming_trace: Option<Box<str>>,
    done: bool,
}

impl End {
    fn finish(&mut self, status: &Status) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let code = status.code();
        let seconds = self.started.elapsed().as_secs_f64();
        self.method.handling.record(seconds);
        self.method.handled(code).increment(1);
        let server_fault = matches!(
            code,
            Code::Internal | Code::Unknown | Code::DataLoss | Code::Unimplemented
        ) || (code == Code::Unavailable
            && status.message().contains("error id"));
        let account_id = self.note.account.get();
        let account = account_id.map(|a| &**a).unwrap_or("");
        if let Some(exported) = &mut self.exported {
            use opentelemetry::trace::Span as _;
            exported.set_attribute(opentelemetry::KeyValue::new(
                "rpc.grpc.status_code",
                i64::from(code as i32),
            ));
            if let Some(account_id) = account_id {
                exported.set_attribute(opentelemetry::KeyValue::new("account", account_id.clone()));
            }
            if server_fault {
                exported.set_status(opentelemetry::trace::Status::error(
                    status.message().to_owned(),
                ));
            }
            exported.end();
        }
        // The fields below are only evaluated when the line is logged (the macros check first):
        // formatting the trace id is not paid for by calls whose line is filtered out.
        // Microseconds are enough, and print short.
        let latency_ms = (seconds * 1e6).round() / 1e3;
        let method = self.method.path;
        let code = code_name(code);
        if server_fault {
            tracing::warn!(
                target: TARGET,
                method,
                account,
                code,
                latency_ms,
                trace_id = self.trace_id(),
                error_id = error_id_in(status.message()),
                message = status.message(),
                "call failed"
            );
        } else {
            tracing::info!(
                target: TARGET,
                method,
                account,
                code,
                latency_ms,
                trace_id = self.trace_id(),
                "call"
            );
        }
    }

    /// The call's trace id: its span's when spans are exported, else the caller's.
    fn trace_id(&self) -> String {
        use opentelemetry::trace::Span as _;
        if let Some(exported) = &self.exported {
            let ids = exported.span_context();
            if ids.is_valid() {
                return ids.trace_id().to_string();
            }
        }
        self.incoming_trace.as_deref().unwrap_or("").to_owned()
    }
}

impl Drop for End {
    fn drop(&mut self) {
        if !self.done {
            // The body went before its trailers: the client left (or the connection broke).
            self.finish(&Status::cancelled("the client cancelled the call"));
        }
    }
}

/// The id in "... (error id 0123456789abcdef)", as `crate::error::status` writes it.
fn error_id_in(message: &str) -> &str {
    message
        .rsplit_once("(error id ")
        .and_then(|(_, id)| id.strip_suffix(')'))
        .unwrap_or("")
}

/// The response body, watched for its trailers.
#[derive(Debug)]
pub struct Observed<B> {
    inner: B,
    end: Option<End>,
}

impl<B: Body + Unpin> Body for Observed<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(status) = status_in(trailers)
                    && let Some(end) = &mut this.end
                {
                    end.finish(&status);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(end) = &mut this.end {
                    end.finish(&Status::unknown("the response failed"));
                }
            }
            Poll::Ready(None) => {
                if let Some(end) = &mut this.end {
                    end.finish(&Status::unknown("the response ended without a status"));
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The code's name as Prometheus dashboards label it (grpc-go's `Code.String()`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_come_from_the_descriptors_with_their_kind() {
        let layer = CallsLayer::new(
            &[
                crate::api::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
            ],
            false,
            None,
        );
        let kind = |path: &str| layer.shared.methods.get(path).map(|m| m.kind);
        assert_eq!(
            kind("/licensing.v1.LicensingService/GetAccount"),
            Some("unary")
        );
        assert_eq!(
            kind("/licensing.v1.LicensingService/GetUsage"),
            Some("server_stream")
        );
        assert_eq!(kind("/grpc.health.v1.Health/Watch"), Some("server_stream"));
        assert_eq!(kind("/grpc.health.v1.Health/Check"), Some("unary"));
        assert_eq!(kind("/no.Such/Method"), None);
    }

    #[test]
    fn error_ids_are_read_from_the_message() {
        assert_eq!(
            error_id_in("internal error (error id 0123456789abcdef)"),
            "0123456789abcdef"
        );
        assert_eq!(error_id_in("account \"acme\" not found"), "");
    }
}
