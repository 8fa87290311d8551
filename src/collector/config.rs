//! Configuration of `licensing-collector`: flags and `LICENSING_COLLECTOR_*` environment
//! variables, parsed once into a typed [`Config`]. Every bad value is reported at once, each
//! naming its flag, variable and value, and an unknown `LICENSING_COLLECTOR_*` variable is refused
//! (a typo must not silently fall back to a default). Mirrors `crate::config`.

use std::{collections::BTreeSet, net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;

use super::upload::{CredentialFile, UploadOptions};
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
    /// URL of the licensing service: `http://` for plaintext HTTP/2, `https://` for TLS (the
    /// server is verified against `--ca-file` or the system's roots).
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
    /// Read again at every connection, so a rotated key is picked up without a restart.
    #[arg(long, value_name = "PATH", env = "LICENSING_COLLECTOR_API_KEY_FILE")]
    api_key_file: Option<PathBuf>,
    /// File holding a JWT to present to `licensing` instead of an API key; read again at every
    /// connection, since tokens expire and are renewed by whatever writes the file.
    #[arg(long, value_name = "PATH", env = "LICENSING_COLLECTOR_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// CA certificates (PEM) that sign `licensing`'s certificate, for an `https://` URL.
    /// Default: the system's trusted roots.
    #[arg(long, value_name = "PATH", env = "LICENSING_COLLECTOR_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) presented to `licensing` (mutual TLS), with
    /// `--client-key`.
    #[arg(long, value_name = "PATH", env = "LICENSING_COLLECTOR_CLIENT_CERT")]
    client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "PATH", env = "LICENSING_COLLECTOR_CLIENT_KEY")]
    client_key: Option<PathBuf>,
    /// Log filter, in `tracing` directive syntax (e.g. `info,licensing=debug`).
    #[arg(long, env = "LICENSING_COLLECTOR_LOG", default_value = crate::telemetry::DEFAULT_LOG_FILTER)]
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
    "LICENSING_COLLECTOR_TOKEN_FILE",
    "LICENSING_COLLECTOR_CA_FILE",
    "LICENSING_COLLECTOR_CLIENT_CERT",
    "LICENSING_COLLECTOR_CLIENT_KEY",
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
        let credential = match (&args.api_key_file, &args.token_file) {
            (Some(_), Some(_)) => {
                problems.push(
                    "--api-key-file / LICENSING_COLLECTOR_API_KEY_FILE and --token-file / LICENSING_COLLECTOR_TOKEN_FILE: give one, not both"
                        .to_owned(),
                );
                None
            }
            (Some(path), None) => Some(CredentialFile::ApiKey(path.clone())),
            (None, Some(path)) => Some(CredentialFile::Token(path.clone())),
            (None, None) => None,
        };
        if let Some(file) = &credential
            && let Err(problem) = file.read()
        {
            problems.push(problem);
        }
        let tls = client_tls(&args, &mut problems);
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
                    tls: tls.flatten(),
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
        Some("http" | "https") => {}
        _ => {
            return Err(
                "must be an http:// or https:// URL, e.g. https://licensing:50051".to_owned(),
            );
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("must name a host".to_owned());
    }
    Ok(())
}

/// TLS towards `licensing`: `Some(Some(_))` for an `https://` URL, `Some(None)` for `http://`,
/// `None` when a TLS file is invalid (its problem is added).
fn client_tls(
    args: &Args,
    problems: &mut Vec<String>,
) -> Option<Option<tonic::transport::ClientTlsConfig>> {
    let https = args.licensing.starts_with("https://");
    let tls_files =
        args.ca_file.is_some() || args.client_cert.is_some() || args.client_key.is_some();
    if !https {
        if tls_files {
            problems.push(format!(
                "--ca-file, --client-cert, --client-key: need an https:// --licensing URL, not {:?}",
                args.licensing
            ));
            return None;
        }
        return Some(None);
    }
    let read = |flag: &str, path: &PathBuf| {
        std::fs::read(path).map_err(|e| format!("{flag} {:?}: cannot read it: {e}", path.display()))
    };
    let mut tls = tonic::transport::ClientTlsConfig::new();
    match &args.ca_file {
        Some(path) => match read("--ca-file / LICENSING_COLLECTOR_CA_FILE", path).and_then(|pem| {
            crate::tls::certificates_pem(&pem)
                .map(|_| pem)
                .map_err(|e| {
                    format!(
                        "--ca-file / LICENSING_COLLECTOR_CA_FILE {:?}: {e}",
                        path.display()
                    )
                })
        }) {
            Ok(pem) => tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem)),
            Err(problem) => {
                problems.push(problem);
                return None;
            }
        },
        None => tls = tls.with_native_roots(),
    }
    match (&args.client_cert, &args.client_key) {
        (None, None) => {}
        (Some(cert), Some(key)) => {
            match (
                read("--client-cert / LICENSING_COLLECTOR_CLIENT_CERT", cert),
                read("--client-key / LICENSING_COLLECTOR_CLIENT_KEY", key),
            ) {
                (Ok(cert), Ok(key)) => {
                    tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
                }
                (cert, key) => {
                    problems.extend(cert.err());
                    problems.extend(key.err());
                    return None;
                }
            }
        }
        _ => {
            problems.push(
                "--client-cert / LICENSING_COLLECTOR_CLIENT_CERT and --client-key / LICENSING_COLLECTOR_CLIENT_KEY: give both or neither"
                    .to_owned(),
            );
            return None;
        }
    }
    Some(Some(tls))
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
    fn https_means_tls_and_tls_files_need_https() {
        let config =
            parse(&["--stdin", "--licensing", "https://licensing:443"], &[]).expect("https");
        assert!(config.upload.tls.is_some(), "https is sent over TLS");
        let config =
            parse(&["--stdin", "--licensing", "http://licensing:50051"], &[]).expect("http");
        assert!(config.upload.tls.is_none());
        let errors = parse(
            &[
                "--stdin",
                "--licensing",
                "http://licensing:50051",
                "--ca-file",
                "/ca.pem",
            ],
            &[],
        )
        .expect_err("a CA file over http")
        .to_string();
        assert!(
            errors.contains("need an https:// --licensing URL"),
            "{errors}"
        );
        let errors = parse(
            &[
                "--stdin",
                "--licensing",
                "https://licensing:443",
                "--ca-file",
                "/nonexistent/ca.pem",
            ],
            &[],
        )
        .expect_err("a missing CA file")
        .to_string();
        assert!(
            errors.contains(
                "--ca-file / LICENSING_COLLECTOR_CA_FILE \"/nonexistent/ca.pem\": cannot read it"
            ),
            "{errors}"
        );
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
