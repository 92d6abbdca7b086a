//! Email addresses, normalised to lowercase so uniqueness is case-insensitive.

use crate::error::FieldViolation;

/// A syntactically plausible, lowercased email address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// RFC 5321 caps a forward path at 254 octets.
    pub const MAX_LEN: usize = 254;

    pub fn parse(field: &str, value: &str) -> Result<Self, FieldViolation> {
        let value = value.trim();
        if value.is_empty() {
            return Err(FieldViolation::new(field, "is required"));
        }
        if value.len() > Self::MAX_LEN {
            return Err(FieldViolation::new(field, "must be at most 254 characters"));
        }
        let invalid =
            || FieldViolation::new(field, "must be an email address like name@example.com");
        let (local, domain) = value.rsplit_once('@').ok_or_else(invalid)?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.contains('@')
            && local.chars().all(|c| !c.is_whitespace() && !c.is_control());
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
        if !local_ok || !domain_ok {
            return Err(invalid());
        }
        Ok(Self(value.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_trimmed_and_lowercased() {
        let email = Email::parse("email", "  Ada@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "ada@example.com");
    }

    #[test]
    fn emails_without_domain_or_at_sign_are_rejected() {
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "ada@exa mple.com",
            "a@.com",
        ] {
            assert!(Email::parse("email", bad).is_err(), "{bad:?} was accepted");
        }
    }
}
