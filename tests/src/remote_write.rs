//! A Prometheus remote-write 1.0 client, as Prometheus and vmagent send: protobuf
//! `WriteRequest`, snappy block format, the version header.

use anyhow::{Context, Result, bail};
use bus::proto::TimeSeries;
use prost::Message;

/// `prometheus.WriteRequest`; [`TimeSeries`] keeps remote-write's field numbers.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// The request body for `series`: protobuf, then snappy (block format).
pub fn encode(series: Vec<TimeSeries>) -> Result<Vec<u8>> {
    let raw = WriteRequest { timeseries: series }.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .context("snappy-compressing a write request")
}

/// Posts one encoded request to `url` (`…/api/v1/write`); any non-2xx status is an error that
/// carries the response body.
pub fn post(client: &reqwest::blocking::Client, url: &str, body: Vec<u8>) -> Result<()> {
    let resp = client
        .post(url)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .with_context(|| format!("posting to {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().unwrap_or_default();
        bail!("{url} answered {status}: {text}");
    }
    Ok(())
}
