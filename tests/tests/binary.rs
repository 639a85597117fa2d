//! The real `sextant` binary: start-up, operations endpoints, configuration errors, shutdown.
// Integration tests: an unwrap is an assertion, also in their helpers.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use tests::{Sextant, signal, wait_timeout, workspace_bin};

fn sextant() -> Command {
    Command::new(workspace_bin("sextant").unwrap())
}

fn get(url: &str) -> (u16, String, String) {
    let r = reqwest::blocking::get(url).unwrap();
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ctype, r.text().unwrap())
}

#[test]
fn run_is_ready_within_5s_and_serves_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sextant::start(&dir.path().join("data"), &[]).unwrap();
    // Ready is checked right away: the address is printed only once everything is open.
    let (status, _, body) = get(&s.url("/-/ready"));
    assert_eq!(status, 200, "{body}");
    assert!(
        s.started_in < Duration::from_secs(5),
        "took {:?}",
        s.started_in
    );
    let (status, _, body) = get(&s.url("/-/healthy"));
    assert_eq!((status, body.as_str()), (200, "Sextant is Healthy.\n"));

    let (status, ctype, body) = get(&s.url("/metrics"));
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    for family in [
        "sextant_build_info{version=",
        "sextant_api_requests_total{code=\"200\",handler=\"/-/ready\"} 1",
        "sextant_bus_log_bytes{topic=\"metrics\"}",
        "process_resident_memory_bytes",
    ] {
        assert!(body.contains(family), "{family} missing from:\n{body}");
    }
    let (status, _, _) = get(&s.url("/no/such/path"));
    assert_eq!(status, 404);
    assert!(s.stderr().contains("sextant ready"), "{}", s.stderr());
}

#[test]
fn sigterm_shuts_down_cleanly_and_releases_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = Sextant::start(&data, &[]).unwrap();
    // While the first process holds the data dir, a second one is refused, naming the problem.
    let second = sextant()
        .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("in use by another process"), "{err}");

    signal(&s.child, libc::SIGTERM).unwrap();
    let status = wait_timeout(&mut s.child, Duration::from_secs(10))
        .unwrap()
        .expect("sextant did not exit within 10 s of SIGTERM");
    assert!(status.success(), "{status:?}");
    let log = s.stderr();
    assert!(log.contains("signal=\"SIGTERM\""), "{log}");
    assert!(log.contains("embedded bus closed"), "{log}");
    assert!(log.contains("shutdown complete"), "{log}");
    // The lock is released: the next start on the same data dir works at once.
    drop(s);
    let again = Sextant::start(&data, &[]).unwrap();
    assert_eq!(get(&again.url("/-/ready")).0, 200);
}

#[test]
fn bad_flags_and_configs_exit_non_zero_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str, &str); 3] = [
        (&["run", "--no-such-flag"], "", "--no-such-flag"),
        (&["run", "--listen", "nowhere"], "", "server.listen"),
        (&["frobnicate"], "", "frobnicate"),
    ];
    for (args, _, needle) in cases {
        let out = sextant().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }

    let bad = [
        (
            "server:\n  listen: 127.0.0.1:0\n  data_dri: x\n",
            "server.data_dri",
        ),
        (
            "bus:\n  embedded:\n    retention: forever\n",
            "bus.embedded.retention",
        ),
        (
            "bus:\n  kafka:\n    compression: zip\n",
            "bus.kafka.compression",
        ),
        ("log:\n  format: xml\n", "log.format"),
        ("server: [1, 2\n", "not valid YAML"),
    ];
    for (i, (text, needle)) in bad.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.yaml"));
        std::fs::write(&path, text).unwrap();
        for args in [vec!["config", "check"], vec!["run", "--config"]] {
            let out = sextant().args(&args).arg(&path).output().unwrap();
            assert_eq!(out.status.code(), Some(2), "{args:?} {text}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains(needle) && err.contains(&format!("bad{i}.yaml")),
                "{args:?} {text}: {err}"
            );
        }
    }
    let out = sextant()
        .args(["config", "check", "/no/such/file.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/file.yaml"));
}

#[test]
fn config_example_checks_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = sextant().args(["config", "example"]).output().unwrap();
    assert!(out.status.success());
    let example = String::from_utf8(out.stdout).unwrap();
    assert!(example.contains("bus:") && example.contains("kafka:"));
    let path = dir.path().join("sextant.yaml");
    std::fs::write(&path, &example).unwrap();
    let out = sextant()
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Environment overrides are checked too, naming the variable's key.
    let out = sextant()
        .args(["config", "check"])
        .arg(&path)
        .env("SEXTANT__BUS__EMBEDDED__SEGMENT_BYTES", "1KiB")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bus.embedded.segment_bytes"));
    // And the example runs as is (with the listen address and data dir from flags).
    let s = Sextant::start(
        &dir.path().join("data"),
        &["--config", path.to_str().unwrap()],
    )
    .unwrap();
    assert_eq!(get(&s.url("/-/ready")).0, 200);
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["config", "--help"],
        vec!["config", "example", "--help"],
        vec!["config", "check", "--help"],
    ] {
        let out = sextant().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage: sextant"), "{args:?}: {text}");
    }
    let out = sextant().arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("sextant {}", env!("CARGO_PKG_VERSION"))
    );
}
