//! End to end: with API keys configured, every RPC of the contract is tried with every right, on
//! the caller's own account, on another tenant's and on one that does not exist. A caller is
//! refused PERMISSION_DENIED exactly when its rights do not give the right the RPC needs on that
//! account (the service's own table, `auth::rules`), and the refusal reads the same whether the
//! account exists or not. The methods come from the contract itself: a new RPC without a case
//! here fails the test.

mod support;

use std::io::Write as _;

use licensing::auth::{
    api_keys::new_secret,
    rules::{self, Use},
};
use licensing_core::Right;
use prost::Message as _;
use serde_json::{Value, json};
use support::Licensing;

const OWN: &str = "own";
const FOREIGN: &str = "foreign";
const ABSENT: &str = "absent";

/// A key of the test: its secret, and what the service's file says of it.
struct Key {
    name: &'static str,
    secret: String,
    rights: Vec<Right>,
}

fn keys_file(keys: &[Key], operator: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("keys file");
    let hash = |secret: &str| {
        use sha2::Digest as _;
        sha2::Sha256::digest(secret.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    writeln!(
        file,
        "[[key]]\nid = \"operator\"\nsubject = \"operator\"\nsha256 = \"{}\"\naccounts = [\"*\"]\nrights = [\"admin\"]\n",
        hash(operator)
    )
    .expect("write");
    for key in keys {
        let rights: Vec<String> = key
            .rights
            .iter()
            .map(|r| format!("{:?}", r.name()))
            .collect();
        writeln!(
            file,
            "[[key]]\nid = \"{0}\"\nsubject = \"{0}\"\nsha256 = \"{1}\"\naccounts = [\"{OWN}\"]\nrights = [{2}]\n",
            key.name,
            hash(&key.secret),
            rights.join(", ")
        )
        .expect("write");
    }
    file
}

/// Every method of `licensing.v1`, as `Service/Method`.
fn methods() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(licensing::api::FILE_DESCRIPTOR_SET)
        .expect("descriptor set");
    set.file
        .iter()
        .filter(|f| f.package() == "licensing.v1")
        .flat_map(|f| f.service.iter())
        .flat_map(|s| {
            s.method
                .iter()
                .map(|m| format!("{}/{}", s.name(), m.name()))
        })
        .collect()
}

/// A request of `method` for `account` that writes when the method can (the stronger right).
fn request(method: &str, account: &str) -> Value {
    let agent =
        json!({ "role": "ROLE_USER", "skills": [{ "id": "voice", "channel": "CHANNEL_VOICE" }] });
    match method {
        "LicensingService/ResolveMember" => {
            json!({ "accountId": account, "memberId": "ann", "apply": true, "settings": agent })
        }
        "LicensingService/GetMember" | "LicensingService/RemoveMember" => {
            json!({ "accountId": account, "memberId": "nobody" })
        }
        "LicensingService/CreateAccount" => {
            json!({ "accountId": account, "settings": { "timeZone": "UTC" } })
        }
        "LicensingService/UpdateAccount" => json!({ "accountId": account, "autoGrowth": true }),
        "LicensingService/AdvanceClock" => {
            json!({ "accountId": account, "to": "2199-01-01T00:00:00Z" })
        }
        "LicensingService/AdjustInventory" => json!({
            "accountId": account, "confirm": true, "revision": 1,
            "changes": [{ "product": "PRODUCT_STANDARD_SEAT", "seats": 1 }]
        }),
        "LicensingService/CheckQuota" => {
            json!({ "accountId": account, "meter": "METER_AI_QA_PACKS" })
        }
        "LicensingService/GetAccount"
        | "LicensingService/ListMembers"
        | "LicensingService/GetInventory"
        | "LicensingService/GetUsage"
        | "LicensingService/ReadAuditTrail"
        | "LicensingService/GetStatement"
        | "LicensingService/Advise" => json!({ "accountId": account }),
        "IngestionService/Ingest" => json!({ "batchId": 1, "events": [{
            "source": "test", "eventId": format!("e-{account}"), "accountId": account,
            "memberId": "ann", "occurredAt": "2026-05-10T10:00:00Z", "agentLogin": {}
        }] }),
        other => panic!("no case for {other}: add one, so that its rule is tested"),
    }
}

/// What a call printed (its answer or its error), with the key's secret as the bearer.
fn call(server: &Licensing, secret: &str, method: &str, request: &Value) -> String {
    let header = format!("authorization: Bearer {secret}");
    let output = server.grpcurl(&[
        "-H",
        &header,
        "-d",
        &request.to_string(),
        &format!("licensing.v1.{method}"),
    ]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn denied(method: &str, output: &str) -> bool {
    if method == "IngestionService/Ingest" {
        output.contains("REFUSAL_REASON_PERMISSION_DENIED")
    } else {
        output.contains("Code: PermissionDenied")
    }
}

#[test]
fn every_rpc_needs_its_right_on_its_own_account() {
    let operator = new_secret().expect("random").0;
    let keys: Vec<Key> = Right::ALL
        .into_iter()
        .map(|right| Key {
            name: right.name(),
            secret: new_secret().expect("random").0,
            rights: vec![right],
        })
        .collect();
    let file = keys_file(&keys, &operator);
    let path = file.path().display().to_string();
    let server = Licensing::start_with_args(&["--api-keys", &path]);
    for account in [OWN, FOREIGN] {
        let created = call(
            &server,
            &operator,
            "LicensingService/CreateAccount",
            &json!({ "accountId": account, "sandbox": true, "sandboxClockStart": "2026-05-10T12:00:00Z",
                     "settings": { "timeZone": "UTC", "autoGrowth": true } }),
        );
        assert!(created.contains("\"accountId\""), "{created}");
    }
    let methods = methods();
    assert!(methods.len() >= 15, "{methods:?}");
    let mut checked = 0;
    for method in &methods {
        let needed = rules::needs(method, Use::Write);
        for key in &keys {
            let mut refusals = Vec::new();
            for account in [OWN, FOREIGN, ABSENT] {
                let output = call(&server, &key.secret, method, &request(method, account));
                let allowed = account == OWN && key.rights.iter().any(|r| r.gives(needed));
                assert_eq!(
                    !denied(method, &output),
                    allowed,
                    "{method} with the {} right on {account:?} (needs {needed}):\n{output}",
                    key.name
                );
                if !allowed {
                    refusals.push(output.replace(account, "<account>"));
                }
                checked += 1;
            }
            // The refusal tells nothing about whether another tenant's account exists.
            if let [foreign, absent] = refusals.as_slice() {
                assert_eq!(foreign, absent, "{method}, {}", key.name);
            }
        }
    }
    eprintln!(
        "access: {checked} calls of {} methods checked",
        methods.len()
    );

    // Without a credential, or with an unknown one: UNAUTHENTICATED; health needs none.
    let anonymous = server.grpcurl(&[
        "-d",
        r#"{"accountId": "own"}"#,
        "licensing.v1.LicensingService/GetAccount",
    ]);
    assert!(
        String::from_utf8_lossy(&anonymous.stderr).contains("Code: Unauthenticated"),
        "{anonymous:?}"
    );
    let unknown = call(
        &server,
        "lk_0000",
        "LicensingService/GetAccount",
        &json!({ "accountId": OWN }),
    );
    assert!(unknown.contains("Code: Unauthenticated"), "{unknown}");
    assert!(
        !unknown.contains("lk_0000"),
        "the secret is echoed: {unknown}"
    );
    let health = server.grpcurl(&["-d", r#"{"service":""}"#, "grpc.health.v1.Health/Check"]);
    assert!(String::from_utf8_lossy(&health.stdout).contains("SERVING"));

    // The audit trail names who did it, and how they authenticated.
    let trail = call(
        &server,
        &operator,
        "LicensingService/ReadAuditTrail",
        &json!({ "accountId": FOREIGN }),
    );
    assert!(
        trail.contains("\"principal\": \"api-key:operator\""),
        "{trail}"
    );
}

#[test]
fn without_keys_the_service_refuses_a_public_address_unless_told_insecure() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_licensing"))
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(tempfile::tempdir().expect("tempdir").path().join("db"))
        .output()
        .expect("run licensing");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not a loopback address, and authentication is off"),
        "{stderr}"
    );
}

#[test]
fn the_collector_presents_its_key_and_events_beyond_its_grant_are_refused() {
    let operator = new_secret().expect("random").0;
    let collector_key = Key {
        name: "collector",
        secret: new_secret().expect("random").0,
        rights: vec![Right::Ingest],
    };
    let file = keys_file(std::slice::from_ref(&collector_key), &operator);
    let path = file.path().display().to_string();
    let server = Licensing::start_with_args(&["--api-keys", &path]);
    for account in [OWN, FOREIGN] {
        call(
            &server,
            &operator,
            "LicensingService/CreateAccount",
            &json!({ "accountId": account, "sandbox": true, "sandboxClockStart": "2026-05-31T12:00:00Z",
                     "settings": { "timeZone": "UTC" } }),
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    let line = |id: &str, account: &str| {
        format!(
            "{{\"event_id\":\"{id}\",\"account_id\":\"{account}\",\"member_id\":\"ghost\",\"occurred_at\":\"2026-05-31T11:00:00Z\",\"kind\":\"agent_login\"}}\n"
        )
    };
    std::fs::write(&events, line("e1", OWN) + &line("e2", FOREIGN)).expect("events");
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{}\n", collector_key.secret)).expect("key");
    let mut collector = std::process::Command::new(env!("CARGO_BIN_EXE_licensing-collector"))
        .args(["--licensing", &server.endpoint(), "--spool-dir"])
        .arg(dir.path().join("spool"))
        .arg("--follow")
        .arg(&events)
        .arg("--api-key-file")
        .arg(&key_file)
        .args(["--backoff-max-ms", "500", "--log", "warn"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the collector");
    let (lines, reader) = support::collect_lines(collector.stderr.take().expect("piped stderr"));
    // The own account's event arrives (as unlicensed usage of the unknown member)...
    let started = std::time::Instant::now();
    loop {
        let usage = call(
            &server,
            &operator,
            "LicensingService/GetUsage",
            &json!({ "accountId": OWN }),
        );
        if usage.contains("\"memberId\": \"ghost\"") {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "the collector's event never arrived:\n{usage}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // ...the foreign one is refused, and nothing of it is counted.
    let foreign = call(
        &server,
        &operator,
        "LicensingService/GetUsage",
        &json!({ "accountId": FOREIGN }),
    );
    assert!(!foreign.contains("ghost"), "{foreign}");
    // ...and the collector says why the other was refused (its answer may still be on its way
    // when the first event is visible).
    let started = std::time::Instant::now();
    let refused = |line: &str| {
        line.contains("PERMISSION_DENIED")
            || line.contains("PermissionDenied")
            || line.contains("ingest right")
    };
    while !lines.lock().expect("lock").iter().any(|l| refused(l)) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "no refusal logged: {:?}",
            lines.lock().expect("lock")
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = collector.kill();
    let _ = collector.wait();
    let _ = reader.join();
    let logs = lines.lock().expect("lock").join("\n");
    assert!(
        !logs.contains(&collector_key.secret),
        "the key reached the log"
    );
}
