//! Upload: streams spooled events to `licensing`'s `Ingest` in sequence order, up to
//! `in_flight` batches unacknowledged, and removes each batch from the spool once acknowledged.
//!
//! A broken stream (an error, the stream ending, or an acknowledgement later than
//! [`ACK_TIMEOUT`]) is re-established with capped, jittered backoff, and every connection starts
//! again from the spool's head: everything unacknowledged is sent again. The service answers
//! DUPLICATE for what it already has, so nothing is lost and nothing is counted twice.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use super::{
    backoff::Backoff,
    metrics::Metrics,
    spool::{Spool, SpoolError},
};
use crate::{
    api::{self, ingestion_service_client::IngestionServiceClient},
    server::{KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, MAX_ENCODING_MESSAGE_BYTES},
};

/// How long a batch may wait for its acknowledgement before the stream is deemed broken. The
/// service answers after a group commit and a flush: seconds would already be very slow.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first reconnection delay's ceiling; it doubles up to the configured cap.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How often the same connection failure is repeated at warn.
const REPEATED_WARNING_INTERVAL: Duration = Duration::from_secs(60);

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
    /// Where the credential presented to `licensing` is read, if it wants one.
    pub credential: Option<CredentialFile>,
    /// TLS towards `licensing` (an `https://` URL): the server verified, maybe a client
    /// certificate presented.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

/// A file holding the collector's credential, read at every connection.
#[derive(Debug, Clone)]
pub enum CredentialFile {
    /// An API key (`lk_…`).
    ApiKey(std::path::PathBuf),
    /// A JWT.
    Token(std::path::PathBuf),
}

impl CredentialFile {
    /// The credential in the file, checked for its shape. Problems never quote the file's text.
    pub fn read(&self) -> Result<crate::auth::Secret, String> {
        let (flag, path) = match self {
            CredentialFile::ApiKey(path) => {
                ("--api-key-file / LICENSING_COLLECTOR_API_KEY_FILE", path)
            }
            CredentialFile::Token(path) => ("--token-file / LICENSING_COLLECTOR_TOKEN_FILE", path),
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{flag} {:?}: cannot read it: {e}", path.display()))?;
        let secret = text.trim();
        let valid = match self {
            CredentialFile::ApiKey(_) => {
                secret.starts_with(crate::auth::api_keys::SECRET_PREFIX)
                    && secret.len() > crate::auth::api_keys::SECRET_PREFIX.len()
                    && secret
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            }
            CredentialFile::Token(_) => {
                secret.bytes().filter(|b| *b == b'.').count() == 2
                    && secret
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.=".contains(&b))
            }
        };
        if valid {
            Ok(crate::auth::Secret::new(secret))
        } else {
            Err(match self {
                CredentialFile::ApiKey(_) => format!(
                    "{flag} {:?}: does not hold an API key (one line: lk_ and hex digits, as licensing new-key prints it)",
                    path.display()
                ),
                CredentialFile::Token(_) => format!(
                    "{flag} {:?}: does not hold a JWT (one line: three base64url parts joined by dots)",
                    path.display()
                ),
            })
        }
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum Broken {
    /// The connection or the stream failed: connect again.
    Stream(String),
    /// The spool failed: uploading cannot go on safely.
    Spool(SpoolError),
}

impl From<SpoolError> for Broken {
    fn from(e: SpoolError) -> Broken {
        Broken::Spool(e)
    }
}

/// A batch sent and not yet acknowledged.
#[derive(Debug)]
struct InFlight {
    sequences: Vec<u64>,
    sent_at: Instant,
    /// Ends when the batch is acknowledged (or the connection breaks).
    span: tracing::Span,
}

/// Uploads until `stop` turns true and nothing sent waits for its acknowledgement (the caller
/// bounds that wait with its grace period). Returns an error only when the spool fails.
pub async fn upload(
    options: UploadOptions,
    spool: Spool,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), SpoolError> {
    let seed = u64::from(std::process::id())
        ^ SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let mut backoff = Backoff::new(FIRST_BACKOFF, options.backoff_max, seed);
    // While licensing stays down, the same failure is logged at warn once a minute, not at
    // every attempt.
    let mut warned: Option<(String, Instant)> = None;
    // Failed attempts in a row, and since when: said once the next connection is up.
    let mut failures = 0u32;
    let mut outage_since: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            // Draining is the open connection's job; what is not acknowledged stays in the
            // spool for the next start.
            return Ok(());
        }
        let outage = outage_since.take().map(|since| (failures, since.elapsed()));
        failures = 0;
        match connection(&options, &spool, &metrics, &mut backoff, &mut stop, outage).await {
            Ok(()) => return Ok(()),
            Err(Broken::Spool(e)) => return Err(e),
            Err(Broken::Stream(problem)) => {
                let cause = cause(&problem);
                failures += 1;
                outage_since.get_or_insert_with(Instant::now);
                let delay = backoff.next_delay();
                let repeated = warned.as_ref().is_some_and(|(said, at)| {
                    *said == problem && at.elapsed() < REPEATED_WARNING_INTERVAL
                });
                if repeated {
                    tracing::debug!(licensing = %options.endpoint, %problem, spooled = spool.depth(), retry_in = ?delay, "upload interrupted");
                } else {
                    tracing::warn!(licensing = %options.endpoint, %problem, spooled = spool.depth(), retry_in = ?delay, "upload interrupted");
                    warned = Some((problem, Instant::now()));
                }
                super::metrics::reconnect(&metrics, cause);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|stop| *stop) => return Ok(()),
                }
            }
        }
    }
}

/// How often a collector catching up a backlog says how far it got.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
/// A spool at least this deep when a connection opens is a backlog worth reporting on.
const BACKLOG: u64 = 10_000;

/// The progress of a backlog's upload, logged every [`PROGRESS_INTERVAL`] until it is caught up.
#[derive(Debug)]
struct Progress {
    /// Whether a backlog is being caught up.
    active: bool,
    since: Instant,
    acknowledged: u64,
}

impl Progress {
    fn new(spooled: u64) -> Progress {
        Progress {
            active: spooled >= BACKLOG,
            since: Instant::now(),
            acknowledged: 0,
        }
    }

    fn acknowledged(&mut self, events: u64, spooled: u64) {
        if !self.active {
            return;
        }
        self.acknowledged += events;
        if spooled == 0 {
            tracing::info!(
                acknowledged = self.acknowledged,
                "backlog caught up: the spool is empty"
            );
            self.active = false;
        } else if self.since.elapsed() >= PROGRESS_INTERVAL {
            let rate = self.acknowledged as f64 / self.since.elapsed().as_secs_f64();
            tracing::info!(
                acknowledged = self.acknowledged,
                spooled,
                events_per_second = rate.round(),
                "catching up the backlog"
            );
            self.since = Instant::now();
            self.acknowledged = 0;
        }
    }
}

/// The cause of a broken connection, as the reconnect counter labels it.
fn cause(problem: &str) -> &'static str {
    const CAUSES: &[(&str, &str)] = &[
        ("connecting", "connect"),
        ("opening Ingest", "refused"),
        ("licensing answered", "stream_error"),
        ("licensing ended the stream", "stream_ended"),
        ("no acknowledgement", "ack_timeout"),
        ("the URL", "configuration"),
        ("TLS", "configuration"),
    ];
    CAUSES
        .iter()
        .find(|(prefix, _)| problem.starts_with(prefix))
        .map_or("other", |(_, cause)| cause)
}

/// One connection: Ok once stopped with nothing in flight.
async fn connection(
    options: &UploadOptions,
    spool: &Spool,
    metrics: &Metrics,
    backoff: &mut Backoff,
    stop: &mut watch::Receiver<bool>,
    outage: Option<(u32, Duration)>,
) -> Result<(), Broken> {
    let broken = |what: &str, e: &dyn std::error::Error| {
        Broken::Stream(format!("{what}: {}", crate::error::chain(e)))
    };
    let mut endpoint =
        Endpoint::from_shared(options.endpoint.clone()).map_err(|e| broken("the URL", &e))?;
    if let Some(tls) = &options.tls {
        endpoint = endpoint
            .tls_config(tls.clone())
            .map_err(|e| broken("TLS", &e))?;
    }
    // Read at every connection: a rotated key or a renewed token is used from the next one on.
    let credential = match &options.credential {
        Some(file) => Some(file.read().map_err(Broken::Stream)?),
        None => None,
    };
    let channel = endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        // Pings find a dead peer even while idle, when no acknowledgement is awaited.
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect()
        .await
        .map_err(|e| broken("connecting", &e))?;
    let (requests, outbound) = mpsc::channel(options.in_flight);
    let mut client =
        IngestionServiceClient::new(channel).max_decoding_message_size(MAX_ENCODING_MESSAGE_BYTES);
    let mut call = tonic::Request::new(ReceiverStream::new(outbound));
    if let Some(credential) = &credential {
        call.metadata_mut()
            .insert("authorization", credential.bearer());
    }
    let mut answers = client
        .ingest(call)
        .await
        .map_err(|e| broken("opening Ingest", &e))?
        .into_inner();
    match outage {
        Some((attempts, lasted)) => tracing::info!(
            licensing = %options.endpoint,
            spooled = spool.depth(),
            failed_attempts = attempts,
            outage_seconds = lasted.as_secs(),
            "reconnected to licensing: uploading again"
        ),
        None => tracing::info!(licensing = %options.endpoint, spooled = spool.depth(), "uploading"),
    }
    // A backlog being caught up reports its progress now and then.
    let mut progress = Progress::new(spool.depth());
    let mut in_flight: BTreeMap<u64, InFlight> = BTreeMap::new();
    // Every connection starts from the spool's head: what was not acknowledged is sent again.
    let mut last_sent: Option<u64> = None;
    let mut next_batch = 1u64;
    // Set when the request side closed: the answers already on their way are still taken (each
    // one spares a resend), until the answer stream says why it ended.
    let mut requests_closed = false;
    loop {
        let stopping = *stop.borrow();
        if stopping && in_flight.is_empty() {
            return Ok(());
        }
        while !stopping && !requests_closed && in_flight.len() < options.in_flight {
            let read = spool.read(last_sent, options.batch_size).await?;
            let Some(&(last, _)) = read.last() else {
                break;
            };
            let (sequences, events): (Vec<u64>, Vec<api::Event>) = read.into_iter().unzip();
            let count = events.len() as u64;
            // Each batch is a trace of its own, continued by licensing's span for it.
            let span = tracing::info_span!(
                target: crate::telemetry::calls::TRACE_TARGET,
                parent: None,
                "upload batch",
                otel.kind = "client",
                batch_id = next_batch,
                events = count,
                refused = tracing::field::Empty,
            );
            let request = api::IngestRequest {
                batch_id: next_batch,
                events,
                traceparent: crate::telemetry::traceparent_of(&span),
            };
            if requests.send(request).await.is_err() {
                requests_closed = true;
                break;
            }
            Metrics::add(&metrics.sent, count);
            in_flight.insert(
                next_batch,
                InFlight {
                    sequences,
                    sent_at: Instant::now(),
                    span,
                },
            );
            next_batch += 1;
            last_sent = Some(last);
        }
        let deadline = in_flight.values().map(|b| b.sent_at + ACK_TIMEOUT).min();
        tokio::select! {
            answer = answers.message() => {
                let answer = match answer {
                    Ok(Some(answer)) => answer,
                    Ok(None) => return Err(Broken::Stream("licensing ended the stream".into())),
                    Err(status) => return Err(broken("licensing answered", &status)),
                };
                let Some(batch) = in_flight.remove(&answer.batch_id) else {
                    return Err(Broken::Stream(format!("an answer for batch {}, which is not in flight", answer.batch_id)));
                };
                if answer.outcomes.len() != batch.sequences.len() {
                    return Err(Broken::Stream(format!(
                        "batch {} of {} events answered with {} outcomes",
                        answer.batch_id,
                        batch.sequences.len(),
                        answer.outcomes.len()
                    )));
                }
                let refused = count(metrics, answer.batch_id, &answer.outcomes);
                batch.span.record("refused", refused);
                // A refusal is final too: sending the event again would get the same answer.
                let acknowledged = batch.sequences.len() as u64;
                spool.remove(batch.sequences).await?;
                backoff.reset();
                progress.acknowledged(acknowledged, spool.depth());
            }
            () = spool.appended(), if !stopping && !requests_closed && in_flight.len() < options.in_flight => {}
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                return Err(Broken::Stream(format!("no acknowledgement within {ACK_TIMEOUT:?}")));
            }
            _ = stop.changed(), if !stopping => {}
        }
    }
}

/// Counts the outcomes of an acknowledged batch; refusals are logged with their reason.
/// Returns how many were refused.
fn count(metrics: &Metrics, batch_id: u64, outcomes: &[api::EventOutcome]) -> u64 {
    let mut refusals = 0;
    for outcome in outcomes {
        match api::Outcome::try_from(outcome.outcome) {
            Ok(api::Outcome::Applied) => Metrics::add(&metrics.applied, 1),
            Ok(api::Outcome::Duplicate) => Metrics::add(&metrics.duplicate, 1),
            refused => {
                refusals += 1;
                Metrics::add(&metrics.refused, 1);
                let reason = api::RefusalReason::try_from(outcome.refusal)
                    .map_or("UNKNOWN", |r| r.as_str_name());
                tracing::warn!(
                    event_id = %outcome.event_id,
                    batch_id,
                    outcome = refused.map_or("UNKNOWN", |o| o.as_str_name()),
                    reason,
                    detail = %outcome.detail,
                    "licensing refused an event; it is dropped from the spool"
                );
            }
        }
    }
    refusals
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashSet,
        pin::Pin,
        sync::{
            Mutex,
            atomic::{AtomicU64, Ordering},
        },
    };

    use futures::Stream;
    use tonic::{Request, Response, Status, Streaming};

    use super::*;
    use crate::api::ingestion_service_server::{IngestionService, IngestionServiceServer};

    /// A `licensing` stand-in that remembers event ids. On its first connection it commits the
    /// batch after `break_after` without answering it, and breaks the stream.
    #[derive(Debug, Clone, Default)]
    struct Fake {
        seen: Arc<Mutex<HashSet<String>>>,
        connections: Arc<AtomicU64>,
        break_after: u64,
    }

    impl Fake {
        fn outcome(&self, event: &api::Event) -> api::EventOutcome {
            let new = self
                .seen
                .lock()
                .expect("lock")
                .insert(event.event_id.clone());
            let (outcome, refusal) = if event.event_id == "refused" {
                (api::Outcome::Refused, api::RefusalReason::UnknownAccount)
            } else if new {
                (api::Outcome::Applied, api::RefusalReason::Unspecified)
            } else {
                (api::Outcome::Duplicate, api::RefusalReason::Unspecified)
            };
            api::EventOutcome {
                event_id: event.event_id.clone(),
                outcome: outcome as i32,
                refusal: refusal as i32,
                detail: String::new(),
            }
        }
    }

    type Answer = Result<api::IngestResponse, Status>;

    #[tonic::async_trait]
    impl IngestionService for Fake {
        type IngestStream = Pin<Box<dyn Stream<Item = Answer> + Send + 'static>>;

        async fn ingest(
            &self,
            request: Request<Streaming<api::IngestRequest>>,
        ) -> Result<Response<Self::IngestStream>, Status> {
            let connection = self.connections.fetch_add(1, Ordering::SeqCst);
            let mut inbound = request.into_inner();
            let (tx, rx) = mpsc::channel(64);
            let fake = self.clone();
            tokio::spawn(async move {
                let mut batches = 0;
                while let Ok(Some(request)) = inbound.message().await {
                    batches += 1;
                    let outcomes: Vec<_> = request.events.iter().map(|e| fake.outcome(e)).collect();
                    if connection == 0 && batches > fake.break_after {
                        let _ = tx.send(Err(Status::unavailable("going away"))).await;
                        return;
                    }
                    let answer = api::IngestResponse {
                        batch_id: request.batch_id,
                        outcomes,
                    };
                    if tx.send(Ok(answer)).await.is_err() {
                        return;
                    }
                }
            });
            Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
        }
    }

    fn event(id: &str) -> api::Event {
        api::Event {
            source: "s".into(),
            event_id: id.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_broken_stream_is_resumed_and_everything_is_delivered_once_acknowledged() {
        let fake = Fake {
            break_after: 10,
            ..Fake::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(IngestionServiceServer::new(fake.clone()))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("spool");
        let metrics = Arc::new(Metrics::default());
        let (stop_tx, stop) = watch::channel(false);
        let uploader = tokio::spawn(upload(
            UploadOptions {
                endpoint: format!("http://{address}"),
                batch_size: 10,
                in_flight: 4,
                backoff_max: Duration::from_millis(200),
                credential: None,
                tls: None,
            },
            spool.clone(),
            metrics.clone(),
            stop,
        ));
        // Appended while the uploader runs: each append must wake it.
        for chunk in 0..25 {
            let events = (0..10).map(|i| event(&format!("e{}", chunk * 10 + i)));
            spool.append(events.collect(), None).await.expect("append");
        }
        spool
            .append(vec![event("refused")], None)
            .await
            .expect("append");
        let deadline = Instant::now() + Duration::from_secs(20);
        while spool.depth() > 0 {
            assert!(
                Instant::now() < deadline,
                "{} events still spooled",
                spool.depth()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = stop_tx.send(true);
        uploader.await.expect("task").expect("upload");
        server.abort();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(fake.seen.lock().expect("lock").len(), 251);
        // The batch committed but not acknowledged before the break is sent again and answered
        // DUPLICATE; the answers already on their way when the stream broke are still taken.
        assert_eq!(load(&metrics.applied), 240);
        assert_eq!(load(&metrics.duplicate), 10);
        assert_eq!(load(&metrics.refused), 1);
        assert!(load(&metrics.reconnects) >= 1);
        assert!(load(&metrics.sent) >= 261);
        assert!(fake.connections.load(Ordering::SeqCst) >= 2);
    }
}
