//! Check spending credits exactly through two processes and seeing a
//! revocation, and a route that reserves with the upstream settling.

use super::*;

/// Two server processes on one PostgreSQL, Checked at once: a key's 100
/// credits allow exactly 100 of 130 concurrent Checks through both, and a
/// revocation through one is refused by the other's cache within a second.
#[tokio::test(flavor = "multi_thread")]
async fn checks_through_two_processes_spend_credits_exactly_and_see_a_revocation() {
    let flags = ["--api-key-cache-ttl-secs", "600"];
    let app = spawn_app_with(&flags).await;
    let replica = app
        .spawn_replica_process(&[("API_KEY_CACHE_TTL_SECS", "600")])
        .await;
    let key = key_with(
        &app,
        proto::CreateApiKeyRequest {
            credits: Some(proto::Credits {
                remaining: 100,
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;

    let headers = [("x-api-key", key.as_str())];
    let checks = (0..130).map(|call| {
        let clients: &Clients = if call % 2 == 0 { &app } else { &replica };
        check(clients, &headers, &[])
    });
    let answers: Vec<Answer> = futures_util::future::join_all(checks)
        .await
        .into_iter()
        .map(|answer| answer.expect("Check answers OK"))
        .collect();
    assert_eq!(
        answers.iter().filter(|answer| answer.allowed()).count(),
        100
    );
    for answer in answers.iter().filter(|answer| !answer.allowed()) {
        assert_eq!(answer.http_status, Some(429), "{answer:?}");
        assert_eq!(answer.error(), "credits_exhausted");
    }

    // Cached by the replica, then revoked through the other process.
    let KeyOwner { owner, created, .. } = app.new_key_owner("bot").await;
    assert!(check_key(&replica, &created.key).await.allowed());
    let id = created.api_key.unwrap().id;
    app.revoke_api_key(&owner.token, id).await.unwrap();
    let refused = changed_within_a_second(
        || check_key(&replica, &created.key),
        |answer| answer.http_status == Some(401),
    )
    .await;
    assert_eq!(refused.error(), "api_key_revoked");
}

backend_test! {
    async fn check_refuses_a_restricted_key_with_403_and_passes_what_the_owner_attached() {
        let app = spawn_app().await;
        let key = key_with(
            &app,
            proto::CreateApiKeyRequest {
                allowed_networks: vec!["203.0.113.0/24".into()],
                permissions: vec!["chat.*".into()],
                metadata: [("plan".to_owned(), "pro".to_owned())].into_iter().collect(),
                external_id: "customer-42".into(),
                ..Default::default()
            },
        )
        .await;
        let headers = [("x-api-key", key.as_str())];
        let needs = [("required_permissions", "chat.write, models/gpt-4o")];

        let elsewhere = check_from(&app, "198.51.100.7", &headers, &[]).await;
        assert_eq!(elsewhere.http_status, Some(403));
        assert_eq!(elsewhere.error(), "address_not_allowed");
        let lacking = check_from(&app, "203.0.113.9", &headers, &needs).await;
        assert_eq!(lacking.http_status, Some(403));
        assert_eq!(lacking.error(), "insufficient_permissions");
        assert!(lacking.body.contains("models/gpt-4o") && !lacking.body.contains(&key));

        let allowed = check_from(&app, "203.0.113.9", &headers, &[("required_permissions", "chat.write")]).await;
        assert!(allowed.allowed(), "{allowed:?}");
        assert_eq!(allowed.headers["x-api-key-external-id"], "customer-42");
        assert_eq!(allowed.headers["x-api-key-metadata"], r#"{"plan":"pro"}"#);
        assert_eq!(allowed.metadata["external_id"], "customer-42");

        // A plain key's answer removes a client's own such headers.
        let plain = app.new_key_owner("plain").await.created.key;
        let spoofed = [
            ("x-api-key", plain.as_str()),
            ("x-api-key-external-id", "someone-else"),
        ];
        let answer = check_from(&app, "198.51.100.7", &spoofed, &[]).await;
        assert!(answer.allowed());
        assert!(answer.removed.contains(&"x-api-key-external-id".to_owned()));
        assert!(!answer.headers.contains_key("x-api-key-external-id"));
    }
}

backend_test! {
    async fn a_route_can_reserve_and_the_upstream_settles_with_the_header_it_gets() {
        let app = spawn_app().await;
        let key = key_with(&app, proto::CreateApiKeyRequest {
            credits: Some(proto::Credits { remaining: 100, ..Default::default() }),
            ..Default::default()
        }).await;
        let reserving = [("cost", "40"), ("reserve", "true")];
        // A client's own reservation header never reaches the upstream.
        let sent = [("x-api-key", key.as_str()), ("x-credit-reservation-id", "cbr_forged")];
        let answer = check(&app, &sent, &reserving).await.unwrap();
        assert!(answer.allowed(), "{answer:?}");
        assert_eq!(answer.metadata["credits_remaining"], "60");
        let reservation_id = answer.headers["x-credit-reservation-id"].clone();
        assert!(reservation_id.starts_with("cbr_") && reservation_id != "cbr_forged");
        assert!(answer.headers.contains_key("x-credit-reservation-expire-time"));
        assert!(
            !answer.metadata.values().any(|value| value.contains(&reservation_id[4..])),
            "the id stays out of dynamic metadata, which access logs print"
        );

        let settled = app.api_keys(None)
            .settle_reservation(proto::SettleReservationRequest { reservation_id, actual_cost: 15 })
            .await
            .expect("the upstream settles")
            .into_inner();
        assert_eq!(settled.reservation.unwrap().charged_cost, 15);
        let after = check_key(&app, &key).await;
        assert_eq!(after.metadata["credits_remaining"], "84", "25 refunded, then 1 spent");

        // Without reserve, a client's header is dropped and none is added.
        let plain = check(&app, &sent, &[]).await.unwrap();
        assert!(!plain.headers.contains_key("x-credit-reservation-id"));
        assert!(plain.removed.contains(&"x-credit-reservation-id".to_owned()), "{plain:?}");
        for flag in ["yes", "1", ""] {
            let status = assert_code(
                check(&app, &[("x-api-key", &key)], &[("reserve", flag)]).await,
                Code::InvalidArgument,
            );
            assert_eq!(violated_fields(&status), ["attributes.context_extensions.reserve"]);
        }
    }
}

backend_test! {
    async fn a_key_whose_organization_is_out_of_credits_is_a_429_naming_the_organization() {
        let app = spawn_app().await;
        let (owner, team, chatbot) = crate::organization_limits::team_with_chatbot(&app).await;
        let key = crate::organization_limits::key_on(&app, &owner, &chatbot, None, None).await;
        crate::organization_limits::give_credits(&app, &owner, &team, 5).await;

        let expensive = [("cost", "3")];
        let answer = check(&app, &[("x-api-key", &key)], &expensive).await.unwrap();
        assert!(answer.allowed(), "{answer:?}");
        assert_eq!(answer.metadata["organization_credits_remaining"], "2");
        assert!(!answer.metadata.contains_key("credits_remaining"), "{answer:?}");

        let answer = check(&app, &[("x-api-key", &key)], &expensive).await.unwrap();
        assert_eq!(answer.http_status, Some(429));
        assert_eq!(answer.error(), "credits_exhausted");
        assert_eq!(answer.headers["x-limit-scope"], "organization");
        assert_eq!(answer.headers["ratelimit-remaining"], "2");
    }
}
