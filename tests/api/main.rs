//! Black-box tests: each starts the real server on a random port against a
//! fresh database and calls it through the generated clients. Most run
//! twice, on PostgreSQL and on SQLite (see `helpers::backend_test!`).

// The deprecated owner_id fields keep working for existing clients, and
// the tests check that they do.
#![allow(deprecated)]

mod api_keys;
mod audit;
mod auth;
mod authorization;
mod backup;
mod chatbot_cache;
mod chatbots;
mod console;
mod credit_top_ups;
mod credits;
mod edge;
mod etags;
mod event_publishing;
mod events;
mod external_authorization;
mod faults;
mod health;
mod helpers;
mod key_limits;
mod key_notices;
mod key_restrictions;
mod known_keys;
mod lifecycle;
mod limits;
mod llm_endpoints;
mod login_throttle;
mod look_alike_text;
mod organization_limits;
mod organizations;
mod out_of_range;
mod read_coalescing;
mod readme;
mod reservations;
mod retention;
mod retried_creates;
mod schema;
mod server;
mod sessions;
mod shared_limits;
mod tls;
mod traces;
mod upgrade;
mod usage;
mod users;
mod webhooks;
