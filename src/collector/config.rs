//! Configuration of `licensing-collector`: flags and `LICENSING_COLLECTOR_*` environment
//! variables, parsed once into a typed [`Config`]. Every bad value is reported at once, each
//! naming its flag, variable and value, and an unknown `LICENSING_COLLECTOR_*` variable is refused
//! (a typo must not silently fall back to a default). Mirrors `crate::config`.

use std::{collections::BTreeSet, net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;

use super::upload::UploadOptions;
pub use crate::config::ConfigErrors;
use crate::{config::LogFormat, ingest::MAX_EVENTS_PER_BATCH};

/// Flags of `licensing-collector`; each can also come from its environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "licensing-collector",
    version,
    about = "Spools usage events and streams them to licensing, each counted once"
)]
pub struct Args {
    /// URL of the licensing service (plaintext HTTP/2: this build has no TLS).
    #[arg(
        long,
        env = "LICENSING_COLLECTOR_LICENSING",
        default_value = "http://127.0.0.1:50051"
    )]
    licensing: String,
    /// Folder of the durable spool, created when missing (one collector per folder).
    #[arg(
        long,
        env = "LICENSING_COLLECTOR_SPOOL_DIR",
        default_value = "./collector-spool"
    )]
    spool_dir: PathBuf,
    /// A JSON-lines file to follow like `tail -F` (repeatable; comma-separated in the variable).
    #[arg(
        long = "follow",
        value_name = "PATH",
        env = "LICENSING_COLLECTOR_FOLLOW",
        value_delimiter = ','
    )]
    follow: Vec<PathBuf>,
    /// Read JSON lines from standard input too (no checkpoint: see docs/events.md).
    #[arg(long, env = "LICENSING_COLLECTOR_STDIN")]
    stdin: bool,
    /// Serve licensing.v1.IngestionService here for workloads to push to, e.g. 127.0.0.1:50052;
    /// port 0 picks a free port (the bound address is logged). OUTCOME_APPLIED there means
    /// "accepted into the durable spool".
    #[arg(long, value_name = "ADDRESS", env = "LICENSING_COLLECTOR_LISTEN")]
    listen: Option<String>,
    /// Serve Prometheus metrics on GET /metrics here, e.g. 127.0.0.1:9464.
    #[arg(
        long,
        value_name = "ADDRESS",
        env = "LICENSING_COLLECTOR_METRICS_LISTEN"
    )]
    metrics_listen: Option<String>,
    /// Source of events whose line names none. Keep it stable: it is half of each event's
    /// identity, so a file read again under another source would be counted again.
    #[arg(long, env = "LICENSING_COLLECTOR_SOURCE", default_value = "collector")]
    source: String,
    /// Events per batch sent to licensing (1 to 1000).
    #[arg(long, env = "LICENSING_COLLECTOR_BATCH_SIZE", default_value = "100")]
    batch_size: String,
    /// Batches sent and not yet acknowledged, at most (1 to 64).
    #[arg(long, env = "LICENSING_COLLECTOR_IN_FLIGHT", default_value = "16")]
    in_flight: String,
    /// Longest wait between reconnection attempts, in milliseconds (100 to 600000).
    #[arg(
        long,
        env = "LICENSING_COLLECTOR_BACKOFF_MAX_MS",
        default_value = "10000"
    )]
    backoff_max_ms: String,
    /// Seconds in-flight batches get to be acknowledged after SIGINT or SIGTERM.
    #[arg(
        long,
        env = "LICENSING_COLLECTOR_SHUTDOWN_GRACE_SECONDS",
        default_value = "10"
    )]
    shutdown_grace_seconds: String,
    /// File holding the API key to present to `licensing` (`lk_…`, as `licensing new-key` printed
    /// it), when `licensing` requires authentication. The key needs the ingest right.
    #[arg(long, value_name = "PATH", env = "LICENSING_COLLECTOR_API_KEY_FILE")]
    api_key_file: Option<PathBuf>,
    /// Log filter, in `tracing` directive syntax (e.g. `info,licensing=debug`).
    #[arg(long, env = "LICENSING_COLLECTOR_LOG", default_value = "info")]
    log: String,
    /// Log format: `text` or `json`.
    #[arg(long, env = "LICENSING_COLLECTOR_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

/// Environment variables the collector reads; any other `LICENSING_COLLECTOR_*` is an error.
const KNOWN_VARIABLES: &[&str] = &[
    "LICENSING_COLLECTOR_LICENSING",
    "LICENSING_COLLECTOR_SPOOL_DIR",
    "LICENSING_COLLECTOR_FOLLOW",
    "LICENSING_COLLECTOR_STDIN",
    "LICENSING_COLLECTOR_LISTEN",
    "LICENSING_COLLECTOR_METRICS_LISTEN",
    "LICENSING_COLLECTOR_SOURCE",
    "LICENSING_COLLECTOR_BATCH_SIZE",
    "LICENSING_COLLECTOR_IN_FLIGHT",
    "LICENSING_COLLECTOR_BACKOFF_MAX_MS",
    "LICENSING_COLLECTOR_SHUTDOWN_GRACE_SECONDS",
    "LICENSING_COLLECTOR_API_KEY_FILE",
    "LICENSING_COLLECTOR_LOG",
    "LICENSING_COLLECTOR_LOG_FORMAT",
];

/// The most batches in flight: what `licensing` keeps in flight per stream. More would only
/// wait in its receive buffer.
pub const MAX_IN_FLIGHT: usize = crate::ingest::MAX_BATCHES_IN_FLIGHT;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to upload and how.
    pub upload: UploadOptions,
    /// The spool's folder.
    pub spool_dir: PathBuf,
    /// Files to follow, absolute (their checkpoints are keyed by path).
    pub follow: Vec<PathBuf>,
    /// Whether standard input is read.
    pub stdin: bool,
    /// The local endpoint's address.
    pub listen: Option<SocketAddr>,
    /// The metrics endpoint's address.
    pub metrics_listen: Option<SocketAddr>,
    /// The source of lines that name none.
    pub source: String,
    /// How long in-flight batches may take to be acknowledged at shutdown.
    pub shutdown_grace: Duration,
    /// Log filter directives.
    pub log_filter: String,
    /// Log format.
    pub log_format: LogFormat,
}

/// A whole number from `range`, or a problem naming the flag, its variable and the value.
fn number(
    problems: &mut Vec<String>,
    flag: &str,
    value: &str,
    range: std::ops::RangeInclusive<u64>,
    unit: &str,
) -> Option<u64> {
    match value.parse::<u64>() {
        Ok(n) if range.contains(&n) => Some(n),
        _ => {
            problems.push(format!(
                "--{flag} / {} {value:?}: must be a whole number{unit} from {} to {}",
                variable(flag),
                range.start(),
                range.end()
            ));
            None
        }
    }
}

fn variable(flag: &str) -> String {
    format!(
        "LICENSING_COLLECTOR_{}",
        flag.to_ascii_uppercase().replace('-', "_")
    )
}

impl Config {
    /// Validates parsed flags against the given environment variable names.
    pub fn from_args(
        args: Args,
        environment: impl IntoIterator<Item = String>,
    ) -> Result<Config, ConfigErrors> {
        let mut problems = Vec::new();
        crate::config::unknown_variables(
            &mut problems,
            environment,
            "LICENSING_COLLECTOR_",
            KNOWN_VARIABLES,
            |_| false,
        );
        let licensing = check_licensing(&args.licensing)
            .map_err(|problem| {
                problems.push(format!(
                    "--licensing / LICENSING_COLLECTOR_LICENSING {:?}: {problem}",
                    args.licensing
                ))
            })
            .ok();
        if args.spool_dir.as_os_str().is_empty() {
            problems.push(
                "--spool-dir / LICENSING_COLLECTOR_SPOOL_DIR \"\": must not be empty".to_owned(),
            );
        }
        let mut follow = Vec::new();
        let mut seen = BTreeSet::new();
        for path in &args.follow {
            let named = format!("--follow / LICENSING_COLLECTOR_FOLLOW {:?}", path.display());
            match std::path::absolute(path) {
                // Two followers of one file would share its checkpoint and spool it twice.
                Ok(absolute) if !seen.insert(absolute.clone()) => {
                    problems.push(format!("{named}: given twice"));
                }
                Ok(absolute) => follow.push(absolute),
                Err(e) => problems.push(format!("{named}: {e}")),
            }
        }
        let mut address = |flag: &str, value: &Option<String>| {
            value.as_ref().and_then(|v| match v.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(e) => {
                    problems.push(format!(
                        "--{flag} / {} {v:?}: {e} (expected an address such as 127.0.0.1:50052)",
                        variable(flag)
                    ));
                    None
                }
            })
        };
        let listen = address("listen", &args.listen);
        let metrics_listen = address("metrics-listen", &args.metrics_listen);
        if let Err(problem) = check_source(&args.source) {
            problems.push(format!(
                "--source / LICENSING_COLLECTOR_SOURCE {:?}: {problem}",
                args.source
            ));
        }
        let batch_size = number(
            &mut problems,
            "batch-size",
            &args.batch_size,
            1..=MAX_EVENTS_PER_BATCH as u64,
            "",
        );
        let in_flight = number(
            &mut problems,
            "in-flight",
            &args.in_flight,
            1..=MAX_IN_FLIGHT as u64,
            "",
        );
        let backoff_max_ms = number(
            &mut problems,
            "backoff-max-ms",
            &args.backoff_max_ms,
            100..=600_000,
            " of milliseconds",
        );
        let credential = args.api_key_file.as_ref().and_then(|path| {
            read_api_key(path)
                .map_err(|problem| {
                    problems.push(format!(
                        "--api-key-file / LICENSING_COLLECTOR_API_KEY_FILE {:?}: {problem}",
                        path.display()
                    ))
                })
                .ok()
        });
        let grace_seconds = number(
            &mut problems,
            "shutdown-grace-seconds",
            &args.shutdown_grace_seconds,
            0..=3600,
            " of seconds",
        );
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&args.log) {
            problems.push(format!(
                "--log / LICENSING_COLLECTOR_LOG {:?}: {e}",
                args.log
            ));
        }
        let log_format = match args.log_format.as_str() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            other => {
                problems.push(format!(
                    "--log-format / LICENSING_COLLECTOR_LOG_FORMAT {other:?}: must be \"text\" or \"json\""
                ));
                None
            }
        };
        if args.follow.is_empty() && !args.stdin && args.listen.is_none() {
            problems.push(
                "no source of events: give --follow <PATH>, --stdin or --listen <ADDRESS>"
                    .to_owned(),
            );
        }
        match (
            licensing,
            batch_size,
            in_flight,
            backoff_max_ms,
            grace_seconds,
            log_format,
        ) {
            (
                Some(()),
                Some(batch_size),
                Some(in_flight),
                Some(backoff_max_ms),
                Some(grace_seconds),
                Some(log_format),
            ) if problems.is_empty() => Ok(Config {
                upload: UploadOptions {
                    endpoint: args.licensing,
                    batch_size: batch_size as usize,
                    in_flight: in_flight as usize,
                    backoff_max: Duration::from_millis(backoff_max_ms),
                    credential,
                },
                spool_dir: args.spool_dir,
                follow,
                stdin: args.stdin,
                listen,
                metrics_listen,
                source: args.source,
                shutdown_grace: Duration::from_secs(grace_seconds),
                log_filter: args.log,
                log_format,
            }),
            _ => Err(ConfigErrors(problems)),
        }
    }
}

fn check_licensing(url: &str) -> Result<(), String> {
    let uri: tonic::transport::Uri = url.parse().map_err(|e| format!("{e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(
                "https is not supported (this build has no TLS): use http:// to a local proxy or \
                 mesh sidecar that adds TLS"
                    .to_owned(),
            );
        }
        _ => return Err("must be an http:// URL, e.g. http://licensing:50051".to_owned()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("must name a host".to_owned());
    }
    Ok(())
}

/// The API key in `path`: one line, `lk_` and hex digits. Problems never quote the file's text.
fn read_api_key(path: &std::path::Path) -> Result<crate::auth::Secret, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let key = text.trim();
    if key.starts_with(crate::auth::api_keys::SECRET_PREFIX)
        && key.len() > crate::auth::api_keys::SECRET_PREFIX.len()
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        Ok(crate::auth::Secret::new(key))
    } else {
        Err("does not hold an API key (one line: lk_ and hex digits, as licensing new-key prints it)".to_owned())
    }
}

/// The rules `licensing` applies to an event's source.
fn check_source(source: &str) -> Result<(), String> {
    licensing_core::ids::check(licensing_core::IdKind::Source, "source", source)
        .map_err(|e| e.problem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(flags: &[&str], environment: &[&str]) -> Result<Config, ConfigErrors> {
        let args = Args::try_parse_from(
            std::iter::once("licensing-collector").chain(flags.iter().copied()),
        )
        .expect("flags parse");
        Config::from_args(args, environment.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn defaults_upload_to_the_local_service() {
        let config = parse(&["--follow", "events.jsonl"], &[]).expect("defaults are valid");
        assert_eq!(config.upload.endpoint, "http://127.0.0.1:50051");
        assert_eq!(config.upload.batch_size, 100);
        assert_eq!(config.upload.in_flight, 16);
        assert_eq!(config.upload.backoff_max, Duration::from_secs(10));
        assert_eq!(config.spool_dir, PathBuf::from("./collector-spool"));
        assert_eq!(config.source, "collector");
        assert_eq!(config.shutdown_grace, Duration::from_secs(10));
        assert!(config.follow[0].is_absolute(), "{:?}", config.follow);
        assert!(config.follow[0].ends_with("events.jsonl"));
    }

    #[test]
    fn kubernetes_service_links_are_not_refused_but_typos_are() {
        let injected = [
            "LICENSING_COLLECTOR_PORT",
            "LICENSING_COLLECTOR_SERVICE_HOST",
            "LICENSING_COLLECTOR_SERVICE_PORT_GRPC",
            "LICENSING_COLLECTOR_PORT_50052_TCP_ADDR",
            "LICENSING_PORT",
        ];
        parse(&["--stdin"], &injected).expect("injected variables refused");
        let errors = parse(&["--stdin"], &["LICENSING_COLLECTOR_SPOOLDIR"])
            .expect_err("typo accepted")
            .to_string();
        assert!(
            errors.contains("unknown environment variable LICENSING_COLLECTOR_SPOOLDIR"),
            "{errors}"
        );
    }

    #[test]
    fn every_bad_value_is_reported_at_once_naming_its_flag_variable_and_value() {
        let errors = parse(
            &[
                "--licensing",
                "localhost:50051",
                "--batch-size",
                "5000",
                "--in-flight",
                "many",
                "--backoff-max-ms",
                "5",
                "--shutdown-grace-seconds",
                "4000",
                "--listen",
                "here",
                "--metrics-listen",
                "127.0.0.1:99999",
                "--source",
                "a/b",
                "--log-format",
                "xml",
            ],
            &["LICENSING_COLLECTOR_SPOOL", "LICENSING_LOG"],
        )
        .expect_err("bad values accepted")
        .to_string();
        for expected in [
            "--licensing / LICENSING_COLLECTOR_LICENSING \"localhost:50051\"",
            "--batch-size / LICENSING_COLLECTOR_BATCH_SIZE \"5000\": must be a whole number from 1 to 1000",
            "--in-flight / LICENSING_COLLECTOR_IN_FLIGHT \"many\"",
            "--backoff-max-ms / LICENSING_COLLECTOR_BACKOFF_MAX_MS \"5\"",
            "--shutdown-grace-seconds / LICENSING_COLLECTOR_SHUTDOWN_GRACE_SECONDS \"4000\"",
            "--listen / LICENSING_COLLECTOR_LISTEN \"here\"",
            "--metrics-listen / LICENSING_COLLECTOR_METRICS_LISTEN \"127.0.0.1:99999\"",
            "--source / LICENSING_COLLECTOR_SOURCE \"a/b\"",
            "--log-format / LICENSING_COLLECTOR_LOG_FORMAT \"xml\"",
            "unknown environment variable LICENSING_COLLECTOR_SPOOL",
        ] {
            assert!(
                errors.contains(expected),
                "{expected:?} missing from:\n{errors}"
            );
        }
        assert!(
            !errors.contains("LICENSING_LOG "),
            "the service's variables are not the collector's business:\n{errors}"
        );
    }

    #[test]
    fn https_is_refused_with_the_reason() {
        let errors = parse(&["--stdin", "--licensing", "https://licensing:443"], &[])
            .expect_err("https accepted")
            .to_string();
        assert!(errors.contains("no TLS"), "{errors}");
    }

    #[test]
    fn a_file_followed_twice_is_refused() {
        let errors = parse(&["--follow", "a.jsonl", "--follow", "./a.jsonl"], &[])
            .expect_err("twice")
            .to_string();
        assert!(errors.contains("given twice"), "{errors}");
    }

    #[test]
    fn a_source_of_events_is_required() {
        let errors = parse(&[], &[]).expect_err("no source").to_string();
        assert!(errors.contains("no source of events"), "{errors}");
        assert!(parse(&["--stdin"], &[]).is_ok());
        assert!(parse(&["--listen", "127.0.0.1:0"], &[]).is_ok());
    }
}
