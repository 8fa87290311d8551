//! End to end: connections that never send the HTTP/2 preface, against the real binary started
//! under a low open-files limit. While more of them are open than the process has file
//! descriptors, a new client is still served; and the server closes them, making room at its
//! connection cap or after the handshake timeout.

mod support;

use std::{
    io::{ErrorKind, Read as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use support::Licensing;
use tonic::transport::Endpoint;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The binary's open-files limit in these tests (soft and hard, so it cannot raise it).
const OPEN_FILES: u32 = 256;
/// The cap it must choose: the limit less the 64 files it keeps for itself.
const CAP: usize = 192;
/// How long anything expected may take on a busy machine before a test fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// `count` connections that will never send a byte, each with the moment just before it was made.
fn silent(server: &Licensing, count: usize) -> Vec<(TcpStream, Instant)> {
    (0..count)
        .map(|_| {
            // Taken before connecting: the server's timer starts when it accepts, which is after
            // this (a stamp taken after `connect` returns can be later than the accept on a
            // busy machine, and make the timeout look early).
            let before = Instant::now();
            let stream = TcpStream::connect(&server.address).expect("connect a silent client");
            (stream, before)
        })
        .collect()
}

/// Waits until the server closes `stream` (end of file, or a reset), by `deadline`.
fn closed_by_server(stream: &mut TcpStream, deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    stream
        .set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .expect("read timeout");
    let mut byte = [0; 1];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Ok(n) => panic!("the server sent {n} bytes to a connection that never sent a preface"),
        Err(e) => panic!("the server did not close a silent connection by the deadline: {e}"),
    }
}

/// One `grpc.health.v1.Health/Check` on a connection of its own, and how long it took.
fn fresh_health_check(server: &Licensing) -> (ServingStatus, Duration) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let status = runtime.block_on(async {
        let channel = Endpoint::from_shared(server.endpoint())
            .expect("endpoint")
            .connect_timeout(DEADLINE)
            .timeout(DEADLINE)
            .connect()
            .await
            .expect("a new client connects");
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .expect("a new client's health check is answered");
        ServingStatus::try_from(answer.get_ref().status).expect("known status")
    });
    (status, started.elapsed())
}

#[test]
fn a_new_client_is_served_while_more_silent_connections_than_file_descriptors_are_open() {
    // A timeout no step waits for: room is made by closing the oldest silent connection.
    let server = Licensing::start_limited(OPEN_FILES, &["--handshake-timeout-seconds", "300"]);
    let logs = server.logs().join("\n");
    assert!(
        logs.contains(&format!("max_connections={CAP}")),
        "the cap chosen under `ulimit -n {OPEN_FILES}` is not logged as {CAP}:\n{logs}"
    );

    let count = 2 * OPEN_FILES as usize;
    let mut silent = silent(&server, count);
    for _ in 0..5 {
        let (status, took) = fresh_health_check(&server);
        assert_eq!(status, ServingStatus::Serving, "after {took:?}");
    }
    // Every connection beyond the cap closed the oldest silent one, the oldest first.
    let deadline = Instant::now() + DEADLINE;
    for (stream, _) in &mut silent[..count - CAP] {
        closed_by_server(stream, deadline);
    }
    let (stopped, logs) = server.terminate();
    assert!(
        stopped,
        "SIGTERM with silent connections open did not stop it cleanly:\n{}",
        logs.join("\n")
    );
}

#[test]
fn silent_connections_are_closed_after_the_handshake_timeout() {
    let timeout = Duration::from_secs(1);
    let server = Licensing::start_limited(OPEN_FILES, &["--handshake-timeout-seconds", "1"]);
    // Fewer than the cap: only the timeout closes them.
    let mut silent = silent(&server, CAP / 2);
    let deadline = Instant::now() + DEADLINE;
    for (stream, connected) in &mut silent {
        closed_by_server(stream, deadline);
        assert!(
            connected.elapsed() >= timeout,
            "closed {:?} after connecting, before the handshake timeout",
            connected.elapsed()
        );
    }
    let (status, _) = fresh_health_check(&server);
    assert_eq!(status, ServingStatus::Serving);
}
