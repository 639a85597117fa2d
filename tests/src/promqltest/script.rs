//! The parser of Prometheus's PromQL test-script language (`promql/promqltest/test.go` upstream):
//! `load`, `clear` and `eval` commands with their `expect` lines and expanding series notation.

use anyhow::{Context, Result, anyhow, bail};
use promql_parser::parser::Expr;
use regex::Regex;
use tsdb::labels::Labels;
use tsdb::storage::stale_nan;

/// Upstream's command patterns (`promqltest/test.go`).
struct Patterns {
    load: Regex,
    eval_instant: Regex,
    eval_range: Regex,
    expect: Regex,
    expect_range: Regex,
}

impl Patterns {
    fn new() -> Result<Patterns> {
        Ok(Patterns {
            load: Regex::new(r"^load(?:_(with_nhcb))?\s+(.+?)$")?,
            eval_instant: Regex::new(
                r"^eval(?:_(fail|warn|ordered|info))?\s+instant\s+(?:at\s+(.+?))?\s+(.+)$",
            )?,
            eval_range: Regex::new(
                r"^eval(?:_(fail|warn|info))?\s+range\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+?)\s+(.+)$",
            )?,
            expect: Regex::new(
                r"^expect\s+(ordered|fail|warn|no_warn|info|no_info)(?:\s+(regex|msg):(.+))?$",
            )?,
            expect_range: Regex::new(
                r"^expect range vector\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+)$",
            )?,
        })
    }
}

/// One value of a series description.
#[derive(Clone, Debug, PartialEq)]
pub enum SeqValue {
    /// `_`: no sample at this step.
    Omitted,
    Float(f64),
    /// A native histogram (`{{...}}`): out of scope, kept only to skip the eval.
    Histogram,
}

/// How an `expect` line matches a message.
#[derive(Clone, Debug)]
pub enum ExpectMatch {
    Any,
    Msg(String),
    Regex(Regex),
}

impl ExpectMatch {
    pub fn matches(&self, s: &str) -> bool {
        match self {
            ExpectMatch::Any => true,
            ExpectMatch::Msg(m) => m == s,
            ExpectMatch::Regex(r) => r.is_match(s),
        }
    }
}

/// A series of a `load` command or of an eval's expected result.
#[derive(Clone, Debug)]
pub struct SeriesDesc {
    pub labels: Labels,
    pub values: Vec<SeqValue>,
}

#[derive(Clone, Debug)]
pub struct LoadCmd {
    pub interval_ms: i64,
    pub with_nhcb: bool,
    pub series: Vec<SeriesDesc>,
    /// Series given start timestamps (`@st` lines, an experimental feature).
    pub st_series: Vec<Labels>,
}

#[derive(Clone, Debug, Default)]
pub struct EvalCmd {
    pub line: usize,
    pub expr: String,
    pub is_range: bool,
    pub start: i64,
    pub end: i64,
    pub step: i64,
    /// The instant evaluation time.
    pub eval_t: i64,
    pub ordered: bool,
    pub fail: Option<ExpectMatch>,
    pub warn: Vec<ExpectMatch>,
    pub info: Vec<ExpectMatch>,
    pub no_warn: bool,
    pub no_info: bool,
    /// `eval_warn`/`eval_info`: at least one annotation of the kind.
    pub any_warn: bool,
    pub any_info: bool,
    pub expect_scalar: Option<f64>,
    pub expected: Vec<(usize, SeriesDesc)>,
    pub expected_string: Option<String>,
    pub exclude_from_range: bool,
}

#[derive(Clone, Debug)]
pub enum Command {
    Load(LoadCmd),
    Clear,
    Eval(Box<EvalCmd>),
}

/// Parses a whole script. Errors name the 1-based line.
pub fn parse_script(input: &str) -> Result<Vec<(usize, Command)>> {
    let pat = Patterns::new()?;
    let lines: Vec<String> = input
        .split('\n')
        .map(|l| {
            let l = l.trim();
            if l.starts_with('#') {
                String::new()
            } else {
                l.to_string()
            }
        })
        .collect();
    let mut cmds = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = &lines[i];
        if l.is_empty() {
            i += 1;
            continue;
        }
        let word = l
            .split([' ', '\t'])
            .next()
            .unwrap_or_default()
            .to_lowercase();
        let start = i;
        if word == "clear" {
            cmds.push((i + 1, Command::Clear));
            i += 1;
        } else if word.starts_with("load") {
            let (next, cmd) =
                parse_load(&pat, &lines, i).with_context(|| format!("line {}", start + 1))?;
            cmds.push((start + 1, Command::Load(cmd)));
            i = next;
        } else if word.starts_with("eval") {
            let (next, cmd) =
                parse_eval(&pat, &lines, i).with_context(|| format!("line {}", start + 1))?;
            cmds.push((start + 1, Command::Eval(Box::new(cmd))));
            i = next;
        } else {
            bail!("line {}: invalid command {l:?}", i + 1);
        }
    }
    Ok(cmds)
}

fn parse_load(pat: &Patterns, lines: &[String], i: usize) -> Result<(usize, LoadCmd)> {
    let caps = pat
        .load
        .captures(&lines[i])
        .ok_or_else(|| anyhow!("invalid load command. (load[_with_nhcb] <step:duration>)"))?;
    let interval_ms = parse_duration_ms(&caps[2])?;
    let mut cmd = LoadCmd {
        interval_ms,
        with_nhcb: caps.get(1).is_some(),
        series: Vec::new(),
        st_series: Vec::new(),
    };
    let mut j = i + 1;
    while j < lines.len() && !lines[j].is_empty() {
        let (metric, rest) = split_metric(&lines[j]);
        if rest.starts_with("@st") || metric.ends_with("@st") {
            let metric = metric.trim_end_matches("@st");
            // Start-timestamp lines (an experimental feature) carry no samples.
            cmd.st_series
                .push(parse_labels(metric).with_context(|| format!("line {}", j + 1))?);
            j += 1;
            continue;
        }
        cmd.series
            .push(parse_series(&lines[j]).with_context(|| format!("line {}", j + 1))?);
        j += 1;
    }
    Ok((j, cmd))
}

fn parse_eval(pat: &Patterns, lines: &[String], i: usize) -> Result<(usize, EvalCmd)> {
    let line = &lines[i];
    let mut cmd = EvalCmd {
        line: i + 1,
        ..EvalCmd::default()
    };
    let modifier;
    if let Some(c) = pat.eval_instant.captures(line) {
        modifier = c.get(1).map(|m| m.as_str().to_string());
        let at = c.get(2).map(|m| m.as_str()).unwrap_or("0s");
        cmd.eval_t = parse_duration_ms(at)?;
        cmd.start = cmd.eval_t;
        cmd.expr = c[3].to_string();
    } else if let Some(c) = pat.eval_range.captures(line) {
        modifier = c.get(1).map(|m| m.as_str().to_string());
        cmd.is_range = true;
        cmd.start = parse_duration_ms(&c[2])?;
        cmd.end = parse_duration_ms(&c[3])?;
        cmd.step = parse_duration_ms(&c[4])?;
        if cmd.end < cmd.start {
            bail!("invalid test definition, end timestamp is before start timestamp");
        }
        cmd.expr = c[5].to_string();
    } else {
        bail!("invalid evaluation command");
    }
    match modifier.as_deref() {
        Some("ordered") => cmd.ordered = true,
        Some("fail") => cmd.fail = Some(ExpectMatch::Any),
        Some("warn") => cmd.any_warn = true,
        Some("info") => cmd.any_info = true,
        _ => {}
    }
    let mut pos = 1;
    let mut j = i + 1;
    let mut expect_range = false;
    while j < lines.len() && !lines[j].is_empty() {
        let def = &lines[j];
        j += 1;
        if cmd.fail.is_some() && def.starts_with("expected_fail_message") {
            let m = def.trim_start_matches("expected_fail_message").trim();
            cmd.fail = Some(ExpectMatch::Msg(m.to_string()));
            break;
        }
        if cmd.fail.is_some() && def.starts_with("expected_fail_regexp") {
            let m = def.trim_start_matches("expected_fail_regexp").trim();
            cmd.fail = Some(ExpectMatch::Regex(Regex::new(m)?));
            break;
        }
        if def.starts_with("expect range vector") {
            let c = pat
                .expect_range
                .captures(def)
                .ok_or_else(|| anyhow!("invalid range vector definition {def:?}"))?;
            cmd.start = parse_duration_ms(&c[1])?;
            cmd.end = parse_duration_ms(&c[2])?;
            cmd.step = parse_duration_ms(&c[3])?;
            cmd.eval_t = cmd.end;
            cmd.exclude_from_range = true;
            expect_range = true;
            continue;
        }
        if let Some(rest) = def.strip_prefix("expect string") {
            cmd.expected_string = Some(unquote(rest.trim())?);
            cmd.exclude_from_range = true;
            continue;
        }
        if def.split(' ').next() == Some("expect") {
            let c = pat
                .expect
                .captures(def.trim())
                .ok_or_else(|| anyhow!("invalid expect statement {def:?}"))?;
            let m = match c.get(2).map(|m| m.as_str()) {
                Some("msg") => ExpectMatch::Msg(c[3].trim().to_string()),
                Some("regex") => ExpectMatch::Regex(Regex::new(c[3].trim())?),
                _ => ExpectMatch::Any,
            };
            match &c[1] {
                "ordered" => cmd.ordered = true,
                "fail" => cmd.fail = Some(m),
                "warn" => cmd.warn.push(m),
                "info" => cmd.info.push(m),
                "no_warn" => cmd.no_warn = true,
                _ => cmd.no_info = true,
            }
            continue;
        }
        if let Ok(f) = parse_number(def) {
            cmd.expect_scalar = Some(f);
            break;
        }
        let s = parse_series(def).with_context(|| format!("line {j}"))?;
        if s.values.len() > 1 && !cmd.is_range && !expect_range {
            bail!("expecting multiple values in instant evaluation not allowed");
        }
        cmd.expected.push((pos, s));
        pos += 1;
    }
    Ok((j, cmd))
}

/// A Prometheus duration (`1m30s`, `5m`, `1h`, `100ms`, `-5m`) in milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64> {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let ms =
        tsdb::duration::parse_ms(body).map_err(|e| anyhow!("invalid duration {s:?}: {e:?}"))?;
    let ms = i64::try_from(ms)?;
    Ok(if neg { -ms } else { ms })
}

/// A number as Go's `strconv.ParseInt(s, 0, 64)` or `ParseFloat` reads it.
pub fn parse_number(s: &str) -> Result<f64> {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let lower = body.to_ascii_lowercase();
    let v = if let Some(h) = lower.strip_prefix("0x") {
        i64::from_str_radix(h, 16)? as f64
    } else {
        match lower.as_str() {
            "inf" | "+inf" | "infinity" => f64::INFINITY,
            "nan" => f64::NAN,
            _ => {
                if !lower
                    .chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | '+' | '-' | '_'))
                {
                    bail!("not a number: {s:?}");
                }
                lower.replace('_', "").parse::<f64>()?
            }
        }
    };
    Ok(if neg { -v } else { v })
}

fn unquote(s: &str) -> Result<String> {
    if s.len() < 2 {
        bail!("expected string literal not valid - a quoted string literal is required");
    }
    let q = s.as_bytes()[0];
    if !matches!(q, b'"' | b'\'' | b'`') || s.as_bytes()[s.len() - 1] != q {
        bail!("expected string literal not valid - check that the string is correctly quoted");
    }
    let inner = &s[1..s.len() - 1];
    if q == b'`' {
        return Ok(inner.to_string());
    }
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(c) => out.push(c),
            None => bail!("bad escape"),
        }
    }
    Ok(out)
}

/// Splits `metric{labels} values` into its metric and values parts.
fn split_metric(line: &str) -> (&str, &str) {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return (&line[..=i], &line[i + 1..]);
                }
            }
            ' ' | '\t' if depth == 0 => return (&line[..i], &line[i..]),
            _ => {}
        }
    }
    (line, "")
}

/// Parses the labels of a series description with the PromQL parser (a selector of `=`
/// matchers).
pub fn parse_labels(metric: &str) -> Result<Labels> {
    if metric.trim() == "{}" {
        return Ok(Labels::empty());
    }
    let expr = promql_parser::parser::parse(metric).map_err(|e| anyhow!("{e}"))?;
    let Expr::VectorSelector(vs) = expr else {
        bail!("not a series: {metric:?}");
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Some(n) = vs.name {
        pairs.push(("__name__".into(), n));
    }
    for m in vs.matchers.matchers {
        pairs.push((m.name, m.value));
    }
    Ok(Labels::from_pairs(pairs))
}

/// Parses one series description line: labels and expanding-notation values.
pub fn parse_series(line: &str) -> Result<SeriesDesc> {
    let (metric, values) = split_metric(line.trim());
    let labels = parse_labels(metric)?;
    Ok(SeriesDesc {
        labels,
        values: parse_values(values)?,
    })
}

fn parse_values(s: &str) -> Result<Vec<SeqValue>> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        if rest.starts_with("{{") {
            // A native histogram, possibly `{{a}}xN` or `{{a}}+{{b}}xN`: only counted.
            let end = rest
                .find("}}")
                .ok_or_else(|| anyhow!("unterminated histogram"))?
                + 2;
            rest = &rest[end..];
            if rest.starts_with(['+', '-']) {
                let end = rest
                    .find("}}")
                    .ok_or_else(|| anyhow!("unterminated histogram"))?
                    + 2;
                rest = &rest[end..];
            }
            let tok_end = rest.find([' ', '\t']).unwrap_or(rest.len());
            let n = match rest[..tok_end].strip_prefix('x') {
                Some(k) => k.parse::<usize>()? + 1,
                None => 1,
            };
            rest = rest[tok_end..].trim_start();
            out.extend(std::iter::repeat_n(SeqValue::Histogram, n));
            continue;
        }
        let end = rest.find([' ', '\t']).unwrap_or(rest.len());
        let tok = &rest[..end];
        rest = rest[end..].trim_start();
        out.extend(parse_item(tok)?);
    }
    Ok(out)
}

fn parse_item(tok: &str) -> Result<Vec<SeqValue>> {
    if tok == "_" {
        return Ok(vec![SeqValue::Omitted]);
    }
    if let Some(n) = tok.strip_prefix("_x") {
        return Ok(vec![SeqValue::Omitted; n.parse::<usize>()?]);
    }
    // value [(+|-)delta] x n
    let (head, times) = match tok.rfind('x') {
        Some(x) if tok[x + 1..].chars().all(|c| c.is_ascii_digit()) && x + 1 < tok.len() => {
            (&tok[..x], Some(tok[x + 1..].parse::<usize>()?))
        }
        _ => (tok, None),
    };
    let Some(times) = times else {
        return Ok(vec![SeqValue::Float(series_value(head)?)]);
    };
    // Find the delta's sign: a + or - not at the start and not after an exponent 'e'.
    let bytes = head.as_bytes();
    let mut split = None;
    for i in 1..bytes.len() {
        if (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E') {
            split = Some(i);
        }
    }
    let (start, delta) = match split {
        Some(i) => {
            let d = parse_number(&head[i + 1..])?;
            (
                series_value(&head[..i])?,
                if bytes[i] == b'-' { -d } else { d },
            )
        }
        None => (series_value(head)?, 0.0),
    };
    let mut v = start;
    let mut out = Vec::with_capacity(times + 1);
    for _ in 0..=times {
        out.push(SeqValue::Float(v));
        v += delta;
    }
    Ok(out)
}

fn series_value(s: &str) -> Result<f64> {
    if s == "stale" {
        return Ok(stale_nan());
    }
    parse_number(s).or_else(|_| parse_duration_ms(s).map(|ms| ms as f64 / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(s: &str) -> Vec<SeqValue> {
        parse_values(s).unwrap()
    }

    #[test]
    fn expanding_notation() {
        use SeqValue::*;
        assert_eq!(
            floats("-2+4x3"),
            [Float(-2.0), Float(2.0), Float(6.0), Float(10.0)]
        );
        assert_eq!(
            floats("1-2x4"),
            [
                Float(1.0),
                Float(-1.0),
                Float(-3.0),
                Float(-5.0),
                Float(-7.0)
            ]
        );
        assert_eq!(floats("1x2"), [Float(1.0), Float(1.0), Float(1.0)]);
        assert_eq!(floats("1 _x3"), [Float(1.0), Omitted, Omitted, Omitted]);
        assert_eq!(
            floats("1e3 Inf -Inf"),
            [Float(1e3), Float(f64::INFINITY), Float(f64::NEG_INFINITY)]
        );
        assert!(matches!(floats("stale")[0], Float(v) if tsdb::storage::is_stale_nan(v)));
        assert_eq!(
            floats("{{schema:1 sum:3 count:22 buckets:[5 10 7]}}x2").len(),
            3
        );
        assert_eq!(floats("1 {{sum:3 count:2}}+{{sum:1 count:1}}x2 _").len(), 5);
        assert_eq!(floats("1e-3+1e-3x1"), [Float(1e-3), Float(2e-3)]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("1m30s").unwrap(), 90_000);
        assert_eq!(parse_duration_ms("-5m").unwrap(), -300_000);
        assert_eq!(parse_duration_ms("100ms").unwrap(), 100);
        assert!(parse_duration_ms("5x").is_err());
    }

    #[test]
    fn script() {
        let s = "# c\nload 5m\n  up{job=\"a\"} 1+1x2\n\nclear\neval instant at 5m up\n  expect warn msg: boom\n  up{job=\"a\"} 2\n\neval range from 0 to 10m step 5m up\n  {} 1 _ 3\n\neval instant at 1m 3\n  3\n";
        let cmds = parse_script(s).unwrap();
        assert_eq!(cmds.len(), 5);
        let Command::Load(l) = &cmds[0].1 else {
            panic!()
        };
        assert_eq!(l.interval_ms, 300_000);
        assert_eq!(l.series[0].labels.get("job"), Some("a"));
        let Command::Eval(e) = &cmds[2].1 else {
            panic!()
        };
        assert_eq!(e.eval_t, 300_000);
        assert_eq!(e.warn.len(), 1);
        assert!(e.warn[0].matches("boom"));
        assert_eq!(e.line, 6);
        let Command::Eval(r) = &cmds[3].1 else {
            panic!()
        };
        assert!(r.is_range);
        assert_eq!(r.expected[0].1.values[1], SeqValue::Omitted);
        let Command::Eval(s) = &cmds[4].1 else {
            panic!()
        };
        assert_eq!(s.expect_scalar, Some(3.0));
    }
}
