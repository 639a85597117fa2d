//! Regression guard: Prometheus's PromQL test scripts that fully pass must keep passing.

use std::path::PathBuf;

use tests::promqltest::run_script;

/// Core scripts with no failing eval (native-histogram and experimental evals are skipped).
const PASSING: &[&str] = &[
    "aggregators",
    "at_modifier",
    "collision",
    "functions",
    "histograms",
    "limit",
    "literals",
    "name_label_dropping",
    "operators",
    "range_queries",
    "selectors",
    "staleness",
    "subquery",
    "trig_functions",
    // Experimental-feature scripts whose in-scope evals all pass.
    "duration_expression",
    "extended_vectors",
    "fill-modifier",
    "info",
    "native_histograms",
    "start_timestamps",
    "type_and_unit",
];

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/promql/testdata")
}

#[test]
fn upstream_scripts_pass() {
    let dir = testdata();
    // shared/ sits beside the checkout on every machine of the project and in CI: a missing
    // folder is a broken set-up, not a reason to pass.
    assert!(
        dir.is_dir(),
        "{} not found: the PromQL test scripts live in shared/ beside the checkout",
        dir.display()
    );
    let mut failures = Vec::new();
    let mut passed = 0;
    for name in PASSING {
        let path = dir.join(format!("{name}.test"));
        let input = std::fs::read_to_string(&path).expect("read test script");
        let r = run_script(&input);
        passed += r.passed;
        failures.extend(r.failures.iter().map(|f| format!("{name}: {f}")));
    }
    assert!(
        failures.is_empty(),
        "failing evals:\n{}",
        failures.join("\n")
    );
    assert!(passed > 1000, "only {passed} evals passed");
}

#[test]
fn a_wrong_expectation_fails() {
    let script = "load 1m\n  up{job=\"a\"} 1 2 3\n\neval instant at 2m up\n  up{job=\"a\"} 4\n\neval instant at 2m up\n  up{job=\"a\"} 3\n";
    let r = run_script(script);
    assert_eq!((r.passed, r.failed), (1, 1), "{:?}", r.failures);
    assert!(r.failures[0].contains("line 4"), "{:?}", r.failures);
}

#[test]
fn native_histogram_evals_are_skipped() {
    let script = "load 1m\n  h {{schema:0 sum:1 count:1}}x2\n\neval instant at 1m h\n  {} {{schema:0 sum:1 count:1}}\n";
    let r = run_script(script);
    assert_eq!((r.passed, r.failed, r.skipped), (0, 0, 1));
}
