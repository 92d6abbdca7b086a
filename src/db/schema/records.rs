//! What the service records: the audit log, the events outbox and its publication marks, webhooks and their deliveries, and the create requests kept for retries.

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::{DbTimestamp, DbUuid};

    /// Every change, recorded in the change's own transaction.
    audit_events (id) {
        /// Increasing id; the list order.
        id -> Int8,
        /// When it happened.
        occurred_at -> DbTimestamp,
        /// What happened, e.g. api_key.revoke.
        action -> Text,
        /// succeeded or denied.
        outcome -> Text,
        /// The signed-in user who did it; NULL for a command.
        actor_user_id -> Nullable<DbUuid>,
        /// That user's email at the time.
        actor_email -> Nullable<Text>,
        /// The operator command that did it; NULL for an RPC.
        actor_command -> Nullable<Text>,
        /// user, chatbot or api_key.
        target_type -> Text,
        /// The target's id (UUID, or an API key's number).
        target_id -> Text,
        /// The user who owns the target (for a user, the user); who may see the event.
        target_owner_id -> Nullable<DbUuid>,
        /// The request's x-request-id.
        request_id -> Nullable<Text>,
        /// The client's IP address.
        client_address -> Nullable<Text>,
        /// JSON array of {field, old, new}; never a secret.
        changes -> Text,
        /// How many times it happened (refused attempts repeated within the hour share a row).
        repeats -> Int8,
        /// When it last happened.
        last_occurred_at -> DbTimestamp,
        /// For refused attempts: what repeats share (action, actor, target, address, hour); NULL otherwise.
        aggregate_key -> Nullable<Text>,
        /// The organization the target belongs to; its members may see the event. NULL for users and RPCs.
        organization_id -> Nullable<DbUuid>,
        /// The service account that did it; NULL otherwise.
        actor_service_account_id -> Nullable<DbUuid>,
        /// That service account's name at the time.
        actor_service_account_name -> Nullable<Text>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::{DbTimestamp, DbUuid};

    /// Each organization's newest event number; no row: no event yet.
    organization_event_counters (organization_id) {
        /// The organization; deleting it deletes its counter.
        organization_id -> DbUuid,
        /// The number of the organization's newest event.
        last_sequence -> Int8,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::{DbTimestamp, DbUuid};

    /// Every change in an organization, in commit order, for WatchEvents; purged after AUDIT_RETENTION_DAYS.
    organization_events (organization_id, sequence) {
        /// The organization the change was in; deleting it deletes its events.
        organization_id -> DbUuid,
        /// The event's number within its organization, in commit order from 1.
        sequence -> Int8,
        /// Stable id of the event, the same wherever it is delivered.
        id -> DbUuid,
        /// What happened, as the audit log names it (api_key.revoke, chatbot.update, ...).
        event_type -> Text,
        /// The kind of resource changed (chatbot, api_key, organization, ...).
        resource_type -> Text,
        /// Its id.
        resource_id -> Text,
        /// JSON array of the changed fields (field, and old and new values where the audit log keeps them); never a secret.
        changes -> Text,
        /// When the change was made.
        created_at -> DbTimestamp,
        /// The resource as the change left it, encoded as the public contract's chatbot.v1.Event with only its resource set; NULL when the change deleted it. Never a secret.
        resource_state -> Nullable<Binary>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::DbUuid;

    /// How far each organization's events are published to NATS JetStream; no row: none yet.
    organization_event_publications (organization_id) {
        /// The organization; deleting it deletes its row.
        organization_id -> DbUuid,
        /// The number of the organization's newest event JetStream has acknowledged; every earlier one was acknowledged before it.
        published_sequence -> Int8,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::{DbTimestamp, DbUuid};

    /// Endpoints an organization's events are delivered to (WebhookService).
    webhooks (id) {
        /// Id of the webhook.
        id -> DbUuid,
        /// Its organization; deleting it deletes its webhooks.
        organization_id -> DbUuid,
        /// Where events are POSTed.
        url -> Text,
        /// JSON array of the event types delivered; empty: every type.
        event_types -> Text,
        /// A note for people.
        description -> Text,
        /// active or disabled.
        state -> Text,
        /// Why the service disabled it; empty otherwise.
        disabled_reason -> Text,
        /// Random bytes the signing secret is derived from, with SECRET_KEY; not a secret alone.
        secret_salt -> Bytea,
        /// The number of the organization's last event this webhook is done with (delivered, skipped, or given up on).
        delivered_sequence -> Int8,
        /// When the next event's delivery is attempted again after a failure; NULL: as soon as there is one.
        retry_at -> Nullable<DbTimestamp>,
        /// Until when a replica delivers this webhook's events; NULL or past: no one.
        lease_until -> Nullable<DbTimestamp>,
        /// The replica (a random id per process) holding the lease.
        lease_owner -> Nullable<DbUuid>,
        /// The user who created it.
        created_by -> Nullable<DbUuid>,
        /// When it was created.
        created_at -> DbTimestamp,
        /// When it was last changed.
        updated_at -> DbTimestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::{DbTimestamp, DbUuid};

    /// Each event sent to each webhook, with its attempts and the last answer; finished ones purged after SESSION_RETENTION_DAYS.
    webhook_deliveries (id) {
        /// Id of the delivery.
        id -> DbUuid,
        /// The webhook; deleting it deletes its deliveries.
        webhook_id -> DbUuid,
        /// The event's number in its organization.
        event_sequence -> Int8,
        /// The event's id: the webhook-id header.
        event_id -> DbUuid,
        /// The event's type.
        event_type -> Text,
        /// pending, delivered or failed.
        state -> Text,
        /// Sent again on request (RedeliverWebhook), apart from the webhook's order.
        redelivery -> Bool,
        /// Attempts made.
        attempts -> Int4,
        /// HTTP status of the last answer; 0: none.
        last_status_code -> Int4,
        /// What went wrong in the last attempt; empty after a success.
        last_error -> Text,
        /// When it was first attempted.
        created_at -> DbTimestamp,
        /// When it was last attempted.
        last_attempt_at -> Nullable<DbTimestamp>,
        /// When it is attempted next, while pending.
        next_attempt_at -> Nullable<DbTimestamp>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::{DbTimestamp, DbUuid};

    /// The request ids creates were made with, for a day, so a retried create returns the first result.
    create_requests (caller, method, request_id) {
        /// Who made the request: user:<id> or service_account:<id>.
        caller -> Text,
        /// The RPC, e.g. CreateApiKey.
        method -> Text,
        /// The caller's id for the request.
        request_id -> DbUuid,
        /// SHA-256 of the request without its request_id: a reuse for another request is refused.
        request_digest -> Bytea,
        /// What the first request created.
        resource_id -> Text,
        /// CreateApiKey: the random salt its secret was derived from with SECRET_KEY (useless alone), so a retry shows the same secret; NULL without SECRET_KEY.
        secret_salt -> Nullable<Bytea>,
        /// When the first request was made; purged a day later.
        created_at -> DbTimestamp,
    }
}
