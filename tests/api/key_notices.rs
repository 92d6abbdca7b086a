//! Key lifecycle events (issue 30): a key whose expiry comes within
//! KEY_EXPIRY_NOTICE_HOURS, and a key's or an organization's credits falling
//! to the owner's low threshold or running out, each become one event of
//! the organization, told again only after a change re-arms it (a moved
//! expiry, a balance that rose). The servers here sweep every second.

use chatbot_backend::proto;
use tonic::Code;

use crate::events::{next_events, rename, watch};
use crate::helpers::{
    backend_test, spawn_app_with, verify_costing, violated_fields, TestApp, TestUser,
};
use crate::organization_limits::{give_credits, team_with_chatbot};

const SWEEP_EVERY_SECOND: [&str; 2] = ["--lifecycle-events-interval-secs", "1"];

fn credits(remaining: i64, low_threshold: i64) -> Option<proto::Credits> {
    Some(proto::Credits {
        remaining,
        low_threshold,
        ..Default::default()
    })
}

/// The events of `stream` up to a marker: renames the organization and
/// returns what came before the rename's event, so a test sees that
/// nothing more was recorded (the sweep runs every second; the marker is
/// made after at least two sweeps).
async fn events_until_marker(
    app: &TestApp,
    owner: &TestUser,
    team: &str,
    stream: &mut tonic::Streaming<proto::WatchEventsResponse>,
) -> Vec<proto::Event> {
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    rename(app, owner, team, "marker").await;
    let mut seen = Vec::new();
    loop {
        let event = next_events(stream, 1).await.remove(0);
        if event.r#type == "organization.update" {
            return seen;
        }
        seen.push(event);
    }
}

fn types(events: &[proto::Event]) -> Vec<&str> {
    events.iter().map(|event| event.r#type.as_str()).collect()
}

fn change<'a>(event: &'a proto::Event, field: &str) -> &'a str {
    &event
        .changes
        .iter()
        .find(|change| change.field == field)
        .unwrap_or_else(|| panic!("{field} in {event:?}"))
        .new_value
}

fn key_balance(event: &proto::Event) -> i64 {
    match &event.resource {
        Some(proto::event::Resource::ApiKey(key)) => key.credits.as_ref().unwrap().remaining,
        other => panic!("an api_key resource, not {other:?}"),
    }
}

async fn update_key(
    app: &TestApp,
    owner: &TestUser,
    key: proto::ApiKey,
    path: &str,
) -> Result<proto::ApiKey, tonic::Status> {
    Ok(app
        .api_keys(Some(&owner.token))
        .update_api_key(proto::UpdateApiKeyRequest {
            api_key: Some(key),
            update_mask: Some(prost_types::FieldMask {
                paths: vec![path.into()],
            }),
            ..Default::default()
        })
        .await?
        .into_inner()
        .api_key
        .unwrap())
}

backend_test! {
    async fn a_keys_credits_falling_low_and_running_out_are_told_once_each_until_a_top_up() {
        let app = spawn_app_with(&SWEEP_EVERY_SECOND).await;
        let (owner, team, chatbot) = team_with_chatbot(&app).await;
        let request = proto::CreateApiKeyRequest {
            credits: credits(10, 4),
            ..Default::default()
        };
        let created = app.create_api_key_with(&owner, &chatbot, request).await;
        let key = created.api_key.unwrap();
        assert_eq!(key.credits.as_ref().unwrap().low_threshold, 4);
        let mut stream = watch(&app, &owner, &team, None).await.unwrap();
        let start = next_events(&mut stream, 3).await;
        assert_eq!(start[2].r#type, "api_key.create");

        // Above the threshold: nothing. At it: one credits_low.
        assert!(verify_costing(&app, &created.key, 5).await.valid);
        let quiet = events_until_marker(&app, &owner, &team, &mut stream).await;
        assert!(quiet.is_empty(), "{:?}", types(&quiet));
        assert!(verify_costing(&app, &created.key, 1).await.valid);
        let low = events_until_marker(&app, &owner, &team, &mut stream).await;
        assert_eq!(types(&low), ["api_key.credits_low"]);
        assert_eq!(low[0].resource_id, key.id.to_string());
        assert_eq!(change(&low[0], "credits.remaining"), "4");
        assert_eq!(key_balance(&low[0]), 4);

        // Spending on while low tells nothing more; running out does.
        assert!(verify_costing(&app, &created.key, 2).await.valid);
        assert!(verify_costing(&app, &created.key, 2).await.valid);
        let out = events_until_marker(&app, &owner, &team, &mut stream).await;
        assert_eq!(types(&out), ["api_key.credits_exhausted"]);
        assert_eq!(key_balance(&out[0]), 0);

        // A top-up re-arms both: falling again is told again.
        let top_up = proto::ApiKey { id: key.id, credits: credits(6, 0), ..Default::default() };
        update_key(&app, &owner, top_up, "credits.remaining").await.unwrap();
        assert!(verify_costing(&app, &created.key, 3).await.valid);
        let again = events_until_marker(&app, &owner, &team, &mut stream).await;
        assert_eq!(types(&again), ["api_key.update", "api_key.credits_low"]);
        assert_eq!(key_balance(&again[1]), 3);

        // The threshold alone, by its mask path; 0 removes it, and no
        // event comes of a balance under no threshold.
        let none = proto::ApiKey { id: key.id, credits: credits(0, 0), ..Default::default() };
        let updated = update_key(&app, &owner, none, "credits.low_threshold").await.unwrap();
        assert_eq!(updated.credits.as_ref().map(|c| (c.remaining, c.low_threshold)), Some((3, 0)));
        let higher = proto::ApiKey { id: key.id, credits: credits(0, 5), ..Default::default() };
        let updated = update_key(&app, &owner, higher, "credits.low_threshold").await.unwrap();
        assert_eq!(updated.credits.unwrap().low_threshold, 5);
        let rearmed = events_until_marker(&app, &owner, &team, &mut stream).await;
        assert_eq!(
            types(&rearmed),
            ["api_key.update", "api_key.update", "api_key.credits_low"]
        );

        // The audit log names the service as the actor.
        let audit = app
            .audit(Some(&owner.token))
            .list_audit_events(proto::ListAuditEventsRequest {
                action: "api_key.credits_exhausted".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(audit.audit_events.len(), 1);
        assert_eq!(audit.audit_events[0].actor.as_ref().unwrap().command, "key lifecycle");
    }
}

backend_test! {
    async fn a_low_threshold_is_checked_and_needs_credits() {
        let app = spawn_app_with(&SWEEP_EVERY_SECOND).await;
        let (owner, team, chatbot) = team_with_chatbot(&app).await;
        let unlimited = app.create_api_key(&owner, &chatbot).await.api_key.unwrap();
        let threshold = proto::ApiKey { id: unlimited.id, credits: credits(0, 5), ..Default::default() };
        let refused = update_key(&app, &owner, threshold, "credits.low_threshold").await.unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition);
        let negative = proto::ApiKey { id: unlimited.id, credits: credits(10, -1), ..Default::default() };
        let refused = update_key(&app, &owner, negative, "credits").await.unwrap_err();
        assert_eq!(violated_fields(&refused), ["api_key.credits.low_threshold"]);

        let organization = proto::Organization { id: team.clone(), credits: credits(0, 5), ..Default::default() };
        let refused = app
            .organizations(Some(&owner.token))
            .update_organization(proto::UpdateOrganizationRequest {
                organization: Some(organization),
                update_mask: Some(prost_types::FieldMask { paths: vec!["credits.low_threshold".into()] }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition);
    }
}

backend_test! {
    async fn an_organizations_credits_falling_low_and_running_out_are_its_events() {
        let app = spawn_app_with(&SWEEP_EVERY_SECOND).await;
        let (owner, team, chatbot) = team_with_chatbot(&app).await;
        give_credits(&app, &owner, &team, 10).await;
        let threshold = proto::Organization { id: team.clone(), credits: credits(0, 3), ..Default::default() };
        let updated = app
            .organizations(Some(&owner.token))
            .update_organization(proto::UpdateOrganizationRequest {
                organization: Some(threshold),
                update_mask: Some(prost_types::FieldMask { paths: vec!["credits.low_threshold".into()] }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .organization
            .unwrap();
        assert_eq!(updated.credits.map(|c| (c.remaining, c.low_threshold)), Some((10, 3)));
        let created = app.create_api_key(&owner, &chatbot).await;
        let mut stream = watch(&app, &owner, &team, None).await.unwrap();
        next_events(&mut stream, 5).await;

        assert!(verify_costing(&app, &created.key, 8).await.valid);
        let low = events_until_marker(&app, &owner, &team, &mut stream).await;
        assert_eq!(types(&low), ["organization.credits_low"]);
        assert_eq!(low[0].resource_type, "organization");
        assert_eq!(low[0].resource_id, team);
        assert_eq!(change(&low[0], "credits.remaining"), "2");
        match &low[0].resource {
            Some(proto::event::Resource::Organization(organization)) => {
                assert_eq!(organization.credits.as_ref().unwrap().remaining, 2)
            }
            other => panic!("an organization resource, not {other:?}"),
        }
        assert!(verify_costing(&app, &created.key, 2).await.valid);
        let out = events_until_marker(&app, &owner, &team, &mut stream).await;
        assert_eq!(types(&out), ["organization.credits_exhausted"]);
    }
}

backend_test! {
    async fn a_key_expiring_within_the_notice_is_told_once_and_again_when_its_expiry_moves() {
        let app = spawn_app_with(&[SWEEP_EVERY_SECOND[0], SWEEP_EVERY_SECOND[1], "--key-expiry-notice-hours", "24"]).await;
        let (owner, team, chatbot) = team_with_chatbot(&app).await;
        let in_hours = |hours: i64| {
            let at = chrono::Utc::now() + chrono::TimeDelta::hours(hours);
            Some(prost_types::Timestamp { seconds: at.timestamp(), nanos: 0 })
        };
        let expiring = |hours: i64| proto::CreateApiKeyRequest {
            expire_time: in_hours(hours),
            ..Default::default()
        };
        let mut stream = watch(&app, &owner, &team, None).await.unwrap();
        next_events(&mut stream, 2).await;
        let soon = app.create_api_key_with(&owner, &chatbot, expiring(2)).await.api_key.unwrap();
        // Outside the notice, revoked, or never expiring: no event.
        app.create_api_key_with(&owner, &chatbot, expiring(48)).await;
        let revoked = app.create_api_key_with(&owner, &chatbot, expiring(3)).await.api_key.unwrap();
        app.revoke_api_key(&owner.token, revoked.id).await.unwrap();
        app.create_api_key(&owner, &chatbot).await;

        let seen = events_until_marker(&app, &owner, &team, &mut stream).await;
        let lifecycle: Vec<&proto::Event> =
            seen.iter().filter(|event| event.r#type == "api_key.expiring").collect();
        assert_eq!(lifecycle.len(), 1, "{:?}", types(&seen));
        assert_eq!(lifecycle[0].resource_id, soon.id.to_string());
        let told = change(lifecycle[0], "expire_time");
        let expected = chrono::DateTime::from_timestamp(soon.expire_time.unwrap().seconds, 0).unwrap();
        assert_eq!(chrono::DateTime::parse_from_rfc3339(told).unwrap(), expected);

        // Moving the expiry (still within the notice) tells it again.
        let moved = proto::ApiKey { id: soon.id, expire_time: in_hours(5), ..Default::default() };
        update_key(&app, &owner, moved, "expire_time").await.unwrap();
        let again = events_until_marker(&app, &owner, &team, &mut stream).await;
        assert_eq!(types(&again), ["api_key.update", "api_key.expiring"]);
    }
}

/// With two server processes sweeping one database, each notice is one
/// event: the notice column flips under the row's lock in the event's
/// transaction.
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_tell_each_notice_once_postgres() {
    let app = spawn_app_with(&SWEEP_EVERY_SECOND).await;
    let replica = app
        .spawn_replica_process(&[("LIFECYCLE_EVENTS_INTERVAL_SECS", "1")])
        .await;
    let (owner, team, chatbot) = team_with_chatbot(&app).await;
    let mut stream = watch(&app, &owner, &team, None).await.unwrap();
    next_events(&mut stream, 2).await;
    let mut keys = Vec::new();
    for _ in 0..20 {
        let request = proto::CreateApiKeyRequest {
            credits: credits(2, 1),
            ..Default::default()
        };
        keys.push(app.create_api_key_with(&owner, &chatbot, request).await.key);
    }
    // Spent through both replicas at once, down to the threshold.
    let spends = keys.iter().enumerate().map(|(i, key)| {
        let (app, replica) = (&app, &replica);
        async move {
            match i % 2 {
                0 => verify_costing(app, key, 1).await,
                _ => verify_costing(replica, key, 1).await,
            }
        }
    });
    let answers = futures_util::future::join_all(spends).await;
    assert!(answers.iter().all(|answer| answer.valid));
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let seen = events_until_marker(&app, &owner, &team, &mut stream).await;
    let mut low: Vec<&str> = seen
        .iter()
        .filter(|event| event.r#type == "api_key.credits_low")
        .map(|event| event.resource_id.as_str())
        .collect();
    assert_eq!(low.len(), 20, "{:?}", types(&seen));
    low.sort();
    low.dedup();
    assert_eq!(low.len(), 20, "each key's notice once");
}

/// A balance that fell while the database was cut off is told once the
/// database is back: the sweeps that failed recorded nothing, and the one
/// that succeeds records the notice and its event together.
#[tokio::test(flavor = "multi_thread")]
async fn a_notice_due_while_the_database_is_cut_is_told_once_when_it_returns_postgres() {
    let (app, proxy) =
        crate::helpers::spawn_app_behind_postgres_proxy_with(&SWEEP_EVERY_SECOND).await;
    let (owner, team, chatbot) = team_with_chatbot(&app).await;
    let request = proto::CreateApiKeyRequest {
        credits: credits(5, 4),
        ..Default::default()
    };
    let created = app.create_api_key_with(&owner, &chatbot, request).await;
    let mut stream = watch(&app, &owner, &team, None).await.unwrap();
    let before = next_events(&mut stream, 3).await;
    drop(stream);

    assert!(verify_costing(&app, &created.key, 1).await.valid);
    proxy.cut();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    proxy.restore();
    crate::events::until_the_database_answers(&app, &owner, &team).await;
    let mut resumed = watch(&app, &owner, &team, Some(&before[2].cursor))
        .await
        .unwrap();
    let seen = events_until_marker(&app, &owner, &team, &mut resumed).await;
    assert_eq!(types(&seen), ["api_key.credits_low"]);
}
