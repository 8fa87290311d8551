//! End to end: the wire contract when a client breaks it. Every batch of an `Ingest` stream gets
//! exactly one answer, and a stream that must end ends with a status that says why, after the
//! answers before it, never with OK and silence; a request that cannot be decoded is the caller's
//! fault (INVALID_ARGUMENT, RESOURCE_EXHAUSTED), never INTERNAL. Bytes are sent raw, as a fuzzer
//! or a broken client would.

mod support;

use bytes::{Buf as _, BufMut as _};
use licensing::api::{self, event::Kind, licensing_service_client::LicensingServiceClient};
use prost::Message as _;
use support::Licensing;
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
};

/// Sends and receives message bodies as raw bytes: whatever the test wants on the wire.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Bytes that are no protobuf message at all: a field with wire type 7.
const GARBAGE: &[u8] = &[0x0f, 0x00, 0x01];
/// Over the service's 4 MiB request limit.
const OVERSIZED: usize = 5 << 20;

async fn grpc(channel: &Channel) -> tonic::client::Grpc<Channel> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    grpc
}

/// Sends `messages` on one `Ingest` stream; returns the batch ids answered and how it ended.
async fn ingest_raw(channel: &Channel, messages: Vec<Vec<u8>>) -> (Vec<u64>, Result<(), Status>) {
    let mut grpc = grpc(channel).await;
    let path = "/licensing.v1.IngestionService/Ingest"
        .parse()
        .expect("path");
    let response = grpc
        .streaming(tonic::Request::new(tokio_stream::iter(messages)), path, Raw)
        .await;
    let mut answers = match response {
        Ok(response) => response.into_inner(),
        Err(status) => return (Vec::new(), Err(status)),
    };
    let mut answered = Vec::new();
    loop {
        match answers.message().await {
            Ok(Some(bytes)) => {
                let answer = api::IngestResponse::decode(bytes.as_slice()).expect("an answer");
                answered.push(answer.batch_id);
            }
            Ok(None) => return (answered, Ok(())),
            Err(status) => return (answered, Err(status)),
        }
    }
}

fn login(account: &str, id: &str) -> api::Event {
    let now = jiff::Timestamp::now();
    api::Event {
        source: "test".into(),
        event_id: id.into(),
        account_id: account.into(),
        member_id: "ann".into(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: now.as_second(),
            nanos: 0,
        }),
        kind: Some(Kind::AgentLogin(api::AgentLogin {})),
    }
}

fn batch(batch_id: u64, events: Vec<api::Event>) -> Vec<u8> {
    api::IngestRequest {
        batch_id,
        events,
        traceparent: String::new(),
    }
    .encode_to_vec()
}

async fn setup(channel: &Channel) {
    LicensingServiceClient::new(channel.clone())
        .create_account(api::CreateAccountRequest {
            account_id: "acme".into(),
            settings: Some(api::AccountSettings {
                time_zone: "UTC".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("account");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_batch_before_a_broken_one_is_answered_then_the_stream_says_why() {
    let server = Licensing::start();
    let channel = server.channel().await;
    setup(&channel).await;

    // Too many events: batch 1 is answered, then the stream ends naming batch 2.
    let too_many = (0..1001)
        .map(|i| login("acme", &format!("big-{i}")))
        .collect();
    let (answered, end) = ingest_raw(
        &channel,
        vec![batch(1, vec![login("acme", "e1")]), batch(2, too_many)],
    )
    .await;
    assert_eq!(answered, [1]);
    let end = end.expect_err("ended OK");
    assert_eq!(end.code(), Code::InvalidArgument, "{end:?}");
    assert!(end.message().contains("batch 2 events"), "{end:?}");

    // A message that is not protobuf: batch 3 answered, then INVALID_ARGUMENT, never OK.
    let (answered, end) = ingest_raw(
        &channel,
        vec![batch(3, vec![login("acme", "e3")]), GARBAGE.to_vec()],
    )
    .await;
    assert_eq!(answered, [3]);
    let end = end.expect_err("ended OK");
    assert_eq!(end.code(), Code::InvalidArgument, "{end:?}");
    assert!(end.message().contains("could not be decoded"), "{end:?}");

    // Over the size limit: RESOURCE_EXHAUSTED.
    let (answered, end) = ingest_raw(
        &channel,
        vec![batch(4, vec![login("acme", "e4")]), vec![0; OVERSIZED]],
    )
    .await;
    assert_eq!(answered, [4]);
    assert_eq!(end.expect_err("ended OK").code(), Code::ResourceExhausted);

    // The same batch id twice while the first is unanswered.
    let (answered, end) = ingest_raw(
        &channel,
        vec![
            batch(5, vec![login("acme", "e5")]),
            batch(5, vec![login("acme", "e6")]),
        ],
    )
    .await;
    // The first may be answered before the second is read; either way, never silence.
    assert!(answered.len() <= 2, "{answered:?}");
    if answered.len() < 2 {
        assert_eq!(end.expect_err("ended OK").code(), Code::InvalidArgument);
    }

    // A client that sends well ends OK with every batch answered.
    let (answered, end) = ingest_raw(
        &channel,
        (10..20)
            .map(|i| batch(i, vec![login("acme", &format!("ok-{i}"))]))
            .collect(),
    )
    .await;
    assert_eq!(answered, (10..20).collect::<Vec<_>>());
    end.expect("ended OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_cannot_be_decoded_are_the_callers_fault() {
    let server = Licensing::start();
    let channel = server.channel().await;
    for method in [
        "/licensing.v1.LicensingService/ResolveMember",
        "/licensing.v1.LicensingService/GetAccount",
        "/licensing.v1.LicensingService/CreateAccount",
    ] {
        let mut grpc = grpc(&channel).await;
        let refused = grpc
            .unary(
                tonic::Request::new(GARBAGE.to_vec()),
                method.parse().expect("path"),
                Raw,
            )
            .await
            .expect_err("garbage accepted");
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{method}: {refused:?}"
        );
        let mut grpc = self::grpc(&channel).await;
        let refused = grpc
            .unary(
                tonic::Request::new(vec![0; OVERSIZED]),
                method.parse().expect("path"),
                Raw,
            )
            .await
            .expect_err("oversized accepted");
        assert_eq!(
            refused.code(),
            Code::ResourceExhausted,
            "{method}: {refused:?}"
        );
    }
    // A server-streaming method too.
    let mut grpc = grpc(&channel).await;
    let refused = grpc
        .server_streaming(
            tonic::Request::new(GARBAGE.to_vec()),
            "/licensing.v1.LicensingService/GetUsage"
                .parse()
                .expect("path"),
            Raw,
        )
        .await
        .expect_err("garbage accepted");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    // The service is none the worse.
    let output = server.grpcurl(&["-d", r#"{"service":""}"#, "grpc.health.v1.Health/Check"]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("SERVING"));
}
