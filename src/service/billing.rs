//! GetStatement and CheckQuota.

use licensing_core::{Meter, check_quota};
use tonic::Request;

use super::{Licensing, Use};
use crate::{
    api,
    convert::{from_proto, to_proto},
    error::ApiError,
};

impl Licensing {
    pub(super) async fn get_statement(
        &self,
        request: Request<api::GetStatementRequest>,
    ) -> Result<api::GetStatementResponse, ApiError> {
        let (caller, request) = self.caller(request)?;
        let account_id = from_proto::account_id(&request.account_id)?.to_owned();
        Self::authorize(
            &caller,
            "LicensingService/GetStatement",
            Use::Read,
            &account_id,
        )?;
        let month = from_proto::month("month", &request.month)?;
        let prices = self.prices.clone();
        let (account, statement) = self
            .blocking(move |store| {
                let account = store.account(&account_id)?;
                let real_now = Licensing::real_now();
                let month =
                    month.unwrap_or_else(|| account.settings.zone.month(account.now(real_now)));
                let statement = store.statement(&account, month, real_now, &prices)?;
                Ok((account, statement))
            })
            .await?;
        // A final statement is answered only once it is durable: it may have been stored just
        // now (by this call or a concurrent one), and what was answered FINAL must never change.
        if statement.is_final {
            self.store
                .flush()
                .await
                .map_err(|e| self.refused(e.into()))?;
        }
        Ok(api::GetStatementResponse {
            statement: Some(to_proto::statement(
                &account,
                &statement.statement,
                statement.is_final,
            )),
        })
    }

    pub(super) async fn check_quota(
        &self,
        request: Request<api::CheckQuotaRequest>,
    ) -> Result<api::CheckQuotaResponse, ApiError> {
        let (caller, request) = self.caller(request)?;
        let account_id = from_proto::account_id(&request.account_id)?.to_owned();
        Self::authorize(
            &caller,
            "LicensingService/CheckQuota",
            Use::Read,
            &account_id,
        )?;
        let meter = match api::Meter::try_from(request.meter) {
            Ok(api::Meter::SpeechToTextMinutes) => Meter::SpeechToTextMinutes,
            Ok(api::Meter::SmartRoutingPacks) => Meter::SmartRoutingPacks,
            Ok(api::Meter::AiTopicsPacks) => Meter::AiTopicsPacks,
            Ok(api::Meter::AiQaPacks) => Meter::AiQaPacks,
            Ok(api::Meter::Unspecified) => {
                return Err(ApiError::invalid(
                    "meter",
                    "METER_UNSPECIFIED",
                    "must be set",
                ));
            }
            Err(_) => {
                return Err(ApiError::invalid(
                    "meter",
                    request.meter.to_string(),
                    "unknown meter number",
                ));
            }
        };
        let (account, used) = self
            .blocking(move |store| {
                let account = store.account(&account_id)?;
                let month = account
                    .settings
                    .zone
                    .month(account.now(Licensing::real_now()));
                let used = store
                    .meter_totals(&account_id, month)?
                    .get(&meter)
                    .map_or(0, |usage| usage.used);
                Ok((account, used))
            })
            .await?;
        let quota = check_quota(&account.settings, meter, used, request.quantity);
        let zone = &account.settings.zone;
        let next = zone.month(account.now(Self::real_now())).next();
        Ok(api::CheckQuotaResponse {
            allowed: quota.allowed,
            used: quota.used,
            limit: quota.limit,
            remaining: quota.remaining,
            reason: quota.reason,
            resets_at: Some(to_proto::timestamp(zone.start_of(next))),
        })
    }
}
