//! The accept layer in process: silent and malformed connections are closed, the cap closes the
//! oldest connection in its handshake (or the new one when none is), a real gRPC client is served
//! through it, and the pure parts (the cap, the pause, the warning limiter) at their boundaries.

use std::net::SocketAddr;

use futures::StreamExt as _;
use tokio::io::AsyncWriteExt as _;
use tonic::transport::Endpoint;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::*;

/// How long anything expected may take before a test fails.
const DEADLINE: Duration = Duration::from_secs(10);
/// A handshake timeout no test waits for.
const LONG: Duration = Duration::from_secs(600);

fn limits(max_connections: usize, handshake_timeout: Duration) -> ConnectionLimits {
    ConnectionLimits {
        max_connections,
        handshake_timeout,
    }
}

/// Serves standard health through the accept layer on a free loopback port.
async fn serve_health(limits: ConnectionLimits) -> (SocketAddr, ConnectionCounts) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let incoming = incoming(listener, limits);
    let counts = incoming.counts();
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        crate::server::server_builder()
            .add_service(health)
            .serve_with_incoming(incoming),
    );
    (address, counts)
}

/// Waits (polling, with a deadline) until `condition` holds.
async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A connection that sends nothing, once the server has counted it.
async fn silent(address: SocketAddr, counts: &ConnectionCounts, open_after: usize) -> TcpStream {
    let stream = TcpStream::connect(address).await.expect("connect");
    until(&format!("{open_after} open"), || {
        counts.open() == open_after
    })
    .await;
    stream
}

/// Waits until the server closes `stream` (end of file, or a reset when bytes were unread).
async fn closed_by_server(stream: &mut TcpStream) {
    let mut byte = [0; 1];
    match tokio::time::timeout(DEADLINE, stream.read(&mut byte)).await {
        Ok(Ok(0) | Err(_)) => {}
        Ok(Ok(n)) => panic!("the server sent {n} bytes before any handshake"),
        Err(_) => panic!("the server did not close the connection within {DEADLINE:?}"),
    }
}

/// One health check on a new connection.
async fn health_check(address: SocketAddr) -> ServingStatus {
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .expect("endpoint")
        .connect_timeout(DEADLINE)
        .timeout(DEADLINE)
        .connect()
        .await
        .expect("connect a client");
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .expect("health check");
    ServingStatus::try_from(answer.get_ref().status).expect("known status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_or_slow_connection_is_closed_after_the_handshake_timeout() {
    let timeout = Duration::from_millis(300);
    let (address, counts) = serve_health(limits(16, timeout)).await;
    let started = Instant::now();
    let mut silent = silent(address, &counts, 1).await;
    let mut slow = TcpStream::connect(address).await.expect("connect");
    slow.write_all(&PREFACE[..10])
        .await
        .expect("part of the preface");

    closed_by_server(&mut silent).await;
    closed_by_server(&mut slow).await;
    assert!(
        started.elapsed() >= timeout,
        "closed after {:?}, before the handshake timeout",
        started.elapsed()
    );
    until("no connection open", || counts.open() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_an_http2_preface_close_the_connection_at_once() {
    let (address, counts) = serve_health(limits(16, LONG)).await;
    let mut http1 = TcpStream::connect(address).await.expect("connect");
    http1
        .write_all(b"GET / HTTP/1.1\r\nHost: licensing\r\nAccept: */*\r\n\r\n")
        .await
        .expect("an HTTP/1.1 request");
    closed_by_server(&mut http1).await;

    // The preface, then a frame that is not SETTINGS (a PING).
    let mut no_settings = TcpStream::connect(address).await.expect("connect");
    no_settings.write_all(PREFACE).await.expect("preface");
    no_settings
        .write_all(&[0, 0, 8, 0x6, 0, 0, 0, 0, 0])
        .await
        .expect("frame header");
    closed_by_server(&mut no_settings).await;
    until("no connection open", || counts.open() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_at_the_cap_closes_the_oldest_still_in_its_handshake() {
    let (address, counts) = serve_health(limits(3, LONG)).await;
    let mut first = silent(address, &counts, 1).await;
    let mut second = silent(address, &counts, 2).await;
    let _third = silent(address, &counts, 3).await;

    let _fourth = TcpStream::connect(address).await.expect("connect");
    closed_by_server(&mut first).await;
    // The first is closed and three are open: the second, third and fourth.
    until("three open in their handshake", || {
        counts.open() == 3 && counts.in_handshake() == 3
    })
    .await;

    let _fifth = TcpStream::connect(address).await.expect("connect");
    closed_by_server(&mut second).await;
    until("three open", || counts.open() == 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_with_every_connection_established_the_new_one_is_closed() {
    let (address, counts) = serve_health(limits(2, LONG)).await;
    let mut clients = Vec::new();
    for _ in 0..2 {
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .expect("endpoint")
            .timeout(DEADLINE)
            .connect()
            .await
            .expect("connect a client");
        let mut client = HealthClient::new(channel);
        client
            .check(HealthCheckRequest::default())
            .await
            .expect("health check");
        clients.push(client);
    }
    until("two established", || {
        counts.open() == 2 && counts.in_handshake() == 0
    })
    .await;

    let mut third = TcpStream::connect(address).await.expect("connect");
    closed_by_server(&mut third).await;
    for client in &mut clients {
        let answer = client
            .check(HealthCheckRequest::default())
            .await
            .expect("an established client is still served");
        assert_eq!(answer.get_ref().status, ServingStatus::Serving as i32);
    }
    assert_eq!(counts.open(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_is_served_while_more_silent_connections_than_the_cap_are_open() {
    let cap = 32;
    let (address, counts) = serve_health(limits(cap, LONG)).await;
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(TcpStream::connect(address).await.expect("connect"));
    }
    until("the cap reached", || counts.open() == cap).await;

    for _ in 0..5 {
        assert_eq!(health_check(address).await, ServingStatus::Serving);
        assert!(counts.open() <= cap, "{} open above the cap", counts.open());
    }
    // Each new connection closed the oldest silent one.
    for stream in &mut silent[..100 - cap] {
        closed_by_server(stream).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_replays_its_handshake_and_knows_its_peer() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let mut incoming = incoming(listener, limits(4, LONG));
    let mut client = TcpStream::connect(address).await.expect("connect");
    let mut sent = PREFACE.to_vec();
    sent.extend_from_slice(&[0, 0, 0, SETTINGS_FRAME, 0, 0, 0, 0, 0]);
    sent.extend_from_slice(b"the rest");
    client.write_all(&sent).await.expect("send");

    let mut connection = tokio::time::timeout(DEADLINE, incoming.next())
        .await
        .expect("a connection in time")
        .expect("the stream is open")
        .expect("never an error");
    let info = connection.connect_info();
    assert_eq!(info.remote_addr, Some(client.local_addr().expect("local")));
    assert_eq!(info.local_addr, Some(address));
    let mut received = vec![0; sent.len()];
    connection.read_exact(&mut received).await.expect("read");
    assert_eq!(received, sent);
    assert_eq!(
        (incoming.counts().open(), incoming.counts().in_handshake()),
        (1, 0)
    );
    drop(connection);
    assert_eq!(incoming.counts().open(), 0);
}

#[test]
fn the_cap_leaves_the_reserve_free_and_is_never_zero() {
    assert_eq!(cap(10_000, Some(1_024)), 1_024 - 64);
    assert_eq!(cap(100, Some(1_024)), 100);
    assert_eq!(cap(10_000, Some(256)), 192);
    assert_eq!(cap(10_000, Some(10)), 1);
    assert_eq!(cap(10_000, None), 10_000);
    assert_eq!(cap(0, None), 1);
}

#[test]
fn accept_pauses_double_up_to_their_cap() {
    let pauses: Vec<u128> = (1..=10).map(|n| accept_pause(n).as_millis()).collect();
    assert_eq!(pauses, [5, 10, 20, 40, 80, 160, 320, 500, 500, 500]);
    assert_eq!(accept_pause(u32::MAX), ACCEPT_PAUSE_MAX);
}

#[test]
fn running_out_of_files_pauses_the_loop_and_a_reset_connection_does_not() {
    let mut errors = AcceptErrors::default();
    let now = Instant::now();
    let emfile = io::Error::from_raw_os_error(24);
    assert_eq!(errors.failed(&emfile, now), Some(Duration::from_millis(5)));
    assert_eq!(errors.failed(&emfile, now), Some(Duration::from_millis(10)));
    let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
    assert_eq!(errors.failed(&aborted, now), None);
    errors.succeeded();
    assert_eq!(errors.failed(&emfile, now), Some(Duration::from_millis(5)));
}

#[test]
fn warnings_are_let_through_once_per_interval_with_the_count_in_between() {
    let mut limiter = RateLimited::default();
    let start = Instant::now();
    assert_eq!(limiter.check(start), Some(0));
    assert_eq!(limiter.check(start + Duration::from_secs(1)), None);
    assert_eq!(limiter.check(start + Duration::from_secs(4)), None);
    assert_eq!(limiter.check(start + WARNING_INTERVAL), Some(2));
    assert_eq!(limiter.check(start + WARNING_INTERVAL), None);
}
