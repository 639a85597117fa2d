use std::path::PathBuf;

/// Errors of the bus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid bus config: {0}")]
    Config(String),
    #[error("bus i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the bus log is unusable after an earlier write failure ({0}); restart to recover")]
    Poisoned(String),
    #[error("the bus is closed")]
    Closed,
    #[error(
        "invalid consumer group name {0:?}: use 1-200 of [A-Za-z0-9._-], not starting with '.'"
    )]
    InvalidGroup(String),
    #[error("consumer group {0:?} already has a member on this embedded bus")]
    GroupBusy(String),
    #[error("corrupt bus data in {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("kafka: {context}: {source}")]
    KafkaContext {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error(
        "the spool is full ({used} of {limit} bytes) and did not drain within {waited:?}: the broker is unreachable or slower than the producers"
    )]
    SpoolFull {
        used: u64,
        limit: u64,
        waited: std::time::Duration,
    },
    #[error("record of {size} bytes exceeds the limit of {limit} bytes")]
    RecordTooLarge { size: usize, limit: usize },
}

/// The bus's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether sending the same records again can never succeed: the broker refuses the records
    /// themselves (too large, invalid), as opposed to an outage or a time-out.
    pub fn is_permanent(&self) -> bool {
        use rdkafka::types::RDKafkaErrorCode as Code;
        let code = match self {
            Error::RecordTooLarge { .. } => return true,
            Error::Kafka(e) | Error::KafkaContext { source: e, .. } => e.rdkafka_error_code(),
            _ => return false,
        };
        matches!(
            code,
            Some(
                Code::InvalidMessage
                    | Code::InvalidMessageSize
                    | Code::MessageSizeTooLarge
                    | Code::MessageBatchTooLarge
                    | Code::InvalidRecord
            )
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
