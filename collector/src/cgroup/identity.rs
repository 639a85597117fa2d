//! What a cgroup path tells about the container or pod in it.
//!
//! Forms (kubelet `pkg/kubelet/cm/cgroup_manager_linux.go`; runtimes' scope names, as cAdvisor's
//! factories match them):
//! - Kubernetes, systemd driver: `/kubepods.slice/kubepods-burstable.slice/
//!   kubepods-burstable-pod<uid with _>.slice/<runtime>-<64 hex>.scope` (Guaranteed pods sit
//!   directly under `kubepods.slice`), runtime `cri-containerd`, `crio` or `docker`.
//! - Kubernetes, cgroupfs driver: `/kubepods/burstable/pod<uid>/<64 hex>` (CRI-O may name the
//!   leaf `crio-<id>`).
//! - Plain Docker: `/docker/<64 hex>` (cgroupfs) or `/system.slice/docker-<64 hex>.scope`.
//!
//! The forms are found anywhere in the path, so that nested set-ups (kind, k3s in Docker:
//! `/docker/<id>/kubepods/…`, `/kubelet.slice/kubelet-kubepods.slice/…`) work too.

/// What kind of cgroup a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A Kubernetes pod's cgroup (the parent of its containers).
    Pod,
    /// A container of a Kubernetes pod.
    PodContainer,
    /// A container outside Kubernetes (plain Docker).
    Container,
    /// Anything else (exported only with `all_cgroups`).
    Other,
}

/// The identity a cgroup path carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathIdentity {
    pub kind: Kind,
    /// The pod uid, with dashes (`1234abcd-…`).
    pub pod_uid: Option<String>,
    /// The container id (64 hex).
    pub container_id: Option<String>,
    /// The runtime that named the scope (`containerd`, `crio`, `docker`), when the path tells.
    pub runtime: Option<&'static str>,
}

impl PathIdentity {
    /// Whether this is a container or a pod (exported without `all_cgroups`).
    pub fn is_container(&self) -> bool {
        self.kind != Kind::Other
    }
}

/// Parses a cgroup path relative to its hierarchy's root (`/kubepods/…`).
pub fn parse(path: &str) -> PathIdentity {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let mut other = PathIdentity {
        kind: Kind::Other,
        pod_uid: None,
        container_id: None,
        runtime: None,
    };
    let Some((&last, parents)) = components.split_last() else {
        return other;
    };
    let in_kubepods = components
        .iter()
        .any(|c| c.starts_with("kubepods") || c.contains("-kubepods"));
    if in_kubepods {
        if let Some(uid) = pod_uid(last) {
            other.kind = Kind::Pod;
            other.pod_uid = Some(uid);
            return other;
        }
        if let Some(&parent) = parents.last()
            && let Some(uid) = pod_uid(parent)
            && let Some((id, runtime)) = container_id(last)
        {
            return PathIdentity {
                kind: Kind::PodContainer,
                pod_uid: Some(uid),
                container_id: Some(id.to_owned()),
                runtime,
            };
        }
        return other;
    }
    if let Some((id, runtime)) = container_id(last) {
        // Outside Kubernetes only Docker's forms are containers: `docker-<id>.scope` and
        // `/docker/<id>`.
        let docker_parent = parents.last() == Some(&"docker");
        if runtime == Some("docker") || (runtime.is_none() && docker_parent) {
            return PathIdentity {
                kind: Kind::Container,
                pod_uid: None,
                container_id: Some(id.to_owned()),
                runtime: Some("docker"),
            };
        }
    }
    other
}

/// The pod uid of a pod cgroup's name: `pod<uid>` (cgroupfs) or
/// `kubepods[-<qos>]-pod<uid with _>.slice` (systemd).
fn pod_uid(name: &str) -> Option<String> {
    let uid = if let Some(slice) = name.strip_suffix(".slice") {
        let i = slice.rfind("-pod")?;
        if !slice[..i].starts_with("kubepods") && !slice[..i].contains("-kubepods") {
            return None;
        }
        &slice[i + 4..]
    } else {
        name.strip_prefix("pod")?
    };
    let uid = uid.replace('_', "-");
    let valid = uid.len() >= 32
        && uid.len() <= 40
        && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    valid.then_some(uid)
}

/// The container id of a container cgroup's name and the runtime its prefix names.
fn container_id(name: &str) -> Option<(&str, Option<&'static str>)> {
    let (runtime, rest) = if let Some(r) = name.strip_prefix("cri-containerd-") {
        (Some("containerd"), r)
    } else if let Some(r) = name.strip_prefix("crio-") {
        if r.starts_with("conmon-") {
            // CRI-O's monitor process, not the container.
            return None;
        }
        (Some("crio"), r)
    } else if let Some(r) = name.strip_prefix("docker-") {
        (Some("docker"), r)
    } else {
        (None, name)
    };
    let id = rest.strip_suffix(".scope").unwrap_or(rest);
    let valid = id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    valid.then_some((id, runtime))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "1234abcd-56ef-7890-abcd-ef0123456789";
    const UID_: &str = "1234abcd_56ef_7890_abcd_ef0123456789";

    fn pod_container(path: &str, runtime: Option<&'static str>) {
        let p = parse(path);
        assert_eq!(p.kind, Kind::PodContainer, "{path}");
        assert_eq!(p.pod_uid.as_deref(), Some(UID), "{path}");
        assert_eq!(p.container_id.as_deref(), Some(ID), "{path}");
        assert_eq!(p.runtime, runtime, "{path}");
    }

    #[test]
    fn kubernetes_systemd_driver() {
        for (prefix, runtime) in [
            ("cri-containerd", "containerd"),
            ("crio", "crio"),
            ("docker", "docker"),
        ] {
            pod_container(
                &format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/{prefix}-{ID}.scope"
                ),
                Some(runtime),
            );
            pod_container(
                &format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/{prefix}-{ID}.scope"
                ),
                Some(runtime),
            );
            // Guaranteed.
            pod_container(
                &format!("/kubepods.slice/kubepods-pod{UID_}.slice/{prefix}-{ID}.scope"),
                Some(runtime),
            );
        }
        let pod = parse(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"
        ));
        assert_eq!(pod.kind, Kind::Pod);
        assert_eq!(pod.pod_uid.as_deref(), Some(UID));
        assert_eq!(
            parse(&format!("/kubepods.slice/kubepods-pod{UID_}.slice")).kind,
            Kind::Pod
        );
        // QoS slices and CRI-O's conmon are not containers.
        assert_eq!(
            parse("/kubepods.slice/kubepods-burstable.slice").kind,
            Kind::Other
        );
        assert_eq!(parse("/kubepods.slice").kind, Kind::Other);
        assert_eq!(
            parse(&format!(
                "/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{ID}.scope"
            ))
            .kind,
            Kind::Other
        );
    }

    #[test]
    fn kubernetes_cgroupfs_driver() {
        pod_container(&format!("/kubepods/burstable/pod{UID}/{ID}"), None);
        pod_container(&format!("/kubepods/besteffort/pod{UID}/{ID}"), None);
        pod_container(&format!("/kubepods/pod{UID}/{ID}"), None);
        pod_container(&format!("/kubepods/pod{UID}/crio-{ID}"), Some("crio"));
        let pod = parse(&format!("/kubepods/burstable/pod{UID}"));
        assert_eq!(pod.kind, Kind::Pod);
        assert_eq!(pod.pod_uid.as_deref(), Some(UID));
        assert_eq!(parse("/kubepods/burstable").kind, Kind::Other);
    }

    #[test]
    fn nested_kubernetes() {
        // kind / k3s in Docker, and the kubelet in its own slice.
        pod_container(
            &format!("/docker/{ID}/kubepods/burstable/pod{UID}/{ID}"),
            None,
        );
        pod_container(
            &format!(
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
            ),
            Some("containerd"),
        );
    }

    #[test]
    fn plain_docker() {
        for path in [
            format!("/docker/{ID}"),
            format!("/system.slice/docker-{ID}.scope"),
        ] {
            let p = parse(&path);
            assert_eq!(p.kind, Kind::Container, "{path}");
            assert_eq!(p.container_id.as_deref(), Some(ID));
            assert_eq!(p.runtime, Some("docker"));
            assert!(p.pod_uid.is_none());
        }
    }

    #[test]
    fn other_cgroups() {
        for path in [
            "/",
            "/system.slice",
            "/system.slice/docker.service",
            "/system.slice/containerd.service",
            "/user.slice/user-1000.slice/session-1.scope",
            "/docker",
            "/docker/notanid",
            "/system.slice/run-containerd-runc-k8s.io-abc.mount",
            &format!("/machine.slice/{ID}"),
        ] {
            assert_eq!(parse(path).kind, Kind::Other, "{path}");
        }
        // Upper-case hex is not an id.
        assert_eq!(
            parse(&format!("/docker/{}", ID.to_uppercase())).kind,
            Kind::Other
        );
    }
}
