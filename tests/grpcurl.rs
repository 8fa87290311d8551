//! End to end: the real `licensing` binary on a free port, driven by the real `grpcurl` through
//! server reflection, as an operator would.

mod support;

use serde_json::{Value, json};
use support::Licensing;

const RESOLVE: &str = "licensing.v1.LicensingService/ResolveMember";

fn tier(response: &Value) -> &str {
    response["licence"]["tier"].as_str().unwrap_or("(missing)")
}

fn triggers(response: &Value) -> Vec<&str> {
    response["licence"]["reasons"]
        .as_array()
        .map(|reasons| {
            reasons
                .iter()
                .filter_map(|r| r["trigger"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn list_shows_licensing_ingestion_health_and_reflection() {
    let server = Licensing::start();
    let output = server.grpcurl(&["list"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let services = String::from_utf8_lossy(&output.stdout);
    for service in [
        "licensing.v1.LicensingService",
        "licensing.v1.IngestionService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            services.lines().any(|l| l == service),
            "{service} missing from:\n{services}"
        );
    }
}

#[test]
fn describe_shows_the_contract_with_its_comments() {
    let server = Licensing::start();
    let output = server.grpcurl(&["describe", "licensing.v1.LicensingService"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for rpc in [
        "ResolveMember",
        "AdjustInventory",
        "GetUsage",
        "ReadAuditTrail",
        "GetStatement",
        "CheckQuota",
    ] {
        assert!(
            text.contains(&format!("rpc {rpc} (")),
            "rpc {rpc} missing from:\n{text}"
        );
    }
    let output = server.grpcurl(&["describe", "licensing.v1.MemberSettings"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(".licensing.v1.BillingMode billing_preference = 7;"),
        "{text}"
    );
    assert!(
        text.contains("Unspecified means MONTHLY"),
        "field comments are not served:\n{text}"
    );
    let output = server.grpcurl(&["describe", "licensing.v1.IngestionService"]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("rpc Ingest ( stream .licensing.v1.IngestRequest ) returns ( stream .licensing.v1.IngestResponse )"));
}

#[test]
fn health_is_serving_per_service() {
    let server = Licensing::start();
    for service in [
        "",
        "licensing.v1.LicensingService",
        "licensing.v1.IngestionService",
    ] {
        let response = server.call(
            "grpc.health.v1.Health/Check",
            &json!({ "service": service }),
        );
        assert_eq!(response["status"], "SERVING", "service {service:?}");
    }
    let unknown = server.call_err(
        "grpc.health.v1.Health/Check",
        &json!({ "service": "nope.v1.Nothing" }),
    );
    assert!(unknown.contains("NotFound"), "{unknown}");
}

#[test]
fn resolve_member_previews_explain_the_tier() {
    let server = Licensing::start();

    // A team leader: the preset brings COMMUNICATION, DASHBOARD and STATISTICS.
    let response = server.call(
        RESOLVE,
        &json!({ "settings": { "role": "ROLE_TEAM_LEADER" } }),
    );
    assert_eq!(tier(&response), "TIER_PROFESSIONAL");
    assert_eq!(
        triggers(&response),
        [
            "TRIGGER_COMMUNICATION_PERMISSION",
            "TRIGGER_REPORTING_PERMISSION"
        ]
    );
    assert_eq!(
        response["licence"]["price"]["perMonth"],
        json!({ "currencyCode": "EUR", "minorUnits": "4900" })
    );
    assert!(
        response.get("applied").is_none(),
        "a preview must not report applied: {response}"
    );

    // Three skills and statistics, billed daily: PROFESSIONAL allows daily billing.
    let response = server.call(
        RESOLVE,
        &json!({ "settings": {
            "role": "ROLE_USER",
            "skills": [
                { "id": "sales-en", "channel": "CHANNEL_VOICE" },
                { "id": "sales-de", "channel": "CHANNEL_EMAIL" },
                { "id": "support", "channel": "CHANNEL_CHAT" }
            ],
            "trackStatistics": true,
            "billingPreference": "BILLING_MODE_DAILY"
        }}),
    );
    assert_eq!(tier(&response), "TIER_PROFESSIONAL");
    assert_eq!(
        triggers(&response),
        [
            "TRIGGER_COMMUNICATION_PERMISSION",
            "TRIGGER_SEVERAL_SKILLS",
            "TRIGGER_STATISTICS_TRACKING"
        ]
    );
    let skills_reason = &response["licence"]["reasons"][1];
    assert_eq!(skills_reason["skills"], 3);
    assert_eq!(skills_reason["description"], "3 skills");
    assert_eq!(
        response["licence"]["billing"]["effective"],
        "BILLING_MODE_DAILY"
    );
    assert_eq!(
        response["licence"]["price"]["perLoginDay"]["minorUnits"],
        "290"
    );

    // Daily preference on STANDARD falls back to monthly, and says why.
    let response = server.call(
        RESOLVE,
        &json!({ "settings": {
            "role": "ROLE_USER",
            "skills": [{ "id": "sales-en", "channel": "CHANNEL_VOICE" }],
            "callRecording": true,
            "outboundCalling": true,
            "billingPreference": "BILLING_MODE_DAILY"
        }}),
    );
    assert_eq!(tier(&response), "TIER_STANDARD");
    assert_eq!(
        response["licence"]["billing"]["effective"],
        "BILLING_MODE_MONTHLY"
    );
    assert_eq!(
        response["licence"]["billing"]["reason"],
        "BILLING_REASON_DAILY_NOT_AVAILABLE"
    );
    let add_ons: Vec<&str> = response["licence"]["addOns"]
        .as_array()
        .expect("add-ons")
        .iter()
        .filter_map(|a| a["addOn"].as_str())
        .collect();
    assert_eq!(add_ons, ["ADD_ON_CALL_RECORDING", "ADD_ON_OUTBOUND"]);
    // 2900 seat + 700 recording unit + 1500 outbound seat.
    assert_eq!(
        response["licence"]["price"]["perMonth"]["minorUnits"],
        "5100"
    );

    // No settings at all: the DASHBOARD tier, with no reasons.
    let response = server.call(RESOLVE, &json!({ "settings": {} }));
    assert_eq!(tier(&response), "TIER_DASHBOARD");
    assert!(triggers(&response).is_empty());

    // WORKFLOW permission: DEVELOPER, whatever the role.
    let response = server.call(
        RESOLVE,
        &json!({ "settings": { "role": "ROLE_USER", "permissions": ["PERMISSION_DASHBOARD", "PERMISSION_WORKFLOW"] } }),
    );
    assert_eq!(tier(&response), "TIER_DEVELOPER");
    assert_eq!(triggers(&response), ["TRIGGER_DEVELOPER_PERMISSION"]);
}

#[test]
fn invalid_resolve_member_requests_name_the_field_and_value() {
    let server = Licensing::start();
    let cases = [
        (
            json!({ "settings": { "outboundCalling": true, "skills": [{ "id": "mail", "channel": "CHANNEL_EMAIL" }] } }),
            "invalid settings.outbound_calling true: requires a skill on the VOICE channel",
        ),
        (
            json!({ "settings": { "skills": [
                { "id": "a", "channel": "CHANNEL_VOICE" }, { "id": "a", "channel": "CHANNEL_CHAT" }
            ] } }),
            "invalid settings.skills[1].id \"a\": duplicates settings.skills[0].id",
        ),
        (
            json!({ "settings": { "skills": [{ "id": "", "channel": "CHANNEL_VOICE" }] } }),
            "invalid settings.skills[0].id \"\": must not be empty",
        ),
        (
            json!({ "settings": { "role": 9 } }),
            "invalid settings.role 9: unknown role number",
        ),
        (json!({}), "invalid settings (unset): must be set"),
    ];
    for (request, message) in cases {
        let error = server.call_err(RESOLVE, &request);
        assert!(
            error.contains("Code: InvalidArgument"),
            "{request}: {error}"
        );
        assert!(
            error.contains(message),
            "{request}: expected {message:?} in {error}"
        );
    }
}

#[test]
fn applying_without_an_account_is_refused() {
    let server = Licensing::start();
    let error = server.call_err(RESOLVE, &json!({ "settings": {}, "apply": true }));
    assert!(
        error.contains("Code: InvalidArgument")
            && error.contains("invalid account_id \"\": is required with apply"),
        "{error}"
    );
}

#[test]
fn sigterm_drains_flushes_and_exits_cleanly() {
    let server = Licensing::start();
    let (clean, logs) = server.terminate();
    assert!(
        clean,
        "licensing exited with an error after SIGTERM:\n{}",
        logs.join("\n")
    );
    assert!(
        logs.iter().any(|l| l.contains("shutting down")),
        "{}",
        logs.join("\n")
    );
    assert!(
        logs.iter().any(|l| l.contains("database flushed")),
        "{}",
        logs.join("\n")
    );
}
