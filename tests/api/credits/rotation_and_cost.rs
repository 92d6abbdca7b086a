//! Credits across a key's rotation and expiry, and rate limits counted in
//! credits.

use super::*;

backend_test! {
    async fn a_rotation_hands_the_limits_to_the_replacement() {
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let created = key_with(
            &app,
            &owner,
            Some(proto::RateLimit { limit: 7, window: window(60), ..Default::default() }),
            Some(credits(30)),
        )
        .await;
        assert!(verify_costing(&app, &created.key, 5).await.valid);
        let rotated = app
            .api_keys(Some(&owner.token))
            .rotate_api_key(proto::RotateApiKeyRequest {
                id: created.api_key.unwrap().id,
                grace_period: None,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let replacement = rotated.api_key.unwrap();
        assert_eq!(replacement.rate_limit.unwrap().limit, 7);
        assert_eq!(replacement.credits.unwrap().remaining, 25);
        assert_eq!(verify_costing(&app, &rotated.key, 5).await.credits_remaining, Some(20));
    }
}

backend_test! {
    async fn update_api_key_cannot_bring_back_an_expired_or_replaced_key() {
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let chatbot = app.create_chatbot(&owner, "revival").await;
        let expiry = |id: i64| api_key_update(key_id(id), &["expire_time"]);

        // An expired key (its expiry moved into the past in the store, as
        // time would) stays expired: reviving it would slip past the
        // chatbot's active-key limit.
        let expired = app.create_api_key(&owner, &chatbot.id).await;
        let expired_id = expired.api_key.unwrap().id;
        let mut conn = app.db.conn().await.unwrap();
        let past = chrono::Utc::now() - chrono::TimeDelta::seconds(5);
        ApiKey::set_label_and_expiry(&mut conn, ApiKeyId(expired_id), None, Some(Some(past)))
            .await
            .unwrap();
        drop(conn);
        assert_code(
            app.api_keys(Some(&owner.token)).update_api_key(expiry(expired_id)).await,
            Code::FailedPrecondition,
        );

        // A key a rotation replaced keeps the end its rotation gave it.
        let replaced = app.create_api_key(&owner, &chatbot.id).await;
        let replaced_id = replaced.api_key.unwrap().id;
        app.api_keys(Some(&owner.token))
            .rotate_api_key(proto::RotateApiKeyRequest {
                id: replaced_id,
                grace_period: window(3600),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_code(
            app.api_keys(Some(&owner.token)).update_api_key(expiry(replaced_id)).await,
            Code::FailedPrecondition,
        );
        assert!(app.get_api_key(&owner, replaced_id).await.expire_time.is_some());

        // A live key's expiry may be cleared.
        let live = app.create_api_key(&owner, &chatbot.id).await;
        let live_id = live.api_key.unwrap().id;
        let updated = app
            .api_keys(Some(&owner.token))
            .update_api_key(expiry(live_id))
            .await
            .unwrap()
            .into_inner()
            .api_key
            .unwrap();
        assert_eq!(updated.expire_time, None);
    }
}

backend_test! {
    async fn a_rate_limit_in_credits_counts_each_call_by_its_cost() {
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let tokens_an_hour = proto::RateLimit {
            limit: 100,
            window: window(3600),
            unit: proto::RateLimitUnit::Credits.into(),
        };
        let created = key_with(&app, &owner, Some(tokens_an_hour), None).await;
        let shown = created.api_key.unwrap().rate_limit.unwrap();
        assert_eq!(shown.unit(), proto::RateLimitUnit::Credits);

        assert!(verify_costing(&app, &created.key, 60).await.valid);
        let over = verify_costing(&app, &created.key, 50).await;
        assert_eq!(over.reason(), VerifyApiKeyReason::RateLimited, "60 + 50 is over 100");
        assert!(verify_costing(&app, &created.key, 40).await.valid, "60 + 40 fits");
        assert_eq!(
            verify_costing(&app, &created.key, 1).await.reason(),
            VerifyApiKeyReason::RateLimited
        );

        // A limit in calls (the default, shown as such) counts 1 a call,
        // whatever it costs, and is bounded by its own maximum.
        let calls = key_with(&app, &owner, Some(proto::RateLimit { limit: 2, window: window(3600), ..Default::default() }), None).await;
        assert_eq!(calls.api_key.unwrap().rate_limit.unwrap().unit(), proto::RateLimitUnit::Calls);
        assert!(verify_costing(&app, &calls.key, 1_000).await.valid);
        assert!(verify_costing(&app, &calls.key, 1_000).await.valid);
        assert_eq!(verify_costing(&app, &calls.key, 1).await.reason(), VerifyApiKeyReason::RateLimited);

        let chatbot = app.create_chatbot(&owner, "bounds").await;
        for (limit, unit, field) in [
            (2_000_000, proto::RateLimitUnit::Calls as i32, "rate_limit.limit"),
            (2_000_000, proto::RateLimitUnit::Credits as i32, "rate_limit.limit"),
            (10, 7, "rate_limit.unit"),
        ] {
            let status = assert_code(
                app.api_keys(Some(&owner.token))
                    .create_api_key(proto::CreateApiKeyRequest {
                        chatbot_id: chatbot.id.clone(),
                        rate_limit: Some(proto::RateLimit { limit, window: window(1), unit }),
                        ..Default::default()
                    })
                    .await,
                Code::InvalidArgument,
            );
            assert_eq!(violated_fields(&status), [field], "{limit} {unit}");
        }
    }
}
