//! Values a client controls that the stores cannot represent are the
//! client's INVALID_ARGUMENT, never INTERNAL: timestamps outside
//! google.protobuf.Timestamp's range (years 1 to 9999) and hand-made or
//! tampered page tokens, on every List RPC.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chatbot_backend::proto;
use chrono::{NaiveDate, TimeZone, Utc};
use prost_types::Timestamp;
use tonic::{Code, Status};

use crate::helpers::{assert_code, backend_test, spawn_app, violated_fields, TestApp, TestUser};

/// Midnight UTC on 1 January of `year` (proleptic Gregorian), as a client
/// would send it; years outside chrono's range are not needed here.
fn new_year(year: i32) -> Timestamp {
    let date = NaiveDate::from_ymd_opt(year, 1, 1).expect("a year chrono knows");
    Timestamp {
        seconds: Utc
            .from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap())
            .timestamp(),
        nanos: 0,
    }
}

/// The last instant google.protobuf.Timestamp allows.
fn end_of_time() -> Timestamp {
    Timestamp {
        seconds: 253_402_300_799,
        nanos: 999_999_999,
    }
}

fn micros(time: &Timestamp) -> i64 {
    time.seconds * 1_000_000 + i64::from(time.nanos / 1_000)
}

/// `token` with its cursor's create time (micros) and id replaced, the
/// rest (version, filter binding) kept: what a client crafting a cursor by
/// hand would send.
fn tampered(token: &str, time: Option<&str>, id: Option<&str>) -> String {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(token).expect("base64 token"))
        .expect("UTF-8 token");
    let mut parts: Vec<&str> = raw.splitn(4, '|').collect();
    assert_eq!(parts.len(), 4, "a token is version|filter|time|id: {raw}");
    if let Some(time) = time {
        parts[2] = time;
    }
    if let Some(id) = id {
        parts[3] = id;
    }
    URL_SAFE_NO_PAD.encode(parts.join("|"))
}

/// Tokens derived from a real one that no list can answer with rows: times
/// outside the representable range, ids that are not ids, and garbage.
fn forged_tokens(real: &str, bad_id: &str) -> Vec<String> {
    let mut tokens: Vec<String> = [
        micros(&new_year(-5000)).to_string(),
        (micros(&new_year(1)) - 1).to_string(),
        micros(&new_year(10000)).to_string(),
        (micros(&end_of_time()) + 1).to_string(),
        i64::MIN.to_string(),
        i64::MAX.to_string(),
        "99999999999999999999999".into(),
        "-0x1".into(),
        String::new(),
    ]
    .iter()
    .map(|time| tampered(real, Some(time), None))
    .collect();
    tokens.push(tampered(real, None, Some(bad_id)));
    tokens.push(tampered(real, None, Some("")));
    tokens.extend(["%%%".to_owned(), "AAAA".into(), "QUFB".repeat(300)]);
    tokens.extend(
        [&b"p1|||"[..], b"p2|x|0|1", b"\xff\xfe|", b"p1"].map(|raw| URL_SAFE_NO_PAD.encode(raw)),
    );
    tokens
}

#[track_caller]
fn assert_page_token_refused<T: std::fmt::Debug>(result: Result<T, Status>, token: &str) {
    let status = assert_code(result, Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["page_token"], "{token}");
}

/// Asks `list` for a first page, which must have a next one, and asserts
/// that every token forged from that page's (see [`forged_tokens`], with
/// `bad_id`) is refused; returns a hand-made token for a position inside
/// the range (year one), for the caller to list from.
async fn assert_forged_page_tokens_refused<T, Fut>(
    list: impl Fn(String) -> Fut,
    next_page_token: impl Fn(T) -> String,
    bad_id: &str,
) -> String
where
    T: std::fmt::Debug,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let real = next_page_token(list(String::new()).await.unwrap());
    assert!(!real.is_empty());
    for token in forged_tokens(&real, bad_id) {
        assert_page_token_refused(list(token.clone()).await, &token);
    }
    tampered(&real, Some(&micros(&new_year(1)).to_string()), None)
}

async fn list_api_keys(
    app: &TestApp,
    user: &TestUser,
    request: proto::ListApiKeysRequest,
) -> Result<proto::ListApiKeysResponse, Status> {
    app.api_keys(Some(&user.token))
        .list_api_keys(request)
        .await
        .map(tonic::Response::into_inner)
}

backend_test! {
    async fn list_api_keys_refuses_expire_before_outside_the_timestamp_range() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let chatbot = app.create_chatbot(&user, "bot").await;
        let year_zero = Timestamp {
            seconds: new_year(1).seconds - 1,
            nanos: 999_999_999,
        };
        let past_the_end = Timestamp {
            seconds: end_of_time().seconds + 1,
            nanos: 0,
        };
        for expire_before in [
            new_year(-5000),
            year_zero,
            new_year(10000),
            past_the_end,
            Timestamp { seconds: i64::MIN, nanos: 0 },
            Timestamp { seconds: i64::MAX, nanos: 0 },
            Timestamp { seconds: 0, nanos: -1 },
            Timestamp { seconds: 0, nanos: 1_000_000_000 },
        ] {
            let status = assert_code(
                list_api_keys(
                    &app,
                    &user,
                    proto::ListApiKeysRequest {
                        chatbot_id: chatbot.id.clone(),
                        expire_before: Some(expire_before),
                        ..Default::default()
                    },
                )
                .await,
                Code::InvalidArgument,
            );
            assert_eq!(
                violated_fields(&status),
                ["expire_before"],
                "{expire_before:?}"
            );
        }
    }
}

backend_test! {
    async fn expire_before_at_either_end_of_the_timestamp_range_is_answered() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let chatbot = app.create_chatbot(&user, "bot").await;
        let request = proto::CreateApiKeyRequest {
            display_name: "expiring".into(),
            expire_time: Some(new_year(9000)),
            ..Default::default()
        };
        let expiring = app.create_api_key_with(&user, &chatbot.id, request).await.api_key.unwrap();
        app.create_api_key(&user, &chatbot.id).await;
        let listed = |expire_before: Timestamp| {
            let request = proto::ListApiKeysRequest {
                chatbot_id: chatbot.id.clone(),
                expire_before: Some(expire_before),
                ..Default::default()
            };
            let app = &app;
            let user = &user;
            async move {
                let response = list_api_keys(app, user, request)
                    .await
                    .unwrap_or_else(|status| panic!("{status:?}"));
                response.api_keys.into_iter().map(|k| k.id).collect::<Vec<_>>()
            }
        };
        assert_eq!(listed(new_year(1)).await, Vec::<i64>::new());
        assert_eq!(listed(end_of_time()).await, [expiring.id]);
    }
}

backend_test! {
    async fn create_api_key_accepts_the_last_representable_expire_time_and_refuses_later() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let chatbot = app.create_chatbot(&user, "bot").await;
        let create = |expire_time: Timestamp| {
            let mut client = app.api_keys(Some(&user.token));
            let request = proto::CreateApiKeyRequest {
                chatbot_id: chatbot.id.clone(),
                display_name: "k".into(),
                expire_time: Some(expire_time),
                ..Default::default()
            };
            async move { client.create_api_key(request).await }
        };
        let created = create(end_of_time()).await.unwrap().into_inner();
        let stored = app
            .api_keys(Some(&user.token))
            .get_api_key(proto::GetApiKeyRequest {
                id: created.api_key.as_ref().unwrap().id,
            })
            .await
            .unwrap()
            .into_inner()
            .api_key
            .unwrap();
        // Both stores keep microseconds.
        assert_eq!(
            stored.expire_time,
            Some(Timestamp {
                seconds: end_of_time().seconds,
                nanos: 999_999_000,
            })
        );
        assert!(app.verify(&created.key).await.valid);

        for expire_time in [
            new_year(10000),
            Timestamp { seconds: i64::MAX, nanos: 0 },
            Timestamp { seconds: end_of_time().seconds, nanos: 1_000_000_000 },
        ] {
            let status = assert_code(create(expire_time).await, Code::InvalidArgument);
            assert_eq!(violated_fields(&status), ["expire_time"], "{expire_time:?}");
        }
    }
}

backend_test! {
    async fn list_users_refuses_hand_made_page_tokens() {
        let app = spawn_app().await;
        let admin = app.new_admin().await;
        app.new_user().await;
        let list = |page_token: String| {
            let mut client = app.users(Some(&admin.token));
            async move {
                client
                    .list_users(proto::ListUsersRequest { page_size: 1, page_token })
                    .await
                    .map(tonic::Response::into_inner)
            }
        };
        let next = |page: proto::ListUsersResponse| page.next_page_token;
        let from_year_one = assert_forged_page_tokens_refused(list, next, "not-a-uuid").await;
        // A hand-made cursor inside the range is just a position.
        assert_eq!(list(from_year_one).await.unwrap().users.len(), 1);
    }
}

backend_test! {
    async fn list_chatbots_refuses_hand_made_page_tokens() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        app.create_chatbot(&user, "one").await;
        app.create_chatbot(&user, "two").await;
        let list = |page_token: String| {
            let mut client = app.chatbots(Some(&user.token));
            async move {
                client
                    .list_chatbots(proto::ListChatbotsRequest {
                        page_size: 1,
                        page_token,
                        ..Default::default()
                    })
                    .await
                    .map(tonic::Response::into_inner)
            }
        };
        let next = |page: proto::ListChatbotsResponse| page.next_page_token;
        let from_year_one = assert_forged_page_tokens_refused(list, next, "not-a-uuid").await;
        let page = list(from_year_one).await.unwrap();
        assert_eq!(page.chatbots.len(), 1);
        assert_eq!(page.chatbots[0].name, "one");
    }
}

backend_test! {
    async fn list_api_keys_refuses_hand_made_page_tokens() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let chatbot = app.create_chatbot(&user, "bot").await;
        app.create_api_key(&user, &chatbot.id).await;
        app.create_api_key(&user, &chatbot.id).await;
        let request = |page_token: String| proto::ListApiKeysRequest {
            chatbot_id: chatbot.id.clone(),
            page_size: 1,
            page_token,
            ..Default::default()
        };
        let list = |page_token| list_api_keys(&app, &user, request(page_token));
        let next = |page: proto::ListApiKeysResponse| page.next_page_token;
        let from_year_one =
            assert_forged_page_tokens_refused(list, next, "99999999999999999999").await;
        let page = list_api_keys(&app, &user, request(from_year_one)).await.unwrap();
        assert_eq!(page.api_keys.len(), 1);
    }
}

/// prost's conversion of a Duration panics (debug builds) on i64::MIN
/// seconds; RotateApiKey parses grace_period with `convert::parse_duration`,
/// which refuses a value of any size beyond the limit instead.
async fn grace_periods_of_any_size_beyond_the_limit_are_refused() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let chatbot = app.create_chatbot(&user, "bot").await;
    let key = app
        .create_api_key(&user, &chatbot.id)
        .await
        .api_key
        .unwrap();
    for (seconds, nanos) in [
        (i64::MIN, 0),
        (i64::MIN, -999_999_999),
        (i64::MAX, 999_999_999),
        (i64::MAX, i32::MAX),
        (-1, 0),
        (0, i32::MIN),
        (30 * 24 * 3600, 1),
        // Nanos beyond a second, or against the sign of seconds.
        (0, 2_000_000_000),
        (1, -5),
        (-1, 5),
    ] {
        let status = assert_code(
            app.api_keys(Some(&user.token))
                .rotate_api_key(proto::RotateApiKeyRequest {
                    id: key.id,
                    grace_period: Some(prost_types::Duration { seconds, nanos }),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(
            violated_fields(&status),
            ["grace_period"],
            "{seconds}s {nanos}ns"
        );
    }
}

backend_test! {
    async fn rotate_api_key_refuses_grace_periods_of_any_size_beyond_the_limit() {
        grace_periods_of_any_size_beyond_the_limit_are_refused().await
    }
}
