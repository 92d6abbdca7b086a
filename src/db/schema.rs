//! The tables, written once for both backends. Maintained by hand rather
//! than by `diesel print-schema`: the uuid and timestamp columns use the
//! backend-neutral types of [`crate::db::sql_types`]. Column docs match the
//! `COMMENT ON` statements of the PostgreSQL migrations.

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::DbTimestamp;

    /// A key's own rate limit and credits; no row: neither.
    api_key_limits (api_key_id) {
        /// The key; deleting it deletes its limits.
        api_key_id -> Int8,
        /// Calls allowed per rate_limit_window_ms (a bucket refilling evenly); NULL: no limit of its own.
        rate_limit_calls -> Nullable<Int8>,
        /// The rate limit's window in milliseconds.
        rate_limit_window_ms -> Nullable<Int8>,
        /// Balance of credits as of the last refill, spend and settlement; NULL: unlimited. Below zero only by settlements above their reservations.
        credits_remaining -> Nullable<Int8>,
        /// The balance after each refill; NULL: no refill.
        credits_refill_amount -> Nullable<Int8>,
        /// Time between refills in milliseconds.
        credits_refill_interval_ms -> Nullable<Int8>,
        /// The last refill (or when the refill was set); the next is one interval later.
        credits_refilled_at -> Nullable<DbTimestamp>,
        /// What rate_limit_calls counts: calls, or credits (each call its cost).
        rate_limit_unit -> Text,
        /// A balance at or below it is low (an api_key.credits_low event); NULL: no threshold.
        credits_low_threshold -> Nullable<Int8>,
        /// Whether the api_key.credits_low event of the balance's present fall was recorded; cleared when it rises above the threshold.
        credits_low_noticed -> Bool,
        /// Whether the api_key.credits_exhausted event of the balance's present fall to zero was recorded; cleared when it rises above zero.
        credits_exhausted_noticed -> Bool,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::{DbTimestamp, DbUuid};

    /// Credentials for calling a chatbot; only digests are stored.
    api_keys (id) {
        /// Increasing identifier.
        id -> Int8,
        /// Chatbot the key belongs to; deleting it deletes the key.
        chatbot_id -> DbUuid,
        /// Human-readable label.
        display_name -> Text,
        /// First characters of the key, shown in lists; not secret.
        key_prefix -> Text,
        /// SHA-256 digest of the whole key; the key itself is never stored.
        key_hash -> Bytea,
        /// Whether the key was revoked.
        revoked -> Bool,
        /// Creation time; first key of the list order.
        created_at -> DbTimestamp,
        /// When the key stops working; NULL means never.
        expires_at -> Nullable<DbTimestamp>,
        /// When the key was revoked.
        revoked_at -> Nullable<DbTimestamp>,
        /// Last successful verification, recorded in batches.
        last_used_at -> Nullable<DbTimestamp>,
        /// When RotateApiKey replaced the key; a key is replaced at most once.
        rotated_at -> Nullable<DbTimestamp>,
        /// JSON array of CIDR networks the key may be used from; [] means anywhere.
        allowed_networks -> Text,
        /// JSON array of the permissions the key grants; a trailing * grants a prefix.
        permissions -> Text,
        /// JSON object of string values the owner attaches; returned by VerifyApiKey.
        metadata -> Text,
        /// The owner's own id for the customer the key was issued to.
        external_id -> Nullable<Text>,
        /// The key RotateApiKey issued in its place; its limits and credits are this key's during the grace period.
        replaced_by -> Nullable<Int8>,
        /// The expiry an api_key.expiring event was recorded for; a moved expiry is told again.
        expiry_noticed_for -> Nullable<DbTimestamp>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::{DbTimestamp, DbUuid};

    /// VerifyApiKey answers per key per hour, added up from every replica's counts.
    api_key_usage (api_key_id, hour) {
        /// The key (no foreign key: the history outlives a deleted key).
        api_key_id -> Int8,
        /// Start of the hour (UTC) the answers were given in.
        hour -> DbTimestamp,
        /// The key's chatbot; deleting it deletes its keys' history.
        chatbot_id -> DbUuid,
        /// Answers VALID.
        valid -> Int8,
        /// Answers REVOKED.
        revoked -> Int8,
        /// Answers EXPIRED.
        expired -> Int8,
        /// Answers RATE_LIMITED.
        rate_limited -> Int8,
        /// Answers USAGE_EXCEEDED.
        usage_exceeded -> Int8,
        /// Credits the VALID answers spent.
        credits_spent -> Int8,
        /// Answers ADDRESS_NOT_ALLOWED.
        address_not_allowed -> Int8,
        /// Answers INSUFFICIENT_PERMISSIONS.
        insufficient_permissions -> Int8,
        /// Credits VALID answers with reserve held.
        credits_reserved -> Int8,
        /// Credits reservations were settled at (their real cost).
        credits_settled -> Int8,
        /// Credits given back by settlements below their reservation and by releases.
        credits_refunded -> Int8,
        /// Credits of reservations charged at their reserved amount because they expired.
        credits_expired -> Int8,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::{DbTimestamp, DbUuid};

    /// Credits held by VerifyApiKey with reserve until settled, released or expired.
    credit_reservations (token_hash) {
        /// SHA-256 digest of the reservation id; the id itself is never stored.
        token_hash -> Bytea,
        /// The key whose balance holds it (its replacement after a rotation); deleting the key deletes it.
        api_key_id -> Int8,
        /// The key's chatbot, for usage history.
        chatbot_id -> DbUuid,
        /// Credits held.
        reserved -> Int8,
        /// Whether the credits were taken from the key's balance (false: a key without credits, metered only).
        from_balance -> Bool,
        /// open, settled, released or expired.
        state -> Text,
        /// What it finally cost: the settled cost, 0 when released, the reserved amount when expired; NULL while open.
        charged -> Nullable<Int8>,
        /// When VerifyApiKey reserved it.
        created_at -> DbTimestamp,
        /// After this it is charged at the reserved amount and can no longer be settled.
        expires_at -> DbTimestamp,
        /// When it was settled, released or expired.
        finished_at -> Nullable<DbTimestamp>,
        /// The organization whose balance also holds it; NULL: none.
        organization_id -> Nullable<DbUuid>,
    }
}

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

    /// Chatbots, each owned by one organization.
    chatbots (id) {
        /// UUIDv7 assigned by the server.
        id -> DbUuid,
        /// The person accountable: for a personal organization its user; otherwise who created it, or an owner it passed to when that user was deleted.
        owner_id -> DbUuid,
        /// Display name, 1 to 100 characters.
        name -> Text,
        /// Absolute http(s) URL of the LLM endpoint.
        llm_endpoint_url -> Text,
        /// Creation time; first key of the list order.
        created_at -> DbTimestamp,
        /// Time of the last change.
        updated_at -> DbTimestamp,
        /// The organization that owns the chatbot. The column is nullable
        /// only so the previous version can insert without it; a trigger
        /// fills it in, so it is never NULL once inserted.
        organization_id -> DbUuid,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::DbTimestamp;

    /// Login throttle: password checks per email and per client address in the current window.
    login_attempts (subject) {
        /// SHA-256 of "email:<address>" or "address:<client address or IPv6 /64>".
        subject -> Bytea,
        /// Start of the current window.
        window_start -> DbTimestamp,
        /// Password checks in the window that did not succeed, in flight ones included.
        attempts -> Int4,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::{DbTimestamp, DbUuid};

    /// Invitations to join an organization; only digests of their tokens are stored.
    organization_invitations (id) {
        /// UUIDv7 assigned by the server.
        id -> DbUuid,
        /// The organization to join; deleting it deletes its invitations.
        organization_id -> DbUuid,
        /// Lowercased email of the one user who may accept it.
        email -> Text,
        /// The role the member gets: owner, editor or viewer.
        role -> Text,
        /// SHA-256 digest of the invitation token; the token itself is never stored.
        token_hash -> Bytea,
        /// The member who invited; NULL once that user is deleted.
        created_by -> Nullable<DbUuid>,
        /// Creation time; first key of the list order.
        created_at -> DbTimestamp,
        /// After this it can no longer be accepted.
        expires_at -> DbTimestamp,
        /// The user who accepted it.
        accepted_by -> Nullable<DbUuid>,
        /// When it was accepted; an invitation is accepted once.
        accepted_at -> Nullable<DbTimestamp>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::{DbTimestamp, DbUuid};

    /// Who belongs to an organization, with which role.
    organization_members (organization_id, user_id) {
        /// The organization; deleting it deletes its memberships.
        organization_id -> DbUuid,
        /// The member; deleting the user deletes the membership.
        user_id -> DbUuid,
        /// owner, editor or viewer.
        role -> Text,
        /// When the user joined; first key of the list order.
        created_at -> DbTimestamp,
        /// Time of the last role change.
        updated_at -> DbTimestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::{DbTimestamp, DbUuid};

    /// Teams that own chatbots; every user also has a personal one.
    organizations (id) {
        /// UUIDv7 assigned by the server; a personal organization's is its user's id.
        id -> DbUuid,
        /// Display name, 1 to 100 characters.
        name -> Text,
        /// For a personal organization, its one member; deleting the user deletes it. NULL for a team.
        personal_user_id -> Nullable<DbUuid>,
        /// Creation time; first key of the list order.
        created_at -> DbTimestamp,
        /// Time of the last change.
        updated_at -> DbTimestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::{DbTimestamp, DbUuid};

    /// Credentials of other services, acting in one organization with a role; only digests of their tokens are stored.
    service_accounts (id) {
        /// UUIDv7 assigned by the server.
        id -> DbUuid,
        /// The organization it acts in; deleting it deletes the service account.
        organization_id -> DbUuid,
        /// Display name, 1 to 100 characters.
        name -> Text,
        /// editor or viewer.
        role -> Text,
        /// First characters of the token, shown in lists; not secret.
        token_prefix -> Text,
        /// SHA-256 digest of the token; the token itself is never stored.
        token_hash -> Bytea,
        /// The owner who created it; NULL once that user is deleted.
        created_by -> Nullable<DbUuid>,
        /// Creation time; first key of the list order.
        created_at -> DbTimestamp,
        /// When the token stops working; NULL means never.
        expires_at -> Nullable<DbTimestamp>,
        /// When the token was revoked.
        revoked_at -> Nullable<DbTimestamp>,
        /// Last authenticated call, recorded at most once a minute per replica.
        last_used_at -> Nullable<DbTimestamp>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::{DbTimestamp, DbUuid};

    /// One per login; access tokens name theirs (claim sid) and die with it.
    sessions (id) {
        /// The refresh-token family id of the login.
        id -> DbUuid,
        /// User signed in; deleting the user deletes the session.
        user_id -> DbUuid,
        /// Login time.
        created_at -> DbTimestamp,
        /// When logout, refresh-token re-use or a password change ended it.
        revoked_at -> Nullable<DbTimestamp>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::{DbTimestamp, DbUuid};

    /// Refresh tokens; one family per login, rotated on every refresh.
    refresh_tokens (id) {
        /// UUIDv7 assigned by the server.
        id -> DbUuid,
        /// User the token signs in.
        user_id -> DbUuid,
        /// Shared by every token rotated from one login; re-use revokes the family.
        family_id -> DbUuid,
        /// SHA-256 digest of the token; the token itself is never stored.
        token_hash -> Bytea,
        /// Issue time.
        created_at -> DbTimestamp,
        /// When the token stops working.
        expires_at -> DbTimestamp,
        /// When it was exchanged for a new token; using it again is re-use.
        used_at -> Nullable<DbTimestamp>,
        /// When it was revoked by logout, re-use or password change.
        revoked_at -> Nullable<DbTimestamp>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::{DbTimestamp, DbUuid};

    /// People who own chatbots.
    users (id) {
        /// UUIDv7 assigned by the server.
        id -> DbUuid,
        /// Lowercased email address; unique case-insensitively.
        email -> Text,
        /// argon2id PHC string; never the password itself.
        hashed_password -> Text,
        /// user or admin.
        role -> Text,
        /// Creation time; first key of the list order.
        created_at -> DbTimestamp,
        /// Time of the last change.
        updated_at -> DbTimestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::sql_types::{DbTimestamp, DbUuid};

    /// An organization's rate limit and credits, shared by all its keys; no row: neither.
    organization_limits (organization_id) {
        /// The organization; deleting it deletes its limits.
        organization_id -> DbUuid,
        /// Calls allowed per rate_limit_window_ms to all the organization's keys together; NULL: no limit.
        rate_limit_calls -> Nullable<Int8>,
        /// The rate limit's window in milliseconds.
        rate_limit_window_ms -> Nullable<Int8>,
        /// What rate_limit_calls counts: calls, or credits (each call its cost).
        rate_limit_unit -> Text,
        /// Balance shared by all the organization's keys; NULL: unlimited. Below zero only by settlements above their reservations.
        credits_remaining -> Nullable<Int8>,
        /// The balance after each refill; NULL: no refill.
        credits_refill_amount -> Nullable<Int8>,
        /// Time between refills in milliseconds.
        credits_refill_interval_ms -> Nullable<Int8>,
        /// The last refill (or when the refill was set); the next is one interval later.
        credits_refilled_at -> Nullable<DbTimestamp>,
        /// A balance at or below it is low (an organization.credits_low event); NULL: no threshold.
        credits_low_threshold -> Nullable<Int8>,
        /// Whether the organization.credits_low event of the balance's present fall was recorded; cleared when it rises above the threshold.
        credits_low_noticed -> Bool,
        /// Whether the organization.credits_exhausted event of the balance's present fall to zero was recorded; cleared when it rises above zero.
        credits_exhausted_noticed -> Bool,
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

diesel::joinable!(api_key_limits -> api_keys (api_key_id));
diesel::joinable!(api_key_usage -> chatbots (chatbot_id));
diesel::joinable!(api_keys -> chatbots (chatbot_id));
diesel::joinable!(credit_reservations -> api_keys (api_key_id));
diesel::joinable!(chatbots -> organizations (organization_id));
diesel::joinable!(chatbots -> users (owner_id));
diesel::joinable!(organization_event_counters -> organizations (organization_id));
diesel::joinable!(organization_event_publications -> organizations (organization_id));
diesel::joinable!(organization_events -> organizations (organization_id));
diesel::joinable!(organization_invitations -> organizations (organization_id));
diesel::joinable!(organization_limits -> organizations (organization_id));
diesel::joinable!(organization_members -> organizations (organization_id));
diesel::joinable!(organization_members -> users (user_id));
diesel::joinable!(refresh_tokens -> users (user_id));
diesel::joinable!(service_accounts -> organizations (organization_id));
diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(webhook_deliveries -> webhooks (webhook_id));
diesel::joinable!(webhooks -> organizations (organization_id));
diesel::joinable!(webhooks -> users (created_by));

diesel::allow_tables_to_appear_in_same_query!(
    api_key_limits,
    api_key_usage,
    api_keys,
    audit_events,
    chatbots,
    create_requests,
    credit_reservations,
    login_attempts,
    organization_event_counters,
    organization_event_publications,
    organization_events,
    organization_invitations,
    organization_limits,
    organization_members,
    organizations,
    refresh_tokens,
    service_accounts,
    sessions,
    users,
    webhook_deliveries,
    webhooks,
);
