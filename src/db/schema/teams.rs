//! Organizations, their members, invitations and credits, and the chatbots they own.

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
