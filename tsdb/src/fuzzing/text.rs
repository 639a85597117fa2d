//! Targets over text: the exposition formats, PromQL, the HTTP API's parameters, the
//! configuration file's `tsdb:` section.

use super::{assert_series_labels, assert_well_formed};
use crate::exposition::{self, Format};

/// The Prometheus text and OpenMetrics parsers (scrapes, `/api/v1/import/prometheus`): every
/// sample they accept has a well-formed label set with a name; a blank line appended to an
/// accepted text exposition changes nothing.
pub fn exposition(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for format in [Format::Prometheus, Format::OpenMetrics] {
        let Ok(e) = exposition::parse(text, format) else {
            continue;
        };
        for s in &e.samples {
            assert_series_labels(&s.labels);
            if let Some(x) = &s.exemplar {
                assert_well_formed(&x.labels);
            }
        }
        if format == Format::Prometheus {
            let again = exposition::parse(&format!("{text}\n"), format)
                .unwrap_or_else(|e| panic!("a blank line made {text:?} fail: {e:?}"));
            assert_eq!(again.samples.len(), e.samples.len());
        }
    }
}

/// `parse_query`: no panic; a query it accepts prints (as `/api/v1/format_query` and the
/// engine's messages do) to text that, where it parses, prints the same again. (It does not
/// always parse: `promql-parser` 0.11 prints `offset 0` as `offset 0s`, which it refuses, while
/// Prometheus accepts both.) Parsed as a range query's with experimental syntax on, so the
/// syntax front end (duration expressions, `anchored`/`smoothed`) is fuzzed too.
pub fn promql(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ctx = crate::promql::ParseContext {
        step_ms: 15_000,
        range_ms: 3_600_000,
        experimental: true,
    };
    let Ok(q) = crate::promql::parse_query(text, &ctx) else {
        return;
    };
    let printed = q.expr.to_string();
    if let Ok(again) = crate::promql::parse_query(&printed, &ctx) {
        assert_eq!(again.expr.to_string(), printed, "from {text:?}");
    }
    let _ = crate::promql::parse_query(&q.expr.prettify(), &ctx);
}

/// The HTTP API's time, duration and selector parameters, the config's selectors, durations
/// and relabel actions: no panic; a parsed duration or action prints to text that parses back.
pub fn api_params(data: &[u8]) {
    use crate::scrape::config::prom_duration;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::api::params::parse_time(text);
    let _ = crate::api::params::parse_duration(text);
    let _ = crate::api::params::parse_selector(text);
    let _ = crate::api::params::parse_match_sets(&[text, text]);
    let _ = crate::config::parse_selector(text);
    let _ = crate::scrape::config::check_target_address(text);
    if let Ok(d) = prom_duration::parse(text) {
        let printed = prom_duration::format(d);
        assert_eq!(
            prom_duration::parse(&printed),
            Ok(d),
            "{text:?} → {printed:?}"
        );
    }
    if let Some(a) = crate::relabel::Action::parse(text) {
        assert_eq!(crate::relabel::Action::parse(a.as_str()), Some(a));
    }
}

/// The `tsdb:` section of the configuration file (scrape jobs and relabeling included): a
/// section that parses and validates serializes to YAML that parses to the same section.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(c) = serde_yaml_ng::from_str::<crate::TsdbConfig>(text) else {
        return;
    };
    if c.validate().is_err() {
        return;
    }
    let yaml = serde_yaml_ng::to_string(&c).unwrap_or_else(|e| panic!("serializing {c:?}: {e}"));
    let back: crate::TsdbConfig = serde_yaml_ng::from_str(&yaml)
        .unwrap_or_else(|e| panic!("{text:?} serialized as {yaml:?}, which fails: {e}"));
    assert_eq!(back, c, "{yaml}");
}
