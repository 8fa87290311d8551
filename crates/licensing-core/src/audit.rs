//! Stored members and the audit trail's entries: who changed what, when, from what to what.

use jiff::Timestamp;

use crate::{
    account::AccountSettings,
    inventory::{CartLine, Seats},
    member::MemberSettings,
};

/// The actor of every change until callers authenticate. Never a name a caller supplied.
pub const UNAUTHENTICATED: &str = "unauthenticated";

/// A member as stored: settings as applied and the seats they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMember {
    /// The member's id within the account.
    pub member_id: String,
    /// The settings as last applied.
    pub settings: MemberSettings,
    /// The seats the member holds, as computed when applied (released exactly on change).
    pub held: Seats,
    /// When the settings were applied, on the account's clock.
    pub updated_at: Timestamp,
}

/// What an audit entry records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The account was created (`before` is `None`) or its settings changed.
    AccountSettings {
        /// Before.
        before: Option<AccountSettings>,
        /// After.
        after: AccountSettings,
    },
    /// A member was applied or removed.
    Member {
        /// The member before; `None` when new.
        before: Option<StoredMember>,
        /// The member after; `None` when removed.
        after: Option<StoredMember>,
    },
    /// The inventory changed: a confirmed cart, or auto-growth for a member's apply.
    Inventory {
        /// The lines.
        lines: Vec<CartLine>,
        /// The member whose apply grew the inventory; `None` for a confirmed cart.
        auto_growth_for: Option<String>,
    },
    /// A sandbox clock moved.
    Clock {
        /// Before.
        from: Timestamp,
        /// After.
        to: Timestamp,
    },
}

/// One entry of an account's audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Position in the account's trail, from 1.
    pub sequence: u64,
    /// When, on the account's clock.
    pub time: Timestamp,
    /// Who.
    pub actor: String,
    /// What.
    pub change: Change,
}
