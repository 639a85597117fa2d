//! `meta.json` of a block (Prometheus's field names where they exist).

use serde::{Deserialize, Serialize};

/// What a block holds and where it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct BlockMeta {
    /// The block's id, also its directory name: time-ordered hex.
    pub(crate) ulid: String,
    /// The block covers `minTime..maxTime` (end exclusive, as Prometheus).
    pub(crate) min_time: i64,
    pub(crate) max_time: i64,
    pub(crate) stats: BlockStats,
    pub(crate) compaction: Compaction,
    /// Sample resolution in milliseconds: 0 for raw samples.
    pub(crate) resolution: i64,
    pub(crate) version: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct BlockStats {
    pub(crate) num_samples: u64,
    pub(crate) num_series: u64,
    pub(crate) num_chunks: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Compaction {
    /// 1 for a block cut from the head, one more than its highest parent's otherwise.
    pub(crate) level: u32,
    /// The level-1 blocks whose data this block holds.
    pub(crate) sources: Vec<String>,
    /// The blocks this one was compacted from (removed once it is written; a parent still
    /// present at open is removed then).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) parents: Vec<String>,
}

/// A new block id: milliseconds since the epoch, the process id and a counter, in hex, so
/// that ids sort by creation time and never repeat.
pub(crate) fn new_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{ms:012x}{:06x}{seq:08x}", std::process::id() & 0xff_ffff)
}
