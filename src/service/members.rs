//! ResolveMember (preview and apply), GetMember, ListMembers, RemoveMember.

use licensing_core::{MemberSettings, RecordingRetention, resolve};
use tonic::Request;

use super::{CommittedChange, Licensing, Use};
use crate::{
    api,
    convert::{from_proto, to_proto},
    error::ApiError,
};

/// Members per page unless the caller asks for fewer or more.
const DEFAULT_PAGE_SIZE: u32 = 100;
/// The largest page.
const MAX_PAGE_SIZE: u32 = 1000;

impl Licensing {
    /// A preview's answer: the licence, nothing written.
    fn preview(
        &self,
        settings: &MemberSettings,
        retention: RecordingRetention,
    ) -> api::ResolveMemberResponse {
        let resolution = resolve(settings, retention, &self.prices);
        api::ResolveMemberResponse {
            licence: Some(to_proto::licence(&resolution, &self.prices)),
            applied: false,
            member: None,
        }
    }

    pub(super) async fn resolve_member(
        &self,
        request: Request<api::ResolveMemberRequest>,
    ) -> Result<api::ResolveMemberResponse, ApiError> {
        let (caller, request) = self.caller(request)?;
        let settings = from_proto::member_settings(request.settings)?;
        if request.account_id.is_empty() {
            if request.apply {
                return Err(ApiError::invalid(
                    "account_id",
                    "\"\"",
                    "is required with apply",
                ));
            }
            // Without an account, the preview prices recording at the default retention.
            return Ok(self.preview(&settings, RecordingRetention::default()));
        }
        let account_id = from_proto::account_id(&request.account_id)?.to_owned();
        let used = if request.apply { Use::Write } else { Use::Read };
        Self::authorize(&caller, "LicensingService/ResolveMember", used, &account_id)?;
        if !request.apply {
            let account = self
                .blocking(move |store| store.account(&account_id))
                .await?;
            return Ok(self.preview(&settings, account.settings.recording_retention));
        }
        let member_id = from_proto::member_id(&request.member_id)?.to_owned();
        let (prices, now) = (self.prices.clone(), Self::real_now());
        let applied = self
            .write(move |store| {
                store.apply_member(
                    &account_id,
                    &member_id,
                    &settings,
                    now,
                    &prices,
                    &caller.actor(),
                )
            })
            .await?;
        self.announce(
            &applied.account.id,
            CommittedChange::Member(applied.member.member_id.clone()),
        );
        let resolution = resolve(
            &applied.member.settings,
            applied.account.settings.recording_retention,
            &self.prices,
        );
        Ok(api::ResolveMemberResponse {
            licence: Some(to_proto::licence(&resolution, &self.prices)),
            applied: true,
            member: Some(to_proto::member(
                &applied.account,
                &applied.member,
                &self.prices,
            )),
        })
    }

    pub(super) async fn get_member(
        &self,
        request: Request<api::GetMemberRequest>,
    ) -> Result<api::GetMemberResponse, ApiError> {
        let (caller, request) = self.caller(request)?;
        let account_id = from_proto::account_id(&request.account_id)?.to_owned();
        Self::authorize(
            &caller,
            "LicensingService/GetMember",
            Use::Read,
            &account_id,
        )?;
        let member_id = from_proto::member_id(&request.member_id)?.to_owned();
        let (account, member) = self
            .blocking(move |store| {
                Ok((
                    store.account(&account_id)?,
                    store.member(&account_id, &member_id)?,
                ))
            })
            .await?;
        Ok(api::GetMemberResponse {
            member: Some(to_proto::member(&account, &member, &self.prices)),
        })
    }

    pub(super) async fn list_members(
        &self,
        request: Request<api::ListMembersRequest>,
    ) -> Result<api::ListMembersResponse, ApiError> {
        let (caller, request) = self.caller(request)?;
        let account_id = from_proto::account_id(&request.account_id)?.to_owned();
        Self::authorize(
            &caller,
            "LicensingService/ListMembers",
            Use::Read,
            &account_id,
        )?;
        let tiers = from_proto::tiers("tiers", &request.tiers)?;
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n > MAX_PAGE_SIZE => {
                return Err(ApiError::invalid(
                    "page_size",
                    n.to_string(),
                    format!("must be at most {MAX_PAGE_SIZE}"),
                ));
            }
            n => n,
        } as usize;
        // The token is the last member id of the previous page: ids are plain, so it is one too.
        let after = match request.page_token.as_str() {
            "" => None,
            token => Some(
                from_proto::member_id(token)
                    .map_err(|_| {
                        ApiError::invalid("page_token", format!("{token:?}"), "is not a page token")
                    })?
                    .to_owned(),
            ),
        };
        let prices = self.prices.clone();
        let (account, members, more) = self
            .blocking(move |store| {
                let account = store.account(&account_id)?;
                let retention = account.settings.recording_retention;
                let mut members = Vec::with_capacity(page_size);
                let mut more = false;
                for member in store.members(&account_id, after.as_deref()) {
                    let member = member?;
                    if !tiers.is_empty()
                        && !tiers.contains(&resolve(&member.settings, retention, &prices).tier)
                    {
                        continue;
                    }
                    if members.len() == page_size {
                        more = true;
                        break;
                    }
                    members.push(member);
                }
                Ok((account, members, more))
            })
            .await?;
        let next_page_token = match (more, members.last()) {
            (true, Some(last)) => last.member_id.clone(),
            _ => String::new(),
        };
        Ok(api::ListMembersResponse {
            members: members
                .iter()
                .map(|m| to_proto::member(&account, m, &self.prices))
                .collect(),
            next_page_token,
        })
    }

    pub(super) async fn remove_member(
        &self,
        request: Request<api::RemoveMemberRequest>,
    ) -> Result<api::RemoveMemberResponse, ApiError> {
        let (caller, request) = self.caller(request)?;
        let account_id = from_proto::account_id(&request.account_id)?.to_owned();
        Self::authorize(
            &caller,
            "LicensingService/RemoveMember",
            Use::Write,
            &account_id,
        )?;
        let member_id = from_proto::member_id(&request.member_id)?.to_owned();
        let (prices, now) = (self.prices.clone(), Self::real_now());
        let (removed, account) = self
            .write(move |store| {
                store.remove_member(&account_id, &member_id, now, &prices, &caller.actor())
            })
            .await?;
        self.announce(
            &account.id,
            CommittedChange::Removed(removed.member_id.clone()),
        );
        Ok(api::RemoveMemberResponse {
            removed: Some(to_proto::member(&account, &removed, &self.prices)),
        })
    }
}
