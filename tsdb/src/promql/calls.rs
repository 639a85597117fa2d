//! What Prometheus's parser checks about function calls that `promql-parser` does not, found
//! with `promql-parser`'s own lexer (so strings, comments and label matchers are tokenised as the
//! parser sees them):
//!
//! - `info()`'s second argument is a label selector: Prometheus lets it hold only matchers that
//!   accept the empty string (`info(m, {data=~".*"})`), which `promql-parser` refuses as an
//!   empty vector selector; it must not name a metric (`info(m, target_info)`).
//! - Experimental functions are a parse error unless enabled: `1:1: parse error: function
//!   "info" is not enabled`, with the call's position.

use lrpar::{Lexeme, Lexer, NonStreamingLexer};
use promql_parser::parser::Expr;
use promql_parser::parser::token::{
    T_COMMA, T_IDENTIFIER, T_LEFT_BRACE, T_LEFT_BRACKET, T_LEFT_PAREN, T_RIGHT_BRACE,
    T_RIGHT_BRACKET, T_RIGHT_PAREN,
};

/// A matcher added to `info()`'s label selectors so that `promql-parser` accepts selectors of
/// empty-matching matchers; removed from the AST right after parsing.
const MARKER: &str = "__sextant_info_selector__";

/// `promql-parser`'s message for a selector whose matchers all accept the empty string.
const EMPTY_SELECTOR: &str = "vector selector must contain at least one non-empty matcher";

/// A function call in the query text: an identifier directly followed by `(`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CallSite {
    pub(crate) name: String,
    /// Byte offset of the function name.
    pub(crate) at: usize,
    /// Byte offset of the second argument's first token, if there is a second argument.
    pub(crate) second_arg: Option<usize>,
    /// When the second argument starts with `{`: the offset just after it, and whether the
    /// braces are empty.
    brace: Option<(usize, bool)>,
}

/// Every function call of `text`, in text order (none when the text does not lex).
pub(crate) fn call_sites(text: &str) -> Vec<CallSite> {
    let Ok(lexer) = promql_parser::parser::lexer(text) else {
        return Vec::new();
    };
    let Ok(toks) = lexer
        .iter()
        .map(|l| l.map(|l| (l.tok_id(), l.span())))
        .collect::<Result<Vec<_>, _>>()
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, (tok, span)) in toks.iter().enumerate() {
        if *tok != T_IDENTIFIER || toks.get(i + 1).map(|t| t.0) != Some(T_LEFT_PAREN) {
            continue;
        }
        let mut site = CallSite {
            name: lexer.span_str(*span).to_string(),
            at: span.start(),
            second_arg: None,
            brace: None,
        };
        // The first comma at the call's own nesting level starts the second argument.
        let mut depth = 0usize;
        for (j, (t, _)) in toks.iter().enumerate().skip(i + 2) {
            match *t {
                T_LEFT_PAREN | T_LEFT_BRACE | T_LEFT_BRACKET => depth += 1,
                T_RIGHT_PAREN | T_RIGHT_BRACE | T_RIGHT_BRACKET if depth == 0 => break,
                T_RIGHT_PAREN | T_RIGHT_BRACE | T_RIGHT_BRACKET => depth -= 1,
                T_COMMA if depth == 0 => {
                    if let Some((t2, s2)) = toks.get(j + 1) {
                        site.second_arg = Some(s2.start());
                        if *t2 == T_LEFT_BRACE {
                            let empty = toks.get(j + 2).map(|t| t.0) == Some(T_RIGHT_BRACE);
                            site.brace = Some((s2.end(), empty));
                        }
                    }
                    break;
                }
                _ => {}
            }
        }
        out.push(site);
    }
    out
}

/// Parses `text` as Prometheus does `info()`'s label selectors: when `promql-parser` refuses a
/// selector of empty-matching matchers and the query has `info()` selectors, each of them gets
/// a non-empty marker matcher for the parse, which is then removed from the AST.
pub(crate) fn parse(text: &str, sites: &[CallSite]) -> Result<Expr, String> {
    let err = match super::parse_expr(text) {
        Ok(e) => return Ok(e),
        Err(e) => e,
    };
    let braces: Vec<(usize, bool)> = sites
        .iter()
        .filter(|s| s.name == "info")
        .filter_map(|s| s.brace)
        .collect();
    if !err.contains(EMPTY_SELECTOR) || braces.is_empty() {
        return Err(err);
    }
    let mut marked = text.to_string();
    // From the end, so that earlier offsets stay valid.
    for (at, empty) in braces.into_iter().rev() {
        let sep = if empty { "" } else { "," };
        marked.insert_str(at, &format!("{MARKER}=\"1\"{sep}"));
    }
    match super::parse_expr(&marked) {
        Ok(mut e) => {
            strip_markers(&mut e);
            Ok(e)
        }
        // Something else is wrong too: report what the query as written gives.
        Err(_) => Err(err),
    }
}

/// Removes the [`MARKER`] matchers from `info()` calls' label selectors.
fn strip_markers(e: &mut Expr) {
    match e {
        Expr::Aggregate(a) => {
            if let Some(p) = &mut a.param {
                strip_markers(p);
            }
            strip_markers(&mut a.expr);
        }
        Expr::Unary(u) => strip_markers(&mut u.expr),
        Expr::Binary(b) => {
            strip_markers(&mut b.lhs);
            strip_markers(&mut b.rhs);
        }
        Expr::Paren(p) => strip_markers(&mut p.expr),
        Expr::Subquery(s) => strip_markers(&mut s.expr),
        Expr::Call(c) => {
            if c.func.name == "info"
                && let Some(arg) = c.args.args.get_mut(1)
                && let Expr::VectorSelector(vs) = arg.as_mut()
            {
                vs.matchers.matchers.retain(|m| m.name != MARKER);
            }
            c.args.args.iter_mut().for_each(|a| strip_markers(a));
        }
        _ => {}
    }
}

/// Visits the calls of `e` in text order (an aggregation's parameter before its operand).
pub(crate) fn calls<'e>(e: &'e Expr, f: &mut dyn FnMut(&'e promql_parser::parser::Call)) {
    match e {
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                calls(p, f);
            }
            calls(&a.expr, f);
        }
        Expr::Unary(u) => calls(&u.expr, f),
        Expr::Binary(b) => {
            calls(&b.lhs, f);
            calls(&b.rhs, f);
        }
        Expr::Paren(p) => calls(&p.expr, f),
        Expr::Subquery(s) => calls(&s.expr, f),
        Expr::Call(c) => {
            f(c);
            c.args.args.iter().for_each(|a| calls(a, f));
        }
        _ => {}
    }
}

/// Prometheus's `line:col` of a byte offset (1-based; the column counts bytes).
pub(crate) fn position(text: &str, at: usize) -> String {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = at - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("{line}:{col}")
}

/// The site of the `n`-th call (0-based) named `name`.
fn site_of<'s>(sites: &'s [CallSite], name: &str, n: usize) -> Option<&'s CallSite> {
    sites.iter().filter(|s| s.name == name).nth(n)
}

/// What Prometheus's parser says about the query's calls that `promql-parser` let through:
/// `info()` with a second argument that is not a label selector.
pub(crate) fn check_calls(text: &str, e: &Expr, sites: &[CallSite]) -> Result<(), String> {
    let mut err = None;
    let mut seen = 0usize;
    calls(e, &mut |c| {
        if c.func.name != "info" || err.is_some() {
            return;
        }
        let n = seen;
        seen += 1;
        let Some(arg) = c.args.args.get(1) else {
            return;
        };
        let msg = match arg.as_ref() {
            Expr::VectorSelector(vs) if vs.name.is_some() => {
                "expected label selectors only, got vector selector instead"
            }
            Expr::VectorSelector(vs) if vs.matchers.or_matchers.is_empty() => return,
            _ => "expected label selectors only",
        };
        let pos = site_of(sites, "info", n)
            .and_then(|s| s.second_arg)
            .map_or_else(|| "1:1".to_string(), |at| position(text, at));
        err = Some(format!("{pos}: parse error: {msg}"));
    });
    err.map_or(Ok(()), Err)
}

/// The parse error Prometheus gives when experimental functions are off and the query calls
/// one: the first such call in the text.
pub(crate) fn experimental_error(text: &str, e: &Expr, sites: &[CallSite]) -> Option<String> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    let mut found = None;
    calls(e, &mut |c| {
        let name = c.func.name;
        let n = match counts.iter_mut().find(|(k, _)| *k == name) {
            Some((_, n)) => {
                *n += 1;
                *n - 1
            }
            None => {
                counts.push((name, 1));
                0
            }
        };
        if !c.func.experimental {
            return;
        }
        let at = site_of(sites, name, n).map_or(0, |s| s.at);
        if found.as_ref().is_none_or(|(a, _)| at < *a) {
            found = Some((at, name));
        }
    });
    found.map(|(at, name)| {
        format!(
            "{}: parse error: function {name:?} is not enabled",
            position(text, at)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Expr, String> {
        parse(text, &call_sites(text))
    }

    #[test]
    fn finds_calls_and_their_second_argument() {
        let text = r#"sum by (info) (info(rate(x{a="b,c"}[5m]), {d=~".*"})) + info(y)"#;
        let s = call_sites(text);
        let names: Vec<&str> = s.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["info", "rate", "info"]);
        assert_eq!(s[0].at, text.find("info(").unwrap());
        assert_eq!(s[0].second_arg, Some(text.find("{d=").unwrap()));
        assert_eq!(s[1].second_arg, None, "rate has one argument");
        assert_eq!(s[2].second_arg, None);
    }

    #[test]
    fn accepts_empty_matching_info_selectors() {
        let e = parse_text(r#"info(m, {data=~".*"}) + info(n, {}) * info(o, {a="b"})"#).unwrap();
        let mut selectors = Vec::new();
        calls(&e, &mut |c| {
            if let Some(Expr::VectorSelector(vs)) = c.args.args.get(1).map(|a| a.as_ref()) {
                let ms: Vec<String> = vs.matchers.matchers.iter().map(|m| m.to_string()).collect();
                selectors.push(ms.join(","));
            }
        });
        assert_eq!(selectors, [r#"data=~".*""#, "", r#"a="b""#]);
        // Elsewhere the selector is still refused, as in Prometheus.
        let err = parse_text(r#"info(m, {data=~".*"}) + {x=~".*"}"#).unwrap_err();
        assert!(err.contains(EMPTY_SELECTOR), "{err}");
    }

    #[test]
    fn info_second_argument_must_be_a_label_selector() {
        let text = "info(m, target_info)";
        let e = parse_text(text).unwrap();
        assert_eq!(
            check_calls(text, &e, &call_sites(text)),
            Err(
                "1:9: parse error: expected label selectors only, got vector selector instead"
                    .into()
            )
        );
        let text = "info(m, rate(x[5m]) > 0)";
        let e = parse_text(text).unwrap();
        assert_eq!(
            check_calls(text, &e, &call_sites(text)),
            Err("1:9: parse error: expected label selectors only".into())
        );
        let text = r#"info(m, {__name__=~".+_info"})"#;
        let e = parse_text(text).unwrap();
        assert_eq!(check_calls(text, &e, &call_sites(text)), Ok(()));
    }

    #[test]
    fn experimental_calls_are_reported_at_their_position() {
        let text = "rate(x[5m])\n  + info(y) + sort_by_label(z, \"a\")";
        let e = parse_text(text).unwrap();
        assert_eq!(
            experimental_error(text, &e, &call_sites(text)).as_deref(),
            Some("2:5: parse error: function \"info\" is not enabled")
        );
        let text = "rate(x[5m])";
        let e = parse_text(text).unwrap();
        assert_eq!(experimental_error(text, &e, &call_sites(text)), None);
    }
}
