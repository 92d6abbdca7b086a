//! UserService. Authorization: a user acts only on themselves; ListUsers and
//! granting admin are admin-only; sign-up is public unless disabled.

use std::sync::Arc;

use chrono::Utc;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::scoped_futures::ScopedFutureExt;
use tonic::{Request, Response, Status};

use super::{convert, mask_paths, AppState};
use crate::auth::{caller, optional_caller, Caller, LoginThrottle};
use crate::db::models::{NewUser, RefreshToken, Session, User, UserChanges};
use crate::db::sql_types::Timestamp;
use crate::db::{self, Invalidation};
use crate::domain::{Email, PageRequest, Password, Role, UserId};
use crate::error::{AppError, AppResult, FieldViolation, Violations};
use crate::proto::user_service_server::UserService;
use crate::proto::{self, UserRole};

/// The UserService implementation.
pub struct Users {
    state: Arc<AppState>,
}

impl Users {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

/// Who may act on the user `target`: themselves or an admin.
fn authorize(caller: &Caller, target: UserId) -> AppResult<()> {
    if caller.may_act_for(target) {
        Ok(())
    } else {
        Err(AppError::PermissionDenied)
    }
}

fn parse_role(field: &str, value: i32) -> Result<Option<Role>, FieldViolation> {
    match UserRole::try_from(value) {
        Ok(UserRole::Unspecified) => Ok(None),
        Ok(UserRole::User) => Ok(Some(Role::User)),
        Ok(UserRole::Admin) => Ok(Some(Role::Admin)),
        Err(_) => Err(FieldViolation::new(field, "is not a known role")),
    }
}

fn email_taken(error: DieselError) -> AppError {
    match error {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
            AppError::AlreadyExists("a user with this email already exists".into())
        }
        other => other.into(),
    }
}

#[tonic::async_trait]
impl UserService for Users {
    async fn create_user(
        &self,
        request: Request<proto::CreateUserRequest>,
    ) -> Result<Response<proto::CreateUserResponse>, Status> {
        let caller = optional_caller(&request);
        let request = request.into_inner();
        let mut violations = Violations::new();
        let email = violations.check(Email::parse("email", &request.email));
        let password = violations.check(Password::parse("password", request.password));
        let role = violations.check(parse_role("role", request.role));
        violations.finish()?;
        let (Some(email), Some(password), Some(role)) = (email, password, role) else {
            unreachable!("finish() returned Ok, so every field parsed");
        };
        let role = role.unwrap_or(Role::User);

        let is_admin = caller.is_some_and(|c| c.is_admin());
        if !self.state.policy.allow_signup && !is_admin {
            return Err(match caller {
                None => AppError::Unauthenticated(
                    "sign-up is disabled; an admin must create users".into(),
                ),
                Some(_) => AppError::PermissionDenied,
            }
            .into());
        }
        if role == Role::Admin && !is_admin {
            return Err(AppError::PermissionDenied.into());
        }

        let hashed_password = self
            .state
            .hasher
            .hash(password)
            .await
            .map_err(AppError::Internal)?;
        let mut conn = self.state.db.conn().await.map_err(AppError::from)?;
        let user = User::insert(
            &mut conn,
            NewUser {
                id: UserId::generate(),
                email: email.as_str(),
                hashed_password: &hashed_password,
                role: role.as_str(),
            },
        )
        .await
        .map_err(email_taken)?;
        tracing::info!(user_id = %user.id, "user created");
        Ok(Response::new(proto::CreateUserResponse {
            user: Some(convert::user(user)),
        }))
    }

    async fn get_user(
        &self,
        request: Request<proto::GetUserRequest>,
    ) -> Result<Response<proto::GetUserResponse>, Status> {
        let caller = caller(&request)?;
        let id = UserId::parse("id", &request.get_ref().id).map_err(AppError::from)?;
        authorize(&caller, id)?;
        let mut conn = self.state.db.conn().await.map_err(AppError::from)?;
        let user = User::find(&mut conn, id)
            .await
            .map_err(AppError::from)?
            .ok_or(AppError::NotFound("user"))?;
        Ok(Response::new(proto::GetUserResponse {
            user: Some(convert::user(user)),
        }))
    }

    async fn list_users(
        &self,
        request: Request<proto::ListUsersRequest>,
    ) -> Result<Response<proto::ListUsersResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let page = PageRequest::parse(request.page_size, &request.page_token, "users")
            .map_err(AppError::from)?;
        if !caller.is_admin() {
            return Err(AppError::PermissionDenied.into());
        }
        let mut conn = self.state.db.conn().await.map_err(AppError::from)?;
        let mut users = User::list(&mut conn, &page).await.map_err(AppError::from)?;
        let next_page_token = page.finish(&mut users, User::cursor);
        Ok(Response::new(proto::ListUsersResponse {
            users: users.into_iter().map(convert::user).collect(),
            next_page_token,
        }))
    }

    async fn update_user(
        &self,
        request: Request<proto::UpdateUserRequest>,
    ) -> Result<Response<proto::UpdateUserResponse>, Status> {
        let caller = caller(&request)?;
        let address = request.remote_addr().map(|addr| addr.ip());
        let request = request.into_inner();
        let mut violations = Violations::new();
        let Some(user) = request.user else {
            return Err(AppError::from(FieldViolation::new("user", "is required")).into());
        };
        let id = violations.check(UserId::parse("user.id", &user.id));
        let paths = mask_paths(
            request.update_mask.as_ref(),
            &["email", "role"],
            &["id", "create_time", "update_time"],
            &mut violations,
        );
        let email = paths
            .contains(&"email")
            .then(|| violations.check(Email::parse("user.email", &user.email)))
            .flatten();
        let role = if paths.contains(&"role") {
            match parse_role("user.role", user.role) {
                Ok(Some(role)) => Some(role),
                Ok(None) => {
                    violations.push(FieldViolation::new(
                        "user.role",
                        "must be USER_ROLE_USER or USER_ROLE_ADMIN",
                    ));
                    None
                }
                Err(violation) => {
                    violations.push(violation);
                    None
                }
            }
        } else {
            None
        };
        let new_password = if request.new_password.is_empty() {
            None
        } else {
            violations.check(Password::parse("new_password", request.new_password))
        };
        violations.finish()?;
        let Some(id) = id else {
            unreachable!("finish() returned Ok, so the id parsed");
        };
        if paths.is_empty() && new_password.is_none() {
            return Err(AppError::from(FieldViolation::new(
                "update_mask",
                "must name at least one field, or set new_password",
            ))
            .into());
        }

        authorize(&caller, id)?;
        if role.is_some() && !caller.is_admin() {
            return Err(AppError::PermissionDenied.into());
        }

        let mut conn = self.state.db.conn().await.map_err(AppError::from)?;
        let current = User::find(&mut conn, id)
            .await
            .map_err(AppError::from)?
            .ok_or(AppError::NotFound("user"))?;

        // No connection is held through the slow hashes.
        drop(conn);
        let mut reservation = None;
        let hashed_password = match new_password {
            None => None,
            Some(new_password) => {
                // Someone holding a stolen access token must not be able to
                // lock the owner out: changing one's own password needs the
                // current one, checked against the login budget like Login.
                if caller.user_id == id {
                    let presented =
                        Password::presented("current_password", request.current_password)
                            .map_err(AppError::from)?;
                    let reserved = self.state.throttle.reserve(&current.email, address).await?;
                    let matches = self
                        .state
                        .hasher
                        .verify(presented, Some(current.hashed_password.clone()))
                        .await
                        .map_err(AppError::Internal)?;
                    if !matches {
                        return Err(AppError::from(FieldViolation::new(
                            "current_password",
                            "does not match the current password",
                        ))
                        .into());
                    }
                    reservation = Some(reserved);
                }
                Some(
                    self.state
                        .hasher
                        .hash(new_password)
                        .await
                        .map_err(AppError::Internal)?,
                )
            }
        };

        let password_changed = hashed_password.is_some();
        // Both take effect on the user's access tokens at their next call.
        let sessions_affected = password_changed || role.is_some_and(|r| r != current.role());
        let changes = UserChanges {
            email: email.map(Email::into_inner),
            hashed_password,
            role: role.map(|role| role.as_str().to_owned()),
            updated_at: Some(Timestamp::now()),
        };
        let reservation = reservation.as_ref();
        let mut conn = self.state.db.conn().await.map_err(AppError::from)?;
        let updated = conn
            .transaction(|conn| {
                async move {
                    // The user's row before the throttle's, as Login locks
                    // them: the other order deadlocks with a racing Login.
                    let updated = User::update(conn, id, &changes).await?;
                    if let Some(reservation) = reservation {
                        // The current password was right: it costs no budget.
                        LoginThrottle::refund(conn, reservation).await?;
                    }
                    if updated.is_some() {
                        if password_changed {
                            // Signs the user out everywhere.
                            let now = Utc::now();
                            RefreshToken::revoke_all_for_user(conn, id, now).await?;
                            Session::revoke_all_for_user(conn, id, now).await?;
                        }
                        if sessions_affected {
                            db::notify_invalidation(conn, &Invalidation::Owner(id)).await?;
                        }
                    }
                    Ok::<_, DieselError>(updated)
                }
                .scope_boxed()
            })
            .await
            .map_err(email_taken)?
            .ok_or(AppError::NotFound("user"))?;
        if sessions_affected {
            self.state.invalidate_here(&Invalidation::Owner(id));
        }
        tracing::info!(user_id = %id, password_changed, "user updated");
        Ok(Response::new(proto::UpdateUserResponse {
            user: Some(convert::user(updated)),
        }))
    }

    async fn delete_user(
        &self,
        request: Request<proto::DeleteUserRequest>,
    ) -> Result<Response<proto::DeleteUserResponse>, Status> {
        let caller = caller(&request)?;
        let id = UserId::parse("id", &request.get_ref().id).map_err(AppError::from)?;
        authorize(&caller, id)?;
        let mut conn = self.state.db.conn().await.map_err(AppError::from)?;
        // Sessions, chatbots and keys go with the user (cascade); every
        // replica hears of it at commit.
        self.state
            .commit_and_invalidate(&mut conn, Invalidation::Owner(id), |conn| {
                async move {
                    match User::delete(conn, id).await? {
                        true => Ok(()),
                        false => Err(AppError::NotFound("user")),
                    }
                }
                .scope_boxed()
            })
            .await?;
        tracing::info!(user_id = %id, "user deleted with their chatbots and keys");
        Ok(Response::new(proto::DeleteUserResponse {}))
    }
}
