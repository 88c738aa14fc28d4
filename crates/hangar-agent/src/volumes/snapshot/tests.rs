//! Snapshots on a directory store: round trips, increments, removal and damage.

use std::io::{Seek, SeekFrom, Write};

use super::store::DirStore;
use super::*;

const MB: u64 = 1 << 20;

fn noise(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

fn write_at(image: &Path, at: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(image).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(bytes).unwrap();
}

fn setup() -> (tempfile::TempDir, PathBuf, Arc<dyn SnapshotStore>) {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    File::create(&image).unwrap().set_len(64 * MB).unwrap();
    write_at(&image, MB, &noise(4096, 1));
    write_at(&image, 40 * MB, &noise(6 * MB as usize, 2));
    let store: Arc<dyn SnapshotStore> = Arc::new(DirStore::new(dir.path().join("snaps")));
    (dir, image, store)
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn a_sparse_image_round_trips_and_keeps_its_holes() {
    let (dir, image, store) = setup();
    let made = take(store.clone(), image.clone(), "vol_a", "vs_1")
        .await
        .unwrap();
    assert_eq!(made.volume_bytes, 64 * MB);
    assert_eq!(
        made.new_bytes, made.stored_bytes,
        "the first one stores everything"
    );
    assert!(made.stored_bytes < 8 * MB, "holes are not stored: {made:?}");
    // Blocks 0, 10 and 11 (40 MiB + 6 MiB spans two) hold data.
    assert_eq!(files_in(&dir.path().join("snaps/vol_a/chunks")), 3);

    let back = dir.path().join("back.img");
    let taken = restore(store.clone(), "vol_a", "vs_1", &back, 128 * MB)
        .await
        .unwrap();
    assert_eq!(taken, 64 * MB);
    let (a, b) = (
        std::fs::read(&image).unwrap(),
        std::fs::read(&back).unwrap(),
    );
    assert_eq!(&b[..a.len()], &a[..], "the same bytes");
    assert_eq!(b.len() as u64, 128 * MB, "restored into a larger volume");
    let used = std::fs::metadata(&back).unwrap();
    assert!(
        std::os::unix::fs::MetadataExt::blocks(&used) * 512 < 16 * MB,
        "the restored image stays sparse"
    );
    assert!(matches!(
        restore(store.clone(), "vol_a", "vs_1", &back, MB).await,
        Err(VolumeError::Invalid(_))
    ));
    assert!(matches!(
        restore(store, "vol_a", "vs_none", &back, 128 * MB).await,
        Err(VolumeError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_later_snapshot_stores_only_what_changed_and_removal_keeps_what_others_need() {
    let (dir, image, store) = setup();
    let first = take(store.clone(), image.clone(), "vol_a", "vs_1")
        .await
        .unwrap();
    write_at(&image, 20 * MB, b"one changed block");
    let second = take(store.clone(), image.clone(), "vol_a", "vs_2")
        .await
        .unwrap();
    assert!(
        second.new_bytes < 64 << 10,
        "only the new block: {second:?}"
    );
    assert!(second.stored_bytes > first.stored_bytes);
    assert_ne!(first.digest, second.digest);
    let chunks = dir.path().join("snaps/vol_a/chunks");
    assert_eq!(files_in(&chunks), 4);

    // The first goes; what the second needs stays, and it restores whole.
    let freed = delete(store.as_ref(), "vol_a", "vs_1").await.unwrap();
    assert_eq!(freed, 0, "every chunk of the first is also the second's");
    let back = dir.path().join("back.img");
    restore(store.clone(), "vol_a", "vs_2", &back, 64 * MB)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&image).unwrap()
    );

    // Rewrite a block, snapshot, drop the second: its old block is freed.
    write_at(&image, 20 * MB, b"changed again, once more");
    take(store.clone(), image.clone(), "vol_a", "vs_3")
        .await
        .unwrap();
    let freed = delete(store.as_ref(), "vol_a", "vs_2").await.unwrap();
    assert!(freed > 0 && freed < 64 << 10, "the replaced block: {freed}");
    assert_eq!(files_in(&chunks), 4);
    delete(store.as_ref(), "vol_a", "vs_3").await.unwrap();
    assert!(
        !dir.path().join("snaps/vol_a").exists(),
        "nothing left of the volume"
    );
}

#[tokio::test]
async fn a_damaged_chunk_is_refused_not_restored() {
    let (dir, image, store) = setup();
    take(store.clone(), image, "vol_a", "vs_1").await.unwrap();
    let chunks = dir.path().join("snaps/vol_a/chunks");
    let victim = std::fs::read_dir(&chunks)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&victim, bytes).unwrap();
    let back = dir.path().join("back.img");
    let err = restore(store.clone(), "vol_a", "vs_1", &back, 64 * MB)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("damaged"), "{err}");

    std::fs::remove_file(&victim).unwrap();
    let err = restore(store, "vol_a", "vs_1", &back, 64 * MB)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("lacks the block"), "{err}");
}

#[tokio::test]
async fn a_fork_copies_data_and_keeps_holes() {
    let (dir, image, _) = setup();
    let copy = dir.path().join("fork.img");
    copy_sparse(&image, &copy, 96 * MB).unwrap();
    let (a, b) = (
        std::fs::read(&image).unwrap(),
        std::fs::read(&copy).unwrap(),
    );
    assert_eq!(&b[..a.len()], &a[..]);
    assert_eq!(b.len() as u64, 96 * MB);
}
