//! Signing out, refresh-token re-use, a password change, a role change and
//! deleting the user take effect on access tokens at their next use, on
//! every replica, and authorization uses the user's current role.

use std::time::Duration;

use chatbot_backend::proto::{self, UserRole};
use tonic::Code;

use crate::helpers::{
    assert_code, backend_test, changed_within_a_second, password_change, role_change, spawn_app,
    spawn_app_with, TestApp, TestUser,
};

async fn who_am_i(app: &TestApp, token: &str) -> Result<proto::User, tonic::Status> {
    app.auth(Some(token))
        .get_current_user(proto::GetCurrentUserRequest {})
        .await
        .map(|response| response.into_inner().user.unwrap())
}

/// A second login of the same user: another session.
async fn second_session(app: &TestApp, user: &TestUser) -> TestUser {
    let login = app.login(&user.email, &user.password).await.unwrap();
    TestUser {
        token: login.access_token,
        refresh_token: login.refresh_token,
        ..user.clone()
    }
}

backend_test! {
    async fn after_logout_the_sessions_access_token_is_refused_at_once_and_other_sessions_work() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let other = second_session(&app, &user).await;
        who_am_i(&app, &user.token).await.unwrap();
        app.logout(&user.token, &user.refresh_token).await.unwrap();
        assert_code(who_am_i(&app, &user.token).await, Code::Unauthenticated);
        who_am_i(&app, &other.token).await.unwrap();
    }
}

backend_test! {
    async fn after_refresh_token_reuse_every_access_token_of_that_session_is_refused() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let refresh = |token: String| {
            let mut client = app.auth(None);
            async move {
                client
                    .refresh_token(proto::RefreshTokenRequest { refresh_token: token })
                    .await
                    .map(|r| r.into_inner())
            }
        };
        let rotated = refresh(user.refresh_token.clone()).await.unwrap();
        who_am_i(&app, &rotated.access_token).await.unwrap();
        // A replay of the old refresh token: theft, so the session ends.
        assert_code(refresh(user.refresh_token.clone()).await, Code::Unauthenticated);
        assert_code(who_am_i(&app, &user.token).await, Code::Unauthenticated);
        assert_code(who_am_i(&app, &rotated.access_token).await, Code::Unauthenticated);
    }
}

backend_test! {
    async fn a_password_change_signs_the_user_out_of_every_session() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let other = second_session(&app, &user).await;
        app.users(Some(&user.token))
            .update_user(password_change(&user.id, &user.password, "a brand new password"))
            .await
            .unwrap();
        assert_code(who_am_i(&app, &user.token).await, Code::Unauthenticated);
        assert_code(who_am_i(&app, &other.token).await, Code::Unauthenticated);
        let fresh = app.login(&user.email, "a brand new password").await.unwrap();
        who_am_i(&app, &fresh.access_token).await.unwrap();
    }
}

backend_test! {
    async fn a_demoted_admin_cannot_use_its_old_token_to_act_as_an_admin() {
        let app = spawn_app().await;
        let demoted = app.new_admin().await;
        let other_admin = app.new_admin().await;
        // Admin powers work before.
        app.users(Some(&demoted.token))
            .list_users(proto::ListUsersRequest::default())
            .await
            .unwrap();
        app.users(Some(&other_admin.token))
            .update_user(role_change(&demoted.id, UserRole::User))
            .await
            .unwrap();
        // The same token now carries a plain user's rights.
        assert_code(
            app.users(Some(&demoted.token)).list_users(proto::ListUsersRequest::default()).await,
            Code::PermissionDenied,
        );
        assert_code(
            app.users(Some(&demoted.token)).update_user(role_change(&demoted.id, UserRole::Admin)).await,
            Code::PermissionDenied,
        );
        assert_code(
            app.users(Some(&demoted.token))
                .create_user(proto::CreateUserRequest {
                    email: "sleeper@example.com".into(),
                    password: "a long enough password".into(),
                    role: UserRole::Admin.into(),
                })
                .await,
            Code::PermissionDenied,
        );
        assert_eq!(who_am_i(&app, &demoted.token).await.unwrap().role(), UserRole::User);
        // And a promotion counts at once too.
        app.users(Some(&other_admin.token))
            .update_user(role_change(&demoted.id, UserRole::Admin))
            .await
            .unwrap();
        app.users(Some(&demoted.token))
            .list_users(proto::ListUsersRequest::default())
            .await
            .unwrap();
    }
}

backend_test! {
    async fn a_deleted_users_access_token_is_refused() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        app.users(Some(&user.token))
            .delete_user(proto::DeleteUserRequest { id: user.id.clone() })
            .await
            .unwrap();
        assert_code(who_am_i(&app, &user.token).await, Code::Unauthenticated);
    }
}

backend_test! {
    async fn on_a_warm_replica_checking_the_session_costs_no_query() {
        let app = spawn_app().await;
        app.wait_for_api_key_cache().await;
        let user = app.new_user().await;
        who_am_i(&app, &user.token).await.unwrap();
        let before = app.db.statements_executed();
        who_am_i(&app, &user.token).await.unwrap();
        // GetCurrentUser's own read of the user, and nothing for the session.
        assert_eq!(app.db.statements_executed() - before, 1);
    }
}

/// Polls `call` every 20 ms until it answers `code`, failing after a second.
async fn refused_within_a_second<F, Fut, T>(call: F, code: Code)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    T: std::fmt::Debug,
{
    let refused =
        |answer: &Result<T, tonic::Status>| matches!(answer, Err(status) if status.code() == code);
    let _refusal = changed_within_a_second(call, refused).await;
}

/// Replicas share PostgreSQL only.
#[tokio::test(flavor = "multi_thread")]
async fn on_postgres_a_logout_through_one_process_is_refused_by_another_within_a_second() {
    let first = spawn_app_with(&[]).await;
    let second = first.spawn_replica_process(&[]).await;
    let user = first.new_user().await;
    let whoami = || {
        let mut client = second.auth(Some(&user.token));
        async move {
            client
                .get_current_user(proto::GetCurrentUserRequest {})
                .await
        }
    };
    // Cached on the second process.
    whoami().await.unwrap();
    whoami().await.unwrap();
    first
        .logout(&user.token, &user.refresh_token)
        .await
        .unwrap();
    refused_within_a_second(whoami, Code::Unauthenticated).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_postgres_a_demotion_through_one_process_takes_effect_on_another_within_a_second() {
    let first = spawn_app_with(&[]).await;
    let second = first.spawn_replica_process(&[]).await;
    let demoted = first.new_admin().await;
    let other_admin = first.new_admin().await;
    let list_users = || {
        let mut client = second.users(Some(&demoted.token));
        async move { client.list_users(proto::ListUsersRequest::default()).await }
    };
    list_users().await.unwrap();
    first
        .users(Some(&other_admin.token))
        .update_user(role_change(&demoted.id, UserRole::User))
        .await
        .unwrap();
    refused_within_a_second(list_users, Code::PermissionDenied).await;
}

backend_test! {
    async fn a_password_change_racing_logins_leaves_no_session_of_the_old_password() {
        let app = spawn_app_with(&["--login-max-failures-per-email", "100"]).await;
        let user = app.new_user().await;
        let mut logins = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let mut client = app.auth(None);
            let (email, password) = (user.email.clone(), user.password.clone());
            logins.spawn(async move {
                client
                    .login(proto::LoginRequest { email, password })
                    .await
                    .map(|r| r.into_inner().access_token)
            });
        }
        app.users(Some(&user.token))
            .update_user(password_change(&user.id, &user.password, "a brand new password"))
            .await
            .unwrap();
        // Whichever logins got through with the old password, before or
        // during the change, their sessions ended with it.
        for token in logins.join_all().await.into_iter().flatten() {
            assert_code(who_am_i(&app, &token).await, Code::Unauthenticated);
        }
    }
}

backend_test! {
    async fn a_logout_racing_refreshes_leaves_no_working_token_of_that_session() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        // A chain of refreshes running while the session is ended.
        let mut client = app.auth(None);
        let mut refresh_token = user.refresh_token.clone();
        let chain = tokio::spawn(async move {
            let mut access_tokens = Vec::new();
            while let Ok(pair) = client
                .refresh_token(proto::RefreshTokenRequest { refresh_token: refresh_token.clone() })
                .await
            {
                let pair = pair.into_inner();
                access_tokens.push(pair.access_token);
                refresh_token = pair.refresh_token;
            }
            (access_tokens, refresh_token)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        app.logout(&user.token, &user.refresh_token).await.unwrap();
        let (access_tokens, last_refresh_token) = chain.await.unwrap();
        for token in access_tokens.iter().chain([&user.token]) {
            assert_code(who_am_i(&app, token).await, Code::Unauthenticated);
        }
        assert_code(
            app.refresh(&last_refresh_token).await,
            Code::Unauthenticated,
        );
    }
}
