//! Readiness and liveness for Kubernetes' gRPC probes, on the standard health service.
//!
//! - Readiness: the overall status (`service: ""`) and each API service's. NOT_SERVING after a
//!   storage error (writes are refused until a restart) and while draining at shutdown.
//! - Liveness: [`LIVENESS_SERVICE`]. NOT_SERVING while the writer of usage events has been on
//!   one group commit (its transaction and flush) for longer than [`STALL`]: a process whose
//!   writer is stuck answers reads but would never acknowledge another event, and a restart is
//!   what helps. It stays SERVING while draining, so that a drain is not cut short by a kill.

use std::{
    sync::{
        Arc, LazyLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tonic_health::{ServingStatus, server::HealthReporter};

/// The health service name liveness probes ask for.
pub const LIVENESS_SERVICE: &str = "liveness";
/// How long one group commit may take before the process is reported not alive.
pub const STALL: Duration = Duration::from_secs(60);
/// How often the writer's progress is looked at.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Whether the writer is in a group commit, and since when.
#[derive(Debug, Default)]
pub struct Liveness {
    /// Milliseconds since [`EPOCH`], plus one, when the current group commit began; 0 when idle.
    busy_since: AtomicU64,
}

impl Liveness {
    /// The writer began a group commit.
    pub fn busy(&self) {
        let now = EPOCH.elapsed().as_millis() as u64;
        self.busy_since.store(now + 1, Ordering::Release);
    }

    /// The writer answered its group.
    pub fn idle(&self) {
        self.busy_since.store(0, Ordering::Release);
    }

    /// How long the current group commit has taken, if one is under way.
    pub fn busy_for(&self) -> Option<Duration> {
        match self.busy_since.load(Ordering::Acquire) {
            0 => None,
            since => {
                let now = EPOCH.elapsed().as_millis() as u64;
                Some(Duration::from_millis(now.saturating_sub(since - 1)))
            }
        }
    }

    /// Reports [`LIVENESS_SERVICE`] SERVING, then follows the writer for as long as the
    /// runtime runs: NOT_SERVING after `stall` in one group commit, SERVING again once it ends.
    pub async fn report(self: Arc<Self>, health: HealthReporter, stall: Duration) {
        health
            .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
            .await;
        let mut alive = true;
        let mut ticks = tokio::time::interval(CHECK_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let busy_for = self.busy_for();
            match change(alive, busy_for, stall) {
                Some(false) => {
                    tracing::error!(
                        busy_for_seconds = busy_for.unwrap_or_default().as_secs(),
                        "the writer of usage events has been on one group commit for too long: liveness NOT_SERVING"
                    );
                    health
                        .set_service_status(LIVENESS_SERVICE, ServingStatus::NotServing)
                        .await;
                    alive = false;
                }
                Some(true) => {
                    tracing::info!(
                        "the writer of usage events is making progress again: liveness SERVING"
                    );
                    health
                        .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
                        .await;
                    alive = true;
                }
                None => {}
            }
        }
    }
}

/// The liveness to report when it changes: not alive once one group commit took longer than
/// `stall`, alive again when it ended.
fn change(alive: bool, busy_for: Option<Duration>, stall: Duration) -> Option<bool> {
    let stuck = busy_for.is_some_and(|busy| busy > stall);
    (stuck == alive).then_some(!stuck)
}

/// What a health check found, or why it could not ask.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    /// The service answered SERVING.
    Serving,
    /// The service answered another status (its name, e.g. `NOT_SERVING`, `SERVICE_UNKNOWN`).
    Not(String),
}

/// Asks the plaintext health service at `address` (`HOST:PORT`) for `service`'s status, the
/// whole exchange within `timeout`. `Err` says what went wrong: a bad address, no connection,
/// no answer in time, or a call refused.
pub async fn check(address: &str, service: &str, timeout: Duration) -> Result<Checked, String> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| format!("--address {address:?}: not HOST:PORT ({e})"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let asked = async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {address}: {}", crate::error::chain(&e)))?;
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .map_err(|status| {
                format!(
                    "{address} answered {:?}: {}",
                    status.code(),
                    status.message()
                )
            })
    };
    let answer = tokio::time::timeout(timeout, asked)
        .await
        .map_err(|_| format!("no answer from {address} within {timeout:?}"))??;
    let status = tonic_health::pb::health_check_response::ServingStatus::try_from(
        answer.into_inner().status,
    )
    .map_or_else(|e| format!("{e:?}"), |s| s.as_str_name().to_owned());
    Ok(if status == "SERVING" {
        Checked::Serving
    } else {
        Checked::Not(status)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_for_is_measured_from_the_start_of_the_group_commit() {
        let liveness = Liveness::default();
        assert_eq!(liveness.busy_for(), None);
        liveness.busy();
        assert!(
            liveness
                .busy_for()
                .is_some_and(|d| d < Duration::from_secs(5))
        );
        liveness.idle();
        assert_eq!(liveness.busy_for(), None);
    }

    #[test]
    fn a_stuck_writer_is_not_alive_and_one_that_recovers_is() {
        let stall = Duration::from_secs(60);
        let secs = Duration::from_secs;
        assert_eq!(change(true, None, stall), None, "idle");
        assert_eq!(change(true, Some(secs(59)), stall), None, "busy, in time");
        assert_eq!(change(true, Some(secs(61)), stall), Some(false), "stuck");
        assert_eq!(change(false, Some(secs(120)), stall), None, "still stuck");
        assert_eq!(change(false, None, stall), Some(true), "recovered");
        assert_eq!(
            change(false, Some(secs(1)), stall),
            Some(true),
            "on a new group"
        );
    }
}
