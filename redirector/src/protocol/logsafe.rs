//! Peer-supplied text (user and schema names, statement text, a server's
//! error message) made safe to write to a log line or to echo in an error
//! message: control characters, ESC and line breaks are escaped so that a
//! peer cannot forge log lines or terminal sequences, and long text is cut
//! (with its original length) so that one attempt cannot write megabytes.
//!
//! The one helper for this: wrap the text in [`peer`] wherever it is
//! formatted (`tracing` fields with `%`, `format!`, `#[error]` strings).

use std::fmt;

/// Characters of peer text kept before it is cut: more than MariaDB's
/// longest user name (128 characters) and any identifier (64).
pub const MAX_CHARS: usize = 128;

/// `text` for a log line or an error message (see the module docs).
pub fn peer(text: &str) -> Peer<'_> {
    Peer(text)
}

/// Displays the wrapped text escaped and cut at [`MAX_CHARS`].
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a>(pub &'a str);

impl fmt::Display for Peer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(MAX_CHARS) {
            write_char(f, c)?;
        }
        if chars.next().is_some() {
            write!(f, "…({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

fn write_char(f: &mut fmt::Formatter<'_>, c: char) -> fmt::Result {
    match c {
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        '\t' => f.write_str("\\t"),
        '\\' => f.write_str("\\\\"),
        // C0/C1 controls (ESC, NUL, DEL …), Unicode line and paragraph
        // separators and the bidirectional overrides, which can make a
        // terminal show text other than what was logged.
        c if c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}') =>
        {
            write!(f, "\\u{{{:x}}}", u32::from(c))
        }
        c => fmt::Write::write_char(f, c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_line_breaks() {
        assert_eq!(peer("app").to_string(), "app");
        assert_eq!(
            peer("a\nb\r\x1b[31mc\u{0}\\\u{202e}").to_string(),
            "a\\nb\\r\\u{1b}[31mc\\u{0}\\\\\\u{202e}"
        );
        assert_eq!(peer("grüße").to_string(), "grüße");
    }

    #[test]
    fn cuts_long_text_with_its_length() {
        let long = "x".repeat(1 << 20);
        let shown = peer(&long).to_string();
        assert_eq!(shown, format!("{}…(1048576 bytes)", "x".repeat(MAX_CHARS)));
        let exact = "y".repeat(MAX_CHARS);
        assert_eq!(peer(&exact).to_string(), exact);
    }
}
