//! The collector's configuration: flags and `LICENSING_COLLECTOR_*` variables, checked at once,
//! every problem named with its flag and value.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;

use super::upload::UploadOptions;

/// Command line of `licensing-collector`.
#[derive(Debug, Parser)]
#[command(
    name = "licensing-collector",
    about = "Spools usage events and streams them to licensing, each counted once"
)]
pub struct Args {
    /// URL of the licensing service.
    #[arg(
        long,
        env = "LICENSING_COLLECTOR_LICENSING",
        default_value = "http://127.0.0.1:50051"
    )]
    pub licensing: String,
    /// Folder of the durable spool (its own database; one collector per folder).
    #[arg(
        long,
        env = "LICENSING_COLLECTOR_SPOOL_DIR",
        default_value = "./collector-spool"
    )]
    pub spool_dir: PathBuf,
    /// A JSON-lines file to follow like `tail -F` (repeatable).
    #[arg(
        long = "follow",
        env = "LICENSING_COLLECTOR_FOLLOW",
        value_delimiter = ','
    )]
    pub follow: Vec<PathBuf>,
    /// Read JSON lines from standard input too.
    #[arg(long, env = "LICENSING_COLLECTOR_STDIN")]
    pub stdin: bool,
    /// Serve licensing.v1.IngestionService here for workloads to push to, e.g. 127.0.0.1:50052.
    #[arg(long, env = "LICENSING_COLLECTOR_LISTEN")]
    pub listen: Option<String>,
    /// Serve Prometheus metrics on GET /metrics here, e.g. 127.0.0.1:9464.
    #[arg(long, env = "LICENSING_COLLECTOR_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Source of events whose line names none.
    #[arg(long, env = "LICENSING_COLLECTOR_SOURCE", default_value = "collector")]
    pub source: String,
    /// Events per batch (1 to 1000).
    #[arg(long, env = "LICENSING_COLLECTOR_BATCH_SIZE", default_value_t = 100)]
    pub batch_size: usize,
    /// Batches in flight, unacknowledged (1 to 1024).
    #[arg(long, env = "LICENSING_COLLECTOR_IN_FLIGHT", default_value_t = 16)]
    pub in_flight: usize,
    /// Longest wait between reconnection attempts, in milliseconds (at least 100).
    #[arg(
        long,
        env = "LICENSING_COLLECTOR_BACKOFF_MAX_MS",
        default_value_t = 10_000
    )]
    pub backoff_max_ms: u64,
    /// Time given to in-flight batches after SIGTERM, in seconds.
    #[arg(
        long,
        env = "LICENSING_COLLECTOR_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 10
    )]
    pub shutdown_grace_seconds: u64,
    /// Log filter (`tracing` directives).
    #[arg(long, env = "LICENSING_COLLECTOR_LOG", default_value = "info")]
    pub log: String,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to upload and how.
    pub upload: UploadOptions,
    /// The spool's folder.
    pub spool_dir: PathBuf,
    /// Files to follow.
    pub follow: Vec<PathBuf>,
    /// Read standard input.
    pub stdin: bool,
    /// The local endpoint's address.
    pub listen: Option<SocketAddr>,
    /// The metrics endpoint's address.
    pub metrics_listen: Option<SocketAddr>,
    /// Default source.
    pub source: String,
    /// Grace after SIGTERM.
    pub shutdown_grace: Duration,
    /// Log filter.
    pub log: String,
}

impl Config {
    /// Checks `args`, reporting every problem at once.
    pub fn from_args(args: Args) -> Result<Config, String> {
        let mut problems = Vec::new();
        if !(args.licensing.starts_with("http://") || args.licensing.starts_with("https://")) {
            problems.push(format!(
                "--licensing {:?}: must be an http:// or https:// URL",
                args.licensing
            ));
        }
        if !(1..=1000).contains(&args.batch_size) {
            problems.push(format!(
                "--batch-size {}: must be from 1 to 1000",
                args.batch_size
            ));
        }
        if !(1..=1024).contains(&args.in_flight) {
            problems.push(format!(
                "--in-flight {}: must be from 1 to 1024",
                args.in_flight
            ));
        }
        if args.backoff_max_ms < 100 {
            problems.push(format!(
                "--backoff-max-ms {}: must be at least 100",
                args.backoff_max_ms
            ));
        }
        let mut address = |flag: &str, value: &Option<String>| {
            value.as_ref().and_then(|v| match v.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    problems.push(format!(
                        "{flag} {v:?}: must be an address such as 127.0.0.1:50052"
                    ));
                    None
                }
            })
        };
        let listen = address("--listen", &args.listen);
        let metrics_listen = address("--metrics-listen", &args.metrics_listen);
        if args.source.is_empty() || args.source.contains('/') {
            problems.push(format!(
                "--source {:?}: must be a non-empty name without '/'",
                args.source
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&args.log).is_err() {
            problems.push(format!("--log {:?}: not a valid log filter", args.log));
        }
        if args.follow.is_empty() && !args.stdin && args.listen.is_none() {
            problems
                .push("no source: give --follow <file>, --stdin or --listen <address>".to_owned());
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(Config {
            upload: UploadOptions {
                endpoint: args.licensing,
                batch_size: args.batch_size,
                in_flight: args.in_flight,
                backoff_max: Duration::from_millis(args.backoff_max_ms),
            },
            spool_dir: args.spool_dir,
            follow: args.follow,
            stdin: args.stdin,
            listen,
            metrics_listen,
            source: args.source,
            shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
            log: args.log,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_value_is_named_at_once() {
        let args = Args::parse_from([
            "licensing-collector",
            "--licensing",
            "localhost:50051",
            "--batch-size",
            "5000",
            "--listen",
            "here",
        ]);
        let error = Config::from_args(args).expect_err("accepted");
        assert!(error.contains("--licensing \"localhost:50051\""), "{error}");
        assert!(error.contains("--batch-size 5000"), "{error}");
        assert!(error.contains("--listen \"here\""), "{error}");
    }

    #[test]
    fn a_source_is_required() {
        let error =
            Config::from_args(Args::parse_from(["licensing-collector"])).expect_err("no source");
        assert!(error.contains("no source"), "{error}");
    }
}
