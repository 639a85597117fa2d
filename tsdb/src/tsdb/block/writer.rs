//! Writing a block: series in label order are encoded into chunks as they come (no block is
//! held in memory, only its index), then the index and `meta.json` are written, everything is
//! fsynced and the temporary directory renamed into place.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::index::{self, BlockSeries, ChunkMeta};
use super::meta::{BlockMeta, BlockStats, Compaction};
use super::{Block, CHUNKS_FILE, CHUNKS_MAGIC, INDEX_FILE, META_FILE, TMP_SUFFIX};
use crate::chunk::{SAMPLES_PER_CHUNK, seal};
use crate::labels::Labels;
use crate::storage::Sample;
use crate::tsdb::TsdbError;
use crate::wal::sync_dir;

/// A block being written into `<blocks>/<id>.tmp/`.
#[derive(Debug)]
pub(crate) struct BlockWriter {
    blocks_dir: PathBuf,
    id: String,
    tmp: PathBuf,
    chunks: BufWriter<File>,
    off: u64,
    series: Vec<BlockSeries>,
    stats: BlockStats,
    done: bool,
}

impl BlockWriter {
    pub(crate) fn new(blocks_dir: &Path) -> Result<BlockWriter, TsdbError> {
        let id = super::meta::new_id();
        let tmp = blocks_dir.join(format!("{id}{TMP_SUFFIX}"));
        fs::create_dir_all(&tmp).map_err(TsdbError::io(&tmp))?;
        let path = tmp.join(CHUNKS_FILE);
        let mut chunks = BufWriter::new(File::create(&path).map_err(TsdbError::io(&path))?);
        chunks
            .write_all(CHUNKS_MAGIC)
            .map_err(TsdbError::io(&path))?;
        Ok(BlockWriter {
            blocks_dir: blocks_dir.to_path_buf(),
            id,
            tmp,
            chunks,
            off: CHUNKS_MAGIC.len() as u64,
            series: Vec::new(),
            stats: BlockStats::default(),
            done: false,
        })
    }

    /// Adds a series; series come in label order, samples in time order. A series without
    /// samples is skipped.
    pub(crate) fn add(&mut self, labels: Labels, samples: &[Sample]) -> Result<(), TsdbError> {
        if samples.is_empty() {
            return Ok(());
        }
        debug_assert!(self.series.last().is_none_or(|s| s.labels < labels));
        let path = self.tmp.join(CHUNKS_FILE);
        let mut metas = Vec::with_capacity(samples.len().div_ceil(SAMPLES_PER_CHUNK.into()));
        for part in samples.chunks(usize::from(SAMPLES_PER_CHUNK)) {
            let bytes = seal(part);
            let len = u32::try_from(bytes.len())
                .map_err(|_| TsdbError::io(&path)(std::io::Error::other("chunk too large")))?;
            self.chunks
                .write_all(&bytes)
                .and_then(|()| {
                    self.chunks
                        .write_all(&crc32fast::hash(&bytes).to_le_bytes())
                })
                .map_err(TsdbError::io(&path))?;
            metas.push(ChunkMeta {
                min_t: part[0].t,
                max_t: part[part.len() - 1].t,
                off: self.off,
                len,
            });
            self.off += u64::from(len) + 4;
        }
        self.stats.num_samples += samples.len() as u64;
        self.stats.num_chunks += metas.len() as u64;
        self.stats.num_series += 1;
        self.series.push(BlockSeries {
            labels,
            chunks: metas,
        });
        Ok(())
    }

    /// Series added so far.
    pub(crate) fn num_series(&self) -> usize {
        self.series.len()
    }

    /// Writes the index and meta, makes the block durable and opens it. The block covers
    /// `min_t..max_t` (end exclusive).
    pub(crate) fn finish(
        mut self,
        min_t: i64,
        max_t: i64,
        mut compaction: Compaction,
        resolution: i64,
    ) -> Result<Block, TsdbError> {
        let path = self.tmp.join(CHUNKS_FILE);
        self.chunks.flush().map_err(TsdbError::io(&path))?;
        self.chunks
            .get_ref()
            .sync_all()
            .map_err(TsdbError::io(&path))?;
        if compaction.sources.is_empty() {
            compaction.sources.push(self.id.clone());
        }
        let index_path = self.tmp.join(INDEX_FILE);
        let index = index::encode(&self.series).map_err(TsdbError::io(&index_path))?;
        write_synced(&index_path, &index)?;
        let meta = BlockMeta {
            ulid: self.id.clone(),
            min_time: min_t,
            max_time: max_t,
            stats: std::mem::take(&mut self.stats),
            compaction,
            resolution,
            version: 1,
        };
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| TsdbError::io(&self.tmp)(std::io::Error::other(e)))?;
        write_synced(&self.tmp.join(META_FILE), &json)?;
        sync_dir(&self.tmp)?;
        let dir = self.blocks_dir.join(&self.id);
        fs::rename(&self.tmp, &dir).map_err(TsdbError::io(&dir))?;
        self.done = true;
        sync_dir(&self.blocks_dir)?;
        Block::open(&dir)
    }
}

impl Drop for BlockWriter {
    /// An unfinished block's directory is removed (and at the next open if this fails).
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

fn write_synced(path: &Path, data: &[u8]) -> Result<(), TsdbError> {
    let mut f = File::create(path).map_err(TsdbError::io(path))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(TsdbError::io(path))
}
