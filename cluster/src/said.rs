//! Lines a node would otherwise repeat every second or so (a peer with a wrong cookie or a
//! foreign certificate is redialled, and refused, that often): each said once a minute.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// The keys said in the last minute, and when.
static SAID: LazyLock<Mutex<HashMap<String, Instant>>> = LazyLock::new(Default::default);

/// Whether the line keyed `key` (what happened, and with which peer) is to be said now:
/// the first in a minute per key is. At most 1024 keys a minute, so a flood of addresses
/// cannot grow the map.
pub(crate) fn first_this_minute(key: String) -> bool {
    let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
    said.retain(|_, at| at.elapsed() < Duration::from_secs(60));
    if said.len() >= 1024 || said.contains_key(&key) {
        return false;
    }
    said.insert(key, Instant::now());
    true
}
