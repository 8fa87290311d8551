//! End to end: the service over TLS, with client certificates (mutual TLS), through the real
//! binaries. The certificates are made by the test: a CA, the server's certificate, and client
//! certificates that are valid, on the allow-list or not, expired, or from another CA.
//!
//! Health stays reachable in plaintext on its own port, for Kubernetes probes; the main port
//! speaks TLS only. The collector uploads over `https://`, verifying the server and presenting its
//! certificate.

mod support;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use licensing::api::{self, licensing_service_client::LicensingServiceClient};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use support::Licensing;
use tonic::{
    Code,
    metadata::MetadataValue,
    transport::{Certificate, ClientTlsConfig, Endpoint, Identity},
};

const ALLOWED_URI: &str = "spiffe://test.example/ns/contact/sa/collector";

/// A certificate authority of the test.
struct Authority {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        let pem = params.self_signed(&key).expect("self-signed").pem();
        Authority {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate and its key (PEM) for these SANs and usage; `expired` puts its validity in
    /// the past.
    fn issue(
        &self,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
        expired: bool,
    ) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![usage];
        params.distinguished_name.push(DnType::CommonName, "test");
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().expect("key");
        let certificate = params.signed_by(&key, &self.issuer).expect("signed");
        (certificate.pem(), key.serialize_pem())
    }

    fn client(&self, uri: &str, expired: bool) -> (String, String) {
        self.issue(
            vec![SanType::URI(uri.try_into().expect("URI"))],
            ExtendedKeyUsagePurpose::ClientAuth,
            expired,
        )
    }
}

struct Setup {
    server: Licensing,
    ca: Authority,
    dir: tempfile::TempDir,
    operator: String,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

fn start() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Authority::new("licensing test CA");
    let (cert, key) = ca.issue(
        vec![
            SanType::DnsName("localhost".try_into().expect("name")),
            SanType::IpAddress([127, 0, 0, 1].into()),
        ],
        ExtendedKeyUsagePurpose::ServerAuth,
        false,
    );
    let cert = write(dir.path(), "server.pem", &cert);
    let key = write(dir.path(), "server.key", &key);
    let client_ca = write(dir.path(), "client-ca.pem", &ca.pem);
    let allowed = write(
        dir.path(),
        "clients.toml",
        &format!(
            "[[certificate]]\nuri = \"{ALLOWED_URI}\"\nsubject = \"collector\"\naccounts = [\"acme\"]\nrights = [\"view\", \"ingest\"]\n"
        ),
    );
    let operator = licensing::auth::api_keys::new_secret().expect("random").0;
    let keys = write(
        dir.path(),
        "keys.toml",
        &format!(
            "[[key]]\nid = \"operator\"\nsubject = \"operator\"\nsha256 = \"{}\"\naccounts = [\"*\"]\nrights = [\"admin\"]\n",
            {
                use sha2::Digest as _;
                sha2::Sha256::digest(operator.as_bytes())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            }
        ),
    );
    let path = |p: &PathBuf| p.display().to_string();
    let server = Licensing::start_with_args(&[
        "--tls-cert",
        &path(&cert),
        "--tls-key",
        &path(&key),
        "--tls-client-ca",
        &path(&client_ca),
        "--client-certificates",
        &path(&allowed),
        "--api-keys",
        &path(&keys),
        "--health-listen",
        "127.0.0.1:0",
    ]);
    Setup {
        server,
        ca,
        dir,
        operator,
    }
}

/// A TLS client of the server trusting `root`, presenting `identity` if given.
async fn client(
    server: &Licensing,
    root: &str,
    identity: Option<&(String, String)>,
) -> Result<LicensingServiceClient<tonic::transport::Channel>, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(root))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Endpoint::from_shared(format!("https://{}", server.address))
        .expect("endpoint")
        .tls_config(tls)
        .expect("TLS config")
        .timeout(Duration::from_secs(120))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(LicensingServiceClient::new(channel))
}

/// GetAccount of `account` through `client`, with `bearer` if given.
async fn get_account(
    client: Result<LicensingServiceClient<tonic::transport::Channel>, String>,
    bearer: Option<&str>,
    account: &str,
) -> (Code, String) {
    let mut client = match client {
        Ok(client) => client,
        Err(e) => return (Code::Unavailable, e),
    };
    let mut request = tonic::Request::new(api::GetAccountRequest {
        account_id: account.to_owned(),
    });
    if let Some(bearer) = bearer {
        request.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {bearer}")).expect("ASCII"),
        );
    }
    match client.get_account(request).await {
        Ok(_) => (Code::Ok, String::new()),
        Err(status) => (status.code(), format!("{status:?}")),
    }
}

async fn create_accounts(setup: &Setup) {
    let mut operator = client(&setup.server, &setup.ca.pem, None)
        .await
        .expect("connect over TLS");
    for account in ["acme", "globex"] {
        let mut request = tonic::Request::new(api::CreateAccountRequest {
            account_id: account.to_owned(),
            settings: Some(api::AccountSettings {
                time_zone: "UTC".to_owned(),
                ..Default::default()
            }),
            sandbox: true,
            sandbox_clock_start: Some(support::timestamp("2026-05-31T12:00:00Z")),
        });
        request.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {}", setup.operator)).expect("ASCII"),
        );
        operator
            .create_account(request)
            .await
            .expect("create over TLS with an API key");
    }
}

/// The account acme's usage as the operator reads it over TLS, as text.
async fn read_usage(setup: &Setup) -> String {
    let mut operator = client(&setup.server, &setup.ca.pem, None)
        .await
        .expect("connect over TLS");
    let mut request = tonic::Request::new(api::GetUsageRequest {
        account_id: "acme".to_owned(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {}", setup.operator)).expect("ASCII"),
    );
    let mut stream = operator
        .get_usage(request)
        .await
        .expect("GetUsage over TLS")
        .into_inner();
    let mut text = String::new();
    while let Some(message) = stream.message().await.expect("usage message") {
        text.push_str(&format!("{message:?}"));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_authenticate_through_the_allow_list_and_bad_ones_are_refused() {
    let setup = start();
    let server = &setup.server;
    create_accounts(&setup).await;

    // Health answers in plaintext on its own port, without credentials.
    let health = server.health();
    assert!(
        String::from_utf8_lossy(&health.stdout).contains("SERVING"),
        "{health:?}"
    );
    // So does `licensing healthcheck`, what a container without a shell runs: exit 0 and the
    // status for the whole process and for liveness, exit 1 for a service nobody serves.
    let healthcheck = |service: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_licensing"))
            .args(["healthcheck", "--address", &server.health_address])
            .args(["--service", service, "--timeout-seconds", "60"])
            .output()
            .expect("run licensing healthcheck")
    };
    for service in ["", "liveness", "licensing.v1.LicensingService"] {
        let checked = healthcheck(service);
        assert!(checked.status.success(), "{service:?}: {checked:?}");
        let said = String::from_utf8_lossy(&checked.stdout);
        assert!(said.contains(&format!("{service:?}: SERVING")), "{said}");
    }
    let unknown = healthcheck("nobody.Serves");
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("NotFound"),
        "{unknown:?}"
    );
    // The main port speaks TLS only.
    let plaintext = LicensingServiceClient::new(
        Endpoint::from_shared(server.endpoint())
            .expect("endpoint")
            .timeout(Duration::from_secs(60))
            .connect_lazy(),
    );
    let (code, message) = get_account(Ok(plaintext), Some(&setup.operator), "acme").await;
    assert_ne!(code, Code::Ok, "plaintext was served: {message}");

    // A valid certificate on the allow-list is the collector: its rights on its account only.
    let collector = setup.ca.client(ALLOWED_URI, false);
    let (code, message) = get_account(
        client(server, &setup.ca.pem, Some(&collector)).await,
        None,
        "acme",
    )
    .await;
    assert_eq!(code, Code::Ok, "{message}");
    let (code, message) = get_account(
        client(server, &setup.ca.pem, Some(&collector)).await,
        None,
        "globex",
    )
    .await;
    assert_eq!(code, Code::PermissionDenied, "{message}");

    // Signed by the CA but not on the list: not a caller.
    let stranger = setup
        .ca
        .client("spiffe://test.example/ns/other/sa/intruder", false);
    let (code, message) = get_account(
        client(server, &setup.ca.pem, Some(&stranger)).await,
        None,
        "acme",
    )
    .await;
    assert_eq!(code, Code::Unauthenticated, "{message}");
    assert!(message.contains("not on the allow-list"), "{message}");

    // Another CA's certificate, and an expired one of ours, fail the handshake: no call is made.
    let other_ca = Authority::new("someone else's CA");
    let untrusted = other_ca.client(ALLOWED_URI, false);
    let expired = setup.ca.client(ALLOWED_URI, true);
    for (what, identity) in [("untrusted CA", &untrusted), ("expired", &expired)] {
        let (code, message) = get_account(
            client(server, &setup.ca.pem, Some(identity)).await,
            None,
            "acme",
        )
        .await;
        assert!(
            code != Code::Ok && code != Code::PermissionDenied,
            "{what}: {code:?} {message}"
        );
    }

    // The client verifies the server: trusting another CA, it does not connect.
    let (code, message) = get_account(
        client(server, &other_ca.pem, None).await,
        Some(&setup.operator),
        "acme",
    )
    .await;
    assert_ne!(
        code,
        Code::Ok,
        "an unverified server was trusted: {message}"
    );
}

#[test]
fn the_collector_uploads_over_tls_with_its_certificate_and_verifies_the_server() {
    let setup = start();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(create_accounts(&setup));
    let dir = setup.dir.path();
    let (cert, key) = setup.ca.client(ALLOWED_URI, false);
    let cert = write(dir, "collector.pem", &cert);
    let key = write(dir, "collector.key", &key);
    let ca = write(dir, "ca.pem", &setup.ca.pem);
    let events = dir.join("events.jsonl");
    std::fs::write(
        &events,
        "{\"event_id\":\"e1\",\"account_id\":\"acme\",\"member_id\":\"ghost\",\"occurred_at\":\"2026-05-31T11:00:00Z\",\"kind\":\"agent_login\"}\n",
    )
    .expect("events");
    let url = format!(
        "https://localhost:{}",
        setup.server.address.rsplit(':').next().expect("port")
    );
    let collector = |extra: &[&Path], spool: &str| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_licensing-collector"));
        command
            .args(["--licensing", &url, "--spool-dir"])
            .arg(dir.join(spool))
            .arg("--follow")
            .arg(&events)
            .args(["--backoff-max-ms", "500", "--log", "info"]);
        for pair in extra.chunks(2) {
            command.arg(pair[0]).arg(pair[1]);
        }
        command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the collector")
    };

    // Without the CA that signed the server, the collector does not trust it and sends nothing.
    let mut untrusting = collector(
        &[
            Path::new("--client-cert"),
            &cert,
            Path::new("--client-key"),
            &key,
        ],
        "spool-untrusting",
    );
    let (lines, reader) = support::collect_lines(untrusting.stderr.take().expect("stderr"));
    let started = Instant::now();
    while !lines
        .lock()
        .expect("lock")
        .iter()
        .any(|l| l.contains("invalid peer certificate"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no certificate error: {:?}",
            lines.lock().expect("lock")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = untrusting.kill();
    let _ = untrusting.wait();
    let _ = reader.join();
    let usage = runtime.block_on(read_usage(&setup));
    assert!(!usage.contains("ghost"), "{usage}");

    // With it, the event arrives, sent under the certificate's principal.
    let mut trusting = collector(
        &[
            Path::new("--ca-file"),
            &ca,
            Path::new("--client-cert"),
            &cert,
            Path::new("--client-key"),
            &key,
        ],
        "spool-trusting",
    );
    let started = Instant::now();
    loop {
        let usage = runtime.block_on(read_usage(&setup));
        if usage.contains("ghost") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the collector's event never arrived: {usage}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = trusting.kill();
    let _ = trusting.wait();
}
