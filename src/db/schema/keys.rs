//! A key's rows: the key, its limits and credits, its hourly usage and its credit reservations.

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
