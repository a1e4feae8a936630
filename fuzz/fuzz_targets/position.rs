//! Stream positions and channel names as clients send them: `since` (any JSON), SSE's
//! `Last-Event-ID`, and channel names. A parsed `epoch:seq` prints back to itself.

#![no_main]

use bourse_actors::channel::Channel;
use bourse_gateway::subscriptions::{parse_cursor, parse_event_id};
use libfuzzer_sys::fuzz_target;
use markets::MARKETS;

mod markets;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(c) = parse_event_id(text) {
        let again = parse_event_id(&format!("{}:{}", c.epoch, c.seq));
        assert_eq!(again.map(|a| (a.epoch, a.seq)), Some((c.epoch, c.seq)));
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = parse_cursor(&v);
    }
    let _ = Channel::parse(text, &MARKETS);
});
