//! The tables, written once for both backends. Maintained by hand rather
//! than by `diesel print-schema`: the uuid and timestamp columns use the
//! backend-neutral types of [`crate::db::sql_types`]. Column docs match the
//! `COMMENT ON` statements of the PostgreSQL migrations.
//!
//! The tables live in files by area; the joins and the tables that may
//! meet in one query are declared here, across them.

mod accounts;
mod keys;
mod records;
mod teams;

pub use accounts::*;
pub use keys::*;
pub use records::*;
pub use teams::*;

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
