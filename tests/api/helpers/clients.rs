//! Typed clients of a test server, with or without a user's token, and the
//! calls tests make so often that they are written here once.

use std::net::SocketAddr;

use chatbot_backend::proto::api_key_service_client::ApiKeyServiceClient;
use chatbot_backend::proto::audit_service_client::AuditServiceClient;
use chatbot_backend::proto::auth_service_client::AuthServiceClient;
use chatbot_backend::proto::chatbot_service_client::ChatbotServiceClient;
use chatbot_backend::proto::event_service_client::EventServiceClient;
use chatbot_backend::proto::organization_service_client::OrganizationServiceClient;
use chatbot_backend::proto::status_service_client::StatusServiceClient;
use chatbot_backend::proto::user_service_client::UserServiceClient;
use chatbot_backend::proto::webhook_service_client::WebhookServiceClient;
use chatbot_backend::proto::{self};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Interceptor that adds `authorization: Bearer <token>` when a token is set.
#[derive(Clone)]
pub struct Bearer(pub Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            let value = format!("Bearer {token}").parse().expect("token is ASCII");
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// A channel that sends a [`Bearer`] token with each call.
pub type Authed = InterceptedService<Channel, Bearer>;

/// Typed clients of one server, for a token or none. [`TestApp`](super::TestApp) and
/// [`ReplicaProcess`](super::ReplicaProcess) both dereference to it.
pub struct Clients {
    channel: Channel,
}

impl Clients {
    /// Clients of the server listening at `addr`, once connected.
    pub async fn connect(addr: SocketAddr) -> Self {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("valid URI")
            .connect()
            .await
            .expect("connect to the test server");
        Self { channel }
    }

    /// The plain channel, for clients of services without a helper here.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    fn authed(&self, token: Option<&str>) -> Authed {
        InterceptedService::new(self.channel.clone(), Bearer(token.map(str::to_owned)))
    }

    /// A UserService client that sends `token` as its bearer, or no token.
    pub fn users(&self, token: Option<&str>) -> UserServiceClient<Authed> {
        UserServiceClient::new(self.authed(token))
    }

    /// A ChatbotService client that sends `token` as its bearer, or no token.
    pub fn chatbots(&self, token: Option<&str>) -> ChatbotServiceClient<Authed> {
        ChatbotServiceClient::new(self.authed(token))
    }

    /// A ApiKeyService client that sends `token` as its bearer, or no token.
    pub fn api_keys(&self, token: Option<&str>) -> ApiKeyServiceClient<Authed> {
        ApiKeyServiceClient::new(self.authed(token))
    }

    /// A AuthService client that sends `token` as its bearer, or no token.
    pub fn auth(&self, token: Option<&str>) -> AuthServiceClient<Authed> {
        AuthServiceClient::new(self.authed(token))
    }

    /// A StatusService client that sends `token` as its bearer, or no token.
    pub fn status(&self, token: Option<&str>) -> StatusServiceClient<Authed> {
        StatusServiceClient::new(self.authed(token))
    }

    /// A AuditService client that sends `token` as its bearer, or no token.
    pub fn audit(&self, token: Option<&str>) -> AuditServiceClient<Authed> {
        AuditServiceClient::new(self.authed(token))
    }

    /// An OrganizationService client that sends `token` as its bearer, or
    /// no token.
    pub fn organizations(&self, token: Option<&str>) -> OrganizationServiceClient<Authed> {
        OrganizationServiceClient::new(self.authed(token))
    }

    /// An EventService client that sends `token` as its bearer, or no
    /// token.
    pub fn events(&self, token: Option<&str>) -> EventServiceClient<Authed> {
        EventServiceClient::new(self.authed(token))
    }

    pub fn webhooks(&self, token: Option<&str>) -> WebhookServiceClient<Authed> {
        WebhookServiceClient::new(self.authed(token))
    }

    /// GetUser of user `id`, asked by `token`'s user.
    pub async fn get_user(&self, token: &str, id: &str) -> Result<proto::User, Status> {
        let request = proto::GetUserRequest { id: id.into() };
        let got = self.users(Some(token)).get_user(request).await?;
        Ok(got.into_inner().user.expect("user in response"))
    }

    /// GetChatbot of chatbot `id`, asked by `token`'s user.
    pub async fn get_chatbot(&self, token: &str, id: &str) -> Result<proto::Chatbot, Status> {
        let request = proto::GetChatbotRequest { id: id.into() };
        let got = self.chatbots(Some(token)).get_chatbot(request).await?;
        Ok(got.into_inner().chatbot.expect("chatbot in response"))
    }

    /// The chatbot CreateChatbot makes from `request`, asked by `token`'s
    /// user.
    pub async fn create_chatbot_from(
        &self,
        token: &str,
        request: impl tonic::IntoRequest<proto::CreateChatbotRequest>,
    ) -> Result<proto::Chatbot, Status> {
        let created = self.chatbots(Some(token)).create_chatbot(request).await?;
        Ok(created.into_inner().chatbot.expect("chatbot in response"))
    }

    /// The chatbot as GetChatbot answers it to `token`'s user; panics on
    /// an error status.
    pub async fn read_chatbot(&self, token: &str, id: &str) -> proto::Chatbot {
        self.get_chatbot(token, id)
            .await
            .expect("GetChatbot answers OK")
    }

    /// DeleteChatbot of chatbot `id`, asked by `token`'s user.
    pub async fn delete_chatbot(&self, token: &str, id: &str) -> Result<(), Status> {
        let request = proto::DeleteChatbotRequest { id: id.into() };
        self.chatbots(Some(token)).delete_chatbot(request).await?;
        Ok(())
    }

    /// GetDatabaseStatus as `token`'s user sees it; panics on an error
    /// status.
    pub async fn database_status(&self, token: &str) -> proto::GetDatabaseStatusResponse {
        self.status(Some(token))
            .get_database_status(proto::GetDatabaseStatusRequest {})
            .await
            .expect("GetDatabaseStatus answers OK")
            .into_inner()
    }

    /// Login's answer for `email` and `password`.
    pub async fn login(&self, email: &str, password: &str) -> Result<proto::LoginResponse, Status> {
        Ok(self
            .auth(None)
            .login(proto::LoginRequest {
                email: email.into(),
                password: password.into(),
            })
            .await?
            .into_inner())
    }

    /// VerifyApiKey's answer for `key` (at the default cost); panics on an
    /// error status.
    pub async fn verify(&self, key: &str) -> proto::VerifyApiKeyResponse {
        verify_costing(self, key, 0).await
    }

    /// RevokeApiKey of key `id`, asked by `token`'s user.
    pub async fn revoke_api_key(&self, token: &str, id: i64) -> Result<proto::ApiKey, Status> {
        let revoked = self
            .api_keys(Some(token))
            .revoke_api_key(proto::RevokeApiKeyRequest { id })
            .await?;
        Ok(revoked.into_inner().api_key.expect("api_key in response"))
    }

    /// DeleteApiKey of key `id`, asked by `token`'s user.
    pub async fn delete_api_key(&self, token: &str, id: i64) -> Result<(), Status> {
        let request = proto::DeleteApiKeyRequest { id };
        self.api_keys(Some(token)).delete_api_key(request).await?;
        Ok(())
    }

    /// Logout of the session `access_token` belongs to, handing back its
    /// `refresh_token`.
    pub async fn logout(&self, access_token: &str, refresh_token: &str) -> Result<(), Status> {
        let request = proto::LogoutRequest {
            refresh_token: refresh_token.into(),
        };
        self.auth(Some(access_token)).logout(request).await?;
        Ok(())
    }

    /// RefreshToken's answer for `refresh_token`.
    pub async fn refresh(
        &self,
        refresh_token: &str,
    ) -> Result<proto::RefreshTokenResponse, Status> {
        let request = proto::RefreshTokenRequest {
            refresh_token: refresh_token.into(),
        };
        Ok(self.auth(None).refresh_token(request).await?.into_inner())
    }
}

/// VerifyApiKey of `key` at `cost`, through `clients`; panics on an error
/// status.
pub async fn verify_costing(
    clients: &Clients,
    key: &str,
    cost: i64,
) -> proto::VerifyApiKeyResponse {
    clients
        .api_keys(None)
        .verify_api_key(proto::VerifyApiKeyRequest {
            key: key.into(),
            cost,
            ..Default::default()
        })
        .await
        .expect("VerifyApiKey answers OK")
        .into_inner()
}
