//! Where blocks live: anything `object_store` speaks. Only the local directory is wired up
//! today; S3/GCS/Azure plug in here by building a different `ObjectStore`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::block::footers::FooterCache;
use crate::block::sums::{FileSums, SumsWriter};
use crate::StoreError;

/// What `Backend::list_blocks` found.
pub struct BlockList {
    /// Ids of complete blocks, oldest first (ids sort by time).
    pub complete: Vec<String>,
    /// Ids and bytes of blocks without a meta that are marked as being written or lack a
    /// data file: what an interrupted write leaves (its spans are still in the WAL or in the
    /// blocks it merged).
    pub incomplete: Vec<(String, u64)>,
    /// Ids of blocks with every data file, no meta and no mark of a write in progress: the
    /// meta was lost on its own (or the block was written before the mark existed), and the
    /// files may be the only copy of their spans.
    pub without_meta: Vec<String>,
}

#[derive(Clone)]
pub struct Backend {
    pub store: Arc<dyn ObjectStore>,
    /// Parquet footers of block files, shared by every block of this backend.
    pub footers: Arc<FooterCache>,
    /// Set for the local directory backend, whose writes we fsync ourselves.
    local_root: Option<PathBuf>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Backend({})", self.store)
    }
}

impl Backend {
    /// The local directory `root`, keeping up to `footer_cache_bytes` of block footers.
    pub fn local(root: PathBuf, footer_cache_bytes: usize) -> Result<Backend, StoreError> {
        std::fs::create_dir_all(&root).map_err(|e| StoreError::io("creating block directory", &root, e))?;
        let fs = LocalFileSystem::new_with_prefix(&root).map_err(StoreError::object)?;
        Ok(Backend {
            store: Arc::new(fs),
            footers: Arc::new(FooterCache::new(footer_cache_bytes)),
            local_root: Some(root),
        })
    }

    pub fn block_path(&self, id: &str, file: &str) -> Path {
        Path::from(format!("blocks/{id}/{file}"))
    }

    /// Writes an object and, for the local backend, makes it durable before returning.
    pub async fn put_durable(&self, path: &Path, data: Vec<u8>) -> Result<(), StoreError> {
        self.store
            .put(path, PutPayload::from(Bytes::from(data)))
            .await
            .map_err(StoreError::object)?;
        self.sync_local(path).await
    }

    /// Marks block `id` as incomplete: before the first file of a write, and before the meta
    /// goes in a delete. A block without a meta is then known for an interrupted write or
    /// delete (removed at the next start), where one without the mark lost its meta some
    /// other way (kept: its files may be the only copy of its spans). No sync of its own: the
    /// first block file's sync makes the directory entry durable.
    pub async fn mark_incomplete(&self, id: &str) -> Result<(), StoreError> {
        self.store
            .put(
                &self.block_path(id, super::block::INCOMPLETE_FILE),
                PutPayload::default(),
            )
            .await
            .map_err(StoreError::object)?;
        Ok(())
    }

    /// Removes the mark of `mark_incomplete` once the block's meta is written. Best effort: a
    /// mark left beside a meta changes nothing.
    pub async fn clear_incomplete(&self, id: &str) {
        match self
            .store
            .delete(&self.block_path(id, super::block::INCOMPLETE_FILE))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => tracing::warn!(block = %id, error = %e, "could not remove a written block's \"incomplete\" mark"),
        }
    }

    /// Starts an object that is written as it is produced (see `StreamingPut`).
    pub async fn put_streaming(&self, path: &Path) -> Result<StreamingPut, StoreError> {
        let upload = self.store.put_multipart(path).await.map_err(StoreError::object)?;
        Ok(StreamingPut {
            upload: WriteMultipart::new(upload),
            path: path.clone(),
            bytes: 0,
            sums: SumsWriter::default(),
        })
    }

    /// For the local backend, fsyncs the file at `path` and the directories naming it.
    async fn sync_local(&self, path: &Path) -> Result<(), StoreError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let file = root.join(path.as_ref());
        let dir = file.parent().map(|p| p.to_path_buf());
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            std::fs::File::open(&file)
                .and_then(|f| f.sync_all())
                .map_err(|e| StoreError::io("syncing block file", &file, e))?;
            if let Some(dir) = dir {
                crate::wal::sync_dir(&dir)?;
                if let Some(blocks) = dir.parent() {
                    crate::wal::sync_dir(blocks)?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    pub async fn get(&self, path: &Path) -> Result<Bytes, StoreError> {
        self.store
            .get(path)
            .await
            .map_err(StoreError::object)?
            .bytes()
            .await
            .map_err(StoreError::object)
    }

    /// Deletes a block: marked incomplete, then its meta, so a half-deleted block is never
    /// mistaken for a whole one nor for one that lost its meta. Also removes an incomplete
    /// block: whatever of it exists, staging files of cut-short puts included (the local
    /// directory goes whole; a leftover is removed at the next start).
    pub async fn delete_block(&self, id: &str) -> Result<(), StoreError> {
        self.mark_incomplete(id).await?;
        for file in [
            super::block::META_FILE,
            super::block::DATA_FILE,
            super::block::SUMMARY_FILE,
            super::block::BLOOM_FILE,
            super::block::SUMS_FILE,
            super::block::INCOMPLETE_FILE,
        ] {
            match self.store.delete(&self.block_path(id, file)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(StoreError::object(e)),
            }
        }
        if let Some(root) = &self.local_root {
            let _ = std::fs::remove_dir_all(root.join("blocks").join(id));
        }
        Ok(())
    }

    /// The blocks here, from one listing: complete ones (with a meta, the commit point written
    /// last) oldest first, and the ids and bytes of incomplete ones, which a crash or a
    /// shutdown in the middle of a write left.
    pub async fn list_blocks(&self) -> Result<BlockList, StoreError> {
        use super::block::{BLOOM_FILE, DATA_FILE, INCOMPLETE_FILE, META_FILE, SUMMARY_FILE};
        let mut list = BlockList {
            complete: Vec::new(),
            incomplete: Vec::new(),
            without_meta: Vec::new(),
        };
        for (id, files) in self.block_files().await? {
            let has = |file: &str| files.iter().any(|(name, _)| name == file);
            if has(META_FILE) {
                list.complete.push(id);
            } else if !has(INCOMPLETE_FILE) && [DATA_FILE, SUMMARY_FILE, BLOOM_FILE].iter().all(|f| has(f)) {
                list.without_meta.push(id);
            } else {
                list.incomplete.push((id, files.iter().map(|(_, size)| size).sum()));
            }
        }
        Ok(list)
    }

    /// Every block directory, in id order, with its files' names and sizes. On the local
    /// backend a directory with no file listed is there too: a put cut short leaves only its
    /// staging file, which is not listed.
    async fn block_files(&self) -> Result<BTreeMap<String, Vec<(String, u64)>>, StoreError> {
        if let Some(root) = &self.local_root {
            return Ok(local_block_files(&root.join("blocks")));
        }
        let prefix = Path::from("blocks");
        let objects: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(StoreError::object)?;
        let mut blocks: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
        for o in &objects {
            let parts: Vec<_> = o.location.parts().collect();
            if parts.len() == 3 {
                blocks
                    .entry(parts[1].as_ref().to_string())
                    .or_default()
                    .push((parts[2].as_ref().to_string(), o.size));
            }
        }
        Ok(blocks)
    }
}

/// A name skein could have given a block or one of its files, which the object store's paths
/// hold as they are (no character it would escape).
fn plain_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// `Backend::block_files` on the local backend, read from the directory itself: the object
/// store's listing ends at the first name it cannot take (one not UTF-8), which would stop the
/// store from opening over a stray file. Entries whose names skein could not have written are
/// logged and left alone, as are staging files of puts cut short (`<file>#<digits>`).
fn local_block_files(blocks: &std::path::Path) -> BTreeMap<String, Vec<(String, u64)>> {
    let mut out = BTreeMap::new();
    let Ok(dirs) = std::fs::read_dir(blocks) else {
        return out;
    };
    for dir in dirs.flatten().filter(|d| d.path().is_dir()) {
        let id = match dir.file_name().into_string() {
            Ok(id) if plain_name(&id) => id,
            _ => {
                tracing::error!(path = %dir.path().display(), "ignoring a directory under blocks/ that is not a block (its name is not one skein gives)");
                continue;
            }
        };
        let files: &mut Vec<(String, u64)> = out.entry(id).or_default();
        let Ok(entries) = std::fs::read_dir(dir.path()) else {
            continue;
        };
        for file in entries.flatten() {
            let Ok(meta) = file.metadata() else { continue };
            match file.file_name().into_string() {
                Ok(name) if meta.is_file() && plain_name(&name) => files.push((name, meta.len())),
                Ok(name) if meta.is_file() && name.contains('#') => {}
                _ => {
                    tracing::warn!(path = %file.path().display(), "ignoring an entry in a block directory that skein did not write")
                }
            }
        }
    }
    out
}

/// An object written while it is produced, in parts of 5 MiB: a multipart upload (on the
/// local backend, a staging file renamed into place by `finish`). A merge writes its output
/// this way instead of holding the whole file (~31 MB for 16 level-0 blocks) until the end.
/// Writing spawns the part uploads on the current tokio runtime: call it inside one.
pub struct StreamingPut {
    upload: WriteMultipart,
    path: Path,
    bytes: u64,
    sums: SumsWriter,
}

impl StreamingPut {
    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Waits until at most one part is still being uploaded, bounding the memory of parts in
    /// flight.
    pub async fn wait_for_capacity(&mut self) -> Result<(), StoreError> {
        self.upload.wait_for_capacity(1).await.map_err(StoreError::object)
    }

    /// Uploads what is left, completes the object and makes it durable. Returns the checksums
    /// of what was written.
    pub async fn finish(self, backend: &Backend) -> Result<FileSums, StoreError> {
        self.upload.finish().await.map_err(StoreError::object)?;
        backend.sync_local(&self.path).await?;
        Ok(self.sums.finish())
    }

    /// Abandons the object: nothing of it stays (best effort; a leftover staging file is
    /// removed with its incomplete block at the next start).
    pub async fn abort(self) {
        if let Err(e) = self.upload.abort().await {
            tracing::warn!(path = %self.path, error = %e, "could not abort a block upload");
        }
    }
}

impl std::io::Write for StreamingPut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.upload.write(buf);
        self.sums.update(buf);
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads a Parquet file from the object store by byte ranges, checking each against the
/// file's checksums when it has them (whole 4 KiB chunks are read for that).
#[derive(Clone, Debug)]
pub struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    sums: Option<Arc<FileSums>>,
}

impl ObjectReader {
    pub fn new(store: Arc<dyn ObjectStore>, path: Path, size: u64, sums: Option<Arc<FileSums>>) -> Self {
        ObjectReader {
            store,
            path,
            size,
            sums,
        }
    }

    /// The bytes of `ranges`, checked.
    async fn read(&self, ranges: Vec<std::ops::Range<u64>>) -> parquet::errors::Result<Vec<Bytes>> {
        let Some(sums) = &self.sums else {
            return self.store.get_ranges(&self.path, &ranges).await.map_err(pq_err);
        };
        let widened: Vec<_> = ranges.iter().map(|r| sums.widened(r)).collect();
        let chunks = self.store.get_ranges(&self.path, &widened).await.map_err(pq_err)?;
        let mut out = Vec::with_capacity(ranges.len());
        for ((range, wide), bytes) in ranges.iter().zip(&widened).zip(chunks) {
            sums.check(wide.start, &bytes)
                .map_err(|e| parquet::errors::ParquetError::General(format!("{}: {e}", self.path)))?;
            let from = (range.start - wide.start) as usize;
            let to = from + (range.end - range.start) as usize;
            if to > bytes.len() {
                return Err(parquet::errors::ParquetError::General(format!(
                    "{}: {} bytes asked for, {} there",
                    self.path,
                    range.end - range.start,
                    bytes.len().saturating_sub(from)
                )));
            }
            out.push(bytes.slice(from..to));
        }
        Ok(out)
    }
}

fn pq_err(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl parquet::arrow::async_reader::AsyncFileReader for ObjectReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Bytes>> {
        use futures::FutureExt;
        async move {
            let mut bytes = self.read(vec![range]).await?;
            Ok(bytes.pop().unwrap_or_default())
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        use futures::FutureExt;
        async move { self.read(ranges).await }.boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a parquet::arrow::arrow_reader::ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<'a, parquet::errors::Result<Arc<parquet::file::metadata::ParquetMetaData>>> {
        use futures::FutureExt;
        async move {
            let size = self.size;
            let md = parquet::file::metadata::ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(md))
        }
        .boxed()
    }
}
