//! GetChatbot's coalesced reads when other calls go wrong around them.

use chatbot_backend::db::DbConnection;
use chatbot_backend::proto;
use diesel::connection::SimpleConnection;
use diesel::Connection;
use diesel_async::RunQueryDsl;

use crate::helpers::{spawn_app_with, Backend};

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
            let app = spawn_app_with(&[
                "--database-pool-size",
                "1",
                "--database-statement-timeout-ms",
                "60000",
            ])
            .await;
            let user = app.new_user().await;
            let chatbot = app.create_chatbot(&user, "bot").await;

            // Another connection holds the write lock, so the abandoned
            // write below waits on its blocking thread until the test ends.
            let path = app.database_url.trim_start_matches("sqlite://").to_owned();
            let mut lock = diesel::sqlite::SqliteConnection::establish(&path).unwrap();
            lock.batch_execute("BEGIN IMMEDIATE").unwrap();
            {
                let mut conn = app.db.conn().await.unwrap();
                let DbConnection::Sqlite(sqlite) = &mut conn else {
                    unreachable!("a SQLite app");
                };
                // Started, then dropped unfinished, as a cancelled RPC's is.
                let write =
                    diesel::sql_query("UPDATE chatbots SET name = name").execute(&mut **sqlite);
                drop(write);
            }

            let read = app
                .chatbots(Some(&user.token))
                .get_chatbot(proto::GetChatbotRequest {
                    id: chatbot.id.clone(),
                })
                .await;
            lock.batch_execute("COMMIT").unwrap();
            let read = read.expect("the reader gets its chatbot").into_inner();
            assert_eq!(read.chatbot.unwrap().name, "bot");
        })
        .await
}
