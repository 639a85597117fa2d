//! Names a cgroup path cannot tell (pod name and namespace from the pod uid, container name and
//! image from the container id) come from an [`Identity`] resolver.

use std::fmt::Debug;
use std::time::Instant;

use crate::cgroup::identity::PathIdentity;

pub(crate) mod docker;
pub(crate) mod kubelet;

pub use docker::DockerIdentity;
pub use kubelet::KubeletIdentity;

/// Names of a container or pod, where known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
    pub image: Option<String>,
    /// The runtime's container name (plain Docker).
    pub name: Option<String>,
}

/// Resolves path identities to names. Called from the collecting thread; implementations may
/// block briefly (an HTTP request with a time-out) in [`Identity::refresh`].
pub trait Identity: Send + Debug {
    /// Called once per scan before any lookup: refreshes caches when due (`now` passed in).
    fn refresh(&mut self, now: Instant);

    /// Names for `id`; a miss may schedule an earlier refresh.
    fn names(&mut self, id: &PathIdentity) -> Names;

    /// Changes whenever what [`Identity::names`] returns may have changed, so that callers can
    /// cache labels until then.
    fn generation(&self) -> u64;
}

/// Knows no names: containers are labelled with what their paths tell.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoIdentity;

impl Identity for NoIdentity {
    fn refresh(&mut self, _now: Instant) {}

    fn names(&mut self, _id: &PathIdentity) -> Names {
        Names::default()
    }

    fn generation(&self) -> u64 {
        0
    }
}

/// Asks several resolvers; for each name the first that knows it wins.
#[derive(Debug)]
pub struct Chain {
    resolvers: Vec<Box<dyn Identity>>,
}

impl Chain {
    pub fn new(resolvers: Vec<Box<dyn Identity>>) -> Self {
        Chain { resolvers }
    }
}

impl Identity for Chain {
    fn refresh(&mut self, now: Instant) {
        for r in &mut self.resolvers {
            r.refresh(now);
        }
    }

    fn names(&mut self, id: &PathIdentity) -> Names {
        let mut n = Names::default();
        for r in &mut self.resolvers {
            let m = r.names(id);
            n.namespace = n.namespace.or(m.namespace);
            n.pod = n.pod.or(m.pod);
            n.container = n.container.or(m.container);
            n.image = n.image.or(m.image);
            n.name = n.name.or(m.name);
        }
        n
    }

    fn generation(&self) -> u64 {
        self.resolvers
            .iter()
            .fold(0u64, |g, r| g.wrapping_mul(31).wrapping_add(r.generation()))
    }
}
