//! CreateAccount, GetAccount, UpdateAccount.

use licensing_core::{Account, Inventory, UNAUTHENTICATED};
use licensing_store::OpError;

use super::{CommittedChange, Licensing};
use crate::{
    api,
    convert::{from_proto, to_proto},
    error::ApiError,
};

impl Licensing {
    pub(super) async fn create_account(
        &self,
        request: api::CreateAccountRequest,
    ) -> Result<api::CreateAccountResponse, ApiError> {
        let id = from_proto::account_id(&request.account_id)?.to_owned();
        let settings = from_proto::new_account_settings(request.settings)?;
        let real_now = Self::real_now();
        let clock = match (request.sandbox, &request.sandbox_clock_start) {
            (false, None) => None,
            (false, Some(_)) => {
                return Err(ApiError::invalid(
                    "sandbox_clock_start",
                    "(set)",
                    "is only read for a sandbox account: set sandbox too",
                ));
            }
            (true, None) => Some(real_now),
            (true, Some(start)) => Some(from_proto::timestamp("sandbox_clock_start", start)?),
        };
        let now = clock.unwrap_or(real_now);
        let account = Account {
            inventory: Inventory::new(settings.zone.month(now)),
            id,
            settings,
            sandbox: clock.is_some(),
            created_at: now,
            clock,
            audit_sequence: 0,
        };
        let created = self
            .write(move |store| store.create_account(account, UNAUTHENTICATED))
            .await?;
        self.announce(&created.id, CommittedChange::Account);
        Ok(api::CreateAccountResponse {
            account: Some(to_proto::account(&created, real_now)),
        })
    }

    pub(super) async fn get_account(
        &self,
        request: api::GetAccountRequest,
    ) -> Result<api::GetAccountResponse, ApiError> {
        let id = from_proto::account_id(&request.account_id)?.to_owned();
        let account = self.blocking(move |store| store.account(&id)).await?;
        Ok(api::GetAccountResponse {
            account: Some(to_proto::account(&account, Self::real_now())),
        })
    }

    pub(super) async fn update_account(
        &self,
        request: api::UpdateAccountRequest,
    ) -> Result<api::UpdateAccountResponse, ApiError> {
        let id = from_proto::account_id(&request.account_id)?.to_owned();
        let update = from_proto::settings_update(&request)?;
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

impl Licensing {
    pub(super) async fn advance_clock(
        &self,
        request: api::AdvanceClockRequest,
    ) -> Result<api::AdvanceClockResponse, ApiError> {
        let id = from_proto::account_id(&request.account_id)?.to_owned();
        let to = request
            .to
            .as_ref()
            .ok_or_else(|| ApiError::invalid("to", "(unset)", "must be set to the new time"))?;
        let to = from_proto::timestamp("to", to)?;
        let account = self
            .write(move |store| store.advance_clock(&id, to, UNAUTHENTICATED))
            .await?;
        self.announce(&account.id, CommittedChange::Account);
        Ok(api::AdvanceClockResponse {
            account: Some(to_proto::account(&account, Self::real_now())),
        })
    }
}
