//! AuditService: the audit log, newest first. Admins see every event; a
//! user sees the events on their own account and in the organizations they
//! belong to, except refused attempts by others; a viewer of an
//! organization sees others' events there without their email. The events are written by the operations
//! that make the changes, in their own transactions ([`AppState::write`]).

use std::sync::Arc;

use tonic::Request;

use super::convert::{self, timestamp};
use super::{AppState, Origin, Rpc};
use crate::auth::ownership;
use crate::auth::{Caller, Principal};
use crate::db::models::{AuditActor, AuditEvent, Member};
use crate::domain::{
    AuditAction, AuditFilter, AuditRecord, AuditViewer, ListAuditEvents, OrgAction, OrgRole,
    OrganizationId, Page, PageRequest, TargetType, UserId,
};
use crate::error::{parsed, AppError, AppResult, FieldViolation};
use crate::proto::audit_service_server::AuditService;
use crate::proto::{self, AuditOutcome, ListAuditEventsRequest, ListAuditEventsResponse};

/// The AuditService implementation.
pub struct Audit(pub Arc<AppState>);

#[tonic::async_trait]
impl AuditService for Audit {
    async fn list_audit_events(
        &self,
        request: Request<ListAuditEventsRequest>,
    ) -> Rpc<ListAuditEventsResponse> {
        let parse = ListAuditEvents::parse;
        self.0.serve(request, parse, list_audit_events).await
    }
}

/// Records a refused attempt (repeats within the hour share one event).
/// Outside any transaction: the refusal is the answer whatever happens
/// here, so a failure to record it is logged, not returned.
pub async fn record_refusal(state: &AppState, actor: &AuditActor, record: &AuditRecord) {
    let recorded = async {
        let mut conn = state.db.conn().await?;
        AuditEvent::record_refusal(&mut conn, actor, record).await?;
        Ok::<_, AppError>(())
    }
    .await;
    if let Err(error) = recorded {
        tracing::warn!(
            action = record.action.name(),
            error = %error,
            "could not record a refused attempt in the audit log"
        );
    }
}

/// A signed-in caller (a person or a service account) as the actor.
pub fn actor(caller: &Caller) -> AuditActor {
    AuditActor {
        user: caller.user_id(),
        email: caller.email.clone(),
        service_account: caller
            .service_account()
            .map(|account| (account.id, account.name.to_string())),
        command: None,
        request_id: caller.request_id.as_ref().map(|id| id.0.to_string()),
        address: caller.address,
    }
}

/// The actor of a public RPC: its signed-in caller, if any, else `user`
/// acting for themselves (signing up), or nobody known.
pub fn public_actor(origin: &Origin, user: Option<UserId>) -> AuditActor {
    match &origin.caller {
        Some(caller) => actor(caller),
        None => AuditActor {
            user,
            ..acting_for_themselves(origin, None)
        },
    }
}

/// `user` acting for themselves on a public RPC (logging in), whatever
/// token the call carried: the call's request id and address.
pub fn acting_for_themselves(origin: &Origin, user: impl Into<Option<UserId>>) -> AuditActor {
    AuditActor {
        user: user.into(),
        email: None,
        service_account: None,
        command: None,
        request_id: origin.request_id.as_ref().map(|id| id.0.to_string()),
        address: origin.address,
    }
}

/// An optional text field: parsed unless empty.
fn optional_text<T>(
    field: &str,
    value: &str,
    parse: impl FnOnce(&str, &str) -> Result<T, FieldViolation>,
) -> Result<Option<T>, FieldViolation> {
    (!value.is_empty()).then(|| parse(field, value)).transpose()
}

impl ListAuditEvents {
    /// A user's listing shows only what they may see.
    pub fn parse(request: ListAuditEventsRequest, caller: &Caller) -> AppResult<Self> {
        let time = |field: &str, time: Option<&prost_types::Timestamp>| {
            time.map(|time| convert::parse_timestamp(field, time))
                .transpose()
        };
        let filter = format!(
            "audit|action={}|actor={}|type={}|target={}|start={:?}|end={:?}|organization={}",
            request.action,
            request.actor_user_id,
            request.target_type,
            request.target_id,
            request.start_time.as_ref().map(|t| (t.seconds, t.nanos)),
            request.end_time.as_ref().map(|t| (t.seconds, t.nanos)),
            request.organization_id,
        );
        let target_id = if request.target_id.is_empty() {
            Ok(None)
        } else if request.target_type.is_empty() {
            Err(FieldViolation::new(
                "target_type",
                "is required with target_id",
            ))
        } else if request.target_id.len() > 64 {
            Err(FieldViolation::new(
                "target_id",
                "must be at most 64 characters",
            ))
        } else {
            Ok(Some(request.target_id.clone()))
        };
        let (organization, action, actor, target_type, target_id, start, end, page) = parsed((
            optional_text(
                "organization_id",
                &request.organization_id,
                OrganizationId::parse,
            ),
            optional_text("action", &request.action, AuditAction::parse),
            optional_text("actor_user_id", &request.actor_user_id, UserId::parse),
            optional_text("target_type", &request.target_type, TargetType::parse),
            target_id,
            time("start_time", request.start_time.as_ref()),
            time("end_time", request.end_time.as_ref()),
            PageRequest::parse(request.page_size, &request.page_token, &filter),
        ))?;
        Ok(Self {
            filter: AuditFilter {
                action,
                actor,
                target_type,
                target_id,
                start,
                end,
                organization,
                viewer: match &caller.principal {
                    _ if caller.is_admin() => AuditViewer::Admin,
                    Principal::User(user) => AuditViewer::User(*user),
                    Principal::ServiceAccount(account) => AuditViewer::ServiceAccount {
                        id: account.id,
                        organization: account.organization,
                    },
                },
            },
            page,
        })
    }
}

/// A client address is personal data of whoever called from it: only
/// admins and the actor themselves see it. An email is shown to the
/// organization's owners and editors, not to its viewers.
pub async fn list_audit_events(
    state: &AppState,
    caller: &Caller,
    cmd: ListAuditEvents,
) -> AppResult<Page<AuditEvent>> {
    if let Some(organization) = cmd.filter.organization {
        ownership::require(&state.memberships, caller, organization, OrgAction::View).await?;
    }
    let mut conn = state.db.conn().await?;
    let mut events = AuditEvent::list(&mut conn, &cmd.filter, &cmd.page)
        .await
        .map_err(AppError::from)?;
    // The viewer's roles, and who the viewer is as an actor.
    let (roles, me, my_account) = match (&cmd.filter.viewer, caller.service_account()) {
        (AuditViewer::User(user), _) => {
            (Member::roles_of(&mut conn, *user).await?, Some(*user), None)
        }
        (AuditViewer::ServiceAccount { .. }, Some(account)) => (
            vec![(account.organization, account.role)],
            None,
            Some(account.id),
        ),
        _ => return Ok(cmd.page.page(events, AuditEvent::cursor)),
    };
    let viewer_in = |organization: Option<OrganizationId>| {
        roles
            .iter()
            .any(|&(id, role)| Some(id) == organization && role == OrgRole::Viewer)
    };
    for event in &mut events {
        let own = (me.is_some() && event.actor_user_id == me)
            || (my_account.is_some() && event.actor_service_account_id == my_account);
        if !own {
            event.client_address = None;
            if viewer_in(event.organization_id) {
                event.actor_email = None;
            }
        }
    }
    Ok(cmd.page.page(events, AuditEvent::cursor))
}

impl From<AuditEvent> for proto::AuditEvent {
    fn from(event: AuditEvent) -> Self {
        let changes = event
            .changes()
            .into_iter()
            .map(|change| proto::AuditChange {
                field: change.field,
                old_value: change.old.unwrap_or_default(),
                new_value: change.new.unwrap_or_default(),
            })
            .collect();
        let outcome = match event.outcome.as_str() {
            "succeeded" => AuditOutcome::Succeeded,
            "denied" => AuditOutcome::Denied,
            _ => AuditOutcome::Unspecified,
        };
        #[allow(deprecated)] // time, for the clients that still read it
        proto::AuditEvent {
            id: event.id,
            time: Some(timestamp(event.occurred_at)),
            create_time: Some(timestamp(event.occurred_at)),
            action: event.action,
            actor: Some(proto::AuditActor {
                user_id: event
                    .actor_user_id
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
                email: event.actor_email.unwrap_or_default(),
                command: event.actor_command.unwrap_or_default(),
                service_account_id: event
                    .actor_service_account_id
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
                service_account_name: event.actor_service_account_name.unwrap_or_default(),
            }),
            target: Some(proto::AuditTarget {
                r#type: event.target_type,
                id: event.target_id,
                owner_id: event
                    .target_owner_id
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
                organization_id: event
                    .organization_id
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
            }),
            request_id: event.request_id.unwrap_or_default(),
            client_address: event.client_address.unwrap_or_default(),
            outcome: outcome.into(),
            changes,
            repeats: event.repeats,
            last_time: Some(timestamp(event.last_occurred_at)),
        }
    }
}
