//! End to end: a sandbox account's October in Prague (summer time ends on the 25th) walked
//! through with `grpcurl`, and its statement checked against one computed by hand.

mod support;

use serde_json::{Value, json};
use support::Licensing;

const SERVICE: &str = "licensing.v1.LicensingService";
const ACCOUNT: &str = "golden";

fn call(server: &Licensing, method: &str, request: Value) -> Value {
    server.call(&format!("{SERVICE}/{method}"), &request)
}

fn advance(server: &Licensing, to: &str) {
    call(
        server,
        "AdvanceClock",
        json!({ "accountId": ACCOUNT, "to": to }),
    );
}

fn apply(server: &Licensing, member: &str, settings: Value) {
    let answer = call(
        server,
        "ResolveMember",
        json!({ "accountId": ACCOUNT, "memberId": member, "apply": true, "settings": settings }),
    );
    assert_eq!(answer["applied"], true);
}

fn set_seats(server: &Licensing, changes: Value) {
    let cart = json!({ "accountId": ACCOUNT, "changes": changes });
    let preview = call(server, "AdjustInventory", cart.clone());
    let mut confirm = cart;
    confirm["confirm"] = json!(true);
    confirm["revision"] = preview["revision"].clone();
    call(server, "AdjustInventory", confirm);
}

fn login(id: &str, member: &str, at: &str) -> Value {
    json!({ "source": "golden", "eventId": id, "accountId": ACCOUNT, "memberId": member, "occurredAt": at, "agentLogin": {} })
}

fn metered(id: &str, at: &str, meter: &str, quantity: u64) -> Value {
    json!({
        "source": "golden", "eventId": id, "accountId": ACCOUNT, "memberId": "ann", "occurredAt": at,
        "meteredUsage": { "meter": meter, "quantity": quantity }
    })
}

/// Streams one batch and returns its outcomes.
fn ingest(server: &Licensing, events: Vec<Value>) -> Vec<Value> {
    let answers = server.call_stream(
        "licensing.v1.IngestionService/Ingest",
        &json!({ "batchId": 1, "events": events }),
    );
    assert_eq!(answers.len(), 1, "{answers:?}");
    answers[0]["outcomes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn statement(server: &Licensing) -> Value {
    call(
        server,
        "GetStatement",
        json!({ "accountId": ACCOUNT, "month": "2026-10" }),
    )["statement"]
        .clone()
}

#[test]
fn october_in_prague_is_billed_as_computed_by_hand() {
    let server = Licensing::start();
    call(
        &server,
        "CreateAccount",
        json!({
            "accountId": ACCOUNT,
            "sandbox": true,
            "sandboxClockStart": "2026-10-01T08:00:00Z",
            "settings": {
                "timeZone": "Europe/Prague",
                "gracePeriodDays": 2,
                "recordingRetention": { "months": 9 },
                "speechToText": true,
                "speechToTextExtraMinutesCap": 1000,
                "powerPack": true,
                "aiQaPacksCap": 2
            }
        }),
    );
    // Oct 1: 10 STANDARD seats and one outbound seat.
    set_seats(
        &server,
        json!([{ "product": "PRODUCT_STANDARD_SEAT", "seats": 10 }, { "product": "PRODUCT_OUTBOUND_SEAT", "seats": 1 }]),
    );
    let voice = json!([{ "id": "voice", "channel": "CHANNEL_VOICE" }]);
    // ann: STANDARD, recorded, outbound. dana: STANDARD; prefers daily, which STANDARD cannot be.
    apply(
        &server,
        "ann",
        json!({ "role": "ROLE_USER", "skills": voice, "callRecording": true, "outboundCalling": true }),
    );
    apply(
        &server,
        "dana",
        json!({ "role": "ROLE_USER", "skills": voice, "billingPreference": "BILLING_MODE_DAILY" }),
    );

    // Oct 15: the STANDARD seats are reduced to 4; October stays billed at its peak of 10.
    advance(&server, "2026-10-15T08:00:00Z");
    set_seats(
        &server,
        json!([{ "product": "PRODUCT_STANDARD_SEAT", "seats": 4 }]),
    );

    // Oct 19: dana logs in as a monthly STANDARD member: a login day, not billable.
    advance(&server, "2026-10-19T09:00:00Z");
    ingest(&server, vec![login("d0", "dana", "2026-10-19T08:00:00Z")]);
    // Oct 20: dana becomes a team leader, PROFESSIONAL, billed per login day.
    advance(&server, "2026-10-20T07:00:00Z");
    apply(
        &server,
        "dana",
        json!({ "role": "ROLE_TEAM_LEADER", "billingPreference": "BILLING_MODE_DAILY" }),
    );

    advance(&server, "2026-10-31T23:45:00Z");
    let outcomes = ingest(
        &server,
        vec![
            login("d1", "dana", "2026-10-20T08:00:00Z"),
            login("d2", "dana", "2026-10-21T08:00:00Z"),
            // 23:30 UTC on the 24th is 01:30 on the 25th in Prague (still UTC+2 then).
            login("d3", "dana", "2026-10-24T23:30:00Z"),
            // 22:30 UTC on the 25th is 23:30 on the 25th (UTC+1 since 01:00 UTC): the same day.
            login("d4", "dana", "2026-10-25T22:30:00Z"),
            login("d5", "dana", "2026-10-31T22:30:00Z"),
            // 23:30 UTC on the 31st is already November 1st in Prague.
            login("d6", "dana", "2026-10-31T23:30:00Z"),
            metered(
                "s1",
                "2026-10-10T10:00:00Z",
                "METER_SPEECH_TO_TEXT_MINUTES",
                7250,
            ),
            metered("q1", "2026-10-05T10:00:00Z", "METER_AI_QA_PACKS", 1),
            metered("q2", "2026-10-06T10:00:00Z", "METER_AI_QA_PACKS", 1),
        ],
    );
    assert!(
        outcomes.iter().all(|o| o["outcome"] == "OUTCOME_APPLIED"),
        "{outcomes:?}"
    );
    // November's quota is untouched, but October's AI QA cap was reached mid-month: in October a
    // third pack would have been refused. (The check answers for the account's current month.)
    let quota = call(
        &server,
        "CheckQuota",
        json!({ "accountId": ACCOUNT, "meter": "METER_AI_QA_PACKS", "quantity": 1 }),
    );
    assert_eq!(quota["allowed"], true, "a new month, a new quota: {quota}");

    // Hand computation for October 2026:
    //   seats     STANDARD peak 10 × 2900 = 29000   (set on Oct 1, reduced to 4 on Oct 15)
    //             OUTBOUND peak  1 × 1500 =  1500
    //   daily     PROFESSIONAL: dana on Oct 20, 21, 25, 31 = 4 days × 290 = 1160
    //             (Oct 19 she was monthly STANDARD; Nov 1 local is November)
    //   recording ann, 9 months = 3 units × 700 = 2100 (STANDARD includes none)
    //   speech    7250 − 5000 included = 2250 over, cap 1000: 1000 × 2 = 2000
    //   power     AI QA 2 packs (cap 2) × 4900 = 9800
    //   total                                 45560
    let provisional = statement(&server);
    assert_eq!(
        provisional["status"], "STATEMENT_STATUS_PROVISIONAL",
        "October is in its grace period"
    );
    assert_eq!(provisional["sandbox"], true);
    let lines: Vec<(String, String, String)> = provisional["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap_or("?").to_owned(),
                l["quantity"].as_str().unwrap_or("?").to_owned(),
                l["amount"]["minorUnits"].as_str().unwrap_or("0").to_owned(),
            )
        })
        .collect();
    let expected = [
        ("STATEMENT_LINE_KIND_SEATS", "10", "29000"),
        ("STATEMENT_LINE_KIND_SEATS", "1", "1500"),
        ("STATEMENT_LINE_KIND_DAILY", "4", "1160"),
        ("STATEMENT_LINE_KIND_CALL_RECORDING", "3", "2100"),
        ("STATEMENT_LINE_KIND_SPEECH_TO_TEXT", "1000", "2000"),
        ("STATEMENT_LINE_KIND_POWER_PACK", "2", "9800"),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(k, q, a)| (k.to_string(), q.to_string(), a.to_string()))
        .collect();
    assert_eq!(lines, expected, "{provisional}");
    assert_eq!(
        provisional["total"],
        json!({ "currencyCode": "EUR", "minorUnits": "45560" })
    );
    assert_eq!(
        provisional["lines"][0]["description"],
        "peak of 10 STANDARD_SEAT in 2026-10: set on 2026-10-01"
    );
    assert_eq!(provisional["lines"][2]["memberIds"], json!(["dana"]));
    assert_eq!(provisional["lines"][3]["memberIds"], json!(["ann"]));
    assert_eq!(
        provisional["priceList"],
        json!({ "name": "sample", "version": 1 })
    );

    // Two days of grace after the month end (Nov 3, 00:00 in Prague = 23:00 UTC on Nov 2), the
    // month closes: the statement is final and reads the same every time, whatever happens next.
    advance(&server, "2026-11-02T23:00:00Z");
    let last = ingest(&server, vec![login("late", "dana", "2026-10-30T08:00:00Z")]);
    assert_eq!(last[0]["refusal"], "REFUSAL_REASON_MONTH_CLOSED");
    let first_read = statement(&server);
    assert_eq!(first_read["status"], "STATEMENT_STATUS_FINAL");
    assert_eq!(first_read["total"], provisional["total"]);
    call(
        &server,
        "UpdateAccount",
        json!({ "accountId": ACCOUNT, "recordingRetention": { "fourteenDays": true }, "aiQaPacksCap": 9 }),
    );
    apply(&server, "ann", json!({ "role": "ROLE_USER" }));
    assert_eq!(statement(&server), first_read);
}

#[test]
fn quotas_stop_a_service_once_its_cap_is_used_up() {
    let server = Licensing::start();
    call(
        &server,
        "CreateAccount",
        json!({
            "accountId": ACCOUNT, "sandbox": true, "sandboxClockStart": "2026-06-10T12:00:00Z",
            "settings": { "timeZone": "UTC", "speechToText": true, "speechToTextExtraMinutesCap": 100, "powerPack": true, "aiTopicsPacksCap": 1 }
        }),
    );
    let check = |meter: &str, quantity: u64| {
        call(
            &server,
            "CheckQuota",
            json!({ "accountId": ACCOUNT, "meter": meter, "quantity": quantity }),
        )
    };
    let quota = check("METER_SPEECH_TO_TEXT_MINUTES", 60);
    assert_eq!(
        (&quota["allowed"], &quota["limit"], &quota["remaining"]),
        (&json!(true), &json!("5100"), &json!("5100"))
    );
    assert_eq!(quota["resetsAt"], "2026-07-01T00:00:00Z");
    ingest(
        &server,
        vec![metered(
            "m1",
            "2026-06-10T11:00:00Z",
            "METER_SPEECH_TO_TEXT_MINUTES",
            5050,
        )],
    );
    let quota = check("METER_SPEECH_TO_TEXT_MINUTES", 60);
    assert_eq!(quota["allowed"], json!(null), "50 left, 60 asked: {quota}");
    assert_eq!(quota["remaining"], "50");
    assert_eq!(
        quota["reason"],
        "SPEECH_TO_TEXT_MINUTES quota for this month is too small for 60 more: 5050 of 5100 used, 50 left; it starts again next month",
        "50 left is not used up"
    );
    ingest(
        &server,
        vec![metered(
            "p1",
            "2026-06-10T11:00:00Z",
            "METER_AI_TOPICS_PACKS",
            1,
        )],
    );
    assert_eq!(check("METER_AI_TOPICS_PACKS", 1)["allowed"], json!(null));
    assert_eq!(
        check("METER_AI_QA_PACKS", 1)["allowed"],
        true,
        "no cap: unlimited"
    );
    // A new month, a new quota.
    advance(&server, "2026-07-01T00:00:00Z");
    assert_eq!(check("METER_AI_TOPICS_PACKS", 1)["allowed"], true);
    // AI topics on calls needs speech-to-text: refused naming the dependency.
    let refused = server.call_err(
        &format!("{SERVICE}/UpdateAccount"),
        &json!({ "accountId": ACCOUNT, "speechToText": false, "aiTopicsOnCalls": true }),
    );
    assert!(
        refused.contains("invalid ai_topics_on_calls true: requires speech_to_text to be on"),
        "{refused}"
    );
}
