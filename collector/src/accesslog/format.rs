//! nginx `log_format` strings compiled into matchers.
//!
//! A format is literal text and `$variable` / `${variable}` tokens. Matching walks the line: a
//! literal must appear where it is expected, and a variable takes everything up to the first
//! occurrence of the literal that follows it (or the rest of the line when it is last). That is how
//! nginx writes lines: it escapes `"` inside values (`\x22`, or `\"` with `escape=json`), so a
//! quoted value cannot contain its closing quote. Two variables with no literal between them are
//! refused: no split of their text would be reliable. Hand-written rather than compiled to a regex:
//! a literal search per field is several times faster than a backtracking-free regex with many
//! groups, and the collector parses every line of the router.

use std::borrow::Cow;

/// nginx's predefined `combined` format.
pub const COMBINED: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent""#;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(String),
}

/// A compiled `log_format`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFormat {
    parts: Vec<Part>,
    /// The variables, in order.
    vars: Vec<String>,
}

impl LogFormat {
    /// Compiles a format string; `combined` names nginx's predefined one.
    pub fn compile(format: &str) -> Result<Self, String> {
        let format = if format == "combined" {
            COMBINED
        } else {
            format
        };
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = format.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c != '$' {
                lit.push(c);
                continue;
            }
            let name: String = if chars.peek().map(|(_, c)| *c) == Some('{') {
                chars.next();
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some((_, '}')) => break,
                        Some((_, c)) if c.is_ascii_alphanumeric() || c == '_' => name.push(c),
                        _ => return Err(format!("unterminated or invalid ${{…}} at byte {i}")),
                    }
                }
                name
            } else {
                let mut name = String::new();
                while let Some((_, c)) = chars.peek().copied() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        name.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                name
            };
            if name.is_empty() {
                // A lone `$` is literal text, as in nginx.
                lit.push('$');
                continue;
            }
            if !lit.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut lit)));
            }
            if let Some(Part::Var(prev)) = parts.last() {
                return Err(format!(
                    "${prev} and ${name} follow each other with no text between them"
                ));
            }
            parts.push(Part::Var(name));
        }
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        let vars: Vec<String> = parts
            .iter()
            .filter_map(|p| match p {
                Part::Var(v) => Some(v.clone()),
                Part::Literal(_) => None,
            })
            .collect();
        if vars.is_empty() {
            return Err("has no $variable".to_owned());
        }
        Ok(LogFormat { parts, vars })
    }

    /// The variables of the format, in order.
    pub fn vars(&self) -> &[String] {
        &self.vars
    }

    /// Splits `line` into `(variable, value)` pairs, appended to `out`; `false` when the line does
    /// not have the format's shape (then `out` is left as it was).
    pub fn parse<'a>(&'a self, line: &'a str, out: &mut Vec<(Cow<'a, str>, Cow<'a, str>)>) -> bool {
        let start_len = out.len();
        let mut pos = 0;
        let mut i = 0;
        while i < self.parts.len() {
            match &self.parts[i] {
                Part::Literal(l) => {
                    if !line[pos..].starts_with(l.as_str()) {
                        out.truncate(start_len);
                        return false;
                    }
                    pos += l.len();
                    i += 1;
                }
                Part::Var(name) => match self.parts.get(i + 1) {
                    Some(Part::Literal(next)) => match line[pos..].find(next.as_str()) {
                        Some(k) => {
                            out.push((Cow::Borrowed(name), Cow::Borrowed(&line[pos..pos + k])));
                            pos += k + next.len();
                            i += 2;
                        }
                        None => {
                            out.truncate(start_len);
                            return false;
                        }
                    },
                    _ => {
                        out.push((Cow::Borrowed(name), Cow::Borrowed(&line[pos..])));
                        pos = line.len();
                        i += 1;
                    }
                },
            }
        }
        if pos != line.len() {
            out.truncate(start_len);
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<'a>(f: &'a LogFormat, line: &'a str) -> Option<Vec<(&'a str, &'a str)>> {
        let mut out = Vec::new();
        f.parse(line, &mut out).then(|| {
            out.iter()
                .map(|(n, v)| match (n, v) {
                    (Cow::Borrowed(n), Cow::Borrowed(v)) => (*n, *v),
                    _ => unreachable!(),
                })
                .collect()
        })
    }

    #[test]
    fn combined() {
        let f = LogFormat::compile("combined").unwrap();
        let line = r#"10.1.2.3 - alice [10/Oct/2026:13:55:36 +0000] "GET /a/b?c=d HTTP/1.1" 200 2326 "-" "curl/8.5.0 \x22quoted\x22""#;
        let got = parse(&f, line).unwrap();
        assert_eq!(
            got,
            vec![
                ("remote_addr", "10.1.2.3"),
                ("remote_user", "alice"),
                ("time_local", "10/Oct/2026:13:55:36 +0000"),
                ("request", "GET /a/b?c=d HTTP/1.1"),
                ("status", "200"),
                ("body_bytes_sent", "2326"),
                ("http_referer", "-"),
                ("http_user_agent", r"curl/8.5.0 \x22quoted\x22"),
            ]
        );
        assert!(parse(&f, "garbage").is_none());
        assert!(parse(&f, &format!("{line} trailing")).is_none());
    }

    #[test]
    fn custom_with_braces_and_a_trailing_variable() {
        let f = LogFormat::compile(
            r#"$host ${remote_addr}:[$time_iso8601] "$request" $status rt=$request_time uct="$upstream_connect_time" ua="$upstream_addr" urt=$upstream_response_time rid=$request_id tp=$http_traceparent"#,
        )
        .unwrap();
        let line = r#"shop.example.com 10.0.0.9:[2026-10-10T13:55:36+00:00] "POST /cart HTTP/2.0" 502 rt=0.120 uct="0.001, 0.002" ua="10.0.1.5:8080, 10.0.1.6:8080" urt=0.050, 0.060 rid=7f3a tp=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"#;
        let got = parse(&f, line).unwrap();
        let get = |k: &str| got.iter().find(|(n, _)| *n == k).unwrap().1;
        assert_eq!(get("host"), "shop.example.com");
        assert_eq!(get("remote_addr"), "10.0.0.9");
        assert_eq!(get("upstream_addr"), "10.0.1.5:8080, 10.0.1.6:8080");
        assert_eq!(get("upstream_response_time"), "0.050, 0.060");
        assert_eq!(
            get("http_traceparent"),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(f.vars().len(), 11);
    }

    #[test]
    fn refuses_ambiguous_or_empty_formats() {
        assert!(
            LogFormat::compile("$a$b")
                .unwrap_err()
                .contains("$a and $b")
        );
        assert!(LogFormat::compile("no variables").is_err());
        assert!(LogFormat::compile("${a").is_err());
        // A lone dollar is text.
        let f = LogFormat::compile("$ $a").unwrap();
        assert_eq!(parse(&f, "$ x").unwrap(), vec![("a", "x")]);
    }

    proptest::proptest! {
        /// Any values free of the separators round-trip through a format.
        #[test]
        fn values_round_trip(a in "[^ \"]{0,20}", b in "[^\"]{0,40}", c in "[0-9]{1,3}") {
            let f = LogFormat::compile(r#"$a "$b" $c"#).unwrap();
            let line = format!(r#"{a} "{b}" {c}"#);
            let got = parse(&f, &line).unwrap();
            proptest::prop_assert_eq!(got, vec![("a", a.as_str()), ("b", b.as_str()), ("c", c.as_str())]);
        }
    }
}
