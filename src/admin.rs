//! Operator commands: `create-admin` and `seed`.

use std::io::BufRead;

use chrono::Utc;
use diesel_async::scoped_futures::ScopedFutureExt;
use rand::distributions::{Alphanumeric, DistString};

use crate::auth::PasswordHasher;
use crate::db::models::{AuditActor, Chatbot, NewChatbot, NewUser, Session, User};
use crate::db::{self, Database, Invalidation, Written};
use crate::domain::{
    AuditAction, AuditChange, AuditRecord, AuditTarget, ChatbotId, Email, OrganizationId, Password,
    Role, UserId,
};
use crate::services::events::state_of;

/// An operator command as the audit log's actor: the command line, of
/// which only the command and its own arguments are kept (the server's
/// flags could carry secrets, such as a database URL's password).
fn command_actor(command: &str) -> AuditActor {
    AuditActor {
        command: Some(command.to_owned()),
        ..AuditActor::default()
    }
}

/// Creates an admin or promotes an existing user; the password comes from
/// stdin (one line), never from argv where `ps` would show it. Setting an
/// existing user's password signs them out everywhere, as UpdateUser does,
/// and running servers learn the new role at once.
pub async fn create_admin(
    db: &Database,
    hasher: &PasswordHasher,
    email: &str,
    input: impl BufRead,
) -> anyhow::Result<User> {
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
    let hash = hasher.hash(password).await?;
    let mut conn = db.conn().await?;
    let hash = &hash;
    let actor = command_actor(&format!("create-admin --email {}", email.as_str()));
    // Which user the change makes stale is known only once it is made, so
    // the notification is sent from inside; this process caches nothing.
    let admin = db::write(&mut conn, actor, None, |conn| {
        async move {
            let before = User::find_by_email(conn, email.as_str()).await?;
            let admin = User::upsert_admin(conn, email.as_str(), hash).await?;
            Session::end_all_for_user(conn, admin.id, Utc::now()).await?;
            db::notify_invalidation(conn, &Invalidation::Owner(admin.id)).await?;
            let target = || AuditTarget::user(admin.id);
            let records = match before {
                None => vec![AuditRecord::new(AuditAction::UserCreate, target())
                    .with_changes(vec![AuditChange::values("role", "", Role::Admin)])],
                Some(user) => {
                    let mut records = Vec::new();
                    if user.role() != Role::Admin {
                        records.push(
                            AuditRecord::new(AuditAction::UserRoleChange, target()).with_changes(
                                vec![AuditChange::values("role", user.role(), Role::Admin)],
                            ),
                        );
                    }
                    records.push(AuditRecord::new(AuditAction::UserPasswordChange, target()));
                    records
                }
            };
            Ok::<_, diesel::result::Error>(Written::recorded_all(admin, records))
        }
        .scope_boxed()
    })
    .await?;
    Ok(admin)
}

/// Idempotent demo data: an admin, a demo user and two chatbots. Passwords
/// of newly created accounts are printed once; existing ones are untouched.
pub async fn seed(db: &Database, hasher: &PasswordHasher) -> anyhow::Result<()> {
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
        let hash = &hash;
        let actor = command_actor("seed");
        let user = db::write(&mut conn, actor.clone(), None, |conn| {
            async move {
                let new = NewUser {
                    id: UserId::generate(),
                    email,
                    hashed_password: hash,
                    role: role.as_str(),
                };
                let user = User::insert(conn, new).await?;
                let record = AuditRecord::new(AuditAction::UserCreate, AuditTarget::user(user.id))
                    .with_changes(vec![AuditChange::values("role", "", role)]);
                Ok::<_, diesel::result::Error>(Written::recorded(user, record))
            }
            .scope_boxed()
        })
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
                let new = NewChatbot {
                    id: ChatbotId::generate(),
                    organization_id: OrganizationId::personal(user.id),
                    owner_id: user.id,
                    name: name.into(),
                    llm_endpoint_url: url.into(),
                };
                let new = &new;
                let chatbot = db::write(&mut conn, actor.clone(), None, |conn| {
                    async move {
                        let chatbot = Chatbot::insert(conn, new).await?;
                        let target =
                            AuditTarget::chatbot(chatbot.id, new.owner_id, new.organization_id);
                        let record = AuditRecord::new(AuditAction::ChatbotCreate, target)
                            .with_state(state_of(chatbot.clone()));
                        Ok::<_, diesel::result::Error>(Written::recorded(chatbot, record))
                    }
                    .scope_boxed()
                })
                .await?;
                println!("  chatbot {:?}: {}", chatbot.name, chatbot.id);
            }
        }
    }
    Ok(())
}
