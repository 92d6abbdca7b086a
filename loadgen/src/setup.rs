//! The data a run needs, made through the public API before it starts: a
//! user, a login, chatbots, and keys (restricted, with credits, or in
//! organizations with credits) as the RPC asks.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chatbot_backend::proto;
use chatbot_backend::proto::api_key_service_client::ApiKeyServiceClient;
use chatbot_backend::proto::auth_service_client::AuthServiceClient;
use chatbot_backend::proto::chatbot_service_client::ChatbotServiceClient;
use chatbot_backend::proto::organization_service_client::OrganizationServiceClient;
use chatbot_backend::proto::user_service_client::UserServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::connection::{Authed, Bearer};
use crate::{Args, Rpc, GET_CHATBOTS, LIST_CHATBOTS, LIST_PAGE_SIZE, LLM_ENDPOINT_URL, PASSWORD};

/// What the setup created; every caller shares it.
pub(crate) struct Fixture {
    pub(crate) email: String,
    pub(crate) bearer: Bearer,
    /// What `get-chatbot` reads.
    pub(crate) read_ids: Vec<String>,
    /// What the VerifyApiKey RPCs that verify issued keys present, in turn.
    pub(crate) api_keys: Vec<String>,
}

pub(crate) fn endpoint(args: &Args) -> anyhow::Result<Endpoint> {
    let endpoint = Endpoint::from_shared(args.addr.clone())
        .with_context(|| format!("--addr {:?} is not a URL", args.addr))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_millis(args.timeout_ms))
        .tcp_nodelay(true);
    Ok(endpoint)
}

pub(crate) fn bearer(token: &str) -> anyhow::Result<Bearer> {
    let value = format!("Bearer {token}")
        .parse()
        .context("access token is not valid metadata")?;
    Ok(Bearer(value))
}

pub(crate) async fn create_chatbot(
    client: &mut ChatbotServiceClient<Authed>,
    name: &str,
) -> anyhow::Result<String> {
    create_chatbot_in(client, name, String::new()).await
}

/// A chatbot in `organization_id` (empty: the user's personal one).
pub(crate) async fn create_chatbot_in(
    client: &mut ChatbotServiceClient<Authed>,
    name: &str,
    organization_id: String,
) -> anyhow::Result<String> {
    let chatbot = client
        .create_chatbot(proto::CreateChatbotRequest {
            name: name.into(),
            llm_endpoint_url: LLM_ENDPOINT_URL.into(),
            organization_id,
            ..Default::default()
        })
        .await
        .context("CreateChatbot")?
        .into_inner()
        .chatbot
        .context("CreateChatbot returned no chatbot")?;
    Ok(chatbot.id)
}

/// Signs up a new user and creates what `rpc` needs.
/// `call`'s answer, calling again every 100 ms for up to a minute while it
/// is RESOURCE_EXHAUSTED.
pub(crate) async fn retry_while_busy<T, F, Fut>(mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        match call().await {
            Err(status) if status.code() == Code::ResourceExhausted && Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answer => return answer,
        }
    }
}

pub(crate) async fn set_up(channel: Channel, rpc: Rpc) -> anyhow::Result<Fixture> {
    let email = format!("loadgen-{}@example.com", uuid::Uuid::new_v4().simple());
    // Both hash a password: during a Login flood the server may be too busy
    // to take them, and says so; set-up waits its turn.
    let users = UserServiceClient::new(channel.clone());
    retry_while_busy(|| {
        let mut users = users.clone();
        let request = proto::CreateUserRequest {
            email: email.clone(),
            password: PASSWORD.into(),
            role: 0,
        };
        async move { users.create_user(request).await }
    })
    .await
    .context("CreateUser (sign-up)")?;
    let auth = AuthServiceClient::new(channel.clone());
    let login = retry_while_busy(|| {
        let mut auth = auth.clone();
        let request = proto::LoginRequest {
            email: email.clone(),
            password: PASSWORD.into(),
        };
        async move { auth.login(request).await }
    })
    .await
    .context("Login")?
    .into_inner();
    let bearer = bearer(&login.access_token)?;
    let mut chatbots =
        ChatbotServiceClient::new(InterceptedService::new(channel.clone(), bearer.clone()));
    let chatbot_id = create_chatbot(&mut chatbots, "loadgen").await?;
    let mut read_ids = vec![chatbot_id.clone()];
    if rpc == Rpc::GetChatbot {
        for i in 1..GET_CHATBOTS {
            read_ids.push(create_chatbot(&mut chatbots, &format!("loadgen read {i}")).await?);
        }
    }

    if rpc == Rpc::ListChatbots {
        for i in 1..LIST_CHATBOTS {
            create_chatbot(&mut chatbots, &format!("loadgen list {i}")).await?;
        }
        let page = chatbots
            .list_chatbots(proto::ListChatbotsRequest {
                page_size: LIST_PAGE_SIZE,
                ..Default::default()
            })
            .await
            .context("ListChatbots")?
            .into_inner();
        if page.chatbots.len() != LIST_PAGE_SIZE as usize {
            bail!(
                "ListChatbots returned {} chatbots, expected {LIST_PAGE_SIZE}",
                page.chatbots.len()
            );
        }
    }

    let mut organizations =
        OrganizationServiceClient::new(InterceptedService::new(channel.clone(), bearer.clone()));
    let mut keys = ApiKeyServiceClient::new(InterceptedService::new(channel, bearer.clone()));
    let mut api_keys = Vec::new();
    match rpc {
        Rpc::VerifyApiKeyValid | Rpc::VerifyApiKeyRateLimited | Rpc::ExtAuthzCheck => {
            let rate_limit = (rpc == Rpc::VerifyApiKeyRateLimited).then_some(proto::RateLimit {
                limit: 1_000_000,
                window: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                ..Default::default()
            });
            api_keys.push(create_key(&mut keys, &chatbot_id, rate_limit, None).await?);
        }
        Rpc::VerifyApiKeyRestricted => {
            let created = keys
                .create_api_key(proto::CreateApiKeyRequest {
                    chatbot_id: chatbot_id.clone(),
                    display_name: "loadgen restricted".into(),
                    allowed_networks: (0..RESTRICTIONS).map(restricted_network).collect(),
                    permissions: (0..RESTRICTIONS).map(restricted_permission).collect(),
                    ..Default::default()
                })
                .await
                .context("CreateApiKey (restricted)")?;
            api_keys.push(created.into_inner().key);
        }
        Rpc::VerifyApiKeyCredits | Rpc::ReserveAndSettle => {
            let credits = proto::Credits {
                remaining: 1_000_000_000_000,
                ..Default::default()
            };
            // At most 100 active keys per chatbot by default.
            for c in 0..CREDIT_KEYS / 100 {
                let owner = create_chatbot(&mut chatbots, &format!("loadgen credits {c}")).await?;
                for _ in 0..100 {
                    api_keys.push(create_key(&mut keys, &owner, None, Some(credits)).await?);
                }
            }
        }
        Rpc::VerifyApiKeyOrganizationCredits => {
            for o in 0..CREDIT_KEYS / 100 {
                let organization = organizations
                    .create_organization(proto::CreateOrganizationRequest {
                        name: format!("loadgen team {o}"),
                        ..Default::default()
                    })
                    .await
                    .context("CreateOrganization")?
                    .into_inner()
                    .organization
                    .context("CreateOrganization returned no organization")?;
                organizations
                    .update_organization(proto::UpdateOrganizationRequest {
                        organization: Some(proto::Organization {
                            id: organization.id.clone(),
                            credits: Some(proto::Credits {
                                remaining: 1_000_000_000_000,
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["credits".into()],
                        }),
                        ..Default::default()
                    })
                    .await
                    .context("UpdateOrganization")?;
                let name = format!("loadgen team bot {o}");
                let chatbot = create_chatbot_in(&mut chatbots, &name, organization.id).await?;
                for _ in 0..100 {
                    api_keys.push(create_key(&mut keys, &chatbot, None, None).await?);
                }
            }
        }
        _ => {}
    }

    Ok(Fixture {
        email,
        bearer,
        read_ids,
        api_keys,
    })
}

/// A well-mixed 64-bit hash (SplitMix64's finalizer): a cheap, repeatable
/// random draw per request.
pub(crate) fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Networks and permissions on `verify-api-key-restricted`'s key.
pub(crate) const RESTRICTIONS: usize = 10;
/// In the last of the key's networks (198.51.100.0/24 is TEST-NET-2).
pub(crate) const RESTRICTED_CLIENT_ADDRESS: &str = "198.51.100.7";

/// The key's networks: nine that miss `RESTRICTED_CLIENT_ADDRESS`, then
/// the one that holds it.
pub(crate) fn restricted_network(index: usize) -> String {
    if index + 1 == RESTRICTIONS {
        "198.51.100.0/24".into()
    } else {
        format!("10.{index}.0.0/16")
    }
}

pub(crate) fn restricted_permission(index: usize) -> String {
    format!("models/loadgen-model-{index}")
}

/// Keys `verify-api-key-credits` spends from.
pub(crate) const CREDIT_KEYS: usize = 1000;

pub(crate) async fn create_key(
    keys: &mut ApiKeyServiceClient<InterceptedService<Channel, Bearer>>,
    chatbot_id: &str,
    rate_limit: Option<proto::RateLimit>,
    credits: Option<proto::Credits>,
) -> anyhow::Result<String> {
    Ok(keys
        .create_api_key(proto::CreateApiKeyRequest {
            chatbot_id: chatbot_id.into(),
            display_name: "loadgen".into(),
            rate_limit,
            credits,
            ..Default::default()
        })
        .await
        .context("CreateApiKey")?
        .into_inner()
        .key)
}
