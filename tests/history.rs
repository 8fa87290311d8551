//! History through the real binary, killed with SIGKILL while it recounts a month's peaks after
//! commits and while it compacts the months that closed: each month's concurrency peaks and
//! login days must equal an oracle computed here from the unique events, and sending every event
//! again must apply none (nothing lost, nothing counted twice).
//!
//! Four months of session changes of `MEMBERS` agents (some sessions open across midnight and
//! across the end of a month) are ingested month by month on a sandbox clock, with a kill during
//! each month's ingestion; unacknowledged batches are sent again after the restart. Then the
//! months are closed one at a time by moving the clock, and the process is killed as soon as it
//! logs that compaction started (or at once, before it could log anything). `HISTORY_SEED` replays
//! the kill points.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use jiff::{SignedDuration, Timestamp, ToSpan as _, civil::Date, tz::TimeZone};
use licensing::api::{
    self, ingestion_service_client::IngestionServiceClient,
    licensing_service_client::LicensingServiceClient,
};
use support::{Licensing, Rng, timestamp};
use tonic::transport::Channel;

const ACCOUNT: &str = "history";
const MEMBERS: usize = 150;
const BATCH: usize = 250;
const MONTHS: [&str; 4] = ["2026-01", "2026-02", "2026-03", "2026-04"];
/// How long the compaction log line may take to appear after the clock moved.
const DEADLINE: Duration = Duration::from_secs(300);

/// One session change.
#[derive(Debug, Clone)]
struct Change {
    id: String,
    member: usize,
    at: Timestamp,
    /// 0 login, 1 logout, 2 queue login, 3 queue logout.
    kind: u8,
}

fn member(n: usize) -> String {
    format!("agent-{n:03}")
}

/// Every member's day: a login between 07:00 and 09:00, a queue session, a logout; one member in
/// seven stays logged in to 02:00 the next day, so sessions cross midnight and months. The last
/// three members' sessions last weeks.
fn changes() -> Vec<Change> {
    let mut changes = Vec::new();
    let mut day: Date = "2026-01-01".parse().expect("date");
    let end: Date = "2026-05-01".parse().expect("date");
    while day < end {
        let midnight = day.to_zoned(TimeZone::UTC).expect("midnight").timestamp();
        for m in 0..MEMBERS {
            if m >= MEMBERS - 3 {
                // The last three members' sessions last weeks: across the end of a month, from
                // March 20 to April 10 (before the last floor compaction leaves, April 29), and
                // from April 26 and 27 into May.
                let noon = midnight + 12.hours();
                let kind = match (MEMBERS - m, day.month(), day.day()) {
                    (1, 1, 20) | (1, 3, 20) | (2, 4, 26) | (3, 4, 27) => Some(0),
                    (1, 2, 5) | (1, 4, 10) => Some(1),
                    _ => None,
                };
                if let Some(kind) = kind {
                    changes.push(Change {
                        id: format!("{day}-{m}-long"),
                        member: m,
                        at: noon,
                        kind,
                    });
                }
                continue;
            }
            let login = midnight
                + 7.hours()
                + ((m as i64 * 131 + i64::from(day.day()) * 17) % 7200).seconds();
            let overnight = (m + day.day() as usize).is_multiple_of(7);
            let logout = if overnight {
                midnight + 26.hours()
            } else {
                login + 8.hours()
            };
            for (k, (at, kind)) in [
                (login, 0),
                (login + 10.minutes(), 2),
                (login + 4.hours(), 3),
                (logout, 1),
            ]
            .into_iter()
            .enumerate()
            {
                changes.push(Change {
                    id: format!("{day}-{m}-{k}"),
                    member: m,
                    at,
                    kind,
                });
            }
        }
        day = day.tomorrow().expect("tomorrow");
    }
    changes
}

fn event(change: &Change) -> api::Event {
    use api::event::Kind;
    let queue = || "support".to_owned();
    let kind = match change.kind {
        0 => Kind::AgentLogin(api::AgentLogin {}),
        1 => Kind::AgentLogout(api::AgentLogout {}),
        2 => Kind::QueueLogin(api::QueueLogin { queue_id: queue() }),
        _ => Kind::QueueLogout(api::QueueLogout { queue_id: queue() }),
    };
    api::Event {
        source: "history".into(),
        event_id: change.id.clone(),
        account_id: ACCOUNT.into(),
        member_id: member(change.member),
        occurred_at: Some(timestamp(&change.at.to_string())),
        kind: Some(kind),
    }
}

fn month_of(at: Timestamp) -> String {
    at.to_zoned(TimeZone::UTC).strftime("%Y-%m").to_string()
}

/// The oracle, of the changes of `MONTHS`: per month, the peak of agents logged in at once (a platform session or a queue
/// session open), counted after each change in the order the service keys them (time, member,
/// event id); and per member, the days with a login.
fn oracle(changes: &[Change]) -> (BTreeMap<String, u32>, BTreeSet<(String, String)>) {
    let mut sorted: Vec<&Change> = changes.iter().collect();
    sorted.sort_by(|a, b| (a.at, member(a.member), &a.id).cmp(&(b.at, member(b.member), &b.id)));
    let mut platform = vec![false; MEMBERS];
    let mut queue = vec![false; MEMBERS];
    let mut peaks: BTreeMap<String, u32> = BTreeMap::new();
    let mut days = BTreeSet::new();
    let logged_in = |platform: &[bool], queue: &[bool]| {
        (0..MEMBERS).filter(|&m| platform[m] || queue[m]).count() as u32
    };
    for month in MONTHS {
        peaks.insert(month.to_owned(), 0);
    }
    let mut month = String::new();
    for change in sorted {
        let this = month_of(change.at);
        if this != month {
            // A month's peak counts who was logged in when it started.
            let now = logged_in(&platform, &queue);
            let peak = peaks.entry(this.clone()).or_default();
            *peak = (*peak).max(now);
            month = this.clone();
        }
        match change.kind {
            0 => platform[change.member] = true,
            1 => platform[change.member] = false,
            2 => queue[change.member] = true,
            _ => queue[change.member] = false,
        }
        if change.kind == 0 || change.kind == 2 {
            days.insert((
                member(change.member),
                change.at.to_zoned(TimeZone::UTC).date().to_string(),
            ));
        }
        let now = logged_in(&platform, &queue);
        let peak = peaks.entry(this).or_default();
        *peak = (*peak).max(now);
    }
    peaks.retain(|month, _| MONTHS.contains(&month.as_str()));
    // May has no events of its own: its peak is who was still logged in when it started.
    peaks.insert("2026-05".to_owned(), logged_in(&platform, &queue));
    (peaks, days)
}

async fn setup(channel: &Channel) {
    let mut client = LicensingServiceClient::new(channel.clone());
    client
        .create_account(api::CreateAccountRequest {
            account_id: ACCOUNT.into(),
            settings: Some(api::AccountSettings {
                time_zone: "UTC".into(),
                auto_growth: true,
                // The longest allowed: only January closes while the history is ingested.
                grace_period_days: 62,
                ..Default::default()
            }),
            sandbox: true,
            sandbox_clock_start: Some(timestamp("2026-01-01T00:00:00Z")),
        })
        .await
        .expect("create account");
    for m in 0..MEMBERS {
        client
            .resolve_member(api::ResolveMemberRequest {
                account_id: ACCOUNT.into(),
                member_id: member(m),
                settings: Some(api::MemberSettings {
                    role: api::Role::User as i32,
                    skills: vec![api::Skill {
                        id: "voice".into(),
                        channel: api::Channel::Voice as i32,
                    }],
                    ..Default::default()
                }),
                apply: true,
            })
            .await
            .expect("apply member");
    }
}

async fn advance(channel: &Channel, to: Timestamp) {
    LicensingServiceClient::new(channel.clone())
        .advance_clock(api::AdvanceClockRequest {
            account_id: ACCOUNT.into(),
            to: Some(timestamp(&to.to_string())),
        })
        .await
        .expect("advance the clock");
}

/// Sends `batches` on one stream, 8 in flight, and returns the outcomes of those answered
/// (by index) before the stream ended; the stream ends early when the server dies.
async fn ingest(
    channel: &Channel,
    batches: &BTreeMap<usize, Vec<api::Event>>,
) -> BTreeMap<usize, Vec<api::Outcome>> {
    let (requests, outbound) = tokio::sync::mpsc::channel(8);
    let mut answered = BTreeMap::new();
    let Ok(response) = IngestionServiceClient::new(channel.clone())
        .ingest(tokio_stream::wrappers::ReceiverStream::new(outbound))
        .await
    else {
        return answered;
    };
    let mut answers = response.into_inner();
    let to_send: Vec<(usize, Vec<api::Event>)> =
        batches.iter().map(|(i, b)| (*i, b.clone())).collect();
    tokio::spawn(async move {
        for (i, events) in to_send {
            let request = api::IngestRequest {
                batch_id: i as u64,
                events,
                traceparent: String::new(),
            };
            if requests.send(request).await.is_err() {
                return;
            }
        }
    });
    while let Ok(Some(answer)) = answers.message().await {
        let outcomes = answer
            .outcomes
            .iter()
            .map(|o| api::Outcome::try_from(o.outcome).expect("known outcome"))
            .collect();
        answered.insert(answer.batch_id as usize, outcomes);
        if answered.len() == batches.len() {
            break;
        }
    }
    answered
}

async fn usage(channel: &Channel, month: &str) -> (u32, BTreeSet<(String, String)>) {
    let mut stream = LicensingServiceClient::new(channel.clone())
        .get_usage(api::GetUsageRequest {
            account_id: ACCOUNT.into(),
            month: month.into(),
            ..Default::default()
        })
        .await
        .expect("usage")
        .into_inner();
    let (mut peak, mut days) = (None, BTreeSet::new());
    while let Some(message) = stream.message().await.expect("usage message") {
        match message.part.expect("part") {
            api::get_usage_response::Part::Summary(s) => {
                peak = Some(
                    s.concurrency_peaks
                        .iter()
                        .filter(|p| p.tier == api::Tier::Standard as i32)
                        .map(|p| p.peak)
                        .sum::<u32>(),
                );
            }
            api::get_usage_response::Part::Members(m) => {
                for row in m.rows {
                    for day in row.login_days {
                        days.insert((row.member_id.clone(), day.date));
                    }
                }
            }
            _ => {}
        }
    }
    (peak.expect("a summary"), days)
}

/// The log lines about compaction and clocks, one per line.
fn compaction_lines(lines: &[String]) -> String {
    lines
        .iter()
        .filter(|l| {
            l.contains("compact")
                || l.contains("floor")
                || l.contains("clock")
                || l.contains("listening")
        })
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

/// Polls `server`'s log until a line after the first `from` contains `text`; false when the
/// deadline passed.
fn wait_for_log(server: &Licensing, from: usize, text: &str, deadline: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < deadline {
        if server
            .logs()
            .iter()
            .skip(from)
            .any(|line| line.contains(text))
        {
            return true;
        }
        thread::sleep(Duration::from_millis(2)); // between polls, within the deadline
    }
    false
}

#[test]
fn nothing_is_lost_or_counted_twice_when_killed_while_recounting_or_compacting() {
    let seed = std::env::var("HISTORY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("history: seed {seed}");
    let mut rng = Rng::new(seed);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let database = dir.path().join("db");
    let address = support::free_address();
    let changes: Vec<Change> = changes()
        .into_iter()
        .filter(|c| MONTHS.contains(&month_of(c.at).as_str()))
        .collect();
    let (expected_peaks, expected_days) = oracle(&changes);
    let mut logs = Vec::new();

    let mut server = Licensing::start_on(database.clone(), &address);
    runtime.block_on(async { setup(&server.channel().await).await });

    // Month by month: the clock at the month's last second, every batch sent until answered
    // APPLIED (or DUPLICATE after a restart), the server killed once while ingesting.
    for month in MONTHS {
        let events: Vec<api::Event> = changes
            .iter()
            .filter(|c| month_of(c.at) == month)
            .map(event)
            .collect();
        let mut pending: BTreeMap<usize, Vec<api::Event>> = events
            .chunks(BATCH)
            .map(<[_]>::to_vec)
            .enumerate()
            .collect();
        let last = pending.len();
        let month_end = events
            .iter()
            .filter_map(|e| e.occurred_at.as_ref())
            .map(|t| t.seconds)
            .max()
            .expect("events");
        let clock = Timestamp::from_second(month_end).expect("time") + SignedDuration::from_secs(1);
        let kill_after = rng.below(last as u64) as usize;
        let mut killed = false;
        runtime.block_on(async { advance(&server.channel().await, clock).await });
        while !pending.is_empty() {
            let channel = runtime.block_on(server.channel());
            if !killed {
                // Kill once part of the month is in, while the peaks are being recounted.
                let first: BTreeMap<usize, Vec<api::Event>> = pending
                    .iter()
                    .filter(|(i, _)| **i <= kill_after)
                    .map(|(i, b)| (*i, b.clone()))
                    .collect();
                let answered = runtime.block_on(ingest(&channel, &first));
                check_outcomes(&answered, seed);
                pending.retain(|i, _| !answered.contains_key(i));
                logs.extend(server.logs());
                server.kill();
                server = Licensing::start_on(database.clone(), &address);
                killed = true;
                continue;
            }
            let answered = runtime.block_on(ingest(&channel, &pending));
            check_outcomes(&answered, seed);
            pending.retain(|i, _| !answered.contains_key(i));
        }
        let channel = runtime.block_on(server.channel());
        let (peak, _) = runtime.block_on(usage(&channel, month));
        assert_eq!(
            peak, expected_peaks[month],
            "seed {seed}: {month}'s peak while it is open"
        );
    }

    // Close the months one at a time (the clock is on April 30, January closed on April 4):
    // shorter grace periods close February (50 days), then March (20); the clock moved to May
    // closes April (0). Moving the clock wakes compaction. The process is killed while it
    // compacts February, and at once after the clock moved for March.
    let mut interrupted = 0;
    let mut last_round = 0;
    let mut clock: Timestamp = "2026-04-30T23:00:00Z".parse().expect("time");
    for (n, grace) in [50u32, 20, 0].into_iter().enumerate() {
        let channel = runtime.block_on(server.channel());
        // What the process logged before this round (a compaction it started with, say).
        let before = server.logs().len();
        clock = if grace == 0 {
            "2026-05-01T00:00:01Z".parse().expect("time")
        } else {
            clock + SignedDuration::from_secs(1)
        };
        runtime.block_on(async {
            LicensingServiceClient::new(channel.clone())
                .update_account(api::UpdateAccountRequest {
                    account_id: ACCOUNT.into(),
                    grace_period_days: Some(grace),
                    ..Default::default()
                })
                .await
                .expect("shorter grace period");
            advance(&channel, clock).await;
        });
        if grace == 0 {
            last_round = before;
            break;
        }
        if n == 0 {
            assert!(
                wait_for_log(&server, before, "compacting closed months", DEADLINE),
                "seed {seed}: compaction never started with a grace period of {grace} days; \
                 the server's log about it:\n{}",
                compaction_lines(&server.logs())
            );
            // A random kill point, 0 to 2 ms after compaction started: no deadline waited for.
            thread::sleep(Duration::from_millis(rng.below(3)));
        }
        // The floor moves at once; the writer then deletes what lies below it. The kill landed
        // during a compaction when the last floor moved has no deletion finished after it (an
        // earlier one, of the compaction this process started with, may have finished).
        let lines = server.logs();
        let last_moved = lines
            .iter()
            .rposition(|l| l.contains("compacting closed months floors_moved"));
        if n == 0
            && last_moved.is_some_and(|moved| {
                !lines
                    .iter()
                    .skip(moved)
                    .any(|l| l.contains("records below the floor deleted"))
            })
        {
            interrupted += 1;
        }
        logs.extend(lines);
        server.kill();
        server = Licensing::start_on(database.clone(), &address);
    }
    // The last round's clock move closed April: that compaction is let finish.
    assert!(
        wait_for_log(&server, last_round, "closed months compacted", DEADLINE)
            && wait_for_log(
                &server,
                last_round,
                "records below the floor deleted",
                DEADLINE
            ),
        "seed {seed}: the last compaction never finished; the server's log about it:\n{}",
        compaction_lines(&server.logs())
    );
    assert!(
        interrupted > 0,
        "seed {seed}: no kill landed during a compaction; the log about it:\n{}",
        compaction_lines(&logs)
    );

    let channel = runtime.block_on(server.channel());
    for month in MONTHS {
        let (peak, days) = runtime.block_on(usage(&channel, month));
        assert_eq!(
            peak, expected_peaks[month],
            "seed {seed}: {month}'s peak after compaction"
        );
        let expected: BTreeSet<(String, String)> = expected_days
            .iter()
            .filter(|(_, date)| date.starts_with(month))
            .cloned()
            .collect();
        assert_eq!(
            days, expected,
            "seed {seed}: {month}'s login days after compaction"
        );
    }
    // May starts from the compacted history: who was logged in at the floor, and the changes
    // after it.
    let (peak, _) = runtime.block_on(usage(&channel, "2026-05"));
    assert_eq!(
        peak, expected_peaks["2026-05"],
        "seed {seed}: May's peak after compaction"
    );
    // Everything again: nothing applies.
    let all: BTreeMap<usize, Vec<api::Event>> = changes
        .iter()
        .map(event)
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(<[_]>::to_vec)
        .enumerate()
        .collect();
    let answered = runtime.block_on(ingest(&channel, &all));
    assert_eq!(
        answered.len(),
        all.len(),
        "seed {seed}: every batch answered"
    );
    for (batch, outcomes) in &answered {
        for outcome in outcomes {
            assert!(
                matches!(outcome, api::Outcome::Duplicate | api::Outcome::Refused),
                "seed {seed}: batch {batch} sent again: {outcome:?}"
            );
        }
    }
    logs.extend(server.logs());
    assert!(
        logs.iter()
            .any(|l| l.contains("records below the floor deleted")),
        "seed {seed}: no compaction deleted anything"
    );
}

/// Every event of an answered batch is applied, or a duplicate of one applied before a restart.
fn check_outcomes(answered: &BTreeMap<usize, Vec<api::Outcome>>, seed: u64) {
    for (batch, outcomes) in answered {
        for outcome in outcomes {
            assert!(
                matches!(outcome, api::Outcome::Applied | api::Outcome::Duplicate),
                "seed {seed}: batch {batch}: {outcome:?}"
            );
        }
    }
}
