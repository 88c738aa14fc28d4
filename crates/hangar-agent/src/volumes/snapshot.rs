//! A volume's blocks as a snapshot file and back: the image's data extents (holes of
//! the sparse file are skipped, so only what was written is read and kept), each as
//! its offset, length and bytes, in one zstd stream. Taking one reads the image while
//! the filesystem is frozen (the caller freezes it), so the copy is consistent. Files
//! are written beside their final name and renamed, so a half-written snapshot never
//! looks whole.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::VolumeError;

const MAGIC: &[u8; 8] = b"HGRSNAP1";
/// Marks the end of the extents.
const END: u64 = u64::MAX;
const CHUNK: usize = 1 << 20;
const LEVEL: i32 = 3;

/// What a snapshot holds, as taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMade {
    /// Bytes the snapshot file takes.
    pub stored_bytes: u64,
    /// The image's size when taken.
    pub volume_bytes: u64,
    /// sha256 of the data it holds (offsets, lengths and bytes), hex.
    pub digest: String,
}

fn io(what: &str, e: std::io::Error) -> VolumeError {
    VolumeError::Failed(format!("cannot {what}: {e}"))
}

/// The data extents of `file` (offset, length), by SEEK_DATA/SEEK_HOLE.
fn extents(file: &File, size: u64) -> Result<Vec<(u64, u64)>, VolumeError> {
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

/// Writes the snapshot of `image` to `out`.
pub fn take(image: &Path, out: &Path) -> Result<SnapshotMade, VolumeError> {
    let mut file = File::open(image).map_err(|e| io("open the image", e))?;
    let size = file.metadata().map_err(|e| io("read the image", e))?.len();
    let spans = extents(&file, size)?;
    let partial = out.with_extension("partial");
    let dest = File::create(&partial).map_err(|e| io("create the snapshot", e))?;
    let mut z = zstd::stream::write::Encoder::new(BufWriter::new(dest), LEVEL)
        .map_err(|e| io("start compressing", e))?;
    // A checksum in the frame: a damaged snapshot fails its restore instead of
    // restoring wrong bytes.
    z.include_checksum(true)
        .map_err(|e| io("start compressing", e))?;
    let mut digest = Sha256::new();
    let mut put =
        |z: &mut zstd::stream::write::Encoder<_>, bytes: &[u8]| -> Result<(), VolumeError> {
            digest.update(bytes);
            z.write_all(bytes).map_err(|e| io("write the snapshot", e))
        };
    put(&mut z, MAGIC)?;
    put(&mut z, &size.to_le_bytes())?;
    let mut buf = vec![0u8; CHUNK];
    for (offset, len) in spans {
        put(&mut z, &offset.to_le_bytes())?;
        put(&mut z, &len.to_le_bytes())?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| io("read the image", e))?;
        let mut left = len;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            file.read_exact(&mut buf[..n])
                .map_err(|e| io("read the image", e))?;
            put(&mut z, &buf[..n])?;
            left -= n as u64;
        }
    }
    put(&mut z, &END.to_le_bytes())?;
    let writer = z.finish().map_err(|e| io("finish the snapshot", e))?;
    let dest = writer
        .into_inner()
        .map_err(|e| io("write the snapshot", e.into_error()))?;
    dest.sync_all().map_err(|e| io("sync the snapshot", e))?;
    std::fs::rename(&partial, out).map_err(|e| io("keep the snapshot", e))?;
    let stored_bytes = std::fs::metadata(out)
        .map_err(|e| io("read the snapshot", e))?
        .len();
    Ok(SnapshotMade {
        stored_bytes,
        volume_bytes: size,
        digest: hex(&digest.finalize()),
    })
}

/// Writes the blocks of the snapshot at `snapshot` into a new sparse `image` of at
/// least `size` bytes; returns the size the image had when taken.
pub fn restore(snapshot: &Path, image: &Path, size: u64) -> Result<u64, VolumeError> {
    let src = File::open(snapshot).map_err(|e| io("open the snapshot", e))?;
    let mut z = zstd::stream::read::Decoder::new(BufReader::new(src))
        .map_err(|e| io("read the snapshot", e))?;
    let mut word = [0u8; 8];
    z.read_exact(&mut word)
        .map_err(|e| io("read the snapshot", e))?;
    if &word != MAGIC {
        return Err(VolumeError::Failed(
            "the snapshot file is not a Hangar snapshot".into(),
        ));
    }
    let mut u64_of = |z: &mut zstd::stream::read::Decoder<_>| -> Result<u64, VolumeError> {
        z.read_exact(&mut word)
            .map_err(|e| io("read the snapshot", e))?;
        Ok(u64::from_le_bytes(word))
    };
    let taken = u64_of(&mut z)?;
    if size < taken {
        return Err(VolumeError::Invalid(format!(
            "the snapshot is of a {} GB volume: restore it into one at least that size",
            taken >> 30
        )));
    }
    let mut out = File::create(image).map_err(|e| io("create the image", e))?;
    out.set_len(size).map_err(|e| io("size the image", e))?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let offset = u64_of(&mut z)?;
        if offset == END {
            break;
        }
        let len = u64_of(&mut z)?;
        if offset.saturating_add(len) > taken {
            return Err(VolumeError::Failed("the snapshot file is damaged".into()));
        }
        out.seek(SeekFrom::Start(offset))
            .map_err(|e| io("write the image", e))?;
        let mut left = len;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            z.read_exact(&mut buf[..n])
                .map_err(|e| io("read the snapshot", e))?;
            out.write_all(&buf[..n])
                .map_err(|e| io("write the image", e))?;
            left -= n as u64;
        }
    }
    // Reading to the frame's end checks its checksum.
    let mut rest = [0u8; 1];
    match z.read(&mut rest) {
        Ok(0) => {}
        Ok(_) | Err(_) => {
            return Err(VolumeError::Failed(
                "the snapshot file is damaged (its checksum does not match)".into(),
            ))
        }
    }
    out.sync_all().map_err(|e| io("sync the image", e))?;
    Ok(taken)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_image_round_trips_and_keeps_its_holes() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        let mut f = File::create(&image).unwrap();
        f.set_len(64 << 20).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(&[7u8; 4096]).unwrap();
        f.seek(SeekFrom::Start(40 << 20)).unwrap();
        f.write_all(b"the end").unwrap();
        drop(f);
        let snap = dir.path().join("s.zst");
        let made = take(&image, &snap).unwrap();
        assert_eq!(made.volume_bytes, 64 << 20);
        assert!(
            made.stored_bytes < 64 << 10,
            "holes are not stored: {made:?}"
        );
        let back = dir.path().join("back.img");
        assert_eq!(restore(&snap, &back, 128 << 20).unwrap(), 64 << 20);
        let (a, b) = (
            std::fs::read(&image).unwrap(),
            std::fs::read(&back).unwrap(),
        );
        assert_eq!(&b[..a.len()], &a[..], "the same bytes");
        assert_eq!(b.len(), 128 << 20, "restored into a larger volume");
        assert!(matches!(
            restore(&snap, &back, 1 << 20),
            Err(VolumeError::Invalid(_))
        ));
    }

    #[test]
    fn a_damaged_snapshot_is_refused_not_restored() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        let mut f = File::create(&image).unwrap();
        f.set_len(8 << 20).unwrap();
        let noise: Vec<u8> = (0..(1u32 << 20))
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        f.write_all(&noise).unwrap();
        drop(f);
        let snap = dir.path().join("s.zst");
        take(&image, &snap).unwrap();
        let mut bytes = std::fs::read(&snap).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x55;
        std::fs::write(&snap, bytes).unwrap();
        let back = dir.path().join("back.img");
        assert!(
            restore(&snap, &back, 8 << 20).is_err(),
            "a flipped byte is noticed"
        );
    }
}
