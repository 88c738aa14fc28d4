//! Event ids and versions as ULIDs, monotonic in this process, so events made in the
//! same millisecond still sort in order. Other ids (machines, apps, tokens) are the
//! control plane's to make.

use std::sync::Mutex;

static ULIDS: Mutex<Option<ulid::Generator>> = Mutex::new(None);

/// A new ULID, strictly greater than every one this process made before.
pub fn ulid() -> String {
    let mut guard = ULIDS.lock().unwrap_or_else(|p| p.into_inner());
    let generator = guard.get_or_insert_with(ulid::Generator::new);
    match generator.generate() {
        Ok(u) => u.to_string(),
        Err(_) => ulid::Ulid::new().to_string(),
    }
}
