//! Spans to an OTLP/gRPC receiver: a span processor that encodes each ended span straight into
//! the protobuf bytes of an `ExportTraceServiceRequest`, and a thread that sends those bytes.
//!
//! The SDK's batch processor and OTLP exporter do the same in three steps: the span data crosses
//! to the batch thread, is cloned (for retries) and converted into `opentelemetry-proto`'s message
//! structs (every name, attribute key and value copied into a new string), then encoded. On a
//! call as short as `ResolveMember` those copies, and freeing on one thread what another
//! allocated, were most of what an exported span cost (docs/benchmarks.md, Telemetry). Here the
//! span is encoded where it ended, into its batch's buffer; what crosses threads is one buffer
//! per batch.
//!
//! The standard batching variables apply (`OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_QUEUE_SIZE`,
//! `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_BSP_EXPORT_TIMEOUT`), and the exporter's
//! (`OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`, `_TIMEOUT`, `_COMPRESSION`: `none` only). When the
//! queue is full a batch is dropped and counted (`licensing_spans_dropped_total`); a failed export
//! is not retried (spans are not billing records: the next batch goes on) and is counted
//! (`licensing_span_exports_failed_total`) and logged, at most once every
//! [`FAILURE_LOG_INTERVAL`].

use std::{
    sync::{Arc, Mutex, PoisonError, atomic::Ordering, mpsc},
    time::{Duration, Instant, SystemTime},
};

use bytes::{BufMut as _, Bytes};
use opentelemetry::{
    Array, InstrumentationScope, KeyValue, Value,
    trace::{SpanId, SpanKind, Status},
};
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{SpanData, SpanProcessor},
};
use prost::encoding::{encode_varint, encoded_len_varint};

/// The gRPC method spans are exported to.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// The most often a failing export is logged.
pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How spans are batched and sent, from the standard variables.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub endpoint: String,
    /// Metadata sent with every export (`OTEL_EXPORTER_OTLP_HEADERS`).
    pub headers: Vec<(String, String)>,
    /// The most one export may take (`OTEL_EXPORTER_OTLP_TIMEOUT`, bounded by
    /// `OTEL_BSP_EXPORT_TIMEOUT`).
    pub timeout: Duration,
    /// How long an incomplete batch waits before it is sent.
    pub schedule_delay: Duration,
    /// Spans queued at most (in the batch being filled and those waiting to be sent).
    pub max_queue_size: usize,
    /// Spans per export at most.
    pub max_export_batch_size: usize,
}

impl Settings {
    /// The settings of `endpoint` under the variables `env` gives.
    pub fn from_env(
        endpoint: String,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let signal = |name: &str| {
            let traces = name.replace("OTEL_EXPORTER_OTLP_", "OTEL_EXPORTER_OTLP_TRACES_");
            set(&traces)
                .map(|v| (traces, v))
                .or_else(|| set(name).map(|v| (name.to_owned(), v)))
        };
        let number = |name: &str, value: &str| {
            value
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("{name} {value:?}: not a whole number"))
        };
        let millis = |name: &str, default: u64| match set(name) {
            None => Ok(Duration::from_millis(default)),
            Some(value) => number(name, &value).map(Duration::from_millis),
        };
        let count = |name: &str, default: u64| match set(name) {
            None => Ok(default as usize),
            Some(value) => match number(name, &value)? {
                0 => Err(format!("{name} {value:?}: must be at least 1")),
                n => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
            },
        };
        let headers = match signal("OTEL_EXPORTER_OTLP_HEADERS") {
            None => Vec::new(),
            Some((name, value)) => parse_headers(&value).map_err(|e| format!("{name}: {e}"))?,
        };
        let timeout = match signal("OTEL_EXPORTER_OTLP_TIMEOUT") {
            None => Duration::from_secs(10),
            Some((name, value)) => Duration::from_millis(number(&name, &value)?),
        };
        if let Some((name, value)) = signal("OTEL_EXPORTER_OTLP_COMPRESSION")
            && !value.trim().eq_ignore_ascii_case("none")
        {
            return Err(format!(
                "{name} {value:?}: spans are sent uncompressed by this build; unset it or say none"
            ));
        }
        let export_timeout = millis("OTEL_BSP_EXPORT_TIMEOUT", 30_000)?;
        let max_queue_size = count("OTEL_BSP_MAX_QUEUE_SIZE", 2048)?;
        let max_export_batch_size = count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)?;
        Ok(Settings {
            endpoint,
            headers,
            timeout: timeout.min(export_timeout),
            schedule_delay: millis("OTEL_BSP_SCHEDULE_DELAY", 5_000)?,
            // As the specification says: a batch is never larger than the queue.
            max_export_batch_size: max_export_batch_size.min(max_queue_size),
            max_queue_size,
        })
    }
}

/// `key1=value1,key2=value2`, each value percent-decoded; keys become lowercase metadata keys.
fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut headers = Vec::new();
    for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("{pair:?} is not key=value"));
        };
        let key = key.trim().to_ascii_lowercase();
        let value = percent_decoded(value.trim())
            .ok_or_else(|| format!("the value of {key:?} is not percent-encoded UTF-8"))?;
        tonic::metadata::MetadataKey::<tonic::metadata::Ascii>::from_bytes(key.as_bytes())
            .map_err(|_| format!("{key:?} is not a valid header name"))?;
        tonic::metadata::MetadataValue::<tonic::metadata::Ascii>::try_from(value.as_str())
            .map_err(|_| format!("the value of {key:?} is not a valid header value"))?;
        headers.push((key, value));
    }
    Ok(headers)
}

fn percent_decoded(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The spans of one instrumentation scope in a batch: each already encoded as a `spans` field of
/// its `ScopeSpans`.
#[derive(Debug)]
struct ScopeBatch {
    scope: InstrumentationScope,
    spans: Vec<u8>,
}

/// A batch of encoded spans.
#[derive(Debug, Default)]
struct Batch {
    scopes: Vec<ScopeBatch>,
    spans: usize,
}

impl Batch {
    fn add(&mut self, span: &SpanData) {
        let index = match self
            .scopes
            .iter()
            .position(|s| s.scope == span.instrumentation_scope)
        {
            Some(index) => index,
            None => {
                self.scopes.push(ScopeBatch {
                    scope: span.instrumentation_scope.clone(),
                    spans: Vec::with_capacity(64 << 10),
                });
                self.scopes.len() - 1
            }
        };
        nested(&mut self.scopes[index].spans, 2, |buf| {
            encode_span(buf, span)
        });
        self.spans += 1;
    }
}

enum Message {
    Batch(Batch),
    /// Send what is queued, then answer.
    Flush(mpsc::SyncSender<OTelSdkResult>),
    /// Send what is queued, answer, and stop.
    Shutdown(mpsc::SyncSender<OTelSdkResult>),
}

#[derive(Debug)]
struct Shared {
    /// The batch being filled.
    filling: Mutex<Batch>,
    /// The encoded `Resource` message's fields, and its schema URL.
    resource: Mutex<(Bytes, String)>,
    max_export_batch_size: usize,
    /// Full batches handed to the sending thread and not yet taken, and how many may be.
    waiting: std::sync::atomic::AtomicUsize,
    max_waiting: usize,
}

impl Shared {
    fn new(settings: &Settings) -> Shared {
        Shared {
            filling: Mutex::new(Batch::default()),
            resource: Mutex::new((Bytes::new(), String::new())),
            max_export_batch_size: settings.max_export_batch_size,
            waiting: std::sync::atomic::AtomicUsize::new(0),
            // Besides the batch being filled.
            max_waiting: (settings.max_queue_size / settings.max_export_batch_size)
                .saturating_sub(1)
                .max(1),
        }
    }
}

/// The span processor: encodes ended spans, hands full batches to the sending thread.
#[derive(Debug)]
pub struct Processor {
    shared: Arc<Shared>,
    sender: mpsc::Sender<Message>,
    sending: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Processor {
    /// A processor sending to `settings.endpoint` through a channel whose connection is driven by
    /// `runtime` (build it inside that runtime's context).
    pub fn new(settings: &Settings, runtime: tokio::runtime::Handle) -> Result<Self, String> {
        let endpoint = settings.endpoint.clone();
        let mut channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
            .map_err(|e| format!("OTLP endpoint {endpoint:?}: {e}"))?
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout);
        if endpoint.starts_with("https://") {
            channel = channel
                .tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots())
                .map_err(|e| format!("OTLP endpoint {endpoint:?}: {e}"))?;
        }
        let channel = {
            let _inside = runtime.enter();
            channel.connect_lazy()
        };
        let mut metadata = tonic::metadata::MetadataMap::new();
        for (key, value) in &settings.headers {
            let key = tonic::metadata::MetadataKey::from_bytes(key.as_bytes())
                .map_err(|e| format!("header {key:?}: {e}"))?;
            let value = tonic::metadata::MetadataValue::try_from(value.as_str())
                .map_err(|e| format!("header {key:?}: {e}"))?;
            metadata.insert(key, value);
        }
        let shared = Arc::new(Shared::new(settings));
        // Unbounded, so that asking for a flush never blocks; `waiting` bounds the batches.
        let (sender, messages) = mpsc::channel();
        let sending = Sending {
            shared: shared.clone(),
            client: tonic::client::Grpc::new(channel),
            metadata,
            runtime,
            timeout: settings.timeout,
            schedule_delay: settings.schedule_delay,
            failures: Failures::default(),
        };
        let thread = std::thread::Builder::new()
            .name("otlp-spans".into())
            .spawn(move || sending.run(messages))
            .map_err(|e| format!("starting the thread that sends spans: {e}"))?;
        Ok(Processor {
            shared,
            sender,
            sending: Mutex::new(Some(thread)),
        })
    }

    /// Asks the sending thread for `message` and waits `timeout` at most for its answer.
    fn ask(
        &self,
        message: impl FnOnce(mpsc::SyncSender<OTelSdkResult>) -> Message,
        timeout: Duration,
    ) -> OTelSdkResult {
        let (reply, answer) = mpsc::sync_channel(1);
        self.sender
            .send(message(reply))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        answer
            .recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))?
    }
}

impl SpanProcessor for Processor {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let full = {
            let mut filling = self
                .shared
                .filling
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            filling.add(&span);
            (filling.spans >= self.shared.max_export_batch_size)
                .then(|| std::mem::take(&mut *filling))
        };
        // The span data is dropped here, on the thread that made it.
        drop(span);
        if let Some(batch) = full {
            let spans = batch.spans;
            let waiting = self.shared.waiting.fetch_add(1, Ordering::AcqRel);
            if waiting >= self.shared.max_waiting
                || self.sender.send(Message::Batch(batch)).is_err()
            {
                self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
                metrics::counter!("licensing_spans_dropped_total").increment(spans as u64);
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Message::Flush, Duration::from_secs(30))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let answered = self.ask(Message::Shutdown, timeout);
        if answered.is_ok()
            && let Some(thread) = self
                .sending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
        {
            let _ = thread.join();
        }
        answered
    }

    fn set_resource(&mut self, resource: &Resource) {
        let mut encoded = Vec::new();
        for (key, value) in resource.iter() {
            nested(&mut encoded, 1, |buf| {
                encode_key_value(buf, key.as_str(), value)
            });
        }
        let schema_url = resource.schema_url().unwrap_or_default().to_owned();
        *self
            .shared
            .resource
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = (encoded.into(), schema_url);
    }
}

/// The sending thread's state.
struct Sending {
    shared: Arc<Shared>,
    client: tonic::client::Grpc<tonic::transport::Channel>,
    metadata: tonic::metadata::MetadataMap,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
    schedule_delay: Duration,
    failures: Failures,
}

impl Sending {
    fn run(mut self, messages: mpsc::Receiver<Message>) {
        loop {
            match messages.recv_timeout(self.schedule_delay) {
                Ok(Message::Batch(batch)) => {
                    self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
                    let _ = self.send(batch);
                }
                Ok(Message::Flush(reply)) => {
                    let _ = reply.send(self.send_queued(&messages));
                }
                Ok(Message::Shutdown(reply)) => {
                    let _ = reply.send(self.send_queued(&messages));
                    return;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let batch = self.take_filling();
                    let _ = self.send(batch);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn take_filling(&self) -> Batch {
        std::mem::take(
            &mut *self
                .shared
                .filling
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Sends the full batches waiting, then the one being filled.
    fn send_queued(&mut self, messages: &mpsc::Receiver<Message>) -> OTelSdkResult {
        let mut result = Ok(());
        while let Ok(message) = messages.try_recv() {
            match message {
                Message::Batch(batch) => {
                    self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
                    result = result.and(self.send(batch));
                }
                Message::Flush(reply) | Message::Shutdown(reply) => {
                    let _ = reply.send(Ok(()));
                }
            }
        }
        let batch = self.take_filling();
        result.and(self.send(batch))
    }

    fn send(&mut self, batch: Batch) -> OTelSdkResult {
        if batch.spans == 0 {
            return Ok(());
        }
        let spans = batch.spans;
        let (resource, schema_url) = self
            .shared
            .resource
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let body = Bytes::from(request(&resource, &schema_url, batch));
        let mut client = self.client.clone();
        let mut request = tonic::Request::new(body);
        *request.metadata_mut() = self.metadata.clone();
        let timeout = self.timeout;
        let answer = self.runtime.block_on(async move {
            let call = async {
                client.ready().await.map_err(|e| {
                    tonic::Status::unavailable(format!(
                        "the OTLP endpoint: {}",
                        crate::error::chain(&e)
                    ))
                })?;
                let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
                client.unary(request, path, Codec).await
            };
            match tokio::time::timeout(timeout, call).await {
                Ok(answer) => answer,
                Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                    "no answer within {timeout:?}"
                ))),
            }
        });
        match answer {
            Ok(response) => {
                let rejected = response.into_inner();
                if rejected.rejected_spans > 0 || !rejected.error_message.is_empty() {
                    self.failures.note(
                        &format!(
                            "the OTLP receiver rejected {} spans: {}",
                            rejected.rejected_spans, rejected.error_message
                        ),
                        0,
                    );
                } else {
                    self.failures.recovered();
                }
                Ok(())
            }
            Err(status) => {
                metrics::counter!("licensing_span_exports_failed_total").increment(1);
                let problem = format!(
                    "exporting spans failed ({:?}): {}",
                    status.code(),
                    status.message()
                );
                self.failures.note(&problem, spans);
                Err(OTelSdkError::InternalFailure(problem))
            }
        }
    }
}

/// Failed exports, logged at most once every [`FAILURE_LOG_INTERVAL`], and their end.
#[derive(Debug, Default)]
struct Failures {
    last_logged: Option<Instant>,
    /// Failures and spans lost since the last line.
    unlogged: (u64, u64),
    failing: bool,
}

impl Failures {
    fn note(&mut self, problem: &str, spans_lost: usize) {
        self.failing = true;
        self.unlogged.0 += 1;
        self.unlogged.1 += spans_lost as u64;
        if self
            .last_logged
            .is_some_and(|at| at.elapsed() < FAILURE_LOG_INTERVAL)
        {
            return;
        }
        let (failures, spans_lost) = std::mem::take(&mut self.unlogged);
        tracing::warn!(failures, spans_lost, "{problem}");
        self.last_logged = Some(Instant::now());
    }

    fn recovered(&mut self) {
        if std::mem::replace(&mut self.failing, false) {
            let (failures, spans_lost) = std::mem::take(&mut self.unlogged);
            tracing::info!(failures, spans_lost, "exporting spans works again");
            self.last_logged = None;
        }
    }
}

/// An `ExportTraceServiceRequest` of `batch` under the encoded resource.
fn request(resource: &[u8], resource_schema_url: &str, batch: Batch) -> Vec<u8> {
    let size = batch
        .scopes
        .iter()
        .map(|s| s.spans.len() + 64)
        .sum::<usize>()
        + resource.len()
        + 64;
    let mut buf = Vec::with_capacity(size);
    // resource_spans = 1
    nested(&mut buf, 1, |buf| {
        // resource = 1
        nested(buf, 1, |buf| buf.extend_from_slice(resource));
        for scope in &batch.scopes {
            // scope_spans = 2
            nested(buf, 2, |buf| {
                // scope = 1
                nested(buf, 1, |buf| {
                    string(buf, 1, scope.scope.name());
                    string(buf, 2, scope.scope.version().unwrap_or_default());
                    for attribute in scope.scope.attributes() {
                        nested(buf, 3, |buf| {
                            encode_key_value(buf, attribute.key.as_str(), &attribute.value);
                        });
                    }
                });
                buf.extend_from_slice(&scope.spans);
                string(buf, 3, scope.scope.schema_url().unwrap_or_default());
            });
        }
        string(buf, 3, resource_schema_url);
    });
    buf
}

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

fn key(buf: &mut Vec<u8>, field: u32, wire_type: u32) {
    encode_varint(u64::from(field << 3 | wire_type), buf);
}

/// Field `field` holding the message `content` writes: its length is put before it once known.
fn nested(buf: &mut Vec<u8>, field: u32, content: impl FnOnce(&mut Vec<u8>)) {
    key(buf, field, LEN);
    let at = buf.len();
    buf.push(0);
    content(buf);
    let len = buf.len() - at - 1;
    let prefix = encoded_len_varint(len as u64);
    if prefix > 1 {
        buf.resize(buf.len() + prefix - 1, 0);
        buf.copy_within(at + 1..at + 1 + len, at + prefix);
    }
    let mut length = &mut buf[at..at + prefix];
    encode_varint(len as u64, &mut length);
}

/// A string or bytes field; empty ones are left out, as proto3 does.
fn bytes_field(buf: &mut Vec<u8>, field: u32, value: &[u8]) {
    if !value.is_empty() {
        key(buf, field, LEN);
        encode_varint(value.len() as u64, buf);
        buf.extend_from_slice(value);
    }
}

fn string(buf: &mut Vec<u8>, field: u32, value: &str) {
    bytes_field(buf, field, value.as_bytes());
}

fn uint(buf: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        key(buf, field, VARINT);
        encode_varint(value, buf);
    }
}

fn fixed64(buf: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        key(buf, field, FIXED64);
        buf.put_u64_le(value);
    }
}

fn nanos(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Span flags: the trace flags, and whether the parent is remote (OTLP's `SpanFlags`).
fn flags(trace_flags: u8, remote: bool) -> u32 {
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    u32::from(trace_flags) | HAS_IS_REMOTE | if remote { IS_REMOTE } else { 0 }
}

fn encode_span(buf: &mut Vec<u8>, span: &SpanData) {
    let context = &span.span_context;
    bytes_field(buf, 1, &context.trace_id().to_bytes());
    bytes_field(buf, 2, &context.span_id().to_bytes());
    let trace_state = context.trace_state().header();
    string(buf, 3, &trace_state);
    if span.parent_span_id != SpanId::INVALID {
        bytes_field(buf, 4, &span.parent_span_id.to_bytes());
    }
    string(buf, 5, &span.name);
    let kind = match span.span_kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    };
    uint(buf, 6, kind);
    fixed64(buf, 7, nanos(span.start_time));
    fixed64(buf, 8, nanos(span.end_time));
    for attribute in &span.attributes {
        nested(buf, 9, |buf| {
            encode_key_value(buf, attribute.key.as_str(), &attribute.value);
        });
    }
    uint(buf, 10, u64::from(span.dropped_attributes_count));
    for event in span.events.iter() {
        nested(buf, 11, |buf| {
            fixed64(buf, 1, nanos(event.timestamp));
            string(buf, 2, &event.name);
            encode_attributes(buf, 3, &event.attributes);
            uint(buf, 4, u64::from(event.dropped_attributes_count));
        });
    }
    uint(buf, 12, u64::from(span.events.dropped_count));
    for link in span.links.iter() {
        nested(buf, 13, |buf| {
            let linked = &link.span_context;
            bytes_field(buf, 1, &linked.trace_id().to_bytes());
            bytes_field(buf, 2, &linked.span_id().to_bytes());
            string(buf, 3, &linked.trace_state().header());
            encode_attributes(buf, 4, &link.attributes);
            uint(buf, 5, u64::from(link.dropped_attributes_count));
            key(buf, 6, FIXED32);
            buf.put_u32_le(flags(linked.trace_flags().to_u8(), linked.is_remote()));
        });
    }
    uint(buf, 14, u64::from(span.links.dropped_count));
    // status = 15, always present (message = 2, code = 3).
    nested(buf, 15, |buf| match &span.status {
        Status::Unset => {}
        Status::Ok => uint(buf, 3, 1),
        Status::Error { description } => {
            string(buf, 2, description);
            uint(buf, 3, 2);
        }
    });
    key(buf, 16, FIXED32);
    buf.put_u32_le(flags(
        context.trace_flags().to_u8(),
        span.parent_span_is_remote,
    ));
}

fn encode_attributes(buf: &mut Vec<u8>, field: u32, attributes: &[KeyValue]) {
    for attribute in attributes {
        nested(buf, field, |buf| {
            encode_key_value(buf, attribute.key.as_str(), &attribute.value);
        });
    }
}

/// A `KeyValue`'s fields: key = 1, value = 2 (an `AnyValue`, always present).
fn encode_key_value(buf: &mut Vec<u8>, key: &str, value: &Value) {
    string(buf, 1, key);
    nested(buf, 2, |buf| encode_any_value(buf, value));
}

/// An `AnyValue`'s one field (a oneof: written even when it holds the default).
fn encode_any_value(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Bool(b) => {
            key(buf, 2, VARINT);
            encode_varint(u64::from(*b), buf);
        }
        Value::I64(i) => {
            key(buf, 3, VARINT);
            encode_varint(*i as u64, buf);
        }
        Value::F64(f) => {
            key(buf, 4, FIXED64);
            buf.put_u64_le(f.to_bits());
        }
        Value::String(s) => any_string(buf, s.as_str()),
        // values = 1, each an `AnyValue`.
        Value::Array(array) => nested(buf, 5, |buf| match array {
            Array::Bool(values) => {
                for v in values {
                    nested(buf, 1, |buf| encode_any_value(buf, &Value::Bool(*v)));
                }
            }
            Array::I64(values) => {
                for v in values {
                    nested(buf, 1, |buf| encode_any_value(buf, &Value::I64(*v)));
                }
            }
            Array::F64(values) => {
                for v in values {
                    nested(buf, 1, |buf| encode_any_value(buf, &Value::F64(*v)));
                }
            }
            Array::String(values) => {
                for v in values {
                    nested(buf, 1, |buf| any_string(buf, v.as_str()));
                }
            }
            // A kind of array this version does not know: its text.
            other => nested(buf, 1, |buf| any_string(buf, &other.to_string())),
        }),
        // A kind of value this version does not know: its text.
        other => any_string(buf, &other.as_str()),
    }
}

/// An `AnyValue`'s `string_value`, written even when empty.
fn any_string(buf: &mut Vec<u8>, text: &str) {
    key(buf, 1, LEN);
    encode_varint(text.len() as u64, buf);
    buf.extend_from_slice(text.as_bytes());
}

/// What an export's answer says went wrong (`ExportTracePartialSuccess`).
#[derive(Clone, PartialEq, prost::Message)]
struct PartialSuccess {
    #[prost(int64, tag = "1")]
    rejected_spans: i64,
    #[prost(string, tag = "2")]
    error_message: String,
}

/// `ExportTraceServiceResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct ExportResponse {
    #[prost(message, optional, tag = "1")]
    partial_success: Option<PartialSuccess>,
}

/// Sends the encoded request as it is; reads the answer's partial success.
#[derive(Debug, Clone, Copy, Default)]
struct Codec;

impl tonic::codec::Codec for Codec {
    type Encode = Bytes;
    type Decode = PartialSuccess;
    type Encoder = Codec;
    type Decoder = Codec;

    fn encoder(&mut self) -> Self::Encoder {
        Codec
    }

    fn decoder(&mut self) -> Self::Decoder {
        Codec
    }
}

impl tonic::codec::Encoder for Codec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Self::Error> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Codec {
    type Item = PartialSuccess;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Self::Item>, Self::Error> {
        use prost::Message as _;
        let response = ExportResponse::decode(src)
            .map_err(|e| tonic::Status::internal(format!("the OTLP receiver's answer: {e}")))?;
        Ok(Some(response.partial_success.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, TraceFlags, TraceId, TraceState};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;

    use super::*;

    fn span(n: u8, scope: &InstrumentationScope) -> SpanData {
        let context = SpanContext::new(
            TraceId::from_bytes([n; 16]),
            SpanId::from_bytes([n.wrapping_add(1); 8]),
            TraceFlags::SAMPLED,
            n.is_multiple_of(2),
            TraceState::from_key_value([("vendor", "x1")]).expect("trace state"),
        );
        let linked = SpanContext::new(
            TraceId::from_bytes([7; 16]),
            SpanId::from_bytes([8; 8]),
            TraceFlags::default(),
            true,
            TraceState::default(),
        );
        let mut events = opentelemetry_sdk::trace::SpanEvents::default();
        events.events.push(opentelemetry::trace::Event::new(
            "retry",
            SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
            vec![KeyValue::new("attempt", 2_i64)],
            1,
        ));
        events.dropped_count = 3;
        let mut links = opentelemetry_sdk::trace::SpanLinks::default();
        links.links.push(opentelemetry::trace::Link::new(
            linked,
            vec![KeyValue::new("batch", "b-1")],
            0,
        ));
        SpanData {
            span_context: context,
            parent_span_id: if n.is_multiple_of(3) {
                SpanId::INVALID
            } else {
                SpanId::from_bytes([9; 8])
            },
            parent_span_is_remote: n % 2 == 1,
            span_kind: [SpanKind::Server, SpanKind::Internal, SpanKind::Client][n as usize % 3]
                .clone(),
            name: format!("licensing.v1.LicensingService/Method{n}").into(),
            start_time: SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_000),
            end_time: SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_054_321),
            attributes: vec![
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.grpc.status_code", i64::from(n) - 1),
                KeyValue::new("ratio", 0.5),
                KeyValue::new("cached", n.is_multiple_of(2)),
                KeyValue::new("empty", ""),
                KeyValue::new("zero", 0_i64),
                KeyValue::new("no", false),
                KeyValue::new(
                    "tiers",
                    Value::Array(Array::String(vec!["BASIC".into(), "".into()])),
                ),
                KeyValue::new("counts", Value::Array(Array::I64(vec![1, -2, 0]))),
            ],
            dropped_attributes_count: u32::from(n),
            events,
            links,
            status: match n % 3 {
                0 => Status::Unset,
                1 => Status::Ok,
                _ => Status::error(format!("internal error (error id {n:016x})")),
            },
            instrumentation_scope: scope.clone(),
        }
    }

    /// Decoded, our bytes are the message `opentelemetry-proto` builds from the same spans (the
    /// conversion the SDK's OTLP exporter uses).
    #[test]
    fn a_batch_encodes_as_the_otlp_exporter_would_send_it() {
        let scopes = [
            InstrumentationScope::builder("licensing").build(),
            InstrumentationScope::builder("other")
                .with_version("1.2.3")
                .with_schema_url("https://opentelemetry.io/schemas/1.21.0")
                .with_attributes([KeyValue::new("scope.kind", "test")])
                .build(),
        ];
        let spans: Vec<SpanData> = (0..7)
            .map(|n| span(n, &scopes[usize::from(n % 4 == 3)]))
            .collect();
        let resource = Resource::builder_empty()
            .with_service_name("licensing")
            .with_attribute(KeyValue::new("service.version", "0.1.0"))
            .with_attribute(KeyValue::new("host.cores", 2_i64))
            .build();

        let mut batch = Batch::default();
        for span in &spans {
            batch.add(span);
        }
        let (processor_resource, schema_url) = {
            let shared = Shared::new(
                &Settings::from_env("http://otel:4317".into(), |_| None).expect("defaults"),
            );
            let (sender, _messages) = mpsc::channel();
            let mut processor = Processor {
                shared: Arc::new(shared),
                sender,
                sending: Mutex::new(None),
            };
            processor.set_resource(&resource);
            processor.shared.resource.lock().expect("lock").clone()
        };
        let ours = request(&processor_resource, &schema_url, batch);
        let decoded = ExportTraceServiceRequest::decode(ours.as_slice()).expect("decodes");

        let expected = ExportTraceServiceRequest {
            resource_spans:
                opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope(
                    spans,
                    &(&resource).into(),
                ),
        };
        assert_eq!(decoded, expected);
        // And byte for byte, as prost encodes the same message.
        assert_eq!(ours, expected.encode_to_vec());
    }

    #[test]
    fn nested_lengths_of_every_size_are_put_before_their_content() {
        for len in [0usize, 1, 127, 128, 300, 16_383, 16_384, 70_000] {
            let mut buf = vec![0xAA];
            nested(&mut buf, 2, |buf| buf.extend(std::iter::repeat_n(7u8, len)));
            let mut expected = vec![0xAA, 2 << 3 | 2];
            encode_varint(len as u64, &mut expected);
            expected.extend(std::iter::repeat_n(7u8, len));
            assert_eq!(buf, expected, "length {len}");
        }
    }

    #[test]
    fn settings_come_from_the_standard_variables_and_bad_ones_are_named() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let endpoint = || "http://otel:4317".to_owned();
        let defaults = Settings::from_env(endpoint(), env(&[])).expect("defaults");
        assert_eq!(
            defaults,
            Settings {
                endpoint: endpoint(),
                headers: vec![],
                timeout: Duration::from_secs(10),
                schedule_delay: Duration::from_secs(5),
                max_queue_size: 2048,
                max_export_batch_size: 512,
            }
        );
        let set = Settings::from_env(
            endpoint(),
            env(&[
                ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b,X-Tenant=t1"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                    "Authorization=Bearer%20xyz",
                ),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "60000"),
                ("OTEL_BSP_EXPORT_TIMEOUT", "20000"),
                ("OTEL_BSP_SCHEDULE_DELAY", "250"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
            ]),
        )
        .expect("set");
        assert_eq!(
            set.headers,
            vec![("authorization".into(), "Bearer xyz".into())]
        );
        assert_eq!(set.timeout, Duration::from_secs(20));
        assert_eq!(set.schedule_delay, Duration::from_millis(250));
        assert_eq!((set.max_queue_size, set.max_export_batch_size), (100, 100));
        assert_eq!(
            Settings::from_env(
                endpoint(),
                env(&[("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b,X-Tenant=t1")])
            )
            .expect("headers")
            .headers,
            vec![
                ("api-key".into(), "a b".into()),
                ("x-tenant".into(), "t1".into())
            ]
        );
        for (pairs, named) in [
            (
                &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")][..],
                "OTEL_EXPORTER_OTLP_COMPRESSION \"gzip\"",
            ),
            (
                &[("OTEL_BSP_MAX_QUEUE_SIZE", "lots")][..],
                "OTEL_BSP_MAX_QUEUE_SIZE \"lots\"",
            ),
            (
                &[("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "0")][..],
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE \"0\"",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "-1")][..],
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT \"-1\"",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")][..],
                "OTEL_EXPORTER_OTLP_HEADERS: \"novalue\"",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_HEADERS", "k=%zz")][..],
                "OTEL_EXPORTER_OTLP_HEADERS: the value of \"k\"",
            ),
        ] {
            let pairs: &'static [(&'static str, &'static str)] = pairs;
            let error = Settings::from_env(endpoint(), env(pairs)).expect_err("refused");
            assert!(error.starts_with(named), "{error}");
        }
    }
}
