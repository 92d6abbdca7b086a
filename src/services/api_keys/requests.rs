//! How ApiKeyService's requests parse into domain commands (every field
//! violation at once).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::super::convert::{self, mask_paths};
use super::super::required;
use crate::domain::{
    parse_actual_cost, parse_client_address, parse_cost, parse_external_id, parse_permissions,
    AllowedNetworks, ApiKeyFilter, ApiKeyId, ApiKeySecret, ChatbotId, CreateApiKey, DisplayText,
    KeyGrants, ListApiKeys, Metadata, PageRequest, ReleaseReservation, ReservationToken,
    RotateApiKey, SettleReservation, UpdateApiKey, VerifyApiKey,
};
use crate::error::{parsed, AppError, AppResult, FieldViolation, Violations};
use crate::proto;

/// Longest grace period RotateApiKey grants.
const MAX_GRACE_PERIOD: Duration = Duration::from_secs(30 * 24 * 3600);
const MAX_DISPLAY_NAME_CHARS: usize = 100;

impl TryFrom<proto::CreateApiKeyRequest> for CreateApiKey {
    type Error = AppError;

    fn try_from(request: proto::CreateApiKeyRequest) -> AppResult<Self> {
        let now = Utc::now();
        let expires_at = optional(request.expire_time.as_ref(), |time| {
            future_time("expire_time", time, now)
        });
        let (
            chatbot_id,
            display_name,
            expires_at,
            rate_limit,
            credits,
            networks,
            permissions,
            rest,
            request_id,
        ) = parsed((
            ChatbotId::parse("chatbot_id", &request.chatbot_id),
            DisplayText::parse(
                "display_name",
                &request.display_name,
                MAX_DISPLAY_NAME_CHARS,
            ),
            expires_at,
            optional(request.rate_limit.as_ref(), |limit| {
                convert::parse_rate_limit("rate_limit", limit)
            }),
            optional(request.credits.as_ref(), |credits| {
                convert::parse_credits("credits", credits)
            }),
            AllowedNetworks::parse("allowed_networks", &request.allowed_networks),
            parse_permissions("permissions", &request.permissions),
            Metadata::parse("metadata", &request.metadata).and_then(|metadata| {
                parse_external_id("external_id", &request.external_id).map(|id| (metadata, id))
            }),
            convert::create_request_id(
                &request.request_id,
                &proto::CreateApiKeyRequest {
                    request_id: String::new(),
                    metadata: Default::default(),
                    ..request.clone()
                },
                &request.metadata.iter().collect::<Vec<_>>(),
            ),
        ))?;
        let (metadata, external_id) = rest;
        Ok(Self {
            chatbot_id,
            display_name,
            expires_at,
            rate_limit,
            credits,
            grants: KeyGrants {
                networks,
                permissions,
                metadata,
                external_id,
            },
            request: request_id,
        })
    }
}

impl TryFrom<proto::ListApiKeysRequest> for ListApiKeys {
    type Error = AppError;

    /// The page token is bound to every filter of the request.
    fn try_from(request: proto::ListApiKeysRequest) -> AppResult<Self> {
        let expire_before = request
            .expire_before
            .as_ref()
            .map(|time| convert::parse_timestamp("expire_before", time))
            .transpose();
        let filter = format!(
            "api_keys|chatbot={}|revoked={}|external_id={:?}|before={}",
            request.chatbot_id,
            request.show_revoked,
            request.external_id,
            expire_before
                .as_ref()
                .ok()
                .copied()
                .flatten()
                .map_or(-1, |t| t.timestamp_micros()),
        );
        let (chatbot_id, expire_before, external_id, page) = parsed((
            ChatbotId::parse("chatbot_id", &request.chatbot_id),
            expire_before,
            parse_external_id("external_id", &request.external_id),
            PageRequest::parse(request.page_size, &request.page_token, &filter),
        ))?;
        Ok(Self {
            filter: ApiKeyFilter {
                chatbot_id,
                show_revoked: request.show_revoked,
                expire_before,
                external_id,
            },
            page,
        })
    }
}

impl TryFrom<proto::RotateApiKeyRequest> for RotateApiKey {
    type Error = AppError;

    fn try_from(request: proto::RotateApiKeyRequest) -> AppResult<Self> {
        let grace_period = match &request.grace_period {
            None => Ok(Duration::ZERO),
            Some(value) => convert::parse_duration("grace_period", value).and_then(|grace| {
                if grace > MAX_GRACE_PERIOD {
                    Err(FieldViolation::new(
                        "grace_period",
                        "must be at most 30 days",
                    ))
                } else {
                    Ok(grace)
                }
            }),
        };
        let rest = proto::RotateApiKeyRequest {
            request_id: String::new(),
            ..request.clone()
        };
        let (id, grace_period, request) = parsed((
            ApiKeyId::parse("id", request.id),
            grace_period,
            convert::create_request_id(&request.request_id, &rest, &[]),
        ))?;
        Ok(Self {
            id,
            grace_period,
            request,
        })
    }
}

/// An optional field of a request, parsed if present.
fn optional<T, V>(
    field: Option<&T>,
    parse: impl FnOnce(&T) -> Result<V, FieldViolation>,
) -> Result<Option<V>, FieldViolation> {
    field.map(parse).transpose()
}

/// A time a request sets, which must be in the future.
fn future_time(
    field: &str,
    time: &prost_types::Timestamp,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, FieldViolation> {
    match convert::parse_timestamp(field, time)? {
        time if time <= now => Err(FieldViolation::new(field, "must be in the future")),
        time => Ok(time),
    }
}

impl TryFrom<proto::UpdateApiKeyRequest> for UpdateApiKey {
    type Error = AppError;

    /// A path in the mask whose field is unset clears it.
    fn try_from(request: proto::UpdateApiKeyRequest) -> AppResult<Self> {
        let key = required(request.api_key, "api_key")?;
        let mut violations = Violations::new();
        if request
            .update_mask
            .as_ref()
            .is_none_or(|mask| mask.paths.is_empty())
            && request.credits_to_add == 0
        {
            violations.push(FieldViolation::new(
                "update_mask",
                "name at least one field to change",
            ));
        }
        let paths = mask_paths(
            request.update_mask.as_ref(),
            &[
                &["display_name", "expire_time"][..],
                &convert::LIMIT_PATHS[..],
                &["allowed_networks", "permissions", "metadata", "external_id"],
            ]
            .concat(),
            &[
                "id",
                "chatbot_id",
                "key_prefix",
                "revoked",
                "create_time",
                "revoke_time",
                "last_used_time",
                "credits.next_refill_time",
                "etag",
            ],
            &mut violations,
        );
        let mut cmd = UpdateApiKey {
            id: ApiKeyId(key.id),
            display_name: None,
            expires_at: None,
            limits: convert::parse_limits_update(
                convert::LimitsRequest {
                    resource: "api_key",
                    rate_limit: key.rate_limit.as_ref(),
                    credits: key.credits.as_ref(),
                    credits_to_add: request.credits_to_add,
                },
                &paths,
                &mut violations,
            ),
            networks: None,
            permissions: None,
            metadata: None,
            external_id: None,
            etag: convert::requested_etag(key.etag.clone()),
        };
        violations.check(ApiKeyId::parse("api_key.id", key.id).map(|id| cmd.id = id));
        let now = Utc::now();
        for path in paths {
            match path {
                "display_name" => violations.check(
                    DisplayText::parse(
                        "api_key.display_name",
                        &key.display_name,
                        MAX_DISPLAY_NAME_CHARS,
                    )
                    .map(|name| cmd.display_name = Some(name)),
                ),
                "expire_time" => violations.check(
                    optional(key.expire_time.as_ref(), |time| {
                        future_time("api_key.expire_time", time, now)
                    })
                    .map(|time| cmd.expires_at = Some(time)),
                ),
                "allowed_networks" => violations.check(
                    AllowedNetworks::parse("api_key.allowed_networks", &key.allowed_networks)
                        .map(|networks| cmd.networks = Some(networks)),
                ),
                "permissions" => violations.check(
                    parse_permissions("api_key.permissions", &key.permissions)
                        .map(|permissions| cmd.permissions = Some(permissions)),
                ),
                "metadata" => violations.check(
                    Metadata::parse("api_key.metadata", &key.metadata)
                        .map(|metadata| cmd.metadata = Some(metadata)),
                ),
                "external_id" => violations.check(
                    parse_external_id("api_key.external_id", &key.external_id)
                        .map(|id| cmd.external_id = Some(id)),
                ),
                _ => {}
            }
        }
        violations.finish()?;
        Ok(cmd)
    }
}

impl TryFrom<proto::VerifyApiKeyRequest> for VerifyApiKey {
    type Error = AppError;

    /// A key that cannot be ours is an answer (malformed), not an error; a
    /// cost out of range is.
    fn try_from(request: proto::VerifyApiKeyRequest) -> AppResult<Self> {
        let (cost, client_address, required_permissions) = parsed((
            parse_cost("cost", request.cost),
            parse_client_address("client_address", &request.client_address),
            parse_permissions("required_permissions", &request.required_permissions),
        ))?;
        Ok(Self {
            cost,
            client_address,
            required_permissions,
            secret: ApiKeySecret::parse(&request.key),
            reserve: request.reserve,
        })
    }
}

impl TryFrom<proto::SettleReservationRequest> for SettleReservation {
    type Error = AppError;

    fn try_from(request: proto::SettleReservationRequest) -> AppResult<Self> {
        let actual_cost = parsed((parse_actual_cost("actual_cost", request.actual_cost),))?.0;
        Ok(Self {
            reservation: ReservationToken::parse_lenient(&request.reservation_id),
            actual_cost,
        })
    }
}

impl From<proto::ReleaseReservationRequest> for ReleaseReservation {
    fn from(request: proto::ReleaseReservationRequest) -> Self {
        Self {
            reservation: ReservationToken::parse_lenient(&request.reservation_id),
        }
    }
}
