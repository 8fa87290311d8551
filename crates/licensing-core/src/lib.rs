//! The licensing domain: tiers, member settings, the triggers that decide a member's tier, add-ons,
//! billing mode and prices.
//!
//! Everything here is pure computation over values: no I/O, no clock, no transport. A caller that
//! holds validated inputs can therefore never see an error from [`resolve`].
// No input may make the domain panic or wrap: every operation on numbers and times is checked or
// saturating (tests may compute freely).
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

pub mod access;
pub mod account;
pub mod advisor;
pub mod audit;
pub mod calendar;
pub mod effects;
pub mod events;
pub mod ids;
pub mod inventory;
pub mod member;
pub mod month;
pub mod price;
pub mod quota;
pub mod resolve;
pub mod retention;
pub mod statement;
pub mod tier;

pub use access::{Accounts, Credential, Denied, Principal, Right};
pub use account::{
    Account, AccountSettings, ClockError, InvalidAccountSettings, MAX_ACCOUNT_ID_BYTES,
    MAX_GRACE_PERIOD_DAYS, MAX_MEMBER_ID_BYTES, check_id,
};
pub use audit::{AuditEntry, Change, StoredMember, UNAUTHENTICATED};
pub use calendar::{
    BillingMonth, EARLIEST, EARLIEST_MONTH, END, InvalidMonth, LAST_MONTH, OutOfRange,
    UnknownTimeZone, Zone, check_in_range,
};
pub use effects::{Effects, MemberUse, SessionKind, effects};
pub use events::{
    Concurrency, Event, EventKind, LoginDay, MAX_FUTURE_SECONDS, MAX_METER_MONTH_TOTAL,
    MAX_METERED_QUANTITY, Meter, MeterTotals, MeterUse, OpenSession, Outcome, QUEUES_PER_DAY,
    Refusal, SessionChange, Transition, accept, concurrency_peaks, last_expired_month,
    month_closes_at, service_on,
};
pub use ids::{IdKind, InvalidId};
pub use inventory::{
    Cart, CartError, CartLine, ClosedPeak, Inventory, MAX_SEATS, Product, SeatChange, Seats,
    SeatsMissing, cart, hold_seats, peak_in_use,
};
pub use jiff::Timestamp;
pub use member::{
    BillingMode, Channel, InvalidSettings, MAX_SKILL_ID_BYTES, MAX_SKILLS, MemberSettings,
    MemberSettingsInput, Permission, PermissionSet, Role, Skill,
};
pub use month::{MonthFacts, MonthStart, month_facts};
pub use price::{
    Currency, InvalidPriceList, MAX_PRICE, MemberPrice, Period, PriceItem, PriceLine, PriceList,
    PriceListInput,
};
pub use quota::{Quota, check_quota};
pub use resolve::{AddOn, AddOnLine, Billing, BillingReason, Reason, Resolution, Trigger, resolve};
pub use retention::{InvalidRetention, RecordingRetention};
pub use statement::{
    AmountOverflow, LineKind, LineSubject, MemberDays, MeterBilling, MeterCaps, RecordedMember,
    SPEECH_TO_TEXT_BASE_MINUTES, Statement, StatementInput, StatementLine, UnbilledReason,
    UnbilledUse, meter_billing, statement,
};
pub use tier::Tier;
