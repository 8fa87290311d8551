//! The collector's counters, served as Prometheus text on `GET /metrics` by a minimal HTTP/1.1
//! responder: scraping needs one request and one response per connection, not an HTTP stack.

use std::{
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

use super::spool::Spool;

/// How long a scraper may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of a request read: its request line is all that matters.
const REQUEST_BYTES: usize = 8 << 10;

/// Counters, shared by the collector's tasks.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Events written to the spool.
    pub spooled: AtomicU64,
    /// Events sent to `licensing` (resends included).
    pub sent: AtomicU64,
    /// Events `licensing` applied.
    pub applied: AtomicU64,
    /// Events `licensing` had applied before.
    pub duplicate: AtomicU64,
    /// Events `licensing` refused.
    pub refused: AtomicU64,
    /// Events pushed to the local endpoint and refused there as malformed (never spooled).
    pub refused_locally: AtomicU64,
    /// Input lines that were not events.
    pub malformed: AtomicU64,
    /// Attempts to connect again after a failed or broken connection.
    pub reconnects: AtomicU64,
}

impl Metrics {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The Prometheus text exposition, with the spool's depth and lag read now.
    pub fn render(&self, spool: &Spool) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: &dyn std::fmt::Display| {
            let _ = writeln!(out, "# HELP licensing_collector_{name} {help}");
            let _ = writeln!(out, "# TYPE licensing_collector_{name} {kind}");
            let _ = writeln!(out, "licensing_collector_{name} {value}");
        };
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        metric(
            "spool_depth",
            "gauge",
            "Events in the spool, not yet acknowledged by licensing.",
            &spool.depth(),
        );
        // A spool that cannot be read has no lag to show; the failure shows in the logs.
        let lag = spool.lag().map_or(0.0, |lag| lag.as_secs_f64());
        metric(
            "lag_seconds",
            "gauge",
            "How long the oldest event in the spool has been in it (0 when the spool is empty).",
            &lag,
        );
        for (name, help, counter) in [
            (
                "events_spooled_total",
                "Events written to the spool.",
                &self.spooled,
            ),
            (
                "events_sent_total",
                "Events sent to licensing, resends included.",
                &self.sent,
            ),
            (
                "events_applied_total",
                "Events licensing applied.",
                &self.applied,
            ),
            (
                "events_duplicate_total",
                "Events licensing had applied before (resends).",
                &self.duplicate,
            ),
            (
                "events_refused_total",
                "Events licensing refused (logged with the reason).",
                &self.refused,
            ),
            (
                "events_refused_locally_total",
                "Events pushed to the local endpoint and refused there as malformed.",
                &self.refused_locally,
            ),
            (
                "malformed_lines_total",
                "Input lines that were not valid events (logged with their position).",
                &self.malformed,
            ),
            (
                "reconnects_total",
                "Attempts to connect to licensing again after a failed or broken connection.",
                &self.reconnects,
            ),
        ] {
            metric(name, "counter", help, &load(counter));
        }
        out
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, spool: Spool) {
    loop {
        let mut socket = match listener.accept().await {
            Ok((socket, _)) => socket,
            Err(e) => {
                // Out of file descriptors, typically: wait rather than spin.
                tracing::warn!(error = %e, "accepting a metrics connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (metrics, spool) = (metrics.clone(), spool.clone());
        tokio::spawn(async move {
            let Ok(head) = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut socket)).await
            else {
                return;
            };
            let response = respond(&head, || metrics.render(&spool));
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}

/// Reads until the end of the request head (or what fits).
async fn read_head(socket: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0u8; 1024];
    while head.len() < REQUEST_BYTES && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The response to a request whose head is `head`.
fn respond(head: &str, body: impl FnOnce() -> String) -> String {
    let mut request_line = head.lines().next().unwrap_or_default().split(' ');
    let (method, target) = (request_line.next(), request_line.next());
    let path = target.map(|t| t.split('?').next().unwrap_or_default());
    let (status, body, content_type) = match (method, path) {
        (Some("GET"), Some("/metrics")) => {
            ("200 OK", body(), "text/plain; version=0.0.4; charset=utf-8")
        }
        (Some("GET"), _) => (
            "404 Not Found",
            "only /metrics is served\n".to_owned(),
            "text/plain",
        ),
        _ => (
            "405 Method Not Allowed",
            "only GET is served\n".to_owned(),
            "text/plain",
        ),
    };
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_exposition_names_every_metric_and_answers_only_get_metrics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("spool");
        let metrics = Arc::new(Metrics::default());
        Metrics::add(&metrics.malformed, 2);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let server = tokio::spawn(serve(listener, metrics, spool));
        let get = |request: &'static str| async move {
            let mut socket = tokio::net::TcpStream::connect(address)
                .await
                .expect("connect");
            socket.write_all(request.as_bytes()).await.expect("request");
            let mut response = String::new();
            socket
                .read_to_string(&mut response)
                .await
                .expect("response");
            response
        };
        let response = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        for name in [
            "spool_depth 0",
            "lag_seconds 0",
            "events_spooled_total 0",
            "events_sent_total 0",
            "events_applied_total 0",
            "events_duplicate_total 0",
            "events_refused_total 0",
            "events_refused_locally_total 0",
            "malformed_lines_total 2",
            "reconnects_total 0",
        ] {
            assert!(
                response.contains(&format!("\nlicensing_collector_{name}\n")),
                "{name} missing:\n{response}"
            );
        }
        let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
        assert!(
            response.contains(&format!("content-length: {}\r\n", body.len())),
            "{response}"
        );
        assert!(
            get("GET /other HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 404")
        );
        assert!(
            get("POST /metrics HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 405")
        );
        server.abort();
    }
}
