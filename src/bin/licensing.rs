//! The `licensing` gRPC service: parses configuration, opens the database, serves until SIGINT or
//! SIGTERM, then shuts down gracefully.

use std::{process::ExitCode, sync::Arc};

use anyhow::Context as _;
use clap::Parser as _;
use licensing::{
    config::{Args, Command, Config, Healthcheck, NewKey},
    health,
    server::{self, ServeOptions},
    telemetry,
    transport::ConnectionLimits,
};
use licensing_store::{Store, StoreConfig};

/// mimalloc rather than glibc's malloc, whose free lists a long run of ingestion and compaction
/// leaves fragmented enough to double a month's read (docs/benchmarks.md, History, 2026-12-03).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let mut args = Args::parse();
    match args.command.take() {
        Some(Command::NewKey(key)) => return new_key(&key),
        Some(Command::Healthcheck(check)) => return healthcheck(&check),
        None => {}
    }
    let config = match Config::from_args(
        args,
        std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()),
    ) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("licensing: {errors}");
            return ExitCode::from(2);
        }
    };
    let telemetry = telemetry::init(&config.log_filter, config.log_format, "licensing");
    let served = serve(config, telemetry.tracer());
    if let Err(e) = &served {
        tracing::error!("{e:#}");
    }
    telemetry.shutdown();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// `licensing new-key`: the secret goes to standard output's first line; the file entry is
/// appended to `--keys-file`, or printed after the secret.
#[allow(clippy::print_stdout)]
fn new_key(key: &NewKey) -> ExitCode {
    let created = key
        .create()
        .and_then(|(secret, entry)| match &key.keys_file {
            Some(path) => key.append(path, &entry).map(|()| (secret, None)),
            None => Ok((secret, Some(entry))),
        });
    match created {
        Ok((secret, entry)) => {
            println!("{secret}");
            if let Some(entry) = entry {
                println!();
                println!("# Add this to the --api-keys file; the secret above is shown only once.");
                print!("{entry}");
            }
            ExitCode::SUCCESS
        }
        Err(problem) => {
            eprintln!("licensing new-key: {problem}");
            ExitCode::from(2)
        }
    }
}

/// `licensing healthcheck`: one line on standard output, exit 0 only when SERVING.
#[allow(clippy::print_stdout)]
fn healthcheck(check: &Healthcheck) -> ExitCode {
    if !(1..=300).contains(&check.timeout_seconds) {
        eprintln!(
            "licensing healthcheck: --timeout-seconds {}: must be from 1 to 300",
            check.timeout_seconds
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("licensing healthcheck: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = std::time::Duration::from_secs(check.timeout_seconds);
    let asked = runtime.block_on(health::check(&check.address, &check.service, timeout));
    let service = &check.service;
    match asked {
        Ok(health::Checked::Serving) => {
            println!("{} service {service:?}: SERVING", check.address);
            ExitCode::SUCCESS
        }
        Ok(health::Checked::Not(status)) => {
            println!("{} service {service:?}: {status}", check.address);
            ExitCode::FAILURE
        }
        Err(problem) => {
            eprintln!("licensing healthcheck: {problem}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn serve(
    config: Config,
    tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    // Before the database opens its files: the raised open-files limit is what the cap fits in.
    let connections = ConnectionLimits::fit(config.max_connections, config.handshake_timeout);
    let store = Store::open(&StoreConfig {
        path: config.data_dir.clone(),
        cache_capacity_bytes: config.cache_capacity_bytes,
    })
    .context("opening the database")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding --listen {}", config.listen))?;
    let address = listener.local_addr().context("reading the bound address")?;
    let metrics = match config.metrics_listen {
        None => None,
        Some(address) => {
            let handle = telemetry::metrics::install_once().map_err(anyhow::Error::msg)?;
            telemetry::metrics::describe_server();
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("binding --metrics-listen {address}"))?;
            let bound = listener.local_addr().context("reading the bound address")?;
            tracing::info!(address = %bound, "metrics listening (GET /metrics, plaintext)");
            Some(server::Metrics {
                handle,
                listener: Some(listener),
            })
        }
    };
    let health_listener = match config.health_listen {
        None => None,
        Some(health) => {
            let listener = tokio::net::TcpListener::bind(health)
                .await
                .with_context(|| format!("binding --health-listen {health}"))?;
            let bound = listener.local_addr().context("reading the bound address")?;
            tracing::info!(address = %bound, "health checks listening (plaintext, no credentials)");
            Some(listener)
        }
    };
    tracing::info!(
        %address,
        tls = config.tls.is_some(),
        data_dir = %config.data_dir.display(),
        price_list = config.price_list.name(),
        price_list_version = config.price_list.version(),
        "licensing listening"
    );
    let options = ServeOptions {
        prices: Arc::new(config.price_list),
        store,
        shutdown_grace: config.shutdown_grace,
        dedupe_retention_days: config.dedupe_retention_days,
        connections,
        authentication: config.authentication,
        private_reflection: config.private_reflection,
        tls: config.tls,
        health_listener,
        call_rate: config.call_rate,
        telemetry: server::ServeTelemetry { metrics, tracer },
    };
    server::run(listener, options, shutdown).await?;
    Ok(())
}

/// Registers for SIGINT and SIGTERM (what Kubernetes sends before killing a pod) at once, and
/// returns a future that completes on either. Registering before anything is served matters: a
/// signal that arrives before the server first polls its shutdown future is kept, not fatal.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = terminate.recv() => {},
                _ = interrupt.recv() => {},
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
