//! Organizations' own rate limit and credits (issue 29), shared by every key
//! of every chatbot the organization owns: a verification must fit both
//! the key's limits and its organization's, spends from both or from
//! neither, and a refusal says whose limit refused it. Set by the
//! organization's owners and platform admins; new limits apply at the next
//! verification on every replica.

use chatbot_backend::proto::{self, LimitScope, OrganizationRole, VerifyApiKeyReason};
use tonic::{Code, Status};

use crate::helpers::{
    assert_code, backend_test, eventually, reserve_and_settle_across, spawn_app, spawn_app_with,
    verify_costing, violated_fields, Clients, TestApp, TestUser,
};
use crate::shared_limits::{app_and_replica_on_redis, redis_addr, redis_url, RedisPrefix};

/// UpdateOrganization of `changes` (with `id`) under `paths`, by `caller`.
async fn update_organization(
    clients: &Clients,
    caller: &TestUser,
    changes: proto::Organization,
    paths: &[&str],
) -> Result<proto::Organization, Status> {
    let updated = clients
        .organizations(Some(&caller.token))
        .update_organization(proto::UpdateOrganizationRequest {
            organization: Some(changes),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|path| (*path).to_owned()).collect(),
            }),
            ..Default::default()
        })
        .await?;
    Ok(updated.into_inner().organization.unwrap())
}

fn credits(remaining: i64) -> Option<proto::Credits> {
    Some(proto::Credits {
        remaining,
        ..Default::default()
    })
}

fn per_minute(limit: i64) -> Option<proto::RateLimit> {
    Some(proto::RateLimit {
        limit,
        window: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        unit: proto::RateLimitUnit::Calls.into(),
    })
}

/// Sets the organization's credits to `remaining` (by its owner).
pub async fn give_credits(app: &TestApp, owner: &TestUser, organization_id: &str, remaining: i64) {
    let changes = proto::Organization {
        id: organization_id.into(),
        credits: credits(remaining),
        ..Default::default()
    };
    update_organization(app, owner, changes, &["credits"])
        .await
        .expect("the owner sets the organization's credits");
}

/// A team of a new owner with one chatbot: the owner, the team's id and
/// the chatbot's id.
pub async fn team_with_chatbot(app: &TestApp) -> (TestUser, String, String) {
    let owner = app.new_user().await;
    let team = app.create_organization(&owner, "metered team").await;
    let chatbot = app
        .create_chatbot_from(
            &owner.token,
            proto::CreateChatbotRequest {
                name: "team bot".into(),
                llm_endpoint_url: "https://llm.example.com/v1/chat".into(),
                organization_id: team.id.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("create chatbot in the team");
    (owner, team.id, chatbot.id)
}

/// A key on `chatbot_id` with its own `key_credits` (none: unlimited) and
/// rate limit: its secret.
pub async fn key_on(
    app: &TestApp,
    owner: &TestUser,
    chatbot_id: &str,
    key_credits: Option<i64>,
    rate_limit: Option<proto::RateLimit>,
) -> String {
    let request = proto::CreateApiKeyRequest {
        credits: key_credits.and_then(credits),
        rate_limit,
        ..Default::default()
    };
    app.create_api_key_with(owner, chatbot_id, request)
        .await
        .key
}

pub async fn organization_balance(app: &TestApp, caller: &TestUser, id: &str) -> Option<i64> {
    let organization = app
        .organizations(Some(&caller.token))
        .get_organization(proto::GetOrganizationRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap();
    organization.credits.map(|credits| credits.remaining)
}

backend_test! {
    async fn an_organizations_credits_are_shared_by_its_keys_and_a_refusal_names_whose_ran_out() {
        let app = spawn_app().await;
        let (owner, team, chatbot) = team_with_chatbot(&app).await;
        let with_own = key_on(&app, &owner, &chatbot, Some(100), None).await;
        let unlimited = key_on(&app, &owner, &chatbot, None, None).await;
        // Verified once before the team has credits: its cached row must
        // not outlive the change.
        assert!(app.verify(&unlimited).await.valid);
        give_credits(&app, &owner, &team, 10).await;

        let spent = verify_costing(&app, &with_own, 4).await;
        assert!(spent.valid, "{spent:?}");
        assert_eq!(spent.credits_remaining, Some(96));
        assert_eq!(spent.organization_credits_remaining, Some(6));
        let spent = verify_costing(&app, &unlimited, 5).await;
        assert!(spent.valid, "{spent:?}");
        assert_eq!(spent.credits_remaining, None);
        assert_eq!(spent.organization_credits_remaining, Some(1));

        // The team's balance refuses, and neither balance is spent.
        let refused = verify_costing(&app, &unlimited, 2).await;
        assert_eq!(refused.reason(), VerifyApiKeyReason::UsageExceeded);
        assert_eq!(refused.limit_scope(), LimitScope::Organization);
        assert_eq!(refused.organization_credits_remaining, Some(1));
        assert_eq!(refused.credits_remaining, None);
        let refused = verify_costing(&app, &with_own, 2).await;
        assert_eq!(refused.limit_scope(), LimitScope::Organization);
        // The key's own balance is judged first.
        let refused = verify_costing(&app, &with_own, 500).await;
        assert_eq!(refused.reason(), VerifyApiKeyReason::UsageExceeded);
        assert_eq!(refused.limit_scope(), LimitScope::ApiKey);
        assert_eq!(refused.credits_remaining, Some(96));
        assert_eq!(organization_balance(&app, &owner, &team).await, Some(1));

        // A top-up applies to the next call; removing the credits makes
        // the team unlimited again.
        let top_up = proto::Organization {
            id: team.clone(),
            credits: credits(50),
            ..Default::default()
        };
        let topped = update_organization(&app, &owner, top_up, &["credits.remaining"])
            .await
            .unwrap();
        assert_eq!(topped.credits.unwrap().remaining, 50);
        let spent = verify_costing(&app, &with_own, 30).await;
        assert_eq!(spent.organization_credits_remaining, Some(20));
        assert_eq!(spent.credits_remaining, Some(66));
        let unset = proto::Organization {
            id: team.clone(),
            ..Default::default()
        };
        let cleared = update_organization(&app, &owner, unset, &["credits"]).await.unwrap();
        assert_eq!(cleared.credits, None);
        let spent = verify_costing(&app, &unlimited, 1_000).await;
        assert!(spent.valid, "{spent:?}");
        assert_eq!(spent.organization_credits_remaining, None);
    }
}

backend_test! {
    async fn reservations_hold_on_the_organizations_balance_and_give_back_there() {
        let app = spawn_app_with(&["--usage-flush-interval-secs", "1"]).await;
        let (owner, team, chatbot) = team_with_chatbot(&app).await;
        let key = key_on(&app, &owner, &chatbot, None, None).await;
        give_credits(&app, &owner, &team, 1_000).await;
        let reserve = |cost| {
            let key = key.clone();
            let app = &app;
            async move {
                app.api_keys(None)
                    .verify_api_key(proto::VerifyApiKeyRequest {
                        key,
                        cost,
                        reserve: true,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
            }
        };
        let held = reserve(100).await;
        assert!(held.valid, "{held:?}");
        assert_eq!(held.organization_credits_remaining, Some(900));
        let settled = app
            .api_keys(None)
            .settle_reservation(proto::SettleReservationRequest {
                reservation_id: held.reservation_id.clone(),
                actual_cost: 30,
            })
            .await
            .unwrap()
            .into_inner()
            .reservation
            .unwrap();
        assert_eq!(settled.charged_cost, 30);
        assert_eq!(organization_balance(&app, &owner, &team).await, Some(970));
        let held = reserve(500).await;
        assert_eq!(held.organization_credits_remaining, Some(470));
        app.api_keys(None)
            .release_reservation(proto::ReleaseReservationRequest {
                reservation_id: held.reservation_id.clone(),
            })
            .await
            .unwrap();
        assert_eq!(organization_balance(&app, &owner, &team).await, Some(970));
        // The team's usage history counts what its keys held, settled and
        // got back.
        let metered = || async {
            let usage = app
                .organizations(Some(&owner.token))
                .get_organization_usage(proto::GetOrganizationUsageRequest {
                    organization_id: team.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let total = usage.total.unwrap();
            (total.credits_reserved, total.credits_settled, total.credits_refunded)
        };
        eventually((600, 30, 570), metered).await;
    }
}

backend_test! {
    async fn an_organizations_rate_limit_is_shared_by_its_keys_and_a_refusal_names_it() {
        let app = spawn_app().await;
        let (owner, team, chatbot) = team_with_chatbot(&app).await;
        let first = key_on(&app, &owner, &chatbot, None, per_minute(100)).await;
        let second = key_on(&app, &owner, &chatbot, None, None).await;
        let limited = key_on(&app, &owner, &chatbot, None, per_minute(1)).await;
        let limit = proto::Organization {
            id: team.clone(),
            rate_limit: per_minute(4),
            ..Default::default()
        };
        let set = update_organization(&app, &owner, limit, &["rate_limit"]).await.unwrap();
        assert_eq!(set.rate_limit.unwrap().limit, 4);

        // The key's own limit refuses first, and that refusal does not
        // count against the team.
        assert!(app.verify(&limited).await.valid);
        let refused = app.verify(&limited).await;
        assert_eq!(refused.reason(), VerifyApiKeyReason::RateLimited);
        assert_eq!(refused.limit_scope(), LimitScope::ApiKey);
        // Three more calls by two keys fill the team's four.
        for key in [&first, &second, &first] {
            let answer = app.verify(key).await;
            assert!(answer.valid, "{answer:?}");
        }
        let refused = app.verify(&second).await;
        assert_eq!(refused.reason(), VerifyApiKeyReason::RateLimited);
        assert_eq!(refused.limit_scope(), LimitScope::Organization);
        assert!(refused.reset_time.is_some());
        // Raised, the next call goes through at once.
        let raised = proto::Organization {
            id: team.clone(),
            rate_limit: per_minute(10),
            ..Default::default()
        };
        update_organization(&app, &owner, raised, &["rate_limit"]).await.unwrap();
        assert!(app.verify(&second).await.valid);
    }
}

backend_test! {
    async fn only_owners_and_platform_admins_set_an_organizations_limits_and_members_see_them() {
        let app = spawn_app().await;
        let (owner, team, _) = team_with_chatbot(&app).await;
        let editor = app.new_member(&owner, &team, OrganizationRole::Editor).await;
        let viewer = app.new_member(&owner, &team, OrganizationRole::Viewer).await;
        let admin = app.new_admin().await;
        let budget = |remaining| proto::Organization {
            id: team.clone(),
            credits: credits(remaining),
            ..Default::default()
        };
        let by_editor = update_organization(&app, &editor, budget(5), &["credits"]).await;
        assert_code(by_editor, Code::PermissionDenied);
        let by_viewer = update_organization(&app, &viewer, budget(5), &["credits"]).await;
        assert_code(by_viewer, Code::PermissionDenied);
        update_organization(&app, &admin, budget(7), &["credits"]).await.unwrap();
        assert_eq!(organization_balance(&app, &viewer, &team).await, Some(7));
        update_organization(&app, &owner, budget(9), &["credits"]).await.unwrap();
        assert_eq!(organization_balance(&app, &editor, &team).await, Some(9));
        let listed = app
            .organizations(Some(&viewer.token))
            .list_organizations(proto::ListOrganizationsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .organizations;
        let listed = listed.iter().find(|o| o.id == team).unwrap();
        assert_eq!(listed.credits.as_ref().unwrap().remaining, 9);

        // Bad limits name their fields.
        let bad = proto::Organization {
            id: team.clone(),
            credits: credits(-1),
            rate_limit: per_minute(0),
            ..Default::default()
        };
        let refused = update_organization(&app, &owner, bad, &["credits", "rate_limit"]).await;
        let status = assert_code(refused, Code::InvalidArgument);
        let mut fields = violated_fields(&status);
        fields.sort();
        assert_eq!(
            fields,
            ["organization.credits.remaining", "organization.rate_limit.limit"]
        );
        let both = update_organization(&app, &owner, budget(1), &["credits", "credits.remaining"]).await;
        let status = assert_code(both, Code::InvalidArgument);
        assert_eq!(violated_fields(&status), ["update_mask"]);
        let output_only = update_organization(&app, &owner, budget(1), &["credits.next_refill_time"]).await;
        assert_code(output_only, Code::InvalidArgument);
        // Nothing changed.
        assert_eq!(organization_balance(&app, &owner, &team).await, Some(9));
    }
}

/// 200 reservations with random real costs over four keys of one team,
/// through two server processes: the team's balance ends at its start
/// minus exactly what was settled, and no reservation was granted past it.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_reservations_of_many_keys_over_two_replicas_never_overrun_the_organization_postgres(
) {
    let app = spawn_app().await;
    let (owner, team, chatbot) = team_with_chatbot(&app).await;
    let mut keys = Vec::new();
    for own in [None, None, Some(1_000_000), Some(1_000_000)] {
        keys.push(key_on(&app, &owner, &chatbot, own, None).await);
    }
    let replica = app.spawn_replica_process(&[]).await;
    // The replica holds the keys' rows before the team gets credits: the
    // change reaches its cache.
    for key in &keys {
        assert!(replica.verify(key).await.valid);
    }
    give_credits(&app, &owner, &team, 5_000).await;
    let probe = keys[0].clone();
    eventually(Some(4_999), || async {
        verify_costing(&replica, &probe, 1)
            .await
            .organization_credits_remaining
    })
    .await;
    let charged = reserve_and_settle_across(&app, &replica, &keys, |answer| {
        if !answer.valid {
            assert_eq!(answer.limit_scope(), LimitScope::Organization);
        }
        answer.organization_credits_remaining
    })
    .await;
    assert_eq!(
        organization_balance(&app, &owner, &team).await,
        Some(5_000 - 1 - charged)
    );
}

/// With Redis, the team's rate limit holds across replicas: two processes
/// verifying two keys of the team let through the team's limit, not one
/// per replica.
#[tokio::test(flavor = "multi_thread")]
async fn an_organizations_rate_limit_holds_across_replicas_sharing_redis() {
    let prefix = RedisPrefix::new();
    let url = redis_url(redis_addr());
    let (app, replica) = app_and_replica_on_redis(&url, &prefix, &[]).await;
    let (owner, team, chatbot) = team_with_chatbot(&app).await;
    let keys = [
        key_on(&app, &owner, &chatbot, None, None).await,
        key_on(&app, &owner, &chatbot, None, None).await,
    ];
    let limit = proto::Organization {
        id: team.clone(),
        rate_limit: per_minute(6),
        ..Default::default()
    };
    update_organization(&app, &owner, limit, &["rate_limit"])
        .await
        .unwrap();
    let mut allowed = 0;
    for call in 0..20 {
        let through: &Clients = if call % 2 == 0 { &app } else { &replica };
        let answer = through.verify(&keys[(call / 2) % 2]).await;
        if answer.valid {
            allowed += 1;
        } else {
            assert_eq!(answer.limit_scope(), LimitScope::Organization);
        }
    }
    // Six a minute, in a burst of six; a call refills every ten seconds.
    assert!((6..=7).contains(&allowed), "{allowed} of 20 let through");
}
