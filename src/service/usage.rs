//! GetUsage (snapshot, then committed changes with `follow`) and ReadAuditTrail.
//!
//! Snapshots are read on the blocking pool and sent as they are read, many rows per message,
//! through a small bounded channel: a slow client slows the reader instead of filling memory, and
//! a client that leaves ends the reader at its next send.

use std::sync::Arc;

use licensing_core::{Account, PriceList, Tier, Timestamp, resolve};
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

fn summary(account: &Account, real_now: Timestamp) -> api::UsageSummary {
    let month = account.settings.zone.month(account.now(real_now));
    let inventory = account.inventory.as_of(month);
    api::UsageSummary {
        products: to_proto::seat_counts(&inventory)
            .into_iter()
            .map(|seats| api::ProductUsage { seats: Some(seats) })
            .collect(),
        concurrency_peaks: Vec::new(),
        unlicensed: Vec::new(),
        month: month.to_string(),
        sandbox: account.sandbox,
    }
}

/// Sends the summary and every member row; blocking. Returns false when the client left.
fn send_snapshot(
    store: &Store,
    account_id: &str,
    tiers: &[Tier],
    prices: &PriceList,
    tx: &Sender<api::GetUsageResponse>,
) -> Result<bool, OpError> {
    let account = store.account(account_id)?;
    let retention = account.settings.recording_retention;
    if tx
        .blocking_send(Ok(usage(Part::Summary(summary(
            &account,
            Licensing::real_now(),
        )))))
        .is_err()
    {
        return Ok(false);
    }
    let mut rows = Vec::with_capacity(ROWS_PER_MESSAGE);
    for member in store.members(account_id, None) {
        let member = member?;
        let resolution = resolve(&member.settings, retention, prices);
        if !tiers.is_empty() && !tiers.contains(&resolution.tier) {
            continue;
        }
        rows.push(to_proto::member_usage(&member, &resolution));
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
    async fn snapshot(
        &self,
        account_id: &Arc<str>,
        tiers: &Arc<[Tier]>,
        tx: &Sender<api::GetUsageResponse>,
    ) -> bool {
        let (store, prices, account_id, tiers, sender) = (
            self.store.clone(),
            self.prices.clone(),
            account_id.clone(),
            tiers.clone(),
            tx.clone(),
        );
        let sent = tokio::task::spawn_blocking(move || {
            send_snapshot(&store, &account_id, &tiers, &prices, &sender)
        })
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
        let account_id: Arc<str> = from_proto::account_id(&request.account_id)
            .map_err(status)?
            .into();
        let tiers: Arc<[Tier]> = from_proto::tiers("tiers", &request.tiers)
            .map_err(status)?
            .into();
        // Unknown accounts fail the call itself rather than the stream's first message.
        let id = account_id.clone();
        self.blocking(move |store| store.account(&id)).await?;

        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        // Subscribe before the snapshot, so no change committed during it is missed.
        let changes = request.follow.then(|| self.changes.subscribe());
        let this = self.clone();
        let guard = super::StreamGuard::new(&self.streams);
        tokio::spawn(async move {
            let _guard = guard;
            if !this.snapshot(&account_id, &tiers, &tx).await {
                return;
            }
            if let Some(changes) = changes {
                this.follow(&account_id, &tiers, &tx, changes).await;
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    /// Sends each committed change of the account until the client leaves or the server stops.
    async fn follow(
        &self,
        account_id: &Arc<str>,
        tiers: &Arc<[Tier]>,
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
        let mut shutdown = self.shutdown.clone();
        loop {
            let change = tokio::select! {
                () = tx.closed() => return,
                _ = shutdown.wait_for(|stopping| *stopping) => return,
                change = changes.recv() => change,
            };
            let parts = match change {
                Ok(change) if change.account_id == *account_id => {
                    self.change_parts(account_id, tiers, change.what).await
                }
                Ok(_) => continue,
                // Fell behind: start over with a fresh snapshot rather than skip changes.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if !self.snapshot(account_id, tiers, tx).await {
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
        account_id: &Arc<str>,
        tiers: &Arc<[Tier]>,
        what: CommittedChange,
    ) -> Vec<Result<api::GetUsageResponse, Status>> {
        let id = account_id.to_string();
        let member_id = match &what {
            CommittedChange::Member(member) => Some(member.clone()),
            CommittedChange::Removed(_) | CommittedChange::Account => None,
        };
        let read = self
            .blocking(move |store| {
                let account = store.account(&id)?;
                let member = member_id.map(|m| store.member(&id, &m)).transpose();
                Ok((account, member))
            })
            .await;
        let (account, member) = match read {
            Ok(read) => read,
            Err(e) => return vec![Err(e)],
        };
        let mut parts = vec![Ok(usage(Part::Summary(summary(
            &account,
            Self::real_now(),
        ))))];
        match what {
            CommittedChange::Removed(member_id) => {
                parts.push(Ok(usage(Part::RemovedMemberId(member_id))))
            }
            CommittedChange::Member(_) => match member {
                Ok(Some(member)) => {
                    let resolution = resolve(
                        &member.settings,
                        account.settings.recording_retention,
                        &self.prices,
                    );
                    if tiers.is_empty() || tiers.contains(&resolution.tier) {
                        let rows = vec![to_proto::member_usage(&member, &resolution)];
                        parts.push(Ok(usage(Part::Members(api::MemberUsageRows { rows }))));
                    }
                }
                // Removed again since: its removal follows as its own change.
                Ok(None) | Err(OpError::MemberNotFound { .. }) => {}
                Err(e) => parts.push(Err(self.refused(e))),
            },
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
