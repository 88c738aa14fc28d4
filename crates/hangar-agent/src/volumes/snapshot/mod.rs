//! Volume snapshots as chunks and manifests, and copies of a live volume's blocks.
//!
//! A snapshot cuts the volume's image into 4 MiB blocks, leaves out the ones that hold
//! only zeros (the image is sparse; only what was written is read), and keeps each
//! other block as a chunk: its bytes in a zstd frame with a checksum, named by their
//! sha256 and stored once per volume. A later snapshot of the same volume stores only
//! the blocks that changed since any snapshot still kept (it is incremental), and its
//! manifest (`manifest.rs`) lists every block it needs, so each snapshot restores on
//! its own and removing one never breaks another: a chunk goes when no manifest of its
//! volume names it any more. Where the chunks live is a [`store::SnapshotStore`]: a
//! directory under the data dir, or an S3-compatible bucket. Taking a snapshot happens
//! while the caller holds the filesystem frozen, so the blocks are one moment's; the
//! caller also keeps takes and removals of one volume's snapshots from overlapping.
//! Snapshot files of the first format (one zstd stream per snapshot) are still restored
//! by `legacy.rs`.

pub mod legacy;
pub mod manifest;
pub mod s3;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use self::manifest::{hex, unhex, Entry, Manifest, BLOCK};
use self::store::SnapshotStore;
use super::VolumeError;

const LEVEL: i32 = 3;
/// Chunks read from the store at once during a restore (a bucket answers slower than
/// a disk; a few requests in flight hide that).
const FETCHES: usize = 4;
/// Zero pages of a restored block are not written, so the image stays sparse.
const PAGE: usize = 4096;

/// What a snapshot holds, as taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMade {
    /// Bytes its chunks take in the store (compressed), counting those an earlier
    /// snapshot put there.
    pub stored_bytes: u64,
    /// The image's size when taken.
    pub volume_bytes: u64,
    /// The manifest's sha256, hex.
    pub digest: String,
    /// Bytes this snapshot added to the store (only changed blocks).
    #[serde(default)]
    pub new_bytes: u64,
}

fn io(what: &str, e: std::io::Error) -> VolumeError {
    VolumeError::Failed(format!("cannot {what}: {e}"))
}

fn chunk_key(volume_id: &str, chunk: &[u8; 32]) -> String {
    format!("{volume_id}/chunks/{}", hex(chunk))
}

fn manifest_key(volume_id: &str, snapshot_id: &str) -> String {
    format!("{volume_id}/snapshots/{snapshot_id}")
}

/// The data extents of `file` (offset, length), by SEEK_DATA/SEEK_HOLE.
pub(crate) fn extents(file: &File, size: u64) -> Result<Vec<(u64, u64)>, VolumeError> {
    use nix::unistd::{lseek, Whence};
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut at: i64 = 0;
    while (at as u64) < size {
        let start = match lseek(fd, at, Whence::SeekData) {
            Ok(s) => s,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(io("find the image's data", e.into())),
        };
        let end = lseek(fd, start, Whence::SeekHole)
            .map_err(|e| io("find the image's holes", e.into()))?;
        out.push((start as u64, (end - start) as u64));
        at = end;
    }
    Ok(out)
}

fn all_zero(bytes: &[u8]) -> bool {
    // An OR over short runs compiles to vector instructions; `all` over bytes does not.
    bytes
        .chunks(256)
        .all(|run| run.iter().fold(0u8, |acc, b| acc | b) == 0)
}

/// A block to keep, as the reader found it.
struct Piece {
    chunk: [u8; 32],
    compressed: Vec<u8>,
}

/// Reads `image`'s blocks that hold data, and sends each one `present` lacks to be
/// stored; answers the image's size and every block's entry.
fn read_blocks(
    image: &Path,
    mut present: HashMap<[u8; 32], u64>,
    to_store: tokio::sync::mpsc::Sender<Piece>,
) -> Result<(u64, Vec<Entry>), VolumeError> {
    let file = File::open(image).map_err(|e| io("open the image", e))?;
    let size = file.metadata().map_err(|e| io("read the image", e))?.len();
    let mut blocks: Vec<u64> = Vec::new();
    for (offset, len) in extents(&file, size)? {
        let (first, last) = (offset / BLOCK, (offset + len - 1) / BLOCK);
        let from = blocks.last().map_or(first, |b| first.max(b + 1));
        blocks.extend(from..=last);
    }
    let mut compressor =
        zstd::bulk::Compressor::new(LEVEL).map_err(|e| io("start compressing", e))?;
    // A checksum in each frame: a damaged chunk fails its restore instead of restoring
    // wrong bytes.
    compressor
        .set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
        .map_err(|e| io("start compressing", e))?;
    let mut buf = vec![0u8; BLOCK as usize];
    let mut entries = Vec::with_capacity(blocks.len());
    for block in blocks {
        let offset = block * BLOCK;
        let n = BLOCK.min(size - offset) as usize;
        file.read_exact_at(&mut buf[..n], offset)
            .map_err(|e| io("read the image", e))?;
        let bytes = &buf[..n];
        if all_zero(bytes) {
            continue;
        }
        let chunk: [u8; 32] = Sha256::digest(bytes).into();
        let stored = match present.get(&chunk) {
            Some(stored) => *stored,
            None => {
                let compressed = compressor
                    .compress(bytes)
                    .map_err(|e| io("compress the snapshot", e))?;
                let stored = compressed.len() as u64;
                present.insert(chunk, stored);
                to_store
                    .blocking_send(Piece { chunk, compressed })
                    .map_err(|_| VolumeError::Failed("the snapshot was not stored".into()))?;
                stored
            }
        };
        entries.push(Entry {
            block,
            stored: stored as u32,
            chunk,
        });
    }
    Ok((size, entries))
}

/// The chunks a volume already has in the store, with the bytes each takes.
async fn chunks_of(
    store: &dyn SnapshotStore,
    volume_id: &str,
) -> Result<HashMap<[u8; 32], u64>, VolumeError> {
    let listed = store.list(&format!("{volume_id}/chunks/")).await?;
    Ok(listed
        .into_iter()
        .filter_map(|(key, size)| Some((unhex(key.rsplit('/').next()?)?, size)))
        .collect())
}

/// Takes snapshot `snapshot_id` of volume `volume_id` from its (frozen) `image`: the
/// blocks the store lacks, then the manifest naming them all.
pub async fn take(
    store: Arc<dyn SnapshotStore>,
    image: PathBuf,
    volume_id: &str,
    snapshot_id: &str,
) -> Result<SnapshotMade, VolumeError> {
    let present = chunks_of(store.as_ref(), volume_id).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Piece>(4);
    let reader = tokio::task::spawn_blocking(move || read_blocks(&image, present, tx));
    let mut new_bytes = 0;
    let mut stored = Ok(());
    while let Some(piece) = rx.recv().await {
        new_bytes += piece.compressed.len() as u64;
        if let Err(e) = store
            .put(&chunk_key(volume_id, &piece.chunk), piece.compressed)
            .await
        {
            stored = Err(e);
            break;
        }
    }
    // A failed store stops the reader at its next block.
    drop(rx);
    let read = reader
        .await
        .map_err(|e| VolumeError::Failed(format!("snapshot task failed: {e}")))?;
    stored?;
    let (volume_bytes, entries) = read?;
    // The chunks are durable before the manifest that names them exists.
    store.flush().await?;
    let manifest = Manifest {
        volume_id: volume_id.to_string(),
        volume_bytes,
        entries,
    };
    store
        .put(&manifest_key(volume_id, snapshot_id), manifest.encode())
        .await?;
    store.flush().await?;
    Ok(SnapshotMade {
        stored_bytes: manifest.stored_bytes(),
        volume_bytes,
        digest: manifest.digest(),
        new_bytes,
    })
}

/// Whether the store holds snapshot `snapshot_id` of `volume_id`.
pub async fn exists(
    store: &dyn SnapshotStore,
    volume_id: &str,
    snapshot_id: &str,
) -> Result<bool, VolumeError> {
    Ok(store
        .get(&manifest_key(volume_id, snapshot_id))
        .await?
        .is_some())
}

/// Writes snapshot `snapshot_id` of `volume_id` into a new sparse `image` of at least
/// `size` bytes; answers the size the image had when taken. Every block is checked
/// against its sha256 before it is written.
pub async fn restore(
    store: Arc<dyn SnapshotStore>,
    volume_id: &str,
    snapshot_id: &str,
    image: &Path,
    size: u64,
) -> Result<u64, VolumeError> {
    let bytes = store
        .get(&manifest_key(volume_id, snapshot_id))
        .await?
        .ok_or_else(|| VolumeError::NotFound(format!("snapshot {snapshot_id}")))?;
    let manifest = Manifest::decode(&bytes)?;
    if manifest.volume_id != volume_id {
        return Err(VolumeError::Failed(format!(
            "snapshot {snapshot_id} is kept under volume {volume_id} but was taken of {}",
            manifest.volume_id
        )));
    }
    if size < manifest.volume_bytes {
        return Err(VolumeError::Invalid(format!(
            "the snapshot is of a {} GB volume: restore it into one at least that size",
            manifest.volume_bytes >> 30
        )));
    }
    let out = File::create(image).map_err(|e| io("create the image", e))?;
    out.set_len(size).map_err(|e| io("size the image", e))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<(Entry, Vec<u8>)>(FETCHES);
    let writer = tokio::task::spawn_blocking(move || write_blocks(&out, rx));
    let fetched = futures_util::stream::iter(manifest.entries.iter().copied())
        .map(|entry| {
            let store = store.clone();
            async move {
                let key = chunk_key(volume_id, &entry.chunk);
                match store.get(&key).await? {
                    Some(bytes) => Ok((entry, bytes)),
                    None => Err(VolumeError::Failed(format!(
                        "snapshot {snapshot_id} lacks the block at {} MiB in {}: it cannot be restored",
                        entry.block * (BLOCK >> 20),
                        store.location()
                    ))),
                }
            }
        })
        .buffered(FETCHES)
        .try_for_each(|piece| {
            let tx = tx.clone();
            async move {
                tx.send(piece)
                    .await
                    .map_err(|_| VolumeError::Failed("the restore stopped".into()))
            }
        })
        .await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| VolumeError::Failed(format!("restore task failed: {e}")))?;
    // The writer's own failure says more than the fetch that then could not send.
    written?;
    fetched?;
    Ok(manifest.volume_bytes)
}

fn write_blocks(
    out: &File,
    mut pieces: tokio::sync::mpsc::Receiver<(Entry, Vec<u8>)>,
) -> Result<(), VolumeError> {
    let mut decompressor =
        zstd::bulk::Decompressor::new().map_err(|e| io("start decompressing", e))?;
    let damaged = |entry: &Entry| {
        VolumeError::Failed(format!(
            "the snapshot's block at {} MiB is damaged (its checksum does not match)",
            entry.block * (BLOCK >> 20)
        ))
    };
    while let Some((entry, compressed)) = pieces.blocking_recv() {
        let bytes = decompressor
            .decompress(&compressed, BLOCK as usize)
            .map_err(|_| damaged(&entry))?;
        if Sha256::digest(&bytes).as_slice() != entry.chunk {
            return Err(damaged(&entry));
        }
        // Each run of pages holding data is one write; zero pages between are skipped.
        let base = entry.block * BLOCK;
        let mut run: Option<usize> = None;
        for (i, page) in bytes.chunks(PAGE).enumerate() {
            match (all_zero(page), run) {
                (false, None) => run = Some(i * PAGE),
                (true, Some(start)) => {
                    out.write_all_at(&bytes[start..i * PAGE], base + start as u64)
                        .map_err(|e| io("write the image", e))?;
                    run = None;
                }
                _ => {}
            }
        }
        if let Some(start) = run {
            out.write_all_at(&bytes[start..], base + start as u64)
                .map_err(|e| io("write the image", e))?;
        }
    }
    out.sync_all().map_err(|e| io("sync the image", e))
}

/// Removes snapshot `snapshot_id` of `volume_id`, then every chunk of the volume no
/// other snapshot names; answers the bytes freed.
pub async fn delete(
    store: &dyn SnapshotStore,
    volume_id: &str,
    snapshot_id: &str,
) -> Result<u64, VolumeError> {
    store.delete(&manifest_key(volume_id, snapshot_id)).await?;
    let mut named = HashSet::new();
    for (key, _) in store.list(&format!("{volume_id}/snapshots/")).await? {
        let Some(bytes) = store.get(&key).await? else {
            continue;
        };
        // A manifest that cannot be read keeps every chunk: nothing it may name goes.
        let manifest = Manifest::decode(&bytes).map_err(|e| {
            VolumeError::Failed(format!(
                "{e} ({key}): no chunk of volume {volume_id} was removed"
            ))
        })?;
        named.extend(manifest.entries.iter().map(|e| e.chunk));
    }
    let mut freed = 0;
    for (chunk, size) in chunks_of(store, volume_id).await? {
        if !named.contains(&chunk) {
            store.delete(&chunk_key(volume_id, &chunk)).await?;
            freed += size;
        }
    }
    Ok(freed)
}

/// Copies `source`'s data extents into a new sparse `image` of `size` bytes (a fork of
/// a frozen volume); holes stay holes.
pub fn copy_sparse(source: &Path, image: &Path, size: u64) -> Result<(), VolumeError> {
    let from = File::open(source).map_err(|e| io("open the volume", e))?;
    let len = from.metadata().map_err(|e| io("read the volume", e))?.len();
    let out = File::create(image).map_err(|e| io("create the image", e))?;
    out.set_len(size.max(len))
        .map_err(|e| io("size the image", e))?;
    let mut buf = vec![0u8; 1 << 20];
    for (offset, extent) in extents(&from, len)? {
        let mut at = offset;
        while at < offset + extent {
            let n = (offset + extent - at).min(buf.len() as u64) as usize;
            from.read_exact_at(&mut buf[..n], at)
                .map_err(|e| io("read the volume", e))?;
            out.write_all_at(&buf[..n], at)
                .map_err(|e| io("write the image", e))?;
            at += n as u64;
        }
    }
    out.sync_all().map_err(|e| io("sync the image", e))
}

#[cfg(test)]
mod tests;
