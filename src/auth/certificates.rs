//! Client certificates (mutual TLS): a certificate the TLS handshake verified against the
//! configured client CA names its holder by a SAN URI (`spiffe://…` in most meshes), and an
//! allow-list maps that URI to a principal.
//!
//! ```toml
//! [[certificate]]
//! uri = "spiffe://example.org/ns/contact/sa/collector"
//! subject = "collector"        # the principal, as the audit trail names it
//! accounts = ["acme"]          # or ["*"]
//! rights = ["ingest"]
//! ```
//!
//! A verified certificate whose URIs are all absent from the list is refused: being signed by the
//! CA is not enough to be a caller.

use std::{collections::HashMap, sync::Arc};

use licensing_core::{Credential, IdKind, Principal};
use serde::Deserialize;

use super::api_keys::{parse_accounts, parse_rights};

/// What the TLS handshake established about the client: its verified certificate's SAN URIs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The URIs of its subject alternative names, in the certificate's order.
    pub uris: Vec<String>,
}

impl ClientCertificate {
    /// Reads the SAN URIs of a DER certificate the handshake verified.
    pub fn from_der(der: &[u8]) -> ClientCertificate {
        let Ok((_, certificate)) = x509_parser::parse_x509_certificate(der) else {
            return ClientCertificate::default();
        };
        let uris = certificate
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        x509_parser::extensions::GeneralName::URI(uri) => Some((*uri).to_owned()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        ClientCertificate { uris }
    }
}

/// The allow-list: SAN URI → principal.
#[derive(Debug, Clone, Default)]
pub struct ClientIdentities {
    by_uri: HashMap<String, Arc<Principal>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentitiesFile {
    #[serde(default)]
    certificate: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    uri: String,
    subject: String,
    accounts: Vec<String>,
    rights: Vec<String>,
}

impl ClientIdentities {
    /// Parses the allow-list's text; every problem found is reported, each naming its entry.
    pub fn parse(text: &str) -> Result<ClientIdentities, String> {
        let file: IdentitiesFile = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let mut problems = Vec::new();
        let mut by_uri = HashMap::new();
        for (i, entry) in file.certificate.into_iter().enumerate() {
            match principal(&entry) {
                Ok(principal) => {
                    if by_uri
                        .insert(entry.uri.clone(), Arc::new(principal))
                        .is_some()
                    {
                        problems.push(format!(
                            "certificate[{i}] uri {:?}: listed twice",
                            entry.uri
                        ));
                    }
                }
                Err(problem) => {
                    problems.push(format!("certificate[{i}] {:?} {problem}", entry.uri))
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        if by_uri.is_empty() {
            return Err("no certificate entry".to_owned());
        }
        Ok(ClientIdentities { by_uri })
    }

    /// The principal of the first of `certificate`'s URIs on the list.
    pub fn principal(&self, certificate: &ClientCertificate) -> Option<&Arc<Principal>> {
        certificate.uris.iter().find_map(|uri| self.by_uri.get(uri))
    }
}

fn principal(entry: &Entry) -> Result<Principal, String> {
    if !entry.uri.contains(':') || entry.uri.chars().any(char::is_whitespace) {
        return Err("uri: a URI such as spiffe://example.org/collector".to_owned());
    }
    licensing_core::ids::check(IdKind::Member, "subject", &entry.subject)
        .map_err(|e| format!("subject {}: {}", e.value, e.problem))?;
    let accounts = parse_accounts(&entry.accounts).map_err(|e| format!("accounts: {e}"))?;
    let rights = parse_rights(&entry.rights).map_err(|e| format!("rights: {e}"))?;
    Ok(Principal {
        subject: entry.subject.clone(),
        credential: Credential::Certificate,
        accounts,
        rights,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_uri_maps_to_its_principal_and_others_to_none() {
        let list = ClientIdentities::parse(
            "[[certificate]]\nuri = \"spiffe://example.org/collector\"\nsubject = \"collector\"\naccounts = [\"acme\"]\nrights = [\"ingest\"]\n",
        )
        .expect("valid");
        let listed = ClientCertificate {
            uris: vec![
                "spiffe://example.org/other".into(),
                "spiffe://example.org/collector".into(),
            ],
        };
        let principal = list.principal(&listed).expect("listed");
        assert_eq!(principal.actor(), "certificate:collector");
        let unlisted = ClientCertificate {
            uris: vec!["spiffe://example.org/other".into()],
        };
        assert!(list.principal(&unlisted).is_none());
        assert!(list.principal(&ClientCertificate::default()).is_none());
    }

    #[test]
    fn every_problem_of_the_list_is_named() {
        let problems = ClientIdentities::parse(
            "[[certificate]]\nuri = \"nope\"\nsubject = \"s\"\naccounts = [\"acme\"]\nrights = [\"view\"]\n\
             [[certificate]]\nuri = \"spiffe://x/y\"\nsubject = \"s\"\naccounts = [\"acme\"]\nrights = [\"fly\"]\n",
        )
        .expect_err("invalid");
        assert!(
            problems.contains("certificate[0] \"nope\" uri"),
            "{problems}"
        );
        assert!(
            problems.contains("certificate[1] \"spiffe://x/y\" rights"),
            "{problems}"
        );
    }
}
