//! End to end: one account's bad input never harms the service or another account. Times out of
//! range, clocks moved by centuries, money at its extremes, metered use that is not billed,
//! redeliveries after a month closed, small contract points, and a Kubernetes environment, each
//! against the real binary with the generated client.

mod support;

use std::time::Instant;

use licensing::api::{
    self, event::Kind, ingestion_service_client::IngestionServiceClient,
    licensing_service_client::LicensingServiceClient,
};
use support::{Licensing, timestamp as at};
use tonic::{Code, transport::Channel};

type Client = LicensingServiceClient<Channel>;

fn settings(zone: &str) -> api::AccountSettings {
    api::AccountSettings {
        time_zone: zone.into(),
        auto_growth: true,
        ..Default::default()
    }
}

async fn sandbox(client: &mut Client, id: &str, clock: &str, settings: api::AccountSettings) {
    client
        .create_account(api::CreateAccountRequest {
            account_id: id.into(),
            settings: Some(settings),
            sandbox: true,
            sandbox_clock_start: Some(at(clock)),
        })
        .await
        .expect("create account");
}

async fn advance(client: &mut Client, id: &str, to: &str) -> Result<api::Account, tonic::Status> {
    client
        .advance_clock(api::AdvanceClockRequest {
            account_id: id.into(),
            to: Some(at(to)),
        })
        .await
        .map(|r| r.into_inner().account.expect("account"))
}

fn event(account: &str, id: &str, member: &str, when: &str, kind: Kind) -> api::Event {
    api::Event {
        source: "test".into(),
        event_id: id.into(),
        account_id: account.into(),
        member_id: member.into(),
        occurred_at: Some(at(when)),
        kind: Some(kind),
    }
}

fn metered(meter: api::Meter, quantity: u64) -> Kind {
    Kind::MeteredUsage(api::MeteredUsage {
        meter: meter as i32,
        quantity,
    })
}

/// Sends one batch on its own stream and returns its outcomes.
async fn ingest(channel: &Channel, events: Vec<api::Event>) -> Vec<api::EventOutcome> {
    let mut client = IngestionServiceClient::new(channel.clone());
    let mut answers = client
        .ingest(tokio_stream::iter(vec![api::IngestRequest {
            batch_id: 1,
            events,
            traceparent: String::new(),
        }]))
        .await
        .expect("ingest")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("answer")
        .expect("one answer");
    assert_eq!(answer.batch_id, 1);
    answer.outcomes
}

fn reasons(outcomes: &[api::EventOutcome]) -> Vec<(api::Outcome, api::RefusalReason)> {
    outcomes
        .iter()
        .map(|o| (o.outcome(), o.refusal()))
        .collect()
}

async fn usage(client: &mut Client, account: &str, month: &str) -> api::UsageSummary {
    let mut stream = client
        .get_usage(api::GetUsageRequest {
            account_id: account.into(),
            month: month.into(),
            ..Default::default()
        })
        .await
        .expect("usage")
        .into_inner();
    match stream.message().await.expect("first message") {
        Some(api::GetUsageResponse {
            part: Some(api::get_usage_response::Part::Summary(summary)),
        }) => summary,
        other => panic!("the first message is not the summary: {other:?}"),
    }
}

async fn statement(
    client: &mut Client,
    account: &str,
    month: &str,
) -> Result<api::Statement, tonic::Status> {
    client
        .get_statement(api::GetStatementRequest {
            account_id: account.into(),
            month: month.into(),
        })
        .await
        .map(|r| r.into_inner().statement.expect("statement"))
}

fn assert_invalid(result: Result<impl std::fmt::Debug, tonic::Status>, expected: &str) {
    let status = result.expect_err("accepted");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.message(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_outside_2000_to_2200_are_refused_naming_the_field_and_nothing_panics() {
    let server = Licensing::start();
    let channel = server.channel().await;
    let mut client = LicensingServiceClient::new(channel.clone());
    for (seconds, shown) in [
        (-62_151_148_800, "0000-07-05T00:00:00Z"),
        (253_402_207_200, "9999-12-30T22:00:00Z"),
    ] {
        let refused = client
            .create_account(api::CreateAccountRequest {
                account_id: "far".into(),
                settings: Some(settings("UTC")),
                sandbox: true,
                sandbox_clock_start: Some(prost_types::Timestamp { seconds, nanos: 0 }),
            })
            .await;
        assert_invalid(
            refused,
            &format!(
                "invalid sandbox_clock_start {shown}: must be from 2000-01-01T00:00:00Z to before 2200-01-01T00:00:00Z"
            ),
        );
    }
    // Refused means written nothing: the id is still free.
    sandbox(&mut client, "far", "2199-12-31T23:00:00Z", settings("UTC")).await;
    assert_invalid(
        advance(&mut client, "far", "9999-12-30T22:00:00Z").await,
        "invalid to 9999-12-30T22:00:00Z: must be from 2000-01-01T00:00:00Z to before 2200-01-01T00:00:00Z",
    );
    // A clock at the end of the range ingests normally (once it panicked on `now + 15 min`).
    let login = Kind::AgentLogin(api::AgentLogin {});
    let outcomes = ingest(
        &channel,
        vec![
            event("far", "e1", "ann", "2199-12-31T22:59:00Z", login.clone()),
            event("far", "e2", "ann", "0001-01-01T00:00:00Z", login),
        ],
    )
    .await;
    assert_eq!(
        reasons(&outcomes),
        [
            (api::Outcome::Applied, api::RefusalReason::Unspecified),
            (api::Outcome::Refused, api::RefusalReason::Invalid)
        ]
    );
    assert_eq!(
        outcomes[1].detail,
        "invalid occurred_at 0001-01-01T00:00:00Z: must be from 2000-01-01T00:00:00Z to before 2200-01-01T00:00:00Z"
    );
    let trail = client
        .read_audit_trail(api::ReadAuditTrailRequest {
            account_id: "far".into(),
            from: Some(prost_types::Timestamp {
                seconds: -62_151_148_800,
                nanos: 0,
            }),
            to: None,
        })
        .await;
    assert_eq!(trail.expect_err("accepted").code(), Code::InvalidArgument);
    assert_invalid(
        statement(&mut client, "far", "9999-12").await,
        "invalid month \"9999-12\": must be from 1999-12 to 2200-01",
    );
    // The account is still readable: nothing out of range was stored.
    client
        .get_account(api::GetAccountRequest {
            account_id: "far".into(),
        })
        .await
        .expect("readable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_moved_by_two_centuries_costs_what_a_month_does() {
    let server = Licensing::start();
    let mut client = LicensingServiceClient::new(server.channel().await);
    sandbox(
        &mut client,
        "time",
        "2000-01-10T00:00:00Z",
        settings("Asia/Kolkata"),
    )
    .await;
    client
        .adjust_inventory(api::AdjustInventoryRequest {
            account_id: "time".into(),
            changes: vec![api::SeatChange {
                product: api::Product::StandardSeat as i32,
                seats: 3,
            }],
            confirm: true,
            revision: 1,
        })
        .await
        .expect("confirm");
    let size = |dir: &std::path::Path| -> u64 {
        std::fs::read_dir(dir)
            .expect("data folder")
            .map(|e| e.expect("entry").metadata().expect("metadata").len())
            .sum()
    };
    let before = size(&server.data_dir);
    let started = Instant::now();
    advance(&mut client, "time", "2199-12-31T00:00:00Z")
        .await
        .expect("advance");
    let took = started.elapsed();
    // 2,399 months passed. One record per month was 19 MiB and seconds of work; now it is one
    // month's record, so the database barely grows (sled's log grows in whole segments).
    let grown = size(&server.data_dir).saturating_sub(before);
    assert!(grown < 1 << 20, "the database grew by {grown} bytes");
    eprintln!("advance over 2,399 months: {took:?}, database +{grown} bytes");
    // Every month in between is billed at the counts carried through it.
    let statement = statement(&mut client, "time", "2123-06")
        .await
        .expect("statement");
    assert_eq!(statement.status(), api::StatementStatus::Final);
    assert_eq!(
        statement
            .lines
            .iter()
            .map(|l| l.quantity)
            .collect::<Vec<_>>(),
        [3]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_never_wraps_and_unbilled_use_is_shown() {
    let server = Licensing::start();
    let channel = server.channel().await;
    let mut client = LicensingServiceClient::new(channel.clone());
    // Speech-to-text off; Power Pack on with AI QA capped at 2.
    let mut account = settings("UTC");
    account.power_pack = true;
    account.ai_qa_packs_cap = Some(2);
    sandbox(&mut client, "meters", "2026-06-10T12:00:00Z", account).await;
    let when = "2026-06-10T11:00:00Z";
    let outcomes = ingest(
        &channel,
        vec![
            event(
                "meters",
                "huge-1",
                "ann",
                when,
                metered(api::Meter::AiTopicsPacks, u64::MAX),
            ),
            event(
                "meters",
                "huge-2",
                "ann",
                when,
                metered(api::Meter::AiTopicsPacks, u64::MAX),
            ),
            event(
                "meters",
                "stt",
                "ann",
                when,
                metered(api::Meter::SpeechToTextMinutes, 7_000),
            ),
            event(
                "meters",
                "qa",
                "ann",
                when,
                metered(api::Meter::AiQaPacks, 3),
            ),
        ],
    )
    .await;
    assert_eq!(
        reasons(&outcomes),
        [
            (api::Outcome::Refused, api::RefusalReason::Invalid),
            (api::Outcome::Refused, api::RefusalReason::Invalid),
            (api::Outcome::Applied, api::RefusalReason::Unspecified),
            (api::Outcome::Applied, api::RefusalReason::Unspecified),
        ]
    );
    assert_eq!(
        outcomes[0].detail,
        "invalid metered_usage.quantity 18446744073709551615: must be at most 1000000"
    );
    let summary = usage(&mut client, "meters", "2026-06").await;
    let meters: Vec<(i32, u64, u64, u64)> = summary
        .meters
        .iter()
        .map(|m| {
            (
                m.meter,
                m.quantity,
                m.unbilled_service_off,
                m.unbilled_over_cap,
            )
        })
        .collect();
    assert_eq!(
        meters,
        [
            (api::Meter::SpeechToTextMinutes as i32, 7_000, 7_000, 0),
            (api::Meter::AiQaPacks as i32, 3, 0, 1),
        ]
    );
    let statement = statement(&mut client, "meters", "2026-06")
        .await
        .expect("statement");
    // 2 AI QA packs × 49.00 EUR; nothing for the 7,000 minutes used while off.
    assert_eq!(
        statement.total.as_ref().map(|m| m.minor_units),
        Some(9_800),
        "{statement:?}"
    );
    let unbilled: Vec<(u64, api::UnbilledReason)> = statement
        .unbilled
        .iter()
        .map(|u| (u.quantity, u.reason()))
        .collect();
    assert_eq!(
        unbilled,
        [
            (7_000, api::UnbilledReason::ServiceOff),
            (1, api::UnbilledReason::OverCap)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_after_the_month_closed_is_a_duplicate_not_a_refusal() {
    let server = Licensing::start();
    let channel = server.channel().await;
    let mut client = LicensingServiceClient::new(channel.clone());
    sandbox(&mut client, "late", "2026-05-31T12:00:00Z", settings("UTC")).await;
    let login = event(
        "late",
        "e1",
        "ann",
        "2026-05-31T11:00:00Z",
        Kind::AgentLogin(api::AgentLogin {}),
    );
    assert_eq!(
        reasons(&ingest(&channel, vec![login.clone()]).await),
        [(api::Outcome::Applied, api::RefusalReason::Unspecified)]
    );
    advance(&mut client, "late", "2026-06-05T00:00:00Z")
        .await
        .expect("advance");
    // May is closed, but the event was counted: the collector must hear DUPLICATE.
    assert_eq!(
        reasons(&ingest(&channel, vec![login.clone()]).await),
        [(api::Outcome::Duplicate, api::RefusalReason::Unspecified)]
    );
    let mut fresh = login;
    fresh.event_id = "e2".into();
    assert_eq!(
        reasons(&ingest(&channel, vec![fresh]).await),
        [(api::Outcome::Refused, api::RefusalReason::MonthClosed)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_contract_points_answer_the_right_status() {
    let server = Licensing::start();
    let mut client = LicensingServiceClient::new(server.channel().await);
    sandbox(
        &mut client,
        "acme",
        "2026-05-10T12:00:00Z",
        settings("Europe/Prague"),
    )
    .await;
    let confirm = client
        .adjust_inventory(api::AdjustInventoryRequest {
            account_id: "acme".into(),
            changes: vec![api::SeatChange {
                product: api::Product::StandardSeat as i32,
                seats: 2,
            }],
            confirm: true,
            revision: 0,
        })
        .await;
    assert_invalid(
        confirm,
        "invalid revision 0: revision is required with confirm: preview first and confirm the revision it returns",
    );
    let before = statement(&mut client, "acme", "2026-04")
        .await
        .expect_err("found");
    assert_eq!(before.code(), Code::NotFound, "{before:?}");
    assert_eq!(
        before.message(),
        "no statement for 2026-04: account \"acme\" was created in 2026-05"
    );
    let after = statement(&mut client, "acme", "2026-06")
        .await
        .expect_err("found");
    assert_eq!(after.code(), Code::FailedPrecondition, "{after:?}");
    assert_eq!(
        after.message(),
        "month 2026-06 has not started: the account's current month is 2026-05"
    );
    statement(&mut client, "acme", "2026-05")
        .await
        .expect("this month's statement");
}

#[test]
fn the_variables_kubernetes_injects_do_not_stop_the_start() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = Licensing::start_with(
        data.path().join("db"),
        "127.0.0.1:0",
        &[
            ("LICENSING_PORT", "tcp://10.0.0.11:50051"),
            ("LICENSING_SERVICE_HOST", "10.0.0.11"),
            ("LICENSING_SERVICE_PORT", "50051"),
            ("LICENSING_SERVICE_PORT_GRPC", "50051"),
            ("LICENSING_PORT_50051_TCP", "tcp://10.0.0.11:50051"),
            ("LICENSING_PORT_50051_TCP_PROTO", "tcp"),
            ("LICENSING_PORT_50051_TCP_PORT", "50051"),
            ("LICENSING_PORT_50051_TCP_ADDR", "10.0.0.11"),
            ("LICENSING_COLLECTOR_SPOOL_DIR", "/var/spool/licensing"),
        ],
    );
    let output = server.grpcurl(&["-d", r#"{"service":""}"#, "grpc.health.v1.Health/Check"]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("SERVING"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_answered_final_survives_a_crash_right_after_the_answer() {
    let data = tempfile::tempdir().expect("tempdir");
    let dir = data.path().join("db");
    let server = Licensing::start_at(dir.clone());
    let channel = server.channel().await;
    let mut client = LicensingServiceClient::new(channel.clone());
    let mut account = settings("UTC");
    account.power_pack = true;
    sandbox(&mut client, "final", "2026-06-10T12:00:00Z", account).await;
    let when = "2026-06-10T11:00:00Z";
    ingest(
        &channel,
        vec![event(
            "final",
            "qa",
            "ann",
            when,
            metered(api::Meter::AiQaPacks, 3),
        )],
    )
    .await;
    advance(&mut client, "final", "2026-07-02T00:00:00Z")
        .await
        .expect("advance");
    let answered = statement(&mut client, "final", "2026-06")
        .await
        .expect("statement");
    assert_eq!(answered.status(), api::StatementStatus::Final);
    // Killed the moment the answer arrived: what was answered FINAL must be on disk.
    server.kill();
    let server = Licensing::start_at(dir);
    let mut client = LicensingServiceClient::new(server.channel().await);
    // A cap set now would change a statement computed afresh (3 packs billed, then 1).
    client
        .update_account(api::UpdateAccountRequest {
            account_id: "final".into(),
            ai_qa_packs_cap: Some(1),
            ..Default::default()
        })
        .await
        .expect("update");
    let again = statement(&mut client, "final", "2026-06")
        .await
        .expect("statement");
    assert_eq!(
        again, answered,
        "a statement answered FINAL changed after a crash"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_id_of_any_kind_takes_a_control_character() {
    let server = Licensing::start();
    let channel = server.channel().await;
    let mut client = LicensingServiceClient::new(channel.clone());
    sandbox(&mut client, "acme", "2026-05-10T12:00:00Z", settings("UTC")).await;
    let forged = "id\nFAKE LOG LINE";
    let skill = client
        .resolve_member(api::ResolveMemberRequest {
            account_id: "acme".into(),
            member_id: "ann".into(),
            settings: Some(api::MemberSettings {
                skills: vec![api::Skill {
                    id: forged.into(),
                    channel: api::Channel::Voice as i32,
                }],
                ..Default::default()
            }),
            apply: true,
        })
        .await;
    assert_invalid(
        skill,
        "invalid settings.skills[0].id \"id\\nFAKE LOG LINE\": must not contain control characters",
    );
    let login = |source: &str, id: &str, kind: Kind| api::Event {
        source: source.into(),
        ..event("acme", id, "ann", "2026-05-10T11:00:00Z", kind)
    };
    let queue = Kind::QueueLogin(api::QueueLogin {
        queue_id: forged.into(),
    });
    let agent = Kind::AgentLogin(api::AgentLogin {});
    let outcomes = ingest(
        &channel,
        vec![
            login(forged, "e1", agent.clone()),
            login("pbx", forged, agent.clone()),
            login("pbx", "e3", queue),
            login("pbx", "e4", agent),
        ],
    )
    .await;
    let details: Vec<&str> = outcomes.iter().map(|o| o.detail.as_str()).collect();
    assert_eq!(
        details,
        [
            "invalid source \"id\\nFAKE LOG LINE\": must not contain control characters or '/'",
            "invalid event_id \"id\\nFAKE LOG LINE\": must not contain control characters or '/'",
            "invalid queue_id \"id\\nFAKE LOG LINE\": must not contain control characters",
            "",
        ]
    );
}
