//! Authentication for the benchmarks: a server that requires credentials, configured as a
//! deployment would be (an API keys file and a JWKS file, both watched, and a per-principal call
//! rate set high enough not to refuse the load, so that its cost is measured without its effect),
//! and the bearer the client presents on every call.

use std::{num::NonZeroU32, path::Path};

use anyhow::Context as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use licensing::auth::{
    ApiKeys, Authentication, CallRate, Credentials, Jwks, TokenRules, Tokens, Watched,
    api_keys::new_secret,
};
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::Interceptor,
};

/// How a benchmark's client authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Auth {
    /// Authentication off (the server's loopback default).
    Off,
    /// An API key (`lk_…`) as the bearer.
    ApiKey,
    /// An EdDSA-signed JWT as the bearer.
    Jwt,
}

/// The issuer and audience of the benchmark's tokens.
const ISSUER: &str = "https://id.bench.invalid";
const AUDIENCE: &str = "licensing";
/// The call rate of each principal: far above what two cores serve, so nothing is refused.
const CALLS_PER_SECOND: u32 = 10_000_000;
/// A PKCS#8 v1 Ed25519 private key is this prefix and the 32-byte seed (RFC 8410).
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// What a server and its clients are given for one [`Auth`].
#[derive(Debug)]
pub(crate) struct Setup {
    /// The server's authentication.
    pub(crate) authentication: Authentication,
    /// The server's per-principal call rate.
    pub(crate) call_rate: Option<CallRate>,
    /// What a call presents with an API key.
    api_key: Bearer,
    /// What a call presents with a token.
    token: Bearer,
    /// The tokens' signing key, for the in-process timings.
    signing: Option<EncodingKey>,
    _files: Option<tempfile::TempDir>,
}

/// Adds the `authorization` header to every call, when there is one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// No credential.
    pub(crate) fn none() -> Bearer {
        Bearer(None)
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl Setup {
    /// What a client presents to be authenticated by `auth`.
    pub(crate) fn bearer(&self, auth: Auth) -> Bearer {
        match auth {
            Auth::Off => Bearer::none(),
            Auth::ApiKey => self.api_key.clone(),
            Auth::Jwt => self.token.clone(),
        }
    }

    /// For `Auth::Off`, no authentication; otherwise the server's credentials (both an API key
    /// and a JWKS) and a bearer of each, in temporary files.
    pub(crate) fn new(auth: Auth) -> anyhow::Result<Setup> {
        if auth == Auth::Off {
            return Ok(Setup {
                authentication: Authentication::Off,
                call_rate: None,
                api_key: Bearer(None),
                token: Bearer(None),
                signing: None,
                _files: None,
            });
        }
        let files = tempfile::tempdir().context("credentials folder")?;
        let (secret, hash) = new_secret().context("randomness")?;
        let keys_path = files.path().join("keys.toml");
        write(
            &keys_path,
            &format!(
                "[[key]]\nid = \"bench\"\nsubject = \"bench\"\nsha256 = \"{hash}\"\naccounts = [\"*\"]\nrights = [\"admin\"]\n"
            ),
        )?;
        let api_keys =
            Watched::load(&keys_path, "API keys", ApiKeys::parse).map_err(anyhow::Error::msg)?;

        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).context("randomness")?;
        let der: Vec<u8> = ED25519_PKCS8_PREFIX.iter().chain(&seed).copied().collect();
        let key = EncodingKey::from_ed_der(&der);
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::EdDSA).context("public key")?;
        jwk.common.key_id = Some("bench".to_owned());
        let jwks_path = files.path().join("jwks.json");
        write(
            &jwks_path,
            &serde_json::json!({ "keys": [jwk] }).to_string(),
        )?;
        let jwks = Watched::load(&jwks_path, "JWKS", |text| {
            Jwks::parse(text, &[Algorithm::EdDSA])
        })
        .map_err(anyhow::Error::msg)?;
        let tokens = Tokens::new(
            TokenRules {
                issuer: ISSUER.to_owned(),
                audience: AUDIENCE.to_owned(),
                algorithms: vec![Algorithm::EdDSA],
            },
            jwks,
        );
        let now = jsonwebtoken::get_current_timestamp();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("bench".to_owned());
        let token = jsonwebtoken::encode(
            &header,
            &serde_json::json!({
                "iss": ISSUER, "aud": AUDIENCE, "sub": "bench",
                "iat": now, "nbf": now, "exp": now + 24 * 3600,
                "accounts": ["*"], "rights": ["admin"],
            }),
            &key,
        )
        .context("signing the token")?;

        let bearer = |presented: &str| -> anyhow::Result<Bearer> {
            Ok(Bearer(Some(
                MetadataValue::try_from(format!("Bearer {presented}"))
                    .context("the bearer header")?,
            )))
        };
        Ok(Setup {
            authentication: Authentication::with(Credentials {
                api_keys: Some(api_keys),
                tokens: Some(tokens),
                certificates: None,
            }),
            call_rate: NonZeroU32::new(CALLS_PER_SECOND).map(CallRate::new),
            api_key: bearer(&secret)?,
            token: bearer(&token)?,
            signing: Some(key),
            _files: Some(files),
        })
    }
}

/// Nanoseconds per authentication in process, each kind timed over `calls` calls.
#[derive(Debug)]
pub(crate) struct AuthTimings {
    /// An API key: hashed and compared with every key.
    pub(crate) api_key_ns: f64,
    /// A token seen before (remembered).
    pub(crate) token_remembered_ns: f64,
    /// A token the same connection presented before (its memo), and an API key likewise.
    pub(crate) on_connection_ns: [f64; 2],
    /// A token never seen: its signature verified.
    pub(crate) token_new_ns: f64,
    /// The per-principal call-rate check.
    pub(crate) call_rate_ns: f64,
    /// A remembered token and the call-rate check, on one thread and then on two at once
    /// (as the server's two workers would): nanoseconds per call on each thread.
    pub(crate) token_and_rate_ns: [f64; 2],
}

impl Setup {
    /// Times `Authentication::authenticate` with each credential, in process.
    pub(crate) fn time(&self, calls: u32) -> anyhow::Result<AuthTimings> {
        let Some(key) = &self.signing else {
            anyhow::bail!("authentication is off");
        };
        let headers = |value: &MetadataValue<Ascii>| {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_bytes(value.as_bytes())
                    .unwrap_or(http::HeaderValue::from_static("")),
            );
            headers
        };
        let per_call = |headers: &[http::HeaderMap]| -> anyhow::Result<f64> {
            let started = std::time::Instant::now();
            for headers in headers {
                std::hint::black_box(
                    self.authentication
                        .authenticate(headers, None)
                        .map_err(|e| anyhow::anyhow!("refused: {e:?}"))?,
                );
            }
            Ok(started.elapsed().as_nanos() as f64 / headers.len() as f64)
        };
        let repeat = |bearer: &Bearer| -> anyhow::Result<Vec<http::HeaderMap>> {
            let value = bearer.0.as_ref().context("a bearer")?;
            Ok((0..calls).map(|_| headers(value)).collect())
        };
        let on_connection = |headers: &[http::HeaderMap]| -> anyhow::Result<f64> {
            let memo = licensing::auth::ConnectionMemo::default();
            let started = std::time::Instant::now();
            for headers in headers {
                std::hint::black_box(
                    self.authentication
                        .authenticate_on(headers, None, Some(&memo))
                        .map_err(|e| anyhow::anyhow!("refused: {e:?}"))?,
                );
            }
            Ok(started.elapsed().as_nanos() as f64 / headers.len() as f64)
        };
        let on_connection_ns = [
            on_connection(&repeat(&self.token)?)?,
            on_connection(&repeat(&self.api_key)?)?,
        ];
        let api_key_ns = per_call(&repeat(&self.api_key)?)?;
        let token_remembered_ns = per_call(&repeat(&self.token)?)?;
        // Distinct tokens (their `jti` differs), each verified once: signed before the clock runs.
        let now = jsonwebtoken::get_current_timestamp();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("bench".to_owned());
        let fresh = (0..calls.min(2_000))
            .map(|n| {
                let token = jsonwebtoken::encode(
                    &header,
                    &serde_json::json!({
                        "iss": ISSUER, "aud": AUDIENCE, "sub": "bench", "jti": n,
                        "iat": now, "nbf": now, "exp": now + 3600,
                        "accounts": ["*"], "rights": ["admin"],
                    }),
                    key,
                )?;
                Ok(headers(&MetadataValue::try_from(format!(
                    "Bearer {token}"
                ))?))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let token_new_ns = per_call(&fresh)?;
        let rate = self.call_rate.as_ref().context("a call rate")?;
        let started = std::time::Instant::now();
        for _ in 0..calls {
            rate.check(std::hint::black_box("bench"))
                .map_err(|e| anyhow::anyhow!("over the rate: {e:?}"))?;
        }
        let call_rate_ns = started.elapsed().as_nanos() as f64 / f64::from(calls);
        let token_headers = repeat(&self.token)?;
        let token_and_rate = || -> anyhow::Result<f64> {
            let started = std::time::Instant::now();
            for headers in &token_headers {
                let principal = self
                    .authentication
                    .authenticate(headers, None)
                    .map_err(|e| anyhow::anyhow!("refused: {e:?}"))?;
                rate.check(&principal.subject)
                    .map_err(|e| anyhow::anyhow!("over the rate: {e:?}"))?;
            }
            Ok(started.elapsed().as_nanos() as f64 / token_headers.len() as f64)
        };
        let alone = token_and_rate()?;
        let together = std::thread::scope(|scope| {
            let other = scope.spawn(token_and_rate);
            let mine = token_and_rate();
            let other = other
                .join()
                .map_err(|_| anyhow::anyhow!("the second thread panicked"))?;
            anyhow::Ok((mine? + other?) / 2.0)
        })?;
        Ok(AuthTimings {
            on_connection_ns,
            token_and_rate_ns: [alone, together],
            api_key_ns,
            token_remembered_ns,
            token_new_ns,
            call_rate_ns,
        })
    }
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
