//! End to end with both real binaries: `licensing-collector` follows a JSON-lines file of usage
//! events and streams it into `licensing`, while one or the other is killed with SIGKILL at
//! random moments. Afterwards the service's login days, metered use and unlicensed usage equal
//! an oracle computed from the unique events: nothing lost, nothing counted twice. Feeding the
//! same file again changes nothing; the same events shuffled give the same days and peaks.
//!
//! `COLLECTOR_EVENTS` sets the events per run (default 200,000), `COLLECTOR_KILLS` the kills
//! (default 10), `COLLECTOR_SEED` the seed (printed at the start).

mod support;

use std::{
    collections::BTreeMap,
    fs,
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};
use support::{Licensing, Rng};

const ZONE: &str = "America/Los_Angeles";
const MEMBERS: usize = 20;
const SERVICE: &str = "licensing.v1.LicensingService";
/// How long the counts may stay unchanged, once the kills are over, before the test fails: the
/// deadline is on progress, not on the whole run, so a slow machine only makes it take longer.
const STALL: Duration = Duration::from_secs(180);

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A running collector on a spool folder, with its metrics endpoint.
struct Collector(Child, String);

impl Collector {
    fn start(licensing: &str, spool: &Path, file: &Path) -> Collector {
        let metrics = support::free_address();
        let child = Command::new(env!("CARGO_BIN_EXE_licensing-collector"))
            .args(["--licensing", &format!("http://{licensing}"), "--spool-dir"])
            .arg(spool)
            .arg("--follow")
            .arg(file)
            .args([
                "--source",
                "test",
                "--log",
                "warn",
                "--backoff-max-ms",
                "500",
                "--metrics-listen",
                &metrics,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start licensing-collector");
        Collector(child, metrics)
    }

    /// A counter or gauge of the collector's metrics, once its endpoint answers.
    fn metric(&self, name: &str) -> Option<u64> {
        use std::io::Read as _;
        let mut socket = std::net::TcpStream::connect(&self.1).ok()?;
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .ok()?;
        socket
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: collector\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut response = String::new();
        socket.read_to_string(&mut response).ok()?;
        response.lines().find_map(|line| {
            let (metric, value) = line.split_once(' ')?;
            (metric == name)
                .then(|| value.trim().parse::<f64>().ok())?
                .map(|v| v as u64)
        })
    }

    /// Waits until every line of the file was spooled and acknowledged by `licensing`, failing
    /// only when the collector makes no progress for `STALL`.
    fn wait_until_drained(&self, lines: u64) {
        let mut last = None;
        let mut progress = Instant::now();
        loop {
            let spooled = self.metric("licensing_collector_events_spooled_total");
            let depth = self.metric("licensing_collector_spool_depth");
            if spooled == Some(lines) && depth == Some(0) {
                return;
            }
            if last != Some((spooled, depth)) {
                last = Some((spooled, depth));
                progress = Instant::now();
            }
            assert!(
                progress.elapsed() < STALL,
                "the collector made no progress for {STALL:?}: spooled {spooled:?} of {lines}, {depth:?} left"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One event line, and what it adds to the oracle.
#[derive(Debug, Clone)]
struct Line {
    text: String,
    member: String,
    at: jiff::Timestamp,
    kind: &'static str,
    minutes: u64,
}

fn member(i: u64) -> String {
    // One member in 21 is unknown to the service: unlicensed usage.
    if i as usize == MEMBERS {
        "ghost".into()
    } else {
        format!("m{i:02}")
    }
}

/// The events: logins, logouts, queue logins and logouts, speech-to-text minutes, over May.
fn events(count: u64, rng: &mut Rng, account: &str) -> Vec<Line> {
    let start: jiff::Timestamp = "2026-05-01T07:00:00Z".parse().expect("timestamp");
    (0..count)
        .map(|id| {
            let member = member(rng.below(MEMBERS as u64 + 1));
            let at = start + jiff::SignedDuration::from_secs(rng.below(29 * 24 * 3600) as i64);
            let (kind, extra, minutes) = match rng.below(20) {
                0..=6 => ("agent_login", String::new(), 0),
                7..=12 => ("agent_logout", String::new(), 0),
                13..=15 => ("queue_login", format!(",\"queue_id\":\"q{}\"", rng.below(3)), 0),
                16..=18 => ("queue_logout", format!(",\"queue_id\":\"q{}\"", rng.below(3)), 0),
                _ => {
                    let minutes = 1 + rng.below(9);
                    ("metered_usage", format!(",\"meter\":\"speech_to_text_minutes\",\"quantity\":{minutes}"), minutes)
                }
            };
            let text = format!(
                "{{\"event_id\":\"e{id}\",\"account_id\":\"{account}\",\"member_id\":\"{member}\",\"occurred_at\":\"{at}\",\"kind\":\"{kind}\"{extra}}}"
            );
            Line { text, member, at, kind, minutes }
        })
        .collect()
}

/// Writes the lines, repeating about one in a hundred (a replayed line is the same event).
fn write_file(path: &Path, lines: &[Line], rng: &mut Rng) {
    let mut file = BufWriter::new(fs::File::create(path).expect("create events file"));
    for line in lines {
        writeln!(file, "{}", line.text).expect("write");
        if rng.below(100) == 0 {
            writeln!(file, "{}", line.text).expect("write");
        }
    }
    file.flush().expect("flush");
}

/// The lines of a file.
fn line_count(path: &Path) -> u64 {
    fs::read_to_string(path)
        .expect("read events file")
        .lines()
        .count() as u64
}

/// What the service must show: logins per member and day, minutes, unlicensed events.
#[derive(Debug, PartialEq, Eq)]
struct Totals {
    logins: BTreeMap<(String, String), u64>,
    minutes: u64,
    unlicensed: u64,
}

fn oracle(lines: &[Line]) -> Totals {
    let zone = jiff::tz::TimeZone::get(ZONE).expect("zone");
    let mut totals = Totals {
        logins: BTreeMap::new(),
        minutes: 0,
        unlicensed: 0,
    };
    for line in lines {
        totals.minutes += line.minutes;
        if line.kind == "metered_usage" {
            continue;
        }
        if line.member == "ghost" {
            totals.unlicensed += 1;
            continue;
        }
        if line.kind == "agent_login" || line.kind == "queue_login" {
            let date = line.at.to_zoned(zone.clone()).date().to_string();
            *totals
                .logins
                .entry((line.member.clone(), date))
                .or_default() += 1;
        }
    }
    totals
}

fn observe(server: &Licensing, account: &str) -> (Totals, Value) {
    let messages = server.call_stream(
        &format!("{SERVICE}/GetUsage"),
        &json!({ "accountId": account, "month": "2026-05" }),
    );
    let summary = messages[0]["summary"].clone();
    let mut totals = Totals {
        logins: BTreeMap::new(),
        minutes: 0,
        unlicensed: 0,
    };
    for message in &messages[1..] {
        for row in message["members"]["rows"].as_array().into_iter().flatten() {
            let member = row["memberId"].as_str().unwrap_or_default().to_owned();
            for day in row["loginDays"].as_array().into_iter().flatten() {
                let date = day["date"].as_str().unwrap_or_default().to_owned();
                totals
                    .logins
                    .insert((member.clone(), date), day["logins"].as_u64().unwrap_or(0));
            }
        }
    }
    for meter in summary["meters"].as_array().into_iter().flatten() {
        totals.minutes += meter["quantity"]
            .as_str()
            .and_then(|q| q.parse::<u64>().ok())
            .unwrap_or(0);
    }
    for u in summary["unlicensed"].as_array().into_iter().flatten() {
        totals.unlicensed += u["events"]
            .as_str()
            .and_then(|q| q.parse::<u64>().ok())
            .unwrap_or(0);
    }
    (totals, summary["concurrencyPeaks"].clone())
}

fn setup(server: &Licensing, account: &str) {
    server.call(
        &format!("{SERVICE}/CreateAccount"),
        &json!({
            "accountId": account, "sandbox": true, "sandboxClockStart": "2026-05-31T12:00:00Z",
            "settings": { "timeZone": ZONE, "autoGrowth": true, "gracePeriodDays": 5 }
        }),
    );
    for i in 0..MEMBERS as u64 {
        // Even members: PROFESSIONAL billed per day; odd: STANDARD monthly.
        let settings = if i % 2 == 0 {
            json!({ "role": "ROLE_TEAM_LEADER", "billingPreference": "BILLING_MODE_DAILY" })
        } else {
            json!({ "role": "ROLE_USER", "skills": [{ "id": "voice", "channel": "CHANNEL_VOICE" }] })
        };
        server.call(
            &format!("{SERVICE}/ResolveMember"),
            &json!({ "accountId": account, "memberId": member(i), "apply": true, "settings": settings }),
        );
    }
}

/// Waits until the service shows `expected` for `account`, or fails when the counts stop
/// moving for `STALL`.
fn wait_for(server: &Licensing, account: &str, expected: &Totals, seed: u64) -> Value {
    let mut progress = Instant::now();
    let mut last = None;
    loop {
        let asked = Instant::now();
        let (totals, peaks) = observe(server, account);
        if &totals == expected {
            return peaks;
        }
        let seen: u64 = totals.logins.values().sum();
        let want: u64 = expected.logins.values().sum();
        let now = (seen, totals.minutes, totals.unlicensed);
        if last != Some(now) {
            last = Some(now);
            progress = Instant::now();
        }
        assert!(
            seen <= want
                && totals.minutes <= expected.minutes
                && totals.unlicensed <= expected.unlicensed,
            "seed {seed}: counted more than the unique events: logins {seen} > {want}, or minutes {} > {}, or unlicensed {} > {}",
            totals.minutes,
            expected.minutes,
            totals.unlicensed,
            expected.unlicensed
        );
        assert!(
            progress.elapsed() < STALL,
            "seed {seed}: no progress for {STALL:?}; the service shows logins {seen} of {want}, minutes {} of {}, unlicensed {} of {}",
            totals.minutes,
            expected.minutes,
            totals.unlicensed,
            expected.unlicensed
        );
        // Poll no faster than a read takes, so that reading does not starve the ingestion.
        thread::sleep(asked.elapsed().max(Duration::from_millis(500)));
    }
}

#[test]
fn nothing_is_lost_or_counted_twice_when_either_process_is_killed() {
    let seed = env_number(
        "COLLECTOR_SEED",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1,
    );
    let count = env_number("COLLECTOR_EVENTS", 200_000);
    let kills = env_number("COLLECTOR_KILLS", 10);
    eprintln!("collector: seed {seed}, {count} events, {kills} kills");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let address = support::free_address();
    let database: PathBuf = dir.path().join("db");
    let spool = dir.path().join("spool");
    let file = dir.path().join("events.jsonl");

    let lines = events(count, &mut rng, "acme");
    let expected = oracle(&lines);
    write_file(&file, &lines, &mut rng);

    let mut server = Licensing::start_on(database.clone(), &address);
    setup(&server, "acme");
    let mut collector = Collector::start(&address, &spool, &file);
    for round in 0..kills {
        thread::sleep(Duration::from_millis(300 + rng.below(1500)));
        if round % 2 == 0 {
            server.kill();
            server = Licensing::start_on(database.clone(), &address);
        } else {
            collector.kill();
            collector = Collector::start(&address, &spool, &file);
        }
    }
    let peaks = wait_for(&server, "acme", &expected, seed);
    eprintln!("collector: all {count} events counted once after {kills} kills");

    // The same file again, through a fresh spool (the collector forgot it read it): every event
    // is a duplicate, and nothing changes.
    collector.kill();
    let replay = Collector::start(&address, &dir.path().join("spool-replay"), &file);
    replay.wait_until_drained(line_count(&file));
    assert_eq!(
        replay.metric("licensing_collector_events_applied_total"),
        Some(0),
        "seed {seed}: a replayed event was applied again"
    );
    let (again, peaks_again) = observe(&server, "acme");
    assert_eq!(
        again, expected,
        "seed {seed}: a replayed file changed the counts"
    );
    assert_eq!(
        peaks_again, peaks,
        "seed {seed}: a replayed file changed the peaks"
    );
    drop(replay);

    // The same events for a second account, shuffled: the same days and peaks.
    let mut shuffled: Vec<Line> = events(count, &mut Rng::new(seed), "shuffled");
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rng.below(i as u64 + 1) as usize);
    }
    setup(&server, "shuffled");
    let shuffled_file = dir.path().join("shuffled.jsonl");
    write_file(&shuffled_file, &shuffled, &mut rng);
    let _collector = Collector::start(&address, &dir.path().join("spool-shuffled"), &shuffled_file);
    let shuffled_peaks = wait_for(&server, "shuffled", &expected, seed);
    assert_eq!(
        shuffled_peaks, peaks,
        "seed {seed}: arrival order changed the peaks"
    );
}
