//! GetUsage (snapshot, then committed changes with `follow`) and ReadAuditTrail.
//!
//! Snapshots are read in pages, one message's worth at a time on the blocking pool, and each page
//! is sent from an async task through the stream's [`Outbox`]: a client that reads slowly slows
//! its own stream only, a client that stops reading holds no thread and is cut off after the
//! outbox's stall timeout, and a client that leaves ends its stream at the next send.

use std::{collections::HashMap, sync::Arc, time::Instant};

use licensing_core::{
    Account, BillingMonth, MeterCaps, PriceList, Tier, Timestamp, meter_billing, resolve,
};
use licensing_store::{OpError, RawMember, Store};
use tokio::sync::broadcast;

use tonic::Request;

use super::{CommittedChange, Licensing, Use};
use crate::{
    api::{self, get_usage_response::Part},
    convert::{from_proto, to_proto},
    error::{ApiError, status},
    outbox::{Outbox, ResponseStream},
};

/// How often a long snapshot logs its progress.
const SNAPSHOT_PROGRESS: std::time::Duration = std::time::Duration::from_secs(10);
/// Member rows per `GetUsage` message.
const ROWS_PER_MESSAGE: usize = 1024;
/// Audit entries per `ReadAuditTrail` message.
const ENTRIES_PER_MESSAGE: usize = 256;
/// Messages buffered between a stream's reader and its client.
const STREAM_BUFFER: usize = 2;

fn usage(part: Part) -> api::GetUsageResponse {
    api::GetUsageResponse { part: Some(part) }
}

/// The month a usage request shows: the one asked for, or the account's current month.
fn shown_month(
    account: &Account,
    month: Option<BillingMonth>,
    real_now: Timestamp,
) -> BillingMonth {
    month.unwrap_or_else(|| account.settings.zone.month(account.now(real_now)))
}

/// The account-wide part of the usage overview; blocking (reads the store).
fn summary(
    store: &Store,
    account: &Account,
    month: Option<BillingMonth>,
    real_now: Timestamp,
) -> Result<api::UsageSummary, OpError> {
    let current = account.settings.zone.month(account.now(real_now));
    let shown = shown_month(account, month, real_now);
    let inventory = account.inventory.as_of(current);
    let peaks = store.concurrency_peaks(account, shown, real_now)?;
    Ok(api::UsageSummary {
        products: to_proto::seat_counts(&inventory)
            .into_iter()
            .map(|seats| api::ProductUsage { seats: Some(seats) })
            .collect(),
        concurrency_peaks: Tier::ALL
            .into_iter()
            .zip(peaks)
            .filter(|(_, peak)| *peak > 0)
            .map(|(tier, peak)| api::ConcurrencyPeak {
                tier: to_proto::tier(tier) as i32,
                peak,
            })
            .collect(),
        unlicensed: store
            .unlicensed(&account.id)?
            .into_iter()
            .map(|(member_id, events, last_seen)| api::UnlicensedUsage {
                member_id,
                events,
                last_seen: Some(to_proto::timestamp(last_seen)),
            })
            .collect(),
        month: shown.to_string(),
        sandbox: account.sandbox,
        meters: store
            .meter_totals(&account.id, shown)?
            .into_iter()
            .map(|(meter, usage)| {
                let billing = meter_billing(meter, usage, &MeterCaps::of(&account.settings));
                api::MeterUsage {
                    meter: to_proto::meter(meter) as i32,
                    quantity: usage.total(),
                    unbilled_service_off: billing.while_off,
                    unbilled_over_cap: billing.over_cap,
                }
            })
            .collect(),
    })
}

/// What a usage stream shows.
#[derive(Debug, Clone)]
struct View {
    account_id: Arc<str>,
    tiers: Arc<[Tier]>,
    month: Option<BillingMonth>,
    /// Whether rows carry their tier's reasons (the full view).
    reasons: bool,
}

/// One message's worth of member rows, read after the member `after`, and where to go on from
/// (`None`: that was the last page).
struct MemberPage {
    rows: Vec<api::MemberUsage>,
    next: Option<String>,
}

/// Distinct licences a snapshot keeps resolved at most; past it they are forgotten and resolved
/// again (an account whose members all differ costs a resolution per member, as without them).
const LICENCES_KEPT: usize = 4096;

/// The licences one snapshot resolved, by the stored settings part that decides them
/// ([`RawMember::settings_part`]), each as the row it gives without member id and days: under
/// one account's settings and one price list, members with the same settings have the same
/// licence, so a snapshot resolves each distinct settings once, not every member.
#[derive(Debug)]
pub struct Licences {
    known: HashMap<Vec<u8>, (Tier, api::MemberUsage)>,
    /// At most this many are kept.
    kept: usize,
}

impl Default for Licences {
    fn default() -> Licences {
        Licences::keeping(LICENCES_KEPT)
    }
}

impl Licences {
    /// Keeping at most `kept` licences.
    pub fn keeping(kept: usize) -> Licences {
        Licences {
            known: HashMap::new(),
            kept,
        }
    }

    /// The member's tier and row (without id and days), resolved or remembered.
    pub fn of(
        &mut self,
        member: &RawMember,
        account: &Account,
        prices: &PriceList,
        reasons: bool,
    ) -> Result<(Tier, api::MemberUsage), OpError> {
        let part = member.settings_part();
        if let Some(known) = part.and_then(|part| self.known.get(part)) {
            return Ok(known.clone());
        }
        let stored = member.decode()?;
        let resolution = resolve(
            &stored.settings,
            account.settings.recording_retention,
            prices,
        );
        let mut row = to_proto::member_usage(&stored, &resolution, Vec::new(), reasons);
        row.member_id = String::new();
        let licence = (resolution.tier, row);
        if let Some(part) = part {
            if self.known.len() >= self.kept {
                self.known.clear();
            }
            self.known.insert(part.to_vec(), licence.clone());
        }
        Ok(licence)
    }
}

/// Reads the next [`ROWS_PER_MESSAGE`] members after `after` with their login days of `month`;
/// blocking, and bounded, so that no read holds a thread for long however large the account, and
/// none waits for the client. The members' days are read from the month's own records
/// ([`Store::members_login_days`]): the cost does not grow with the months of history. Members
/// are resolved through `licences`, once per distinct settings.
fn member_page(
    store: &Store,
    account: &Account,
    view: &View,
    month: BillingMonth,
    prices: &PriceList,
    after: Option<&str>,
    licences: &mut Licences,
) -> Result<MemberPage, OpError> {
    let members = store
        .raw_members(&account.id, after)
        .take(ROWS_PER_MESSAGE)
        .collect::<Result<Vec<_>, _>>()?;
    let next = members
        .last()
        .filter(|_| members.len() == ROWS_PER_MESSAGE)
        .map(|last| last.member_id().to_owned());
    let mut shown = Vec::with_capacity(members.len());
    for member in &members {
        let (tier, row) = licences.of(member, account, prices, view.reasons)?;
        if view.tiers.is_empty() || view.tiers.contains(&tier) {
            shown.push((member.member_id(), row));
        }
    }
    let ids: Vec<&str> = shown.iter().map(|(id, _)| *id).collect();
    let days = store.members_login_days(&account.id, &ids, month)?;
    let rows = shown
        .into_iter()
        .zip(days)
        .map(|((member_id, mut row), days)| {
            row.member_id = member_id.to_owned();
            row.login_days = days
                .into_iter()
                .map(|(date, day)| to_proto::login_day(date, day))
                .collect();
            row.billable_days = row.login_days.iter().filter(|d| d.billable).count() as u32;
            row
        })
        .collect();
    Ok(MemberPage { rows, next })
}

/// One committed change as a follower shows it, read once and shared by every follower of the
/// account with the same month (the tier filter is applied by each).
#[derive(Debug)]
pub(super) struct ChangeRead {
    summary: api::UsageSummary,
    /// The changed members' tiers and rows, of those that still exist.
    members: Vec<(Tier, api::MemberUsage)>,
}

/// Committed changes whose shared reads are kept, counted back from the newest.
const CHANGE_READS_KEPT: u64 = 256;

/// The shared reads of recent changes, by change sequence and month shown.
pub(super) type ChangeReads = std::sync::Mutex<
    std::collections::HashMap<
        (u64, Option<BillingMonth>),
        Arc<tokio::sync::OnceCell<Result<Arc<ChangeRead>, ApiError>>>,
    >,
>;

impl Licensing {
    /// Sends a snapshot: the summary, then the member rows page by page, each page read on the
    /// blocking pool and sent from here. Returns false when the stream is over (the client left,
    /// it stalled, or reading failed: the failure ends the stream).
    async fn snapshot(&self, view: &View, outbox: &mut Outbox<api::GetUsageResponse>) -> bool {
        let read_view = view.clone();
        let first = self
            .stream_blocking(move |store| {
                let real_now = Licensing::real_now();
                let account = store.account(&read_view.account_id)?;
                let summary = summary(store, &account, read_view.month, real_now)?;
                let month = shown_month(&account, read_view.month, real_now);
                Ok((account, summary, month))
            })
            .await;
        let (account, summary, month) = match first {
            Ok(read) => read,
            Err(failed) => {
                outbox.finish(status(failed));
                return false;
            }
        };
        if outbox.send(usage(Part::Summary(summary))).await.is_err() {
            return false;
        }
        let account = Arc::new(account);
        let account_id = view.account_id.clone();
        let mut after: Option<String> = None;
        let licences = Arc::new(std::sync::Mutex::new(Licences::default()));
        // A snapshot that takes long says how far it got, every SNAPSHOT_PROGRESS.
        let (started, mut reported, mut sent) = (Instant::now(), Instant::now(), 0usize);
        loop {
            let (account, view, prices) = (account.clone(), view.clone(), self.prices.clone());
            let (from, licences) = (after.take(), licences.clone());
            let page = self
                .stream_blocking(move |store| {
                    let mut licences = licences
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    member_page(
                        store,
                        &account,
                        &view,
                        month,
                        &prices,
                        from.as_deref(),
                        &mut licences,
                    )
                })
                .await;
            let page = match page {
                Ok(page) => page,
                Err(failed) => {
                    outbox.finish(status(failed));
                    return false;
                }
            };
            sent += page.rows.len();
            if !page.rows.is_empty()
                && outbox
                    .send(usage(Part::Members(api::MemberUsageRows {
                        rows: page.rows,
                    })))
                    .await
                    .is_err()
            {
                return false;
            }
            if reported.elapsed() >= SNAPSHOT_PROGRESS {
                reported = Instant::now();
                tracing::info!(
                    account = %account_id,
                    members_sent = sent,
                    seconds = started.elapsed().as_secs(),
                    "GetUsage snapshot in progress"
                );
            }
            match page.next {
                Some(next) => after = Some(next),
                None => {
                    if started.elapsed() >= SNAPSHOT_PROGRESS {
                        tracing::info!(
                            account = %account_id,
                            members_sent = sent,
                            seconds = started.elapsed().as_secs(),
                            "GetUsage snapshot sent"
                        );
                    }
                    return true;
                }
            }
        }
    }

    pub(super) async fn get_usage(
        &self,
        request: Request<api::GetUsageRequest>,
    ) -> Result<ResponseStream<api::GetUsageResponse>, ApiError> {
        let (caller, request) = self.caller(request)?;
        let view = View {
            account_id: {
                let id = from_proto::account_id(&request.account_id)?;
                Self::authorize(&caller, "LicensingService/GetUsage", Use::Read, id)?;
                id.into()
            },
            tiers: from_proto::tiers("tiers", &request.tiers)?.into(),
            month: from_proto::month("month", &request.month)?,
            reasons: from_proto::usage_view_has_reasons("view", request.view)?,
        };
        // Unknown accounts fail the call itself rather than the stream's first message.
        let id = view.account_id.clone();
        self.blocking(move |store| store.account(&id)).await?;

        let (mut outbox, stream) = self.streams.open_stream(STREAM_BUFFER)?;
        // Subscribe before the snapshot, so no change committed during it is missed.
        let changes = request.follow.then(|| self.changes.subscribe());
        let this = self.clone();
        let guard = super::StreamGuard::new(&self.usage_streams);
        tokio::spawn(async move {
            let _guard = guard;
            if !this.snapshot(&view, &mut outbox).await {
                return;
            }
            if let Some(changes) = changes {
                let _following = crate::telemetry::metrics::Held::new(metrics::gauge!(
                    "licensing_follow_streams"
                ));
                this.follow(&view, &mut outbox, changes).await;
            }
        });
        Ok(stream)
    }

    /// Sends each committed change of the account until the client leaves or the server stops.
    async fn follow(
        &self,
        view: &View,
        outbox: &mut Outbox<api::GetUsageResponse>,
        mut changes: broadcast::Receiver<super::Committed>,
    ) {
        if outbox
            .send(usage(Part::SnapshotComplete(true)))
            .await
            .is_err()
        {
            return;
        }
        let stopping = super::stopping(self.shutdown.clone());
        tokio::pin!(stopping);
        loop {
            let change = tokio::select! {
                () = outbox.closed() => return,
                () = &mut stopping => return,
                change = changes.recv() => change,
            };
            let change = match change {
                Ok(change) if change.account_id == view.account_id => change,
                Ok(_) => continue,
                // Fell behind: start over with a fresh snapshot rather than skip changes.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if !self.snapshot(view, outbox).await {
                        return;
                    }
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let read = match self.read_change(&change, view.month).await {
                Ok(read) => read,
                Err(failed) => {
                    outbox.finish(status(failed));
                    return;
                }
            };
            if outbox
                .send(usage(Part::Summary(read.summary.clone())))
                .await
                .is_err()
            {
                return;
            }
            let part = match &change.what {
                CommittedChange::Removed(member_id) => {
                    Some(Part::RemovedMemberId(member_id.clone()))
                }
                CommittedChange::Member(_) | CommittedChange::Usage(_) => {
                    let rows: Vec<api::MemberUsage> = read
                        .members
                        .iter()
                        .filter(|(tier, _)| view.tiers.is_empty() || view.tiers.contains(tier))
                        .map(|(_, row)| {
                            if view.reasons {
                                row.clone()
                            } else {
                                api::MemberUsage {
                                    member_id: row.member_id.clone(),
                                    tier: row.tier,
                                    add_ons: row.add_ons.clone(),
                                    billing_mode: row.billing_mode,
                                    reasons: Vec::new(),
                                    login_days: row.login_days.clone(),
                                    billable_days: row.billable_days,
                                }
                            }
                        })
                        .collect();
                    (!rows.is_empty()).then_some(Part::Members(api::MemberUsageRows { rows }))
                }
                CommittedChange::Account => None,
            };
            if let Some(part) = part
                && outbox.send(usage(part)).await.is_err()
            {
                return;
            }
        }
    }

    /// What a change shows for `month`: read once however many followers the account has (a
    /// thousand followers once made every write wait for a thousand reads), on the followers'
    /// own small share of the blocking pool.
    async fn read_change(
        &self,
        change: &super::Committed,
        month: Option<BillingMonth>,
    ) -> Result<Arc<ChangeRead>, ApiError> {
        let cell = {
            let mut reads = self
                .change_reads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            reads.retain(|(seq, _), _| seq.saturating_add(CHANGE_READS_KEPT) > change.seq);
            reads.entry((change.seq, month)).or_default().clone()
        };
        cell.get_or_init(|| async {
            let _permit = self.follow_reads.acquire().await;
            self.change_reads_done
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let members: Vec<String> = match &change.what {
                CommittedChange::Member(member) => vec![member.clone()],
                CommittedChange::Usage(members) => members.to_vec(),
                CommittedChange::Removed(_) | CommittedChange::Account => Vec::new(),
            };
            let (account_id, prices) = (change.account_id.clone(), self.prices.clone());
            self.blocking(move |store| read_change(store, &account_id, month, &members, &prices))
                .await
                .map(Arc::new)
        })
        .await
        .clone()
    }

    pub(super) async fn read_audit_trail(
        &self,
        request: Request<api::ReadAuditTrailRequest>,
    ) -> Result<ResponseStream<api::ReadAuditTrailResponse>, ApiError> {
        let (caller, request) = self.caller(request)?;
        let account_id: Arc<str> = from_proto::account_id(&request.account_id)?.into();
        Self::authorize(
            &caller,
            "LicensingService/ReadAuditTrail",
            Use::Read,
            &account_id,
        )?;
        let from = request
            .from
            .as_ref()
            .map(|t| from_proto::timestamp("from", t))
            .transpose()?;
        let to = request
            .to
            .as_ref()
            .map(|t| from_proto::timestamp("to", t))
            .transpose()?;
        if let (Some(from), Some(to)) = (from, to)
            && to < from
        {
            return Err(ApiError::invalid(
                "to",
                to.to_string(),
                format!("is before from {from}"),
            ));
        }
        let id = account_id.clone();
        let account = Arc::new(self.blocking(move |store| store.account(&id)).await?);
        let (mut outbox, stream) = self.streams.open_stream(STREAM_BUFFER)?;
        let this = self.clone();
        tokio::spawn(async move {
            // Pages of entries read on the blocking pool, sent from here: a client that does not
            // read holds no thread.
            let mut next_sequence = 1;
            loop {
                let (account_id, account, prices) =
                    (account_id.clone(), account.clone(), this.prices.clone());
                let page = this
                    .stream_blocking(move |store| {
                        let mut entries = Vec::new();
                        let mut read = 0;
                        let mut last = None;
                        for entry in store
                            .audit_trail(&account_id, next_sequence)
                            .take(ENTRIES_PER_MESSAGE)
                        {
                            let entry = entry?;
                            read += 1;
                            last = Some(entry.sequence);
                            if from.is_some_and(|from| entry.time < from)
                                || to.is_some_and(|to| entry.time >= to)
                            {
                                continue;
                            }
                            entries.push(to_proto::audit_entry(&account, &entry, &prices));
                        }
                        let next = last
                            .filter(|_| read == ENTRIES_PER_MESSAGE)
                            .map(|sequence| sequence.saturating_add(1));
                        Ok((entries, next))
                    })
                    .await;
                let (entries, next) = match page {
                    Ok(page) => page,
                    Err(failed) => {
                        outbox.finish(status(failed));
                        return;
                    }
                };
                if !entries.is_empty()
                    && outbox
                        .send(api::ReadAuditTrailResponse { entries })
                        .await
                        .is_err()
                {
                    return;
                }
                match next {
                    Some(sequence) => next_sequence = sequence,
                    None => return,
                }
            }
        });
        Ok(stream)
    }
}

/// Reads what a committed change shows; blocking.
fn read_change(
    store: &Store,
    account_id: &str,
    month: Option<BillingMonth>,
    member_ids: &[String],
    prices: &PriceList,
) -> Result<ChangeRead, OpError> {
    let real_now = Licensing::real_now();
    let account = store.account(account_id)?;
    let summary = summary(store, &account, month, real_now)?;
    let shown = shown_month(&account, month, real_now);
    let mut members = Vec::with_capacity(member_ids.len());
    for member_id in member_ids {
        match store.member(&account.id, member_id) {
            Ok(member) => {
                let days = store
                    .login_days(&account.id, member_id, shown)?
                    .into_iter()
                    .map(|(date, day)| to_proto::login_day(date, day))
                    .collect();
                let resolution = resolve(
                    &member.settings,
                    account.settings.recording_retention,
                    prices,
                );
                members.push((
                    resolution.tier,
                    to_proto::member_usage(&member, &resolution, days, true),
                ));
            }
            // Removed again since (its removal follows as its own change), or a member the
            // account does not know (unlicensed usage, in the summary).
            Err(OpError::MemberNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ChangeRead { summary, members })
}

#[cfg(test)]
mod tests;
