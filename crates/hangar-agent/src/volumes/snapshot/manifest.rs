//! A snapshot's manifest: the volume's image as a list of fixed-size blocks, each named
//! by the sha256 of its bytes (the chunk that holds it), with the size that chunk takes
//! in the store. Blocks of zeros are left out (they restore as holes). The encoding is
//! binary and ends with the sha256 of everything before it, which is the snapshot's
//! digest: a damaged manifest is refused, never half-restored. What the chunks hold and
//! where they are kept is `mod.rs` and `store.rs`.

use sha2::{Digest, Sha256};

use crate::volumes::VolumeError;

/// The size of a block of the image, and so the most a chunk holds.
pub const BLOCK: u64 = 4 << 20;
const MAGIC: &[u8; 8] = b"HGRSNAP2";
const ENTRY: usize = 8 + 4 + 32;

/// One block of the image and the chunk holding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Which block (its offset is `block * BLOCK`).
    pub block: u64,
    /// Bytes its chunk takes in the store (compressed).
    pub stored: u32,
    /// sha256 of the block's bytes; the chunk's name.
    pub chunk: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub volume_id: String,
    /// The image's size when taken.
    pub volume_bytes: u64,
    /// In block order.
    pub entries: Vec<Entry>,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        let id = self.volume_id.as_bytes();
        let mut out = Vec::with_capacity(64 + id.len() + self.entries.len() * ENTRY);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&BLOCK.to_le_bytes());
        out.extend_from_slice(&self.volume_bytes.to_le_bytes());
        out.extend_from_slice(&(id.len() as u16).to_le_bytes());
        out.extend_from_slice(id);
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.block.to_le_bytes());
            out.extend_from_slice(&e.stored.to_le_bytes());
            out.extend_from_slice(&e.chunk);
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest, VolumeError> {
        let damaged = || VolumeError::Failed("the snapshot's manifest is damaged".into());
        if bytes.len() < 32 + MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(VolumeError::Failed(
                "the snapshot's manifest is not a Hangar snapshot".into(),
            ));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != sum {
            return Err(damaged());
        }
        let mut r = Reader(&body[MAGIC.len()..]);
        if r.u64().ok_or_else(damaged)? != BLOCK {
            return Err(VolumeError::Failed(
                "the snapshot was taken with another block size than this Hangar reads".into(),
            ));
        }
        let volume_bytes = r.u64().ok_or_else(damaged)?;
        let id_len = u16::from_le_bytes(
            r.take(2)
                .ok_or_else(damaged)?
                .try_into()
                .map_err(|_| damaged())?,
        );
        let volume_id = String::from_utf8(r.take(id_len.into()).ok_or_else(damaged)?.to_vec())
            .map_err(|_| damaged())?;
        let count = r.u64().ok_or_else(damaged)?;
        if count.checked_mul(ENTRY as u64) != Some(r.0.len() as u64) {
            return Err(damaged());
        }
        let mut entries = Vec::with_capacity(count as usize);
        let blocks = volume_bytes.div_ceil(BLOCK);
        for _ in 0..count {
            let block = r.u64().ok_or_else(damaged)?;
            let stored = u32::from_le_bytes(
                r.take(4)
                    .ok_or_else(damaged)?
                    .try_into()
                    .map_err(|_| damaged())?,
            );
            let chunk: [u8; 32] = r
                .take(32)
                .ok_or_else(damaged)?
                .try_into()
                .map_err(|_| damaged())?;
            if block >= blocks || entries.last().is_some_and(|p: &Entry| p.block >= block) {
                return Err(damaged());
            }
            entries.push(Entry {
                block,
                stored,
                chunk,
            });
        }
        Ok(Manifest {
            volume_id,
            volume_bytes,
            entries,
        })
    }

    /// The snapshot's digest: the sha256 its encoding ends with, hex.
    pub fn digest(&self) -> String {
        let encoded = self.encode();
        hex(&encoded[encoded.len() - 32..])
    }

    /// Bytes the snapshot's chunks take in the store, all of them (whether this
    /// snapshot or an earlier one put them there).
    pub fn stored_bytes(&self) -> u64 {
        self.entries.iter().map(|e| u64::from(e.stored)).sum()
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The 32 bytes a 64-digit hex chunk name stands for.
pub fn unhex(name: &str) -> Option<[u8; 32]> {
    if name.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in name.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            volume_id: "vol_abc".into(),
            volume_bytes: 3 * BLOCK + 10,
            entries: vec![
                Entry {
                    block: 0,
                    stored: 17,
                    chunk: [1; 32],
                },
                Entry {
                    block: 3,
                    stored: 9,
                    chunk: [2; 32],
                },
            ],
        }
    }

    #[test]
    fn a_manifest_round_trips() {
        let m = sample();
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
        assert_eq!(m.stored_bytes(), 26);
        assert_eq!(m.digest().len(), 64);
        assert_eq!(unhex(&hex(&[7; 32])), Some([7; 32]));
    }

    #[test]
    fn a_damaged_or_foreign_manifest_is_refused() {
        let mut bytes = sample().encode();
        bytes[30] ^= 1;
        assert!(Manifest::decode(&bytes).is_err());
        assert!(Manifest::decode(b"not a manifest at all, not at all, no").is_err());
        let mut out_of_range = sample();
        out_of_range.entries[1].block = 9;
        assert!(Manifest::decode(&out_of_range.encode()).is_err());
    }
}
