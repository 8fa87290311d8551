//! `licensing-collector`: the sidecar that picks up usage events where workloads emit them (a
//! followed JSON-lines file, standard input, a local gRPC endpoint), keeps them in a durable
//! local spool, and streams them to `licensing`'s `Ingest`. The event format and the guarantees
//! are documented in `docs/events.md`.
//!
//! Nothing acknowledged to a source is lost: a file's lines are spooled together with the file's
//! checkpoint in one transaction, a pushed batch is answered after the spool is flushed, and an
//! event leaves the spool only once `licensing` acknowledged it (which it does once durable).
//! Events may be sent twice after a crash or a reconnect; the service counts each once.

pub mod backoff;
pub mod config;
pub mod line;
pub mod local;
pub mod metrics;
pub mod spool;
pub mod tail;
pub mod upload;

use std::{net::SocketAddr, sync::Arc};

use tokio::{
    net::TcpListener,
    sync::{mpsc, watch},
    task::{JoinError, JoinHandle, JoinSet},
    time::Instant,
};

use crate::transport::{ConnectionLimits, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS};

use self::{
    config::Config,
    metrics::Metrics,
    spool::{Spool, SpoolError},
    tail::{Follow, Stdin},
};

/// Why the collector stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// The spool could not be opened, written, read or flushed.
    #[error("{0}")]
    Spool(#[from] SpoolError),
    /// An address could not be bound.
    #[error("binding {flag} {address}: {source}")]
    Bind {
        /// The flag that gave the address.
        flag: &'static str,
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The local endpoint's server failed.
    #[error("local endpoint: {0}")]
    Local(#[from] tonic::transport::Error),
    /// A task that runs until the stop ended before it (a defect).
    #[error("the {task} stopped unexpectedly")]
    Ended {
        /// Which task.
        task: &'static str,
    },
    /// A task panicked (a defect).
    #[error("{task} task failed: {source}")]
    Task {
        /// Which task.
        task: &'static str,
        /// Its failure.
        source: JoinError,
    },
}

async fn bind(flag: &'static str, address: SocketAddr) -> Result<TcpListener, CollectorError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| CollectorError::Bind {
            flag,
            address,
            source,
        })
}

/// Runs the collector until the first message on `signals` (SIGINT or SIGTERM) or a failure,
/// then shuts down gracefully: sources stop, the local endpoint stops, in-flight batches get the
/// grace period (cut short by a second signal), and the spool is flushed.
pub async fn run(config: Config, mut signals: mpsc::Receiver<()>) -> Result<(), CollectorError> {
    let spool = Spool::open(&config.spool_dir)?;
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop) = watch::channel(false);

    // Bind first: a taken port fails the start before any event is read.
    let local_listener = match config.listen {
        Some(address) => Some(bind("--listen", address).await?),
        None => None,
    };
    let metrics_listener = match config.metrics_listen {
        Some(address) => Some(bind("--metrics-listen", address).await?),
        None => None,
    };
    if metrics_listener.is_some() {
        // Before any source or upload starts: what they count before the recorder is installed
        // would be lost.
        if let Err(problem) = crate::telemetry::metrics::install_once() {
            tracing::error!("metrics are not recorded: {problem}");
        }
    }
    let local_address = local_listener.as_ref().and_then(|l| l.local_addr().ok());
    let metrics_address = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());

    let mut sources = JoinSet::new();
    for path in &config.follow {
        let follow = Follow {
            path: path.clone(),
            spool: spool.clone(),
            metrics: metrics.clone(),
            source: config.source.clone(),
        };
        sources.spawn(follow.run(stop.clone()));
    }
    if config.stdin {
        let stdin = Stdin {
            spool: spool.clone(),
            metrics: metrics.clone(),
            source: config.source.clone(),
        };
        sources.spawn(stdin.run(stop.clone()));
    }
    let mut local: Option<JoinHandle<Result<(), tonic::transport::Error>>> =
        local_listener.map(|listener| {
            // Workloads connect here: silent connections must not exhaust the file descriptors.
            let limits = ConnectionLimits::fit(DEFAULT_MAX_CONNECTIONS, DEFAULT_HANDSHAKE_TIMEOUT);
            tokio::spawn(local::serve(
                listener,
                limits,
                spool.clone(),
                metrics.clone(),
                stop.clone(),
            ))
        });
    let metrics_server = metrics_listener.map(|listener| {
        tokio::spawn(metrics::serve(
            listener,
            metrics.clone(),
            spool.clone(),
            stop.clone(),
        ))
    });
    tracing::info!(
        spool_dir = %config.spool_dir.display(),
        follow = ?config.follow,
        stdin = config.stdin,
        address = local_address.map(tracing::field::display),
        metrics = metrics_address.map(tracing::field::display),
        licensing = %config.upload.endpoint,
        source = %config.source,
        spooled = spool.depth(),
        "licensing-collector started"
    );
    let mut uploader = Some(tokio::spawn(upload::upload(
        config.upload.clone(),
        spool.clone(),
        metrics.clone(),
        stop.clone(),
    )));

    // Until a signal or a failure. A source that ends (standard input at its end) is not one.
    let mut failure: Option<CollectorError> = None;
    while failure.is_none() {
        tokio::select! {
            _ = signals.recv() => break,
            Some(ended) = sources.join_next() => failure = source_failure(ended),
            Some(ended) = async { Some(uploader.as_mut()?.await) }, if uploader.is_some() => {
                uploader = None;
                failure = Some(task_failure("uploader", ended));
            }
            Some(ended) = async { Some(local.as_mut()?.await) }, if local.is_some() => {
                local = None;
                failure = Some(task_failure("local endpoint", ended));
            }
        }
    }
    match &failure {
        None => tracing::info!(
            spooled = spool.depth(),
            "stopping: sources first, then the local endpoint, then in-flight batches"
        ),
        Some(e) => tracing::error!(error = %e, "stopping after a failure"),
    }
    let _ = stop_tx.send(true);
    let deadline = Instant::now() + config.shutdown_grace;
    // Sources only finish the chunk they are spooling: short, and needed for a clean checkpoint.
    while let Some(ended) = sources.join_next().await {
        if let Some(e) = source_failure(ended) {
            tracing::error!(error = %e, "a source failed while stopping");
        }
    }
    if let Some(local) = local
        && let Some(Ok(Err(e))) = until(deadline, &mut signals, local).await
    {
        tracing::warn!(error = %e, "the local endpoint failed while stopping");
    }
    if let Some(uploader) = uploader {
        match until(deadline, &mut signals, uploader).await {
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err(e))) => tracing::error!(error = %e, "uploading failed while stopping"),
            Some(Err(e)) => tracing::error!(error = %e, "the uploader failed while stopping"),
            None => tracing::warn!(
                grace = ?config.shutdown_grace,
                "batches still unacknowledged stay in the spool for the next start"
            ),
        }
    }
    if let Some(server) = metrics_server {
        // It stops with the others (`stop` is true by now); a scrape in progress may finish.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), server).await;
    }
    spool.flush().await?;
    tracing::info!(spooled = spool.depth(), path = %spool.path().display(), "spool flushed; stopped");
    failure.map_or(Ok(()), Err)
}

/// The failure of a task that ran until the stop but ended before it.
fn task_failure<E: Into<CollectorError>>(
    task: &'static str,
    ended: Result<Result<(), E>, JoinError>,
) -> CollectorError {
    match ended {
        Ok(Ok(())) => CollectorError::Ended { task },
        Ok(Err(e)) => e.into(),
        Err(source) => CollectorError::Task { task, source },
    }
}

/// A source's failure, if it ended with one.
fn source_failure(ended: Result<Result<(), SpoolError>, JoinError>) -> Option<CollectorError> {
    match ended {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.into()),
        Err(source) => Some(CollectorError::Task {
            task: "source",
            source,
        }),
    }
}

/// Waits for `task` until `deadline` or another signal; `None` when it was given up on (and is
/// then aborted).
async fn until<T>(
    deadline: Instant,
    signals: &mut mpsc::Receiver<()>,
    mut task: JoinHandle<T>,
) -> Option<Result<T, JoinError>> {
    let ended = tokio::select! {
        ended = &mut task => Some(ended),
        () = tokio::time::sleep_until(deadline) => None,
        Some(()) = signals.recv() => {
            tracing::warn!("a second signal: not waiting any longer");
            None
        }
    };
    if ended.is_none() {
        task.abort();
    }
    ended
}
