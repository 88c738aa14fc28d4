//! The token itself: `fm2_` and the standard base64 of a msgpack array `[nonce,
//! location, [type, body, type, body, …], tail]`. The tail is HMAC-SHA256 over the
//! nonce keyed by the root key, then over each caveat (as the two-element array
//! `[type, body]`) keyed by the tag before it. Caveats are kept as the bytes the token
//! carries, so checking a token never depends on re-encoding it.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::caveat::Caveat;
use crate::TokenError;

type HmacSha256 = Hmac<Sha256>;

/// The labels a token may start with; Hangar writes `fm2_`.
const LABELS: [&str; 3] = ["fm2_", "fm1r_", "fm1a_"];
/// The largest token read (a header of many caveats stays far below).
const MAX_TOKEN: usize = 16 * 1024;
/// How deep msgpack may nest inside a token.
const MAX_NESTING: usize = 16;

/// Which key signed a token, and the token family's random part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nonce {
    /// The key's id (Hangar: the token's row id).
    pub kid: Vec<u8>,
    pub rnd: Vec<u8>,
    /// Discharge ("proof") tokens are finalized; Hangar mints none.
    pub proof: bool,
}

impl Nonce {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writes to a Vec cannot fail.
        let _ = rmp::encode::write_array_len(&mut out, 3);
        let _ = rmp::encode::write_bin(&mut out, &self.kid);
        let _ = rmp::encode::write_bin(&mut out, &self.rnd);
        let _ = rmp::encode::write_bool(&mut out, self.proof);
        out
    }
}

/// A macaroon token, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Macaroon {
    pub nonce: Nonce,
    nonce_bytes: Vec<u8>,
    pub location: String,
    /// Each caveat as its type and body bytes, as carried.
    caveats: Vec<Vec<u8>>,
    tail: [u8; 32],
}

fn tag(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// The bytes each caveat is signed as: the array `[type, body]`.
fn signed(caveat: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(caveat.len() + 1);
    m.push(0x92);
    m.extend_from_slice(caveat);
    m
}

fn malformed(why: impl Into<String>) -> TokenError {
    TokenError::Malformed(why.into())
}

/// Reads one msgpack value from `rd`, and the bytes it took.
fn value<'a>(rd: &mut &'a [u8]) -> Result<(rmpv::Value, &'a [u8]), TokenError> {
    let before = *rd;
    let v = rmpv::decode::read_value_with_max_depth(rd, MAX_NESTING)
        .map_err(|e| malformed(e.to_string()))?;
    let used = before.len() - rd.len();
    Ok((v, &before[..used]))
}

impl Macaroon {
    /// A new token signed by `key`, whose id is `kid`, with no caveats yet.
    pub fn mint(key: &[u8], kid: &[u8], rnd: [u8; 16], location: &str) -> Macaroon {
        let nonce = Nonce {
            kid: kid.to_vec(),
            rnd: rnd.to_vec(),
            proof: false,
        };
        let nonce_bytes = nonce.encode();
        Macaroon {
            tail: tag(key, &nonce_bytes),
            nonce,
            nonce_bytes,
            location: location.to_string(),
            caveats: Vec::new(),
        }
    }

    /// Narrows the token by `caveat` (no key needed). A caveat it already has changes
    /// nothing.
    pub fn add(&mut self, caveat: &Caveat) {
        let (kind, body) = caveat.to_msgpack();
        let mut bytes = Vec::new();
        let _ = rmp::encode::write_uint(&mut bytes, kind);
        let _ = rmpv::encode::write_value(&mut bytes, &body);
        if self.caveats.contains(&bytes) {
            return;
        }
        self.tail = tag(&self.tail, &signed(&bytes));
        self.caveats.push(bytes);
    }

    /// The token as flyctl writes it: `fm2_` and base64.
    pub fn encode(&self) -> String {
        let mut out = vec![0x94];
        out.extend_from_slice(&self.nonce_bytes);
        let _ = rmp::encode::write_str(&mut out, &self.location);
        let _ = rmp::encode::write_array_len(&mut out, (self.caveats.len() * 2) as u32);
        for c in &self.caveats {
            out.extend_from_slice(c);
        }
        let _ = rmp::encode::write_bin(&mut out, &self.tail);
        format!(
            "fm2_{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        )
    }

    /// Reads a token (`fm2_…`, or the older `fm1r_`/`fm1a_` labels).
    pub fn decode(token: &str) -> Result<Macaroon, TokenError> {
        let token = token.trim();
        let body = LABELS
            .iter()
            .find_map(|l| token.strip_prefix(l))
            .ok_or(TokenError::NotMacaroon)?;
        if body.len() > MAX_TOKEN {
            return Err(malformed("too long"));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| TokenError::NotMacaroon)?;
        let mut rd: &[u8] = &bytes;
        let len = rmp::decode::read_array_len(&mut rd).map_err(|_| malformed("not an array"))?;
        if len != 4 {
            return Err(malformed("expected four fields"));
        }
        let (nonce, nonce_bytes) = value(&mut rd)?;
        let nonce = match nonce.as_array().map(Vec::as_slice) {
            Some([kid, rnd, rest @ ..]) if rest.len() <= 1 => Nonce {
                kid: kid
                    .as_slice()
                    .ok_or_else(|| malformed("the key id is not bytes"))?
                    .to_vec(),
                rnd: rnd
                    .as_slice()
                    .ok_or_else(|| malformed("the nonce is not bytes"))?
                    .to_vec(),
                proof: rest.first().and_then(|p| p.as_bool()).unwrap_or(false),
            },
            _ => return Err(malformed("the nonce is not [kid, rnd, proof]")),
        };
        let (location, _) = value(&mut rd)?;
        let location = location
            .as_str()
            .ok_or_else(|| malformed("the location is not a string"))?
            .to_string();
        let n = rmp::decode::read_array_len(&mut rd)
            .map_err(|_| malformed("the caveats are not an array"))?;
        if n % 2 != 0 {
            return Err(malformed("caveats come in type and body pairs"));
        }
        let mut caveats = Vec::with_capacity(n as usize / 2);
        for _ in 0..n / 2 {
            let before = rd;
            let (kind, _) = value(&mut rd)?;
            kind.as_u64()
                .ok_or_else(|| malformed("a caveat type is not a number"))?;
            value(&mut rd)?;
            caveats.push(before[..before.len() - rd.len()].to_vec());
        }
        let (tail, _) = value(&mut rd)?;
        let tail: [u8; 32] = tail
            .as_slice()
            .and_then(|t| t.try_into().ok())
            .ok_or_else(|| malformed("the signature is not 32 bytes"))?;
        if !rd.is_empty() {
            return Err(malformed("bytes after the signature"));
        }
        Ok(Macaroon {
            nonce,
            nonce_bytes: nonce_bytes.to_vec(),
            location,
            caveats,
            tail,
        })
    }

    /// The token's caveats, read but not checked (for showing a token).
    pub fn caveats(&self) -> Result<Vec<Caveat>, TokenError> {
        self.caveats
            .iter()
            .map(|bytes| {
                let mut rd: &[u8] = bytes;
                let (kind, _) = value(&mut rd)?;
                let (body, _) = value(&mut rd)?;
                Caveat::from_msgpack(kind.as_u64().unwrap_or(u64::MAX), &body)
            })
            .collect()
    }

    /// Checks the token was signed by `key` and narrowed only by adding caveats; its
    /// caveats, to be checked against the request.
    pub fn verify(&self, key: &[u8]) -> Result<Vec<Caveat>, TokenError> {
        if self.nonce.proof {
            return Err(TokenError::Proof);
        }
        let mut running = tag(key, &self.nonce_bytes);
        for c in &self.caveats {
            running = tag(&running, &signed(c));
        }
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&running[..], &self.tail[..])) {
            return Err(TokenError::BadSignature);
        }
        self.caveats()
    }
}
