//! chatbot-backend: a gRPC service managing users, the chatbots they own and
//! the API keys those chatbots are called with.

pub mod admin;
pub mod auth;
pub mod cache;
pub mod config;
pub mod console;
pub mod db;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod gate;
pub mod health;
pub mod hot_path;
pub mod metrics;
pub mod observability;
pub mod panics;
pub mod proto;
pub mod rate_limit;
pub mod services;
pub mod startup;
pub mod telemetry;
pub mod verification;
