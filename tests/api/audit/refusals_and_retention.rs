//! Refused attempts folded into one event an hour (concurrently too), the
//! purge of expired events, and actors named by the email they acted under.

use super::*;

backend_test! {
    async fn refused_attempts_are_one_event_per_hour_with_their_repeats() {
        let app = spawn_app().await;
        let admin = app.new_admin().await;
        let owner = app.new_user().await;
        let stranger = app.new_user().await;
        let chatbot = app.create_chatbot(&owner, "guarded").await;
        let hour_started = clock_hour();
        for _ in 0..3 {
            assert_code(app.login(&owner.email, "not the password").await, Code::Unauthenticated);
        }
        for _ in 0..2 {
            assert_code(
                app.login("nobody-at-all@example.com", "not the password").await,
                Code::Unauthenticated,
            );
        }
        for _ in 0..2 {
            assert_code(
                app.delete_chatbot(&stranger.token, &chatbot.id).await,
                Code::PermissionDenied,
            );
        }

        let refused: Vec<_> = all_events(&app, &admin)
            .await
            .into_iter()
            .filter(|event| event.outcome() == AuditOutcome::Denied)
            .collect();
        let summary = repeats_by_attempt(&refused, hour_started);
        assert_eq!(
            summary,
            [
                ("rpc.permission_denied", "rpc", "DeleteChatbot", 2),
                ("session.login_failed", "user", "", 2),
                ("session.login_failed", "user", owner.id.as_str(), 3),
            ]
            .map(|(action, kind, id, repeats)| (action.to_owned(), kind.to_owned(), id.to_owned(), repeats))
        );
        for event in &refused {
            let actor = &event.actor.as_ref().unwrap().user_id;
            match event.action.as_str() {
                "rpc.permission_denied" => assert_eq!(actor, &stranger.id),
                _ => assert!(actor.is_empty(), "{event:?}"),
            }
        }
        assert!(refused.iter().all(|event| event.client_address == "127.0.0.1"));
        assert!(refused
            .iter()
            .all(|event| event.last_time.unwrap().seconds >= event.time.unwrap().seconds));
        // Nobody learns from the log who tried to get in: neither the
        // owner, nor the stranger.
        for user in [&owner, &stranger] {
            assert!(all_events(&app, user)
                .await
                .iter()
                .all(|event| event.outcome() == AuditOutcome::Succeeded));
        }
        let text = format!("{refused:?}");
        assert!(!text.contains("not the password") && !text.contains("nobody-at-all"));
    }
}

backend_test! {
    async fn the_purge_deletes_expired_events_oldest_first_in_batches() {
        use chatbot_backend::db::models::AuditEvent;
        let app = spawn_app().await;
        let admin = app.new_admin().await;
        let owner = app.new_user().await;
        for name in ["one", "two", "three"] {
            app.create_chatbot(&owner, name).await;
        }
        let before = all_events(&app, &admin).await.len();
        let mut conn = app.db.conn().await.unwrap();
        // Nothing has expired a day ago.
        let a_day_ago = chrono::Utc::now() - chrono::TimeDelta::days(1);
        assert_eq!(AuditEvent::purge(&mut conn, a_day_ago, 100).await.unwrap(), 0);
        // As of an hour from now everything has: two at a time, oldest first.
        let later = chrono::Utc::now() + chrono::TimeDelta::hours(1);
        let oldest = all_events(&app, &admin).await.last().unwrap().id;
        assert_eq!(AuditEvent::purge(&mut conn, later, 2).await.unwrap(), 2);
        let left = all_events(&app, &admin).await;
        assert_eq!(left.len(), before - 2);
        assert!(left.iter().all(|event| event.id > oldest));
        while AuditEvent::purge(&mut conn, later, 2).await.unwrap() > 0 {}
        assert!(all_events(&app, &admin).await.is_empty());
    }
}

backend_test! {
    async fn concurrent_refused_attempts_add_up_in_one_event() {
        let app = spawn_app_with(&["--login-max-failures-per-email", "1000"]).await;
        let admin = app.new_admin().await;
        let owner = app.new_user().await;
        let hour_started = clock_hour();
        let tries = (0..12).map(|_| app.login(&owner.email, "not the password"));
        for answer in futures_util::future::join_all(tries).await {
            assert_code(answer, Code::Unauthenticated);
        }
        let failed: Vec<_> = events(&app, &admin, proto::ListAuditEventsRequest {
            action: "session.login_failed".into(),
            ..Default::default()
        })
        .await;
        let failed = repeats_by_attempt(&failed, hour_started);
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].3, 12);
    }
}

backend_test! {
    async fn an_event_names_its_actor_by_the_email_they_acted_under() {
        let app = spawn_app().await;
        let admin = app.new_admin().await;
        let user = app.new_user().await;
        let chatbot = app.create_chatbot(&user, "before").await;
        // The user changes their own email, then their chatbot: the change
        // of email is theirs under the old one, what follows under the new
        // one (their session learns it at once).
        let renamed = format!("renamed-{}", user.email);
        app.users(Some(&user.token))
            .update_user(email_change(&user.id, &renamed))
            .await
            .unwrap();
        app.chatbots(Some(&user.token))
            .update_chatbot(chatbot_update(
                proto::Chatbot {
                    id: chatbot.id.clone(),
                    name: "after".into(),
                    ..Default::default()
                },
                &["name"],
            ))
            .await
            .unwrap();
        let emails: Vec<(String, String)> = all_events(&app, &admin)
            .await
            .into_iter()
            .filter(|event| event.actor.as_ref().is_some_and(|a| a.user_id == user.id))
            .map(|event| (event.action, event.actor.unwrap().email))
            .take(3)
            .collect();
        assert_eq!(
            emails,
            [
                ("chatbot.update".to_owned(), renamed),
                ("user.update".to_owned(), user.email.clone()),
                ("chatbot.create".to_owned(), user.email.clone()),
            ]
        );
    }
}
