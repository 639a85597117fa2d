//! A scrape job's HTTP client settings with Prometheus's names, defaults and validation
//! (`HTTPClientConfig` and `TLSConfig` of prometheus/common, inlined in `scrape_config`):
//! `tls_config`, `basic_auth`, `authorization`, the legacy `bearer_token[_file]`,
//! `follow_redirects`, `enable_http2`, `proxy_url`. Reading files and building the client is
//! [`crate::scrape::client`]'s job; this module only parses and checks.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ScrapeConfig;

/// A secret of the configuration (password, token, private key): `Debug` and serialization
/// show `<secret>`, as Prometheus's `config.Secret` does, so it never reaches a log or an API.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the request that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("<secret>")
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "<secret>" })
    }
}

/// A string, or a number written as YAML reads it (`password: 123456`, which Prometheus's
/// YAML decoder also takes as a string).
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Secret;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `proxy_url`: shown (`Debug`, serialization) with its password replaced by `xxxxx`, as
/// Prometheus shows it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxyUrl(String);

impl ProxyUrl {
    pub fn new(s: impl Into<String>) -> ProxyUrl {
        ProxyUrl(s.into())
    }

    /// The URL itself, credentials included, for the client.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL without its password.
    pub fn redacted(&self) -> String {
        match reqwest::Url::parse(&self.0) {
            Ok(mut u) if u.password().is_some() => {
                // Ignored error: only URLs that cannot have a password refuse one.
                let _ = u.set_password(Some("xxxxx"));
                u.to_string()
            }
            Ok(_) => self.0.clone(),
            Err(_) => "<invalid URL>".to_string(),
        }
    }
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl Serialize for ProxyUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for ProxyUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ProxyUrl, D::Error> {
        String::deserialize(d).map(ProxyUrl)
    }
}

/// A TLS protocol version as Prometheus names it (`TLS10` … `TLS13`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TlsVersion {
    #[serde(rename = "TLS10")]
    Tls10,
    #[serde(rename = "TLS11")]
    Tls11,
    #[serde(rename = "TLS12")]
    Tls12,
    #[serde(rename = "TLS13")]
    Tls13,
}

/// `tls_config`: how targets' certificates are checked and which certificate the scraper
/// presents. Each of `ca`, `cert`, `key` is given inline or as a file, not both; files are
/// re-read on every scrape (a changed file takes effect without a reload).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM CA certificates that sign targets' certificates (instead of the system's roots).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ca: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ca_file: String,
    /// PEM client certificate (chain) for targets that ask for one (mTLS).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cert: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cert_file: String,
    /// PEM private key of the client certificate.
    #[serde(skip_serializing_if = "Secret::is_empty")]
    pub key: Secret,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key_file: String,
    /// The name targets' certificates are checked against, instead of the URL's host.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub server_name: String,
    /// Accept any certificate (the connection is still encrypted, not authenticated).
    pub insecure_skip_verify: bool,
    /// Lowest TLS version offered; TLS 1.2 when unset (TLS10/TLS11 are accepted and mean
    /// TLS 1.2 too: the TLS library speaks nothing older).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_version: Option<TlsVersion>,
    /// Highest TLS version offered; TLS 1.3 when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_version: Option<TlsVersion>,
}

impl TlsConfig {
    pub fn using_client_cert(&self) -> bool {
        !self.cert.is_empty() || !self.cert_file.is_empty()
    }

    pub fn using_client_key(&self) -> bool {
        !self.key.is_empty() || !self.key_file.is_empty()
    }

    /// True when no file is involved: the TLS settings never change without a reload.
    pub fn immutable(&self) -> bool {
        self.ca_file.is_empty() && self.cert_file.is_empty() && self.key_file.is_empty()
    }

    fn validate(&self, key: &str) -> Result<(), String> {
        if !self.ca.is_empty() && !self.ca_file.is_empty() {
            return Err(format!(
                "{key}.ca_file: at most one of ca & ca_file must be configured"
            ));
        }
        if !self.cert.is_empty() && !self.cert_file.is_empty() {
            return Err(format!(
                "{key}.cert_file: at most one of cert & cert_file must be configured"
            ));
        }
        if !self.key.is_empty() && !self.key_file.is_empty() {
            return Err(format!(
                "{key}.key_file: at most one of key & key_file must be configured"
            ));
        }
        if self.using_client_cert() && !self.using_client_key() {
            return Err(format!(
                "{key}.key: exactly one of key or key_file must be configured when a client certificate is configured"
            ));
        }
        if self.using_client_key() && !self.using_client_cert() {
            return Err(format!(
                "{key}.cert: exactly one of cert or cert_file must be configured when a client key is configured"
            ));
        }
        if let Some(max) = self.max_version {
            if max < TlsVersion::Tls12 {
                return Err(format!(
                    "{key}.max_version: TLS versions below TLS12 are not supported"
                ));
            }
            if self.min_version.is_some_and(|min| max < min) {
                return Err(format!(
                    "{key}.max_version: tls_config.max_version must be greater than or equal to tls_config.min_version if both are specified"
                ));
            }
        }
        Ok(())
    }
}

/// `basic_auth`: `Authorization: Basic …`; username and password inline or from a file
/// (re-read on every scrape, surrounding whitespace trimmed).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BasicAuth {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub username_file: String,
    #[serde(skip_serializing_if = "Secret::is_empty")]
    pub password: Secret,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub password_file: String,
}

/// `authorization`: `Authorization: <type> <credentials>`, credentials inline or from a file
/// (re-read on every scrape, surrounding whitespace trimmed).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Authorization {
    /// `Bearer` when empty.
    #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(skip_serializing_if = "Secret::is_empty")]
    pub credentials: Secret,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub credentials_file: String,
}

impl Authorization {
    /// The scheme sent: the configured type, trimmed, `Bearer` by default.
    pub fn scheme(&self) -> &str {
        match self.kind.trim() {
            "" => "Bearer",
            t => t,
        }
    }
}

impl ScrapeConfig {
    /// The `authorization` in effect: the configured one, or the legacy `bearer_token` /
    /// `bearer_token_file` as a `Bearer` authorization (as Prometheus rewrites them).
    pub fn effective_authorization(&self) -> Option<Authorization> {
        if let Some(a) = &self.authorization {
            return Some(a.clone());
        }
        if !self.bearer_token.is_empty() || !self.bearer_token_file.is_empty() {
            return Some(Authorization {
                kind: "Bearer".to_string(),
                credentials: self.bearer_token.clone(),
                credentials_file: self.bearer_token_file.clone(),
            });
        }
        None
    }

    /// Prometheus's `HTTPClientConfig.Validate` and `TLSConfig.Validate`; messages start with
    /// the dotted key below `key` (the job's).
    pub(super) fn validate_http(&self, key: &str) -> Result<(), String> {
        let bearer = !self.bearer_token.is_empty() || !self.bearer_token_file.is_empty();
        if !self.bearer_token.is_empty() && !self.bearer_token_file.is_empty() {
            return Err(format!(
                "{key}.bearer_token_file: at most one of bearer_token & bearer_token_file must be configured"
            ));
        }
        if let Some(b) = &self.basic_auth {
            if bearer {
                return Err(format!(
                    "{key}.basic_auth: at most one of basic_auth, bearer_token & bearer_token_file must be configured"
                ));
            }
            if !b.username.is_empty() && !b.username_file.is_empty() {
                return Err(format!(
                    "{key}.basic_auth.username_file: at most one of basic_auth username & username_file must be configured"
                ));
            }
            if !b.password.is_empty() && !b.password_file.is_empty() {
                return Err(format!(
                    "{key}.basic_auth.password_file: at most one of basic_auth password & password_file must be configured"
                ));
            }
        }
        if let Some(a) = &self.authorization {
            if bearer {
                return Err(format!(
                    "{key}.authorization: authorization is not compatible with bearer_token & bearer_token_file"
                ));
            }
            if !a.credentials.is_empty() && !a.credentials_file.is_empty() {
                return Err(format!(
                    "{key}.authorization.credentials_file: at most one of authorization credentials & credentials_file must be configured"
                ));
            }
            if a.scheme().eq_ignore_ascii_case("basic") {
                return Err(format!(
                    "{key}.authorization.type: authorization type cannot be set to \"basic\", use \"basic_auth\" instead"
                ));
            }
            if reqwest::header::HeaderValue::from_str(a.scheme()).is_err()
                || a.scheme().contains(char::is_whitespace)
            {
                return Err(format!(
                    "{key}.authorization.type: {:?} is not a valid authorization type",
                    a.scheme()
                ));
            }
            if self.basic_auth.is_some() {
                return Err(format!(
                    "{key}.authorization: at most one of basic_auth & authorization must be configured"
                ));
            }
        }
        self.tls_config.validate(&format!("{key}.tls_config"))?;
        if let Some(p) = &self.proxy_url {
            let url = reqwest::Url::parse(p.expose())
                .map_err(|e| format!("{key}.proxy_url: invalid proxy URL: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!(
                    "{key}.proxy_url: unsupported proxy scheme {:?} (http, https)",
                    url.scheme()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::scrape::config::ScrapeSection;

    fn section(yaml: &str) -> ScrapeSection {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    /// The error of the third job (the first two are fine), whose settings are `job`.
    fn err(job: &str) -> String {
        section(&format!(
            "scrape_configs: [{{job_name: a}}, {{job_name: b, scheme: https}}, {{job_name: c, {job}}}]"
        ))
        .validate("tsdb.scrape")
        .unwrap_err()
    }

    #[test]
    fn defaults_as_prometheus() {
        let s = section("scrape_configs: [{job_name: a}]");
        s.validate("tsdb.scrape").unwrap();
        let c = &s.scrape_configs[0];
        assert_eq!(c.scheme, "http");
        assert!(c.follow_redirects && c.enable_http2);
        assert!(c.basic_auth.is_none() && c.authorization.is_none());
        assert!(c.effective_authorization().is_none());
        assert!(!c.tls_config.insecure_skip_verify);
        assert!(c.tls_config.immutable());
        assert!(c.proxy_url.is_none());
    }

    #[test]
    fn every_setting_parses() {
        let s = section(
            "scrape_configs:
- job_name: kubelet
  scheme: https
  tls_config:
    ca_file: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt
    cert_file: /etc/c.pem
    key_file: /etc/k.pem
    server_name: kubelet.local
    insecure_skip_verify: false
    min_version: TLS12
    max_version: TLS13
  authorization: {type: Token, credentials_file: /var/run/secrets/token}
  follow_redirects: false
  enable_http2: false
  proxy_url: http://proxy:3128
- job_name: node
  basic_auth: {username: u, password_file: /p}
- job_name: legacy
  bearer_token: s3cret",
        );
        s.validate("tsdb.scrape").unwrap();
        let k = &s.scrape_configs[0];
        assert_eq!(k.tls_config.server_name, "kubelet.local");
        assert_eq!(k.tls_config.min_version, Some(super::TlsVersion::Tls12));
        assert!(!k.tls_config.immutable());
        let a = k.effective_authorization().unwrap();
        assert_eq!(a.scheme(), "Token");
        assert!(!k.follow_redirects && !k.enable_http2);
        assert_eq!(
            s.scrape_configs[1]
                .basic_auth
                .as_ref()
                .unwrap()
                .password_file,
            "/p"
        );
        // the legacy bearer token is a Bearer authorization
        let legacy = s.scrape_configs[2].effective_authorization().unwrap();
        assert_eq!(legacy.scheme(), "Bearer");
        assert_eq!(legacy.credentials.expose(), "s3cret");
    }

    #[test]
    fn secrets_are_not_shown() {
        let s = section(
            "scrape_configs: [{job_name: a, bearer_token: tok1, basic_auth: {password: pw2}, tls_config: {key: k3}}]",
        );
        let c = &s.scrape_configs[0];
        let debug = format!("{s:?}");
        let yaml = serde_yaml_ng::to_string(&s).unwrap();
        for shown in [&debug, &yaml] {
            for secret in ["tok1", "pw2", "k3"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
            assert!(shown.contains("<secret>"));
        }
        assert_eq!(c.bearer_token.expose(), "tok1");
        let p = super::ProxyUrl::new("http://u:pw9@proxy:3128/");
        assert_eq!(format!("{p:?}"), "\"http://u:xxxxx@proxy:3128/\"");
        assert_eq!(p.expose(), "http://u:pw9@proxy:3128/");
        // the validation message names the keys, not the values
        let e = s.validate("tsdb.scrape").unwrap_err();
        assert!(!e.contains("tok1") && !e.contains("pw2"), "{e}");
        // a numeric password is a string, as in Prometheus
        let s =
            section("scrape_configs: [{job_name: a, basic_auth: {username: u, password: 123456}}]");
        let b = s.scrape_configs[0].basic_auth.as_ref().unwrap();
        assert_eq!(b.password.expose(), "123456");
        // the error of a wrong type does not echo the value
        let e = serde_yaml_ng::from_str::<ScrapeSection>(
            "scrape_configs: [{job_name: a, bearer_token: [hidden1]}]",
        )
        .unwrap_err()
        .to_string();
        assert!(!e.contains("hidden1"), "{e}");
    }

    #[test]
    fn validation_names_the_key() {
        let key = "tsdb.scrape.scrape_configs[2]";
        for (job, want) in [
            (
                "scheme: ftp",
                format!("{key}.scheme: \"ftp\" is not a valid scheme (http, https)"),
            ),
            (
                "bearer_token: a, bearer_token_file: /b",
                format!(
                    "{key}.bearer_token_file: at most one of bearer_token & bearer_token_file must be configured"
                ),
            ),
            (
                "bearer_token: a, authorization: {credentials: b}",
                format!(
                    "{key}.authorization: authorization is not compatible with bearer_token & bearer_token_file"
                ),
            ),
            (
                "bearer_token_file: /a, basic_auth: {username: u}",
                format!(
                    "{key}.basic_auth: at most one of basic_auth, bearer_token & bearer_token_file must be configured"
                ),
            ),
            (
                "basic_auth: {username: u}, authorization: {credentials: b}",
                format!(
                    "{key}.authorization: at most one of basic_auth & authorization must be configured"
                ),
            ),
            (
                "basic_auth: {username: u, username_file: /u}",
                format!(
                    "{key}.basic_auth.username_file: at most one of basic_auth username & username_file must be configured"
                ),
            ),
            (
                "basic_auth: {password: p, password_file: /p}",
                format!(
                    "{key}.basic_auth.password_file: at most one of basic_auth password & password_file must be configured"
                ),
            ),
            (
                "authorization: {credentials: c, credentials_file: /c}",
                format!(
                    "{key}.authorization.credentials_file: at most one of authorization credentials & credentials_file must be configured"
                ),
            ),
            (
                "authorization: {type: ' Basic ', credentials: c}",
                format!(
                    "{key}.authorization.type: authorization type cannot be set to \"basic\", use \"basic_auth\" instead"
                ),
            ),
            (
                "tls_config: {ca: x, ca_file: /x}",
                format!("{key}.tls_config.ca_file: at most one of ca & ca_file must be configured"),
            ),
            (
                "tls_config: {cert: x, cert_file: /x, key: k}",
                format!(
                    "{key}.tls_config.cert_file: at most one of cert & cert_file must be configured"
                ),
            ),
            (
                "tls_config: {key: x, key_file: /x, cert: c}",
                format!(
                    "{key}.tls_config.key_file: at most one of key & key_file must be configured"
                ),
            ),
            (
                "tls_config: {cert_file: /c}",
                format!(
                    "{key}.tls_config.key: exactly one of key or key_file must be configured when a client certificate is configured"
                ),
            ),
            (
                "tls_config: {key_file: /k}",
                format!(
                    "{key}.tls_config.cert: exactly one of cert or cert_file must be configured when a client key is configured"
                ),
            ),
            (
                "tls_config: {min_version: TLS13, max_version: TLS12}",
                format!(
                    "{key}.tls_config.max_version: tls_config.max_version must be greater than or equal to tls_config.min_version if both are specified"
                ),
            ),
            (
                "tls_config: {max_version: TLS11}",
                format!("{key}.tls_config.max_version: TLS versions below TLS12 are not supported"),
            ),
            (
                "proxy_url: 'socks5://p:1080'",
                format!("{key}.proxy_url: unsupported proxy scheme \"socks5\" (http, https)"),
            ),
        ] {
            assert_eq!(err(job), want, "{job}");
        }
        assert!(
            err("proxy_url: 'not a url'")
                .starts_with(&format!("{key}.proxy_url: invalid proxy URL"))
        );
        // unknown keys and TLS versions are refused when parsing
        for bad in [
            "tls_config: {ca_fiel: x}",
            "tls_config: {min_version: TLS14}",
            "basic_auth: {user: u}",
            "authorization: {token: t}",
        ] {
            assert!(
                serde_yaml_ng::from_str::<ScrapeSection>(&format!(
                    "scrape_configs: [{{job_name: c, {bad}}}]"
                ))
                .is_err(),
                "{bad}"
            );
        }
    }
}
