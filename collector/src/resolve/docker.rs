//! The Docker Engine API (`GET /containers/<id>/json` on the daemon's unix socket) as an
//! [`Identity`] resolver: container name and image, and for Kubernetes with cri-dockerd the pod,
//! namespace and container name from the `io.kubernetes.*` labels.
//!
//! One request per new container, over a minimal HTTP/1.0 exchange on a `UnixStream`: reqwest
//! does not speak HTTP over unix sockets, and one GET does not warrant a Docker client crate
//! (bollard) with its own hyper stack.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use serde::Deserialize;
use tracing::debug;

use super::{Identity, Names};
use crate::cgroup::identity::PathIdentity;
use crate::config::DockerConfig;
use crate::{Error, Result};

/// Looked-up containers kept at most; past it the cache starts over (containers come and go).
const MAX_CACHED: usize = 4096;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inspect {
    #[serde(default)]
    name: String,
    #[serde(default)]
    config: InspectConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectConfig {
    #[serde(default)]
    image: String,
    #[serde(default)]
    labels: Option<HashMap<String, String>>,
}

/// Names containers from the Docker daemon, each looked up once.
#[derive(Debug)]
pub struct DockerIdentity {
    config: DockerConfig,
    known: HashMap<String, Names>,
    /// Ids whose look-up failed, and when.
    failed: HashMap<String, Instant>,
    generation: u64,
}

impl DockerIdentity {
    pub fn new(config: DockerConfig) -> Self {
        DockerIdentity {
            config,
            known: HashMap::new(),
            failed: HashMap::new(),
            generation: 0,
        }
    }

    fn inspect(&self, id: &str) -> Result<Names> {
        let socket = &self.config.socket;
        let err = |e: std::io::Error| Error::Io {
            path: socket.clone(),
            source: e,
        };
        let mut s = UnixStream::connect(socket).map_err(err)?;
        s.set_read_timeout(Some(self.config.timeout)).map_err(err)?;
        s.set_write_timeout(Some(self.config.timeout))
            .map_err(err)?;
        // One write: a peer that answers after its first read sees the whole request.
        let req = format!("GET /containers/{id}/json HTTP/1.0\r\nHost: docker\r\n\r\n");
        s.write_all(req.as_bytes()).map_err(err)?;
        let mut resp = Vec::with_capacity(16 * 1024);
        s.read_to_end(&mut resp).map_err(err)?;
        parse_response(&resp)
    }
}

/// Names from an HTTP/1.x response to `GET /containers/<id>/json`.
pub(crate) fn parse_response(resp: &[u8]) -> Result<Names> {
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| Error::Docker("malformed response".to_owned()))?;
    let head = String::from_utf8_lossy(&resp[..split]);
    let status = head.split(' ').nth(1).unwrap_or_default();
    if status != "200" {
        return Err(Error::Docker(format!("inspect answered {status}")));
    }
    let inspect: Inspect = serde_json::from_slice(&resp[split + 4..])
        .map_err(|e| Error::Docker(format!("decoding inspect: {e}")))?;
    let labels = inspect.config.labels.unwrap_or_default();
    let label = |k: &str| labels.get(k).filter(|v| !v.is_empty()).cloned();
    let name = inspect.name.trim_start_matches('/');
    Ok(Names {
        namespace: label("io.kubernetes.pod.namespace"),
        pod: label("io.kubernetes.pod.name"),
        container: label("io.kubernetes.container.name"),
        image: (!inspect.config.image.is_empty()).then_some(inspect.config.image),
        name: (!name.is_empty()).then(|| name.to_owned()),
    })
}

impl Identity for DockerIdentity {
    fn refresh(&mut self, now: Instant) {
        let retry = self.config.retry;
        let before = self.failed.len();
        self.failed.retain(|_, at| now.duration_since(*at) < retry);
        if self.failed.len() != before {
            // Relabel, so that the expired failures are looked up again.
            self.generation += 1;
        }
        if self.known.len() > MAX_CACHED {
            self.known.clear();
            self.generation += 1;
        }
    }

    fn names(&mut self, id: &PathIdentity) -> Names {
        let Some(cid) = &id.container_id else {
            return Names::default();
        };
        // Containers of other runtimes are not the daemon's.
        if matches!(id.runtime, Some("containerd" | "crio")) {
            return Names::default();
        }
        if let Some(n) = self.known.get(cid) {
            return n.clone();
        }
        if self.failed.contains_key(cid) {
            return Names::default();
        }
        match self.inspect(cid) {
            Ok(n) => {
                self.known.insert(cid.clone(), n.clone());
                n
            }
            Err(e) => {
                debug!(container_id = %cid, error = %e, "docker inspect failed");
                self.failed.insert(cid.clone(), Instant::now());
                Names::default()
            }
        }
    }

    fn generation(&self) -> u64 {
        self.generation
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;
    use std::time::Duration;

    use super::*;
    use crate::cgroup::identity;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn looks_up_over_the_socket_once_and_retries_failures() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        let l = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let mut paths = vec![];
            for body in [
                r#"{"Id":"x","Name":"/web","Config":{"Image":"nginx:1.27","Labels":{"io.kubernetes.pod.name":"web-0","io.kubernetes.pod.namespace":"shop","io.kubernetes.container.name":"nginx"}}}"#,
                r#"{"message":"No such container"}"#,
            ] {
                let (mut s, _) = l.accept().unwrap();
                let mut req = vec![0u8; 1024];
                let n = s.read(&mut req).unwrap();
                paths.push(
                    String::from_utf8_lossy(&req[..n])
                        .lines()
                        .next()
                        .unwrap()
                        .to_owned(),
                );
                let status = if body.contains("No such") {
                    "404 Not Found"
                } else {
                    "200 OK"
                };
                write!(
                    s,
                    "HTTP/1.0 {status}\r\nContent-Type: application/json\r\n\r\n{body}"
                )
                .unwrap();
            }
            paths
        });
        let mut d = DockerIdentity::new(DockerConfig {
            socket: sock,
            ..Default::default()
        });
        let id = identity::parse(&format!("/docker/{ID}"));
        let n = d.names(&id);
        assert_eq!(n.name.as_deref(), Some("web"));
        assert_eq!(n.image.as_deref(), Some("nginx:1.27"));
        assert_eq!(n.pod.as_deref(), Some("web-0"));
        assert_eq!(n.namespace.as_deref(), Some("shop"));
        assert_eq!(n.container.as_deref(), Some("nginx"));
        // Cached: no second request for the same id.
        assert_eq!(d.names(&id), n);
        let other = identity::parse(&format!("/docker/{}", ID.replace('0', "a")));
        assert_eq!(d.names(&other), Names::default());
        let paths = server.join().unwrap();
        assert_eq!(paths[0], format!("GET /containers/{ID}/json HTTP/1.0"));
        // The failure is retried after `retry`, signalled by a new generation.
        let g = d.generation();
        d.refresh(Instant::now());
        assert_eq!(d.generation(), g);
        d.refresh(Instant::now() + Duration::from_secs(31));
        assert_eq!(d.generation(), g + 1);
        assert!(d.failed.is_empty());
        // containerd's containers are not asked for.
        let containerd = identity::parse(&format!(
            "/kubepods.slice/kubepods-pod1234abcd_56ef_7890_abcd_ef0123456789.slice/cri-containerd-{ID}.scope"
        ));
        assert_eq!(d.names(&containerd), Names::default());
    }

    #[test]
    fn an_absent_daemon_is_not_fatal() {
        let mut d = DockerIdentity::new(DockerConfig {
            socket: "/nonexistent/docker.sock".into(),
            ..Default::default()
        });
        assert_eq!(
            d.names(&identity::parse(&format!("/docker/{ID}"))),
            Names::default()
        );
        assert!(parse_response(b"garbage").is_err());
    }
}
