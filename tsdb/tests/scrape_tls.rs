//! Scraping over https with a CA and certificates made by the test (rcgen), served by the
//! test (axum over tokio-rustls): `ca_file`, the system roots refusing an unknown CA,
//! `insecure_skip_verify`, `server_name`, basic auth, bearer credentials (inline, file,
//! rotated), and client certificates (mTLS). The target checks the `Authorization` header
//! and answers 401 otherwise. Waits by polling the scraper's status (bounded), never by
//! fixed sleeps.

// Helpers of tests may unwrap: a panic there is a failed assertion.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path as UrlPath;
use axum::http::{HeaderMap, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tsdb::scrape::{ActiveTarget, Health, ScrapeSection, Scraper};
use tsdb::storage::MemTenants;

/// A CA and the certificates it signs.
struct Pki {
    ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sextant test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_pem = params.self_signed(&key).unwrap().pem();
        Pki {
            ca_pem,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf certificate for `names`: (certificate PEM, key PEM).
    fn leaf(&self, names: &[&str], client: bool) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS listener for `axum::serve`; failed handshakes are skipped.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// `/open` answers anyone; `/basic` wants `user:pass`; `/bearer` wants `Bearer tok-1`; `/h2`
/// and `/h1` want HTTP/2 and HTTP/1.1.
async fn page(UrlPath(kind): UrlPath<String>, version: Version, headers: HeaderMap) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap().to_string());
    let ok = match kind.as_str() {
        "open" => true,
        // base64("user:pass")
        "basic" => auth.as_deref() == Some("Basic dXNlcjpwYXNz"),
        "bearer" => auth.as_deref() == Some("Bearer tok-1"),
        "h2" => version == Version::HTTP_2,
        "h1" => version == Version::HTTP_11,
        _ => false,
    };
    if !ok {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        "tls_test_metric 1\n",
    )
        .into_response()
}

/// Serves [`page`] over TLS with `cert`/`key`; with `client_ca`, only clients with a
/// certificate it signed get through.
async fn serve(cert: &str, key: &str, client_ca: Option<&str>) -> SocketAddr {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = TlsListener {
        tcp,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    };
    let app = Router::new().route("/{kind}", get(page));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p.display().to_string()
}

/// Polls until every target of `scraper` has been scraped since `since` (health known and
/// `lastScrape` later), for at most 20 s; returns them by job.
async fn scraped(scraper: &Scraper, since: std::time::SystemTime) -> Vec<ActiveTarget> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let targets = scraper.targets().active_targets;
        if !targets.is_empty()
            && targets
                .iter()
                .all(|t| t.health != Health::Unknown && t.last_scrape.is_some_and(|l| l > since))
        {
            return targets;
        }
        assert!(Instant::now() < deadline, "timed out: {targets:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn target<'a>(targets: &'a [ActiveTarget], job: &str) -> &'a ActiveTarget {
    targets
        .iter()
        .find(|t| t.scrape_pool == job)
        .unwrap_or_else(|| panic!("no target of job {job}"))
}

#[track_caller]
fn assert_up(targets: &[ActiveTarget], job: &str) {
    let t = target(targets, job);
    assert_eq!(t.health, Health::Up, "{job}: {}", t.last_error);
    assert_eq!(t.last_error, "", "{job}");
}

#[track_caller]
fn assert_down(targets: &[ActiveTarget], job: &str, error: &str) {
    let t = target(targets, job);
    assert_eq!(t.health, Health::Down, "{job}");
    assert!(
        t.last_error.contains(error),
        "{job}: {:?} lacks {error:?}",
        t.last_error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_targets_with_ca_server_name_and_credentials() {
    let pki = Pki::new();
    // No IP address in the certificate: `127.0.0.1` needs `server_name`.
    let (cert, key) = pki.leaf(&["localhost", "metrics.sextant.test"], false);
    let addr = serve(&cert, &key, None).await;
    let port = addr.port();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &pki.ca_pem);
    let pw_file = write(dir.path(), "pw", "pass\n");
    let token_file = write(dir.path(), "token", "tok-1\n");

    let ca = format!("tls_config: {{ca_file: '{ca_file}'}}");
    let localhost = format!("static_configs: [{{targets: ['localhost:{port}']}}]");
    let ip = format!("static_configs: [{{targets: ['127.0.0.1:{port}']}}]");
    let jobs = [
        format!("{{job_name: ca, metrics_path: /open, {ca}, {localhost}}}"),
        format!("{{job_name: system_roots, metrics_path: /open, {localhost}}}"),
        format!(
            "{{job_name: insecure, metrics_path: /open, tls_config: {{insecure_skip_verify: true}}, {ip}}}"
        ),
        format!(
            "{{job_name: server_name, metrics_path: /open, tls_config: {{ca_file: '{ca_file}', server_name: metrics.sextant.test}}, {ip}}}"
        ),
        format!("{{job_name: wrong_name, metrics_path: /open, {ca}, {ip}}}"),
        format!(
            "{{job_name: basic, metrics_path: /basic, {ca}, basic_auth: {{username: user, password_file: '{pw_file}'}}, {localhost}}}"
        ),
        format!(
            "{{job_name: basic_wrong, metrics_path: /basic, {ca}, basic_auth: {{username: user, password: nope}}, {localhost}}}"
        ),
        format!(
            "{{job_name: bearer_file, metrics_path: /bearer, {ca}, authorization: {{credentials_file: '{token_file}'}}, {localhost}}}"
        ),
        format!(
            "{{job_name: bearer_legacy, metrics_path: /bearer, {ca}, bearer_token: tok-1, {localhost}}}"
        ),
        format!("{{job_name: no_credentials, metrics_path: /bearer, {ca}, {localhost}}}"),
        format!("{{job_name: http2, metrics_path: /h2, {ca}, {localhost}}}"),
        format!("{{job_name: http1, metrics_path: /h1, enable_http2: false, {ca}, {localhost}}}"),
    ];
    let section: ScrapeSection = serde_yaml_ng::from_str(&format!(
        "global: {{scrape_interval: 200ms, scrape_timeout: 150ms}}\nscrape_configs:\n{}",
        // every job scrapes over https
        jobs.iter()
            .map(|j| format!(
                "- {}\n",
                j.replacen("{job_name:", "{scheme: https, job_name:", 1)
            ))
            .collect::<String>()
    ))
    .unwrap();
    let tenants = Arc::new(MemTenants::new());
    let scraper = Scraper::new(tenants.clone()).unwrap();
    scraper.apply(&section, "tsdb.scrape").unwrap();

    let t = scraped(&scraper, std::time::UNIX_EPOCH).await;
    assert_eq!(t.len(), jobs.len());
    assert!(
        target(&t, "ca")
            .scrape_url
            .starts_with("https://localhost:")
    );
    for job in [
        "ca",
        "insecure",
        "server_name",
        "basic",
        "bearer_file",
        "bearer_legacy",
        "http2",
        "http1",
    ] {
        assert_up(&t, job);
    }
    // the test CA is not among the system's roots
    assert_down(
        &t,
        "system_roots",
        "invalid peer certificate: UnknownIssuer",
    );
    assert_down(&t, "wrong_name", "certificate not valid for name");
    for job in ["basic_wrong", "no_credentials"] {
        assert_down(&t, job, "server returned HTTP status 401 Unauthorized");
    }
    // secrets appear nowhere in /api/v1/targets
    let json = serde_json::to_string(&scraper.targets()).unwrap();
    for secret in ["tok-1", "pass", "nope"] {
        assert!(!json.contains(secret), "{secret} in {json}");
    }

    // the token file is re-read at each scrape: a rotated (wrong) token is sent, then the
    // right one again
    write(dir.path(), "token", "tok-2");
    let since = std::time::SystemTime::now();
    let t = scraped(&scraper, since).await;
    assert_down(&t, "bearer_file", "401 Unauthorized");
    write(dir.path(), "token", "tok-1");
    let since = std::time::SystemTime::now();
    let t = scraped(&scraper, since).await;
    assert_up(&t, "bearer_file");

    // a missing CA file refuses the configuration, naming the key
    let bad: ScrapeSection = serde_yaml_ng::from_str(&format!(
        "scrape_configs: [{{job_name: a}}, {{job_name: b}}, {{job_name: c, scheme: https, tls_config: {{ca_file: '{}/missing.pem'}}}}]",
        dir.path().display()
    ))
    .unwrap();
    let e = scraper.apply(&bad, "tsdb.scrape").unwrap_err().to_string();
    assert!(
        e.starts_with("tsdb.scrape.scrape_configs[2].tls_config.ca_file: unable to read CA cert: "),
        "{e}"
    );
    // … and leaves the running jobs alone
    assert_eq!(scraper.targets().active_targets.len(), jobs.len());
    scraper.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_for_mtls_targets() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf(&["localhost"], false);
    let addr = serve(&cert, &key, Some(&pki.ca_pem)).await;
    let (client_cert, client_key) = pki.leaf(&["scraper"], true);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &pki.ca_pem);
    let cert_file = write(dir.path(), "client.pem", &client_cert);
    let key_file = write(dir.path(), "client.key", &client_key);
    // A certificate from another CA is refused by the target.
    let (other_cert, other_key) = Pki::new().leaf(&["scraper"], true);
    let other_cert_file = write(dir.path(), "other.pem", &other_cert);
    let other_key_file = write(dir.path(), "other.key", &other_key);
    let statics = format!(
        "static_configs: [{{targets: ['localhost:{}']}}]",
        addr.port()
    );
    let section: ScrapeSection = serde_yaml_ng::from_str(&format!(
        "global: {{scrape_interval: 200ms, scrape_timeout: 150ms}}
scrape_configs:
- {{job_name: mtls, scheme: https, metrics_path: /open, tls_config: {{ca_file: '{ca_file}', cert_file: '{cert_file}', key_file: '{key_file}'}}, {statics}}}
- {{job_name: no_cert, scheme: https, metrics_path: /open, tls_config: {{ca_file: '{ca_file}'}}, {statics}}}
- {{job_name: other_ca, scheme: https, metrics_path: /open, tls_config: {{ca_file: '{ca_file}', cert_file: '{other_cert_file}', key_file: '{other_key_file}'}}, {statics}}}"
    ))
    .unwrap();
    let scraper = Scraper::new(Arc::new(MemTenants::new())).unwrap();
    scraper.apply(&section, "tsdb.scrape").unwrap();
    let t = scraped(&scraper, std::time::UNIX_EPOCH).await;
    assert_up(&t, "mtls");
    for job in ["no_cert", "other_ca"] {
        let t = target(&t, job);
        assert_eq!(t.health, Health::Down, "{job}");
        assert!(!t.last_error.is_empty(), "{job}");
    }

    // the client certificate files are re-read: the other CA's pair, then ours again
    std::fs::copy(&other_cert_file, &cert_file).unwrap();
    std::fs::copy(&other_key_file, &key_file).unwrap();
    let t = scraped(&scraper, std::time::SystemTime::now()).await;
    assert_eq!(target(&t, "mtls").health, Health::Down);
    write(dir.path(), "client.pem", &client_cert);
    write(dir.path(), "client.key", &client_key);
    let t = scraped(&scraper, std::time::SystemTime::now()).await;
    assert_up(&t, "mtls");
    scraper.shutdown().await;
}

/// Serves [`page`] over plain http, plus `/moved` redirecting to `/open`.
async fn serve_plain() -> SocketAddr {
    let app = Router::new()
        .route(
            "/moved",
            get(|| async { axum::response::Redirect::to("/open") }),
        )
        .route("/{kind}", get(page));
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(tcp, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_and_proxy_url() {
    let addr = serve_plain().await;
    // The proxy is the same server: an absolute-form `GET http://…/open` reaches its `/open`.
    // The target's address is in TEST-NET-2 (RFC 5737), never reachable but through it.
    let section: ScrapeSection = serde_yaml_ng::from_str(&format!(
        "global: {{scrape_interval: 200ms, scrape_timeout: 150ms}}
scrape_configs:
- {{job_name: follows, metrics_path: /moved, static_configs: [{{targets: ['{addr}']}}]}}
- {{job_name: stays, metrics_path: /moved, follow_redirects: false, static_configs: [{{targets: ['{addr}']}}]}}
- {{job_name: proxied, metrics_path: /open, proxy_url: 'http://{addr}', static_configs: [{{targets: ['198.51.100.1:9']}}]}}
- {{job_name: http1, metrics_path: /open, enable_http2: false, static_configs: [{{targets: ['{addr}']}}]}}"
    ))
    .unwrap();
    let scraper = Scraper::new(Arc::new(MemTenants::new())).unwrap();
    scraper.apply(&section, "tsdb.scrape").unwrap();
    let t = scraped(&scraper, std::time::UNIX_EPOCH).await;
    for job in ["follows", "proxied", "http1"] {
        assert_up(&t, job);
    }
    assert_down(&t, "stays", "server returned HTTP status 303 See Other");
    scraper.shutdown().await;
}
