//! Accounts, members, the inventory and the audit trail: each operation reads and writes in one
//! sled transaction over the trees it touches, so a crash leaves either all of it or none.
//!
//! Callers make the result durable with [`Store::flush`] before acknowledging it. Transaction
//! closures may run more than once (on conflict); they do no I/O besides the transaction's own.

use jiff::Timestamp;
use licensing_core::{
    Account, AccountSettings, AuditEntry, BillingMonth, Cart, CartError, CartLine, Change,
    ClockError, ClosedPeak, MemberSettings, PriceList, Product, SeatChange, Seats, StoredMember,
    cart, hold_seats, resolve,
};
use sled::{
    Transactional as _,
    transaction::{ConflictableTransactionError, TransactionError, TransactionalTree},
};

use crate::{
    Store, StoreError,
    records::{AccountRecord, AuditRecord, MemberRecord, PeakRecord, decode, encode},
};

/// Why an operation did not happen. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The account does not exist.
    #[error("account {0:?} not found")]
    AccountNotFound(String),
    /// The account exists already.
    #[error("account {0:?} already exists")]
    AccountExists(String),
    /// The account has no statement for the month: it did not exist yet.
    #[error("no statement for {month}: account {account:?} was created in {created}")]
    StatementNotFound {
        /// The account.
        account: String,
        /// The month asked for.
        month: BillingMonth,
        /// The month the account was created in.
        created: BillingMonth,
    },
    /// The member does not exist.
    #[error("member {member:?} not found in account {account:?}")]
    MemberNotFound {
        /// The account.
        account: String,
        /// The member.
        member: String,
    },
    /// The account's state forbids the change; the message says what is missing.
    #[error("{0}")]
    Precondition(String),
    /// A confirm named a revision that is no longer current.
    #[error(
        "revision {named} is stale: the inventory is at revision {current}; preview the cart again"
    )]
    StaleRevision {
        /// The revision the caller named.
        named: u64,
        /// The current one.
        current: u64,
    },
    /// A malformed request field, caught where only the stored state can tell.
    #[error("invalid {field} {value}: {problem}")]
    Invalid {
        /// The field.
        field: String,
        /// The value.
        value: String,
        /// The problem.
        problem: String,
    },
    /// The storage failed; writes stop until a restart.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A member applied, with what it did to the inventory.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The member as stored.
    pub member: StoredMember,
    /// The member before, if they existed.
    pub before: Option<StoredMember>,
    /// The account after the apply.
    pub account: Account,
    /// The inventory lines auto-growth added (empty without growth).
    pub growth: Vec<CartLine>,
}

/// A cart previewed or confirmed.
#[derive(Debug, Clone)]
pub struct Adjusted {
    /// The cart.
    pub cart: Cart,
    /// The account before the change.
    pub account: Account,
    /// True when written.
    pub confirmed: bool,
}

/// Separator between an account id and the rest of a key; ids never contain it.
const SEP: u8 = 0;

fn key(account: &str, rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(account.len() + 1 + rest.len());
    key.extend_from_slice(account.as_bytes());
    key.push(SEP);
    key.extend_from_slice(rest);
    key
}

/// The prefix of every key of `account` in the per-account trees.
pub(crate) fn prefix(account: &str) -> Vec<u8> {
    key(account, &[])
}

/// Errors inside a transaction closure.
type TxError = ConflictableTransactionError<OpError>;

fn abort(error: OpError) -> TxError {
    ConflictableTransactionError::Abort(error)
}

fn corrupt(error: crate::records::Corrupt) -> TxError {
    abort(OpError::Store(StoreError::Corrupt(error)))
}

fn read_account(accounts: &TransactionalTree, id: &str) -> Result<Account, TxError> {
    let bytes = accounts
        .get(id.as_bytes())?
        .ok_or_else(|| abort(OpError::AccountNotFound(id.to_owned())))?;
    decode::<AccountRecord>("account", &bytes)
        .and_then(|r| r.decode(id))
        .map_err(corrupt)
}

fn read_member(
    members: &TransactionalTree,
    account: &str,
    member: &str,
) -> Result<Option<StoredMember>, TxError> {
    match members.get(key(account, member.as_bytes()))? {
        None => Ok(None),
        Some(bytes) => decode::<MemberRecord>("member", &bytes)
            .and_then(|r| r.decode(member))
            .map(Some)
            .map_err(corrupt),
    }
}

fn write_peaks(
    peaks: &TransactionalTree,
    account: &str,
    closed: &Option<ClosedPeak>,
) -> Result<(), TxError> {
    if let Some(c) = closed {
        peaks.insert(
            key(account, c.month.to_string().as_bytes()),
            encode(&PeakRecord::from(c)),
        )?;
    }
    Ok(())
}

/// Appends an audit entry, numbering it after the account's last one.
fn audit(
    trail: &TransactionalTree,
    account: &mut Account,
    time: Timestamp,
    actor: &str,
    change: Change,
) -> Result<(), TxError> {
    account.audit_sequence += 1;
    let entry = AuditEntry {
        sequence: account.audit_sequence,
        time,
        actor: actor.to_owned(),
        change,
    };
    trail.insert(
        key(&account.id, &entry.sequence.to_be_bytes()),
        encode(&AuditRecord::from(&entry)),
    )?;
    Ok(())
}

impl Store {
    fn check_writable(&self) -> Result<(), OpError> {
        if self.has_failed() {
            return Err(OpError::Store(StoreError::Failed {
                path: self.path.clone(),
            }));
        }
        Ok(())
    }

    /// Turns a transaction result into an operation result, remembering storage failures.
    fn finish<T>(&self, result: Result<T, TransactionError<OpError>>) -> Result<T, OpError> {
        match result {
            Ok(value) => Ok(value),
            Err(TransactionError::Abort(OpError::Store(e))) => Err(self.failed_with(e).into()),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(source)) => Err(self
                .failed_with(StoreError::Storage {
                    path: self.path.clone(),
                    source,
                })
                .into()),
        }
    }

    /// Creates `account`, recording its settings as the first audit entry.
    pub fn create_account(&self, mut account: Account, actor: &str) -> Result<Account, OpError> {
        self.check_writable()?;
        account.audit_sequence = 0;
        let result = (&self.accounts, &self.audit).transaction(|(accounts, trail)| {
            if accounts.get(account.id.as_bytes())?.is_some() {
                return Err(abort(OpError::AccountExists(account.id.clone())));
            }
            let mut created = account.clone();
            let change = Change::AccountSettings {
                before: None,
                after: created.settings.clone(),
            };
            let time = created.created_at;
            audit(trail, &mut created, time, actor, change)?;
            accounts.insert(
                created.id.as_bytes(),
                encode(&AccountRecord::from(&created)),
            )?;
            Ok(created)
        });
        self.finish(result)
    }

    /// The account `id`.
    /// Seats bought and seats in use, summed over every account (sandboxes left out), and the
    /// accounts counted: one pass over the accounts (no member is read). For the metrics, off the
    /// request path.
    pub fn seat_totals(&self) -> Result<(Seats, Seats, u64), StoreError> {
        let (mut bought, mut in_use, mut accounts) = ([0u64; 6], [0u64; 6], 0u64);
        for item in self.accounts.iter() {
            let (key, bytes) = item.map_err(|source| StoreError::Storage {
                path: self.path.clone(),
                source,
            })?;
            let id = String::from_utf8_lossy(&key);
            let account = decode::<AccountRecord>("account", &bytes)
                .and_then(|r| r.decode(&id))
                .map_err(StoreError::Corrupt)?;
            if account.sandbox {
                continue;
            }
            accounts += 1;
            for product in Product::ALL {
                bought[product.index()] += u64::from(account.inventory.seats.get(product));
                in_use[product.index()] += u64::from(account.inventory.in_use.get(product));
            }
        }
        let clamp = |counts: [u64; 6]| Seats(counts.map(|n| u32::try_from(n).unwrap_or(u32::MAX)));
        Ok((clamp(bought), clamp(in_use), accounts))
    }

    pub fn account(&self, id: &str) -> Result<Account, OpError> {
        let bytes = self
            .accounts
            .get(id.as_bytes())
            .map_err(|source| {
                self.failed_with(StoreError::Storage {
                    path: self.path.clone(),
                    source,
                })
            })?
            .ok_or_else(|| OpError::AccountNotFound(id.to_owned()))?;
        decode::<AccountRecord>("account", &bytes)
            .and_then(|r| r.decode(id))
            .map_err(|e| OpError::Store(StoreError::Corrupt(e)))
    }

    /// Changes an account's settings with `update`, which validates the result. Recording
    /// retention changes re-price members but move no seat.
    pub fn update_account(
        &self,
        id: &str,
        real_now: Timestamp,
        actor: &str,
        update: impl Fn(&mut AccountSettings) -> Result<(), OpError>,
    ) -> Result<Account, OpError> {
        self.check_writable()?;
        let result = (&self.accounts, &self.audit).transaction(|(accounts, trail)| {
            let mut account = read_account(accounts, id)?;
            let before = account.settings.clone();
            update(&mut account.settings).map_err(abort)?;
            if account.settings != before {
                let now = account.now(real_now);
                let change = Change::AccountSettings {
                    before: Some(before),
                    after: account.settings.clone(),
                };
                audit(trail, &mut account, now, actor, change)?;
                accounts.insert(id.as_bytes(), encode(&AccountRecord::from(&account)))?;
            }
            Ok(account)
        });
        self.finish(result)
    }

    /// Moves a sandbox account's clock forward to `to`, closing the months it passes.
    pub fn advance_clock(
        &self,
        account_id: &str,
        to: Timestamp,
        actor: &str,
    ) -> Result<Account, OpError> {
        self.check_writable()?;
        let result = (&self.accounts, &self.peaks, &self.audit).transaction(|(accounts, peaks, trail)| {
            let mut account = read_account(accounts, account_id)?;
            let from = account.now(to);
            let closed = account.advance_clock(to).map_err(|e| {
                abort(match e {
                    ClockError::NotSandbox(_) => OpError::Precondition(e.to_string()),
                    ClockError::Backwards { now, to } => OpError::Invalid {
                        field: "to".to_owned(),
                        value: to.to_string(),
                        problem: format!("is before the sandbox clock's current time {now}; clocks only move forward"),
                    },
                })
            })?;
            if to == from {
                return Ok(account);
            }
            write_peaks(peaks, account_id, &closed)?;
            audit(trail, &mut account, from, actor, Change::Clock { from, to })?;
            accounts.insert(account_id.as_bytes(), encode(&AccountRecord::from(&account)))?;
            Ok(account)
        });
        self.finish(result)
    }

    /// Stores `settings` for `member_id`, taking (or growing) the seats the licence needs.
    pub fn apply_member(
        &self,
        account_id: &str,
        member_id: &str,
        settings: &MemberSettings,
        real_now: Timestamp,
        prices: &PriceList,
        actor: &str,
    ) -> Result<Applied, OpError> {
        self.check_writable()?;
        let trees = (&self.accounts, &self.members, &self.peaks, &self.audit);
        let result = trees.transaction(|(accounts, members, peaks, trail)| {
            let mut account = read_account(accounts, account_id)?;
            let now = account.now(real_now);
            let month = account.settings.zone.month(now);
            let before = read_member(members, account_id, member_id)?;
            let resolution = resolve(settings, account.settings.recording_retention, prices);
            let held = Seats::held_by(&resolution);
            let old = before.as_ref().map_or(Seats::NONE, |m| m.held);
            let cart = hold_seats(
                &account.inventory,
                old,
                held,
                month,
                account.settings.auto_growth,
                prices,
            )
            .map_err(|missing| abort(OpError::Precondition(missing.to_string())))?;
            write_peaks(peaks, account_id, &cart.closed)?;
            account.inventory = cart.after;
            let member = StoredMember {
                member_id: member_id.to_owned(),
                settings: settings.clone(),
                held,
                updated_at: now,
            };
            members.insert(
                key(account_id, member_id.as_bytes()),
                encode(&MemberRecord::from(&member)),
            )?;
            let change = Change::Member {
                before: before.clone(),
                after: Some(member.clone()),
            };
            audit(trail, &mut account, now, actor, change)?;
            if !cart.lines.is_empty() {
                let change = Change::Inventory {
                    lines: cart.lines.clone(),
                    auto_growth_for: Some(member_id.to_owned()),
                };
                audit(trail, &mut account, now, actor, change)?;
            }
            accounts.insert(
                account_id.as_bytes(),
                encode(&AccountRecord::from(&account)),
            )?;
            Ok(Applied {
                member,
                before,
                account,
                growth: cart.lines,
            })
        });
        self.finish(result)
    }

    /// Removes a member, releasing their seats.
    pub fn remove_member(
        &self,
        account_id: &str,
        member_id: &str,
        real_now: Timestamp,
        prices: &PriceList,
        actor: &str,
    ) -> Result<(StoredMember, Account), OpError> {
        self.check_writable()?;
        let trees = (&self.accounts, &self.members, &self.peaks, &self.audit);
        let result = trees.transaction(|(accounts, members, peaks, trail)| {
            let mut account = read_account(accounts, account_id)?;
            let now = account.now(real_now);
            let month = account.settings.zone.month(now);
            let removed = read_member(members, account_id, member_id)?.ok_or_else(|| {
                abort(OpError::MemberNotFound {
                    account: account_id.to_owned(),
                    member: member_id.to_owned(),
                })
            })?;
            // Releasing seats can never be short.
            let cart = hold_seats(
                &account.inventory,
                removed.held,
                Seats::NONE,
                month,
                false,
                prices,
            )
            .map_err(|missing| abort(OpError::Precondition(missing.to_string())))?;
            write_peaks(peaks, account_id, &cart.closed)?;
            account.inventory = cart.after;
            members.remove(key(account_id, member_id.as_bytes()))?;
            audit(
                trail,
                &mut account,
                now,
                actor,
                Change::Member {
                    before: Some(removed.clone()),
                    after: None,
                },
            )?;
            accounts.insert(
                account_id.as_bytes(),
                encode(&AccountRecord::from(&account)),
            )?;
            Ok((removed, account))
        });
        self.finish(result)
    }

    /// Previews a cart (`confirm` is `None`) or confirms it against the named revision.
    pub fn adjust_inventory(
        &self,
        account_id: &str,
        changes: &[SeatChange],
        confirm: Option<u64>,
        real_now: Timestamp,
        prices: &PriceList,
        actor: &str,
    ) -> Result<Adjusted, OpError> {
        let outcome = match confirm {
            None => {
                let account = self.account(account_id)?;
                let month = account.settings.zone.month(account.now(real_now));
                cart(&account.inventory, changes, month, prices).map(|cart| Adjusted {
                    cart,
                    account,
                    confirmed: false,
                })
            }
            Some(revision) => {
                self.check_writable()?;
                let trees = (&self.accounts, &self.peaks, &self.audit);
                let result = trees.transaction(|(accounts, peaks, trail)| {
                    let mut account = read_account(accounts, account_id)?;
                    if account.inventory.revision != revision {
                        return Err(abort(OpError::StaleRevision {
                            named: revision,
                            current: account.inventory.revision,
                        }));
                    }
                    let before = account.clone();
                    let now = account.now(real_now);
                    let month = account.settings.zone.month(now);
                    let cart = match cart(&account.inventory, changes, month, prices) {
                        Ok(cart) => cart,
                        // Reported after the transaction, with the members holding the seats.
                        Err(e) => return Ok(Err(e)),
                    };
                    if cart.lines.is_empty() {
                        return Ok(Ok(Adjusted {
                            cart,
                            account: before,
                            confirmed: true,
                        }));
                    }
                    write_peaks(peaks, account_id, &cart.closed)?;
                    account.inventory = cart.after;
                    let change = Change::Inventory {
                        lines: cart.lines.clone(),
                        auto_growth_for: None,
                    };
                    audit(trail, &mut account, now, actor, change)?;
                    accounts.insert(
                        account_id.as_bytes(),
                        encode(&AccountRecord::from(&account)),
                    )?;
                    Ok(Ok(Adjusted {
                        cart,
                        account: before,
                        confirmed: true,
                    }))
                });
                self.finish(result)?
            }
        };
        match outcome {
            Ok(adjusted) => Ok(adjusted),
            Err(CartError::DuplicateProduct {
                index,
                first,
                product,
            }) => Err(OpError::Invalid {
                field: format!("changes[{index}].product"),
                value: product.name().to_owned(),
                problem: format!("duplicates changes[{first}].product"),
            }),
            Err(CartError::BelowInUse {
                product,
                requested,
                in_use,
            }) => {
                let holders = self.holders(account_id, product, 10)?;
                let mut names = holders.join(", ");
                if (in_use as usize) > holders.len() {
                    names.push_str(&format!(" and {} more", in_use as usize - holders.len()));
                }
                Err(OpError::Precondition(format!(
                    "cannot reduce {product} to {requested}: {in_use} in use by members {names}"
                )))
            }
        }
    }

    /// Up to `limit` ids of the members holding a seat of `product`.
    fn holders(
        &self,
        account_id: &str,
        product: Product,
        limit: usize,
    ) -> Result<Vec<String>, OpError> {
        let mut holders = Vec::new();
        for member in self.members(account_id, None) {
            let member = member?;
            if member.held.get(product) > 0 {
                holders.push(member.member_id);
                if holders.len() == limit {
                    break;
                }
            }
        }
        Ok(holders)
    }

    /// One member.
    pub fn member(&self, account_id: &str, member_id: &str) -> Result<StoredMember, OpError> {
        self.account(account_id)?;
        let bytes = self
            .members
            .get(key(account_id, member_id.as_bytes()))
            .map_err(|source| {
                self.failed_with(StoreError::Storage {
                    path: self.path.clone(),
                    source,
                })
            })?
            .ok_or_else(|| OpError::MemberNotFound {
                account: account_id.to_owned(),
                member: member_id.to_owned(),
            })?;
        decode::<MemberRecord>("member", &bytes)
            .and_then(|r| r.decode(member_id))
            .map_err(|e| OpError::Store(StoreError::Corrupt(e)))
    }

    /// The account's members in id order, starting after `after` when given.
    pub fn members<'a>(
        &'a self,
        account_id: &str,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<StoredMember, OpError>> + 'a {
        self.raw_members(account_id, after)
            .map(|member| member.and_then(|member| member.decode()))
    }

    /// The account's members in id order after `after`, as stored, for readers of many members
    /// that decode only what they need ([`RawMember`]).
    pub fn raw_members<'a>(
        &'a self,
        account_id: &str,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<RawMember, OpError>> + 'a {
        let prefix = prefix(account_id);
        let skip = prefix.len();
        let range = crate::range_after(&prefix, after.map(str::as_bytes));
        self.members.range(range).map(move |item| {
            let (key, value) = item.map_err(|source| {
                self.failed_with(StoreError::Storage {
                    path: self.path.clone(),
                    source,
                })
            })?;
            Ok(RawMember { key, value, skip })
        })
    }

    /// The account's audit trail from sequence `from` on (1 is the first entry).
    pub fn audit_trail<'a>(
        &'a self,
        account_id: &str,
        from: u64,
    ) -> impl Iterator<Item = Result<AuditEntry, OpError>> + 'a {
        let start = key(account_id, &from.to_be_bytes());
        let end = key(account_id, &u64::MAX.to_be_bytes());
        let skip = account_id.len() + 1;
        self.audit.range(start..=end).map(move |item| {
            let (k, v) = item.map_err(|source| {
                self.failed_with(StoreError::Storage {
                    path: self.path.clone(),
                    source,
                })
            })?;
            let mut raw = [0u8; 8];
            raw.copy_from_slice(k.get(skip..skip + 8).unwrap_or(&[0; 8]));
            decode::<AuditRecord>("audit", &v)
                .and_then(|r| r.decode(u64::from_be_bytes(raw)))
                .map_err(|e| OpError::Store(StoreError::Corrupt(e)))
        })
    }

    /// The peak a month before the inventory's current month is billed at: its own record, else
    /// the counts carried from the latest month kept before it, else none (before the account).
    pub fn closed_peak(&self, account_id: &str, month: BillingMonth) -> Result<Seats, OpError> {
        // The latest record at or before `month`: one read, however many months lie between.
        let start = prefix(account_id);
        let end = key(account_id, month.to_string().as_bytes());
        let latest = self
            .peaks
            .range(start.clone()..=end)
            .next_back()
            .transpose()
            .map_err(|source| {
                self.failed_with(StoreError::Storage {
                    path: self.path.clone(),
                    source,
                })
            })?;
        let latest = match latest {
            None => None,
            Some((key, bytes)) => {
                let corrupt = |e| OpError::Store(StoreError::Corrupt(e));
                let recorded = std::str::from_utf8(&key[start.len()..])
                    .ok()
                    .and_then(|m| BillingMonth::parse(m).ok())
                    .ok_or_else(|| corrupt(crate::records::corrupt("peak", "month key")))?;
                let record: PeakRecord = decode("peak", &bytes).map_err(corrupt)?;
                Some(record.decode(recorded))
            }
        };
        Ok(ClosedPeak::peak_of(month, latest.as_ref()))
    }

    /// The kept months from `first` to `last` (both included), with the latest one before
    /// `first` if there is one, ascending: what [`licensing_core::peak_in_use`] reads. Each month
    /// of the range costs one read at most; months without a change have no record.
    pub fn closed_peaks(
        &self,
        account_id: &str,
        first: BillingMonth,
        last: BillingMonth,
    ) -> Result<Vec<ClosedPeak>, OpError> {
        let start = prefix(account_id);
        let from = key(account_id, first.to_string().as_bytes());
        let to = key(account_id, last.to_string().as_bytes());
        let storage = |source| {
            self.failed_with(StoreError::Storage {
                path: self.path.clone(),
                source,
            })
        };
        let corrupt = |e| OpError::Store(StoreError::Corrupt(e));
        let before = self
            .peaks
            .range(start.clone()..from.clone())
            .next_back()
            .transpose()
            .map_err(storage)?;
        let mut found = Vec::new();
        for item in before
            .into_iter()
            .map(Ok)
            .chain(self.peaks.range(from..=to))
        {
            let (key, bytes) = item.map_err(storage)?;
            let month = std::str::from_utf8(&key[start.len()..])
                .ok()
                .and_then(|m| BillingMonth::parse(m).ok())
                .ok_or_else(|| corrupt(crate::records::corrupt("peak", "month key")))?;
            let record: PeakRecord = decode("peak", &bytes).map_err(corrupt)?;
            found.push(record.decode(month));
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests;

/// A member's record as stored, decoded on demand: [`Store::raw_members`].
#[derive(Debug, Clone)]
pub struct RawMember {
    key: sled::IVec,
    value: sled::IVec,
    /// Where the member id starts in the key.
    skip: usize,
}

impl RawMember {
    /// The member's id.
    pub fn member_id(&self) -> &str {
        std::str::from_utf8(self.key.get(self.skip..).unwrap_or_default()).unwrap_or_default()
    }

    /// The stored bytes that decide the member's licence: the same for every member with the
    /// same settings and billing preference, whatever seats they hold or when they changed. A
    /// reader may resolve once per distinct settings part under the same account settings and
    /// price list. `None` when the record is not one this version writes: decode it.
    pub fn settings_part(&self) -> Option<&[u8]> {
        let len = crate::records::member_settings_len(&self.value)?;
        self.value.get(..len)
    }

    /// The whole member.
    pub fn decode(&self) -> Result<StoredMember, OpError> {
        decode::<MemberRecord>("member", &self.value)
            .and_then(|r| r.decode(self.member_id()))
            .map_err(|e| OpError::Store(StoreError::Corrupt(e)))
    }
}
