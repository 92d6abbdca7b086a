//! GetChatbot's coalesced reads when other calls go wrong around them.

use chatbot_backend::db::DbConnection;
use chatbot_backend::proto;
use diesel::connection::SimpleConnection;
use diesel::Connection;
use diesel_async::RunQueryDsl;

use crate::helpers::{spawn_app_with, Backend, TestApp};

/// One pooled connection, so the abandoned one is the only one, and a
/// statement timeout long enough that it stays abandoned.
const ONE_CONNECTION_AND_A_LONG_STATEMENT_TIMEOUT: &[&str] = &[
    "--database-pool-size",
    "1",
    "--database-statement-timeout-ms",
    "60000",
];

/// Leaves the app's only pooled connection busy with a statement whose
/// caller gave up, as a cancelled RPC does: another connection holds the
/// write lock, so the abandoned write waits on its blocking thread until
/// [`release`]. Returns that other connection.
fn abandon_a_statement(app: &TestApp) -> diesel::sqlite::SqliteConnection {
    let path = app.database_url.trim_start_matches("sqlite://").to_owned();
    let mut lock = diesel::sqlite::SqliteConnection::establish(&path).unwrap();
    lock.batch_execute("BEGIN IMMEDIATE").unwrap();
    let app_db = app.db.clone();
    let rt = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        rt.block_on(async {
            let mut conn = app_db.conn().await.unwrap();
            let DbConnection::Sqlite(sqlite) = &mut conn else {
                unreachable!("a SQLite app");
            };
            // Started, then dropped unfinished, as a cancelled RPC's is.
            let write = diesel::sql_query("UPDATE chatbots SET name = name").execute(&mut **sqlite);
            drop(write);
        })
    });
    lock
}

fn release(mut lock: diesel::sqlite::SqliteConnection) {
    lock.batch_execute("COMMIT").unwrap();
}

/// SQLite only: what a cancelled RPC leaves behind there. Its statement
/// runs on a blocking thread that outlives the RPC, so its connection goes
/// back to the pool while the statement still holds it; the next checkout
/// of that connection panics inside diesel-async (diesel_async#281). A
/// batch of reads that drew it answered every reader INTERNAL.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_batch_gets_its_answer_after_a_cancelled_statement_left_its_connection_busy_on_sqlite(
) {
    Backend::Sqlite
        .run(async {
            let app = spawn_app_with(ONE_CONNECTION_AND_A_LONG_STATEMENT_TIMEOUT).await;
            let user = app.new_user().await;
            let chatbot = app.create_chatbot(&user, "bot").await;

            let lock = abandon_a_statement(&app);
            let read = app.get_chatbot(&user.token, &chatbot.id).await;
            release(lock);
            let read = read.expect("the reader gets its chatbot");
            assert_eq!(read.name, "bot");
        })
        .await
}

/// The same, for every other RPC: each checks its connection out through
/// the pool, which passes over the abandoned one.
#[tokio::test(flavor = "multi_thread")]
async fn any_rpc_gets_a_working_connection_after_a_cancelled_statement_left_one_busy_on_sqlite() {
    Backend::Sqlite
        .run(async {
            let app = spawn_app_with(ONE_CONNECTION_AND_A_LONG_STATEMENT_TIMEOUT).await;
            let user = app.new_user().await;
            app.create_chatbot(&user, "bot").await;
            let lock = abandon_a_statement(&app);
            let listed = app
                .chatbots(Some(&user.token))
                .list_chatbots(proto::ListChatbotsRequest::default())
                .await;
            release(lock);
            assert_eq!(
                listed
                    .expect("the list is answered")
                    .into_inner()
                    .chatbots
                    .len(),
                1
            );
        })
        .await
}
