//! The pipeline over real files laid out like `/var/log/pods`: parsing, joining, labels,
//! rotation, checkpoint and restart.

use std::io::Write;
use std::time::Duration;

use super::*;
use crate::testutil::append;

const UID: &str = "5d8a6f2e-1b7c-4c5e-9f3a-2b1c0d9e8f7a";
const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(format!("pods/shop_web-0_{UID}/nginx"))).unwrap();
        std::fs::create_dir_all(dir.path().join(format!("docker/{ID}"))).unwrap();
        Fixture { dir }
    }

    fn cri(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("pods/shop_web-0_{UID}/nginx/0.log"))
    }

    fn docker(&self) -> PathBuf {
        self.dir.path().join(format!("docker/{ID}/{ID}-json.log"))
    }

    fn config(&self) -> ContainerLogConfig {
        let d = self.dir.path().display();
        ContainerLogConfig {
            paths: vec![
                format!("{d}/pods/*/*/*.log"),
                format!("{d}/docker/*/*-json.log"),
            ],
            checkpoint_file: "cp/container_logs.json".into(),
            rotate_wait: Duration::from_secs(1),
            max_line_bytes: 1024,
            labels: [("node".to_owned(), "n1".to_owned())].into(),
            ..Default::default()
        }
    }

    fn open(&self) -> ContainerLog {
        ContainerLog::open(&self.config(), None, &self.dir.path().join("data")).unwrap()
    }
}

/// `2026-01-01T00:00:0<s>.000000<n>Z` and its nanoseconds.
fn ts(s: u32, n: u32) -> (String, i64) {
    (
        format!("2026-01-01T00:00:{s:02}.{n:09}Z"),
        1_767_225_600_000_000_000 + i64::from(s) * 1_000_000_000 + i64::from(n),
    )
}

fn cri(s: u32, stream: &str, tag: &str, content: &str) -> String {
    format!("{} {stream} {tag} {content}\n", ts(s, 0).0)
}

fn docker(s: u32, stream: &str, log: &str) -> String {
    format!(
        "{}\n",
        serde_json::json!({"log": log, "stream": stream, "time": ts(s, 0).0})
    )
}

fn at(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
}

/// (labels as `name=value` joined by `,`, timestamp, line) of every entry, in stream order.
fn entries(batch: &Batch) -> Vec<(String, i64, String)> {
    batch
        .streams
        .iter()
        .flat_map(|s| {
            let labels = s
                .labels
                .iter()
                .map(|l| format!("{}={}", l.name, l.value))
                .collect::<Vec<_>>()
                .join(",");
            s.entries
                .iter()
                .map(move |e| (labels.clone(), e.timestamp_ns, e.line.clone()))
        })
        .collect()
}

fn lines(batch: &Batch) -> Vec<String> {
    entries(batch).into_iter().map(|(_, _, l)| l).collect()
}

fn poll_commit(c: &mut ContainerLog, mono_ms: u64) -> Batch {
    let b = c.poll(mono_ms, at(mono_ms / 1000));
    c.commit(&b).unwrap();
    b
}

#[test]
fn cri_lines_are_joined_labelled_and_keep_their_timestamps() {
    let f = Fixture::new();
    let mut text = cri(1, "stdout", "F", "first");
    text += &cri(2, "stdout", "P", "par");
    text += &cri(3, "stderr", "F", "an error");
    text += &cri(4, "stdout", "P", "ti");
    text += &cri(5, "stdout", "F", "al");
    text += "not a cri line\n";
    append(&f.cri(), &text);
    let mut c = f.open();
    let b = poll_commit(&mut c, 0);
    let path = f.cri().display().to_string();
    let base = format!(
        "container=nginx,filename={path},job=container-logs,namespace=shop,node=n1,pod=web-0,pod_uid={UID}"
    );
    assert_eq!(
        entries(&b),
        vec![
            // A line in neither format: no stream, the time of the line before it.
            (base.clone(), ts(5, 0).1, "not a cri line".to_owned()),
            (format!("{base},stream=stdout"), ts(1, 0).1, "first".into()),
            // Joined across an interleaved stderr line, with its first piece's time.
            (
                format!("{base},stream=stdout"),
                ts(2, 0).1,
                "partial".into()
            ),
            (
                format!("{base},stream=stderr"),
                ts(3, 0).1,
                "an error".into()
            ),
        ]
    );
    assert_eq!(
        b.lines,
        FormatCounts {
            cri: 3,
            docker: 0,
            raw: 1
        }
    );
    assert_eq!(b.joins, 1);
}

#[test]
fn a_partial_line_split_across_reads_is_joined_once() {
    let f = Fixture::new();
    let mut c = f.open();
    let p = cri(1, "stdout", "P", "aaa");
    let full = cri(2, "stdout", "F", "bbb");
    // The first read ends inside the `F` line: its start waits for its newline.
    append(&f.cri(), &format!("{p}{}", &full[..20]));
    let b = poll_commit(&mut c, 0);
    assert!(lines(&b).is_empty());
    append(&f.cri(), &full[20..]);
    let b = poll_commit(&mut c, 100);
    assert_eq!(lines(&b), vec!["aaabbb"]);
    assert_eq!(entries(&b)[0].1, ts(1, 0).1);
    assert_eq!(b.joins, 1);
}

#[test]
fn a_restart_in_the_middle_of_a_partial_sequence_loses_and_repeats_nothing() {
    let f = Fixture::new();
    let mut c = f.open();
    append(
        &f.cri(),
        &(cri(1, "stdout", "F", "before")
            + &cri(2, "stdout", "P", "one-")
            + &cri(3, "stderr", "F", "err")),
    );
    let b = poll_commit(&mut c, 0);
    assert_eq!(lines(&b), vec!["before", "err"]);
    append(&f.cri(), &cri(4, "stdout", "P", "two-"));
    let b = poll_commit(&mut c, 100);
    assert!(lines(&b).is_empty());
    drop(c);

    append(
        &f.cri(),
        &(cri(5, "stdout", "F", "three") + &cri(6, "stdout", "F", "after")),
    );
    let mut c = f.open();
    let b = poll_commit(&mut c, 0);
    assert_eq!(lines(&b), vec!["one-two-three", "after"]);
    assert_eq!(entries(&b)[0].1, ts(2, 0).1);
    assert_eq!(b.joins, 1);

    // Nothing more, after another restart either.
    let mut c = f.open();
    let b = poll_commit(&mut c, 0);
    assert!(lines(&b).is_empty());
}

#[test]
fn a_stale_checkpointed_partial_line_is_dropped_when_its_file_is_read_again() {
    let f = Fixture::new();
    let mut c = f.open();
    append(
        &f.cri(),
        &(cri(1, "stdout", "F", "x") + &cri(2, "stdout", "P", "one-")),
    );
    poll_commit(&mut c, 0);
    drop(c);
    // Rewritten in place (same inode): the checkpoint's guard no longer matches, the file is
    // read from 0 and the partial line is rebuilt from the file, not doubled.
    let text =
        cri(1, "stdout", "F", "y") + &cri(2, "stdout", "P", "uno-") + &cri(3, "stdout", "F", "dos");
    std::fs::OpenOptions::new()
        .write(true)
        .open(f.cri())
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let mut c = f.open();
    let b = poll_commit(&mut c, 0);
    assert_eq!(lines(&b), vec!["y", "uno-dos"]);
}

#[test]
fn rotation_finishes_the_old_file_and_joins_across_it() {
    let f = Fixture::new();
    let mut c = f.open();
    append(&f.cri(), &cri(1, "stdout", "F", "old-1"));
    poll_commit(&mut c, 0);
    // kubelet: more lines, then a rename to `0.log.<time>` with a partial line at its end and the
    // rest in the new file.
    append(
        &f.cri(),
        &(cri(2, "stdout", "F", "old-2") + &cri(3, "stdout", "P", "across-")),
    );
    let rotated = f.cri().with_file_name("0.log.20260101-000004");
    std::fs::rename(f.cri(), &rotated).unwrap();
    append(
        &f.cri(),
        &(cri(4, "stdout", "F", "rotation") + &cri(5, "stdout", "F", "new-1")),
    );
    let b = poll_commit(&mut c, 100);
    assert_eq!(lines(&b), vec!["old-2", "across-rotation", "new-1"]);
    // The rotated file keeps the stream's labels.
    let labels: HashSet<String> = entries(&b).into_iter().map(|(l, _, _)| l).collect();
    assert_eq!(labels.len(), 1);
    assert_eq!(c.tailer.open_files(), 2);
    poll_commit(&mut c, 2000);
    poll_commit(&mut c, 2100);
    assert_eq!(c.tailer.open_files(), 1);
    // A gzip of the rotated file later is not read (it does not match `*.log`).
    std::fs::write(rotated.with_extension("gz"), b"\x1f\x8b").unwrap();
    assert!(lines(&poll_commit(&mut c, 3000)).is_empty());
}

#[test]
fn docker_split_entries_are_joined() {
    let f = Fixture::new();
    let mut c = f.open();
    let text = docker(1, "stdout", "hello\n")
        + &docker(2, "stdout", "a long ")
        + &docker(3, "stderr", "oops\n")
        + &docker(4, "stdout", "line\n");
    append(&f.docker(), &text);
    let b = poll_commit(&mut c, 0);
    let path = f.docker().display().to_string();
    let base = format!("container_id={ID},filename={path},job=container-logs,node=n1");
    assert_eq!(
        entries(&b),
        vec![
            (
                format!("{base},stream=stdout"),
                ts(1, 0).1,
                "hello".to_owned()
            ),
            (
                format!("{base},stream=stdout"),
                ts(2, 0).1,
                "a long line".into()
            ),
            (format!("{base},stream=stderr"), ts(3, 0).1, "oops".into()),
        ]
    );
    assert_eq!(b.lines.docker, 3);
    assert_eq!(b.joins, 1);
}

#[test]
fn over_long_lines_are_cut_and_counted() {
    let f = Fixture::new();
    let mut c = f.open();
    let piece = "x".repeat(600);
    let text = cri(1, "stdout", "P", &piece)
        + &cri(2, "stdout", "P", &piece)
        + &cri(3, "stdout", "F", &piece)
        + &cri(4, "stdout", "F", "short");
    append(&f.cri(), &text);
    let b = poll_commit(&mut c, 0);
    let l = lines(&b);
    assert_eq!(l.len(), 2);
    assert_eq!(l[0].len(), 1024);
    assert_eq!(l[1], "short");
    assert_eq!(b.truncated, 1);
}

#[test]
fn a_partial_line_nothing_completes_is_shipped_after_the_timeout() {
    let f = Fixture::new();
    let mut c = f.open();
    append(&f.cri(), &cri(1, "stdout", "P", "dangling"));
    assert!(lines(&poll_commit(&mut c, 0)).is_empty());
    assert!(lines(&poll_commit(&mut c, 4999)).is_empty());
    let b = poll_commit(&mut c, 5000);
    assert_eq!(lines(&b), vec!["dangling"]);
    assert_eq!(c.joiner.len(), 0);
}

#[test]
fn format_is_detected_per_file_and_can_be_forced() {
    let f = Fixture::new();
    append(&f.cri(), &cri(1, "stdout", "F", "c"));
    append(&f.docker(), &docker(1, "stdout", "d\n"));
    let mut cfg = f.config();
    cfg.format = Format::Cri;
    let mut c = ContainerLog::open(&cfg, None, &f.dir.path().join("data")).unwrap();
    let b = poll_commit(&mut c, 0);
    // Forced CRI: the Docker file's line is raw.
    assert_eq!(
        b.lines,
        FormatCounts {
            cri: 1,
            docker: 0,
            raw: 1
        }
    );
    let mut c = ContainerLog::open(&f.config(), None, &f.dir.path().join("data2")).unwrap();
    let b = poll_commit(&mut c, 0);
    assert_eq!(
        b.lines,
        FormatCounts {
            cri: 1,
            docker: 1,
            raw: 0
        }
    );
}

#[test]
fn missing_directories_yield_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ContainerLogConfig {
        paths: vec![dir.path().join("nowhere/*/*/*.log").display().to_string()],
        ..Default::default()
    };
    let mut c = ContainerLog::open(&cfg, None, dir.path()).unwrap();
    let b = c.poll(0, at(0));
    assert!(b.is_empty());
}

#[test]
fn docker_names_come_from_the_daemon_when_configured() {
    use std::io::Read;
    use std::os::unix::net::UnixListener;

    let f = Fixture::new();
    let sock = f.dir.path().join("docker.sock");
    let l = UnixListener::bind(&sock).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        // The whole request first: closing a unix socket with unread bytes resets the peer.
        let mut req = Vec::new();
        let mut buf = [0u8; 256];
        while !req.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "request cut short");
            req.extend_from_slice(&buf[..n]);
        }
        let body = r#"{"Name":"/web","Config":{"Image":"nginx"}}"#;
        write!(s, "HTTP/1.0 200 OK\r\n\r\n{body}").unwrap();
        String::from_utf8_lossy(&req).into_owned()
    });
    append(&f.docker(), &docker(1, "stdout", "hi\n"));
    let docker_cfg = DockerConfig {
        socket: sock,
        ..Default::default()
    };
    let mut c =
        ContainerLog::open(&f.config(), Some(&docker_cfg), &f.dir.path().join("data")).unwrap();
    let b = poll_commit(&mut c, 0);
    let labels = &entries(&b)[0].0;
    assert!(labels.contains("container=web,"), "{labels}");
    assert!(labels.contains(&format!("container_id={ID}")), "{labels}");
    assert!(
        server
            .join()
            .unwrap()
            .starts_with(&format!("GET /containers/{ID}/json"))
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// However the runtime split lines into pieces, interleaved stdout and stderr, the file was
    /// cut into reads and the pipeline restarted between them, each stream's lines come out
    /// whole, once, in order, with their first piece's time.
    #[test]
    fn pieces_reads_and_restarts_do_not_change_the_lines(
        lines in proptest::collection::vec(
            (proptest::bool::ANY, proptest::collection::vec("[a-z ]{0,6}", 1..4)),
            0..12,
        ),
        order in proptest::collection::vec(proptest::bool::ANY, 0..40),
        cuts in proptest::collection::vec((0usize..400, proptest::bool::ANY), 0..6),
    ) {
        // Pieces per stream, then interleaved as `order` says.
        let mut queues: [std::collections::VecDeque<(usize, usize, String)>; 2] =
            Default::default();
        let mut want: [Vec<(String, i64)>; 2] = Default::default();
        for (i, (stderr, pieces)) in lines.iter().enumerate() {
            let q = usize::from(*stderr);
            for (k, p) in pieces.iter().enumerate() {
                queues[q].push_back((i, k, p.clone()));
            }
            want[q].push((pieces.concat(), 0));
        }
        let mut text = String::new();
        let mut n = 0u32;
        let mut pick = order.into_iter();
        let mut firsts: HashMap<usize, i64> = HashMap::new();
        while !queues[0].is_empty() || !queues[1].is_empty() {
            let q = match pick.next() {
                Some(b) if !queues[usize::from(b)].is_empty() => usize::from(b),
                _ if !queues[0].is_empty() => 0,
                _ => 1,
            };
            let Some((i, k, p)) = queues[q].pop_front() else { break };
            let last = lines[i].1.len() == k + 1;
            let (t, ns) = ts(n / 1_000_000, n % 1_000_000_000);
            n += 1;
            firsts.entry(i).or_insert(ns);
            let stream = if q == 1 { "stderr" } else { "stdout" };
            text += &format!("{t} {stream} {} {p}\n", if last { "F" } else { "P" });
        }
        for (q, want) in want.iter_mut().enumerate() {
            let of_q = lines
                .iter()
                .enumerate()
                .filter(|(_, l)| usize::from(l.0) == q)
                .map(|(i, _)| i);
            for (w, i) in want.iter_mut().zip(of_q) {
                w.1 = firsts[&i];
            }
        }

        let f = Fixture::new();
        let mut cuts: Vec<(usize, bool)> =
            cuts.into_iter().map(|(c, r)| (c.min(text.len()), r)).collect();
        cuts.sort_unstable();
        cuts.push((text.len(), false));
        let mut c = f.open();
        let mut written = 0;
        let mut got: [Vec<(String, i64)>; 2] = Default::default();
        let mut mono = 0;
        let mut take = |b: &Batch| {
            for s in &b.streams {
                let stream = s.labels.iter().find(|l| l.name == "stream");
                let q = match stream.map(|l| l.value.as_str()) {
                    Some("stdout") => 0,
                    Some("stderr") => 1,
                    other => panic!("stream {other:?}"),
                };
                got[q].extend(s.entries.iter().map(|e| (e.line.clone(), e.timestamp_ns)));
            }
        };
        for (cut, restart) in cuts {
            if cut > written {
                append(&f.cri(), &text[written..cut]);
                written = cut;
            }
            mono += 1;
            take(&poll_commit(&mut c, mono));
            if restart {
                c = f.open();
            }
        }
        mono += 1;
        take(&poll_commit(&mut c, mono));
        proptest::prop_assert_eq!(&got, &want);
    }
}

#[test]
fn a_file_under_both_kubelet_paths_is_read_once_with_the_labels_of_both() {
    let f = Fixture::new();
    let links = f.dir.path().join("containers");
    std::fs::create_dir(&links).unwrap();
    let link = links.join(format!("web-0_shop_nginx-{ID}.log"));
    std::os::unix::fs::symlink(f.cri(), &link).unwrap();
    append(&f.cri(), &cri(1, "stdout", "F", "once"));
    let mut cfg = f.config();
    cfg.paths.push(format!("{}/*.log", links.display()));
    let mut c = ContainerLog::open(&cfg, None, &f.dir.path().join("data")).unwrap();
    let b = poll_commit(&mut c, 0);
    let e = entries(&b);
    assert_eq!(e.len(), 1);
    // Found first through the link: its name gives the container id, its target the pod uid.
    assert_eq!(
        e[0].0,
        format!(
            "container=nginx,container_id={ID},filename={},job=container-logs,namespace=shop,node=n1,pod=web-0,pod_uid={UID},stream=stdout",
            link.display()
        )
    );
}
