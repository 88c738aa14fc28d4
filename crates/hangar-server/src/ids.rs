//! Identifiers in Fly's formats: 14-hex machine ids, ULID versions and event ids
//! (monotonic, so events made in the same millisecond still sort in order),
//! `adjective-noun-NNNN` machine names, lease nonces, app ids and 6PN addresses.

use rand::Rng;

/// ULIDs come from the agent's generator, so every one this process makes sorts after
/// the one before.
pub use hangar_agent::ids::ulid;

fn hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

/// 14 lowercase hex characters.
pub fn machine_id() -> String {
    hex(7)
}

/// 12 hex characters.
pub fn lease_nonce() -> String {
    hex(6)
}

/// 16 characters of base 36, like Fly's app ids.
pub fn app_id() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..16)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// `vol_` and 16 characters of base 36, as Fly's volume ids.
pub fn volume_id() -> String {
    format!("vol_{}", app_id())
}

/// `vs_` and 16 characters of base 36, as Fly's volume snapshot ids.
pub fn snapshot_id() -> String {
    format!("vs_{}", app_id())
}

/// A host's zone as Fly shows it: 4 hex characters, the same for the host every time.
pub fn zone(host: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(host.as_bytes());
    format!("{:02x}{:02x}", d[0], d[1])
}

/// A secret API token: `hgr_` and 40 hex characters.
pub fn api_token() -> String {
    format!("hgr_{}", hex(20))
}

const ADJECTIVES: &[&str] = &[
    "aged",
    "ancient",
    "autumn",
    "billowing",
    "bitter",
    "black",
    "blue",
    "bold",
    "broken",
    "cold",
    "cool",
    "crimson",
    "damp",
    "dark",
    "dawn",
    "delicate",
    "divine",
    "dry",
    "empty",
    "falling",
    "floral",
    "fragrant",
    "frosty",
    "green",
    "hidden",
    "holy",
    "icy",
    "late",
    "lingering",
    "little",
    "lively",
    "long",
    "misty",
    "morning",
    "muddy",
    "nameless",
    "old",
    "patient",
    "polished",
    "proud",
    "purple",
    "quiet",
    "red",
    "restless",
    "rough",
    "shy",
    "silent",
    "small",
    "snowy",
    "solitary",
    "sparkling",
    "spring",
    "still",
    "summer",
    "twilight",
    "wandering",
    "weathered",
    "white",
    "wild",
    "winter",
    "young",
];
const NOUNS: &[&str] = &[
    "bird",
    "breeze",
    "brook",
    "bush",
    "butterfly",
    "cherry",
    "cloud",
    "darkness",
    "dawn",
    "dew",
    "dream",
    "dust",
    "feather",
    "field",
    "fire",
    "firefly",
    "flower",
    "fog",
    "forest",
    "frog",
    "frost",
    "glade",
    "glitter",
    "grass",
    "haze",
    "hill",
    "lake",
    "leaf",
    "meadow",
    "moon",
    "morning",
    "mountain",
    "night",
    "paper",
    "pine",
    "pond",
    "rain",
    "resonance",
    "river",
    "sea",
    "shadow",
    "shape",
    "silence",
    "sky",
    "smoke",
    "snow",
    "snowflake",
    "sound",
    "star",
    "sun",
    "sunset",
    "surf",
    "thunder",
    "tree",
    "violet",
    "voice",
    "water",
    "waterfall",
    "wave",
    "wildflower",
    "wind",
    "wood",
];

/// `quiet-river-1234`.
pub fn machine_name() -> String {
    let mut rng = rand::rng();
    format!(
        "{}-{}-{:04}",
        ADJECTIVES[rng.random_range(0..ADJECTIVES.len())],
        NOUNS[rng.random_range(0..NOUNS.len())],
        rng.random_range(0..10_000)
    )
}

/// A 6PN-style private address: the org's prefix under `fdaa:`, then bits of the
/// machine id, so every machine of an org has its own address in the org's /48.
pub fn private_ip(org_numeric_id: i64, machine_id: &str) -> String {
    let part = |range: std::ops::Range<usize>| {
        u16::from_str_radix(machine_id.get(range).unwrap_or("0"), 16).unwrap_or(0)
    };
    format!(
        "fdaa:0:{:x}:a7b:{:x}:{:x}:{:x}:2",
        org_numeric_id & 0xffff,
        part(0..4),
        part(4..8),
        part(8..12)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_match_fly() {
        let id = machine_id();
        assert_eq!(id.len(), 14);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(lease_nonce().len(), 12);
        let a = ulid();
        let b = ulid();
        assert!(b > a, "ulids must be monotonic");
        assert!(private_ip(1, &id).starts_with("fdaa:0:1:a7b:"));
        let name = machine_name();
        assert_eq!(name.split('-').count(), 3);
    }
}
