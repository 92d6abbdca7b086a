//! Operator commands: `create-admin` and `seed`.

use std::io::BufRead;

use rand::distributions::{Alphanumeric, DistString};

use crate::auth::PasswordHasher;
use crate::db::models::{Chatbot, NewChatbot, NewUser, User};
use crate::db::Database;
use crate::domain::{ChatbotId, Email, Password, Role, UserId};

/// Creates an admin or promotes an existing user; the password comes from
/// stdin (one line), never from argv where `ps` would show it.
pub async fn create_admin(db: &Database, email: &str, input: impl BufRead) -> anyhow::Result<User> {
    let email = Email::parse("--email", email)
        .map_err(|v| anyhow::anyhow!("{}: {}", v.field, v.description))?;
    let password = input
        .lines()
        .next()
        .transpose()?
        .ok_or_else(|| anyhow::anyhow!("expected the password on stdin"))?;
    let password = Password::parse(
        "password",
        password.trim_end_matches(['\r', '\n']).to_owned(),
    )
    .map_err(|v| anyhow::anyhow!("password {}", v.description))?;
    let hash = PasswordHasher::new(1)?.hash(password).await?;
    let mut conn = db.conn().await?;
    Ok(User::upsert_admin(&mut conn, email.as_str(), &hash).await?)
}

/// Idempotent demo data: an admin, a demo user and two chatbots. Passwords
/// of newly created accounts are printed once; existing ones are untouched.
pub async fn seed(db: &Database) -> anyhow::Result<()> {
    let hasher = PasswordHasher::new(1)?;
    let mut conn = db.conn().await?;
    let accounts = [
        ("admin@example.com", Role::Admin),
        ("demo@example.com", Role::User),
    ];
    for (email, role) in accounts {
        if User::find_by_email(&mut conn, email).await?.is_some() {
            println!("{email}: exists, password unchanged");
            continue;
        }
        let password = Alphanumeric.sample_string(&mut rand::rngs::OsRng, 20);
        let hash = hasher
            .hash(
                Password::parse("password", password.clone())
                    .map_err(|v| anyhow::anyhow!("{}", v.description))?,
            )
            .await?;
        let user = User::insert(
            &mut conn,
            NewUser {
                id: UserId::generate(),
                email,
                hashed_password: &hash,
                role: role.as_str(),
            },
        )
        .await?;
        println!("{email}: created ({role}), password: {password}  (shown once)");
        if role == Role::User {
            for (name, url) in [
                (
                    "Customer Support Bot",
                    "https://api.openai.com/v1/chat/completions",
                ),
                ("Sales Assistant", "https://api.anthropic.com/v1/messages"),
            ] {
                let chatbot = Chatbot::insert(
                    &mut conn,
                    &NewChatbot {
                        id: ChatbotId::generate(),
                        owner_id: user.id,
                        name: name.into(),
                        llm_endpoint_url: url.into(),
                    },
                )
                .await?;
                println!("  chatbot {:?}: {}", chatbot.name, chatbot.id);
            }
        }
    }
    Ok(())
}
