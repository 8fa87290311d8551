//! `abuse`: the real `licensing` binary, started as an operator starts it, under clients that
//! misbehave; each scenario next to the same measurement without them, in the same run.
//!
//! `silent-connections`: the binary under `ulimit -n 1024` (soft and hard, so it cannot raise
//! it), and 2,000 connections that never send a byte, each reopened as soon as the server closes
//! it, so the attacker holds 2,000 all the time. Meanwhile, health checks from fresh connections,
//! one after the other: connect, `grpc.health.v1.Health/Check`, each on a new connection. Before
//! the attack, the same checks give the baseline.
//!
//! `stalled-streams`: a sandbox account with more than 2,000 audit entries (one per `AdvanceClock`
//! of a minute), then 600 `ReadAuditTrail` streams that never read: raw HTTP/2 clients (`h2`) that
//! announce a stream window of 0 and never release any, so the server cannot send a byte of the
//! answers. Meanwhile, `GetAccount` latency from a normal client on its own connection, and
//! whether an `Ingest` batch (one login of an unknown member, at the sandbox's time) is still
//! acknowledged. Before the streams are opened, the same calls give the baseline.
//!
//! The attackers and the measuring client run on separate runtimes of this process; the service
//! is its own process. All share the machine's cores.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ExitCode, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use clap::{Args, Subcommand};
use licensing::api::{
    self, ingestion_service_client::IngestionServiceClient,
    licensing_service_client::LicensingServiceClient,
};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader},
    net::TcpStream,
    process::{Child, Command},
    runtime::Runtime,
    sync::watch,
    task::JoinHandle,
    time::timeout,
};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::startup;

/// Health p99 must stay under this while the silent connections are held.
const HEALTH_P99_TARGET: Duration = Duration::from_millis(100);
/// `GetAccount` p99 must stay under this while the streams are stalled.
const GET_ACCOUNT_P99_TARGET: Duration = Duration::from_millis(100);
/// An `Ingest` batch must be acknowledged within this while the streams are stalled.
const INGEST_DEADLINE: Duration = Duration::from_secs(10);
/// One measured call (connect included) that takes longer counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a series of measured calls may run; calls not made by then are reported.
const SERIES_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the service may take to start, and the attackers to open their connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the stalled streams' response headers may take.
const HEADERS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the service may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Files this process needs beside the silent connections (runtimes, clients, the child's pipes).
const OWN_FILES: u64 = 256;
/// The sandbox account of `stalled-streams`.
const ACCOUNT_ID: &str = "bench-stalled";
/// The sandbox's clock at creation.
const SANDBOX_START: &str = "2026-01-01T00:00:00Z";
/// The method the stalled streams call.
const READ_AUDIT_TRAIL: &str = "/licensing.v1.LicensingService/ReadAuditTrail";
/// Log lines of a failed start shown in the error.
const LOG_TAIL: usize = 20;

/// Flags of `abuse`.
#[derive(Debug, Args)]
pub(crate) struct AbuseArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Fresh health checks while 2,000 connections that never send a preface are held.
    SilentConnections(SilentArgs),
    /// GetAccount and Ingest while 600 ReadAuditTrail streams never read.
    StalledStreams(StalledArgs),
}

#[derive(Debug, Args)]
struct SilentArgs {
    /// Silent connections the attacker holds.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..))]
    connections: u64,
    /// Health checks measured without and with the attack.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    samples: u32,
    /// The service's open-files limit, soft and hard (`ulimit -n`).
    #[arg(long, default_value_t = 1_024, value_parser = clap::value_parser!(u64).range(16..))]
    open_files: u64,
    /// Open each silent connection once instead of reopening the ones the server closes.
    #[arg(long)]
    no_reopen: bool,
    /// The `licensing` binary to start. Default: `licensing` next to this benchmark's binary,
    /// built by `cargo build --release --locked --bin licensing`.
    #[arg(long)]
    licensing_binary: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct StalledArgs {
    /// Streams that never read.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..))]
    streams: u32,
    /// Stalled streams per HTTP/2 connection (the service allows 256 at once per connection).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=256))]
    streams_per_connection: u32,
    /// `AdvanceClock` calls (one audit entry each) before the streams are opened.
    #[arg(long, default_value_t = 2_100, value_parser = clap::value_parser!(u32).range(1..))]
    entries: u32,
    /// `GetAccount` calls measured without and with the stalled streams.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    samples: u32,
    /// The `licensing` binary to start. Default: `licensing` next to this benchmark's binary.
    #[arg(long)]
    licensing_binary: Option<PathBuf>,
}

pub(crate) fn run(args: &AbuseArgs) -> anyhow::Result<ExitCode> {
    match &args.scenario {
        Scenario::SilentConnections(args) => silent_connections(args),
        Scenario::StalledStreams(args) => stalled_streams(args),
    }
}

fn silent_connections(args: &SilentArgs) -> anyhow::Result<ExitCode> {
    let binary = startup::locate(args.licensing_binary.as_deref())?;
    let own_limit = licensing::transport::raise_open_files_limit();
    let needed = args.connections + OWN_FILES;
    ensure!(
        own_limit.is_none_or(|limit| limit >= needed),
        "this process may open {} files, fewer than the {needed} it needs: raise its hard limit \
         (ulimit -Hn) or ask for fewer --connections",
        own_limit.unwrap_or_default()
    );
    let client = runtime("client", 1)?;
    let attackers = runtime("attacker", 2)?;
    let service = client.block_on(Service::start(&binary, Some(args.open_files)))?;
    let address = service.address;
    println!(
        "licensing under `ulimit -n {}`: connection cap {}, handshake timeout {} (from its log)",
        args.open_files,
        service.logged("connection limits", "max_connections"),
        service.logged("connection limits", "handshake_timeout"),
    );

    let measured = client.block_on(async {
        // Unmeasured: the first connection of a process pays for things the others do not.
        for _ in 0..5 {
            fresh_health_check(address).await?;
        }
        let baseline = series(args.samples, || fresh_health_check(address)).await;
        let attack = Attack::start(&attackers, address, args.connections, !args.no_reopen);
        let connected = attack.until_opened(args.connections).await;
        if connected < args.connections {
            println!(
                "only {connected} of the {} silent connections could connect within {} s; \
                 measuring anyway",
                args.connections,
                START_TIMEOUT.as_secs()
            );
        }
        let before = attack.counts();
        let started = Instant::now();
        let attacked = series(args.samples, || fresh_health_check(address)).await;
        let window = started.elapsed();
        let after = attack.counts();
        attack.stop();
        Ok::<_, anyhow::Error>((baseline, attacked, window, before, after))
    });
    drop(attackers);
    let stopped = client.block_on(service.stop());
    let (baseline, attacked, window, before, after) = measured?;

    println!(
        "\nhealth checks from fresh connections (connect + grpc.health.v1.Health/Check), {} each:",
        args.samples
    );
    println!("  baseline, no silent connections   {}", baseline.summary());
    println!(
        "  with {} silent connections        {}",
        args.connections,
        attacked.summary()
    );
    println!(
        "  attacker during the {:.1} s measured: held {} → {} connections, the server closed {} \
         ({:.0}/s) and {} were reopened; {} connects failed",
        window.as_secs_f64(),
        before.held(),
        after.held(),
        after.closed - before.closed,
        (after.closed - before.closed) as f64 / window.as_secs_f64(),
        after.opened - before.opened,
        after.connect_failures - before.connect_failures,
    );
    if let (Some(with), Some(without)) = (attacked.percentile(99.0), baseline.percentile(99.0)) {
        println!(
            "health p99 ratio (attacked / baseline): {:.2}",
            with.as_secs_f64() / without.as_secs_f64()
        );
    }
    let met = attacked.under(HEALTH_P99_TARGET);
    println!(
        "target: health p99 < {} ms with the silent connections held: {}",
        HEALTH_P99_TARGET.as_millis(),
        verdict(met)
    );
    println!("licensing after SIGTERM: {stopped}");
    Ok(if met {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn stalled_streams(args: &StalledArgs) -> anyhow::Result<ExitCode> {
    let binary = startup::locate(args.licensing_binary.as_deref())?;
    let client = runtime("client", 2)?;
    let service = client.block_on(Service::start(&binary, None))?;
    let address = service.address;
    let measured = client.block_on(async {
        let channel = connect(address).await?;
        let (now, took) = sandbox_with_entries(&channel, args.entries).await?;
        println!(
            "sandbox account {ACCOUNT_ID:?}: {} audit entries ({} AdvanceClock calls of a minute in {:.1} s)",
            args.entries + 1,
            args.entries,
            took.as_secs_f64()
        );
        let mut licensing = LicensingServiceClient::new(channel.clone());
        for _ in 0..5 {
            get_account(&mut licensing).await?;
        }
        let baseline = series(args.samples, || get_account_timed(licensing.clone())).await;
        let baseline_ingest = ingest_once(&channel, now, "baseline").await;

        let stalled = Stalled::open(address, args.streams, args.streams_per_connection).await?;
        let answered = stalled.headers.len();
        let attacked = series(args.samples, || get_account_timed(licensing.clone())).await;
        let attacked_ingest = ingest_once(&channel, now, "stalled").await;
        drop(stalled);
        Ok::<_, anyhow::Error>((
            baseline,
            baseline_ingest,
            answered,
            attacked,
            attacked_ingest,
        ))
    });
    let stopped = client.block_on(service.stop());
    let (baseline, baseline_ingest, answered, attacked, attacked_ingest) = measured?;

    println!(
        "{} ReadAuditTrail streams that never read ({} per connection, stream window 0): {answered} \
         answered with response headers within {} s",
        args.streams,
        args.streams_per_connection,
        HEADERS_TIMEOUT.as_secs()
    );
    println!(
        "\nGetAccount from a normal client on its own connection, {} each:",
        args.samples
    );
    println!("  baseline, no stalled streams   {}", baseline.summary());
    println!(
        "  with {} stalled streams        {}",
        args.streams,
        attacked.summary()
    );
    println!("Ingest of one batch (an unknown member's login at the sandbox's time):");
    println!(
        "  baseline, no stalled streams   {}",
        ingest_summary(&baseline_ingest)
    );
    println!(
        "  with {} stalled streams        {}",
        args.streams,
        ingest_summary(&attacked_ingest)
    );
    let get_met = attacked.under(GET_ACCOUNT_P99_TARGET);
    let ingest_met = attacked_ingest.is_ok();
    println!(
        "target: GetAccount p99 < {} ms with the stalled streams: {}",
        GET_ACCOUNT_P99_TARGET.as_millis(),
        verdict(get_met)
    );
    println!(
        "target: Ingest acknowledged within {} s with the stalled streams: {}",
        INGEST_DEADLINE.as_secs(),
        verdict(ingest_met)
    );
    println!("licensing after SIGTERM: {stopped}");
    Ok(if get_met && ingest_met {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT MET" }
}

fn runtime(name: &str, workers: usize) -> anyhow::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("building the {name} runtime"))
}

/// The `licensing` binary as a child process on a free loopback port, with a fresh database.
#[derive(Debug)]
struct Service {
    child: Child,
    address: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    _data: tempfile::TempDir,
}

impl Service {
    /// Starts `binary`, under `ulimit -n open_files` when given, and waits until SERVING.
    async fn start(binary: &Path, open_files: Option<u64>) -> anyhow::Result<Service> {
        let data = tempfile::tempdir().context("creating the database folder")?;
        let mut command = match open_files {
            Some(limit) => {
                let mut shell = Command::new("sh");
                shell
                    .arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(binary);
                shell
            }
            None => Command::new(binary),
        };
        command
            .args([
                "--listen",
                "127.0.0.1:0",
                "--log",
                "info",
                "--log-format",
                "text",
            ])
            .arg("--data-dir")
            .arg(data.path().join("db"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // The binary refuses unknown LICENSING_* variables and reads the known ones.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LICENSING_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let mut early = Vec::new();
        let address = timeout(
            START_TIMEOUT,
            startup::listening_address(&mut lines, &mut early),
        )
        .await;
        let address = match address {
            Ok(Ok(address)) => address,
            failed => {
                let tail = early[early.len().saturating_sub(LOG_TAIL)..].join("\n  ");
                let error = match failed {
                    Ok(Err(e)) => e,
                    _ => anyhow::anyhow!("no listening line within {START_TIMEOUT:?}"),
                };
                bail!("{error:#}; the licensing log ends with:\n  {tail}");
            }
        };
        let log = Arc::new(Mutex::new(early));
        {
            let log = log.clone();
            // Read to the end, so the process never blocks on a full pipe.
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        let service = Service {
            child,
            address,
            log,
            _data: data,
        };
        service.until_serving().await?;
        Ok(service)
    }

    async fn until_serving(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            match fresh_health_check(self.address).await {
                Ok(_) => return Ok(()),
                Err(e) if started.elapsed() > START_TIMEOUT => {
                    return Err(e.context(format!("not SERVING within {START_TIMEOUT:?}")));
                }
                // Polling with a deadline: the service is still starting.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// The value of `field=` in the first log line containing `message`, or "?".
    fn logged(&self, message: &str, field: &str) -> String {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter()
            .filter(|line| line.contains(message))
            .find_map(|line| {
                line.split_whitespace()
                    .find_map(|part| part.strip_prefix(field)?.strip_prefix('='))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "?".to_owned())
    }

    /// Sends SIGTERM and waits; kills the process if it does not stop in time. Says how it ended.
    async fn stop(mut self) -> String {
        let Some(pid) = self.child.id() else {
            return "had already exited".to_owned();
        };
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
        if !sent.is_ok_and(|status| status.success()) {
            let _ = self.child.kill().await;
            return "kill -TERM failed; killed".to_owned();
        }
        match timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => "stopped cleanly".to_owned(),
            Ok(Ok(status)) => format!("exited with {status}"),
            Ok(Err(e)) => format!("could not be waited for: {e}"),
            Err(_) => {
                let _ = self.child.kill().await;
                format!(
                    "still running {} s after SIGTERM; killed",
                    STOP_TIMEOUT.as_secs()
                )
            }
        }
    }
}

/// Latencies of a series of calls, and its failures.
#[derive(Debug, Default)]
struct Series {
    answered: Vec<Duration>,
    failed: u32,
    not_made: u32,
    first_error: Option<String>,
}

impl Series {
    /// Nearest-rank percentile of the answered calls.
    fn percentile(&self, p: f64) -> Option<Duration> {
        let mut sorted = self.answered.clone();
        sorted.sort_unstable();
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted.get(rank.saturating_sub(1)).copied()
    }

    /// Every call made and answered, with the p99 under `target`.
    fn under(&self, target: Duration) -> bool {
        self.failed == 0 && self.not_made == 0 && self.percentile(99.0).is_some_and(|p| p < target)
    }

    fn summary(&self) -> String {
        let ms = |d: Option<Duration>| {
            d.map_or_else(
                || "-".to_owned(),
                |d| format!("{:.2} ms", d.as_secs_f64() * 1e3),
            )
        };
        let mut text = format!(
            "p50 {:>9}  p99 {:>9}  max {:>9}  ({} answered, {} failed",
            ms(self.percentile(50.0)),
            ms(self.percentile(99.0)),
            ms(self.answered.iter().max().copied()),
            self.answered.len(),
            self.failed,
        );
        if self.not_made > 0 {
            text.push_str(&format!(
                ", {} not made within {} s",
                self.not_made,
                SERIES_TIMEOUT.as_secs()
            ));
        }
        text.push(')');
        if let Some(error) = &self.first_error {
            text.push_str(&format!("; first error: {error}"));
        }
        text
    }
}

/// Makes `samples` calls one after the other, each bounded by [`CALL_TIMEOUT`], for at most
/// [`SERIES_TIMEOUT`].
async fn series<F, Fut>(samples: u32, mut call: F) -> Series
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Duration>>,
{
    let started = Instant::now();
    let mut series = Series::default();
    for made in 0..samples {
        if started.elapsed() > SERIES_TIMEOUT {
            series.not_made = samples - made;
            break;
        }
        let outcome = match timeout(CALL_TIMEOUT, call()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(anyhow::anyhow!(
                "no answer within {} s",
                CALL_TIMEOUT.as_secs()
            )),
        };
        match outcome {
            Ok(latency) => series.answered.push(latency),
            Err(e) => {
                series.failed += 1;
                series.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    series
}

/// Connect and one health check on a new connection; its latency.
async fn fresh_health_check(address: SocketAddr) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let channel = Endpoint::from_shared(format!("http://{address}"))?
        .tcp_nodelay(true)
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect()
        .await
        .context("connecting")?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .context("grpc.health.v1.Health/Check")?;
    let latency = started.elapsed();
    ensure!(
        answer.get_ref().status == ServingStatus::Serving as i32,
        "health answered {:?}",
        answer.get_ref().status
    );
    Ok(latency)
}

/// The attacker's connection counts since it started.
#[derive(Debug, Clone, Copy)]
struct AttackCounts {
    opened: u64,
    closed: u64,
    connect_failures: u64,
}

impl AttackCounts {
    /// Connections open on the attacker's side.
    fn held(&self) -> u64 {
        self.opened - self.closed
    }
}

#[derive(Debug, Default)]
struct AttackCounters {
    opened: AtomicU64,
    closed: AtomicU64,
    connect_failures: AtomicU64,
}

/// Connections that never send a byte, each in its own task on the attackers' runtime.
#[derive(Debug)]
struct Attack {
    counters: Arc<AttackCounters>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Attack {
    fn start(runtime: &Runtime, address: SocketAddr, connections: u64, reopen: bool) -> Attack {
        let counters = Arc::new(AttackCounters::default());
        let (stop, stopped) = watch::channel(false);
        let tasks = (0..connections)
            .map(|_| runtime.spawn(hold(address, counters.clone(), stopped.clone(), reopen)))
            .collect();
        Attack {
            counters,
            stop,
            tasks,
        }
    }

    fn counts(&self) -> AttackCounts {
        AttackCounts {
            opened: self.counters.opened.load(Ordering::Relaxed),
            closed: self.counters.closed.load(Ordering::Relaxed),
            connect_failures: self.counters.connect_failures.load(Ordering::Relaxed),
        }
    }

    /// Waits until `connections` were opened at least once, or [`START_TIMEOUT`] passed (a
    /// server that stopped accepting); returns how many were.
    async fn until_opened(&self, connections: u64) -> u64 {
        let started = Instant::now();
        while self.counts().opened < connections && started.elapsed() < START_TIMEOUT {
            // Polling with a deadline.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.counts().opened.min(connections)
    }

    /// Ends every task; their connections close with them.
    fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            task.abort();
        }
    }
}

/// One silent connection: connect, send nothing, wait for the server to close it; again if
/// `reopen`.
async fn hold(
    address: SocketAddr,
    counters: Arc<AttackCounters>,
    mut stop: watch::Receiver<bool>,
    reopen: bool,
) {
    loop {
        let connected = tokio::select! {
            connected = TcpStream::connect(address) => connected,
            _ = stop.changed() => return,
        };
        let mut stream = match connected {
            Ok(stream) => stream,
            Err(_) => {
                counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                // A refused or impossible connect fails at once: do not spin on it.
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(10)) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        counters.opened.fetch_add(1, Ordering::Relaxed);
        let mut buffer = [0; 64];
        tokio::select! {
            // Anything but bytes is the server closing it; bytes would be a server that answers
            // before the handshake, and are ignored by a client that never speaks.
            _ = async { while let Ok(1..) = stream.read(&mut buffer).await {} } => {
                counters.closed.fetch_add(1, Ordering::Relaxed);
            }
            _ = stop.changed() => return,
        }
        if !reopen {
            // Held until the stop, so the counts stay what the server did.
            let _ = stop.changed().await;
            return;
        }
    }
}

async fn connect(address: SocketAddr) -> anyhow::Result<Channel> {
    Endpoint::from_shared(format!("http://{address}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {address}"))
}

fn timestamp(at: jiff::Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.as_second(),
        nanos: at.subsec_nanosecond(),
    }
}

/// Creates the sandbox account and advances its clock `entries` times by a minute, one audit
/// entry each. Returns the sandbox's time afterwards and how long it took.
async fn sandbox_with_entries(
    channel: &Channel,
    entries: u32,
) -> anyhow::Result<(prost_types::Timestamp, Duration)> {
    let mut client = LicensingServiceClient::new(channel.clone());
    let start: jiff::Timestamp = SANDBOX_START.parse()?;
    client
        .create_account(api::CreateAccountRequest {
            account_id: ACCOUNT_ID.to_owned(),
            settings: Some(api::AccountSettings {
                time_zone: "UTC".to_owned(),
                ..Default::default()
            }),
            sandbox: true,
            sandbox_clock_start: Some(timestamp(start)),
        })
        .await
        .context("CreateAccount")?;
    let started = Instant::now();
    let mut now = timestamp(start);
    for minute in 1..=i64::from(entries) {
        now = timestamp(start + jiff::SignedDuration::from_mins(minute));
        client
            .advance_clock(api::AdvanceClockRequest {
                account_id: ACCOUNT_ID.to_owned(),
                to: Some(now),
            })
            .await
            .with_context(|| format!("AdvanceClock {minute}"))?;
    }
    Ok((now, started.elapsed()))
}

async fn get_account(client: &mut LicensingServiceClient<Channel>) -> anyhow::Result<()> {
    let answer = client
        .get_account(api::GetAccountRequest {
            account_id: ACCOUNT_ID.to_owned(),
        })
        .await
        .context("GetAccount")?;
    ensure!(
        answer
            .get_ref()
            .account
            .as_ref()
            .is_some_and(|a| a.account_id == ACCOUNT_ID),
        "GetAccount answered another account"
    );
    Ok(())
}

async fn get_account_timed(
    mut client: LicensingServiceClient<Channel>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    get_account(&mut client).await?;
    Ok(started.elapsed())
}

/// One `Ingest` stream with one batch of one event; the time to its acknowledgement and the
/// event's outcome.
async fn ingest_once(
    channel: &Channel,
    now: prost_types::Timestamp,
    label: &str,
) -> anyhow::Result<(Duration, String)> {
    let mut client = IngestionServiceClient::new(channel.clone());
    let request = api::IngestRequest {
        batch_id: 1,
        events: vec![api::Event {
            source: "bench-abuse".to_owned(),
            event_id: format!("login-{label}"),
            account_id: ACCOUNT_ID.to_owned(),
            member_id: "unknown-member".to_owned(),
            occurred_at: Some(now),
            kind: Some(api::event::Kind::AgentLogin(api::AgentLogin {})),
        }],
        traceparent: String::new(),
    };
    let started = Instant::now();
    let acknowledged = timeout(INGEST_DEADLINE, async {
        let mut answers = client
            .ingest(tokio_stream::iter([request]))
            .await
            .context("Ingest")?
            .into_inner();
        let answer = answers
            .message()
            .await
            .context("Ingest answer")?
            .context("the Ingest stream ended without an answer")?;
        let outcome = answer
            .outcomes
            .first()
            .context("an answer without outcomes")?;
        Ok::<_, anyhow::Error>(format!("{:?}", outcome.outcome()))
    })
    .await
    .map_err(|_| anyhow::anyhow!("not acknowledged within {} s", INGEST_DEADLINE.as_secs()))??;
    Ok((started.elapsed(), acknowledged))
}

fn ingest_summary(outcome: &anyhow::Result<(Duration, String)>) -> String {
    match outcome {
        Ok((latency, outcome)) => format!(
            "acknowledged in {:.2} ms ({outcome})",
            latency.as_secs_f64() * 1e3
        ),
        Err(e) => format!("{e:#}"),
    }
}

/// `ReadAuditTrail` streams on raw HTTP/2 connections that announce a stream window of 0 and
/// never release capacity: the server can send their response headers, never their messages.
/// Dropping it closes the connections.
#[derive(Debug)]
struct Stalled {
    /// The request halves, kept so the streams stay open.
    _requests: Vec<h2::SendStream<Bytes>>,
    /// The response bodies, never read.
    headers: Vec<h2::RecvStream>,
    /// The connections' request handles: a client whose handles are all gone closes it.
    _senders: Vec<h2::client::SendRequest<Bytes>>,
    connections: Vec<JoinHandle<()>>,
}

impl Stalled {
    async fn open(
        address: SocketAddr,
        streams: u32,
        per_connection: u32,
    ) -> anyhow::Result<Stalled> {
        let frame = grpc_frame(&api::ReadAuditTrailRequest {
            account_id: ACCOUNT_ID.to_owned(),
            from: None,
            to: None,
        });
        let mut requests = Vec::new();
        let mut responses = Vec::new();
        let mut connections = Vec::new();
        let mut senders = Vec::new();
        let mut left = streams;
        while left > 0 {
            let tcp = TcpStream::connect(address).await.context("connecting")?;
            tcp.set_nodelay(true)?;
            let (mut send, connection) = h2::client::Builder::new()
                .initial_window_size(0)
                .handshake::<_, Bytes>(tcp)
                .await
                .context("HTTP/2 handshake")?;
            connections.push(tokio::spawn(async move {
                let _ = connection.await;
            }));
            for _ in 0..per_connection.min(left) {
                send = send.ready().await.context("a stream slot")?;
                let request = http::Request::builder()
                    .method(http::Method::POST)
                    .uri(format!("http://{address}{READ_AUDIT_TRAIL}"))
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(())?;
                let (response, mut body) = send.send_request(request, false)?;
                body.send_data(frame.clone(), true)?;
                requests.push(body);
                responses.push(response);
                left -= 1;
            }
            senders.push(send);
        }
        let deadline = tokio::time::Instant::now() + HEADERS_TIMEOUT;
        let answered = futures::future::join_all(
            responses
                .into_iter()
                .map(|response| tokio::time::timeout_at(deadline, response)),
        )
        .await;
        let headers = answered
            .into_iter()
            .filter_map(|answer| match answer {
                Ok(Ok(response)) if response.status() == http::StatusCode::OK => {
                    Some(response.into_body())
                }
                _ => None,
            })
            .collect();
        Ok(Stalled {
            _requests: requests,
            headers,
            _senders: senders,
            connections,
        })
    }
}

impl Drop for Stalled {
    fn drop(&mut self) {
        for connection in &self.connections {
            connection.abort();
        }
    }
}

/// A gRPC message frame: uncompressed flag, big-endian length, the encoded message.
fn grpc_frame(message: &impl prost::Message) -> Bytes {
    let encoded = message.encode_to_vec();
    let mut frame = Vec::with_capacity(5 + encoded.len());
    frame.push(0);
    frame.extend_from_slice(
        &u32::try_from(encoded.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    frame.extend_from_slice(&encoded);
    Bytes::from(frame)
}
