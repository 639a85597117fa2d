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
    ("rate(gappy_gauge[1m])", RATE_ZERO_CLAMP),
    ("rate(gappy_gauge[5m])", RATE_ZERO_CLAMP),
    ("increase(gappy_gauge[1m])", RATE_ZERO_CLAMP),
    ("increase(gappy_gauge[5m])", RATE_ZERO_CLAMP),
    ("rate(counter_resets[1h])", RATE_ZERO_CLAMP),
    ("increase(counter_resets[10m:1m])", RATE_ZERO_CLAMP),
    (
        "avg_over_time(avg_over_time(temperature[5m:1m])[10m:2m])",
        "3.x range windows are left-open: the inner subquery's point at exactly t-5m (both steps align) is excluded in 3.x, included in 2.42",
    ),
    (
        "stdvar by (kind) (special_values)",
        "3.x gives NaN for stddev/stdvar of a single NaN or ±Inf (upstream aggregators.test), 2.42 gives 0",
    ),
    (
        "histogram_fraction(0, 0.5, request_duration_seconds_bucket)",
        "3.x computes histogram_fraction on classic le buckets too (upstream histograms.test); 2.42 on native histograms only",
    ),
    (
        "label_replace(temperature, \"invalid-name\", \"x\", \"room\", \".*\")",
        "3.x accepts any UTF-8 label name (utf8 name validation by default); 2.42 refuses names outside [a-zA-Z_][a-zA-Z0-9_]*",
    ),
    (
        "label_join(temperature, \"1bad\", \"-\", \"room\")",
        "3.x accepts any UTF-8 label name (utf8 name validation by default); 2.42 refuses names outside [a-zA-Z_][a-zA-Z0-9_]*",
    ),
];

/// Why rate/increase extrapolation differs where a window starts well before a counter's first
/// sample and the counter's first value is small.
const RATE_ZERO_CLAMP: &str = "2.42 clamps the extrapolation to the counter's zero point before the 1.1x-average-interval test, 3.x after it (extrapolatedRate in promql/functions.go)";

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
        assert_eq!(
            substitute("x @ $T+60 + y @ $T", 1000),
            "x @ 1060 + y @ 1000"
        );
        assert_eq!(substitute("x @ $T-5", 1000), "x @ 995");
    }
}
