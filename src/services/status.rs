//! StatusService: what the old GET /db-status reported. Admin only, since
//! counts and versions help an attacker size the target.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::Request;

use super::{no_fields, AppState, Rpc};
use crate::auth::Caller;
use crate::db;
use crate::db::models::{ApiKey, Chatbot, User};
use crate::error::{AppError, AppResult};
use crate::proto::status_service_server::StatusService;
use crate::proto::{GetDatabaseStatusRequest, GetDatabaseStatusResponse};

/// The StatusService implementation.
pub struct StatusApi(pub Arc<AppState>);

#[tonic::async_trait]
impl StatusService for StatusApi {
    async fn get_database_status(
        &self,
        request: Request<GetDatabaseStatusRequest>,
    ) -> Rpc<GetDatabaseStatusResponse> {
        let status =
            async |state: &AppState, caller: &Caller, ()| database_status(state, caller).await;
        self.0.serve(request, no_fields, status).await
    }
}

impl From<DatabaseStatus> for GetDatabaseStatusResponse {
    #[allow(deprecated)] // connected, for the clients that still read it
    fn from(status: DatabaseStatus) -> Self {
        Self {
            connected: true,
            backend: status.backend.into(),
            latency: prost_types::Duration::try_from(status.latency).ok(),
            schema_version: status.schema_version,
            user_count: status.user_count,
            chatbot_count: status.chatbot_count,
            api_key_count: status.api_key_count,
            server_version: status.server_version,
        }
    }
}

/// What the database answered, and how fast.
pub struct DatabaseStatus {
    pub backend: &'static str,
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
        backend: state.db.backend_name(),
        latency,
        server_version,
        schema_version: db::schema_version(&mut conn).await?.unwrap_or_default(),
        user_count: User::count(&mut conn).await?,
        chatbot_count: Chatbot::count(&mut conn).await?,
        api_key_count: ApiKey::count(&mut conn).await?,
    })
}
