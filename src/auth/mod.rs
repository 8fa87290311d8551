//! Who is calling: one tower layer in front of every service authenticates each call and puts
//! its [`Principal`] into the request, for the handlers to check against the [`rules`].
//!
//! A caller presents one of:
//! - `authorization: Bearer lk_…`, a static API key ([`api_keys`]);
//! - `authorization: Bearer <JWT>`, a token signed by a key of the JWKS file ([`tokens`]);
//! - over TLS, a client certificate the handshake verified, whose SAN URI is on the allow-list
//!   ([`certificates`]); used when the call has no `authorization` header.
//!
//! Every credentials file is read again when it changes ([`watched`]). With no credential
//! configured, authentication is off: every call is the `unauthenticated` principal with every
//! right, and the service serves loopback only unless told `--insecure`. Health checks are always
//! answered without credentials, since Kubernetes probes cannot present any. A refused credential
//! is UNAUTHENTICATED with a reason that never repeats the secret. An authenticated principal over
//! its call rate ([`rate`]) is RESOURCE_EXHAUSTED.

pub mod api_keys;
pub mod certificates;
pub mod rate;
pub mod rules;
pub mod tokens;
pub mod watched;

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, LazyLock},
    task::{Context, Poll},
};

use http::HeaderMap;
use licensing_core::Principal;
use tonic::Status;
use tower_layer::Layer;
use tower_service::Service;

pub use api_keys::ApiKeys;
pub use certificates::{ClientCertificate, ClientIdentities};
pub use rate::CallRate;
pub use tokens::{Jwks, TokenRules, Tokens};
pub use watched::Watched;

use crate::transport::PeerInfo;

/// Paths always answered without credentials: Kubernetes probes present none.
const HEALTH_PATH: &str = "/grpc.health.v1.Health/";
/// Server reflection's paths (v1 and v1alpha): answered without credentials unless configured
/// otherwise. It describes the contract, which is public anyway, and lets `grpcurl` find the
/// health service without a key.
const REFLECTION_PATH: &str = "/grpc.reflection.";

/// The principal of every call when authentication is off.
static UNAUTHENTICATED: LazyLock<Arc<Principal>> =
    LazyLock::new(|| Arc::new(Principal::unauthenticated()));

/// How callers authenticate.
#[derive(Debug, Clone, Default)]
pub enum Authentication {
    /// Not at all: every caller has every right (loopback only, or `--insecure`).
    #[default]
    Off,
    /// With one of these credentials.
    On(Arc<Credentials>),
}

/// The credentials the service accepts; each kind is optional.
#[derive(Debug, Default)]
pub struct Credentials {
    /// Static API keys.
    pub api_keys: Option<Arc<Watched<ApiKeys>>>,
    /// JWT bearer tokens.
    pub tokens: Option<Tokens>,
    /// The allow-list of client certificates' SAN URIs (with TLS and a client CA).
    pub certificates: Option<Arc<Watched<ClientIdentities>>>,
}

impl Credentials {
    /// Whether no kind of credential is configured.
    pub fn is_empty(&self) -> bool {
        self.api_keys.is_none() && self.tokens.is_none() && self.certificates.is_none()
    }

    /// Watches every credentials file for changes (see [`watched`]).
    pub fn watch(&self) {
        if let Some(keys) = &self.api_keys {
            keys.watch();
        }
        if let Some(tokens) = &self.tokens {
            tokens.jwks().watch();
        }
        if let Some(certificates) = &self.certificates {
            certificates.watch();
        }
    }

    /// What a caller may present, for the message to one who presented nothing.
    fn accepted(&self) -> String {
        let mut kinds = Vec::new();
        if self.api_keys.is_some() {
            kinds.push("\"authorization: Bearer <API key>\"");
        }
        if self.tokens.is_some() {
            kinds.push("\"authorization: Bearer <JWT>\"");
        }
        if self.certificates.is_some() {
            kinds.push("a client certificate");
        }
        kinds.join(" or ")
    }
}

impl Authentication {
    /// Authentication with `credentials`, or off when there are none.
    pub fn with(credentials: Credentials) -> Authentication {
        if credentials.is_empty() {
            Authentication::Off
        } else {
            Authentication::On(Arc::new(credentials))
        }
    }

    /// Whether callers must authenticate.
    pub fn is_on(&self) -> bool {
        matches!(self, Authentication::On(_))
    }

    /// Starts watching the credentials files, if any.
    pub fn watch(&self) {
        if let Authentication::On(credentials) = self {
            credentials.watch();
        }
    }

    /// The principal of a call with these headers over a connection whose client presented
    /// `certificate`, or why it is refused.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        certificate: Option<&ClientCertificate>,
    ) -> Result<Arc<Principal>, Status> {
        self.authenticate_on(headers, certificate, None)
    }

    /// [`Authentication::authenticate`] on a connection that remembers the credential it last
    /// accepted: clients send the same one on every call, which then costs a comparison.
    pub fn authenticate_on(
        &self,
        headers: &HeaderMap,
        certificate: Option<&ClientCertificate>,
        memo: Option<&ConnectionMemo>,
    ) -> Result<Arc<Principal>, Status> {
        let credentials = match self {
            Authentication::Off => return Ok(UNAUTHENTICATED.clone()),
            Authentication::On(credentials) => credentials,
        };
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return match (certificate, &credentials.certificates) {
                (Some(certificate), Some(allowed)) => allowed
                    .current()
                    .principal(certificate)
                    .cloned()
                    .ok_or_else(|| {
                        Status::unauthenticated(format!(
                            "the client certificate's SAN URIs {:?} are not on the allow-list",
                            certificate.uris
                        ))
                    }),
                _ => Err(Status::unauthenticated(format!(
                    "authentication required: present {}",
                    credentials.accepted()
                ))),
            };
        };
        let value = value.to_str().unwrap_or_default();
        let Some(credential) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        else {
            return Err(Status::unauthenticated(
                "the authorization header must be \"Bearer <credential>\"",
            ));
        };
        let credential = credential.trim();
        if credential.starts_with(api_keys::SECRET_PREFIX) {
            let Some(keys) = &credentials.api_keys else {
                return Err(Status::unauthenticated(
                    "API keys are not configured on this service",
                ));
            };
            let keys = keys.current();
            let source = Arc::as_ptr(&keys).cast::<()>();
            if let Some(principal) = memo.and_then(|memo| memo.recall(credential, source, 0)) {
                return Ok(principal);
            }
            let principal = keys
                .authenticate(credential)
                .cloned()
                .ok_or_else(|| Status::unauthenticated("unknown or revoked API key"))?;
            if let Some(memo) = memo {
                memo.keep(Memo {
                    credential: credential.into(),
                    principal: principal.clone(),
                    source: Source::Keys(Arc::clone(&keys)),
                    until: u64::MAX,
                });
            }
            return Ok(principal);
        }
        if credential.bytes().filter(|b| *b == b'.').count() == 2 {
            let Some(tokens) = &credentials.tokens else {
                return Err(Status::unauthenticated(
                    "tokens are not configured on this service",
                ));
            };
            if let Some(memo) = memo {
                let jwks = tokens.jwks_in_force();
                let source = Arc::as_ptr(&jwks).cast::<()>();
                let now = jsonwebtoken::get_current_timestamp();
                if let Some(principal) = memo.recall(credential, source, now) {
                    return Ok(principal);
                }
            }
            let verified = tokens
                .verify_until(credential)
                .map_err(Status::unauthenticated)?;
            let principal = verified.principal.clone();
            if let Some(memo) = memo {
                memo.keep(Memo {
                    credential: credential.into(),
                    principal: verified.principal,
                    source: Source::Tokens(verified.jwks),
                    until: verified.until,
                });
            }
            return Ok(principal);
        }
        Err(Status::unauthenticated(
            "unknown kind of credential: an API key starts with \"lk_\", a JWT has three parts",
        ))
    }
}

/// The credential one connection last had accepted. It is kept only while the key set that
/// accepted it is the one in force (a reload of the keys or JWKS file forgets it) and, for a
/// token, until its `exp` and the leeway. The comparison need not be constant-time: a
/// connection is compared only with what it presented itself.
#[derive(Default)]
pub struct ConnectionMemo(std::sync::Mutex<Option<Memo>>);

impl std::fmt::Debug for ConnectionMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionMemo").finish_non_exhaustive()
    }
}

struct Memo {
    credential: Box<str>,
    principal: Arc<Principal>,
    /// Held so that its address, compared with the set in force, cannot be reused.
    source: Source,
    until: u64,
}

enum Source {
    Keys(Arc<ApiKeys>),
    Tokens(Arc<Jwks>),
}

impl Source {
    fn address(&self) -> *const () {
        match self {
            Source::Keys(keys) => Arc::as_ptr(keys).cast(),
            Source::Tokens(jwks) => Arc::as_ptr(jwks).cast(),
        }
    }
}

impl ConnectionMemo {
    /// The principal of `credential` if it is the one remembered, accepted by the key set at
    /// `source` (the one in force), and still valid at `now`.
    fn recall(&self, credential: &str, source: *const (), now: u64) -> Option<Arc<Principal>> {
        let memo = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        memo.as_ref()
            .filter(|memo| {
                std::ptr::eq(memo.source.address(), source)
                    && now <= memo.until
                    && *memo.credential == *credential
            })
            .map(|memo| memo.principal.clone())
    }

    fn keep(&self, memo: Memo) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(memo);
    }
}

/// A credential a client presents: never shown by `Debug`, so it cannot reach a log by mistake.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps `secret`.
    pub fn new(secret: &str) -> Secret {
        Secret(secret.into())
    }

    /// The `authorization` metadata value that presents it.
    pub fn bearer(&self) -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
        // A secret is checked to be printable ASCII when it is read, so this never fails.
        format!("Bearer {}", self.0)
            .parse()
            .unwrap_or_else(|_| tonic::metadata::MetadataValue::from_static(""))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The layer, for `Server::layer`.
#[derive(Debug, Clone, Default)]
pub struct AuthLayer {
    authentication: Authentication,
    private_reflection: bool,
    rate: Option<CallRate>,
}

impl AuthLayer {
    /// Authenticates every call with `authentication`; reflection too when
    /// `private_reflection`. Authenticated principals are held to `rate`.
    pub fn new(
        authentication: Authentication,
        private_reflection: bool,
        rate: Option<CallRate>,
    ) -> AuthLayer {
        AuthLayer {
            authentication,
            private_reflection,
            rate,
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Authenticated<S> {
        Authenticated {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service the layer wraps around the server's routes.
#[derive(Debug, Clone)]
pub struct Authenticated<S> {
    inner: S,
    layer: AuthLayer,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for Authenticated<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    ResponseBody: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<ResponseBody>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<RequestBody>) -> Self::Future {
        let path = request.uri().path();
        let open = path.starts_with(HEALTH_PATH)
            || (!self.layer.private_reflection && path.starts_with(REFLECTION_PATH));
        if !open {
            let peer = request.extensions().get::<PeerInfo>();
            let certificate = peer.and_then(|peer| peer.certificate.as_deref());
            let memo = peer.map(|peer| &*peer.memo);
            let checked = self
                .layer
                .authentication
                .authenticate_on(request.headers(), certificate, memo)
                .and_then(|principal| match &self.layer.rate {
                    Some(rate) if self.layer.authentication.is_on() => {
                        rate.check(&principal.subject).map(|()| principal)
                    }
                    _ => Ok(principal),
                });
            match checked {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                }
                Err(refused) => return Box::pin(async move { Ok(refused.into_http()) }),
            }
        }
        Box::pin(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(
                http::header::AUTHORIZATION,
                value.parse().expect("header value"),
            );
        }
        headers
    }

    #[test]
    fn off_means_every_right_and_on_means_a_valid_key() {
        let off = Authentication::Off;
        assert_eq!(
            *off.authenticate(&headers(None), None).expect("off"),
            Principal::unauthenticated()
        );
        let (secret, hash) = api_keys::new_secret().expect("random");
        let keys = format!(
            "[[key]]\nid = \"k\"\nsubject = \"ops\"\nsha256 = \"{hash}\"\naccounts = [\"*\"]\nrights = [\"admin\"]\n"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keys.toml");
        std::fs::write(&path, keys).expect("write");
        let keys = Watched::load(&path, "API keys", ApiKeys::parse).expect("valid");
        let on = Authentication::with(Credentials {
            api_keys: Some(keys),
            ..Credentials::default()
        });
        assert!(on.is_on());
        let principal = on
            .authenticate(&headers(Some(&format!("Bearer {secret}"))), None)
            .expect("valid key");
        assert_eq!(principal.actor(), "api-key:ops");
        for (header, reason) in [
            (None, "authentication required"),
            (Some("Basic abc"), "must be \"Bearer"),
            (Some("Bearer lk_0000"), "unknown or revoked API key"),
            (Some("Bearer eyJ.x.y"), "tokens are not configured"),
            (Some("Bearer what"), "unknown kind of credential"),
        ] {
            let refused = on
                .authenticate(&headers(header), None)
                .expect_err("refused");
            assert_eq!(refused.code(), tonic::Code::Unauthenticated);
            assert!(refused.message().contains(reason), "{refused:?}");
            assert!(
                !refused.message().contains("lk_0000"),
                "the secret is never echoed"
            );
        }
    }

    #[test]
    fn a_connection_remembers_its_key_only_while_the_keys_file_is_unchanged() {
        let (secret, hash) = api_keys::new_secret().expect("random");
        let entry = |id: &str, hash: &str| {
            format!(
                "[[key]]\nid = \"{id}\"\nsubject = \"ops\"\nsha256 = \"{hash}\"\naccounts = [\"*\"]\nrights = [\"view\"]\n"
            )
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keys.toml");
        std::fs::write(&path, entry("k1", &hash)).expect("write");
        let keys = Watched::load(&path, "API keys", ApiKeys::parse).expect("valid");
        let on = Authentication::with(Credentials {
            api_keys: Some(keys.clone()),
            ..Credentials::default()
        });
        let memo = ConnectionMemo::default();
        let bearer = headers(Some(&format!("Bearer {secret}")));
        for _ in 0..2 {
            let principal = on
                .authenticate_on(&bearer, None, Some(&memo))
                .expect("valid key");
            assert_eq!(principal.actor(), "api-key:ops");
        }
        let other = headers(Some("Bearer lk_0000"));
        assert!(on.authenticate_on(&other, None, Some(&memo)).is_err());
        on.authenticate_on(&bearer, None, Some(&memo))
            .expect("still valid after another credential was refused");
        // Revoked: the key's entry is replaced by another key's.
        let (_, other_hash) = api_keys::new_secret().expect("random");
        std::fs::write(&path, entry("k2", &other_hash)).expect("write");
        assert!(keys.reload());
        let refused = on
            .authenticate_on(&bearer, None, Some(&memo))
            .expect_err("a revoked key is refused on a connection that used it");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn a_remembered_token_is_forgotten_at_its_expiry() {
        let set = || {
            let (_, hash) = api_keys::new_secret().expect("random");
            Arc::new(
                ApiKeys::parse(&format!(
                    "[[key]]\nid = \"k\"\nsubject = \"ops\"\nsha256 = \"{hash}\"\naccounts = [\"*\"]\nrights = [\"view\"]\n"
                ))
                .expect("valid"),
            )
        };
        let in_force = set();
        let source = Arc::as_ptr(&in_force).cast::<()>();
        let memo = ConnectionMemo::default();
        memo.keep(Memo {
            credential: "a.b.c".into(),
            principal: Arc::new(Principal::unauthenticated()),
            source: Source::Keys(in_force.clone()),
            until: 1_000,
        });
        assert!(
            memo.recall("a.b.c", source, 1_000).is_some(),
            "valid to the second"
        );
        assert!(memo.recall("a.b.c", source, 1_001).is_none(), "expired");
        assert!(memo.recall("a.b.d", source, 999).is_none(), "another token");
        let reloaded = set();
        let reloaded = Arc::as_ptr(&reloaded).cast::<()>();
        assert!(
            memo.recall("a.b.c", reloaded, 999).is_none(),
            "another key set"
        );
    }
}
