//! StatusService: what the old GET /db-status reported. Admin only, since
//! counts and versions help an attacker size the target.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::AppState;
use crate::auth::caller;
use crate::db;
use crate::db::models::{ApiKey, Chatbot, User};
use crate::error::AppError;
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
        if !caller.is_admin() {
            return Err(AppError::PermissionDenied.into());
        }
        let mut conn = self.state.db.conn().await.map_err(AppError::from)?;
        let started = Instant::now();
        let server_version = db::ping(&mut conn).await.map_err(AppError::from)?;
        let latency = started.elapsed();
        let schema_version = db::schema_version(&mut conn)
            .await
            .map_err(AppError::from)?
            .unwrap_or_default();
        let user_count = User::count(&mut conn).await.map_err(AppError::from)?;
        let chatbot_count = Chatbot::count(&mut conn).await.map_err(AppError::from)?;
        let api_key_count = ApiKey::count(&mut conn).await.map_err(AppError::from)?;
        Ok(Response::new(proto::GetDatabaseStatusResponse {
            connected: true,
            backend: self.state.db.backend_name().into(),
            latency: prost_types::Duration::try_from(latency).ok(),
            schema_version,
            user_count,
            chatbot_count,
            api_key_count,
            server_version,
        }))
    }
}
