//! Cases ported in spirit from Prometheus's `model/relabel/relabel_test.go`.

use super::*;

fn l(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

fn cfg(yaml: &str) -> RelabelConfig {
    let c: RelabelConfig = serde_yaml_ng::from_str(yaml).unwrap();
    c.validate().unwrap();
    c
}

fn cfgs(yaml: &str) -> Vec<RelabelConfig> {
    let v: Vec<RelabelConfig> = serde_yaml_ng::from_str(yaml).unwrap();
    validate_all(&v, "x").unwrap();
    v
}

#[test]
fn relabel_table() {
    let abc = l(&[("a", "foo"), ("b", "bar"), ("c", "baz")]);
    // (input, configs, expected output: None = dropped)
    let cases: Vec<(Labels, &str, Option<Labels>)> = vec![
        // replace with a template used twice
        (
            abc.clone(),
            "[{source_labels: [a], regex: 'f(.*)', target_label: d, replacement: 'ch${1}-ch${1}'}]",
            Some(abc.with("d", "choo-choo")),
        ),
        // chained replaces over several source labels
        (
            abc.clone(),
            "[{source_labels: [a, b], regex: 'f(.*);(.*)r', target_label: a, replacement: 'b${1}${2}m'},
              {source_labels: [c, a], regex: '(b).*b(.*)ba(.*)', target_label: d, replacement: '$1$2$2$3'}]",
            Some(l(&[("a", "boobam"), ("b", "bar"), ("c", "baz"), ("d", "boooom")])),
        ),
        // drop on match, and the regex is anchored
        (
            abc.clone(),
            "[{source_labels: [a], regex: '.*o.*', action: drop}]",
            None,
        ),
        (
            abc.clone(),
            "[{source_labels: [a], regex: 'f|o', action: drop}]",
            Some(abc.clone()),
        ),
        // keep
        (
            abc.clone(),
            "[{source_labels: [a], regex: 'no-match', action: keep}]",
            None,
        ),
        (
            abc.clone(),
            "[{source_labels: [a], regex: 'f.*', action: KEEP}]",
            Some(abc.clone()),
        ),
        // keep on a missing label matches the empty string
        (
            abc.clone(),
            "[{source_labels: [missing], regex: '', action: keep}]",
            Some(abc.clone()),
        ),
        // a replace that does not match changes nothing
        (
            l(&[("a", "boo")]),
            "[{source_labels: [a], regex: 'f', target_label: b, replacement: bar}]",
            Some(l(&[("a", "boo")])),
        ),
        // the fast path: constant label from an empty source
        (
            abc.clone(),
            "[{target_label: foo, replacement: bar}]",
            Some(abc.with("foo", "bar")),
        ),
        // an empty expansion deletes the target
        (
            abc.clone(),
            "[{source_labels: [a], regex: '(f).*', target_label: b, replacement: '$2'}]",
            Some(l(&[("a", "foo"), ("c", "baz")])),
        ),
        // target label from a template
        (
            l(&[("a", "some-name-value")]),
            "[{source_labels: [a], regex: 'some-([^-]+)-([^,]+)', target_label: '${1}', replacement: '${2}'}]",
            Some(l(&[("a", "some-name-value"), ("name", "value")])),
        ),
        // an invalid expanded target name is ignored
        (
            l(&[("a", "some-0-value")]),
            "[{source_labels: [a], regex: 'some-([^-]+)-([^,]+)', target_label: '${1}', replacement: '${2}'}]",
            Some(l(&[("a", "some-0-value")])),
        ),
        // named groups and $$
        (
            l(&[("a", "v1")]),
            "[{source_labels: [a], regex: '(?P<ver>.*)', target_label: b, replacement: '$$${ver}'}]",
            Some(l(&[("a", "v1"), ("b", "$v1")])),
        ),
        // custom separator
        (
            abc.clone(),
            "[{source_labels: [a, b], separator: '-', regex: 'foo-bar', target_label: d, replacement: ok}]",
            Some(abc.with("d", "ok")),
        ),
        // hashmod
        (
            abc.clone(),
            "[{source_labels: [c], target_label: d, modulus: 1000, action: hashmod}]",
            Some(abc.with("d", "976")),
        ),
        (
            abc.clone(),
            "[{source_labels: [a], target_label: d, modulus: 1000, action: hashmod}]",
            Some(abc.with("d", "696")),
        ),
        // labelmap
        (
            abc.clone(),
            "[{regex: '(b)', replacement: bar, action: labelmap}]",
            Some(abc.with("bar", "bar")),
        ),
        (
            l(&[("__meta_my_foo", "aaa"), ("__meta_my_bar", "bbb"), ("__meta_other", "ccc")]),
            "[{regex: '__meta_(my.*)', replacement: '${1}', action: labelmap}]",
            Some(l(&[
                ("__meta_my_foo", "aaa"),
                ("__meta_my_bar", "bbb"),
                ("__meta_other", "ccc"),
                ("my_foo", "aaa"),
                ("my_bar", "bbb"),
            ])),
        ),
        // labeldrop / labelkeep
        (
            abc.clone(),
            "[{regex: '(b)', action: labeldrop}]",
            Some(l(&[("a", "foo"), ("c", "baz")])),
        ),
        (
            abc.clone(),
            "[{regex: 'a|b', action: labeldrop}]",
            Some(l(&[("c", "baz")])),
        ),
        (
            abc.clone(),
            "[{regex: '(b)', action: labelkeep}]",
            Some(l(&[("b", "bar")])),
        ),
        (
            abc.clone(),
            "[{regex: 'a|b', action: labelkeep}]",
            Some(l(&[("a", "foo"), ("b", "bar")])),
        ),
        // dropping every label drops the set
        (abc.clone(), "[{regex: '.*', action: labeldrop}]", None),
        // lowercase / uppercase
        (
            l(&[("foo", "bAr123Foo")]),
            "[{source_labels: [foo], target_label: foo_uppercase, action: uppercase},
              {source_labels: [foo], target_label: foo_lowercase, action: lowercase}]",
            Some(l(&[
                ("foo", "bAr123Foo"),
                ("foo_uppercase", "BAR123FOO"),
                ("foo_lowercase", "bar123foo"),
            ])),
        ),
        // keepequal / dropequal
        (
            l(&[("__tmp_port", "1234"), ("__port1", "1234"), ("__port2", "5678")]),
            "[{source_labels: [__tmp_port], target_label: __port1, action: keepequal}]",
            Some(l(&[("__tmp_port", "1234"), ("__port1", "1234"), ("__port2", "5678")])),
        ),
        (
            l(&[("__tmp_port", "1234"), ("__port1", "1234"), ("__port2", "5678")]),
            "[{source_labels: [__tmp_port], target_label: __port2, action: keepequal}]",
            None,
        ),
        (
            l(&[("__tmp_port", "1234"), ("__port1", "1234"), ("__port2", "5678")]),
            "[{source_labels: [__tmp_port], target_label: __port1, action: dropequal}]",
            None,
        ),
        (
            l(&[("__tmp_port", "1234"), ("__port1", "1234"), ("__port2", "5678")]),
            "[{source_labels: [__tmp_port], target_label: __port2, action: dropequal}]",
            Some(l(&[("__tmp_port", "1234"), ("__port1", "1234"), ("__port2", "5678")])),
        ),
        // a value with a newline matches `.*` (the regex is compiled with (?s))
        (
            l(&[("a", "x\ny")]),
            "[{source_labels: [a], regex: 'x.*', action: drop}]",
            None,
        ),
    ];
    for (i, (input, yaml, want)) in cases.into_iter().enumerate() {
        let got = process(&input, &cfgs(yaml));
        assert_eq!(got, want, "case {i}: {yaml}");
    }
}

#[test]
fn defaults_are_prometheus_defaults() {
    let c = cfg("{target_label: x}");
    assert_eq!(c.action, Action::Replace);
    assert_eq!(c.separator, ";");
    assert_eq!(c.regex.as_str(), "(.*)");
    assert_eq!(c.replacement, "$1");
    assert_eq!(
        c,
        RelabelConfig {
            target_label: "x".into(),
            ..RelabelConfig::default()
        }
    );
}

#[test]
fn validation_errors_match_prometheus() {
    let err = |yaml: &str| {
        let c: RelabelConfig = serde_yaml_ng::from_str(yaml).unwrap();
        c.validate().unwrap_err()
    };
    assert_eq!(
        err("{action: hashmod, target_label: x, source_labels: [a]}"),
        "relabel configuration for hashmod requires non-zero modulus"
    );
    assert_eq!(
        err("{source_labels: [a]}"),
        "relabel configuration for replace action requires 'target_label' value"
    );
    assert_eq!(
        err("{source_labels: [a], target_label: 1x}"),
        "\"1x\" is invalid 'target_label' for replace action"
    );
    assert_eq!(
        err("{source_labels: [a], target_label: 'x-$1'}"),
        "\"x-$1\" is invalid 'target_label' for replace action"
    );
    assert_eq!(
        err("{source_labels: [a], target_label: l, action: lowercase, replacement: x}"),
        "'replacement' can not be set for lowercase action"
    );
    assert_eq!(
        err("{regex: 'a', replacement: '$1-x', action: labelmap}"),
        "\"$1-x\" is invalid 'replacement' for labelmap action"
    );
    assert_eq!(
        err("{source_labels: [a], regex: 'a', action: labeldrop}"),
        "labeldrop action requires only 'regex', and no other fields"
    );
    assert_eq!(
        err("{source_labels: [a], target_label: b, regex: x, action: keepequal}"),
        "keepequal action requires only 'source_labels' and `target_label`, and no other fields"
    );
    // template target labels that expand to a name are accepted
    cfg("{source_labels: [a], regex: '(.*)', target_label: 'x_${1}'}");

    let v: Vec<RelabelConfig> =
        serde_yaml_ng::from_str("[{target_label: a}, {action: hashmod, target_label: b}]").unwrap();
    assert_eq!(
        validate_all(&v, "tsdb.scrape_configs[0].relabel_configs").unwrap_err(),
        "tsdb.scrape_configs[0].relabel_configs[1]: relabel configuration for hashmod requires non-zero modulus"
    );
}

#[test]
fn yaml_errors() {
    let e = serde_yaml_ng::from_str::<RelabelConfig>("{action: nope}").unwrap_err();
    assert!(
        e.to_string().contains("unknown relabel action \"nope\""),
        "{e}"
    );
    let e = serde_yaml_ng::from_str::<RelabelConfig>("{regex: '('}").unwrap_err();
    assert!(e.to_string().contains("\"(\""), "{e}");
    let e = serde_yaml_ng::from_str::<RelabelConfig>("{source_labels: ['a-b']}").unwrap_err();
    assert!(
        e.to_string().contains("\"a-b\" is not a valid label name"),
        "{e}"
    );
    let e = serde_yaml_ng::from_str::<RelabelConfig>("{sourcelabels: [a]}").unwrap_err();
    assert!(e.to_string().contains("unknown field"), "{e}");
}

#[test]
fn builder_semantics() {
    let mut b = LabelsBuilder::new(&l(&[("a", "1")]));
    assert_eq!(b.get("missing"), "");
    b.set("a", "");
    b.set("b", "2");
    assert_eq!(b.labels(), l(&[("b", "2")]));
}
