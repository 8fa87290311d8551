//! End to end: a sandbox account walked through days and a month end across a daylight-saving
//! change by advancing its clock, through the real binary and `grpcurl`.

mod support;

use serde_json::{Value, json};
use support::Licensing;

const SERVICE: &str = "licensing.v1.LicensingService";

fn method(name: &str) -> String {
    format!("{SERVICE}/{name}")
}

fn advance(server: &Licensing, to: &str) -> Value {
    server.call(
        &method("AdvanceClock"),
        &json!({ "accountId": "sandbox", "to": to }),
    )
}

/// Sets the STANDARD seats through a previewed and confirmed cart; returns the confirm's answer.
fn set_standard_seats(server: &Licensing, seats: u32) -> Value {
    let cart = json!({ "accountId": "sandbox", "changes": [{ "product": "PRODUCT_STANDARD_SEAT", "seats": seats }] });
    let preview = server.call(&method("AdjustInventory"), &cart);
    let mut confirm = cart;
    confirm["confirm"] = json!(true);
    confirm["revision"] = preview["revision"].clone();
    server.call(&method("AdjustInventory"), &confirm)
}

/// (month, seats, peak) of STANDARD seats in an inventory.
fn standard(inventory: &Value) -> (String, u64, u64) {
    let seat = inventory["seats"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["product"] == "PRODUCT_STANDARD_SEAT"))
        .expect("STANDARD_SEAT");
    (
        inventory["month"].as_str().unwrap_or_default().to_owned(),
        seat["seats"].as_u64().unwrap_or(0),
        seat["peakThisMonth"].as_u64().unwrap_or(0),
    )
}

fn inventory(server: &Licensing) -> (String, u64, u64) {
    standard(&server.call(&method("GetInventory"), &json!({ "accountId": "sandbox" }))["inventory"])
}

#[test]
fn a_sandbox_walks_through_a_month_end_across_daylight_saving() {
    let server = Licensing::start();
    // Prague leaves summer time on 2026-10-25 at 01:00 UTC (UTC+2 → UTC+1).
    let created = server.call(
        &method("CreateAccount"),
        &json!({
            "accountId": "sandbox",
            "settings": { "timeZone": "Europe/Prague" },
            "sandbox": true,
            "sandboxClockStart": "2026-10-24T12:00:00Z"
        }),
    );
    assert_eq!(created["account"]["sandbox"], true);
    assert_eq!(created["account"]["now"], "2026-10-24T12:00:00Z");
    assert_eq!(created["account"]["createdAt"], "2026-10-24T12:00:00Z");

    // The clock stands still until it is advanced: real time passing changes nothing.
    let read = server.call(&method("GetAccount"), &json!({ "accountId": "sandbox" }));
    assert_eq!(read["account"]["now"], "2026-10-24T12:00:00Z");
    assert_eq!(read["account"]["sandbox"], true);

    assert_eq!(
        standard(&set_standard_seats(&server, 5)["inventory"]),
        ("2026-10".into(), 5, 5)
    );
    advance(&server, "2026-10-25T12:00:00Z");
    assert_eq!(
        standard(&set_standard_seats(&server, 8)["inventory"]),
        ("2026-10".into(), 8, 8)
    );

    // The last second of October in Prague, now at UTC+1: still October, billed at its peak.
    advance(&server, "2026-10-31T22:59:59Z");
    assert_eq!(
        standard(&set_standard_seats(&server, 3)["inventory"]),
        ("2026-10".into(), 3, 8)
    );
    assert_eq!(inventory(&server), ("2026-10".into(), 3, 8));

    // One second later it is November there: the new month's peak starts from the reduced count.
    let advanced = advance(&server, "2026-10-31T23:00:00Z");
    assert_eq!(advanced["account"]["now"], "2026-10-31T23:00:00Z");
    assert_eq!(inventory(&server), ("2026-11".into(), 3, 3));
    assert_eq!(
        standard(&set_standard_seats(&server, 4)["inventory"]),
        ("2026-11".into(), 4, 4)
    );

    // Usage is marked as a sandbox's, so nobody takes it for billable.
    let usage = server.call_stream(&method("GetUsage"), &json!({ "accountId": "sandbox" }));
    assert_eq!(usage[0]["summary"]["sandbox"], true);
    assert_eq!(usage[0]["summary"]["month"], "2026-11");

    // Every change is audited at the sandbox's time, clock moves included.
    let trail = server.call_stream(
        &method("ReadAuditTrail"),
        &json!({ "accountId": "sandbox" }),
    );
    let entries: Vec<(String, String)> = trail
        .iter()
        .flat_map(|m| m["entries"].as_array().into_iter().flatten())
        .map(|e| {
            let kind = ["accountSettings", "inventory", "clock", "member"]
                .into_iter()
                .find(|k| e.get(*k).is_some())
                .unwrap_or("?");
            (
                e["time"].as_str().unwrap_or("?").to_owned(),
                kind.to_owned(),
            )
        })
        .collect();
    let expected = [
        ("2026-10-24T12:00:00Z", "accountSettings"),
        ("2026-10-24T12:00:00Z", "inventory"),
        ("2026-10-24T12:00:00Z", "clock"),
        ("2026-10-25T12:00:00Z", "inventory"),
        ("2026-10-25T12:00:00Z", "clock"),
        ("2026-10-31T22:59:59Z", "inventory"),
        ("2026-10-31T22:59:59Z", "clock"),
        ("2026-10-31T23:00:00Z", "inventory"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(t, k)| (t.to_string(), k.to_string()))
        .collect();
    assert_eq!(entries, expected);
    let clock = trail[0]["entries"][2]["clock"].clone();
    assert_eq!(
        clock,
        json!({ "from": "2026-10-24T12:00:00Z", "to": "2026-10-25T12:00:00Z" })
    );
}

#[test]
fn clocks_only_move_forward_and_only_for_sandboxes() {
    let server = Licensing::start();
    server.call(
        &method("CreateAccount"),
        &json!({ "accountId": "sandbox", "settings": { "timeZone": "UTC" }, "sandbox": true, "sandboxClockStart": "2026-05-01T00:00:00Z" }),
    );
    let back = server.call_err(
        &method("AdvanceClock"),
        &json!({ "accountId": "sandbox", "to": "2026-04-30T23:59:59Z" }),
    );
    assert!(
        back.contains("Code: InvalidArgument")
            && back.contains(
                "invalid to 2026-04-30T23:59:59Z: is before the sandbox clock's current time 2026-05-01T00:00:00Z"
            ),
        "{back}"
    );
    server.call(
        &method("CreateAccount"),
        &json!({ "accountId": "real", "settings": { "timeZone": "UTC" } }),
    );
    let real = server.call_err(
        &method("AdvanceClock"),
        &json!({ "accountId": "real", "to": "2030-01-01T00:00:00Z" }),
    );
    assert!(
        real.contains("Code: FailedPrecondition")
            && real.contains("account \"real\" is not a sandbox"),
        "{real}"
    );
    let account = server.call(&method("GetAccount"), &json!({ "accountId": "real" }));
    assert!(
        account["account"].get("sandbox").is_none(),
        "a real account is not marked sandbox: {account}"
    );
    let start_without_sandbox = server.call_err(
        &method("CreateAccount"),
        &json!({ "accountId": "other", "settings": { "timeZone": "UTC" }, "sandboxClockStart": "2026-05-01T00:00:00Z" }),
    );
    assert!(
        start_without_sandbox.contains("invalid sandbox_clock_start"),
        "{start_without_sandbox}"
    );
}

/// Ingests one login event of `ann` and returns its outcome.
fn ingest_login(server: &Licensing, at: &str) -> Value {
    let answers = server.call_stream(
        "licensing.v1.IngestionService/Ingest",
        &json!({ "batchId": 1, "events": [{
            "source": "desk", "eventId": "e1", "accountId": "sandbox", "memberId": "ann",
            "occurredAt": at, "agentLogin": {}
        }] }),
    );
    assert_eq!(answers.len(), 1, "{answers:?}");
    answers[0]["outcomes"][0].clone()
}

#[test]
fn a_resend_is_a_duplicate_while_its_dedupe_record_is_kept_and_refused_once_the_clock_passed_it() {
    let server = Licensing::start_with_args(&["--dedupe-retention-days", "3"]);
    server.call(
        &method("CreateAccount"),
        &json!({
            "accountId": "sandbox",
            "settings": { "timeZone": "UTC", "autoGrowth": true },
            "sandbox": true,
            "sandboxClockStart": "2026-05-31T12:00:00Z"
        }),
    );
    server.call(
        &method("ResolveMember"),
        &json!({ "accountId": "sandbox", "memberId": "ann", "apply": true, "settings": {
            "role": "ROLE_USER", "skills": [{ "id": "voice", "channel": "CHANNEL_VOICE" }]
        } }),
    );
    let first = ingest_login(&server, "2026-05-31T11:00:00Z");
    assert_eq!(first["outcome"], "OUTCOME_APPLIED", "{first}");
    // May closed on June 1; its dedupe records are kept 3 days more, until June 4.
    advance(&server, "2026-06-03T23:00:00Z");
    let kept = ingest_login(&server, "2026-05-31T11:00:00Z");
    assert_eq!(kept["outcome"], "OUTCOME_DUPLICATE", "{kept}");
    // Past the retention, the sweep of this account's records runs when its clock moves (not
    // only at the hourly sweep): the resend is refused as its month is closed. The sweep runs
    // in the background, so the answer is polled for (every 50 ms, within a generous deadline
    // for a loaded machine).
    advance(&server, "2026-06-04T00:00:01Z");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let resent = ingest_login(&server, "2026-05-31T11:00:00Z");
        if resent["outcome"] == "OUTCOME_REFUSED" {
            assert_eq!(resent["refusal"], "REFUSAL_REASON_MONTH_CLOSED", "{resent}");
            break;
        }
        assert_eq!(resent["outcome"], "OUTCOME_DUPLICATE", "{resent}");
        assert!(
            std::time::Instant::now() < deadline,
            "the expired dedupe record was not deleted after the clock moved past it"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let logs = server.logs().join("\n");
    assert!(
        logs.contains("expired dedupe records deleted expired=1")
            && logs.contains("account=\"sandbox\""),
        "{logs}"
    );
}
