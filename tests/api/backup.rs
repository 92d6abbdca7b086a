//! Backups taken while the server serves restore to a store that serves
//! the same users and keys: SQLite through the binary's `backup`, and
//! PostgreSQL through `pg_dump` and `pg_restore`, as README says.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chatbot_backend::proto::{self, VerifyApiKeyReason};
use tokio::process::Command;

use crate::helpers::{
    backend_test, run_command, spawn_app, spawn_app_on, Backend, Clients, KeyOwner, TestDatabase,
};

/// Runs `command`, failing the test with what it said if it fails.
async fn succeeds(command: &mut Command) {
    let output = command.output().await.expect("the command runs");
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

backend_test! {
    async fn a_backup_taken_while_serving_restores_the_same_users_and_keys() {
        let app = spawn_app().await;
        let KeyOwner { owner, chatbot, created } = app.new_key_owner("bot").await;
        let revoked = app.create_api_key(&owner, &chatbot.id).await;
        app.revoke_api_key(&owner.token, revoked.api_key.as_ref().unwrap().id)
            .await
            .unwrap();

        // Writes go on during the backup.
        let writing = Arc::new(AtomicBool::new(true));
        let clients = Clients::connect(app.addr).await;
        let writer = tokio::spawn({
            let writing = writing.clone();
            async move {
                let mut signed_up = 0;
                while writing.load(Ordering::Relaxed) {
                    let request = proto::CreateUserRequest {
                        email: format!("during-backup-{}@example.com", uuid::Uuid::new_v4().simple()),
                        password: "correct-horse-battery".into(),
                        ..Default::default()
                    };
                    clients.users(None).create_user(request).await.unwrap();
                    signed_up += 1;
                }
                signed_up
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;

        let restored = TestDatabase::create_empty().await;
        let dump = std::env::temp_dir().join(format!("{}.dump", restored.name));
        match Backend::current() {
            Backend::Sqlite => {
                let copy = restored.sqlite_path.clone().unwrap();
                let (ok, said) = run_command(
                    &app.database_url,
                    &["backup".as_ref(), "--output".as_ref(), copy.as_os_str()],
                    "",
                )
                .await;
                assert!(ok, "{said}");
            }
            Backend::Postgres => {
                succeeds(Command::new("pg_dump").args(["--format=custom", "--file"]).arg(&dump).args(["--dbname", &app.database_url])).await;
                succeeds(Command::new("pg_restore").args(["--no-owner", "--dbname", &restored.url]).arg(&dump)).await;
                let _ = std::fs::remove_file(&dump);
            }
        }
        writing.store(false, Ordering::Relaxed);
        assert!(writer.await.unwrap() > 0, "the server was written to during the backup");

        let url = restored.url.clone();
        let from_backup = spawn_app_on(restored, &url, &[]).await;
        from_backup
            .login(&owner.email, &owner.password)
            .await
            .expect("the user signs in from the restored store");
        assert_eq!(from_backup.verify(&created.key).await.reason(), VerifyApiKeyReason::Valid);
        assert_eq!(from_backup.verify(&revoked.key).await.reason(), VerifyApiKeyReason::Revoked);
    }
}
