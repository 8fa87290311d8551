//! End to end: an operator's walk-through with `grpcurl` against the real binary — create an account,
//! preview and confirm a cart, apply members until the seats run out, stream usage, read the
//! audit trail — with the exact answers and refusals checked.

mod support;

use serde_json::{Value, json};
use support::Licensing;

const SERVICE: &str = "licensing.v1.LicensingService";

fn method(name: &str) -> String {
    format!("{SERVICE}/{name}")
}

fn agent(account: &str, member: &str) -> Value {
    json!({
        "accountId": account,
        "memberId": member,
        "apply": true,
        "settings": { "role": "ROLE_USER", "skills": [{ "id": "support-en", "channel": "CHANNEL_VOICE" }] }
    })
}

fn standard_seats(inventory: &Value) -> &Value {
    inventory["seats"]
        .as_array()
        .and_then(|seats| {
            seats
                .iter()
                .find(|s| s["product"] == "PRODUCT_STANDARD_SEAT")
        })
        .expect("a STANDARD_SEAT entry")
}

#[test]
fn an_operator_walk_through_from_account_to_audit_trail() {
    let server = Licensing::start();

    // The account, and the refusals around it.
    let created = server.call(
        &method("CreateAccount"),
        &json!({ "accountId": "acme", "settings": { "timeZone": "Europe/Prague" } }),
    );
    assert_eq!(created["account"]["settings"]["timeZone"], "Europe/Prague");
    assert_eq!(
        created["account"]["settings"]["recordingRetention"],
        json!({ "months": 3 })
    );
    let again = server.call_err(
        &method("CreateAccount"),
        &json!({ "accountId": "acme", "settings": { "timeZone": "Europe/Prague" } }),
    );
    assert!(
        again.contains("Code: AlreadyExists") && again.contains("account \"acme\" already exists"),
        "{again}"
    );
    let typo = server.call_err(
        &method("CreateAccount"),
        &json!({ "accountId": "acme2", "settings": { "timeZone": "Europe/Prgue" } }),
    );
    assert!(
        typo.contains("Code: InvalidArgument")
            && typo.contains(
                "invalid settings.time_zone \"Europe/Prgue\": is not a known IANA time zone"
            ),
        "{typo}"
    );
    let retention = server.call_err(
        &method("CreateAccount"),
        &json!({ "accountId": "acme2", "settings": { "timeZone": "UTC", "recordingRetention": { "months": 4 } } }),
    );
    assert!(
        retention.contains("invalid settings.recording_retention.months 4"),
        "{retention}"
    );
    let unknown = server.call_err(&method("GetAccount"), &json!({ "accountId": "nope" }));
    assert!(
        unknown.contains("Code: NotFound") && unknown.contains("account \"nope\" not found"),
        "{unknown}"
    );

    // A cart: the preview writes nothing and names the revision to confirm.
    let cart = json!({ "accountId": "acme", "changes": [{ "product": "PRODUCT_STANDARD_SEAT", "seats": 2 }] });
    let preview = server.call(&method("AdjustInventory"), &cart);
    assert_eq!(
        preview["lines"],
        json!([{
            "product": "PRODUCT_STANDARD_SEAT", "to": 2,
            "thisMonth": { "currencyCode": "EUR", "minorUnits": "5800" },
            "nextMonth": { "currencyCode": "EUR", "minorUnits": "5800" }
        }])
    );
    assert!(preview.get("confirmed").is_none(), "{preview}");
    let inventory = server.call(&method("GetInventory"), &json!({ "accountId": "acme" }));
    assert!(
        standard_seats(&inventory["inventory"])
            .get("seats")
            .is_none(),
        "a preview wrote: {inventory}"
    );

    let mut confirm = cart.clone();
    confirm["confirm"] = json!(true);
    confirm["revision"] = preview["revision"].clone();
    let confirmed = server.call(&method("AdjustInventory"), &confirm);
    assert_eq!(confirmed["confirmed"], true);
    assert_eq!(confirmed["revision"], "2");
    let stale = server.call_err(&method("AdjustInventory"), &confirm);
    assert!(
        stale.contains("Code: Aborted")
            && stale.contains("the inventory is at revision 2; preview the cart again"),
        "{stale}"
    );

    // Members until the seats run out: the refusal says what is missing and writes nothing.
    for member in ["alice", "bob"] {
        let applied = server.call(&method("ResolveMember"), &agent("acme", member));
        assert_eq!(applied["applied"], true);
        assert_eq!(applied["member"]["licence"]["tier"], "TIER_STANDARD");
    }
    let full = server.call_err(&method("ResolveMember"), &agent("acme", "carol"));
    assert!(
        full.contains("Code: FailedPrecondition")
            && full.contains("no free seat: 1 STANDARD_SEAT missing (3 needed, 2 bought)"),
        "{full}"
    );
    let carol = server.call_err(
        &method("GetMember"),
        &json!({ "accountId": "acme", "memberId": "carol" }),
    );
    assert!(carol.contains("Code: NotFound"), "{carol}");

    // Usage: the summary, then the member rows.
    let usage = server.call_stream(&method("GetUsage"), &json!({ "accountId": "acme" }));
    let summary = &usage[0]["summary"];
    let standard = summary["products"]
        .as_array()
        .and_then(|p| {
            p.iter()
                .find(|p| p["seats"]["product"] == "PRODUCT_STANDARD_SEAT")
        })
        .expect("STANDARD_SEAT usage");
    assert_eq!(
        (
            &standard["seats"]["seats"],
            &standard["seats"]["inUse"],
            &standard["seats"]["peakThisMonth"]
        ),
        (&json!(2), &json!(2), &json!(2))
    );
    let rows: Vec<&str> = usage[1..]
        .iter()
        .flat_map(|m| m["members"]["rows"].as_array().into_iter().flatten())
        .filter_map(|r| r["memberId"].as_str())
        .collect();
    assert_eq!(rows, ["alice", "bob"]);
    let rows_of = |usage: &[serde_json::Value]| -> Vec<serde_json::Value> {
        usage[1..]
            .iter()
            .flat_map(|m| m["members"]["rows"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let full = rows_of(&usage);
    assert!(
        full.iter()
            .all(|r| r["reasons"].as_array().is_some_and(|r| !r.is_empty())),
        "{full:?}"
    );
    // The billing view: the same rows without their reasons.
    let billing = server.call_stream(
        &method("GetUsage"),
        &json!({ "accountId": "acme", "view": "USAGE_VIEW_BILLING" }),
    );
    let without_reasons: Vec<serde_json::Value> = full
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.as_object_mut().map(|r| r.remove("reasons"));
            r
        })
        .collect();
    assert_eq!(rows_of(&billing), without_reasons);
    let unknown = server.call_err(
        &method("GetUsage"),
        &json!({ "accountId": "acme", "view": 7 }),
    );
    assert!(
        unknown.contains("Code: InvalidArgument")
            && unknown.contains("invalid view 7: unknown usage view number"),
        "{unknown}"
    );

    // A reduction below the seats in use names who holds them.
    let shrink = json!({ "accountId": "acme", "changes": [{ "product": "PRODUCT_STANDARD_SEAT", "seats": 1 }] });
    let refused = server.call_err(&method("AdjustInventory"), &shrink);
    assert!(
        refused.contains("Code: FailedPrecondition")
            && refused.contains("cannot reduce STANDARD_SEAT to 1: 2 in use by members alice, bob"),
        "{refused}"
    );
    // Free bob's seat, then reduce: the month stays billed at its peak of 2.
    server.call(
        &method("RemoveMember"),
        &json!({ "accountId": "acme", "memberId": "bob" }),
    );
    let preview = server.call(&method("AdjustInventory"), &shrink);
    assert_eq!(
        preview["lines"][0]["thisMonth"],
        json!({ "currencyCode": "EUR" }),
        "no effect this month"
    );
    assert_eq!(preview["lines"][0]["nextMonth"]["minorUnits"], "-2900");
    let mut confirm = shrink.clone();
    confirm["confirm"] = json!(true);
    confirm["revision"] = preview["revision"].clone();
    server.call(&method("AdjustInventory"), &confirm);
    let inventory = server.call(&method("GetInventory"), &json!({ "accountId": "acme" }));
    let standard = standard_seats(&inventory["inventory"]);
    assert_eq!(
        (
            &standard["seats"],
            &standard["inUse"],
            &standard["peakThisMonth"]
        ),
        (&json!(1), &json!(1), &json!(2))
    );

    // The audit trail: every applied change, in order, by the unauthenticated actor.
    let trail = server.call_stream(&method("ReadAuditTrail"), &json!({ "accountId": "acme" }));
    let entries: Vec<&Value> = trail
        .iter()
        .flat_map(|m| m["entries"].as_array().into_iter().flatten())
        .collect();
    let kinds: Vec<String> = entries
        .iter()
        .map(|e| {
            let change = ["accountSettings", "member", "inventory", "clock"]
                .into_iter()
                .find(|k| e.get(*k).is_some())
                .unwrap_or("?");
            format!("{} {change}", e["sequence"].as_str().unwrap_or("?"))
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "1 accountSettings",
            "2 inventory",
            "3 member",
            "4 member",
            "5 member",
            "6 inventory"
        ],
        "{trail:?}"
    );
    assert!(
        entries
            .iter()
            .all(|e| e["actor"]["principal"] == "unauthenticated")
    );
    assert!(
        entries[4]["member"].get("after").is_none(),
        "the removal has no after: {}",
        entries[4]
    );
    assert_eq!(entries[4]["member"]["before"]["memberId"], "bob");
    assert_eq!(entries[5]["inventory"]["lines"][0]["from"], 2);
}

#[test]
fn applying_needs_an_account_and_a_member_id() {
    let server = Licensing::start();
    let error = server.call_err(&method("ResolveMember"), &agent("nope", "alice"));
    assert!(
        error.contains("Code: NotFound") && error.contains("account \"nope\" not found"),
        "{error}"
    );
    server.call(
        &method("CreateAccount"),
        &json!({ "accountId": "acme", "settings": { "timeZone": "UTC", "autoGrowth": true } }),
    );
    let error = server.call_err(&method("ResolveMember"), &agent("acme", "bad id"));
    assert!(
        error.contains("invalid member_id \"bad id\": may hold only ASCII letters"),
        "{error}"
    );
    // With auto-growth the seat is bought, and the growth is audited like a cart.
    server.call(&method("ResolveMember"), &agent("acme", "alice"));
    let trail = server.call_stream(&method("ReadAuditTrail"), &json!({ "accountId": "acme" }));
    let last = trail
        .last()
        .and_then(|m| m["entries"].as_array())
        .and_then(|e| e.last())
        .expect("entries");
    assert_eq!(last["inventory"]["autoGrowth"], true);
    assert_eq!(last["inventory"]["memberId"], "alice");
}

#[test]
fn members_list_in_pages_and_by_tier() {
    let server = Licensing::start();
    server.call(
        &method("CreateAccount"),
        &json!({ "accountId": "acme", "settings": { "timeZone": "UTC", "autoGrowth": true } }),
    );
    for member in ["dave", "alice", "erin", "carol", "bob"] {
        server.call(&method("ResolveMember"), &agent("acme", member));
    }
    for leader in ["bob", "dave"] {
        server.call(
            &method("ResolveMember"),
            &json!({ "accountId": "acme", "memberId": leader, "apply": true, "settings": { "role": "ROLE_TEAM_LEADER" } }),
        );
    }
    let ids = |page: &Value| -> Vec<String> {
        page["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["memberId"].as_str().map(str::to_owned))
            .collect()
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = server.call(
            &method("ListMembers"),
            &json!({ "accountId": "acme", "pageSize": 2, "pageToken": token }),
        );
        seen.extend(ids(&page));
        match page["nextPageToken"].as_str() {
            Some(next) if !next.is_empty() => token = next.to_owned(),
            _ => break,
        }
    }
    assert_eq!(seen, ["alice", "bob", "carol", "dave", "erin"]);
    let leaders = server.call(
        &method("ListMembers"),
        &json!({ "accountId": "acme", "tiers": ["TIER_PROFESSIONAL"] }),
    );
    assert_eq!(ids(&leaders), ["bob", "dave"]);
    assert_eq!(
        leaders["members"][0]["licence"]["tier"],
        "TIER_PROFESSIONAL"
    );
    let too_big = server.call_err(
        &method("ListMembers"),
        &json!({ "accountId": "acme", "pageSize": 5000 }),
    );
    assert!(
        too_big.contains("invalid page_size 5000: must be at most 1000"),
        "{too_big}"
    );
}
