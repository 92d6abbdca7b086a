//! Black-box tests: each starts the real server on a random port against a
//! fresh PostgreSQL database and calls it through the generated clients.

mod api_keys;
mod auth;
mod authorization;
mod chatbots;
mod helpers;
mod lifecycle;
mod limits;
mod server;
mod users;
