//! Human-readable labels (chatbot names, API key display names): one parser
//! so every label refuses the same look-alike tricks. Text is NFC-normalised,
//! so canonically equivalent spellings (a precomposed and a decomposed "é")
//! are stored as one string, and characters that are invisible or reorder
//! what is shown are refused: bidi controls (U+202E shows "evil.exe" as
//! "exe.live"), zero-width characters, the BOM, soft hyphens, private-use
//! and unassigned code points.

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeEmoji, UnicodeGeneralCategory};

use super::FieldViolation;

/// A trimmed, NFC-normalised label with only visible characters and U+0020
/// spaces.
/// May be empty; a caller for whom the label is required checks that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayText(String);

impl DisplayText {
    /// Parses request field `field`, at most `max_chars` characters (counted
    /// after normalisation, as stored).
    pub fn parse(field: &str, value: &str, max_chars: usize) -> Result<Self, FieldViolation> {
        let value = value.trim();
        // Bound the work before normalising. NFC composes at most a few
        // characters into one (Greek U+1F86 is 4), so longer input cannot fit.
        if value.chars().count() > max_chars.saturating_mul(4).max(64) {
            return Err(too_long(field, max_chars));
        }
        // Other spaces (no-break, ideographic U+3000 from CJK input) become
        // U+0020: what the writer meant, and no look-alike of it remains.
        let text: String = value
            .nfc()
            .map(|c| match c.general_category() {
                GeneralCategory::SpaceSeparator => ' ',
                _ => c,
            })
            .collect();
        let chars: Vec<char> = text.chars().collect();
        if chars.len() > max_chars {
            return Err(too_long(field, max_chars));
        }
        for (index, &c) in chars.iter().enumerate() {
            let before = index.checked_sub(1).map(|i| chars[i]);
            let after = chars.get(index + 1).copied();
            if let Some(kind) = hidden_char(c) {
                if !joins_emoji(c, before, after) {
                    return Err(hidden_char_violation(field, kind, c, index));
                }
            }
        }
        Ok(Self(text))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl From<DisplayText> for String {
    fn from(text: DisplayText) -> Self {
        text.0
    }
}

/// Names the hidden character and where it is (1-based), since the client
/// cannot see it.
pub(super) fn hidden_char_violation(
    field: &str,
    kind: &str,
    c: char,
    index: usize,
) -> FieldViolation {
    FieldViolation::new(
        field,
        format!(
            "must not contain {kind} such as U+{:04X} (character {})",
            u32::from(c),
            index + 1
        ),
    )
}

fn too_long(field: &str, max_chars: usize) -> FieldViolation {
    FieldViolation::new(field, format!("must be at most {max_chars} characters"))
}

/// What kind of character `c` is if it has no visible glyph of its own, or
/// changes how the text around it is shown; `None` for ordinary characters
/// and the plain space.
///
/// Shared with email parsing, which refuses the same characters.
pub(super) fn hidden_char(c: char) -> Option<&'static str> {
    match c.general_category() {
        GeneralCategory::Control | GeneralCategory::Surrogate => Some("control characters"),
        // Cf: bidi controls (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F,
        // U+061C), zero-width characters (U+200B-U+200D, U+2060), the BOM
        // U+FEFF, the soft hyphen U+00AD, tag characters.
        GeneralCategory::Format => Some("invisible formatting characters"),
        GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => {
            Some("line or paragraph separators")
        }
        // Private use renders as a vendor glyph or not at all (U+F8FF is an
        // Apple logo only on Apple systems). Unassigned code points may be
        // given any meaning later, so what is stored now could change look.
        GeneralCategory::PrivateUse => Some("private-use characters"),
        GeneralCategory::Unassigned => Some("unassigned code points"),
        GeneralCategory::SpaceSeparator if c != ' ' => Some("spaces other than U+0020"),
        _ if renders_blank(c) => Some("invisible characters"),
        _ => None,
    }
}

/// Default_Ignorable_Code_Point characters outside Cf and Cn (Unicode
/// DerivedCoreProperties.txt), rendered as nothing yet not format
/// characters, e.g. the Hangul fillers that pass for blank names; and the
/// braille blank, used for the same.
fn renders_blank(c: char) -> bool {
    matches!(
        c,
        '\u{034F}' // combining grapheme joiner
            | '\u{115F}'..='\u{1160}' // Hangul choseong/jungseong fillers
            | '\u{17B4}'..='\u{17B5}' // Khmer inherent vowels
            | '\u{180B}'..='\u{180F}' // Mongolian variation selectors
            | '\u{3164}' // Hangul filler
            | '\u{2800}' // braille pattern blank, not ignorable but as blank
            | '\u{FE00}'..='\u{FE0F}' // variation selectors
            | '\u{FFA0}' // halfwidth Hangul filler
            | '\u{E0100}'..='\u{E01EF}' // variation selectors supplement
    )
}

/// Emoji sequences are the one place an invisible character is part of what
/// is shown: U+200D joins two emoji into one ("👩‍💻"), U+FE0E/U+FE0F pick an
/// emoji's text or picture form ("❤️"). Allowed there only; between letters
/// or digits they would make look-alike labels.
fn joins_emoji(c: char, before: Option<char>, after: Option<char>) -> bool {
    let emoji = |c: Option<char>| c.is_some_and(|c| !c.is_ascii() && c.is_emoji_char());
    match c {
        '\u{FE0E}' | '\u{FE0F}' => emoji(before),
        // After U+FE0F too ("❤️‍🔥"): that selector was itself checked to
        // follow an emoji.
        '\u{200D}' => (emoji(before) || before == Some('\u{FE0F}')) && emoji(after),
        _ => false,
    }
}

/// A name people give something (a chatbot, an organization, a service
/// account): 1 to 100 characters of [`DisplayText`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Result<String, FieldViolation> {
        DisplayText::parse("name", value, 10).map(DisplayText::into_inner)
    }

    #[test]
    fn labels_are_trimmed_and_nfc_normalised() {
        let decomposed = "Cafe\u{301}";
        let precomposed = "Caf\u{e9}";
        assert_eq!(parse(decomposed).unwrap(), precomposed);
        assert_eq!(parse(&format!("  {precomposed} ")).unwrap(), precomposed);
        assert_eq!(parse("").unwrap(), "");
        assert_eq!(parse("   ").unwrap(), "");
    }

    #[test]
    fn ordinary_text_in_any_script_and_emoji_is_accepted() {
        for good in [
            "Support",
            "Ünïcödé",
            "サポート",
            "مساعد",
            "דוד",
            "Ελληνικά",
            "बॉट",
            "Bot 🤖",
            "❤️ bot", // U+FE0F after an emoji
            "👩‍💻 dev", // U+200D between emoji
            "❤️‍🔥",     // ZWJ after an emoji's selector
            "🇫🇷 bot", // regional indicators
            "a-b_c.d'e",
        ] {
            assert!(parse(good).is_ok(), "{good:?} was refused");
        }
    }

    #[test]
    fn hidden_and_reordering_characters_are_refused() {
        for (bad, why) in [
            ("evil\u{202E}exe.txt", "bidi override"),
            ("a\u{202A}b", "left-to-right embedding"),
            ("a\u{202B}b", "right-to-left embedding"),
            ("a\u{202C}b", "pop directional formatting"),
            ("a\u{202D}b", "left-to-right override"),
            ("a\u{2066}b", "left-to-right isolate"),
            ("a\u{2067}b", "right-to-left isolate"),
            ("a\u{2068}b", "first strong isolate"),
            ("a\u{2069}b", "pop directional isolate"),
            ("a\u{200E}b", "left-to-right mark"),
            ("a\u{200F}b", "right-to-left mark"),
            ("a\u{061C}b", "Arabic letter mark"),
            ("a\u{200B}b", "zero-width space"),
            ("a\u{200C}b", "zero-width non-joiner"),
            ("a\u{200D}b", "zero-width joiner between letters"),
            ("1\u{200D}2", "zero-width joiner between ASCII digits"),
            ("\u{200D}🤖", "zero-width joiner before an emoji only"),
            ("a\u{2060}b", "word joiner"),
            ("\u{FEFF}bot", "byte order mark"),
            ("bo\u{00AD}t", "soft hyphen"),
            ("a\u{180E}b", "Mongolian vowel separator"),
            ("a\u{E0041}b", "tag character"),
            ("a\u{0007}b", "bell"),
            ("a\u{0085}b", "next line (C1 control)"),
            ("a\nb", "newline"),
            ("a\u{2028}b", "line separator"),
            ("a\u{2029}b", "paragraph separator"),
            ("\u{2800}", "braille pattern blank"),
            ("\u{3164}", "Hangul filler"),
            ("a\u{115F}b", "Hangul choseong filler"),
            ("a\u{034F}b", "combining grapheme joiner"),
            ("a\u{FE0F}", "variation selector after a letter"),
            ("a\u{E0100}", "variation selector supplement"),
            ("\u{F8FF}", "private use"),
            ("a\u{10FFFD}", "supplementary private use"),
            ("a\u{0378}b", "unassigned"),
        ] {
            assert!(parse(bad).is_err(), "{why} ({bad:?}) was accepted");
        }
    }

    #[test]
    fn other_spaces_become_plain_spaces() {
        assert_eq!(parse("a\u{00A0}b").unwrap(), "a b");
        assert_eq!(
            parse("\u{5C71}\u{3000}\u{7530}").unwrap(),
            "\u{5C71} \u{7530}"
        );
        assert_eq!(parse("\u{3000}ab\u{2009}").unwrap(), "ab");
    }

    #[test]
    fn the_violation_names_the_field_and_the_character() {
        let violation = parse("ab\u{202E}c").unwrap_err();
        assert_eq!(violation.field, "name");
        assert!(violation.description.contains("U+202E"), "{violation:?}");
        assert!(
            violation.description.contains("character 3"),
            "{violation:?}"
        );
    }

    #[test]
    fn length_is_counted_in_characters_after_normalisation() {
        // 10 decomposed "é" are 20 chars in, 10 after NFC.
        assert_eq!(parse(&"e\u{301}".repeat(10)).unwrap(), "\u{e9}".repeat(10));
        assert!(parse(&"é".repeat(11)).is_err());
        assert!(parse(&"x".repeat(100_000)).is_err());
    }
}
