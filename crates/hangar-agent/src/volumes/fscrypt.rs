//! ext4 native encryption (fscrypt, v2 policies) for a volume's data directory: adding
//! a volume's key to its mounted filesystem and setting the encryption policy on the
//! empty directory machines see. The key itself comes from the control plane, which
//! keeps it sealed under its master key; this module only hands it to the kernel, which
//! forgets it when the filesystem is unmounted. Nothing here writes a key to disk.

use std::fmt;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::VolumeError;

/// Bytes in a volume key (AES-256-XTS takes 64).
pub const KEY_LEN: usize = 64;
const IDENTIFIER_LEN: usize = 16;

/// A volume's raw key, hex on the wire. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeKey(pub String);

impl fmt::Debug for VolumeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VolumeKey(..)")
    }
}

impl VolumeKey {
    pub fn from_bytes(raw: &[u8]) -> VolumeKey {
        VolumeKey(raw.iter().map(|b| format!("{b:02x}")).collect())
    }

    fn bytes(&self) -> Result<[u8; KEY_LEN], VolumeError> {
        let s = self.0.as_bytes();
        let bad = || VolumeError::Invalid("a volume key must be 64 bytes in hex".into());
        if s.len() != KEY_LEN * 2 {
            return Err(bad());
        }
        let mut out = [0u8; KEY_LEN];
        for (i, pair) in s.chunks(2).enumerate() {
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            out[i] = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(out)
    }
}

/// Whether this kernel's ext4 can encrypt.
pub fn supported() -> bool {
    Path::new("/sys/fs/ext4/features/encryption").exists()
}

/// Whether this kernel has AES in hardware (AES-NI/VAES on x86, the crypto extensions
/// on arm64). Without it AES-256-XTS runs in generic C, an order of magnitude slower
/// than the disk.
pub fn accelerated() -> bool {
    let crypto = std::fs::read_to_string("/proc/crypto").unwrap_or_default();
    crypto.lines().any(|l| {
        l.starts_with("driver")
            && ["aesni", "vaes", "aes-ce", "aes-arm64-ce", "aes-neonbs"]
                .iter()
                .any(|d| l.contains(d))
    })
}

/// When volumes are encrypted at rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encryption {
    /// Where the kernel can and has AES in hardware (the default).
    Auto,
    /// Wherever the kernel can, however slow.
    Always,
    Never,
}

impl Encryption {
    /// Whether a volume asked to be encrypted is, on this host.
    pub fn applies(self) -> bool {
        match self {
            Encryption::Auto => supported() && accelerated(),
            Encryption::Always => supported(),
            Encryption::Never => false,
        }
    }
}

// The kernel's structures (linux/fscrypt.h).
const KEY_SPEC_TYPE_IDENTIFIER: u32 = 2;
const POLICY_V2: u8 = 2;
const MODE_AES_256_XTS: u8 = 1;
const MODE_AES_256_CTS: u8 = 4;
const POLICY_FLAGS_PAD_32: u8 = 0x03;

#[repr(C)]
struct AddKeyArg {
    spec_type: u32,
    spec_reserved: u32,
    spec_u: [u8; 32],
    raw_size: u32,
    key_id: u32,
    reserved: [u32; 8],
    raw: [u8; KEY_LEN],
}

#[repr(C)]
struct PolicyV2 {
    version: u8,
    contents_mode: u8,
    filenames_mode: u8,
    flags: u8,
    log2_data_unit_size: u8,
    reserved: [u8; 3],
    master_key_identifier: [u8; IDENTIFIER_LEN],
}

/// `_IOWR('f', 23, struct fscrypt_add_key_arg)`: the header is 80 bytes.
const FS_IOC_ADD_ENCRYPTION_KEY: u64 = (3 << 30) | (80 << 16) | (0x66 << 8) | 23;
/// `_IOR('f', 19, struct fscrypt_policy_v1)`: the v1 size; the kernel reads the version.
const FS_IOC_SET_ENCRYPTION_POLICY: u64 = (2 << 30) | (12 << 16) | (0x66 << 8) | 19;

fn open(dir: &Path) -> Result<File, VolumeError> {
    File::open(dir).map_err(|e| VolumeError::Failed(format!("cannot open {}: {e}", dir.display())))
}

/// Adds `key` to the filesystem mounted at `fs` (adding it again is harmless) and
/// returns its identifier.
pub fn add_key(fs: &Path, key: &VolumeKey) -> Result<[u8; IDENTIFIER_LEN], VolumeError> {
    let dir = open(fs)?;
    let mut arg = AddKeyArg {
        spec_type: KEY_SPEC_TYPE_IDENTIFIER,
        spec_reserved: 0,
        spec_u: [0; 32],
        raw_size: KEY_LEN as u32,
        key_id: 0,
        reserved: [0; 8],
        raw: key.bytes()?,
    };
    // SAFETY: `arg` is the kernel's fscrypt_add_key_arg followed by `raw_size` bytes of
    // key, alive and exclusively borrowed for the call; the fd is open.
    let rc = unsafe {
        nix::libc::ioctl(
            dir.as_raw_fd(),
            FS_IOC_ADD_ENCRYPTION_KEY as _,
            &mut arg as *mut AddKeyArg,
        )
    };
    arg.raw = [0; KEY_LEN];
    if rc != 0 {
        return Err(VolumeError::Failed(format!(
            "cannot give the volume's key to its filesystem: {}",
            std::io::Error::last_os_error()
        )));
    }
    let mut id = [0u8; IDENTIFIER_LEN];
    id.copy_from_slice(&arg.spec_u[..IDENTIFIER_LEN]);
    Ok(id)
}

/// Encrypts everything that will be made under the empty directory `dir` with the key
/// `identifier` names.
pub fn set_policy(dir: &Path, identifier: &[u8; IDENTIFIER_LEN]) -> Result<(), VolumeError> {
    let d = open(dir)?;
    let policy = PolicyV2 {
        version: POLICY_V2,
        contents_mode: MODE_AES_256_XTS,
        filenames_mode: MODE_AES_256_CTS,
        flags: POLICY_FLAGS_PAD_32,
        log2_data_unit_size: 0,
        reserved: [0; 3],
        master_key_identifier: *identifier,
    };
    // SAFETY: `policy` is the kernel's fscrypt_policy_v2, alive for the call.
    let rc = unsafe {
        nix::libc::ioctl(
            d.as_raw_fd(),
            FS_IOC_SET_ENCRYPTION_POLICY as _,
            &policy as *const PolicyV2,
        )
    };
    if rc != 0 {
        return Err(VolumeError::Failed(format!(
            "cannot encrypt the volume's directory: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

pub fn hex(identifier: &[u8]) -> String {
    identifier.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_hex_and_never_show() {
        let raw: Vec<u8> = (0..64u8).collect();
        let k = VolumeKey::from_bytes(&raw);
        assert_eq!(k.bytes().unwrap().to_vec(), raw);
        assert_eq!(format!("{k:?}"), "VolumeKey(..)");
        assert!(VolumeKey("00".into()).bytes().is_err());
        assert!(VolumeKey("zz".repeat(64)).bytes().is_err());
    }

    #[test]
    fn the_structures_have_the_kernels_sizes() {
        assert_eq!(std::mem::size_of::<AddKeyArg>(), 80 + KEY_LEN);
        assert_eq!(std::mem::size_of::<PolicyV2>(), 24);
    }
}
