//! Joins the fragments of a line (CRI `P` … `F`, Docker entries without a trailing `\n`) into
//! one line, per log path and stream (stdout and stderr of one file interleave), bounded by a
//! maximum length: the excess of an over-long line is dropped and the line marked truncated.
//!
//! Pending pieces are keyed by the path the file was tailed as, which a rotated file keeps, so a
//! line whose start is at the end of the rotated file and whose end is in the new one is still
//! joined. A piece nothing completes within the timeout (a container that died mid-line, a file
//! deleted) is shipped as it is. Pure: time is passed in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::parse::{Fragment, Stream};
use crate::tail::FileId;

/// A logical line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    pub path: Arc<Path>,
    pub stream: Stream,
    /// The timestamp of its first fragment.
    pub ts_ns: i64,
    pub line: String,
    /// Fragments it was made of.
    pub parts: u32,
    /// Cut at the maximum length.
    pub truncated: bool,
}

/// Where a pending line's last fragment ends: its file and the offset after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub file: FileId,
    pub end: u64,
}

#[derive(Clone, Debug)]
struct Pending {
    ts_ns: i64,
    line: String,
    parts: u32,
    truncated: bool,
    anchor: Anchor,
    /// When its last fragment was read (monotonic ms).
    last_ms: u64,
}

/// A pending line as the checkpoint keeps it, valid at the checkpointed position of its anchor
/// file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingLine {
    pub path: PathBuf,
    pub stream: Stream,
    pub ts_ns: i64,
    pub line: String,
    pub parts: u32,
    pub truncated: bool,
    pub dev: u64,
    pub ino: u64,
    /// The offset after its last fragment in that file.
    pub end: u64,
}

impl PendingLine {
    pub fn anchor(&self) -> Anchor {
        Anchor {
            file: FileId {
                dev: self.dev,
                ino: self.ino,
            },
            end: self.end,
        }
    }
}

/// The fragments waiting for the rest of their lines.
#[derive(Debug)]
pub struct Joiner {
    max_bytes: usize,
    timeout_ms: u64,
    pending: BTreeMap<(Arc<Path>, Stream), Pending>,
}

impl Joiner {
    /// Lines are cut at `max_bytes`; a fragment waits at most `timeout_ms` for the next.
    pub fn new(max_bytes: usize, timeout_ms: u64) -> Self {
        Joiner {
            max_bytes,
            timeout_ms,
            pending: BTreeMap::new(),
        }
    }

    /// Takes one fragment read from `path` (ending at `at`): returns the line it completes.
    pub fn push(
        &mut self,
        path: &Arc<Path>,
        frag: Fragment<'_>,
        at: Anchor,
        now_ms: u64,
    ) -> Option<Joined> {
        if !frag.partial && self.pending.is_empty() {
            // The common case: a whole line and nothing pending anywhere.
            let mut line = frag.content.into_owned();
            let cut = floor_boundary(&line, self.max_bytes);
            let truncated = cut < line.len();
            line.truncate(cut);
            return Some(Joined {
                path: Arc::clone(path),
                stream: frag.stream,
                ts_ns: frag.ts_ns,
                line,
                parts: 1,
                truncated,
            });
        }
        let key = (Arc::clone(path), frag.stream);
        let mut p = self.pending.remove(&key).unwrap_or_else(|| Pending {
            ts_ns: frag.ts_ns,
            line: String::new(),
            parts: 0,
            truncated: false,
            anchor: at,
            last_ms: now_ms,
        });
        p.parts += 1;
        // Once cut, the rest of the line is dropped (a later, shorter piece would fit again).
        if !p.truncated {
            p.truncated = append_bounded(&mut p.line, &frag.content, self.max_bytes);
        }
        if frag.partial {
            p.anchor = at;
            p.last_ms = now_ms;
            self.pending.insert(key, p);
            return None;
        }
        Some(joined(key, p))
    }

    /// Ships the pending lines whose last fragment is `timeout_ms` old.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Joined> {
        let timeout = self.timeout_ms;
        let due: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, p)| now_ms.saturating_sub(p.last_ms) >= timeout)
            .map(|(k, _)| k.clone())
            .collect();
        due.into_iter()
            .filter_map(|k| self.pending.remove_entry(&k))
            .map(|(k, p)| joined(k, p))
            .collect()
    }

    /// Pending lines, for the checkpoint.
    pub fn checkpoint(&self) -> Vec<PendingLine> {
        self.pending
            .iter()
            .map(|((path, stream), p)| PendingLine {
                path: path.to_path_buf(),
                stream: *stream,
                ts_ns: p.ts_ns,
                line: p.line.clone(),
                parts: p.parts,
                truncated: p.truncated,
                dev: p.anchor.file.dev,
                ino: p.anchor.file.ino,
                end: p.anchor.end,
            })
            .collect()
    }

    /// Puts back a pending line from the checkpoint (its timeout starts now).
    pub fn restore(&mut self, p: PendingLine, now_ms: u64) {
        let anchor = p.anchor();
        self.pending.insert(
            (Arc::from(p.path.as_path()), p.stream),
            Pending {
                ts_ns: p.ts_ns,
                line: p.line,
                parts: p.parts,
                truncated: p.truncated,
                anchor,
                last_ms: now_ms,
            },
        );
    }

    /// Whether a line is pending for `path`.
    pub fn has_pending(&self, path: &Path) -> bool {
        self.pending.keys().any(|(p, _)| p.as_ref() == path)
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

fn joined((path, stream): (Arc<Path>, Stream), p: Pending) -> Joined {
    Joined {
        path,
        stream,
        ts_ns: p.ts_ns,
        line: p.line,
        parts: p.parts,
        truncated: p.truncated,
    }
}

/// Appends what fits of `s` under `max` bytes (at a character boundary); whether some was left
/// out.
pub fn append_bounded(buf: &mut String, s: &str, max: usize) -> bool {
    let cut = floor_boundary(s, max.saturating_sub(buf.len()));
    buf.push_str(&s[..cut]);
    cut < s.len()
}

/// The length of the longest prefix of `s` of at most `max` bytes that ends at a character
/// boundary.
fn floor_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    cut
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn frag(stream: Stream, partial: bool, ts: i64, s: &str) -> Fragment<'_> {
        Fragment {
            ts_ns: ts,
            stream,
            partial,
            content: Cow::Borrowed(s),
        }
    }

    fn at(end: u64) -> Anchor {
        Anchor {
            file: FileId { dev: 1, ino: 7 },
            end,
        }
    }

    #[test]
    fn partials_join_per_stream_with_the_first_timestamp() {
        let path: Arc<Path> = Arc::from(Path::new("/var/log/pods/a/b/0.log"));
        let mut j = Joiner::new(1024, 5000);
        assert_eq!(
            j.push(&path, frag(Stream::Stdout, true, 1, "ab"), at(10), 0),
            None
        );
        // stderr interleaves without disturbing stdout's pending line.
        let e = j
            .push(&path, frag(Stream::Stderr, false, 2, "err"), at(20), 0)
            .unwrap();
        assert_eq!((e.line.as_str(), e.parts, e.ts_ns), ("err", 1, 2));
        assert_eq!(
            j.push(&path, frag(Stream::Stdout, true, 3, "cd"), at(30), 0),
            None
        );
        assert!(j.has_pending(&path));
        let l = j
            .push(&path, frag(Stream::Stdout, false, 4, "ef"), at(40), 0)
            .unwrap();
        assert_eq!(
            l,
            Joined {
                path: Arc::clone(&path),
                stream: Stream::Stdout,
                ts_ns: 1,
                line: "abcdef".into(),
                parts: 3,
                truncated: false,
            }
        );
        assert!(j.is_empty());
    }

    #[test]
    fn joined_lines_are_bounded() {
        let path: Arc<Path> = Arc::from(Path::new("/x/0.log"));
        let mut j = Joiner::new(5, 5000);
        assert!(
            j.push(&path, frag(Stream::Stdout, true, 1, "abc"), at(1), 0)
                .is_none()
        );
        assert!(
            j.push(&path, frag(Stream::Stdout, true, 1, "déf"), at(2), 0)
                .is_none()
        );
        let l = j
            .push(&path, frag(Stream::Stdout, false, 1, "ghi"), at(3), 0)
            .unwrap();
        // "abc" + "d" fits; "é" (2 bytes) does not.
        assert_eq!(l.line, "abcd");
        assert!(l.truncated);
        assert_eq!(l.parts, 3);
        let l = j
            .push(&path, frag(Stream::Stdout, false, 1, "0123456"), at(4), 0)
            .unwrap();
        assert_eq!((l.line.as_str(), l.truncated), ("01234", true));
    }

    #[test]
    fn unfinished_lines_expire_and_survive_a_checkpoint() {
        let path: Arc<Path> = Arc::from(Path::new("/x/0.log"));
        let mut j = Joiner::new(100, 5000);
        assert!(
            j.push(&path, frag(Stream::Stdout, true, 9, "abc"), at(50), 1000)
                .is_none()
        );
        assert!(j.expire(5999).is_empty());
        let cp = j.checkpoint();
        assert_eq!(cp.len(), 1);
        assert_eq!(cp[0].anchor(), at(50));

        // Restored into a new joiner, the line is completed by the next fragment.
        let mut k = Joiner::new(100, 5000);
        k.restore(cp[0].clone(), 0);
        let l = k
            .push(&path, frag(Stream::Stdout, false, 10, "def"), at(60), 10)
            .unwrap();
        assert_eq!((l.line.as_str(), l.ts_ns, l.parts), ("abcdef", 9, 2));

        let gone = j.expire(6000);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].line, "abc");
        assert!(j.is_empty());
    }
}
