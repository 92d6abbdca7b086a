//! StatusService: what the old GET /db-status reported. Admin only, since
//! counts and versions help an attacker size the target.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};

use super::AppState;
use crate::auth::{caller, Caller};
use crate::db;
use crate::db::models::{ApiKey, Chatbot, User};
use crate::error::{AppError, AppResult};
use crate::proto;
use crate::proto::status_service_server::StatusService;

/// The StatusService implementation.
pub struct StatusApi {
    state: Arc<AppState>,
}

impl StatusApi {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl StatusService for StatusApi {
    async fn get_database_status(
        &self,
        request: Request<proto::GetDatabaseStatusRequest>,
    ) -> Result<Response<proto::GetDatabaseStatusResponse>, Status> {
        let caller = caller(&request)?;
        let status = database_status(&self.state, &caller).await?;
        Ok(Response::new(proto::GetDatabaseStatusResponse {
            connected: true,
            backend: self.state.db.backend_name().into(),
            latency: prost_types::Duration::try_from(status.latency).ok(),
            schema_version: status.schema_version,
            user_count: status.user_count,
            chatbot_count: status.chatbot_count,
            api_key_count: status.api_key_count,
            server_version: status.server_version,
        }))
    }
}

/// What the database answered, and how fast.
pub struct DatabaseStatus {
    pub latency: Duration,
    pub server_version: String,
    pub schema_version: String,
    pub user_count: i64,
    pub chatbot_count: i64,
    pub api_key_count: i64,
}

pub async fn database_status(state: &AppState, caller: &Caller) -> AppResult<DatabaseStatus> {
    if !caller.is_admin() {
        return Err(AppError::PermissionDenied);
    }
    let mut conn = state.db.conn().await?;
    let started = Instant::now();
    let server_version = db::ping(&mut conn).await?;
    let latency = started.elapsed();
    Ok(DatabaseStatus {
        latency,
        server_version,
        schema_version: db::schema_version(&mut conn).await?.unwrap_or_default(),
        user_count: User::count(&mut conn).await?,
        chatbot_count: Chatbot::count(&mut conn).await?,
        api_key_count: ApiKey::count(&mut conn).await?,
    })
}
