//! UserService. Authorization: a user acts only on themselves; ListUsers and
//! granting admin are admin-only; sign-up is public unless disabled.

use std::sync::Arc;

use chrono::Utc;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::scoped_futures::ScopedFutureExt;
use tonic::Request;

use super::convert::mask_paths;
use super::{audit, required, AppState, Origin, Rpc};
use crate::auth::{Caller, LoginThrottle, Reservation};
use crate::db::models::{Chatbot, Member, NewUser, Session, User, UserChanges};
use crate::db::{Invalidation, Written};
use crate::domain::{
    AuditAction, AuditChange, AuditRecord, AuditTarget, CreateUser, Email, Page, PageRequest,
    Password, Role, UpdateUser, UserId,
};
use crate::error::{parsed, AppError, AppResult, FieldViolation, Violations};
use crate::proto::user_service_server::UserService;
use crate::proto::{self, UserRole};
use crate::proto::{
    CreateUserRequest, CreateUserResponse, DeleteUserRequest, DeleteUserResponse, GetUserRequest,
    GetUserResponse, ListUsersRequest, ListUsersResponse, UpdateUserRequest, UpdateUserResponse,
};

/// The UserService implementation.
pub struct Users(pub Arc<AppState>);

#[tonic::async_trait]
impl UserService for Users {
    async fn create_user(&self, request: Request<CreateUserRequest>) -> Rpc<CreateUserResponse> {
        let parse = CreateUser::try_from;
        self.0.serve_public(request, parse, create_user).await
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Rpc<GetUserResponse> {
        let parse = |message: GetUserRequest| UserId::parse("id", &message.id);
        self.0.serve(request, parse, get_user).await
    }

    async fn list_users(&self, request: Request<ListUsersRequest>) -> Rpc<ListUsersResponse> {
        let parse = |message: ListUsersRequest| {
            PageRequest::parse(message.page_size, &message.page_token, "users")
        };
        self.0.serve(request, parse, list_users).await
    }

    async fn update_user(&self, request: Request<UpdateUserRequest>) -> Rpc<UpdateUserResponse> {
        let parse = UpdateUser::try_from;
        self.0.serve(request, parse, update_user).await
    }

    async fn delete_user(&self, request: Request<DeleteUserRequest>) -> Rpc<DeleteUserResponse> {
        let parse = |message: DeleteUserRequest| UserId::parse("id", &message.id);
        self.0.serve(request, parse, delete_user).await
    }
}

/// A role a request sets; UNSPECIFIED is `None`.
fn parse_role(field: &str, value: i32) -> Result<Option<Role>, FieldViolation> {
    match UserRole::try_from(value) {
        Ok(UserRole::Unspecified) => Ok(None),
        Ok(UserRole::User) => Ok(Some(Role::User)),
        Ok(UserRole::Admin) => Ok(Some(Role::Admin)),
        Err(_) => Err(FieldViolation::new(field, "is not a known role")),
    }
}

impl TryFrom<proto::CreateUserRequest> for CreateUser {
    type Error = AppError;

    /// Without a role, a plain user.
    fn try_from(request: proto::CreateUserRequest) -> AppResult<Self> {
        let (email, password, role) = parsed((
            Email::parse("email", &request.email),
            Password::parse("password", request.password),
            parse_role("role", request.role),
        ))?;
        Ok(Self {
            email,
            password,
            role: role.unwrap_or(Role::User),
        })
    }
}

impl TryFrom<proto::UpdateUserRequest> for UpdateUser {
    type Error = AppError;

    fn try_from(request: proto::UpdateUserRequest) -> AppResult<Self> {
        let user = required(request.user, "user")?;
        let id = UserId::parse("user.id", &user.id);
        let mut mask = Violations::new();
        let paths = mask_paths(
            request.update_mask.as_ref(),
            &["email", "role"],
            &["id", "create_time", "update_time"],
            &mut mask,
        );
        let email = paths
            .contains(&"email")
            .then(|| Email::parse("user.email", &user.email))
            .transpose();
        let role = paths
            .contains(&"role")
            .then(|| {
                parse_role("user.role", user.role)?.ok_or_else(|| {
                    FieldViolation::new("user.role", "must be USER_ROLE_USER or USER_ROLE_ADMIN")
                })
            })
            .transpose();
        let new_password = (!request.new_password.is_empty())
            .then(|| Password::parse("new_password", request.new_password))
            .transpose();
        let (id, (), email, role, new_password) = parsed((id, mask, email, role, new_password))?;
        if paths.is_empty() && new_password.is_none() {
            return Err(FieldViolation::new(
                "update_mask",
                "must name at least one field, or set new_password",
            )
            .into());
        }
        Ok(Self {
            id,
            email,
            role,
            new_password,
            current_password: Password::presented("current_password", request.current_password),
        })
    }
}

/// Sign-up, unless disabled; only admins create admins.
pub async fn create_user(state: &AppState, origin: &Origin, cmd: CreateUser) -> AppResult<User> {
    let is_admin = origin.caller.as_ref().is_some_and(Caller::is_admin);
    if !state.policy.allow_signup && !is_admin {
        return Err(match origin.caller {
            None => {
                AppError::Unauthenticated("sign-up is disabled; an admin must create users".into())
            }
            Some(_) => AppError::PermissionDenied,
        });
    }
    if cmd.role == Role::Admin && !is_admin {
        return Err(AppError::PermissionDenied);
    }
    let hashed_password = state.hasher.hash(cmd.password).await?;
    let id = UserId::generate();
    // Signing up, the new user is their own actor.
    let actor = audit::public_actor(origin, Some(id));
    let record = AuditRecord::new(AuditAction::UserCreate, AuditTarget::user(id))
        .with_changes(vec![AuditChange::values("role", "", cmd.role.as_str())]);
    let (email, role, hash) = (cmd.email.as_str(), cmd.role.as_str(), &hashed_password);
    let mut conn = state.db.conn().await?;
    // A new user: no cache holds them.
    let user = state
        .write(&mut conn, actor, None, |conn| {
            async move {
                let new = NewUser {
                    id,
                    email,
                    hashed_password: hash,
                    role,
                };
                let user = User::insert(conn, new).await.map_err(email_taken)?;
                Ok(Written::recorded(user, record))
            }
            .scope_boxed()
        })
        .await?;
    tracing::info!(user_id = %user.id, "user created");
    Ok(user)
}

pub async fn get_user(state: &AppState, caller: &Caller, id: UserId) -> AppResult<User> {
    caller.require_may_act_for(id)?;
    let mut conn = state.db.conn().await?;
    User::find(&mut conn, id)
        .await?
        .ok_or(AppError::NotFound("user"))
}

pub async fn list_users(
    state: &AppState,
    caller: &Caller,
    page: PageRequest<UserId>,
) -> AppResult<Page<User>> {
    if !caller.is_admin() {
        return Err(AppError::PermissionDenied);
    }
    let mut conn = state.db.conn().await?;
    let users = User::list(&mut conn, &page).await?;
    Ok(page.page(users, User::cursor))
}

/// Changing one's own password needs the current one, checked against the
/// login budget like Login; a password change signs the user out
/// everywhere. No connection is held through the slow hashes.
pub async fn update_user(state: &AppState, caller: &Caller, cmd: UpdateUser) -> AppResult<User> {
    let id = cmd.id;
    caller.require_may_act_for(id)?;
    if cmd.role.is_some() && !caller.is_admin() {
        return Err(AppError::PermissionDenied);
    }
    let current = {
        let mut conn = state.db.conn().await?;
        User::find(&mut conn, id)
            .await?
            .ok_or(AppError::NotFound("user"))?
    };

    let (hashed_password, reservation) = match cmd.new_password {
        None => (None, None),
        Some(new_password) => {
            let reservation = match caller.user_id() == Some(id) {
                true => Some(
                    check_current_password(state, caller, &current, cmd.current_password?).await?,
                ),
                false => None,
            };
            let hash = state.hasher.hash(new_password).await?;
            (Some(hash), reservation)
        }
    };

    let password_changed = hashed_password.is_some();
    // Sessions carry the email too, for the audit log's actor.
    let email_changed = cmd
        .email
        .as_ref()
        .is_some_and(|email| email.as_str() != current.email);
    let sessions_affected =
        password_changed || email_changed || cmd.role.is_some_and(|r| r != current.role());
    let records = audited_changes(&cmd.email, cmd.role, password_changed, &current);
    let changes = UserChanges {
        email: cmd.email.map(Email::into_inner),
        hashed_password,
        role: cmd.role.map(|role| role.as_str().to_owned()),
    };
    let reservation = reservation.as_ref();
    let checked_hash = &current.hashed_password;
    // All three take effect on the user's access tokens at their next call.
    let stale = sessions_affected.then_some(Invalidation::Owner(id));
    let mut conn = state.db.conn().await?;
    let updated = state
        .write(&mut conn, audit::actor(caller), stale, |conn| {
            async move {
                // The user's row before the throttle's, as Login locks them:
                // the other order deadlocks with a racing Login. A checked
                // current password must still be the current one: of two
                // racing changes that both knew it, only the first applies.
                if reservation.is_some()
                    && !User::lock_if_password_unchanged(conn, id, checked_hash).await?
                {
                    return Err(wrong_current_password());
                }
                let updated = User::update(conn, id, &changes)
                    .await
                    .map_err(email_taken)?;
                if let Some(reservation) = reservation {
                    // The current password was right: it costs no budget.
                    LoginThrottle::refund(conn, reservation).await?;
                }
                if updated.is_none() {
                    return Ok(Written::unrecorded(None));
                }
                if password_changed {
                    // Signs the user out everywhere.
                    Session::end_all_for_user(conn, id, Utc::now()).await?;
                }
                Ok(Written::recorded_all(updated, records))
            }
            .scope_boxed()
        })
        .await?
        .ok_or(AppError::NotFound("user"))?;
    tracing::info!(user_id = %id, password_changed, "user updated");
    Ok(updated)
}

/// Someone holding a stolen access token must not be able to lock the
/// owner out: changing one's own password needs the current one, checked
/// against the login budget like Login. The reservation is refunded when
/// the change commits.
async fn check_current_password(
    state: &AppState,
    caller: &Caller,
    current: &User,
    presented: Password,
) -> AppResult<Reservation> {
    let reservation = state
        .throttle
        .reserve(&current.email, caller.address)
        .await?;
    let matches = state
        .hasher
        .verify(presented, Some(current.hashed_password.clone()))
        .await?;
    match matches {
        true => Ok(reservation),
        false => Err(wrong_current_password()),
    }
}

fn wrong_current_password() -> AppError {
    FieldViolation::new("current_password", "does not match the current password").into()
}

/// Sessions, memberships, the personal organization and its chatbots and
/// keys go with the user (cascade); every replica hears of it at commit.
/// The chatbots they are accountable for in teams pass to another owner of
/// each, and the only owner of a team is refused (as GitHub does): the team
/// would be left with no one to manage it.
pub async fn delete_user(state: &AppState, caller: &Caller, id: UserId) -> AppResult<()> {
    caller.require_may_act_for(id)?;
    let mut conn = state.db.conn().await?;
    let record = AuditRecord::new(AuditAction::UserDelete, AuditTarget::user(id));
    let stale = Some(Invalidation::Owner(id));
    let deleted = state
        .write(&mut conn, audit::actor(caller), stale, |conn| {
            async move {
                // The user's row locked first: a racing change waits.
                if !User::lock(conn, id).await? {
                    return Ok(Written::unrecorded(false));
                }
                if let Some(team) = Member::solely_owned_by(conn, id).await?.first() {
                    return Err(AppError::FailedPrecondition(format!(
                        "the user is the only owner of organization {team}; make another member \
                         an owner, or delete the organization, first"
                    )));
                }
                if let Some(team) = Chatbot::hand_over_from(conn, id).await? {
                    return Err(AppError::FailedPrecondition(format!(
                        "organization {team} has no other owner to take over the user's chatbots"
                    )));
                }
                Ok(match User::delete(conn, id).await? {
                    true => Written::recorded(true, record),
                    false => Written::unrecorded(false),
                })
            }
            .scope_boxed()
        })
        .await?;
    if !deleted {
        return Err(AppError::NotFound("user"));
    }
    tracing::info!(user_id = %id, "user deleted with their chatbots and keys");
    Ok(())
}

/// What an UpdateUser records: the email by name only (the old one is not
/// repeated into the log), a role change with both roles, a password change
/// without any value.
fn audited_changes(
    email: &Option<Email>,
    role: Option<Role>,
    password_changed: bool,
    current: &User,
) -> Vec<AuditRecord> {
    let target = || AuditTarget::user(current.id);
    let mut records = Vec::new();
    if email.is_some() {
        records.push(
            AuditRecord::new(AuditAction::UserUpdate, target())
                .with_changes(vec![AuditChange::field("email")]),
        );
    }
    if let Some(role) = role.filter(|role| *role != current.role()) {
        records.push(
            AuditRecord::new(AuditAction::UserRoleChange, target()).with_changes(vec![
                AuditChange::values("role", current.role().as_str(), role.as_str()),
            ]),
        );
    }
    if password_changed {
        records.push(AuditRecord::new(AuditAction::UserPasswordChange, target()));
    }
    records
}

fn email_taken(error: DieselError) -> AppError {
    match error {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
            AppError::AlreadyExists("a user with this email already exists".into())
        }
        other => other.into(),
    }
}
