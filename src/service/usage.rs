//! GetUsage (snapshot, then committed changes with `follow`) and ReadAuditTrail.
//!
//! Snapshots are read on the blocking pool and sent as they are read, many rows per message,
//! through a small bounded channel: a slow client slows the reader instead of filling memory, and
//! a client that leaves ends the reader at its next send.

use std::sync::Arc;

use licensing_core::{
    Account, BillingMonth, MeterCaps, PriceList, Tier, Timestamp, meter_billing, resolve,
};
use licensing_store::{OpError, Store};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{CommittedChange, Licensing, ResponseStream};
use crate::{
    api::{self, get_usage_response::Part},
    convert::{from_proto, to_proto},
    error::{ApiError, status},
};

/// Member rows per `GetUsage` message.
const ROWS_PER_MESSAGE: usize = 1024;
/// Audit entries per `ReadAuditTrail` message.
const ENTRIES_PER_MESSAGE: usize = 256;
/// Messages buffered between a stream's reader and its client.
const STREAM_BUFFER: usize = 4;

type Sender<T> = mpsc::Sender<Result<T, Status>>;

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
    let peaks = store.concurrency_peaks(account, shown)?;
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
}

/// Sends the summary and every member row; blocking. Returns false when the client left.
fn send_snapshot(
    store: &Store,
    view: &View,
    prices: &PriceList,
    tx: &Sender<api::GetUsageResponse>,
) -> Result<bool, OpError> {
    let real_now = Licensing::real_now();
    let account = store.account(&view.account_id)?;
    let month = shown_month(&account, view.month, real_now).to_string();
    let retention = account.settings.recording_retention;
    if tx
        .blocking_send(Ok(usage(Part::Summary(summary(
            store, &account, view.month, real_now,
        )?))))
        .is_err()
    {
        return Ok(false);
    }
    // Days are ordered by member like the members: one merged pass over both.
    let mut days = store.account_login_days(&view.account_id).peekable();
    let mut rows = Vec::with_capacity(ROWS_PER_MESSAGE);
    for member in store.members(&view.account_id, None) {
        let member = member?;
        let mut member_days = Vec::new();
        loop {
            match days.peek() {
                Some(Ok((day_member, _, _)))
                    if day_member.as_str() <= member.member_id.as_str() => {}
                Some(Err(_)) => {
                    if let Some(Err(e)) = days.next() {
                        return Err(e);
                    }
                }
                _ => break,
            }
            if let Some(Ok((day_member, date, day))) = days.next()
                && day_member == member.member_id
                && date.starts_with(&month)
            {
                member_days.push(to_proto::login_day(date, &day));
            }
        }
        let resolution = resolve(&member.settings, retention, prices);
        if !view.tiers.is_empty() && !view.tiers.contains(&resolution.tier) {
            continue;
        }
        rows.push(to_proto::member_usage(&member, &resolution, member_days));
        if rows.len() == ROWS_PER_MESSAGE {
            let batch = std::mem::replace(&mut rows, Vec::with_capacity(ROWS_PER_MESSAGE));
            if tx
                .blocking_send(Ok(usage(Part::Members(api::MemberUsageRows {
                    rows: batch,
                }))))
                .is_err()
            {
                return Ok(false);
            }
        }
    }
    if !rows.is_empty()
        && tx
            .blocking_send(Ok(usage(Part::Members(api::MemberUsageRows { rows }))))
            .is_err()
    {
        return Ok(false);
    }
    Ok(true)
}

impl Licensing {
    /// Sends a snapshot from the blocking pool; false when the client left or it failed (the
    /// failure is sent to the client).
    async fn snapshot(&self, view: &View, tx: &Sender<api::GetUsageResponse>) -> bool {
        let (store, prices, view, sender) = (
            self.store.clone(),
            self.prices.clone(),
            view.clone(),
            tx.clone(),
        );
        let sent =
            tokio::task::spawn_blocking(move || send_snapshot(&store, &view, &prices, &sender))
                .await;
        match sent {
            Ok(Ok(open)) => open,
            Ok(Err(e)) => {
                let _ = tx.send(Err(self.refused(e))).await;
                false
            }
            Err(e) => {
                let _ = tx
                    .send(Err(status(ApiError::Internal(format!(
                        "usage reader failed: {e}"
                    )))))
                    .await;
                false
            }
        }
    }

    pub(super) async fn get_usage(
        &self,
        request: api::GetUsageRequest,
    ) -> Result<ResponseStream<api::GetUsageResponse>, Status> {
        let view = View {
            account_id: from_proto::account_id(&request.account_id)
                .map_err(status)?
                .into(),
            tiers: from_proto::tiers("tiers", &request.tiers)
                .map_err(status)?
                .into(),
            month: from_proto::month("month", &request.month).map_err(status)?,
        };
        // Unknown accounts fail the call itself rather than the stream's first message.
        let id = view.account_id.clone();
        self.blocking(move |store| store.account(&id)).await?;

        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        // Subscribe before the snapshot, so no change committed during it is missed.
        let changes = request.follow.then(|| self.changes.subscribe());
        let this = self.clone();
        let guard = super::StreamGuard::new(&self.streams);
        tokio::spawn(async move {
            let _guard = guard;
            if !this.snapshot(&view, &tx).await {
                return;
            }
            if let Some(changes) = changes {
                this.follow(&view, &tx, changes).await;
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    /// Sends each committed change of the account until the client leaves or the server stops.
    async fn follow(
        &self,
        view: &View,
        tx: &Sender<api::GetUsageResponse>,
        mut changes: broadcast::Receiver<super::Committed>,
    ) {
        if tx
            .send(Ok(usage(Part::SnapshotComplete(true))))
            .await
            .is_err()
        {
            return;
        }
        let stopping = super::stopping(self.shutdown.clone());
        tokio::pin!(stopping);
        loop {
            let change = tokio::select! {
                () = tx.closed() => return,
                () = &mut stopping => return,
                change = changes.recv() => change,
            };
            let parts = match change {
                Ok(change) if change.account_id == view.account_id => {
                    self.change_parts(view, change.what).await
                }
                Ok(_) => continue,
                // Fell behind: start over with a fresh snapshot rather than skip changes.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if !self.snapshot(view, tx).await {
                        return;
                    }
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            for part in parts {
                if tx.send(part).await.is_err() {
                    return;
                }
            }
        }
    }

    /// The messages announcing one change: the new summary, then the member's row or removal.
    async fn change_parts(
        &self,
        view: &View,
        what: CommittedChange,
    ) -> Vec<Result<api::GetUsageResponse, Status>> {
        let member_id = match &what {
            CommittedChange::Member(member) => Some(member.clone()),
            CommittedChange::Removed(_) | CommittedChange::Account => None,
        };
        let (read_view, prices) = (view.clone(), self.prices.clone());
        let read = self
            .blocking(move |store| {
                let real_now = Licensing::real_now();
                let account = store.account(&read_view.account_id)?;
                let summary = summary(store, &account, read_view.month, real_now)?;
                let member = match member_id {
                    None => None,
                    Some(member_id) => match store.member(&account.id, &member_id) {
                        Ok(member) => {
                            let month = shown_month(&account, read_view.month, real_now);
                            let days = store
                                .login_days(&account.id, &member_id, month)?
                                .into_iter()
                                .map(|(date, day)| to_proto::login_day(date, &day))
                                .collect();
                            let resolution = resolve(
                                &member.settings,
                                account.settings.recording_retention,
                                &prices,
                            );
                            Some((
                                resolution.tier,
                                to_proto::member_usage(&member, &resolution, days),
                            ))
                        }
                        // Removed again since: its removal follows as its own change.
                        Err(OpError::MemberNotFound { .. }) => None,
                        Err(e) => return Err(e),
                    },
                };
                Ok((summary, member))
            })
            .await;
        let (summary, member) = match read {
            Ok(read) => read,
            Err(e) => return vec![Err(e)],
        };
        let mut parts = vec![Ok(usage(Part::Summary(summary)))];
        match what {
            CommittedChange::Removed(member_id) => {
                parts.push(Ok(usage(Part::RemovedMemberId(member_id))))
            }
            CommittedChange::Member(_) => {
                if let Some((tier, row)) = member
                    && (view.tiers.is_empty() || view.tiers.contains(&tier))
                {
                    parts.push(Ok(usage(Part::Members(api::MemberUsageRows {
                        rows: vec![row],
                    }))));
                }
            }
            CommittedChange::Account => {}
        }
        parts
    }

    pub(super) async fn read_audit_trail(
        &self,
        request: api::ReadAuditTrailRequest,
    ) -> Result<ResponseStream<api::ReadAuditTrailResponse>, Status> {
        let account_id = from_proto::account_id(&request.account_id)
            .map_err(status)?
            .to_owned();
        let from = request
            .from
            .as_ref()
            .map(|t| from_proto::timestamp("from", t))
            .transpose()
            .map_err(status)?;
        let to = request
            .to
            .as_ref()
            .map(|t| from_proto::timestamp("to", t))
            .transpose()
            .map_err(status)?;
        if let (Some(from), Some(to)) = (from, to)
            && to < from
        {
            return Err(status(ApiError::invalid(
                "to",
                to.to_string(),
                format!("is before from {from}"),
            )));
        }
        let id = account_id.clone();
        let account = self.blocking(move |store| store.account(&id)).await?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let (store, prices) = (self.store.clone(), self.prices.clone());
        tokio::task::spawn_blocking(move || {
            let mut entries = Vec::with_capacity(ENTRIES_PER_MESSAGE);
            for entry in store.audit_trail(&account_id, 1) {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(status(e.into())));
                        return;
                    }
                };
                if from.is_some_and(|from| entry.time < from)
                    || to.is_some_and(|to| entry.time >= to)
                {
                    continue;
                }
                entries.push(to_proto::audit_entry(&account, &entry, &prices));
                if entries.len() == ENTRIES_PER_MESSAGE {
                    let batch =
                        std::mem::replace(&mut entries, Vec::with_capacity(ENTRIES_PER_MESSAGE));
                    if tx
                        .blocking_send(Ok(api::ReadAuditTrailResponse { entries: batch }))
                        .is_err()
                    {
                        return;
                    }
                }
            }
            if !entries.is_empty() {
                let _ = tx.blocking_send(Ok(api::ReadAuditTrailResponse { entries }));
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests;
