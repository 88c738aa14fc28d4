//! The master key: where it comes from (`HANGAR_MASTER_KEY`, else a 0600 file in the
//! data dir made on first start), sealing and opening values with it
//! (XChaCha20-Poly1305, a random nonce per value, the value's place as associated
//! data), and keyed digests that identify a value without revealing it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

const NONCE_LEN: usize = 24;
pub const KEY_FILE: &str = "master.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("HANGAR_MASTER_KEY must be 32 bytes in base64 or 64 hex characters (make one with `openssl rand -base64 32`)")]
    BadEnv,
    #[error("master key file {path} is damaged: it must hold 32 bytes in base64; restore it from your backup (values sealed with another key cannot be read)")]
    BadFile { path: String },
    #[error("master key file {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("a value could not be sealed: {0}")]
    Seal(String),
    #[error("a sealed value could not be opened: it was sealed with another master key or was altered; set HANGAR_MASTER_KEY (or {KEY_FILE} in the data dir) to the key it was sealed with")]
    Open,
}

/// The key every secret is sealed with. Its `Debug` shows nothing of it.
pub struct MasterKey {
    cipher: XChaCha20Poly1305,
    digest_key: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

fn decode(text: &str) -> Option<[u8; 32]> {
    let t = text.trim();
    let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()?
    } else {
        base64::engine::general_purpose::STANDARD.decode(t).ok()?
    };
    bytes.try_into().ok()
}

impl MasterKey {
    pub fn from_bytes(raw: [u8; 32]) -> Self {
        let mut d = Sha256::new();
        d.update(b"hangar secrets digest key");
        d.update(raw);
        Self {
            cipher: XChaCha20Poly1305::new(&raw.into()),
            digest_key: d.finalize().into(),
        }
    }

    /// `env` (the value of `HANGAR_MASTER_KEY`) when given, else `<data_dir>/master.key`,
    /// created with a random key on first start.
    pub fn load(env: Option<&str>, data_dir: &Path) -> Result<Self, KeyError> {
        if let Some(v) = env.filter(|v| !v.trim().is_empty()) {
            return decode(v).map(Self::from_bytes).ok_or(KeyError::BadEnv);
        }
        let path = data_dir.join(KEY_FILE);
        let shown = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => decode(&text)
                .map(Self::from_bytes)
                .ok_or(KeyError::BadFile { path: shown }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let raw: [u8; 32] = rand::random();
                let io = |error| KeyError::Io {
                    path: shown.clone(),
                    error,
                };
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io)?;
                let text = base64::engine::general_purpose::STANDARD.encode(raw);
                f.write_all(format!("{text}\n").as_bytes()).map_err(io)?;
                f.sync_all().map_err(io)?;
                Ok(Self::from_bytes(raw))
            }
            Err(error) => Err(KeyError::Io { path: shown, error }),
        }
    }

    /// Seals `plaintext`, bound to `place` (who it belongs to): nonce ‖ ciphertext.
    pub fn seal(&self, place: &str, plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: place.as_bytes(),
                },
            )
            .map_err(|_| KeyError::Seal(format!("{} bytes is too large", plaintext.len())))?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(out)
    }

    /// Opens what [`MasterKey::seal`] sealed for the same `place`.
    pub fn open(&self, place: &str, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        if sealed.len() < NONCE_LEN {
            return Err(KeyError::Open);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: place.as_bytes(),
                },
            )
            .map_err(|_| KeyError::Open)
    }

    /// A keyed digest of a value (hex, 16 characters): equal values of one app and name
    /// give equal digests, and the digest cannot be reversed without the key.
    pub fn digest(&self, place: &str, value: &[u8]) -> String {
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.digest_key) else {
            return String::new();
        };
        mac.update(place.as_bytes());
        mac.update(&[0]);
        mac.update(value);
        mac.finalize()
            .into_bytes()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_refuse_another_place_or_key() {
        let k = MasterKey::from_bytes([7; 32]);
        let sealed = k.seal("app/A", b"hunter2").expect("seals");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(k.open("app/A", &sealed).expect("opens"), b"hunter2");
        assert!(k.open("app/B", &sealed).is_err());
        assert!(MasterKey::from_bytes([8; 32])
            .open("app/A", &sealed)
            .is_err());
        assert_eq!(k.digest("app/A", b"x"), k.digest("app/A", b"x"));
        assert_ne!(k.digest("app/A", b"x"), k.digest("app/A", b"y"));
    }

    #[test]
    fn key_file_is_made_once_with_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("hangar-key-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("dir");
        let a = MasterKey::load(None, &dir).expect("made");
        let mode = std::fs::metadata(dir.join(KEY_FILE))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = MasterKey::load(None, &dir).expect("read");
        assert_eq!(
            b.open("p", &a.seal("p", b"v").expect("seals"))
                .expect("same key"),
            b"v"
        );
        assert!(matches!(
            MasterKey::load(Some("short"), &dir),
            Err(KeyError::BadEnv)
        ));
        let _ = std::fs::remove_dir_all(dir);
    }
}
