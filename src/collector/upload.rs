//! Upload: streams spooled events to `licensing`'s `Ingest`, several batches in flight, and
//! removes each batch from the spool once acknowledged. A broken stream is re-established with
//! capped, jittered backoff, and everything not acknowledged is sent again: the service answers
//! DUPLICATE for what it already has, so nothing is lost and nothing counted twice.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use super::{backoff::Backoff, metrics::Metrics, spool::Spool};
use crate::api::{self, ingestion_service_client::IngestionServiceClient};

/// How long a batch may wait for its acknowledgement before the stream is deemed broken.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// How to upload.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// `licensing`'s URL.
    pub endpoint: String,
    /// Events per batch.
    pub batch_size: usize,
    /// Batches sent and not yet acknowledged, at most.
    pub in_flight: usize,
    /// The longest wait between reconnection attempts.
    pub backoff_max: Duration,
}

struct InFlight {
    sequences: Vec<u64>,
    sent_at: Instant,
    sent_unix: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Uploads until `stop` turns true and nothing sent is waiting for its acknowledgement (the
/// caller bounds that wait).
pub async fn upload(
    options: UploadOptions,
    spool: Spool,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let seed = u64::from(std::process::id()) ^ unix_now();
    let mut backoff = Backoff::new(Duration::from_millis(100), options.backoff_max, seed);
    let mut first = true;
    loop {
        if *stop.borrow() && spool.depth() == 0 {
            return;
        }
        if !first {
            Metrics::add(&metrics.reconnects, 1);
            let delay = backoff.next_delay();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return;
            }
        }
        first = false;
        match connection(&options, &spool, &metrics, &mut backoff, &mut stop).await {
            Ok(()) => return,
            Err(problem) => {
                tracing::warn!(endpoint = %options.endpoint, %problem, "upload interrupted; reconnecting")
            }
        }
    }
}

/// One connection: returns Ok when stopped with nothing in flight, Err when it broke.
async fn connection(
    options: &UploadOptions,
    spool: &Spool,
    metrics: &Metrics,
    backoff: &mut Backoff,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let channel = Endpoint::from_shared(options.endpoint.clone())
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let (requests, outbound) = mpsc::channel(options.in_flight.max(1));
    let mut client = IngestionServiceClient::new(channel).max_decoding_message_size(16 << 20);
    let mut answers = client
        .ingest(ReceiverStream::new(outbound))
        .await
        .map_err(|e| format!("opening Ingest: {e}"))?
        .into_inner();
    let added = spool.added();
    let mut in_flight: BTreeMap<u64, InFlight> = BTreeMap::new();
    // Every connection starts from the spool's head: whatever was not acknowledged is sent again.
    let mut last_sent: Option<u64> = None;
    let mut next_batch = 1u64;
    loop {
        let stopping = *stop.borrow();
        if stopping && in_flight.is_empty() {
            return Ok(());
        }
        while !stopping && in_flight.len() < options.in_flight {
            let events = spool
                .read(last_sent, options.batch_size)
                .map_err(|e| e.to_string())?;
            let Some(&(last, _)) = events.last() else {
                break;
            };
            let (sequences, events): (Vec<u64>, Vec<api::Event>) = events.into_iter().unzip();
            let count = events.len() as u64;
            requests
                .send(api::IngestRequest {
                    batch_id: next_batch,
                    events,
                })
                .await
                .map_err(|_| "the stream closed".to_owned())?;
            Metrics::add(&metrics.sent, count);
            let sent_unix = unix_now();
            in_flight.insert(
                next_batch,
                InFlight {
                    sequences,
                    sent_at: Instant::now(),
                    sent_unix,
                },
            );
            next_batch += 1;
            last_sent = Some(last);
        }
        let oldest = in_flight.values().map(|b| b.sent_unix).min().unwrap_or(0);
        metrics
            .oldest_unacked_sent_at
            .store(oldest, std::sync::atomic::Ordering::Relaxed);
        tokio::select! {
            answer = answers.message() => {
                let answer = match answer {
                    Ok(Some(answer)) => answer,
                    Ok(None) => return Err("licensing ended the stream".into()),
                    Err(status) => return Err(format!("licensing answered {status}")),
                };
                let Some(batch) = in_flight.remove(&answer.batch_id) else {
                    return Err(format!("an answer for unknown batch {}", answer.batch_id));
                };
                for outcome in &answer.outcomes {
                    match api::Outcome::try_from(outcome.outcome) {
                        Ok(api::Outcome::Applied) => Metrics::add(&metrics.applied, 1),
                        Ok(api::Outcome::Duplicate) => Metrics::add(&metrics.duplicate, 1),
                        _ => {
                            Metrics::add(&metrics.refused, 1);
                            tracing::warn!(event_id = %outcome.event_id, detail = %outcome.detail, "licensing refused an event");
                        }
                    }
                }
                // A refusal is final too: resending would get the same answer.
                spool.remove(&batch.sequences).map_err(|e| e.to_string())?;
                backoff.reset();
            }
            () = added.notified(), if !stopping && in_flight.len() < options.in_flight => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                if in_flight.values().any(|b| b.sent_at.elapsed() > ACK_TIMEOUT) {
                    return Err(format!("no acknowledgement within {ACK_TIMEOUT:?}"));
                }
            }
            _ = stop.changed() => {}
        }
    }
}
