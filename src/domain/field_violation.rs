//! Why a request field did not parse: what every domain parser returns,
//! reported to clients as a `google.rpc.BadRequest` violation by the error
//! edge (`crate::error`).

/// One invalid request field, reported as a `google.rpc.BadRequest` violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}
