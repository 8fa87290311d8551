//! The `licensing` binary started on a database as an operator starts it: the time from spawning
//! the process to its first SERVING answer of the standard health check (what a readiness probe
//! waits for), and the process's resident memory before and after it served a whole snapshot.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use licensing::api::licensing_service_server::SERVICE_NAME;
use tokio::{
    io::{AsyncBufReadExt as _, BufReader, Lines},
    process::{Child, ChildStderr, Command},
    task::JoinHandle,
    time::timeout,
};
use tonic::{Code, transport::Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::usage::{self, Pass, Resident, TierCounts};

/// The log line the binary writes once its listener is bound, with the bound `address=`.
const LISTENING_LINE: &str = "licensing listening";
/// How long a start may take before the benchmark gives up on it.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the process may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two health checks that did not answer SERVING.
const POLL_INTERVAL: Duration = Duration::from_millis(1);
/// Log lines of a failed start shown in the error.
const LOG_TAIL: usize = 20;
/// Pause between the last call and SIGTERM. The binary installs its SIGTERM handler only when
/// the server first polls its shutdown future, which can come a few milliseconds after the first
/// SERVING answer; a SIGTERM in between ends the process with the default action (measured: 3 to
/// 22 of 200 starts without this pause, none of 200 with 5 ms). The pause is not timed.
const SETTLE_BEFORE_SIGTERM: Duration = Duration::from_millis(50);

/// One start of the binary.
#[derive(Debug)]
pub(crate) struct Start {
    /// From spawning the process to reading its "licensing listening" line.
    pub(crate) listening: Duration,
    /// From spawning the process to the first SERVING answer for the licensing service.
    pub(crate) serving: Duration,
    /// The process's memory right after that answer.
    pub(crate) at_serving: Resident,
    /// With an account to read: one full `GetUsage` and the process's memory after it.
    pub(crate) after_read: Option<(Pass, Resident)>,
}

/// The `licensing` binary: `explicit`, or the one cargo built next to this benchmark's binary.
pub(crate) fn locate(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let binary = match explicit {
        Some(path) => path.to_path_buf(),
        None => std::env::current_exe()
            .context("locating the benchmark's binary")?
            .parent()
            .context("the benchmark's binary has no folder")?
            .join("licensing"),
    };
    ensure!(
        binary.is_file(),
        "no licensing binary at {} (build it with `cargo build --release --locked --bin licensing`, \
         or name it with --licensing-binary)",
        binary.display()
    );
    Ok(binary)
}

/// Starts `binary` on `data_dir`, waits for SERVING, reads the account's snapshot once when
/// `expected` is given, and stops the process with SIGTERM, which must end it cleanly.
pub(crate) async fn start(
    binary: &Path,
    data_dir: &Path,
    cache_mb: u64,
    expected: Option<&TierCounts>,
) -> anyhow::Result<Start> {
    let mut command = Command::new(binary);
    command
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--cache-mb")
        .arg(cache_mb.to_string())
        .arg("--log")
        .arg("info")
        .arg("--log-format")
        .arg("text")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // A start that fails half-way must not leave the process behind.
        .kill_on_drop(true);
    // The binary refuses unknown LICENSING_* variables and reads the known ones: the benchmark's
    // environment must not change what is measured.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LICENSING_") {
            command.env_remove(name);
        }
    }

    let spawned = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let stderr = child
        .stderr
        .take()
        .context("the licensing process has no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let mut log = Vec::new();
    let outcome = async {
        let address = timeout(START_TIMEOUT, listening_address(&mut lines, &mut log))
            .await
            .context("no listening line in time")??;
        Ok::<_, anyhow::Error>((address, spawned.elapsed()))
    }
    .await;
    let (address, listening) = match outcome {
        Ok(found) => found,
        Err(e) => return Err(failed(e, child, log, None).await),
    };
    // The rest of the log is kept for errors, and read so the process never blocks on a full pipe.
    let rest = tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            log.push(line);
        }
        log
    });

    match probe(&child, address, spawned, expected).await {
        Ok((serving, at_serving, after_read)) => {
            tokio::time::sleep(SETTLE_BEFORE_SIGTERM).await;
            if let Err(e) = terminate(&mut child).await {
                return Err(failed(e, child, Vec::new(), Some(rest)).await);
            }
            Ok(Start {
                listening,
                serving,
                at_serving,
                after_read,
            })
        }
        Err(e) => Err(failed(e, child, Vec::new(), Some(rest)).await),
    }
}

/// Reads log lines up to the listening line and returns the address it names.
pub(crate) async fn listening_address(
    lines: &mut Lines<BufReader<ChildStderr>>,
    log: &mut Vec<String>,
) -> anyhow::Result<SocketAddr> {
    while let Some(line) = lines
        .next_line()
        .await
        .context("reading the licensing log")?
    {
        let address = line
            .contains(LISTENING_LINE)
            .then(|| {
                line.split_whitespace()
                    .find_map(|field| field.strip_prefix("address="))
                    .map(str::to_owned)
            })
            .flatten();
        log.push(line);
        if let Some(address) = address {
            return address
                .parse()
                .with_context(|| format!("unreadable listening address {address:?}"));
        }
    }
    bail!("the licensing process ended its log before listening")
}

/// Polls the health check until SERVING, then measures memory and, with `expected`, reads the
/// snapshot once.
async fn probe(
    child: &Child,
    address: SocketAddr,
    spawned: Instant,
    expected: Option<&TierCounts>,
) -> anyhow::Result<(Duration, Resident, Option<(Pass, Resident)>)> {
    let pid = child
        .id()
        .context("the licensing process has already exited")?
        .to_string();
    let channel = Endpoint::from_shared(format!("http://{address}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {address}"))?;
    let mut health = HealthClient::new(channel);
    loop {
        let answer = health
            .check(HealthCheckRequest {
                service: SERVICE_NAME.to_owned(),
            })
            .await;
        match answer {
            Ok(answer) if answer.get_ref().status == ServingStatus::Serving as i32 => break,
            // Not registered or not serving yet: the server is still starting.
            Ok(_) => {}
            Err(status) if matches!(status.code(), Code::NotFound | Code::Unavailable) => {}
            Err(status) => return Err(status).context("calling grpc.health.v1.Health/Check"),
        }
        ensure!(
            spawned.elapsed() < START_TIMEOUT,
            "not SERVING after {START_TIMEOUT:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let serving = spawned.elapsed();
    let at_serving = Resident::of(&pid)?;
    let after_read = match expected {
        None => None,
        Some(expected) => {
            let mut client = usage::usage_client(address).await?;
            let pass = usage::read_usage(
                &mut client,
                expected,
                false,
                licensing::api::UsageView::Full,
            )
            .await?;
            Some((pass, Resident::of(&pid)?))
        }
    };
    Ok((serving, at_serving, after_read))
}

/// Sends SIGTERM (as Kubernetes does) and waits for a clean exit.
async fn terminate(child: &mut Child) -> anyhow::Result<()> {
    let pid = child
        .id()
        .context("the licensing process has already exited")?;
    let sent = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .await
        .context("running kill -TERM")?;
    ensure!(sent.success(), "kill -TERM {pid} failed: {sent}");
    let exit = timeout(STOP_TIMEOUT, child.wait())
        .await
        .context("the licensing process did not stop in time after SIGTERM")?
        .context("waiting for the licensing process")?;
    ensure!(exit.success(), "the licensing process exited with {exit}");
    Ok(())
}

/// Kills the process (if still running) and adds the end of its log to `error`.
async fn failed(
    error: anyhow::Error,
    mut child: Child,
    mut log: Vec<String>,
    rest: Option<JoinHandle<Vec<String>>>,
) -> anyhow::Error {
    let _ = child.start_kill();
    let _ = child.wait().await;
    if let Some(rest) = rest
        && let Ok(Ok(lines)) = timeout(STOP_TIMEOUT, rest).await
    {
        log = lines;
    }
    let tail = log[log.len().saturating_sub(LOG_TAIL)..].join("\n  ");
    error.context(format!("the licensing process's log ends with:\n  {tail}"))
}
