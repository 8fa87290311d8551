//! `ingest`: durable, acknowledged events per second through `Ingest`, for batches of 100 and of
//! 1 event, against the floor of the same writes done raw: sled `apply_batch` of the same keys
//! into the same trees plus `flush_async`, in the same run; and each batch's acknowledgement
//! latency (send → its answer).
//!
//! Rounds alternate ours and raw after a warm-up of each. Every acknowledgement is checked: one
//! answer per batch, every event APPLIED; anything else fails the command.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;
use licensing::api::{
    self, ingestion_service_client::IngestionServiceClient,
    licensing_service_client::LicensingServiceClient,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::servers;

/// The target ratio ours/raw for batches of 100 events.
const RATIO_TARGET: f64 = 0.75;
/// Acknowledgement p99 target.
const P99_TARGET: Duration = Duration::from_millis(25);
/// Members of the benchmark account.
const MEMBERS: usize = 1_000;
/// The sled cache bound of the raw baseline: the service's default.
const CACHE_BYTES: u64 = 256 << 20;

/// Flags of `ingest`.
#[derive(Debug, Args)]
pub(crate) struct IngestArgs {
    /// Length of each measured round, in seconds.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Measured rounds of each (ours, raw) per batch size.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Batches in flight on the stream for batches of 100 events.
    #[arg(long, default_value_t = 8)]
    in_flight_100: usize,
    /// Batches in flight on the stream for batches of 1 event.
    #[arg(long, default_value_t = 256)]
    in_flight_1: usize,
}

/// What a window measured.
#[derive(Debug, Default)]
struct Window {
    events: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Window {
    fn per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn percentile_us(&mut self, p: f64) -> u64 {
        self.latencies_us.sort_unstable();
        let n = self.latencies_us.len();
        if n == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.latencies_us[rank.clamp(1, n) - 1]
    }

    fn merge(&mut self, other: Window) {
        self.events += other.events;
        self.elapsed += other.elapsed;
        self.latencies_us.extend(other.latencies_us);
    }
}

/// Unique event ids across the whole run.
struct Ids {
    next: u64,
    members: Vec<String>,
}

impl Ids {
    /// The next `n` events: logins and logouts of the members, a minute ago.
    fn events(&mut self, n: usize, at: prost_types::Timestamp) -> Vec<api::Event> {
        (0..n)
            .map(|_| {
                let id = self.next;
                self.next += 1;
                let member = self.members[(id as usize) % self.members.len()].clone();
                let kind = if id.is_multiple_of(2) {
                    api::event::Kind::AgentLogin(api::AgentLogin {})
                } else {
                    api::event::Kind::AgentLogout(api::AgentLogout {})
                };
                api::Event {
                    source: "bench".into(),
                    event_id: format!("e{id:012}"),
                    account_id: "bench".into(),
                    member_id: member,
                    occurred_at: Some(at),
                    kind: Some(kind),
                }
            })
            .collect()
    }
}

fn a_minute_ago() -> prost_types::Timestamp {
    let at = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60);
    prost_types::Timestamp {
        seconds: at.as_second(),
        nanos: at.subsec_nanosecond(),
    }
}

async fn connect(address: SocketAddr) -> anyhow::Result<Channel> {
    Endpoint::from_shared(format!("http://{address}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .context("connecting to licensing")
}

/// The account and its members, through the real API.
async fn setup(channel: &Channel) -> anyhow::Result<Vec<String>> {
    let mut client = LicensingServiceClient::new(channel.clone());
    client
        .create_account(api::CreateAccountRequest {
            account_id: "bench".into(),
            settings: Some(api::AccountSettings {
                time_zone: "UTC".into(),
                auto_growth: true,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .context("CreateAccount")?;
    let mut members = Vec::with_capacity(MEMBERS);
    for i in 0..MEMBERS {
        let member = format!("m{i:05}");
        // Half PROFESSIONAL billed daily, half STANDARD monthly.
        let settings = if i % 2 == 0 {
            api::MemberSettings {
                role: api::Role::TeamLeader as i32,
                billing_preference: api::BillingMode::Daily as i32,
                ..Default::default()
            }
        } else {
            api::MemberSettings {
                role: api::Role::User as i32,
                skills: vec![api::Skill {
                    id: "voice".into(),
                    channel: api::Channel::Voice as i32,
                }],
                ..Default::default()
            }
        };
        client
            .resolve_member(api::ResolveMemberRequest {
                account_id: "bench".into(),
                member_id: member.clone(),
                settings: Some(settings),
                apply: true,
            })
            .await
            .context("ResolveMember")?;
        members.push(member);
    }
    Ok(members)
}

/// Streams batches of `size` for `duration` with `in_flight` unacknowledged, checking answers.
async fn ours(
    channel: &Channel,
    ids: &mut Ids,
    size: usize,
    in_flight: usize,
    duration: Duration,
) -> anyhow::Result<Window> {
    let (tx, rx) = mpsc::channel(in_flight);
    let mut client = IngestionServiceClient::new(channel.clone());
    let mut answers = client
        .ingest(ReceiverStream::new(rx))
        .await
        .context("opening Ingest")?
        .into_inner();
    let started = Instant::now();
    let mut sent: HashMap<u64, (Instant, usize)> = HashMap::new();
    let mut window = Window::default();
    let mut next = 1u64;
    let at = a_minute_ago();
    loop {
        let sending = started.elapsed() < duration;
        while sending && sent.len() < in_flight {
            tx.send(api::IngestRequest {
                batch_id: next,
                events: ids.events(size, at),
            })
            .await
            .context("sending")?;
            sent.insert(next, (Instant::now(), size));
            next += 1;
        }
        if sent.is_empty() {
            break;
        }
        let answer = answers
            .message()
            .await
            .context("answer")?
            .context("the stream ended early")?;
        let Some((at_send, count)) = sent.remove(&answer.batch_id) else {
            bail!("an answer for unknown batch {}", answer.batch_id);
        };
        if answer.outcomes.len() != count
            || answer
                .outcomes
                .iter()
                .any(|o| o.outcome != api::Outcome::Applied as i32)
        {
            bail!(
                "batch {} was not applied whole: {:?}",
                answer.batch_id,
                answer.outcomes.first()
            );
        }
        window.events += count as u64;
        window
            .latencies_us
            .push(at_send.elapsed().as_micros() as u64);
    }
    window.elapsed = started.elapsed();
    Ok(window)
}

/// The same writes, raw: for each group of `size` events, `apply_batch` into the dedupe, days and
/// sessions trees with keys shaped like the store's, then `flush_async`.
async fn raw(
    db: &sled::Db,
    ids: &mut Ids,
    size: usize,
    duration: Duration,
) -> anyhow::Result<Window> {
    let trees = [
        db.open_tree("dedupe")?,
        db.open_tree("days")?,
        db.open_tree("sessions")?,
    ];
    let started = Instant::now();
    let mut window = Window::default();
    let date = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .to_string();
    let at = a_minute_ago();
    let mut time = [0u8; 12];
    time[..8].copy_from_slice(&((at.seconds as u64) ^ (1 << 63)).to_be_bytes());
    while started.elapsed() < duration {
        let begun = Instant::now();
        let events = ids.events(size, at);
        let mut batches = [
            sled::Batch::default(),
            sled::Batch::default(),
            sled::Batch::default(),
        ];
        for e in &events {
            let dedupe = [
                e.account_id.as_bytes(),
                b"\0",
                e.source.as_bytes(),
                b"\0",
                e.event_id.as_bytes(),
            ]
            .concat();
            batches[0].insert(dedupe, &[1u8; 12][..]);
            let day = [
                e.account_id.as_bytes(),
                b"\0",
                e.member_id.as_bytes(),
                b"\0",
                date.as_bytes(),
            ]
            .concat();
            batches[1].insert(day, &[2u8; 40][..]);
            let session = [
                e.account_id.as_bytes(),
                b"\0",
                &time,
                e.member_id.as_bytes(),
                b"\0",
                e.source.as_bytes(),
                b"\0",
                e.event_id.as_bytes(),
            ]
            .concat();
            batches[2].insert(session, &[3u8; 8][..]);
        }
        for (tree, batch) in trees.iter().zip(batches) {
            tree.apply_batch(batch)?;
        }
        db.flush_async().await?;
        window.events += size as u64;
        window.latencies_us.push(begun.elapsed().as_micros() as u64);
    }
    window.elapsed = started.elapsed();
    Ok(window)
}

fn print(label: &str, what: &str, window: &mut Window) {
    println!(
        "{label:<11} {what:<5} {:>9.0} events/s  ack p50 {:>6} µs  p99 {:>6} µs  ({} events)",
        window.per_second(),
        window.percentile_us(50.0),
        window.percentile_us(99.0),
        window.events
    );
}

/// Runs the benchmark.
pub(crate) fn run(args: &IngestArgs) -> anyhow::Result<std::process::ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let prices = Arc::new(licensing::price_list::sample().map_err(anyhow::Error::msg)?);
        let dir = tempfile::tempdir().context("temporary folder")?;
        let store = servers::open_store(dir.path().join("licensing"))?;
        let server = servers::start_licensing(prices, store).await?;
        let channel = connect(server.address).await?;
        let members = setup(&channel).await?;
        let raw_db = sled::Config::new()
            .path(dir.path().join("raw"))
            .cache_capacity(CACHE_BYTES)
            .mode(sled::Mode::HighThroughput)
            .open()
            .context("opening the raw database")?;
        let mut ids = Ids { next: 0, members };
        let round = Duration::from_secs(args.seconds);
        println!("ingest: {MEMBERS} members; rounds of {} s alternate ours (Ingest) and raw (apply_batch + flush)", args.seconds);
        let mut results = Vec::new();
        for (size, in_flight) in [(100usize, args.in_flight_100), (1, args.in_flight_1)] {
            println!("\nbatches of {size} event(s); ours keeps {in_flight} batches in flight on one stream, raw writes one batch at a time");
            ours(&channel, &mut ids, size, in_flight, Duration::from_secs(1)).await?;
            raw(&raw_db, &mut ids, size, Duration::from_secs(1)).await?;
            let (mut ours_total, mut raw_total) = (Window::default(), Window::default());
            for n in 1..=args.rounds {
                let label = format!("round {n}/{}", args.rounds);
                let mut w = ours(&channel, &mut ids, size, in_flight, round).await?;
                print(&label, "ours", &mut w);
                ours_total.merge(w);
                let mut w = raw(&raw_db, &mut ids, size, round).await?;
                print(&label, "raw", &mut w);
                raw_total.merge(w);
            }
            print("total", "ours", &mut ours_total);
            print("total", "raw", &mut raw_total);
            let ratio = ours_total.per_second() / raw_total.per_second();
            let p99 = Duration::from_micros(ours_total.percentile_us(99.0));
            println!("ratio ours/raw: {ratio:.2}; ours' ack p99 {p99:?} (target <= {P99_TARGET:?})");
            results.push((size, ratio, p99));
        }
        println!();
        for (size, ratio, p99) in results {
            if size == 100 {
                let verdict = if ratio >= RATIO_TARGET { "met" } else { "NOT met" };
                println!("batches of 100: ratio {ratio:.2} (target >= {RATIO_TARGET}: {verdict})");
            }
            let verdict = if p99 <= P99_TARGET { "met" } else { "NOT met" };
            println!("batches of {size}: ack p99 {p99:?} (target <= {P99_TARGET:?}: {verdict})");
        }
        drop(channel);
        server.stop().await?;
        Ok(std::process::ExitCode::SUCCESS)
    })
}
