//! The stored records and their encoding.
//!
//! Records are not the wire types: each is a versioned enum encoded with postcard, so a future
//! layout is a new variant that old data still decodes into. Conversions to and from the domain
//! validate again on the way in, so a record that no longer makes sense is reported as corrupt
//! rather than served.

use jiff::Timestamp;
use licensing_core::{
    Account, AccountSettings, AuditEntry, BillingMode, BillingMonth, CartLine, Change, Channel,
    Inventory, MemberSettings, MemberSettingsInput, Permission, Product, RecordingRetention, Role,
    Seats, Skill, StoredMember, Zone,
};
use serde::{Deserialize, Serialize};

/// A record that could not be decoded or no longer validates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt {what} record: {problem}")]
pub struct Corrupt {
    /// The kind of record.
    pub what: &'static str,
    /// What is wrong.
    pub problem: String,
}

pub(crate) fn corrupt(what: &'static str, problem: impl ToString) -> Corrupt {
    Corrupt {
        what,
        problem: problem.to_string(),
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding plain structs into a Vec cannot fail.
    postcard::to_stdvec(value).unwrap_or_default()
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(
    what: &'static str,
    bytes: &'a [u8],
) -> Result<T, Corrupt> {
    postcard::from_bytes(bytes).map_err(|e| corrupt(what, e))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Time(i64, i32);

impl From<Timestamp> for Time {
    fn from(t: Timestamp) -> Time {
        Time(t.as_second(), t.subsec_nanosecond())
    }
}

impl Time {
    pub(crate) fn decode(self, what: &'static str) -> Result<Timestamp, Corrupt> {
        Timestamp::new(self.0, self.1).map_err(|e| corrupt(what, e))
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Month(i16, i8);

impl From<BillingMonth> for Month {
    fn from(m: BillingMonth) -> Month {
        Month(m.year(), m.month())
    }
}

impl Month {
    fn decode(self, what: &'static str) -> Result<BillingMonth, Corrupt> {
        BillingMonth::new(self.0, self.1)
            .ok_or_else(|| corrupt(what, format!("month {}-{}", self.0, self.1)))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SettingsV1 {
    zone: String,
    auto_growth: bool,
    /// Months of retention; 0 is 14 days.
    retention_months: u32,
    grace_period_days: u32,
    speech_to_text: bool,
    speech_to_text_extra_minutes_cap: Option<u32>,
    power_pack: bool,
    smart_routing_packs_cap: Option<u32>,
    ai_topics_packs_cap: Option<u32>,
    ai_qa_packs_cap: Option<u32>,
    ai_topics_on_calls: bool,
}

impl From<&AccountSettings> for SettingsV1 {
    fn from(s: &AccountSettings) -> SettingsV1 {
        SettingsV1 {
            zone: s.zone.name().to_owned(),
            auto_growth: s.auto_growth,
            retention_months: s.recording_retention.as_months().unwrap_or(0),
            grace_period_days: s.grace_period_days,
            speech_to_text: s.speech_to_text,
            speech_to_text_extra_minutes_cap: s.speech_to_text_extra_minutes_cap,
            power_pack: s.power_pack,
            smart_routing_packs_cap: s.smart_routing_packs_cap,
            ai_topics_packs_cap: s.ai_topics_packs_cap,
            ai_qa_packs_cap: s.ai_qa_packs_cap,
            ai_topics_on_calls: s.ai_topics_on_calls,
        }
    }
}

impl SettingsV1 {
    fn decode(self) -> Result<AccountSettings, Corrupt> {
        const WHAT: &str = "account settings";
        let zone = Zone::new(&self.zone).map_err(|e| corrupt(WHAT, e))?;
        Ok(AccountSettings {
            zone,
            auto_growth: self.auto_growth,
            recording_retention: retention(self.retention_months)?,
            recording_retention_required: None,
            grace_period_days: self.grace_period_days,
            speech_to_text: self.speech_to_text,
            speech_to_text_extra_minutes_cap: self.speech_to_text_extra_minutes_cap,
            power_pack: self.power_pack,
            smart_routing_packs_cap: self.smart_routing_packs_cap,
            ai_topics_packs_cap: self.ai_topics_packs_cap,
            ai_qa_packs_cap: self.ai_qa_packs_cap,
            ai_topics_on_calls: self.ai_topics_on_calls,
        })
    }
}

/// A retention kept as months, 0 being 14 days.
fn retention(months: u32) -> Result<RecordingRetention, Corrupt> {
    match months {
        0 => Ok(RecordingRetention::FOURTEEN_DAYS),
        months => RecordingRetention::months(months).map_err(|e| corrupt("account settings", e)),
    }
}

/// Version 2 adds the retention the account says it needs (months, 0 being 14 days).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SettingsV2 {
    v1: SettingsV1,
    retention_required_months: Option<u32>,
}

impl From<&AccountSettings> for SettingsV2 {
    fn from(s: &AccountSettings) -> SettingsV2 {
        SettingsV2 {
            v1: s.into(),
            retention_required_months: s
                .recording_retention_required
                .map(|r| r.as_months().unwrap_or(0)),
        }
    }
}

impl SettingsV2 {
    fn decode(self) -> Result<AccountSettings, Corrupt> {
        let mut settings = self.v1.decode()?;
        settings.recording_retention_required =
            self.retention_required_months.map(retention).transpose()?;
        Ok(settings)
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct InventoryV1 {
    seats: [u32; 6],
    in_use: [u32; 6],
    month: Month,
    peak: [u32; 6],
    revision: u64,
}

/// Version 2 keeps the month's peak of seats in use.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct InventoryV2 {
    seats: [u32; 6],
    in_use: [u32; 6],
    month: Month,
    peak: [u32; 6],
    peak_in_use: [u32; 6],
    revision: u64,
}

/// An account: `accounts` tree, key = account id. Version 1 did not keep the peak of seats in
/// use: it reads as the month's peak of seats bought, which no member can have held more of.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum AccountRecord {
    V1 {
        settings: SettingsV1,
        sandbox: bool,
        created_at: Time,
        clock: Option<Time>,
        inventory: InventoryV1,
        audit_sequence: u64,
    },
    V2 {
        settings: SettingsV2,
        sandbox: bool,
        created_at: Time,
        clock: Option<Time>,
        inventory: InventoryV2,
        audit_sequence: u64,
    },
}

impl From<&Account> for AccountRecord {
    fn from(a: &Account) -> AccountRecord {
        let i = &a.inventory;
        AccountRecord::V2 {
            settings: SettingsV2::from(&a.settings),
            sandbox: a.sandbox,
            created_at: a.created_at.into(),
            clock: a.clock.map(Time::from),
            inventory: InventoryV2 {
                seats: i.seats.0,
                in_use: i.in_use.0,
                month: i.month.into(),
                peak: i.peak.0,
                peak_in_use: i.peak_in_use.0,
                revision: i.revision,
            },
            audit_sequence: a.audit_sequence,
        }
    }
}

impl AccountRecord {
    /// The record as version 1 wrote it, without the peak of seats in use: for tests of reading
    /// what older builds wrote.
    #[cfg(test)]
    pub(crate) fn into_v1(self) -> AccountRecord {
        match self {
            AccountRecord::V2 {
                settings,
                sandbox,
                created_at,
                clock,
                inventory: i,
                audit_sequence,
            } => AccountRecord::V1 {
                settings: settings.v1,
                sandbox,
                created_at,
                clock,
                inventory: InventoryV1 {
                    seats: i.seats,
                    in_use: i.in_use,
                    month: i.month,
                    peak: i.peak,
                    revision: i.revision,
                },
                audit_sequence,
            },
            v1 => v1,
        }
    }

    pub(crate) fn decode(self, id: &str) -> Result<Account, Corrupt> {
        const WHAT: &str = "account";
        let (settings, sandbox, created_at, clock, inventory, audit_sequence) = match self {
            AccountRecord::V1 {
                settings,
                sandbox,
                created_at,
                clock,
                inventory: i,
                audit_sequence,
            } => (
                settings.decode()?,
                sandbox,
                created_at,
                clock,
                InventoryV2 {
                    seats: i.seats,
                    in_use: i.in_use,
                    month: i.month,
                    peak: i.peak,
                    peak_in_use: i.peak,
                    revision: i.revision,
                },
                audit_sequence,
            ),
            AccountRecord::V2 {
                settings,
                sandbox,
                created_at,
                clock,
                inventory,
                audit_sequence,
            } => (
                settings.decode()?,
                sandbox,
                created_at,
                clock,
                inventory,
                audit_sequence,
            ),
        };
        Ok(Account {
            id: id.to_owned(),
            settings,
            sandbox,
            created_at: created_at.decode(WHAT)?,
            clock: clock.map(|c| c.decode(WHAT)).transpose()?,
            inventory: Inventory {
                seats: Seats(inventory.seats),
                in_use: Seats(inventory.in_use),
                month: inventory.month.decode(WHAT)?,
                peak: Seats(inventory.peak),
                peak_in_use: Seats(inventory.peak_in_use),
                revision: inventory.revision,
            },
            audit_sequence,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MemberV1 {
    role: u8,
    permissions: Vec<u8>,
    skills: Vec<(String, u8)>,
    track_statistics: bool,
    call_recording: bool,
    outbound_calling: bool,
    daily: bool,
    held: [u32; 6],
    updated_at: Time,
}

/// A member: `members` tree, key = account id, 0, member id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum MemberRecord {
    V1(MemberV1),
}

fn role_code(role: Option<Role>) -> u8 {
    match role {
        None => 0,
        Some(Role::User) => 1,
        Some(Role::TeamLeader) => 2,
        Some(Role::Administrator) => 3,
    }
}

fn channel_code(channel: Channel) -> u8 {
    match channel {
        Channel::Voice => 0,
        Channel::Email => 1,
        Channel::Chat => 2,
        Channel::Sms => 3,
    }
}

impl From<&StoredMember> for MemberV1 {
    fn from(m: &StoredMember) -> MemberV1 {
        let s = &m.settings;
        MemberV1 {
            role: role_code(s.role()),
            permissions: s.listed_permissions().iter().map(|p| p as u8).collect(),
            skills: s
                .skills()
                .iter()
                .map(|k| (k.id.clone(), channel_code(k.channel)))
                .collect(),
            track_statistics: s.track_statistics(),
            call_recording: s.call_recording(),
            outbound_calling: s.outbound_calling(),
            daily: s.billing_preference() == BillingMode::Daily,
            held: m.held.0,
            updated_at: m.updated_at.into(),
        }
    }
}

impl MemberV1 {
    pub(crate) fn decode(self, member_id: &str) -> Result<StoredMember, Corrupt> {
        const WHAT: &str = "member";
        let role = match self.role {
            0 => None,
            1 => Some(Role::User),
            2 => Some(Role::TeamLeader),
            3 => Some(Role::Administrator),
            n => return Err(corrupt(WHAT, format!("role {n}"))),
        };
        let permissions = self
            .permissions
            .iter()
            .map(|&n| {
                Permission::ALL
                    .get(usize::from(n))
                    .copied()
                    .ok_or_else(|| corrupt(WHAT, format!("permission {n}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let skills = self
            .skills
            .into_iter()
            .map(|(id, channel)| {
                let channel = match channel {
                    0 => Channel::Voice,
                    1 => Channel::Email,
                    2 => Channel::Chat,
                    3 => Channel::Sms,
                    n => return Err(corrupt(WHAT, format!("channel {n}"))),
                };
                Ok(Skill { id, channel })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let settings = MemberSettings::new(MemberSettingsInput {
            role,
            permissions,
            skills,
            track_statistics: self.track_statistics,
            call_recording: self.call_recording,
            outbound_calling: self.outbound_calling,
            billing_preference: if self.daily {
                BillingMode::Daily
            } else {
                BillingMode::Monthly
            },
        })
        .map_err(|e| corrupt(WHAT, e))?;
        Ok(StoredMember {
            member_id: member_id.to_owned(),
            settings,
            held: Seats(self.held),
            updated_at: self.updated_at.decode(WHAT)?,
        })
    }
}

/// One unsigned LEB128 varint (postcard's encoding of lengths and enum variants) at `at`: its
/// value and the offset after it.
fn varint(bytes: &[u8], mut at: usize) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for shift in (0..35).step_by(7) {
        let byte = *bytes.get(at)?;
        at = at.checked_add(1)?;
        value |= usize::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some((value, at));
        }
    }
    None
}

/// The length of the part of an encoded [`MemberRecord`] that decides the member's licence: the
/// variant, the role, permissions, skills, the three switches and the billing preference, that
/// is, everything before the seats held and the time of the last change. Two members whose
/// records start with the same such bytes have the same settings. `None` when the bytes are not
/// a version-1 record (the caller decodes them in full, and reports what is wrong).
pub(crate) fn member_settings_len(value: &[u8]) -> Option<usize> {
    // Variant 0 (V1), one byte of role.
    if value.first() != Some(&0) {
        return None;
    }
    let at = 2usize;
    let (permissions, at) = varint(value, at)?;
    let (skills, mut at) = varint(value, at.checked_add(permissions)?)?;
    for _ in 0..skills {
        let (id, after) = varint(value, at)?;
        // The id, then the channel's byte.
        at = after.checked_add(id)?.checked_add(1)?;
    }
    // track_statistics, call_recording, outbound_calling, daily.
    let end = at.checked_add(4)?;
    (end <= value.len()).then_some(end)
}

impl From<&StoredMember> for MemberRecord {
    fn from(m: &StoredMember) -> MemberRecord {
        MemberRecord::V1(MemberV1::from(m))
    }
}

impl MemberRecord {
    pub(crate) fn decode(self, member_id: &str) -> Result<StoredMember, Corrupt> {
        match self {
            MemberRecord::V1(v1) => v1.decode(member_id),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct CartLineV1 {
    product: u8,
    from: u32,
    to: u32,
    this_month: i64,
    next_month: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ChangeV1 {
    AccountSettings {
        before: Option<SettingsV1>,
        after: SettingsV1,
    },
    Member {
        member_id: String,
        before: Option<MemberV1>,
        after: Option<MemberV1>,
    },
    Inventory {
        lines: Vec<CartLineV1>,
        auto_growth_for: Option<String>,
    },
    Clock {
        from: Time,
        to: Time,
    },
    /// Settings with the retention the account needs (format version 4).
    AccountSettingsV2 {
        before: Option<SettingsV2>,
        after: SettingsV2,
    },
}

/// An audit entry: `audit` tree, key = account id, 0, sequence (u64 big-endian).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum AuditRecord {
    V1 {
        time: Time,
        actor: String,
        change: ChangeV1,
    },
}

impl From<&AuditEntry> for AuditRecord {
    fn from(e: &AuditEntry) -> AuditRecord {
        let change = match &e.change {
            Change::AccountSettings { before, after } => ChangeV1::AccountSettingsV2 {
                before: before.as_ref().map(SettingsV2::from),
                after: after.into(),
            },
            Change::Member { before, after } => ChangeV1::Member {
                member_id: before
                    .as_ref()
                    .or(after.as_ref())
                    .map(|m| m.member_id.clone())
                    .unwrap_or_default(),
                before: before.as_ref().map(MemberV1::from),
                after: after.as_ref().map(MemberV1::from),
            },
            Change::Inventory {
                lines,
                auto_growth_for,
            } => ChangeV1::Inventory {
                lines: lines
                    .iter()
                    .map(|l| CartLineV1 {
                        product: l.product as u8,
                        from: l.from,
                        to: l.to,
                        this_month: l.this_month,
                        next_month: l.next_month,
                    })
                    .collect(),
                auto_growth_for: auto_growth_for.clone(),
            },
            Change::Clock { from, to } => ChangeV1::Clock {
                from: (*from).into(),
                to: (*to).into(),
            },
        };
        AuditRecord::V1 {
            time: e.time.into(),
            actor: e.actor.clone(),
            change,
        }
    }
}

impl AuditRecord {
    pub(crate) fn decode(self, sequence: u64) -> Result<AuditEntry, Corrupt> {
        const WHAT: &str = "audit";
        let AuditRecord::V1 {
            time,
            actor,
            change,
        } = self;
        let change = match change {
            ChangeV1::AccountSettings { before, after } => Change::AccountSettings {
                before: before.map(SettingsV1::decode).transpose()?,
                after: after.decode()?,
            },
            ChangeV1::AccountSettingsV2 { before, after } => Change::AccountSettings {
                before: before.map(SettingsV2::decode).transpose()?,
                after: after.decode()?,
            },
            ChangeV1::Member {
                member_id,
                before,
                after,
            } => Change::Member {
                before: before.map(|m| m.decode(&member_id)).transpose()?,
                after: after.map(|m| m.decode(&member_id)).transpose()?,
            },
            ChangeV1::Inventory {
                lines,
                auto_growth_for,
            } => Change::Inventory {
                lines: lines
                    .into_iter()
                    .map(|l| {
                        let product = Product::ALL
                            .get(usize::from(l.product))
                            .copied()
                            .ok_or_else(|| corrupt(WHAT, format!("product {}", l.product)))?;
                        Ok(CartLine {
                            product,
                            from: l.from,
                            to: l.to,
                            this_month: l.this_month,
                            next_month: l.next_month,
                        })
                    })
                    .collect::<Result<Vec<_>, Corrupt>>()?,
                auto_growth_for,
            },
            ChangeV1::Clock { from, to } => Change::Clock {
                from: from.decode(WHAT)?,
                to: to.decode(WHAT)?,
            },
        };
        Ok(AuditEntry {
            sequence,
            time: time.decode(WHAT)?,
            actor,
            change,
        })
    }
}

/// The closed months' peaks: `peaks` tree, key = account id, 0, "YYYY-MM". Only months in which
/// the inventory was used are kept; a month without a record is billed at the `end` counts of the
/// latest record before it. Version 1 (peak only) was written for every month, those without a
/// change included, so its record is only ever read for its own month. Version 3 adds the seats
/// in use (peak and end); earlier versions read them as the seats bought, an upper bound.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum PeakRecord {
    V1([u32; 6]),
    V2 {
        peak: [u32; 6],
        end: [u32; 6],
    },
    V3 {
        peak: [u32; 6],
        end: [u32; 6],
        peak_in_use: [u32; 6],
        end_in_use: [u32; 6],
    },
}

impl PeakRecord {
    pub(crate) fn decode(self, month: BillingMonth) -> licensing_core::ClosedPeak {
        use licensing_core::{ClosedPeak, Seats};
        match self {
            PeakRecord::V1(peak) => ClosedPeak {
                month,
                peak: Seats(peak),
                end: Seats(peak),
                peak_in_use: Seats(peak),
                end_in_use: Seats(peak),
            },
            PeakRecord::V2 { peak, end } => ClosedPeak {
                month,
                peak: Seats(peak),
                end: Seats(end),
                peak_in_use: Seats(peak),
                end_in_use: Seats(end),
            },
            PeakRecord::V3 {
                peak,
                end,
                peak_in_use,
                end_in_use,
            } => ClosedPeak {
                month,
                peak: Seats(peak),
                end: Seats(end),
                peak_in_use: Seats(peak_in_use),
                end_in_use: Seats(end_in_use),
            },
        }
    }
}

impl From<&licensing_core::ClosedPeak> for PeakRecord {
    fn from(closed: &licensing_core::ClosedPeak) -> PeakRecord {
        PeakRecord::V3 {
            peak: closed.peak.0,
            end: closed.end.0,
            peak_in_use: closed.peak_in_use.0,
            end_in_use: closed.end_in_use.0,
        }
    }
}

/// A dedupe record: `dedupe` tree, key = account id, 0, source, 0, event id.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum DedupeRecord {
    V1 { fingerprint: u64, month: Month },
}

impl DedupeRecord {
    pub(crate) fn new(fingerprint: u64, month: BillingMonth) -> DedupeRecord {
        DedupeRecord::V1 {
            fingerprint,
            month: month.into(),
        }
    }

    pub(crate) fn fingerprint(&self) -> u64 {
        let DedupeRecord::V1 { fingerprint, .. } = self;
        *fingerprint
    }

    pub(crate) fn month(&self) -> Result<BillingMonth, Corrupt> {
        let DedupeRecord::V1 { month, .. } = self;
        month.decode("dedupe")
    }
}

/// A member's login day: `days` tree, key = account id, 0, member id, 0, `YYYY-MM-DD`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum DayRecord {
    V1 {
        tier: u8,
        billable: bool,
        logins: u32,
        event_ids: Vec<String>,
    },
    /// Since format version 3: with the queues logged into.
    V2 {
        tier: u8,
        billable: bool,
        logins: u32,
        event_ids: Vec<String>,
        queues: Vec<String>,
        queues_truncated: bool,
    },
}

impl From<&licensing_core::LoginDay> for DayRecord {
    fn from(d: &licensing_core::LoginDay) -> DayRecord {
        DayRecord::V2 {
            tier: d.tier as u8,
            billable: d.billable,
            logins: d.logins,
            event_ids: d.event_ids.clone(),
            queues: d.queues.clone(),
            queues_truncated: d.queues_truncated,
        }
    }
}

pub(crate) fn tier_of(code: u8, what: &'static str) -> Result<licensing_core::Tier, Corrupt> {
    licensing_core::Tier::ALL
        .get(usize::from(code))
        .copied()
        .ok_or_else(|| corrupt(what, format!("tier {code}")))
}

impl DayRecord {
    pub(crate) fn decode(self) -> Result<licensing_core::LoginDay, Corrupt> {
        let (tier, billable, logins, event_ids, queues, queues_truncated) = match self {
            // Written before queues were kept: which queues were used is not known.
            DayRecord::V1 {
                tier,
                billable,
                logins,
                event_ids,
            } => (tier, billable, logins, event_ids, Vec::new(), true),
            DayRecord::V2 {
                tier,
                billable,
                logins,
                event_ids,
                queues,
                queues_truncated,
            } => (tier, billable, logins, event_ids, queues, queues_truncated),
        };
        Ok(licensing_core::LoginDay {
            tier: tier_of(tier, "login day")?,
            billable,
            logins,
            event_ids,
            queues,
            queues_truncated,
        })
    }
}

/// A session change: `sessions` tree, key = account id, 0, time (sortable), member id, 0,
/// source, 0, event id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum SessionRecord {
    V1 { tier: u8, change: u8, queue: String },
}

/// Who was logged in at the start of a month (in the account's zone): `checkpoints` tree, key =
/// account id, 0, zone name, 0, month (`YYYY-MM`). Derived from the `sessions` tree, written by reads, valid
/// only for the months its account's [`CheckpointsValid`] covers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum CheckpointRecord {
    V1 { open: Vec<OpenRecord> },
}

/// One member logged in at a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OpenRecord {
    pub(crate) member: String,
    pub(crate) platform: bool,
    pub(crate) queues: Vec<String>,
    pub(crate) tier: u8,
}

impl CheckpointRecord {
    pub(crate) fn new(state: &licensing_core::Concurrency) -> CheckpointRecord {
        CheckpointRecord::V1 {
            open: state
                .open()
                .map(|o| OpenRecord {
                    member: o.member_id,
                    platform: o.platform,
                    queues: o.queues,
                    tier: o.tier as u8,
                })
                .collect(),
        }
    }

    pub(crate) fn decode(self) -> Result<licensing_core::Concurrency, Corrupt> {
        let CheckpointRecord::V1 { open } = self;
        let open = open
            .into_iter()
            .map(|o| {
                Ok(licensing_core::OpenSession {
                    member_id: o.member,
                    platform: o.platform,
                    queues: o.queues,
                    tier: tier_of(o.tier, "checkpoint")?,
                })
            })
            .collect::<Result<Vec<_>, Corrupt>>()?;
        Ok(licensing_core::Concurrency::from_open(open))
    }
}

/// Up to which month an account's checkpoints are valid, in which zone: `checkpoints_valid`
/// tree, key = account id. A session change in month M lowers it to M (checkpoints after M no
/// longer say who was logged in); a read that counted the months up to N from a valid
/// checkpoint writes their checkpoints and raises it to N, if the record did not change
/// meanwhile. `late` counts the session changes applied to months before the account's current
/// one: a read raises validity only up to the current month, so a change in the current month
/// or later cannot have been missed by it, and any earlier one changes the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum CheckpointsValid {
    V1 {
        zone: String,
        through: String,
        late: u64,
    },
}

/// One day's concurrency, in the account's zone: `day_peaks` tree, key = account id, 0, zone
/// name, 0, date (`YYYY-MM-DD`). Derived from the day's session changes and who was logged in
/// at its start; written by whoever counted the day (a read, or the keeper after a commit).
/// Valid while its `epoch` is the account's [`PeaksDirty`] epoch, the day is not marked dirty
/// there, and `start` is the digest of the state the day starts in now (the month's checkpoint
/// for its first day, the previous day's `end` for the others).
/// Version 2 adds the instant of the last session change counted: a day marked only by changes
/// after it is counted on from `end`, not again from its start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum DayPeaksRecord {
    V1 {
        epoch: u64,
        /// SHA-256 of the encoded [`CheckpointRecord`] the day was counted from.
        start: [u8; 32],
        /// The peak per tier within the day, the start state's counts included.
        peaks: [u32; 5],
        /// Who was logged in at the day's end: an encoded [`CheckpointRecord`].
        end: Vec<u8>,
        /// SHA-256 of `end`.
        end_digest: [u8; 32],
    },
    V2 {
        epoch: u64,
        start: [u8; 32],
        peaks: [u32; 5],
        /// Who was logged in after the last session change counted.
        end: Vec<u8>,
        end_digest: [u8; 32],
        /// When the last session change counted happened; `None`: the day had none.
        through: Option<Time>,
    },
}

/// A [`DayPeaksRecord`] of any version.
#[derive(Debug, Clone)]
pub(crate) struct DayPeaks {
    pub(crate) epoch: u64,
    pub(crate) start: [u8; 32],
    pub(crate) peaks: [u32; 5],
    pub(crate) end: Vec<u8>,
    pub(crate) end_digest: [u8; 32],
    /// `None` also for a version-1 record, which did not say: such a day is counted again from
    /// its start.
    pub(crate) through: Option<Timestamp>,
}

impl DayPeaksRecord {
    pub(crate) fn decode(self) -> Result<DayPeaks, Corrupt> {
        Ok(match self {
            DayPeaksRecord::V1 {
                epoch,
                start,
                peaks,
                end,
                end_digest,
            } => DayPeaks {
                epoch,
                start,
                peaks,
                end,
                end_digest,
                through: None,
            },
            DayPeaksRecord::V2 {
                epoch,
                start,
                peaks,
                end,
                end_digest,
                through,
            } => DayPeaks {
                epoch,
                start,
                peaks,
                end,
                end_digest,
                through: through.map(|t| t.decode("day peaks")).transpose()?,
            },
        })
    }
}

impl From<&DayPeaks> for DayPeaksRecord {
    fn from(d: &DayPeaks) -> DayPeaksRecord {
        DayPeaksRecord::V2 {
            epoch: d.epoch,
            start: d.start,
            peaks: d.peaks,
            end: d.end.clone(),
            end_digest: d.end_digest,
            through: d.through.map(Time::from),
        }
    }
}

/// The days whose [`DayPeaksRecord`] a session change made stale: `day_peaks_dirty` tree, key =
/// account id. Every session change marks its day (in the account's zone) with the record's
/// next generation, in the transaction that applies it; whoever counts the day again removes
/// the mark, only if it is still the generation it saw before reading the day's changes. A
/// change of the account's zone starts a new epoch: no day counted in the old one is valid.
/// Version 2 also keeps, per day, when the earliest change marking it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum PeaksDirty {
    V1 {
        zone: String,
        epoch: u64,
        next: u64,
        /// Date (`YYYY-MM-DD`) to the generation that marked it.
        days: std::collections::BTreeMap<String, u64>,
    },
    V2 {
        zone: String,
        epoch: u64,
        next: u64,
        /// Date to the generation that marked it and the earliest change marking it.
        days: std::collections::BTreeMap<String, (u64, Option<Time>)>,
    },
}

impl PeaksDirty {
    /// The zone the marked days are dates of.
    pub(crate) fn zone(&self) -> &str {
        match self {
            PeaksDirty::V1 { zone, .. } | PeaksDirty::V2 { zone, .. } => zone,
        }
    }
}

/// How far an account's session changes are compacted away: `session_floor` tree, key =
/// account id. `pending` is set first: from then on every event before it is refused, so the
/// session changes before it are final; then `complete` is written with who was logged in at
/// that instant, and only then are the session changes before it deleted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum FloorRecord {
    V1 {
        /// The instant the history before is compacted, and who was logged in at it.
        complete: Option<(Time, CheckpointRecord)>,
        /// A floor being moved to: events before it are refused already.
        pending: Option<Time>,
        /// The account's time when the floor was last moved: the months before it had closed.
        moved_at: Time,
    },
}

/// A closed month's concurrency peaks per tier, kept when its session changes were compacted
/// away (counted in the zone the account had then): `month_peaks` tree, key = account id, 0,
/// `YYYY-MM`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum MonthPeaksRecord {
    V1 { zone: String, peaks: [u32; 5] },
}

/// Who recorded calls, and the retention, when a month started (in the account's zone), and the
/// audit sequence its own entries start at: `month_starts` tree, key = account id, 0, zone name,
/// 0, `YYYY-MM`. Derived from the audit trail, written by statement reads once the month is a day
/// old (entries are appended at the account's time, so what came before never changes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum MonthStartRecord {
    V1 {
        next_sequence: u64,
        recorded: Vec<(String, u8)>,
        /// `None` before the account's first settings entry; 0 is 14 days.
        retention_months: Option<u32>,
    },
}

impl MonthStartRecord {
    pub(crate) fn new(start: &licensing_core::MonthStart, next_sequence: u64) -> MonthStartRecord {
        MonthStartRecord::V1 {
            next_sequence,
            recorded: start
                .recorded
                .iter()
                .map(|(member, tier)| (member.clone(), *tier as u8))
                .collect(),
            retention_months: start.retention.map(|r| r.as_months().unwrap_or(0)),
        }
    }

    pub(crate) fn decode(self) -> Result<(licensing_core::MonthStart, u64), Corrupt> {
        const WHAT: &str = "month start";
        let MonthStartRecord::V1 {
            next_sequence,
            recorded,
            retention_months,
        } = self;
        let recorded = recorded
            .into_iter()
            .map(|(member, tier)| Ok((member, tier_of(tier, WHAT)?)))
            .collect::<Result<_, Corrupt>>()?;
        let retention = match retention_months {
            None => None,
            Some(0) => Some(licensing_core::RecordingRetention::FOURTEEN_DAYS),
            Some(months) => Some(
                licensing_core::RecordingRetention::months(months).map_err(|e| corrupt(WHAT, e))?,
            ),
        };
        Ok((
            licensing_core::MonthStart {
                recorded,
                retention,
            },
            next_sequence,
        ))
    }
}

/// Usage by an unknown member: `unlicensed` tree, key = account id, 0, member id.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum UnlicensedRecord {
    V1 { events: u64, last_seen: Time },
}

impl UnlicensedRecord {
    pub(crate) fn decode(self) -> Result<(u64, Timestamp), Corrupt> {
        let UnlicensedRecord::V1 { events, last_seen } = self;
        Ok((events, last_seen.decode("unlicensed")?))
    }
}

/// Metered use: `meters` tree, key = account id, 0, `YYYY-MM`, 0, meter. Version 1 knew only use
/// while the service was on.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum MeterRecord {
    V1(u64),
    V2 { used: u64, while_off: u64 },
}

impl From<MeterRecord> for licensing_core::MeterUse {
    fn from(record: MeterRecord) -> licensing_core::MeterUse {
        match record {
            MeterRecord::V1(used) => licensing_core::MeterUse::on(used),
            MeterRecord::V2 { used, while_off } => licensing_core::MeterUse { used, while_off },
        }
    }
}

impl From<licensing_core::MeterUse> for MeterRecord {
    fn from(usage: licensing_core::MeterUse) -> MeterRecord {
        MeterRecord::V2 {
            used: usage.used,
            while_off: usage.while_off,
        }
    }
}

/// A final statement: `statements` tree, key = account id, 0, `YYYY-MM`. Written once, when the
/// month is first read after it closed; read back unchanged ever after.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum StatementRecord {
    V1 {
        lines: Vec<StatementLineV1>,
        currency: String,
        price_list: String,
        price_list_version: u32,
    },
    V2 {
        lines: Vec<StatementLineV1>,
        currency: String,
        price_list: String,
        price_list_version: u32,
        unbilled: Vec<UnbilledV1>,
    },
}

/// Unbilled metered use of a statement: meter code, quantity, reason (0 service off, 1 over the
/// cap), description.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct UnbilledV1 {
    meter: u8,
    quantity: u64,
    reason: u8,
    description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StatementLineV1 {
    kind: u8,
    /// 0 product, 1 tier, 2 meter, 3 call recording; with the code of the product, tier or meter.
    subject: (u8, u8),
    quantity: u64,
    unit_price: i64,
    amount: i64,
    description: String,
    member_ids: Vec<String>,
}

impl From<&licensing_core::Statement> for StatementRecord {
    fn from(s: &licensing_core::Statement) -> StatementRecord {
        use licensing_core::LineSubject as S;
        use licensing_core::UnbilledReason;
        StatementRecord::V2 {
            unbilled: s
                .unbilled
                .iter()
                .map(|u| UnbilledV1 {
                    meter: u.meter as u8,
                    quantity: u.quantity,
                    reason: match u.reason {
                        UnbilledReason::ServiceOff => 0,
                        UnbilledReason::OverCap => 1,
                    },
                    description: u.description.clone(),
                })
                .collect(),
            lines: s
                .lines
                .iter()
                .map(|l| StatementLineV1 {
                    kind: l.kind as u8,
                    subject: match l.subject {
                        S::Product(p) => (0, p as u8),
                        S::Tier(t) => (1, t as u8),
                        S::Meter(m) => (2, m as u8),
                        S::CallRecording => (3, 0),
                    },
                    quantity: l.quantity,
                    unit_price: l.unit_price,
                    amount: l.amount,
                    description: l.description.clone(),
                    member_ids: l.member_ids.clone(),
                })
                .collect(),
            currency: s.currency.as_str().to_owned(),
            price_list: s.price_list.clone(),
            price_list_version: s.price_list_version,
        }
    }
}

impl StatementRecord {
    pub(crate) fn decode(self, month: BillingMonth) -> Result<licensing_core::Statement, Corrupt> {
        use licensing_core::{
            LineKind, LineSubject as S, Meter, StatementLine, Tier, UnbilledReason, UnbilledUse,
        };
        const WHAT: &str = "statement";
        let (lines, currency, price_list, price_list_version, unbilled) = match self {
            StatementRecord::V1 {
                lines,
                currency,
                price_list,
                price_list_version,
            } => (lines, currency, price_list, price_list_version, Vec::new()),
            StatementRecord::V2 {
                lines,
                currency,
                price_list,
                price_list_version,
                unbilled,
            } => (lines, currency, price_list, price_list_version, unbilled),
        };
        let unbilled = unbilled
            .into_iter()
            .map(|u| {
                Ok(UnbilledUse {
                    meter: *Meter::ALL
                        .get(usize::from(u.meter))
                        .ok_or_else(|| corrupt(WHAT, "unbilled meter"))?,
                    quantity: u.quantity,
                    reason: match u.reason {
                        0 => UnbilledReason::ServiceOff,
                        1 => UnbilledReason::OverCap,
                        n => return Err(corrupt(WHAT, format!("unbilled reason {n}"))),
                    },
                    description: u.description,
                })
            })
            .collect::<Result<Vec<_>, Corrupt>>()?;
        let lines = lines
            .into_iter()
            .map(|l| {
                let kind = *LineKind::ALL
                    .get(usize::from(l.kind))
                    .ok_or_else(|| corrupt(WHAT, "line kind"))?;
                let code = usize::from(l.subject.1);
                let subject = match l.subject.0 {
                    0 => S::Product(
                        *Product::ALL
                            .get(code)
                            .ok_or_else(|| corrupt(WHAT, "product"))?,
                    ),
                    1 => S::Tier(*Tier::ALL.get(code).ok_or_else(|| corrupt(WHAT, "tier"))?),
                    2 => S::Meter(*Meter::ALL.get(code).ok_or_else(|| corrupt(WHAT, "meter"))?),
                    3 => S::CallRecording,
                    n => return Err(corrupt(WHAT, format!("subject {n}"))),
                };
                Ok(StatementLine {
                    kind,
                    subject,
                    quantity: l.quantity,
                    unit_price: l.unit_price,
                    amount: l.amount,
                    description: l.description,
                    member_ids: l.member_ids,
                })
            })
            .collect::<Result<Vec<_>, Corrupt>>()?;
        let currency =
            licensing_core::Currency::parse(&currency).ok_or_else(|| corrupt(WHAT, "currency"))?;
        let mut statement = licensing_core::Statement::from_lines(
            month,
            lines,
            currency,
            price_list,
            price_list_version,
        )
        .map_err(|e| corrupt(WHAT, e))?;
        statement.unbilled = unbilled;
        Ok(statement)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{MemberRecord, MemberV1, Time, encode, member_settings_len};

    fn member() -> impl Strategy<Value = MemberV1> {
        (
            (
                0u8..4,
                proptest::collection::vec(0u8..8, 0..200),
                // Ids long enough for lengths of two varint bytes.
                proptest::collection::vec(("[a-z0-9-]{0,300}", 0u8..4), 0..6),
            ),
            (any::<[bool; 4]>(), any::<[u32; 6]>(), any::<(i64, i32)>()),
        )
            .prop_map(
                |((role, permissions, skills), (switches, held, (seconds, nanos)))| MemberV1 {
                    role,
                    permissions,
                    skills,
                    track_statistics: switches[0],
                    call_recording: switches[1],
                    outbound_calling: switches[2],
                    daily: switches[3],
                    held,
                    updated_at: Time(seconds, nanos),
                },
            )
    }

    proptest! {
        /// The settings part is exactly what comes before the seats held and the time, so it is
        /// the same for two members with the same settings and different seats or times.
        #[test]
        fn the_settings_part_of_a_member_record_ends_where_its_seats_begin(
            member in member(),
            other_held in any::<[u32; 6]>(),
            other_time in any::<(i64, i32)>(),
        ) {
            let bytes = encode(&MemberRecord::V1(member.clone()));
            let tail = postcard::to_allocvec(&(member.held, member.updated_at)).unwrap();
            prop_assert_eq!(member_settings_len(&bytes), Some(bytes.len() - tail.len()));

            let mut moved = member.clone();
            moved.held = other_held;
            moved.updated_at = Time(other_time.0, other_time.1);
            let moved_bytes = encode(&MemberRecord::V1(moved));
            let len = member_settings_len(&moved_bytes).unwrap();
            prop_assert_eq!(&moved_bytes[..len], &bytes[..bytes.len() - tail.len()]);
        }

        /// Settings that differ give different settings parts.
        #[test]
        fn members_with_different_settings_have_different_settings_parts(
            a in member(),
            b in member(),
        ) {
            let same = (&a.role, &a.permissions, &a.skills, a.track_statistics, a.call_recording,
                a.outbound_calling, a.daily)
                == (&b.role, &b.permissions, &b.skills, b.track_statistics, b.call_recording,
                    b.outbound_calling, b.daily);
            let (a, b) = (encode(&MemberRecord::V1(a)), encode(&MemberRecord::V1(b)));
            let (a_len, b_len) = (member_settings_len(&a).unwrap(), member_settings_len(&b).unwrap());
            prop_assert_eq!(a[..a_len] == b[..b_len], same);
        }

        /// Cut short or not a record: no settings part, never a panic.
        #[test]
        fn a_truncated_member_record_has_no_settings_part(member in member(), cut in 0usize..64) {
            let bytes = encode(&MemberRecord::V1(member));
            let full = member_settings_len(&bytes).unwrap();
            let cut = cut.min(full.saturating_sub(1));
            prop_assert_eq!(member_settings_len(&bytes[..cut]), None);
        }
    }
}
