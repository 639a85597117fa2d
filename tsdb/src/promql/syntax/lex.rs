//! The tokens the syntax front end needs: identifiers, numbers and durations, string literals
//! (quoted with escapes, or raw in backticks), comments, brackets and the arithmetic operators.
//! Everything else is one `Other` token per character: the front end passes it through for
//! `promql-parser` to judge.

/// A token's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// `[A-Za-z_:][A-Za-z0-9_:]*` (inside brackets without `:`).
    Ident,
    /// A number or duration literal as Prometheus's lexer delimits it (not yet validated).
    Number,
    Str,
    LParen,
    RParen,
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Comma,
    Colon,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    At,
    Other,
    Eof,
}

/// A token: its kind and its byte span in the query text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Token {
    pub(super) kind: Kind,
    pub(super) start: usize,
    pub(super) end: usize,
}

impl Token {
    pub(super) fn text<'a>(&self, src: &'a str) -> &'a str {
        src.get(self.start..self.end).unwrap_or("")
    }

    /// Whether this is the identifier `word`, compared as Prometheus compares keywords
    /// (case-insensitively).
    pub(super) fn is_word(&self, src: &str, word: &str) -> bool {
        self.kind == Kind::Ident && self.text(src).eq_ignore_ascii_case(word)
    }
}

/// Lexes on demand; the caller says whether it is inside a range or subquery bracket (where
/// `:` separates range and step instead of being part of a metric name).
#[derive(Clone)]
pub(super) struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub(super) fn new(src: &'a str) -> Lexer<'a> {
        Lexer { src, pos: 0 }
    }

    fn byte(&self, i: usize) -> Option<u8> {
        self.src.as_bytes().get(i).copied()
    }

    fn skip_space(&mut self) {
        while let Some(c) = self.byte(self.pos) {
            match c {
                b' ' | b'\t' | b'\n' | b'\r' => self.pos += 1,
                b'#' => {
                    while let Some(c) = self.byte(self.pos) {
                        if c == b'\n' || c == b'\r' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    /// The next token without consuming it.
    pub(super) fn peek(&self, in_brackets: bool) -> Token {
        self.clone().next(in_brackets)
    }

    /// The next token.
    pub(super) fn next(&mut self, in_brackets: bool) -> Token {
        self.skip_space();
        let start = self.pos;
        let Some(c) = self.byte(start) else {
            return Token {
                kind: Kind::Eof,
                start,
                end: start,
            };
        };
        let kind = match c {
            b'(' => Kind::LParen,
            b')' => Kind::RParen,
            b'{' => Kind::LBrace,
            b'}' => Kind::RBrace,
            b'[' => Kind::LBracket,
            b']' => Kind::RBracket,
            b',' => Kind::Comma,
            b'+' => Kind::Add,
            b'-' => Kind::Sub,
            b'*' => Kind::Mul,
            b'/' => Kind::Div,
            b'%' => Kind::Mod,
            b'^' => Kind::Pow,
            b'@' => Kind::At,
            b':' if in_brackets => Kind::Colon,
            b'"' | b'\'' => {
                self.pos = self.string_end(start + 1, c);
                return self.token(Kind::Str, start);
            }
            b'`' => {
                self.pos = match self.src[start + 1..].find('`') {
                    Some(i) => start + 1 + i + 1,
                    None => self.src.len(),
                };
                return self.token(Kind::Str, start);
            }
            b'0'..=b'9' => {
                self.pos = self.number_end(start);
                return self.token(Kind::Number, start);
            }
            b'.' if self.byte(start + 1).is_some_and(|d| d.is_ascii_digit()) => {
                self.pos = self.number_end(start);
                return self.token(Kind::Number, start);
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let mut i = start + 1;
                while let Some(d) = self.byte(i) {
                    if d.is_ascii_alphanumeric() || d == b'_' || (d == b':' && !in_brackets) {
                        i += 1;
                    } else {
                        break;
                    }
                }
                self.pos = i;
                return self.token(Kind::Ident, start);
            }
            _ => {
                let w = self.src[start..].chars().next().map_or(1, char::len_utf8);
                self.pos = start + w;
                return self.token(Kind::Other, start);
            }
        };
        self.pos = start + 1;
        self.token(kind, start)
    }

    fn token(&self, kind: Kind, start: usize) -> Token {
        Token {
            kind,
            start,
            end: self.pos,
        }
    }

    /// The end of a quoted string whose body starts at `i` (escapes skipped); the end of the
    /// text when unterminated.
    fn string_end(&self, mut i: usize, quote: u8) -> usize {
        while let Some(c) = self.byte(i) {
            if c == b'\\' {
                i += 2;
            } else if c == quote {
                return i + 1;
            } else {
                i += 1;
            }
        }
        self.src.len()
    }

    /// The end of a number or duration starting at `i`: a run of letters, digits, `_` and
    /// `.`, with a signed exponent (`1e-3`).
    fn number_end(&self, mut i: usize) -> usize {
        let start = i;
        while let Some(c) = self.byte(i) {
            if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' {
                i += 1;
                continue;
            }
            let run = &self.src[start..i];
            let decimal_exp = (run.ends_with('e') || run.ends_with('E'))
                && !run.starts_with("0x")
                && !run.starts_with("0X")
                && run[..run.len() - 1]
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'.' || b == b'_');
            if (c == b'+' || c == b'-')
                && decimal_exp
                && self.byte(i + 1).is_some_and(|d| d.is_ascii_digit())
            {
                i += 1;
                continue;
            }
            break;
        }
        i
    }
}
