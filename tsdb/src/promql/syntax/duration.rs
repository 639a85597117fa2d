//! Duration expressions (Prometheus's `promql-duration-expr`): their grammar as upstream's
//! `generated_parser.y` has it (`duration_expr`, `offset_duration_expr`, `paren_duration_expr`)
//! and their evaluation as `promql/durations.go` does it.

use super::lex::{Kind, Lexer, Token};
use super::{SyntaxError, parse_error};
use crate::duration::DurationError;

/// A duration expression. Spans are byte offsets into the query text, as upstream's
/// `PositionRange` (used in error messages).
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Node {
    /// A number (seconds) or duration literal, a sign folded in (upstream's `NumberLiteral`).
    Lit { secs: f64, start: usize, end: usize },
    /// `step()`.
    Step { start: usize, end: usize },
    /// `range()`.
    Range { start: usize, end: usize },
    /// `-x` or `+x` of anything but a literal.
    Unary {
        neg: bool,
        inner: Box<Node>,
        start: usize,
    },
    Binary {
        op: Op,
        lhs: Box<Node>,
        rhs: Box<Node>,
    },
    /// `min_of(a, b)` or `max_of(a, b)`.
    MinMax {
        max: bool,
        lhs: Box<Node>,
        rhs: Box<Node>,
        start: usize,
        end: usize,
    },
    /// `( x )`: a literal in parentheses is a duration expression, not a literal.
    Paren {
        inner: Box<Node>,
        start: usize,
        end: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
}

impl Op {
    fn of(kind: Kind) -> Option<Op> {
        Some(match kind {
            Kind::Add => Op::Add,
            Kind::Sub => Op::Sub,
            Kind::Mul => Op::Mul,
            Kind::Div => Op::Div,
            Kind::Mod => Op::Mod,
            Kind::Pow => Op::Pow,
            _ => return None,
        })
    }

    /// Upstream's precedence: `+ -` < `* / %` < `^` (right-associative).
    fn prec(self) -> u8 {
        match self {
            Op::Add | Op::Sub => 1,
            Op::Mul | Op::Div | Op::Mod => 2,
            Op::Pow => 3,
        }
    }
}

impl Node {
    /// Upstream's `PositionRange()` of the node.
    pub(super) fn span(&self) -> (usize, usize) {
        match self {
            Node::Lit { start, end, .. }
            | Node::Step { start, end }
            | Node::Range { start, end }
            | Node::MinMax { start, end, .. } => (*start, *end),
            Node::Unary { inner, start, .. } => (*start, inner.span().1),
            Node::Binary { lhs, rhs, .. } => (lhs.span().0, rhs.span().1),
            // A wrapped expression keeps its own range; a wrapped literal gets the parentheses'.
            Node::Paren { inner, start, end } => match **inner {
                Node::Lit { .. } => (*start, *end),
                _ => inner.span(),
            },
        }
    }

    /// Whether this is a plain literal, which needs no experimental feature.
    pub(super) fn is_literal(&self) -> bool {
        matches!(self, Node::Lit { .. })
    }

    /// Whether the value depends on the query's step or range.
    pub(super) fn uses_query_context(&self) -> bool {
        match self {
            Node::Step { .. } | Node::Range { .. } => true,
            Node::Lit { .. } => false,
            Node::Unary { inner, .. } | Node::Paren { inner, .. } => inner.uses_query_context(),
            Node::Binary { lhs, rhs, .. } | Node::MinMax { lhs, rhs, .. } => {
                lhs.uses_query_context() || rhs.uses_query_context()
            }
        }
    }

    /// Upstream's `evaluateDurationExpr`: the value in seconds.
    fn eval(&self, step_ms: i64, range_ms: i64) -> Result<f64, String> {
        Ok(match self {
            Node::Lit { secs, .. } => *secs,
            Node::Step { .. } => step_ms as f64 / 1000.0,
            Node::Range { .. } => range_ms as f64 / 1000.0,
            Node::Unary { neg, inner, .. } => {
                let v = inner.eval(step_ms, range_ms)?;
                if *neg { -v } else { v }
            }
            Node::Paren { inner, .. } => inner.eval(step_ms, range_ms)?,
            Node::MinMax { max, lhs, rhs, .. } => {
                let (a, b) = (lhs.eval(step_ms, range_ms)?, rhs.eval(step_ms, range_ms)?);
                // Go's math.Min/Max: NaN wins.
                if a.is_nan() || b.is_nan() {
                    f64::NAN
                } else if *max {
                    a.max(b)
                } else {
                    a.min(b)
                }
            }
            Node::Binary { op, lhs, rhs } => {
                let (a, b) = (lhs.eval(step_ms, range_ms)?, rhs.eval(step_ms, range_ms)?);
                let (s, e) = self.span();
                match op {
                    Op::Add => a + b,
                    Op::Sub => a - b,
                    Op::Mul => a * b,
                    Op::Div if b == 0.0 => return Err(format!("{s}:{e}: division by zero")),
                    Op::Div => a / b,
                    Op::Mod if b == 0.0 => return Err(format!("{s}:{e}: modulo by zero")),
                    // Go's math.Mod: the sign of the dividend, as Rust's `%`.
                    Op::Mod => a % b,
                    Op::Pow => a.powf(b),
                }
            }
        })
    }

    /// Upstream's `calculateDuration`: the value in milliseconds (truncated, as Go converts
    /// seconds to a `time.Duration` of whole milliseconds), or the error upstream reports.
    pub(super) fn millis(
        &self,
        step_ms: i64,
        range_ms: i64,
        allow_negative: bool,
    ) -> Result<i64, String> {
        let v = self.eval(step_ms, range_ms)?;
        let (s, e) = self.span();
        if !v.is_finite() {
            return Err(format!("{s}:{e}: duration is NaN or infinite"));
        }
        if v <= 0.0 && !allow_negative {
            return Err(format!("{s}:{e}: duration must be greater than 0"));
        }
        if out_of_range(v) {
            return Err(format!("{s}:{e}: duration is out of range"));
        }
        Ok((v * 1000.0) as i64)
    }
}

/// Upstream's `durationLiteralOutOfRange`: seconds that overflow a `time.Duration`.
pub(super) fn out_of_range(secs: f64) -> bool {
    !(-9_223_372_036.854_776..=9_223_372_036.854_776).contains(&secs)
}

/// A literal's value in seconds: a number (Go's `ParseInt(s, 0, 64)`, then `ParseFloat`) or
/// a duration (`1h30m`, units in order, each at most once).
pub(super) fn literal_secs(text: &str) -> Result<f64, String> {
    if let Some(v) = parse_number(text) {
        return Ok(v);
    }
    parse_duration(text)
}

fn parse_number(text: &str) -> Option<f64> {
    let lower = text.to_ascii_lowercase();
    let radix = |digits: &str, r: u32| {
        let d: String = digits.chars().filter(|c| *c != '_').collect();
        i64::from_str_radix(&d, r).ok().map(|v| v as f64)
    };
    if let Some(h) = lower.strip_prefix("0x") {
        return radix(h, 16);
    }
    if let Some(b) = lower.strip_prefix("0b") {
        return radix(b, 2);
    }
    if let Some(o) = lower.strip_prefix("0o") {
        return radix(o, 8);
    }
    if lower.len() > 1 && lower.starts_with('0') && lower.bytes().all(|b| b.is_ascii_digit()) {
        return radix(&lower[1..], 8);
    }
    if !lower
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'+' | b'-' | b'_'))
    {
        return None;
    }
    lower.replace('_', "").parse::<f64>().ok()
}

/// Prometheus's `model.ParseDuration`, in seconds as Go's `Duration.Seconds()` gives them.
fn parse_duration(text: &str) -> Result<f64, String> {
    let bad = || format!("bad number or duration syntax: {text:?}");
    if !lexes_as_duration(text) {
        return Err(bad());
    }
    let total = crate::duration::parse_ms(text).map_err(|e| match e {
        DurationError::Syntax => bad(),
        DurationError::UnknownUnit(unit) => format!("unknown unit {unit:?} in duration {text:?}"),
        DurationError::Order => format!("not a valid duration string: {text:?}"),
        DurationError::Overflow => format!("duration out of range: {text:?}"),
    })?;
    Ok((total / 1000) as f64 + ((total % 1000) * 1_000_000) as f64 / 1e9)
}

/// Whether `word` is one of the duration expression keywords.
fn is_keyword(word: &str) -> bool {
    ["step", "range", "min_of", "max_of"]
        .iter()
        .any(|k| word.eq_ignore_ascii_case(k))
}

/// Whether Prometheus's lexer takes `text` for a duration: digits, a unit letter (`s`, `m`,
/// `h`, `d`, `w`, `y`, then maybe an `s`), repeated (no `y` after the first).
fn lexes_as_duration(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    let mut first = true;
    while i < b.len() {
        let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return false;
        }
        i += digits;
        let units: &[u8] = if first { b"smhdwy" } else { b"smhdw" };
        if !b.get(i).is_some_and(|c| units.contains(c)) {
            return false;
        }
        i += 1;
        if b.get(i) == Some(&b's') {
            i += 1;
        }
        first = false;
    }
    !first
}

/// The parser of one duration expression, reading tokens from the front end's lexer.
pub(super) struct Parser<'a, 'b> {
    pub(super) src: &'a str,
    pub(super) lex: &'b mut Lexer<'a>,
    /// Inside `[...]` (where `:` is a token).
    pub(super) in_brackets: bool,
    /// Where each duration expression node was built, in upstream's reduction order: the
    /// first is where upstream reports "experimental duration expression is not enabled".
    pub(super) experimental_at: Option<usize>,
    /// The end of the last token read.
    pub(super) last_end: usize,
}

impl Parser<'_, '_> {
    fn peek(&self) -> Token {
        self.lex.peek(self.in_brackets)
    }

    fn next(&mut self) -> Token {
        let t = self.lex.next(self.in_brackets);
        self.last_end = t.end;
        t
    }

    /// The next token, consumed.
    pub(super) fn next_token(&mut self) -> Token {
        self.next()
    }

    fn experimental(&mut self, at: usize) {
        self.experimental_at.get_or_insert(at);
    }

    fn unexpected(&self, t: Token, ctx: &str, expected: &str) -> SyntaxError {
        let what = match t.kind {
            Kind::Eof => "end of input".to_string(),
            Kind::Number => format!("number {:?}", t.text(self.src)),
            Kind::Ident => format!("identifier {:?}", t.text(self.src)),
            _ => format!("{:?}", t.text(self.src)),
        };
        parse_error(
            t.start,
            format!("unexpected {what} in {ctx}, expected {expected}"),
        )
    }

    /// `duration_expr`: a full expression, binary operators included.
    pub(super) fn expr(&mut self) -> Result<Node, SyntaxError> {
        self.binary(1)
    }

    fn binary(&mut self, min_prec: u8) -> Result<Node, SyntaxError> {
        let lhs = self.unary()?;
        self.binary_rest(lhs, min_prec)
    }

    fn binary_rest(&mut self, mut lhs: Node, min_prec: u8) -> Result<Node, SyntaxError> {
        loop {
            let t = self.peek();
            let Some(op) = Op::of(t.kind) else {
                return Ok(lhs);
            };
            if op.prec() < min_prec {
                return Ok(lhs);
            }
            self.next();
            let next_min = if op == Op::Pow {
                op.prec()
            } else {
                op.prec() + 1
            };
            let rhs = self.binary(next_min)?;
            if let Node::Lit { secs, .. } = rhs
                && secs == 0.0
                && matches!(op, Op::Div | Op::Mod)
            {
                let what = if op == Op::Div { "division" } else { "modulo" };
                return Err(parse_error(t.start, format!("{what} by zero")));
            }
            self.experimental(lhs.span().0);
            lhs = Node::Binary {
                op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            };
        }
    }

    /// `unary_op duration_expr %prec MUL`, or a primary.
    fn unary(&mut self) -> Result<Node, SyntaxError> {
        let t = self.peek();
        if matches!(t.kind, Kind::Add | Kind::Sub) {
            self.next();
            let inner = self.binary(Op::Pow.prec())?;
            return Ok(self.apply_sign(t, inner));
        }
        self.primary()
    }

    /// Upstream's `applyUnaryOpToDurationExpr`: a sign folds into a literal.
    fn apply_sign(&mut self, sign: Token, inner: Node) -> Node {
        let neg = sign.kind == Kind::Sub;
        match inner {
            Node::Lit { secs, end, .. } => Node::Lit {
                secs: if neg { -secs } else { secs },
                start: sign.start,
                end,
            },
            inner => Node::Unary {
                neg,
                inner: Box::new(inner),
                start: sign.start,
            },
        }
    }

    fn primary(&mut self) -> Result<Node, SyntaxError> {
        let t = self.next();
        match t.kind {
            Kind::Number => self.literal(t),
            Kind::LParen => {
                let inner = self.expr()?;
                let close = self.next();
                if close.kind != Kind::RParen {
                    return Err(self.unexpected(close, "duration expression", "\")\""));
                }
                self.experimental(inner.span().0);
                Ok(Node::Paren {
                    inner: Box::new(inner),
                    start: t.start,
                    end: close.end,
                })
            }
            Kind::Ident => self.keyword(t),
            Kind::Other | Kind::Str => Err(parse_error(
                t.start,
                format!(
                    "unexpected character in duration expression: '{}'",
                    t.text(self.src).chars().next().unwrap_or('?')
                ),
            )),
            Kind::Eof => Err(parse_error(
                t.start,
                "unexpected end of input in duration expression",
            )),
            _ => Err(self.unexpected(
                t,
                "duration expression",
                "number, duration, step(), or range()",
            )),
        }
    }

    fn literal(&mut self, t: Token) -> Result<Node, SyntaxError> {
        let secs = literal_secs(t.text(self.src)).map_err(|m| parse_error(t.start, m))?;
        if out_of_range(secs) {
            return Err(parse_error(t.start, "duration out of range"));
        }
        Ok(Node::Lit {
            secs,
            start: t.start,
            end: t.end,
        })
    }

    /// `step()`, `range()`, `min_of(a, b)`, `max_of(a, b)` (case-insensitive).
    fn keyword(&mut self, t: Token) -> Result<Node, SyntaxError> {
        let word = t.text(self.src).to_ascii_lowercase();
        let open = self.next();
        if open.kind != Kind::LParen
            || !matches!(word.as_str(), "step" | "range" | "min_of" | "max_of")
        {
            return Err(parse_error(
                t.start,
                format!(
                    "unexpected character in duration expression: '{}'",
                    t.text(self.src).chars().next().unwrap_or('?')
                ),
            ));
        }
        let node = match word.as_str() {
            "step" | "range" => {
                let close = self.next();
                if close.kind != Kind::RParen {
                    return Err(self.unexpected(close, &format!("{word}()"), "\")\""));
                }
                if word == "step" {
                    Node::Step {
                        start: t.start,
                        end: close.end,
                    }
                } else {
                    Node::Range {
                        start: t.start,
                        end: close.end,
                    }
                }
            }
            _ => {
                let lhs = self.expr()?;
                let comma = self.next();
                if comma.kind != Kind::Comma {
                    return Err(self.unexpected(comma, &format!("{word}()"), "\",\""));
                }
                let rhs = self.expr()?;
                let close = self.next();
                if close.kind != Kind::RParen {
                    return Err(self.unexpected(close, &format!("{word}()"), "\")\""));
                }
                Node::MinMax {
                    max: word == "max_of",
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                    start: t.start,
                    end: close.end,
                }
            }
        };
        self.experimental(t.start);
        Ok(node)
    }

    /// `offset_duration_expr`: what follows `offset`. A literal, `step()`, `range()`,
    /// `min_of`/`max_of`, or a signed one of these or of a parenthesised expression ends the
    /// offset (`foo offset 2 ^ 2` is `(foo offset 2) ^ 2`, upstream's grammar resolves these
    /// conflicts by rule order); only an unsigned parenthesised expression continues with
    /// binary operators (`offset (1m) * 2`, a shift in upstream's grammar).
    pub(super) fn offset(&mut self) -> Result<Node, SyntaxError> {
        let t = self.peek();
        match t.kind {
            Kind::Add | Kind::Sub => {
                self.next();
                let n = self.peek();
                let inner = match n.kind {
                    Kind::Number | Kind::Ident => self.primary()?,
                    Kind::LParen => {
                        let p = self.primary()?;
                        // `-(5)` is a duration expression even around a literal.
                        if let Node::Paren { inner, start, end } = p {
                            return Ok(Node::Unary {
                                neg: t.kind == Kind::Sub,
                                inner: Box::new(Node::Paren { inner, start, end }),
                                start: t.start,
                            });
                        }
                        p
                    }
                    _ => {
                        return Err(self.unexpected(
                            n,
                            "offset",
                            "number, duration, step(), or range()",
                        ));
                    }
                };
                if !inner.is_literal() {
                    self.experimental(t.start);
                }
                Ok(self.apply_sign(t, inner))
            }
            Kind::Ident if !is_keyword(t.text(self.src)) => {
                Err(self.unexpected(t, "offset", "number, duration, step(), or range()"))
            }
            Kind::Number | Kind::Ident => self.primary(),
            Kind::LParen => {
                let p = self.primary()?;
                self.binary_rest(p, 1)
            }
            _ => Err(self.unexpected(t, "offset", "number, duration, step(), or range()")),
        }
    }
}
