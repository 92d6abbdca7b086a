//! Organizations: personal ones made at sign-up, teams that people join by
//! invitation, the last-owner rule under races, deletion that never orphans
//! a chatbot, and access changes reaching every replica. Who may call what
//! is checked cell by cell in `authorization/`.

mod audit;
mod invitations;
mod owners;
mod replicas;
mod requests;
mod service_accounts;

use chatbot_backend::proto::{self, OrganizationRole as Role};

use crate::helpers::{field_mask, spawn_app, Clients, TestApp, TestUser};

/// A fresh app with one user who owns a team organization named `name`.
async fn app_with_team(name: &str) -> (TestApp, TestUser, proto::Organization) {
    let app = spawn_app().await;
    let owner = app.new_user().await;
    let team = app.create_organization(&owner, name).await;
    (app, owner, team)
}

/// A chatbot of `organization_id`, created by `user`.
async fn team_chatbot(
    app: &Clients,
    user: &TestUser,
    organization_id: &str,
) -> Result<proto::Chatbot, tonic::Status> {
    let request = proto::CreateChatbotRequest {
        name: "team bot".into(),
        llm_endpoint_url: "https://llm.example.com".into(),
        organization_id: organization_id.into(),
        ..Default::default()
    };
    app.create_chatbot_from(&user.token, request).await
}

async fn members(app: &Clients, user: &TestUser, organization_id: &str) -> Vec<proto::Member> {
    app.organizations(Some(&user.token))
        .list_members(proto::ListMembersRequest {
            organization_id: organization_id.into(),
            ..Default::default()
        })
        .await
        .expect("list members")
        .into_inner()
        .members
}

/// UpdateMember of `user_id`'s role in `organization_id`, by `by`.
async fn set_role(
    app: &Clients,
    by: &TestUser,
    organization_id: &str,
    user_id: &str,
    role: Role,
) -> Result<proto::Member, tonic::Status> {
    let updated = app
        .organizations(Some(&by.token))
        .update_member(proto::UpdateMemberRequest {
            member: Some(proto::Member {
                organization_id: organization_id.into(),
                user_id: user_id.into(),
                role: role.into(),
                ..Default::default()
            }),
            update_mask: field_mask(&["role"]),
        })
        .await?;
    Ok(updated.into_inner().member.expect("member in response"))
}

async fn remove(
    app: &Clients,
    by: &TestUser,
    organization_id: &str,
    user_id: &str,
) -> Result<(), tonic::Status> {
    app.organizations(Some(&by.token))
        .remove_member(proto::RemoveMemberRequest {
            organization_id: organization_id.into(),
            user_id: user_id.into(),
        })
        .await
        .map(drop)
}

/// CreateInvitation of `email` as `role` in `organization_id`, by `by`,
/// with the default time to live (no `ttl`).
async fn try_invite(
    app: &Clients,
    by: &TestUser,
    organization_id: &str,
    email: &str,
    role: Role,
) -> Result<proto::CreateInvitationResponse, tonic::Status> {
    app.organizations(Some(&by.token))
        .create_invitation(proto::CreateInvitationRequest {
            organization_id: organization_id.into(),
            email: email.into(),
            role: role.into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The pending invitations of `organization_id`, as `user` lists them.
async fn pending_invitations(
    app: &Clients,
    user: &TestUser,
    organization_id: &str,
) -> Vec<proto::Invitation> {
    app.organizations(Some(&user.token))
        .list_invitations(proto::ListInvitationsRequest {
            organization_id: organization_id.into(),
            ..Default::default()
        })
        .await
        .expect("list invitations")
        .into_inner()
        .invitations
}

/// The ids of the chatbots ListChatbots answers `user` in one page, for
/// one organization or (empty) all of theirs.
async fn chatbot_ids(app: &Clients, user: &TestUser, organization_id: &str) -> Vec<String> {
    app.chatbots(Some(&user.token))
        .list_chatbots(proto::ListChatbotsRequest {
            organization_id: organization_id.into(),
            ..Default::default()
        })
        .await
        .expect("list chatbots")
        .into_inner()
        .chatbots
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// GetChatbot of `id` with `token` through `app`, reduced to its code.
async fn read_code(app: &Clients, token: String, id: String) -> Result<(), tonic::Code> {
    app.get_chatbot(&token, &id)
        .await
        .map(drop)
        .map_err(|status| status.code())
}

/// Runs `statement` on `app`'s database, PostgreSQL or SQLite, and returns
/// how many rows it changed: how a test moves an expiry into the past.
pub(crate) async fn run_sql(app: &TestApp, statement: &str) -> usize {
    use chatbot_backend::db::DbConnection;
    use diesel_async::RunQueryDsl;

    let query = diesel::sql_query(statement);
    let changed = match &mut app.db.conn().await.expect("a connection") {
        DbConnection::Postgres(conn) => query.execute(&mut **conn).await,
        DbConnection::Sqlite(conn) => query.execute(&mut **conn).await,
    };
    changed.expect(statement)
}

/// A moment long past, written as both stores keep timestamps.
pub(crate) const LONG_AGO: &str = "2000-01-01T00:00:00.000000Z";
