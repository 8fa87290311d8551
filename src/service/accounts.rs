//! CreateAccount, GetAccount, UpdateAccount.

use licensing_core::{Account, Inventory, UNAUTHENTICATED};
use licensing_store::OpError;
use tonic::Status;

use super::{CommittedChange, Licensing, not_yet};
use crate::{
    api,
    convert::{from_proto, to_proto},
    error::status,
};

impl Licensing {
    pub(super) async fn create_account(
        &self,
        request: api::CreateAccountRequest,
    ) -> Result<api::CreateAccountResponse, Status> {
        let id = from_proto::account_id(&request.account_id)
            .map_err(status)?
            .to_owned();
        let settings = from_proto::new_account_settings(request.settings).map_err(status)?;
        if request.sandbox || request.sandbox_clock_start.is_some() {
            return Err(not_yet(
                "sandbox accounts are not available in this version yet: omit sandbox",
            ));
        }
        let now = Self::real_now();
        let account = Account {
            inventory: Inventory::new(settings.zone.month(now)),
            id,
            settings,
            sandbox: false,
            created_at: now,
            clock: None,
            audit_sequence: 0,
        };
        let created = self
            .write(move |store| store.create_account(account, UNAUTHENTICATED))
            .await?;
        self.announce(&created.id, CommittedChange::Account);
        Ok(api::CreateAccountResponse {
            account: Some(to_proto::account(&created, now)),
        })
    }

    pub(super) async fn get_account(
        &self,
        request: api::GetAccountRequest,
    ) -> Result<api::GetAccountResponse, Status> {
        let id = from_proto::account_id(&request.account_id)
            .map_err(status)?
            .to_owned();
        let account = self.blocking(move |store| store.account(&id)).await?;
        Ok(api::GetAccountResponse {
            account: Some(to_proto::account(&account, Self::real_now())),
        })
    }

    pub(super) async fn update_account(
        &self,
        request: api::UpdateAccountRequest,
    ) -> Result<api::UpdateAccountResponse, Status> {
        let id = from_proto::account_id(&request.account_id)
            .map_err(status)?
            .to_owned();
        let update = from_proto::settings_update(&request).map_err(status)?;
        let now = Self::real_now();
        let account = self
            .write(move |store| {
                store.update_account(&id, now, UNAUTHENTICATED, |settings| {
                    update.apply(settings);
                    settings.validate("").map_err(|e| OpError::Invalid {
                        field: e.field,
                        value: e.value,
                        problem: e.problem,
                    })
                })
            })
            .await?;
        self.announce(&account.id, CommittedChange::Account);
        Ok(api::UpdateAccountResponse {
            account: Some(to_proto::account(&account, now)),
        })
    }
}
