//! The collector's counters, served as Prometheus text on `GET /metrics` by a minimal HTTP
//! responder (the endpoint is optional; scraping needs nothing more).

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

use super::spool::Spool;

/// Counters, shared by the collector's tasks.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Events written to the spool.
    pub spooled: AtomicU64,
    /// Events sent to `licensing` (resends included).
    pub sent: AtomicU64,
    /// Events `licensing` applied.
    pub applied: AtomicU64,
    /// Events `licensing` had already applied.
    pub duplicate: AtomicU64,
    /// Events `licensing` refused.
    pub refused: AtomicU64,
    /// Lines that were not events.
    pub malformed: AtomicU64,
    /// Connections to `licensing` re-established.
    pub reconnects: AtomicU64,
    /// Unix seconds when the oldest unacknowledged batch was sent, 0 when none.
    pub oldest_unacked_sent_at: AtomicU64,
}

impl Metrics {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, spool: &Spool, now_unix: u64) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP licensing_collector_{name} {help}");
            let _ = writeln!(out, "# TYPE licensing_collector_{name} {kind}");
            let _ = writeln!(out, "licensing_collector_{name} {value}");
        };
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        metric(
            "spool_depth",
            "gauge",
            "Events in the spool, not yet acknowledged by licensing.",
            spool.depth() as u64,
        );
        let oldest = load(&self.oldest_unacked_sent_at);
        let lag = if oldest == 0 {
            0
        } else {
            now_unix.saturating_sub(oldest)
        };
        metric(
            "lag_seconds",
            "gauge",
            "Seconds the oldest unacknowledged batch has waited for licensing.",
            lag,
        );
        metric(
            "events_spooled_total",
            "counter",
            "Events written to the spool.",
            load(&self.spooled),
        );
        metric(
            "events_sent_total",
            "counter",
            "Events sent to licensing, resends included.",
            load(&self.sent),
        );
        metric(
            "events_applied_total",
            "counter",
            "Events licensing applied.",
            load(&self.applied),
        );
        metric(
            "events_duplicate_total",
            "counter",
            "Events licensing had applied before.",
            load(&self.duplicate),
        );
        metric(
            "events_refused_total",
            "counter",
            "Events licensing refused.",
            load(&self.refused),
        );
        metric(
            "malformed_lines_total",
            "counter",
            "Input lines that were not valid events.",
            load(&self.malformed),
        );
        metric(
            "reconnects_total",
            "counter",
            "Connections to licensing re-established.",
            load(&self.reconnects),
        );
        out
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: std::sync::Arc<Metrics>, spool: Spool) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let (metrics, spool) = (metrics.clone(), spool.clone());
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let Ok(n) = socket.read(&mut request).await else {
                return;
            };
            let head = String::from_utf8_lossy(&request[..n]);
            let response = if head.starts_with("GET /metrics") {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let body = metrics.render(&spool, now);
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}
