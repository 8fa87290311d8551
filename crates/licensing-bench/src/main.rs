//! Benchmark commands for the licensing service. Each measures the service against a baseline
//! taken in the same run and build, so machine noise and build settings hit both alike.
//!
//! `resolve`: the cost of `ResolveMember`, first as the bare domain call in process, then over
//! loopback gRPC next to an echo service that answers the same request bytes and does nothing
//! else, and next to the same echo answering as many bytes as `ResolveMember` does (which tells
//! the cost of the answer's size from the cost of the handler). Servers and client run on separate
//! runtimes; rounds alternate the services so drift over the run hits all alike, and each round
//! starts one service further on, so that none always runs after the same one.
//!
//! `usage`: a `GetUsage` snapshot of one account of 100k and 1M members next to a raw sled scan
//! of the same records, the members' cost on disk and in memory, and the `licensing` binary's
//! time from start to SERVING on that database.
//!
//! `ingest`: durable, acknowledged events/s through `Ingest` for batches of 100 and of 1 event,
//! next to raw sled `apply_batch` + flush of the same keys, and each batch's acknowledgement
//! latency.
//!
//! `abuse`: the real binary under misbehaving clients, next to the same calls without them:
//! `silent-connections` (fresh health checks while connections that never send a preface are
//! held) and `stalled-streams` (`GetAccount` and `Ingest` while `ReadAuditTrail` streams never
//! read).
//!
//! `advisor`: `Advise` of one account of 100,000 members with a month of history (the time to the
//! first member's recommendation, members judged per second) next to `GetUsage` of it.

// Printing the results is what a benchmark command is for.
#![allow(clippy::print_stdout)]

mod abuse;
mod advisor;
mod credentials;
mod echo;
mod history;
mod in_process;
mod ingestion;
mod load;
mod paired;
mod servers;
mod stages;
mod startup;
mod telemetry;
mod usage;

/// The `licensing` binary's allocator, so that the server the commands run in process allocates
/// as the binary does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use licensing_core::PriceList;
use tokio::runtime::Runtime;

use crate::{
    in_process::Timing,
    load::{Target, Window},
    servers::RunningServer,
};

/// The in-process resolution must stay under this, in nanoseconds per call.
const IN_PROCESS_TARGET_NS: f64 = 1000.0;
/// `ResolveMember` must reach at least this fraction of the echo baseline's throughput.
const THROUGHPUT_RATIO_TARGET: f64 = 0.90;
/// `ResolveMember`'s p99 latency must stay within this multiple of the echo baseline's.
const P99_RATIO_TARGET: f64 = 1.15;
/// Authenticated `ResolveMember` must keep at least this fraction of the unauthenticated one's
/// throughput (at most a 5 % regression).
const AUTH_RATIO_TARGET: f64 = 0.95;
/// Worker threads of each runtime (servers, client).
const WORKERS: usize = 2;

#[derive(Debug, Parser)]
#[command(about = "Benchmarks of the licensing service against same-run baselines")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// ResolveMember: in-process resolution, then loopback gRPC against an echo baseline.
    Resolve(ResolveArgs),
    /// GetUsage of one large account against a raw sled scan; memory per member; time to SERVING.
    Usage(usage::UsageArgs),
    /// Durable, acknowledged Ingest events/s against raw sled apply_batch + flush.
    Ingest(ingestion::IngestArgs),
    /// The binary under misbehaving clients: silent connections, stalled streams.
    Abuse(abuse::AbuseArgs),
    /// The real binary with every kind of telemetry on, next to it with them off.
    Telemetry(telemetry::TelemetryArgs),
    /// GetUsage and GetStatement of the first month and of the twelfth, with a year of history.
    History(history::HistoryArgs),
    /// Advise of one large account with a month of history, against GetUsage of it.
    Advisor(advisor::AdvisorArgs),
}

#[derive(Debug, Args)]
struct ResolveArgs {
    /// Length of each measured round, in seconds.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Calls in flight at once per service, all on one HTTP/2 connection.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    in_flight: u32,
    /// Measured rounds per service; rounds alternate the loads, each round starting one load on.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Unmeasured warm-up per service before the first round, in seconds.
    #[arg(long, default_value_t = 1)]
    warm_up: u64,
    /// In-process resolutions timed per settings variant.
    #[arg(long, default_value_t = 2_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    calls: u64,
    /// Serve the authenticated server without its per-principal call rate check (a control for
    /// what the check costs).
    #[arg(long)]
    no_call_rate: bool,
}

fn main() -> anyhow::Result<ExitCode> {
    // The in-process server's log, to stderr, when asked for (a filter like `info`): what its
    // background work (compaction, the peaks keeper) did during a run.
    if let Ok(filter) = std::env::var("LICENSING_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    match Cli::parse().command {
        Command::Resolve(args) => bench_resolve(&args),
        Command::Usage(args) => usage::run(&args),
        Command::Ingest(args) => ingestion::run(&args),
        Command::Abuse(args) => abuse::run(&args),
        Command::Telemetry(args) => telemetry::run(&args),
        Command::History(args) => history::run(&args),
        Command::Advisor(args) => advisor::run(&args),
    }
}

fn bench_resolve(args: &ResolveArgs) -> anyhow::Result<ExitCode> {
    let prices = Arc::new(licensing::price_list::sample().map_err(anyhow::Error::msg)?);
    let timings = bench_in_process(&prices, args.calls)?;
    let auth = credentials::Setup::new(credentials::Auth::Jwt)?.time(200_000)?;
    println!(
        "in-process authentication: API key {:.0} ns/call, a token seen before {:.0} ns/call, a new token {:.1} µs/call; the call-rate check {:.0} ns/call",
        auth.api_key_ns,
        auth.token_remembered_ns,
        auth.token_new_ns / 1000.0,
        auth.call_rate_ns,
    );
    println!(
        "in-process, the credential the connection presented before: a token {:.0} ns/call, an API key {:.0} ns/call",
        auth.on_connection_ns[0], auth.on_connection_ns[1],
    );
    println!(
        "in-process, a token seen before and the call-rate check: {:.0} ns/call on one thread, {:.0} ns/call on each of two at once",
        auth.token_and_rate_ns[0], auth.token_and_rate_ns[1],
    );
    let totals = bench_loopback(args, prices)?;

    println!();
    print_window("total", "echo", &totals.echo);
    print_window("total", "echo-sz", &totals.sized_echo);
    print_window("total", "resolve", &totals.resolve);
    let ratios = |baseline: &Window| {
        (
            totals.resolve.per_second() / baseline.per_second(),
            f64::from(totals.resolve.percentile_us(99.0)) / f64::from(baseline.percentile_us(99.0)),
        )
    };
    let (throughput, p99) = ratios(&totals.echo);
    println!(
        "throughput ratio (resolve/echo): {throughput:.2} (target >= {THROUGHPUT_RATIO_TARGET:.2})"
    );
    println!("p99 ratio (resolve/echo): {p99:.2} (target <= {P99_RATIO_TARGET:.2})");
    let (throughput, p99) = ratios(&totals.sized_echo);
    println!(
        "against an echo answering as many bytes as ResolveMember ({} B): throughput {throughput:.2}, p99 {p99:.2}",
        totals.response_bytes
    );
    print_window("total", "res-key", &totals.resolve_key);
    print_window("total", "res-jwt", &totals.resolve_jwt);
    print_window("total", "res-hdr", &totals.resolve_header);
    for (name, window) in [
        ("API key", &totals.resolve_key),
        ("JWT", &totals.resolve_jwt),
    ] {
        println!(
            "authenticated with an {name} / unauthenticated: throughput {:.3}, p99 {:.3} (target: throughput >= {AUTH_RATIO_TARGET:.2})",
            window.per_second() / totals.resolve.per_second(),
            f64::from(window.percentile_us(99.0)) / f64::from(totals.resolve.percentile_us(99.0)),
        );
    }
    for (name, index) in [
        ("an API key", LOAD_KEY),
        ("a JWT", LOAD_JWT),
        ("the JWT's header alone", LOAD_HEADER),
    ] {
        println!(
            "from the rounds' ratios, with {name} / unauthenticated: throughput {}",
            paired::describe(&totals.round_ratios(index), AUTH_RATIO_TARGET)
        );
    }
    for (name, window) in [
        ("an API key", &totals.resolve_key),
        ("a JWT", &totals.resolve_jwt),
        ("the JWT's header alone", &totals.resolve_header),
    ] {
        println!(
            "server CPU per call with {name} / unauthenticated: {:.3}",
            window.server_cpu_us_per_call() / totals.resolve.server_cpu_us_per_call()
        );
    }
    println!(
        "the JWT's header alone (unauthenticated server) / unauthenticated: throughput {:.3}; authenticated with a JWT / the header alone: throughput {:.3}",
        totals.resolve_header.per_second() / totals.resolve.per_second(),
        totals.resolve_jwt.per_second() / totals.resolve_header.per_second(),
    );
    let worst = timings.iter().map(|t| t.ns_per_call).fold(0.0, f64::max);
    println!(
        "in-process resolve, slowest variant: {worst:.0} ns/call (target < {IN_PROCESS_TARGET_NS:.0} ns)"
    );

    Ok(report_errors(&[
        ("echo", &totals.echo),
        ("sized echo", &totals.sized_echo),
        ("resolve", &totals.resolve),
        ("resolve with an API key", &totals.resolve_key),
        ("resolve with a JWT", &totals.resolve_jwt),
        (
            "resolve with the JWT's header, unauthenticated",
            &totals.resolve_header,
        ),
    ]))
}

/// Times the domain call alone and prints one line per settings variant.
fn bench_in_process(prices: &PriceList, calls: u64) -> anyhow::Result<Vec<Timing>> {
    println!("in-process licensing_core::resolve, {calls} calls per variant:");
    let variants = in_process::variants()?;
    let timings = in_process::measure(&variants, prices, calls)?;
    for timing in &timings {
        println!("  {:<52} {:>6.0} ns/call", timing.name, timing.ns_per_call);
    }
    Ok(timings)
}

/// Positions in the rounds' loads (`alternate_rounds`' `targets`, and [`Totals::rounds`]) of
/// `resolve` and the three loads compared with it.
const LOAD_RESOLVE: usize = 2;
const LOAD_KEY: usize = 3;
const LOAD_JWT: usize = 4;
const LOAD_HEADER: usize = 5;

/// The measured rounds of each service, summed.
#[derive(Debug)]
struct Totals {
    /// The bare echo: the request's bytes back.
    echo: Window,
    /// The echo answering as many bytes as `ResolveMember` does.
    sized_echo: Window,
    /// `ResolveMember`.
    resolve: Window,
    /// `ResolveMember` on a server requiring credentials, presenting an API key.
    resolve_key: Window,
    /// The same, presenting a JWT.
    resolve_jwt: Window,
    /// `ResolveMember` on the unauthenticated server, sending the same JWT header, which that
    /// server ignores: what carrying the token costs the transport, without its verification.
    resolve_header: Window,
    /// Encoded size of a `ResolveMember` answer.
    response_bytes: u32,
    /// Each round's throughput of every load, in the order of the fields above.
    rounds: Vec<[f64; 6]>,
}

impl Totals {
    /// Each round's throughput of the load at `index` (of [`Totals::rounds`]) over `resolve`'s.
    fn round_ratios(&self, index: usize) -> Vec<f64> {
        self.rounds
            .iter()
            .map(|round| round[index] / round[LOAD_RESOLVE])
            .collect()
    }
}

/// Serves echo and licensing on one runtime, loads them from another, and returns the totals
/// of the measured rounds.
fn bench_loopback(args: &ResolveArgs, prices: Arc<PriceList>) -> anyhow::Result<Totals> {
    let server_runtime = runtime("server")?;
    let client_runtime = runtime("client")?;
    let database = tempfile::tempdir().context("creating the database directory")?;
    let store = servers::open_store(database.path().join("licensing"))?;
    let echo_server = server_runtime.block_on(servers::start_echo())?;
    let licensing_server =
        server_runtime.block_on(servers::start_licensing(prices.clone(), store))?;
    let mut credentials = credentials::Setup::new(credentials::Auth::Jwt)?;
    if args.no_call_rate {
        credentials.call_rate = None;
        println!("the authenticated server checks no call rate");
    }
    let secured_store = servers::open_store(database.path().join("licensing-secured"))?;
    let secured_server = server_runtime.block_on(servers::start_licensing_with(
        prices,
        secured_store,
        &credentials,
    ))?;
    println!(
        "\nloopback gRPC: {} in flight on one connection per service, {} round(s) of {} s after {} s warm-up",
        args.in_flight, args.rounds, args.seconds, args.warm_up
    );

    let totals = client_runtime.block_on(alternate_rounds(
        args,
        &echo_server,
        &licensing_server,
        (&secured_server, &credentials),
    ));
    // Stop every server whatever the rounds gave, then report the first failure.
    let echo_stopped = server_runtime.block_on(echo_server.stop());
    let licensing_stopped = server_runtime.block_on(licensing_server.stop());
    let secured_stopped = server_runtime.block_on(secured_server.stop());
    let totals = totals?;
    echo_stopped?;
    licensing_stopped?;
    secured_stopped?;
    Ok(totals)
}

/// Warms every service up, then measures them in alternating rounds. The clients (and their
/// connections) are dropped on return, before the servers are stopped.
async fn alternate_rounds(
    args: &ResolveArgs,
    echo_server: &RunningServer,
    licensing_server: &RunningServer,
    (secured_server, credentials): (&RunningServer, &credentials::Setup),
) -> anyhow::Result<Totals> {
    use credentials::Auth;
    let member = load::member_request();
    let mut resolve = Target::resolve(
        licensing_server.address,
        &member,
        credentials.bearer(Auth::Off),
    )
    .await?;
    let response_bytes = resolve.resolve_response_bytes().await?;
    let resolve_key = Target::resolve(
        secured_server.address,
        &member,
        credentials.bearer(Auth::ApiKey),
    )
    .await?;
    let resolve_jwt = Target::resolve(
        secured_server.address,
        &member,
        credentials.bearer(Auth::Jwt),
    )
    .await?;
    let resolve_header = Target::resolve(
        licensing_server.address,
        &member,
        credentials.bearer(Auth::Jwt),
    )
    .await?;
    let echo = Target::echo(echo_server.address, &member, 0).await?;
    let sized_echo = Target::echo(echo_server.address, &member, response_bytes).await?;
    let targets = [
        ("echo", &echo),
        ("echo-sz", &sized_echo),
        ("resolve", &resolve),
        ("res-key", &resolve_key),
        ("res-jwt", &resolve_jwt),
        ("res-hdr", &resolve_header),
    ];
    debug_assert_eq!(
        [LOAD_RESOLVE, LOAD_KEY, LOAD_JWT, LOAD_HEADER].map(|i| targets[i].0),
        ["resolve", "res-key", "res-jwt", "res-hdr"]
    );
    let warm_up = Duration::from_secs(args.warm_up);
    let round = Duration::from_secs(args.seconds);

    // Warm-up answers are checked too: their errors count.
    let mut totals = Vec::with_capacity(targets.len());
    for (_, target) in targets {
        totals.push(
            load::run_window(target, args.in_flight, warm_up)
                .await?
                .errors_only(),
        );
    }
    // Each round starts one load further on, so that over the rounds every load runs in every
    // position: none always follows the same load (whose leftovers, freed memory or a connection
    // going idle, it would pay for).
    let mut rounds = Vec::new();
    for n in 1..=args.rounds {
        let label = format!("round {n}/{}", args.rounds);
        let first = (n as usize - 1) % targets.len();
        let mut per_second = [0.0; 6];
        for index in (first..targets.len()).chain(0..first) {
            let (service, target) = targets[index];
            let cpu_before = load::thread_cpu("server");
            let mut window = load::run_window(target, args.in_flight, round).await?;
            window.server_cpu = load::thread_cpu("server").saturating_sub(cpu_before);
            print_window(&label, service, &window);
            per_second[index] = window.per_second();
            totals[index].merge(window);
        }
        rounds.push(per_second);
    }
    let [
        echo,
        sized_echo,
        resolve,
        resolve_key,
        resolve_jwt,
        resolve_header,
    ] = <[Window; 6]>::try_from(totals).map_err(|_| anyhow::anyhow!("one total per service"))?;
    Ok(Totals {
        echo,
        sized_echo,
        resolve,
        resolve_key,
        resolve_jwt,
        resolve_header,
        response_bytes,
        rounds,
    })
}

fn runtime(name: &str) -> anyhow::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("building the {name} runtime"))
}

fn print_window(label: &str, service: &str, window: &Window) {
    println!(
        "{label:<10} {service:<8} {:>8.0} req/s  p50 {:>6} µs  p99 {:>6} µs  server CPU {:>5.1} µs/call  ({} calls, {} errors)",
        window.per_second(),
        window.percentile_us(50.0),
        window.percentile_us(99.0),
        window.server_cpu_us_per_call(),
        window.calls(),
        window.errors,
    );
}

/// Prints the error samples of each service; any error fails the command.
fn report_errors(windows: &[(&str, &Window)]) -> ExitCode {
    let mut failed = false;
    for (service, window) in windows {
        if window.errors == 0 {
            continue;
        }
        failed = true;
        eprintln!("{service}: {} calls failed; first errors:", window.errors);
        for message in &window.error_samples {
            eprintln!("  {message}");
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
