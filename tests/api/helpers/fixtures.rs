//! What tests start from: signed-up users and admins, their chatbots and
//! their API keys.

use chatbot_backend::auth::PasswordHasher;
use chatbot_backend::db::models::User;
use chatbot_backend::domain::Password;
use chatbot_backend::proto;
use tonic::Status;

use super::{TestApp, PASSWORD, TEST_HASH_COST};

/// A signed-up, logged-in user.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: String,
    pub email: String,
    pub password: String,
    pub token: String,
    pub refresh_token: String,
}

impl TestApp {
    /// CreateUser's answer for a sign-up (no token) with `email` and
    /// `password`.
    pub async fn sign_up(&self, email: &str, password: &str) -> Result<proto::User, Status> {
        let response = self
            .users(None)
            .create_user(proto::CreateUserRequest {
                email: email.into(),
                password: password.into(),
                role: 0,
            })
            .await?;
        Ok(response.into_inner().user.expect("user in response"))
    }

    /// A new user with a unique email, signed up and logged in.
    pub async fn new_user(&self) -> TestUser {
        let email = format!("user-{}@example.com", uuid::Uuid::new_v4().simple());
        let user = self
            .sign_up(&email, PASSWORD)
            .await
            .expect("sign-up succeeds");
        let login = self.login(&email, PASSWORD).await.expect("login succeeds");
        TestUser {
            id: user.id,
            email,
            password: PASSWORD.into(),
            token: login.access_token,
            refresh_token: login.refresh_token,
        }
    }

    /// A new admin, created the way `create-admin` does, and logged in.
    pub async fn new_admin(&self) -> TestUser {
        let email = format!("admin-{}@example.com", uuid::Uuid::new_v4().simple());
        let hash = PasswordHasher::with_cost(1, TEST_HASH_COST)
            .unwrap()
            .hash(Password::parse("password", PASSWORD.into()).unwrap())
            .await
            .unwrap();
        let mut conn = self.db.conn().await.unwrap();
        let user = User::upsert_admin(&mut conn, &email, &hash).await.unwrap();
        // Login needs a connection too, and a test's pool may have one.
        drop(conn);
        let login = self
            .login(&email, PASSWORD)
            .await
            .expect("admin login succeeds");
        TestUser {
            id: user.id.to_string(),
            email,
            password: PASSWORD.into(),
            token: login.access_token,
            refresh_token: login.refresh_token,
        }
    }

    /// A chatbot of `owner` called `name`, created by `owner`; panics on an
    /// error status.
    pub async fn create_chatbot(&self, owner: &TestUser, name: &str) -> proto::Chatbot {
        let request = proto::CreateChatbotRequest {
            name: name.into(),
            llm_endpoint_url: "https://llm.example.com/v1/chat".into(),
            ..Default::default()
        };
        self.create_chatbot_from(&owner.token, request)
            .await
            .expect("create chatbot")
    }

    /// A key (named "test key", without expiry or limits) on `owner`'s
    /// chatbot `chatbot_id`; panics on an error status.
    pub async fn create_api_key(
        &self,
        owner: &TestUser,
        chatbot_id: &str,
    ) -> proto::CreateApiKeyResponse {
        let request = proto::CreateApiKeyRequest {
            display_name: "test key".into(),
            ..Default::default()
        };
        self.create_api_key_with(owner, chatbot_id, request).await
    }

    /// A key made by CreateApiKey from `request` (its name, expiry and
    /// limits) on `owner`'s chatbot `chatbot_id`; panics on an error
    /// status.
    pub async fn create_api_key_with(
        &self,
        owner: &TestUser,
        chatbot_id: &str,
        request: proto::CreateApiKeyRequest,
    ) -> proto::CreateApiKeyResponse {
        self.api_keys(Some(&owner.token))
            .create_api_key(proto::CreateApiKeyRequest {
                chatbot_id: chatbot_id.into(),
                ..request
            })
            .await
            .expect("create API key")
            .into_inner()
    }
}

/// The most common start of a test: a signed-up, logged-in user who owns
/// one chatbot with one API key.
pub struct KeyOwner {
    pub owner: TestUser,
    pub chatbot: proto::Chatbot,
    /// CreateApiKey's answer: the key's record and, this once, its
    /// plaintext.
    pub created: proto::CreateApiKeyResponse,
}

impl TestApp {
    /// A new user (see [`TestApp::new_user`]) with a chatbot called
    /// `chatbot_name` and one key on it (see [`TestApp::create_api_key`]),
    /// all made through the API.
    pub async fn new_key_owner(&self, chatbot_name: &str) -> KeyOwner {
        let owner = self.new_user().await;
        let chatbot = self.create_chatbot(&owner, chatbot_name).await;
        let created = self.create_api_key(&owner, &chatbot.id).await;
        KeyOwner {
            owner,
            chatbot,
            created,
        }
    }
}

impl super::Clients {
    /// UpdateOrganization `request` by `caller`: the organization it answers.
    pub async fn update_organization(
        &self,
        caller: &TestUser,
        request: proto::UpdateOrganizationRequest,
    ) -> Result<proto::Organization, tonic::Status> {
        let updated = self
            .organizations(Some(&caller.token))
            .update_organization(request)
            .await?;
        Ok(updated
            .into_inner()
            .organization
            .expect("an organization in the response"))
    }

    /// Key `id` as GetApiKey shows it to `owner`; panics on an error status.
    pub async fn get_api_key(&self, owner: &TestUser, id: i64) -> proto::ApiKey {
        self.api_keys(Some(&owner.token))
            .get_api_key(proto::GetApiKeyRequest { id })
            .await
            .expect("get the key")
            .into_inner()
            .api_key
            .expect("a key in the response")
    }

    /// A team organization `owner` creates; panics on an error status.
    pub async fn create_organization(&self, owner: &TestUser, name: &str) -> proto::Organization {
        self.organizations(Some(&owner.token))
            .create_organization(proto::CreateOrganizationRequest {
                name: name.into(),
                ..Default::default()
            })
            .await
            .expect("create organization")
            .into_inner()
            .organization
            .expect("organization in response")
    }

    /// An invitation of `email` with `role` to `organization_id`, made by
    /// `owner`, with its token; panics on an error status.
    pub async fn invite(
        &self,
        owner: &TestUser,
        organization_id: &str,
        email: &str,
        role: proto::OrganizationRole,
    ) -> proto::CreateInvitationResponse {
        self.organizations(Some(&owner.token))
            .create_invitation(proto::CreateInvitationRequest {
                organization_id: organization_id.into(),
                email: email.into(),
                role: role.into(),
                ttl: None,
                ..Default::default()
            })
            .await
            .expect("create invitation")
            .into_inner()
    }

    /// A service account of `organization_id` with `role`, made by
    /// `owner`, with its token; panics on an error status.
    pub async fn create_service_account(
        &self,
        owner: &TestUser,
        organization_id: &str,
        role: proto::OrganizationRole,
    ) -> proto::CreateServiceAccountResponse {
        self.organizations(Some(&owner.token))
            .create_service_account(proto::CreateServiceAccountRequest {
                organization_id: organization_id.into(),
                name: "provisioning".into(),
                role: role.into(),
                expire_time: None,
                ..Default::default()
            })
            .await
            .expect("create service account")
            .into_inner()
    }

    /// AcceptInvitation of `token` by `user`.
    pub async fn accept(&self, user: &TestUser, token: &str) -> Result<proto::Member, Status> {
        let accepted = self
            .organizations(Some(&user.token))
            .accept_invitation(proto::AcceptInvitationRequest {
                token: token.into(),
            })
            .await?;
        Ok(accepted.into_inner().member.expect("member in response"))
    }
}

impl TestApp {
    /// A new user (see [`TestApp::new_user`]) who joined `organization_id`
    /// with `role` by accepting `owner`'s invitation.
    pub async fn new_member(
        &self,
        owner: &TestUser,
        organization_id: &str,
        role: proto::OrganizationRole,
    ) -> TestUser {
        let user = self.new_user().await;
        let invitation = self.invite(owner, organization_id, &user.email, role).await;
        self.accept(&user, &invitation.token)
            .await
            .expect("accept invitation");
        user
    }
}
