//! The two on-disk formats of container logs, one physical line at a time.
//!
//! - CRI (containerd, CRI-O; kubelet `pkg/kubelet/kuberuntime/logs`):
//!   `<RFC3339Nano time> <stdout|stderr> <tags> <content>`, tags `:`-separated, the first `P`
//!   (partial: the runtime split a long line, the rest follows in later lines of the same stream,
//!   up to one tagged `F`) or `F` (full, the end of a line).
//! - Docker json-file: `{"log":"<content>\n","stream":"stdout","time":"<RFC3339Nano>"}`; the
//!   daemon splits lines longer than 16 KiB into several entries, all but the last without the
//!   trailing `\n`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// The format of a container log file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Detected per file from its first line that parses as either.
    #[default]
    Auto,
    Cri,
    Docker,
}

impl Format {
    /// The value of the lines metric's `format` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Cri => "cri",
            Format::Docker => "docker",
        }
    }
}

/// The output stream a line was written to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn parse(s: &str) -> Option<Stream> {
        match s {
            "stdout" => Some(Stream::Stdout),
            "stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// One physical line of a container log: a whole line, or a piece of one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fragment<'a> {
    /// When the runtime wrote it, in nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    pub stream: Stream,
    /// More of the same line follows in a later fragment of the stream.
    pub partial: bool,
    /// The content, without the line's newline.
    pub content: Cow<'a, str>,
}

/// Parses a line in `format` (`Auto` tries CRI, then Docker).
pub fn parse(format: Format, line: &str) -> Option<(Format, Fragment<'_>)> {
    match format {
        Format::Cri => cri(line).map(|f| (Format::Cri, f)),
        Format::Docker => docker(line).map(|f| (Format::Docker, f)),
        Format::Auto => parse(Format::Cri, line).or_else(|| parse(Format::Docker, line)),
    }
}

/// A CRI line (without its newline). Like the kubelet, only the first tag decides: `P` is
/// partial, anything else ends the line. A line that ends right after its tag has no content.
pub fn cri(line: &str) -> Option<Fragment<'_>> {
    let (ts, rest) = line.split_once(' ')?;
    let (stream, rest) = rest.split_once(' ')?;
    let (tags, content) = match rest.split_once(' ') {
        Some((t, c)) => (t, c),
        None => (rest, ""),
    };
    let stream = Stream::parse(stream)?;
    if tags.is_empty() {
        return None;
    }
    let partial = tags.split(':').next() == Some("P");
    Some(Fragment {
        ts_ns: rfc3339_ns(ts)?,
        stream,
        partial,
        content: Cow::Borrowed(content),
    })
}

#[derive(Deserialize)]
struct DockerLine {
    log: String,
    stream: String,
    time: String,
}

/// A Docker json-file line. An entry whose `log` does not end with `\n` is partial.
pub fn docker(line: &str) -> Option<Fragment<'static>> {
    if !line.starts_with('{') {
        return None;
    }
    let d: DockerLine = serde_json::from_str(line).ok()?;
    let stream = Stream::parse(&d.stream)?;
    let ts_ns = rfc3339_ns(&d.time)?;
    let mut content = d.log;
    let partial = !content.ends_with('\n');
    if !partial {
        content.pop();
    }
    Some(Fragment {
        ts_ns,
        stream,
        partial,
        content: Cow::Owned(content),
    })
}

/// An RFC 3339 timestamp (any fraction, `Z` or an offset) as nanoseconds since the epoch.
pub fn rfc3339_ns(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()?
        .timestamp_nanos_opt()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_475_713_029_669_794_202;

    #[test]
    fn cri_lines() {
        let f = cri("2016-10-06T00:17:09.669794202Z stdout F log content 1").unwrap();
        assert_eq!(
            f,
            Fragment {
                ts_ns: T0,
                stream: Stream::Stdout,
                partial: false,
                content: "log content 1".into(),
            }
        );
        let f = cri("2016-10-06T00:17:09.669794202Z stderr P  two spaces ").unwrap();
        assert!(f.partial);
        assert_eq!(f.stream, Stream::Stderr);
        assert_eq!(f.content, " two spaces ");
        // Further tags are allowed (forward compatible); only the first decides.
        assert!(
            cri("2016-10-06T00:17:09.669794202Z stdout P:x y")
                .unwrap()
                .partial
        );
        assert!(
            !cri("2016-10-06T00:17:09.669794202Z stdout F:P y")
                .unwrap()
                .partial
        );
        // Empty content, with or without the separator.
        assert_eq!(
            cri("2016-10-06T00:17:09.669794202Z stdout F ")
                .unwrap()
                .content,
            ""
        );
        assert_eq!(
            cri("2016-10-06T00:17:09.669794202Z stdout F")
                .unwrap()
                .content,
            ""
        );
        // CRI-O writes local time with an offset.
        assert_eq!(
            cri("2016-10-06T02:17:09.669794202+02:00 stdout F x")
                .unwrap()
                .ts_ns,
            T0
        );
        for bad in [
            "",
            "plain text",
            "2016-10-06T00:17:09Z stdin F x",
            "yesterday stdout F x",
            "2016-10-06T00:17:09Z stdout",
            "2016-10-06T00:17:09Z stdout  x",
        ] {
            assert_eq!(cri(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn docker_lines() {
        let f = docker(
            r#"{"log":"content 1\n","stream":"stdout","time":"2016-10-06T00:17:09.669794202Z"}"#,
        )
        .unwrap();
        assert_eq!(
            f,
            Fragment {
                ts_ns: T0,
                stream: Stream::Stdout,
                partial: false,
                content: "content 1".into(),
            }
        );
        let f = docker(
            r#"{"log":"split \"quoted\" \u00e9","stream":"stderr","time":"2016-10-06T00:17:09.669794202Z"}"#,
        )
        .unwrap();
        assert!(f.partial);
        assert_eq!(f.content, "split \"quoted\" é");
        // Extra keys (attrs) are fine.
        assert!(
            docker(
                r#"{"log":"a\n","stream":"stdout","attrs":{"k":"v"},"time":"2016-10-06T00:17:09Z"}"#
            )
            .is_some()
        );
        for bad in [
            r#"{"log":"a\n","stream":"stdout"}"#,
            r#"{"log":"a\n","stream":"tty","time":"2016-10-06T00:17:09Z"}"#,
            r#"{"log":"a\n","stream":"stdout","time":"now"}"#,
            r#"{"log":"a\n"#,
            "2016-10-06T00:17:09Z stdout F x",
        ] {
            assert_eq!(docker(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn auto_detects_either() {
        let (f, _) = parse(Format::Auto, "2016-10-06T00:17:09Z stdout F x").unwrap();
        assert_eq!(f, Format::Cri);
        let (f, _) = parse(
            Format::Auto,
            r#"{"log":"x\n","stream":"stdout","time":"2016-10-06T00:17:09Z"}"#,
        )
        .unwrap();
        assert_eq!(f, Format::Docker);
        assert!(parse(Format::Docker, "2016-10-06T00:17:09Z stdout F x").is_none());
        assert!(parse(Format::Auto, "neither").is_none());
    }
}
