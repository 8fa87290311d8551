//! `licensing.v1.LicensingService`: thin handlers that validate and convert (`from_proto`), call
//! the domain, and convert back (`to_proto`).

use std::{pin::Pin, sync::Arc};

use futures::Stream;
use licensing_core::{PriceList, RecordingRetention, resolve};
use tonic::{Request, Response, Status};

use crate::{
    api::{self, licensing_service_server::LicensingService},
    convert::{from_proto, to_proto},
    error::{ApiError, status},
};

/// A server-streaming response.
type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The handlers of `LicensingService`.
#[derive(Debug, Clone)]
pub struct Licensing {
    prices: Arc<PriceList>,
}

impl Licensing {
    /// Handlers resolving prices from `prices`.
    pub fn new(prices: Arc<PriceList>) -> Self {
        Licensing { prices }
    }
}

/// The answer of a method that is part of the contract but not served yet.
fn not_yet(method: &'static str) -> Status {
    status(ApiError::Unimplemented(method))
}

#[tonic::async_trait]
impl LicensingService for Licensing {
    async fn resolve_member(
        &self,
        request: Request<api::ResolveMemberRequest>,
    ) -> Result<Response<api::ResolveMemberResponse>, Status> {
        let request = request.into_inner();
        let settings = from_proto::member_settings(request.settings).map_err(status)?;
        if request.apply {
            return Err(not_yet(
                "ResolveMember with apply is not available in this version yet: omit apply for a preview",
            ));
        }
        if !request.account_id.is_empty() {
            return Err(not_yet(
                "ResolveMember previews against a stored account are not available in this version yet: omit account_id",
            ));
        }
        // Without an account, the preview prices recording at the default retention.
        let resolution = resolve(&settings, RecordingRetention::default(), &self.prices);
        Ok(Response::new(api::ResolveMemberResponse {
            licence: Some(to_proto::licence(&resolution, &self.prices)),
            applied: false,
            member: None,
        }))
    }

    async fn get_member(
        &self,
        _: Request<api::GetMemberRequest>,
    ) -> Result<Response<api::GetMemberResponse>, Status> {
        Err(not_yet("GetMember is not available in this version yet"))
    }

    async fn list_members(
        &self,
        _: Request<api::ListMembersRequest>,
    ) -> Result<Response<api::ListMembersResponse>, Status> {
        Err(not_yet("ListMembers is not available in this version yet"))
    }

    async fn remove_member(
        &self,
        _: Request<api::RemoveMemberRequest>,
    ) -> Result<Response<api::RemoveMemberResponse>, Status> {
        Err(not_yet("RemoveMember is not available in this version yet"))
    }

    async fn create_account(
        &self,
        _: Request<api::CreateAccountRequest>,
    ) -> Result<Response<api::CreateAccountResponse>, Status> {
        Err(not_yet(
            "CreateAccount is not available in this version yet",
        ))
    }

    async fn get_account(
        &self,
        _: Request<api::GetAccountRequest>,
    ) -> Result<Response<api::GetAccountResponse>, Status> {
        Err(not_yet("GetAccount is not available in this version yet"))
    }

    async fn update_account(
        &self,
        _: Request<api::UpdateAccountRequest>,
    ) -> Result<Response<api::UpdateAccountResponse>, Status> {
        Err(not_yet(
            "UpdateAccount is not available in this version yet",
        ))
    }

    async fn advance_clock(
        &self,
        _: Request<api::AdvanceClockRequest>,
    ) -> Result<Response<api::AdvanceClockResponse>, Status> {
        Err(not_yet("AdvanceClock is not available in this version yet"))
    }

    async fn get_inventory(
        &self,
        _: Request<api::GetInventoryRequest>,
    ) -> Result<Response<api::GetInventoryResponse>, Status> {
        Err(not_yet("GetInventory is not available in this version yet"))
    }

    async fn adjust_inventory(
        &self,
        _: Request<api::AdjustInventoryRequest>,
    ) -> Result<Response<api::AdjustInventoryResponse>, Status> {
        Err(not_yet(
            "AdjustInventory is not available in this version yet",
        ))
    }

    type GetUsageStream = ResponseStream<api::GetUsageResponse>;

    async fn get_usage(
        &self,
        _: Request<api::GetUsageRequest>,
    ) -> Result<Response<Self::GetUsageStream>, Status> {
        Err(not_yet("GetUsage is not available in this version yet"))
    }

    type ReadAuditTrailStream = ResponseStream<api::ReadAuditTrailResponse>;

    async fn read_audit_trail(
        &self,
        _: Request<api::ReadAuditTrailRequest>,
    ) -> Result<Response<Self::ReadAuditTrailStream>, Status> {
        Err(not_yet(
            "ReadAuditTrail is not available in this version yet",
        ))
    }

    async fn get_statement(
        &self,
        _: Request<api::GetStatementRequest>,
    ) -> Result<Response<api::GetStatementResponse>, Status> {
        Err(not_yet("GetStatement is not available in this version yet"))
    }

    async fn check_quota(
        &self,
        _: Request<api::CheckQuotaRequest>,
    ) -> Result<Response<api::CheckQuotaResponse>, Status> {
        Err(not_yet("CheckQuota is not available in this version yet"))
    }
}
