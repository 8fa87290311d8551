//! `telemetry`: the cost of telemetry, on the real binary. Two `licensing` processes from the same
//! build: one as the README runs it (default log filter, no metrics, no traces), one with every
//! kind of telemetry on (`--metrics-listen`, scraped every second, and spans exported over OTLP to
//! a receiver in this process: every call's by default, `--sampler` to sample). The same loads run against each in
//! alternating rounds (each round starts with the other process): `ResolveMember` previews, and
//! `Ingest` batches of 100 events; it prints each load's throughput with telemetry on over off.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ExitCode, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use clap::Args;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    process::{Child, Command},
    runtime::Runtime,
};
use tonic::transport::Endpoint;

use crate::{
    credentials::Bearer,
    ingestion::{self, Events, Load},
    load::{self, Target},
    paired, startup,
};

/// Telemetry on may cost at most this much of the throughput with it off.
const RATIO_TARGET: f64 = 0.95;
/// How often the process with metrics on is scraped (Prometheus' default is 15 s: this is more).
const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub(crate) struct TelemetryArgs {
    /// Measured rounds; each runs every load against both processes.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Length of each load's window in a round, in seconds.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Unmeasured warm-up of each load on each process, in seconds.
    #[arg(long, default_value_t = 1)]
    warm_up: u64,
    /// `ResolveMember` calls in flight at once, on one connection.
    #[arg(long, default_value_t = 64)]
    in_flight: u32,
    /// Members of the account the events are about.
    #[arg(long, default_value_t = 200)]
    members: u64,
    /// `Ingest` streams, each keeping this many batches of 100 in flight.
    #[arg(long, default_value_t = 2)]
    streams: usize,
    /// Batches of 100 events in flight per stream.
    #[arg(long, default_value_t = 8)]
    batches_in_flight: usize,
    /// `OTEL_TRACES_SAMPLER` of the process with telemetry on: `always_on` exports every call's
    /// span (the most telemetry costs); `traceidratio` with `--sampler-arg` a share of them;
    /// `none`: no traces at all, metrics only.
    #[arg(long, default_value = "always_on")]
    sampler: String,
    /// `OTEL_TRACES_SAMPLER_ARG`, e.g. 0.1 for one call in ten.
    #[arg(long)]
    sampler_arg: Option<String>,
    /// Run only the `ResolveMember` load (for profiling one load at a time).
    #[arg(long)]
    resolve_only: bool,
    /// The `licensing` binary (default: the one built next to this one).
    #[arg(long)]
    licensing_binary: Option<PathBuf>,
}

/// The OTLP trace receiver: answers every export at once and counts the requests and their
/// bytes without decoding them. Decoding is a receiver's work, not the service's: a receiver that
/// decoded here would take CPU from the process measured, on the same cores.
#[derive(Debug, Clone, Default)]
struct Sink {
    exports: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl tonic::server::NamedService for Sink {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl<B> tower_service::Service<http::Request<B>> for Sink
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let sink = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(Uncoded);
            Ok(grpc.unary(sink, request).await)
        })
    }
}

impl tonic::server::UnaryService<usize> for Sink {
    type Response = ();
    type Future = std::future::Ready<Result<tonic::Response<()>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<usize>) -> Self::Future {
        self.exports.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(*request.get_ref() as u64, Ordering::Relaxed);
        std::future::ready(Ok(tonic::Response::new(())))
    }
}

/// A codec that reads a message as its length and writes an empty one (an
/// `ExportTraceServiceResponse` with nothing in it encodes to no bytes).
#[derive(Debug, Clone, Copy)]
struct Uncoded;

impl tonic::codec::Codec for Uncoded {
    type Encode = ();
    type Decode = usize;
    type Encoder = Uncoded;
    type Decoder = Uncoded;

    fn encoder(&mut self) -> Uncoded {
        Uncoded
    }

    fn decoder(&mut self) -> Uncoded {
        Uncoded
    }
}

impl tonic::codec::Encoder for Uncoded {
    type Item = ();
    type Error = tonic::Status;

    fn encode(&mut self, (): (), _: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        Ok(())
    }
}

impl tonic::codec::Decoder for Uncoded {
    type Item = usize;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        buffer: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<usize>, tonic::Status> {
        use bytes::Buf as _;
        let length = buffer.remaining();
        buffer.advance(length);
        Ok(Some(length))
    }
}

/// A `licensing` process on a free port with its own database.
struct Process {
    child: Child,
    address: SocketAddr,
    _data: tempfile::TempDir,
}

impl Process {
    async fn start(
        binary: &Path,
        args: &[&str],
        environment: &[(&str, String)],
    ) -> anyhow::Result<Process> {
        let data = tempfile::tempdir().context("creating the database folder")?;
        let mut command = Command::new(binary);
        // The benchmark's environment must not change what is measured.
        for (name, _) in std::env::vars_os() {
            let text = name.to_string_lossy();
            if text.starts_with("LICENSING_") || text.starts_with("OTEL_") {
                command.env_remove(&name);
            }
        }
        command
            .envs(environment.iter().map(|(k, v)| (*k, v.as_str())))
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data.path().join("db"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let mut log = Vec::new();
        let address = tokio::time::timeout(
            Duration::from_secs(60),
            startup::listening_address(&mut lines, &mut log),
        )
        .await
        .context("no listening line in time")??;
        // Read the rest, so that the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Process {
            child,
            address,
            _data: data,
        })
    }

    /// CPU time the process's span exporting threads (`otlp-spans`, `otlp-export`) used so far.
    fn exporting_cpu(&self) -> Duration {
        self.child.id().map_or(Duration::ZERO, |pid| {
            load::threads_cpu(&pid.to_string(), |comm| comm.starts_with("otlp-"))
        })
    }

    /// CPU time the process used so far (all its threads), from `/proc/<pid>/stat`.
    fn cpu(&self) -> Duration {
        let ticks = self
            .child
            .id()
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
            .map_or(0, |stat| load::cpu_ticks(&stat));
        Duration::from_millis(ticks * 1000 / load::TICKS_PER_SECOND)
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// One `GET /metrics`; its size in bytes.
async fn scrape(address: &str) -> anyhow::Result<usize> {
    let mut socket = tokio::net::TcpStream::connect(address).await?;
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await?;
    anyhow::ensure!(response.starts_with(b"HTTP/1.1 200"), "scrape refused");
    Ok(response.len())
}

fn runtime(name: &str, workers: usize) -> anyhow::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()
        .context("starting a runtime")
}

pub(crate) fn run(args: &TelemetryArgs) -> anyhow::Result<ExitCode> {
    let binary = startup::locate(args.licensing_binary.as_deref())?;
    let sink_runtime = runtime("sink", 1)?;
    let client = runtime("client", 2)?;
    let sink = Sink::default();
    let sink_listener = sink_runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let sink_address = sink_listener.local_addr()?;
    sink_runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(sink.clone())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(
                sink_listener,
            )),
    );
    let metrics_address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.to_string()
    };
    let result = client.block_on(async {
        let off = Process::start(&binary, &[], &[]).await?;
        // `--sampler none`: metrics only, no traces at all.
        let mut environment = if args.sampler == "none" {
            Vec::new()
        } else {
            vec![
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    format!("http://{sink_address}"),
                ),
                ("OTEL_TRACES_SAMPLER", args.sampler.clone()),
            ]
        };
        if let Some(ratio) = &args.sampler_arg {
            environment.push(("OTEL_TRACES_SAMPLER_ARG", ratio.clone()));
        }
        let on = Process::start(
            &binary,
            &["--metrics-listen", &metrics_address],
            &environment,
        )
        .await?;
        let measured = measure(args, &off, &on, &metrics_address, &sink).await;
        off.stop().await;
        on.stop().await;
        measured
    });
    sink_runtime.shutdown_background();
    result
}

/// The loads of one process.
struct Loads {
    resolve: Target,
    channel: ingestion::Client,
    events: Arc<Events>,
}

impl Loads {
    async fn new(process: &Process, members: u64) -> anyhow::Result<Loads> {
        let resolve =
            Target::resolve(process.address, &load::member_request(), Bearer::none()).await?;
        let channel = Endpoint::from_shared(format!("http://{}", process.address))?
            .tcp_nodelay(true)
            .connect()
            .await
            .context("connecting to licensing")?;
        let channel = tonic::service::interceptor::InterceptedService::new(channel, Bearer::none());
        let members = ingestion::setup(&channel, members).await?;
        Ok(Loads {
            resolve,
            channel,
            events: Arc::new(Events::new(members)?),
        })
    }

    fn ingest(&self, args: &TelemetryArgs) -> Load<'_> {
        Load {
            channel: &self.channel,
            events: &self.events,
            size: 100,
            streams: args.streams,
            in_flight: args.batches_in_flight,
        }
    }
}

async fn measure(
    args: &TelemetryArgs,
    off: &Process,
    on: &Process,
    metrics_address: &str,
    sink: &Sink,
) -> anyhow::Result<ExitCode> {
    let loads = [
        Loads::new(off, args.members).await?,
        Loads::new(on, args.members).await?,
    ];
    let scrapes = Arc::new(AtomicU64::new(0));
    let scraper = {
        let (address, scrapes) = (metrics_address.to_owned(), scrapes.clone());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(SCRAPE_INTERVAL);
            loop {
                ticks.tick().await;
                if scrape(&address).await.is_ok() {
                    scrapes.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    println!(
        "telemetry off / on: two licensing processes of {}; on: metrics scraped every {} s, spans exported over OTLP (sampler {}{})",
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.display().to_string()))
            .unwrap_or_default(),
        SCRAPE_INTERVAL.as_secs(),
        args.sampler,
        args.sampler_arg
            .as_deref()
            .map(|ratio| format!(" {ratio}"))
            .unwrap_or_default(),
    );
    println!(
        "{} round(s) of {} s per load and process, after {} s warm-up; ResolveMember {} in flight; Ingest {} stream(s) x {} batches of 100",
        args.rounds,
        args.seconds,
        args.warm_up,
        args.in_flight,
        args.streams,
        args.batches_in_flight
    );
    let warm_up = Duration::from_secs(args.warm_up);
    let round = Duration::from_secs(args.seconds);
    let mut resolve: Vec<load::Window> = Vec::new();
    let mut ingest: Vec<ingestion::Window> = Vec::new();
    for loads in &loads {
        resolve.push(
            load::run_window(&loads.resolve, args.in_flight, warm_up)
                .await?
                .errors_only(),
        );
        ingest.push(if args.resolve_only {
            ingestion::Window::default()
        } else {
            loads.ingest(args).window(warm_up).await?.errors_only()
        });
    }
    let names = ["off", "on"];
    let processes = [off, on];
    // CPU time of each process during its measured windows, per load.
    let mut resolve_cpu = [Duration::ZERO; 2];
    let mut ingest_cpu = [Duration::ZERO; 2];
    // And of this process's threads during the `ResolveMember` windows: the clients' and the
    // OTLP receiver's, which take the same cores as the process measured.
    let mut client_cpu = [Duration::ZERO; 2];
    let mut sink_cpu = [Duration::ZERO; 2];
    let mut exporting_cpu = [Duration::ZERO; 2];
    // Each round's ratio, on over off, of each load.
    let mut resolve_rounds = Vec::new();
    let mut ingest_rounds = Vec::new();
    for n in 1..=args.rounds {
        let label = format!("round {n}/{}", args.rounds);
        // Each round starts with the other process.
        let order = if n % 2 == 1 { [0, 1] } else { [1, 0] };
        let mut per_second = [0.0; 2];
        for index in order {
            let before = processes[index].cpu();
            let exporting_before = processes[index].exporting_cpu();
            let (client_before, sink_before) =
                (load::thread_cpu("client"), load::thread_cpu("sink"));
            let window = load::run_window(&loads[index].resolve, args.in_flight, round).await?;
            resolve_cpu[index] += processes[index].cpu().saturating_sub(before);
            exporting_cpu[index] += processes[index]
                .exporting_cpu()
                .saturating_sub(exporting_before);
            client_cpu[index] += load::thread_cpu("client").saturating_sub(client_before);
            sink_cpu[index] += load::thread_cpu("sink").saturating_sub(sink_before);
            println!(
                "{label} resolve {:<3} {:>8.0} calls/s  p99 {:>6} µs",
                names[index],
                window.per_second(),
                window.percentile_us(99.0)
            );
            per_second[index] = window.per_second();
            resolve[index].merge(window);
        }
        resolve_rounds.push(per_second[1] / per_second[0]);
        for index in order {
            if args.resolve_only {
                break;
            }
            let before = processes[index].cpu();
            let window = loads[index].ingest(args).window(round).await?;
            ingest_cpu[index] += processes[index].cpu().saturating_sub(before);
            ingestion::print(&label, &format!("ingest {}", names[index]), &window);
            per_second[index] = window.per_second();
            ingest[index].merge(window);
        }
        if !args.resolve_only {
            ingest_rounds.push(per_second[1] / per_second[0]);
        }
    }
    scraper.abort();
    let resolve_ratio = resolve[1].per_second() / resolve[0].per_second();
    let ingest_ratio = ingest[1].per_second() / ingest[0].per_second();
    println!();
    for index in 0..2 {
        println!(
            "total resolve {:<3} {:>8.0} calls/s  p99 {:>6} µs   ingest {:<3} {:>8.0} events/s  p99 {:>6.1} ms",
            names[index],
            resolve[index].per_second(),
            resolve[index].percentile_us(99.0),
            names[index],
            ingest[index].per_second(),
            ingest[index].percentile(99.0).as_secs_f64() * 1e3,
        );
    }
    println!(
        "OTLP exports received: {} ({:.1} MB of spans); scrapes of /metrics: {}",
        sink.exports.load(Ordering::Relaxed),
        sink.bytes.load(Ordering::Relaxed) as f64 / 1e6,
        scrapes.load(Ordering::Relaxed)
    );
    let per = |cpu: Duration, count: f64| cpu.as_secs_f64() * 1e6 / count.max(1.0);
    let resolve_us = [0, 1].map(|i| per(resolve_cpu[i], resolve[i].calls() as f64));
    let ingest_us = [0, 1].map(|i| per(ingest_cpu[i], ingest[i].events() as f64));
    println!(
        "licensing's CPU: ResolveMember off {:.1} µs/call, on {:.1} µs/call (of which its span exporting threads {:.2}); Ingest off {:.2} µs/event, on {:.2} µs/event",
        resolve_us[0],
        resolve_us[1],
        per(exporting_cpu[1], resolve[1].calls() as f64),
        ingest_us[0],
        ingest_us[1]
    );
    let client_us = [0, 1].map(|i| per(client_cpu[i], resolve[i].calls() as f64));
    let sink_us = [0, 1].map(|i| per(sink_cpu[i], resolve[i].calls() as f64));
    println!(
        "this process's CPU during ResolveMember: clients off {:.1} µs/call, on {:.1} µs/call; OTLP receiver {:.2} µs/call (on)",
        client_us[0], client_us[1], sink_us[1]
    );
    println!(
        "telemetry on / off: ResolveMember throughput {resolve_ratio:.3}, CPU per call {:.3}; Ingest throughput {ingest_ratio:.3}, CPU per event {:.3} (target: throughput >= {RATIO_TARGET:.2})",
        resolve_us[1] / resolve_us[0],
        ingest_us[1] / ingest_us[0],
    );
    println!(
        "telemetry on / off, from the rounds' ratios: ResolveMember {}",
        paired::describe(&resolve_rounds, RATIO_TARGET)
    );
    if !args.resolve_only {
        println!(
            "telemetry on / off, from the rounds' ratios: Ingest {}",
            paired::describe(&ingest_rounds, RATIO_TARGET)
        );
    }
    let clean = resolve.iter().all(|w| w.errors == 0) && ingest.iter().all(|w| w.errors() == 0);
    anyhow::ensure!(clean, "calls failed during the run (see the rounds above)");
    let sampled = !matches!(args.sampler.as_str(), "none" | "always_off");
    anyhow::ensure!(
        !sampled || sink.exports.load(Ordering::Relaxed) > 0,
        "no span reached the receiver: traces were not on"
    );
    // With --resolve-only there is no Ingest figure to hold to the target.
    let ingest_met = args.resolve_only || ingest_ratio >= RATIO_TARGET;
    Ok(if resolve_ratio >= RATIO_TARGET && ingest_met {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
