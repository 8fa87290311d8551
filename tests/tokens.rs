//! End to end: JWT bearer tokens through the real binary. Tokens signed by a key of the JWKS file
//! with the configured issuer and audience are accepted, with the accounts and rights their claims
//! name; every known attack on tokens is refused UNAUTHENTICATED; a JWKS file changed on disk is
//! in force without a restart; API keys are rotated and revoked the same way; a principal over
//! its call rate is told when to retry.
//!
//! The signing keys are fixtures (`tests/fixtures/jwt`), made once with `openssl genpkey`.

mod support;

use std::{
    io::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use licensing::api::{self, licensing_service_client::LicensingServiceClient};
use serde_json::{Value, json};
use support::Licensing;
use tonic::{Code, metadata::MetadataValue};

const ISSUER: &str = "https://id.example.test";
const AUDIENCE: &str = "licensing";
/// How long a changed credentials file may take to be in force (it is polled every second).
const RELOAD_DEADLINE: Duration = Duration::from_secs(60);

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/jwt")
            .join(name),
    )
    .expect("fixture key")
}

/// A signing key of the test and its public JWK.
struct SigningKey {
    kid: &'static str,
    algorithm: Algorithm,
    key: EncodingKey,
}

impl SigningKey {
    fn load(kid: &'static str, algorithm: Algorithm, file: &str) -> SigningKey {
        let pem = fixture(file);
        let key = match algorithm {
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_rsa_pem(&pem),
        }
        .expect("fixture key parses");
        SigningKey {
            kid,
            algorithm,
            key,
        }
    }

    fn jwk(&self) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.algorithm).expect("public JWK");
        jwk.common.key_id = Some(self.kid.to_owned());
        serde_json::to_value(jwk).expect("JWK as JSON")
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.key).expect("sign")
    }
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Claims that are valid now, for `sub` with view on `acme`.
fn claims(sub: &str) -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "iat": now(),
        "nbf": now() - 10,
        "exp": now() + 600,
        "accounts": ["acme"],
        "rights": ["view"],
    })
}

fn write_jwks(path: &Path, keys: &[&SigningKey]) {
    let jwks = json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() });
    // Written aside and renamed: the service never reads half a file.
    let aside = path.with_extension("new");
    std::fs::write(&aside, jwks.to_string()).expect("write JWKS");
    std::fs::rename(&aside, path).expect("replace JWKS");
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token signed with HMAC-SHA256 under `secret`, naming the key `kid`.
fn hs256(kid: &str, claims: &Value, secret: &[u8]) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret).expect("secret"),
    )
    .expect("sign")
}

/// Calls GetAccount on `account` presenting `bearer`; the status code and message.
async fn get_account(server: &Licensing, bearer: &str, account: &str) -> (Code, String) {
    let mut client = LicensingServiceClient::new(server.channel().await);
    let mut request = tonic::Request::new(api::GetAccountRequest {
        account_id: account.to_owned(),
    });
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {bearer}")).expect("ASCII"),
    );
    match client.get_account(request).await {
        Ok(_) => (Code::Ok, String::new()),
        Err(status) => (status.code(), status.message().to_owned()),
    }
}

async fn create_account(server: &Licensing, operator: &str, account: &str) {
    let mut client = LicensingServiceClient::new(server.channel().await);
    let mut request = tonic::Request::new(api::CreateAccountRequest {
        account_id: account.to_owned(),
        settings: Some(api::AccountSettings {
            time_zone: "UTC".to_owned(),
            ..Default::default()
        }),
        sandbox: false,
        sandbox_clock_start: None,
    });
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {operator}")).expect("ASCII"),
    );
    client
        .create_account(request)
        .await
        .expect("create the account");
}

fn hash(secret: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn key_entry(id: &str, subject: &str, secret: &str, rights: &str) -> String {
    format!(
        "[[key]]\nid = \"{id}\"\nsubject = \"{subject}\"\nsha256 = \"{}\"\naccounts = [\"*\"]\nrights = [{rights}]\n",
        hash(secret)
    )
}

fn write_keys(path: &Path, text: &str) {
    let aside = path.with_extension("new");
    let mut file = std::fs::File::create(&aside).expect("keys file");
    file.write_all(text.as_bytes()).expect("write keys");
    drop(file);
    std::fs::rename(&aside, path).expect("replace keys");
}

/// Waits until `probe` answers `wanted` (a changed file is read within about a second).
async fn until<F, Fut>(what: &str, wanted: Code, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (Code, String)>,
{
    let started = Instant::now();
    loop {
        let (code, message) = probe().await;
        if code == wanted {
            return;
        }
        assert!(
            started.elapsed() < RELOAD_DEADLINE,
            "{what}: still {code:?} ({message}) after {RELOAD_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Setup {
    server: Licensing,
    operator: String,
    jwks: std::path::PathBuf,
    keys: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn start(jwks_keys: &[&SigningKey]) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let jwks = dir.path().join("jwks.json");
    write_jwks(&jwks, jwks_keys);
    let operator = licensing::auth::api_keys::new_secret().expect("random").0;
    let keys = dir.path().join("keys.toml");
    write_keys(
        &keys,
        &key_entry("operator", "operator", &operator, "\"admin\""),
    );
    let server = Licensing::start_with_args(&[
        "--api-keys",
        &keys.display().to_string(),
        "--jwks",
        &jwks.display().to_string(),
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
    ]);
    create_account(&server, &operator, "acme").await;
    create_account(&server, &operator, "globex").await;
    Setup {
        server,
        operator,
        jwks,
        keys,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_tokens_of_each_algorithm_are_accepted_with_their_claims_and_attacks_are_refused() {
    let ed = SigningKey::load("ed-a", Algorithm::EdDSA, "ed25519-a.pem");
    let ec = SigningKey::load("ec", Algorithm::ES256, "es256.pem");
    let rsa = SigningKey::load("rsa", Algorithm::RS256, "rs256.pem");
    let setup = start(&[&ed, &ec, &rsa]).await;
    let server = &setup.server;

    // Each algorithm's valid token reads its own account, and only that.
    for key in [&ed, &ec, &rsa] {
        let token = key.sign(&claims("alice"));
        assert_eq!(
            get_account(server, &token, "acme").await,
            (Code::Ok, String::new()),
            "{:?}",
            key.algorithm
        );
        let (code, message) = get_account(server, &token, "globex").await;
        assert_eq!(code, Code::PermissionDenied, "{message}");
    }
    // The audit trail names the token's subject and how it authenticated.
    let mut admin_claims = claims("ops@example.test");
    admin_claims["rights"] = json!(["admin"]);
    admin_claims["accounts"] = json!(["*"]);
    let admin = ed.sign(&admin_claims);
    let mut client = LicensingServiceClient::new(server.channel().await);
    let mut request = tonic::Request::new(api::UpdateAccountRequest {
        account_id: "acme".to_owned(),
        time_zone: Some("Europe/Paris".to_owned()),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {admin}")).expect("ASCII"),
    );
    client
        .update_account(request)
        .await
        .expect("an admin token updates");
    let trail = server.call_stream_with(
        &["-H", &format!("authorization: Bearer {}", setup.operator)],
        "licensing.v1.LicensingService/ReadAuditTrail",
        &json!({ "accountId": "acme" }),
    );
    assert!(
        trail
            .iter()
            .any(|entry| entry.to_string().contains("token:ops@example.test")),
        "{trail:?}"
    );

    let rsa_public = fixture("rs256.pub.pem");
    let valid = ed.sign(&claims("mallory"));
    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    let mut escalated = claims("mallory");
    escalated["rights"] = json!(["admin"]);
    escalated["accounts"] = json!(["*"]);
    parts[1] = b64(escalated.to_string().as_bytes());
    let tampered = parts.join(".");
    let unsigned = format!(
        "{}.{}.",
        b64(json!({ "alg": "none", "typ": "JWT", "kid": "ed-a" })
            .to_string()
            .as_bytes()),
        b64(claims("mallory").to_string().as_bytes())
    );
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = claims("mallory");
        change(&mut claims);
        ed.sign(&claims)
    };
    let unknown_kid = SigningKey::load("never-published", Algorithm::EdDSA, "ed25519-b.pem");
    let attacks: Vec<(&str, String, &str)> = vec![
        ("alg none", unsigned, "not a valid JWT"),
        (
            "expired",
            with(&|c| c["exp"] = json!(now() - 3600)),
            "expired",
        ),
        (
            "not yet valid",
            with(&|c| c["nbf"] = json!(now() + 3600)),
            "not valid yet",
        ),
        (
            "wrong issuer",
            with(&|c| c["iss"] = json!("https://evil.example")),
            "issuer",
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!("billing")),
            "audience",
        ),
        (
            "no audience",
            with(&|c| {
                c.as_object_mut().expect("object").remove("aud");
            }),
            "aud",
        ),
        (
            "no subject",
            with(&|c| {
                c.as_object_mut().expect("object").remove("sub");
            }),
            "sub",
        ),
        (
            "no expiry",
            with(&|c| {
                c.as_object_mut().expect("object").remove("exp");
            }),
            "exp",
        ),
        (
            "string-typed exp",
            with(&|c| c["exp"] = json!((now() + 600).to_string())),
            "exp",
        ),
        ("tampered claims", tampered, "signature"),
        (
            "RS256 public key as an HS256 secret",
            hs256("rsa", &claims("mallory"), &rsa_public),
            "algorithm HS256 is not accepted",
        ),
        (
            "an RSA key's kid on an EdDSA token",
            {
                let mut header = Header::new(Algorithm::EdDSA);
                header.kid = Some("rsa".to_owned());
                jsonwebtoken::encode(&header, &claims("mallory"), &ed.key).expect("sign")
            },
            "is an RS256 key",
        ),
        (
            "unknown kid",
            unknown_kid.sign(&claims("mallory")),
            "not in the JWKS",
        ),
        (
            "unknown right",
            with(&|c| c["rights"] = json!(["root"])),
            "unknown right",
        ),
    ];
    for (attack, token, reason) in &attacks {
        let (code, message) = get_account(server, token, "acme").await;
        assert_eq!(code, Code::Unauthenticated, "{attack}: {message}");
        assert!(message.contains(reason), "{attack}: {message}");
        assert!(
            !message.contains(token.as_str()),
            "{attack}: the token is echoed"
        );
    }
    eprintln!("tokens: {} attacks refused", attacks.len());
    // Nothing a refused token carried is logged.
    let logs = server.logs().join("\n");
    for (attack, token, _) in &attacks {
        let signature = token.rsplit('.').next().unwrap_or_default();
        assert!(
            signature.is_empty() || !logs.contains(signature),
            "{attack}: logged"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_jwks_is_in_force_without_a_restart() {
    let a = SigningKey::load("key-a", Algorithm::EdDSA, "ed25519-a.pem");
    let b = SigningKey::load("key-b", Algorithm::EdDSA, "ed25519-b.pem");
    let setup = start(&[&a]).await;
    let server = &setup.server;
    let old = a.sign(&claims("alice"));
    let new = b.sign(&claims("alice"));
    assert_eq!(get_account(server, &old, "acme").await.0, Code::Ok);
    assert_eq!(
        get_account(server, &new, "acme").await.0,
        Code::Unauthenticated
    );

    // Key b published: it works, and a is still in the set.
    write_jwks(&setup.jwks, &[&a, &b]);
    until("the added key", Code::Ok, || {
        get_account(server, &new, "acme")
    })
    .await;
    assert_eq!(get_account(server, &old, "acme").await.0, Code::Ok);

    // Key a withdrawn: its token stops working (even though it verified before), b goes on.
    write_jwks(&setup.jwks, &[&b]);
    until("the removed key", Code::Unauthenticated, || {
        get_account(server, &old, "acme")
    })
    .await;
    assert_eq!(get_account(server, &new, "acme").await.0, Code::Ok);

    // A broken file keeps the keys in force, and says so in the log.
    std::fs::write(&setup.jwks, "{ not json").expect("write");
    let started = Instant::now();
    while !server
        .logs()
        .iter()
        .any(|line| line.contains("JWKS file changed and is not valid"))
    {
        assert!(started.elapsed() < RELOAD_DEADLINE, "no error logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get_account(server, &new, "acme").await.0, Code::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_rotated_and_revoked_without_a_restart() {
    let a = SigningKey::load("key-a", Algorithm::EdDSA, "ed25519-a.pem");
    let setup = start(&[&a]).await;
    let server = &setup.server;
    let new_secret = || licensing::auth::api_keys::new_secret().expect("random").0;
    let (old, next, wrong) = (new_secret(), new_secret(), new_secret());
    let operator = key_entry("operator", "operator", &setup.operator, "\"admin\"");
    write_keys(
        &setup.keys,
        &(operator.clone() + &key_entry("script-1", "script", &old, "\"view\"")),
    );
    until("the first key", Code::Ok, || {
        get_account(server, &old, "acme")
    })
    .await;
    // A wrong key, of the right shape, is refused.
    let (code, message) = get_account(server, &wrong, "acme").await;
    assert_eq!(code, Code::Unauthenticated, "{message}");
    assert!(!message.contains(&wrong), "the secret is echoed");

    // Rotation: the next key is added; both work while the script moves over.
    write_keys(
        &setup.keys,
        &(operator.clone()
            + &key_entry("script-1", "script", &old, "\"view\"")
            + &key_entry("script-2", "script", &next, "\"view\"")),
    );
    until("the next key", Code::Ok, || {
        get_account(server, &next, "acme")
    })
    .await;
    assert_eq!(get_account(server, &old, "acme").await.0, Code::Ok);

    // Revocation: the old key is removed and stops working; the next one goes on.
    write_keys(
        &setup.keys,
        &(operator + &key_entry("script-2", "script", &next, "\"view\"")),
    );
    until("the revoked key", Code::Unauthenticated, || {
        get_account(server, &old, "acme")
    })
    .await;
    assert_eq!(get_account(server, &next, "acme").await.0, Code::Ok);
    let logs = server.logs().join("\n");
    for secret in [&old, &next, &wrong] {
        assert!(!logs.contains(secret.as_str()), "a secret is logged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_over_its_call_rate_is_told_when_to_retry_and_others_are_served() {
    use tonic_types::StatusExt as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let new_secret = || licensing::auth::api_keys::new_secret().expect("random").0;
    let (busy, quiet) = (new_secret(), new_secret());
    let keys = dir.path().join("keys.toml");
    write_keys(
        &keys,
        &(key_entry("busy", "busy", &busy, "\"admin\"")
            + &key_entry("quiet", "quiet", &quiet, "\"admin\"")),
    );
    // One call per second each: the second call in the same second is over the rate.
    let server = Licensing::start_with_args(&[
        "--api-keys",
        &keys.display().to_string(),
        "--calls-per-second",
        "1",
    ]);
    let mut client = LicensingServiceClient::new(server.channel().await);
    let call = |secret: &str| {
        let mut request = tonic::Request::new(api::GetAccountRequest {
            account_id: "acme".to_owned(),
        });
        request.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {secret}")).expect("ASCII"),
        );
        request
    };
    let mut refused = None;
    for _ in 0..50 {
        match client.get_account(call(&busy)).await {
            Err(status) if status.code() == Code::ResourceExhausted => {
                refused = Some(status);
                break;
            }
            // The account does not exist: the call was let through and answered.
            Err(status) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
            Ok(_) => panic!("acme does not exist"),
        }
    }
    let refused = refused.expect("50 calls in a row stayed within one call per second");
    assert!(refused.message().contains("\"busy\""), "{refused:?}");
    let retry = refused
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("RetryInfo");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(1),
        "{retry:?}"
    );
    // The other principal is not held back by the busy one.
    let other = client
        .get_account(call(&quiet))
        .await
        .expect_err("no account");
    assert_eq!(other.code(), Code::NotFound, "{other:?}");
    // After the wait it was told, the busy one is served again.
    tokio::time::sleep(retry).await;
    let again = client
        .get_account(call(&busy))
        .await
        .expect_err("no account");
    assert_eq!(again.code(), Code::NotFound, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_presents_a_token_from_its_file() {
    let a = SigningKey::load("key-a", Algorithm::EdDSA, "ed25519-a.pem");
    let setup = start(&[&a]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ingest = claims("collector");
    ingest["rights"] = json!(["ingest"]);
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{}\n", a.sign(&ingest))).expect("token");
    let events = dir.path().join("events.jsonl");
    // A minute ago: the account (not a sandbox) was created just now, on the real clock.
    let minute_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60);
    std::fs::write(
        &events,
        format!(
            "{{\"event_id\":\"t1\",\"account_id\":\"acme\",\"member_id\":\"ghost\",\"occurred_at\":\"{minute_ago}\",\"kind\":\"agent_login\"}}\n"
        ),
    )
    .expect("events");
    let mut collector = std::process::Command::new(env!("CARGO_BIN_EXE_licensing-collector"))
        .args(["--licensing", &setup.server.endpoint(), "--spool-dir"])
        .arg(dir.path().join("spool"))
        .arg("--follow")
        .arg(&events)
        .arg("--token-file")
        .arg(&token_file)
        .args(["--backoff-max-ms", "500", "--log", "warn"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the collector");
    let started = Instant::now();
    loop {
        let usage = setup.server.call_stream_with(
            &["-H", &format!("authorization: Bearer {}", setup.operator)],
            "licensing.v1.LicensingService/GetUsage",
            &json!({ "accountId": "acme" }),
        );
        if format!("{usage:?}").contains("ghost") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the collector's event never arrived: {usage:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = collector.kill();
    let _ = collector.wait();
}
