//! The login throttle is a budget of password checks, shared by concurrent
//! calls and by every replica on the database.

use std::collections::HashMap;

use tonic::Code;

use crate::helpers::{
    assert_code, backend_test, password_change, spawn_app_with,
    spawn_app_with_production_hash_cost, PASSWORD,
};

/// Counts answers by code.
fn tally(
    results: Vec<Result<chatbot_backend::proto::LoginResponse, tonic::Status>>,
) -> HashMap<Code, usize> {
    let mut counts = HashMap::new();
    for result in results {
        *counts
            .entry(result.map_or_else(|status| status.code(), |_| Code::Ok))
            .or_insert(0) += 1;
    }
    counts
}

/// Three password checks per email and window, and addresses out of the way.
const THREE_CHECKS_PER_EMAIL: &[&str] = &[
    "--login-max-failures-per-email",
    "3",
    "--login-max-failures-per-address",
    "1000",
];

backend_test! {
    async fn concurrent_guesses_for_one_email_check_no_more_passwords_than_its_budget() {
        // The right password gives its check back when it succeeds, so if
        // it finishes before the last wrong guesses ask (SQLite serialises
        // the reservations, and hashes finish in any order), a sixth check
        // is within the rules: the budget bounds the wrong passwords checked.
        let app = spawn_app_with_production_hash_cost(&[
            "--login-max-failures-per-email",
            "5",
            "--login-max-failures-per-address",
            "1000",
        ])
        .await;
        let user = app.new_user().await;
        // 39 wrong guesses and the right password last, all at once.
        let mut guesses = tokio::task::JoinSet::new();
        for i in 0..40 {
            let password = if i == 39 { PASSWORD.to_owned() } else { format!("wrong guess {i}") };
            let mut client = app.auth(None);
            let email = user.email.clone();
            guesses.spawn(async move {
                client
                    .login(chatbot_backend::proto::LoginRequest { email, password })
                    .await
                    .map(tonic::Response::into_inner)
            });
        }
        let counts = tally(guesses.join_all().await);
        // Only answers that checked a password are OK or UNAUTHENTICATED.
        let wrong_checked = *counts.get(&Code::Unauthenticated).unwrap_or(&0);
        let checked = counts.get(&Code::Ok).unwrap_or(&0) + wrong_checked;
        assert!(wrong_checked <= 5, "{wrong_checked} wrong passwords were checked: {counts:?}");
        assert!(checked <= 6, "{checked} passwords were checked: {counts:?}");
        assert_eq!(checked + counts.get(&Code::ResourceExhausted).unwrap_or(&0), 40, "{counts:?}");
    }
}

backend_test! {
    async fn the_address_budget_counts_guesses_across_emails() {
        let app = spawn_app_with(&[
            "--login-max-failures-per-email",
            "100",
            "--login-max-failures-per-address",
            "3",
        ])
        .await;
        for i in 0..3 {
            assert_code(
                app.login(&format!("nobody-{i}@example.com"), "wrong password!").await,
                Code::Unauthenticated,
            );
        }
        let user_elsewhere = "someone-else@example.com";
        assert_code(app.login(user_elsewhere, PASSWORD).await, Code::ResourceExhausted);
    }
}

backend_test! {
    async fn a_right_password_gives_its_check_back_but_wrong_ones_stay_counted() {
        let app = spawn_app_with(THREE_CHECKS_PER_EMAIL).await;
        let user = app.new_user().await; // one successful login already
        for _ in 0..2 {
            assert_code(app.login(&user.email, "wrong password!").await, Code::Unauthenticated);
        }
        // Two wrong so far; successes do not count.
        app.login(&user.email, PASSWORD).await.unwrap();
        app.login(&user.email, PASSWORD).await.unwrap();
        assert_code(app.login(&user.email, "wrong password!").await, Code::Unauthenticated);
        // Three wrong: the budget is spent, the right password waits too.
        let status = assert_code(app.login(&user.email, PASSWORD).await, Code::ResourceExhausted);
        use tonic_types::StatusExt;
        let retry = status.get_details_retry_info().expect("RetryInfo detail");
        assert!(retry.retry_delay.is_some_and(|d| d.as_secs() > 0));
    }
}

/// Replicas share PostgreSQL only.
#[tokio::test(flavor = "multi_thread")]
async fn on_postgres_guesses_alternating_between_two_server_processes_share_one_budget() {
    let flags = [
        "--login-max-failures-per-email",
        "3",
        "--login-max-failures-per-address",
        "1000",
    ];
    let first = spawn_app_with(&flags).await;
    let second = first
        .spawn_replica_process(&[
            ("LOGIN_MAX_FAILURES_PER_EMAIL", "3"),
            ("LOGIN_MAX_FAILURES_PER_ADDRESS", "1000"),
        ])
        .await;
    let user = first.new_user().await;
    let mut codes = Vec::new();
    for i in 0..12 {
        let result = if i % 2 == 0 {
            first.login(&user.email, "wrong password!").await
        } else {
            second.login(&user.email, "wrong password!").await
        };
        codes.push(result.unwrap_err().code());
    }
    assert_eq!(&codes[..3], [Code::Unauthenticated; 3], "{codes:?}");
    assert!(
        codes[3..]
            .iter()
            .all(|code| *code == Code::ResourceExhausted),
        "{codes:?}"
    );
    // The right password is refused on both while the budget is spent.
    assert_code(
        second.login(&user.email, PASSWORD).await,
        Code::ResourceExhausted,
    );
    assert_code(
        first.login(&user.email, PASSWORD).await,
        Code::ResourceExhausted,
    );
}

backend_test! {
    async fn current_password_guesses_through_update_user_spend_the_same_budget_as_logins() {
        let app = spawn_app_with(THREE_CHECKS_PER_EMAIL).await;
        let user = app.new_user().await;
        let change = |current: &str| password_change(&user.id, current, "a brand new password");
        // A stolen access token is no unthrottled password oracle.
        for _ in 0..3 {
            assert_code(
                app.users(Some(&user.token)).update_user(change("wrong guess!")).await,
                Code::InvalidArgument,
            );
        }
        assert_code(
            app.users(Some(&user.token)).update_user(change(PASSWORD)).await,
            Code::ResourceExhausted,
        );
        assert_code(app.login(&user.email, PASSWORD).await, Code::ResourceExhausted);
    }
}
