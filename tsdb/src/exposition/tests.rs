use proptest::prelude::*;

use super::*;

fn one(line: &str) -> ParsedSample {
    let e = parse(line, Format::Prometheus).unwrap();
    assert_eq!(e.samples.len(), 1, "{line}");
    e.samples.into_iter().next().unwrap()
}

#[test]
fn samples_with_labels_values_and_timestamps() {
    let s = one(r#"http_requests_total{method="post",code="200"} 1027 1395066363000"#);
    assert_eq!(s.labels.metric_name(), Some("http_requests_total"));
    assert_eq!(s.labels.get("code"), Some("200"));
    assert_eq!(s.value, 1027.0);
    assert_eq!(s.timestamp_ms, Some(1_395_066_363_000));

    let s = one(
        r#"msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9"#,
    );
    assert_eq!(s.labels.get("path"), Some(r"C:\DIR\FILE.TXT"));
    assert_eq!(
        s.labels.get("error"),
        Some("Cannot find file:\n\"FILE.TXT\"")
    );
    assert_eq!(s.value, 1.458255915e9);
    assert_eq!(s.timestamp_ms, None);

    assert_eq!(one("x +Inf").value, f64::INFINITY);
    assert_eq!(one("x -Inf").value, f64::NEG_INFINITY);
    assert!(one("x NaN").value.is_nan());
    assert_eq!(one("x{} 3 -5").timestamp_ms, Some(-5));
    assert_eq!(one("x{a=\"b\",} 3").labels.get("a"), Some("b"));
    assert_eq!(one("x\t{ a = \"b\" }\t3").labels.get("a"), Some("b"));
    // An empty label value is no label, as in Prometheus.
    assert_eq!(one("x{a=\"\"} 3").labels.len(), 1);
}

#[test]
fn quoted_utf8_names() {
    let s = one(r#"{"my.metric", "label.name"="v", b="c"} 2"#);
    assert_eq!(s.labels.metric_name(), Some("my.metric"));
    assert_eq!(s.labels.get("label.name"), Some("v"));
    assert_eq!(s.labels.get("b"), Some("c"));
}

/// Found by the `exposition` fuzz target: `{""} 2` was a sample without a metric name.
#[test]
fn empty_quoted_names_are_refused() {
    for line in [r#"{""} 2"#, r#"{"x", ""="v"} 2"#, r#"x{""="v"} 2"#] {
        let e = parse(line, Format::Prometheus).unwrap_err();
        assert_eq!(e.message, "empty name", "{line}");
    }
}

#[test]
fn metadata_from_help_type_unit() {
    let text = "# HELP http_requests_total The total number\\nof requests.\n\
                # TYPE http_requests_total counter\n\
                http_requests_total{code=\"200\"} 3\n\
                # A plain comment\n\
                #plain\n\
                # TYPE rpc_duration_seconds summary\n\
                # UNIT rpc_duration_seconds seconds\n\
                rpc_duration_seconds{quantile=\"0.5\"} 4773\n\
                rpc_duration_seconds_sum 1.7560473e+07\n\
                # TYPE legacy untyped\n";
    let e = parse(text, Format::Prometheus).unwrap();
    assert_eq!(e.samples.len(), 3);
    assert_eq!(
        e.metadata,
        vec![
            FamilyMetadata {
                family: "http_requests_total".into(),
                kind: MetricType::Counter,
                help: "The total number\nof requests.".into(),
                unit: String::new(),
            },
            FamilyMetadata {
                family: "rpc_duration_seconds".into(),
                kind: MetricType::Summary,
                help: String::new(),
                unit: "seconds".into(),
            },
            FamilyMetadata {
                family: "legacy".into(),
                kind: MetricType::Unknown,
                help: String::new(),
                unit: String::new(),
            },
        ]
    );
}

#[test]
fn openmetrics_timestamps_exemplars_and_eof() {
    let text = "# TYPE foo counter\n\
                foo_total{a=\"1\"} 17 1520879607.789 # {trace_id=\"KOO5S4vxi0o\"} 0.67\n\
                foo_created 1520430000.123\n\
                # EOF\n\
                this is not parsed\n";
    let e = parse(text, Format::OpenMetrics).unwrap();
    assert_eq!(e.samples.len(), 2);
    assert_eq!(e.samples[0].timestamp_ms, Some(1_520_879_607_789));
    assert_eq!(e.samples[0].value, 17.0);
    assert_eq!(
        e.samples[0].exemplar,
        Some(ParsedExemplar {
            labels: Labels::from_pairs([("trace_id", "KOO5S4vxi0o")]),
            value: 0.67,
            timestamp_ms: None,
        })
    );
    assert_eq!(e.samples[1].exemplar, None);
    assert_eq!(
        Format::from_content_type("application/openmetrics-text; version=1.0.0"),
        Format::OpenMetrics
    );
    assert_eq!(Format::from_content_type("text/plain"), Format::Prometheus);
}

#[test]
fn errors_name_line_and_column() {
    let cases: &[(&str, usize, usize, &str)] = &[
        ("ok 1\nbad{a=\"b\" 1", 2, 11, "expected ',' or '}'"),
        ("x 1 2 3", 1, 7, "unexpected"),
        ("x abc", 1, 3, "invalid value"),
        ("x 1 1.5", 1, 5, "invalid timestamp"),
        ("x{a=b} 1", 1, 5, "quoted label value"),
        ("x{a=\"b\\q\"} 1", 1, 8, "invalid escape"),
        ("x{a=\"b\",a=\"c\"} 1", 1, 9, "duplicate label name"),
        ("1x 1", 1, 1, "invalid metric name"),
        ("x{a=\"unterminated} 1", 1, 21, "unterminated"),
        ("x", 1, 2, "expected a blank"),
        ("# TYPE x foo", 1, 10, "invalid metric type"),
        ("# TYPE x gauge\n# TYPE x gauge", 2, 10, "second TYPE"),
        ("é{a=\"b\"} 1", 1, 1, "invalid metric name"),
        ("{a=\"b\"} 1", 1, 1, "without a metric name"),
    ];
    for (text, line, column, msg) in cases {
        let e = parse(text, Format::Prometheus).unwrap_err();
        assert_eq!((e.line, e.column), (*line, *column), "{text:?}: {e}");
        assert!(e.message.contains(msg), "{text:?}: {e}");
    }
}

fn render_value(v: &str) -> String {
    let mut s = String::new();
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

proptest! {
    #[test]
    fn rendered_samples_parse_back(
        name in "[a-zA-Z_:][a-zA-Z0-9_:]{0,12}",
        labels in prop::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,8}", "\\PC{0,10}", 0..5),
        value in prop::num::f64::NORMAL | prop::num::f64::ZERO,
        ts in prop::option::of(any::<i64>()),
    ) {
        let labels: std::collections::BTreeMap<String, String> =
            labels.into_iter().filter(|(k, _)| k != "__name__").collect();
        let body: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", render_value(v)))
            .collect();
        let mut line = format!("{name}{{{}}} {value:?}", body.join(","));
        if let Some(ts) = ts {
            line.push_str(&format!(" {ts}"));
        }
        let got = parse(&line, Format::Prometheus).unwrap();
        let want = Labels::from_pairs(
            labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).chain([("__name__", name.as_str())]),
        );
        prop_assert_eq!(&got.samples[0].labels, &want);
        prop_assert_eq!(got.samples[0].value, value);
        prop_assert_eq!(got.samples[0].timestamp_ms, ts);
    }

    #[test]
    fn never_panics(text in "\\PC{0,80}") {
        let _ = parse(&text, Format::Prometheus);
        let _ = parse(&text, Format::OpenMetrics);
    }
}

#[test]
fn openmetrics_exemplars_with_timestamps_and_errors() {
    let text = "foo_bucket{le=\"0.5\"} 3 # {trace_id=\"a\",span_id=\"b\"} 0.25 1520879607.7899\n\
                foo_bucket{le=\"+Inf\"} 4 1520879607 #  {} 7\n# EOF\n";
    let e = parse(text, Format::OpenMetrics).unwrap();
    let x = e.samples[0].exemplar.as_ref().unwrap();
    assert_eq!(
        x.labels,
        Labels::from_pairs([("span_id", "b"), ("trace_id", "a")])
    );
    assert_eq!((x.value, x.timestamp_ms), (0.25, Some(1_520_879_607_789)));
    let y = e.samples[1].exemplar.as_ref().unwrap();
    assert!(y.labels.is_empty());
    assert_eq!((y.value, y.timestamp_ms), (7.0, None));
    assert_eq!(e.samples[1].timestamp_ms, Some(1_520_879_607_000));
    for (bad, msg) in [
        ("a 1 # trace_id=\"x\" 1", "'{'"),
        (
            "a 1 # {trace_id=\"x\"}",
            "blank before the exemplar's value",
        ),
        ("a 1 # {trace_id=\"x\"} abc", "invalid exemplar value"),
        ("a 1 # {trace_id=\"x\"} 1 ts", "invalid exemplar timestamp"),
        ("a 1 # {trace_id=\"x\"} 1 2 3", "after the exemplar"),
        ("a 1 # {\"name\"} 1", "no metric name"),
    ] {
        let err = parse(bad, Format::OpenMetrics).unwrap_err();
        assert!(err.message.contains(msg), "{bad:?}: {err}");
    }
    // The text format has no exemplars.
    assert!(parse("a 1 # {x=\"y\"} 1", Format::Prometheus).is_err());
}
