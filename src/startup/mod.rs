//! `Application`: builds the pool, migrates, binds the listener (port 0
//! allowed), wires health, reflection, the auth layer and the services, and
//! runs until told to shut down, gracefully. The work it does beside serving
//! (health, flushes, sweeps, publishing, LISTEN) is in [`background`].

mod background;
mod copied_writes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::TryStreamExt;
use secrecy::{ExposeSecret, SecretSlice};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::auth::{
    AuthLayer, CredentialsGate, LoginThrottle, Memberships, PasswordHasher, ServiceAccounts,
    Sessions, TokenKeys,
};
use crate::config::{Config, Settings};
use crate::console::{AllowedOrigins, ConsoleLayer};
use crate::db::{self, BarrierRequest, Database, DatabaseTarget, ServeLock};
use crate::gate::GateLayer;
use crate::health;
use crate::hot_path::batch_queue::{BatchSettings, QueueBound};
use crate::hot_path::{
    ApiKeyCache, CacheInvalidation, ChatbotCache, ChatbotPages, ChatbotReads, KnownKeys, ReadStats,
};
use crate::metrics::{self, Metrics};
use crate::observability::RpcLayer;
use crate::panics::CatchPanicLayer;
use crate::proto;
use crate::proto::api_key_service_server::ApiKeyServiceServer;
use crate::proto::audit_service_server::AuditServiceServer;
use crate::proto::auth_service_server::AuthServiceServer;
use crate::proto::chatbot_service_server::ChatbotServiceServer;
use crate::proto::event_service_server::EventServiceServer;
use crate::proto::organization_service_server::OrganizationServiceServer;
use crate::proto::status_service_server::StatusServiceServer;
use crate::proto::user_service_server::UserServiceServer;
use crate::proto::webhook_service_server::WebhookServiceServer;
use crate::rate_limit::{RateLimitGate, RateLimits, SharedLimits};
use crate::services::api_keys::{ApiKeys, VerifyMethod, VERIFY_API_KEY_PATH};
use crate::services::audit::Audit;
use crate::services::auth::Auth;
use crate::services::chatbots::{Chatbots, ListChatbotsMethod, LIST_CHATBOTS_PATH};
use crate::services::encoded::AnswerWritten;
use crate::services::events::Events;
use crate::services::external_authorization::{CheckMethod, ExternalAuthorization, CHECK_PATH};
use crate::services::organizations::Organizations;
use crate::services::status::StatusApi;
use crate::services::users::Users;
use crate::services::webhooks::Webhooks;
use crate::services::{AppState, Policy};
use crate::verification::KeyVerifier;
use background::{set_readiness, BackgroundTasks};
use copied_writes::CopiedWrites;
use envoy_types::ext_authz::v3::pb::AuthorizationServer;

/// Health service name that reports SERVING while the process runs, whatever
/// the database does: point Kubernetes' liveness probe at it, and the
/// readiness probe at "" (the whole server).
pub const LIVENESS_SERVICE: &str = "liveness";

/// Services whose health follows the database: the whole server and each
/// API service, by its generated name.
const READINESS_SERVICES: &[&str] = &[
    "",
    proto::user_service_server::SERVICE_NAME,
    proto::chatbot_service_server::SERVICE_NAME,
    proto::api_key_service_server::SERVICE_NAME,
    proto::auth_service_server::SERVICE_NAME,
    proto::status_service_server::SERVICE_NAME,
    proto::audit_service_server::SERVICE_NAME,
    envoy_types::pb::envoy::service::auth::v3::authorization_server::SERVICE_NAME,
];

/// Descriptors of every service served, for reflection and for the
/// methods metrics label by name.
const SERVED_DESCRIPTOR_SETS: &[&[u8]] = &[
    proto::FILE_DESCRIPTOR_SET,
    proto::ENVOY_EXT_AUTHZ_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// A built, bound, not yet serving server.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    /// The operator console's listener, unless CONSOLE_LISTEN_ADDR is off.
    console: Option<(TcpListener, SocketAddr, AllowedOrigins)>,
    metrics: Metrics,
    state: Arc<AppState>,
    config: Config,
    /// Held until the server stops: no second process serves its SQLite
    /// file meanwhile.
    serve_lock: Option<ServeLock>,
    /// The keys that exist, loaded once serving starts.
    known_keys: Arc<KnownKeys>,
    /// The barriers `known_keys` asks the listener for.
    barrier_requests: mpsc::Receiver<BarrierRequest>,
}

impl Application {
    /// Validates `settings`, then builds as [`Application::build_from`].
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_from(settings.validate()?).await
    }

    /// Builds from settings already validated (and parsed, once).
    pub async fn build_from(config: Config) -> anyhow::Result<Self> {
        let (settings, target) = (&config.settings, &config.database);
        tracing::info!(
            backend = target.backend_name(),
            database = %target.redacted(),
            "using the {} store",
            target.backend_name()
        );
        let serve_lock = target.lock_for_serving()?;
        if settings.migrate_on_start {
            let applied = db::run_migrations(target).await?;
            if !applied.is_empty() {
                tracing::info!(?applied, "applied migrations");
            }
        }
        let metrics = Metrics::new(SERVED_DESCRIPTOR_SETS)?;
        let (acquire_seconds, acquire_failures) = metrics.pool_acquires();
        let db = Database::new(target, &settings.pool_settings())?
            .observing_acquires(acquire_seconds, acquire_failures);
        if let DatabaseTarget::Postgres(url) = target {
            // A certificate or host name that fails DATABASE_URL's or
            // DATABASE_LISTEN_URL's sslmode stops the start here, rather
            // than leaving a server that never gets a connection. Migrations
            // have proved DATABASE_URL already when they ran.
            let connect_timeout = settings.pool_settings().connect_timeout;
            if !settings.migrate_on_start {
                db::PgConnector::new(url, "DATABASE_URL")?
                    .check_at_start(connect_timeout)
                    .await?;
            }
            if let Some(listen_url) = &settings.database_listen_url {
                db::PgConnector::new(listen_url.expose_secret(), "DATABASE_LISTEN_URL")?
                    .check_at_start(connect_timeout)
                    .await?;
            }
        }

        let secret = match &settings.secret_key {
            Some(key) => SecretSlice::from(key.expose_secret().as_bytes().to_vec()),
            None => {
                tracing::warn!(
                    "SECRET_KEY is not set: signing tokens with a random per-process key; \
                     every token dies with this process and replicas reject each other's tokens"
                );
                TokenKeys::ephemeral_secret()
            }
        };
        let tokens = TokenKeys::new(
            secret.expose_secret(),
            settings
                .secret_key_previous
                .as_ref()
                .map(|key| key.expose_secret().as_bytes()),
            Duration::from_secs(settings.access_token_ttl_secs),
        );
        let shared_limits = match &settings.redis_url {
            Some(url) => Some(
                SharedLimits::connect(
                    url.expose_secret(),
                    settings.redis_ca_file.as_deref(),
                    settings.redis_key_prefix.clone(),
                    metrics.rate_limit_fallbacks(),
                    metrics.rate_limit_store_up(),
                )
                .await?,
            ),
            None => None,
        };
        let (hits, misses) = metrics.cache_lookups("sessions");
        let sessions = Sessions::new(db.clone(), hits, misses);
        let (hits, misses) = metrics.cache_lookups("memberships");
        let memberships = Memberships::new(db.clone(), hits, misses);
        let (hits, misses) = metrics.cache_lookups("service_accounts");
        let service_accounts = ServiceAccounts::new(db.clone(), hits, misses);
        let (hits, misses) = metrics.cache_lookups("api_keys");
        let api_key_cache = Arc::new(
            ApiKeyCache::new(
                settings.api_key_cache_capacity,
                Duration::from_secs(settings.api_key_cache_ttl_secs),
            )
            .counting_lookups(hits, misses),
        );
        let (hits, misses) = metrics.cache_lookups("chatbots");
        let chatbot_cache = Arc::new(
            ChatbotCache::new(
                settings.chatbot_cache_capacity,
                Duration::from_secs(settings.api_key_cache_ttl_secs),
            )
            .counting_lookups(hits, misses),
        );
        let rate_limits = RateLimits::new(settings.rate_limit_settings(), shared_limits);
        let batches = |in_flight, queue| {
            let bound = QueueBound {
                max_queued: settings.max_queued_batch_items,
                refusals: metrics.overload_refusals(queue),
            };
            BatchSettings::new(in_flight, bound, &settings.pool_settings())
        };
        // The keys that exist, for answering made-up ones without a query:
        // PostgreSQL's replicas learn of each other's keys through the
        // listener; a SQLite file's one process looks every unknown key up.
        let (known_keys, barrier_requests) = match target {
            DatabaseTarget::Postgres(_) => KnownKeys::for_replicas(),
            DatabaseTarget::Sqlite(_) => (KnownKeys::disabled(), mpsc::channel(1).1),
        };
        // Its pages are dropped by triggers' announcements, which only
        // PostgreSQL's listener hears.
        let page_cache_capacity = match target {
            DatabaseTarget::Postgres(_) => settings.chatbot_page_cache_capacity,
            DatabaseTarget::Sqlite(_) => 0,
        };
        let (hits, misses) = metrics.cache_lookups("chatbot_pages");
        let chatbot_pages = Arc::new(
            ChatbotPages::new(
                page_cache_capacity,
                Duration::from_secs(settings.api_key_cache_ttl_secs),
                known_keys.clone(),
            )
            .counting_lookups(hits, misses),
        );
        let verifier = KeyVerifier::new(
            db.clone(),
            api_key_cache.clone(),
            known_keys.clone(),
            rate_limits.clone(),
            batches(settings.spend_batches_in_flight, "credit_spends"),
            Duration::from_secs(settings.reservation_ttl_secs),
        );
        let state = Arc::new(AppState {
            chatbot_reads: ChatbotReads::start(
                db.clone(),
                batches(settings.read_batches_in_flight, "chatbot_reads"),
                chatbot_cache.clone(),
            ),
            verifier,
            caches: CacheInvalidation {
                api_keys: api_key_cache.clone(),
                chatbots: chatbot_cache,
                chatbot_pages,
                sessions: sessions.clone(),
                memberships: memberships.clone(),
                service_accounts: service_accounts.clone(),
                known_keys: known_keys.clone(),
                live: metrics.invalidations_live(),
            },
            service_accounts,
            sessions,
            memberships,
            api_key_cache,
            hasher: PasswordHasher::with_cost(
                settings.max_concurrent_hashes,
                settings.password_hash_cost(),
            )?
            .with_queue_limit(
                settings.max_queued_hashes,
                metrics.overload_refusals("password_hash"),
            )
            .with_duty_percent(settings.password_hash_duty_percent),
            tokens: Arc::new(tokens),
            throttle: LoginThrottle::new(
                db.clone(),
                settings.login_max_failures_per_email,
                settings.login_max_failures_per_address,
                Duration::from_secs(settings.login_throttle_window_secs),
            ),
            db,
            rate_limits,
            webhook_signer: settings
                .secret_key
                .as_ref()
                .map(|key| crate::domain::WebhookSigner::new(key.expose_secret().as_bytes())),
            policy: Policy {
                allow_signup: settings.allow_signup,
                allow_private_llm_endpoints: settings.allow_private_llm_endpoints,
                allow_private_webhook_targets: settings.webhook_allow_private_targets,
                refresh_token_ttl: Duration::from_secs(settings.refresh_token_ttl_secs),
                max_active_api_keys_per_chatbot: settings.max_active_api_keys_per_chatbot,
            },
        });

        let listener = TcpListener::bind(settings.listen_addr)
            .await
            .with_context(|| format!("binding LISTEN_ADDR {}", settings.listen_addr))?;
        let local_addr = listener.local_addr()?;
        let console = match settings.console_listen_addr.0 {
            Some(addr) => {
                let listed = settings.console_allowed_origins.clone().unwrap_or_default();
                let origins = AllowedOrigins::new(&listed);
                let listener = TcpListener::bind(addr).await.with_context(|| {
                    format!("binding CONSOLE_LISTEN_ADDR {addr} (`off` turns the console off)")
                })?;
                let bound = listener.local_addr()?;
                Some((listener, bound, origins))
            }
            None => None,
        };
        let metrics_addr = match settings.metrics_addr {
            Some(addr) => Some(
                metrics::serve(addr, metrics.clone(), state.db.clone())
                    .await
                    .with_context(|| format!("binding METRICS_ADDR {addr}"))?,
            ),
            None => None,
        };
        Ok(Self {
            listener,
            local_addr,
            metrics_addr,
            console,
            metrics,
            state,
            config,
            serve_lock,
            known_keys,
            barrier_requests,
        })
    }

    /// The bound address (the real port when LISTEN_ADDR had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where metrics are served, if METRICS_ADDR was set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Where the operator console is served, unless it is off.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console.as_ref().map(|(_, addr, _)| *addr)
    }

    /// The VerifyApiKey cache, for tests that prove it is used and
    /// invalidated.
    pub fn api_key_cache(&self) -> Arc<ApiKeyCache> {
        self.state.api_key_cache.clone()
    }

    /// The set of keys that exist, for tests that prove made-up keys cost
    /// no query.
    pub fn known_keys(&self) -> Arc<KnownKeys> {
        self.known_keys.clone()
    }

    /// Counters of GetChatbot's coalesced reads, for tests that prove the
    /// coalescing.
    pub fn chatbot_read_stats(&self) -> Arc<ReadStats> {
        self.state.chatbot_reads.stats()
    }

    pub fn database(&self) -> &Database {
        &self.state.db
    }

    /// Serves until `shutdown` resolves, then: health NOT_SERVING, keep
    /// serving for the drain delay, stop accepting, let in-flight RPCs finish
    /// within the grace period, flush last-used times, close the pool.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // The rest of `self` is taken where it is used.
        let Self {
            console,
            metrics,
            state,
            config,
            ..
        } = self;
        let Config { settings, database } = config;

        let (health_reporter, health_service) = health::health_reporter();
        health_reporter
            .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
            .await;
        set_readiness(&health_reporter, ServingStatus::Serving).await;
        metrics.set_serving(true);

        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(proto::GOOGLE_RPC_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(proto::ENVOY_EXT_AUTHZ_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(proto::GOOGLE_RPC_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(proto::ENVOY_EXT_AUTHZ_DESCRIPTOR_SET)
            .build_v1alpha()?;

        let max_bytes = settings.max_request_bytes;
        let background = BackgroundTasks::start(
            &state,
            &settings,
            database,
            &metrics,
            &health_reporter,
            self.known_keys,
            self.barrier_requests,
        )?;

        let drain_delay = Duration::from_secs(settings.shutdown_drain_delay_secs);
        let grace = Duration::from_secs(settings.shutdown_grace_secs);
        let reporter_for_shutdown = health_reporter.clone();
        let metrics_for_shutdown = metrics.clone();
        let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
        // The console stops accepting when the gRPC port does.
        let (stop_console_tx, mut stop_console) = watch::channel(false);
        let stop_serving = async move {
            shutdown.await;
            tracing::info!(
                ?drain_delay,
                "shutting down: reporting NOT_SERVING, draining"
            );
            set_readiness(&reporter_for_shutdown, ServingStatus::NotServing).await;
            metrics_for_shutdown.set_serving(false);
            tokio::time::sleep(drain_delay).await;
            tracing::info!("no longer accepting connections; finishing in-flight RPCs");
            let _ = stop_console_tx.send(true);
            let _ = draining_tx.send(());
        };

        let incoming = TcpIncoming::from(self.listener)
            .with_nodelay(Some(true))
            .map_ok(CopiedWrites);
        let rpc_timeout = Duration::from_secs(settings.default_rpc_timeout_secs);
        // Every call goes through these, on either listener. First is
        // outermost: observe everything, read the bearer token, count the
        // request against its user (or the client's network), and only
        // then look up the token's session.
        let layers = tower::ServiceBuilder::new()
            .layer(RpcLayer::new(metrics.clone(), rpc_timeout))
            // Inside the RPC's span and metrics, so a panic is answered,
            // counted and logged like any INTERNAL.
            .layer(CatchPanicLayer);
        // Debug builds only: a test hook, see `panics::INJECT_PANIC_ENV`.
        #[cfg(debug_assertions)]
        let layers = layers.layer(crate::panics::InjectedPanicLayer::from_env());
        let layers = layers
            .layer(GateLayer(CredentialsGate::new(state.tokens.clone())))
            .layer(GateLayer(RateLimitGate::new(state.rate_limits.clone())))
            .layer(AuthLayer::new(
                state.sessions.clone(),
                state.service_accounts.clone(),
            ))
            .into_inner();
        // HTTP/2's own limit, announced to clients in SETTINGS: cheaper
        // than a per-request semaphore, and a client learns the limit
        // instead of queueing blind.
        let max_streams =
            u32::try_from(settings.max_concurrent_requests_per_connection).unwrap_or(u32::MAX);
        // Each API service, with the request size limit every one shares.
        macro_rules! limited {
            ($server:ident, $service:expr) => {
                $server::new($service).max_decoding_message_size(max_bytes)
            };
        }
        let events = Events::new(
            state.clone(),
            settings.max_event_streams,
            metrics.overload_refusals("event_streams"),
        );
        let mut api = tonic::service::RoutesBuilder::default();
        api.add_service(limited!(UserServiceServer, Users(state.clone())))
            .add_service(AnswerWritten::new(
                limited!(ChatbotServiceServer, Chatbots(state.clone())),
                LIST_CHATBOTS_PATH,
                ListChatbotsMethod(state.clone()),
                max_bytes,
            ))
            .add_service(AnswerWritten::new(
                limited!(ApiKeyServiceServer, ApiKeys(state.clone())),
                VERIFY_API_KEY_PATH,
                VerifyMethod(state.clone()),
                max_bytes,
            ))
            .add_service(limited!(AuthServiceServer, Auth(state.clone())))
            .add_service(limited!(StatusServiceServer, StatusApi(state.clone())))
            .add_service(limited!(AuditServiceServer, Audit(state.clone())))
            .add_service(limited!(
                OrganizationServiceServer,
                Organizations(state.clone())
            ))
            .add_service(limited!(EventServiceServer, events))
            .add_service(limited!(WebhookServiceServer, Webhooks(state.clone())));
        let api = api.routes();
        let external_authorization = Arc::new(ExternalAuthorization::new(
            state.clone(),
            settings.ext_authz_api_key_header.clone(),
        ));
        let server = Server::builder()
            .timeout(rpc_timeout)
            .max_concurrent_streams(max_streams)
            .layer(layers.clone())
            .add_routes(api.clone())
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(AnswerWritten::new(
                AuthorizationServer::from_arc(external_authorization.clone())
                    .max_decoding_message_size(max_bytes),
                CHECK_PATH,
                CheckMethod(external_authorization),
                max_bytes,
            ))
            .serve_with_incoming_shutdown(incoming, stop_serving);
        // The console: its pages, then gRPC-Web turned into gRPC for the
        // same services behind the same layers (HTTP/1.1, as browsers
        // speak to a plaintext origin).
        let console = console.map(|(listener, console_addr, origins)| {
            tracing::info!(
                %console_addr,
                assets_bytes = crate::console::assets_bytes(),
                "serving the operator console"
            );
            Server::builder()
                .accept_http1(true)
                .timeout(rpc_timeout)
                .max_concurrent_streams(max_streams)
                .layer(ConsoleLayer::new(origins.clone()))
                .layer(origins.cors())
                .layer(tonic_web::GrpcWebLayer::new())
                .layer(layers)
                .add_routes(api)
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async move {
                        let _ = stop_console.wait_for(|stop| *stop).await;
                    },
                )
        });
        let server = async move {
            let console = async move {
                match console {
                    Some(console) => console.await.context("console server failed"),
                    None => Ok(()),
                }
            };
            let (grpc, console) = tokio::join!(server, console);
            grpc.context("gRPC server failed")?;
            console
        };

        tracing::info!(local_addr = %self.local_addr, "serving gRPC");
        // The grace period bounds how long a connection that refuses to close
        // can hold up the exit; it starts once the server stops accepting.
        let served = tokio::select! {
            result = server => result,
            () = async {
                match draining_rx.await {
                    Ok(()) => tokio::time::sleep(grace).await,
                    Err(_) => std::future::pending().await,
                }
            } => {
                tracing::warn!(?grace, "grace period over; abandoning remaining connections");
                Ok(())
            }
        };

        background.stop().await;
        match state.verifier.last_used().flush(&state.db).await {
            Ok(flushed) => tracing::info!(flushed, "flushed API key last-used times"),
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "could not flush last-used times"
            ),
        }
        match state.verifier.usage().flush(&state.db).await {
            Ok(flushed) => tracing::info!(flushed, "flushed usage counts"),
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "could not flush usage counts; they are lost"
            ),
        }
        state.db.close();
        // Only now may another process serve the SQLite file.
        drop(self.serve_lock);
        tracing::info!("shut down");
        served
    }
}
