//! CreateAccount, GetAccount, UpdateAccount.

use licensing_core::{Account, Inventory};
use licensing_store::OpError;
use tonic::Request;

use super::{CommittedChange, Licensing, Use};
use crate::{
    api,
    convert::{from_proto, to_proto},
    error::ApiError,
};

impl Licensing {
    pub(super) async fn create_account(
        &self,
        request: Request<api::CreateAccountRequest>,
    ) -> Result<api::CreateAccountResponse, ApiError> {
        let (caller, request) = self.caller(request)?;
        let id = from_proto::account_id(&request.account_id)?.to_owned();
        Self::authorize(&caller, "LicensingService/CreateAccount", Use::Write, &id)?;
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
            .write(move |store| store.create_account(account, &caller.actor()))
            .await?;
        self.announce(&created.id, CommittedChange::Account);
        Ok(api::CreateAccountResponse {
            account: Some(to_proto::account(&created, real_now)),
        })
    }

    pub(super) async fn get_account(
        &self,
        request: Request<api::GetAccountRequest>,
    ) -> Result<api::GetAccountResponse, ApiError> {
        let (caller, request) = self.caller(request)?;
        let id = from_proto::account_id(&request.account_id)?.to_owned();
        Self::authorize(&caller, "LicensingService/GetAccount", Use::Read, &id)?;
        let account = self.blocking(move |store| store.account(&id)).await?;
        Ok(api::GetAccountResponse {
            account: Some(to_proto::account(&account, Self::real_now())),
        })
    }

    pub(super) async fn update_account(
        &self,
        request: Request<api::UpdateAccountRequest>,
    ) -> Result<api::UpdateAccountResponse, ApiError> {
        let (caller, request) = self.caller(request)?;
        let id = from_proto::account_id(&request.account_id)?.to_owned();
        Self::authorize(&caller, "LicensingService/UpdateAccount", Use::Write, &id)?;
        let update = from_proto::settings_update(&request)?;
        let now = Self::real_now();
        let account = self
            .write(move |store| {
                store.update_account(&id, now, &caller.actor(), |settings| {
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
        request: Request<api::AdvanceClockRequest>,
    ) -> Result<api::AdvanceClockResponse, ApiError> {
        let (caller, request) = self.caller(request)?;
        let id = from_proto::account_id(&request.account_id)?.to_owned();
        Self::authorize(&caller, "LicensingService/AdvanceClock", Use::Write, &id)?;
        let to = request
            .to
            .as_ref()
            .ok_or_else(|| ApiError::invalid("to", "(unset)", "must be set to the new time"))?;
        let to = from_proto::timestamp("to", to)?;
        let account = self
            .write(move |store| store.advance_clock(&id, to, &caller.actor()))
            .await?;
        self.announce(&account.id, CommittedChange::Account);
        self.clock_moved.moved(&account.id);
        Ok(api::AdvanceClockResponse {
            account: Some(to_proto::account(&account, Self::real_now())),
        })
    }
}
