//! The admin SQL port's parser and query engine over arbitrary text: any
//! statement gets a result or an error, never a panic (a `SELECT … FROM`
//! also runs over a small table with text, integer, double and NULL
//! values).
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
