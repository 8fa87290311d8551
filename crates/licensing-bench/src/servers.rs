//! The two servers under test, each on its own loopback port: the echo baseline served with the
//! service's transport settings and accept layer, and the real licensing server as its binary
//! serves it.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use licensing::{
    server::{self, MAX_DECODING_MESSAGE_BYTES, MAX_ENCODING_MESSAGE_BYTES, ServeOptions},
    transport::{self, ConnectionLimits, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS},
};
use licensing_core::PriceList;
use licensing_store::{Store, StoreConfig};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use crate::credentials::Auth;
use crate::echo::{Echo, proto::echo_service_server::EchoServiceServer};

/// How long a server may take to stop once asked.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A server running on the current runtime until [`RunningServer::stop`].
#[derive(Debug)]
pub(crate) struct RunningServer {
    /// Where it listens.
    pub(crate) address: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Signals shutdown and waits for the server to finish draining.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        // The server may already have stopped with an error; its task result says so.
        let _ = self.stop.send(());
        tokio::time::timeout(STOP_TIMEOUT, self.task)
            .await
            .context("the server did not stop in time")??
    }
}

/// Starts the echo baseline on 127.0.0.1, port chosen by the system.
pub(crate) async fn start_echo() -> anyhow::Result<RunningServer> {
    let listener = bind().await?;
    let address = listener.local_addr()?;
    let service = EchoServiceServer::new(Echo)
        .max_decoding_message_size(MAX_DECODING_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_ENCODING_MESSAGE_BYTES);
    let incoming = transport::incoming(listener, connection_limits());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server::server_builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await
            .context("echo server")
    });
    Ok(RunningServer {
        address,
        stop,
        task,
    })
}

/// Starts the licensing server on 127.0.0.1 with a fresh database in `store`.
pub(crate) async fn start_licensing(
    prices: Arc<PriceList>,
    store: Store,
) -> anyhow::Result<RunningServer> {
    start_licensing_with(prices, store, &crate::credentials::Setup::new(Auth::Off)?).await
}

/// [`start_licensing`], authenticating callers as `credentials` says.
pub(crate) async fn start_licensing_with(
    prices: Arc<PriceList>,
    store: Store,
    credentials: &crate::credentials::Setup,
) -> anyhow::Result<RunningServer> {
    let listener = bind().await?;
    let options = ServeOptions {
        dedupe_retention_days: licensing::ingest::DEFAULT_DEDUPE_RETENTION_DAYS,
        prices,
        store,
        shutdown_grace: Duration::from_secs(1),
        connections: connection_limits(),
        authentication: credentials.authentication.clone(),
        private_reflection: false,
        tls: None,
        health_listener: None,
        call_rate: credentials.call_rate.clone(),
        telemetry: licensing::server::ServeTelemetry::default(),
    };
    // `run` wraps the listener itself (with TCP_NODELAY), so it gets the bare listener.
    let address = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server::run(listener, options, async {
            let _ = stopped.await;
        })
        .await
        .context("licensing server")
    });
    Ok(RunningServer {
        address,
        stop,
        task,
    })
}

/// The binary's default connection limits, fitted to this process's open-files limit.
fn connection_limits() -> ConnectionLimits {
    ConnectionLimits::fit(DEFAULT_MAX_CONNECTIONS, DEFAULT_HANDSHAKE_TIMEOUT)
}

/// Opens the database of the licensing server.
pub(crate) fn open_store(path: PathBuf) -> anyhow::Result<Store> {
    Store::open(&StoreConfig {
        path,
        cache_capacity_bytes: 64 << 20,
    })
    .context("opening the database")
}

async fn bind() -> anyhow::Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a loopback port")
}
