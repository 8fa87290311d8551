//! Configuration of the `licensing` binary: flags and `LICENSING_*` environment variables,
//! parsed once into a typed [`Config`]. Every bad value is reported at once, each naming its flag
//! or variable, and an unknown `LICENSING_*` variable is refused (a typo must not silently fall
//! back to a default). Two shapes are not ours and are let through: the variables Kubernetes
//! injects for every Service (a Service named `licensing` gives `LICENSING_PORT`,
//! `LICENSING_SERVICE_HOST`, ...), see [`is_service_link`], and the collector's
//! `LICENSING_COLLECTOR_*`, which a shared pod environment carries.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use licensing_core::PriceList;

use crate::{
    auth::{
        ApiKeys, Authentication, CallRate, ClientIdentities, Credentials, Jwks, TokenRules, Tokens,
        Watched, tokens,
    },
    price_list,
    tls::{Tls, TlsFiles},
};

/// Flags of the `licensing` binary; each can also come from its environment variable.
#[derive(Debug, Parser)]
#[command(name = "licensing", version, about = "Licence-management gRPC service")]
pub struct Args {
    /// Without a command, the service runs.
    #[command(subcommand)]
    pub command: Option<Command>,
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
    /// Days a redelivered event is still recognised as a duplicate after its month closed; after
    /// that it is refused MONTH_CLOSED. Longer than a collector's longest outage.
    #[arg(long, env = "LICENSING_DEDUPE_RETENTION_DAYS", default_value = "35")]
    dedupe_retention_days: String,
    /// API keys file (TOML): the keys callers authenticate with, stored as hashes; read again
    /// when it changes. Without any credential configured (API keys, JWKS, client
    /// certificates), authentication is off and the service serves loopback only (see
    /// `--insecure`).
    #[arg(long, env = "LICENSING_API_KEYS")]
    api_keys: Option<PathBuf>,
    /// JWKS file (JSON): the public keys JWT bearer tokens are signed with; read again when it
    /// changes. Needs `--jwt-issuer`.
    #[arg(long, env = "LICENSING_JWKS")]
    jwks: Option<PathBuf>,
    /// The `iss` a token must carry.
    #[arg(long, env = "LICENSING_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// The `aud` a token must carry.
    #[arg(long, env = "LICENSING_JWT_AUDIENCE", default_value = "licensing")]
    jwt_audience: String,
    /// Token signature algorithms accepted, comma-separated: EdDSA, ES256, RS256.
    #[arg(
        long,
        env = "LICENSING_JWT_ALGORITHMS",
        default_value = "EdDSA,ES256,RS256"
    )]
    jwt_algorithms: String,
    /// The server's TLS certificate chain (PEM). With `--tls-key`, the service speaks TLS only.
    #[arg(long, env = "LICENSING_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The server's TLS private key (PEM).
    #[arg(long, env = "LICENSING_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// CA certificates (PEM) of client certificates: turns on mutual TLS. Needs
    /// `--client-certificates`.
    #[arg(long, env = "LICENSING_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// Allow-list (TOML) mapping a client certificate's SAN URI to a principal; read again when
    /// it changes.
    #[arg(long, env = "LICENSING_CLIENT_CERTIFICATES")]
    client_certificates: Option<PathBuf>,
    /// A second address serving only the health checks, in plaintext and without credentials:
    /// for Kubernetes probes, which can present neither a certificate nor a token.
    #[arg(long, env = "LICENSING_HEALTH_LISTEN")]
    health_listen: Option<String>,
    /// Serve Prometheus metrics on `GET /metrics` here, in plaintext, e.g. 0.0.0.0:9464.
    #[arg(long, value_name = "ADDRESS", env = "LICENSING_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Calls per second each authenticated principal may start (a burst of one second's worth);
    /// more are RESOURCE_EXHAUSTED with the time to wait. 0: no limit.
    #[arg(long, env = "LICENSING_CALLS_PER_SECOND", default_value = "2000")]
    calls_per_second: String,
    /// Serve without authentication on an address that is not loopback: every caller has every
    /// right on every account. Only for networks where nobody else can connect.
    #[arg(long, env = "LICENSING_INSECURE")]
    insecure: bool,
    /// Serve reflection only to callers with a credential (it is open by default: it describes
    /// the public contract, and lets `grpcurl` reach the health checks without a key).
    #[arg(long, env = "LICENSING_PRIVATE_REFLECTION")]
    private_reflection: bool,
    /// Open connections at most; lowered at start to fit the open-files limit (the cap in force
    /// is logged).
    #[arg(long, env = "LICENSING_MAX_CONNECTIONS", default_value = "10000")]
    max_connections: String,
    /// Seconds a new connection has to send the HTTP/2 preface before it is closed.
    #[arg(long, env = "LICENSING_HANDSHAKE_TIMEOUT_SECONDS", default_value = "5")]
    handshake_timeout_seconds: String,
    /// Log filter, in `tracing` directive syntax (e.g. `info,licensing=debug`).
    #[arg(long, env = "LICENSING_LOG", default_value = crate::telemetry::DEFAULT_LOG_FILTER)]
    log: String,
    /// Log format: `text` or `json`.
    #[arg(long, env = "LICENSING_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

/// What the binary does instead of serving.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Creates an API key: prints its secret (once: it is stored nowhere) and the entry for the
    /// `--api-keys` file, which holds only its hash.
    NewKey(NewKey),
    /// Asks a health endpoint (plaintext gRPC, no credentials: the `--health-listen` port, or
    /// the main one without TLS) for a service's status; exits 0 when it is SERVING and 1
    /// otherwise, printing what it found. For container health checks and `helm test`, where
    /// there is no shell and no other tool.
    Healthcheck(Healthcheck),
}

/// The health check to make.
#[derive(Debug, clap::Args)]
pub struct Healthcheck {
    /// Where the health service is, `HOST:PORT` (a name is looked up).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub address: String,
    /// The service to ask about: `` for the process as a whole (readiness), `liveness`, or an
    /// API service such as `licensing.v1.LicensingService`.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Seconds the whole check may take, connection included (1 to 300).
    #[arg(long, default_value = "5")]
    pub timeout_seconds: u64,
}

/// The key to create.
#[derive(Debug, clap::Args)]
pub struct NewKey {
    /// Names the key (not secret): shown in logs, used to rotate it, e.g. `collector-2026-12`.
    #[arg(long)]
    pub id: String,
    /// The principal the key authenticates, as the audit trail names it, e.g. `collector`.
    #[arg(long)]
    pub subject: String,
    /// Accounts the key's rights hold on, comma-separated, or `*` for every account.
    #[arg(long, value_delimiter = ',', required = true)]
    pub accounts: Vec<String>,
    /// Rights: `view`, `update`, `ingest`, `admin`, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub rights: Vec<String>,
    /// Appends the key's entry to this keys file (created, readable by its owner only, when
    /// missing) instead of printing it; the file must stay valid with it. A running service
    /// reads the changed file within a second.
    #[arg(long, value_name = "PATH")]
    pub keys_file: Option<PathBuf>,
}

impl NewKey {
    /// The secret and the keys-file entry, checked as the service will check it.
    pub fn create(&self) -> Result<(String, String), String> {
        let (secret, hash) = crate::auth::api_keys::new_secret()
            .map_err(|e| format!("no randomness for the secret: {e}"))?;
        let quoted = |items: &[String]| {
            items
                .iter()
                .map(|i| format!("{i:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let entry = format!(
            "[[key]]\nid = {:?}\nsubject = {:?}\nsha256 = \"{hash}\"\naccounts = [{}]\nrights = [{}]\n",
            self.id,
            self.subject,
            quoted(&self.accounts),
            quoted(&self.rights)
        );
        ApiKeys::parse(&entry)?;
        Ok((secret, entry))
    }

    /// Appends `entry` to the keys file at `path`, after checking that the file with it is valid
    /// (a duplicate id, a third key of a subject, ... are refused and the file is left as it was).
    pub fn append(&self, path: &std::path::Path, entry: &str) -> Result<(), String> {
        use std::io::Write as _;
        let named = |e: String| format!("--keys-file {:?}: {e}", path.display());
        let before = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(named(format!("cannot read it: {e}"))),
        };
        let separator = if before.is_empty() || before.ends_with("\n\n") {
            ""
        } else if before.ends_with('\n') {
            "\n"
        } else {
            "\n\n"
        };
        let addition = format!("{separator}{entry}");
        ApiKeys::parse(&format!("{before}{addition}")).map_err(named)?;
        let mut options = std::fs::OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options
            .open(path)
            .map_err(|e| named(format!("cannot open it: {e}")))?;
        file.write_all(addition.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| named(format!("cannot write it: {e}")))
    }
}

/// Environment variables the binary reads; any other `LICENSING_*` variable is an error.
const KNOWN_VARIABLES: &[&str] = &[
    "LICENSING_LISTEN",
    "LICENSING_DATA_DIR",
    "LICENSING_PRICE_LIST",
    "LICENSING_CACHE_MB",
    "LICENSING_SHUTDOWN_GRACE_SECONDS",
    "LICENSING_DEDUPE_RETENTION_DAYS",
    "LICENSING_API_KEYS",
    "LICENSING_JWKS",
    "LICENSING_JWT_ISSUER",
    "LICENSING_JWT_AUDIENCE",
    "LICENSING_JWT_ALGORITHMS",
    "LICENSING_TLS_CERT",
    "LICENSING_TLS_KEY",
    "LICENSING_TLS_CLIENT_CA",
    "LICENSING_CLIENT_CERTIFICATES",
    "LICENSING_HEALTH_LISTEN",
    "LICENSING_METRICS_LISTEN",
    "LICENSING_CALLS_PER_SECOND",
    "LICENSING_INSECURE",
    "LICENSING_PRIVATE_REFLECTION",
    "LICENSING_MAX_CONNECTIONS",
    "LICENSING_HANDSHAKE_TIMEOUT_SECONDS",
    "LICENSING_LOG",
    "LICENSING_LOG_FORMAT",
];

/// The longest dedupe retention after a month's close, in days (ten years).
pub const MAX_DEDUPE_RETENTION_DAYS: u32 = 3653;

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
    /// Days dedupe records are kept after their month closed.
    pub dedupe_retention_days: u32,
    /// How callers authenticate.
    pub authentication: Authentication,
    /// TLS, when configured.
    pub tls: Option<Tls>,
    /// The plaintext health-only address, when configured.
    pub health_listen: Option<SocketAddr>,
    /// The address of `GET /metrics`, when configured.
    pub metrics_listen: Option<SocketAddr>,
    /// Each authenticated principal's call rate, unless unlimited.
    pub call_rate: Option<CallRate>,
    /// Whether reflection needs a credential.
    pub private_reflection: bool,
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
pub struct ConfigErrors(pub(crate) Vec<String>);

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
        // The collector's variables share the prefix: they are its business.
        let theirs = |name: &str| name.starts_with("LICENSING_COLLECTOR_");
        unknown_variables(
            &mut problems,
            environment,
            "LICENSING_",
            KNOWN_VARIABLES,
            theirs,
        );
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
        let dedupe_retention_days = match args.dedupe_retention_days.parse::<u32>() {
            Ok(days) if days <= MAX_DEDUPE_RETENTION_DAYS => Some(days),
            _ => {
                problems.push(format!(
                    "--dedupe-retention-days / LICENSING_DEDUPE_RETENTION_DAYS {:?}: must be a whole number of days from 0 to {MAX_DEDUPE_RETENTION_DAYS}",
                    args.dedupe_retention_days
                ));
                None
            }
        };
        let authentication = credentials(&args, &mut problems).map(Authentication::with);
        let tls = match (&args.tls_cert, &args.tls_key) {
            (None, None) => {
                if args.tls_client_ca.is_some() {
                    problems.push(
                        "--tls-client-ca / LICENSING_TLS_CLIENT_CA: needs --tls-cert and --tls-key"
                            .to_owned(),
                    );
                }
                Some(None)
            }
            (Some(certificate), Some(key)) => {
                let files = TlsFiles {
                    certificate: certificate.clone(),
                    key: key.clone(),
                    client_ca: args.tls_client_ca.clone(),
                };
                match files.acceptor() {
                    Ok(acceptor) => Some(Some(Tls(acceptor))),
                    Err(problem) => {
                        problems.push(problem);
                        None
                    }
                }
            }
            _ => {
                problems.push(
                    "--tls-cert / LICENSING_TLS_CERT and --tls-key / LICENSING_TLS_KEY: give both or neither"
                        .to_owned(),
                );
                None
            }
        };
        if args.tls_client_ca.is_some() != args.client_certificates.is_some() {
            problems.push(
                "--tls-client-ca / LICENSING_TLS_CLIENT_CA and --client-certificates / LICENSING_CLIENT_CERTIFICATES: give both or neither (the CA verifies a certificate, the allow-list names its principal)"
                    .to_owned(),
            );
        }
        let health_listen = optional_address(
            "--health-listen / LICENSING_HEALTH_LISTEN",
            args.health_listen.as_deref(),
            "0.0.0.0:8081",
            &mut problems,
        );
        let metrics_listen = optional_address(
            "--metrics-listen / LICENSING_METRICS_LISTEN",
            args.metrics_listen.as_deref(),
            "0.0.0.0:9464",
            &mut problems,
        );
        let call_rate = match args.calls_per_second.parse::<u32>() {
            Ok(0) => Some(None),
            Ok(n) if n <= 10_000_000 => {
                std::num::NonZeroU32::new(n).map(|n| Some(CallRate::new(n)))
            }
            _ => {
                problems.push(format!(
                    "--calls-per-second / LICENSING_CALLS_PER_SECOND {:?}: must be a whole number from 0 (no limit) to 10000000",
                    args.calls_per_second
                ));
                None
            }
        };
        if let (Some(listen), Some(Authentication::Off)) = (listen, &authentication)
            && !listen.ip().is_loopback()
            && !args.insecure
        {
            problems.push(format!(
                "--listen / LICENSING_LISTEN {listen}: not a loopback address, and authentication is off: configure --api-keys, --jwks or --client-certificates, or pass --insecure to let every caller do everything"
            ));
        }
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
            dedupe_retention_days,
            authentication,
            (tls, health_listen, call_rate, metrics_listen),
            max_connections,
            handshake_timeout,
            log_format,
        ) {
            (
                Some(listen),
                Some(price_list),
                Some(cache_capacity_bytes),
                Some(shutdown_grace),
                Some(dedupe_retention_days),
                Some(authentication),
                (Some(tls), Some(health_listen), Some(call_rate), Some(metrics_listen)),
                Some(max_connections),
                Some(handshake_timeout),
                Some(log_format),
            ) if problems.is_empty() => Ok(Config {
                listen,
                data_dir: args.data_dir,
                price_list,
                cache_capacity_bytes,
                shutdown_grace,
                dedupe_retention_days,
                authentication,
                tls,
                health_listen,
                metrics_listen,
                call_rate,
                private_reflection: args.private_reflection,
                max_connections,
                handshake_timeout,
                log_filter: args.log,
                log_format,
            }),
            _ => Err(ConfigErrors(problems)),
        }
    }
}

/// An optional `host:port` flag: `Some(None)` when not given, `None` when invalid (the problem,
/// naming `flag` and the value, is added).
fn optional_address(
    flag: &str,
    value: Option<&str>,
    example: &str,
    problems: &mut Vec<String>,
) -> Option<Option<SocketAddr>> {
    match value.map(str::parse::<SocketAddr>) {
        None => Some(None),
        Some(Ok(address)) => Some(Some(address)),
        Some(Err(e)) => {
            problems.push(format!(
                "{flag} {:?}: {e} (expected host:port, e.g. {example})",
                value.unwrap_or_default()
            ));
            None
        }
    }
}

/// The credentials configured, each file read and checked; `None` when one is invalid (its
/// problems are added).
fn credentials(args: &Args, problems: &mut Vec<String>) -> Option<Credentials> {
    let mut credentials = Credentials::default();
    let mut valid = true;
    if let Some(path) = &args.api_keys {
        match Watched::load(path, "API keys", ApiKeys::parse) {
            Ok(keys) if keys.current().is_empty() => {
                problems.push(format!(
                    "--api-keys / LICENSING_API_KEYS {:?}: holds no key",
                    path.display()
                ));
                valid = false;
            }
            Ok(keys) => credentials.api_keys = Some(keys),
            Err(problem) => {
                problems.push(format!(
                    "--api-keys / LICENSING_API_KEYS {:?}: {problem}",
                    path.display()
                ));
                valid = false;
            }
        }
    }
    let algorithms = args
        .jwt_algorithms
        .split(',')
        .map(str::trim)
        .map(tokens::parse_algorithm)
        .collect::<Result<Vec<_>, String>>();
    let algorithms = match algorithms {
        Ok(algorithms) => Some(algorithms),
        Err(problem) => {
            problems.push(format!(
                "--jwt-algorithms / LICENSING_JWT_ALGORITHMS {:?}: {problem}",
                args.jwt_algorithms
            ));
            valid = false;
            None
        }
    };
    match (&args.jwks, &args.jwt_issuer, algorithms) {
        (None, None, _) => {}
        (Some(_), None, _) | (None, Some(_), _) => {
            problems.push(
                "--jwks / LICENSING_JWKS and --jwt-issuer / LICENSING_JWT_ISSUER: give both or neither"
                    .to_owned(),
            );
            valid = false;
        }
        (Some(_), Some(_), None) => {}
        (Some(path), Some(issuer), Some(algorithms)) => {
            if args.jwt_audience.trim().is_empty() {
                problems
                    .push("--jwt-audience / LICENSING_JWT_AUDIENCE: must not be empty".to_owned());
                valid = false;
            }
            let accepted = algorithms.clone();
            match Watched::load(path, "JWKS", move |text| Jwks::parse(text, &accepted)) {
                Ok(jwks) => {
                    credentials.tokens = Some(Tokens::new(
                        TokenRules {
                            issuer: issuer.clone(),
                            audience: args.jwt_audience.clone(),
                            algorithms,
                        },
                        jwks,
                    ));
                }
                Err(problem) => {
                    problems.push(format!(
                        "--jwks / LICENSING_JWKS {:?}: {problem}",
                        path.display()
                    ));
                    valid = false;
                }
            }
        }
    }
    if let Some(path) = &args.client_certificates {
        match Watched::load(path, "client certificates", ClientIdentities::parse) {
            Ok(list) => credentials.certificates = Some(list),
            Err(problem) => {
                problems.push(format!(
                    "--client-certificates / LICENSING_CLIENT_CERTIFICATES {:?}: {problem}",
                    path.display()
                ));
                valid = false;
            }
        }
    }
    valid.then_some(credentials)
}

/// Adds a problem for every variable of `environment` with `prefix` that is neither in `known`,
/// nor `theirs`, nor a Kubernetes service link: a misspelt variable must not go unnoticed.
pub(crate) fn unknown_variables(
    problems: &mut Vec<String>,
    environment: impl IntoIterator<Item = String>,
    prefix: &str,
    known: &[&str],
    theirs: impl Fn(&str) -> bool,
) {
    for name in environment {
        if name.starts_with(prefix)
            && !known.contains(&name.as_str())
            && !theirs(&name)
            && !is_service_link(&name)
        {
            problems.push(format!(
                "unknown environment variable {name} (known: {})",
                known.join(", ")
            ));
        }
    }
}

/// Whether `name` has the shape of a variable Kubernetes injects for a Service (its "service
/// links"): for a Service `licensing-x` with port 50051, `LICENSING_X_SERVICE_HOST`,
/// `LICENSING_X_SERVICE_PORT`, `LICENSING_X_SERVICE_PORT_<PORT NAME>`, `LICENSING_X_PORT`,
/// `LICENSING_X_PORT_50051_TCP` and its `_PROTO`, `_PORT` and `_ADDR`. None of our variables has
/// these shapes, so such a name is never a misspelling of ours that should stop the start.
pub fn is_service_link(name: &str) -> bool {
    if name.ends_with("_SERVICE_HOST")
        || name.ends_with("_SERVICE_PORT")
        || name.contains("_SERVICE_PORT_")
        || name.ends_with("_PORT")
    {
        return true;
    }
    // `..._PORT_<number>_<protocol>[_PROTO|_PORT|_ADDR]`
    let Some((_, rest)) = name.rsplit_once("_PORT_") else {
        return false;
    };
    let mut parts = rest.split('_');
    let number = parts.next().unwrap_or_default();
    let protocol = parts.next().unwrap_or_default();
    let field = parts.next();
    !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && matches!(protocol, "TCP" | "UDP" | "SCTP")
        && matches!(field, None | Some("PROTO" | "PORT" | "ADDR"))
        && parts.next().is_none()
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
    fn credentials_and_tls_flags_that_do_not_go_together_are_each_named() {
        let errors = parse(
            &[
                "--jwks",
                "/nonexistent/jwks.json",
                "--tls-cert",
                "/nonexistent/server.pem",
                "--tls-client-ca",
                "/nonexistent/ca.pem",
                "--jwt-algorithms",
                "EdDSA,HS256",
                "--calls-per-second",
                "lots",
                "--health-listen",
                "probe",
            ],
            &[],
        )
        .expect_err("invalid")
        .to_string();
        for named in [
            "--jwt-algorithms / LICENSING_JWT_ALGORITHMS \"EdDSA,HS256\": \"HS256\" is not accepted",
            "--jwks / LICENSING_JWKS and --jwt-issuer / LICENSING_JWT_ISSUER: give both or neither",
            "--tls-cert / LICENSING_TLS_CERT and --tls-key / LICENSING_TLS_KEY: give both or neither",
            "--tls-client-ca / LICENSING_TLS_CLIENT_CA and --client-certificates",
            "--calls-per-second / LICENSING_CALLS_PER_SECOND \"lots\"",
            "--health-listen / LICENSING_HEALTH_LISTEN \"probe\"",
        ] {
            assert!(errors.contains(named), "{named} not in:\n{errors}");
        }
        let errors = parse(
            &[
                "--jwks",
                "/nonexistent/jwks.json",
                "--jwt-issuer",
                "https://id.example",
            ],
            &[],
        )
        .expect_err("missing file")
        .to_string();
        assert!(
            errors.contains("--jwks / LICENSING_JWKS \"/nonexistent/jwks.json\": cannot read it"),
            "{errors}"
        );
        let config = parse(&["--calls-per-second", "0"], &[]).expect("no limit");
        assert!(config.call_rate.is_none());
        assert!(parse(&[], &[]).expect("defaults").call_rate.is_some());
    }

    #[test]
    fn defaults_serve_on_loopback_with_data_in_the_current_folder() {
        let config = parse(&[], &[]).expect("defaults are valid");
        assert_eq!(config.listen, "127.0.0.1:50051".parse().expect("address"));
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(
            config.dedupe_retention_days,
            crate::ingest::DEFAULT_DEDUPE_RETENTION_DAYS
        );
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
                "--metrics-listen",
                "nine",
                "--health-listen",
                "8081",
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
            "--metrics-listen / LICENSING_METRICS_LISTEN \"nine\"",
            "--health-listen / LICENSING_HEALTH_LISTEN \"8081\"",
            "unknown environment variable LICENSING_LISTNE",
        ] {
            assert!(
                errors.contains(expected),
                "{expected:?} missing from:\n{errors}"
            );
        }
    }

    #[test]
    fn kubernetes_service_links_and_collector_variables_are_not_refused() {
        let injected = [
            "LICENSING_PORT",
            "LICENSING_SERVICE_HOST",
            "LICENSING_SERVICE_PORT",
            "LICENSING_SERVICE_PORT_GRPC",
            "LICENSING_PORT_50051_TCP",
            "LICENSING_PORT_50051_TCP_PROTO",
            "LICENSING_PORT_50051_TCP_PORT",
            "LICENSING_PORT_50051_TCP_ADDR",
            "LICENSING_METRICS_PORT_9090_UDP_ADDR",
            "LICENSING_COLLECTOR_SPOOL_DIR",
            "LICENSING_COLLECTOR_SERVICE_HOST",
        ];
        parse(&[], &injected).expect("injected variables refused");
        for typo in [
            "LICENSING_LISTNE",
            "LICENSING_DATADIR",
            "LICENSING_PORT_50051_TCP_HOST",
            "LICENSING_PORT_X_TCP",
        ] {
            let errors = parse(&[], &[typo]).expect_err(typo).to_string();
            assert!(
                errors.contains(&format!("unknown environment variable {typo}")),
                "{errors}"
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
