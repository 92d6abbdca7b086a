//! scratch reproduction
use chatbot_backend::db::DbConnection;
use chatbot_backend::proto;
use diesel::connection::SimpleConnection;
use diesel::Connection;
use diesel_async::RunQueryDsl;

use crate::helpers::{spawn_app_with, Backend};

#[tokio::test(flavor = "multi_thread")]
async fn repro_sqlite_abandoned_statement() {
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
            let bot = app.create_chatbot(&user, "bot").await;
            let path = app.database_url.trim_start_matches("sqlite://").to_owned();
            let mut lock = diesel::sqlite::SqliteConnection::establish(&path).unwrap();
            lock.batch_execute("BEGIN IMMEDIATE").unwrap();
            {
                let mut conn = app.db.conn().await.unwrap();
                let DbConnection::Sqlite(c) = &mut conn else { panic!() };
                let fut = diesel::sql_query("UPDATE chatbots SET name = name").execute(&mut **c);
                drop(fut);
            }
            let r = app
                .chatbots(Some(&user.token))
                .get_chatbot(proto::GetChatbotRequest { id: bot.id.clone() })
                .await;
            lock.batch_execute("COMMIT").unwrap();
            println!("RESULT {r:?}");
            r.unwrap();
        })
        .await
}
