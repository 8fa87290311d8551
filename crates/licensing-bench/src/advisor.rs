//! `advisor`: `Advise` on one account of many members with a month of history, against
//! `GetUsage` of the same account in the same run.
//!
//! The account (a sandbox in UTC) gets `--members` members applied through the store: of every
//! ten, six agents with two voice skills `q-a` and `q-b` billed monthly (PROFESSIONAL), two with
//! one voice skill (STANDARD), two team leaders (PROFESSIONAL). Every agent logs into queue `q-a`
//! on `--login-days` days of November; the team leaders never log in. The clock then moves to
//! December 1st, so November is the month compared for the billing mode and the 30-day window.
//! Expected per ten members: six right-sizings (`q-b` unused), six billing modes (the agents'
//! few login days cost less daily), two idle members; and the STANDARD seats are all in use.
//!
//! Served in process on loopback; rounds alternate `Advise` (every recommendation read and
//! counted; the time to the first message with a member's recommendation is kept) and a
//! `GetUsage` snapshot (view FULL, every row read). The ratio compares members judged per
//! second by `Advise` with rows per second of `GetUsage`.

use std::{
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use clap::Args;
use jiff::Timestamp;
use licensing::api;
use licensing_core::{
    Account, AccountSettings, BillingMode, Channel, Event, EventKind, Inventory, MemberSettings,
    MemberSettingsInput, Outcome, Role, Skill, UNAUTHENTICATED, Zone,
};
use licensing_store::{Store, StoreConfig};

use crate::{ingestion::runtime, servers, usage::usage_client};

const ACCOUNT_ID: &str = "advised";
/// Target: the first recommendation within this long.
const FIRST_TARGET: Duration = Duration::from_millis(100);
/// Target: members judged per second at least this share of GetUsage's rows per second.
const RATIO_TARGET: f64 = 0.3;

#[derive(Debug, Args)]
pub(crate) struct AdvisorArgs {
    /// Members of the account.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(10..=2_000_000))]
    members: u64,
    /// Login days in November of each agent (at most 16: beyond, daily billing stops being
    /// cheaper, and the recommendations expected change).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=16))]
    login_days: u32,
    /// Measured rounds of each call.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
}

fn settings(input: MemberSettingsInput) -> anyhow::Result<MemberSettings> {
    MemberSettings::new(input).map_err(|e| anyhow::anyhow!("{e}"))
}

fn voice(id: &str) -> Skill {
    Skill {
        id: id.to_owned(),
        channel: Channel::Voice,
    }
}

fn at(text: &str) -> anyhow::Result<Timestamp> {
    text.parse().with_context(|| format!("time {text}"))
}

/// Builds the account; returns the number of recommendations expected.
fn populate(
    store: &Store,
    args: &AdvisorArgs,
    prices: &licensing_core::PriceList,
) -> anyhow::Result<u64> {
    let start = at("2026-11-01T00:00:00Z")?;
    let mut account_settings = AccountSettings::new(Zone::utc());
    account_settings.auto_growth = true;
    store
        .create_account(
            Account {
                inventory: Inventory::new(account_settings.zone.month(start)),
                id: ACCOUNT_ID.to_owned(),
                settings: account_settings,
                sandbox: true,
                created_at: start,
                clock: Some(start),
                audit_sequence: 0,
            },
            UNAUTHENTICATED,
        )
        .context("creating the account")?;
    let two_skills = settings(MemberSettingsInput {
        role: Some(Role::User),
        skills: vec![voice("q-a"), voice("q-b")],
        billing_preference: BillingMode::Monthly,
        ..Default::default()
    })?;
    let one_skill = settings(MemberSettingsInput {
        role: Some(Role::User),
        skills: vec![voice("q-a")],
        ..Default::default()
    })?;
    let leader = settings(MemberSettingsInput {
        role: Some(Role::TeamLeader),
        ..Default::default()
    })?;
    let started = Instant::now();
    let mut expected = 0u64;
    for n in 0..args.members {
        let (member, count) = match n % 10 {
            0..=5 => (&two_skills, 2),
            6 | 7 => (&one_skill, 0),
            _ => (&leader, 1),
        };
        expected += count;
        store
            .apply_member(
                ACCOUNT_ID,
                &member_id(n),
                member,
                start,
                prices,
                UNAUTHENTICATED,
            )
            .with_context(|| format!("applying member {n}"))?;
    }
    println!(
        "applied {} members in {:.1} s",
        args.members,
        started.elapsed().as_secs_f64()
    );
    let end_of_november = at("2026-11-29T00:00:00Z")?;
    store
        .advance_clock(ACCOUNT_ID, end_of_november, UNAUTHENTICATED)
        .context("advancing to November's end")?;
    let started = Instant::now();
    let mut events = 0u64;
    let mut batch = Vec::new();
    for n in (0..args.members).filter(|n| n % 10 < 8) {
        for day in 1..=args.login_days {
            batch.push(Ok(Event {
                source: "bench".into(),
                event_id: format!("{n}-{day}"),
                account_id: ACCOUNT_ID.into(),
                member_id: member_id(n),
                occurred_at: at(&format!("2026-11-{day:02}T09:00:00Z"))?,
                kind: EventKind::QueueLogin("q-a".into()),
            }));
            if batch.len() == 1000 {
                events += ingest(store, std::mem::take(&mut batch), prices)?;
            }
        }
    }
    events += ingest(store, batch, prices)?;
    println!(
        "ingested {events} queue logins in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    store
        .advance_clock(ACCOUNT_ID, at("2026-12-01T08:00:00Z")?, UNAUTHENTICATED)
        .context("advancing to December")?;
    Ok(expected)
}

fn ingest(
    store: &Store,
    batch: licensing_store::Batch,
    prices: &licensing_core::PriceList,
) -> anyhow::Result<u64> {
    let count = batch.len() as u64;
    let outcomes = store
        .ingest(&[batch], Timestamp::UNIX_EPOCH, prices)
        .context("ingesting")?;
    for outcome in outcomes.iter().flatten() {
        ensure!(
            *outcome == Outcome::Applied,
            "an event was not applied: {outcome:?}"
        );
    }
    Ok(count)
}

fn member_id(n: u64) -> String {
    format!("m{n:07}")
}

/// One `Advise` read.
struct AdvisePass {
    first_member: Duration,
    elapsed: Duration,
    recommendations: u64,
}

async fn advise(
    client: &mut api::licensing_service_client::LicensingServiceClient<tonic::transport::Channel>,
) -> anyhow::Result<AdvisePass> {
    let started = Instant::now();
    let mut stream = client
        .advise(api::AdviseRequest {
            account_id: ACCOUNT_ID.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut first_member = None;
    let mut recommendations = 0u64;
    while let Some(message) = stream.message().await? {
        if first_member.is_none()
            && message
                .recommendations
                .iter()
                .any(|r| !r.member_id.is_empty())
        {
            first_member = Some(started.elapsed());
        }
        recommendations += message.recommendations.len() as u64;
    }
    Ok(AdvisePass {
        first_member: first_member.unwrap_or(Duration::MAX),
        elapsed: started.elapsed(),
        recommendations,
    })
}

async fn usage(
    client: &mut api::licensing_service_client::LicensingServiceClient<tonic::transport::Channel>,
) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let mut stream = client
        .get_usage(api::GetUsageRequest {
            account_id: ACCOUNT_ID.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut rows = 0u64;
    while let Some(message) = stream.message().await? {
        if let Some(api::get_usage_response::Part::Members(members)) = message.part {
            rows += members.rows.len() as u64;
        }
    }
    Ok((rows, started.elapsed()))
}

pub(crate) fn run(args: &AdvisorArgs) -> anyhow::Result<ExitCode> {
    let prices = Arc::new(licensing::price_list::sample().map_err(anyhow::Error::msg)?);
    let folder = tempfile::tempdir().context("creating the database folder")?;
    let store = Store::open(&StoreConfig {
        path: folder.path().join("licensing"),
        cache_capacity_bytes: 256 << 20,
    })
    .context("opening the database")?;
    let expected = populate(&store, args, &prices)?;
    let server_runtime = runtime("server")?;
    let client_runtime = runtime("client")?;
    server_runtime.block_on(store.flush()).context("flushing")?;
    let server = server_runtime.block_on(servers::start_licensing(prices.clone(), store))?;
    let result = client_runtime.block_on(async {
        let mut client = usage_client(server.address).await?;
        // Warm-up of each.
        advise(&mut client).await?;
        usage(&mut client).await?;
        let mut rounds = Vec::new();
        for round in 1..=args.rounds {
            let advised = advise(&mut client).await?;
            let (rows, usage_elapsed) = usage(&mut client).await?;
            ensure!(
                advised.recommendations == expected,
                "Advise sent {} recommendations, {expected} expected",
                advised.recommendations
            );
            ensure!(rows == args.members, "GetUsage sent {rows} rows, {} expected", args.members);
            let advise_rate = args.members as f64 / advised.elapsed.as_secs_f64();
            let usage_rate = rows as f64 / usage_elapsed.as_secs_f64();
            println!(
                "round {round}/{}  Advise {} recommendations in {:.3} s ({advise_rate:.0} members/s), first member's after {:.1} ms; GetUsage {rows} rows in {:.3} s ({usage_rate:.0} rows/s); ratio {:.2}",
                args.rounds,
                advised.recommendations,
                advised.elapsed.as_secs_f64(),
                advised.first_member.as_secs_f64() * 1e3,
                usage_elapsed.as_secs_f64(),
                advise_rate / usage_rate
            );
            rounds.push((advised.first_member, advise_rate / usage_rate));
        }
        anyhow::Ok(rounds)
    });
    let stopped = server_runtime.block_on(server.stop());
    let mut rounds = result?;
    stopped?;
    rounds.sort_by(|a, b| a.1.total_cmp(&b.1));
    let median_ratio = rounds[rounds.len() / 2].1;
    let mut firsts: Vec<Duration> = rounds.iter().map(|r| r.0).collect();
    firsts.sort();
    let median_first = firsts[firsts.len() / 2];
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    println!(
        "{} members: median first recommendation of a member {:.1} ms (target <= {} ms: {}); median Advise members/s / GetUsage rows/s {:.2} (target >= {RATIO_TARGET}: {})",
        args.members,
        median_first.as_secs_f64() * 1e3,
        FIRST_TARGET.as_millis(),
        verdict(median_first <= FIRST_TARGET),
        median_ratio,
        verdict(median_ratio >= RATIO_TARGET)
    );
    Ok(ExitCode::SUCCESS)
}
