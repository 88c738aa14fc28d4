//! Where snapshots are kept: a flat space of keys (`<volume>/chunks/<sha256>` and
//! `<volume>/snapshots/<snapshot>`) behind [`SnapshotStore`], by default a directory
//! under the data dir ([`DirStore`]) and, when the operator configures one, an
//! S3-compatible bucket (`s3.rs`). What the keys hold is `mod.rs`'s; this module only
//! keeps bytes by name.

use std::path::{Path, PathBuf};

use crate::volumes::VolumeError;

#[async_trait::async_trait]
pub trait SnapshotStore: Send + Sync {
    /// Where snapshots are kept, for messages and logs (never a credential).
    fn location(&self) -> String;
    /// Keeps `bytes` as `key`; a reader sees all of them or none.
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), VolumeError>;
    /// The bytes kept as `key`, or `None` when there are none.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, VolumeError>;
    /// Removes `key`; one already gone is not an error.
    async fn delete(&self, key: &str) -> Result<(), VolumeError>;
    /// The keys under `prefix` (which ends with `/`), with the bytes each takes.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, VolumeError>;
    /// Makes everything put so far durable, before the manifest naming it is kept.
    async fn flush(&self) -> Result<(), VolumeError> {
        Ok(())
    }
}

/// Keys are made here from volume and snapshot ids and hex digests; anything else is
/// refused rather than turned into a path.
pub fn check_key(key: &str) -> Result<(), VolumeError> {
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && !key.contains("//")
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'/');
    if ok {
        Ok(())
    } else {
        Err(VolumeError::Invalid(format!(
            "invalid snapshot key {key:?}"
        )))
    }
}

/// Snapshots as files under a directory of this host. Each is written beside its name
/// and renamed; [`SnapshotStore::flush`] syncs the filesystem once for all of them.
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    pub fn new(root: PathBuf) -> DirStore {
        DirStore { root }
    }

    fn path(&self, key: &str) -> Result<PathBuf, VolumeError> {
        check_key(key.trim_end_matches('/'))?;
        Ok(self.root.join(key))
    }
}

fn failed(what: &str, path: &Path, e: std::io::Error) -> VolumeError {
    VolumeError::Failed(format!("cannot {what} {}: {e}", path.display()))
}

#[async_trait::async_trait]
impl SnapshotStore for DirStore {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), VolumeError> {
        let path = self.path(key)?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| failed("make", parent, e))?;
        }
        let partial = path.with_extension("partial");
        tokio::fs::write(&partial, bytes)
            .await
            .map_err(|e| failed("write", &partial, e))?;
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(|e| failed("keep", &path, e))
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, VolumeError> {
        let path = self.path(key)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(failed("read", &path, e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), VolumeError> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed("remove", &path, e)),
        }
        // Directories left empty go too (one still holding something stays).
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| *d != self.root) {
            if tokio::fs::remove_dir(d).await.is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, VolumeError> {
        let dir = self.path(prefix)?;
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(failed("list", &dir, e)),
        };
        let mut out = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| failed("list", &dir, e))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata().await else {
                continue;
            };
            if meta.is_file() && !name.ends_with(".partial") {
                out.push((format!("{prefix}{name}"), meta.len()));
            }
        }
        Ok(out)
    }

    async fn flush(&self) -> Result<(), VolumeError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let dir = std::fs::File::open(&root).map_err(|e| failed("open", &root, e))?;
            nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir))
                .map_err(|e| failed("sync", &root, e.into()))
        })
        .await
        .map_err(|e| VolumeError::Failed(format!("sync task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_directory_keeps_lists_and_forgets_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path().to_path_buf());
        store
            .put("vol_a/chunks/ab", b"hello".to_vec())
            .await
            .unwrap();
        store.put("vol_a/chunks/cd", b"hi".to_vec()).await.unwrap();
        store.flush().await.unwrap();
        let mut keys = store.list("vol_a/chunks/").await.unwrap();
        keys.sort();
        assert_eq!(
            keys,
            vec![("vol_a/chunks/ab".into(), 5), ("vol_a/chunks/cd".into(), 2)]
        );
        assert_eq!(
            store.get("vol_a/chunks/ab").await.unwrap().unwrap(),
            b"hello"
        );
        assert_eq!(store.get("vol_a/chunks/zz").await.unwrap(), None);
        store.delete("vol_a/chunks/ab").await.unwrap();
        store.delete("vol_a/chunks/cd").await.unwrap();
        store.delete("vol_a/chunks/cd").await.unwrap();
        assert!(store.list("vol_a/chunks/").await.unwrap().is_empty());
        assert!(!dir.path().join("vol_a").exists(), "empty directories go");
        assert!(store.put("../etc/passwd", vec![]).await.is_err());
    }
}
