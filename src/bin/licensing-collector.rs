//! `licensing-collector`: follows event sources, spools durably, uploads to `licensing`. Stops
//! gracefully on SIGINT or SIGTERM: sources stop, in-flight batches get the grace period to be
//! acknowledged, the spool is flushed.

use std::{process::ExitCode, sync::Arc};

use anyhow::Context as _;
use clap::Parser as _;
use licensing::{
    api::ingestion_service_server::IngestionServiceServer,
    collector::{
        config::{Args, Config},
        local::LocalIngestion,
        metrics::{self, Metrics},
        spool::Spool,
        tail, upload,
    },
    config::LogFormat,
    telemetry,
};
use tokio::sync::watch;

fn main() -> ExitCode {
    let config = match Config::from_args(Args::parse()) {
        Ok(config) => config,
        Err(problems) => {
            eprintln!("licensing-collector: {problems}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config.log, LogFormat::Text);
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run(config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let spool = Spool::open(&config.spool_dir).context("opening the spool")?;
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop) = watch::channel(false);

    let mut sources = tokio::task::JoinSet::new();
    for path in &config.follow {
        sources.spawn(tail::follow(
            path.clone(),
            spool.clone(),
            metrics.clone(),
            config.source.clone(),
            stop.clone(),
        ));
    }
    if config.stdin {
        sources.spawn(tail::stdin(
            spool.clone(),
            metrics.clone(),
            config.source.clone(),
            stop.clone(),
        ));
    }
    let mut address = None;
    if let Some(listen) = config.listen {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding --listen {listen}"))?;
        address = Some(listener.local_addr()?);
        let service =
            IngestionServiceServer::new(LocalIngestion::new(spool.clone(), metrics.clone()));
        let mut stopped = stop.clone();
        tokio::spawn(
            licensing::server::server_builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    },
                ),
        );
    }
    if let Some(listen) = config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding --metrics-listen {listen}"))?;
        tokio::spawn(metrics::serve(listener, metrics.clone(), spool.clone()));
    }
    tracing::info!(
        spool = %config.spool_dir.display(),
        follow = ?config.follow,
        stdin = config.stdin,
        address = %address.map_or("-".to_owned(), |a| a.to_string()),
        licensing = %config.upload.endpoint,
        "licensing-collector started"
    );
    let uploader = tokio::spawn(upload::upload(
        config.upload.clone(),
        spool.clone(),
        metrics.clone(),
        stop.clone(),
    ));

    tokio::select! {
        _ = terminate.recv() => {},
        _ = interrupt.recv() => {},
    }
    tracing::info!("stopping: sources first, then in-flight batches");
    let _ = stop_tx.send(true);
    while let Some(source) = sources.join_next().await {
        if let Ok(Err(e)) = source {
            tracing::error!(error = %e, "a source failed");
        }
    }
    if tokio::time::timeout(config.shutdown_grace, uploader)
        .await
        .is_err()
    {
        tracing::warn!(grace = ?config.shutdown_grace, "batches still unacknowledged stay in the spool for the next start");
    }
    spool.flush().await.context("flushing the spool")?;
    tracing::info!(spooled = spool.depth(), "spool flushed; stopped");
    Ok(())
}
