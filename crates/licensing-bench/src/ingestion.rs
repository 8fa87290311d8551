//! `ingest`: durable, acknowledged events per second through `Ingest`, for batches of 100 and of
//! 1 event, against the floor of the same writes done raw in the same run; and each batch's
//! acknowledgement latency (sent → its answer).
//!
//! Ours: the real server (`licensing::server::run`, a fresh sled database with the binary's
//! default cache bound) on loopback, on its own runtime. An account (UTC, auto-growth) and its
//! members (PROFESSIONAL and STANDARD, billed monthly and daily) are created through
//! `CreateAccount` and `ResolveMember`. Then `Ingest` streams on one connection each keep a fixed
//! number of batches in flight (closed loop) for the round's length: by default one stream of 16
//! batches of 100 (one collector with its default settings), and 4 streams of 64 batches of 1
//! (the most the service reads ahead per stream). Every event is unique (source, event id) and
//! one of agent_login, queue_login, queue_logout, agent_logout of a known member, in the current
//! month and 30 s to 5 min in the past. Every answer is checked: one per batch, naming a batch
//! sent and not yet answered, one outcome per event in the batch's order with the event's id,
//! each APPLIED, and the answer stream ends once every batch is answered. Anything else fails the
//! command.
//!
//! Raw: a separate sled database (same cache bound and mode as the store) with the trees the store
//! writes on ingest: for each group of events, one `apply_batch` into `dedupe` (every event),
//! `days` (logins) and `sessions` (every event), with keys built like the store's and values of
//! the stored records' sizes, then a flush: the least a durable write of the same data costs. As
//! many writers run at once as ours keeps batches in flight, so that concurrent flushes may share
//! sled's write to disk as the service's group commit shares one flush. The events are generated
//! the same way for both, so both pay for it alike.
//!
//! Rounds alternate ours and raw, each round starting with the side the round before ran second,
//! after an unmeasured (but checked) warm-up of each.

use std::{
    collections::HashMap,
    path::Path,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use clap::Args;
use licensing::api::{
    self, ingestion_service_client::IngestionServiceClient,
    licensing_service_client::LicensingServiceClient,
};
use licensing_store::{Store, StoreConfig};
use tokio::{runtime::Runtime, sync::mpsc, task::JoinSet};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};

use crate::credentials::{Auth, Bearer};
use crate::paired;

/// The connection every call of the benchmark goes through, presenting the bearer if any.
pub(crate) type Client = InterceptedService<Channel, Bearer>;

use crate::servers::{self, RunningServer};

/// Ours must reach at least this fraction of the raw events/s, for batches of 100.
const RATIO_TARGET: f64 = 0.75;
/// The figure for batches of 100 on these machines, in events/s (reported, not a gate).
const EVENTS_PER_SECOND_FIGURE: f64 = 70_000.0;
/// Acknowledgement p99 target.
const P99_TARGET: Duration = Duration::from_millis(25);
/// The benchmark's account.
const ACCOUNT_ID: &str = "bench-ingest";
/// Every event lies at least this far in the past...
const BEHIND: Duration = Duration::from_secs(30);
/// ...plus up to this much more, in milliseconds, varying per event.
const SPREAD_MS: u64 = 270_000;
/// Queues the members log in to.
const QUEUES: usize = 8;
/// An answer (ours) or a raw write and flush that takes longer than this fails the command.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Worker threads of each runtime (server, client).
const WORKERS: usize = 2;
/// Distinct error messages kept per window; the rest are only counted.
const ERROR_SAMPLES: usize = 8;
/// The store's trees an ingest of logins and logouts writes (`licensing-store`, `lib.rs`). The
/// store keeps its sled handles private, so the baseline repeats the layout (`ingest.rs`).
const TREES: [&str; 3] = ["dedupe", "days", "sessions"];
/// Login event ids a day record keeps (`EVENT_IDS_PER_DAY` of `licensing-core`'s `events.rs`,
/// which the crate does not export).
const EVENT_IDS_PER_DAY: usize = 5;

/// Flags of `ingest`.
#[derive(Debug, Args)]
pub(crate) struct IngestArgs {
    /// Batch sizes to measure, in events, comma-separated (the targets are for 100 and 1).
    #[arg(
        long,
        value_delimiter = ',',
        default_values_t = [100u64, 1],
        value_parser = clap::value_parser!(u64).range(1..=1000)
    )]
    sizes: Vec<u64>,
    /// Length of each measured round, in seconds.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Measured rounds of each (ours, raw) per batch size; rounds alternate ours and raw.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Unmeasured warm-up of each before the first round, in seconds.
    #[arg(long, default_value_t = 1)]
    warm_up: u64,
    /// Members of the account (created through ResolveMember before the rounds).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(4..))]
    members: u64,
    /// Ingest streams for batches of 100 (and any size but 1), all on one HTTP/2 connection.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    streams_100: u64,
    /// Batches of 100 events in flight per stream (the collector's default is 16; the service
    /// reads at most 64 ahead per stream).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=64))]
    in_flight_100: u64,
    /// Ingest streams for batches of 1 event, all on one HTTP/2 connection.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    streams_1: u64,
    /// Batches of 1 event in flight per stream.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=64))]
    in_flight_1: u64,
    /// Raw writer tasks. Default: as many as ours keeps batches in flight (streams x in flight).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    raw_writers: Option<u64>,
    /// How the client authenticates: `off` (the server's loopback default), `api-key` or `jwt`
    /// (the server then requires credentials and holds each principal to a call rate).
    #[arg(long, value_enum, default_value = "off")]
    auth: Auth,
    /// Bound of sled's page cache for both databases, in MiB (the binary's default is 256).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    cache_mb: u64,
}

/// What a window measured.
#[derive(Debug, Default)]
pub(crate) struct Window {
    /// Events acknowledged APPLIED (ours) or written and flushed (raw).
    events: u64,
    /// Wall time from the first batch sent to the last answered.
    elapsed: Duration,
    /// Per batch: sent → answered (ours), or apply_batch → flushed (raw), in microseconds.
    latencies_us: Vec<u32>,
    /// Events not APPLIED and answers that broke the contract.
    errors: u64,
    /// The first few distinct error messages.
    error_samples: Vec<String>,
}

impl Window {
    /// Events acknowledged APPLIED.
    pub(crate) fn events(&self) -> u64 {
        self.events
    }

    /// Events not applied and answers that broke the contract.
    pub(crate) fn errors(&self) -> u64 {
        self.errors
    }

    pub(crate) fn per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Nearest-rank percentile of the batch latencies (sorted by [`Window::finish`]).
    pub(crate) fn percentile(&self, p: f64) -> Duration {
        let n = self.latencies_us.len();
        if n == 0 {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        Duration::from_micros(u64::from(self.latencies_us[rank.clamp(1, n) - 1]))
    }

    fn latency(&mut self, since: Instant) {
        let us = u32::try_from(since.elapsed().as_micros()).unwrap_or(u32::MAX);
        self.latencies_us.push(us);
    }

    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.error_samples.len() < ERROR_SAMPLES && !self.error_samples.contains(&message) {
            self.error_samples.push(message);
        }
    }

    /// Adds a concurrent part of the same window (its wall time is set by the caller).
    fn absorb(&mut self, part: Window) {
        self.events += part.events;
        self.latencies_us.extend(part.latencies_us);
        self.errors += part.errors;
        for message in part.error_samples {
            if self.error_samples.len() < ERROR_SAMPLES && !self.error_samples.contains(&message) {
                self.error_samples.push(message);
            }
        }
    }

    /// Adds a later window: rounds follow each other, so their wall times add up.
    pub(crate) fn merge(&mut self, other: Window) {
        self.elapsed += other.elapsed;
        self.absorb(other);
        self.finish();
    }

    fn finish(&mut self) {
        self.latencies_us.sort_unstable();
    }

    /// This window reduced to its errors: warm-up batches count as failures, not measurements.
    pub(crate) fn errors_only(self) -> Window {
        Window {
            errors: self.errors,
            error_samples: self.error_samples,
            ..Window::default()
        }
    }
}

/// Unique events of the benchmark's members, shared by every stream and raw writer of the run.
#[derive(Debug)]
pub(crate) struct Events {
    next: AtomicU64,
    members: Vec<String>,
    /// No event is older than this: the start of the month the run began in (UTC).
    month_start: jiff::Timestamp,
}

impl Events {
    /// Events of `members`, none older than the start of this month (UTC).
    pub(crate) fn new(members: Vec<String>) -> anyhow::Result<Events> {
        let month_start = jiff::Timestamp::now()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .first_of_month()?
            .start_of_day()?
            .timestamp();
        Ok(Events {
            next: AtomicU64::new(0),
            members,
            month_start,
        })
    }

    /// The next `n` events, from `source`. A member's events cycle through agent_login,
    /// queue_login, queue_logout, agent_logout.
    fn batch(&self, source: &str, n: usize) -> Vec<api::Event> {
        let first = self.next.fetch_add(n as u64, Ordering::Relaxed);
        let now = jiff::Timestamp::now();
        let members = self.members.len() as u64;
        (first..first + n as u64)
            .map(|id| {
                let member = (id % members) as usize;
                let queue = || format!("queue-{}", member % QUEUES);
                let kind = match (id / members) % 4 {
                    0 => api::event::Kind::AgentLogin(api::AgentLogin {}),
                    1 => api::event::Kind::QueueLogin(api::QueueLogin { queue_id: queue() }),
                    2 => api::event::Kind::QueueLogout(api::QueueLogout { queue_id: queue() }),
                    _ => api::event::Kind::AgentLogout(api::AgentLogout {}),
                };
                let behind = BEHIND + Duration::from_millis(id.wrapping_mul(7919) % SPREAD_MS);
                let at = now.checked_sub(behind).unwrap_or(now).max(self.month_start);
                api::Event {
                    source: source.to_owned(),
                    event_id: format!("evt-{id:012}"),
                    account_id: ACCOUNT_ID.to_owned(),
                    member_id: self.members[member].clone(),
                    occurred_at: Some(prost_types::Timestamp {
                        seconds: at.as_second(),
                        nanos: at.subsec_nanosecond(),
                    }),
                    kind: Some(kind),
                }
            })
            .collect()
    }
}

/// Runs the benchmark.
pub(crate) fn run(args: &IngestArgs) -> anyhow::Result<ExitCode> {
    let prices = Arc::new(licensing::price_list::sample().map_err(anyhow::Error::msg)?);
    let server_runtime = runtime("server")?;
    let client_runtime = runtime("client")?;
    let folder = tempfile::tempdir().context("creating the database folder")?;
    let cache_capacity_bytes = args.cache_mb << 20;
    let store = Store::open(&StoreConfig {
        path: folder.path().join("licensing"),
        cache_capacity_bytes,
    })
    .context("opening the service's database")?;
    let raw_path = folder.path().join("raw");
    let raw_db = sled::Config::new()
        .path(&raw_path)
        .cache_capacity(cache_capacity_bytes)
        .mode(sled::Mode::HighThroughput)
        .open()
        .context("opening the raw database")?;
    let credentials = crate::credentials::Setup::new(args.auth)?;
    let server =
        server_runtime.block_on(servers::start_licensing_with(prices, store, &credentials))?;
    println!("authentication: {:?}", args.auth);

    let results =
        match client_runtime.block_on(bench(args, &server, &raw_db, credentials.bearer(args.auth)))
        {
            Ok(results) => results,
            Err(error) => {
                // After a stall sled may hold its locks for good (spacejam/sled#1308): stopping the
                // server, dropping the runtimes or closing a database could wait forever. Leave now.
                eprintln!("Error: {error:#}");
                let _ = std::fs::remove_dir_all(folder.path());
                std::process::exit(1);
            }
        };
    server_runtime.block_on(server.stop())?;
    drop(server_runtime);

    println!();
    record_sizes(&folder.path().join("licensing"), &raw_db);
    println!();
    let mut failed = false;
    for result in &results {
        failed |= result.report();
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The totals of one batch size.
#[derive(Debug)]
struct SizeResult {
    size: usize,
    ours: Window,
    raw: Window,
}

impl SizeResult {
    /// Prints the verdicts; returns whether an error fails the command.
    fn report(&self) -> bool {
        let ratio = self.ours.per_second() / self.raw.per_second();
        let p99 = self.ours.percentile(99.0);
        let met = |ok: bool| if ok { "met" } else { "NOT met" };
        if self.size == 100 {
            println!(
                "batches of 100: ours/raw {ratio:.2} (target >= {RATIO_TARGET:.2}: {}); ours {:.0} events/s (issue's figure: about {EVENTS_PER_SECOND_FIGURE:.0}: {})",
                met(ratio >= RATIO_TARGET),
                self.ours.per_second(),
                met(self.ours.per_second() >= EVENTS_PER_SECOND_FIGURE),
            );
        } else {
            println!("batches of {}: ours/raw {ratio:.2} (no target)", self.size);
        }
        println!(
            "batches of {}: ack p99 {:.1} ms (target <= {} ms: {})",
            self.size,
            ms(p99),
            P99_TARGET.as_millis(),
            met(p99 <= P99_TARGET),
        );
        let mut failed = false;
        for (what, window) in [("ours", &self.ours), ("raw", &self.raw)] {
            if window.errors > 0 {
                failed = true;
                eprintln!(
                    "batches of {}, {what}: {} errors; first ones:",
                    self.size, window.errors
                );
                for message in &window.error_samples {
                    eprintln!("  {message}");
                }
            }
        }
        failed
    }
}

async fn bench(
    args: &IngestArgs,
    server: &RunningServer,
    raw_db: &sled::Db,
    bearer: Bearer,
) -> anyhow::Result<Vec<SizeResult>> {
    let channel = Endpoint::from_shared(format!("http://{}", server.address))?
        .tcp_nodelay(true)
        .connect()
        .await
        .context("connecting to licensing")?;
    let channel = InterceptedService::new(channel, bearer);
    let started = Instant::now();
    let members = setup(&channel, args.members).await?;
    println!(
        "ingest: account {ACCOUNT_ID:?} with {} members created in {:.1} s",
        members.len(),
        started.elapsed().as_secs_f64()
    );
    let now = jiff::Timestamp::now();
    let month_start = now
        .to_zoned(jiff::tz::TimeZone::UTC)
        .first_of_month()?
        .start_of_day()?
        .timestamp();
    let events = Arc::new(Events {
        next: AtomicU64::new(0),
        members,
        month_start,
    });
    let trees = Arc::new(Trees::open(raw_db)?);
    let warm_up = Duration::from_secs(args.warm_up);
    let round = Duration::from_secs(args.seconds);

    let mut results = Vec::new();
    for &size in &args.sizes {
        let size = size as usize;
        // Batches of 1 use their own settings, every other size those of batches of 100.
        let (streams, in_flight) = if size == 1 {
            (args.streams_1, args.in_flight_1)
        } else {
            (args.streams_100, args.in_flight_100)
        };
        let (streams, in_flight) = (streams as usize, in_flight as usize);
        let writers = args.raw_writers.map_or(streams * in_flight, |w| w as usize);
        println!(
            "\nbatches of {size} event(s): ours {streams} stream(s) x {in_flight} batches in flight; raw {writers} writer(s), each apply_batch + flush per batch; {} round(s) of {} s after {} s warm-up",
            args.rounds, args.seconds, args.warm_up
        );
        let load = Load {
            channel: &channel,
            events: &events,
            size,
            streams,
            in_flight,
        };
        let raw = Raw {
            db: raw_db,
            streams,
            trees: &trees,
            events: &events,
            size,
            writers,
        };
        let mut ours_total = load.window(warm_up).await?.errors_only();
        let mut raw_total = raw.window(warm_up).await?.errors_only();
        // Each round's ratio; rounds alternate which side runs first, so that neither always
        // runs after the other.
        let mut ratios = Vec::new();
        for n in 1..=args.rounds {
            let label = format!("round {n}/{}", args.rounds);
            let mut per_second = [0.0; 2];
            for side in if n % 2 == 1 { [0, 1] } else { [1, 0] } {
                if side == 0 {
                    let window = load.window(round).await?;
                    print(&label, "ours", &window);
                    per_second[0] = window.per_second();
                    ours_total.merge(window);
                } else {
                    let window = raw.window(round).await?;
                    print(&label, "raw", &window);
                    per_second[1] = window.per_second();
                    raw_total.merge(window);
                }
            }
            ratios.push(per_second[0] / per_second[1]);
        }
        print("total", "ours", &ours_total);
        print("total", "raw", &raw_total);
        println!(
            "ours/raw: {:.2}; from the rounds' ratios: {}",
            ours_total.per_second() / raw_total.per_second(),
            paired::describe(&ratios, RATIO_TARGET)
        );
        results.push(SizeResult {
            size,
            ours: ours_total,
            raw: raw_total,
        });
    }
    Ok(results)
}

/// Creates the account and its members through the API; returns the member ids.
pub(crate) async fn setup(channel: &Client, members: u64) -> anyhow::Result<Vec<String>> {
    let mut client = LicensingServiceClient::new(channel.clone());
    client
        .create_account(api::CreateAccountRequest {
            account_id: ACCOUNT_ID.to_owned(),
            settings: Some(api::AccountSettings {
                time_zone: "UTC".to_owned(),
                auto_growth: true,
                // A month turning during the run must not close the month of events just sent.
                grace_period_days: 1,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .context("CreateAccount")?;
    create_members(&mut client, ACCOUNT_ID, members).await
}

/// Members `agent-00000`, ... of `account_id`, through `ResolveMember` (applied); prints how many
/// of each tier and billing mode.
pub(crate) async fn create_members(
    client: &mut LicensingServiceClient<Client>,
    account_id: &str,
    members: u64,
) -> anyhow::Result<Vec<String>> {
    let skill = |id: &str, channel: api::Channel| api::Skill {
        id: id.to_owned(),
        channel: channel as i32,
    };
    // Per four members: PROFESSIONAL billed daily, PROFESSIONAL monthly, STANDARD monthly, and
    // STANDARD preferring daily (which STANDARD cannot have: billed monthly).
    let kinds = [
        (api::Tier::Professional, api::BillingMode::Daily),
        (api::Tier::Professional, api::BillingMode::Monthly),
        (api::Tier::Standard, api::BillingMode::Monthly),
        (api::Tier::Standard, api::BillingMode::Daily),
    ];
    let mut tally: HashMap<(i32, i32), u64> = HashMap::new();
    let mut ids = Vec::with_capacity(members as usize);
    for i in 0..members {
        let (tier, preference) = kinds[(i % 4) as usize];
        let skills = if tier == api::Tier::Professional {
            vec![
                skill("sales-voice", api::Channel::Voice),
                skill("support-chat", api::Channel::Chat),
            ]
        } else {
            vec![skill("sales-voice", api::Channel::Voice)]
        };
        let member_id = format!("agent-{i:05}");
        let answer = client
            .resolve_member(api::ResolveMemberRequest {
                account_id: account_id.to_owned(),
                member_id: member_id.clone(),
                settings: Some(api::MemberSettings {
                    role: api::Role::User as i32,
                    skills,
                    billing_preference: preference as i32,
                    ..Default::default()
                }),
                apply: true,
            })
            .await
            .context("ResolveMember")?
            .into_inner();
        let licence = answer.licence.context("an answer without a licence")?;
        ensure!(
            answer.applied && licence.tier == tier as i32,
            "{member_id}: applied {}, tier {:?}, expected {tier:?}",
            answer.applied,
            api::Tier::try_from(licence.tier),
        );
        let effective = licence.billing.map_or(0, |b| b.effective);
        *tally.entry((licence.tier, effective)).or_default() += 1;
        ids.push(member_id);
    }
    let mut tally: Vec<_> = tally.into_iter().collect();
    tally.sort_unstable();
    let described: Vec<String> = tally
        .into_iter()
        .map(|((tier, billing), n)| {
            let tier = api::Tier::try_from(tier).map_or("?", |t| t.as_str_name());
            let billing = api::BillingMode::try_from(billing).map_or("?", |b| b.as_str_name());
            format!("{n} {tier} {billing}")
        })
        .collect();
    println!("members: {}", described.join(", "));
    Ok(ids)
}

/// Ours: `streams` Ingest streams of batches of `size`, `in_flight` per stream.
pub(crate) struct Load<'a> {
    pub(crate) channel: &'a Client,
    pub(crate) events: &'a Arc<Events>,
    pub(crate) size: usize,
    pub(crate) streams: usize,
    pub(crate) in_flight: usize,
}

impl Load<'_> {
    pub(crate) async fn window(&self, length: Duration) -> anyhow::Result<Window> {
        let started = Instant::now();
        let until = started + length;
        let mut streams = JoinSet::new();
        for n in 0..self.streams {
            streams.spawn(stream(
                self.channel.clone(),
                self.events.clone(),
                format!("collector-{n}"),
                self.size,
                self.in_flight,
                until,
            ));
        }
        let mut window = Window::default();
        let joined = tokio::time::timeout(length + STALL_TIMEOUT, async {
            while let Some(part) = streams.join_next().await {
                window.absorb(part.context("a stream task failed")??);
            }
            anyhow::Ok(())
        });
        joined.await.with_context(|| {
            format!("ours stalled: the streams did not finish within {STALL_TIMEOUT:?} of the window's end")
        })??;
        window.elapsed = started.elapsed();
        window.finish();
        Ok(window)
    }
}

/// One stream: keeps `in_flight` batches unanswered until `until`, then closes its side and reads
/// the answers still due; checks every answer.
async fn stream(
    channel: Client,
    events: Arc<Events>,
    source: String,
    size: usize,
    in_flight: usize,
    until: Instant,
) -> anyhow::Result<Window> {
    let (requests, outbound) = mpsc::channel(in_flight);
    let mut answers = IngestionServiceClient::new(channel)
        .ingest(ReceiverStream::new(outbound))
        .await
        .context("opening Ingest")?
        .into_inner();
    let mut requests = Some(requests);
    // batch id → (sent at, its event ids in order)
    let mut waiting: HashMap<u64, (Instant, Vec<String>)> = HashMap::with_capacity(in_flight);
    let mut next_id = 0u64;
    let mut window = Window::default();
    loop {
        if let Some(sender) = &requests {
            if Instant::now() < until {
                while waiting.len() < in_flight {
                    next_id += 1;
                    let batch = events.batch(&source, size);
                    let ids = batch.iter().map(|e| e.event_id.clone()).collect();
                    waiting.insert(next_id, (Instant::now(), ids));
                    sender
                        .send(api::IngestRequest {
                            batch_id: next_id,
                            events: batch,
                            traceparent: String::new(),
                        })
                        .await
                        .context("the Ingest request stream closed")?;
                }
            } else {
                // Closing our side: the server answers what is in flight, then ends the stream.
                requests = None;
            }
        }
        let Some(answer) = answers
            .message()
            .await
            .context("the Ingest stream failed")?
        else {
            break;
        };
        let Some((sent, ids)) = waiting.remove(&answer.batch_id) else {
            window.error(format!(
                "{source}: an answer for batch {}, which is not waiting for one",
                answer.batch_id
            ));
            continue;
        };
        window.latency(sent);
        if answer.outcomes.len() != ids.len() {
            window.error(format!(
                "{source}: batch {}: {} outcomes for {} events",
                answer.batch_id,
                answer.outcomes.len(),
                ids.len()
            ));
        }
        for (outcome, id) in answer.outcomes.iter().zip(&ids) {
            if outcome.event_id != *id {
                window.error(format!(
                    "{source}: batch {}: outcome for {:?} where {id:?} was due",
                    answer.batch_id, outcome.event_id
                ));
            } else if outcome.outcome == api::Outcome::Applied as i32 {
                window.events += 1;
            } else {
                window.error(format!(
                    "{source}: batch {}: event {id}: {:?} {:?} {}",
                    answer.batch_id,
                    api::Outcome::try_from(outcome.outcome),
                    api::RefusalReason::try_from(outcome.refusal),
                    outcome.detail
                ));
            }
        }
    }
    if !waiting.is_empty() {
        bail!(
            "{source}: the Ingest stream ended with {} batches unanswered",
            waiting.len()
        );
    }
    Ok(window)
}

/// The raw database's trees.
#[derive(Debug)]
struct Trees {
    dedupe: sled::Tree,
    days: sled::Tree,
    sessions: sled::Tree,
}

impl Trees {
    fn open(db: &sled::Db) -> anyhow::Result<Trees> {
        let [dedupe, days, sessions] = TREES;
        Ok(Trees {
            dedupe: db.open_tree(dedupe)?,
            days: db.open_tree(days)?,
            sessions: db.open_tree(sessions)?,
        })
    }
}

/// Raw: `writers` tasks, each writing a batch of `size` events and flushing, one after another.
struct Raw<'a> {
    db: &'a sled::Db,
    streams: usize,
    trees: &'a Arc<Trees>,
    events: &'a Arc<Events>,
    size: usize,
    writers: usize,
}

impl Raw<'_> {
    async fn window(&self, length: Duration) -> anyhow::Result<Window> {
        let started = Instant::now();
        let until = started + length;
        let mut writers = JoinSet::new();
        for n in 0..self.writers {
            writers.spawn(raw_writer(
                self.db.clone(),
                self.trees.clone(),
                self.events.clone(),
                // The sources of ours, so that keys and day records have the same lengths.
                format!("collector-{}", n % self.streams),
                self.size,
                until,
            ));
        }
        let mut window = Window::default();
        let joined = tokio::time::timeout(length + STALL_TIMEOUT, async {
            while let Some(part) = writers.join_next().await {
                window.absorb(part.context("a raw writer task failed")??);
            }
            anyhow::Ok(())
        });
        joined.await.with_context(|| {
            format!("raw stalled: the writers did not finish within {STALL_TIMEOUT:?} of the window's end")
        })??;
        window.elapsed = started.elapsed();
        window.finish();
        Ok(window)
    }
}

async fn raw_writer(
    db: sled::Db,
    trees: Arc<Trees>,
    events: Arc<Events>,
    source: String,
    size: usize,
    until: Instant,
) -> anyhow::Result<Window> {
    let mut window = Window::default();
    while Instant::now() < until {
        let begun = Instant::now();
        let batch = events.batch(&source, size);
        let (db, trees) = (db.clone(), trees.clone());
        // sled's `flush_async` deadlocks when several run at once (spacejam/sled#1308, in
        // 0.34.7): each raw writer writes and flushes synchronously on the blocking pool.
        let write = tokio::task::spawn_blocking(move || write_and_flush(&db, &trees, &batch));
        tokio::time::timeout(STALL_TIMEOUT, write)
            .await
            .with_context(|| format!("a raw write and flush took over {STALL_TIMEOUT:?}"))?
            .context("a raw write task failed")??;
        window.events += size as u64;
        window.latency(begun);
    }
    Ok(window)
}

/// One raw group: an `apply_batch` per tree, then a flush.
fn write_and_flush(db: &sled::Db, trees: &Trees, events: &[api::Event]) -> anyhow::Result<()> {
    let (mut dedupe, mut days, mut sessions) = Default::default();
    let mut logins = false;
    for event in events {
        logins |= write_raw(event, &mut dedupe, &mut days, &mut sessions)?;
    }
    trees.dedupe.apply_batch(dedupe)?;
    if logins {
        trees.days.apply_batch(days)?;
    }
    trees.sessions.apply_batch(sessions)?;
    db.flush()?;
    Ok(())
}

/// Adds the writes the store makes for `event` (a login, logout, queue login or queue logout of a
/// known member) to the batches: keys as `licensing-store/src/ingest.rs` builds them, values as
/// long as its records (postcard, `records.rs`). Returns whether it wrote a login day.
fn write_raw(
    event: &api::Event,
    dedupe: &mut sled::Batch,
    days: &mut sled::Batch,
    sessions: &mut sled::Batch,
) -> anyhow::Result<bool> {
    let account = event.account_id.as_bytes();
    let (source, event_id) = (event.source.as_bytes(), event.event_id.as_bytes());
    let member = event.member_id.as_bytes();
    let at = event.occurred_at.context("occurred_at")?;
    let at = jiff::Timestamp::new(at.seconds, at.nanos)?;

    // DedupeRecord::V1 { fingerprint: u64, month: (i16, i8) }: tag 1 + varint <= 10 + 2 + 1.
    dedupe.insert(join(&[account, source, event_id]), &[0x5a; 14][..]);

    use api::event::Kind;
    let (login, change, queue) = match &event.kind {
        Some(Kind::AgentLogin(_)) => (true, 0u8, ""),
        Some(Kind::AgentLogout(_)) => (false, 1, ""),
        Some(Kind::QueueLogin(q)) => (true, 2, q.queue_id.as_str()),
        Some(Kind::QueueLogout(q)) => (false, 3, q.queue_id.as_str()),
        other => bail!("the raw baseline writes no {other:?}"),
    };
    if login {
        let date = at.to_zoned(jiff::tz::TimeZone::UTC).date().to_string();
        // DayRecord::V1 { tier, billable, logins, event_ids }: tag, tier, bool, varint logins,
        // length, then the day's smallest `source/event_id`s, each with its length.
        let id_len = source.len() + 1 + event_id.len();
        let value = vec![0x5a; 5 + EVENT_IDS_PER_DAY * (1 + id_len)];
        days.insert(join(&[account, member, date.as_bytes()]), value);
    }
    let mut time = [0u8; 12];
    time[..8].copy_from_slice(&((at.as_second() as u64) ^ (1 << 63)).to_be_bytes());
    time[8..].copy_from_slice(&(at.subsec_nanosecond() as u32).to_be_bytes());
    // SessionRecord::V1 { tier, change, queue }: tag, tier, change, length, queue.
    let mut value = vec![0, 2, change, queue.len() as u8];
    value.extend_from_slice(queue.as_bytes());
    sessions.insert(join(&[account, &time, member, source, event_id]), value);
    Ok(login)
}

/// Parts joined by a 0 byte, as the store builds its keys.
fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(part);
    }
    key
}

/// Prints each tree's records and their mean key and value sizes in both databases, so the
/// baseline's writes can be seen to match the service's. The service's database is reopened
/// after the server stopped; when sled still holds its lock, that side is skipped.
fn record_sizes(service: &Path, raw: &sled::Db) {
    let service = (0..50).find_map(|_| {
        match sled::Config::new().path(service).open() {
            Ok(db) => Some(db),
            Err(_) => {
                // The server's last tasks may still hold the database for a moment.
                std::thread::sleep(Duration::from_millis(100));
                None
            }
        }
    });
    println!("records written (mean key / value bytes):");
    for name in TREES {
        let mut line = format!("  {name:<9}");
        for (what, db) in [("service", service.as_ref()), ("raw", Some(raw))] {
            match db.map(|db| db.open_tree(name)) {
                Some(Ok(tree)) => {
                    let (mut n, mut keys, mut values) = (0u64, 0usize, 0usize);
                    for (key, value) in tree.iter().flatten() {
                        n += 1;
                        keys += key.len();
                        values += value.len();
                    }
                    let mean = |total: usize| total as f64 / n.max(1) as f64;
                    line += &format!(
                        "  {what} {n:>8} records, {:>5.1} / {:>5.1}",
                        mean(keys),
                        mean(values)
                    );
                }
                _ => line += &format!("  {what}: not readable"),
            }
        }
        println!("{line}");
    }
}

pub(crate) fn print(label: &str, what: &str, window: &Window) {
    println!(
        "{label:<10} {what:<4} {:>8.0} events/s  ack p50 {:>6.1} ms  p99 {:>6.1} ms  ({} events, {} batches, {} errors)",
        window.per_second(),
        ms(window.percentile(50.0)),
        ms(window.percentile(99.0)),
        window.events,
        window.latencies_us.len(),
        window.errors,
    );
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn runtime(name: &str) -> anyhow::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("building the {name} runtime"))
}
