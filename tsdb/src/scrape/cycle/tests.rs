use super::*;
use crate::exposition::{Format, parse};
use crate::storage::is_stale_nan;

fn rules() -> ScrapeRules {
    ScrapeRules {
        target_labels: Labels::from_pairs([("job", "app"), ("instance", "h:1")]),
        honor_timestamps: true,
        ..ScrapeRules::default()
    }
}

fn page(text: &str) -> Exposition {
    parse(text, Format::Prometheus).unwrap()
}

fn value(out: &ScrapeOutput, series: &str) -> Option<f64> {
    out.batch
        .iter()
        .find(|s| s.labels.to_string() == series)
        .map(|s| s.samples[0].v)
}

fn stale_series(out: &ScrapeOutput) -> Vec<String> {
    let mut v: Vec<String> = out
        .batch
        .iter()
        .filter(|s| is_stale_nan(s.samples[0].v))
        .map(|s| s.labels.to_string())
        .collect();
    v.sort();
    v
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn samples_get_target_labels_and_report_series() {
    let mut st = ScrapeState::new();
    let out = st.process(
        &rules(),
        1000,
        Duration::from_millis(250),
        Ok(&page("a 1\nb{x=\"y\"} 2\n")),
    );
    assert_eq!(value(&out, "a{instance=\"h:1\", job=\"app\"}"), Some(1.0));
    assert_eq!(
        value(&out, "b{instance=\"h:1\", job=\"app\", x=\"y\"}"),
        Some(2.0)
    );
    assert_eq!(value(&out, "up{instance=\"h:1\", job=\"app\"}"), Some(1.0));
    assert_eq!(
        value(
            &out,
            "scrape_duration_seconds{instance=\"h:1\", job=\"app\"}"
        ),
        Some(0.25)
    );
    assert_eq!(
        value(
            &out,
            "scrape_samples_scraped{instance=\"h:1\", job=\"app\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        value(&out, "scrape_series_added{instance=\"h:1\", job=\"app\"}"),
        Some(2.0)
    );
    assert!(out.batch.iter().all(|s| s.samples[0].t == 1000));
    assert_eq!(out.batch.len(), 2 + REPORT_METRICS.len());

    // the same page again: no series added
    let out = st.process(&rules(), 2000, SECOND, Ok(&page("a 1\nb{x=\"y\"} 2\n")));
    assert_eq!(
        value(&out, "scrape_series_added{instance=\"h:1\", job=\"app\"}"),
        Some(0.0)
    );
    assert!(stale_series(&out).is_empty());
}

#[test]
fn honor_labels_conflicts() {
    let text = "a{job=\"scraped\",exported_job=\"old\"} 1\n";
    let mut st = ScrapeState::new();
    let out = st.process(&rules(), 0, SECOND, Ok(&page(text)));
    // target wins, scraped value moves to exported_job, whose value moves further out
    assert_eq!(
        value(
            &out,
            "a{exported_exported_job=\"old\", exported_job=\"scraped\", instance=\"h:1\", job=\"app\"}"
        ),
        None,
        "the existing exported_job is a scraped label, not renamed"
    );
    assert_eq!(
        value(
            &out,
            "a{exported_exported_job=\"scraped\", exported_job=\"old\", instance=\"h:1\", job=\"app\"}"
        ),
        Some(1.0)
    );

    let honor = ScrapeRules {
        honor_labels: true,
        ..rules()
    };
    let mut st = ScrapeState::new();
    let out = st.process(&honor, 0, SECOND, Ok(&page("a{job=\"scraped\"} 1\n")));
    assert_eq!(
        value(&out, "a{instance=\"h:1\", job=\"scraped\"}"),
        Some(1.0)
    );
    // report series always carry the target's labels
    assert_eq!(value(&out, "up{instance=\"h:1\", job=\"app\"}"), Some(1.0));
}

#[test]
fn timestamps_honored_or_not() {
    let text = "a 1 5000\nb 2\n";
    let mut st = ScrapeState::new();
    let out = st.process(&rules(), 9000, SECOND, Ok(&page(text)));
    let t = |out: &ScrapeOutput, name: &str| {
        out.batch
            .iter()
            .find(|s| s.labels.metric_name() == Some(name))
            .map(|s| s.samples[0].t)
    };
    assert_eq!(t(&out, "a"), Some(5000));
    assert_eq!(t(&out, "b"), Some(9000));
    // a series with its own timestamp is not marked stale when it goes
    let out = st.process(&rules(), 10_000, SECOND, Ok(&page("")));
    assert_eq!(stale_series(&out), ["b{instance=\"h:1\", job=\"app\"}"]);

    let ignore = ScrapeRules {
        honor_timestamps: false,
        ..rules()
    };
    let out = ScrapeState::new().process(&ignore, 9000, SECOND, Ok(&page(text)));
    assert_eq!(t(&out, "a"), Some(9000));
}

#[test]
fn metric_relabel_drop() {
    let r = ScrapeRules {
        metric_relabel_configs: serde_yaml_ng::from_str(
            "[{source_labels: [__name__], regex: 'go_.*', action: drop},
              {regex: 'tmp', action: labeldrop}]",
        )
        .unwrap(),
        ..rules()
    };
    let out = ScrapeState::new().process(&r, 0, SECOND, Ok(&page("go_gc 1\nkept{tmp=\"1\"} 2\n")));
    assert_eq!(
        value(&out, "kept{instance=\"h:1\", job=\"app\"}"),
        Some(2.0)
    );
    assert!(
        out.batch
            .iter()
            .all(|s| s.labels.metric_name() != Some("go_gc"))
    );
    assert_eq!(out.report.samples_scraped, 2);
    assert_eq!(out.report.samples_post_relabel, 1);
    assert_eq!(
        value(
            &out,
            "scrape_samples_post_metric_relabeling{instance=\"h:1\", job=\"app\"}"
        ),
        Some(1.0)
    );
}

#[test]
fn staleness_on_disappearance_and_failure() {
    let mut st = ScrapeState::new();
    st.process(&rules(), 1000, SECOND, Ok(&page("a 1\nb 2\n")));
    let out = st.process(&rules(), 2000, SECOND, Ok(&page("a 1\n")));
    assert_eq!(stale_series(&out), ["b{instance=\"h:1\", job=\"app\"}"]);
    assert_eq!(out.stale_markers, 1);
    assert!(out.batch.iter().all(|s| s.samples[0].t == 2000));

    // the target fails: `a` goes stale, up is 0
    let out = st.process(&rules(), 3000, SECOND, Err("connection refused".into()));
    assert_eq!(stale_series(&out), ["a{instance=\"h:1\", job=\"app\"}"]);
    assert_eq!(value(&out, "up{instance=\"h:1\", job=\"app\"}"), Some(0.0));
    assert_eq!(out.report.error.as_deref(), Some("connection refused"));
    // nothing left to mark on the next failure
    let out = st.process(&rules(), 4000, SECOND, Err("x".into()));
    assert!(stale_series(&out).is_empty());
    // back: the series count as added again
    let out = st.process(&rules(), 5000, SECOND, Ok(&page("a 1\n")));
    assert_eq!(out.report.series_added, 1);
}

#[test]
fn sample_limit_fails_the_scrape() {
    let r = ScrapeRules {
        sample_limit: 2,
        ..rules()
    };
    let mut st = ScrapeState::new();
    let out = st.process(&r, 1000, SECOND, Ok(&page("a 1\nb 2\n")));
    assert!(out.report.up);
    let out = st.process(&r, 2000, SECOND, Ok(&page("a 1\nb 2\nc 3\n")));
    assert!(!out.report.up);
    assert_eq!(value(&out, "up{instance=\"h:1\", job=\"app\"}"), Some(0.0));
    assert!(
        out.report
            .error
            .as_deref()
            .unwrap()
            .contains("sample limit exceeded")
    );
    // nothing scraped is stored; what was there goes stale
    assert_eq!(out.batch.len(), 2 + REPORT_METRICS.len());
    assert_eq!(stale_series(&out).len(), 2);
    assert_eq!(
        value(
            &out,
            "scrape_samples_scraped{instance=\"h:1\", job=\"app\"}"
        ),
        Some(3.0)
    );
}

#[test]
fn relabeling_away_the_name_fails_the_scrape() {
    let r = ScrapeRules {
        metric_relabel_configs: serde_yaml_ng::from_str("[{regex: __name__, action: labeldrop}]")
            .unwrap(),
        ..rules()
    };
    let out = ScrapeState::new().process(&r, 0, SECOND, Ok(&page("a 1\n")));
    assert_eq!(
        out.report.error.as_deref(),
        Some("missing metric name (__name__ label)")
    );
}

#[test]
fn label_limits_fail_the_scrape() {
    let r = ScrapeRules {
        label_limit: 3,
        ..rules()
    };
    let out = ScrapeState::new().process(&r, 0, SECOND, Ok(&page("a{x=\"1\"} 1\n")));
    assert!(
        out.report
            .error
            .unwrap()
            .starts_with("label_limit exceeded")
    );
    let r = ScrapeRules {
        label_value_length_limit: 3,
        ..rules()
    };
    let out = ScrapeState::new().process(&r, 0, SECOND, Ok(&page("a{x=\"1234\"} 1\n")));
    assert!(
        out.report
            .error
            .unwrap()
            .starts_with("label_value_length_limit exceeded")
    );
}

#[test]
fn end_of_run_marks_everything() {
    let mut st = ScrapeState::new();
    assert!(st.end_of_run(&rules(), 0).is_empty());
    st.process(&rules(), 1000, SECOND, Ok(&page("a 1\n")));
    let batch = st.end_of_run(&rules(), 2000);
    assert_eq!(batch.len(), 1 + REPORT_METRICS.len());
    assert!(
        batch
            .iter()
            .all(|s| is_stale_nan(s.samples[0].v) && s.samples[0].t == 2000)
    );
    assert!(st.end_of_run(&rules(), 3000).is_empty());
}

#[test]
fn duplicate_series_keep_the_first_sample() {
    let out = ScrapeState::new().process(&rules(), 0, SECOND, Ok(&page("a 1\na 2\n")));
    assert_eq!(value(&out, "a{instance=\"h:1\", job=\"app\"}"), Some(1.0));
    assert_eq!(out.report.samples_post_relabel, 1);
}

#[test]
fn resolution_cache_follows_rule_changes() {
    let mut st = ScrapeState::new();
    let p = page("a 1\nb 2\n");
    st.process(&rules(), 1000, SECOND, Ok(&p));
    let drop_b = ScrapeRules {
        metric_relabel_configs: serde_yaml_ng::from_str(
            "[{source_labels: [__name__], regex: b, action: drop}]",
        )
        .unwrap(),
        ..rules()
    };
    st.rules_changed();
    let out = st.process(&drop_b, 2000, SECOND, Ok(&p));
    assert_eq!(stale_series(&out), ["b{instance=\"h:1\", job=\"app\"}"]);
    // many scrapes without `a`: its cache entry goes, and it resolves again when back
    for t in 3..20 {
        st.process(&drop_b, t * 1000, SECOND, Ok(&page("c 1\n")));
    }
    let out = st.process(&drop_b, 30_000, SECOND, Ok(&p));
    assert_eq!(value(&out, "a{instance=\"h:1\", job=\"app\"}"), Some(1.0));
    assert_eq!(out.report.samples_post_relabel, 1);
}

#[test]
fn exemplars_follow_relabeling_and_metadata_is_passed_on_changes() {
    let mut rules = rules();
    rules.metric_relabel_configs = serde_yaml_ng::from_str(
        "[{source_labels: [__name__], regex: 'dropped_total', action: drop}]",
    )
    .unwrap();
    let text = "# TYPE kept counter\n# HELP kept Kept.\n\
                kept_total 1 # {trace_id=\"k\"} 1\n\
                dropped_total 1 # {trace_id=\"d\"} 1 5.5\n# EOF\n";
    let om = parse(text, Format::OpenMetrics).unwrap();
    let mut st = ScrapeState::new();
    let out = st.process(&rules, 1000, SECOND, Ok(&om));
    assert_eq!(out.exemplars.len(), 1);
    assert_eq!(
        out.exemplars[0].labels.to_string(),
        "kept_total{instance=\"h:1\", job=\"app\"}"
    );
    let e = &out.exemplars[0].exemplars[0];
    // Without its own timestamp: the scrape's.
    assert_eq!((e.t, e.has_ts, e.value), (1000, false, 1.0));
    assert_eq!(out.metadata.len(), 1);
    assert_eq!(out.metadata[0].0, "kept");
    assert_eq!(out.metadata[0].1.help, "Kept.");
    // The same page again: exemplars again (the store drops the duplicates), metadata not.
    let out = st.process(&rules, 2000, SECOND, Ok(&om));
    assert_eq!(out.exemplars.len(), 1);
    assert!(out.metadata.is_empty());
    // A failed scrape stores no exemplar.
    rules.sample_limit = 1;
    let two = parse(
        "kept_total 1 # {a=\"b\"} 1\nother 2\n# EOF\n",
        Format::OpenMetrics,
    )
    .unwrap();
    let out = st.process(&rules, 3000, SECOND, Ok(&two));
    assert!(out.report.error.is_some());
    assert!(out.exemplars.is_empty());
}
