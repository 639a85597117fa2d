//! A parser for Prometheus's text exposition format (0.0.4) and OpenMetrics 1.0 text.
//!
//! Pure `&str → Result` so that the import endpoint, the scrape loop and fuzzers share it. Written
//! here rather than taken from a crate: the crates we evaluated (`prometheus-parse`,
//! `openmetrics-parser`) either drop timestamps/metadata, lack quoted UTF-8 names, or report
//! errors without positions; the import API needs line/column errors and `# TYPE/# HELP/# UNIT`.
//!
//! Samples keep their full metric name (`foo_bucket`, `foo_total`); metadata is keyed by the
//! family name of its `# TYPE`/`# HELP` line, as Prometheus's metadata API reports it.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use crate::labels::{Labels, METRIC_NAME};

/// Which text format to parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4: timestamps are integer milliseconds.
    Prometheus,
    /// OpenMetrics 1.0: timestamps are float seconds, `# EOF` ends the exposition, an exemplar
    /// may follow a sample (` # {trace_id="…"} value [timestamp]`).
    OpenMetrics,
}

impl Format {
    /// The format announced by an HTTP `Content-Type`.
    pub fn from_content_type(content_type: &str) -> Format {
        if content_type
            .trim_start()
            .starts_with("application/openmetrics-text")
        {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }
}

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    Unknown,
}

impl MetricType {
    /// The name Prometheus's metadata API uses (`untyped` is reported as `unknown`).
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
            MetricType::Unknown => "unknown",
        }
    }

    fn parse(s: &str) -> Option<MetricType> {
        Some(match s {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "gaugehistogram" => MetricType::GaugeHistogram,
            "summary" => MetricType::Summary,
            "info" => MetricType::Info,
            "stateset" => MetricType::StateSet,
            "untyped" | "unknown" => MetricType::Unknown,
            _ => return None,
        })
    }
}

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedSample {
    /// The labels including `__name__`.
    pub labels: Labels,
    pub value: f64,
    /// Milliseconds since the epoch, when the line carries a timestamp.
    pub timestamp_ms: Option<i64>,
    /// The exemplar after the sample (OpenMetrics only).
    pub exemplar: Option<ParsedExemplar>,
}

/// An OpenMetrics exemplar: ` # {labels} value [timestamp]` after a sample.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedExemplar {
    pub labels: Labels,
    pub value: f64,
    /// Milliseconds since the epoch (float seconds truncated, as Prometheus), when given.
    pub timestamp_ms: Option<i64>,
}

/// Metadata of one metric family from its `# TYPE`, `# HELP` and `# UNIT` lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyMetadata {
    pub family: String,
    pub kind: MetricType,
    pub help: String,
    pub unit: String,
}

/// A parsed exposition.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exposition {
    pub samples: Vec<ParsedSample>,
    /// In order of first appearance, one entry per family.
    pub metadata: Vec<FamilyMetadata>,
}

/// A syntax error with its 1-based line and column (in characters).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parses a whole exposition.
pub fn parse(text: &str, format: Format) -> Result<Exposition, ParseError> {
    let mut out = Exposition::default();
    let mut families: Vec<FamilyMetadata> = Vec::new();
    let mut seen_type: HashSet<String> = HashSet::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let mut cur = Cursor {
            line,
            pos: 0,
            line_no,
        };
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with('#') {
            if format == Format::OpenMetrics && line == "# EOF" {
                break;
            }
            parse_comment(&mut cur, &mut families, &mut seen_type)?;
            continue;
        }
        out.samples.push(parse_sample(&mut cur, format)?);
    }
    out.metadata = families;
    Ok(out)
}

struct Cursor<'a> {
    line: &'a str,
    /// Byte offset into `line`.
    pos: usize,
    line_no: usize,
}

impl<'a> Cursor<'a> {
    fn err(&self, message: impl fmt::Display) -> ParseError {
        ParseError {
            line: self.line_no,
            column: self.line[..self.pos.min(self.line.len())].chars().count() + 1,
            message: message.to_string(),
        }
    }

    fn rest(&self) -> &str {
        &self.line[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn skip_blanks(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn expect(&mut self, c: char, what: &str) -> Result<(), ParseError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.err(format!("expected {what}, found {}", self.found())))
        }
    }

    fn found(&self) -> String {
        match self.peek() {
            Some(c) => format!("{c:?}"),
            None => "end of line".into(),
        }
    }

    /// A token up to the next blank or the end of the line.
    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while !matches!(self.peek(), None | Some(' ' | '\t')) {
            self.pos += self.peek().map_or(1, char::len_utf8);
        }
        &self.line[start..self.pos]
    }

    /// `[a-zA-Z_:][a-zA-Z0-9_:]*` (metric names) or without `:` (label names).
    fn name(&mut self, colons: bool) -> Option<&'a str> {
        let start = self.pos;
        let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':');
        match self.peek() {
            Some(c) if ok_first(c) => self.pos += 1,
            _ => return None,
        }
        while let Some(c) = self.peek() {
            if ok_first(c) || c.is_ascii_digit() {
                self.pos += 1;
            } else {
                break;
            }
        }
        Some(&self.line[start..self.pos])
    }

    /// A double-quoted string with `\\`, `\"` and `\n` escapes; the cursor is on the quote.
    fn quoted(&mut self) -> Result<Cow<'a, str>, ParseError> {
        self.expect('"', "'\"'")?;
        // Most strings have no escapes: borrow them from the line.
        let start = self.pos;
        if let Some(i) = self.line[start..].find(['"', '\\'])
            && self.line.as_bytes()[start + i] == b'"'
        {
            self.pos = start + i + 1;
            return Ok(Cow::Borrowed(&self.line[start..start + i]));
        }
        let mut s = String::new();
        loop {
            match self.bump() {
                None => return Err(self.err("unterminated quoted string")),
                Some('"') => return Ok(Cow::Owned(s)),
                Some('\\') => match self.bump() {
                    Some('\\') => s.push('\\'),
                    Some('"') => s.push('"'),
                    Some('n') => s.push('\n'),
                    Some(c) => {
                        self.pos -= c.len_utf8();
                        return Err(self.err(format!("invalid escape sequence \\{c}")));
                    }
                    None => return Err(self.err("unterminated quoted string")),
                },
                Some(c) => s.push(c),
            }
        }
    }
}

fn parse_comment(
    cur: &mut Cursor<'_>,
    families: &mut Vec<FamilyMetadata>,
    seen_type: &mut HashSet<String>,
) -> Result<(), ParseError> {
    cur.pos = 1;
    if cur.skip_blanks() == 0 {
        return Ok(()); // "#foo": a plain comment
    }
    let keyword = cur.token().to_string();
    if !matches!(keyword.as_str(), "HELP" | "TYPE" | "UNIT") {
        return Ok(()); // any other comment
    }
    if cur.skip_blanks() == 0 {
        return Err(cur.err(format!("expected a metric name after # {keyword}")));
    }
    let family = if cur.peek() == Some('"') {
        cur.quoted()?.into_owned()
    } else {
        match cur.name(true) {
            Some(n) => n.to_string(),
            None => return Err(cur.err(format!("invalid metric name, found {}", cur.found()))),
        }
    };
    let has_blank = cur.skip_blanks() > 0;
    if !has_blank && cur.peek().is_some() {
        return Err(cur.err(format!(
            "expected a blank after the metric name, found {}",
            cur.found()
        )));
    }
    let text = cur.rest();
    let entry = match families.iter().position(|f| f.family == family) {
        Some(i) => &mut families[i],
        None => {
            families.push(FamilyMetadata {
                family: family.clone(),
                kind: MetricType::Unknown,
                help: String::new(),
                unit: String::new(),
            });
            let last = families.len() - 1;
            &mut families[last]
        }
    };
    match keyword.as_str() {
        "HELP" => entry.help = unescape_help(text),
        "UNIT" => entry.unit = text.to_string(),
        _ => {
            let kind = MetricType::parse(text.trim_end())
                .ok_or_else(|| cur.err(format!("invalid metric type {text:?}")))?;
            if !seen_type.insert(family.clone()) {
                return Err(cur.err(format!("second TYPE line for metric name {family:?}")));
            }
            entry.kind = kind;
        }
    }
    Ok(())
}

fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                Some(o) => {
                    out.push('\\');
                    out.push(o);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_sample(cur: &mut Cursor<'_>, format: Format) -> Result<ParsedSample, ParseError> {
    let mut pairs: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::new();
    let mut name: Option<Cow<'_, str>> = cur.name(true).map(Cow::Borrowed);
    if name.is_none() && cur.peek() != Some('{') {
        return Err(cur.err(format!("invalid metric name, found {}", cur.found())));
    }
    let mut blanks = cur.skip_blanks();
    if cur.eat('{') {
        parse_labels(cur, &mut name, &mut pairs)?;
        blanks = cur.skip_blanks();
    }
    let Some(name) = name else {
        cur.pos = 0;
        return Err(cur.err("sample without a metric name"));
    };
    if blanks == 0 {
        return Err(cur.err(format!(
            "expected a blank before the value, found {}",
            cur.found()
        )));
    }
    let value_at = cur.pos;
    let value_text = cur.token();
    let Some(value) = parse_value(value_text) else {
        let message = format!("invalid value {value_text:?}");
        cur.pos = value_at;
        return Err(cur.err(message));
    };
    let mut timestamp_ms = None;
    if cur.skip_blanks() > 0 && cur.peek().is_some() && cur.peek() != Some('#') {
        let ts_at = cur.pos;
        let ts_text = cur.token();
        let ts = match format {
            Format::Prometheus => ts_text.parse::<i64>().ok(),
            Format::OpenMetrics => ts_text
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(|f| (f * 1000.0).round() as i64),
        };
        match ts {
            Some(t) => timestamp_ms = Some(t),
            None => {
                let message = format!("invalid timestamp {ts_text:?}");
                cur.pos = ts_at;
                return Err(cur.err(message));
            }
        }
        cur.skip_blanks();
    }
    let exemplar = match cur.peek() {
        None => None,
        Some('#') if format == Format::OpenMetrics => Some(parse_exemplar(cur)?),
        Some(_) => {
            return Err(cur.err(format!("unexpected {} after the sample", cur.found())));
        }
    };
    pairs.push((Cow::Borrowed(METRIC_NAME), name));
    Ok(ParsedSample {
        labels: Labels::from_pairs(pairs),
        value,
        timestamp_ms,
        exemplar,
    })
}

/// ` # {labels} value [timestamp]`; the cursor is on the `#`.
fn parse_exemplar(cur: &mut Cursor<'_>) -> Result<ParsedExemplar, ParseError> {
    cur.expect('#', "'#'")?;
    if cur.skip_blanks() == 0 {
        return Err(cur.err(format!("expected a blank after '#', found {}", cur.found())));
    }
    let labels_at = cur.pos;
    cur.expect('{', "'{' starting the exemplar's labels")?;
    let mut name = None;
    let mut pairs = Vec::new();
    parse_labels(cur, &mut name, &mut pairs)?;
    if name.is_some() {
        cur.pos = labels_at;
        return Err(cur.err("an exemplar has no metric name"));
    }
    if cur.skip_blanks() == 0 {
        return Err(cur.err(format!(
            "expected a blank before the exemplar's value, found {}",
            cur.found()
        )));
    }
    let value_at = cur.pos;
    let value_text = cur.token();
    let Some(value) = parse_value(value_text) else {
        let message = format!("invalid exemplar value {value_text:?}");
        cur.pos = value_at;
        return Err(cur.err(message));
    };
    let mut timestamp_ms = None;
    if cur.skip_blanks() > 0 && cur.peek().is_some() {
        let ts_at = cur.pos;
        let ts_text = cur.token();
        match ts_text.parse::<f64>().ok().filter(|f| f.is_finite()) {
            Some(f) => timestamp_ms = Some((f * 1000.0) as i64),
            None => {
                let message = format!("invalid exemplar timestamp {ts_text:?}");
                cur.pos = ts_at;
                return Err(cur.err(message));
            }
        }
        cur.skip_blanks();
    }
    if cur.peek().is_some() {
        return Err(cur.err(format!("unexpected {} after the exemplar", cur.found())));
    }
    Ok(ParsedExemplar {
        labels: Labels::from_pairs(pairs),
        value,
        timestamp_ms,
    })
}

/// The label list after `{`; a quoted string without `=` is the metric name (UTF-8 names).
fn parse_labels<'a>(
    cur: &mut Cursor<'a>,
    name: &mut Option<Cow<'a, str>>,
    pairs: &mut Vec<(Cow<'a, str>, Cow<'a, str>)>,
) -> Result<(), ParseError> {
    loop {
        cur.skip_blanks();
        if cur.eat('}') {
            return Ok(());
        }
        let label_at = cur.pos;
        let label = if cur.peek() == Some('"') {
            let s = cur.quoted()?;
            if s.is_empty() {
                // A quoted metric or label name, like any other, is never empty.
                cur.pos = label_at;
                return Err(cur.err("empty name"));
            }
            cur.skip_blanks();
            if cur.peek() != Some('=') {
                if name.is_some() {
                    cur.pos = label_at;
                    return Err(cur.err("metric name given twice"));
                }
                *name = Some(s);
                if !cur.eat(',') {
                    cur.skip_blanks();
                    cur.expect('}', "',' or '}'")?;
                    return Ok(());
                }
                continue;
            }
            s
        } else {
            match cur.name(false) {
                Some(n) => Cow::Borrowed(n),
                None => return Err(cur.err(format!("invalid label name, found {}", cur.found()))),
            }
        };
        cur.skip_blanks();
        cur.expect('=', "'='")?;
        cur.skip_blanks();
        if cur.peek() != Some('"') {
            return Err(cur.err(format!(
                "expected a quoted label value, found {}",
                cur.found()
            )));
        }
        let value = cur.quoted()?;
        if label == METRIC_NAME || pairs.iter().any(|(n, _)| *n == label) {
            cur.pos = label_at;
            return Err(cur.err(format!("duplicate label name {label:?}")));
        }
        pairs.push((label, value));
        cur.skip_blanks();
        if cur.eat(',') {
            continue;
        }
        cur.expect('}', "',' or '}'")?;
        return Ok(());
    }
}

/// Go's `strconv.ParseFloat` spellings that matter here: decimal and exponent forms, `NaN`,
/// `+Inf`, `-Inf`, `Inf` (any case).
fn parse_value(s: &str) -> Option<f64> {
    let lower = s.to_ascii_lowercase();
    match lower.as_str() {
        "nan" => return Some(f64::NAN),
        "inf" | "+inf" | "infinity" | "+infinity" => return Some(f64::INFINITY),
        "-inf" | "-infinity" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests;
