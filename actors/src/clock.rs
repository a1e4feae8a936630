//! The node's wall clock, as every entity and the gateway read it: milliseconds since the
//! Unix epoch, plus a fixed offset that only tests set (`node.clock_offset_ms`), so that a
//! test can start a node at a market's open or close without waiting hours for it.

use std::sync::atomic::{AtomicI64, Ordering};

static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Shifts [`now_ms`] by `offset_ms` for the rest of the process (set once, at start-up).
pub fn set_offset_ms(offset_ms: i64) {
    OFFSET_MS.store(offset_ms, Ordering::Relaxed);
}

/// Wall-clock milliseconds since the Unix epoch, shifted by the configured offset.
pub fn now_ms() -> i64 {
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    real.saturating_add(OFFSET_MS.load(Ordering::Relaxed))
}
