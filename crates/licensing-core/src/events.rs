//! Usage events (SPEC 5): what they are, when an account accepts them, and what they add up to —
//! login days for daily billing, concurrency peaks per tier, metered use.
//!
//! Every aggregate here is a commutative merge or a pure function of the set of events, so the
//! result does not depend on the order in which events arrive.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, hash_map::Entry},
    fmt,
};

use jiff::{SignedDuration, Timestamp, civil::Date};

use crate::{
    account::Account,
    calendar::BillingMonth,
    ids::{self, IdKind},
    tier::Tier,
};

/// How far past the account's clock an event may lie: collectors' clocks drift a little.
pub const MAX_FUTURE_SECONDS: i64 = 15 * 60;
/// The longest source or event id, in bytes.
pub const MAX_EVENT_ID_BYTES: usize = IdKind::Event.max_bytes();
/// Event ids kept per login day, to trace what made the day billable.
pub const EVENT_IDS_PER_DAY: usize = 5;
/// The most one metered event may carry (minutes or packs): far more than any single use, far
/// less than what could make a month's sums overflow.
pub const MAX_METERED_QUANTITY: u64 = 1_000_000;
/// The most one meter may add up to in an account's month; an event that would pass it is
/// refused. With prices bounded by `MAX_PRICE`, no statement line built from it overflows.
pub const MAX_METER_MONTH_TOTAL: u64 = 1_000_000_000;

/// A metered service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Meter {
    /// Speech-to-text minutes.
    SpeechToTextMinutes,
    /// Power Pack: smart routing packs.
    SmartRoutingPacks,
    /// Power Pack: AI topics packs.
    AiTopicsPacks,
    /// Power Pack: AI quality assurance packs.
    AiQaPacks,
}

impl Meter {
    /// Every meter.
    pub const ALL: [Meter; 4] = [
        Meter::SpeechToTextMinutes,
        Meter::SmartRoutingPacks,
        Meter::AiTopicsPacks,
        Meter::AiQaPacks,
    ];
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The agent logged in to the platform.
    AgentLogin,
    /// The agent logged out of the platform.
    AgentLogout,
    /// The agent logged in to a queue.
    QueueLogin(String),
    /// The agent logged out of a queue.
    QueueLogout(String),
    /// A metered service was used.
    Metered {
        /// Which.
        meter: Meter,
        /// How much (minutes or packs), positive.
        quantity: u64,
    },
}

/// One usage event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Event {
    /// Where it comes from; ids are unique per source.
    pub source: String,
    /// Unique within the source.
    pub event_id: String,
    /// The account.
    pub account_id: String,
    /// The member.
    pub member_id: String,
    /// When it happened.
    pub occurred_at: Timestamp,
    /// What happened.
    pub kind: EventKind,
}

/// Why an event was refused. Refusals are answers too: the same event gets the same one again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A field is missing or malformed.
    #[error("invalid {field} {value}: {problem}")]
    Invalid {
        /// The field.
        field: String,
        /// The value.
        value: String,
        /// The problem.
        problem: String,
    },
    /// The account does not exist.
    #[error("account {0:?} not found")]
    UnknownAccount(String),
    /// The event's month is closed.
    #[error("month {month} closed at {closed_at} (end of month plus the account's grace period)")]
    MonthClosed {
        /// The event's month.
        month: BillingMonth,
        /// When it closed.
        closed_at: Timestamp,
    },
    /// The event lies too far in the future.
    #[error(
        "occurred_at {occurred_at} is more than {MAX_FUTURE_SECONDS} s after the account's time {now}"
    )]
    TooFarInFuture {
        /// The event's time.
        occurred_at: Timestamp,
        /// The account's time.
        now: Timestamp,
    },
    /// The same source and id was applied before with another payload.
    #[error("event {origin}/{event_id} was applied before with a different payload")]
    ConflictingDuplicate {
        /// The event's source.
        origin: String,
        /// The id.
        event_id: String,
    },
    /// The caller does not hold the right to send events for the account.
    #[error("the caller does not hold the {right} right on account {account_id:?}")]
    PermissionDenied {
        /// The event's account.
        account_id: String,
        /// The right it needs.
        right: crate::access::Right,
    },
    /// The meter's month total would pass [`MAX_METER_MONTH_TOTAL`].
    #[error(
        "{meter} in {month} would reach {total} with this event's {quantity}: at most {MAX_METER_MONTH_TOTAL} a month"
    )]
    MeterLimit {
        /// The meter.
        meter: Meter,
        /// The event's month.
        month: BillingMonth,
        /// The month's total before the event.
        total: u64,
        /// The event's quantity.
        quantity: u64,
    },
}

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its effects are durable.
    Applied,
    /// It was applied before; nothing changed.
    Duplicate,
    /// Refused, with the reason.
    Refused(Refusal),
}

fn check_id(kind: IdKind, field: &str, value: &str) -> Result<(), Refusal> {
    ids::check(kind, field, value).map_err(|e| Refusal::Invalid {
        field: e.field,
        value: e.value,
        problem: e.problem,
    })
}

impl Event {
    /// Checks the fields that do not depend on stored state.
    pub fn validate(&self) -> Result<(), Refusal> {
        check_id(IdKind::Source, "source", &self.source)?;
        crate::calendar::check_in_range("occurred_at", self.occurred_at).map_err(|e| {
            Refusal::Invalid {
                field: e.field,
                value: e.at.to_string(),
                problem: format!(
                    "must be from {} to before {}",
                    crate::calendar::EARLIEST,
                    crate::calendar::END
                ),
            }
        })?;
        check_id(IdKind::Event, "event_id", &self.event_id)?;
        check_id(IdKind::Account, "account_id", &self.account_id)?;
        check_id(IdKind::Member, "member_id", &self.member_id)?;
        match &self.kind {
            EventKind::QueueLogin(queue) | EventKind::QueueLogout(queue) => {
                check_id(IdKind::Queue, "queue_id", queue)?;
            }
            EventKind::Metered { quantity: 0, .. } => {
                return Err(Refusal::Invalid {
                    field: "metered_usage.quantity".into(),
                    value: "0".into(),
                    problem: "must be positive".into(),
                });
            }
            EventKind::Metered { quantity, .. } if *quantity > MAX_METERED_QUANTITY => {
                return Err(Refusal::Invalid {
                    field: "metered_usage.quantity".into(),
                    value: quantity.to_string(),
                    problem: format!("must be at most {MAX_METERED_QUANTITY}"),
                });
            }
            EventKind::AgentLogin | EventKind::AgentLogout | EventKind::Metered { .. } => {}
        }
        Ok(())
    }

    /// A fingerprint of the payload, to tell a replay from a different event reusing an id.
    /// FNV-1a over a canonical rendering: stable across builds and machines.
    pub fn fingerprint(&self) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
            // A separator, so that field boundaries count.
            hash ^= 0xff;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        };
        eat(self.account_id.as_bytes());
        eat(self.member_id.as_bytes());
        eat(&self.occurred_at.as_second().to_be_bytes());
        eat(&self.occurred_at.subsec_nanosecond().to_be_bytes());
        match &self.kind {
            EventKind::AgentLogin => eat(b"agent_login"),
            EventKind::AgentLogout => eat(b"agent_logout"),
            EventKind::QueueLogin(q) => {
                eat(b"queue_login");
                eat(q.as_bytes());
            }
            EventKind::QueueLogout(q) => {
                eat(b"queue_logout");
                eat(q.as_bytes());
            }
            EventKind::Metered { meter, quantity } => {
                eat(b"metered");
                eat(&[*meter as u8]);
                eat(&quantity.to_be_bytes());
            }
        }
        hash
    }

    /// Whether the event is a login (platform or queue): it makes its day a login day.
    pub fn is_login(&self) -> bool {
        matches!(self.kind, EventKind::AgentLogin | EventKind::QueueLogin(_))
    }
}

/// When `month` closes for `account`: the start of the next month plus the grace period, in the
/// account's calendar (a day is a calendar day, whatever its length).
pub fn month_closes_at(account: &Account, month: BillingMonth) -> Timestamp {
    let zone = &account.settings.zone;
    let next = zone.start_of(month.next());
    let days = i64::from(account.settings.grace_period_days);
    zone.add_days(next, days)
}

/// The latest month of the account whose dedupe records expire by `now` (its close plus
/// `retention_days`), if any: an account's clock moving asks to expire its records only when
/// this changed.
pub fn last_expired_month(
    account: &Account,
    now: Timestamp,
    retention_days: u32,
) -> Option<BillingMonth> {
    let zone = &account.settings.zone;
    let expires = |month| zone.add_days(month_closes_at(account, month), i64::from(retention_days));
    // A month whose records expire by `now` closed (began its successor plus the grace
    // period) at least `retention_days` before: no need to look at the months before the one
    // that far back, less a margin for the month lengths.
    let back = i64::from(retention_days)
        .saturating_add(i64::from(account.settings.grace_period_days))
        .saturating_add(62);
    let mut month = zone
        .month(zone.add_days(now, back.saturating_neg()))
        .max(zone.month(account.created_at));
    let mut last = None;
    // A month not begun by `now` has not closed either (and the calendar ends in 9999).
    while month < zone.month(now) && expires(month) <= now {
        last = Some(month);
        month = month.next();
    }
    last
}

/// The month `occurred_at` counts in, if the account accepts the event at `real_now`.
pub fn accept(
    account: &Account,
    occurred_at: Timestamp,
    real_now: Timestamp,
) -> Result<BillingMonth, Refusal> {
    let now = account.now(real_now);
    let latest = now
        .checked_add(SignedDuration::from_secs(MAX_FUTURE_SECONDS))
        .unwrap_or(Timestamp::MAX);
    if occurred_at > latest {
        return Err(Refusal::TooFarInFuture { occurred_at, now });
    }
    let month = account.settings.zone.month(occurred_at);
    let closed_at = month_closes_at(account, month);
    if now >= closed_at {
        return Err(Refusal::MonthClosed { month, closed_at });
    }
    Ok(month)
}

/// A member's login day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginDay {
    /// The tier held that day: the highest seen in its logins.
    pub tier: Tier,
    /// Billable per day: the member was billed daily at one of the day's logins.
    pub billable: bool,
    /// Logins that day.
    pub logins: u32,
    /// The smallest few `source/event_id`s of the day's logins.
    pub event_ids: Vec<String>,
    /// The queues logged into that day, sorted and distinct: the smallest
    /// [`QUEUES_PER_DAY`] of them.
    pub queues: Vec<String>,
    /// More queues were logged into than `queues` holds: the day says nothing of which queues
    /// were not used.
    pub queues_truncated: bool,
}

/// The queues a login day keeps (as many as a member may have skills).
pub const QUEUES_PER_DAY: usize = crate::MAX_SKILLS;

impl LoginDay {
    /// Adds a login, with its queue for a queue login. Commutative and idempotent per event id
    /// and per queue, so arrival order does not matter.
    pub fn add(
        day: Option<LoginDay>,
        tier: Tier,
        billable: bool,
        event: &str,
        queue: Option<&str>,
    ) -> LoginDay {
        let mut day = day.unwrap_or(LoginDay {
            tier,
            billable,
            logins: 0,
            event_ids: Vec::new(),
            queues: Vec::new(),
            queues_truncated: false,
        });
        day.tier = day.tier.max(tier);
        day.billable |= billable;
        day.logins = day.logins.saturating_add(1);
        if let Err(at) = day.event_ids.binary_search_by(|id| id.as_str().cmp(event)) {
            day.event_ids.insert(at, event.to_owned());
            day.event_ids.truncate(EVENT_IDS_PER_DAY);
        }
        if let Some(queue) = queue
            && let Err(at) = day.queues.binary_search_by(|q| q.as_str().cmp(queue))
        {
            day.queues.insert(at, queue.to_owned());
            if day.queues.len() > QUEUES_PER_DAY {
                day.queues.truncate(QUEUES_PER_DAY);
                day.queues_truncated = true;
            }
        }
        day
    }
}

/// A change of a member's session, in the order of time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionChange {
    /// Platform login.
    Login,
    /// Platform logout.
    Logout,
    /// Queue login.
    QueueLogin(String),
    /// Queue logout.
    QueueLogout(String),
}

/// One session change of a member, with the tier they held when it was ingested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// When.
    pub at: Timestamp,
    /// Who.
    pub member_id: String,
    /// Their tier.
    pub tier: Tier,
    /// What.
    pub change: SessionChange,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Session {
    platform: bool,
    queues: BTreeSet<String>,
    counted_as: Option<Tier>,
}

impl Session {
    /// The session after `change`, counted in `current`.
    fn step(&mut self, change: SessionChange, tier: Tier, current: &mut [u32; 5]) {
        match change {
            SessionChange::Login => self.platform = true,
            SessionChange::Logout => self.platform = false,
            SessionChange::QueueLogin(q) => {
                self.queues.insert(q);
            }
            SessionChange::QueueLogout(q) => {
                self.queues.remove(&q);
            }
        }
        let logged_in = self.platform || !self.queues.is_empty();
        match (self.counted_as, logged_in) {
            (None, true) => {
                self.counted_as = Some(tier);
                let count = &mut current[tier.index()];
                *count = count.saturating_add(1);
            }
            (Some(counted), false) => {
                self.counted_as = None;
                // Counted when the session opened, so never below zero.
                let count = &mut current[counted.index()];
                *count = count.saturating_sub(1);
            }
            (None, false) | (Some(_), true) => {}
        }
    }
}

/// A member logged in at some instant: what a month's start state is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSession {
    /// Who.
    pub member_id: String,
    /// Whether their platform session is open.
    pub platform: bool,
    /// The queues they are logged into, in order.
    pub queues: Vec<String>,
    /// The tier they are counted as: the one they held when their session opened.
    pub tier: Tier,
}

/// Who is logged in at an instant, and how many per tier: the state concurrency is counted
/// from. Built from the open sessions of a checkpoint, moved on by [`Concurrency::apply`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Concurrency {
    sessions: HashMap<String, Session>,
    current: [u32; 5],
}

impl Concurrency {
    /// The state in which exactly `open` are logged in.
    pub fn from_open(open: impl IntoIterator<Item = OpenSession>) -> Concurrency {
        let mut state = Concurrency::default();
        for session in open {
            let count = &mut state.current[session.tier.index()];
            *count = count.saturating_add(1);
            state.sessions.insert(
                session.member_id,
                Session {
                    platform: session.platform,
                    queues: session.queues.into_iter().collect(),
                    counted_as: Some(session.tier),
                },
            );
        }
        state
    }

    /// The members logged in, by member id.
    pub fn open(&self) -> impl Iterator<Item = OpenSession> + use<> {
        let mut open: Vec<OpenSession> = self
            .sessions
            .iter()
            .filter_map(|(member, session)| {
                Some(OpenSession {
                    member_id: member.clone(),
                    platform: session.platform,
                    queues: session.queues.iter().cloned().collect(),
                    tier: session.counted_as?,
                })
            })
            .collect();
        open.sort_unstable_by(|a, b| a.member_id.cmp(&b.member_id));
        open.into_iter()
    }

    /// How many are logged in, per tier.
    pub fn current(&self) -> [u32; 5] {
        self.current
    }

    /// The state after `t`. An agent is logged in while their platform session or any queue
    /// session is open, and counted in the tier they held when it opened.
    pub fn apply(&mut self, t: Transition) {
        let current = &mut self.current;
        // A member with nothing open is not part of the state: it stays as small as the number
        // of agents logged in.
        match self.sessions.entry(t.member_id) {
            Entry::Occupied(mut entry) => {
                entry.get_mut().step(t.change, t.tier, current);
                if entry.get().counted_as.is_none() {
                    entry.remove();
                }
            }
            Entry::Vacant(entry) => {
                let mut session = Session::default();
                session.step(t.change, t.tier, current);
                if session.counted_as.is_some() {
                    entry.insert(session);
                }
            }
        }
    }

    /// The peak per tier over a window that starts in this state and sees `transitions` (in
    /// time order, all within the window), and the state at its end.
    pub fn peaks_over(
        mut self,
        transitions: impl IntoIterator<Item = Transition>,
    ) -> ([u32; 5], Concurrency) {
        let mut peaks = self.current;
        for t in transitions {
            self.apply(t);
            for (peak, now) in peaks.iter_mut().zip(self.current) {
                *peak = (*peak).max(now);
            }
        }
        (peaks, self)
    }
}

/// The peak number of concurrently logged-in agents per tier within `[from, to)`, from
/// transitions in time order (ties in a fixed order, e.g. the storage key's). An agent is logged
/// in while their platform session or any queue session is open; logins before `from` count as
/// the state the window starts with.
pub fn concurrency_peaks(
    transitions: impl IntoIterator<Item = Transition>,
    from: Timestamp,
    to: Timestamp,
) -> [u32; 5] {
    let mut before = Concurrency::default();
    let mut within = Vec::new();
    for t in transitions {
        if t.at >= to {
            break;
        }
        if t.at < from {
            before.apply(t);
        } else {
            within.push(t);
        }
    }
    before.peaks_over(within).0
}

/// A meter's use in a month. Use while the account had the service switched off is kept apart:
/// it happened, so it is recorded and shown, but it is never billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MeterUse {
    /// Used while the service was on: billed, within the month's limit.
    pub used: u64,
    /// Used while the service was switched off for the account: shown, not billed.
    pub while_off: u64,
}

impl MeterUse {
    /// Use while the service was on.
    pub fn on(used: u64) -> MeterUse {
        MeterUse { used, while_off: 0 }
    }

    /// Everything used, on or off.
    pub fn total(self) -> u64 {
        self.used.saturating_add(self.while_off)
    }

    /// The month's use after a metered event of `quantity`, taken while the service was `on`
    /// (by the account's settings when the event is applied), or the refusal when the month's
    /// total would pass [`MAX_METER_MONTH_TOTAL`].
    pub fn add(
        self,
        meter: Meter,
        month: BillingMonth,
        quantity: u64,
        on: bool,
    ) -> Result<MeterUse, Refusal> {
        let total = self.total();
        match total.checked_add(quantity) {
            Some(after) if after <= MAX_METER_MONTH_TOTAL => Ok(if on {
                MeterUse {
                    used: self.used.saturating_add(quantity),
                    ..self
                }
            } else {
                MeterUse {
                    while_off: self.while_off.saturating_add(quantity),
                    ..self
                }
            }),
            _ => Err(Refusal::MeterLimit {
                meter,
                month,
                total,
                quantity,
            }),
        }
    }
}

/// Whether the account has `meter`'s service switched on.
pub fn service_on(settings: &crate::account::AccountSettings, meter: Meter) -> bool {
    match meter {
        Meter::SpeechToTextMinutes => settings.speech_to_text,
        Meter::SmartRoutingPacks | Meter::AiTopicsPacks | Meter::AiQaPacks => settings.power_pack,
    }
}

/// Metered use per meter.
pub type MeterTotals = BTreeMap<Meter, MeterUse>;

/// A date in `YYYY-MM-DD`.
pub fn date_key(date: Date) -> String {
    date.to_string()
}

impl fmt::Display for Meter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Meter::SpeechToTextMinutes => "SPEECH_TO_TEXT_MINUTES",
            Meter::SmartRoutingPacks => "SMART_ROUTING_PACKS",
            Meter::AiTopicsPacks => "AI_TOPICS_PACKS",
            Meter::AiQaPacks => "AI_QA_PACKS",
        })
    }
}

#[cfg(test)]
mod tests;
