//! End to end: usage events streamed into the real binary with the generated gRPC client —
//! acknowledgements per batch, exactly once under replay, refusals with reasons, unlicensed usage,
//! and login days and peaks in the account's calendar in three time zones.

mod support;

use licensing::api::{
    self, event::Kind, ingestion_service_client::IngestionServiceClient,
    licensing_service_client::LicensingServiceClient,
};
use support::{Licensing, timestamp};
use tonic::transport::Channel;

fn event(account: &str, id: &str, member: &str, when: &str, kind: Kind) -> api::Event {
    api::Event {
        source: "test".into(),
        event_id: id.into(),
        account_id: account.into(),
        member_id: member.into(),
        occurred_at: Some(timestamp(when)),
        kind: Some(kind),
    }
}

fn login() -> Kind {
    Kind::AgentLogin(api::AgentLogin {})
}

fn logout() -> Kind {
    Kind::AgentLogout(api::AgentLogout {})
}

/// Sends the batches on one stream, all before reading any answer, and returns the answers'
/// outcomes in batch order (checking every batch is answered once, by id).
async fn ingest(channel: &Channel, batches: Vec<Vec<api::Event>>) -> Vec<Vec<api::EventOutcome>> {
    let count = batches.len();
    let requests: Vec<api::IngestRequest> = batches
        .into_iter()
        .enumerate()
        .map(|(i, events)| api::IngestRequest {
            batch_id: i as u64 + 100,
            events,
            traceparent: String::new(),
        })
        .collect();
    let mut client = IngestionServiceClient::new(channel.clone());
    let mut answers = client
        .ingest(tokio_stream::iter(requests))
        .await
        .expect("ingest")
        .into_inner();
    let mut outcomes = vec![None; count];
    while let Some(answer) = answers.message().await.expect("answer") {
        let slot = &mut outcomes[(answer.batch_id - 100) as usize];
        assert!(slot.is_none(), "batch {} answered twice", answer.batch_id);
        *slot = Some(answer.outcomes);
    }
    outcomes
        .into_iter()
        .map(|o| o.expect("every batch answered"))
        .collect()
}

fn kinds(outcomes: &[api::EventOutcome]) -> Vec<api::Outcome> {
    outcomes
        .iter()
        .map(|o| api::Outcome::try_from(o.outcome).expect("known outcome"))
        .collect()
}

async fn setup(channel: &Channel, account: &str, zone: &str, clock: &str, grace: u32) {
    let mut client = LicensingServiceClient::new(channel.clone());
    client
        .create_account(api::CreateAccountRequest {
            account_id: account.into(),
            settings: Some(api::AccountSettings {
                time_zone: zone.into(),
                auto_growth: true,
                grace_period_days: grace,
                ..Default::default()
            }),
            sandbox: true,
            sandbox_clock_start: Some(timestamp(clock)),
        })
        .await
        .expect("create account");
    for (member, settings) in [
        // PROFESSIONAL billed per login day.
        (
            "alice",
            api::MemberSettings {
                role: api::Role::TeamLeader as i32,
                billing_preference: api::BillingMode::Daily as i32,
                ..Default::default()
            },
        ),
        // STANDARD, monthly.
        (
            "bob",
            api::MemberSettings {
                role: api::Role::User as i32,
                skills: vec![api::Skill {
                    id: "voice".into(),
                    channel: api::Channel::Voice as i32,
                }],
                ..Default::default()
            },
        ),
    ] {
        client
            .resolve_member(api::ResolveMemberRequest {
                account_id: account.into(),
                member_id: member.into(),
                settings: Some(settings),
                apply: true,
            })
            .await
            .expect("apply member");
    }
}

async fn usage(
    channel: &Channel,
    account: &str,
    month: &str,
) -> (api::UsageSummary, Vec<api::MemberUsage>) {
    let mut client = LicensingServiceClient::new(channel.clone());
    let mut stream = client
        .get_usage(api::GetUsageRequest {
            account_id: account.into(),
            month: month.into(),
            ..Default::default()
        })
        .await
        .expect("usage")
        .into_inner();
    let mut summary = None;
    let mut rows = Vec::new();
    while let Some(message) = stream.message().await.expect("usage message") {
        match message.part.expect("part") {
            api::get_usage_response::Part::Summary(s) => summary = Some(s),
            api::get_usage_response::Part::Members(m) => rows.extend(m.rows),
            other => panic!("unexpected {other:?}"),
        }
    }
    (summary.expect("a summary"), rows)
}

fn days(rows: &[api::MemberUsage], member: &str) -> Vec<(String, u32, bool)> {
    rows.iter()
        .find(|r| r.member_id == member)
        .map(|r| {
            r.login_days
                .iter()
                .map(|d| (d.date.clone(), d.logins, d.billable))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_count_exactly_once_and_odd_ones_are_answered_with_reasons() {
    let server = Licensing::start();
    let channel = server.channel().await;
    setup(&channel, "acme", "UTC", "2026-05-20T12:00:00Z", 1).await;

    let batches = vec![
        vec![
            event("acme", "a1", "alice", "2026-05-10T08:00:00Z", login()),
            event("acme", "b1", "bob", "2026-05-10T08:30:00Z", login()),
        ],
        vec![
            event("acme", "a2", "alice", "2026-05-10T17:00:00Z", logout()),
            event("acme", "a3", "alice", "2026-05-11T08:00:00Z", login()),
            event("acme", "g1", "ghost", "2026-05-11T09:00:00Z", login()),
        ],
        vec![event("acme", "b2", "bob", "2026-05-10T18:00:00Z", logout())],
    ];
    let first = ingest(&channel, batches.clone()).await;
    assert!(
        first
            .iter()
            .flatten()
            .all(|o| o.outcome == api::Outcome::Applied as i32),
        "{first:?}"
    );
    // The same events again, batched differently: every one a duplicate, nothing changes.
    let replay = ingest(&channel, vec![batches.concat()]).await;
    assert_eq!(kinds(&replay[0]), vec![api::Outcome::Duplicate; 6]);

    let (summary, rows) = usage(&channel, "acme", "2026-05").await;
    assert_eq!(
        days(&rows, "alice"),
        [
            ("2026-05-10".into(), 1, true),
            ("2026-05-11".into(), 1, true)
        ]
    );
    assert_eq!(
        rows.iter()
            .find(|r| r.member_id == "alice")
            .map(|r| r.billable_days),
        Some(2)
    );
    // bob is billed monthly: his day is a login day, not a billable one.
    assert_eq!(days(&rows, "bob"), [("2026-05-10".into(), 1, false)]);
    let peaks: Vec<(i32, u32)> = summary
        .concurrency_peaks
        .iter()
        .map(|p| (p.tier, p.peak))
        .collect();
    assert_eq!(
        peaks,
        [
            (api::Tier::Standard as i32, 1),
            (api::Tier::Professional as i32, 1)
        ]
    );
    assert_eq!(summary.unlicensed.len(), 1);
    assert_eq!(
        (
            summary.unlicensed[0].member_id.as_str(),
            summary.unlicensed[0].events
        ),
        ("ghost", 1)
    );

    // Refusals, each with its reason.
    let odd = ingest(
        &channel,
        vec![vec![
            // Same id, another payload.
            event("acme", "a1", "alice", "2026-05-10T09:00:00Z", login()),
            event("acme", "f1", "alice", "2026-05-20T13:00:00Z", login()),
            event("nope", "n1", "alice", "2026-05-10T09:00:00Z", login()),
            api::Event {
                occurred_at: None,
                ..event("acme", "x1", "alice", "2026-05-10T09:00:00Z", login())
            },
        ]],
    )
    .await;
    let reasons: Vec<i32> = odd[0].iter().map(|o| o.refusal).collect();
    assert_eq!(
        reasons,
        [
            api::RefusalReason::ConflictingDuplicate as i32,
            api::RefusalReason::TooFarInFuture as i32,
            api::RefusalReason::UnknownAccount as i32,
            api::RefusalReason::Invalid as i32,
        ]
    );
    assert_eq!(odd[0][3].detail, "invalid occurred_at (unset): must be set");

    // Past the month end and the one-day grace, May is closed.
    let mut client = LicensingServiceClient::new(channel.clone());
    client
        .advance_clock(api::AdvanceClockRequest {
            account_id: "acme".into(),
            to: Some(timestamp("2026-06-02T00:00:00Z")),
        })
        .await
        .expect("advance");
    let late = ingest(
        &channel,
        vec![vec![event(
            "acme",
            "late",
            "alice",
            "2026-05-31T10:00:00Z",
            login(),
        )]],
    )
    .await;
    assert_eq!(late[0][0].refusal, api::RefusalReason::MonthClosed as i32);
    assert!(
        late[0][0]
            .detail
            .starts_with("month 2026-05 closed at 2026-06-02T00:00:00Z"),
        "{}",
        late[0][0].detail
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_days_and_months_follow_each_account_zone() {
    let server = Licensing::start();
    let channel = server.channel().await;
    // For each zone, one login just before local midnight at the month end and one just after.
    let cases = [
        // Prague leaves summer time on Oct 25: the month ends at 23:00 UTC (UTC+1).
        (
            "prague",
            "Europe/Prague",
            "2026-10-31T22:59:00Z",
            "2026-10-31T23:01:00Z",
            ("2026-10", "2026-10-31"),
            ("2026-11", "2026-11-01"),
        ),
        // Los Angeles leaves daylight time on Nov 1: October ends at 07:00 UTC (UTC-7).
        (
            "la",
            "America/Los_Angeles",
            "2026-11-01T06:59:00Z",
            "2026-11-01T07:01:00Z",
            ("2026-10", "2026-10-31"),
            ("2026-11", "2026-11-01"),
        ),
        // Kolkata, UTC+5:30 all year.
        (
            "kolkata",
            "Asia/Kolkata",
            "2026-10-31T18:29:00Z",
            "2026-10-31T18:31:00Z",
            ("2026-10", "2026-10-31"),
            ("2026-11", "2026-11-01"),
        ),
    ];
    for (account, zone, before, after, (month_before, day_before), (month_after, day_after)) in
        cases
    {
        setup(&channel, account, zone, "2026-11-05T00:00:00Z", 10).await;
        let outcomes = ingest(
            &channel,
            vec![vec![
                event(account, "1", "alice", before, login()),
                event(account, "2", "alice", after, login()),
            ]],
        )
        .await;
        assert_eq!(
            kinds(&outcomes[0]),
            [api::Outcome::Applied, api::Outcome::Applied],
            "{zone}"
        );
        let (_, rows) = usage(&channel, account, month_before).await;
        assert_eq!(
            days(&rows, "alice"),
            [(day_before.to_owned(), 1, true)],
            "{zone} {month_before}"
        );
        let (_, rows) = usage(&channel, account, month_after).await;
        assert_eq!(
            days(&rows, "alice"),
            [(day_after.to_owned(), 1, true)],
            "{zone} {month_after}"
        );
    }
}

/// A `GetUsage` follower hears what ingestion changed as it commits, without reading again: the
/// summary with the new peaks, and the rows of the members whose login days changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_see_ingested_login_days_and_peaks_as_they_commit() {
    let server = Licensing::start();
    let channel = server.channel().await;
    setup(&channel, "acme", "UTC", "2026-05-20T12:00:00Z", 5).await;
    let mut follower = LicensingServiceClient::new(channel.clone())
        .get_usage(api::GetUsageRequest {
            account_id: "acme".into(),
            follow: true,
            ..Default::default()
        })
        .await
        .expect("follow")
        .into_inner();
    loop {
        let message = follower.message().await.expect("snapshot").expect("open");
        if matches!(
            message.part,
            Some(api::get_usage_response::Part::SnapshotComplete(true))
        ) {
            break;
        }
    }
    let outcomes = ingest(
        &channel,
        vec![vec![
            event("acme", "f1", "alice", "2026-05-20T08:00:00Z", login()),
            event("acme", "f2", "bob", "2026-05-20T08:30:00Z", login()),
        ]],
    )
    .await;
    assert_eq!(
        kinds(&outcomes[0]),
        [api::Outcome::Applied, api::Outcome::Applied]
    );

    // Progress-based: every message is a step; the whole is bounded generously.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let (mut peaks, mut days) = (None, std::collections::BTreeMap::new());
    while peaks != Some((1, 1)) || days.len() < 2 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let message = tokio::time::timeout(left, follower.message())
            .await
            .unwrap_or_else(|_| panic!("no change heard: peaks {peaks:?}, days {days:?}"))
            .expect("change")
            .expect("still open");
        match message.part.expect("part") {
            api::get_usage_response::Part::Summary(summary) => {
                let peak = |tier: api::Tier| {
                    summary
                        .concurrency_peaks
                        .iter()
                        .find(|p| p.tier == tier as i32)
                        .map_or(0, |p| p.peak)
                };
                peaks = Some((peak(api::Tier::Professional), peak(api::Tier::Standard)));
            }
            api::get_usage_response::Part::Members(rows) => {
                for row in rows.rows {
                    let dates: Vec<String> =
                        row.login_days.iter().map(|d| d.date.clone()).collect();
                    days.insert(row.member_id, dates);
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(days["alice"], ["2026-05-20"]);
    assert_eq!(days["bob"], ["2026-05-20"]);
}
