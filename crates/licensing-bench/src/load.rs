//! Closed-loop load over one HTTP/2 connection: a fixed number of tasks, each sending its next
//! call as soon as the previous one is answered, for a fixed window. Every answer is checked.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use licensing::api::{self, licensing_service_client::LicensingServiceClient};
use prost::Message as _;
use tokio::task::JoinSet;
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};

use crate::credentials::Bearer;

use crate::echo::proto::{EchoRequest, echo_service_client::EchoServiceClient};

/// Distinct error messages kept per window; the rest are only counted.
const ERROR_SAMPLES: usize = 8;

/// The member every loopback call resolves: a team leader with three skills, statistics tracking
/// and call recording, previewed without an account.
pub(crate) fn member_request() -> api::ResolveMemberRequest {
    let skill = |id: &str, channel: api::Channel| api::Skill {
        id: id.to_owned(),
        channel: channel as i32,
    };
    api::ResolveMemberRequest {
        account_id: String::new(),
        member_id: "agent-0042".to_owned(),
        settings: Some(api::MemberSettings {
            role: api::Role::TeamLeader as i32,
            permissions: Vec::new(),
            skills: vec![
                skill("sales-cz-voice", api::Channel::Voice),
                skill("support-en-email", api::Channel::Email),
                skill("support-en-chat", api::Channel::Chat),
            ],
            track_statistics: true,
            call_recording: true,
            outbound_calling: false,
            billing_preference: api::BillingMode::Unspecified as i32,
        }),
        apply: false,
    }
}

/// The tier [`member_request`] must resolve to.
pub(crate) const EXPECTED_TIER: api::Tier = api::Tier::Professional;

/// A service under load and the one call it answers.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// The baseline: echoes the encoded resolve request.
    Echo {
        client: EchoServiceClient<Channel>,
        request: EchoRequest,
    },
    /// The real `ResolveMember`, each call presenting the bearer if any.
    Resolve {
        client: LicensingServiceClient<InterceptedService<Channel, Bearer>>,
        request: api::ResolveMemberRequest,
    },
}

impl Target {
    /// The echo baseline at `address`, sending `member` encoded as its payload and answered with
    /// it, or with `reply_bytes` bytes when not zero.
    pub(crate) async fn echo(
        address: SocketAddr,
        member: &api::ResolveMemberRequest,
        reply_bytes: u32,
    ) -> anyhow::Result<Self> {
        let client = EchoServiceClient::new(connect(address).await?);
        Ok(Target::Echo {
            client,
            request: EchoRequest {
                payload: member.encode_to_vec(),
                reply_bytes,
            },
        })
    }

    /// The encoded size of the answer of one `ResolveMember` call, checked like any other.
    pub(crate) async fn resolve_response_bytes(&mut self) -> anyhow::Result<u32> {
        let Target::Resolve { client, request } = self else {
            anyhow::bail!("not a ResolveMember target");
        };
        let response = client.resolve_member(request.clone()).await?.into_inner();
        Ok(u32::try_from(response.encoded_len())?)
    }

    /// `ResolveMember` at `address`, resolving `member`.
    pub(crate) async fn resolve(
        address: SocketAddr,
        member: &api::ResolveMemberRequest,
        bearer: Bearer,
    ) -> anyhow::Result<Self> {
        let client = LicensingServiceClient::with_interceptor(connect(address).await?, bearer);
        Ok(Target::Resolve {
            client,
            request: member.clone(),
        })
    }

    /// Sends one call and checks its answer.
    async fn call(&mut self) -> Result<(), String> {
        match self {
            Target::Echo { client, request } => {
                let response = client
                    .echo(request.clone())
                    .await
                    .map_err(|s| s.to_string())?;
                let payload = &response.get_ref().payload;
                let expected = match request.reply_bytes {
                    0 => payload == &request.payload,
                    n => payload.len() == n as usize,
                };
                if !expected {
                    return Err("echo answered a different payload".to_owned());
                }
            }
            Target::Resolve { client, request } => {
                let response = client
                    .resolve_member(request.clone())
                    .await
                    .map_err(|s| s.to_string())?;
                let tier = response.into_inner().licence.map(|licence| licence.tier);
                if tier != Some(EXPECTED_TIER as i32) {
                    let got = tier.map_or("no licence".to_owned(), |number| {
                        api::Tier::try_from(number)
                            .map_or(number.to_string(), |t| t.as_str_name().to_owned())
                    });
                    return Err(format!(
                        "expected {}, got {got}",
                        EXPECTED_TIER.as_str_name()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// One channel is one HTTP/2 connection: every concurrent call of a target shares it.
async fn connect(address: SocketAddr) -> anyhow::Result<Channel> {
    Endpoint::from_shared(format!("http://{address}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {address}"))
}

/// What one or more windows measured.
#[derive(Debug, Default)]
pub(crate) struct Window {
    /// Wall time from the first call sent to the last answer received.
    pub(crate) elapsed: Duration,
    /// Per-call latency in microseconds, sorted.
    latencies_us: Vec<u32>,
    /// Calls that failed or answered wrongly (included in the latencies).
    pub(crate) errors: u64,
    /// The first few distinct error messages.
    pub(crate) error_samples: Vec<String>,
    /// CPU time the server's threads used during the window, when measured.
    pub(crate) server_cpu: Duration,
}

impl Window {
    /// Server CPU time per completed call, in microseconds.
    pub(crate) fn server_cpu_us_per_call(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.calls().max(1) as f64
    }

    /// Calls completed.
    pub(crate) fn calls(&self) -> usize {
        self.latencies_us.len()
    }

    /// Calls completed per second.
    pub(crate) fn per_second(&self) -> f64 {
        self.calls() as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at percentile `p` (0 to 100), nearest-rank, in microseconds.
    pub(crate) fn percentile_us(&self, p: f64) -> u32 {
        let n = self.latencies_us.len();
        if n == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.latencies_us[rank.clamp(1, n) - 1]
    }

    /// This window reduced to its errors: warm-up calls count as failures, not as measurements.
    pub(crate) fn errors_only(self) -> Window {
        Window {
            errors: self.errors,
            error_samples: self.error_samples,
            ..Window::default()
        }
    }

    /// Adds another window's calls to this one.
    pub(crate) fn merge(&mut self, other: Window) {
        self.elapsed += other.elapsed;
        self.latencies_us.extend(other.latencies_us);
        self.latencies_us.sort_unstable();
        self.errors += other.errors;
        self.server_cpu += other.server_cpu;
        self.keep_errors(other.error_samples);
    }

    /// Keeps distinct messages, up to [`ERROR_SAMPLES`].
    fn keep_errors(&mut self, samples: Vec<String>) {
        for message in samples {
            if self.error_samples.len() < ERROR_SAMPLES && !self.error_samples.contains(&message) {
                self.error_samples.push(message);
            }
        }
    }
}

/// Runs `in_flight` looping tasks against `target` for `duration`, then waits for the calls
/// still in flight. Calls are started until the deadline, so the window ends a little after it.
pub(crate) async fn run_window(
    target: &Target,
    in_flight: u32,
    duration: Duration,
) -> anyhow::Result<Window> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for _ in 0..in_flight {
        tasks.spawn(call_until(target.clone(), deadline));
    }
    let mut window = Window::default();
    while let Some(task) = tasks.join_next().await {
        let task = task.context("a load task failed")?;
        window.latencies_us.extend(task.latencies_us);
        window.errors += task.errors;
        window.keep_errors(task.error_samples);
    }
    window.elapsed = started.elapsed();
    window.latencies_us.sort_unstable();
    Ok(window)
}

/// One task's loop: call, record, repeat until `deadline`.
async fn call_until(mut target: Target, deadline: Instant) -> Window {
    let mut tally = Window::default();
    loop {
        let sent = Instant::now();
        if sent >= deadline {
            return tally;
        }
        let outcome = target.call().await;
        tally
            .latencies_us
            .push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
        if let Err(message) = outcome {
            tally.errors += 1;
            tally.keep_errors(vec![message]);
        }
    }
}

/// CPU time (user and system) used so far by this process's threads named `name`, from
/// `/proc/self/task/*/stat`; zero where there is no such file.
pub(crate) fn thread_cpu(name: &str) -> Duration {
    threads_cpu("self", |comm| comm == name)
}

/// CPU time (user and system) used so far by the threads of process `pid` (`"self"` for this
/// one) whose name `named` accepts, from `/proc/<pid>/task/*/stat`; zero where there is none.
pub(crate) fn threads_cpu(pid: &str, named: impl Fn(&str) -> bool) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let mut ticks = 0u64;
    for task in tasks.flatten() {
        let path = task.path();
        let taken =
            std::fs::read_to_string(path.join("comm")).is_ok_and(|comm| named(comm.trim_end()));
        if !taken {
            continue;
        }
        if let Ok(stat) = std::fs::read_to_string(path.join("stat")) {
            ticks += cpu_ticks(&stat);
        }
    }
    Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
}

/// Clock ticks per second of /proc's times: 100 on every Linux this runs on.
pub(crate) const TICKS_PER_SECOND: u64 = 100;

/// User and system CPU time, in clock ticks, of a `/proc/.../stat` line.
pub(crate) fn cpu_ticks(stat: &str) -> u64 {
    // The fields after the command's closing parenthesis: state is the 3rd field of the line,
    // utime and stime the 14th and 15th.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| {
        fields
            .get(n)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}
