//! Peer-supplied text (user and schema names, statement text, server names
//! as typed, a server's error message) for logs and error messages:
//! control characters escaped, so a newline or an ESC cannot forge log
//! lines or drive a terminal, and truncated (with the original length), so
//! a megabyte of input does not become a megabyte of log.
//!
//! The one helper for this: wrap the text in [`escaped`] wherever it is
//! formatted (`tracing` fields with `%`, `format!`, `#[error]` strings).

use std::fmt;

/// Characters of peer text shown by [`escaped`]: more than MariaDB's
/// longest user name (128 characters) and any identifier (64).
pub const MAX_SHOWN_CHARS: usize = 128;

/// `text` escaped and cut to [`MAX_SHOWN_CHARS`] characters (see [`Escaped`]).
pub fn escaped(text: &str) -> Escaped<'_> {
    Escaped {
        text,
        max_chars: MAX_SHOWN_CHARS,
    }
}

/// Displays its text with control characters, backslashes and Unicode
/// line separators / direction overrides escaped Rust-style (`\n`,
/// `\u{1b}`), cut after `max_chars` characters with a note of how much was
/// left out.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a> {
    text: &'a str,
    max_chars: usize,
}

impl Escaped<'_> {
    /// Shows at most `max_chars` characters instead.
    pub fn max_chars(mut self, max_chars: usize) -> Self {
        self.max_chars = max_chars;
        self
    }
}

/// Characters that are not control characters but still move text around
/// in a terminal or viewer: line/paragraph separators and bidi controls.
fn is_layout_control(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        for (shown, (i, c)) in self.text.char_indices().enumerate() {
            if shown == self.max_chars {
                let _ = i;
                return write!(f, "…({} bytes)", self.text.len());
            }
            if c.is_control() || c == '\\' {
                write!(f, "{}", c.escape_debug())?;
            } else if is_layout_control(c) {
                write!(f, "{}", c.escape_unicode())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_truncates() {
        assert_eq!(escaped("db1").to_string(), "db1");
        assert_eq!(
            escaped("a\nb\x1b[31m\\\u{202e}é").to_string(),
            "a\\nb\\u{1b}[31m\\\\\\u{202e}é"
        );
        assert_eq!(escaped("grüße\t\r").to_string(), "grüße\\t\\r");
        let long = "x".repeat(1 << 20);
        assert_eq!(
            escaped(&long).to_string(),
            format!("{}…(1048576 bytes)", "x".repeat(MAX_SHOWN_CHARS))
        );
        let exact = "y".repeat(MAX_SHOWN_CHARS);
        assert_eq!(escaped(&exact).to_string(), exact);
        assert_eq!(escaped("abcdef").max_chars(3).to_string(), "abc…(6 bytes)");
        assert_eq!(escaped("abc").max_chars(3).to_string(), "abc");
    }
}
