//! What an operator sees: logs (text for people, JSON for log collectors), traces over OTLP, and
//! metrics for Prometheus ([`metrics`]), with a line, a span and a count per call ([`calls`]).
//!
//! Traces are configured by the standard OpenTelemetry variables and are off unless an OTLP
//! endpoint is set:
//! - `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`): where spans go, over
//!   OTLP/gRPC, e.g. `http://otel-collector:4317`;
//! - `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`: the resource (default service name: the
//!   binary's);
//! - `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`: sampling (default
//!   `parentbased_always_on`);
//! - `OTEL_BSP_*`: batching; `OTEL_EXPORTER_OTLP_TIMEOUT`, `..._HEADERS`, `..._COMPRESSION`
//!   (`none` only);
//! - `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`: off.
//!
//! Spans are encoded as they end and sent in batches by a thread of their own ([`otlp`]), through
//! a tonic channel that lives on a one-thread runtime of its own: a stalled trace backend or a
//! runtime with one worker cannot block calls or the shutdown, which waits for the last spans at
//! most [`SHUTDOWN_TIMEOUT`].

pub mod calls;
pub mod metrics;
pub mod otlp;

use std::{io::IsTerminal as _, time::Duration};

use opentelemetry::{
    propagation::{Extractor, TextMapPropagator as _},
    trace::TracerProvider as _,
};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_subscriber::{
    EnvFilter, Layer as _, filter::LevelFilter, fmt, layer::SubscriberExt as _,
    util::SubscriberInitExt as _,
};

use crate::config::LogFormat;

/// The most the shutdown waits for the last spans to be exported.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// The log filter when none is configured: everything at `info`, and of the per-call lines
/// (target `licensing::call`) only the calls that failed on our side. `licensing::call=info`
/// turns on a line for every call; `licensing::rpc=info` prefixes what handlers log with their
/// call (method, account).
pub const DEFAULT_LOG_FILTER: &str = "info,licensing::call=warn,licensing::rpc=warn";

/// Telemetry in force; [`Telemetry::shutdown`] exports the spans still queued.
#[derive(Debug)]
pub struct Telemetry {
    traces: Option<Traces>,
}

#[derive(Debug)]
struct Traces {
    provider: SdkTracerProvider,
    service: &'static str,
    /// Drives the exporter's connection; owned here so that it outlives the provider.
    runtime: tokio::runtime::Runtime,
    endpoint: String,
}

/// Whether traces are to be exported, from the standard variables: the endpoint when they are.
pub fn traces_endpoint(env: impl Fn(&str) -> Option<String>) -> Option<String> {
    let set = |name: &str| env(name).filter(|value| !value.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return None;
    }
    if set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none")) {
        return None;
    }
    set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

/// Installs the global subscriber: the log in `format` filtered by `filter` (validated with the
/// configuration), and spans to OTLP when an endpoint is configured. `service` is the default
/// `service.name`. Returns what must be shut down before the process exits.
pub fn init(filter: &str, format: LogFormat, service: &'static str) -> Telemetry {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    // Colours only for a person at a terminal: log files and collectors get plain text.
    let log = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let log = match format {
        LogFormat::Text => log.boxed(),
        LogFormat::Json => log.json().flatten_event(true).boxed(),
    }
    .with_filter(filter);
    let endpoint = traces_endpoint(|name| std::env::var(name).ok());
    let traces = endpoint.map(|endpoint| start_traces(service, endpoint));
    let (traces, problem) = match traces {
        Some(Ok(traces)) => (Some(traces), None),
        Some(Err(problem)) => (None, Some(problem)),
        None => (None, None),
    };
    let spans = traces.as_ref().map(|traces| {
        tracing_opentelemetry::layer()
            .with_tracer(traces.provider.tracer(service))
            .with_threads(false)
            // Busy and idle time would be measured at every poll of a call's future: not worth it.
            .with_tracked_inactivity(false)
            .with_location(false)
            .with_target(false)
            .with_level(false)
            // Trace context is passed explicitly (`set_parent`, `context`): no need to make each
            // span the current OpenTelemetry context at every poll.
            .with_context_activation(false)
            // Our spans only, not the transport's debug spans.
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("licensing", LevelFilter::INFO)
                    // The calls' own spans are made with the OpenTelemetry API (`calls`).
                    .with_target(calls::SPAN_TARGET, LevelFilter::OFF)
                    // Each call's line is a log line, not an event of a span: were it enabled
                    // here, every call would evaluate its fields (its trace id formatted) for a
                    // layer that has no span to put it in.
                    .with_target(calls::TARGET, LevelFilter::OFF)
                    .with_default(LevelFilter::OFF),
            )
    });
    tracing_subscriber::registry().with(log).with(spans).init();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    if let Some(traces) = &traces {
        tracing::info!(endpoint = %traces.endpoint, "exporting traces over OTLP/gRPC");
    }
    if let Some(problem) = problem {
        tracing::error!("traces are off: {problem}");
    }
    Telemetry { traces }
}

/// The span processor and provider; the processor's channel lives on a runtime of its own.
fn start_traces(service: &'static str, endpoint: String) -> Result<Traces, String> {
    let settings = otlp::Settings::from_env(endpoint.clone(), |name| std::env::var(name).ok())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-export")
        .enable_all()
        .build()
        .map_err(|e| format!("starting the exporter's runtime: {e}"))?;
    let processor = otlp::Processor::new(&settings, runtime.handle().clone())?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    let resource = resource
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_span_processor(processor)
        .build();
    Ok(Traces {
        provider,
        service,
        runtime,
        endpoint,
    })
}

impl Telemetry {
    /// The tracer of the calls' spans, when spans are exported.
    pub fn tracer(&self) -> Option<opentelemetry_sdk::trace::SdkTracer> {
        self.traces
            .as_ref()
            .map(|traces| traces.provider.tracer(traces.service))
    }

    /// Exports the spans still queued, waiting [`SHUTDOWN_TIMEOUT`] at most. Call it outside any
    /// async runtime (it blocks), after serving stopped.
    pub fn shutdown(self) {
        let Some(traces) = self.traces else {
            return;
        };
        // On a thread of its own, so that a stuck export cannot hold the process: the join
        // below waits no longer than the timeout (and a little for the thread to end).
        let provider = traces.provider;
        let (done, finished) = std::sync::mpsc::channel();
        let flushing = std::thread::Builder::new()
            .name("otlp-shutdown".into())
            .spawn(move || {
                let _ = done.send(provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT));
            });
        match flushing {
            Ok(_) => match finished.recv_timeout(SHUTDOWN_TIMEOUT + Duration::from_millis(500)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("exporting the last spans: {e}"),
                Err(_) => tracing::warn!(
                    timeout = ?SHUTDOWN_TIMEOUT,
                    "the last spans were not exported in time; dropped"
                ),
            },
            Err(e) => tracing::warn!("exporting the last spans: {e}"),
        }
        traces.runtime.shutdown_timeout(Duration::from_millis(200));
    }
}

/// The trace context of incoming `headers` (W3C `traceparent` / `tracestate`).
pub fn extract_context(headers: &http::HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&Headers(headers))
}

/// The trace context a `traceparent` value names, if it is well-formed.
pub fn context_of_traceparent(traceparent: &str) -> Option<opentelemetry::Context> {
    use opentelemetry::trace::TraceContextExt as _;
    if traceparent.is_empty() {
        return None;
    }
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "traceparent",
        http::HeaderValue::from_str(traceparent).ok()?,
    );
    let context = extract_context(&headers);
    context.span().span_context().is_valid().then_some(context)
}

/// The `traceparent` value of `span`'s trace context, or empty when spans are not exported.
pub fn traceparent_of(span: &tracing::Span) -> String {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let mut fields = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut fields);
    fields.remove("traceparent").unwrap_or_default()
}

/// The trace id of `traceparent` (`00-<trace id>-<span id>-<flags>`), when it is well-formed.
pub fn traceparent_trace_id(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = value.split('-');
    let (_version, trace_id) = (parts.next()?, parts.next()?);
    (trace_id.len() == 32
        && trace_id.bytes().all(|b| b.is_ascii_hexdigit())
        && trace_id.bytes().any(|b| b != b'0'))
    .then_some(trace_id)
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_are_on_only_with_an_endpoint_and_not_disabled() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(traces_endpoint(env(&[])), None);
        assert_eq!(
            traces_endpoint(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")])),
            None
        );
        assert_eq!(
            traces_endpoint(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4317")])),
            Some("http://otel:4317".to_owned())
        );
        assert_eq!(
            traces_endpoint(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4317"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
            ])),
            Some("http://traces:4317".to_owned())
        );
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            let vars: &'static [(&'static str, &'static str)] = match off.0 {
                "OTEL_SDK_DISABLED" => &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4317"),
                    ("OTEL_SDK_DISABLED", "TRUE"),
                ],
                _ => &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4317"),
                    ("OTEL_TRACES_EXPORTER", "none"),
                ],
            };
            assert_eq!(traces_endpoint(env(vars)), None, "{off:?}");
        }
    }

    #[test]
    fn a_traceparent_gives_its_trace_id_and_a_bad_one_none() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(traceparent_trace_id(&headers), None);
        headers.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        );
        assert_eq!(
            traceparent_trace_id(&headers),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f35-00f067aa0ba902b7-01",
            "garbage",
        ] {
            headers.insert("traceparent", http::HeaderValue::from_static(bad));
            assert_eq!(traceparent_trace_id(&headers), None, "{bad}");
        }
    }
}
