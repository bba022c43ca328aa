//! The REST API's JSON request bodies over arbitrary bytes, parsed and
//! checked as their handlers do: a body is accepted or refused with a
//! message, never a panic.
//!
//! Input: one selector byte (which body), then the body (seeds in
//! `fuzz/seeds/rest_json`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use redirector::request::rest::{check, RequestBody};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let kind = match selector % 5 {
        0 => RequestBody::AddServer,
        1 => RequestBody::Wait,
        2 => RequestBody::Rebalance,
        3 => RequestBody::MoveSessions,
        _ => RequestBody::Policy,
    };
    if let Err(message) = check(kind, body) {
        assert!(!message.is_empty(), "a refusal without a message");
    }
});
