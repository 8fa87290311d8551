//! End to end: clients that open streams and never read them (an HTTP/2 window of 0) hold no
//! server thread. While hundreds of `ReadAuditTrail` and `GetUsage` streams sit unread, other
//! callers' `GetAccount` answers quickly and `Ingest` is still acknowledged.

mod support;

use std::time::{Duration, Instant};

use bytes::{BufMut as _, Bytes, BytesMut};
use licensing::api::{
    self, event::Kind, ingestion_service_client::IngestionServiceClient,
    licensing_service_client::LicensingServiceClient,
};
use support::Licensing;

/// `ReadAuditTrail` streams left unread, over several connections (the server allows 256 per
/// connection): more than the blocking pool's 512 threads, which readers that waited for their
/// clients once held.
const STALLED: usize = 600;
const PER_CONNECTION: usize = 200;
/// `GetUsage` followers left unread besides.
const FOLLOWERS: usize = 100;
/// Audit entries of the account: more than the HTTP/2 layer buffers for a stream (a reader that
/// waited for the client would block once that buffer is full).
const ENTRIES: usize = 2_500;
/// Once, every `GetAccount` here waited 70 s. Generous for a busy machine, far below that.
const CALL_DEADLINE: Duration = Duration::from_secs(10);

/// A gRPC message frame: uncompressed, length-prefixed.
fn frame(message: &impl prost::Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut framed = BytesMut::with_capacity(body.len() + 5);
    framed.put_u8(0);
    framed.put_u32(u32::try_from(body.len()).expect("small"));
    framed.put_slice(&body);
    framed.freeze()
}

/// Opens `count` calls of `method` on one connection that never lets the server send a byte of
/// a response body; returns what keeps them open.
async fn never_read(
    address: &str,
    method: &str,
    request: Bytes,
    count: usize,
) -> Vec<Box<dyn std::any::Any + Send>> {
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tcp)
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let mut held: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    for _ in 0..count {
        let mut client = client.clone().ready().await.expect("ready");
        let call = http::Request::builder()
            .method("POST")
            .uri(format!("http://{address}/{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        let (response, mut send) = client.send_request(call, false).expect("send");
        send.send_data(request.clone(), true).expect("body");
        held.push(Box::new((response, send)));
    }
    held.push(Box::new(client));
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_are_never_read_do_not_stall_other_callers() {
    let server = Licensing::start();
    let channel = server.channel().await;
    let mut client = LicensingServiceClient::new(channel.clone());
    client
        .create_account(api::CreateAccountRequest {
            account_id: "busy".into(),
            settings: Some(api::AccountSettings {
                time_zone: "UTC".into(),
                ..Default::default()
            }),
            sandbox: true,
            sandbox_clock_start: Some(prost_types::Timestamp {
                seconds: 1_780_000_000,
                nanos: 0,
            }),
        })
        .await
        .expect("account");
    // One audit entry per clock step.
    let mut at = 1_780_000_000;
    for _ in 0..ENTRIES {
        at += 60;
        client
            .advance_clock(api::AdvanceClockRequest {
                account_id: "busy".into(),
                to: Some(prost_types::Timestamp {
                    seconds: at,
                    nanos: 0,
                }),
            })
            .await
            .expect("advance");
    }
    let trail = frame(&api::ReadAuditTrailRequest {
        account_id: "busy".into(),
        from: None,
        to: None,
    });
    let usage = frame(&api::GetUsageRequest {
        account_id: "busy".into(),
        follow: true,
        ..Default::default()
    });
    let mut held = Vec::new();
    for _ in 0..STALLED / PER_CONNECTION {
        let method = "licensing.v1.LicensingService/ReadAuditTrail";
        held.extend(never_read(&server.address, method, trail.clone(), PER_CONNECTION).await);
    }
    let method = "licensing.v1.LicensingService/GetUsage";
    held.extend(never_read(&server.address, method, usage, FOLLOWERS).await);

    // Others are served meanwhile, every call on its own deadline.
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let started = Instant::now();
        tokio::time::timeout(
            CALL_DEADLINE,
            client.get_account(api::GetAccountRequest {
                account_id: "busy".into(),
            }),
        )
        .await
        .expect("GetAccount stalled behind streams nobody reads")
        .expect("GetAccount");
        slowest = slowest.max(started.elapsed());
    }
    let mut ingestion = IngestionServiceClient::new(channel.clone());
    let batch = api::IngestRequest {
        batch_id: 1,
        events: vec![api::Event {
            source: "test".into(),
            event_id: "e1".into(),
            account_id: "busy".into(),
            member_id: "ann".into(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: at,
                nanos: 0,
            }),
            kind: Some(Kind::AgentLogin(api::AgentLogin {})),
        }],
        traceparent: String::new(),
    };
    let acknowledged = tokio::time::timeout(CALL_DEADLINE, async {
        let mut answers = ingestion
            .ingest(tokio_stream::iter(vec![batch]))
            .await
            .expect("ingest")
            .into_inner();
        answers
            .message()
            .await
            .expect("answer")
            .expect("one answer")
    })
    .await
    .expect("Ingest stalled behind streams nobody reads");
    assert_eq!(acknowledged.outcomes[0].outcome(), api::Outcome::Applied);
    eprintln!("slowest GetAccount with {STALLED} unread streams: {slowest:?}");
    drop(held);
}
