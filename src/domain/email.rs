//! Email addresses in one stored spelling, so that two spellings of one
//! address are one account: Unicode NFC, lowercase, and the domain in its
//! IDNA Unicode form.
//!
//! NFC, not NFKC: canonically equivalent strings (a precomposed "é" and "e"
//! plus U+0301) are the same text by definition and render identically, so
//! merging them is always right. NFKC would also merge compatibility
//! variants ("ﬁ" and "fi", "²" and "2", fullwidth letters) that look
//! different and that a mail server may deliver to different mailboxes, and
//! would store an address the user never typed. PRECIS (RFC 8264) made the
//! same choice for identifiers. The domain part is different: DNS itself
//! treats its variants as one name (IDNA/UTS #46 maps case, width and
//! punycode), so it is normalised as DNS does.

use unicode_normalization::UnicodeNormalization;

use super::display_text::{hidden_char, hidden_char_violation};
use super::FieldViolation;

/// A syntactically plausible email address: NFC, lowercase, its domain in
/// IDNA Unicode form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// RFC 5321 caps a forward path at 254 octets.
    pub const MAX_LEN: usize = 254;

    pub fn parse(field: &str, value: &str) -> Result<Self, FieldViolation> {
        let too_long = || FieldViolation::new(field, "must be at most 254 characters");
        let value = value.trim();
        if value.is_empty() {
            return Err(FieldViolation::new(field, "is required"));
        }
        // Bound the work before normalising; normalising shrinks by at most
        // a few times, so this cannot refuse an address that would fit.
        if value.len() > Self::MAX_LEN * 4 {
            return Err(too_long());
        }
        // Invisible and format characters (zero-width, bidi controls, BOM,
        // soft hyphen) make an address that looks like another one.
        if let Some((index, c, kind)) = value
            .chars()
            .enumerate()
            .find_map(|(i, c)| hidden_char(c).map(|kind| (i, c, kind)))
        {
            return Err(hidden_char_violation(field, kind, c, index));
        }
        // Lowercasing can leave text that is not NFC (rarely), so NFC again.
        let value: String = value
            .nfc()
            .collect::<String>()
            .to_lowercase()
            .nfc()
            .collect();
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
        // "xn--bcher-kva.de", "BÜCHER.de" and "bücher.de" are one domain.
        let (domain, idna) = idna::domain_to_unicode(domain);
        if idna.is_err() || domain.contains("..") || !domain.contains('.') {
            return Err(invalid());
        }
        let email = format!("{local}@{domain}");
        if email.len() > Self::MAX_LEN {
            return Err(too_long());
        }
        Ok(Self(email))
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

    #[test]
    fn spellings_of_one_address_parse_to_one_email() {
        let same = [
            [
                "Jos\u{e9}@example.com",
                "jose\u{301}@example.com",
                "JOSE\u{301}@EXAMPLE.COM",
            ],
            [
                "ada@b\u{fc}cher.de",
                "ada@xn--bcher-kva.de",
                "Ada@B\u{dc}CHER.DE",
            ],
            [
                "ada@bu\u{308}cher.de",
                "ada@XN--BCHER-KVA.de",
                " ada@b\u{fc}cher.de ",
            ],
            [
                "ada@example.com",
                "ada@\u{ff45}xample.com",
                "ADA@EXAMPLE.COM",
            ],
        ];
        for spellings in same {
            let parsed: Vec<Email> = spellings
                .iter()
                .map(|s| Email::parse("email", s).unwrap_or_else(|e| panic!("{s:?}: {e:?}")))
                .collect();
            for email in &parsed {
                assert_eq!(email, &parsed[0], "{spellings:?}");
            }
        }
        assert_eq!(
            Email::parse("email", "Jose\u{301}@Example.com")
                .unwrap()
                .as_str(),
            "jos\u{e9}@example.com"
        );
    }

    #[test]
    fn compatibility_variants_of_the_local_part_stay_distinct() {
        // NFC, not NFKC: a ligature or fullwidth letter is another mailbox.
        let plain = Email::parse("email", "fi@example.com").unwrap();
        let ligature = Email::parse("email", "\u{fb01}@example.com").unwrap();
        let fullwidth = Email::parse("email", "\u{ff46}i@example.com").unwrap();
        assert_ne!(plain, ligature);
        assert_ne!(plain, fullwidth);
    }

    #[test]
    fn invisible_and_format_characters_are_refused() {
        for bad in [
            "ada\u{200B}@example.com",
            "ada\u{200C}@example.com",
            "ada\u{200D}@example.com",
            "ada\u{2060}@example.com",
            "\u{FEFF}ada@example.com",
            "ada\u{00AD}@example.com",
            "ada@exa\u{00AD}mple.com",
            "ada\u{202E}@example.com",
            "ada\u{200E}@example.com",
            "ada\u{061C}@example.com",
            "ada@example.com\u{2066}",
            "ada\u{3164}@example.com",
            "ada\u{F8FF}@example.com",
            "ada\u{0}@example.com",
        ] {
            let violation = Email::parse("email", bad).unwrap_err();
            assert_eq!(violation.field, "email", "{bad:?}");
        }
    }

    #[test]
    fn bad_idna_domains_are_refused() {
        for bad in ["ada@xn--.com", "ada@xn--zz.com", "ada@\u{ff0e}com.com"] {
            assert!(Email::parse("email", bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Email::parse("email", &format!("{}@example.com", "a".repeat(64))).is_ok());
        let long_domain = format!("ada@{}.com", "d".repeat(250));
        assert!(Email::parse("email", &long_domain).is_err());
    }
}
