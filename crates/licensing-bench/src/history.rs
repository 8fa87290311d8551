//! `history`: what reading a month costs once the account has months of history behind it.
//!
//! The real server (`licensing::server::run`, a fresh sled database with the binary's default
//! cache bound) on loopback, on its own runtime. A sandbox account (UTC, auto-growth) with
//! `--members` members (PROFESSIONAL and STANDARD, billed monthly and daily, as in `ingest`),
//! created through `CreateAccount` and `ResolveMember`. Then, month after month: the sandbox clock is
//! advanced to the month's last second (`AdvanceClock`), and every member's day of session
//! changes is ingested for every day of the month (`Ingest`, batches of 500, 16 in flight, every
//! outcome checked APPLIED): an agent login at 08:00 plus up to an hour, queue logins and
//! logouts 20 minutes apart, an agent logout, `--changes-per-day` in all.
//!
//! After the first month and after the last, the month in progress is read once right after the
//! ingestion, then, once the account's background work caught up (every day's peaks kept, the
//! floor moved past the closed months and the records below it deleted, expired dedupe records
//! deleted: `Store::backlog`,
//! polled; the time it took is printed), `--reads` times each: `GetUsage` (the whole snapshot:
//! summary, concurrency peaks, every member's row) and `GetStatement` of that month. The ingestion
//! packs a month of events into well under a minute, so the work that a month of real time
//! spreads out is all waiting at its end. The command prints the median of each, the ratio of the last
//! month's to the first's (the target: at most 1.2, that is, reading a month costs the same in
//! year one as in month one), the database's size on disk per month retained, and the records
//! each tree holds after the first and the last month (a scan, not timed).
//!
//! Month 1's reads and month 12's are minutes apart, and the machine's speed drifts by more than
//! the target between them. So the command also reads the last month against a **same-moment
//! baseline**: after the last month, a new sandbox account of the same members is given the same
//! month (its first), and once the background work of both caught up, `--reads` rounds each read
//! both accounts' month back to back (GetUsage, then GetStatement; each round starting with the
//! other account). The per-round ratios, history over new, give an estimate with a 95 %
//! confidence interval (`paired.rs`): the cost of the year of history alone, the process,
//! database, cache and moment being the same.
//!
//! `--events-per-second` spreads each month's ingestion over more time (batches sent no faster
//! than the rate), to compare what the burst costs on disk.
//!
//! With `--keep DIR` the database stays in `DIR` (`--months 1` is then allowed); `--reread DIR`
//! opens it again in a new process and times the reads of its month in progress only. Rereading
//! a one-month and a twelve-month database one after the other compares the two months in the
//! same conditions: a new process each, nothing else in its heap or its page cache.

use std::{
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use clap::Args;
use jiff::{Timestamp, ToSpan as _, civil::Date, tz::TimeZone};
use licensing::api::{
    self, ingestion_service_client::IngestionServiceClient,
    licensing_service_client::LicensingServiceClient,
};
use licensing_store::{Store, StoreConfig};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{service::interceptor::InterceptedService, transport::Endpoint};

use crate::{
    credentials::Bearer,
    ingestion::{Client, create_members, ms, runtime},
    paired, servers,
};

/// The last month's read may cost at most this much more than the first month's.
const RATIO_TARGET: f64 = 1.2;
const ACCOUNT_ID: &str = "bench-history";
/// The same-moment baseline: an account of the same members and events whose first month is
/// the history's last one.
const NEW_ACCOUNT_ID: &str = "bench-history-new";
/// The first month of the history.
const FIRST_DAY: &str = "2025-01-01";
/// Events per Ingest batch and batches in flight on the one stream.
const BATCH: usize = 500;
const IN_FLIGHT: usize = 16;
/// Queues the members log in and out of.
const QUEUES: u32 = 4;

/// Options of `licensing-bench history`.
#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    /// Members of the account.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    members: u32,
    /// Months of history (at least 2, or 1 with `--keep`: a database to `--reread`).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=60))]
    months: u32,
    /// Session changes per member per day: a login, queue logins and logouts, a logout (even).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(2..=200))]
    changes_per_day: u32,
    /// Timed reads of each kind after the first and the last month; the median is reported.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
    reads: u32,
    /// Upper bound of the database's page cache, in MiB (the binary's default).
    #[arg(long, default_value_t = 256)]
    cache_mb: u64,
    /// Ingests at most this many events per second (0: as fast as the service takes them). A
    /// month's events arrive over a month in service; this spreads them over more of the
    /// benchmark's time, to see what the ingestion's burst costs on disk.
    #[arg(long, default_value_t = 0)]
    events_per_second: u32,
    /// Builds the database in this folder (which must not exist yet) and keeps it, so that
    /// `--reread` can read its last month again.
    #[arg(long, conflicts_with = "reread")]
    keep: Option<std::path::PathBuf>,
    /// Builds nothing: opens the database a `--keep` run left in this folder and reads the
    /// account's month in progress `--reads` times each way (to profile a year's reads).
    #[arg(long)]
    reread: Option<std::path::PathBuf>,
}

/// The timed reads of one month.
#[derive(Debug)]
struct Reads {
    month: String,
    usage: Duration,
    usage_rows: u64,
    statement: Duration,
    /// One GetUsage and one GetStatement right after the month's ingestion, before the
    /// background work caught up.
    right_after: (Duration, Duration),
    /// How long the background work took to catch up after the ingestion.
    caught_up: Duration,
    disk_bytes: u64,
    /// Per tree: records and bytes of keys and values held.
    live: Vec<(String, u64, u64)>,
}

/// Runs the benchmark.
pub(crate) fn run(args: &HistoryArgs) -> anyhow::Result<ExitCode> {
    ensure!(
        args.changes_per_day.is_multiple_of(2),
        "--changes-per-day {}: must be even (every login is followed by its logout)",
        args.changes_per_day
    );
    ensure!(
        args.months >= 2 || args.keep.is_some() || args.reread.is_some(),
        "--months {}: at least 2 months are compared (1 only with --keep)",
        args.months
    );
    let prices = Arc::new(licensing::price_list::sample().map_err(anyhow::Error::msg)?);
    let server_runtime = runtime("server")?;
    let client_runtime = runtime("client")?;
    let (folder, _temporary) = match (&args.keep, &args.reread) {
        (Some(folder), _) => {
            ensure!(
                !folder.exists(),
                "--keep {}: already exists; give a new folder",
                folder.display()
            );
            (folder.clone(), None)
        }
        (None, Some(folder)) => {
            ensure!(
                folder.join("licensing").exists(),
                "--reread {}: no database a `--keep` run left",
                folder.display()
            );
            (folder.clone(), None)
        }
        (None, None) => {
            let temporary = tempfile::tempdir().context("creating the database folder")?;
            (temporary.path().to_owned(), Some(temporary))
        }
    };
    let store = Store::open(&StoreConfig {
        path: folder.join("licensing"),
        cache_capacity_bytes: args.cache_mb << 20,
    })
    .context("opening the service's database")?;
    let server = server_runtime.block_on(servers::start_licensing(prices, store.clone()))?;
    if args.reread.is_some() {
        let measured = client_runtime.block_on(reread(args, server.address, &store));
        server_runtime.block_on(server.stop())?;
        let reads = measured?;
        print_reads(&[&reads]);
        return Ok(ExitCode::SUCCESS);
    }
    let measured = client_runtime.block_on(bench(args, server.address, &store));
    let (months, paired) = match measured {
        Ok(measured) => measured,
        Err(error) => {
            // As in `ingest`: after a failure sled may hold its locks; leave at once.
            eprintln!("Error: {error:#}");
            if args.keep.is_none() {
                let _ = std::fs::remove_dir_all(&folder);
            }
            std::process::exit(1);
        }
    };
    server_runtime.block_on(server.stop())?;
    let months: Vec<&Reads> = months.iter().collect();
    print_reads(&months);
    let (first, last) = match months[..] {
        [first, .., last] => (first, last),
        _ => return Ok(ExitCode::SUCCESS),
    };
    let usage = last.usage.as_secs_f64() / first.usage.as_secs_f64();
    let statement = last.statement.as_secs_f64() / first.statement.as_secs_f64();
    let verdict = |ratio: f64| {
        if ratio <= RATIO_TARGET {
            "met"
        } else {
            "NOT met"
        }
    };
    println!(
        "GetUsage month {} / month 1: {usage:.2} (target <= {RATIO_TARGET}: {})",
        args.months,
        verdict(usage)
    );
    println!(
        "GetStatement month {} / month 1: {statement:.2} (target <= {RATIO_TARGET}: {})",
        args.months,
        verdict(statement)
    );
    for (name, ratios) in [
        ("GetUsage", &paired.usage),
        ("GetStatement", &paired.statement),
    ] {
        println!(
            "{name} month {} / a new account's month 1, the same month read at the same moment: {}",
            args.months,
            paired::describe_against(ratios, paired::Target::AtMost(RATIO_TARGET))
        );
    }
    println!(
        "disk: {:.2} MiB per month retained ({} months, {:.1} MiB in all; {:.2} MiB after the first)",
        last.disk_bytes as f64 / f64::from(args.months) / f64::from(1 << 20),
        args.months,
        last.disk_bytes as f64 / f64::from(1 << 20),
        first.disk_bytes as f64 / f64::from(1 << 20),
    );
    Ok(if usage <= RATIO_TARGET && statement <= RATIO_TARGET {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints each month's reads and the records held after it.
fn print_reads(months: &[&Reads]) {
    println!();
    for reads in months {
        println!(
            "{}: GetUsage {:.1} ms ({} rows), GetStatement {:.1} ms, {:.1} MiB on disk; \
             right after ingestion GetUsage {:.1} ms, GetStatement {:.1} ms, caught up in {:.1} s",
            reads.month,
            ms(reads.usage),
            reads.usage_rows,
            ms(reads.statement),
            reads.disk_bytes as f64 / f64::from(1 << 20),
            ms(reads.right_after.0),
            ms(reads.right_after.1),
            reads.caught_up.as_secs_f64(),
        );
    }
    for reads in months {
        let bytes: u64 = reads.live.iter().map(|(_, _, b)| b).sum();
        let trees: Vec<String> = reads
            .live
            .iter()
            .map(|(name, records, bytes)| {
                format!(
                    "{name} {records} ({:.1} MiB)",
                    *bytes as f64 / f64::from(1 << 20)
                )
            })
            .collect();
        println!(
            "{}: records held {:.1} MiB (the file {:.2} times that): {}",
            reads.month,
            bytes as f64 / f64::from(1 << 20),
            reads.disk_bytes as f64 / bytes.max(1) as f64,
            trees.join(", ")
        );
    }
}

/// A channel to the server and a licensing client on it.
async fn connect(
    address: std::net::SocketAddr,
) -> anyhow::Result<(Client, LicensingServiceClient<Client>)> {
    let channel = Endpoint::from_shared(format!("http://{address}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {address}"))?;
    let channel = InterceptedService::new(channel, Bearer::none());
    let client = LicensingServiceClient::new(channel.clone())
        .max_decoding_message_size(licensing::server::MAX_ENCODING_MESSAGE_BYTES);
    Ok((channel, client))
}

/// `--reread`: the month in progress of the account a `--keep` run left, read again.
async fn reread(
    args: &HistoryArgs,
    address: std::net::SocketAddr,
    store: &Store,
) -> anyhow::Result<Reads> {
    let (_, mut client) = connect(address).await?;
    let account = client
        .get_account(api::GetAccountRequest {
            account_id: ACCOUNT_ID.to_owned(),
        })
        .await
        .context("GetAccount")?
        .into_inner()
        .account
        .context("GetAccount answered no account")?;
    let now = account.now.context("the account has no clock")?;
    let now = Timestamp::new(now.seconds, now.nanos)?.to_zoned(TimeZone::UTC);
    let month = now.date().first_of_month();
    let caught_up = catch_up(store, ACCOUNT_ID, &month_label(month)).await?;
    let mut reads = read_month(&mut client, store, month, args).await?;
    reads.caught_up = caught_up;
    Ok(reads)
}

/// A sandbox account (UTC, auto-growth) whose clock starts at `first_day`, with `--members`
/// members; returns their ids.
async fn create_account(
    client: &mut LicensingServiceClient<Client>,
    account_id: &str,
    first_day: Date,
    args: &HistoryArgs,
) -> anyhow::Result<Vec<String>> {
    let start = first_day.to_zoned(TimeZone::UTC)?.timestamp();
    client
        .create_account(api::CreateAccountRequest {
            account_id: account_id.to_owned(),
            settings: Some(api::AccountSettings {
                time_zone: "UTC".to_owned(),
                auto_growth: true,
                ..Default::default()
            }),
            sandbox: true,
            sandbox_clock_start: Some(timestamp(start)),
        })
        .await
        .context("CreateAccount")?;
    create_members(client, account_id, u64::from(args.members)).await
}

/// Advances the account's sandbox clock to the last second of the month starting on `month`;
/// returns the next month's first day.
async fn to_month_end(
    client: &mut LicensingServiceClient<Client>,
    account_id: &str,
    month: Date,
) -> anyhow::Result<Date> {
    let next_start = month.checked_add(1.month())?;
    let end = next_start.to_zoned(TimeZone::UTC)?.timestamp() - 1.second();
    client
        .advance_clock(api::AdvanceClockRequest {
            account_id: account_id.to_owned(),
            to: Some(timestamp(end)),
        })
        .await
        .context("AdvanceClock")?;
    Ok(next_start)
}

/// The same-moment comparison: each round's read of the history's last month over the same
/// read of the new account's first month.
#[derive(Debug, Default)]
struct Paired {
    usage: Vec<f64>,
    statement: Vec<f64>,
}

async fn bench(
    args: &HistoryArgs,
    address: std::net::SocketAddr,
    store: &Store,
) -> anyhow::Result<(Vec<Reads>, Paired)> {
    let (channel, mut client) = connect(address).await?;
    let first_day: Date = FIRST_DAY.parse()?;
    let members = create_account(&mut client, ACCOUNT_ID, first_day, args).await?;
    println!(
        "{} members, {} months of {} session changes per member per day{}",
        members.len(),
        args.months,
        args.changes_per_day,
        match args.events_per_second {
            0 => String::new(),
            rate => format!(", ingested at most {rate} events/s"),
        }
    );

    let mut read = Vec::new();
    for month in 0..args.months {
        let month_start = first_day.checked_add(i64::from(month).months())?;
        let next_start = to_month_end(&mut client, ACCOUNT_ID, month_start).await?;
        let started = Instant::now();
        let events = ingest_month(
            &channel,
            ACCOUNT_ID,
            &members,
            month_start,
            next_start,
            args,
        )
        .await?;
        println!(
            "{}: {events} events ingested in {:.1} s",
            month_label(month_start),
            started.elapsed().as_secs_f64()
        );
        if month == 0 || month + 1 == args.months {
            let label = month_label(month_start);
            let (usage, _, statement) =
                timed_reads(&mut client, ACCOUNT_ID, &label, 1, args).await?;
            let caught_up = catch_up(store, ACCOUNT_ID, &label).await?;
            println!(
                "{label}: read right after ingestion: GetUsage {:.1} ms, GetStatement {:.1} ms; \
                 background work caught up {:.1} s after ingestion",
                ms(usage),
                ms(statement),
                caught_up.as_secs_f64()
            );
            let mut reads = read_month(&mut client, store, month_start, args).await?;
            reads.right_after = (usage, statement);
            reads.caught_up = caught_up;
            read.push(reads);
        }
    }
    let last_month = first_day.checked_add(i64::from(args.months - 1).months())?;
    let paired = if args.months >= 2 {
        same_moment(&channel, &mut client, store, last_month, args).await?
    } else {
        Paired::default()
    };
    Ok((read, paired))
}

/// A new account of the same members whose first month is `month`, the history's last, given
/// the same events; once the background work of both accounts caught up, `--reads` rounds that
/// each read both accounts' month back to back (each round starting with the other account).
/// The history's month and the new account's are then read in the same conditions: the same
/// process, database, cache and moment, the same size of month; what differs is the year of
/// history behind one of them.
async fn same_moment(
    channel: &Client,
    client: &mut LicensingServiceClient<Client>,
    store: &Store,
    month: Date,
    args: &HistoryArgs,
) -> anyhow::Result<Paired> {
    let label = month_label(month);
    let members = create_account(client, NEW_ACCOUNT_ID, month, args).await?;
    let next_start = to_month_end(client, NEW_ACCOUNT_ID, month).await?;
    let events = ingest_month(channel, NEW_ACCOUNT_ID, &members, month, next_start, args).await?;
    catch_up(store, NEW_ACCOUNT_ID, &label).await?;
    catch_up(store, ACCOUNT_ID, &label).await?;
    println!(
        "{label}: a new account {NEW_ACCOUNT_ID:?} of the same {} members, its first month {label} ({events} events): the same-moment baseline",
        members.len()
    );
    let mut paired = Paired::default();
    for round in 0..args.reads {
        let mut times = [(Duration::ZERO, Duration::ZERO); 2];
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for index in order {
            let account = [ACCOUNT_ID, NEW_ACCOUNT_ID][index];
            let (usage, _, statement) = timed_reads(client, account, &label, 1, args).await?;
            times[index] = (usage, statement);
        }
        paired
            .usage
            .push(times[0].0.as_secs_f64() / times[1].0.as_secs_f64());
        paired
            .statement
            .push(times[0].1.as_secs_f64() / times[1].1.as_secs_f64());
    }
    Ok(paired)
}

/// Every member's session changes on every day of `[from, to)`, through one Ingest stream;
/// returns how many were applied (all of them, or an error).
async fn ingest_month(
    channel: &Client,
    account_id: &'static str,
    members: &[String],
    from: Date,
    to: Date,
    args: &HistoryArgs,
) -> anyhow::Result<u64> {
    let (requests, outbound) = mpsc::channel(IN_FLIGHT);
    let mut answers = IngestionServiceClient::new(channel.clone())
        .ingest(ReceiverStream::new(outbound))
        .await
        .context("opening Ingest")?
        .into_inner();
    let label = month_label(from);
    let members = members.to_vec();
    let changes = args.changes_per_day;
    // Batch `n` is sent no earlier than `n` batches' worth of the rate after the start.
    let batch_every = (args.events_per_second > 0)
        .then(|| Duration::from_secs_f64(BATCH as f64 / f64::from(args.events_per_second)));
    let producer = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let mut batch = Vec::with_capacity(BATCH);
        let mut batch_id = 0u64;
        let mut day = from;
        while day < to {
            let midnight = day.to_zoned(TimeZone::UTC)?.timestamp();
            for (n, member) in members.iter().enumerate() {
                let login = midnight + 8.hours() + ((n as i64 * 37) % 3600).seconds();
                for k in 0..changes {
                    let at = login + (i64::from(k) * 20).minutes();
                    let queue = format!("queue-{}", (k.saturating_sub(1) / 2) % QUEUES);
                    let kind = if k == 0 {
                        api::event::Kind::AgentLogin(api::AgentLogin {})
                    } else if k + 1 == changes {
                        api::event::Kind::AgentLogout(api::AgentLogout {})
                    } else if k % 2 == 1 {
                        api::event::Kind::QueueLogin(api::QueueLogin { queue_id: queue })
                    } else {
                        api::event::Kind::QueueLogout(api::QueueLogout { queue_id: queue })
                    };
                    batch.push(api::Event {
                        source: "history".to_owned(),
                        event_id: format!("{day}-{n}-{k}"),
                        account_id: account_id.to_owned(),
                        member_id: member.clone(),
                        occurred_at: Some(timestamp(at)),
                        kind: Some(kind),
                    });
                    if batch.len() == BATCH {
                        if let Some(every) = batch_every {
                            let due = every.saturating_mul(u32::try_from(batch_id)?);
                            tokio::time::sleep_until(started + due).await;
                        }
                        batch_id += 1;
                        let events = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                        send(&requests, batch_id, events).await?;
                    }
                }
            }
            day = day.tomorrow()?;
        }
        if !batch.is_empty() {
            batch_id += 1;
            send(&requests, batch_id, batch).await?;
        }
        anyhow::Ok(batch_id)
    });
    let mut applied = 0u64;
    let mut answered = 0u64;
    while let Some(answer) = answers
        .message()
        .await
        .context("the Ingest stream failed")?
    {
        answered += 1;
        for outcome in &answer.outcomes {
            ensure!(
                outcome.outcome == api::Outcome::Applied as i32,
                "{label}: event {}: {:?} {:?} {}",
                outcome.event_id,
                api::Outcome::try_from(outcome.outcome),
                api::RefusalReason::try_from(outcome.refusal),
                outcome.detail
            );
            applied += 1;
        }
    }
    let sent = producer.await.context("the producer task failed")??;
    ensure!(
        answered == sent,
        "{label}: {answered} of {sent} batches answered"
    );
    Ok(applied)
}

async fn send(
    requests: &mpsc::Sender<api::IngestRequest>,
    batch_id: u64,
    events: Vec<api::Event>,
) -> anyhow::Result<()> {
    requests
        .send(api::IngestRequest {
            batch_id,
            events,
            traceparent: String::new(),
        })
        .await
        .context("the Ingest request stream closed")
}

/// How long the background work of the account may take to catch up after a month's ingestion.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(3600);
/// How often the backlog is looked at while waiting, and its progress printed.
const CATCH_UP_POLL: Duration = Duration::from_millis(200);
const CATCH_UP_PROGRESS: Duration = Duration::from_secs(30);

/// Waits until the account's background work is done: every day's peaks kept, the floor moved
/// past the closed months, the records below it deleted, the dedupe records past their retention
/// expired ([`Store::backlog`]). Returns how long that took.
async fn catch_up(store: &Store, account_id: &str, label: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut reported = Instant::now();
    loop {
        let (reading, account) = (store.clone(), account_id.to_owned());
        let backlog = tokio::task::spawn_blocking(move || {
            reading.backlog(
                &account,
                jiff::Timestamp::now(),
                licensing::ingest::DEFAULT_DEDUPE_RETENTION_DAYS,
            )
        })
        .await
        .context("the backlog reader failed")?
        .context("reading the backlog")?;
        if backlog.is_empty() {
            return Ok(started.elapsed());
        }
        ensure!(
            started.elapsed() < CATCH_UP_LIMIT,
            "{label}: the background work did not catch up within {CATCH_UP_LIMIT:?}: {backlog:?}"
        );
        if reported.elapsed() >= CATCH_UP_PROGRESS {
            reported = Instant::now();
            println!(
                "{label}: catching up after {:.0} s: {backlog:?}",
                started.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(CATCH_UP_POLL).await;
    }
}

/// `reads` reads of each kind of the month `label` in progress: the median GetUsage, its rows,
/// the median GetStatement.
async fn timed_reads(
    client: &mut LicensingServiceClient<Client>,
    account_id: &str,
    label: &str,
    reads: u32,
    args: &HistoryArgs,
) -> anyhow::Result<(Duration, u64, Duration)> {
    let mut usage = Vec::new();
    let mut statement = Vec::new();
    let mut usage_rows = 0;
    for _ in 0..reads {
        let started = Instant::now();
        let mut stream = client
            .get_usage(api::GetUsageRequest {
                account_id: account_id.to_owned(),
                tiers: Vec::new(),
                follow: false,
                month: String::new(),
                view: api::UsageView::Full as i32,
            })
            .await
            .context("GetUsage")?
            .into_inner();
        let mut rows = 0u64;
        let mut peaks = 0u32;
        while let Some(message) = stream.message().await.context("reading GetUsage")? {
            match message.part {
                Some(api::get_usage_response::Part::Summary(summary)) => {
                    peaks = summary.concurrency_peaks.iter().map(|p| p.peak).sum();
                }
                Some(api::get_usage_response::Part::Members(batch)) => {
                    rows += batch.rows.len() as u64;
                }
                _ => {}
            }
        }
        usage.push(started.elapsed());
        ensure!(
            rows == u64::from(args.members),
            "{label}: GetUsage gave {rows} rows for {} members",
            args.members
        );
        ensure!(
            peaks == args.members,
            "{label}: GetUsage's concurrency peaks add up to {peaks}, {} members were logged in at once",
            args.members
        );
        usage_rows = rows;

        let started = Instant::now();
        let answer = client
            .get_statement(api::GetStatementRequest {
                account_id: account_id.to_owned(),
                month: label.to_owned(),
            })
            .await
            .context("GetStatement")?
            .into_inner();
        statement.push(started.elapsed());
        ensure!(answer.statement.is_some(), "{label}: no statement");
    }
    Ok((median(usage), usage_rows, median(statement)))
}

/// The month in progress, read `--reads` times each way (medians), then the database's size and
/// records (untimed).
async fn read_month(
    client: &mut LicensingServiceClient<Client>,
    store: &Store,
    month: Date,
    args: &HistoryArgs,
) -> anyhow::Result<Reads> {
    let label = month_label(month);
    let (usage, usage_rows, statement) =
        timed_reads(client, ACCOUNT_ID, &label, args.reads, args).await?;
    Ok(Reads {
        usage,
        usage_rows,
        statement,
        right_after: (Duration::ZERO, Duration::ZERO),
        caught_up: Duration::ZERO,
        disk_bytes: store.size_on_disk().context("size on disk")?,
        live: store.live_records().context("records held")?,
        month: label,
    })
}

fn median(mut durations: Vec<Duration>) -> Duration {
    durations.sort_unstable();
    durations[durations.len() / 2]
}

fn month_label(day: Date) -> String {
    format!("{:04}-{:02}", day.year(), day.month())
}

fn timestamp(at: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.as_second(),
        nanos: at.subsec_nanosecond(),
    }
}
