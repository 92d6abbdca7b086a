//! EventService: an organization's events (the outbox
//! [`crate::db::write`] fills, [`OrganizationEvent`]) streamed in order.
//! Each stream is a task that reads a page of events after the last one it
//! sent, hands them to a channel of one page, and reads the next page only
//! when the consumer has taken room for it: a slow consumer holds one page
//! in memory, never more. While there is nothing new the task looks again
//! every [`POLL_INTERVAL`], holding no connection in between, so a change
//! made on any replica reaches every watcher within that. Access is checked
//! at the start and again every [`ACCESS_RECHECK`]: a member removed while
//! watching gets PERMISSION_DENIED and the stream ends.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};

use super::convert::timestamp;
use super::{AppState, Rpc};
use crate::auth::{ownership, Caller};
use crate::db::models::{
    Chatbot, Invitation, KeyWithLimits, OrganizationEvent, OrganizationWithLimits, ServiceAccount,
};
use crate::domain::{AuditChange, OrgAction, OrganizationId, ResourceState};
use crate::error::{parsed, AppError, AppResult, FieldViolation};
use crate::proto::event_service_server::EventService;
use crate::proto::{self, WatchEventsRequest, WatchEventsResponse};

/// Events read (and buffered for a consumer) at a time.
const PAGE: usize = 100;

/// How often a stream with nothing new looks again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How often a stream checks that its caller may still watch.
const ACCESS_RECHECK: Duration = Duration::from_secs(5);

/// The EventService implementation.
pub struct Events {
    state: Arc<AppState>,
    /// One permit per open stream: each holds a task and, while it reads,
    /// a connection, so a replica serves a bounded number.
    streams: Arc<tokio::sync::Semaphore>,
    refusals: prometheus_client::metrics::counter::Counter,
}

impl Events {
    /// At most `max_streams` streams at once on this replica; refusals are
    /// counted in `refusals`.
    pub fn new(
        state: Arc<AppState>,
        max_streams: usize,
        refusals: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Self {
            state,
            streams: Arc::new(tokio::sync::Semaphore::new(max_streams)),
            refusals,
        }
    }
}

type EventStream = ReceiverStream<Result<WatchEventsResponse, Status>>;

#[tonic::async_trait]
impl EventService for Events {
    type WatchEventsStream = EventStream;

    async fn watch_events(&self, request: Request<WatchEventsRequest>) -> Rpc<EventStream> {
        let shared = self.state.clone();
        let streams = self.streams.clone();
        let refusals = self.refusals.clone();
        let watch = async move |_: &AppState, caller: &Caller, cmd: WatchEvents| {
            let Ok(slot) = streams.try_acquire_owned() else {
                refusals.inc();
                return Err(AppError::ResourceExhausted {
                    message: "this replica serves as many event streams as it may \
                              (MAX_EVENT_STREAMS); retry in a while"
                        .into(),
                    retry_after: Duration::from_secs(5),
                });
            };
            watch_events(shared, caller, cmd, slot).await
        };
        self.state
            .serve(request, WatchEvents::try_from, watch)
            .await
    }
}

/// WatchEvents: whose events, and from where.
#[derive(Debug)]
pub struct WatchEvents {
    organization: OrganizationId,
    start: Start,
}

/// Where a stream starts.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// After the event with this number.
    After(i64),
    /// From the oldest kept.
    Oldest,
    /// With the first event committed after the stream starts.
    Now,
}

impl TryFrom<WatchEventsRequest> for WatchEvents {
    type Error = AppError;

    fn try_from(request: WatchEventsRequest) -> AppResult<Self> {
        let start = match (request.cursor.as_str(), request.from_oldest) {
            ("", true) => Ok(Start::Oldest),
            ("", false) => Ok(Start::Now),
            (cursor, _) => parse_cursor(cursor).map(Start::After),
        };
        let (organization, start) = parsed((
            OrganizationId::parse("organization_id", &request.organization_id),
            start,
        ))?;
        Ok(Self {
            organization,
            start,
        })
    }
}

/// An event's cursor is its number in its organization's stream.
fn parse_cursor(cursor: &str) -> Result<i64, FieldViolation> {
    cursor
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| FieldViolation::new("cursor", "is not a cursor WatchEvents returned"))
}

/// Checks the caller may watch, finds where to start, and starts the
/// stream's task.
async fn watch_events(
    state: Arc<AppState>,
    caller: &Caller,
    cmd: WatchEvents,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> AppResult<EventStream> {
    let organization = cmd.organization;
    let mut conn = state.db.conn().await?;
    let view = OrgAction::View;
    ownership::organization(&mut conn, &state.memberships, caller, organization, view).await?;
    let after = match cmd.start {
        Start::After(after) => after,
        Start::Oldest => 0,
        Start::Now => OrganizationEvent::latest(&mut conn, organization).await?,
    };
    drop(conn);
    let (sender, receiver) = mpsc::channel(PAGE);
    let stream = stream_events(state, caller.clone(), organization, after, sender);
    tokio::spawn(async move {
        stream.await;
        // The stream's place is free once its task ends.
        drop(slot);
    });
    Ok(ReceiverStream::new(receiver))
}

/// The stream's task: sends the organization's events after `after` until
/// the consumer goes, the caller loses access, or the store fails (the
/// consumer resumes from its last cursor).
async fn stream_events(
    state: Arc<AppState>,
    caller: Caller,
    organization: OrganizationId,
    mut after: i64,
    sender: mpsc::Sender<Result<WatchEventsResponse, Status>>,
) {
    let mut checked = tokio::time::Instant::now();
    loop {
        let page = async {
            let mut conn = state.db.conn().await?;
            if checked.elapsed() >= ACCESS_RECHECK {
                let view = OrgAction::View;
                let memberships = &state.memberships;
                ownership::organization(&mut conn, memberships, &caller, organization, view)
                    .await?;
                checked = tokio::time::Instant::now();
            }
            let limit = i64::try_from(PAGE).unwrap_or(i64::MAX);
            Ok::<_, AppError>(
                OrganizationEvent::after(&mut conn, organization, after, limit).await?,
            )
        }
        .await;
        let page = match page {
            Ok(page) => page,
            Err(error) => {
                let _ = sender.send(Err(error.into())).await;
                return;
            }
        };
        if page.is_empty() {
            tokio::select! {
                () = sender.closed() => return,
                () = tokio::time::sleep(POLL_INTERVAL) => continue,
            }
        }
        for event in page {
            after = event.sequence;
            let message = WatchEventsResponse {
                event: Some(event.into()),
            };
            if sender.send(Ok(message)).await.is_err() {
                return;
            }
        }
    }
}

/// The resource as a change left it, for the change's event (an `Event`
/// with only its resource set: the outbox keeps those bytes).
pub fn state_of(resource: impl Into<proto::event::Resource>) -> ResourceState {
    let event = proto::Event {
        resource: Some(resource.into()),
        ..proto::Event::default()
    };
    ResourceState(event.encode_to_vec())
}

impl From<Chatbot> for proto::event::Resource {
    fn from(chatbot: Chatbot) -> Self {
        Self::Chatbot(chatbot.into())
    }
}

impl From<KeyWithLimits> for proto::event::Resource {
    fn from(key: KeyWithLimits) -> Self {
        Self::ApiKey(key.into())
    }
}

impl From<OrganizationWithLimits> for proto::event::Resource {
    fn from(organization: OrganizationWithLimits) -> Self {
        Self::Organization(organization.into())
    }
}

/// The invitee's email is personal data of someone not yet a member: the
/// event, like the audit log, says only that an invitation went out.
impl From<Invitation> for proto::event::Resource {
    fn from(invitation: Invitation) -> Self {
        Self::Invitation(proto::Invitation {
            email: String::new(),
            ..invitation.into()
        })
    }
}

/// Every member may watch the events, but only owners see a webhook's
/// URL whole: the event shows its origin.
impl From<crate::db::models::Webhook> for proto::event::Resource {
    fn from(webhook: crate::db::models::Webhook) -> Self {
        let url = crate::domain::url_origin(&webhook.url);
        Self::Webhook(proto::Webhook {
            url,
            ..webhook.into()
        })
    }
}

impl From<ServiceAccount> for proto::event::Resource {
    fn from(account: ServiceAccount) -> Self {
        Self::ServiceAccount(account.into())
    }
}

impl From<OrganizationEvent> for proto::Event {
    fn from(row: OrganizationEvent) -> Self {
        // Written by this service from AuditChange values; an unreadable
        // one shows no changes rather than failing the stream.
        let changes: Vec<AuditChange> = serde_json::from_str(&row.changes).unwrap_or_default();
        // Encoded by `state_of`; the same fallback for an unreadable one.
        let resource = row
            .resource_state
            .and_then(|state| proto::Event::decode(state.as_slice()).ok())
            .and_then(|event| event.resource);
        proto::Event {
            id: row.id.to_string(),
            organization_id: row.organization_id.to_string(),
            cursor: row.sequence.to_string(),
            r#type: row.event_type,
            resource_type: row.resource_type,
            resource_id: row.resource_id,
            create_time: Some(timestamp(row.created_at)),
            changes: changes
                .into_iter()
                .map(|change| proto::EventChange {
                    field: change.field,
                    old_value: change.old.unwrap_or_default(),
                    new_value: change.new.unwrap_or_default(),
                })
                .collect(),
            resource,
        }
    }
}
