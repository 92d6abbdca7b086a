//! ApiKeyService. Management RPCs are for the chatbot's owner or an admin;
//! VerifyApiKey is public (the key is the credential) and is the hot path,
//! whose decision lives in [`crate::verification`] (shared with Envoy's
//! Check). The handlers are here with what the responses say; the request
//! parsing is in [`requests`] and the management operations in
//! [`operations`]; GetApiKeyUsage and GetChatbotUsage are in
//! [`super::usage`].

mod operations;
mod requests;
mod reservations;

use std::sync::Arc;

use bytes::{BufMut, Bytes};
use prost::{EncodeError, Message};
use tonic::Request;

pub use reservations::expire_due_reservations;

pub use operations::{
    create_api_key, delete_api_key, get_api_key, list_api_keys, revoke_api_key, rotate_api_key,
    update_api_key, NewKey, RotatedKey,
};

use super::encoded::{as_message, AnsweredMethod, WriteAnswer};
use super::{convert, usage, AppState, Origin, Rpc};
use crate::db::models::VerificationRecord;
use crate::domain::{
    ApiKeyId, CreateApiKey, GetUsage, LimitScope, ListApiKeys, ReleaseReservation, RotateApiKey,
    SettleReservation, UpdateApiKey, VerifyApiKey,
};
use crate::error::AppError;
use crate::proto::api_key_service_server::ApiKeyService;
use crate::proto::VerifyApiKeyReason;
use crate::proto::{
    CreateApiKeyRequest, CreateApiKeyResponse, DeleteApiKeyRequest, DeleteApiKeyResponse,
    GetApiKeyRequest, GetApiKeyResponse, GetApiKeyUsageRequest, GetApiKeyUsageResponse,
    GetChatbotUsageRequest, GetChatbotUsageResponse, ListApiKeysRequest, ListApiKeysResponse,
    ReleaseReservationRequest, ReleaseReservationResponse, RevokeApiKeyRequest,
    RevokeApiKeyResponse, RotateApiKeyRequest, RotateApiKeyResponse, SettleReservationRequest,
    SettleReservationResponse, UpdateApiKeyRequest, UpdateApiKeyResponse, VerifyApiKeyRequest,
    VerifyApiKeyResponse,
};
use crate::verification::{CreditsLeft, Rejection, Verification};

/// The ApiKeyService implementation.
pub struct ApiKeys(pub Arc<AppState>);

#[tonic::async_trait]
impl ApiKeyService for ApiKeys {
    async fn create_api_key(
        &self,
        request: Request<CreateApiKeyRequest>,
    ) -> Rpc<CreateApiKeyResponse> {
        let parse = CreateApiKey::try_from;
        self.0.serve(request, parse, create_api_key).await
    }

    async fn get_api_key(&self, request: Request<GetApiKeyRequest>) -> Rpc<GetApiKeyResponse> {
        let parse = |message: GetApiKeyRequest| ApiKeyId::parse("id", message.id);
        self.0.serve(request, parse, get_api_key).await
    }

    async fn update_api_key(
        &self,
        request: Request<UpdateApiKeyRequest>,
    ) -> Rpc<UpdateApiKeyResponse> {
        let parse = UpdateApiKey::try_from;
        self.0.serve(request, parse, update_api_key).await
    }

    async fn list_api_keys(
        &self,
        request: Request<ListApiKeysRequest>,
    ) -> Rpc<ListApiKeysResponse> {
        let parse = ListApiKeys::try_from;
        self.0.serve(request, parse, list_api_keys).await
    }

    async fn revoke_api_key(
        &self,
        request: Request<RevokeApiKeyRequest>,
    ) -> Rpc<RevokeApiKeyResponse> {
        let parse = |message: RevokeApiKeyRequest| ApiKeyId::parse("id", message.id);
        self.0.serve(request, parse, revoke_api_key).await
    }

    async fn rotate_api_key(
        &self,
        request: Request<RotateApiKeyRequest>,
    ) -> Rpc<RotateApiKeyResponse> {
        let parse = RotateApiKey::try_from;
        self.0.serve(request, parse, rotate_api_key).await
    }

    async fn delete_api_key(
        &self,
        request: Request<DeleteApiKeyRequest>,
    ) -> Rpc<DeleteApiKeyResponse> {
        let parse = |message: DeleteApiKeyRequest| ApiKeyId::parse("id", message.id);
        self.0.serve(request, parse, delete_api_key).await
    }

    /// The server serves VerifyApiKey through [`VerifyMethod`]; this is
    /// the same answer as a message.
    async fn verify_api_key(
        &self,
        request: Request<VerifyApiKeyRequest>,
    ) -> Rpc<VerifyApiKeyResponse> {
        as_message(verification_answer(&self.0, request).await)
    }

    async fn settle_reservation(
        &self,
        request: Request<SettleReservationRequest>,
    ) -> Rpc<SettleReservationResponse> {
        let parse = SettleReservation::try_from;
        self.0
            .serve_public(request, parse, reservations::settle_reservation)
            .await
    }

    async fn release_reservation(
        &self,
        request: Request<ReleaseReservationRequest>,
    ) -> Rpc<ReleaseReservationResponse> {
        let parse = |message| Ok::<_, AppError>(ReleaseReservation::from(message));
        self.0
            .serve_public(request, parse, reservations::release_reservation)
            .await
    }

    async fn get_api_key_usage(
        &self,
        request: Request<GetApiKeyUsageRequest>,
    ) -> Rpc<GetApiKeyUsageResponse> {
        let parse = GetUsage::try_from;
        self.0.serve(request, parse, usage::get_api_key_usage).await
    }

    async fn get_chatbot_usage(
        &self,
        request: Request<GetChatbotUsageRequest>,
    ) -> Rpc<GetChatbotUsageResponse> {
        let parse = GetUsage::try_from;
        self.0.serve(request, parse, usage::get_chatbot_usage).await
    }
}

impl From<NewKey> for CreateApiKeyResponse {
    fn from(created: NewKey) -> Self {
        Self {
            api_key: Some(created.api_key.into()),
            key: created.secret.expose().to_owned(),
        }
    }
}

impl From<RotatedKey> for RotateApiKeyResponse {
    fn from(rotated: RotatedKey) -> Self {
        Self {
            api_key: Some(rotated.api_key.into()),
            key: rotated.secret.expose().to_owned(),
            previous_api_key: Some(rotated.previous.into()),
        }
    }
}

impl From<Rejection> for VerifyApiKeyReason {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::Malformed => VerifyApiKeyReason::Malformed,
            Rejection::NotFound => VerifyApiKeyReason::NotFound,
            Rejection::Revoked => VerifyApiKeyReason::Revoked,
            Rejection::Expired => VerifyApiKeyReason::Expired,
            Rejection::RateLimited { .. } => VerifyApiKeyReason::RateLimited,
            Rejection::UsageExceeded { .. } => VerifyApiKeyReason::UsageExceeded,
            Rejection::AddressNotAllowed => VerifyApiKeyReason::AddressNotAllowed,
            Rejection::InsufficientPermissions { .. } => {
                VerifyApiKeyReason::InsufficientPermissions
            }
        }
    }
}

/// VerifyApiKey's answer, written as bytes (see [`super::encoded`]): for a
/// VALID answer, the key's part, encoded once while its record is cached,
/// then what this call adds; for any other, the whole message.
pub struct VerifyAnswer {
    key_part: Option<Bytes>,
    call_part: VerifyApiKeyResponse,
}

impl WriteAnswer for VerifyAnswer {
    fn write(self, buf: &mut impl BufMut) -> Result<(), EncodeError> {
        if let Some(key_part) = &self.key_part {
            buf.put_slice(key_part);
        }
        self.call_part.encode(buf)
    }
}

/// The path [`VerifyMethod`] serves.
pub const VERIFY_API_KEY_PATH: &str = "/chatbot.v1.ApiKeyService/VerifyApiKey";

/// VerifyApiKey as the server serves it: answers written as bytes.
#[derive(Clone)]
pub struct VerifyMethod(pub Arc<AppState>);

impl AnsweredMethod for VerifyMethod {
    type Request = VerifyApiKeyRequest;
    type Answer = VerifyAnswer;

    async fn call(&self, request: Request<VerifyApiKeyRequest>) -> Rpc<VerifyAnswer> {
        verification_answer(&self.0, request).await
    }
}

/// VerifyApiKey's answer to `request`, however it is then sent.
async fn verification_answer(
    state: &AppState,
    request: Request<VerifyApiKeyRequest>,
) -> Rpc<VerifyAnswer> {
    let verify = async |state: &AppState, _: &Origin, cmd| state.verifier.verify(cmd).await;
    let parse = VerifyApiKey::try_from;
    state.serve_public(request, parse, verify).await
}

/// What a VALID answer says about the key itself: the same at every call
/// while the key's record is cached.
// owner_id stays filled in for the clients that still read it.
#[allow(deprecated)]
fn key_part(record: &VerificationRecord) -> VerifyApiKeyResponse {
    let grants = record.grants.as_deref();
    VerifyApiKeyResponse {
        valid: true,
        reason: VerifyApiKeyReason::Valid.into(),
        api_key_id: record.id.0,
        chatbot_id: record.chatbot_id.to_string(),
        owner_id: record.owner_id.to_string(),
        organization_id: record.organization_id.to_string(),
        llm_endpoint_url: record.llm_endpoint_url.clone(),
        permissions: grants.map_or_else(Vec::new, |grants| {
            grants
                .permissions
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect()
        }),
        metadata: grants.map_or_else(Default::default, |grants| {
            grants
                .metadata
                .entries()
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect()
        }),
        external_id: grants
            .and_then(|grants| grants.external_id.clone())
            .unwrap_or_default(),
        ..Default::default()
    }
}

impl From<Verification> for VerifyAnswer {
    fn from(verification: Verification) -> Self {
        match verification {
            Verification::Valid {
                record,
                credits_remaining,
                reservation,
            } => {
                let key_part = record
                    .encoded
                    .verify
                    .get_or_init(|| key_part(&record).encode_to_vec().into());
                VerifyAnswer {
                    key_part: Some(key_part.clone()),
                    call_part: VerifyApiKeyResponse {
                        credits_remaining: credits_remaining.key,
                        organization_credits_remaining: credits_remaining.organization,
                        reservation_expire_time: reservation
                            .as_ref()
                            .map(|reservation| convert::timestamp(reservation.expires_at)),
                        reservation_id: reservation
                            .map(|reservation| reservation.id.expose().to_owned())
                            .unwrap_or_default(),
                        ..Default::default()
                    },
                }
            }
            Verification::Refused(_, reason) | Verification::Invalid(reason) => VerifyAnswer {
                key_part: None,
                call_part: refusal(reason),
            },
        }
    }
}

/// A refusal's whole answer: why, and what the caller may do about it.
fn refusal(reason: Rejection) -> VerifyApiKeyResponse {
    let missing_permissions = match &reason {
        Rejection::InsufficientPermissions { missing } => missing.clone(),
        _ => Vec::new(),
    };
    let (left, reset_time, scope) = match reason {
        Rejection::RateLimited { retry_at, scope } => {
            (CreditsLeft::default(), Some(retry_at), Some(scope))
        }
        Rejection::UsageExceeded {
            remaining,
            next_refill,
            scope,
        } => {
            let left = match scope {
                LimitScope::ApiKey => CreditsLeft {
                    key: Some(remaining),
                    organization: None,
                },
                LimitScope::Organization => CreditsLeft {
                    key: None,
                    organization: Some(remaining),
                },
            };
            (left, next_refill, Some(scope))
        }
        _ => (CreditsLeft::default(), None, None),
    };
    VerifyApiKeyResponse {
        valid: false,
        reason: VerifyApiKeyReason::from(reason).into(),
        credits_remaining: left.key,
        organization_credits_remaining: left.organization,
        limit_scope: convert::limit_scope_message(scope).into(),
        reset_time: reset_time.map(convert::timestamp),
        missing_permissions,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use tonic::server::NamedService;

    use super::*;
    use crate::proto::api_key_service_server::ApiKeyServiceServer;
    use crate::proto::RpcRequest;

    #[test]
    fn the_verify_path_is_the_generated_servers() {
        let path = format!(
            "/{}/{}",
            ApiKeyServiceServer::<ApiKeys>::NAME,
            VerifyApiKeyRequest::METHOD
        );
        assert_eq!(VERIFY_API_KEY_PATH, path);
    }
}
