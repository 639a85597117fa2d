use std::path::PathBuf;

/// Errors of the collector.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid collector config: {0}")]
    Config(String),
    #[error("collector i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no cgroup hierarchy found under {0}")]
    NoCgroups(PathBuf),
    #[error("bus: {0}")]
    Bus(#[from] bus::Error),
    #[error("kubelet: {0}")]
    Kubelet(String),
    #[error("docker: {0}")]
    Docker(String),
    #[error("scrape targets: {0}")]
    Scrape(String),
    #[error("a collection task failed: {0}")]
    Task(String),
}

/// The collector's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
