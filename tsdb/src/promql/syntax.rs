//! A front end for the PromQL syntax `promql-parser` 0.11 does not know: two experimental
//! Prometheus 3.x features whose grammar that crate lacks.
//!
//! - Duration expressions (`--enable-feature=promql-duration-expr`): arithmetic wherever a
//!   duration goes, `foo[5m+1m]`, `foo[2m*(10+5):step()]`, `foo offset -(1h/2)`, with
//!   `step()`, `range()`, `min_of()` and `max_of()`. They are evaluated here, for the
//!   query's step and range as Prometheus's `PreprocessExpr` does, and the text handed to
//!   `promql-parser` gets the resulting literal durations.
//! - Extended range selectors (`--enable-feature=promql-extended-range-selectors`): the
//!   `anchored` and `smoothed` keywords after a selector. They are blanked out of the text and
//!   recorded against the selector they follow, by its ordinal among the query's selectors in
//!   text order, which is the AST's pre-order ([`selectors`]); the engine looks them up there.
//!
//! The scan follows Prometheus's lexer where it matters (string literals, raw strings,
//! comments and label matchers are skipped; keywords are case-insensitive and are metric
//! names where an expression starts) and leaves everything else to `promql-parser`: a query
//! without these syntaxes reaches it unchanged.

mod duration;
mod lex;

use promql_parser::parser::{Expr, VectorSelector};

use duration::{Node, Parser};
use lex::{Kind, Lexer, Token};

/// The extended range selector modifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeModifier {
    /// `anchored`: the window starts at the last sample at or before its start.
    Anchored,
    /// `smoothed`: values at the window's edges (or the instant) are interpolated.
    Smoothed,
}

impl RangeModifier {
    fn word(self) -> &'static str {
        match self {
            RangeModifier::Anchored => "anchored",
            RangeModifier::Smoothed => "smoothed",
        }
    }
}

/// What the rewrite of a query depends on besides its text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Context {
    pub(crate) step_ms: i64,
    pub(crate) range_ms: i64,
    pub(crate) experimental: bool,
}

/// The front end's result.
#[derive(Debug, Default)]
pub(crate) struct Rewrite {
    /// The text for `promql-parser`; `None` when it is the query unchanged.
    pub(crate) text: Option<String>,
    /// The modifier of each selector that has one, by ordinal, with what the scan saw of it.
    pub(crate) modifiers: Vec<Noted>,
    /// Selectors the scan counted.
    pub(crate) selectors: usize,
    /// Whether a duration's value came from `step()` or `range()`.
    pub(crate) uses_query_context: bool,
    /// Whether the query uses experimental syntax.
    pub(crate) experimental: bool,
    /// An error upstream reports after parsing (evaluating a duration expression): reported
    /// only if the rewritten text parses.
    pub(crate) deferred_error: Option<String>,
}

/// A modifier as the scan recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Noted {
    pub(crate) ordinal: usize,
    pub(crate) modifier: RangeModifier,
    /// The metric name the selector was written with, if any.
    pub(crate) name: Option<String>,
    /// Whether it is a range selector (`foo[5m] anchored`).
    pub(crate) matrix: bool,
}

/// A parse error at a byte offset of the query.
#[derive(Debug)]
pub(super) struct SyntaxError {
    pos: usize,
    msg: String,
}

pub(super) fn parse_error(pos: usize, msg: impl Into<String>) -> SyntaxError {
    SyntaxError {
        pos,
        msg: msg.into(),
    }
}

impl SyntaxError {
    /// As Prometheus prints a parse error: `line:column: parse error: message`.
    fn render(&self, src: &str) -> String {
        let before = src.get(..self.pos).unwrap_or(src);
        let line = before.matches('\n').count() + 1;
        let col = self.pos - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!("{line}:{col}: parse error: {}", self.msg)
    }
}

/// The error for a subquery step under a millisecond.
const SUB_MS_STEP: &str = "subquery step must be at least 1ms";

/// Aggregation operators: followed by `(`, `by` or `without` they are not metric names.
const AGGREGATORS: &[&str] = &[
    "sum",
    "avg",
    "count",
    "min",
    "max",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "count_values",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// The expression the scan saw last, which modifiers attach to.
#[derive(Clone, Debug)]
enum Last {
    None,
    Selector {
        ordinal: usize,
        start: usize,
        name: Option<String>,
        matrix: bool,
    },
    Subquery {
        start: usize,
    },
    Other {
        start: usize,
    },
}

impl Last {
    fn start(&self, or: usize) -> usize {
        match self {
            Last::None => or,
            Last::Selector { start, .. } | Last::Subquery { start } | Last::Other { start } => {
                *start
            }
        }
    }
}

struct Scanner<'a> {
    src: &'a str,
    lex: Lexer<'a>,
    ctx: Context,
    /// Replacements of byte ranges of the text, in order.
    edits: Vec<(usize, usize, String)>,
    out: Rewrite,
    last: Last,
    /// Whether the previous token ends an expression (so `offset` is the modifier, not a
    /// metric name).
    after_expr: bool,
    /// Start of each open parenthesis' expression (a call's function name).
    groups: Vec<usize>,
    /// The start of a call or aggregation whose `(` comes next.
    pending_group: Option<usize>,
}

/// Rewrites `src` for `promql-parser` (see the module documentation).
pub(crate) fn rewrite(src: &str, ctx: Context) -> Result<Rewrite, String> {
    let mut s = Scanner {
        src,
        lex: Lexer::new(src),
        ctx,
        edits: Vec::new(),
        out: Rewrite::default(),
        last: Last::None,
        after_expr: false,
        groups: Vec::new(),
        pending_group: None,
    };
    s.run().map_err(|e| e.render(src))?;
    let mut out = s.out;
    if !s.edits.is_empty() {
        let mut text = String::with_capacity(src.len());
        let mut at = 0;
        for (start, end, with) in &s.edits {
            text.push_str(&src[at..*start]);
            text.push_str(with);
            at = *end;
        }
        text.push_str(&src[at..]);
        out.text = Some(text);
    }
    Ok(out)
}

impl<'a> Scanner<'a> {
    fn run(&mut self) -> Result<(), SyntaxError> {
        loop {
            let t = self.lex.next(false);
            match t.kind {
                Kind::Eof => return Ok(()),
                Kind::Ident => self.ident(t)?,
                Kind::Number | Kind::Str => self.other(t.start),
                Kind::LParen => {
                    let start = self.pending_group.take().unwrap_or(t.start);
                    self.groups.push(start);
                    self.operator();
                }
                Kind::RParen => {
                    let start = self.groups.pop().unwrap_or(t.start);
                    self.other(start);
                }
                Kind::LBrace => {
                    self.selector(t.start, None);
                    self.skip_braces();
                }
                Kind::LBracket => self.bracket(t)?,
                Kind::At => self.at(),
                _ => self.operator(),
            }
        }
    }

    fn operator(&mut self) {
        self.after_expr = false;
        self.last = Last::None;
        self.pending_group = None;
    }

    fn other(&mut self, start: usize) {
        self.after_expr = true;
        self.last = Last::Other { start };
    }

    fn selector(&mut self, start: usize, name: Option<String>) {
        self.last = Last::Selector {
            ordinal: self.out.selectors,
            start,
            name,
            matrix: false,
        };
        self.out.selectors += 1;
        self.after_expr = true;
    }

    /// Skips a label matcher list up to its `}`.
    fn skip_braces(&mut self) {
        loop {
            let t = self.lex.next(false);
            if matches!(t.kind, Kind::RBrace | Kind::Eof) {
                return;
            }
        }
    }

    /// Skips a parenthesised label list (`by (a, b)`) or fill value.
    fn skip_group(&mut self) {
        if self.lex.peek(false).kind != Kind::LParen {
            return;
        }
        let mut depth = 0usize;
        loop {
            let t = self.lex.next(false);
            match t.kind {
                Kind::LParen => depth += 1,
                Kind::RParen => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return;
                    }
                }
                Kind::Eof => return,
                _ => {}
            }
        }
    }

    fn ident(&mut self, t: Token) -> Result<(), SyntaxError> {
        let word = t.text(self.src).to_ascii_lowercase();
        if self.after_expr {
            match word.as_str() {
                "offset" => return self.offset(),
                "anchored" => return self.modifier(t, RangeModifier::Anchored),
                "smoothed" => return self.modifier(t, RangeModifier::Smoothed),
                "and" | "or" | "unless" | "atan2" => {
                    self.operator();
                    return Ok(());
                }
                // `sum(x) by (a)`: the aggregation goes on.
                "by" | "without" => {
                    self.skip_group();
                    self.after_expr = true;
                    return Ok(());
                }
                _ => {}
            }
        }
        match word.as_str() {
            "bool" => {
                self.operator();
                return Ok(());
            }
            "on" | "ignoring" | "group_left" | "group_right" | "atan2" => {
                self.skip_group();
                self.operator();
                return Ok(());
            }
            "fill" | "fill_left" | "fill_right" if self.lex.peek(false).kind == Kind::LParen => {
                self.skip_group();
                self.operator();
                return Ok(());
            }
            "inf" | "nan" => {
                self.other(t.start);
                return Ok(());
            }
            _ => {}
        }
        let next = self.lex.peek(false);
        if AGGREGATORS.contains(&word.as_str())
            && (next.is_word(self.src, "by") || next.is_word(self.src, "without"))
        {
            self.lex.next(false);
            self.skip_group();
            self.operator();
            self.pending_group = Some(t.start);
            return Ok(());
        }
        if next.kind == Kind::LParen {
            self.operator();
            self.pending_group = Some(t.start);
            return Ok(());
        }
        self.selector(t.start, Some(t.text(self.src).to_string()));
        if next.kind == Kind::LBrace {
            self.lex.next(false);
            self.skip_braces();
        }
        Ok(())
    }

    /// `@ <number>`, `@ start()`, `@ end()`: part of the expression before it.
    fn at(&mut self) {
        let mut t = self.lex.peek(false);
        if matches!(t.kind, Kind::Add | Kind::Sub) {
            self.lex.next(false);
            t = self.lex.peek(false);
        }
        if matches!(t.kind, Kind::Number)
            || t.is_word(self.src, "inf")
            || t.is_word(self.src, "nan")
        {
            self.lex.next(false);
        } else if t.is_word(self.src, "start") || t.is_word(self.src, "end") {
            let mut ahead = self.lex.clone();
            ahead.next(false);
            if ahead.next(false).kind == Kind::LParen && ahead.next(false).kind == Kind::RParen {
                self.lex = ahead;
            }
        }
        self.after_expr = true;
    }

    fn parser(&mut self, in_brackets: bool) -> Parser<'a, '_> {
        Parser {
            src: self.src,
            lex: &mut self.lex,
            in_brackets,
            experimental_at: None,
            last_end: 0,
        }
    }

    /// Gates a duration expression on the feature flag.
    fn experimental_duration(&mut self, at: Option<usize>) -> Result<(), SyntaxError> {
        let Some(at) = at else {
            return Ok(());
        };
        self.out.experimental = true;
        if !self.ctx.experimental {
            return Err(parse_error(
                at,
                "experimental duration expression is not enabled",
            ));
        }
        Ok(())
    }

    /// The literal replacing a duration expression's text: its value, or the error upstream
    /// reports once the query parsed (with a valid stand-in until then).
    /// A subquery step (`is_step`) must come to a millisecond at least: the engine's steps
    /// are whole milliseconds (upstream divides by the truncated step, and fails).
    fn evaluated(&mut self, node: &Node, allow_negative: bool, is_step: bool) -> String {
        self.out.uses_query_context |= node.uses_query_context();
        match node.millis(self.ctx.step_ms, self.ctx.range_ms, allow_negative) {
            Ok(ms) if is_step && ms < 1 => {
                let (s, e) = node.span();
                self.out
                    .deferred_error
                    .get_or_insert(format!("{s}:{e}: {SUB_MS_STEP}"));
                "1ms".into()
            }
            Ok(ms) => format_ms(ms),
            Err(e) => {
                self.out.deferred_error.get_or_insert(e);
                "1ms".into()
            }
        }
    }

    /// What follows `offset`.
    fn offset(&mut self) -> Result<(), SyntaxError> {
        let begin = self.lex.peek(false).start;
        let mut p = self.parser(false);
        let node = p.offset()?;
        let (at, end) = (p.experimental_at, p.last_end);
        self.after_expr = true;
        if node.is_literal() {
            return Ok(());
        }
        self.experimental_duration(at)?;
        let with = self.evaluated(&node, true, false);
        self.edits.push((begin, end, with));
        Ok(())
    }

    /// `[range]`, `[range:step]` or `[range:]`.
    fn bracket(&mut self, open: Token) -> Result<(), SyntaxError> {
        if self.lex.peek(true).kind == Kind::RBracket {
            return Err(parse_error(
                self.lex.peek(true).start,
                "unexpected \"]\" in subquery or range selector, expected number, duration, step(), or range()",
            ));
        }
        let mut parts = Vec::with_capacity(2);
        let mut p = self.parser(true);
        let begin = p.lex.peek(true).start;
        let range = p.expr()?;
        parts.push((begin, p.last_end, range, p.experimental_at));
        let t = p.next_token();
        let subquery = match t.kind {
            Kind::RBracket => false,
            Kind::Colon => {
                if p.lex.peek(true).kind != Kind::RBracket {
                    p.experimental_at = None;
                    let begin = p.lex.peek(true).start;
                    let step = p.expr()?;
                    parts.push((begin, p.last_end, step, p.experimental_at));
                }
                let close = p.next_token();
                if close.kind != Kind::RBracket {
                    return Err(parse_error(
                        close.start,
                        "unexpected token in subquery selector, expected \"]\"",
                    ));
                }
                true
            }
            _ => {
                return Err(parse_error(
                    t.start,
                    "unexpected token in subquery or range, expected \":\" or \"]\"",
                ));
            }
        };
        for (i, (begin, end, node, at)) in parts.into_iter().enumerate() {
            let is_step = i == 1;
            match node {
                Node::Lit { secs, start, .. } => {
                    if secs <= 0.0 {
                        return Err(parse_error(start, "duration must be greater than 0"));
                    }
                    if is_step && secs < 0.001 {
                        return Err(parse_error(start, SUB_MS_STEP));
                    }
                    // A signed literal is standard PromQL, but `promql-parser` lacks it.
                    if self.src[begin..end].starts_with(['+', '-']) {
                        self.edits
                            .push((begin, end, format_ms((secs * 1000.0) as i64)));
                    }
                }
                node => {
                    self.experimental_duration(at)?;
                    let with = self.evaluated(&node, false, is_step);
                    self.edits.push((begin, end, with));
                }
            }
        }
        let start = self.last.start(open.start);
        self.last = match (&self.last, subquery) {
            (_, true) => Last::Subquery { start },
            (
                Last::Selector {
                    ordinal,
                    start,
                    name,
                    ..
                },
                false,
            ) => Last::Selector {
                ordinal: *ordinal,
                start: *start,
                name: name.clone(),
                matrix: true,
            },
            (_, false) => Last::Other { start },
        };
        self.after_expr = true;
        Ok(())
    }

    /// `anchored` or `smoothed` after an expression (upstream's `setAnchored`/`setSmoothed`).
    fn modifier(&mut self, t: Token, m: RangeModifier) -> Result<(), SyntaxError> {
        let word = m.word();
        self.out.experimental = true;
        let start = self.last.start(t.start);
        if !self.ctx.experimental {
            return Err(parse_error(
                start,
                format!("{word} modifier is experimental and not enabled"),
            ));
        }
        match &self.last {
            Last::Selector {
                ordinal,
                name,
                matrix,
                ..
            } => {
                let ordinal = *ordinal;
                match self.out.modifiers.iter().find(|n| n.ordinal == ordinal) {
                    Some(n) if n.modifier != m => {
                        return Err(parse_error(
                            start,
                            "anchored and smoothed modifiers cannot be used together",
                        ));
                    }
                    Some(_) => {}
                    None => self.out.modifiers.push(Noted {
                        ordinal,
                        modifier: m,
                        name: name.clone(),
                        matrix: *matrix,
                    }),
                }
            }
            Last::Subquery { .. } => {
                return Err(parse_error(
                    start,
                    format!("{word} modifier is not supported for subqueries"),
                ));
            }
            Last::Other { .. } | Last::None => {
                return Err(parse_error(
                    start,
                    format!("{word} modifier not implemented"),
                ));
            }
        }
        self.edits
            .push((t.start, t.end, " ".repeat(t.end - t.start)));
        self.after_expr = true;
        Ok(())
    }
}

/// A duration as `promql-parser` reads it: `0`, or units from days to milliseconds
/// (`1d2h3m4s5ms`, each under `u32::MAX` as its parser requires), negative with a `-`.
pub(crate) fn format_ms(ms: i64) -> String {
    if ms == 0 {
        return "0".into();
    }
    let mut out = String::new();
    if ms < 0 {
        out.push('-');
    }
    let mut rest = ms.unsigned_abs();
    for (unit, size) in [
        ("d", 86_400_000u64),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        let n = rest / size;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push_str(unit);
            rest -= n * size;
        }
    }
    out
}

/// Each selector of `expr` in pre-order (children in the order they are written), with
/// whether it is a range selector: the order the scan counts them in.
pub(crate) fn selectors(expr: &Expr) -> Vec<(&VectorSelector, bool)> {
    fn walk<'e>(e: &'e Expr, out: &mut Vec<(&'e VectorSelector, bool)>) {
        match e {
            Expr::VectorSelector(vs) => out.push((vs, false)),
            Expr::MatrixSelector(ms) => out.push((&ms.vs, true)),
            Expr::Aggregate(a) => {
                if let Some(p) = &a.param {
                    walk(p, out);
                }
                walk(&a.expr, out);
            }
            Expr::Unary(u) => walk(&u.expr, out),
            Expr::Binary(b) => {
                walk(&b.lhs, out);
                walk(&b.rhs, out);
            }
            Expr::Paren(p) => walk(&p.expr, out),
            Expr::Subquery(s) => walk(&s.expr, out),
            Expr::Call(c) => c.args.args.iter().for_each(|a| walk(a, out)),
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }
    let mut out = Vec::new();
    walk(expr, &mut out);
    out
}

/// The modifier of each selector of the parsed `expr` by ordinal, after checking that the
/// selectors the scan counted are the AST's.
pub(crate) fn bind(expr: &Expr, rw: &Rewrite) -> Result<Vec<Option<RangeModifier>>, String> {
    if rw.modifiers.is_empty() {
        return Ok(Vec::new());
    }
    let sel = selectors(expr);
    let mismatch = || {
        "internal error: the selectors of the query do not match those its anchored/smoothed modifiers were recorded for"
            .to_string()
    };
    if sel.len() != rw.selectors {
        return Err(mismatch());
    }
    let mut out = vec![None; sel.len()];
    for n in &rw.modifiers {
        let Some((vs, matrix)) = sel.get(n.ordinal) else {
            return Err(mismatch());
        };
        if *matrix != n.matrix
            || n.name
                .as_ref()
                .is_some_and(|name| vs.name.as_ref() != Some(name))
        {
            return Err(mismatch());
        }
        out[n.ordinal] = Some(n.modifier);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
