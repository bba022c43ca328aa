//! Recognising KILL in client commands: `KILL [HARD|SOFT]
//! [CONNECTION|QUERY] <id>`, `KILL CONNECTION_ID()` and COM_PROCESS_KILL.
//! The session carries them out (`crate::session::kill`); this is only the
//! reading, so the relay can hold such a command without depending on that
//! module. A dozen words of grammar: a SQL parser crate would not read
//! MariaDB's `HARD`/`SOFT`/`QUERY ID` forms and would cost every COM_QUERY
//! a full parse, where this looks at the first word and stops.

use super::constants::command::{COM_PROCESS_KILL, COM_QUERY};

/// What a KILL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Id(u64),
    /// `CONNECTION_ID()`: the client itself.
    Own,
}

/// A KILL the redirector carries out: the words before the id, upper-cased
/// (`KILL`, `KILL HARD QUERY` …), and the id. `words` is empty for
/// COM_PROCESS_KILL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    pub words: String,
    pub target: Target,
}

/// How the redirector treats a client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not a KILL, or one that passes unchanged (`KILL QUERY ID`, `KILL USER`).
    Other,
    Kill(Kill),
    /// A KILL whose target cannot be mapped (an expression, trailing SQL).
    Unsupported,
}

/// Classifies a whole client packet (header included) that starts a command.
pub fn classify(packet: &[u8]) -> Parsed {
    match packet.get(4) {
        Some(&COM_PROCESS_KILL) => match packet.get(5..9) {
            Some(&[a, b, c, d]) => Parsed::Kill(Kill {
                words: String::new(),
                target: Target::Id(u64::from(u32::from_le_bytes([a, b, c, d]))),
            }),
            _ => Parsed::Unsupported,
        },
        Some(&COM_QUERY) => parse_sql(packet.get(5..).unwrap_or(&[])),
        _ => Parsed::Other,
    }
}

/// Whether the relay must hold this command for [`run`].
pub fn intercepts(packet: &[u8]) -> bool {
    !matches!(classify(packet), Parsed::Other)
}

/// A tiny lexer over SQL text: words, numbers and single punctuation,
/// skipping white space and comments (`/*…*/`, `-- …`, `# …`). MariaDB's
/// executable comments (`/*! … */`) are not looked into: the statement is
/// then not recognised as a KILL and passes on unchanged.
struct Lexer<'a> {
    sql: &'a [u8],
    pos: usize,
}

#[derive(Debug, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a [u8]),
    Number(&'a [u8]),
    Punct(u8),
    /// An executable comment or a quote: something we do not read through.
    Opaque,
}

impl<'a> Lexer<'a> {
    fn skip_blank(&mut self) {
        loop {
            let rest = self.sql.get(self.pos..).unwrap_or(&[]);
            match rest {
                [b' ' | b'\t' | b'\r' | b'\n' | b'\x0c', ..] => self.pos += 1,
                [b'/', b'*', b'!' | b'M', ..] => return,
                [b'/', b'*', ..] => {
                    let end = rest
                        .windows(2)
                        .skip(2)
                        .position(|w| w == b"*/")
                        .map_or(rest.len(), |i| i + 4);
                    self.pos += end;
                }
                [b'-', b'-', b' ' | b'\t' | b'\r' | b'\n', ..] | [b'#', ..] => {
                    let end = rest
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(rest.len(), |i| i + 1);
                    self.pos += end;
                }
                _ => return,
            }
        }
    }

    fn next(&mut self) -> Option<Token<'a>> {
        self.skip_blank();
        let rest = self.sql.get(self.pos..).unwrap_or(&[]);
        let first = *rest.first()?;
        let run = |f: fn(u8) -> bool| rest.iter().position(|&b| !f(b)).unwrap_or(rest.len());
        let (token, len) = if first.is_ascii_alphabetic() || first == b'_' {
            let n = run(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$');
            (Token::Word(rest.get(..n).unwrap_or(&[])), n)
        } else if first.is_ascii_digit() {
            let n = run(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_');
            (Token::Number(rest.get(..n).unwrap_or(&[])), n)
        } else if matches!(first, b'/' | b'\'' | b'"' | b'`') {
            (Token::Opaque, rest.len())
        } else {
            (Token::Punct(first), 1)
        };
        self.pos += len;
        Some(token)
    }
}

fn is_word(t: &Option<Token<'_>>, w: &str) -> bool {
    matches!(t, Some(Token::Word(x)) if x.eq_ignore_ascii_case(w.as_bytes()))
}

/// Parses the text of a COM_QUERY.
pub fn parse_sql(sql: &[u8]) -> Parsed {
    let mut lx = Lexer { sql, pos: 0 };
    if !is_word(&lx.next(), "KILL") {
        return Parsed::Other;
    }
    let mut words = String::from("KILL");
    let mut t = lx.next();
    for modifier in ["HARD", "SOFT"] {
        if is_word(&t, modifier) {
            words.push(' ');
            words.push_str(modifier);
            t = lx.next();
        }
    }
    if is_word(&t, "USER") {
        return Parsed::Other;
    }
    if is_word(&t, "CONNECTION") || is_word(&t, "QUERY") {
        let query = is_word(&t, "QUERY");
        words.push_str(if query { " QUERY" } else { " CONNECTION" });
        t = lx.next();
        if query && is_word(&t, "ID") {
            return Parsed::Other;
        }
    }
    let target = match t {
        Some(Token::Number(n)) => match std::str::from_utf8(n).ok().and_then(|s| s.parse().ok()) {
            Some(id) => Target::Id(id),
            None => return Parsed::Unsupported,
        },
        Some(Token::Word(w)) if w.eq_ignore_ascii_case(b"CONNECTION_ID") => {
            if lx.next() != Some(Token::Punct(b'(')) || lx.next() != Some(Token::Punct(b')')) {
                return Parsed::Unsupported;
            }
            Target::Own
        }
        _ => return Parsed::Unsupported,
    };
    // Only a `;` and blanks may follow: anything else would be an
    // expression (`KILL 12 + 1`) or another statement.
    loop {
        match lx.next() {
            None => return Parsed::Kill(Kill { words, target }),
            Some(Token::Punct(b';')) => continue,
            Some(_) => return Parsed::Unsupported,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kill(words: &str, target: Target) -> Parsed {
        Parsed::Kill(Kill {
            words: words.into(),
            target,
        })
    }

    #[test]
    fn kill_statements_are_recognised() {
        let cases: [(&[u8], &str, Target); 8] = [
            (b"KILL 12", "KILL", Target::Id(12)),
            (b"  kill\n connection 7 ;", "KILL CONNECTION", Target::Id(7)),
            (b"KILL QUERY 9", "KILL QUERY", Target::Id(9)),
            (b"kill hard query 9", "KILL HARD QUERY", Target::Id(9)),
            (b"KILL SOFT 3", "KILL SOFT", Target::Id(3)),
            (b"/* pool */ KILL 5 -- why\n", "KILL", Target::Id(5)),
            (b"KILL CONNECTION_ID()", "KILL", Target::Own),
            (b"KILL QUERY connection_id ( )", "KILL QUERY", Target::Own),
        ];
        for (sql, words, target) in cases {
            assert_eq!(
                parse_sql(sql),
                kill(words, target),
                "{}",
                String::from_utf8_lossy(sql)
            );
        }
    }

    #[test]
    fn other_statements_pass() {
        assert_eq!(parse_sql(b"SELECT 1"), Parsed::Other);
        assert_eq!(parse_sql(b"KILLX 1"), Parsed::Other);
        assert_eq!(parse_sql(b"KILL QUERY ID 5"), Parsed::Other);
        assert_eq!(parse_sql(b"KILL USER 'app'"), Parsed::Other);
        assert_eq!(parse_sql(b"KILL HARD USER app"), Parsed::Other);
        assert_eq!(parse_sql(b"/*!KILL 5 */"), Parsed::Other);
        assert_eq!(parse_sql(b""), Parsed::Other);
    }

    #[test]
    fn unmappable_kills_are_refused() {
        for sql in [
            &b"KILL @id"[..],
            b"KILL 1 + 1",
            b"KILL (SELECT 1)",
            b"KILL 5; SELECT 1",
            b"KILL",
            b"KILL 99999999999999999999999",
            b"KILL 0x10",
            b"KILL '5'",
            b"KILL CONNECTION_ID",
        ] {
            assert_eq!(
                parse_sql(sql),
                Parsed::Unsupported,
                "{}",
                String::from_utf8_lossy(sql)
            );
        }
    }

    #[test]
    fn com_process_kill_is_recognised() {
        let p = [5, 0, 0, 0, COM_PROCESS_KILL, 42, 0, 0, 0];
        assert_eq!(classify(&p), kill("", Target::Id(42)));
        assert_eq!(
            classify(&[1, 0, 0, 0, COM_PROCESS_KILL]),
            Parsed::Unsupported
        );
        assert!(!intercepts(&[1, 0, 0, 0, 0x0e]));
    }
}
