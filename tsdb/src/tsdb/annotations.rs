//! A tenant's exemplars ([`DurableExemplars`], `exemplars.log`) and metric metadata
//! ([`PersistentMetadata`], `metadata.json`): files of their own beside the head's WAL and
//! checkpoints, which know nothing of them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use super::{Tsdb, TsdbError};
use crate::config::TsdbConfig;
use crate::exemplar::log::{DurableExemplars, ExemplarLogError};
use crate::metadata::{Metadata, PersistentMetadata};
use crate::storage::{Annotations, ExemplarReport, Matcher, SeriesExemplars, StorageError};

#[derive(Debug)]
pub(super) struct TenantAnnotations {
    exemplars: DurableExemplars,
    metadata: PersistentMetadata,
}

impl From<ExemplarLogError> for TsdbError {
    fn from(e: ExemplarLogError) -> TsdbError {
        match e {
            ExemplarLogError::Io { path, source } => TsdbError::Io { path, source },
            ExemplarLogError::Failed(m) => TsdbError::Io {
                path: Path::new(crate::exemplar::log::FILE).to_path_buf(),
                source: std::io::Error::other(m),
            },
        }
    }
}

impl TenantAnnotations {
    pub(super) fn open(dir: &Path, cfg: &TsdbConfig) -> Result<TenantAnnotations, TsdbError> {
        Ok(TenantAnnotations {
            exemplars: DurableExemplars::open(
                dir,
                cfg.exemplars.max_exemplars,
                cfg.ooo_window_ms(),
            )?,
            metadata: PersistentMetadata::open(dir),
        })
    }

    /// Writes metadata changes still unwritten (logged: metadata is resent by its senders).
    pub(super) fn flush(&self) {
        if let Err(e) = self.metadata.flush() {
            tracing::warn!(error = %e, "tsdb: writing metric metadata failed");
        }
    }
}

impl Annotations for Tsdb {
    fn append_exemplars(&self, batch: &[SeriesExemplars]) -> Result<ExemplarReport, StorageError> {
        self.annotations
            .exemplars
            .append(batch)
            .map_err(|e| StorageError::Internal(e.to_string()))
    }

    fn select_exemplars(
        &self,
        sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesExemplars>, StorageError> {
        Ok(self.annotations.exemplars.select(sets, mint, maxt))
    }

    fn record_metadata(&self, entries: Vec<(String, Metadata)>) -> Result<(), StorageError> {
        self.annotations
            .metadata
            .record(entries, Instant::now())
            .map_err(|e| {
                StorageError::Internal(format!(
                    "{}: {e}",
                    self.dir.join(crate::metadata::FILE).display()
                ))
            })
    }

    fn metadata(
        &self,
        metric: Option<&str>,
        limit: i64,
        limit_per_metric: i64,
    ) -> Result<BTreeMap<String, Vec<Metadata>>, StorageError> {
        Ok(self
            .annotations
            .metadata
            .list(metric, limit, limit_per_metric))
    }
}
