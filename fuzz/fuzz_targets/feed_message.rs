//! A Kafka trade message as a feed sends it (Upbit's JSON or bourse's own): parsed into a
//! trade on a market's steps, or rejected with a reason, never a panic.

#![no_main]

use bourse_actors::feed::message::parse;
use libfuzzer_sys::fuzz_target;
use markets::MARKETS;

mod markets;

fuzz_target!(|data: &[u8]| {
    let _ = parse(data, &MARKETS);
});
