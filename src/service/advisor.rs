//! Advise: where an account pays for more than it uses. The recommendations are computed by
//! `licensing_core::advisor` from the account's members, their login days and its inventory;
//! this module reads those, turns each recommendation into the request that would apply it, and
//! streams them. Nothing is written.

use std::{collections::BTreeSet, sync::Arc};

use jiff::civil;
use licensing_core::{
    Account, BillingMode, BillingMonth, MemberSettings, PriceList, Seats, StoredMember,
    advisor::{self, LongRetention, MemberActivity, RightSizing, SettingsChange},
    resolve,
};
use licensing_store::{OpError, Store};
use tonic::Request;

use super::{Licensing, Use};
use crate::{
    api,
    convert::{from_proto, to_proto},
    error::{ApiError, status},
    outbox::{Outbox, ResponseStream},
};

/// The days of use looked at when the request names none, and at most.
const DEFAULT_WINDOW_DAYS: u32 = 30;
const MAX_WINDOW_DAYS: u32 = 366;
/// The closed months compared for the billing mode when the request names none, and at most.
const DEFAULT_MONTHS: u32 = 3;
const MAX_MONTHS: u32 = 24;
/// Members judged per read of the blocking pool; each page's recommendations are one message.
const PAGE: usize = 1024;
const STREAM_BUFFER: usize = 2;

/// What a request asks for, validated.
struct Query {
    account_id: String,
    kinds: Vec<api::RecommendationKind>,
    minimum_saving: i64,
    window_days: u32,
    months: u32,
}

impl Query {
    fn wants(&self, kind: api::RecommendationKind) -> bool {
        self.kinds.is_empty() || self.kinds.contains(&kind)
    }

    /// Whether a kind judged from each member's use is wanted (their login days are read).
    fn judges_members(&self) -> bool {
        use api::RecommendationKind as Kind;
        [Kind::RightSize, Kind::BillingMode, Kind::IdleMember]
            .into_iter()
            .any(|kind| self.wants(kind))
    }
}

impl Licensing {
    pub(super) async fn advise(
        &self,
        request: Request<api::AdviseRequest>,
    ) -> Result<ResponseStream<api::AdviseResponse>, ApiError> {
        let (caller, request) = self.caller(request)?;
        let account_id = from_proto::account_id(&request.account_id)?.to_owned();
        Self::authorize(&caller, "LicensingService/Advise", Use::Read, &account_id)?;
        let kinds = from_proto::recommendation_kinds("kinds", &request.kinds)?;
        if request.minimum_saving < 0 {
            return Err(ApiError::invalid(
                "minimum_saving",
                request.minimum_saving.to_string(),
                "must not be negative",
            ));
        }
        let window_days = bounded(
            "window_days",
            request.window_days,
            DEFAULT_WINDOW_DAYS,
            MAX_WINDOW_DAYS,
        )?;
        let months = bounded("months", request.months, DEFAULT_MONTHS, MAX_MONTHS)?;
        let query = Query {
            account_id,
            kinds,
            minimum_saving: request.minimum_saving,
            window_days,
            months,
        };
        let prices = self.prices.clone();
        // Unknown accounts fail the call itself rather than the stream. A long read: it waits
        // for a stream slot, as every page after it does.
        let context = self
            .stream_blocking(move |store| context(store, query, &prices))
            .await?;
        let (mut outbox, stream) = self.streams.open_stream(STREAM_BUFFER)?;
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(Stopped::Failed(failed)) =
                this.send_advice(Arc::new(context), &mut outbox).await
            {
                outbox.finish(status(failed));
            }
        });
        Ok(stream)
    }
}

/// Why a stream of advice ended early.
enum Stopped {
    /// The client went away.
    Gone,
    /// A read failed: the stream's status.
    Failed(ApiError),
}

impl Licensing {
    /// Sends the advice in its order: the seats, the members a page at a time, the recording
    /// retention once every member is folded in, then the unlicensed usage a page at a time.
    async fn send_advice(
        &self,
        context: Arc<Context>,
        outbox: &mut Outbox<api::AdviseResponse>,
    ) -> Result<(), Stopped> {
        use api::RecommendationKind as Kind;
        let mut sent = false;
        send(outbox, context.seats.clone(), &mut sent).await?;
        let mut retention = context.retention;
        if retention.is_some() || context.query.judges_members() {
            let mut after: Option<String> = None;
            loop {
                let (context, prices, from) = (context.clone(), self.prices.clone(), after.take());
                let (recommendations, last, folded) = self
                    .stream_blocking(move |store| {
                        member_page(store, &context, &prices, from.as_deref(), retention)
                    })
                    .await
                    .map_err(Stopped::Failed)?;
                retention = folded;
                send(outbox, recommendations, &mut sent).await?;
                match last {
                    Some(last) => after = Some(last),
                    None => break,
                }
            }
        }
        if let Some(recommendation) =
            retention.and_then(|long| long_retention(&context, long, &self.prices))
        {
            send(outbox, vec![recommendation], &mut sent).await?;
        }
        if context.query.wants(Kind::UnlicensedUsage) {
            let mut after: Option<String> = None;
            loop {
                let (context, prices, from) = (context.clone(), self.prices.clone(), after.take());
                let (recommendations, last) = self
                    .stream_blocking(move |store| {
                        unlicensed_page(store, &context, &prices, from.as_deref())
                    })
                    .await
                    .map_err(Stopped::Failed)?;
                send(outbox, recommendations, &mut sent).await?;
                match last {
                    Some(last) => after = Some(last),
                    None => break,
                }
            }
        }
        if !sent {
            outbox
                .send(api::AdviseResponse::default())
                .await
                .map_err(|_| Stopped::Gone)?;
        }
        Ok(())
    }
}

/// Sends `recommendations` as one message, if there are any.
async fn send(
    outbox: &mut Outbox<api::AdviseResponse>,
    recommendations: Vec<api::Recommendation>,
    sent: &mut bool,
) -> Result<(), Stopped> {
    if recommendations.is_empty() {
        return Ok(());
    }
    outbox
        .send(api::AdviseResponse { recommendations })
        .await
        .map_err(|_| Stopped::Gone)?;
    *sent = true;
    Ok(())
}

/// `value`, or `default` for 0; refused above `max`.
fn bounded(field: &str, value: u32, default: u32, max: u32) -> Result<u32, ApiError> {
    match value {
        0 => Ok(default),
        value if value > max => Err(ApiError::invalid(
            field,
            value.to_string(),
            format!("at most {max}"),
        )),
        value => Ok(value),
    }
}

/// What every page of members is judged against, read once per call.
struct Context {
    query: Query,
    account: Account,
    /// The window's first and last dates (the account's today).
    window: (civil::Date, civil::Date),
    /// The whole months before the current one compared for the billing mode, oldest first.
    closed: Vec<BillingMonth>,
    /// Every month a page's login days are read in: the window's and the closed ones.
    months: Vec<BillingMonth>,
    /// The window's first instant.
    since: jiff::Timestamp,
    /// The unused-seats recommendations, sent first.
    seats: Vec<api::Recommendation>,
    /// The recording retention's fold, when the account keeps recordings longer than it needs.
    retention: Option<LongRetention>,
}

/// Reads the account and works out the window and the months compared; the seats advice.
/// Login days are read a page of members at a time, so the first page does not wait for the
/// whole account's.
fn context(store: &Store, query: Query, prices: &PriceList) -> Result<Context, OpError> {
    use api::RecommendationKind as Kind;
    let account = store.account(&query.account_id)?;
    let zone = &account.settings.zone;
    let now = account.now(Licensing::real_now());
    let today = zone.day(now);
    let first = today
        .checked_sub(jiff::Span::new().days(i64::from(query.window_days.saturating_sub(1))))
        .unwrap_or(today);
    let current = zone.month(now);
    let mut closed = Vec::new();
    if query.wants(Kind::BillingMode) {
        let mut month = current;
        for _ in 0..query.months {
            let Some(previous) = month.previous() else {
                break;
            };
            month = previous;
            closed.push(month);
        }
        closed.reverse();
    }
    let mut months: BTreeSet<BillingMonth> = closed.iter().copied().collect();
    let month_of = |d: civil::Date| BillingMonth::new(d.year(), d.month());
    if let (Some(mut month), Some(last)) = (month_of(first), month_of(today)) {
        while month <= last {
            months.insert(month);
            month = month.next();
        }
    }
    let seats = if query.wants(Kind::UnusedSeats) {
        // The months the window touches: a month's peak in use is kept whole, not by day.
        let since = BillingMonth::new(first.year(), first.month()).unwrap_or(current);
        let kept = store.closed_peaks(&query.account_id, since, current)?;
        let peak = licensing_core::peak_in_use(&account.inventory, &kept, since, current);
        unused_seats(&account, peak, since, query.minimum_saving, prices)
    } else {
        Vec::new()
    };
    let retention = if query.wants(Kind::RecordingRetention) {
        LongRetention::new(
            account.settings.recording_retention,
            account.settings.recording_retention_required,
        )
    } else {
        None
    };
    Ok(Context {
        since: zone.start_of_day(first),
        query,
        account,
        window: (first, today),
        closed,
        months: months.into_iter().collect(),
        seats,
        retention,
    })
}

/// What a page of members gives: its recommendations, the last member read when there may be
/// more, and the recording retention's fold with the page's members added.
type MemberPage = (
    Vec<api::Recommendation>,
    Option<String>,
    Option<LongRetention>,
);

/// The recommendations of the next [`PAGE`] members after `after`, each member's together
/// (right-sizing, billing mode, idle), and the last member read when there may be more; the
/// page's members are added to the recording retention's `fold`.
fn member_page(
    store: &Store,
    context: &Context,
    prices: &PriceList,
    after: Option<&str>,
    mut fold: Option<LongRetention>,
) -> Result<MemberPage, OpError> {
    use api::RecommendationKind as Kind;
    let Context {
        query,
        account,
        window: (first, today),
        closed,
        months,
        ..
    } = context;
    let retention = account.settings.recording_retention;
    let currency = prices.currency();
    let money = |minor_units| Some(to_proto::money(minor_units, currency));
    let members = store
        .members(&query.account_id, after)
        .take(PAGE)
        .collect::<Result<Vec<StoredMember>, _>>()?;
    let ids: Vec<&str> = members.iter().map(|m| m.member_id.as_str()).collect();
    // The recording retention alone needs the members' settings, not their days.
    let days = if query.judges_members() {
        store.members_days(&query.account_id, &ids, months)?
    } else {
        vec![Vec::new(); ids.len()]
    };
    let more = members.len() == PAGE;
    let mut page = Vec::new();
    let mut last = None;
    for (member, days) in members.into_iter().zip(days) {
        let StoredMember {
            member_id,
            settings,
            ..
        } = member;
        if let Some(long) = fold.as_mut() {
            long.add(&settings, prices);
        }
        let activity = advisor::window_activity(&days, *first, *today);
        let activity = activity.as_ref();
        // A member with no login day in the window is the idle case, not a right-sizing.
        if query.wants(Kind::RightSize)
            && let Some(activity) = activity
        {
            for found in advisor::right_sizings(&settings, activity, retention, prices) {
                if found.monthly_saving >= query.minimum_saving.max(1) {
                    page.push(api::Recommendation {
                        kind: Kind::RightSize as i32,
                        summary: right_size_summary(&found, query.window_days),
                        monthly_saving: money(found.monthly_saving),
                        evidence: Some(api::recommendation::Evidence::RightSize(
                            right_size_evidence(&found, activity),
                        )),
                        apply: Some(preview(account, &member_id, &found.settings)),
                        member_id: member_id.clone(),
                    });
                }
            }
        }
        let resolution = resolve(&settings, retention, prices);
        if query.wants(Kind::BillingMode) && resolution.tier.allows_daily_billing() {
            let months = advisor::month_uses(&days, closed);
            if let Some(advice) =
                advisor::billing_mode_advice(resolution.billing.effective, &months, prices)
                && advice.monthly_saving >= query.minimum_saving
                && let Some(changed) = with_billing(&settings, advice.recommended)
            {
                page.push(api::Recommendation {
                    kind: Kind::BillingMode as i32,
                    summary: format!(
                        "billed {}: {} would have cost less in {} of the {} months compared",
                        mode_name(advice.current),
                        mode_name(advice.recommended),
                        advice.cheaper_months,
                        advice.months.len()
                    ),
                    monthly_saving: money(advice.monthly_saving),
                    evidence: Some(api::recommendation::Evidence::BillingMode(
                        api::BillingModeEvidence {
                            current: to_proto::billing_mode(advice.current) as i32,
                            recommended: to_proto::billing_mode(advice.recommended) as i32,
                            months: advice
                                .months
                                .iter()
                                .map(|m| api::BillingModeMonth {
                                    month: m.month.to_string(),
                                    tier: to_proto::tier(m.tier) as i32,
                                    login_days: m.login_days,
                                    monthly: money(m.monthly),
                                    daily: money(m.daily),
                                })
                                .collect(),
                            cheaper_months: advice.cheaper_months,
                        },
                    )),
                    apply: Some(preview(account, &member_id, &changed)),
                    member_id: member_id.clone(),
                });
            }
        }
        if query.wants(Kind::IdleMember)
            && activity.is_none()
            && let Some(cost) = advisor::idle_member_cost(&resolution)
            && cost >= query.minimum_saving
        {
            page.push(api::Recommendation {
                kind: Kind::IdleMember as i32,
                summary: format!(
                    "no login in the last {} days: the {} licence is paid for nothing",
                    query.window_days, resolution.tier
                ),
                monthly_saving: money(cost),
                evidence: Some(api::recommendation::Evidence::IdleMember(
                    api::IdleMemberEvidence {
                        tier: to_proto::tier(resolution.tier) as i32,
                        window_days: query.window_days,
                    },
                )),
                apply: None,
                member_id: member_id.clone(),
            });
        }
        last = Some(member_id);
    }
    Ok((page, if more { last } else { None }, fold))
}

/// The recording retention's recommendation, once every member is added, if it saves at least
/// the minimum (and something).
fn long_retention(
    context: &Context,
    long: LongRetention,
    prices: &PriceList,
) -> Option<api::Recommendation> {
    if long.monthly_saving < context.query.minimum_saving.max(1) {
        return None;
    }
    let account_id = context.account.id.clone();
    Some(api::Recommendation {
        kind: api::RecommendationKind::RecordingRetention as i32,
        member_id: String::new(),
        summary: format!(
            "recordings kept {}, the account needs {}: {} recorded {} pay {} {} a month for the difference",
            long.current,
            long.required,
            long.recorded_members,
            if long.recorded_members == 1 {
                "member"
            } else {
                "members"
            },
            long.units_saved,
            if long.units_saved == 1 {
                "unit"
            } else {
                "units"
            },
        ),
        monthly_saving: Some(to_proto::money(long.monthly_saving, prices.currency())),
        evidence: Some(api::recommendation::Evidence::RecordingRetention(
            api::RecordingRetentionEvidence {
                current: Some(to_proto::retention(long.current)),
                required: Some(to_proto::retention(long.required)),
                recorded_members: long.recorded_members,
                units_saved: long.units_saved,
            },
        )),
        apply: Some(api::recommendation::Apply::UpdateAccount(
            api::UpdateAccountRequest {
                account_id,
                recording_retention: Some(to_proto::retention(long.required)),
                ..Default::default()
            },
        )),
    })
}

/// The unlicensed usage of the next [`PAGE`] unknown members after `after` whose latest event
/// is inside the window, and the last member read when there may be more.
fn unlicensed_page(
    store: &Store,
    context: &Context,
    prices: &PriceList,
    after: Option<&str>,
) -> Result<(Vec<api::Recommendation>, Option<String>), OpError> {
    let read = store
        .unlicensed_after(&context.query.account_id, after)
        .take(PAGE)
        .collect::<Result<Vec<_>, _>>()?;
    let more = read.len() == PAGE;
    let last = read.last().map(|(member_id, ..)| member_id.clone());
    // It saves nothing: only a request without a minimum saving sees it.
    let page = if context.query.minimum_saving > 0 {
        Vec::new()
    } else {
        read.into_iter()
            .filter(|(_, _, last_seen)| {
                advisor::unlicensed_usage_arriving(*last_seen, context.since)
            })
            .map(|(member_id, events, last_seen)| api::Recommendation {
                kind: api::RecommendationKind::UnlicensedUsage as i32,
                summary: format!(
                    "{events} usage {} for a member the account does not know, the latest at \
                     {last_seen}: license the member or stop the source",
                    if events == 1 { "event" } else { "events" },
                ),
                monthly_saving: Some(to_proto::money(0, prices.currency())),
                evidence: Some(api::recommendation::Evidence::UnlicensedUsage(
                    api::UnlicensedUsageEvidence {
                        events,
                        last_seen: Some(to_proto::timestamp(last_seen)),
                        window_days: context.query.window_days,
                    },
                )),
                apply: None,
                member_id,
            })
            .collect()
    };
    Ok((page, if more { last } else { None }))
}

/// Seats bought above the most in use since the start of `since` (`peak_in_use`), saving at
/// least `minimum_saving` (and something).
fn unused_seats(
    account: &Account,
    peak_in_use: Seats,
    since: BillingMonth,
    minimum_saving: i64,
    prices: &PriceList,
) -> Vec<api::Recommendation> {
    let currency = prices.currency();
    let inventory = &account.inventory;
    advisor::unused_seats(inventory.seats, peak_in_use, prices)
        .into_iter()
        .filter(|unused| unused.monthly_saving >= minimum_saving.max(1))
        .map(|unused| api::Recommendation {
            kind: api::RecommendationKind::UnusedSeats as i32,
            member_id: String::new(),
            summary: format!(
                "{} {} bought, at most {} in use since {since}: reduce to {}",
                unused.bought, unused.product, unused.peak_in_use, unused.peak_in_use
            ),
            monthly_saving: Some(to_proto::money(unused.monthly_saving, currency)),
            evidence: Some(api::recommendation::Evidence::UnusedSeats(
                api::UnusedSeatsEvidence {
                    product: to_proto::product(unused.product) as i32,
                    seats: unused.bought,
                    in_use: inventory.in_use.get(unused.product),
                    peak_in_use: unused.peak_in_use,
                    since: since.to_string(),
                },
            )),
            apply: Some(api::recommendation::Apply::AdjustInventory(
                api::AdjustInventoryRequest {
                    account_id: account.id.clone(),
                    changes: vec![api::SeatChange {
                        product: to_proto::product(unused.product) as i32,
                        seats: unused.peak_in_use,
                    }],
                    confirm: false,
                    revision: 0,
                },
            )),
        })
        .collect()
}

/// A `ResolveMember` preview of `settings` for the member.
fn preview(
    account: &Account,
    member_id: &str,
    settings: &MemberSettings,
) -> api::recommendation::Apply {
    api::recommendation::Apply::ResolveMember(api::ResolveMemberRequest {
        account_id: account.id.clone(),
        member_id: member_id.to_owned(),
        settings: Some(to_proto::member_settings(settings)),
        apply: false,
    })
}

/// `settings` with the billing preference `mode`.
fn with_billing(settings: &MemberSettings, mode: BillingMode) -> Option<MemberSettings> {
    let mut input = settings.to_input();
    input.billing_preference = mode;
    MemberSettings::new(input).ok()
}

fn mode_name(mode: BillingMode) -> &'static str {
    match mode {
        BillingMode::Monthly => "MONTHLY",
        BillingMode::Daily => "DAILY",
    }
}

fn right_size_summary(found: &RightSizing, window_days: u32) -> String {
    let why = match &found.change {
        SettingsChange::RemoveSkills(ids) => format!(
            "no login to the queue of {} {} in the last {window_days} days",
            if ids.len() == 1 { "skill" } else { "skills" },
            ids.join(", ")
        ),
        SettingsChange::StatisticsTrackingOff => {
            "statistics are tracked for a member without the STATISTICS permission".to_owned()
        }
        SettingsChange::RemovePermissions(removed) => {
            format!("{removed} on a member whose skills are all VOICE")
        }
    };
    format!("{} to {}: {why}", found.from.tier, found.to.tier)
}

fn right_size_evidence(found: &RightSizing, activity: &MemberActivity) -> api::RightSizeEvidence {
    let (unused_skills, removed_permissions) = match &found.change {
        SettingsChange::RemoveSkills(ids) => (ids.clone(), Vec::new()),
        SettingsChange::StatisticsTrackingOff => (Vec::new(), Vec::new()),
        SettingsChange::RemovePermissions(removed) => (Vec::new(), to_proto::permissions(*removed)),
    };
    api::RightSizeEvidence {
        trigger: to_proto::trigger(found.trigger) as i32,
        from_tier: to_proto::tier(found.from.tier) as i32,
        to_tier: to_proto::tier(found.to.tier) as i32,
        unused_skills,
        removed_permissions,
        login_days: activity.login_days,
    }
}
