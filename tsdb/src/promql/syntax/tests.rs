use proptest::prelude::*;

use super::*;

fn ctx(step_ms: i64, range_ms: i64) -> Context {
    Context {
        step_ms,
        range_ms,
        experimental: true,
    }
}

/// The text `promql-parser` gets.
fn text(q: &str, c: Context) -> String {
    match rewrite(q, c) {
        Ok(rw) => rw.text.unwrap_or_else(|| q.to_string()),
        Err(e) => format!("error: {e}"),
    }
}

fn err(q: &str, c: Context) -> String {
    match rewrite(q, c) {
        Ok(rw) => rw.deferred_error.unwrap_or_default(),
        Err(e) => e,
    }
}

#[test]
fn evaluates_duration_expressions_in_brackets() {
    let c = ctx(0, 0);
    for (q, want) in [
        ("foo[26m+4m]", "foo[30m]"),
        ("foo[60*30]", "foo[30m]"),
        ("foo[2m*(10+5)]", "foo[30m]"),
        ("foo[24m+((1.5*2m)+2m)]", "foo[29m]"),
        ("foo[-5m+35m]", "foo[30m]"),
        ("foo[1h/2]", "foo[30m]"),
        ("foo[1h30m % 1h]", "foo[30m]"),
        ("foo[30m1s-30m1s % 1m]", "foo[30m]"),
        ("foo[(9m30s+30s)*3]", "foo[30m]"),
        ("foo[1d+1ms]", "foo[1d1ms]"),
        ("foo[2^3]", "foo[8s]"),
        ("foo[+5m]", "foo[5m]"),
        (
            "x[29s+1s:((((8 - 2) / 3) * 7s) % 4) + 8000ms]",
            "x[30s:10s]",
        ),
        ("x[29s+1s:]", "x[30s:]"),
        ("x[30s:5s+5s]", "x[30s:10s]"),
    ] {
        assert_eq!(text(q, c), want, "{q}");
    }
}

#[test]
fn step_and_range_come_from_the_query() {
    let c = ctx(5_000, 10_000);
    assert_eq!(text("m[step()+1]", c), "m[6s]");
    assert_eq!(text("m[1+(STep()-5)*2]", c), "m[1s]");
    assert_eq!(text("m[max_of(min_of(step()+1,1h),1ms)]", c), "m[6s]");
    assert_eq!(text("m[range()]", c), "m[10s]");
    let rw = rewrite("m[range()]", c).map_err(|e| e.to_string());
    assert!(rw.is_ok_and(|r| r.uses_query_context));
    let rw = rewrite("m[5m+1m]", c).map_err(|e| e.to_string());
    assert!(rw.is_ok_and(|r| !r.uses_query_context && r.experimental));
}

#[test]
fn offset_takes_what_upstream_grammar_gives_it() {
    let c = ctx(5_000, 10_000);
    for (q, want) in [
        // Literals end the offset; the rest is a binary operation.
        ("m offset 100 + 2", "m offset 100 + 2"),
        ("m offset 2 ^ 2", "m offset 2 ^ 2"),
        ("m offset -2 ^ 2", "m offset -2 ^ 2"),
        ("m offset -step()*2", "m offset -5s*2"),
        ("m offset step()^0", "m offset 5s^0"),
        ("m offset min_of(step(), 1s)+8000", "m offset 1s+8000"),
        ("m offset -(min_of(step(), 2s)-5)+8000", "m offset 3s+8000"),
        ("m offset +min_of(step(), 1s)^0", "m offset 1s^0"),
        // Parentheses hold an expression, which goes on.
        ("m offset (100 + 2)", "m offset 1m42s"),
        ("m offset (2 ^ 2)", "m offset 4s"),
        ("m offset (-2 ^ 2)", "m offset -4s"),
        ("m offset (1m) * 2", "m offset 2m"),
        ("m offset range()", "m offset 10s"),
        ("m offset (step()*0)", "m offset 0"),
        (
            "m[1m:1s] offset -(20*(((((8 - 2) / 3) * 7s) % 4) + 8000ms))",
            "m[1m:1s] offset -3m20s",
        ),
        ("m OFFSET STEP()", "m OFFSET 5s"),
    ] {
        assert_eq!(text(q, c), want, "{q}");
    }
}

#[test]
fn instant_queries_have_zero_step_and_range() {
    let c = ctx(0, 0);
    assert_eq!(text("m offset range()", c), "m offset 0");
    assert_eq!(
        err("m[5m:step()]", c),
        "5:11: duration must be greater than 0"
    );
}

#[test]
fn errors_are_upstreams() {
    let c = ctx(0, 0);
    for (q, want) in [
        (
            "foo[-1]",
            "1:5: parse error: duration must be greater than 0",
        ),
        (
            "foo[0m]",
            "1:5: parse error: duration must be greater than 0",
        ),
        ("foo[5m-10m]", "4:10: duration must be greater than 0"),
        ("foo[5s/0d]", "1:7: parse error: division by zero"),
        ("foo[5s%0]", "1:7: parse error: modulo by zero"),
        // A wrapped expression keeps its own range, as upstream's `Wrapped`.
        ("foo[5s/(1-1)]", "4:11: division by zero"),
        (
            "foo[5mm]",
            "1:5: parse error: bad number or duration syntax: \"5mm\"",
        ),
        (
            "foo[5m1h]",
            "1:5: parse error: not a valid duration string: \"5m1h\"",
        ),
        (
            "foo[\"5m\"]",
            "1:5: parse error: unexpected character in duration expression: '\"'",
        ),
        (
            "foo[]",
            "1:5: parse error: unexpected \"]\" in subquery or range selector, expected number, duration, step(), or range()",
        ),
        (
            "foo offset 9.5e10",
            "1:12: parse error: duration out of range",
        ),
        ("foo[2^2000]", "4:10: duration is NaN or infinite"),
        (
            "foo[1m:0.0005]",
            "1:8: parse error: subquery step must be at least 1ms",
        ),
        ("foo[1m:1ms/2]", "7:12: subquery step must be at least 1ms"),
    ] {
        assert_eq!(err(q, c), want, "{q}");
    }
}

#[test]
fn experimental_syntax_needs_the_flag() {
    let off = Context::default();
    assert_eq!(
        err("rate(foo[5m+1m])", off),
        "1:10: parse error: experimental duration expression is not enabled"
    );
    assert_eq!(
        err("foo offset step()", off),
        "1:12: parse error: experimental duration expression is not enabled"
    );
    assert_eq!(
        err("rate(foo[5m] anchored)", off),
        "1:6: parse error: anchored modifier is experimental and not enabled"
    );
    // Standard syntax is fine without it, and so is a signed literal.
    assert_eq!(text("foo[5m] offset -1m", off), "foo[5m] offset -1m");
    assert_eq!(text("foo[+5m]", off), "foo[5m]");
}

#[test]
fn modifiers_are_recorded_by_selector_ordinal() {
    let c = ctx(0, 0);
    let q = "a + rate(b[5m] anchored) / sum by (x) (c{y=\"smoothed\"} smoothed) + d offset -100 smoothed";
    let rw = rewrite(q, c).unwrap_or_default();
    assert_eq!(rw.selectors, 4);
    let got: Vec<(usize, RangeModifier, bool)> = rw
        .modifiers
        .iter()
        .map(|n| (n.ordinal, n.modifier, n.matrix))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, RangeModifier::Anchored, true),
            (2, RangeModifier::Smoothed, false),
            (3, RangeModifier::Smoothed, false),
        ]
    );
    let t = rw.text.unwrap_or_default();
    assert!(!t.contains("anchored") && t.contains("\"smoothed\""), "{t}");
    assert_eq!(t.len(), q.len());
    let parsed = promql_parser::parser::parse(&t).map_err(|e| e.to_string());
    let bound = parsed.and_then(|e| bind(&e, &rewrite(q, c).unwrap_or_default()));
    assert_eq!(
        bound,
        Ok(vec![
            None,
            Some(RangeModifier::Anchored),
            Some(RangeModifier::Smoothed),
            Some(RangeModifier::Smoothed)
        ])
    );
}

#[test]
fn keywords_are_metric_names_where_an_expression_starts() {
    let c = ctx(0, 0);
    for q in [
        "anchored",
        "smoothed{job=\"x\"}",
        "offset offset 5m",
        "sum by (anchored, offset) (step)",
        "rate(smoothed[5m])",
        "foo and anchored",
        "count(x) without (smoothed)",
        "step() + range()",
        "vector(step())",
        "foo # offset (1+2) anchored\n",
        "label_replace(foo, \"a\", \"[5m+1m]\", `offset (1+2)`, 'smoothed')",
    ] {
        let rw = rewrite(q, c).unwrap_or_default();
        assert_eq!(rw.text, None, "{q}");
        assert!(rw.modifiers.is_empty(), "{q}");
    }
    let rw = rewrite("offset smoothed", c).unwrap_or_default();
    assert_eq!(rw.modifiers.len(), 1);
}

#[test]
fn misplaced_modifiers_are_errors() {
    let c = ctx(0, 0);
    for (q, want) in [
        (
            "foo[5m:1m] anchored",
            "1:1: parse error: anchored modifier is not supported for subqueries",
        ),
        (
            "sum(foo) smoothed",
            "1:1: parse error: smoothed modifier not implemented",
        ),
        (
            "(foo) smoothed",
            "1:1: parse error: smoothed modifier not implemented",
        ),
        (
            "foo anchored smoothed",
            "1:1: parse error: anchored and smoothed modifiers cannot be used together",
        ),
    ] {
        assert_eq!(err(q, c), want, "{q}");
    }
}

#[test]
fn formats_durations_promql_parser_reads() {
    assert_eq!(format_ms(0), "0");
    assert_eq!(format_ms(-1_500), "-1s500ms");
    assert_eq!(format_ms(86_400_000 * 400 + 1), "400d1ms");
}

/// Queries without duration expressions or modifiers, built from pieces that look like them
/// inside strings, comments and label matchers.
fn plain_query() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec![
        "foo", "offset", "anchored", "smoothed", "step", "range", "sum", "by", "a:b",
    ]);
    let label = prop::sample::select(vec!["job", "offset", "anchored", "smoothed", "step"]);
    let value = prop::sample::select(vec![
        "\"[5m+1m]\"",
        "'offset (1+2)'",
        "`anchored`",
        "\"a\\\"b smoothed\"",
        "\"step()\"",
    ]);
    let dur = prop::sample::select(vec!["5m", "1h30m", "30", "1.5", "2d", "10s"]);
    let selector = (
        name,
        prop::option::of((label, value)),
        prop::option::of(dur.clone()),
    )
        .prop_map(|(n, m, r)| {
            let mut s = n.to_string();
            if let Some((l, v)) = m {
                s.push_str(&format!("{{{l}={v}}}"));
            }
            if let Some(r) = r {
                s.push_str(&format!("[{r}]"));
            }
            s
        });
    let leaf = (
        selector,
        prop::option::of((prop::bool::ANY, dur)),
        prop::bool::ANY,
    )
        .prop_map(|(s, off, at)| {
            let mut s = s;
            if let Some((neg, d)) = off {
                s.push_str(&format!(" offset {}{d}", if neg { "-" } else { "" }));
            }
            if at {
                s.push_str(" @ 100");
            }
            s
        });
    leaf.prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            (
                inner.clone(),
                inner.clone(),
                prop::sample::select(vec![
                    "+",
                    "and",
                    "* on (offset)",
                    "/ ignoring(step) group_left",
                    "> bool"
                ])
            )
                .prop_map(|(a, b, op)| format!("{a} {op} {b}")),
            inner
                .clone()
                .prop_map(|a| format!("sum by (anchored) ({a})")),
            inner.clone().prop_map(|a| format!("rate({a}[5m:1m])")),
            inner
                .clone()
                .prop_map(|a| format!("({a}) # offset (1+2) smoothed\n")),
            inner.prop_map(|a| format!("label_replace({a}, \"x\", '[1m*2]', `y`, \"anchored\")")),
        ]
    })
}

proptest! {
    #[test]
    fn plain_queries_pass_through_unchanged(q in plain_query()) {
        let rw = rewrite(&q, ctx(15_000, 3_600_000)).map_err(TestCaseError::fail)?;
        prop_assert_eq!(rw.text, None);
        prop_assert!(rw.modifiers.is_empty());
        prop_assert!(!rw.experimental && !rw.uses_query_context);
        // Also without experimental syntax enabled.
        prop_assert!(rewrite(&q, Context::default()).is_ok());
    }

    #[test]
    fn sums_of_durations_equal_their_literal(a in 1u32..100_000, b in 1u32..100_000) {
        // Seconds in floating point, truncated to milliseconds as upstream converts them:
        // the sum, or a millisecond less.
        let q = format!("rate(foo[{a}s+{b}ms])");
        let ms = i64::from(a) * 1000 + i64::from(b);
        let got = text(&q, ctx(0, 0));
        prop_assert!(
            [ms, ms - 1].iter().any(|m| got == format!("rate(foo[{}])", format_ms(*m))),
            "{} for {}", got, ms
        );
    }
}
