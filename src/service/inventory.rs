//! GetInventory and AdjustInventory (the cart).

use tonic::Request;

use super::{CommittedChange, Licensing, Use};
use crate::{
    api,
    convert::{from_proto, to_proto},
    error::ApiError,
};

impl Licensing {
    pub(super) async fn get_inventory(
        &self,
        request: Request<api::GetInventoryRequest>,
    ) -> Result<api::GetInventoryResponse, ApiError> {
        let (caller, request) = self.caller(request)?;
        let account_id = from_proto::account_id(&request.account_id)?.to_owned();
        Self::authorize(
            &caller,
            "LicensingService/GetInventory",
            Use::Read,
            &account_id,
        )?;
        let account = self
            .blocking(move |store| store.account(&account_id))
            .await?;
        let month = account.settings.zone.month(account.now(Self::real_now()));
        Ok(api::GetInventoryResponse {
            inventory: Some(to_proto::inventory(&account.inventory.as_of(month))),
        })
    }

    pub(super) async fn adjust_inventory(
        &self,
        request: Request<api::AdjustInventoryRequest>,
    ) -> Result<api::AdjustInventoryResponse, ApiError> {
        let (caller, request) = self.caller(request)?;
        let account_id = from_proto::account_id(&request.account_id)?.to_owned();
        let used = if request.confirm {
            Use::Write
        } else {
            Use::Read
        };
        Self::authorize(
            &caller,
            "LicensingService/AdjustInventory",
            used,
            &account_id,
        )?;
        let changes = from_proto::seat_changes(&request.changes)?;
        if !request.confirm && request.revision != 0 {
            return Err(ApiError::invalid(
                "revision",
                request.revision.to_string(),
                "is only read with confirm: set confirm to true, or omit revision for a preview",
            ));
        }
        // Revisions start at 1: zero is an unset field, not a stale revision.
        if request.confirm && request.revision == 0 {
            return Err(ApiError::invalid(
                "revision",
                "0",
                "revision is required with confirm: preview first and confirm the revision it returns",
            ));
        }
        let confirm = request.confirm.then_some(request.revision);
        let (prices, now) = (self.prices.clone(), Self::real_now());
        let op = move |store: &licensing_store::Store| {
            store.adjust_inventory(
                &account_id,
                &changes,
                confirm,
                now,
                &prices,
                &caller.actor(),
            )
        };
        let adjusted = if request.confirm {
            self.write(op).await?
        } else {
            self.blocking(op).await?
        };
        if adjusted.confirmed && !adjusted.cart.lines.is_empty() {
            self.announce(&adjusted.account.id, CommittedChange::Account);
        }
        let currency = self.prices.currency();
        let cart = &adjusted.cart;
        Ok(api::AdjustInventoryResponse {
            lines: cart
                .lines
                .iter()
                .map(|l| to_proto::cart_line(l, currency))
                .collect(),
            this_month: Some(to_proto::money(cart.this_month, currency)),
            next_month: Some(to_proto::money(cart.next_month, currency)),
            // A preview answers the revision to confirm; a confirm, the one it wrote.
            revision: if adjusted.confirmed {
                cart.after.revision
            } else {
                adjusted.account.inventory.revision
            },
            confirmed: adjusted.confirmed,
            inventory: Some(to_proto::inventory(&if adjusted.confirmed {
                cart.after
            } else {
                // As it would be; its revision stays the one to confirm.
                licensing_core::Inventory {
                    revision: adjusted.account.inventory.revision,
                    ..cart.after
                }
            })),
        })
    }
}
