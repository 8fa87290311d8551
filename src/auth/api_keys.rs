//! Static API keys for machines (the collector, scripts): a TOML file of keys, each stored only as
//! the SHA-256 of its secret, with the subject, accounts and rights it grants.
//!
//! ```toml
//! [[key]]
//! id = "collector-2026-12"   # names this key (not secret): logs and rotation
//! subject = "collector"      # the principal, as the audit trail names it
//! sha256 = "9f86d0…"         # SHA-256 of the secret, hex
//! accounts = ["acme"]        # or ["*"] for every account
//! rights = ["ingest"]        # view, update, ingest, admin
//! ```
//!
//! A secret is `lk_` and 64 hex digits (256 random bits), presented as `authorization: Bearer
//! lk_…`. A subject may have two keys at once, so that a new key can be deployed before the old
//! one is removed. A presented secret is hashed and compared with every key's hash in constant
//! time; the secret itself is never stored, logged or echoed.

use std::{collections::BTreeSet, path::Path, sync::Arc};

use licensing_core::{Accounts, Credential, IdKind, Principal, Right};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// What a secret starts with: tells an API key from a token at a glance.
pub const SECRET_PREFIX: &str = "lk_";
/// Keys one subject may have at once: the current one and the next.
pub const KEYS_PER_SUBJECT: usize = 2;

/// The keys in force.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    keys: Vec<Key>,
}

#[derive(Debug, Clone)]
struct Key {
    id: String,
    hash: [u8; 32],
    principal: Arc<Principal>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    key: Vec<KeyEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: String,
    subject: String,
    sha256: String,
    accounts: Vec<String>,
    rights: Vec<String>,
}

impl ApiKeys {
    /// Reads and checks the keys file; every problem found is reported, each naming the key.
    pub fn load(path: &Path) -> Result<ApiKeys, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
        ApiKeys::parse(&text)
    }

    /// Parses the keys file's text.
    pub fn parse(text: &str) -> Result<ApiKeys, String> {
        let file: KeysFile = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let mut problems = Vec::new();
        let mut keys = Vec::new();
        let mut ids = BTreeSet::new();
        for (i, entry) in file.key.into_iter().enumerate() {
            match Key::from_entry(entry) {
                Ok(key) => {
                    if !ids.insert(key.id.clone()) {
                        problems.push(format!("key[{i}] id {:?}: used twice", key.id));
                    }
                    keys.push(key);
                }
                Err(problem) => problems.push(format!("key[{i}] {problem}")),
            }
        }
        let mut subjects: Vec<&str> = keys.iter().map(|k| k.principal.subject.as_str()).collect();
        subjects.sort_unstable();
        for run in subjects.chunk_by(|a, b| a == b) {
            if run.len() > KEYS_PER_SUBJECT {
                problems.push(format!(
                    "subject {:?} has {} keys: at most {KEYS_PER_SUBJECT} (the current one and the next)",
                    run[0],
                    run.len()
                ));
            }
        }
        if problems.is_empty() {
            Ok(ApiKeys { keys })
        } else {
            Err(problems.join("; "))
        }
    }

    /// How many keys are in force.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is in force.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The principal of `secret`, if it is one of the keys. Every key's hash is compared, in
    /// constant time, so the time taken tells nothing about which key came close.
    pub fn authenticate(&self, secret: &str) -> Option<&Arc<Principal>> {
        let presented: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.hash.ct_eq(&presented)) {
                found = Some(&key.principal);
            }
        }
        found
    }
}

impl Key {
    fn from_entry(entry: KeyEntry) -> Result<Key, String> {
        licensing_core::ids::check(IdKind::Member, "id", &entry.id)
            .map_err(|e| format!("id {}: {}", e.value, e.problem))?;
        let id = entry.id;
        licensing_core::ids::check(IdKind::Member, "subject", &entry.subject)
            .map_err(|e| format!("{id:?} subject {}: {}", e.value, e.problem))?;
        let hash = parse_hash(&entry.sha256).ok_or_else(|| {
            format!("{id:?} sha256: must be 64 hex digits (the SHA-256 of the secret)")
        })?;
        let accounts =
            parse_accounts(&entry.accounts).map_err(|e| format!("{id:?} accounts: {e}"))?;
        let rights = parse_rights(&entry.rights).map_err(|e| format!("{id:?} rights: {e}"))?;
        Ok(Key {
            id,
            hash,
            principal: Arc::new(Principal {
                subject: entry.subject,
                credential: Credential::ApiKey,
                accounts,
                rights,
            }),
        })
    }
}

/// `["*"]` is every account; otherwise the account ids themselves.
pub fn parse_accounts(names: &[String]) -> Result<Accounts, String> {
    match names {
        [] => Err("at least one account, or \"*\" for all".to_owned()),
        [all] if all == "*" => Ok(Accounts::All),
        names => names
            .iter()
            .map(|name| {
                licensing_core::ids::check(IdKind::Account, "account", name)
                    .map(|()| name.clone())
                    .map_err(|e| format!("{} {}", e.value, e.problem))
            })
            .collect::<Result<BTreeSet<String>, String>>()
            .map(Accounts::Only),
    }
}

/// Right names (`view`, `update`, `ingest`, `admin`); at least one.
pub fn parse_rights(names: &[String]) -> Result<BTreeSet<Right>, String> {
    let rights = names
        .iter()
        .map(|name| {
            Right::parse(name)
                .ok_or_else(|| format!("unknown right {name:?} (view, update, ingest, admin)"))
        })
        .collect::<Result<BTreeSet<Right>, String>>()?;
    if rights.is_empty() {
        return Err("at least one right".to_owned());
    }
    Ok(rights)
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (byte, pair) in hash.iter_mut().zip(bytes.chunks(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        *byte = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(hash)
}

/// A new secret and its hash (hex), for `licensing key new`.
pub fn new_secret() -> Result<(String, String), getrandom::Error> {
    let mut random = [0u8; 32];
    getrandom::fill(&mut random)?;
    let secret = format!("{SECRET_PREFIX}{}", hex(&random));
    let hash = hex(&Sha256::digest(secret.as_bytes()));
    Ok((secret, hash))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, subject: &str, secret: &str) -> String {
        format!(
            "[[key]]\nid = \"{id}\"\nsubject = \"{subject}\"\nsha256 = \"{}\"\naccounts = [\"acme\"]\nrights = [\"ingest\"]\n",
            hex(&Sha256::digest(secret.as_bytes()))
        )
    }

    #[test]
    fn a_key_authenticates_its_principal_and_nothing_else_does() {
        let (secret, _) = new_secret().expect("random");
        assert!(secret.starts_with("lk_") && secret.len() == 67, "{secret}");
        let keys = ApiKeys::parse(&entry("collector-1", "collector", &secret)).expect("valid");
        let principal = keys.authenticate(&secret).expect("known");
        assert_eq!(principal.actor(), "api-key:collector");
        assert!(principal.may(Right::Ingest, "acme"));
        assert!(!principal.may(Right::View, "acme"));
        assert!(!principal.may(Right::Ingest, "globex"));
        assert!(keys.authenticate("lk_wrong").is_none());
        assert!(keys.authenticate("").is_none());
    }

    #[test]
    fn two_keys_of_a_subject_work_during_a_rotation_and_a_third_is_refused() {
        let text = entry("old", "collector", "lk_one") + &entry("new", "collector", "lk_two");
        let keys = ApiKeys::parse(&text).expect("two keys");
        assert!(keys.authenticate("lk_one").is_some());
        assert!(keys.authenticate("lk_two").is_some());
        let third = text + &entry("newer", "collector", "lk_three");
        let refused = ApiKeys::parse(&third).expect_err("three keys");
        assert!(
            refused.contains("subject \"collector\" has 3 keys"),
            "{refused}"
        );
    }

    #[test]
    fn every_problem_of_the_file_is_named() {
        let text = "[[key]]\nid = \"a\"\nsubject = \"s\"\nsha256 = \"xyz\"\naccounts = [\"acme\"]\nrights = [\"view\"]\n\
                    [[key]]\nid = \"b\"\nsubject = \"s2\"\nsha256 = \"{}\"\naccounts = []\nrights = [\"view\"]\n"
            .replace("{}", &"0".repeat(64));
        let problems = ApiKeys::parse(&text).expect_err("invalid");
        assert!(problems.contains("key[0] \"a\" sha256"), "{problems}");
        assert!(problems.contains("key[1] \"b\" accounts"), "{problems}");
        let unknown =
            ApiKeys::parse("[[key]]\nid = \"a\"\nsecret = \"lk_x\"\n").expect_err("unknown");
        assert!(unknown.contains("unknown field"), "{unknown}");
    }
}
