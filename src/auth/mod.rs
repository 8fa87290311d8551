//! Who is calling: one tower layer in front of every service authenticates each call and puts
//! its [`Principal`] into the request, for the handlers to check against the [`rules`].
//!
//! Credentials come in `authorization: Bearer …`: an API key (`lk_…`, see [`api_keys`]). With no
//! credential configured, authentication is off: every call is the `unauthenticated` principal
//! with every right, and the service serves loopback only unless told `--insecure`. Health
//! checks are always answered without credentials, since Kubernetes probes cannot present any.
//! A refused credential is UNAUTHENTICATED with a reason that never repeats the secret.

pub mod api_keys;
pub mod rules;

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::HeaderMap;
use licensing_core::Principal;
use tonic::Status;
use tower_layer::Layer;
use tower_service::Service;

pub use api_keys::ApiKeys;

/// Paths always answered without credentials: Kubernetes probes present none.
const HEALTH_PATH: &str = "/grpc.health.v1.Health/";
/// Server reflection's paths (v1 and v1alpha): answered without credentials unless configured
/// otherwise. It describes the contract, which is public anyway, and lets `grpcurl` find the
/// health service without a key.
const REFLECTION_PATH: &str = "/grpc.reflection.";

/// How callers authenticate.
#[derive(Debug, Clone, Default)]
pub enum Authentication {
    /// Not at all: every caller has every right (loopback only, or `--insecure`).
    #[default]
    Off,
    /// With one of these credentials.
    On(Arc<Credentials>),
}

/// The credentials the service accepts.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// Static API keys.
    pub api_keys: ApiKeys,
}

impl Authentication {
    /// Authentication with `credentials`, or off when there are none.
    pub fn with(credentials: Credentials) -> Authentication {
        if credentials.api_keys.is_empty() {
            Authentication::Off
        } else {
            Authentication::On(Arc::new(credentials))
        }
    }

    /// Whether callers must authenticate.
    pub fn is_on(&self) -> bool {
        matches!(self, Authentication::On(_))
    }

    /// The principal of a call with these headers, or why it is refused.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, Status> {
        let credentials = match self {
            Authentication::Off => return Ok(Principal::unauthenticated()),
            Authentication::On(credentials) => credentials,
        };
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(Status::unauthenticated(
                "authentication required: send \"authorization: Bearer <API key>\"",
            ));
        };
        let value = value.to_str().unwrap_or_default();
        let Some(credential) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        else {
            return Err(Status::unauthenticated(
                "the authorization header must be \"Bearer <API key>\"",
            ));
        };
        let credential = credential.trim();
        if credential.starts_with(api_keys::SECRET_PREFIX) {
            return credentials
                .api_keys
                .authenticate(credential)
                .cloned()
                .ok_or_else(|| Status::unauthenticated("unknown or revoked API key"));
        }
        Err(Status::unauthenticated(
            "unknown kind of credential: an API key starts with \"lk_\"",
        ))
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
}

impl AuthLayer {
    /// Authenticates every call with `authentication`; reflection too when
    /// `private_reflection`.
    pub fn new(authentication: Authentication, private_reflection: bool) -> AuthLayer {
        AuthLayer {
            authentication,
            private_reflection,
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
            match self.layer.authentication.authenticate(request.headers()) {
                Ok(principal) => {
                    request.extensions_mut().insert(Arc::new(principal));
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
            off.authenticate(&headers(None)).expect("off"),
            Principal::unauthenticated()
        );
        let (secret, hash) = api_keys::new_secret().expect("random");
        let keys = ApiKeys::parse(&format!(
            "[[key]]\nid = \"k\"\nsubject = \"ops\"\nsha256 = \"{hash}\"\naccounts = [\"*\"]\nrights = [\"admin\"]\n"
        ))
        .expect("valid");
        let on = Authentication::with(Credentials { api_keys: keys });
        assert!(on.is_on());
        let principal = on
            .authenticate(&headers(Some(&format!("Bearer {secret}"))))
            .expect("valid key");
        assert_eq!(principal.actor(), "api-key:ops");
        for (header, reason) in [
            (None, "authentication required"),
            (Some("Basic abc"), "must be \"Bearer"),
            (Some("Bearer lk_0000"), "unknown or revoked API key"),
            (Some("Bearer eyJ.x.y"), "unknown kind of credential"),
        ] {
            let refused = on.authenticate(&headers(header)).expect_err("refused");
            assert_eq!(refused.code(), tonic::Code::Unauthenticated);
            assert!(refused.message().contains(reason), "{refused:?}");
            assert!(
                !refused.message().contains("lk_0000"),
                "the secret is never echoed"
            );
        }
    }
}
