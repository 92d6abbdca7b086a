use chatbot_backend::proto::{self, UserRole};
use tonic::Code;

use crate::helpers::{
    assert_code, backend_test, field_mask, password_change, role_change, spawn_app, spawn_app_with,
    spawn_app_with_production_hash_cost, violated_fields, PASSWORD,
};

/// UpdateUser of user `id`: the fields of `changes` that `paths` name.
fn masked_update(id: &str, changes: proto::User, paths: &[&str]) -> proto::UpdateUserRequest {
    proto::UpdateUserRequest {
        user: Some(proto::User {
            id: id.into(),
            ..changes
        }),
        update_mask: field_mask(paths),
        ..Default::default()
    }
}

backend_test! {
    async fn create_user_normalises_the_email_and_returns_no_password() {
        // The stored hash's parameters are the production ones.
        let app = spawn_app_with_production_hash_cost(&[]).await;
        let user = app
            .sign_up("  Ada.Lovelace@Example.COM ", PASSWORD)
            .await
            .unwrap();
        assert_eq!(user.email, "ada.lovelace@example.com");
        assert_eq!(user.role(), UserRole::User);
        assert!(uuid::Uuid::parse_str(&user.id).is_ok());
        assert!(user.create_time.is_some() && user.update_time.is_some());

        // The database holds an argon2id hash, never the password.
        let mut conn = app.db.conn().await.unwrap();
        let stored =
            chatbot_backend::db::models::User::find_by_email(&mut conn, "ada.lovelace@example.com")
                .await
                .unwrap()
                .unwrap();
        assert!(stored
            .hashed_password
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(!stored.hashed_password.contains(PASSWORD));
    }
}

backend_test! {
    async fn create_user_with_bad_fields_returns_invalid_argument_naming_each_field() {
        let app = spawn_app().await;
        let result = app
            .users(None)
            .create_user(proto::CreateUserRequest {
                email: "not-an-email".into(),
                password: "short".into(),
                role: 0,
            })
            .await;
        let status = assert_code(result, Code::InvalidArgument);
        let fields = violated_fields(&status);
        assert!(fields.contains(&"email".to_owned()), "{fields:?}");
        assert!(fields.contains(&"password".to_owned()), "{fields:?}");

        let too_long = "x".repeat(129);
        let status = assert_code(
            app.sign_up("a@example.com", &too_long).await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), ["password"]);
    }
}

backend_test! {
    async fn create_user_with_an_email_taken_in_another_case_returns_already_exists() {
        let app = spawn_app().await;
        app.sign_up("grace@example.com", PASSWORD).await.unwrap();
        assert_code(
            app.sign_up("GRACE@example.com", PASSWORD).await,
            Code::AlreadyExists,
        );
    }
}

backend_test! {
    async fn concurrent_sign_ups_with_one_email_let_exactly_one_win() {
        let app = spawn_app().await;
        let attempts: Vec<_> = (0..6)
            .map(|_| {
                let mut client = app.users(None);
                tokio::spawn(async move {
                    client
                        .create_user(proto::CreateUserRequest {
                            email: "race@example.com".into(),
                            password: PASSWORD.into(),
                            role: 0,
                        })
                        .await
                })
            })
            .collect();
        let mut codes = Vec::new();
        for attempt in attempts {
            codes.push(match attempt.await.unwrap() {
                Ok(_) => Code::Ok,
                Err(status) => status.code(),
            });
        }
        let wins = codes.iter().filter(|c| **c == Code::Ok).count();
        let conflicts = codes.iter().filter(|c| **c == Code::AlreadyExists).count();
        assert_eq!((wins, conflicts), (1, 5), "{codes:?}");
    }
}

backend_test! {
    async fn get_user_returns_the_callers_own_record() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let got = app.get_user(&user.token, &user.id).await.unwrap();
        assert_eq!((got.id, got.email), (user.id, user.email));
    }
}

backend_test! {
    async fn get_user_with_a_malformed_id_returns_invalid_argument() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let status = assert_code(
            app.get_user(&user.token, "not-a-uuid").await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), ["id"]);
    }
}

backend_test! {
    async fn get_user_returns_not_found_to_an_admin_for_an_unknown_id() {
        let app = spawn_app().await;
        let admin = app.new_admin().await;
        assert_code(
            app.get_user(&admin.token, &uuid::Uuid::new_v4().to_string()).await,
            Code::NotFound,
        );
    }
}

backend_test! {
    async fn list_users_pages_through_every_user_in_creation_order() {
        let app = spawn_app().await;
        let admin = app.new_admin().await;
        let mut expected = vec![admin.email.clone()];
        for i in 0..7 {
            let email = format!("page{i}@example.com");
            app.sign_up(&email, PASSWORD).await.unwrap();
            expected.push(email);
        }
        let mut seen = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let page = app
                .users(Some(&admin.token))
                .list_users(proto::ListUsersRequest {
                    page_size: 3,
                    page_token: token,
                })
                .await
                .unwrap()
                .into_inner();
            pages += 1;
            assert!(page.users.len() <= 3);
            seen.extend(page.users.into_iter().map(|u| u.email));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, expected);

        assert_code(
            app.users(Some(&admin.token))
                .list_users(proto::ListUsersRequest {
                    page_size: -1,
                    page_token: String::new(),
                })
                .await,
            Code::InvalidArgument,
        );
        assert_code(
            app.users(Some(&admin.token))
                .list_users(proto::ListUsersRequest {
                    page_size: 1,
                    page_token: "bm9wZQ".into(),
                })
                .await,
            Code::InvalidArgument,
        );
    }
}

backend_test! {
    async fn update_user_changes_the_email_named_in_the_mask_only() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let changes = proto::User {
            email: "New@Example.com".into(),
            role: UserRole::Admin.into(),
            ..Default::default()
        };
        let updated = app
            .users(Some(&user.token))
            .update_user(masked_update(&user.id, changes, &["email"]))
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        assert_eq!(updated.email, "new@example.com");
        assert_eq!(updated.role(), UserRole::User, "role was not in the mask");
        let (created, changed) = (updated.create_time.unwrap(), updated.update_time.unwrap());
        assert!((changed.seconds, changed.nanos) > (created.seconds, created.nanos));
    }
}

backend_test! {
    async fn update_user_rejects_unknown_and_output_only_mask_paths() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        for paths in [&["create_time"][..], &["password"], &[]] {
            let status = assert_code(
                app.users(Some(&user.token))
                    .update_user(masked_update(&user.id, proto::User::default(), paths))
                    .await,
                Code::InvalidArgument,
            );
            assert_eq!(violated_fields(&status), ["update_mask"], "{paths:?}");
        }
    }
}

backend_test! {
    async fn update_user_to_a_taken_email_returns_already_exists() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let other = app.new_user().await;
        let changes = proto::User {
            email: other.email.clone(),
            ..Default::default()
        };
        assert_code(
            app.users(Some(&user.token))
                .update_user(masked_update(&user.id, changes, &["email"]))
                .await,
            Code::AlreadyExists,
        );
    }
}

backend_test! {
    async fn only_an_admin_can_grant_the_admin_role() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let admin = app.new_admin().await;
        let promote = |token: String, id: String| {
            let mut client = app.users(Some(&token));
            async move { client.update_user(role_change(&id, UserRole::Admin)).await }
        };
        assert_code(
            promote(user.token.clone(), user.id.clone()).await,
            Code::PermissionDenied,
        );
        let promoted = promote(admin.token.clone(), user.id.clone())
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        assert_eq!(promoted.role(), UserRole::Admin);

        // Sign-up cannot self-grant admin either.
        let result = app
            .users(None)
            .create_user(proto::CreateUserRequest {
                email: "sneaky@example.com".into(),
                password: PASSWORD.into(),
                role: UserRole::Admin.into(),
            })
            .await;
        assert_code(result, Code::PermissionDenied);
    }
}

backend_test! {
    async fn changing_a_password_needs_the_current_one_and_revokes_refresh_tokens() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let change = |current: &str| {
            let mut client = app.users(Some(&user.token));
            let request = password_change(&user.id, current, "a brand new passphrase");
            async move { client.update_user(request).await }
        };
        let status = assert_code(change("wrong password").await, Code::InvalidArgument);
        assert_eq!(violated_fields(&status), ["current_password"]);
        change(PASSWORD).await.unwrap();

        assert_code(
            app.login(&user.email, PASSWORD).await,
            Code::Unauthenticated,
        );
        app.login(&user.email, "a brand new passphrase")
            .await
            .unwrap();
        assert_code(
            app.refresh(&user.refresh_token).await,
            Code::Unauthenticated,
        );
    }
}

backend_test! {
    async fn of_concurrent_password_changes_that_all_knew_the_current_password_only_one_applies() {
        // Budgets out of the way: every change spends a password check.
        let app = spawn_app_with(&[
            "--login-max-failures-per-email",
            "100",
            "--login-max-failures-per-address",
            "100",
        ])
        .await;
        let user = app.new_user().await;
        let changes = (0..8).map(|i| {
            let mut client = app.users(Some(&user.token));
            let new_password = format!("new passphrase number {i}");
            let request = password_change(&user.id, PASSWORD, &new_password);
            async move { client.update_user(request).await }
        });
        let results = futures_util::future::join_all(changes).await;

        let applied: Vec<usize> = (0..results.len())
            .filter(|&i| results[i].is_ok())
            .collect();
        assert_eq!(applied.len(), 1, "applied: {applied:?}");
        for result in results.into_iter().filter(Result::is_err) {
            let status = assert_code(result, Code::InvalidArgument);
            assert_eq!(violated_fields(&status), ["current_password"]);
        }
        // The one that applied is the password now; no other is.
        for i in 0..8 {
            let login = app
                .login(&user.email, &format!("new passphrase number {i}"))
                .await;
            if i == applied[0] {
                login.unwrap();
            } else {
                assert_code(login, Code::Unauthenticated);
            }
        }
    }
}

backend_test! {
    async fn delete_user_deletes_their_chatbots_and_api_keys() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let admin = app.new_admin().await;
        let chatbot = app.create_chatbot(&user, "doomed").await;
        let key = app.create_api_key(&user, &chatbot.id).await;

        app.users(Some(&user.token))
            .delete_user(proto::DeleteUserRequest {
                id: user.id.clone(),
            })
            .await
            .unwrap();

        assert_code(
            app.get_user(&admin.token, &user.id).await,
            Code::NotFound,
        );
        assert_code(
            app.get_chatbot(&admin.token, &chatbot.id).await,
            Code::NotFound,
        );
        let verdict = app.verify(&key.key).await;
        assert_eq!(verdict.reason(), proto::VerifyApiKeyReason::NotFound);
        assert_code(
            app.users(Some(&admin.token))
                .delete_user(proto::DeleteUserRequest {
                    id: user.id.clone(),
                })
                .await,
            Code::NotFound,
        );
    }
}

backend_test! {
    async fn with_sign_up_disabled_only_an_admin_can_create_users() {
        let app = spawn_app_with(&["--allow-signup", "false"]).await;
        let status = assert_code(
            app.sign_up("closed@example.com", PASSWORD).await,
            Code::Unauthenticated,
        );
        assert!(status.message().contains("sign-up is disabled"));
        let admin = app.new_admin().await;
        app.users(Some(&admin.token))
            .create_user(proto::CreateUserRequest {
                email: "invited@example.com".into(),
                password: PASSWORD.into(),
                role: 0,
            })
            .await
            .unwrap();
    }
}
