//! Fetching a target's page as Prometheus does: `Accept` preferring OpenMetrics with a text
//! fallback, `X-Prometheus-Scrape-Timeout-Seconds`, gzip, a body size limit, the timeout
//! covering the whole exchange, and the job's client and credentials ([`JobClient`]).

use std::io::Read;
use std::time::Duration;

use reqwest::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, USER_AGENT};

use super::client::JobClient;
use crate::exposition::Format;

/// The `Accept` header Prometheus sends by default (OpenMetrics 1.0.0 first, then 0.0.1, then
/// the text format, then anything).
pub const ACCEPT_HEADER: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// The header telling exporters how long they have.
pub const TIMEOUT_HEADER: &str = "X-Prometheus-Scrape-Timeout-Seconds";

/// A fetched page.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    pub body: String,
    pub format: Format,
}

/// Request options of one target.
#[derive(Clone, Copy, Debug)]
pub struct FetchOptions {
    pub timeout: Duration,
    pub gzip: bool,
    /// Largest uncompressed body; 0 = no limit.
    pub body_limit: usize,
}

/// GETs `url` with the job's client and credentials; the error is the message `lastError`
/// and the logs show (never a secret).
pub async fn fetch(
    job: &JobClient,
    url: &reqwest::Url,
    opts: FetchOptions,
) -> Result<Page, String> {
    let setup_err = |e: String| format!("Get {:?}: {e}", url.as_str());
    let client = job.current().await.map_err(setup_err)?;
    let get_err = |e: reqwest::Error| {
        if e.is_timeout() {
            format!("Get {:?}: context deadline exceeded", url.as_str())
        } else {
            format!("Get {:?}: {}", url.as_str(), error_chain(&e))
        }
    };
    let req = client
        .get(url.clone())
        .timeout(opts.timeout)
        .header(ACCEPT, ACCEPT_HEADER)
        .header(ACCEPT_ENCODING, if opts.gzip { "gzip" } else { "identity" })
        .header(USER_AGENT, concat!("Sextant/", env!("CARGO_PKG_VERSION")))
        .header(TIMEOUT_HEADER, opts.timeout.as_secs_f64().to_string());
    let resp = job
        .authorize(req)
        .await
        .map_err(setup_err)?
        .send()
        .await
        .map_err(get_err)?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(format!("server returned HTTP status {}", resp.status()));
    }
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let content_type = header(CONTENT_TYPE);
    let gzipped = header(CONTENT_ENCODING).eq_ignore_ascii_case("gzip");
    let limit = if opts.body_limit == 0 {
        usize::MAX
    } else {
        opts.body_limit
    };
    let mut resp = resp;
    let mut raw = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(get_err)? {
        raw.extend_from_slice(&chunk);
        if raw.len() > limit {
            return Err(body_limit_error(opts.body_limit));
        }
    }
    let bytes = if gzipped { gunzip(&raw, limit)? } else { raw };
    let body = String::from_utf8(bytes).map_err(|e| format!("invalid UTF-8 in the page: {e}"))?;
    Ok(Page {
        body,
        format: Format::from_content_type(&content_type),
    })
}

fn body_limit_error(limit: usize) -> String {
    format!("body size limit exceeded (limit {limit} bytes)")
}

/// Decompresses at most `limit` bytes (a gzip bomb fails instead of filling memory).
fn gunzip(raw: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::GzDecoder::new(raw)
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| format!("decompressing the gzip body: {e}"))?;
    if out.len() > limit {
        return Err(body_limit_error(limit));
    }
    Ok(out)
}

/// An error with its causes, `a: b: c`.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn gunzip_respects_the_limit() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&[b'a'; 10_000]).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(gunzip(&gz, usize::MAX).unwrap().len(), 10_000);
        assert_eq!(gunzip(&gz, 10_000).unwrap().len(), 10_000);
        assert!(
            gunzip(&gz, 9_999)
                .unwrap_err()
                .contains("body size limit exceeded")
        );
        assert!(gunzip(b"not gzip", 100).is_err());
    }
}
