//! The admin SQL port's parser and query engine over arbitrary text: any
//! statement gets a result or an error, never a panic. A query (`SELECT`,
//! `WITH`, `VALUES`, `EXPLAIN`) also runs on the port's engine, the
//! bundled SQLite, over small `sessions`, `servers` and `moves` tables
//! with text, integer, double and NULL values, under the authorizer and a
//! 100 ms budget: this exercises our side (routing, read-only guard, type
//! and error mapping), not SQLite's parser, which its authors fuzz.
//!
//! Input: the statement's bytes (seeds in `fuzz/seeds/admin_sql`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use redirector::request::check_sql;

fuzz_target!(|data: &[u8]| {
    if let Ok(sql) = std::str::from_utf8(data) {
        if let Err(message) = check_sql(sql) {
            assert!(!message.is_empty(), "an error without a message");
        }
    }
});
