//! Events for other services (issue 30, first step): every change the audit
//! log records in an organization is an event of that organization,
//! written in the change's transaction; WatchEvents streams them in commit
//! order, resumes after a cursor, reaches a watcher on another replica, and
//! is for the organization's members only.

use std::time::Duration;

use chatbot_backend::proto::{self, OrganizationRole};
use tonic::{Code, Streaming};

use crate::helpers::{
    backend_test, create_keys_through_both, spawn_app, Clients, TestApp, TestUser,
};
use crate::organization_limits::team_with_chatbot;

/// WatchEvents on `organization` by `user`, after `cursor` (or from the
/// oldest).
pub async fn watch(
    clients: &Clients,
    user: &TestUser,
    organization: &str,
    cursor: Option<&str>,
) -> Result<Streaming<proto::WatchEventsResponse>, tonic::Status> {
    let request = proto::WatchEventsRequest {
        organization_id: organization.into(),
        cursor: cursor.unwrap_or_default().into(),
        from_oldest: cursor.is_none(),
    };
    Ok(clients
        .events(Some(&user.token))
        .watch_events(request)
        .await?
        .into_inner())
}

/// The next `count` events of `stream`, each within ten seconds.
pub async fn next_events(
    stream: &mut Streaming<proto::WatchEventsResponse>,
    count: usize,
) -> Vec<proto::Event> {
    let mut events = Vec::new();
    while events.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .unwrap_or_else(|_| panic!("no event after {events:?}"))
            .expect("the stream stays up")
            .expect("the stream does not end");
        events.push(message.event.unwrap());
    }
    events
}

fn types(events: &[proto::Event]) -> Vec<&str> {
    events.iter().map(|event| event.r#type.as_str()).collect()
}

/// Waits (up to 20 s) until `owner` can read `organization` again: the
/// database is back after a cut.
pub async fn until_the_database_answers(app: &TestApp, owner: &TestUser, organization: &str) {
    crate::helpers::poll_until(
        "the database back",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            app.organizations(Some(&owner.token))
                .get_organization(proto::GetOrganizationRequest {
                    id: organization.to_owned(),
                })
                .await
                .is_ok()
        },
        |ok: &bool| *ok,
    )
    .await;
}

/// Renames `organization`, by `owner`.
pub async fn rename(app: &TestApp, owner: &TestUser, organization: &str, name: &str) {
    app.organizations(Some(&owner.token))
        .update_organization(proto::UpdateOrganizationRequest {
            organization: Some(proto::Organization {
                id: organization.into(),
                name: name.into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
}

backend_test! {
    async fn an_organizations_changes_stream_in_order_and_resume_after_a_cursor() {
        let app = spawn_app().await;
        let (owner, team, chatbot) = team_with_chatbot(&app).await;
        let key = app.create_api_key(&owner, &chatbot).await.api_key.unwrap();
        let mut stream = watch(&app, &owner, &team, None).await.unwrap();
        let first = next_events(&mut stream, 3).await;
        assert_eq!(
            types(&first),
            ["organization.create", "chatbot.create", "api_key.create"]
        );
        assert!(first.iter().all(|event| event.organization_id == team));
        assert_eq!(first[1].resource_id, chatbot);
        assert_eq!(first[2].resource_id, key.id.to_string());

        // New changes arrive as they commit, with their changed fields.
        rename(&app, &owner, &team, "Renamed team").await;
        app.revoke_api_key(&owner.token, key.id).await.unwrap();
        let next = next_events(&mut stream, 2).await;
        assert_eq!(types(&next), ["organization.update", "api_key.revoke"]);
        assert_eq!(next[0].changes[0].field, "name");
        drop(stream);

        // Resuming after the third event gives the fourth and fifth again,
        // with the same ids; a change made while no one watched follows.
        rename(&app, &owner, &team, "Renamed again").await;
        let mut resumed = watch(&app, &owner, &team, Some(&first[2].cursor)).await.unwrap();
        let again = next_events(&mut resumed, 3).await;
        assert_eq!(again[0].id, next[0].id);
        assert_eq!(again[1].id, next[1].id);
        assert_eq!(again[2].r#type, "organization.update");
        // Changes outside the organization are not its events.
        let other = app.new_user().await;
        app.create_chatbot(&other, "elsewhere").await;
        rename(&app, &owner, &team, "Last").await;
        let last = next_events(&mut resumed, 1).await;
        assert_eq!(last[0].r#type, "organization.update");
        assert_eq!(last[0].changes[0].field, "name");
    }
}

backend_test! {
    async fn members_watch_their_organization_and_no_one_else_does() {
        let app = spawn_app().await;
        let (owner, team, _) = team_with_chatbot(&app).await;
        let viewer = app.new_member(&owner, &team, OrganizationRole::Viewer).await;
        let stranger = app.new_user().await;
        let mut watching = watch(&app, &viewer, &team, None).await.unwrap();
        // The viewer joining is among the events.
        let seen = next_events(&mut watching, 3).await;
        assert_eq!(types(&seen)[..2], ["organization.create", "chatbot.create"]);

        let refused = watch(&app, &stranger, &team, None).await.unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
        let anonymous = app
            .events(None)
            .watch_events(proto::WatchEventsRequest {
                organization_id: team.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(anonymous.code(), Code::Unauthenticated);
        let bad_cursor = watch(&app, &owner, &team, Some("not-a-cursor")).await.unwrap_err();
        assert_eq!(bad_cursor.code(), Code::InvalidArgument);
        assert_eq!(crate::helpers::violated_fields(&bad_cursor), ["cursor"]);
        let bad_id = watch(&app, &owner, "not-a-uuid", Some("-1")).await.unwrap_err();
        assert_eq!(bad_id.code(), Code::InvalidArgument);
        let mut fields = crate::helpers::violated_fields(&bad_id);
        fields.sort();
        assert_eq!(fields, ["cursor", "organization_id"]);
    }
}

/// A change made through one server process reaches a watcher of another
/// on the same database, and the stream starting "now" sees only changes
/// committed after it started.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_on_one_replica_reaches_a_watcher_on_another_postgres() {
    let app = spawn_app().await;
    let (owner, team, _) = team_with_chatbot(&app).await;
    let replica = app.spawn_replica_process(&[]).await;
    let mut from_now = replica
        .events(Some(&owner.token))
        .watch_events(proto::WatchEventsRequest {
            organization_id: team.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    rename(&app, &owner, &team, "seen elsewhere").await;
    let seen = next_events(&mut from_now, 1).await;
    assert_eq!(types(&seen), ["organization.update"]);
    assert_eq!(seen[0].changes[0].field, "name");
}

/// Forty changes made at once in one organization through two server
/// processes reach a watcher as forty events, numbered without a gap: each
/// change takes its number under the organization's row lock and commits
/// holding it, so no later number commits before an earlier one.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_changes_over_two_replicas_arrive_once_each_in_number_order_postgres() {
    let app = spawn_app().await;
    let (owner, team, chatbot) = team_with_chatbot(&app).await;
    let replica = app.spawn_replica_process(&[]).await;
    let mut stream = watch(&app, &owner, &team, None).await.unwrap();
    let before = next_events(&mut stream, 2).await;
    let on = [(&owner, chatbot.as_str())];
    let mut created: Vec<String> = create_keys_through_both(&app, &replica, &on, 40)
        .await
        .into_iter()
        .map(|id| id.to_string())
        .collect();
    let events = next_events(&mut stream, 40).await;
    assert_numbered_once_each(&before[1], &events, &mut created);
}

/// `events` follow `last` without a gap, and name each of `created` once.
fn assert_numbered_once_each(last: &proto::Event, events: &[proto::Event], created: &mut [String]) {
    let numbers: Vec<i64> = events.iter().map(|e| e.cursor.parse().unwrap()).collect();
    let first: i64 = last.cursor.parse().unwrap();
    let expected = (first + 1)..=(first + events.len() as i64);
    assert_eq!(numbers, expected.collect::<Vec<_>>());
    let mut seen: Vec<String> = events.iter().map(|e| e.resource_id.clone()).collect();
    seen.sort();
    created.sort();
    assert_eq!(seen, created);
}

/// CreateChatbot is one statement that commits on its own (db::insert):
/// creates in one organization through two server processes at once still
/// number their events without a gap, each once, in commit order.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_chatbot_creates_over_two_replicas_are_numbered_once_each_postgres() {
    let app = spawn_app().await;
    let (owner, team, _) = team_with_chatbot(&app).await;
    let replica = app.spawn_replica_process(&[]).await;
    let mut stream = watch(&app, &owner, &team, None).await.unwrap();
    let before = next_events(&mut stream, 2).await;
    let calls = (0..40).map(|i| {
        let through = if i % 2 == 0 { &*app } else { &*replica };
        let (token, team) = (&owner.token, &team);
        async move {
            through
                .chatbots(Some(token))
                .create_chatbot(proto::CreateChatbotRequest {
                    organization_id: team.clone(),
                    name: format!("bot {i}"),
                    llm_endpoint_url: "https://llm.example.com/v1".into(),
                    ..Default::default()
                })
                .await
                .expect("create chatbot")
                .into_inner()
                .chatbot
                .expect("the chatbot")
                .id
        }
    });
    let mut created = futures_util::future::join_all(calls).await;
    let events = next_events(&mut stream, 40).await;
    assert_numbered_once_each(&before[1], &events, &mut created);
}

/// A member removed while watching is told so, and the stream ends.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_removed_while_watching_gets_permission_denied() {
    let app = spawn_app().await;
    let (owner, team, _) = team_with_chatbot(&app).await;
    let viewer = app
        .new_member(&owner, &team, OrganizationRole::Viewer)
        .await;
    let mut stream = watch(&app, &viewer, &team, None).await.unwrap();
    next_events(&mut stream, 2).await;
    app.organizations(Some(&owner.token))
        .remove_member(proto::RemoveMemberRequest {
            organization_id: team.clone(),
            user_id: viewer.id.clone(),
        })
        .await
        .unwrap();
    // Access is checked again every few seconds; until then the stream may
    // carry the team's events (the removal among them).
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status.code()),
            }
        }
    })
    .await
    .expect("the stream ends");
    assert_eq!(ended, Some(Code::PermissionDenied));
}

backend_test! {
    async fn each_event_carries_the_resource_as_the_change_left_it_and_no_secret() {
        use proto::event::Resource;
        let app = spawn_app().await;
        let (owner, team, chatbot) = team_with_chatbot(&app).await;
        let created = app.create_api_key(&owner, &chatbot).await;
        let key = created.api_key.unwrap();
        let member = app.new_member(&owner, &team, OrganizationRole::Editor).await;
        crate::organization_limits::give_credits(&app, &owner, &team, 500).await;
        app.revoke_api_key(&owner.token, key.id).await.unwrap();
        app.delete_api_key(&owner.token, key.id).await.unwrap();

        let mut stream = watch(&app, &owner, &team, None).await.unwrap();
        let mut events = next_events(&mut stream, 8).await;
        // The invitee's email stays out of the event, as out of the audit log.
        let invited = events.remove(3);
        let Some(Resource::Invitation(invitation)) = &invited.resource else {
            panic!("{invited:?}");
        };
        assert_eq!(invitation.organization_id, team);
        assert_eq!(invitation.email, "");
        assert_eq!(
            types(&events),
            [
                "organization.create",
                "chatbot.create",
                "api_key.create",
                "member.join",
                "organization.update",
                "api_key.revoke",
                "api_key.delete",
            ]
        );
        let Some(Resource::Organization(organization)) = &events[0].resource else {
            panic!("{:?}", events[0]);
        };
        assert_eq!(organization.name, "metered team");
        assert!(organization.credits.is_none());
        let Some(Resource::Chatbot(bot)) = &events[1].resource else {
            panic!("{:?}", events[1]);
        };
        assert_eq!((bot.id.as_str(), bot.name.as_str()), (chatbot.as_str(), "team bot"));
        let Some(Resource::ApiKey(new_key)) = &events[2].resource else {
            panic!("{:?}", events[2]);
        };
        assert_eq!(new_key.id, key.id);
        assert!(new_key.revoke_time.is_none());
        // A member's email stays out of the event, as from a viewer's list.
        let Some(Resource::Member(joined)) = &events[3].resource else {
            panic!("{:?}", events[3]);
        };
        assert_eq!(joined.user_id, member.id);
        assert_eq!(joined.role, OrganizationRole::Editor as i32);
        assert_eq!(joined.email, "");
        // The new limits, as GetOrganization shows them after the change.
        let Some(Resource::Organization(limited)) = &events[4].resource else {
            panic!("{:?}", events[4]);
        };
        assert_eq!(limited.credits.as_ref().map(|c| c.remaining), Some(500));
        let Some(Resource::ApiKey(revoked)) = &events[5].resource else {
            panic!("{:?}", events[5]);
        };
        assert!(revoked.revoke_time.is_some());
        // Deleted: no state left to carry.
        assert_eq!(events[6].resource, None);

        // No event holds the key's secret, in any field.
        let secret = created.key.as_bytes();
        for event in &events {
            let bytes = prost::Message::encode_to_vec(event);
            assert!(!bytes.windows(secret.len()).any(|w| w == secret), "{event:?}");
        }
    }
}

backend_test! {
    async fn a_replica_serves_at_most_max_event_streams_and_refuses_more_until_one_ends() {
        let app = crate::helpers::spawn_app_with(&["--max-event-streams", "2"]).await;
        let (owner, team, _) = team_with_chatbot(&app).await;
        let first = watch(&app, &owner, &team, None).await.unwrap();
        let _second = watch(&app, &owner, &team, None).await.unwrap();
        let refused = watch(&app, &owner, &team, None).await.unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted);

        // A consumer that goes frees its place (its task sees it gone).
        drop(first);
        crate::helpers::poll_until(
            "a stream's place freed",
            Duration::from_secs(10),
            Duration::from_millis(100),
            || async { watch(&app, &owner, &team, None).await.map(drop).map_err(|s| s.code()) },
            Result::is_ok,
        )
        .await
        .expect("a new stream once one ended");
    }
}

/// The database cut while a consumer watches: the stream ends UNAVAILABLE,
/// and the consumer resumes from its last cursor once the database is back,
/// missing nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_ends_unavailable_when_the_database_goes_and_resumes_after_its_cursor_postgres() {
    let (app, proxy) = crate::helpers::spawn_app_behind_postgres_proxy().await;
    let (owner, team, _) = team_with_chatbot(&app).await;
    let mut stream = watch(&app, &owner, &team, None).await.unwrap();
    let seen = next_events(&mut stream, 2).await;

    proxy.cut();
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ends");
    assert_eq!(ended.unwrap_err().code(), Code::Unavailable);

    proxy.restore();
    until_the_database_answers(&app, &owner, &team).await;
    rename(&app, &owner, &team, "after the cut").await;
    let mut resumed = watch(&app, &owner, &team, Some(&seen[1].cursor))
        .await
        .unwrap();
    let next = next_events(&mut resumed, 1).await;
    assert_eq!(types(&next), ["organization.update"]);
}
