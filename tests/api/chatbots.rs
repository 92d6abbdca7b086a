use chatbot_backend::db::models::Chatbot;
use chatbot_backend::domain::ChatbotId;
use chatbot_backend::proto;
use tonic::Code;

use crate::helpers::{
    assert_code, backend_test, chatbot_update, spawn_app, spawn_app_with, violated_fields, KeyOwner,
};

fn create_request(name: &str, url: &str) -> proto::CreateChatbotRequest {
    proto::CreateChatbotRequest {
        name: name.into(),
        llm_endpoint_url: url.into(),
        ..Default::default()
    }
}

backend_test! {
    async fn create_chatbot_defaults_the_owner_to_the_caller() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let request = create_request("  Support Bot ", "https://llm.example.com/v1");
        let chatbot = app.create_chatbot_from(&user.token, request).await.unwrap();
        assert_eq!(chatbot.owner_id, user.id);
        assert_eq!(chatbot.name, "Support Bot");
        assert_eq!(chatbot.llm_endpoint_url, "https://llm.example.com/v1");

        let got = app.read_chatbot(&user.token, &chatbot.id).await;
        assert_eq!(got, chatbot);
    }
}

backend_test! {
    async fn create_chatbot_rejects_bad_names_and_unsafe_endpoints() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let cases = [
            ("", "https://llm.example.com", "name"),
            (&"n".repeat(101) as &str, "https://llm.example.com", "name"),
            ("ok", "not a url", "llm_endpoint_url"),
            ("ok", "ftp://llm.example.com", "llm_endpoint_url"),
            (
                "ok",
                "https://user:secret@llm.example.com",
                "llm_endpoint_url",
            ),
            ("ok", "http://127.0.0.1:11434/api", "llm_endpoint_url"),
            (
                "ok",
                "http://169.254.169.254/latest/meta-data",
                "llm_endpoint_url",
            ),
            ("ok", "http://10.0.0.7/", "llm_endpoint_url"),
            ("ok", "http://[::1]/", "llm_endpoint_url"),
        ];
        for (name, url, field) in cases {
            let status = assert_code(
                app.create_chatbot_from(&user.token, create_request(name, url)).await,
                Code::InvalidArgument,
            );
            assert_eq!(violated_fields(&status), [field], "{name:?} {url:?}");
            assert!(
                !status.message().contains("secret"),
                "the message must not echo credentials"
            );
        }
    }
}

backend_test! {
    async fn private_endpoints_are_accepted_when_configuration_allows_them() {
        let app = spawn_app_with(&["--allow-private-llm-endpoints", "true"]).await;
        let user = app.new_user().await;
        let request = create_request("local", "http://127.0.0.1:11434/api/chat");
        app.create_chatbot_from(&user.token, request).await.unwrap();
    }
}

backend_test! {
    async fn an_admin_can_create_a_chatbot_for_another_user_but_not_for_a_missing_one() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let admin = app.new_admin().await;
        let mut request = create_request("for user", "https://llm.example.com");
        request.owner_id = user.id.clone();
        let chatbot = app.create_chatbot_from(&admin.token, request.clone()).await.unwrap();
        assert_eq!(chatbot.owner_id, user.id);

        request.owner_id = uuid::Uuid::new_v4().to_string();
        assert_code(
            app.create_chatbot_from(&admin.token, request).await,
            Code::NotFound,
        );
    }
}

backend_test! {
    async fn list_chatbots_pages_in_creation_order_with_tokens_bound_to_the_filter() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let other = app.new_user().await;
        let admin = app.new_admin().await;
        let mut mine = Vec::new();
        for i in 0..5 {
            mine.push(app.create_chatbot(&user, &format!("bot {i}")).await.id);
        }
        app.create_chatbot(&other, "not mine").await;

        let list = |token: &str, owner_id: &str, page_token: String| {
            let mut client = app.chatbots(Some(token));
            let request = proto::ListChatbotsRequest {
                page_size: 2,
                page_token,
                owner_id: owner_id.into(),
                organization_id: String::new(),
            };
            async move { client.list_chatbots(request).await }
        };

        // Without a filter, a user sees exactly their own chatbots.
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = list(&user.token, "", token).await.unwrap().into_inner();
            seen.extend(page.chatbots.into_iter().map(|c| c.id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(seen, mine);

        // A token issued for one filter is refused with another.
        let first = list(&admin.token, &user.id, String::new())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(first.chatbots.len(), 2);
        let status = assert_code(
            list(&admin.token, "", first.next_page_token).await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), ["page_token"]);

        // An admin without a filter sees everyone's.
        let all = app
            .chatbots(Some(&admin.token))
            .list_chatbots(proto::ListChatbotsRequest {
                page_size: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(all.chatbots.len(), 6);
        assert!(all.next_page_token.is_empty());
    }
}

backend_test! {
    async fn update_chatbot_changes_only_the_masked_fields() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let chatbot = app.create_chatbot(&user, "old name").await;
        let update = |paths: &[&str], name: &str, url: &str| {
            let mut client = app.chatbots(Some(&user.token));
            let changes = proto::Chatbot {
                id: chatbot.id.clone(),
                name: name.into(),
                llm_endpoint_url: url.into(),
                ..Default::default()
            };
            let request = chatbot_update(changes, paths);
            async move {
                let updated = client.update_chatbot(request).await;
                updated.map(|answer| answer.into_inner().chatbot.unwrap())
            }
        };
        let updated = update(&["name"], "new name", "ignored://").await.unwrap();
        assert_eq!(updated.name, "new name");
        assert_eq!(updated.llm_endpoint_url, chatbot.llm_endpoint_url);

        let updated = update(&["llm_endpoint_url"], "", "https://other.example.com/v2")
            .await
            .unwrap();
        assert_eq!(updated.name, "new name");
        assert_eq!(updated.llm_endpoint_url, "https://other.example.com/v2");

        for bad in [&["owner_id"][..], &["colour"], &[]] {
            let status = assert_code(
                update(bad, "x", "https://x.example.com").await,
                Code::InvalidArgument,
            );
            assert_eq!(violated_fields(&status), ["update_mask"], "{bad:?}");
        }
        let status = assert_code(update(&["name"], "", "").await, Code::InvalidArgument);
        assert_eq!(violated_fields(&status), ["chatbot.name"]);
    }
}

backend_test! {
    async fn delete_chatbot_deletes_it_and_its_keys() {
        let app = spawn_app().await;
        let KeyOwner { owner: user, chatbot, created: key } = app.new_key_owner("short-lived").await;
        app.delete_chatbot(&user.token, &chatbot.id).await.unwrap();
        assert_eq!(
            app.verify(&key.key).await.reason(),
            proto::VerifyApiKeyReason::NotFound
        );
        // Gone: the owner can no longer tell it from someone else's.
        assert_code(
            app.get_chatbot(&user.token, &chatbot.id).await,
            Code::PermissionDenied,
        );
        let admin = app.new_admin().await;
        assert_code(
            app.delete_chatbot(&admin.token, &chatbot.id).await,
            Code::NotFound,
        );
    }
}

/// One GetChatbot read and what it must answer: the chatbot's name, or a
/// refusal code.
struct ExpectedRead {
    token: String,
    id: String,
    answer: Result<String, Code>,
}

/// Sends every read at once and checks each answer against its own
/// expectation, so a row handed to the wrong reader of a batch fails.
async fn read_concurrently(app: &crate::helpers::TestApp, reads: Vec<ExpectedRead>) {
    let mut tasks = tokio::task::JoinSet::new();
    for read in reads {
        let mut client = app.chatbots(Some(&read.token));
        tasks.spawn(async move {
            let got = client
                .get_chatbot(proto::GetChatbotRequest {
                    id: read.id.clone(),
                })
                .await
                .map(|response| response.into_inner().chatbot.unwrap())
                .map_err(|status| status.code());
            match (&got, &read.answer) {
                (Ok(chatbot), Ok(name)) => {
                    assert_eq!(&chatbot.name, name);
                    assert_eq!(chatbot.id, read.id);
                }
                (Err(code), Err(expected)) => assert_eq!(code, expected, "reading {}", read.id),
                _ => panic!(
                    "reading {}: got {got:?}, expected {:?}",
                    read.id, read.answer
                ),
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap();
    }
}

/// Alice's and Bob's chatbots, and every kind of read of them: own (twice),
/// another's, missing, and an admin's.
async fn mixed_reads(app: &crate::helpers::TestApp) -> Vec<ExpectedRead> {
    let alice = app.new_user().await;
    let bob = app.new_user().await;
    let admin = app.new_admin().await;
    let mut reads = Vec::new();
    for i in 0..6 {
        for (owner, other) in [(&alice, &bob), (&bob, &alice)] {
            let name = format!("{} bot {i}", &owner.id[..8]);
            let chatbot = app.create_chatbot(owner, &name).await;
            for reader in [owner, owner, &admin] {
                reads.push(ExpectedRead {
                    token: reader.token.clone(),
                    id: chatbot.id.clone(),
                    answer: Ok(name.clone()),
                });
            }
            reads.push(ExpectedRead {
                token: other.token.clone(),
                id: chatbot.id.clone(),
                answer: Err(Code::PermissionDenied),
            });
        }
        let missing = uuid::Uuid::new_v4().to_string();
        reads.push(ExpectedRead {
            token: alice.token.clone(),
            id: missing.clone(),
            answer: Err(Code::PermissionDenied),
        });
        reads.push(ExpectedRead {
            token: admin.token.clone(),
            id: missing,
            answer: Err(Code::NotFound),
        });
    }
    reads
}

/// What a test that counts GetChatbot's reads at the database runs with:
/// no cache in front of them.
const NO_CHATBOT_CACHE: &[&str] = &["--chatbot-cache-capacity", "0"];

backend_test! {
    async fn concurrent_reads_each_get_the_answer_they_would_get_alone() {
        let app = spawn_app_with(NO_CHATBOT_CACHE).await;
        let reads = mixed_reads(&app).await;
        let reads_before = app.chatbot_reads.reads();
        let count = reads.len() as u64;
        read_concurrently(&app, reads).await;
        assert_eq!(app.chatbot_reads.reads() - reads_before, count);
    }
}

backend_test! {
    async fn one_statement_finds_many_chatbots_and_skips_missing_ids() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let first = app.create_chatbot(&user, "first").await;
        let second = app.create_chatbot(&user, "second").await;
        let ids: Vec<ChatbotId> = [&first.id, &second.id, &uuid::Uuid::new_v4().to_string()]
            .into_iter()
            .map(|id| ChatbotId::parse("id", id).unwrap())
            .collect();
        let mut conn = app.db.conn().await.unwrap();
        let mut names: Vec<String> = Chatbot::find_many(&mut conn, &ids)
            .await
            .unwrap()
            .into_iter()
            .map(|chatbot| chatbot.name)
            .collect();
        names.sort();
        assert_eq!(names, ["first", "second"]);
        assert!(Chatbot::find_many(&mut conn, &[]).await.unwrap().is_empty());
    }
}

/// What every held-batch test's server allows: one read batch in flight,
/// so the held one keeps the others queued, and no cache in front of them.
const ONE_READ_BATCH_IN_FLIGHT: &[&str] = &[
    "--read-batches-in-flight",
    "1",
    "--chatbot-cache-capacity",
    "0",
];

/// What the held-batch tests read: the mixed reads, and one more read to
/// hold. Made before anything is held, since making it needs the database.
struct HeldBatch {
    reads: Vec<ExpectedRead>,
    reader: crate::helpers::TestUser,
    held_id: String,
}

impl HeldBatch {
    async fn prepare(app: &crate::helpers::TestApp) -> Self {
        let reads = mixed_reads(app).await;
        let reader = app.new_user().await;
        let held_id = app.create_chatbot(&reader, "held").await.id;
        // As on a warm replica, every caller's session is cached, so that
        // holding the pool holds only the reads, not authentication.
        app.wait_for_api_key_cache().await;
        let tokens: std::collections::BTreeSet<&String> = reads
            .iter()
            .map(|read| &read.token)
            .chain([&reader.token])
            .collect();
        for token in tokens {
            app.auth(Some(token))
                .get_current_user(proto::GetCurrentUserRequest {})
                .await
                .unwrap();
        }
        Self {
            reads,
            reader,
            held_id,
        }
    }

    /// Sends the held read (which the test is holding at the database or
    /// the pool), queues the mixed reads behind it, awaits `release`, and
    /// checks that the queued reads went out as one more statement, each
    /// with its own answer. The app must allow one batch in flight
    /// ([`ONE_READ_BATCH_IN_FLIGHT`]).
    async fn assert_queued_reads_go_out_as_one_batch(
        self,
        app: &crate::helpers::TestApp,
        release: impl std::future::Future<Output = ()>,
    ) {
        let stats = app.chatbot_reads.clone();
        let before = (stats.reads(), stats.batches());
        let first = tokio::spawn(read_one(
            app.chatbots(Some(&self.reader.token)),
            self.held_id,
        ));
        wait_until(|| stats.batches() == before.1 + 1).await;
        let count = self.reads.len() as u64;
        let rest = read_concurrently(app, self.reads);
        tokio::pin!(rest);
        tokio::select! {
            () = &mut rest => panic!("reads were answered while the first was held"),
            () = wait_until(|| stats.reads() == before.0 + 1 + count) => {}
        }
        release.await;
        rest.await;
        assert_eq!(first.await.unwrap(), "held");
        assert_eq!(
            stats.batches() - before.1,
            2,
            "one batch held, one for the rest"
        );
    }
}

/// Only PostgreSQL lets a test hold a statement at the database (a table
/// lock), after the batch has been sent.
#[tokio::test(flavor = "multi_thread")]
async fn on_postgres_reads_that_queue_behind_a_busy_batch_go_out_together_as_one_statement() {
    use diesel_async::SimpleAsyncConnection;

    // Statements wait at the lock for as long as the test needs.
    let statements_wait = ["--database-statement-timeout-ms", "60000"];
    let app = spawn_app_with(&[ONE_READ_BATCH_IN_FLIGHT, &statements_wait].concat()).await;
    let batch = HeldBatch::prepare(&app).await;
    let mut lock = app.sql().await;
    lock.batch_execute("BEGIN; LOCK TABLE chatbots IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    batch
        .assert_queued_reads_go_out_as_one_batch(&app, async move {
            lock.batch_execute("COMMIT").await.unwrap();
        })
        .await;
}

backend_test! {
    async fn reads_that_queue_while_the_pool_is_busy_go_out_together_and_each_gets_its_own_answer() {
        // One connection, one batch at a time, and a pool wait longer than
        // the test: holding the connection holds the first batch before it
        // is sent.
        let one_connection_waited_for = [
            "--database-pool-size",
            "1",
            "--database-acquire-timeout-ms",
            "60000",
        ];
        let app = spawn_app_with(&[ONE_READ_BATCH_IN_FLIGHT, &one_connection_waited_for].concat()).await;
        let batch = HeldBatch::prepare(&app).await;
        let connection = app.db.conn().await.unwrap();
        batch
            .assert_queued_reads_go_out_as_one_batch(&app, async move { drop(connection) })
            .await;
    }
}

async fn read_one(
    mut client: chatbot_backend::proto::chatbot_service_client::ChatbotServiceClient<
        crate::helpers::Authed,
    >,
    id: String,
) -> String {
    client
        .get_chatbot(proto::GetChatbotRequest { id })
        .await
        .unwrap()
        .into_inner()
        .chatbot
        .unwrap()
        .name
}

/// Polls `condition` every 10 ms for up to 10 s.
async fn wait_until(condition: impl Fn() -> bool) {
    for _ in 0..1000 {
        if condition() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 10 s");
}

backend_test! {
    async fn when_no_connection_is_free_every_reader_of_a_batch_gets_unavailable() {
        let app = spawn_app_with(&[
            "--database-pool-size",
            "1",
            "--database-acquire-timeout-ms",
            "300",
        ])
        .await;
        let user = app.new_user().await;
        let chatbot = app.create_chatbot(&user, "bot").await;

        let connection = app.db.conn().await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..5 {
            let mut client = app.chatbots(Some(&user.token));
            let id = chatbot.id.clone();
            tasks.spawn(async move {
                client
                    .get_chatbot(proto::GetChatbotRequest { id })
                    .await
                    .map(|_| ())
            });
        }
        while let Some(joined) = tasks.join_next().await {
            assert_code(joined.unwrap(), Code::Unavailable);
        }
        drop(connection);
        // Served again once a connection is free.
        app.get_chatbot(&user.token, &chatbot.id).await.unwrap();
    }
}
