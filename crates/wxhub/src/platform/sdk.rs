//! What a platform SDK at the gateway is answered from (docs/platform.md#platform-sdks-through-the-gateway):
//! its `api_query_auth` registers the authorizer exactly as the hub's own route does, and its
//! `api_authorizer_token` is answered from the token the hub serves, never by a fetch from WeChat.
//! The SDK holds a [stand-in](super::stand_in) for the refresh token.

use std::sync::Arc;

use super::{Platform, PlatformError};
use crate::kinds::AccountId;
use crate::read::Served;

/// An authorizer as a platform SDK is given it.
pub struct SdkAuthorizer {
    /// The account.
    pub authorizer_appid: String,
    /// The permission sets it granted (`funcscope_category` ids).
    pub func_info: Vec<u32>,
    /// Its access token as the hub serves it; `None` when WeChat gave none (an account that
    /// granted no API rights) or none is served right now.
    pub token: Option<Arc<Served>>,
    /// What the SDK keeps and sends back as `authorizer_refresh_token`.
    pub refresh_stand_in: String,
}

/// Why an SDK's `api_authorizer_token` is not answered with a token.
#[derive(Debug, PartialEq, Eq)]
pub enum SdkRefusal {
    /// No `[[components]]` entry has this appid.
    UnknownComponent,
    /// Not the stand-in of this authorizer of this platform, or the authorizer withdrew: WeChat's
    /// 61023, which no refetch of the component token can change.
    NotAStandIn,
    /// A stand-in the hub issued, but no token is served for the authorizer on this instance
    /// (not learned of yet, or its renewal is failing): the SDK may try again later.
    Unavailable,
}

impl Platform {
    /// An SDK's `api_query_auth`: the code is exchanged and the authorizer registered as by
    /// [`Platform::exchange`] (the `/v1` route's and the push's path), then the SDK is given
    /// the hub's token and the stand-in.
    pub async fn exchange_for_sdk(
        &self,
        component_appid: &str,
        authorization_code: &str,
    ) -> Result<SdkAuthorizer, PlatformError> {
        let view = self.exchange(component_appid, authorization_code).await?;
        let settings = self.settings(component_appid)?;
        let id = AccountId::authorizer(component_appid, &view.authorizer_appid);
        Ok(SdkAuthorizer {
            token: self.served_token(&id),
            refresh_stand_in: self.stand_ins.issue(&settings, &view.authorizer_appid),
            authorizer_appid: view.authorizer_appid,
            func_info: view.func_info,
        })
    }

    /// An SDK's `api_authorizer_token` with `presented` as the refresh token: the token the hub
    /// serves for the authorizer, whatever WeChat's refresh token is by now.
    pub fn authorizer_for_sdk(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
        presented: &str,
    ) -> Result<SdkAuthorizer, SdkRefusal> {
        let settings = self
            .settings(component_appid)
            .map_err(|_| SdkRefusal::UnknownComponent)?;
        if !self
            .stand_ins
            .accepts(&settings, authorizer_appid, presented)
        {
            return Err(SdkRefusal::NotAStandIn);
        }
        let id = AccountId::authorizer(component_appid, authorizer_appid);
        let spec = self.authorizer(&id).ok_or(SdkRefusal::Unavailable)?;
        if spec.revoked {
            return Err(SdkRefusal::NotAStandIn);
        }
        let token = self.served_token(&id).ok_or(SdkRefusal::Unavailable)?;
        Ok(SdkAuthorizer {
            authorizer_appid: spec.authorizer_appid.clone(),
            func_info: spec.func_info,
            token: Some(token),
            refresh_stand_in: self.stand_ins.issue(&settings, authorizer_appid),
        })
    }

    /// The access token served for authorizer `id` now.
    fn served_token(&self, id: &AccountId) -> Option<Arc<Served>> {
        self.read_index.find(id, None).ok()?.slot.load()
    }
}
