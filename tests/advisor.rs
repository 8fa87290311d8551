//! End to end: the advisor on a sandbox account walked through three months with `grpcurl`,
//! every recommendation and saving checked against values computed by hand under the sample
//! price list (monthly seats STANDARD 2900, PROFESSIONAL 4900; PROFESSIONAL daily 290).

mod support;

use serde_json::{Value, json};
use support::Licensing;

const SERVICE: &str = "licensing.v1.LicensingService";
const ACCOUNT: &str = "advised";

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
    assert_eq!(answer["applied"], true, "{answer}");
}

fn ingest(server: &Licensing, events: Vec<Value>) {
    let answers = server.call_stream(
        "licensing.v1.IngestionService/Ingest",
        &json!({ "batchId": 1, "events": events }),
    );
    assert_eq!(answers.len(), 1, "{answers:?}");
    for outcome in answers[0]["outcomes"].as_array().expect("outcomes") {
        assert_eq!(outcome["outcome"], "OUTCOME_APPLIED", "{outcome}");
    }
}

fn login(id: &str, member: &str, at: &str) -> Value {
    json!({ "source": "pbx", "eventId": id, "accountId": ACCOUNT, "memberId": member,
            "occurredAt": at, "agentLogin": {} })
}

fn queue_login(id: &str, member: &str, at: &str, queue: &str) -> Value {
    json!({ "source": "pbx", "eventId": id, "accountId": ACCOUNT, "memberId": member,
            "occurredAt": at, "queueLogin": { "queueId": queue } })
}

/// A service with a sandbox account whose clock starts at `clock_start`, with `settings`.
fn sandbox(clock_start: &str, settings: Value) -> Licensing {
    let server = Licensing::start();
    call(
        &server,
        "CreateAccount",
        json!({ "accountId": ACCOUNT, "sandbox": true, "sandboxClockStart": clock_start,
                "settings": settings }),
    );
    server
}

/// Buys STANDARD seats up to `seats`: the cart previewed, then confirmed at its revision.
fn buy_standard_seats(server: &Licensing, seats: u32) {
    let cart = json!({ "accountId": ACCOUNT, "changes": [{ "product": "PRODUCT_STANDARD_SEAT", "seats": seats }] });
    let preview = call(server, "AdjustInventory", cart.clone());
    let mut confirm = cart;
    confirm["confirm"] = json!(true);
    confirm["revision"] = preview["revision"].clone();
    call(server, "AdjustInventory", confirm);
}

/// Every recommendation of one Advise call, in stream order.
fn advise(server: &Licensing, request: Value) -> Vec<Value> {
    server
        .call_stream(&format!("{SERVICE}/Advise"), &request)
        .iter()
        .flat_map(|message| {
            message["recommendations"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

/// (kind, member, saving) of each recommendation.
fn digest(recommendations: &[Value]) -> Vec<(String, String, i64)> {
    recommendations
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap_or_default().to_owned(),
                r["memberId"].as_str().unwrap_or_default().to_owned(),
                r["monthlySaving"]["minorUnits"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
            )
        })
        .collect()
}

fn row(kind: &str, member: &str, saving: i64) -> (String, String, i64) {
    (
        format!("RECOMMENDATION_KIND_{kind}"),
        member.to_owned(),
        saving,
    )
}

#[test]
fn an_account_is_advised_from_its_own_use_and_one_advice_applies_as_given() {
    let server = sandbox(
        "2026-09-01T08:00:00Z",
        json!({ "timeZone": "UTC", "autoGrowth": true }),
    );
    let voice = |id: &str| json!({ "id": id, "channel": "CHANNEL_VOICE" });
    // agent: COMMUNICATION and two skills = PROFESSIONAL, monthly; works the "sales" queue only.
    apply(
        &server,
        "agent",
        json!({ "role": "ROLE_USER", "skills": [voice("sales"), voice("support")] }),
    );
    // parttime: a TEAM_LEADER (STATISTICS: PROFESSIONAL), monthly, 6 login days a month.
    apply(&server, "parttime", json!({ "role": "ROLE_TEAM_LEADER" }));
    // stats: one skill (STANDARD) but statistics tracked (PROFESSIONAL) without STATISTICS.
    apply(
        &server,
        "stats",
        json!({ "role": "ROLE_USER", "skills": [voice("support")], "trackStatistics": true }),
    );
    // absent: two skills (PROFESSIONAL) and no login at all: idle, not a right-sizing.
    apply(
        &server,
        "absent",
        json!({ "role": "ROLE_USER", "skills": [voice("sales"), voice("support")] }),
    );
    // ghost: one skill = STANDARD, monthly, never logs in.
    apply(
        &server,
        "ghost",
        json!({ "role": "ROLE_USER", "skills": [voice("sales")] }),
    );
    // 10 STANDARD seats bought; ghost holds the only one in use.
    buy_standard_seats(&server, 10);

    // parttime logs in on the 1st to the 6th of September, October and November.
    for (month, clock) in [
        ("09", "2026-09-07T08:00:00Z"),
        ("10", "2026-10-07T08:00:00Z"),
        ("11", "2026-11-21T08:00:00Z"),
    ] {
        advance(&server, clock);
        let mut events: Vec<Value> = (1..=6)
            .map(|day| {
                login(
                    &format!("pt-{month}-{day}"),
                    "parttime",
                    &format!("2026-{month}-{day:02}T09:00:00Z"),
                )
            })
            .collect();
        if month == "11" {
            // On Nov 20 agent logs into the sales queue and stats logs in.
            events.push(queue_login(
                "ag-1",
                "agent",
                "2026-11-20T09:00:00Z",
                "sales",
            ));
            events.push(login("st-1", "stats", "2026-11-20T09:00:00Z"));
        }
        ingest(&server, events);
    }
    // Dec 1: the last three closed months are September to November; the 30-day window is
    // Nov 2 to Dec 1.
    advance(&server, "2026-12-01T08:00:00Z");

    let all = advise(&server, json!({ "accountId": ACCOUNT }));
    assert_eq!(
        digest(&all),
        vec![
            // 10 STANDARD seats, 1 in use: 9 x 2900.
            row("UNUSED_SEATS", "", 9 * 2900),
            // absent: a monthly PROFESSIONAL seat for nothing.
            row("IDLE_MEMBER", "absent", 4900),
            // agent: without "support", COMMUNICATION and one skill = STANDARD: 4900 - 2900.
            row("RIGHT_SIZE", "agent", 2000),
            // agent: November's one login day at 290 against 4900 (the only month with logins).
            row("BILLING_MODE", "agent", 4900 - 290),
            // ghost: no login from Nov 2 on, a monthly STANDARD seat for nothing.
            row("IDLE_MEMBER", "ghost", 2900),
            // parttime: 6 x 290 = 1740 against 4900 in each of 3 months: 3160 a month.
            row("BILLING_MODE", "parttime", 4900 - 1740),
            // stats: tracking off = STANDARD: 4900 - 2900; and one login day in November.
            row("RIGHT_SIZE", "stats", 2000),
            row("BILLING_MODE", "stats", 4900 - 290),
        ],
        "{all:#?}"
    );
    let agent = &all[2];
    assert_eq!(agent["monthlySaving"]["currencyCode"], "EUR");
    assert_eq!(
        agent["rightSize"],
        json!({ "trigger": "TRIGGER_SEVERAL_SKILLS", "fromTier": "TIER_PROFESSIONAL",
                "toTier": "TIER_STANDARD", "unusedSkills": ["support"], "loginDays": 1 })
    );
    assert!(
        agent["summary"]
            .as_str()
            .is_some_and(|s| s.contains("support")),
        "{agent}"
    );
    let parttime = &all[5]["billingMode"];
    assert_eq!(parttime["recommended"], "BILLING_MODE_DAILY");
    assert_eq!(parttime["cheaperMonths"], 3);
    let months: Vec<&str> = parttime["months"]
        .as_array()
        .expect("months")
        .iter()
        .map(|m| m["month"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(months, vec!["2026-09", "2026-10", "2026-11"]);
    assert_eq!(parttime["months"][0]["daily"]["minorUnits"], "1740");
    assert_eq!(
        all[0]["adjustInventory"],
        json!({ "accountId": ACCOUNT, "changes": [{ "product": "PRODUCT_STANDARD_SEAT", "seats": 1 }] })
    );

    // Filters: one kind; a minimum saving.
    let idle = advise(
        &server,
        json!({ "accountId": ACCOUNT, "kinds": ["RECOMMENDATION_KIND_IDLE_MEMBER"] }),
    );
    assert_eq!(
        digest(&idle),
        vec![
            row("IDLE_MEMBER", "absent", 4900),
            row("IDLE_MEMBER", "ghost", 2900)
        ]
    );
    let big = advise(
        &server,
        json!({ "accountId": ACCOUNT, "minimumSaving": 3000 }),
    );
    assert_eq!(
        digest(&big),
        vec![
            row("UNUSED_SEATS", "", 26100),
            row("IDLE_MEMBER", "absent", 4900),
            row("BILLING_MODE", "agent", 4610),
            row("BILLING_MODE", "parttime", 3160),
            row("BILLING_MODE", "stats", 4610),
        ]
    );

    // The advice's request is a preview as given; with `apply` it applies, and the advice goes.
    let mut request = agent["resolveMember"].clone();
    let previewed = call(&server, "ResolveMember", request.clone());
    assert_eq!(previewed["licence"]["tier"], "TIER_STANDARD", "{previewed}");
    assert_eq!(previewed.get("applied"), None, "a preview: {previewed}");
    request["apply"] = json!(true);
    let applied = call(&server, "ResolveMember", request);
    assert_eq!(applied["applied"], true);
    let after = advise(
        &server,
        json!({ "accountId": ACCOUNT, "kinds": ["RECOMMENDATION_KIND_RIGHT_SIZE"] }),
    );
    assert_eq!(digest(&after), vec![row("RIGHT_SIZE", "stats", 2000)]);
    // agent is STANDARD now: daily billing no longer applies to them.
    let modes = advise(
        &server,
        json!({ "accountId": ACCOUNT, "kinds": ["RECOMMENDATION_KIND_BILLING_MODE"] }),
    );
    assert!(
        digest(&modes)
            .iter()
            .all(|(_, member, _)| member != "agent"),
        "{modes:#?}"
    );
}

/// 10 STANDARD seats bought and at most 6 used all month: six agents hold a seat from November
/// 2nd, five are removed on November 20th. On December 1st (window November 2nd to December
/// 1st) one seat is in use but six were at November's peak: reduce to 6, 4 x 2900 = 11600 a
/// month, not to 1. On January 5th (window December 7th to January 5th) no month it touches
/// held more than one: reduce to 1, 9 x 2900 = 26100.
#[test]
fn seats_are_reduced_to_the_peak_in_use_of_the_window_not_to_those_in_use_now() {
    let server = sandbox("2026-11-02T08:00:00Z", json!({ "timeZone": "UTC" }));
    buy_standard_seats(&server, 10);
    let agent =
        json!({ "role": "ROLE_USER", "skills": [{ "id": "sales", "channel": "CHANNEL_VOICE" }] });
    for n in 1..=6 {
        apply(&server, &format!("agent-{n}"), agent.clone());
    }
    advance(&server, "2026-11-20T08:00:00Z");
    for n in 2..=6 {
        call(
            &server,
            "RemoveMember",
            json!({ "accountId": ACCOUNT, "memberId": format!("agent-{n}") }),
        );
    }
    // agent-1 works every day, so no member is idle.
    advance(&server, "2026-11-30T12:00:00Z");
    let days: Vec<Value> = (2..=30)
        .map(|day| {
            queue_login(
                &format!("a1-11-{day}"),
                "agent-1",
                &format!("2026-11-{day:02}T09:00:00Z"),
                "sales",
            )
        })
        .collect();
    ingest(&server, days);
    advance(&server, "2026-12-01T08:00:00Z");
    let seats = json!({ "accountId": ACCOUNT, "kinds": ["RECOMMENDATION_KIND_UNUSED_SEATS"] });
    let december = advise(&server, seats.clone());
    assert_eq!(
        digest(&december),
        vec![row("UNUSED_SEATS", "", 4 * 2900)],
        "{december:#?}"
    );
    assert_eq!(
        december[0]["unusedSeats"],
        json!({ "product": "PRODUCT_STANDARD_SEAT", "seats": 10, "inUse": 1, "peakInUse": 6,
                "since": "2026-11" })
    );
    assert_eq!(
        december[0]["adjustInventory"]["changes"],
        json!([{ "product": "PRODUCT_STANDARD_SEAT", "seats": 6 }])
    );
    // The reduction it proposes is one the cart accepts.
    let reduce = call(
        &server,
        "AdjustInventory",
        december[0]["adjustInventory"].clone(),
    );
    assert_eq!(reduce["nextMonth"]["minorUnits"], "-11600", "{reduce}");

    advance(&server, "2027-01-05T08:00:00Z");
    let january = advise(&server, seats);
    assert_eq!(
        digest(&january),
        vec![row("UNUSED_SEATS", "", 9 * 2900)],
        "{january:#?}"
    );
    assert_eq!(january[0]["unusedSeats"]["since"], "2026-12");
    assert_eq!(january[0]["unusedSeats"]["peakInUse"], 1);
}

/// Recordings kept 9 months (3 units per recorded member, 700 each) by an account that says it
/// needs 3 (1 unit). A recorded STANDARD agent pays 3 units, 1 at 3 months: 2 saved (1400). A
/// recorded administrator (ENTERPRISE, one unit included) pays 2, then 0: 2 saved (1400). An
/// agent who is not recorded pays none. In all 4 units, 2800 a month. The retention changed in
/// December leaves December billed at its highest, 9 months: seats 2 x 2900 + 6900 = 12700 and
/// 5 units (3500), 16200; January at 3 months: 12700 and 1 unit (700), 13400, 2800 less.
/// Unlicensed usage: "ghost" sends two events inside the 7-day window (November 25th to
/// December 1st), "old-ghost" one on November 10th: only "ghost" keeps arriving.
#[test]
fn recordings_kept_longer_than_needed_and_unlicensed_usage_that_keeps_arriving() {
    let server = sandbox(
        "2026-11-02T08:00:00Z",
        json!({ "timeZone": "UTC", "autoGrowth": true, "recordingRetention": { "months": 9 },
                "recordingRetentionRequired": { "months": 3 } }),
    );
    let sales = json!([{ "id": "sales", "channel": "CHANNEL_VOICE" }]);
    apply(
        &server,
        "plain",
        json!({ "role": "ROLE_USER", "skills": sales.clone() }),
    );
    apply(
        &server,
        "rec-admin",
        json!({ "role": "ROLE_ADMINISTRATOR", "callRecording": true }),
    );
    apply(
        &server,
        "rec-agent",
        json!({ "role": "ROLE_USER", "skills": sales, "callRecording": true }),
    );
    advance(&server, "2026-11-30T08:00:00Z");
    ingest(
        &server,
        vec![
            login("g1", "ghost", "2026-11-27T10:00:00Z"),
            login("g2", "ghost", "2026-11-28T10:00:00Z"),
            login("o1", "old-ghost", "2026-11-10T10:00:00Z"),
        ],
    );
    advance(&server, "2026-12-01T08:00:00Z");
    let leaks = json!({ "accountId": ACCOUNT, "windowDays": 7,
                        "kinds": ["RECOMMENDATION_KIND_UNLICENSED_USAGE",
                                  "RECOMMENDATION_KIND_RECORDING_RETENTION"] });
    let found = advise(&server, leaks.clone());
    assert_eq!(
        digest(&found),
        vec![
            row("RECORDING_RETENTION", "", 2800),
            row("UNLICENSED_USAGE", "ghost", 0)
        ],
        "{found:#?}"
    );
    assert_eq!(
        found[0]["summary"],
        "recordings kept 9 months, the account needs 3 months: 2 recorded members pay 4 units a \
         month for the difference"
    );
    assert_eq!(
        found[0]["recordingRetention"],
        json!({ "current": { "months": 9 }, "required": { "months": 3 }, "recordedMembers": 2,
                "unitsSaved": "4" })
    );
    assert_eq!(
        found[1]["unlicensedUsage"],
        json!({ "events": "2", "lastSeen": "2026-11-28T10:00:00Z", "windowDays": 7 })
    );
    assert!(found[1].get("updateAccount").is_none() && found[1].get("resolveMember").is_none());
    // Saving nothing, unlicensed usage is left out by any minimum saving.
    let mut at_least = leaks.clone();
    at_least["minimumSaving"] = json!(1);
    assert_eq!(
        digest(&advise(&server, at_least)),
        vec![row("RECORDING_RETENTION", "", 2800)]
    );

    // Applied as given: the retention is what the account needs, and nothing is left to say
    // about it.
    let updated = call(&server, "UpdateAccount", found[0]["updateAccount"].clone());
    assert_eq!(
        updated["account"]["settings"]["recordingRetention"],
        json!({ "months": 3 }),
        "{updated}"
    );
    assert_eq!(
        digest(&advise(&server, leaks)),
        vec![row("UNLICENSED_USAGE", "ghost", 0)]
    );
    let total = |month: &str| {
        let answer = call(
            &server,
            "GetStatement",
            json!({ "accountId": ACCOUNT, "month": month }),
        );
        answer["statement"]["total"]["minorUnits"]
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or_else(|| panic!("no total: {answer}"))
    };
    assert_eq!(total("2026-12"), 16200);
    advance(&server, "2027-01-02T08:00:00Z");
    assert_eq!(total("2027-01"), 13400);
    assert_eq!(total("2026-12") - total("2027-01"), 2800);

    // What the account needs is checked like its retention, and can be unsaid.
    let update = format!("{SERVICE}/UpdateAccount");
    let required =
        |answer: &Value| answer["account"]["settings"]["recordingRetentionRequired"].clone();
    for (request, expected) in [
        (
            json!({ "accountId": ACCOUNT, "recordingRetentionRequired": { "months": 4 } }),
            "invalid recording_retention_required.months 4",
        ),
        (
            json!({ "accountId": ACCOUNT, "recordingRetentionRequired": { "months": 6 },
                    "clearRecordingRetentionRequired": true }),
            "invalid clear_recording_retention_required true",
        ),
    ] {
        let error = server.call_err(&update, &request);
        assert!(
            error.contains("Code: InvalidArgument") && error.contains(expected),
            "{request}: {error}"
        );
    }
    let account = call(&server, "GetAccount", json!({ "accountId": ACCOUNT }));
    assert_eq!(required(&account), json!({ "months": 3 }), "{account}");
    let cleared = call(
        &server,
        "UpdateAccount",
        json!({ "accountId": ACCOUNT, "clearRecordingRetentionRequired": true }),
    );
    assert_eq!(required(&cleared), Value::Null, "{cleared}");
}

#[test]
fn bad_advise_requests_name_the_field_and_write_nothing() {
    let server = Licensing::start();
    call(
        &server,
        "CreateAccount",
        json!({ "accountId": ACCOUNT, "sandbox": true, "settings": { "timeZone": "UTC" } }),
    );
    let method = format!("{SERVICE}/Advise");
    for (request, field, value) in [
        (
            json!({ "accountId": ACCOUNT, "windowDays": 367 }),
            "window_days",
            "367",
        ),
        (
            json!({ "accountId": ACCOUNT, "months": 25 }),
            "months",
            "25",
        ),
        (
            json!({ "accountId": ACCOUNT, "minimumSaving": -1 }),
            "minimum_saving",
            "-1",
        ),
        (
            json!({ "accountId": ACCOUNT, "kinds": ["RECOMMENDATION_KIND_UNSPECIFIED"] }),
            "kinds[0]",
            "RECOMMENDATION_KIND_UNSPECIFIED",
        ),
        (
            json!({ "accountId": ACCOUNT, "kinds": [9] }),
            "kinds[0]",
            "9",
        ),
    ] {
        let error = server.call_err(&method, &request);
        assert!(
            error.contains("Code: InvalidArgument")
                && error.contains(field)
                && error.contains(value),
            "{request}: {error}"
        );
    }
    let missing = server.call_err(&method, &json!({ "accountId": "nobody" }));
    assert!(missing.contains("Code: NotFound"), "{missing}");
    // An account with nothing to say answers one empty message.
    let empty = server.call_stream(&method, &json!({ "accountId": ACCOUNT }));
    assert_eq!(empty, vec![json!({})]);
}
