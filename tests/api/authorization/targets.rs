//! The targets of the matrix's cells: a fresh team with everything an RPC
//! can name (and its service accounts, one revoked and one expired), and
//! ids that name nothing.

use chatbot_backend::proto::{self, OrganizationRole as Role};

use std::time::Duration;

use super::{Target, Team};
use crate::helpers::{poll_until, reserve, TestApp};
use crate::organizations::{run_sql, LONG_AGO};
use crate::webhooks::{create_webhook, deliveries};

/// Where the teams' webhooks send: a local port nothing listens on.
const CLOSED_PORT: &str = "http://127.0.0.1:9/hooks";

/// A fresh team (owner, editor, viewer) with a chatbot, a key and a
/// pending invitation, so cells that change their target do not disturb
/// each other.
pub(super) async fn fresh_target(app: &TestApp) -> (Team, Target) {
    let owner = app.new_user().await;
    let organization = app.create_organization(&owner, "matrix team").await;
    let editor = app.new_member(&owner, &organization.id, Role::Editor).await;
    let viewer = app.new_member(&owner, &organization.id, Role::Viewer).await;
    let chatbot = app
        .create_chatbot_from(
            &owner.token,
            proto::CreateChatbotRequest {
                name: "matrix bot".into(),
                llm_endpoint_url: "https://llm.example.com".into(),
                organization_id: organization.id.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let key = app.create_api_key(&owner, &chatbot.id).await;
    let pending = app
        .invite(
            &owner,
            &organization.id,
            "someone-else@example.com",
            Role::Viewer,
        )
        .await;
    let account = |role| app.create_service_account(&owner, &organization.id, role);
    let account_editor = account(Role::Editor).await;
    let account_viewer = account(Role::Viewer).await;
    let account_revoked = account(Role::Editor).await;
    app.organizations(Some(&owner.token))
        .revoke_service_account(proto::RevokeServiceAccountRequest {
            id: account_revoked.service_account.unwrap().id,
        })
        .await
        .unwrap();
    // An editor's token, so that an expiry not kept would show as OK.
    let account_expired = account(Role::Editor).await;
    let expired = format!(
        "UPDATE service_accounts SET expires_at = '{LONG_AGO}' WHERE id = '{}'",
        account_expired.service_account.unwrap().id
    );
    assert_eq!(run_sql(app, &expired).await, 1);
    let webhook = create_webhook(app, &owner, &organization.id, CLOSED_PORT, &[])
        .await
        .unwrap()
        .webhook
        .unwrap();
    // Its own creation is the webhook's first delivery.
    let delivery = poll_until(
        "the webhook's first delivery",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || deliveries(app, &owner, &webhook.id),
        |deliveries| !deliveries.is_empty(),
    )
    .await
    .remove(0);
    let key_secret = key.key.clone();
    let reservation = || async { reserve(app, &key_secret, 1).await.reservation_id };
    let (reservation_to_settle, reservation_to_release) =
        (reservation().await, reservation().await);
    let target = Target {
        user_id: owner.id.clone(),
        email: owner.email.clone(),
        password: owner.password.clone(),
        organization_id: organization.id,
        chatbot_id: chatbot.id,
        api_key_id: key.api_key.unwrap().id,
        key: key.key,
        refresh_token: owner.refresh_token.clone(),
        member_id: editor.id.clone(),
        invitation_id: pending.invitation.unwrap().id,
        invitation_token: pending.token,
        service_account_id: account_viewer.service_account.unwrap().id,
        webhook_id: webhook.id,
        delivery_id: delivery.id,
        reservation_to_settle,
        reservation_to_release,
    };
    (
        Team {
            owner,
            editor,
            viewer,
            account_editor: account_editor.token,
            account_viewer: account_viewer.token,
            account_revoked: account_revoked.token,
            account_expired: account_expired.token,
        },
        target,
    )
}

pub(super) fn missing_target() -> Target {
    Target {
        user_id: uuid::Uuid::new_v4().to_string(),
        organization_id: uuid::Uuid::new_v4().to_string(),
        chatbot_id: uuid::Uuid::new_v4().to_string(),
        api_key_id: 987_654_321,
        key: "cbk_missing".into(),
        refresh_token: "cbr_missing".into(),
        member_id: uuid::Uuid::new_v4().to_string(),
        invitation_id: uuid::Uuid::new_v4().to_string(),
        invitation_token: format!("cbi_{}", "x".repeat(43)),
        service_account_id: uuid::Uuid::new_v4().to_string(),
        webhook_id: uuid::Uuid::new_v4().to_string(),
        delivery_id: uuid::Uuid::new_v4().to_string(),
        reservation_to_settle: format!("rsv_{}", "x".repeat(43)),
        reservation_to_release: format!("rsv_{}", "y".repeat(43)),
        email: format!("missing-{}@example.com", uuid::Uuid::new_v4().simple()),
        password: "not the password".into(),
    }
}
