//! Serving: one gRPC server with the licensing and ingestion services, standard health per
//! service, server reflection (v1 and v1alpha, since common tools still speak only v1alpha), and
//! a graceful shutdown that reports NOT_SERVING, drains calls and flushes the database.

use std::{future::Future, sync::Arc, time::Duration};

use licensing_core::PriceList;
use licensing_store::{Store, StoreError};
use tokio::{
    net::TcpListener,
    sync::{Notify, watch},
};
use tonic::transport::Server;
use tower_layer::{Identity, Stack};

use crate::{
    api::{
        self, ingestion_service_server::IngestionServiceServer,
        licensing_service_server::LicensingServiceServer,
    },
    auth::{AuthLayer, Authentication},
    decode_errors::DecodeErrorsLayer,
    health::{self, Liveness},
    ingest::Ingestion,
    outbox::Streams,
    service::Licensing,
    telemetry::{self, calls::CallsLayer},
    transport::{self, ConnectionLimits},
};

/// Largest request or response message, in bytes. Requests are small; usage and audit streams
/// send many rows per message, so responses get more room.
pub const MAX_DECODING_MESSAGE_BYTES: usize = 4 << 20;
/// Largest response message, in bytes.
pub const MAX_ENCODING_MESSAGE_BYTES: usize = 16 << 20;
/// Concurrent HTTP/2 streams per connection: enough for pipelined clients, bounded so one
/// connection cannot take every stream of the server (`outbox::MAX_OPEN_STREAMS` in all).
pub const MAX_CONCURRENT_STREAMS: u32 = 256;
/// Streams a client may make the server reset before the connection is closed (rapid-reset
/// protection; tonic leaves it to hyper's default otherwise).
pub const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// How often an idle connection is pinged, and how long a ping may go unanswered.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// See [`KEEPALIVE_INTERVAL`].
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server serves with.
#[derive(Debug)]
pub struct ServeOptions {
    /// The price list in force.
    pub prices: Arc<PriceList>,
    /// The database; flushed at shutdown.
    pub store: Store,
    /// How long in-flight calls may take to finish after the shutdown signal.
    pub shutdown_grace: Duration,
    /// Days a dedupe record is kept after its month closed (a redelivery is DUPLICATE until then).
    pub dedupe_retention_days: u32,
    /// Open connections at most and the handshake timeout (see [`transport`]).
    pub connections: ConnectionLimits,
    /// How callers authenticate (off: every caller has every right).
    pub authentication: Authentication,
    /// Whether server reflection needs a credential too.
    pub private_reflection: bool,
    /// TLS on the main address, when configured.
    pub tls: Option<crate::tls::Tls>,
    /// A second listener serving only the health checks, in plaintext without credentials.
    pub health_listener: Option<TcpListener>,
    /// Each authenticated principal's call rate, unless unlimited.
    pub call_rate: Option<crate::auth::CallRate>,
    /// Telemetry: metrics recorded (and served) or not, spans exported or not.
    pub telemetry: ServeTelemetry,
}

/// What the server reports besides its logs.
#[derive(Debug, Default)]
pub struct ServeTelemetry {
    /// Record metrics in the installed Prometheus recorder, and serve them on the listener.
    pub metrics: Option<Metrics>,
    /// The tracer of each call's span, when spans are exported.
    pub tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
}

/// The Prometheus recorder in force and where to serve it.
#[derive(Debug)]
pub struct Metrics {
    /// The installed recorder's handle ([`crate::telemetry::metrics::install`]).
    pub handle: metrics_exporter_prometheus::PrometheusHandle,
    /// `GET /metrics` is served here, if anywhere.
    pub listener: Option<TcpListener>,
}

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The embedded descriptor set could not be served by reflection (a build defect).
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The final flush of the database failed: writes acknowledged so far may not be durable.
    #[error("final flush: {0}")]
    Flush(#[from] StoreError),
}

/// The transport settings every server of this service uses, set explicitly because tonic's
/// defaults leave them open. The benchmark serves its baseline with the same settings.
/// Connections come from [`transport::incoming`], which sets `TCP_NODELAY` on each.
pub fn server_builder() -> Server<Stack<DecodeErrorsLayer, Identity>> {
    configured(Server::builder()).layer(DecodeErrorsLayer)
}

/// [`server_builder`] with `calls` outermost, so that it sees each call's status as the client
/// will (after [`DecodeErrorsLayer`] mapped it).
pub fn observed_server_builder(
    calls: CallsLayer,
) -> Server<Stack<DecodeErrorsLayer, Stack<CallsLayer, Identity>>> {
    configured(Server::builder().layer(calls)).layer(DecodeErrorsLayer)
}

fn configured<L>(server: Server<L>) -> Server<L> {
    server
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
        .http2_max_pending_accept_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .tcp_nodelay(true)
}

/// The encoded descriptor sets of every service served: the methods the metrics know.
pub const SERVED: &[&[u8]] = &[
    api::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// Serves on `listener` until `shutdown` completes, then drains and flushes.
///
/// Shutdown order: every service reports NOT_SERVING (so load balancers stop sending), the
/// listener stops accepting, in-flight calls get `shutdown_grace` to finish, and the database is
/// flushed; a failed flush is an error, never ignored.
pub async fn run(
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    // Tells streams that follow changes to end, so that draining does not wait for them.
    let (stop_streams, streams_stop) = watch::channel(false);
    health
        .set_serving::<LicensingServiceServer<Licensing>>()
        .await;
    health
        .set_serving::<IngestionServiceServer<Ingestion>>()
        .await;
    let streams = Streams::default();
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let clock_moved = Arc::new(crate::ingest::ClockMoves::default());
    // The calls' store operations, which the background work of ingestion steps aside for.
    let foreground = Arc::new(crate::foreground::Foreground::default());
    let handlers = Licensing::new(
        options.prices.clone(),
        options.store.clone(),
        health.clone(),
        streams_stop.clone(),
        streams.clone(),
        options.authentication.is_on(),
    )
    .on_clock_moved(clock_moved.clone())
    .in_foreground(foreground.clone());
    let usage_changes = handlers.usage_changes();
    let licensing = LicensingServiceServer::new(handlers)
        .max_decoding_message_size(MAX_DECODING_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_ENCODING_MESSAGE_BYTES);
    let liveness = Arc::new(Liveness::default());
    tokio::spawn(liveness.clone().report(health.clone(), health::STALL));
    let ingestion = IngestionServiceServer::new(Ingestion::start(
        options.store.clone(),
        options.prices.clone(),
        (health.clone(), liveness),
        streams_stop.clone(),
        (
            options.dedupe_retention_days,
            clock_moved,
            Some(usage_changes),
            foreground,
        ),
        streams.clone(),
        options.authentication.is_on(),
    ))
    .max_decoding_message_size(MAX_DECODING_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_ENCODING_MESSAGE_BYTES);

    let stopping = Arc::new(Notify::new());
    let stopped_serving = Arc::new(Notify::new());
    let signal = {
        let stopping = stopping.clone();
        let health = health.clone();
        async move {
            shutdown.await;
            let _ = stop_streams.send(true);
            tracing::info!("shutting down: reporting NOT_SERVING and draining calls");
            health
                .set_not_serving::<LicensingServiceServer<Licensing>>()
                .await;
            health
                .set_not_serving::<IngestionServiceServer<Ingestion>>()
                .await;
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            // notify_one keeps a permit, so the grace timer starts even if it is not polled yet.
            stopping.notify_one();
        }
    };
    let incoming = transport::incoming_tls(
        listener,
        options.connections,
        options.tls.as_ref().map(|tls| tls.0.clone()),
    );
    options.authentication.watch();
    if let Some(rate) = &options.call_rate {
        rate.forget_idle();
    }
    // Probes get their own plaintext port when the main one needs TLS or credentials; it serves
    // the same health states, and ends with the process.
    // Reflection too, so that grpcurl finds the health service there.
    let health_only = match options.health_listener {
        None => None,
        Some(listener) => {
            let incoming = transport::incoming(listener, options.connections);
            Some(tokio::spawn(
                server_builder()
                    .add_service(health_service.clone())
                    .add_service(reflection().build_v1()?)
                    .add_service(reflection().build_v1alpha()?)
                    .serve_with_incoming(incoming),
            ))
        }
    };
    if !options.authentication.is_on() {
        tracing::warn!(
            "authentication is off: every caller has every right on every account; configure --api-keys before serving anything but this machine"
        );
    }
    let calls = CallsLayer::new(
        SERVED,
        options.telemetry.metrics.is_some(),
        options.telemetry.tracer.clone(),
    );
    if options.telemetry.metrics.is_some() {
        tokio::spawn(refresh_seat_gauges(options.store.clone()));
    }
    let metrics_server = options
        .telemetry
        .metrics
        .and_then(|metrics| {
            let listener = metrics.listener?;
            Some((metrics.handle, listener))
        })
        .map(|(handle, listener)| {
            let before = scrape_gauges(options.store.clone(), streams.clone());
            let stopped = stopped_serving.clone();
            tokio::spawn(async move {
                let stop = async move { stopped.notified().await };
                if let Err(e) = telemetry::metrics::serve(listener, handle, before, stop).await {
                    tracing::error!(error = %e, "serving metrics failed");
                }
            })
        });
    let serve = observed_server_builder(calls)
        .layer(AuthLayer::new(
            options.authentication.clone(),
            options.private_reflection,
            options.call_rate.clone(),
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(licensing)
        .add_service(ingestion)
        .serve_with_incoming_shutdown(incoming, signal);
    let grace = async {
        stopping.notified().await;
        tokio::time::sleep(options.shutdown_grace).await;
    };
    tokio::select! {
        served = serve => served?,
        () = grace => tracing::warn!(
            grace = ?options.shutdown_grace,
            "calls still running after the shutdown grace period are cut off"
        ),
    }
    if let Some(health_only) = health_only {
        health_only.abort();
    }
    // Metrics stay up while calls drain, and go with the listener.
    stopped_serving.notify_one();
    if let Some(metrics_server) = metrics_server {
        let _ = metrics_server.await;
    }
    options.store.flush().await?;
    tracing::info!(path = %options.store.path().display(), "database flushed; stopped");
    Ok(())
}

/// Reflection over every service served, both reflection versions included: each version's
/// server must describe the other too, or clients of one would not see the other in `list`.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
}

/// The gauges read at each scrape: the database's size on disk, whether storage failed, and
/// the streams open.
fn scrape_gauges(store: Store, streams: Streams) -> telemetry::metrics::BeforeScrape {
    Arc::new(move || {
        if let Ok(bytes) = store.size_on_disk() {
            telemetry::metrics::set_gauge("licensing_database_bytes", bytes as f64);
        }
        telemetry::metrics::set_gauge(
            "licensing_storage_failed",
            if store.has_failed() { 1.0 } else { 0.0 },
        );
        telemetry::metrics::set_gauge("licensing_open_streams", streams.open() as f64);
    })
}

/// How often the seat gauges are summed again.
const SEAT_GAUGES_INTERVAL: Duration = Duration::from_secs(30);

/// Sets `licensing_seats{product, state}` (bought, in use: summed over the accounts that are not
/// sandboxes) and `licensing_accounts` every [`SEAT_GAUGES_INTERVAL`], on the blocking pool:
/// one pass over the accounts, never over members, and never on a scrape's path.
async fn refresh_seat_gauges(store: Store) {
    let mut ticks = tokio::time::interval(SEAT_GAUGES_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let summing = store.clone();
        match tokio::task::spawn_blocking(move || summing.seat_totals()).await {
            Ok(Ok((bought, in_use, accounts))) => {
                for product in licensing_core::Product::ALL {
                    for (state, seats) in [("bought", &bought), ("in_use", &in_use)] {
                        metrics::gauge!("licensing_seats", "product" => product.name(), "state" => state)
                            .set(f64::from(seats.get(product)));
                    }
                }
                metrics::gauge!("licensing_accounts").set(accounts as f64);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "summing the seats for the metrics failed"),
            Err(e) => tracing::warn!(error = %e, "summing the seats for the metrics failed"),
        }
    }
}
