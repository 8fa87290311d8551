//! The licence advisor: where an account pays for more than it uses, from its own data.
//!
//! Every recommendation here is computed, never looked up: a right-sizing is the member's
//! settings with one trigger taken away, resolved by [`resolve`] like any other settings, and its
//! saving is the difference of the two resolved prices over the member's own login days. Nothing
//! is applied: the caller turns a recommendation into the request that would apply it.
//!
//! What the advisor reads of a member's use:
//!
//! - **Skills and queues.** A skill's id names the queue its contacts arrive in, so a queue login
//!   naming queue `Q` is use of the member's skill whose id is `Q`. A skill whose queue the
//!   member never logged into in the window is unused (for any channel: queue logins are how
//!   every channel's contacts reach an agent).
//! - **Statistics.** Tracking a member's statistics is of use to someone who can see them; a
//!   member whose own permissions lack STATISTICS and whose tracking is on is a candidate (the
//!   tracking trigger is the member's, the access is the account's choice).
//! - **Calls only.** A member all of whose skills are on the VOICE channel handles calls only;
//!   WORKSPACE or API on such a member is a candidate.

use std::collections::BTreeSet;

use jiff::civil;

use crate::{
    AddOn, BillingMode, Channel, LoginDay, MemberSettings, Permission, PermissionSet, PriceList,
    Product, RecordingRetention, Resolution, Seats, Tier, Trigger, resolve,
};

/// What a member was seen doing in the advisor's window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberActivity {
    /// The queues the member logged into.
    pub queues: BTreeSet<String>,
    /// Some day of the window does not list every queue logged into (more than
    /// [`crate::QUEUES_PER_DAY`], or recorded before queues were kept): no skill is called
    /// unused.
    pub queues_unknown: bool,
    /// Calendar days with at least one login, for the prices of daily-billed members.
    pub login_days: u32,
}

impl MemberActivity {
    /// Adds one login day of the window.
    pub fn add_day(&mut self, day: &LoginDay) {
        self.login_days = self.login_days.saturating_add(1);
        self.queues.extend(day.queues.iter().cloned());
        self.queues_unknown |= day.queues_truncated;
    }
}

/// A member's activity over their login days `days` (dated), counting those from `from` to
/// `to`, both included; `None` without a login day in the window.
pub fn window_activity<'a>(
    days: impl IntoIterator<Item = &'a (civil::Date, LoginDay)>,
    from: civil::Date,
    to: civil::Date,
) -> Option<MemberActivity> {
    let mut found: Option<MemberActivity> = None;
    for (date, day) in days {
        if *date < from || *date > to {
            continue;
        }
        found
            .get_or_insert_with(MemberActivity::default)
            .add_day(day);
    }
    found
}

/// A member's use of each of `months` from their login days `days` (dated): the login days
/// of each month and the highest tier held on one of them. Months without a login day are
/// left out (the member paid nothing in them, or held no licence).
pub fn month_uses(
    days: &[(civil::Date, LoginDay)],
    months: &[crate::BillingMonth],
) -> Vec<MonthUse> {
    months
        .iter()
        .filter_map(|month| {
            let mut found: Option<MonthUse> = None;
            for (date, day) in days {
                if crate::BillingMonth::new(date.year(), date.month()) != Some(*month) {
                    continue;
                }
                let entry = found.get_or_insert(MonthUse {
                    month: *month,
                    tier: day.tier,
                    login_days: 0,
                });
                entry.login_days = entry.login_days.saturating_add(1);
                entry.tier = entry.tier.max(day.tier);
            }
            found
        })
        .collect()
}

/// The cost of `resolution` over a month in which the member logged in on `login_days` days:
/// the monthly lines, plus the per-login-day lines once per day.
pub fn monthly_cost(resolution: &Resolution, login_days: u32) -> i64 {
    resolution.price.per_month.saturating_add(
        resolution
            .price
            .per_login_day
            .saturating_mul(i64::from(login_days)),
    )
}

/// The settings change a right-sizing proposes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingsChange {
    /// Remove these skills (by id): their queues were not logged into.
    RemoveSkills(Vec<String>),
    /// Turn statistics tracking off.
    StatisticsTrackingOff,
    /// Remove these permissions (listing the rest, instead of the role's preset).
    RemovePermissions(PermissionSet),
}

/// A member whose tier is driven by a trigger they do not use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RightSizing {
    /// The trigger that the change takes away.
    pub trigger: Trigger,
    /// What to change.
    pub change: SettingsChange,
    /// The member's settings after the change: what a `ResolveMember` preview would send.
    pub settings: MemberSettings,
    /// The licence today.
    pub from: Resolution,
    /// The licence after the change, resolved from `settings`.
    pub to: Resolution,
    /// `monthly_cost(from) - monthly_cost(to)` over the member's login days: always positive.
    pub monthly_saving: i64,
}

/// The right-sizings of one member: each trigger they do not use, taken away on its own from
/// today's settings, and kept only when the result is cheaper.
pub fn right_sizings(
    settings: &MemberSettings,
    activity: &MemberActivity,
    retention: RecordingRetention,
    prices: &PriceList,
) -> Vec<RightSizing> {
    let from = resolve(settings, retention, prices);
    let mut found = Vec::new();
    for (trigger, change) in candidates(settings, activity) {
        let Some(changed) = apply(settings, &change) else {
            continue;
        };
        let to = resolve(&changed, retention, prices);
        let monthly_saving = monthly_cost(&from, activity.login_days)
            .saturating_sub(monthly_cost(&to, activity.login_days));
        if monthly_saving > 0 {
            found.push(RightSizing {
                trigger,
                change,
                settings: changed,
                from,
                to,
                monthly_saving,
            });
        }
    }
    found
}

/// The changes worth resolving: one per trigger the member fires but does not use.
fn candidates(
    settings: &MemberSettings,
    activity: &MemberActivity,
) -> Vec<(Trigger, SettingsChange)> {
    let mut candidates = Vec::new();
    let skills = settings.skills();
    if skills.len() >= 2 && !activity.queues_unknown {
        let unused = unused_skills(settings, activity);
        if !unused.is_empty() {
            candidates.push((Trigger::SeveralSkills, SettingsChange::RemoveSkills(unused)));
        }
    }
    let permissions = settings.permissions();
    if settings.track_statistics() && !permissions.contains(Permission::Statistics) {
        candidates.push((
            Trigger::StatisticsTracking,
            SettingsChange::StatisticsTrackingOff,
        ));
    }
    let calls_only = !skills.is_empty() && skills.iter().all(|s| s.channel == Channel::Voice);
    if calls_only {
        let removable: PermissionSet = [Permission::Workspace, Permission::Api]
            .into_iter()
            .filter(|p| permissions.contains(*p))
            .collect();
        if !removable.is_empty() {
            let trigger = if removable.contains(Permission::Api) {
                Trigger::DeveloperPermission
            } else {
                Trigger::WorkspacePermission
            };
            candidates.push((trigger, SettingsChange::RemovePermissions(removable)));
        }
    }
    candidates
}

/// The skills whose queues the member did not log into, less the ones the member must keep:
/// at least one skill (the first, when none was used), and a voice skill while outbound
/// calling is on.
fn unused_skills(settings: &MemberSettings, activity: &MemberActivity) -> Vec<String> {
    let skills = settings.skills();
    let used = |id: &str| activity.queues.contains(id);
    let mut keep: Vec<bool> = skills.iter().map(|s| used(&s.id)).collect();
    if !keep.contains(&true)
        && let Some(first) = keep.first_mut()
    {
        *first = true;
    }
    let keeps_voice = skills
        .iter()
        .zip(&keep)
        .any(|(s, kept)| *kept && s.channel == Channel::Voice);
    if settings.outbound_calling()
        && !keeps_voice
        && let Some(i) = skills.iter().position(|s| s.channel == Channel::Voice)
        && let Some(slot) = keep.get_mut(i)
    {
        *slot = true;
    }
    skills
        .iter()
        .zip(keep)
        .filter(|(_, kept)| !kept)
        .map(|(s, _)| s.id.clone())
        .collect()
}

/// `settings` with `change` made, or `None` if the result would not be valid settings.
pub fn apply(settings: &MemberSettings, change: &SettingsChange) -> Option<MemberSettings> {
    let mut input = settings.to_input();
    match change {
        SettingsChange::RemoveSkills(ids) => input.skills.retain(|s| !ids.contains(&s.id)),
        SettingsChange::StatisticsTrackingOff => input.track_statistics = false,
        SettingsChange::RemovePermissions(removed) => {
            let rest: Vec<Permission> = settings
                .permissions()
                .iter()
                .filter(|p| !removed.contains(*p))
                .collect();
            if rest.is_empty() {
                // Listing none would bring the role's preset back: no role says "none".
                input.role = None;
            }
            input.permissions = rest;
        }
    }
    MemberSettings::new(input).ok()
}

/// One month of a member's billing, as the statement saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonthUse {
    /// The month, as `YYYY-MM`, for the evidence.
    pub month: crate::BillingMonth,
    /// The tier the member held.
    pub tier: Tier,
    /// Calendar days with at least one login.
    pub login_days: u32,
}

/// What each billing mode would have cost in one month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeCosts {
    /// The month.
    pub month: crate::BillingMonth,
    /// The tier held.
    pub tier: Tier,
    /// Login days.
    pub login_days: u32,
    /// A monthly seat of the tier.
    pub monthly: i64,
    /// The login days at the tier's daily price.
    pub daily: i64,
}

/// A member who would have paid less in the other billing mode in most months.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeAdvice {
    /// The mode the member is billed in today.
    pub current: BillingMode,
    /// The mode recommended.
    pub recommended: BillingMode,
    /// Each month considered, with both costs: the evidence.
    pub months: Vec<ModeCosts>,
    /// How many of them the recommended mode was cheaper in.
    pub cheaper_months: u32,
    /// The total saving over the months considered, divided by their number, rounded down.
    pub monthly_saving: i64,
}

/// Compares the two billing modes of a member billed in `current` over `months` (only the
/// months at a tier that allows daily billing count), and recommends the other mode when it was
/// strictly cheaper in more than half of them and saved at least one minor unit a month on
/// average.
pub fn billing_mode_advice(
    current: BillingMode,
    months: &[MonthUse],
    prices: &PriceList,
) -> Option<ModeAdvice> {
    let costs: Vec<ModeCosts> = months
        .iter()
        .filter_map(|m| {
            let daily_price = prices.seat_daily(m.tier)?;
            Some(ModeCosts {
                month: m.month,
                tier: m.tier,
                login_days: m.login_days,
                monthly: prices.seat_monthly(m.tier),
                daily: daily_price.saturating_mul(i64::from(m.login_days)),
            })
        })
        .collect();
    let recommended = match current {
        BillingMode::Monthly => BillingMode::Daily,
        BillingMode::Daily => BillingMode::Monthly,
    };
    let cost = |c: &ModeCosts, mode: BillingMode| match mode {
        BillingMode::Monthly => c.monthly,
        BillingMode::Daily => c.daily,
    };
    let cheaper_months = costs
        .iter()
        .filter(|c| cost(c, recommended) < cost(c, current))
        .count();
    let total_saving = costs.iter().fold(0i64, |sum, c| {
        sum.saturating_add(cost(c, current).saturating_sub(cost(c, recommended)))
    });
    let considered = i64::try_from(costs.len()).unwrap_or(i64::MAX);
    let monthly_saving = total_saving.checked_div(considered).unwrap_or(0);
    let majority = cheaper_months.saturating_mul(2) > costs.len();
    if !majority || monthly_saving <= 0 {
        return None;
    }
    Some(ModeAdvice {
        current,
        recommended,
        cheaper_months: u32::try_from(cheaper_months).unwrap_or(u32::MAX),
        monthly_saving,
        months: costs,
    })
}

/// Seats bought but not used: a product whose peak in use stayed below the seats bought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnusedSeats {
    /// The product.
    pub product: Product,
    /// Seats bought.
    pub bought: u32,
    /// The most in use at any moment of the window.
    pub peak_in_use: u32,
    /// `(bought - peak_in_use) x` the product's monthly price.
    pub monthly_saving: i64,
}

/// For each product, the seats bought above the most ever in use in the window; reducing the
/// inventory to `peak_in_use` keeps every member's seat.
pub fn unused_seats(bought: Seats, peak_in_use: Seats, prices: &PriceList) -> Vec<UnusedSeats> {
    Product::ALL
        .into_iter()
        .filter_map(|product| {
            let bought = bought.get(product);
            let peak_in_use = peak_in_use.get(product);
            let unused = bought.checked_sub(peak_in_use).filter(|u| *u > 0)?;
            Some(UnusedSeats {
                product,
                bought,
                peak_in_use,
                monthly_saving: product
                    .monthly_price(prices)
                    .saturating_mul(i64::from(unused)),
            })
        })
        .collect()
}

/// What a member who never logged in during the window costs a month: their monthly lines
/// (a daily-billed member with no login days costs nothing, so is no leak).
pub fn idle_member_cost(resolution: &Resolution) -> Option<i64> {
    let cost = monthly_cost(resolution, 0);
    (cost > 0).then_some(cost)
}

#[cfg(test)]
mod tests;

/// Recordings kept longer than the account says they must be: what shortening the retention to
/// the one required saves, folded over the account's members ([`LongRetention::add`]). Each
/// member's part is the difference of their licence resolved at the two retentions, so the
/// recording included from ENTERPRISE is counted as `resolve` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongRetention {
    /// The retention paid for.
    pub current: RecordingRetention,
    /// The retention the account says it needs.
    pub required: RecordingRetention,
    /// Members whose settings record calls.
    pub recorded_members: u32,
    /// Recording units billed a month that the required retention does not need.
    pub units_saved: u64,
    /// What those units cost a month.
    pub monthly_saving: i64,
}

impl LongRetention {
    /// The fold for an account that keeps recordings for `current` and needs `required`;
    /// `None` unless the retention required is shorter.
    pub fn new(
        current: RecordingRetention,
        required: Option<RecordingRetention>,
    ) -> Option<LongRetention> {
        let required = required.filter(|r| r.units() < current.units())?;
        Some(LongRetention {
            current,
            required,
            recorded_members: 0,
            units_saved: 0,
            monthly_saving: 0,
        })
    }

    /// Adds a member with `settings`.
    pub fn add(&mut self, settings: &MemberSettings, prices: &PriceList) {
        if !settings.call_recording() {
            return;
        }
        let billed = |resolution: &Resolution| {
            resolution
                .add_ons()
                .iter()
                .filter(|line| line.add_on == AddOn::CallRecording)
                .map(|line| u64::from(line.billed_units))
                .sum::<u64>()
        };
        let from = resolve(settings, self.current, prices);
        let to = resolve(settings, self.required, prices);
        self.recorded_members = self.recorded_members.saturating_add(1);
        self.units_saved = self
            .units_saved
            .saturating_add(billed(&from).saturating_sub(billed(&to)));
        self.monthly_saving = self
            .monthly_saving
            .saturating_add(monthly_cost(&from, 0).saturating_sub(monthly_cost(&to, 0)));
    }
}

/// Usage that keeps arriving for a member the account does not know: events seen on or after
/// `since` (the window's first instant). Such usage is billed to nobody; the account licenses
/// the member (`ResolveMember` with their settings) or stops the source.
pub fn unlicensed_usage_arriving(last_seen: jiff::Timestamp, since: jiff::Timestamp) -> bool {
    last_seen >= since
}
