//! Getting the organizations' events out of the outbox
//! ([`crate::db::models::OrganizationEvent`]) to other services, off every
//! request's path: a background task per replica reads what is not yet
//! delivered and delivers it in each organization's order, at least once.
//! Today to NATS JetStream ([`nats`]).

pub mod nats;
