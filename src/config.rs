//! Configuration of the `licensing` binary: flags and `LICENSING_*` environment variables,
//! parsed once into a typed [`Config`]. Every bad value is reported at once, each naming its flag
//! or variable, and an unknown `LICENSING_*` variable is refused (a typo must not silently fall
//! back to a default).

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use licensing_core::PriceList;

use crate::price_list;

/// Flags of the `licensing` binary; each can also come from its environment variable.
#[derive(Debug, Parser)]
#[command(name = "licensing", version, about = "Licence-management gRPC service")]
pub struct Args {
    /// Address to serve gRPC on; port 0 picks a free port (the bound address is logged).
    #[arg(long, env = "LICENSING_LISTEN", default_value = "127.0.0.1:50051")]
    listen: String,
    /// Folder of the embedded database; created when missing.
    #[arg(long, env = "LICENSING_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Price list file (TOML). Default: the sample price list built into the binary.
    #[arg(long, env = "LICENSING_PRICE_LIST")]
    price_list: Option<PathBuf>,
    /// Upper bound of the database's page cache, in MiB.
    #[arg(long, env = "LICENSING_CACHE_MB", default_value = "256")]
    cache_mb: String,
    /// Seconds to let in-flight calls finish after a shutdown signal.
    #[arg(long, env = "LICENSING_SHUTDOWN_GRACE_SECONDS", default_value = "10")]
    shutdown_grace_seconds: String,
    /// Open connections at most; lowered at start to fit the open-files limit (the cap in force
    /// is logged).
    #[arg(long, env = "LICENSING_MAX_CONNECTIONS", default_value = "10000")]
    max_connections: String,
    /// Seconds a new connection has to send the HTTP/2 preface before it is closed.
    #[arg(long, env = "LICENSING_HANDSHAKE_TIMEOUT_SECONDS", default_value = "5")]
    handshake_timeout_seconds: String,
    /// Log filter, in `tracing` directive syntax (e.g. `info,licensing=debug`).
    #[arg(long, env = "LICENSING_LOG", default_value = "info")]
    log: String,
    /// Log format: `text` or `json`.
    #[arg(long, env = "LICENSING_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

/// Environment variables the binary reads; any other `LICENSING_*` variable is an error.
const KNOWN_VARIABLES: &[&str] = &[
    "LICENSING_LISTEN",
    "LICENSING_DATA_DIR",
    "LICENSING_PRICE_LIST",
    "LICENSING_CACHE_MB",
    "LICENSING_SHUTDOWN_GRACE_SECONDS",
    "LICENSING_MAX_CONNECTIONS",
    "LICENSING_HANDSHAKE_TIMEOUT_SECONDS",
    "LICENSING_LOG",
    "LICENSING_LOG_FORMAT",
];

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Address to serve on.
    pub listen: SocketAddr,
    /// Database folder.
    pub data_dir: PathBuf,
    /// The price list in force.
    pub price_list: PriceList,
    /// Database page cache bound, in bytes.
    pub cache_capacity_bytes: u64,
    /// How long in-flight calls may take to finish at shutdown.
    pub shutdown_grace: Duration,
    /// Open connections at most, before the open-files limit lowers it.
    pub max_connections: usize,
    /// How long a new connection may take to send the HTTP/2 preface.
    pub handshake_timeout: Duration,
    /// Log filter directives.
    pub log_filter: String,
    /// Log format.
    pub log_format: LogFormat,
}

/// Every problem found in the configuration, one per line.
#[derive(Debug)]
pub struct ConfigErrors(Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration:")?;
        for problem in &self.0 {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Validates parsed flags against the given environment variable names.
    pub fn from_args(
        args: Args,
        environment: impl IntoIterator<Item = String>,
    ) -> Result<Config, ConfigErrors> {
        let mut problems = Vec::new();
        for name in environment {
            if name.starts_with("LICENSING_") && !KNOWN_VARIABLES.contains(&name.as_str()) {
                problems.push(format!(
                    "unknown environment variable {name} (known: {})",
                    KNOWN_VARIABLES.join(", ")
                ));
            }
        }
        let listen = args
            .listen
            .parse::<SocketAddr>()
            .map_err(|e| {
                problems.push(format!(
                    "--listen / LICENSING_LISTEN {:?}: {e}",
                    args.listen
                ))
            })
            .ok();
        if args.data_dir.as_os_str().is_empty() {
            problems.push("--data-dir / LICENSING_DATA_DIR \"\": must not be empty".to_owned());
        }
        let price_list = match &args.price_list {
            None => {
                price_list::sample().map_err(|e| problems.push(format!("built-in price list: {e}")))
            }
            Some(path) => price_list::load(path).map_err(|e| {
                problems.push(format!(
                    "--price-list / LICENSING_PRICE_LIST {:?}: {e}",
                    path.display()
                ))
            }),
        }
        .ok();
        let cache_capacity_bytes = match args.cache_mb.parse::<u64>() {
            Ok(mb) if (1..=65_536).contains(&mb) => Some(mb << 20),
            _ => {
                problems.push(format!(
                    "--cache-mb / LICENSING_CACHE_MB {:?}: must be a whole number of MiB from 1 to 65536",
                    args.cache_mb
                ));
                None
            }
        };
        let shutdown_grace = match args.shutdown_grace_seconds.parse::<u64>() {
            Ok(seconds) if seconds <= 3600 => Some(Duration::from_secs(seconds)),
            _ => {
                problems.push(format!(
                    "--shutdown-grace-seconds / LICENSING_SHUTDOWN_GRACE_SECONDS {:?}: must be a whole number of seconds from 0 to 3600",
                    args.shutdown_grace_seconds
                ));
                None
            }
        };
        let max_connections = match args.max_connections.parse::<usize>() {
            Ok(n) if (1..=1_000_000).contains(&n) => Some(n),
            _ => {
                problems.push(format!(
                    "--max-connections / LICENSING_MAX_CONNECTIONS {:?}: must be a whole number from 1 to 1000000",
                    args.max_connections
                ));
                None
            }
        };
        let handshake_timeout = match args.handshake_timeout_seconds.parse::<u64>() {
            Ok(seconds) if (1..=300).contains(&seconds) => Some(Duration::from_secs(seconds)),
            _ => {
                problems.push(format!(
                    "--handshake-timeout-seconds / LICENSING_HANDSHAKE_TIMEOUT_SECONDS {:?}: must be a whole number of seconds from 1 to 300",
                    args.handshake_timeout_seconds
                ));
                None
            }
        };
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&args.log) {
            problems.push(format!("--log / LICENSING_LOG {:?}: {e}", args.log));
        }
        let log_format = match args.log_format.as_str() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            other => {
                problems.push(format!(
                    "--log-format / LICENSING_LOG_FORMAT {other:?}: must be \"text\" or \"json\""
                ));
                None
            }
        };
        match (
            listen,
            price_list,
            cache_capacity_bytes,
            shutdown_grace,
            max_connections,
            handshake_timeout,
            log_format,
        ) {
            (
                Some(listen),
                Some(price_list),
                Some(cache_capacity_bytes),
                Some(shutdown_grace),
                Some(max_connections),
                Some(handshake_timeout),
                Some(log_format),
            ) if problems.is_empty() => Ok(Config {
                listen,
                data_dir: args.data_dir,
                price_list,
                cache_capacity_bytes,
                shutdown_grace,
                max_connections,
                handshake_timeout,
                log_filter: args.log,
                log_format,
            }),
            _ => Err(ConfigErrors(problems)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(flags: &[&str], environment: &[&str]) -> Result<Config, ConfigErrors> {
        let args = Args::try_parse_from(std::iter::once("licensing").chain(flags.iter().copied()))
            .expect("flags parse");
        Config::from_args(args, environment.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn defaults_serve_on_loopback_with_data_in_the_current_folder() {
        let config = parse(&[], &[]).expect("defaults are valid");
        assert_eq!(config.listen, "127.0.0.1:50051".parse().expect("address"));
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.max_connections, 10_000);
        assert_eq!(config.handshake_timeout, Duration::from_secs(5));
    }

    #[test]
    fn every_bad_value_is_reported_at_once_naming_its_flag_and_value() {
        let errors = parse(
            &[
                "--listen",
                "localhost:fifty",
                "--cache-mb",
                "0",
                "--log-format",
                "xml",
                "--max-connections",
                "0",
                "--handshake-timeout-seconds",
                "5s",
            ],
            &["LICENSING_LISTNE"],
        )
        .expect_err("bad values accepted")
        .to_string();
        for expected in [
            "--listen / LICENSING_LISTEN \"localhost:fifty\"",
            "--cache-mb / LICENSING_CACHE_MB \"0\"",
            "--log-format / LICENSING_LOG_FORMAT \"xml\"",
            "--max-connections / LICENSING_MAX_CONNECTIONS \"0\"",
            "--handshake-timeout-seconds / LICENSING_HANDSHAKE_TIMEOUT_SECONDS \"5s\"",
            "unknown environment variable LICENSING_LISTNE",
        ] {
            assert!(
                errors.contains(expected),
                "{expected:?} missing from:\n{errors}"
            );
        }
    }

    #[test]
    fn a_missing_price_list_file_is_named() {
        let errors = parse(&["--price-list", "/nonexistent/prices.toml"], &[])
            .expect_err("missing file accepted")
            .to_string();
        assert!(
            errors.contains("--price-list / LICENSING_PRICE_LIST \"/nonexistent/prices.toml\""),
            "{errors}"
        );
    }
}
