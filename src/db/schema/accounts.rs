//! Who calls: users, their sessions, refresh tokens and login throttle windows, and service accounts.

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
