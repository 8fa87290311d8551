//! The sending side of a server stream, shared by `GetUsage`, `ReadAuditTrail` and `Ingest`.
//!
//! A client that stops reading must never hold the server: the producer is an async task that
//! holds no thread while it waits, its buffer is a few messages, and a message the client does
//! not take within [`STALL_TIMEOUT`] ends the stream: the producer stops, and the client, if it
//! ever reads again, gets what was buffered and then DEADLINE_EXCEEDED saying why. A stream that
//! ends for any other reason ends with the status its producer gave, or OK. The number of such
//! streams open at once is bounded for the whole server ([`Streams`]).

use std::{pin::Pin, sync::Arc, time::Duration};

use futures::{Stream, StreamExt as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::error::ApiError;

/// How long a client may leave a message unread before its stream is ended.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Streaming calls open at once across the server; one more is refused RESOURCE_EXHAUSTED. Each
/// holds a few messages buffered at most, so this bounds what stalled clients can pin.
pub const MAX_OPEN_STREAMS: usize = 1024;

/// A server-streaming response.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Why a message could not be sent: the stream is over, stop producing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The client went away.
    Gone,
    /// The client took nothing for [`STALL_TIMEOUT`]; the stream ends DEADLINE_EXCEEDED.
    Stalled,
}

/// The producer's end of a stream.
#[derive(Debug)]
pub struct Outbox<T> {
    tx: mpsc::Sender<Result<T, Status>>,
    end: Option<oneshot::Sender<Status>>,
    _permit: OwnedSemaphorePermit,
}

/// The bound on streams open at once, shared by every streaming handler of a server.
#[derive(Debug, Clone)]
pub struct Streams(Arc<Semaphore>);

impl Default for Streams {
    fn default() -> Self {
        Streams(Arc::new(Semaphore::new(MAX_OPEN_STREAMS)))
    }
}

impl Streams {
    /// Streams open now.
    pub fn open(&self) -> usize {
        MAX_OPEN_STREAMS.saturating_sub(self.0.available_permits())
    }

    /// A new stream buffering up to `capacity` messages, or RESOURCE_EXHAUSTED when
    /// [`MAX_OPEN_STREAMS`] are open.
    pub fn open_stream<T: Send + 'static>(
        &self,
        capacity: usize,
    ) -> Result<(Outbox<T>, ResponseStream<T>), ApiError> {
        let permit = self.0.clone().try_acquire_owned().map_err(|_| {
            ApiError::ResourceExhausted(format!(
                "{MAX_OPEN_STREAMS} streams are open on this server: try again when one has ended"
            ))
        })?;
        let (tx, rx) = mpsc::channel(capacity);
        let (end, ended) = oneshot::channel::<Status>();
        let ending =
            futures::stream::once(ended).filter_map(|end| async move { end.ok().map(Err) });
        let outbox = Outbox {
            tx,
            end: Some(end),
            _permit: permit,
        };
        Ok((outbox, Box::pin(ReceiverStream::new(rx).chain(ending))))
    }
}

impl<T> Outbox<T> {
    /// Sends a message, waiting at most [`STALL_TIMEOUT`] for the client to make room.
    pub async fn send(&mut self, message: T) -> Result<(), Closed> {
        match tokio::time::timeout(STALL_TIMEOUT, self.tx.send(Ok(message))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Closed::Gone),
            Err(_) => {
                self.finish(Status::deadline_exceeded(format!(
                    "the stream was ended: the client read nothing for {} s; call again",
                    STALL_TIMEOUT.as_secs()
                )));
                Err(Closed::Stalled)
            }
        }
    }

    /// Ends the stream with `status` after what was sent. Later sends fail.
    pub fn finish(&mut self, status: Status) {
        if let Some(end) = self.end.take() {
            let _ = end.send(status);
        }
    }

    /// Completes when the client went away.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_ends_its_stream_with_a_reason() {
        let streams = Streams::default();
        let (mut outbox, mut stream) = streams.open_stream::<u32>(1).expect("open");
        assert_eq!(streams.open(), 1);
        outbox.send(1).await.expect("buffered");
        // Nobody reads: the next send waits STALL_TIMEOUT (paused time), then gives up.
        assert_eq!(outbox.send(2).await, Err(Closed::Stalled));
        drop(outbox);
        assert_eq!(streams.open(), 0, "the producer's slot is free again");
        assert_eq!(stream.next().await.map(|m| m.ok()), Some(Some(1)));
        let end = stream
            .next()
            .await
            .expect("a status")
            .expect_err("an error");
        assert_eq!(end.code(), tonic::Code::DeadlineExceeded);
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn a_stream_ends_ok_or_with_the_status_given() {
        let streams = Streams::default();
        let (mut outbox, stream) = streams.open_stream::<u32>(4).expect("open");
        outbox.send(7).await.expect("sent");
        drop(outbox);
        let all: Vec<_> = stream.collect().await;
        assert_eq!(all.len(), 1, "OK after the message");
        let (mut outbox, stream) = streams.open_stream::<u32>(4).expect("open");
        outbox.finish(Status::invalid_argument("batch 2 has 1001 events"));
        drop(outbox);
        let all: Vec<_> = stream.collect().await;
        assert_eq!(all.len(), 1);
        assert_eq!(
            all[0].as_ref().expect_err("status").code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn streams_beyond_the_bound_are_refused() {
        let streams = Streams(Arc::new(Semaphore::new(1)));
        let _first = streams.open_stream::<u32>(1).expect("open");
        let refused = streams.open_stream::<u32>(1).err().expect("refused");
        assert_eq!(
            crate::error::status(refused).code(),
            tonic::Code::ResourceExhausted
        );
    }
}
