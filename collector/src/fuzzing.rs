//! Bodies of the `cargo fuzz` targets under `collector/fuzz/` (see `docs/fuzzing.md`), one
//! function per target, named as the target. Each takes the fuzzer's bytes and panics when a
//! property fails; the unit tests below run them over the checked-in corpus and crash
//! reproducers, so the stable toolchain keeps them as regression tests.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use crate::accesslog::format::{COMBINED, LogFormat};
use crate::accesslog::parse::{Access, Fields, Parser};
use crate::accesslog::red::{DEFAULT_BUCKETS, Red, RedState};
use crate::containerlog::join::{Anchor, Joiner, PendingLine};
use crate::containerlog::parse::{Format, parse};
use crate::tail::FileId;

/// Access-log lines: the first line is an nginx `log_format`, every other line goes through
/// it, the `combined` format and the JSON parser, and what matches is counted as the RED
/// metrics count it: no panic.
pub fn accesslog(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let mut parsers = vec![Parser::Json];
    if let Some(Ok(f)) = lines.next().map(LogFormat::compile) {
        parsers.push(Parser::Nginx(f));
    }
    if let Ok(f) = LogFormat::compile(COMBINED) {
        parsers.push(Parser::Nginx(f));
    }
    let mut red = Red::new(DEFAULT_BUCKETS.to_vec(), true, 4);
    for line in lines {
        for p in &parsers {
            let mut fields: Fields<'_> = Vec::new();
            if !p.parse(line, &mut fields) {
                continue;
            }
            red.observe(&Access::from_fields(&fields, "host"));
        }
    }
}

/// Container-log lines (CRI and Docker json-file) and log file paths: a line parsed with
/// detection parses the same in the detected format; fragments joined with a small bound never
/// exceed it.
pub fn containerlog(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path: Arc<Path> = Arc::from(Path::new("/var/log/pods/x.log"));
    let mut joiner = Joiner::new(64, 1000);
    let mut now = 0;
    for line in text.split('\n') {
        let _ = crate::containerlog::path::parse(Path::new(line));
        let Some((format, frag)) = parse(Format::Auto, line) else {
            continue;
        };
        assert_eq!(parse(format, line).map(|(_, f)| f), Some(frag.clone()));
        now += 400;
        let at = Anchor {
            file: FileId { dev: 1, ino: 2 },
            end: now,
        };
        let joined = joiner.push(&path, frag, at, now).into_iter();
        for j in joined.chain(joiner.expire(now)) {
            assert!(j.line.len() <= 64, "{} bytes joined", j.line.len());
        }
    }
}

/// Files of a cgroup (stat files, PSI, io and blkio statistics, `/proc/<pid>/net/dev`),
/// `/proc/self/mountinfo`, and cgroup paths: no panic.
pub fn cgroup(data: &[u8]) {
    use crate::cgroup::parse as p;
    let _ = (
        p::single_u64(data),
        p::single_i64(data),
        p::psi_totals(data),
    );
    let _ = (p::keyed(data, "total_rss"), p::major_minor(p::trim(data)));
    p::flat_keyed(data).for_each(drop);
    p::io_stat(data, |_, _, _| {});
    p::blkio_bytes(data, |_, _, _| {});
    p::net_dev(data, |_, _, _| {});
    let text = String::from_utf8_lossy(data);
    let _ = crate::cgroup::Hierarchies::from_mountinfo(&text, Path::new("/sys/fs/cgroup"));
    for line in text.lines() {
        let id = crate::cgroup::identity::parse(line);
        if id.is_container() {
            assert!(
                id.container_id.is_some() || id.pod_uid.is_some(),
                "{line:?}: {id:?}"
            );
        }
    }
}

/// Answers of the resolvers' HTTP APIs: Docker's `GET /containers/<id>/json` response and the
/// kubelet's pod list.
pub fn resolve(data: &[u8]) {
    let _ = crate::resolve::docker::parse_response(data);
    let _ = crate::resolve::kubelet::PodIndex::from_json(data);
}

/// Pieces of the pipelines' checkpoints (RED counts, pending container-log lines) as JSON:
/// restored state keeps counting and checkpoints to JSON that restores the same.
pub fn checkpoint(data: &[u8]) {
    if let Ok(state) = serde_json::from_slice::<RedState>(data) {
        let mut red = Red::new(DEFAULT_BUCKETS.to_vec(), false, 8);
        red.restore(state);
        let fields: Fields<'_> = vec![(Cow::Borrowed("status"), Cow::Borrowed("200"))];
        red.observe(&Access::from_fields(&fields, "host"));
        let saved = red.state();
        let json = serde_json::to_vec(&saved).unwrap_or_else(|e| panic!("{saved:?}: {e}"));
        let mut again = Red::new(DEFAULT_BUCKETS.to_vec(), false, 8);
        again.restore(serde_json::from_slice(&json).unwrap_or_else(|e| panic!("{e}")));
        let json_again = serde_json::to_vec(&again.state()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json_again, json);
    }
    if let Ok(pending) = serde_json::from_slice::<Vec<PendingLine>>(data) {
        let mut joiner = Joiner::new(1024, 1000);
        pending.into_iter().for_each(|p| joiner.restore(p, 0));
        let _ = joiner.checkpoint();
        let _ = joiner.expire(5000);
    }
}

/// The collector's configuration section (access logs, container logs, scrape jobs): a section
/// that parses and validates serializes to YAML that parses to the same section.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(c) = serde_yaml_ng::from_str::<crate::CollectorConfig>(text) else {
        return;
    };
    if c.validate().is_err() {
        return;
    }
    let yaml = serde_yaml_ng::to_string(&c).unwrap_or_else(|e| panic!("serializing {c:?}: {e}"));
    let back: crate::CollectorConfig = serde_yaml_ng::from_str(&yaml)
        .unwrap_or_else(|e| panic!("{text:?} serialized as {yaml:?}, which fails: {e}"));
    assert_eq!(back, c, "{yaml}");
}

#[cfg(test)]
mod tests {
    bus::fuzz_corpus_tests!(accesslog, cgroup, checkpoint, config, containerlog, resolve);
}
