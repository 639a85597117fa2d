//! Unit tests of the job client: errors name the key, files are re-read, credentials land in
//! the `Authorization` header and nowhere else.

use std::path::Path;

use super::*;
use crate::scrape::config::ScrapeSection;

const KEY: &str = "tsdb.scrape.scrape_configs[0]";

fn job(yaml: &str) -> ScrapeConfig {
    let s: ScrapeSection =
        serde_yaml_ng::from_str(&format!("scrape_configs: [{{job_name: j, {yaml}}}]")).unwrap();
    s.validate("tsdb.scrape").unwrap();
    s.scrape_configs[0].clone()
}

fn ca_pem() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

/// The `Authorization` header `client` puts on a request.
async fn auth_header(client: &JobClient) -> Result<Option<String>, String> {
    let http = client.current().await?;
    let req = client
        .authorize(http.get("http://127.0.0.1:1/metrics"))
        .await?
        .build()
        .unwrap();
    Ok(req.headers().get(AUTHORIZATION).map(|v| {
        assert!(v.is_sensitive());
        v.to_str().unwrap().to_string()
    }))
}

fn write(path: &Path, s: &str) {
    std::fs::write(path, s).unwrap();
}

#[test]
fn unreadable_or_unusable_tls_material_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let e = JobClient::new(
        &job(&format!("tls_config: {{ca_file: '{}'}}", missing.display())),
        KEY,
    )
    .unwrap_err();
    assert!(
        e.starts_with(&format!(
            "{KEY}.tls_config.ca_file: unable to read CA cert: unable to read file {}: ",
            missing.display()
        )),
        "{e}"
    );
    let e = JobClient::new(&job("tls_config: {ca: 'not a certificate'}"), KEY).unwrap_err();
    assert_eq!(
        e,
        format!(
            "{KEY}.tls_config.ca: unable to use specified CA cert inline: no PEM certificate found"
        )
    );
    // a client key that is not a key: named, never shown
    let bad_key = dir.path().join("key.pem");
    write(
        &bad_key,
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
    );
    let mut cfg = job("scheme: https");
    cfg.tls_config.cert = ca_pem();
    cfg.tls_config.key_file = bad_key.display().to_string();
    let e = JobClient::new(&cfg, KEY).unwrap_err();
    assert!(
        e.starts_with(&format!("{KEY}.tls_config.key_file: ")),
        "{e}"
    );
    assert!(!e.contains("c2VjcmV0"), "{e}");
    assert!(
        JobClient::new(&job("tls_config: {server_name: 'bad name!'}"), KEY)
            .unwrap_err()
            .starts_with(&format!("{KEY}.tls_config.server_name: "))
    );
}

#[test]
fn a_client_certificate_with_its_key_is_accepted() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["scraper".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let mut cfg = job("scheme: https");
    cfg.tls_config.cert = cert.pem();
    cfg.tls_config.key = crate::scrape::config::Secret::new(key.serialize_pem());
    cfg.tls_config.ca = ca_pem();
    JobClient::new(&cfg, KEY).unwrap();
    // a key of another certificate is refused, naming the key
    let other = rcgen::KeyPair::generate().unwrap();
    cfg.tls_config.key = crate::scrape::config::Secret::new(other.serialize_pem());
    let e = JobClient::new(&cfg, KEY).unwrap_err();
    assert!(
        e.starts_with(&format!(
            "{KEY}.tls_config.key: unable to use client certificate"
        )),
        "{e}"
    );
}

#[tokio::test]
async fn credentials_are_sent_and_their_files_re_read() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    write(&token, "first\n");
    let c = JobClient::new(
        &job(&format!(
            "authorization: {{credentials_file: '{}'}}",
            token.display()
        )),
        KEY,
    )
    .unwrap();
    assert_eq!(
        auth_header(&c).await.unwrap().as_deref(),
        Some("Bearer first")
    );
    // rotation: the next scrape sends the new token
    write(&token, "  second  ");
    assert_eq!(
        auth_header(&c).await.unwrap().as_deref(),
        Some("Bearer second")
    );
    std::fs::remove_file(&token).unwrap();
    let e = auth_header(&c).await.unwrap_err();
    assert!(
        e.starts_with(&format!(
            "unable to read authorization credentials: unable to read file {}: ",
            token.display()
        )),
        "{e}"
    );

    let c = JobClient::new(&job("authorization: {type: Token, credentials: abc}"), KEY).unwrap();
    assert_eq!(auth_header(&c).await.unwrap().as_deref(), Some("Token abc"));
    let c = JobClient::new(&job("bearer_token: legacy"), KEY).unwrap();
    assert_eq!(
        auth_header(&c).await.unwrap().as_deref(),
        Some("Bearer legacy")
    );

    let pw = dir.path().join("pw");
    write(&pw, "pass\n");
    let c = JobClient::new(
        &job(&format!(
            "basic_auth: {{username: user, password_file: '{}'}}",
            pw.display()
        )),
        KEY,
    )
    .unwrap();
    // base64("user:pass")
    assert_eq!(
        auth_header(&c).await.unwrap().as_deref(),
        Some("Basic dXNlcjpwYXNz")
    );
    let c = JobClient::new(&job("scheme: http"), KEY).unwrap();
    assert_eq!(auth_header(&c).await.unwrap(), None);
}

#[tokio::test]
async fn tls_files_are_re_read_and_a_bad_one_fails_the_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    write(&ca, &ca_pem());
    let c = JobClient::new(
        &job(&format!("tls_config: {{ca_file: '{}'}}", ca.display())),
        KEY,
    )
    .unwrap();
    c.current().await.unwrap();
    write(&ca, "garbage");
    let e = c.current().await.unwrap_err();
    assert_eq!(
        e,
        format!(
            "unable to use specified CA cert file {}: no PEM certificate found",
            ca.display()
        )
    );
    // a new CA: the client is rebuilt and works again
    write(&ca, &ca_pem());
    c.current().await.unwrap();
}

#[test]
fn a_reload_keeps_the_client_when_its_settings_are_unchanged() {
    let a = job("bearer_token: x");
    let c = JobClient::new(&a, KEY).unwrap();
    let mut other_limits = a.clone();
    other_limits.sample_limit = 10;
    assert!(c.serves(&other_limits));
    let mut other_token = a.clone();
    other_token.bearer_token = crate::scrape::config::Secret::new("y");
    assert!(!c.serves(&other_token));
    let mut no_redirects = a;
    no_redirects.follow_redirects = false;
    assert!(!c.serves(&no_redirects));
}
