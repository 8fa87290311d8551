//! JWT bearer tokens, signed by an identity provider whose public keys are in a JWKS file.
//!
//! A token is accepted when all of these hold:
//! - its header names an algorithm of the configured list (EdDSA, ES256, RS256: `none` and every
//!   HMAC algorithm are never accepted, so a public key can never serve as an HMAC secret) and a
//!   `kid` of the JWKS, and that key is of that algorithm;
//! - its signature verifies with that key;
//! - `iss` and `aud` are the configured ones; `exp`, `iss`, `aud` and `sub` are present; `exp` and
//!   `nbf` (if present) are numbers and hold now, give or take [`LEEWAY_SECONDS`];
//! - `accounts` (account ids, or `["*"]`) and `rights` (`view`, `update`, `ingest`, `admin`) are
//!   valid.
//!
//! `jsonwebtoken`'s defaults are weaker (only `exp` required, `nbf` not checked): every rule
//! above is set explicitly in [`Tokens::validation`].
//!
//! Verifying a signature costs tens of microseconds, more than many calls take. A token that
//! verified is remembered (by its SHA-256) until its `exp`, for as long as the same JWKS is in
//! force; a reloaded JWKS starts afresh, so a removed key stops working at once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm},
};
use licensing_core::{Credential, Principal};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::{
    api_keys::{parse_accounts, parse_rights},
    watched::Watched,
};

/// Seconds of clock difference tolerated on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 30;
/// Verified tokens remembered at most; the memory is emptied when it is full.
const REMEMBERED_TOKENS: usize = 10_000;
/// Longest `sub` accepted (identity providers' subjects are opaque strings: `auth0|…`, e-mail
/// addresses, UUIDs).
const MAX_SUBJECT_BYTES: usize = 255;
/// Longest `kid` repeated in an error message.
const KID_SHOWN: usize = 64;

/// The algorithms a deployment may accept.
pub const ACCEPTABLE: [Algorithm; 3] = [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256];

/// Parses an algorithm's name, refusing all but [`ACCEPTABLE`].
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    ACCEPTABLE
        .into_iter()
        .find(|alg| format!("{alg:?}") == name)
        .ok_or_else(|| format!("{name:?} is not accepted: EdDSA, ES256 or RS256"))
}

/// What a token must say to be accepted.
#[derive(Debug, Clone)]
pub struct TokenRules {
    /// The `iss` claim.
    pub issuer: String,
    /// The `aud` claim (one of its values, when it is a list).
    pub audience: String,
    /// Accepted signature algorithms: a subset of [`ACCEPTABLE`].
    pub algorithms: Vec<Algorithm>,
}

/// The public keys of a JWKS file, by `kid`.
pub struct Jwks {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Jwks {
    /// Parses a JWKS document, keeping the keys of `algorithms`. Keys of other algorithms (an
    /// identity provider often publishes several) are skipped and logged; symmetric keys and
    /// keys without a `kid` are refused, and so is a set with no usable key.
    pub fn parse(text: &str, algorithms: &[Algorithm]) -> Result<Jwks, String> {
        let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut keys = HashMap::new();
        let mut problems = Vec::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            let Some(kid) = jwk.common.key_id.clone() else {
                problems.push(format!("keys[{i}]: no kid"));
                continue;
            };
            let inferred = match &jwk.algorithm {
                AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                    Some(Algorithm::EdDSA)
                }
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                    Some(Algorithm::ES256)
                }
                AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
                AlgorithmParameters::OctetKey(_) => {
                    problems.push(format!(
                        "keys[{i}] {kid:?}: a symmetric key; only public keys are accepted"
                    ));
                    continue;
                }
                _ => None,
            };
            let declared = jwk.common.key_algorithm.map(|alg| match alg {
                KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
                KeyAlgorithm::ES256 => Some(Algorithm::ES256),
                KeyAlgorithm::RS256 => Some(Algorithm::RS256),
                _ => None,
            });
            let algorithm = match (inferred, declared) {
                (Some(inferred), None) => inferred,
                (Some(inferred), Some(Some(declared))) if inferred == declared => inferred,
                _ => {
                    tracing::warn!(kid, "JWKS key skipped: not an EdDSA, ES256 or RS256 key");
                    continue;
                }
            };
            if !algorithms.contains(&algorithm) {
                tracing::info!(
                    kid,
                    ?algorithm,
                    "JWKS key skipped: its algorithm is not accepted"
                );
                continue;
            }
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    if keys.insert(kid.clone(), (key, algorithm)).is_some() {
                        problems.push(format!("kid {kid:?}: used twice"));
                    }
                }
                Err(e) => problems.push(format!("keys[{i}] {kid:?}: {e}")),
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        if keys.is_empty() {
            return Err("no key of an accepted algorithm".to_owned());
        }
        Ok(Jwks { keys })
    }

    /// How many keys are in force.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is in force (a parsed set always has one).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The claims read from a token (the registered ones are checked by `jsonwebtoken`).
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    accounts: Vec<String>,
    rights: Vec<String>,
}

/// A verified token: its principal, the JWKS that verified it, and until when it holds.
#[derive(Debug)]
pub struct Verified {
    /// Who presented it.
    pub principal: Arc<Principal>,
    /// The key set it was verified against: a reload makes it stale.
    pub jwks: Arc<Jwks>,
    /// The last second (Unix time) it may be accepted in: its `exp` and the leeway.
    pub until: u64,
}

struct Remembered {
    jwks: Arc<Jwks>,
    principal: Arc<Principal>,
    exp: u64,
}

/// Verifies tokens against the JWKS in force.
pub struct Tokens {
    rules: TokenRules,
    jwks: Arc<Watched<Jwks>>,
    remembered: Mutex<HashMap<[u8; 32], Remembered>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("rules", &self.rules)
            .field("jwks", &self.jwks)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Verifies with the keys of `jwks` under `rules`.
    pub fn new(rules: TokenRules, jwks: Arc<Watched<Jwks>>) -> Tokens {
        Tokens {
            rules,
            jwks,
            remembered: Mutex::new(HashMap::new()),
        }
    }

    /// The JWKS file, for reloading.
    pub fn jwks(&self) -> &Arc<Watched<Jwks>> {
        &self.jwks
    }

    /// The principal of `token`, or why it is refused (a message that never repeats the token).
    pub fn verify(&self, token: &str) -> Result<Arc<Principal>, String> {
        self.verify_until(token).map(|verified| verified.principal)
    }

    /// The principal of `token` with the JWKS it was verified against and the last second
    /// (leeway included) it may be accepted in; or why it is refused.
    pub fn verify_until(&self, token: &str) -> Result<Verified, String> {
        let jwks = self.jwks.current().clone();
        let now = jsonwebtoken::get_current_timestamp();
        let fingerprint: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        {
            let remembered = self
                .remembered
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(known) = remembered.get(&fingerprint)
                && Arc::ptr_eq(&known.jwks, &jwks)
                && now <= known.exp.saturating_add(LEEWAY_SECONDS)
            {
                return Ok(Verified {
                    principal: known.principal.clone(),
                    jwks: jwks.clone(),
                    until: known.exp.saturating_add(LEEWAY_SECONDS),
                });
            }
        }
        let (principal, exp) = self.verify_now(token, &jwks)?;
        let principal = Arc::new(principal);
        let verified = Verified {
            principal: principal.clone(),
            jwks: jwks.clone(),
            until: exp.saturating_add(LEEWAY_SECONDS),
        };
        let mut remembered = self
            .remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if remembered.len() >= REMEMBERED_TOKENS {
            remembered.clear();
        }
        remembered.insert(
            fingerprint,
            Remembered {
                jwks,
                principal,
                exp,
            },
        );
        Ok(verified)
    }

    /// The JWKS in force now.
    pub fn jwks_in_force(&self) -> arc_swap::Guard<Arc<Jwks>> {
        self.jwks.current()
    }

    fn verify_now(&self, token: &str, jwks: &Jwks) -> Result<(Principal, u64), String> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| format!("not a valid JWT: {e}"))?;
        if !self.rules.algorithms.contains(&header.alg) {
            return Err(format!(
                "the token's algorithm {:?} is not accepted (accepted: {})",
                header.alg,
                self.rules
                    .algorithms
                    .iter()
                    .map(|a| format!("{a:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let Some(kid) = header.kid.as_deref() else {
            return Err("the token names no key (kid)".to_owned());
        };
        let Some((key, algorithm)) = jwks.keys.get(kid) else {
            let shown: String = kid.chars().take(KID_SHOWN).collect();
            return Err(format!("the token's key {shown:?} is not in the JWKS"));
        };
        if *algorithm != header.alg {
            return Err(format!(
                "the token's key {kid:?} is an {algorithm:?} key, the token says {:?}",
                header.alg
            ));
        }
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation(*algorithm))
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => "the token's signature is not valid".to_owned(),
                ErrorKind::ExpiredSignature => "the token has expired (exp)".to_owned(),
                ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
                ErrorKind::InvalidIssuer => {
                    format!("the token's issuer is not {:?}", self.rules.issuer)
                }
                ErrorKind::InvalidAudience => {
                    format!("the token's audience is not {:?}", self.rules.audience)
                }
                ErrorKind::MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
                ErrorKind::InvalidClaimFormat(claim) => {
                    format!("the token's {claim} claim is malformed")
                }
                ErrorKind::Json(e) => format!("the token's claims are malformed: {e}"),
                _ => format!("the token is not valid: {e}"),
            })?
            .claims;
        let accounts =
            parse_accounts(&claims.accounts).map_err(|e| format!("the token's accounts: {e}"))?;
        let rights =
            parse_rights(&claims.rights).map_err(|e| format!("the token's rights: {e}"))?;
        if claims.sub.is_empty()
            || claims.sub.len() > MAX_SUBJECT_BYTES
            || !claims.sub.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(format!(
                "the token's sub: 1 to {MAX_SUBJECT_BYTES} printable ASCII characters, no spaces"
            ));
        }
        Ok((
            Principal {
                subject: claims.sub,
                credential: Credential::Token,
                accounts,
                rights,
            },
            claims.exp,
        ))
    }

    /// Every rule set explicitly: `jsonwebtoken`'s defaults require only `exp` and skip `nbf`.
    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.algorithms = vec![algorithm];
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.leeway = LEEWAY_SECONDS;
        validation.reject_tokens_expiring_in_less_than = 0;
        validation.set_issuer(&[&self.rules.issuer]);
        validation.set_audience(&[&self.rules.audience]);
        validation
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwks_keeps_public_keys_of_accepted_algorithms_only() {
        let ed = r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed"}"#;
        let hmac = r#"{"kty":"oct","k":"c2VjcmV0","kid":"shared"}"#;
        let no_kid =
            r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
        let jwks = Jwks::parse(&format!(r#"{{"keys":[{ed}]}}"#), &[Algorithm::EdDSA])
            .expect("an Ed25519 key");
        assert_eq!(jwks.len(), 1);
        let refused = Jwks::parse(&format!(r#"{{"keys":[{ed},{hmac}]}}"#), &[Algorithm::EdDSA])
            .expect_err("a symmetric key");
        assert!(refused.contains("\"shared\": a symmetric key"), "{refused}");
        let refused = Jwks::parse(&format!(r#"{{"keys":[{no_kid}]}}"#), &[Algorithm::EdDSA])
            .expect_err("no kid");
        assert!(refused.contains("keys[0]: no kid"), "{refused}");
        let refused = Jwks::parse(&format!(r#"{{"keys":[{ed}]}}"#), &[Algorithm::RS256])
            .expect_err("no key of an accepted algorithm");
        assert!(
            refused.contains("no key of an accepted algorithm"),
            "{refused}"
        );
        assert!(parse_algorithm("HS256").is_err());
        assert!(parse_algorithm("none").is_err());
        assert_eq!(parse_algorithm("ES256"), Ok(Algorithm::ES256));
    }
}
