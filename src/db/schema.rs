// @generated automatically by Diesel CLI.

diesel::table! {
    /// Credentials for calling a chatbot; only digests are stored.
    api_keys (id) {
        /// Increasing identifier.
        id -> Int8,
        /// Chatbot the key belongs to; deleting it deletes the key.
        chatbot_id -> Uuid,
        /// Human-readable label.
        display_name -> Text,
        /// First characters of the key, shown in lists; not secret.
        key_prefix -> Text,
        /// SHA-256 digest of the whole key; the key itself is never stored.
        key_hash -> Bytea,
        /// Whether the key was revoked.
        revoked -> Bool,
        /// Creation time; first key of the list order.
        created_at -> Timestamptz,
        /// When the key stops working; NULL means never.
        expires_at -> Nullable<Timestamptz>,
        /// When the key was revoked.
        revoked_at -> Nullable<Timestamptz>,
        /// Last successful verification, recorded in batches.
        last_used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    /// Chatbots, each owned by one user.
    chatbots (id) {
        /// UUIDv7 assigned by the server.
        id -> Uuid,
        /// Owning user; deleting the user deletes the chatbot.
        owner_id -> Uuid,
        /// Display name, 1 to 100 characters.
        name -> Text,
        /// Absolute http(s) URL of the LLM endpoint.
        llm_endpoint_url -> Text,
        /// Creation time; first key of the list order.
        created_at -> Timestamptz,
        /// Time of the last change.
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    /// Refresh tokens; one family per login, rotated on every refresh.
    refresh_tokens (id) {
        /// UUIDv7 assigned by the server.
        id -> Uuid,
        /// User the token signs in.
        user_id -> Uuid,
        /// Shared by every token rotated from one login; re-use revokes the family.
        family_id -> Uuid,
        /// SHA-256 digest of the token; the token itself is never stored.
        token_hash -> Bytea,
        /// Issue time.
        created_at -> Timestamptz,
        /// When the token stops working.
        expires_at -> Timestamptz,
        /// When it was exchanged for a new token; using it again is re-use.
        used_at -> Nullable<Timestamptz>,
        /// When it was revoked by logout, re-use or password change.
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    /// People who own chatbots.
    users (id) {
        /// UUIDv7 assigned by the server.
        id -> Uuid,
        /// Lowercased email address; unique case-insensitively.
        email -> Text,
        /// argon2id PHC string; never the password itself.
        hashed_password -> Text,
        /// user or admin.
        role -> Text,
        /// Creation time; first key of the list order.
        created_at -> Timestamptz,
        /// Time of the last change.
        updated_at -> Timestamptz,
    }
}

diesel::joinable!(api_keys -> chatbots (chatbot_id));
diesel::joinable!(chatbots -> users (owner_id));
diesel::joinable!(refresh_tokens -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(api_keys, chatbots, refresh_tokens, users,);
