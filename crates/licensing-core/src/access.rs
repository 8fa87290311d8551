//! Who may do what to which account (SPEC 8): principals, their rights and the accounts they
//! hold them on. How a principal authenticated is the edge's business; what it may do is decided
//! here, by a pure function.

use std::{collections::BTreeSet, fmt};

/// A right on an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Right {
    /// Read the account: its settings, members, inventory, usage, audit trail, statements.
    View,
    /// Change it: members, the cart, its settings. Includes `View`.
    Update,
    /// Send usage events for it (machines: collectors).
    Ingest,
    /// Everything, and what only operators do: create the account, move a sandbox's clock.
    Admin,
}

impl Right {
    /// Every right.
    pub const ALL: [Right; 4] = [Right::View, Right::Update, Right::Ingest, Right::Admin];

    /// The right's name in configuration and tokens.
    pub fn name(self) -> &'static str {
        match self {
            Right::View => "view",
            Right::Update => "update",
            Right::Ingest => "ingest",
            Right::Admin => "admin",
        }
    }

    /// The right named `name`.
    pub fn parse(name: &str) -> Option<Right> {
        Right::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Whether holding `self` gives `wanted`: admin gives every right, update gives view.
    pub fn gives(self, wanted: Right) -> bool {
        self == wanted || self == Right::Admin || (self == Right::Update && wanted == Right::View)
    }
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The accounts a grant covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accounts {
    /// Every account, those created later included (operators, platform services).
    All,
    /// These accounts only.
    Only(BTreeSet<String>),
}

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// Nothing: authentication is off (the service only serves loopback then, or was told it may
    /// serve without it).
    None,
    /// A static API key.
    ApiKey,
    /// A signed JSON Web Token.
    Token,
    /// A TLS client certificate.
    Certificate,
}

impl Credential {
    /// The credential's name, as the audit trail shows it.
    pub fn name(self) -> &'static str {
        match self {
            Credential::None => "none",
            Credential::ApiKey => "api-key",
            Credential::Token => "token",
            Credential::Certificate => "certificate",
        }
    }
}

/// An authenticated caller and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who: the key's subject, the token's `sub`, the certificate's mapped name.
    pub subject: String,
    /// How it authenticated.
    pub credential: Credential,
    /// The accounts its rights hold on.
    pub accounts: Accounts,
    /// Its rights there.
    pub rights: BTreeSet<Right>,
}

impl Principal {
    /// The caller when authentication is off: every right on every account, and in the audit
    /// trail the same `unauthenticated` as before authentication existed.
    pub fn unauthenticated() -> Principal {
        Principal {
            subject: crate::audit::UNAUTHENTICATED.to_owned(),
            credential: Credential::None,
            accounts: Accounts::All,
            rights: Right::ALL.into_iter().collect(),
        }
    }

    /// Whether the principal holds `right` on `account_id`.
    pub fn may(&self, right: Right, account_id: &str) -> bool {
        let covers = match &self.accounts {
            Accounts::All => true,
            Accounts::Only(accounts) => accounts.contains(account_id),
        };
        covers && self.rights.iter().any(|held| held.gives(right))
    }

    /// The principal as the audit trail names it: how it authenticated and who it is, e.g.
    /// `api-key:collector`; `unauthenticated` when authentication is off.
    pub fn actor(&self) -> String {
        match self.credential {
            Credential::None => self.subject.clone(),
            credential => format!("{}:{}", credential.name(), self.subject),
        }
    }

    /// Refuses `right` on `account_id` unless the principal holds it. The refusal reads the same
    /// whether the account exists or not, so it tells nothing about other tenants.
    pub fn check(&self, right: Right, account_id: &str) -> Result<(), Denied> {
        if self.may(right, account_id) {
            Ok(())
        } else {
            Err(Denied {
                subject: self.subject.clone(),
                right,
                account_id: account_id.to_owned(),
            })
        }
    }
}

/// A principal without the right it needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{subject:?} does not hold the {right} right on account {account_id:?}")]
pub struct Denied {
    /// The caller.
    pub subject: String,
    /// The right it needs.
    pub right: Right,
    /// The account.
    pub account_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(accounts: Accounts, rights: &[Right]) -> Principal {
        Principal {
            subject: "s".into(),
            credential: Credential::ApiKey,
            accounts,
            rights: rights.iter().copied().collect(),
        }
    }

    #[test]
    fn admin_gives_every_right_and_update_gives_view_only() {
        for wanted in Right::ALL {
            assert!(Right::Admin.gives(wanted));
        }
        assert!(Right::Update.gives(Right::View));
        assert!(!Right::Update.gives(Right::Ingest));
        assert!(!Right::Update.gives(Right::Admin));
        assert!(!Right::View.gives(Right::Update));
        assert!(
            !Right::Ingest.gives(Right::View),
            "a collector reads nothing"
        );
        for right in Right::ALL {
            assert_eq!(Right::parse(right.name()), Some(right));
        }
    }

    #[test]
    fn rights_hold_on_their_accounts_only() {
        let acme = principal(Accounts::Only(["acme".to_owned()].into()), &[Right::Update]);
        assert!(acme.may(Right::View, "acme"));
        assert!(acme.may(Right::Update, "acme"));
        assert!(!acme.may(Right::View, "globex"));
        assert!(!acme.may(Right::Admin, "acme"));
        assert_eq!(
            acme.check(Right::View, "globex")
                .expect_err("foreign")
                .to_string(),
            "\"s\" does not hold the view right on account \"globex\""
        );
        let operator = principal(Accounts::All, &[Right::Admin]);
        assert!(operator.may(Right::Ingest, "anything"));
        assert_eq!(operator.actor(), "api-key:s");
        assert_eq!(Principal::unauthenticated().actor(), "unauthenticated");
    }
}
