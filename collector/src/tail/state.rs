//! The pure part of the tailer: what it knows of one file (one inode) and what it decides from a
//! size observation, the bytes read and the time, all passed in. The I/O layer ([`super::Tailer`])
//! only stats, reads and opens files as these decisions say.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// How many bytes before the read position are remembered and compared on the next read: a file
/// truncated and rewritten past our position (copytruncate while we were slow, inode reuse) shows
/// other bytes there, and is read again from the start. Fluent Bit guards its offsets the same way.
pub const GUARD_LEN: usize = 32;

/// A file's identity: device and inode. A renamed file keeps it, a re-created one does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// One complete line read from a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub file: FileId,
    /// The path the file was found at (a rotated file keeps the path it was tailed as): the log
    /// stream's `filename`.
    pub path: Arc<Path>,
    /// Bumped when the file is truncated; acknowledgements of an older generation are ignored.
    pub generation: u64,
    /// The offset just after this line's newline: where a restart resumes once it is shipped.
    pub end: u64,
    /// The line without its newline (and without a trailing `\r`), lossily UTF-8.
    pub text: String,
}

/// What to do after observing a file's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeDecision {
    /// Nothing new.
    Idle,
    /// Read from `from` (which is `guard` bytes before the read position: those bytes must equal
    /// the remembered ones).
    Read { from: u64, guard: usize },
    /// The file shrank (copytruncate): everything buffered was dropped, read again from 0.
    Truncated,
}

/// The tailer's state for one file.
#[derive(Clone, Debug)]
pub struct FileState {
    pub id: FileId,
    pub path: Arc<Path>,
    pub generation: u64,
    /// Bytes consumed from the file, the buffered partial line included.
    pub read: u64,
    /// End of the last line acknowledged as shipped: the checkpointed position.
    pub acked: u64,
    /// Bytes after the last newline, waiting for theirs.
    partial: Vec<u8>,
    /// Up to [`GUARD_LEN`] bytes just before `read`.
    guard: Vec<u8>,
    /// Inside a line longer than the limit: its remaining bytes are dropped up to its newline.
    skipping: bool,
    /// When the file was first seen at no watched path (renamed away or deleted).
    pub rotated_at_ms: Option<u64>,
    /// When the file last grew (or was opened).
    pub grew_at_ms: u64,
}

/// Counters of one read, for the collector's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    pub bytes: u64,
    pub lines: u64,
    /// Lines cut at the length limit.
    pub truncated_lines: u64,
    /// Guard mismatches (the file was rewritten under us).
    pub rewritten: u64,
}

impl FileState {
    /// A file read from `offset`, whose bytes just before it are `guard`.
    pub fn new(id: FileId, path: Arc<Path>, offset: u64, guard: Vec<u8>, now_ms: u64) -> Self {
        FileState {
            id,
            path,
            generation: 0,
            read: offset,
            acked: offset,
            partial: Vec::new(),
            guard,
            skipping: false,
            rotated_at_ms: None,
            grew_at_ms: now_ms,
        }
    }

    /// Decides what to read given the file's current `size`.
    pub fn on_size(&mut self, size: u64, now_ms: u64) -> SizeDecision {
        if size < self.read {
            self.restart(now_ms);
            return SizeDecision::Truncated;
        }
        if size == self.read {
            return SizeDecision::Idle;
        }
        let guard = self.guard.len();
        SizeDecision::Read {
            from: self.read - guard as u64,
            guard,
        }
    }

    /// Forgets the position: the file is read again from its start, under a new generation.
    pub fn restart(&mut self, now_ms: u64) {
        self.generation += 1;
        self.read = 0;
        self.acked = 0;
        self.partial.clear();
        self.guard.clear();
        self.skipping = false;
        self.grew_at_ms = now_ms;
    }

    /// Consumes `data`, read from the position [`SizeDecision::Read`] gave (its first `guard`
    /// bytes are the guard). Appends complete lines to `out`, cutting lines at `max_line` bytes.
    /// Returns `false` (and restarts at 0) when the guard bytes differ: the caller reads again.
    pub fn on_data(
        &mut self,
        data: &[u8],
        guard: usize,
        max_line: usize,
        now_ms: u64,
        out: &mut Vec<Line>,
        stats: &mut ReadStats,
    ) -> bool {
        if guard != self.guard.len() || data.len() < guard || data[..guard] != self.guard[..] {
            stats.rewritten += 1;
            self.restart(now_ms);
            return false;
        }
        let new = &data[guard..];
        if new.is_empty() {
            return true;
        }
        self.grew_at_ms = now_ms;
        stats.bytes += new.len() as u64;
        let start = self.read;
        let mut line_start = 0;
        for nl in memchr_iter(new) {
            let end = start + nl as u64 + 1;
            if self.skipping {
                self.skipping = false;
                // The cut line was already emitted; its tail ends here.
                self.partial.clear();
            } else {
                self.partial.extend_from_slice(&new[line_start..nl]);
                self.emit(end, max_line, out, stats);
            }
            line_start = nl + 1;
        }
        let rest = &new[line_start..];
        if !self.skipping {
            self.partial.extend_from_slice(rest);
            if self.partial.len() > max_line {
                // Ship the first `max_line` bytes now; drop the rest of the line up to its
                // newline. Its end offset is the position after the bytes consumed so far, so a
                // restart resumes inside the dropped tail, which is then skipped as garbage at
                // worst once.
                self.partial.truncate(max_line);
                let end = start + new.len() as u64;
                self.emit(end, max_line, out, stats);
                stats.truncated_lines += 1;
                self.skipping = true;
            }
        }
        self.read = start + new.len() as u64;
        // `data` is the old guard followed by the new bytes: its tail is the new guard.
        let keep = GUARD_LEN.min(data.len());
        self.guard.clear();
        self.guard.extend_from_slice(&data[data.len() - keep..]);
        true
    }

    fn emit(&mut self, end: u64, max_line: usize, out: &mut Vec<Line>, stats: &mut ReadStats) {
        let mut bytes = std::mem::take(&mut self.partial);
        if bytes.len() > max_line {
            bytes.truncate(max_line);
            stats.truncated_lines += 1;
        }
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let text = match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        stats.lines += 1;
        out.push(Line {
            file: self.id,
            path: Arc::clone(&self.path),
            generation: self.generation,
            end,
            text,
        });
    }

    /// Whether a partial line is buffered.
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty()
    }

    /// Ships the buffered partial line as a line of its own (a rotated file whose writer is gone
    /// and that ends without a newline).
    pub fn flush_partial(&mut self, out: &mut Vec<Line>, stats: &mut ReadStats) {
        if !self.partial.is_empty() {
            let end = self.read;
            self.emit(end, usize::MAX, out, stats);
        }
    }

    /// Records that `end` (of `generation`) was shipped.
    pub fn ack(&mut self, generation: u64, end: u64) {
        if generation == self.generation && end > self.acked && end <= self.read {
            self.acked = end;
        }
    }

    /// Whether a rotated file is done: unseen at any watched path, not grown for `rotate_wait_ms`,
    /// and everything read from it shipped. A partial line is flushed before that.
    pub fn finished(&self, now_ms: u64, rotate_wait_ms: u64) -> bool {
        self.rotated_at_ms.is_some()
            && self.quiet(now_ms, rotate_wait_ms)
            && self.partial.is_empty()
            && self.acked == self.read
    }

    /// Whether the file is rotated and has not grown for `rotate_wait_ms`.
    pub fn quiet(&self, now_ms: u64, rotate_wait_ms: u64) -> bool {
        match self.rotated_at_ms {
            Some(at) => now_ms.saturating_sub(at.max(self.grew_at_ms)) >= rotate_wait_ms,
            None => false,
        }
    }
}

/// Positions of `\n` in `data`.
fn memchr_iter(data: &[u8]) -> impl Iterator<Item = usize> + '_ {
    data.iter()
        .enumerate()
        .filter_map(|(i, b)| (*b == b'\n').then_some(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> FileState {
        FileState::new(
            FileId { dev: 1, ino: 2 },
            Arc::from(Path::new("/x.log")),
            0,
            Vec::new(),
            0,
        )
    }

    fn feed(s: &mut FileState, file: &[u8]) -> Vec<Line> {
        let mut out = Vec::new();
        let mut st = ReadStats::default();
        match s.on_size(file.len() as u64, 0) {
            SizeDecision::Read { from, guard } => {
                assert!(s.on_data(&file[from as usize..], guard, 1024, 0, &mut out, &mut st));
            }
            d => panic!("{d:?}"),
        }
        out
    }

    #[test]
    fn lines_wait_for_their_newline() {
        let mut s = state();
        let mut file = b"a\nbb".to_vec();
        let l = feed(&mut s, &file);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].text, "a");
        assert_eq!(l[0].end, 2);
        file.extend_from_slice(b"b\r\nc\n");
        let l = feed(&mut s, &file);
        assert_eq!(
            l.iter()
                .map(|l| (l.text.as_str(), l.end))
                .collect::<Vec<_>>(),
            vec![("bbb", 7), ("c", 9)]
        );
        assert_eq!(s.read, 9);
        assert_eq!(s.on_size(9, 0), SizeDecision::Idle);
    }

    #[test]
    fn shrinking_restarts_and_rewrites_are_caught_by_the_guard() {
        let mut s = state();
        let file = b"first line\nsecond line\n".to_vec();
        feed(&mut s, &file);
        s.ack(0, 23);
        assert_eq!(s.on_size(5, 0), SizeDecision::Truncated);
        assert_eq!((s.read, s.acked, s.generation), (0, 0, 1));
        // An acknowledgement of the old generation does not move the new position.
        s.ack(0, 23);
        assert_eq!(s.acked, 0);

        // Rewritten past the old position: same size growth, other bytes before it.
        let mut s = state();
        feed(&mut s, b"aaaa\n");
        let rewritten = b"bbbbbbbb\nc\n";
        let mut out = Vec::new();
        let mut st = ReadStats::default();
        let SizeDecision::Read { from, guard } = s.on_size(rewritten.len() as u64, 0) else {
            panic!()
        };
        assert!(!s.on_data(
            &rewritten[from as usize..],
            guard,
            1024,
            0,
            &mut out,
            &mut st
        ));
        assert_eq!(st.rewritten, 1);
        let l = feed(&mut s, rewritten);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].text, "bbbbbbbb");
    }

    #[test]
    fn long_lines_are_cut_and_their_tail_dropped() {
        let mut s = state();
        let mut out = Vec::new();
        let mut st = ReadStats::default();
        let file = b"0123456789abcdef\nok\n";
        let SizeDecision::Read { from, guard } = s.on_size(10, 0) else {
            panic!()
        };
        assert!(s.on_data(&file[from as usize..10], guard, 4, 0, &mut out, &mut st));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].text, "0123");
        let SizeDecision::Read { from, guard } = s.on_size(file.len() as u64, 0) else {
            panic!()
        };
        assert!(s.on_data(&file[from as usize..], guard, 4, 0, &mut out, &mut st));
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].text, "ok");
        assert_eq!(st.truncated_lines, 1);
    }

    #[test]
    fn rotated_files_finish_after_the_wait_once_shipped() {
        let mut s = state();
        let l = feed(&mut s, b"x\ny");
        s.rotated_at_ms = Some(1000);
        assert!(!s.finished(10_000, 5000));
        let mut out = Vec::new();
        s.flush_partial(&mut out, &mut ReadStats::default());
        assert_eq!(out[0].text, "y");
        assert_eq!(out[0].end, 3);
        s.ack(0, l[0].end);
        assert!(!s.finished(10_000, 5000));
        s.ack(0, out[0].end);
        assert!(!s.finished(5999, 5000));
        assert!(s.finished(6000, 5000));
    }

    proptest::proptest! {
        /// However a file's growth is cut into reads, the same lines come out, each with the
        /// offset just after its newline.
        #[test]
        fn chunking_does_not_change_the_lines(
            lines in proptest::collection::vec("[a-z \r]{0,12}", 0..20),
            cuts in proptest::collection::vec(0usize..200, 0..10),
        ) {
            let mut file = Vec::new();
            let mut want = Vec::new();
            for l in &lines {
                file.extend_from_slice(l.as_bytes());
                file.push(b'\n');
                want.push((l.strip_suffix('\r').unwrap_or(l).to_owned(), file.len() as u64));
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(file.len())).collect();
            cuts.push(file.len());
            cuts.sort_unstable();
            let mut s = state();
            let mut out = Vec::new();
            let mut st = ReadStats::default();
            for cut in cuts {
                if let SizeDecision::Read { from, guard } = s.on_size(cut as u64, 0) {
                    proptest::prop_assert!(
                        s.on_data(&file[from as usize..cut], guard, 1024, 0, &mut out, &mut st)
                    );
                }
            }
            let got: Vec<(String, u64)> = out.into_iter().map(|l| (l.text, l.end)).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
