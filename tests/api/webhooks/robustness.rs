//! Webhooks under misuse and faults: who may manage them, two replicas
//! delivering each event once, endpoints that hang or are cut or garble, the
//! organization's limit under concurrent creates, documented errors, retries.

use super::*;

backend_test! {
    async fn only_an_organizations_owners_manage_its_webhooks_and_bad_input_names_its_fields() {
        let app = spawn_app_with(&[]).await;
        let (owner, team, _) = team_with_chatbot(&app).await;
        let editor = app.new_member(&owner, &team, OrganizationRole::Editor).await;
        let stranger = app.new_user().await;

        // Without the private-targets setting, a loopback URL is refused.
        let refused = create_webhook(&app, &owner, &team, "http://127.0.0.1:9/hooks", &[]).await;
        let status = refused.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&status), ["webhook.url"]);
        let refused = create_webhook(
            &app,
            &owner,
            &team,
            "https://hooks.example.com/in",
            &["api_key.revoke", "no.such_type"],
        )
        .await
        .unwrap_err();
        assert_eq!(violated_fields(&refused), ["webhook.event_types"]);

        let created = create_webhook(&app, &owner, &team, "https://hooks.example.com/in", &[])
            .await
            .unwrap();
        let id = created.webhook.unwrap().id;
        for (who, code) in [(&editor, Code::PermissionDenied), (&stranger, Code::PermissionDenied)] {
            let status = create_webhook(&app, who, &team, "https://hooks.example.com/x", &[])
                .await
                .unwrap_err();
            assert_eq!(status.code(), code);
            let status = app
                .webhooks(Some(&who.token))
                .get_webhook(proto::GetWebhookRequest { id: id.clone() })
                .await
                .unwrap_err();
            assert_eq!(status.code(), code);
        }
        // A webhook that does not exist: the same answer for a stranger.
        let status = app
            .webhooks(Some(&stranger.token))
            .delete_webhook(proto::DeleteWebhookRequest { id: uuid::Uuid::new_v4().to_string() })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);

        let listed = app
            .webhooks(Some(&owner.token))
            .list_webhooks(proto::ListWebhooksRequest { organization_id: team.clone() })
            .await
            .unwrap()
            .into_inner()
            .webhooks;
        assert_eq!(listed.len(), 1);
        app.webhooks(Some(&owner.token))
            .delete_webhook(proto::DeleteWebhookRequest { id: id.clone() })
            .await
            .unwrap();
        let status = app
            .webhooks(Some(&owner.token))
            .get_webhook(proto::GetWebhookRequest { id })
            .await
            .unwrap_err();
        // Gone, its organization is unknown: as for any webhook the caller
        // cannot be shown (only platform admins learn NOT_FOUND).
        assert_eq!(status.code(), Code::PermissionDenied);
    }
}

/// Two server processes on one database: each event reaches each endpoint
/// once, in the organization's order.
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_deliver_each_event_once_per_endpoint_in_order_postgres() {
    let (first, second) = (Receiver::start().await, Receiver::start().await);
    let app = spawn_app_with(FLAGS).await;
    let replica = app
        .spawn_replica_process(&[
            ("WEBHOOK_ALLOW_PRIVATE_TARGETS", "true"),
            ("WEBHOOK_RETRY_BASE_MILLIS", "50"),
        ])
        .await;
    let (owner, team, chatbot) = team_with_chatbot(&app).await;
    for receiver in [&first, &second] {
        create_webhook(&app, &owner, &team, &receiver.url, &["api_key.create"])
            .await
            .unwrap();
    }
    let on = [(&owner, chatbot.as_str())];
    crate::helpers::create_keys_through_both(&app, &replica, &on, 30).await;
    for receiver in [&first, &second] {
        let received = receiver.wait_for(30).await;
        let numbers: Vec<i64> = received
            .iter()
            .map(|r| {
                r.json()["data"]["cursor"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        let mut sorted = numbers.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(numbers, sorted, "in order, each once");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!((first.received().len(), second.received().len()), (30, 30));
    drop(replica);
}

backend_test! {
    async fn a_hanging_endpoint_holds_up_no_request() {
        let receiver = Receiver::start().await;
        receiver.answer(Answer::Hang);
        // Two pooled connections: a delivery holding one while the endpoint
        // hangs would starve the requests below.
        let app = spawn_app_with(&[
            "--webhook-allow-private-targets",
            "true",
            "--database-pool-size",
            "2",
            "--webhook-timeout-secs",
            "30",
        ])
        .await;
        let (owner, team, chatbot) = team_with_chatbot(&app).await;
        for _ in 0..4 {
            create_webhook(&app, &owner, &team, &receiver.url, &[]).await.unwrap();
        }
        let key = app.create_api_key(&owner, &chatbot).await;
        receiver.wait_for(4).await;

        // Every endpoint is now hanging on a request; calls go on.
        let verifications = (0..200).map(|_| app.verify(&key.key));
        let answers = futures_util::future::join_all(verifications).await;
        assert!(answers.iter().all(|answer| answer.valid));
        for i in 0..10 {
            rename(&app, &owner, &team, &format!("while hanging {i}")).await;
        }
        app.create_chatbot(&owner, "still served").await;
    }
}

backend_test! {
    async fn events_sent_while_the_endpoint_is_cut_or_garbled_arrive_in_order_when_it_returns() {
        let receiver = Receiver::start().await;
        let receiver_addr: std::net::SocketAddr = receiver
            .url
            .trim_start_matches("http://")
            .trim_end_matches("/hooks")
            .parse()
            .unwrap();
        let proxy = crate::helpers::TcpProxy::start(receiver_addr).await;
        let app = spawn_app_with(&[
            "--webhook-allow-private-targets",
            "true",
            "--webhook-retry-base-millis",
            "20",
            "--webhook-max-attempts",
            "30",
            "--webhook-timeout-secs",
            "1",
        ])
        .await;
        let (owner, team, _) = team_with_chatbot(&app).await;
        let url = format!("http://{}/hooks", proxy.addr);
        create_webhook(&app, &owner, &team, &url, &["organization.update"])
            .await
            .unwrap();
        rename(&app, &owner, &team, "before").await;
        receiver.wait_for(1).await;

        proxy.cut();
        for i in 0..3 {
            rename(&app, &owner, &team, &format!("cut {i}")).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.restore();
        proxy.garble();
        for i in 0..3 {
            rename(&app, &owner, &team, &format!("garbled {i}")).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.restore();

        // Every event, in order; one the endpoint got but whose answer was
        // lost comes again (same id) before the next.
        let mut stream = watch(&app, &owner, &team, None).await.unwrap();
        let events = next_events(&mut stream, 10).await;
        let expected: Vec<String> = events
            .iter()
            .filter(|event| event.r#type == "organization.update")
            .map(|event| event.id.clone())
            .collect();
        let received = poll_until(
            "every event delivered",
            Duration::from_secs(30),
            Duration::from_millis(50),
            || async { receiver.received() },
            |received: &Vec<Received>| {
                let mut ids: Vec<String> = received.iter().map(|r| r.id.clone()).collect();
                ids.dedup();
                ids.len() >= expected.len()
            },
        )
        .await;
        let mut ids: Vec<String> = received.iter().map(|r| r.id.clone()).collect();
        ids.dedup();
        assert_eq!(ids, expected);
    }
}

/// Twenty-five CreateWebhook calls at once through two server processes:
/// exactly twenty succeed (the organization's limit), the rest are
/// FAILED_PRECONDITION.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_creates_through_two_replicas_stop_at_the_organizations_limit_postgres() {
    let app = spawn_app_with(&[]).await;
    let replica = app.spawn_replica_process(&[]).await;
    let (owner, team, _) = team_with_chatbot(&app).await;
    let creates = (0..25).map(|i| {
        let through: &Clients = if i % 2 == 0 { &app } else { &replica };
        let (owner, team) = (&owner, &team);
        async move {
            let url = format!("https://hooks.example.com/{i}");
            create_webhook(through, owner, team, &url, &[]).await
        }
    });
    let answers = futures_util::future::join_all(creates).await;
    let created = answers.iter().filter(|answer| answer.is_ok()).count();
    assert_eq!(created, 20);
    for refused in answers.iter().filter_map(|answer| answer.as_ref().err()) {
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    }
    let listed = app
        .webhooks(Some(&owner.token))
        .list_webhooks(proto::ListWebhooksRequest {
            organization_id: team,
        })
        .await
        .unwrap()
        .into_inner()
        .webhooks;
    assert_eq!(listed.len(), 20);
    drop(replica);
}

backend_test! {
    async fn update_list_deliveries_and_redeliver_answer_each_documented_error() {
        let app = spawn_app_with(&[]).await;
        let (owner, team, _) = team_with_chatbot(&app).await;
        let editor = app.new_member(&owner, &team, OrganizationRole::Editor).await;
        // Only for an event this test never makes: no delivery is ever
        // attempted, so the listing below is empty whenever it runs.
        let url = "https://hooks.example.com/in";
        let id = create_webhook(&app, &owner, &team, url, &["chatbot.delete"])
            .await
            .unwrap()
            .webhook
            .unwrap()
            .id;
        let update = |token: &str, webhook: proto::Webhook, paths: &[&str]| {
            let request = proto::UpdateWebhookRequest {
                webhook: Some(webhook),
                update_mask: Some(prost_types::FieldMask {
                    paths: paths.iter().map(|p| (*p).to_owned()).collect(),
                }),
            };
            let mut client = app.webhooks(Some(token));
            async move { client.update_webhook(request).await }
        };

        // UpdateWebhook: every bad field named at once; output-only paths
        // refused; an editor may not; the owner may.
        let bad = proto::Webhook {
            id: id.clone(),
            url: "ftp://hooks.example.com".into(),
            state: WebhookState::Unspecified.into(),
            ..Default::default()
        };
        let status = update(&owner.token, bad, &["url", "state", "disabled_reason"])
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            violated_fields(&status),
            ["update_mask", "webhook.url", "webhook.state"]
        );
        let renamed = proto::Webhook {
            id: id.clone(),
            description: "billing".into(),
            ..Default::default()
        };
        let status = update(&editor.token, renamed.clone(), &["description"]).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        let updated = update(&owner.token, renamed, &["description"])
            .await
            .unwrap()
            .into_inner()
            .webhook
            .unwrap();
        assert_eq!(updated.description, "billing");

        // ListWebhookDeliveries: a malformed id; an editor; none yet.
        let list = |token: &str, webhook: &str, page_size: i32| {
            let request = proto::ListWebhookDeliveriesRequest {
                webhook_id: webhook.into(),
                page_size,
                ..Default::default()
            };
            let mut client = app.webhooks(Some(token));
            async move { client.list_webhook_deliveries(request).await }
        };
        let status = list(&owner.token, "not-a-uuid", -1).await.unwrap_err();
        assert_eq!(violated_fields(&status), ["webhook_id", "page_size"]);
        let status = list(&editor.token, &id, 0).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        let listed = list(&owner.token, &id, 0).await.unwrap().into_inner();
        assert!(listed.deliveries.is_empty() && listed.next_page_token.is_empty());

        // RedeliverWebhook: a malformed id; one that does not exist (the
        // same answer as a delivery the caller may not see).
        let redeliver = |token: &str, delivery: &str| {
            let request = proto::RedeliverWebhookRequest {
                delivery_id: delivery.into(),
            };
            let mut client = app.webhooks(Some(token));
            async move { client.redeliver_webhook(request).await }
        };
        let status = redeliver(&owner.token, "nope").await.unwrap_err();
        assert_eq!(violated_fields(&status), ["delivery_id"]);
        let status = redeliver(&owner.token, &uuid::Uuid::new_v4().to_string())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        // A platform admin learns that it does not exist.
        let admin = app.new_admin().await;
        let status = redeliver(&admin.token, &uuid::Uuid::new_v4().to_string())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }
}

backend_test! {
    async fn a_retried_create_webhook_answers_the_same_webhook_and_secret() {
        let app = spawn_app_with(FLAGS).await;
        let (owner, team, _) = team_with_chatbot(&app).await;
        let url = "https://hooks.example.com/retried";
        let id = "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d";
        let only = ["chatbot.delete"];
        let first = create_webhook_once(&app, &owner, &team, url, &only, id).await.unwrap();
        let again = create_webhook_once(&app, &owner, &team, url, &only, id).await.unwrap();
        assert_eq!(again.webhook.as_ref().unwrap().id, first.webhook.as_ref().unwrap().id);
        assert_eq!(again.signing_secret, first.signing_secret);
        let other = create_webhook_once(&app, &owner, &team, url, &["chatbot.create"], id).await;
        assert_eq!(violated_fields(&other.unwrap_err()), ["request_id"]);
        let listed = app
            .webhooks(Some(&owner.token))
            .list_webhooks(proto::ListWebhooksRequest { organization_id: team })
            .await
            .unwrap()
            .into_inner()
            .webhooks;
        assert_eq!(listed.len(), 1);
    }
}
