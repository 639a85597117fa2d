//! The differential PromQL checker (`promql-diff`): one data set remote-written to Sextant and
//! to a real Prometheus 2.42, a corpus of queries run against both, answers compared.

pub mod compare;
pub mod data;

/// Queries whose answers differ because Prometheus 2.42 and 3.x differ (Sextant follows 3.x):
/// the exact query text (before `$T` substitution) and why.
pub const KNOWN: &[(&str, &str)] = &[
    (
        "holt_winters(temperature[10m], 0.5, 0.5)",
        "3.0 renamed holt_winters to double_exponential_smoothing (experimental); 2.42 has only the old name",
    ),
];

/// The reason a query is a known 2.42-vs-3.x difference, if it is one.
pub fn known_reason(query: &str) -> Option<&'static str> {
    KNOWN.iter().find(|(q, _)| *q == query).map(|(_, r)| *r)
}

/// A query of the corpus: its text, the topic (the last `## ` heading) and its line number.
#[derive(Clone, Debug)]
pub struct Query {
    pub text: String,
    pub topic: String,
    pub line: usize,
}

/// Parses a corpus: one query a line, `#` comments, `## topic` headings.
pub fn parse_corpus(text: &str) -> Vec<Query> {
    let mut topic = String::new();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(t) = line.strip_prefix("## ") {
            topic = t.trim().to_string();
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(Query {
            text: line.to_string(),
            topic: topic.clone(),
            line: n + 1,
        });
    }
    out
}

/// Replaces `$T+N` / `$T-N` / `$T` (seconds relative to the data's start) by absolute Unix
/// seconds, for `@` modifiers and `timestamp()` comparisons.
pub fn substitute(query: &str, t0_secs: i64) -> String {
    let mut out = String::with_capacity(query.len());
    let mut rest = query;
    while let Some(pos) = rest.find("$T") {
        out.push_str(&rest[..pos]);
        rest = &rest[pos + 2..];
        let sign_len = usize::from(rest.starts_with('+') || rest.starts_with('-'));
        let digits = rest[sign_len..]
            .chars()
            .take_while(char::is_ascii_digit)
            .count();
        let delta: i64 = if sign_len == 1 && digits > 0 {
            rest[..sign_len + digits].parse().unwrap_or(0)
        } else {
            0
        };
        let consumed = if digits > 0 { sign_len + digits } else { 0 };
        out.push_str(&(t0_secs + delta).to_string());
        rest = &rest[consumed..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_and_time_substitution() {
        let c = parse_corpus("## a\nup\n# c\n\n## b\nsum(up)\n");
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].topic, "b");
        assert_eq!(c[1].line, 6);
        assert_eq!(substitute("x @ $T+60 + y @ $T", 1000), "x @ 1060 + y @ 1000");
        assert_eq!(substitute("x @ $T-5", 1000), "x @ 995");
    }
}
