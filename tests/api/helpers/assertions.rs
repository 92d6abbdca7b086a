//! Checks of a call's status, and of the audit log's refused attempts.

use chatbot_backend::proto;
use tonic::{Code, Status};

/// Asserts a call failed with `code`, returning the status for more checks.
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got OK: {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "unexpected status: {status:?}");
            status
        }
    }
}

/// The field paths of a status's BadRequest violations.
pub fn violated_fields(status: &Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// The clock hour now: refused attempts repeated within one share an event.
pub fn clock_hour() -> i64 {
    chrono::Utc::now().timestamp().div_euclid(3600)
}

/// Each refused attempt's (action, target type, target id) with its repeats
/// added up, sorted. Attempts share one event per clock hour, so a test
/// whose attempts straddled the top of an hour (since `hour_started`) sees
/// each split in two, which this adds back together; otherwise every
/// attempt must be one event.
pub fn repeats_by_attempt(
    events: &[proto::AuditEvent],
    hour_started: i64,
) -> Vec<(String, String, String, i64)> {
    let mut merged = std::collections::BTreeMap::<(String, String, String), (i64, usize)>::new();
    for event in events {
        let target = event.target.as_ref().unwrap();
        let key = (
            event.action.clone(),
            target.r#type.clone(),
            target.id.clone(),
        );
        let (repeats, parts) = merged.entry(key).or_default();
        *repeats += event.repeats;
        *parts += 1;
    }
    let most_parts = if clock_hour() == hour_started { 1 } else { 2 };
    merged
        .into_iter()
        .map(|((action, kind, id), (repeats, parts))| {
            assert!(
                parts <= most_parts,
                "{action} on {kind} {id} is {parts} events"
            );
            (action, kind, id, repeats)
        })
        .collect()
}
