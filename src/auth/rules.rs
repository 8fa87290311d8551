//! The one table of which right each RPC needs on the account its request names. Handlers ask it
//! ([`needs`]) before they read or write anything of the account, so that a caller without the
//! right is refused the same way whether the account exists or not.

use licensing_core::Right;

/// Whether a call only reads, or writes (`ResolveMember` with `apply`, `AdjustInventory` with
/// `confirm`): a method's two uses may need different rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// A read or a preview.
    Read,
    /// A change.
    Write,
}

/// The rights of one method: for reading it, and for writing with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The right a read or preview needs.
    pub read: Right,
    /// The right a write needs.
    pub write: Right,
}

const fn both(right: Right) -> Rule {
    Rule {
        read: right,
        write: right,
    }
}

/// Every method of `licensing.v1` and its rule. A method missing here fails the test that reads
/// the methods from the contract, so a new RPC cannot ship without a rule.
pub const RULES: &[(&str, Rule)] = &[
    // Without an account, a preview touches no account and needs no right.
    (
        "LicensingService/ResolveMember",
        Rule {
            read: Right::View,
            write: Right::Update,
        },
    ),
    ("LicensingService/GetMember", both(Right::View)),
    ("LicensingService/ListMembers", both(Right::View)),
    ("LicensingService/RemoveMember", both(Right::Update)),
    ("LicensingService/CreateAccount", both(Right::Admin)),
    ("LicensingService/GetAccount", both(Right::View)),
    ("LicensingService/UpdateAccount", both(Right::Update)),
    ("LicensingService/AdvanceClock", both(Right::Admin)),
    ("LicensingService/GetInventory", both(Right::View)),
    (
        "LicensingService/AdjustInventory",
        Rule {
            read: Right::View,
            write: Right::Update,
        },
    ),
    ("LicensingService/GetUsage", both(Right::View)),
    ("LicensingService/ReadAuditTrail", both(Right::View)),
    ("LicensingService/GetStatement", both(Right::View)),
    ("LicensingService/CheckQuota", both(Right::View)),
    ("LicensingService/Advise", both(Right::View)),
    // Checked per event, on each event's account.
    ("IngestionService/Ingest", both(Right::Ingest)),
];

/// The rule of `method` (`Service/Method`, e.g. `LicensingService/GetAccount`).
pub fn rule(method: &str) -> Option<Rule> {
    RULES
        .iter()
        .find(|(name, _)| *name == method)
        .map(|(_, rule)| *rule)
}

/// The right `method` needs for `used`. Every method served has a rule; asking for another is a
/// defect, answered with the strongest right.
pub fn needs(method: &str, used: Use) -> Right {
    match (rule(method), used) {
        (Some(rule), Use::Read) => rule.read,
        (Some(rule), Use::Write) => rule.write,
        (None, _) => {
            debug_assert!(false, "no rule for {method}");
            Right::Admin
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn every_method_of_the_contract_has_a_rule() {
        let set = prost_types::FileDescriptorSet::decode(crate::api::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut methods = Vec::new();
        for file in set.file.iter().filter(|f| f.package() == "licensing.v1") {
            for service in &file.service {
                for method in &service.method {
                    methods.push(format!("{}/{}", service.name(), method.name()));
                }
            }
        }
        assert!(methods.len() >= 15, "{methods:?}");
        for method in &methods {
            assert!(
                rule(method).is_some(),
                "no rule for {method}: add it to RULES"
            );
        }
        for (name, _) in RULES {
            assert!(
                methods.contains(&(*name).to_owned()),
                "a rule for no method: {name}"
            );
        }
    }
}
