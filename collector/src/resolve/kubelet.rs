//! The kubelet's `/pods` endpoint (a `PodList`) as an [`Identity`] resolver, cached with a TTL.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::{debug, warn};

use super::{Identity, Names};
use crate::cgroup::identity::PathIdentity;
use crate::config::KubeletConfig;
use crate::{Error, Result};

#[derive(Debug, Default, Deserialize)]
struct PodList {
    #[serde(default)]
    items: Vec<Pod>,
}

#[derive(Debug, Default, Deserialize)]
struct Pod {
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    status: PodStatus,
}

#[derive(Debug, Default, Deserialize)]
struct Metadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    uid: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodStatus {
    #[serde(default)]
    container_statuses: Vec<ContainerStatus>,
    #[serde(default)]
    init_container_statuses: Vec<ContainerStatus>,
    #[serde(default)]
    ephemeral_container_statuses: Vec<ContainerStatus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerStatus {
    #[serde(default)]
    name: String,
    #[serde(default)]
    image: String,
    /// `containerd://<id>`, `cri-o://<id>`, `docker://<id>`.
    #[serde(default, rename = "containerID")]
    container_id: String,
}

/// What a fetched pod list says, indexed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct PodIndex {
    /// uid → (namespace, name).
    pods: HashMap<String, (String, String)>,
    /// container id → (container name, image).
    containers: HashMap<String, (String, String)>,
}

impl PodIndex {
    pub(crate) fn from_json(body: &[u8]) -> Result<PodIndex> {
        let list: PodList = serde_json::from_slice(body)
            .map_err(|e| Error::Kubelet(format!("decoding the pod list: {e}")))?;
        let mut idx = PodIndex::default();
        for pod in list.items {
            let s = pod.status;
            for c in s
                .container_statuses
                .into_iter()
                .chain(s.init_container_statuses)
                .chain(s.ephemeral_container_statuses)
            {
                if let Some((_, id)) = c.container_id.split_once("://") {
                    idx.containers.insert(id.to_owned(), (c.name, c.image));
                }
            }
            idx.pods.insert(
                pod.metadata.uid,
                (pod.metadata.namespace, pod.metadata.name),
            );
        }
        Ok(idx)
    }

    fn names(&self, id: &PathIdentity) -> (Names, bool) {
        let mut n = Names::default();
        let mut miss = false;
        if let Some(uid) = &id.pod_uid {
            match self.pods.get(uid) {
                Some((ns, name)) => {
                    n.namespace = Some(ns.clone());
                    n.pod = Some(name.clone());
                }
                None => miss = true,
            }
        }
        if let Some(cid) = &id.container_id {
            // The pod sandbox (pause) container has no status, so an unknown id in a known pod
            // is not a reason to refetch (an unknown pod already is).
            if let Some((name, image)) = self.containers.get(cid) {
                n.container = Some(name.clone());
                n.image = Some(image.clone());
            }
        }
        (n, miss)
    }
}

/// Names pods and containers from the kubelet's pods endpoint, fetched at most every
/// `min_refresh`, and every `refresh` or sooner when a uid or id is unknown.
#[derive(Debug)]
pub struct KubeletIdentity {
    config: KubeletConfig,
    client: reqwest::blocking::Client,
    index: PodIndex,
    fetched_at: Option<Instant>,
    missed: bool,
    generation: u64,
}

impl KubeletIdentity {
    pub fn new(config: KubeletConfig) -> Result<Self> {
        let mut builder = reqwest::blocking::Client::builder()
            .timeout(config.timeout)
            .danger_accept_invalid_certs(config.insecure_skip_verify);
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).map_err(Error::io(ca))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Kubelet(format!("reading the CA in {}: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(Error::Kubelet(format!(
                    "no PEM certificate in {}",
                    ca.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| Error::Kubelet(format!("building the http client: {e}")))?;
        Ok(KubeletIdentity {
            config,
            client,
            index: PodIndex::default(),
            fetched_at: None,
            missed: false,
            generation: 0,
        })
    }

    fn fetch(&self) -> Result<PodIndex> {
        let mut req = self.client.get(&self.config.url);
        if let Some(f) = &self.config.bearer_token_file {
            let token = std::fs::read_to_string(f).map_err(Error::io(PathBuf::from(f)))?;
            req = req.bearer_auth(token.trim());
        }
        let resp = req
            .send()
            .and_then(|r| r.error_for_status())
            .map_err(|e| Error::Kubelet(format!("GET {}: {e}", self.config.url)))?;
        let body = resp
            .bytes()
            .map_err(|e| Error::Kubelet(format!("reading {}: {e}", self.config.url)))?;
        PodIndex::from_json(&body)
    }

    fn due(&self, now: Instant) -> bool {
        let since = |d: Duration| self.fetched_at.is_none_or(|t| now.duration_since(t) >= d);
        since(self.config.refresh) || (self.missed && since(self.config.min_refresh))
    }
}

impl Identity for KubeletIdentity {
    fn refresh(&mut self, now: Instant) {
        if !self.due(now) {
            return;
        }
        // Attempted or not, wait `min_refresh` before the next try.
        self.fetched_at = Some(now);
        self.missed = false;
        match self.fetch() {
            Ok(index) => {
                debug!(pods = index.pods.len(), "kubelet pod list fetched");
                if index != self.index {
                    self.index = index;
                    self.generation += 1;
                }
            }
            Err(e) => warn!(error = %e, "kubelet pod list unavailable, keeping the previous one"),
        }
    }

    fn names(&mut self, id: &PathIdentity) -> Names {
        let (names, miss) = self.index.names(id);
        self.missed |= miss;
        names
    }

    fn generation(&self) -> u64 {
        self.generation
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;
    use crate::cgroup::identity;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "1234abcd-56ef-7890-abcd-ef0123456789";

    fn pods_json() -> String {
        format!(
            r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{}},"items":[{{"metadata":{{"name":"web-0","namespace":"shop","uid":"{UID}"}},"spec":{{}},"status":{{"phase":"Running","containerStatuses":[{{"name":"nginx","image":"docker.io/library/nginx:1.27","imageID":"x","containerID":"containerd://{ID}","ready":true}}]}}}}]}}"#
        )
    }

    #[test]
    fn indexes_pods_and_containers() {
        let idx = PodIndex::from_json(pods_json().as_bytes()).unwrap();
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        );
        let (n, miss) = idx.names(&identity::parse(&path));
        assert!(!miss);
        assert_eq!(n.namespace.as_deref(), Some("shop"));
        assert_eq!(n.pod.as_deref(), Some("web-0"));
        assert_eq!(n.container.as_deref(), Some("nginx"));
        assert_eq!(n.image.as_deref(), Some("docker.io/library/nginx:1.27"));
        let (_, miss) = idx.names(&identity::parse(&format!(
            "/kubepods/pod{}",
            "9".repeat(32)
        )));
        assert!(miss);
        assert!(PodIndex::from_json(b"not json").is_err());
    }

    /// A one-shot HTTP server on loopback answering every request with `body`.
    fn serve(body: String, requests: usize) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/pods", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let mut seen = vec![];
            for _ in 0..requests {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap();
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                    body.len(),
                    body
                )
                .unwrap();
            }
            seen
        });
        (url, h)
    }

    #[test]
    fn fetches_with_token_and_caches_until_due() {
        let (url, server) = serve(pods_json(), 1);
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let mut k = KubeletIdentity::new(KubeletConfig {
            url,
            bearer_token_file: Some(token),
            ..Default::default()
        })
        .unwrap();
        let t0 = Instant::now();
        k.refresh(t0);
        assert_eq!(k.generation(), 1);
        let id = identity::parse(&format!("/kubepods/burstable/pod{UID}/{ID}"));
        assert_eq!(k.names(&id).pod.as_deref(), Some("web-0"));
        // Not due again before `refresh` (the server would not answer a second request).
        k.refresh(t0 + Duration::from_secs(30));
        assert_eq!(k.generation(), 1);
        let requests = server.join().unwrap();
        assert!(requests[0].starts_with("GET /pods "));
        assert!(
            requests[0]
                .to_ascii_lowercase()
                .contains("authorization: bearer s3cret")
        );
    }

    #[test]
    fn a_miss_refreshes_after_min_refresh() {
        let bad_ca = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(bad_ca.path(), "not a certificate").unwrap();
        assert!(
            KubeletIdentity::new(KubeletConfig {
                ca_file: Some(bad_ca.path().to_path_buf()),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            KubeletIdentity::new(KubeletConfig {
                ca_file: Some("/nonexistent/ca.crt".into()),
                ..Default::default()
            })
            .is_err()
        );
        let system_cas = std::path::Path::new("/etc/ssl/certs/ca-certificates.crt");
        if system_cas.is_file() {
            assert!(
                KubeletIdentity::new(KubeletConfig {
                    ca_file: Some(system_cas.to_path_buf()),
                    ..Default::default()
                })
                .is_ok()
            );
        }
        let k = KubeletIdentity {
            missed: true,
            fetched_at: Some(Instant::now()),
            ..KubeletIdentity::new(KubeletConfig::default()).unwrap()
        };
        let t = k.fetched_at.unwrap();
        assert!(!k.due(t + Duration::from_secs(1)));
        assert!(k.due(t + Duration::from_secs(5)));
    }
}
