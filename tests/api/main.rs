//! Black-box tests: each starts the real server on a random port against a
//! fresh database and calls it through the generated clients. Most run
//! twice, on PostgreSQL and on SQLite (see `helpers::backend_test!`).

mod api_keys;
mod auth;
mod authorization;
mod chatbots;
mod edge;
mod health;
mod helpers;
mod lifecycle;
mod limits;
mod loadgen;
mod read_coalescing;
mod server;
mod users;
