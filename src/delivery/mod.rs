//! Getting the organizations' events out of the outbox
//! ([`crate::db::models::OrganizationEvent`]) to other services, off every
//! request's path: a background task per replica reads what is not yet
//! delivered and delivers it in each organization's order, at least once.
//! To NATS JetStream ([`nats`]) and to the organizations' webhooks
//! ([`webhooks`]).

pub mod nats;
pub mod webhooks;
