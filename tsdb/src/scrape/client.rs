//! One HTTP client per scrape job, as Prometheus builds one per scrape pool: its
//! `tls_config`, `proxy_url`, `follow_redirects` and `enable_http2`, plus the credentials
//! (`basic_auth`, `authorization`, `bearer_token[_file]`) put on each request.
//!
//! Files are read again for every scrape, as Prometheus does, so that rotated credentials
//! and certificates apply without a reload: credential files on each request; TLS files
//! (`ca_file`, `cert_file`, `key_file`) too, and a change of their content rebuilds the
//! client (Prometheus's `tlsRoundTripper`). Secrets never enter an error message or a log.

mod tls;

use std::sync::Mutex;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::redirect::Policy;

use super::config::{Authorization, BasicAuth, ProxyUrl, ScrapeConfig, TlsConfig};

/// The HTTP settings of a job: a different value needs a different client.
#[derive(Clone, Debug, PartialEq)]
struct Settings {
    tls: TlsConfig,
    basic_auth: Option<BasicAuth>,
    authorization: Option<Authorization>,
    follow_redirects: bool,
    enable_http2: bool,
    proxy_url: Option<ProxyUrl>,
}

impl Settings {
    fn of(cfg: &ScrapeConfig) -> Settings {
        Settings {
            tls: cfg.tls_config.clone(),
            basic_auth: cfg.basic_auth.clone(),
            authorization: cfg.effective_authorization(),
            follow_redirects: cfg.follow_redirects,
            enable_http2: cfg.enable_http2,
            proxy_url: cfg.proxy_url.clone(),
        }
    }
}

/// The client in use and the TLS material it was built from.
#[derive(Debug)]
struct Current {
    material: tls::Material,
    client: reqwest::Client,
}

/// A scrape job's HTTP client, shared by the job's target loops.
#[derive(Debug)]
pub struct JobClient {
    job: String,
    settings: Settings,
    current: Mutex<Current>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a client could not be built: `field` is the key below the job's (`tls_config.ca_file`).
#[derive(Debug)]
struct BuildError {
    field: String,
    message: String,
}

impl From<tls::TlsError> for BuildError {
    fn from(e: tls::TlsError) -> BuildError {
        BuildError {
            field: format!("tls_config.{}", e.field),
            message: e.message,
        }
    }
}

fn build(s: &Settings, m: &tls::Material) -> Result<reqwest::Client, BuildError> {
    let tls = tls::client_config(&s.tls, m, s.enable_http2)?;
    let mut b = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(if s.follow_redirects {
            Policy::limited(10)
        } else {
            Policy::none()
        });
    b = match &s.proxy_url {
        Some(url) => b.proxy(reqwest::Proxy::all(url.expose()).map_err(|e| BuildError {
            field: "proxy_url".to_string(),
            message: format!("invalid proxy URL: {}", super::http::error_chain(&e)),
        })?),
        None => b.no_proxy(),
    };
    if !s.enable_http2 {
        b = b.http1_only();
    }
    b.build().map_err(|e| BuildError {
        field: "tls_config".to_string(),
        message: format!("building the HTTP client: {}", super::http::error_chain(&e)),
    })
}

impl JobClient {
    /// Builds the client of the job `cfg`, reading its TLS files now (blocking: a few small
    /// files, once per configuration change). The error starts with the dotted key below `key`,
    /// the job's (`tsdb.scrape.scrape_configs[2].tls_config.ca_file: unable to read CA cert: …`).
    pub fn new(cfg: &ScrapeConfig, key: &str) -> Result<JobClient, String> {
        let settings = Settings::of(cfg);
        let named = |e: BuildError| format!("{key}.{}: {}", e.field, e.message);
        let material = tls::material(&settings.tls).map_err(|e| named(e.into()))?;
        let client = build(&settings, &material).map_err(named)?;
        Ok(JobClient {
            job: cfg.job_name.clone(),
            settings,
            current: Mutex::new(Current { material, client }),
        })
    }

    /// True when this client is the one `cfg` asks for (a reload keeps it, connections
    /// included).
    pub fn serves(&self, cfg: &ScrapeConfig) -> bool {
        self.settings == Settings::of(cfg)
    }

    /// The client for the next request. With TLS files configured, they are read again and a
    /// changed content rebuilds the client; an unreadable or unusable file fails this scrape.
    pub async fn current(&self) -> Result<reqwest::Client, String> {
        if self.settings.tls.immutable() {
            return Ok(lock(&self.current).client.clone());
        }
        let cfg = self.settings.tls.clone();
        let material = tokio::task::spawn_blocking(move || tls::material(&cfg))
            .await
            .map_err(|e| format!("reading the TLS files: {e}"))?
            .map_err(|e| e.message)?;
        let mut cur = lock(&self.current);
        if cur.material != material {
            let client = build(&self.settings, &material).map_err(|e| e.message)?;
            tracing::info!(job = %self.job, "scrape tls files changed, http client rebuilt");
            *cur = Current { material, client };
        }
        Ok(cur.client.clone())
    }

    /// Adds the job's credentials to `req`, reading credential files now.
    pub async fn authorize(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, String> {
        if let Some(a) = &self.settings.authorization {
            let credentials = secret(a.credentials.expose(), &a.credentials_file)
                .await
                .map_err(|e| format!("unable to read authorization credentials: {e}"))?;
            let mut value = HeaderValue::from_str(&format!("{} {credentials}", a.scheme()))
                .map_err(|_| {
                    "unable to use authorization credentials: not a valid HTTP header value"
                        .to_string()
                })?;
            value.set_sensitive(true);
            return Ok(req.header(AUTHORIZATION, value));
        }
        if let Some(b) = &self.settings.basic_auth {
            let username = secret(&b.username, &b.username_file)
                .await
                .map_err(|e| format!("unable to read basic auth username: {e}"))?;
            let password = secret(b.password.expose(), &b.password_file)
                .await
                .map_err(|e| format!("unable to read basic auth password: {e}"))?;
            // reqwest marks the header sensitive.
            return Ok(req.basic_auth(username, Some(password)));
        }
        Ok(req)
    }
}

/// An inline secret, else the content of `file` without surrounding whitespace (Prometheus's
/// `FileSecret`), else empty.
async fn secret(inline: &str, file: &str) -> Result<String, String> {
    if !inline.is_empty() {
        return Ok(inline.to_string());
    }
    if file.is_empty() {
        return Ok(String::new());
    }
    tokio::fs::read_to_string(file)
        .await
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("unable to read file {file}: {e}"))
}

#[cfg(test)]
mod tests;
