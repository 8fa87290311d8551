//! Prometheus metrics: the `metrics` facade, recorded by `metrics-exporter-prometheus` and served
//! as text on `GET /metrics` of an address of their own (axum). Both binaries use it.
//!
//! Names follow the conventions dashboards already use: the gRPC server metrics of
//! go-grpc-prometheus (`grpc_server_started_total`, `grpc_server_handled_total`,
//! `grpc_server_handling_seconds`), then `licensing_*` for the service's own and
//! `licensing_collector_*` for the collector's. Histograms have explicit buckets, so they are
//! rendered as Prometheus histograms, not summaries. No label carries a member, and none
//! carries an account.

use std::{future::Future, sync::Arc, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

/// Buckets of every `*_seconds` histogram: from half a millisecond (a cached read) to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets of histograms that count things (batches in a group commit, events in a batch).
const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];
/// How often histograms' samples are folded in when nobody scrapes, so they do not pile up.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Code run before each scrape is rendered: gauges read at that moment (database size, ...).
pub type BeforeScrape = Arc<dyn Fn() + Send + Sync>;

/// Installs the process's recorder. Metrics recorded before this (or without it) go nowhere;
/// handles made before it (`metrics::counter!` kept in a struct) stay detached, so install it
/// first. Errors if a recorder is installed already.
fn install() -> Result<PrometheusHandle, String> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_batches".into()), COUNT_BUCKETS))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_events".into()), COUNT_BUCKETS))
        .map_err(|e| format!("metric buckets: {e}"))?;
    builder
        .install_recorder()
        .map_err(|e| format!("installing the metrics recorder: {e}"))
}

/// The process's recorder, installed by the first call; later calls get the same handle (the
/// tests of one process serve several times).
pub fn install_once() -> Result<PrometheusHandle, String> {
    static INSTALLED: std::sync::OnceLock<Result<PrometheusHandle, String>> =
        std::sync::OnceLock::new();
    INSTALLED.get_or_init(install).clone()
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes; `before` runs before each
/// rendering. Other paths are 404.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    before: BeforeScrape,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let upkeep = {
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                ticks.tick().await;
                handle.run_upkeep();
            }
        })
    };
    let render = move || {
        let handle = handle.clone();
        let before = before.clone();
        async move {
            before();
            (
                [(
                    http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                handle.render(),
            )
        }
    };
    let app = axum::Router::new().route("/metrics", axum::routing::get(render));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    upkeep.abort();
    served
}

/// One unit of a gauge, held while this lives (a stream open, an operation waiting).
#[derive(Debug)]
pub struct Held(metrics::Gauge);

impl Held {
    /// Adds one to `gauge` until dropped.
    pub fn new(gauge: metrics::Gauge) -> Held {
        gauge.increment(1.0);
        Held(gauge)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// A gauge that follows a count kept elsewhere: set from it before each scrape.
pub fn set_gauge(name: &'static str, value: f64) {
    metrics::gauge!(name).set(value);
}

/// Says what each of the service's metrics is, for the `# HELP` lines.
pub fn describe_server() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "grpc_server_started_total",
        "Calls started, by gRPC service, method and type."
    );
    describe_counter!(
        "grpc_server_handled_total",
        "Calls ended, by gRPC service, method, type and status code."
    );
    describe_histogram!(
        "grpc_server_handling_seconds",
        Unit::Seconds,
        "Time from a call's start to its status (for a stream, to its last message)."
    );
    describe_counter!(
        "licensing_events_total",
        "Usage events answered, by outcome (applied, duplicate, refused) and refusal reason."
    );
    describe_counter!(
        "licensing_dedupe_hits_total",
        "Usage events recognised as applied before (redeliveries)."
    );
    describe_counter!(
        "licensing_failed_batches_total",
        "Batches of usage events refused whole (storage failure, defect)."
    );
    describe_histogram!(
        "licensing_group_commit_batches",
        "Batches committed together in one transaction and flush."
    );
    describe_histogram!(
        "licensing_group_commit_events",
        "Usage events committed together in one transaction and flush."
    );
    describe_histogram!(
        "licensing_group_commit_seconds",
        Unit::Seconds,
        "Time of one group commit: its transaction and its flush."
    );
    describe_histogram!(
        "licensing_flush_seconds",
        Unit::Seconds,
        "Time of one flush of the database (what an acknowledgement waits for)."
    );
    describe_gauge!(
        "licensing_open_streams",
        "Streams open now (GetUsage snapshots and follows, audit trails, Ingest)."
    );
    describe_gauge!(
        "licensing_follow_streams",
        "GetUsage streams following changes now (after their snapshot)."
    );
    describe_gauge!(
        "licensing_blocking_waiting",
        "Store operations waiting for a slot on the blocking pool."
    );
    describe_gauge!(
        "licensing_database_bytes",
        Unit::Bytes,
        "Size of the database's files on disk."
    );
    describe_gauge!(
        "licensing_seats",
        "Seats over every account but sandboxes, by product and state (bought, in_use); summed every 30 s."
    );
    describe_gauge!(
        "licensing_accounts",
        "Accounts, sandboxes left out; counted every 30 s."
    );
    describe_counter!(
        "licensing_spans_dropped_total",
        "Spans not exported because the queue of batches to send was full."
    );
    describe_counter!(
        "licensing_span_exports_failed_total",
        "Exports of a batch of spans that failed (not retried)."
    );
    describe_gauge!(
        "licensing_storage_failed",
        "1 once a storage error stopped writes (until a restart), else 0."
    );
}
