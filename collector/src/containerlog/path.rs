//! What a container log's path tells about its container.
//!
//! - kubelet: `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log`;
//! - kubelet's symlinks to those: `/var/log/containers/<pod>_<namespace>_<container>-<id>.log`;
//! - Docker json-file: `/var/lib/docker/containers/<id>/<id>-json.log`.
//!
//! Names are recognised by the shape of the last path components, wherever the tree is mounted
//! (`/host/var/log/pods/…` in a DaemonSet). A symlink's target is read too, so that a
//! `/var/log/containers` link also yields the pod uid, and a kubelet file that links into
//! Docker's tree (dockershim) the Docker container.

use std::path::Path;

/// Identity labels a path carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathInfo {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub pod_uid: Option<String>,
    pub container: Option<String>,
    pub container_id: Option<String>,
    /// A Docker json-file: its container is the Docker daemon's (named by the Docker resolver).
    pub docker: bool,
}

impl PathInfo {
    /// Fills what `self` does not know from `other`.
    fn or(self, other: PathInfo) -> PathInfo {
        PathInfo {
            namespace: self.namespace.or(other.namespace),
            pod: self.pod.or(other.pod),
            pod_uid: self.pod_uid.or(other.pod_uid),
            container: self.container.or(other.container),
            container_id: self.container_id.or(other.container_id),
            docker: self.docker || other.docker,
        }
    }
}

/// What `path` and, when it is a symlink, its target tell.
pub fn resolve(path: &Path) -> PathInfo {
    let info = parse(path);
    let is_link = std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false);
    match is_link.then(|| std::fs::canonicalize(path)) {
        Some(Ok(target)) => info.or(parse(&target)),
        _ => info,
    }
}

/// What `path` itself tells.
pub fn parse(path: &Path) -> PathInfo {
    let Some(file) = name(Some(path)) else {
        return PathInfo::default();
    };
    let dir = name(path.parent());
    let pod_dir = name(path.parent().and_then(Path::parent));

    // Docker: <id>/<id>-json.log
    if let Some(dir) = dir
        && is_container_id(dir)
        && file.strip_suffix("-json.log") == Some(dir)
    {
        return PathInfo {
            container_id: Some(dir.to_owned()),
            docker: true,
            ..Default::default()
        };
    }
    let Some(stem) = file.strip_suffix(".log") else {
        return PathInfo::default();
    };
    // kubelet: <namespace>_<pod>_<uid>/<container>/<restart>.log
    if let (Some(dir), Some(pod_dir)) = (dir, pod_dir)
        && !stem.is_empty()
        && stem.bytes().all(|b| b.is_ascii_digit())
        && let [namespace, pod, uid] = pod_dir.split('_').collect::<Vec<_>>()[..]
        && [namespace, pod, uid, dir].iter().all(|s| !s.is_empty())
    {
        return PathInfo {
            namespace: Some(namespace.to_owned()),
            pod: Some(pod.to_owned()),
            pod_uid: Some(uid.to_owned()),
            container: Some(dir.to_owned()),
            ..Default::default()
        };
    }
    // kubelet's symlinks: <pod>_<namespace>_<container>-<id>.log
    if let [pod, namespace, rest] = stem.split('_').collect::<Vec<_>>()[..]
        && let Some((container, id)) = rest.rsplit_once('-')
        && is_container_id(id)
        && [pod, namespace, container].iter().all(|s| !s.is_empty())
    {
        return PathInfo {
            namespace: Some(namespace.to_owned()),
            pod: Some(pod.to_owned()),
            container: Some(container.to_owned()),
            container_id: Some(id.to_owned()),
            ..Default::default()
        };
    }
    PathInfo::default()
}

/// The last component of `p`, if it is UTF-8.
fn name(p: Option<&Path>) -> Option<&str> {
    p.and_then(Path::file_name).and_then(|n| n.to_str())
}

/// 64 lowercase hex digits.
fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "5d8a6f2e-1b7c-4c5e-9f3a-2b1c0d9e8f7a";

    #[test]
    fn kubelet_pod_logs() {
        let p = format!("/var/log/pods/shop_web-0_{UID}/nginx/3.log");
        assert_eq!(
            parse(Path::new(&p)),
            PathInfo {
                namespace: Some("shop".into()),
                pod: Some("web-0".into()),
                pod_uid: Some(UID.into()),
                container: Some("nginx".into()),
                container_id: None,
                docker: false,
            }
        );
        // Not the shape: no restart number, or a pod directory without three parts.
        assert_eq!(
            parse(Path::new(&format!(
                "/var/log/pods/shop_web-0_{UID}/nginx/x.log"
            ))),
            PathInfo::default()
        );
        assert_eq!(
            parse(Path::new("/var/log/pods/shop_web-0/nginx/0.log")),
            PathInfo::default()
        );
    }

    #[test]
    fn kubelet_container_symlinks_and_their_targets() {
        let p = format!("/var/log/containers/web-0_shop_nginx-{ID}.log");
        assert_eq!(
            parse(Path::new(&p)),
            PathInfo {
                namespace: Some("shop".into()),
                pod: Some("web-0".into()),
                pod_uid: None,
                container: Some("nginx".into()),
                container_id: Some(ID.into()),
                docker: false,
            }
        );
        // A container name with dashes: the id is after the last one.
        let p = format!("/var/log/containers/web-0_shop_istio-proxy-{ID}.log");
        assert_eq!(
            parse(Path::new(&p)).container.as_deref(),
            Some("istio-proxy")
        );

        let dir = tempfile::tempdir().unwrap();
        let target_dir = dir.path().join(format!("pods/shop_web-0_{UID}/nginx"));
        std::fs::create_dir_all(&target_dir).unwrap();
        std::fs::write(target_dir.join("0.log"), b"").unwrap();
        std::fs::create_dir(dir.path().join("containers")).unwrap();
        let link = dir
            .path()
            .join(format!("containers/web-0_shop_nginx-{ID}.log"));
        std::os::unix::fs::symlink(target_dir.join("0.log"), &link).unwrap();
        let info = resolve(&link);
        assert_eq!(info.pod_uid.as_deref(), Some(UID));
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.container.as_deref(), Some("nginx"));
    }

    #[test]
    fn docker_json_files() {
        let p = format!("/var/lib/docker/containers/{ID}/{ID}-json.log");
        let info = parse(Path::new(&p));
        assert!(info.docker);
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.pod, None);
        let other = ID.replace('0', "1");
        assert_eq!(
            parse(Path::new(&format!("/d/{ID}/{other}-json.log"))),
            PathInfo::default()
        );
        assert_eq!(parse(Path::new("/")), PathInfo::default());
    }
}
