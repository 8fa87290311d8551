//! TLS for the service: the server's certificate chain and key, and optionally a client CA, from
//! PEM files. rustls with the ring provider, TLS 1.2 and 1.3, ALPN `h2` (gRPC).
//!
//! With a client CA, the server asks every client for a certificate and verifies one presented
//! against that CA (an untrusted issuer or an expired certificate fails the handshake). A client
//! may still connect without one and authenticate with a bearer credential instead; a verified
//! certificate identifies its holder only through the allow-list ([`crate::auth::certificates`]).

use std::{path::Path, sync::Arc};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
};
use tokio_rustls::TlsAcceptor;

/// A TLS acceptor (its `Debug` shows nothing of the keys).
#[derive(Clone)]
pub struct Tls(pub TlsAcceptor);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(…)")
    }
}

/// The files TLS is configured from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate chain, leaf first (PEM).
    pub certificate: std::path::PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
    /// CA certificates that sign client certificates (PEM), for mutual TLS.
    pub client_ca: Option<std::path::PathBuf>,
}

/// Reads the PEM certificates of `path`; at least one.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read it: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if certificates.is_empty() {
        return Err("holds no PEM certificate".to_owned());
    }
    Ok(certificates)
}

/// Parses PEM certificates; at least one.
pub fn certificates_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if certificates.is_empty() {
        return Err("holds no PEM certificate".to_owned());
    }
    Ok(certificates)
}

/// Reads the PEM private key of `path`.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("no PEM private key: {e}"))
}

/// The crypto provider every TLS configuration of this crate uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsFiles {
    /// The acceptor for these files; each problem names its file.
    pub fn acceptor(&self) -> Result<TlsAcceptor, String> {
        let chain = certificates(&self.certificate)
            .map_err(|e| format!("--tls-cert {:?}: {e}", self.certificate.display()))?;
        let key = private_key(&self.key)
            .map_err(|e| format!("--tls-key {:?}: {e}", self.key.display()))?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let named = |e: String| format!("--tls-client-ca {:?}: {e}", path.display());
                let mut roots = RootCertStore::empty();
                for certificate in certificates(path).map_err(named)? {
                    roots
                        .add(certificate)
                        .map_err(|e| named(format!("not a CA certificate: {e}")))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .allow_unauthenticated()
                        .build()
                        .map_err(|e| named(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            format!(
                "--tls-cert {:?} and --tls-key {:?}: {e}",
                self.certificate.display(),
                self.key.display()
            )
        })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}
