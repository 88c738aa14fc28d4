//! Snapshot files of Hangar's first format, restored for as long as one is kept: a
//! volume's data extents (offset, length, bytes) in one zstd stream with a frame
//! checksum, one file per snapshot (`<snapshots>/<id>.zst`). New snapshots are chunked
//! (`mod.rs`); this module only reads the old ones back.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::VolumeError;

const MAGIC: &[u8; 8] = b"HGRSNAP1";
/// Marks the end of the extents.
const END: u64 = u64::MAX;
const CHUNK: usize = 1 << 20;

fn io(what: &str, e: std::io::Error) -> VolumeError {
    VolumeError::Failed(format!("cannot {what}: {e}"))
}

/// Writes a snapshot of `image` to `out` in this format (what older Hangars did), for
/// the tests of [`restore`]; answers the bytes it takes.
#[cfg(test)]
pub fn take(image: &Path, out: &Path) -> Result<u64, VolumeError> {
    use std::io::{BufWriter, Write};
    let mut file = File::open(image).map_err(|e| io("open the image", e))?;
    let size = file.metadata().map_err(|e| io("read the image", e))?.len();
    let spans = super::extents(&file, size)?;
    let dest = File::create(out).map_err(|e| io("create the snapshot", e))?;
    let mut z = zstd::stream::write::Encoder::new(BufWriter::new(dest), 3)
        .map_err(|e| io("start compressing", e))?;
    z.include_checksum(true)
        .map_err(|e| io("start compressing", e))?;
    let w = |e| io("write the snapshot", e);
    z.write_all(MAGIC).map_err(w)?;
    z.write_all(&size.to_le_bytes()).map_err(w)?;
    let mut buf = vec![0u8; CHUNK];
    for (offset, len) in spans {
        z.write_all(&offset.to_le_bytes()).map_err(w)?;
        z.write_all(&len.to_le_bytes()).map_err(w)?;
        file.seek(SeekFrom::Start(offset)).map_err(w)?;
        let mut left = len;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            file.read_exact(&mut buf[..n]).map_err(w)?;
            z.write_all(&buf[..n]).map_err(w)?;
            left -= n as u64;
        }
    }
    z.write_all(&END.to_le_bytes()).map_err(w)?;
    z.finish().map_err(w)?.flush().map_err(w)?;
    Ok(std::fs::metadata(out).map_err(w)?.len())
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
        let stored = take(&image, &snap).unwrap();
        assert!(stored < 64 << 10, "holes are not stored: {stored}");
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
