//! A job's `tls_config` as a `rustls::ClientConfig`: CA roots (configured, else the system's),
//! the client certificate, `server_name`, `insecure_skip_verify`, TLS versions, ALPN.

use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::scrape::config::{TlsConfig, TlsVersion};

/// The bytes of `ca`, `cert` and `key`, inline or read from their files.
#[derive(Default, PartialEq)]
pub(super) struct Material {
    pub(super) ca: Option<Vec<u8>>,
    pub(super) cert: Option<Vec<u8>>,
    pub(super) key: Option<Vec<u8>>,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("ca", &self.ca.as_ref().map(Vec::len))
            .field("cert", &self.cert.as_ref().map(Vec::len))
            .field("key", &self.key.as_ref().map(|_| "<secret>"))
            .finish()
    }
}

/// A TLS setting that cannot be used: `field` is the key below `tls_config`, `message` never
/// holds the secret.
#[derive(Debug)]
pub(super) struct TlsError {
    pub(super) field: &'static str,
    pub(super) message: String,
}

fn err(field: &'static str, message: String) -> TlsError {
    TlsError { field, message }
}

fn read(path: &str, what: &str, field: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| {
        err(
            field,
            format!("unable to read {what}: unable to read file {path}: {e}"),
        )
    })
}

/// Reads what `cfg` names (blocking: small files; the scrape loop calls it off the runtime).
pub(super) fn material(cfg: &TlsConfig) -> Result<Material, TlsError> {
    let mut m = Material::default();
    if !cfg.ca.is_empty() {
        m.ca = Some(cfg.ca.as_bytes().to_vec());
    } else if !cfg.ca_file.is_empty() {
        m.ca = Some(read(&cfg.ca_file, "CA cert", "ca_file")?);
    }
    if !cfg.cert.is_empty() {
        m.cert = Some(cfg.cert.as_bytes().to_vec());
    } else if !cfg.cert_file.is_empty() {
        m.cert = Some(read(&cfg.cert_file, "specified client cert", "cert_file")?);
    }
    if !cfg.key.is_empty() {
        m.key = Some(cfg.key.expose().as_bytes().to_vec());
    } else if !cfg.key_file.is_empty() {
        m.key = Some(read(&cfg.key_file, "specified client key", "key_file")?);
    }
    Ok(m)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's trust store, loaded once per process (as Go's `SystemCertPool`); Mozilla's
/// roots (webpki-roots) when the system has none, e.g. a minimal container image.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!(error = %e, "reading the system's CA certificates");
            }
            let mut store = RootCertStore::empty();
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::info!(
                    "no CA certificates in the system's trust store; https scrapes trust Mozilla's roots"
                );
                store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            Arc::new(store)
        })
        .clone()
}

fn ca_roots(cfg: &TlsConfig, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let what = if cfg.ca_file.is_empty() {
        ("ca", "inline".to_string())
    } else {
        ("ca_file", format!("file {}", cfg.ca_file))
    };
    let mut store = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem) {
        let c = c.map_err(|e| {
            err(
                what.0,
                format!("unable to use specified CA cert {}: {e}", what.1),
            )
        })?;
        store.add(c).map_err(|e| {
            err(
                what.0,
                format!("unable to use specified CA cert {}: {e}", what.1),
            )
        })?;
    }
    if store.is_empty() {
        return Err(err(
            what.0,
            format!(
                "unable to use specified CA cert {}: no PEM certificate found",
                what.1
            ),
        ));
    }
    Ok(store)
}

fn client_cert(
    cfg: &TlsConfig,
    cert: &[u8],
    key: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let cert_field = if cfg.cert_file.is_empty() {
        "cert"
    } else {
        "cert_file"
    };
    let key_field = if cfg.key_file.is_empty() {
        "key"
    } else {
        "key_file"
    };
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(cert_field, format!("unable to use client cert: {e}")))?;
    if chain.is_empty() {
        return Err(err(
            cert_field,
            "unable to use client cert: no PEM certificate found".to_string(),
        ));
    }
    // The parse error says what is wrong with the PEM framing, never the key's bytes.
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| err(key_field, format!("unable to use client key: {e}")))?;
    Ok((chain, key))
}

/// The protocol versions offered: `min_version` (TLS 1.2 by default) to `max_version` (TLS 1.3
/// by default); TLS10/TLS11 as a minimum mean TLS 1.2, nothing older is spoken.
fn versions(cfg: &TlsConfig) -> Vec<&'static rustls::SupportedProtocolVersion> {
    let min = cfg
        .min_version
        .unwrap_or(TlsVersion::Tls12)
        .max(TlsVersion::Tls12);
    let max = cfg.max_version.unwrap_or(TlsVersion::Tls13);
    [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| *v >= min && *v <= max)
    .map(|(_, p)| p)
    .collect()
}

/// Builds the TLS client configuration of a job from `cfg` and its read `m`aterial.
pub(super) fn client_config(
    cfg: &TlsConfig,
    m: &Material,
    http2: bool,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(cfg))
        .map_err(|e| err("min_version", format!("unusable TLS versions: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = if cfg.insecure_skip_verify {
        Arc::new(AcceptAny(provider.clone()))
    } else {
        let roots = match &m.ca {
            Some(pem) => Arc::new(ca_roots(cfg, pem)?),
            None => system_roots(),
        };
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| err("ca", format!("unable to use CA certs: {e}")))?;
        if cfg.server_name.is_empty() {
            webpki
        } else {
            let name = ServerName::try_from(cfg.server_name.clone())
                .map_err(|e| err("server_name", format!("invalid server name: {e}")))?;
            Arc::new(NamedVerifier {
                inner: webpki,
                name,
            })
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (&m.cert, &m.key) {
        (Some(cert), Some(key)) => {
            let (chain, key) = client_cert(cfg, cert, key)?;
            let field = if cfg.key_file.is_empty() {
                "key"
            } else {
                "key_file"
            };
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| err(field, format!("unable to use client certificate: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(config)
}

/// Checks a target's certificate against `server_name` instead of the URL's host (for
/// targets addressed by IP whose certificate names a host). The SNI sent is still the URL's
/// host (none for an IP): reqwest gives no hook to change it.
#[derive(Debug)]
struct NamedVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NamedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `insecure_skip_verify: true`: any certificate is accepted; the handshake's signatures
/// are still checked, so the session is encrypted to whoever holds the certificate's key.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use rustls::ProtocolVersion;

    use super::*;

    fn offered(cfg: &TlsConfig) -> Vec<ProtocolVersion> {
        versions(cfg).iter().map(|v| v.version).collect()
    }

    #[test]
    fn versions_and_alpn_follow_the_settings() {
        use ProtocolVersion::{TLSv1_2, TLSv1_3};
        let m = Material::default();
        let mut cfg = TlsConfig::default();
        assert_eq!(offered(&cfg), vec![TLSv1_2, TLSv1_3]);
        let c = client_config(&cfg, &m, true).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        let c = client_config(&cfg, &m, false).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"http/1.1".to_vec()]);

        cfg.min_version = Some(TlsVersion::Tls13);
        assert_eq!(offered(&cfg), vec![TLSv1_3]);
        client_config(&cfg, &m, true).unwrap();
        // TLS10 as a minimum is TLS 1.2 (nothing older is spoken); TLS12 as a maximum
        cfg.min_version = Some(TlsVersion::Tls10);
        cfg.max_version = Some(TlsVersion::Tls12);
        assert_eq!(offered(&cfg), vec![TLSv1_2]);
        client_config(&cfg, &m, true).unwrap();
    }

    #[test]
    fn material_debug_hides_the_key() {
        let m = Material {
            ca: None,
            cert: Some(b"cert".to_vec()),
            key: Some(b"very secret".to_vec()),
        };
        let s = format!("{m:?}");
        assert!(!s.contains("very") && s.contains("<secret>"), "{s}");
    }
}
