//! Creates safe to retry (issue 34, AIP-155): a create repeated with its
//! `request_id` by the same caller answers what the first one created and
//! creates nothing more, on any replica, even while the first is in
//! flight; CreateApiKey's retry shows the same secret.

use chatbot_backend::proto;
use tonic::{Code, Status};

use crate::helpers::{backend_test, spawn_app, violated_fields, Clients, TestUser};
use crate::organization_limits::team_with_chatbot;

const REQUEST_ID: &str = "6f1d2c3b-4a59-4e8f-9d7c-0b1a2e3f4d5c";

async fn create_key(
    clients: &Clients,
    owner: &TestUser,
    chatbot: &str,
    request_id: &str,
    name: &str,
) -> Result<proto::CreateApiKeyResponse, Status> {
    let metadata = [("plan", "pro"), ("team", "support"), ("region", "eu")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Ok(clients
        .api_keys(Some(&owner.token))
        .create_api_key(proto::CreateApiKeyRequest {
            chatbot_id: chatbot.into(),
            display_name: name.into(),
            metadata,
            request_id: request_id.into(),
            ..Default::default()
        })
        .await?
        .into_inner())
}

pub(crate) async fn create_chatbot(
    clients: &Clients,
    owner: &TestUser,
    organization: &str,
    request_id: &str,
    name: &str,
) -> Result<proto::Chatbot, Status> {
    Ok(clients
        .chatbots(Some(&owner.token))
        .create_chatbot(proto::CreateChatbotRequest {
            name: name.into(),
            llm_endpoint_url: "https://llm.example.com/v1/chat".into(),
            organization_id: organization.into(),
            request_id: request_id.into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .chatbot
        .unwrap())
}

async fn key_count(clients: &Clients, owner: &TestUser, chatbot: &str) -> usize {
    clients
        .api_keys(Some(&owner.token))
        .list_api_keys(proto::ListApiKeysRequest {
            chatbot_id: chatbot.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .api_keys
        .len()
}

backend_test! {
    async fn a_retried_create_answers_what_the_first_created_and_creates_nothing_more() {
        let app = spawn_app().await;
        let (owner, team, chatbot) = team_with_chatbot(&app).await;

        let first = create_key(&app, &owner, &chatbot, REQUEST_ID, "retried").await.unwrap();
        let again = create_key(&app, &owner, &chatbot, REQUEST_ID, "retried").await.unwrap();
        assert_eq!(again.api_key.as_ref().unwrap().id, first.api_key.as_ref().unwrap().id);
        assert_eq!(again.key, first.key, "the same secret, derived again");
        assert_eq!(key_count(&app, &owner, &chatbot).await, 1);
        let verified = crate::helpers::verify_costing(&app, &again.key, 1).await;
        assert!(verified.valid);
        // Another request under the same id is refused; another id creates.
        let other = create_key(&app, &owner, &chatbot, REQUEST_ID, "another name").await;
        assert_eq!(violated_fields(&other.unwrap_err()), ["request_id"]);
        let bad = create_key(&app, &owner, &chatbot, "not-a-uuid", "retried").await;
        assert_eq!(violated_fields(&bad.unwrap_err()), ["request_id"]);
        let fresh = create_key(&app, &owner, &chatbot, "", "retried").await.unwrap();
        assert_ne!(fresh.key, first.key);
        assert_eq!(key_count(&app, &owner, &chatbot).await, 2);

        // A chatbot and an organization the same way; the id is the
        // caller's own: another member's request under it creates.
        let bot = create_chatbot(&app, &owner, &team, REQUEST_ID, "retried bot").await.unwrap();
        let bot_again = create_chatbot(&app, &owner, &team, REQUEST_ID, "retried bot").await.unwrap();
        assert_eq!(bot_again.id, bot.id);
        let editor = app.new_member(&owner, &team, proto::OrganizationRole::Editor).await;
        let theirs = create_chatbot(&app, &editor, &team, REQUEST_ID, "retried bot").await.unwrap();
        assert_ne!(theirs.id, bot.id);
        let organizations = app.organizations(Some(&owner.token));
        let request = proto::CreateOrganizationRequest {
            name: "retried team".into(),
            request_id: REQUEST_ID.into(),
        };
        let created = organizations.clone().create_organization(request.clone()).await.unwrap();
        let repeated = organizations.clone().create_organization(request).await.unwrap();
        assert_eq!(
            created.into_inner().organization.unwrap().id,
            repeated.into_inner().organization.unwrap().id
        );

        // One audit event per chatbot created, none for the retries.
        let audit = app
            .audit(Some(&owner.token))
            .list_audit_events(proto::ListAuditEventsRequest {
                action: "chatbot.create".into(),
                organization_id: team.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(audit.audit_events.len(), 3, "the team's chatbot, ours and the editor's");

        // What the first request made is gone: the retry says so.
        app.api_keys(Some(&owner.token))
            .delete_api_key(proto::DeleteApiKeyRequest { id: first.api_key.unwrap().id })
            .await
            .unwrap();
        let gone = create_key(&app, &owner, &chatbot, REQUEST_ID, "retried").await;
        assert_eq!(gone.unwrap_err().code(), Code::FailedPrecondition);
    }
}

/// Ten attempts of one CreateApiKey at once through two server processes:
/// one key, and every attempt answers it with the same secret.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_retries_on_two_replicas_create_one_key_postgres() {
    let app = spawn_app().await;
    let replica = app.spawn_replica_process(&[]).await;
    let (owner, _, chatbot) = team_with_chatbot(&app).await;
    let attempts = (0..10usize).map(|i| {
        let clients: &Clients = if i.is_multiple_of(2) { &app } else { &replica };
        create_key(clients, &owner, &chatbot, REQUEST_ID, "raced")
    });
    let answers = futures_util::future::join_all(attempts).await;
    let answers: Vec<proto::CreateApiKeyResponse> =
        answers.into_iter().map(|answer| answer.unwrap()).collect();
    assert!(answers.iter().all(|answer| answer.key == answers[0].key));
    assert!(answers.iter().all(
        |answer| answer.api_key.as_ref().unwrap().id == answers[0].api_key.as_ref().unwrap().id
    ));
    assert_eq!(key_count(&app, &owner, &chatbot).await, 1);

    // An organization, which takes no lock before its request id: the
    // attempts meet at the request id's row.
    let attempts = (0..10usize).map(|i| {
        let clients: &Clients = if i.is_multiple_of(2) { &app } else { &replica };
        let request = proto::CreateOrganizationRequest {
            name: "raced team".into(),
            request_id: REQUEST_ID.into(),
        };
        let mut organizations = clients.organizations(Some(&owner.token));
        async move { organizations.create_organization(request).await }
    });
    let answers = futures_util::future::join_all(attempts).await;
    let ids: Vec<String> = answers
        .into_iter()
        .map(|answer| answer.unwrap().into_inner().organization.unwrap().id)
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let listed = app
        .organizations(Some(&owner.token))
        .list_organizations(proto::ListOrganizationsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .organizations;
    assert_eq!(listed.iter().filter(|o| o.name == "raced team").count(), 1);
}

async fn rotate(
    clients: &Clients,
    owner: &TestUser,
    key: i64,
    request_id: &str,
    grace_secs: i64,
) -> Result<proto::RotateApiKeyResponse, Status> {
    Ok(clients
        .api_keys(Some(&owner.token))
        .rotate_api_key(proto::RotateApiKeyRequest {
            id: key,
            grace_period: Some(prost_types::Duration {
                seconds: grace_secs,
                nanos: 0,
            }),
            request_id: request_id.into(),
        })
        .await?
        .into_inner())
}

async fn invite(
    clients: &Clients,
    owner: &TestUser,
    team: &str,
    email: &str,
) -> Result<proto::CreateInvitationResponse, Status> {
    Ok(clients
        .organizations(Some(&owner.token))
        .create_invitation(proto::CreateInvitationRequest {
            organization_id: team.into(),
            email: email.into(),
            role: proto::OrganizationRole::Viewer.into(),
            request_id: REQUEST_ID.into(),
            ..Default::default()
        })
        .await?
        .into_inner())
}

async fn create_service_account(
    clients: &Clients,
    owner: &TestUser,
    team: &str,
) -> Result<proto::CreateServiceAccountResponse, Status> {
    Ok(clients
        .organizations(Some(&owner.token))
        .create_service_account(proto::CreateServiceAccountRequest {
            organization_id: team.into(),
            name: "provisioning".into(),
            role: proto::OrganizationRole::Editor.into(),
            request_id: REQUEST_ID.into(),
            ..Default::default()
        })
        .await?
        .into_inner())
}

backend_test! {
    async fn retried_rotations_service_accounts_and_invitations_show_the_first_secret_again() {
        let app = spawn_app().await;
        let (owner, team, chatbot) = team_with_chatbot(&app).await;

        // A rotation: one replacement, its secret shown again.
        let key = create_key(&app, &owner, &chatbot, "", "to rotate").await.unwrap();
        let key_id = key.api_key.unwrap().id;
        let first = rotate(&app, &owner, key_id, REQUEST_ID, 60).await.unwrap();
        let again = rotate(&app, &owner, key_id, REQUEST_ID, 60).await.unwrap();
        let replacement = first.api_key.as_ref().unwrap().id;
        assert_eq!(again.api_key.as_ref().unwrap().id, replacement);
        assert_eq!(again.key, first.key);
        assert_eq!(again.previous_api_key.unwrap().id, key_id);
        assert_eq!(key_count(&app, &owner, &chatbot).await, 2);
        assert!(crate::helpers::verify_costing(&app, &again.key, 1).await.valid);
        let other = rotate(&app, &owner, key_id, REQUEST_ID, 120).await;
        assert_eq!(violated_fields(&other.unwrap_err()), ["request_id"]);
        let unnamed = rotate(&app, &owner, key_id, "", 60).await;
        assert_eq!(unnamed.unwrap_err().code(), Code::FailedPrecondition, "already replaced");

        // A service account: one account, its token shown again and working.
        let account = create_service_account(&app, &owner, &team).await.unwrap();
        let account_again = create_service_account(&app, &owner, &team).await.unwrap();
        assert_eq!(account_again.token, account.token);
        assert_eq!(
            account_again.service_account.unwrap().id,
            account.service_account.unwrap().id
        );
        app.read_chatbot(&account_again.token, &chatbot).await;
        let accounts = app
            .organizations(Some(&owner.token))
            .list_service_accounts(proto::ListServiceAccountsRequest {
                organization_id: team.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .service_accounts;
        assert_eq!(accounts.len(), 1);

        // An invitation: the same one and token, also once accepted (a
        // retry answers the first request, not "already a member").
        let invitee = app.new_user().await;
        let invitation = invite(&app, &owner, &team, &invitee.email).await.unwrap();
        let invitation_again = invite(&app, &owner, &team, &invitee.email).await.unwrap();
        assert_eq!(invitation_again.token, invitation.token);
        app.accept(&invitee, &invitation_again.token).await.unwrap();
        let after_joining = invite(&app, &owner, &team, &invitee.email).await.unwrap();
        assert_eq!(after_joining.token, invitation.token);
        assert_eq!(
            after_joining.invitation.unwrap().id,
            invitation.invitation.unwrap().id
        );
    }
}

/// Ten attempts of one RotateApiKey at once through two server processes:
/// one replacement, and every attempt answers it with the same secret. A
/// replica whose SECRET_KEY has changed since (the old one kept as
/// SECRET_KEY_PREVIOUS, so sessions still work) cannot show the secret
/// again, and says so.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_retried_rotations_on_two_replicas_replace_once_postgres() {
    let app = spawn_app().await;
    let replica = app.spawn_replica_process(&[]).await;
    let (owner, team, chatbot) = team_with_chatbot(&app).await;
    let key = create_key(&app, &owner, &chatbot, "", "raced")
        .await
        .unwrap();
    let key_id = key.api_key.unwrap().id;
    let attempts = (0..10usize).map(|i| {
        let clients: &Clients = if i.is_multiple_of(2) { &app } else { &replica };
        rotate(clients, &owner, key_id, REQUEST_ID, 60)
    });
    let answers: Vec<proto::RotateApiKeyResponse> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .map(|answer| answer.unwrap())
        .collect();
    let replacement = answers[0].api_key.as_ref().unwrap().id;
    assert!(answers.iter().all(|answer| answer.key == answers[0].key));
    assert!(answers
        .iter()
        .all(|answer| answer.api_key.as_ref().unwrap().id == replacement));
    assert_eq!(key_count(&app, &owner, &chatbot).await, 2);

    let rekeyed = app
        .spawn_replica_process(&[
            ("SECRET_KEY", "another-secret-key-that-is-at-least-32-bytes"),
            ("SECRET_KEY_PREVIOUS", crate::helpers::SECRET_KEY),
        ])
        .await;
    let changed = rotate(&rekeyed, &owner, key_id, REQUEST_ID, 60).await;
    let status = changed.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("SECRET_KEY changed"),
        "{}",
        status.message()
    );
    let account = create_service_account(&app, &owner, &team).await.unwrap();
    let changed = create_service_account(&rekeyed, &owner, &team).await;
    assert_eq!(changed.unwrap_err().code(), Code::FailedPrecondition);
    assert!(!account.token.is_empty());
}
