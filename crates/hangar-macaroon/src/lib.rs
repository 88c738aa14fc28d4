//! API tokens in Fly.io's macaroon format, byte for byte as flyctl reads and writes
//! them (`FlyV1 fm2_…`), so `fly tokens debug` decodes Hangar's tokens and
//! `fly tokens attenuate` narrows them offline.
//!
//! A token ([`Macaroon`]) is a msgpack array of a nonce (the id of the key that signed
//! it, random bytes), a location, a list of caveats and a tail: an HMAC-SHA256 chain
//! started by the root key over the nonce and extended by each caveat, so anyone
//! holding a token can add caveats ([`Macaroon::add`]) but only the holder of the root
//! key can check one ([`Macaroon::verify`]) or remove one. A request is allowed when
//! every caveat allows it ([`Access`], [`Caveat::check`]).
//!
//! This crate knows the format and the caveats' meaning; which tokens exist, their
//! keys and revocation, and what each route asks for are the server's.

mod access;
mod caveat;
#[cfg(test)]
mod tests;
mod token;

pub use access::{Access, Action, Verdict};
pub use caveat::{allows, Caveat, Command};
pub use token::{Macaroon, Nonce};

/// The location of permission tokens: Fly's, which flyctl looks for when it
/// attenuates or prunes tokens; an identifier only, never contacted.
pub const LOCATION: &str = "https://api.fly.io/v1";

/// Why a token cannot be read, narrowed or trusted. Never carries the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a macaroon token (expected fm2_ and base64)")]
    NotMacaroon,
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("the token's signature does not match")]
    BadSignature,
    #[error("a caveat cannot be read: {0}")]
    BadCaveat(String),
    #[error("discharge tokens cannot be used on their own")]
    Proof,
}
