//! `usage`: a `GetUsage` snapshot (without `follow`) of one large account over loopback gRPC,
//! against a raw sled scan of the same members' records in the same run; what each stored member
//! costs on disk and in memory; and how long the `licensing` binary takes from start to SERVING on
//! that database.
//!
//! The database is filled through the store's own `apply_member`, one transaction per member as
//! the service writes them, so the key layout, the audit trail and sled's space use are the real
//! ones. sled locks its folder, so the baseline and the server can never have it open at the same
//! time: each round opens the database, reads every member once unmeasured (to fill sled's page
//! cache and, for the server, the connection's windows) and once measured, and closes it again.
//! Rounds alternate the baseline and the server so drift over the run hits both alike.

use std::{
    fmt::Write as _,
    hint::black_box,
    net::SocketAddr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use clap::Args;
use licensing::{
    api::{self, get_usage_response::Part, licensing_service_client::LicensingServiceClient},
    server::MAX_ENCODING_MESSAGE_BYTES,
};
use licensing_core::{
    Account, AccountSettings, BillingMode, Channel, Inventory, MemberSettings, MemberSettingsInput,
    PriceList, RecordingRetention, Role, Skill, Timestamp, UNAUTHENTICATED, Zone, resolve,
};
use licensing_store::{Store, StoreConfig};
use prost::Message as _;
use tokio::runtime::Runtime;
use tonic::transport::Endpoint;

use crate::{paired, servers, stages, startup};

/// `GetUsage` must reach at least this fraction of the raw scan's rows per second.
const RATIO_TARGET: f64 = 0.5;
/// `GetUsage` must deliver at least this many rows per second.
const ROWS_PER_SECOND_TARGET: f64 = 1_000_000.0;
/// The `licensing` binary must answer SERVING this soon after it was started (with 1M members).
pub(crate) const SERVING_TARGET: Duration = Duration::from_millis(500);

/// The one account every member belongs to.
pub(crate) const ACCOUNT_ID: &str = "bench-usage";
/// The members tree of `licensing-store`, whose keys are the account id, byte 0, the member id
/// (`records.rs`). The store keeps its sled handles private, so the baseline repeats the layout.
const MEMBERS_TREE: &str = "members";
/// Separator between the account id and the member id in a member's key.
const KEY_SEPARATOR: u8 = 0;
/// A progress line every so many applied members: filling a million takes a while.
const PROGRESS_EVERY: u64 = 250_000;
/// Wire tier numbers are 0 (unspecified) to 5 (developer); counts are kept by number.
const TIER_SLOTS: usize = 6;

/// Rows a snapshot holds, per wire tier number.
pub(crate) type TierCounts = [u64; TIER_SLOTS];

#[derive(Debug, Args)]
pub(crate) struct UsageArgs {
    /// Account sizes to measure, in members, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_values_t = [100_000u64, 1_000_000],
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    members: Vec<u64>,
    /// Measured rounds per reader; rounds alternate the raw sled scan and GetUsage.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Starts of the `licensing` binary timed per size (the median is compared to the target).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    starts: u32,
    /// Bound of sled's page cache for every reader, in MiB (the binary's default is 256).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    cache_mb: u64,
    /// The `licensing` binary to start. Default: `licensing` next to this benchmark's binary,
    /// built by `cargo build --release --locked --bin licensing`.
    #[arg(long)]
    licensing_binary: Option<PathBuf>,
}

/// One kind of member of the benchmark's account.
#[derive(Debug)]
struct Profile {
    name: &'static str,
    /// Members of this kind in every ten.
    per_ten: usize,
    settings: MemberSettings,
    /// The tier a snapshot must show for it.
    tier: api::Tier,
}

/// A contact center's mix: mostly agents on one voice skill, some of them billed per day, and a
/// team leader for every nine agents.
fn profiles(prices: &PriceList) -> anyhow::Result<Vec<Profile>> {
    let agent = |billing_preference| MemberSettingsInput {
        role: Some(Role::User),
        skills: vec![Skill {
            id: "sales-voice".to_owned(),
            channel: Channel::Voice,
        }],
        billing_preference,
        ..MemberSettingsInput::default()
    };
    let team_leader = MemberSettingsInput {
        role: Some(Role::TeamLeader),
        skills: [
            ("sales-voice", Channel::Voice),
            ("support-email", Channel::Email),
            ("support-chat", Channel::Chat),
        ]
        .into_iter()
        .map(|(id, channel)| Skill {
            id: id.to_owned(),
            channel,
        })
        .collect(),
        track_statistics: true,
        ..MemberSettingsInput::default()
    };
    let cases = [
        (
            "agent, one voice skill, monthly",
            7,
            agent(BillingMode::Monthly),
            api::Tier::Standard,
        ),
        (
            "agent, one voice skill, daily",
            2,
            agent(BillingMode::Daily),
            api::Tier::Standard,
        ),
        (
            "team leader, 3 skills, statistics",
            1,
            team_leader,
            api::Tier::Professional,
        ),
    ];
    let profiles = cases
        .into_iter()
        .map(|(name, per_ten, input, tier)| {
            let settings =
                MemberSettings::new(input).map_err(|e| anyhow::anyhow!("profile {name:?}: {e}"))?;
            Ok(Profile {
                name,
                per_ten,
                settings,
                tier,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    ensure!(
        profiles.iter().map(|p| p.per_ten).sum::<usize>() == 10,
        "the profiles' shares must add up to ten"
    );
    // The account keeps the default retention, so this is the tier the service will resolve.
    for profile in &profiles {
        let tier = resolve(&profile.settings, RecordingRetention::default(), prices).tier;
        let wire = licensing::convert::to_proto::tier(tier);
        ensure!(
            wire == profile.tier,
            "profile {:?} resolves to {}, expected {}",
            profile.name,
            wire.as_str_name(),
            profile.tier.as_str_name()
        );
    }
    Ok(profiles)
}

/// The profile of each member by its number modulo ten, in the profiles' proportions.
fn slots(profiles: &[Profile]) -> Vec<usize> {
    profiles
        .iter()
        .enumerate()
        .flat_map(|(index, profile)| std::iter::repeat_n(index, profile.per_ten))
        .collect()
}

/// Member ids sort in creation order: `m0000000`, `m0000001`, ...
fn member_id(n: u64) -> String {
    format!("m{n:07}")
}

/// A database filled with one account's members.
#[derive(Debug)]
struct Population {
    members: u64,
    /// The rows a snapshot must hold, per tier.
    tiers: TierCounts,
    /// All `apply_member` calls.
    applying: Duration,
    /// The final `Store::flush`.
    flushing: Duration,
    /// This process after the flush, the store still open.
    resident: Resident,
}

/// Creates the account (with auto-growth, so every apply finds a seat) and applies `members`
/// members to it one transaction each, then flushes. The store is closed on return.
fn populate(
    config: &StoreConfig,
    members: u64,
    prices: &PriceList,
    profiles: &[Profile],
    runtime: &Runtime,
) -> anyhow::Result<Population> {
    let store = Store::open(config).context("creating the database")?;
    let now = Timestamp::now();
    let mut settings = AccountSettings::new(Zone::utc());
    settings.auto_growth = true;
    store
        .create_account(
            Account {
                inventory: Inventory::new(settings.zone.month(now)),
                id: ACCOUNT_ID.to_owned(),
                settings,
                sandbox: false,
                created_at: now,
                clock: None,
                audit_sequence: 0,
            },
            UNAUTHENTICATED,
        )
        .context("creating the account")?;

    let slots = slots(profiles);
    let mut tiers = [0; TIER_SLOTS];
    let started = Instant::now();
    for n in 0..members {
        let profile = &profiles[slots[(n % 10) as usize]];
        let id = member_id(n);
        store
            .apply_member(
                ACCOUNT_ID,
                &id,
                &profile.settings,
                Timestamp::now(),
                prices,
                UNAUTHENTICATED,
            )
            .with_context(|| format!("applying member {id}"))?;
        tiers[profile.tier as usize] += 1;
        let done = n + 1;
        if done % PROGRESS_EVERY == 0 && done < members {
            println!(
                "  applied {done}/{members} ({:.0} applies/s so far)",
                done as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let applying = started.elapsed();
    let started = Instant::now();
    runtime
        .block_on(store.flush())
        .context("flushing the database")?;
    let flushing = started.elapsed();
    Ok(Population {
        members,
        tiers,
        applying,
        flushing,
        resident: Resident::of("self")?,
    })
}

/// One read of every member of the account.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pass {
    pub(crate) rows: u64,
    pub(crate) elapsed: Duration,
    /// Bytes read: keys and values for the raw scan, encoded messages for `GetUsage` (counted
    /// only on unmeasured passes, since it costs the client time).
    pub(crate) bytes: u64,
}

impl Pass {
    pub(crate) fn per_second(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64()
    }
}

/// The key range of the account's members: its id and the separator, up to the separator + 1.
fn member_range(account: &str) -> (Vec<u8>, Vec<u8>) {
    let mut start = account.as_bytes().to_vec();
    start.push(KEY_SEPARATOR);
    let mut end = account.as_bytes().to_vec();
    end.push(KEY_SEPARATOR + 1);
    (start, end)
}

/// One sled tree's live contents.
#[derive(Debug)]
struct TreeSize {
    name: String,
    entries: u64,
    /// Keys and values.
    bytes: u64,
}

/// Every tree's entries and key + value bytes, read with plain sled: what the database holds, to
/// set against what its files take.
fn census(config: &StoreConfig) -> anyhow::Result<Vec<TreeSize>> {
    let db = sled::Config::new()
        .path(&config.path)
        .cache_capacity(config.cache_capacity_bytes)
        .mode(sled::Mode::HighThroughput)
        .open()
        .context("opening the database with sled")?;
    let mut trees = Vec::new();
    for name in db.tree_names() {
        let tree = db.open_tree(&name).context("opening a tree")?;
        let mut size = TreeSize {
            name: String::from_utf8_lossy(&name).into_owned(),
            entries: 0,
            bytes: 0,
        };
        for item in tree.iter() {
            let (key, value) = item.with_context(|| format!("scanning tree {}", size.name))?;
            size.entries += 1;
            size.bytes += (key.len() + value.len()) as u64;
        }
        // sled's default tree holds nothing of the store's.
        if size.entries > 0 {
            trees.push(size);
        }
    }
    Ok(trees)
}

/// The baseline: opens the database with plain sled (same cache bound and mode as the store),
/// scans the members once to warm it, then once measured, and closes it.
fn raw_round(config: &StoreConfig, members: u64) -> anyhow::Result<Pass> {
    let db = sled::Config::new()
        .path(&config.path)
        .cache_capacity(config.cache_capacity_bytes)
        .mode(sled::Mode::HighThroughput)
        .open()
        .context("opening the database with sled")?;
    let tree = db
        .open_tree(MEMBERS_TREE)
        .context("opening the members tree")?;
    let range = member_range(ACCOUNT_ID);
    for measured in [false, true] {
        let pass = raw_pass(&tree, &range)?;
        ensure!(
            pass.rows == members,
            "the raw scan found {} members, expected {members}",
            pass.rows
        );
        if measured {
            return Ok(pass);
        }
    }
    bail!("no measured raw scan")
}

/// Iterates the range, touching every key and value (their lengths feed a sum the compiler must
/// keep): the least any reader of these records has to do.
fn raw_pass(tree: &sled::Tree, (start, end): &(Vec<u8>, Vec<u8>)) -> anyhow::Result<Pass> {
    let started = Instant::now();
    let mut rows = 0u64;
    let mut bytes = 0u64;
    for item in tree.range(start.as_slice()..end.as_slice()) {
        let (key, value) = item.context("scanning the members tree")?;
        rows += 1;
        bytes += (key.len() + value.len()) as u64;
    }
    let elapsed = started.elapsed();
    Ok(Pass {
        rows: black_box(rows),
        elapsed,
        bytes: black_box(bytes),
    })
}

/// A round of the real server.
#[derive(Debug)]
struct Served {
    /// The full view (rows with their reasons).
    pass: Pass,
    /// The billing view (rows without reasons), read right after.
    billing: Pass,
    /// Encoded bytes of the billing view's messages per row.
    billing_bytes_per_row: f64,
    /// The snapshot's steps in process ([`stages::STEPS`]), measured after the server stopped.
    steps: Vec<Pass>,
    /// Encoded bytes of the snapshot's messages per row, from the unmeasured pass.
    bytes_per_row: f64,
    /// This process before the store was opened, and after the measured pass.
    before: Resident,
    after: Resident,
}

/// Opens the store, serves it with `licensing::server::run` on `server_runtime`, reads the
/// snapshot once unmeasured and once measured from `client_runtime`, and stops the server (which
/// closes the store).
fn served_round(
    config: &StoreConfig,
    prices: &Arc<PriceList>,
    expected: &TierCounts,
    server_runtime: &Runtime,
    client_runtime: &Runtime,
) -> anyhow::Result<Served> {
    let before = Resident::of("self")?;
    let store = Store::open(config).context("opening the database")?;
    // A clone keeps the database open (and its cache warm) for the in-process steps.
    let steps_store = store.clone();
    let server = server_runtime.block_on(servers::start_licensing(prices.clone(), store))?;
    // The client and its connection are dropped at the end of this block, before the server stops.
    let passes = client_runtime.block_on(async {
        let mut client = usage_client(server.address).await?;
        let warm = read_usage(&mut client, expected, true, api::UsageView::Full).await?;
        let measured = read_usage(&mut client, expected, false, api::UsageView::Full).await?;
        let billing_warm = read_usage(&mut client, expected, true, api::UsageView::Billing).await?;
        let billing = read_usage(&mut client, expected, false, api::UsageView::Billing).await?;
        anyhow::Ok((warm, measured, billing_warm, billing))
    });
    let after = Resident::of("self");
    // Stop the server whatever the passes gave, then report the first failure.
    let stopped = server_runtime.block_on(server.stop());
    let (warm, pass, billing_warm, billing) = passes?;
    stopped?;
    let steps = stages::measure(&steps_store, prices)?;
    drop(steps_store);
    Ok(Served {
        pass,
        billing,
        billing_bytes_per_row: billing_warm.bytes as f64 / billing_warm.rows.max(1) as f64,
        steps,
        bytes_per_row: warm.bytes as f64 / warm.rows.max(1) as f64,
        before,
        after: after?,
    })
}

/// A `LicensingService` client on one new connection, accepting messages as large as the server
/// may send.
pub(crate) async fn usage_client(
    address: SocketAddr,
) -> anyhow::Result<LicensingServiceClient<tonic::transport::Channel>> {
    let channel = Endpoint::from_shared(format!("http://{address}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {address}"))?;
    Ok(LicensingServiceClient::new(channel).max_decoding_message_size(MAX_ENCODING_MESSAGE_BYTES))
}

/// Reads the account's whole snapshot in `view` and checks it: one summary first, then rows whose
/// count per tier is `expected` (and, in the billing view, without reasons). Timed from the call
/// to the end of the stream.
pub(crate) async fn read_usage(
    client: &mut LicensingServiceClient<tonic::transport::Channel>,
    expected: &TierCounts,
    count_bytes: bool,
    view: api::UsageView,
) -> anyhow::Result<Pass> {
    let started = Instant::now();
    let mut stream = client
        .get_usage(api::GetUsageRequest {
            account_id: ACCOUNT_ID.to_owned(),
            tiers: Vec::new(),
            follow: false,
            month: String::new(),
            view: view as i32,
        })
        .await
        .context("calling GetUsage")?
        .into_inner();
    let mut summaries = 0u32;
    let mut rows = 0u64;
    let mut bytes = 0u64;
    let mut tiers: TierCounts = [0; TIER_SLOTS];
    while let Some(message) = stream.message().await.context("reading GetUsage")? {
        if count_bytes {
            bytes += message.encoded_len() as u64;
        }
        match message.part {
            Some(Part::Summary(_)) if summaries == 0 && rows == 0 => summaries += 1,
            Some(Part::Members(batch)) if summaries == 1 => {
                for row in &batch.rows {
                    let slot = usize::try_from(row.tier)
                        .ok()
                        .filter(|&slot| slot < TIER_SLOTS)
                        .with_context(|| {
                            format!("member {} has tier number {}", row.member_id, row.tier)
                        })?;
                    tiers[slot] += 1;
                    ensure!(
                        (view == api::UsageView::Billing) == row.reasons.is_empty(),
                        "member {} has {} reasons in the {} view",
                        row.member_id,
                        row.reasons.len(),
                        view.as_str_name()
                    );
                }
                rows += batch.rows.len() as u64;
            }
            other => bail!(
                "unexpected GetUsage message ({}) after {summaries} summaries and {rows} rows",
                part_name(other.as_ref())
            ),
        }
    }
    let elapsed = started.elapsed();
    ensure!(summaries == 1, "GetUsage sent no summary");
    ensure!(
        tiers == *expected,
        "GetUsage rows per tier number {tiers:?}, expected {expected:?}"
    );
    Ok(Pass {
        rows,
        elapsed,
        bytes,
    })
}

fn part_name(part: Option<&Part>) -> &'static str {
    match part {
        None => "no part",
        Some(Part::Summary(_)) => "summary",
        Some(Part::Members(_)) => "members",
        Some(Part::RemovedMemberId(_)) => "removed_member_id",
        Some(Part::SnapshotComplete(_)) => "snapshot_complete",
    }
}

/// A process's resident memory, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resident {
    /// `VmRSS`: resident now, in bytes.
    pub(crate) now: u64,
    /// `VmHWM`: the most ever resident, in bytes.
    pub(crate) peak: u64,
}

impl Resident {
    /// The resident memory of `pid` (`self` for this process).
    pub(crate) fn of(pid: &str) -> anyhow::Result<Resident> {
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .with_context(|| format!("no {name} in {path}"))?;
            let kib = line
                .trim()
                .strip_suffix("kB")
                .and_then(|n| n.trim().parse::<u64>().ok())
                .with_context(|| format!("unreadable {name}{line} in {path}"))?;
            Ok(kib * 1024)
        };
        Ok(Resident {
            now: field("VmRSS:")?,
            peak: field("VmHWM:")?,
        })
    }
}

/// The files of a database folder.
#[derive(Debug, Clone, Copy, Default)]
struct DiskUse {
    files: u64,
    /// Sum of the files' lengths.
    bytes: u64,
    /// Sum of the blocks allocated to them (sparse or preallocated files differ from `bytes`).
    allocated: u64,
}

fn disk_use(path: &Path) -> anyhow::Result<DiskUse> {
    let mut total = DiskUse::default();
    let mut folders = vec![path.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries =
            std::fs::read_dir(&folder).with_context(|| format!("listing {}", folder.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", folder.display()))?;
            let metadata = entry
                .metadata()
                .with_context(|| format!("reading {}", entry.path().display()))?;
            if metadata.is_dir() {
                folders.push(entry.path());
            } else {
                total.files += 1;
                total.bytes += metadata.len();
                total.allocated += metadata.blocks() * 512;
            }
        }
    }
    Ok(total)
}

/// What one account size measured.
#[derive(Debug)]
struct SizeResult {
    members: u64,
    raw: Vec<Pass>,
    served: Vec<Served>,
    disk: DiskUse,
    /// Live key + value bytes of every tree.
    live: u64,
    starts: Vec<startup::Start>,
}

pub(crate) fn run(args: &UsageArgs) -> anyhow::Result<ExitCode> {
    let prices = Arc::new(licensing::price_list::sample().map_err(anyhow::Error::msg)?);
    let profiles = profiles(&prices)?;
    let binary = startup::locate(args.licensing_binary.as_deref())?;
    let server_runtime = crate::runtime("server")?;
    let client_runtime = crate::runtime("client")?;
    let cache_bytes = args.cache_mb << 20;

    println!(
        "GetUsage of one account, {} round(s) per reader after a warm-up pass each; sled cache {} MiB",
        args.rounds, args.cache_mb
    );
    let mix = profiles
        .iter()
        .map(|p| format!("{}/10 {} ({})", p.per_ten, p.name, p.tier.as_str_name()))
        .collect::<Vec<_>>()
        .join(", ");
    println!("members: {mix}");

    // The binary's own footprint, to tell what the members add to it.
    let empty = tempfile::tempdir().context("creating the empty database directory")?;
    let baseline = client_runtime.block_on(startup::start(
        &binary,
        &empty.path().join("licensing"),
        args.cache_mb,
        None,
    ))?;
    println!(
        "{} on an empty database: SERVING after {}, VmRSS {}",
        binary.display(),
        seconds(baseline.serving),
        mib(baseline.at_serving.now)
    );

    let mut results = Vec::with_capacity(args.members.len());
    for &members in &args.members {
        let dir = tempfile::tempdir().context("creating the database directory")?;
        let config = StoreConfig {
            path: dir.path().join("licensing"),
            cache_capacity_bytes: cache_bytes,
        };
        println!("\n{members} members");
        let population = populate(&config, members, &prices, &profiles, &server_runtime)?;
        println!(
            "populate: {members} apply_member in {} ({:.0} applies/s, one transaction each), flush {}",
            seconds(population.applying),
            members as f64 / population.applying.as_secs_f64(),
            seconds(population.flushing)
        );
        println!(
            "  this process at the end of populate (store open): VmRSS {}, peak so far (VmHWM) {}",
            mib(population.resident.now),
            mib(population.resident.peak)
        );
        let disk = disk_use(&config.path)?;
        println!(
            "on disk after flush: {} B in {} files ({} B allocated) = {:.0} B per member",
            disk.bytes,
            disk.files,
            disk.allocated,
            disk.bytes as f64 / members as f64
        );
        let trees = census(&config)?;
        let live: u64 = trees.iter().map(|t| t.bytes).sum();
        let listing = trees
            .iter()
            .map(|t| format!("{} {} entries {} B", t.name, t.entries, t.bytes))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "  live keys + values: {listing}; total {live} B = {:.0} B per member; files / live = {:.1}",
            live as f64 / members as f64,
            disk.bytes as f64 / live.max(1) as f64
        );

        let mut raw = Vec::new();
        let mut served = Vec::new();
        for n in 1..=args.rounds {
            let label = format!("round {n}/{}", args.rounds);
            // Every other round reads through GetUsage first, so that neither reader always
            // follows the other.
            let served_first = n % 2 == 0;
            let raw_pass = |raw: &mut Vec<Pass>| -> anyhow::Result<()> {
                let pass = raw_round(&config, population.members)?;
                print_pass(&label, "raw sled scan", &pass, "");
                raw.push(pass);
                Ok(())
            };
            if !served_first {
                raw_pass(&mut raw)?;
            }
            let round = served_round(
                &config,
                &prices,
                &population.tiers,
                &server_runtime,
                &client_runtime,
            )?;
            let note = format!(
                "  {:.0} B/row; this process VmRSS {} before open, {} after",
                round.bytes_per_row,
                mib(round.before.now),
                mib(round.after.now)
            );
            print_pass(&label, "GetUsage", &round.pass, &note);
            let note = format!("  {:.0} B/row", round.billing_bytes_per_row);
            print_pass(&label, "  view BILLING", &round.billing, &note);
            let steps = round
                .steps
                .iter()
                .map(|step| format!("{:.0}", step.per_second()))
                .collect::<Vec<_>>()
                .join(", ");
            println!("{label:<10} in-process steps, rows/s: {steps}");
            served.push(round);
            if served_first {
                raw_pass(&mut raw)?;
            }
        }

        let mut starts = Vec::new();
        for n in 1..=args.starts {
            let start = client_runtime.block_on(startup::start(
                &binary,
                &config.path,
                args.cache_mb,
                Some(&population.tiers),
            ))?;
            let mut line = format!(
                "start {n}/{}: listening after {}, SERVING after {}, VmRSS at SERVING {}",
                args.starts,
                seconds(start.listening),
                seconds(start.serving),
                mib(start.at_serving.now)
            );
            if let Some((pass, after)) = &start.after_read {
                let _ = write!(
                    line,
                    ", after one GetUsage ({:.0} rows/s) {} (peak {})",
                    pass.per_second(),
                    mib(after.now),
                    mib(after.peak)
                );
            }
            println!("{line}");
            starts.push(start);
        }
        let result = SizeResult {
            members,
            raw,
            served,
            disk,
            live,
            starts,
        };
        print_size(&result, &baseline);
        results.push(result);
    }

    print_summary(&results);
    Ok(ExitCode::SUCCESS)
}

fn print_pass(label: &str, reader: &str, pass: &Pass, note: &str) {
    println!(
        "{label:<10} {reader:<14} {:>8} rows in {:>9}  {:>10.0} rows/s{note}",
        pass.rows,
        seconds(pass.elapsed),
        pass.per_second()
    );
}

/// Rows per second of the fastest pass and the median pass.
fn best_and_median(passes: impl Iterator<Item = Pass>) -> (f64, f64) {
    let mut rates: Vec<f64> = passes.map(|p| p.per_second()).collect();
    rates.sort_by(f64::total_cmp);
    let best = rates.last().copied().unwrap_or(0.0);
    (best, median(&rates))
}

/// The middle of sorted values (the mean of the two middle ones for an even count).
fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The median of one duration of each start.
fn median_start(starts: &[startup::Start], of: fn(&startup::Start) -> Duration) -> Duration {
    let mut times: Vec<f64> = starts.iter().map(|s| of(s).as_secs_f64()).collect();
    times.sort_by(f64::total_cmp);
    Duration::from_secs_f64(median(&times))
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

fn print_size(result: &SizeResult, baseline: &startup::Start) {
    let members = result.members as f64;
    let (raw_best, raw_median) = best_and_median(result.raw.iter().copied());
    let (ours_best, ours_median) = best_and_median(result.served.iter().map(|s| s.pass));
    let (billing_best, billing_median) = best_and_median(result.served.iter().map(|s| s.billing));
    println!("{} members:", result.members);
    for (what, raw, ours, billing) in [
        ("best", raw_best, ours_best, billing_best),
        ("median", raw_median, ours_median, billing_median),
    ] {
        for (view, ours) in [("FULL", ours), ("BILLING", billing)] {
            println!(
                "  {what:<6} raw sled scan {raw:>10.0} rows/s, GetUsage view {view:<7} {ours:>10.0} \
                 rows/s: ratio {:.2} (target >= {RATIO_TARGET:.2}: {}), >= 1,000,000 rows/s: {}",
                ours / raw,
                verdict(ours / raw >= RATIO_TARGET),
                verdict(ours >= ROWS_PER_SECOND_TARGET)
            );
        }
    }
    for (view, of) in [
        ("FULL", (|s: &Served| s.pass) as fn(&Served) -> Pass),
        ("BILLING", |s: &Served| s.billing),
    ] {
        let ratios: Vec<f64> = result
            .raw
            .iter()
            .zip(&result.served)
            .map(|(raw, served)| of(served).per_second() / raw.per_second())
            .collect();
        println!(
            "  from the rounds' ratios, GetUsage view {view:<7} / raw sled scan: {}",
            paired::describe(&ratios, RATIO_TARGET)
        );
    }
    println!(
        "  in process, one thread, no gRPC (best of {} passes each; ns per row, and the difference \
         to the step before, which noise can make negative):",
        result.served.len()
    );
    let mut previous_ns = 0.0;
    for (index, step) in stages::STEPS.iter().enumerate() {
        let (best, _) = best_and_median(
            result
                .served
                .iter()
                .filter_map(|s| s.steps.get(index).copied()),
        );
        let ns = 1e9 / best;
        println!(
            "    {step:<46} {best:>10.0} rows/s {ns:>6.0} ns/row ({:+.0} ns)",
            ns - previous_ns
        );
        previous_ns = ns;
    }
    println!(
        "    GetUsage over loopback gRPC, best: {:.0} ns/row of wall time (server and client share the 2 cores)",
        1e9 / ours_best
    );
    println!(
        "  on disk: {:.0} B per member (file lengths / members; allocated blocks {:.0} B per \
         member; live keys + values {:.0} B per member)",
        result.disk.bytes as f64 / members,
        result.disk.allocated as f64 / members,
        result.live as f64 / members
    );
    if let Some(first) = result.served.first() {
        println!(
            "  this process, first served round: VmRSS {} before opening the store, {} after two \
             GetUsage passes: {:+.0} B per member",
            mib(first.before.now),
            mib(first.after.now),
            (first.after.now as f64 - first.before.now as f64) / members
        );
    }
    if let Some(start) = result.starts.first() {
        let over_empty = |bytes: u64| (bytes as f64 - baseline.at_serving.now as f64) / members;
        println!(
            "  licensing binary, first start: VmRSS at SERVING {:+.0} B per member over the empty database",
            over_empty(start.at_serving.now)
        );
        if let Some((_, after)) = &start.after_read {
            println!(
                "  licensing binary, first start: VmRSS after one GetUsage {:+.0} B per member over \
                 the empty database at SERVING (peak {:+.0} B)",
                over_empty(after.now),
                over_empty(after.peak)
            );
        }
    }
    let serving = median_start(&result.starts, |s| s.serving);
    println!(
        "  time to SERVING, median of {}: {} (target <= {} with 1M members: {}); to the listening \
         line (database opened, port bound): {}",
        result.starts.len(),
        seconds(serving),
        seconds(SERVING_TARGET),
        verdict(serving <= SERVING_TARGET),
        seconds(median_start(&result.starts, |s| s.listening))
    );
}

fn print_summary(results: &[SizeResult]) {
    println!("\nsummary (rows/s best / median; ratio = GetUsage / raw sled scan)");
    println!(
        "{:>9}  {:>21}  {:>21}  {:>11}  {:>12}  {:>10}",
        "members", "raw sled scan", "GetUsage", "ratio", "disk B/mbr", "SERVING"
    );
    for result in results {
        let (raw_best, raw_median) = best_and_median(result.raw.iter().copied());
        let (ours_best, ours_median) = best_and_median(result.served.iter().map(|s| s.pass));
        println!(
            "{:>9}  {:>10.0} / {:>8.0}  {:>10.0} / {:>8.0}  {:>4.2} / {:>4.2}  {:>12.0}  {:>10}",
            result.members,
            raw_best,
            raw_median,
            ours_best,
            ours_median,
            ours_best / raw_best,
            ours_median / raw_median,
            result.disk.bytes as f64 / result.members as f64,
            seconds(median_start(&result.starts, |s| s.serving))
        );
    }
}

fn seconds(duration: Duration) -> String {
    format!("{:.3} s", duration.as_secs_f64())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}
