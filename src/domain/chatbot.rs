//! Chatbot fields. The endpoint URL is called by other services, so it is
//! checked against SSRF (OWASP API7): no credentials, no literal internal
//! addresses unless configuration allows them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

use super::display_text::DisplayText;
use crate::error::FieldViolation;

/// A chatbot's display name: 1 to 100 characters of [`DisplayText`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatbotName(String);

impl ChatbotName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(field: &str, value: &str) -> Result<Self, FieldViolation> {
        let text = DisplayText::parse(field, value, Self::MAX_CHARS)?;
        if text.is_empty() {
            return Err(FieldViolation::new(field, "is required"));
        }
        Ok(Self(text.into_inner()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// An absolute http(s) URL without credentials that is safe to call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmEndpoint(String);

impl LlmEndpoint {
    pub const MAX_LEN: usize = 2048;

    /// `allow_private` admits loopback and private addresses (a local LLM
    /// server in development).
    pub fn parse(field: &str, value: &str, allow_private: bool) -> Result<Self, FieldViolation> {
        let value = value.trim();
        if value.is_empty() {
            return Err(FieldViolation::new(field, "is required"));
        }
        if value.len() > Self::MAX_LEN {
            return Err(FieldViolation::new(
                field,
                "must be at most 2048 characters",
            ));
        }
        let url = Url::parse(value)
            .map_err(|_| FieldViolation::new(field, "must be an absolute http(s) URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FieldViolation::new(field, "must use http or https"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(FieldViolation::new(field, "must not contain credentials"));
        }
        let host = url
            .host()
            .ok_or_else(|| FieldViolation::new(field, "must name a host"))?;
        if !allow_private && is_internal_host(&host) {
            return Err(FieldViolation::new(
                field,
                "must not point at a loopback, private, link-local or metadata address",
            ));
        }
        Ok(Self(url.to_string()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

fn is_internal_host(host: &Host<&str>) -> bool {
    match host {
        Host::Ipv4(ip) => is_internal_ipv4(*ip),
        Host::Ipv6(ip) => is_internal_ipv6(*ip),
        Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost"
                || name.ends_with(".localhost")
                || name == "metadata.google.internal"
                || name == "metadata"
                || name.parse::<IpAddr>().is_ok()
        }
    }
}

fn is_internal_ipv4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes 169.254.169.254, the cloud metadata address
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || a == 0
}

fn is_internal_ipv6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_internal_ipv4(v4);
    }
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) // AWS metadata over IPv6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_https_urls_are_accepted() {
        let url = LlmEndpoint::parse("u", "https://api.example.com/v1/chat", false).unwrap();
        assert_eq!(url.into_inner(), "https://api.example.com/v1/chat");
    }

    #[test]
    fn internal_and_credentialed_urls_are_refused() {
        for bad in [
            "http://127.0.0.1:8080/",
            "http://localhost/",
            "http://10.1.2.3/",
            "http://192.168.0.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://0x7f.0.0.1/",
            "http://user:pw@example.com/",
            "ftp://example.com/",
            "example.com/path",
        ] {
            assert!(
                LlmEndpoint::parse("u", bad, false).is_err(),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn internal_urls_are_accepted_when_allowed() {
        assert!(LlmEndpoint::parse("u", "http://127.0.0.1:11434/api", true).is_ok());
        assert!(LlmEndpoint::parse("u", "http://u:p@127.0.0.1/", true).is_err());
    }

    #[test]
    fn chatbot_names_are_display_text_and_required() {
        let precomposed = ChatbotName::parse("name", "Caf\u{e9}").unwrap();
        let decomposed = ChatbotName::parse("name", "Cafe\u{301}").unwrap();
        assert_eq!(precomposed, decomposed);
        for bad in [
            "",
            "  ",
            "\u{200B}",
            "bot\u{202E}",
            "\u{FEFF}bot",
            "a\u{0}b",
        ] {
            let violation = ChatbotName::parse("name", bad).unwrap_err();
            assert_eq!(violation.field, "name", "{bad:?}");
        }
        assert!(ChatbotName::parse("name", &"n".repeat(100)).is_ok());
        assert!(ChatbotName::parse("name", &"n".repeat(101)).is_err());
    }
}
