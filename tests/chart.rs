//! The Helm chart, offline: `tests/chart/check_chart.py` lints `helm/licensing` and its example
//! workload chart, renders them from every values file, validates every manifest against
//! Kubernetes 1.29, 1.33 and 1.37, checks the restricted Pod Security fields and the values the
//! chart must refuse (see its docstring). Then the price list the production values render is
//! loaded with the service's own parser, and the command line of every service and collector
//! container the charts render is parsed and validated by the binaries' own configuration code,
//! with the files it names made in a scratch folder: a flag the chart misspells, or a value the
//! binary refuses, fails here and not in a cluster.
//!
//! The Python tools are installed by `.ci/test` into `.tools/helm` (or named by `HELM_PYTHON`);
//! without them the test fails with instructions.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use clap::Parser as _;
use serde_json::Value;

fn python() -> PathBuf {
    let path = std::env::var_os("HELM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/helm/bin/python")
        });
    assert!(
        path.exists(),
        "the chart-test Python was not found at {}: run ./.ci/test once (it installs the pinned tools into .tools/) or set HELM_PYTHON",
        path.display()
    );
    path
}

#[test]
fn the_chart_lints_renders_validates_and_refuses_bad_values() {
    let scratch = tempfile::tempdir().expect("scratch folder");
    let prices = scratch.path().join("price-list.toml");
    let checked = Command::new(python())
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/chart/check_chart.py"))
        .arg("--price-list-out")
        .arg(&prices)
        .arg("--args-out")
        .arg(scratch.path().join("args.json"))
        .output()
        .expect("run tests/chart/check_chart.py");
    let report = String::from_utf8_lossy(&checked.stdout);
    // The report (lint, validation summary per version, refusals) is shown with --nocapture.
    eprintln!("{report}");
    assert!(
        checked.status.success(),
        "the chart checks failed:\n{report}\n{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(report.contains("all chart checks passed"), "{report}");

    let list = licensing::price_list::load(&prices)
        .unwrap_or_else(|e| panic!("the production values' price list is refused: {e}"));
    assert_eq!(list.name(), "contact-center-2027");

    let rendered: Value = serde_json::from_str(
        &std::fs::read_to_string(scratch.path().join("args.json")).expect("args.json"),
    )
    .expect("args.json is JSON");
    let cases = |which: &str| {
        let cases = rendered[which].as_object().expect("cases").clone();
        assert!(!cases.is_empty(), "no {which} command lines rendered");
        cases
    };
    let files = Files::new(scratch.path());
    for (case, command) in cases("server") {
        let args = files.localise(&command);
        let parsed = licensing::config::Args::try_parse_from(&args)
            .unwrap_or_else(|e| panic!("{case}: the service refuses the chart's flags: {e}"));
        let config = licensing::config::Config::from_args(parsed, Vec::new())
            .unwrap_or_else(|e| panic!("{case}: {e}\n{args:?}"));
        assert!(config.health_listen.is_some(), "{case}: no health port");
        assert!(
            config.authentication.is_on(),
            "{case}: authentication is off"
        );
    }
    for (case, command) in cases("collector") {
        let args = files.localise(&command);
        let parsed = licensing::collector::config::Args::try_parse_from(&args)
            .unwrap_or_else(|e| panic!("{case}: the collector refuses the chart's flags: {e}"));
        licensing::collector::config::Config::from_args(parsed, Vec::new())
            .unwrap_or_else(|e| panic!("{case}: {e}\n{args:?}"));
    }
}

/// The files a rendered command line names, made under a scratch folder with valid contents.
struct Files<'a> {
    root: &'a Path,
}

impl<'a> Files<'a> {
    fn new(root: &'a Path) -> Self {
        Files { root }
    }

    /// `command` (the binary, then its flags) with every absolute path moved under the scratch
    /// folder, the file it names made, and the pod's `$(POD_NAME)` given a value.
    fn localise(&self, command: &Value) -> Vec<String> {
        let command: Vec<String> = command
            .as_array()
            .expect("a command line")
            .iter()
            .map(|a| a.as_str().expect("an argument").to_owned())
            .collect();
        let mut args = vec![command[0].clone()];
        for arg in &command[1..] {
            let arg = arg.replace("$(POD_NAME)", "gateway-7d9f-x2k");
            let Some((flag, value)) = arg.split_once('=') else {
                args.push(arg);
                continue;
            };
            let value = match value.strip_prefix('/') {
                Some(relative) => {
                    let path = self.root.join(relative);
                    self.make(flag, &path);
                    path.display().to_string()
                }
                None => value.to_owned(),
            };
            args.push(format!("{flag}={value}"));
        }
        args
    }

    fn make(&self, flag: &str, path: &Path) {
        let text = match flag {
            "--api-keys" => {
                licensing::config::NewKey {
                    id: "operator-1".to_owned(),
                    subject: "operator".to_owned(),
                    accounts: vec!["*".to_owned()],
                    rights: vec!["admin".to_owned()],
                    keys_file: None,
                }
                .create()
                .expect("a key")
                .1
            }
            "--api-key-file" => licensing::auth::api_keys::new_secret().expect("random").0,
            "--jwks" => jwks(),
            "--client-certificates" => "[[certificate]]\nuri = \"spiffe://cluster.local/ns/agents/sa/collector\"\nsubject = \"collector\"\naccounts = [\"*\"]\nrights = [\"ingest\"]\n".to_owned(),
            "--price-list" => licensing::price_list::SAMPLE.to_owned(),
            "--tls-cert" | "--tls-key" | "--tls-client-ca" | "--ca-file" => {
                return self.certificates(path);
            }
            // Folders the binaries make themselves; files they follow may not exist yet.
            "--data-dir" | "--spool-dir" | "--follow" => return,
            other => panic!("the chart names a path for {other}: make its file in this test"),
        };
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    /// A self-signed certificate for `localhost`: `tls.crt` and `tls.key` beside it, and its PEM
    /// at `path` for the CA flags.
    fn certificates(&self, path: &Path) {
        let folder = path.parent().expect("a parent");
        std::fs::create_dir_all(folder).expect("mkdir");
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
        let certificate = certified.cert.pem();
        std::fs::write(folder.join("tls.crt"), &certificate).expect("write");
        std::fs::write(
            folder.join("tls.key"),
            certified.signing_key.serialize_pem(),
        )
        .expect("write");
        if !path.ends_with("tls.crt") && !path.ends_with("tls.key") {
            std::fs::write(path, &certificate).expect("write");
        }
    }
}

/// A JWKS with one Ed25519 public key, of the test fixture.
fn jwks() -> String {
    let pem = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt/ed25519-a.pem"),
    )
    .expect("fixture");
    let key = jsonwebtoken::EncodingKey::from_ed_pem(&pem).expect("Ed25519 key");
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, jsonwebtoken::Algorithm::EdDSA)
        .expect("public JWK");
    jwk.common.key_id = Some("a".to_owned());
    serde_json::json!({ "keys": [jwk] }).to_string()
}
