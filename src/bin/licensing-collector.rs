//! `licensing-collector`: follows event sources, spools durably, uploads to `licensing`.
//!
//! Shutdown on SIGINT or SIGTERM: sources stop (the chunk being spooled is finished), the local
//! endpoint stops taking batches, in-flight batches get the grace period to be acknowledged, and
//! the spool is flushed. A second signal cuts the grace short. A SIGKILL at any moment leaves the
//! spool consistent: every write is a transaction.

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::Parser as _;
use licensing::{
    collector::{
        config::{Args, Config},
        run,
    },
    telemetry,
};

fn main() -> ExitCode {
    let config = match Config::from_args(
        Args::parse(),
        std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()),
    ) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("licensing-collector: {errors}");
            return ExitCode::from(2);
        }
    };
    let telemetry = telemetry::init(&config.log_filter, config.log_format, "licensing-collector");
    let runtime = match tokio::runtime::Runtime::new().context("starting the runtime") {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("{e:#}");
            telemetry.shutdown();
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = shutdown_signals()?;
        run(config, shutdown).await.map_err(anyhow::Error::from)
    });
    // Reading standard input blocks a thread that cannot be interrupted: do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    if let Err(e) = &result {
        tracing::error!("{e:#}");
    }
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// Registers for SIGINT and SIGTERM before anything starts, and returns a receiver of each
/// signal's arrival (the first starts the shutdown, a second cuts the grace short).
fn shutdown_signals() -> anyhow::Result<tokio::sync::mpsc::Receiver<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = terminate.recv() => {},
                _ = interrupt.recv() => {},
            }
            if tx.send(()).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}
