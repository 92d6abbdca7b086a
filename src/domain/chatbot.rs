//! Chatbot fields. The endpoint URL is called by other services, so it is
//! checked against SSRF (OWASP API7): no credentials, and a host that is
//! public by everything its text shows (see `public_host`) unless
//! configuration allows internal ones.

use url::Url;

use super::display_text::DisplayName;
use super::public_host::non_public_reason;
use super::FieldViolation;

/// A chatbot's display name.
pub type ChatbotName = DisplayName;

/// An absolute http(s) URL without credentials that is safe to call as far
/// as its text shows; the caller must still check the address it connects
/// to (see `public_host`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmEndpoint(String);

impl LlmEndpoint {
    pub const MAX_LEN: usize = 2048;

    /// `allow_private` admits any host, internal names and addresses
    /// included (a local LLM server in development).
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
        if !allow_private {
            if let Some(reason) = non_public_reason(&host) {
                return Err(FieldViolation::new(
                    field,
                    format!("must point at a publicly reachable host: {reason}"),
                ));
            }
        }
        Ok(Self(url.to_string()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A URL as the audit log and the events show it: its scheme, host and
/// port. A webhook's path or query often holds the receiver's own token,
/// and every member may read the events.
pub fn url_origin(url: &str) -> String {
    Url::parse(url)
        .map(|url| url.origin().ascii_serialization())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_keeps_scheme_host_and_port_and_drops_path_and_query() {
        let url = "https://hooks.example.com:8443/services/T0/B0/secret?token=x";
        assert_eq!(url_origin(url), "https://hooks.example.com:8443");
        assert_eq!(
            url_origin("https://hooks.example.com/a"),
            "https://hooks.example.com"
        );
    }

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
    fn the_issues_probes_are_refused_naming_the_field() {
        for bad in [
            "http://[::ffff:0:7f00:1]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[2002:7f00:1::]/",
            "http://192.0.0.192/",
            "http://198.18.0.1/",
            "http://240.0.0.1/",
            "http://instance-data/latest/meta-data",
            "http://kubernetes.default.svc/api",
            // Zone ids are not URL syntax; `url` refuses them.
            "http://[fe80::1%25eth0]/",
            "http://[fe80::1%eth0]/",
        ] {
            let violation = LlmEndpoint::parse("llm_endpoint_url", bad, false).unwrap_err();
            assert_eq!(violation.field, "llm_endpoint_url", "{bad}");
        }
    }

    #[test]
    fn allowing_private_endpoints_admits_internal_names_and_addresses() {
        for local in [
            "http://localhost:11434/api",
            "http://ollama:11434/",
            "http://[::1]:8080/",
            "http://host.docker.internal/",
        ] {
            assert!(LlmEndpoint::parse("u", local, true).is_ok(), "{local}");
            assert!(LlmEndpoint::parse("u", local, false).is_err(), "{local}");
        }
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
