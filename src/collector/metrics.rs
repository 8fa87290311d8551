//! The collector's metrics, served as Prometheus text on `GET /metrics` (see
//! [`crate::telemetry::metrics`]). Its tasks count into the atomics here; each scrape copies
//! them, with the spool's depth and lag, into the recorder. Reconnects (by cause) and bytes read
//! (by source) are counted into the recorder where they happen.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use tokio::net::TcpListener;

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

/// Counts a reconnection caused by `cause` (a short, fixed word: the label's values are few).
pub fn reconnect(metrics: &Metrics, cause: &'static str) {
    Metrics::add(&metrics.reconnects, 1);
    metrics::counter!("licensing_collector_reconnects_total", "cause" => cause).increment(1);
}

/// Counts `bytes` read from `source` (a followed file's path, or `stdin`).
pub fn read_bytes(source: &str, bytes: u64) {
    metrics::counter!("licensing_collector_read_bytes_total", "source" => source.to_owned())
        .increment(bytes);
}

impl Metrics {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets the exported metrics from the counters, and the spool's depth and lag read now
    /// (both O(1): a counter and the oldest record).
    pub fn publish(&self, spool: &Spool) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        metrics::gauge!("licensing_collector_spool_depth").set(spool.depth() as f64);
        // A spool that cannot be read has no lag to show; the failure shows in the logs.
        let lag = spool.lag().map_or(0.0, |lag| lag.as_secs_f64());
        metrics::gauge!("licensing_collector_lag_seconds").set(lag);
        for (name, counter) in [
            ("licensing_collector_events_spooled_total", &self.spooled),
            ("licensing_collector_events_sent_total", &self.sent),
            ("licensing_collector_events_applied_total", &self.applied),
            (
                "licensing_collector_events_duplicate_total",
                &self.duplicate,
            ),
            ("licensing_collector_events_refused_total", &self.refused),
            (
                "licensing_collector_events_refused_locally_total",
                &self.refused_locally,
            ),
            ("licensing_collector_malformed_lines_total", &self.malformed),
        ] {
            metrics::counter!(name).absolute(load(counter));
        }
    }
}

/// Says what each metric is, for the `# HELP` lines. Call once, after the recorder is installed.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        "licensing_collector_spool_depth",
        "Events in the spool, not yet acknowledged by licensing."
    );
    describe_gauge!(
        "licensing_collector_lag_seconds",
        "Age of the oldest event not yet acknowledged by licensing (0 when the spool is empty): grows during an outage."
    );
    describe_counter!(
        "licensing_collector_events_spooled_total",
        "Events written to the spool."
    );
    describe_counter!(
        "licensing_collector_events_sent_total",
        "Events sent to licensing, resends included."
    );
    describe_counter!(
        "licensing_collector_events_applied_total",
        "Events licensing applied."
    );
    describe_counter!(
        "licensing_collector_events_duplicate_total",
        "Events licensing had applied before (resends)."
    );
    describe_counter!(
        "licensing_collector_events_refused_total",
        "Events licensing refused (logged with the reason)."
    );
    describe_counter!(
        "licensing_collector_events_refused_locally_total",
        "Events pushed to the local endpoint and refused there as malformed."
    );
    describe_counter!(
        "licensing_collector_malformed_lines_total",
        "Input lines that were not valid events (logged with their position)."
    );
    describe_counter!(
        "licensing_collector_reconnects_total",
        "Connections to licensing made again after one failed or broke, by cause."
    );
    describe_counter!(
        "licensing_collector_read_bytes_total",
        "Bytes read from each followed file (by path) and from standard input."
    );
}

/// Serves `GET /metrics` on `listener` with the process's recorder until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    spool: Spool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let handle = match crate::telemetry::metrics::install_once() {
        Ok(handle) => handle,
        Err(problem) => {
            tracing::error!("metrics are not served: {problem}");
            return;
        }
    };
    describe();
    let before: crate::telemetry::metrics::BeforeScrape = Arc::new(move || metrics.publish(&spool));
    let stopped = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    if let Err(e) = crate::telemetry::metrics::serve(listener, handle, before, stopped).await {
        tracing::error!(error = %e, "serving metrics failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scrape_names_every_metric_and_only_get_metrics_is_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("spool");
        let metrics = Arc::new(Metrics::default());
        Metrics::add(&metrics.malformed, 2);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(serve(listener, metrics, spool, stop));
        let get = |request: &'static str| async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
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
        let response = get("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
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
        ] {
            assert!(
                response.contains(&format!("\nlicensing_collector_{name}\n")),
                "{name} missing:\n{response}"
            );
        }
        assert!(
            get("GET /other HTTP/1.1\r\nConnection: close\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 404")
        );
        assert!(
            get("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 405")
        );
        stop_tx.send(true).expect("stop");
        server.await.expect("the server stops when told");
    }
}
