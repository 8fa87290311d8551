//! The `licensing` gRPC service: parses configuration, opens the database, serves until SIGINT or
//! SIGTERM, then shuts down gracefully.

use std::{process::ExitCode, sync::Arc};

use anyhow::Context as _;
use clap::Parser as _;
use licensing::{
    config::{Args, Config},
    server::{self, ServeOptions},
    telemetry,
};
use licensing_store::{Store, StoreConfig};

fn main() -> ExitCode {
    let config = match Config::from_args(
        Args::parse(),
        std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()),
    ) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("licensing: {errors}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config.log_filter, config.log_format);
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn serve(config: Config) -> anyhow::Result<()> {
    let store = Store::open(&StoreConfig {
        path: config.data_dir.clone(),
        cache_capacity_bytes: config.cache_capacity_bytes,
    })
    .context("opening the database")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding --listen {}", config.listen))?;
    let address = listener.local_addr().context("reading the bound address")?;
    tracing::info!(
        %address,
        data_dir = %config.data_dir.display(),
        price_list = config.price_list.name(),
        price_list_version = config.price_list.version(),
        "licensing listening"
    );
    let options = ServeOptions {
        prices: Arc::new(config.price_list),
        store,
        shutdown_grace: config.shutdown_grace,
    };
    server::run(listener, options, shutdown_signal()).await?;
    Ok(())
}

/// Completes on SIGINT or SIGTERM (what Kubernetes sends before killing a pod).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        () = terminate => {},
    }
}
