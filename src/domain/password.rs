//! Passwords as a secret type: its `Debug` prints nothing, so a password
//! cannot reach a log line by accident.

use std::fmt;

use super::FieldViolation;

/// A password that meets the policy (NIST SP 800-63B: 8 to 128 characters).
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub const MIN_CHARS: usize = 8;
    pub const MAX_CHARS: usize = 128;

    /// Applies the policy; for new passwords (sign-up, change).
    pub fn parse(field: &str, value: String) -> Result<Self, FieldViolation> {
        let chars = value.chars().count();
        if chars < Self::MIN_CHARS {
            return Err(FieldViolation::new(field, "must be at least 8 characters"));
        }
        if chars > Self::MAX_CHARS {
            return Err(FieldViolation::new(field, "must be at most 128 characters"));
        }
        Ok(Self(value))
    }

    /// Accepts any presented password for verification, bounded only so an
    /// attacker cannot make us hash megabytes.
    pub fn presented(field: &str, value: String) -> Result<Self, FieldViolation> {
        if value.is_empty() {
            return Err(FieldViolation::new(field, "is required"));
        }
        if value.len() > 4 * Self::MAX_CHARS {
            return Err(FieldViolation::new(field, "is too long"));
        }
        Ok(Self(value))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_contains_the_password() {
        let password = Password::parse("password", "hunter2hunter2".into()).unwrap();
        assert!(!format!("{password:?}").contains("hunter2"));
    }

    #[test]
    fn policy_counts_characters_not_bytes() {
        assert!(Password::parse("p", "ééééééé".into()).is_err());
        assert!(Password::parse("p", "éééééééé".into()).is_ok());
        assert!(Password::parse("p", "x".repeat(129)).is_err());
    }
}
