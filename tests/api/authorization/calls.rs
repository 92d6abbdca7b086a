//! One call of each RPC in the matrix, on a cell's target, reduced to its
//! answer.

use chatbot_backend::proto::{self, OrganizationRole as Role};
use tonic::Status;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;

use super::{Rpc, Target};
use crate::external_authorization::check_request;
use crate::helpers::{api_key_update, chatbot_update, field_mask, Bearer, TestApp, PASSWORD};

pub(super) async fn call(
    app: &TestApp,
    rpc: Rpc,
    token: Option<&str>,
    t: &Target,
) -> Result<(), Status> {
    match rpc {
        Rpc::GetUser => app
            .users(token)
            .get_user(proto::GetUserRequest {
                id: t.user_id.clone(),
            })
            .await
            .map(drop),
        Rpc::ListUsers => app
            .users(token)
            .list_users(proto::ListUsersRequest::default())
            .await
            .map(drop),
        Rpc::UpdateUser => app
            .users(token)
            .update_user(proto::UpdateUserRequest {
                user: Some(proto::User {
                    id: t.user_id.clone(),
                    email: format!("renamed-{}@example.com", uuid::Uuid::new_v4().simple()),
                    ..Default::default()
                }),
                update_mask: field_mask(&["email"]),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::DeleteUser => app
            .users(token)
            .delete_user(proto::DeleteUserRequest {
                id: t.user_id.clone(),
            })
            .await
            .map(drop),
        Rpc::CreateChatbot => app
            .chatbots(token)
            .create_chatbot(proto::CreateChatbotRequest {
                name: "matrix".into(),
                llm_endpoint_url: "https://llm.example.com".into(),
                organization_id: t.organization_id.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::GetChatbot => app
            .chatbots(token)
            .get_chatbot(proto::GetChatbotRequest {
                id: t.chatbot_id.clone(),
            })
            .await
            .map(drop),
        Rpc::ListChatbots => app
            .chatbots(token)
            .list_chatbots(proto::ListChatbotsRequest {
                organization_id: t.organization_id.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::UpdateChatbot => app
            .chatbots(token)
            .update_chatbot(chatbot_update(
                proto::Chatbot {
                    id: t.chatbot_id.clone(),
                    name: "renamed".into(),
                    ..Default::default()
                },
                &["name"],
            ))
            .await
            .map(drop),
        Rpc::DeleteChatbot => app
            .chatbots(token)
            .delete_chatbot(proto::DeleteChatbotRequest {
                id: t.chatbot_id.clone(),
            })
            .await
            .map(drop),
        Rpc::CreateApiKey => app
            .api_keys(token)
            .create_api_key(proto::CreateApiKeyRequest {
                chatbot_id: t.chatbot_id.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::GetApiKey => app
            .api_keys(token)
            .get_api_key(proto::GetApiKeyRequest { id: t.api_key_id })
            .await
            .map(drop),
        Rpc::UpdateApiKey => app
            .api_keys(token)
            .update_api_key(api_key_update(
                proto::ApiKey {
                    id: t.api_key_id,
                    display_name: "renamed".into(),
                    ..Default::default()
                },
                &["display_name"],
            ))
            .await
            .map(drop),
        Rpc::ListApiKeys => app
            .api_keys(token)
            .list_api_keys(proto::ListApiKeysRequest {
                chatbot_id: t.chatbot_id.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::RevokeApiKey => app
            .api_keys(token)
            .revoke_api_key(proto::RevokeApiKeyRequest { id: t.api_key_id })
            .await
            .map(drop),
        Rpc::RotateApiKey => app
            .api_keys(token)
            .rotate_api_key(proto::RotateApiKeyRequest {
                id: t.api_key_id,
                grace_period: None,
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::DeleteApiKey => app
            .api_keys(token)
            .delete_api_key(proto::DeleteApiKeyRequest { id: t.api_key_id })
            .await
            .map(drop),
        Rpc::GetApiKeyUsage => app
            .api_keys(token)
            .get_api_key_usage(proto::GetApiKeyUsageRequest {
                api_key_id: t.api_key_id,
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::GetChatbotUsage => app
            .api_keys(token)
            .get_chatbot_usage(proto::GetChatbotUsageRequest {
                chatbot_id: t.chatbot_id.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::VerifyApiKey => app
            .api_keys(token)
            .verify_api_key(proto::VerifyApiKeyRequest {
                key: t.key.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::ListAuditEvents => app
            .audit(token)
            .list_audit_events(proto::ListAuditEventsRequest::default())
            .await
            .map(drop),
        Rpc::GetCurrentUser => app
            .auth(token)
            .get_current_user(proto::GetCurrentUserRequest {})
            .await
            .map(drop),
        Rpc::Logout => app
            .auth(token)
            .logout(proto::LogoutRequest {
                refresh_token: t.refresh_token.clone(),
            })
            .await
            .map(drop),
        Rpc::GetDatabaseStatus => app
            .status(token)
            .get_database_status(proto::GetDatabaseStatusRequest {})
            .await
            .map(drop),
        Rpc::CreateOrganization => app
            .organizations(token)
            .create_organization(proto::CreateOrganizationRequest {
                name: "matrix team".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::GetOrganization => app
            .organizations(token)
            .get_organization(proto::GetOrganizationRequest {
                id: t.organization_id.clone(),
            })
            .await
            .map(drop),
        Rpc::ListOrganizations => app
            .organizations(token)
            .list_organizations(proto::ListOrganizationsRequest::default())
            .await
            .map(drop),
        Rpc::UpdateOrganization => app
            .organizations(token)
            .update_organization(proto::UpdateOrganizationRequest {
                organization: Some(proto::Organization {
                    id: t.organization_id.clone(),
                    name: "renamed team".into(),
                    ..Default::default()
                }),
                update_mask: field_mask(&["name"]),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::DeleteOrganization => app
            .organizations(token)
            .delete_organization(proto::DeleteOrganizationRequest {
                id: t.organization_id.clone(),
            })
            .await
            .map(drop),
        Rpc::ListMembers => app
            .organizations(token)
            .list_members(proto::ListMembersRequest {
                organization_id: t.organization_id.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::UpdateMember => app
            .organizations(token)
            .update_member(proto::UpdateMemberRequest {
                member: Some(proto::Member {
                    organization_id: t.organization_id.clone(),
                    user_id: t.member_id.clone(),
                    role: proto::OrganizationRole::Viewer.into(),
                    ..Default::default()
                }),
                update_mask: field_mask(&["role"]),
            })
            .await
            .map(drop),
        Rpc::RemoveMember => app
            .organizations(token)
            .remove_member(proto::RemoveMemberRequest {
                organization_id: t.organization_id.clone(),
                user_id: t.member_id.clone(),
            })
            .await
            .map(drop),
        Rpc::CreateInvitation => app
            .organizations(token)
            .create_invitation(proto::CreateInvitationRequest {
                organization_id: t.organization_id.clone(),
                email: format!("invited-{}@example.com", uuid::Uuid::new_v4().simple()),
                role: proto::OrganizationRole::Viewer.into(),
                ttl: None,
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::ListInvitations => app
            .organizations(token)
            .list_invitations(proto::ListInvitationsRequest {
                organization_id: t.organization_id.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::DeleteInvitation => app
            .organizations(token)
            .delete_invitation(proto::DeleteInvitationRequest {
                id: t.invitation_id.clone(),
            })
            .await
            .map(drop),
        Rpc::AcceptInvitation => app
            .organizations(token)
            .accept_invitation(proto::AcceptInvitationRequest {
                token: t.invitation_token.clone(),
            })
            .await
            .map(drop),
        Rpc::GetOrganizationUsage => app
            .organizations(token)
            .get_organization_usage(proto::GetOrganizationUsageRequest {
                organization_id: t.organization_id.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::CreateServiceAccount => app
            .organizations(token)
            .create_service_account(proto::CreateServiceAccountRequest {
                organization_id: t.organization_id.clone(),
                name: "matrix service".into(),
                role: Role::Viewer.into(),
                expire_time: None,
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::ListServiceAccounts => app
            .organizations(token)
            .list_service_accounts(proto::ListServiceAccountsRequest {
                organization_id: t.organization_id.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::RevokeServiceAccount => app
            .organizations(token)
            .revoke_service_account(proto::RevokeServiceAccountRequest {
                id: t.service_account_id.clone(),
            })
            .await
            .map(drop),
        Rpc::DeleteServiceAccount => app
            .organizations(token)
            .delete_service_account(proto::DeleteServiceAccountRequest {
                id: t.service_account_id.clone(),
            })
            .await
            .map(drop),
        Rpc::CreateUser => app
            .users(token)
            .create_user(proto::CreateUserRequest {
                email: format!("signup-{}@example.com", uuid::Uuid::new_v4().simple()),
                password: PASSWORD.into(),
                role: 0,
            })
            .await
            .map(drop),
        Rpc::Login => app
            .auth(token)
            .login(proto::LoginRequest {
                email: t.email.clone(),
                password: t.password.clone(),
            })
            .await
            .map(drop),
        Rpc::RefreshToken => app
            .auth(token)
            .refresh_token(proto::RefreshTokenRequest {
                refresh_token: t.refresh_token.clone(),
            })
            .await
            .map(drop),
        Rpc::Check => {
            let bearer = Bearer(token.map(str::to_owned));
            let answer = AuthorizationClient::with_interceptor(app.channel(), bearer)
                .check(check_request(&[("x-api-key", &t.key)], &[]))
                .await?
                .into_inner();
            // The key's verdict, as Envoy acts on it.
            match answer.http_response {
                Some(HttpResponse::OkResponse(_)) => Ok(()),
                other => Err(Status::unauthenticated(format!("denied: {other:?}"))),
            }
        }
        Rpc::SettleReservation => app
            .api_keys(token)
            .settle_reservation(proto::SettleReservationRequest {
                reservation_id: t.reservation_to_settle.clone(),
                actual_cost: 1,
            })
            .await
            .map(drop),
        Rpc::ReleaseReservation => app
            .api_keys(token)
            .release_reservation(proto::ReleaseReservationRequest {
                reservation_id: t.reservation_to_release.clone(),
            })
            .await
            .map(drop),
        // Refused before the stream starts; an allowed one is dropped.
        Rpc::WatchEvents => app
            .events(token)
            .watch_events(proto::WatchEventsRequest {
                organization_id: t.organization_id.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::CreateWebhook => app
            .webhooks(token)
            .create_webhook(proto::CreateWebhookRequest {
                organization_id: t.organization_id.clone(),
                webhook: Some(proto::Webhook {
                    url: "http://127.0.0.1:9/another".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::GetWebhook => app
            .webhooks(token)
            .get_webhook(proto::GetWebhookRequest {
                id: t.webhook_id.clone(),
            })
            .await
            .map(drop),
        Rpc::ListWebhooks => app
            .webhooks(token)
            .list_webhooks(proto::ListWebhooksRequest {
                organization_id: t.organization_id.clone(),
            })
            .await
            .map(drop),
        Rpc::UpdateWebhook => app
            .webhooks(token)
            .update_webhook(proto::UpdateWebhookRequest {
                webhook: Some(proto::Webhook {
                    id: t.webhook_id.clone(),
                    description: "renamed".into(),
                    ..Default::default()
                }),
                update_mask: field_mask(&["description"]),
            })
            .await
            .map(drop),
        Rpc::DeleteWebhook => app
            .webhooks(token)
            .delete_webhook(proto::DeleteWebhookRequest {
                id: t.webhook_id.clone(),
            })
            .await
            .map(drop),
        Rpc::ListWebhookDeliveries => app
            .webhooks(token)
            .list_webhook_deliveries(proto::ListWebhookDeliveriesRequest {
                webhook_id: t.webhook_id.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::RedeliverWebhook => app
            .webhooks(token)
            .redeliver_webhook(proto::RedeliverWebhookRequest {
                delivery_id: t.delivery_id.clone(),
            })
            .await
            .map(drop),
    }
}
