//! The accept layer in front of every gRPC server of this crate (the service and the collector's
//! local endpoint). It replaces tonic's `TcpIncoming`, which has neither a handshake timeout nor
//! a connection cap: a client that connects and never speaks would hold its file descriptor for
//! ever, and enough of them lock every new client out.
//!
//! Each accepted socket gets its own task that runs [`handshake`] within
//! [`ConnectionLimits::handshake_timeout`]; a connection that does not complete it in time is
//! closed. The bytes the handshake read are replayed to the server before the rest of the socket
//! ([`Replay`]), so hyper still sees the connection from its first byte.
//!
//! Open connections are capped below the open-files limit ([`ConnectionLimits::fit`]). A new
//! connection at the cap closes the oldest connection still in its handshake, so silent
//! connections cannot lock out a client that speaks; when every open connection has completed its
//! handshake, the new one is closed instead. Accept errors (out of file descriptors, ...) pause the
//! loop briefly and are logged at most every few seconds; they never stop it.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    io,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use futures::Stream;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, mpsc, oneshot},
    task::{JoinHandle, JoinSet},
    time::Instant,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tonic::transport::server::Connected;

use crate::auth::ClientCertificate;

/// Open connections at most, before the open-files limit lowers it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// How long a new connection may take to complete its handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// File descriptors left to everything but connections: the database's files, the listener, the
/// collector's followed files and spool, standard streams.
pub const FILE_RESERVE: u64 = 64;

/// What a plaintext HTTP/2 client sends first (RFC 9113, section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The preface is followed by a SETTINGS frame; its 9-byte header completes the handshake.
const HANDSHAKE_BYTES: usize = PREFACE.len() + 9;
/// Frame type of SETTINGS, the fourth byte of a frame header.
const SETTINGS_FRAME: u8 = 0x4;
/// Connections that completed their handshake and wait for the server to take them.
const HANDOFF_QUEUE: usize = 64;
/// Pause after the first accept error that is not about one connection; it doubles up to
/// [`ACCEPT_PAUSE_MAX`] while the errors go on.
const ACCEPT_PAUSE_FIRST: Duration = Duration::from_millis(5);
/// See [`ACCEPT_PAUSE_FIRST`].
const ACCEPT_PAUSE_MAX: Duration = Duration::from_millis(500);
/// Warnings of one kind are logged at most this often; the ones in between are counted.
const WARNING_INTERVAL: Duration = Duration::from_secs(5);
/// How long the accept loop waits for an evicted connection to be closed. Closing it takes one
/// task wake-up; the bound only keeps a defect from stopping the loop.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// How many connections a server holds open and how long a new one has to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections at most, whether in their handshake or established.
    pub max_connections: usize,
    /// How long a new connection may take to complete its handshake.
    pub handshake_timeout: Duration,
}

impl ConnectionLimits {
    /// Raises the process's soft open-files limit to its hard limit, then caps connections at
    /// `max_connections` or the soft limit less [`FILE_RESERVE`], whichever is lower, and logs the
    /// cap chosen.
    pub fn fit(max_connections: usize, handshake_timeout: Duration) -> ConnectionLimits {
        let open_files = raise_open_files_limit();
        let limits = ConnectionLimits {
            max_connections: cap(max_connections, open_files),
            handshake_timeout,
        };
        tracing::info!(
            max_connections = limits.max_connections,
            configured = max_connections,
            open_files_limit = open_files.map(tracing::field::display),
            reserve = FILE_RESERVE,
            handshake_timeout = ?handshake_timeout,
            "connection limits"
        );
        limits
    }
}

/// `configured`, lowered to leave [`FILE_RESERVE`] of `open_files` free, and at least 1.
fn cap(configured: usize, open_files: Option<u64>) -> usize {
    let room = open_files.map_or(usize::MAX, |limit| {
        usize::try_from(limit.saturating_sub(FILE_RESERVE)).unwrap_or(usize::MAX)
    });
    configured.min(room).max(1)
}

/// Raises the soft open-files limit (`RLIMIT_NOFILE`) to the hard limit and returns the soft limit
/// in force afterwards; `None` when there is no limit. A refused raise is logged and leaves the
/// limit as it was.
#[cfg(unix)]
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(
                error = %io::Error::from(e),
                soft = limit.current.map(tracing::field::display),
                hard = limit.maximum.map(tracing::field::display),
                "could not raise the open-files limit to its hard limit"
            );
        }
    }
    getrlimit(Resource::Nofile).current
}

/// Raises the soft open-files limit to the hard limit: there is none to raise on this platform.
#[cfg(not(unix))]
pub fn raise_open_files_limit() -> Option<u64> {
    None
}

/// Accepts connections on `listener` within `limits`: the incoming stream to give tonic's
/// `serve_with_incoming_shutdown`. Dropping it (as tonic does when it stops accepting) closes the
/// listener and every connection still in its handshake.
pub fn incoming(listener: TcpListener, limits: ConnectionLimits) -> Incoming {
    incoming_tls(listener, limits, None)
}

/// [`incoming`], with TLS when `tls` is given: the TLS handshake is part of the connection's
/// handshake, bounded by the same timeout, and a client certificate it verified is in each
/// request's [`PeerInfo`].
pub fn incoming_tls(
    listener: TcpListener,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
) -> Incoming {
    let registry = Arc::new(Registry::default());
    let (handoff, connections) = mpsc::channel(HANDOFF_QUEUE);
    let accept = tokio::spawn(accept_loop(
        listener,
        limits,
        registry.clone(),
        handoff,
        tls,
    ));
    Incoming {
        connections,
        counts: ConnectionCounts(registry),
        accept,
    }
}

/// Connections that completed their handshake, in the order they completed it.
#[derive(Debug)]
pub struct Incoming {
    connections: mpsc::Receiver<Connection>,
    counts: ConnectionCounts,
    accept: JoinHandle<()>,
}

impl Incoming {
    /// The live connection counts, readable after the stream was handed to the server.
    pub fn counts(&self) -> ConnectionCounts {
        self.counts.clone()
    }
}

impl Stream for Incoming {
    type Item = Result<Connection, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .connections
            .poll_recv(cx)
            .map(|next| next.map(Ok))
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // The loop owns the listener and the handshake tasks: all of them end with it.
        self.accept.abort();
    }
}

/// The number of connections a server holds.
#[derive(Debug, Clone)]
pub struct ConnectionCounts(Arc<Registry>);

impl ConnectionCounts {
    /// Open connections: in their handshake, waiting to be served, or served.
    pub fn open(&self) -> usize {
        self.0.lock().open
    }

    /// Open connections that have not completed their handshake.
    pub fn in_handshake(&self) -> usize {
        self.0.lock().handshaking.len()
    }
}

/// An accepted connection that completed its handshake, as tonic serves it.
#[derive(Debug)]
pub struct Connection {
    io: Io,
    info: PeerInfo,
    /// Counts the connection as open until tonic drops it.
    _slot: Slot,
}

/// What is known of a connection's client; every request on it carries a copy in its extensions.
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    /// The server's address of the connection.
    pub local_addr: Option<std::net::SocketAddr>,
    /// The client's address.
    pub remote_addr: Option<std::net::SocketAddr>,
    /// The client certificate the TLS handshake verified, if the client presented one.
    pub certificate: Option<Arc<ClientCertificate>>,
    /// The credential the connection last had accepted (see [`crate::auth::ConnectionMemo`]).
    pub memo: Arc<crate::auth::ConnectionMemo>,
}

impl Connected for Connection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

/// A connection's byte stream: plaintext or TLS, with the handshake's bytes replayed first.
#[derive(Debug)]
enum Io {
    Plain(Replay<TcpStream>),
    Tls(Box<Replay<TlsStream<TcpStream>>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(io) => io.is_write_vectored(),
            Io::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_flush(cx),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A stream whose first bytes were already read by the handshake: reads return them again first,
/// then the stream's own bytes. Writes go straight to the stream.
#[derive(Debug)]
pub struct Replay<S> {
    head: [u8; HANDSHAKE_BYTES],
    replayed: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let rest = &this.head[this.replayed..];
        if rest.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        this.replayed += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Why a connection's handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The socket failed or closed before the handshake was complete.
    #[error("reading the HTTP/2 preface: {0}")]
    Read(#[from] io::Error),
    /// The client sent something else than the HTTP/2 preface (HTTP/1.1, TLS, noise).
    #[error("not an HTTP/2 preface: {0:?}")]
    NotHttp2(String),
    /// The preface was not followed by a SETTINGS frame.
    #[error("first frame of type {0:#04x}, not SETTINGS")]
    NotSettings(u8),
    /// The TLS handshake failed (not TLS, no common protocol, a client certificate refused).
    #[error("TLS handshake: {0}")]
    Tls(io::Error),
}

/// The connection's handshake: the TLS handshake if `tls` is given, then the client's HTTP/2
/// preface and the header of the SETTINGS frame that must follow it. The caller bounds it in time.
async fn handshake(
    stream: TcpStream,
    tls: Option<&TlsAcceptor>,
) -> Result<(Io, Option<Arc<ClientCertificate>>), HandshakeError> {
    let Some(tls) = tls else {
        return Ok((Io::Plain(preface(stream).await?), None));
    };
    let stream = tls.accept(stream).await.map_err(HandshakeError::Tls)?;
    let certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| Arc::new(ClientCertificate::from_der(leaf.as_ref())));
    Ok((Io::Tls(Box::new(preface(stream).await?)), certificate))
}

/// Reads the HTTP/2 preface and the SETTINGS frame header that must follow it.
pub async fn preface<S: AsyncRead + Unpin>(mut stream: S) -> Result<Replay<S>, HandshakeError> {
    let mut head = [0; HANDSHAKE_BYTES];
    stream.read_exact(&mut head).await?;
    if head[..PREFACE.len()] != PREFACE[..] {
        return Err(HandshakeError::NotHttp2(
            String::from_utf8_lossy(&head[..PREFACE.len()]).into_owned(),
        ));
    }
    let frame_type = head[PREFACE.len() + 3];
    if frame_type != SETTINGS_FRAME {
        return Err(HandshakeError::NotSettings(frame_type));
    }
    Ok(Replay {
        head,
        replayed: 0,
        inner: stream,
    })
}

/// Accepts until dropped (when [`Incoming`] is). Never returns on its own: accept errors pause it.
async fn accept_loop(
    listener: TcpListener,
    limits: ConnectionLimits,
    registry: Arc<Registry>,
    handoff: mpsc::Sender<Connection>,
    tls: Option<TlsAcceptor>,
) {
    let mut handshakes = JoinSet::new();
    let mut errors = AcceptErrors::default();
    let mut evictions = RateLimited::default();
    let mut refusals = RateLimited::default();
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => {
                errors.succeeded();
                accepted
            }
            Err(e) => {
                if let Some(pause) = errors.failed(&e, Instant::now()) {
                    tokio::time::sleep(pause).await;
                }
                continue;
            }
        };
        // Finished handshake tasks, reaped here so the set holds only live ones.
        while handshakes.try_join_next().is_some() {}
        match registry.make_room(limits.max_connections) {
            Room::Free => {}
            Room::Evicted => {
                if let Some(suppressed) = evictions.check(Instant::now()) {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        since_last_warning = suppressed,
                        "at the connection cap: closed the oldest connection still in its handshake"
                    );
                }
                let closed = registry.until_below(limits.max_connections);
                let _ = tokio::time::timeout(EVICTION_WAIT, closed).await;
            }
            Room::Full => {
                if let Some(suppressed) = refusals.check(Instant::now()) {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        %remote,
                        since_last_warning = suppressed,
                        "at the connection cap with every connection established: closed the new one"
                    );
                }
                continue;
            }
        }
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%remote, error = %e, "could not set TCP_NODELAY");
        }
        let info = PeerInfo {
            local_addr: stream.local_addr().ok(),
            remote_addr: Some(remote),
            certificate: None,
            memo: Arc::default(),
        };
        let (slot, evicted) = registry.register();
        handshakes.spawn(admit(
            stream,
            info,
            slot,
            evicted,
            limits.handshake_timeout,
            handoff.clone(),
            tls.clone(),
        ));
    }
}

/// One connection's task: the handshake within `within`, then the handoff to the server.
async fn admit(
    stream: TcpStream,
    mut info: PeerInfo,
    slot: Slot,
    evicted: oneshot::Receiver<()>,
    within: Duration,
    handoff: mpsc::Sender<Connection>,
    tls: Option<TlsAcceptor>,
) {
    let remote = info.remote_addr.map(tracing::field::display);
    let io = tokio::select! {
        done = tokio::time::timeout(within, handshake(stream, tls.as_ref())) => match done {
            Ok(Ok((io, certificate))) => {
                info.certificate = certificate;
                io
            }
            Ok(Err(e)) => {
                tracing::debug!(remote, error = %e, "closed a connection: handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(remote, ?within, "closed a connection without a handshake in time");
                return;
            }
        },
        _ = evicted => {
            tracing::debug!(remote, "closed a connection in its handshake to make room");
            return;
        }
    };
    if slot.established() {
        let _ = handoff
            .send(Connection {
                io,
                info,
                _slot: slot,
            })
            .await;
    }
}

/// Every open connection, and which of them are still in their handshake.
#[derive(Debug, Default)]
struct Registry {
    state: Mutex<State>,
    /// Notified whenever a connection closes.
    closed: Notify,
}

#[derive(Debug, Default)]
struct State {
    open: usize,
    next_id: u64,
    /// Connections in their handshake by arrival, oldest first. Dropping a sender closes its
    /// connection.
    handshaking: BTreeMap<u64, oneshot::Sender<()>>,
}

/// What [`Registry::make_room`] did.
#[derive(Debug, PartialEq, Eq)]
enum Room {
    /// Below the cap.
    Free,
    /// At the cap: the oldest connection in its handshake is being closed.
    Evicted,
    /// At the cap, and every connection has completed its handshake.
    Full,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock, so a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes room for one more connection under `cap`, closing the oldest in its handshake if
    /// needed.
    fn make_room(&self, cap: usize) -> Room {
        let mut state = self.lock();
        if state.open < cap {
            Room::Free
        } else if state.handshaking.pop_first().is_some() {
            Room::Evicted
        } else {
            Room::Full
        }
    }

    /// Completes once fewer than `cap` connections are open.
    async fn until_below(&self, cap: usize) {
        loop {
            let closed = self.closed.notified();
            tokio::pin!(closed);
            // Registered before the check, so a close between the check and the wait is seen.
            closed.as_mut().enable();
            if self.lock().open < cap {
                return;
            }
            closed.await;
        }
    }

    /// Counts a new connection, in its handshake; the receiver completes when it is evicted.
    fn register(self: &Arc<Self>) -> (Slot, oneshot::Receiver<()>) {
        let (evict, evicted) = oneshot::channel();
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.open += 1;
        state.handshaking.insert(id, evict);
        drop(state);
        let slot = Slot {
            registry: self.clone(),
            id,
        };
        (slot, evicted)
    }
}

/// One open connection in the [`Registry`], counted until dropped.
#[derive(Debug)]
struct Slot {
    registry: Arc<Registry>,
    id: u64,
}

impl Slot {
    /// Marks the handshake complete; false when the connection was evicted first.
    fn established(&self) -> bool {
        self.registry.lock().handshaking.remove(&self.id).is_some()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut state = self.registry.lock();
            debug_assert!(state.open > 0, "a connection closed twice");
            state.open = state.open.saturating_sub(1);
            state.handshaking.remove(&self.id);
        }
        self.registry.closed.notify_waiters();
    }
}

/// The accept loop's errors: logged at most every [`WARNING_INTERVAL`], and paused after unless
/// they concern one connection only.
#[derive(Debug, Default)]
struct AcceptErrors {
    consecutive: u32,
    log: RateLimited,
}

impl AcceptErrors {
    /// Records a failed accept and returns how long to pause before the next.
    fn failed(&mut self, error: &io::Error, now: Instant) -> Option<Duration> {
        // A connection reset before it was accepted says nothing about the listener; anything
        // else (EMFILE, ENFILE, ENOBUFS, ...) would fail again at once, so the loop pauses
        // instead of spinning.
        let pause = (!concerns_one_connection(error)).then(|| {
            self.consecutive = self.consecutive.saturating_add(1);
            accept_pause(self.consecutive)
        });
        if let Some(suppressed) = self.log.check(now) {
            tracing::warn!(
                error = %error,
                pause = ?pause,
                since_last_warning = suppressed,
                "accepting a connection failed"
            );
        }
        pause
    }

    fn succeeded(&mut self) {
        self.consecutive = 0;
    }
}

/// Whether an accept error is about the one connection being accepted.
fn concerns_one_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// The pause after `consecutive` accept errors: doubling from [`ACCEPT_PAUSE_FIRST`], capped at
/// [`ACCEPT_PAUSE_MAX`]. No jitter: there is one loop, nothing to fall in step with.
fn accept_pause(consecutive: u32) -> Duration {
    let doublings = consecutive.saturating_sub(1).min(16);
    ACCEPT_PAUSE_FIRST
        .saturating_mul(1 << doublings)
        .min(ACCEPT_PAUSE_MAX)
}

/// Lets one warning of a kind through per [`WARNING_INTERVAL`] and counts the others.
#[derive(Debug, Default)]
struct RateLimited {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    /// `Some(warnings suppressed since the last one)` when a warning may be logged at `now`.
    fn check(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < WARNING_INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests;
