//! The admin SQL port's parser and query engine over arbitrary text: any
//! statement gets a result or an error, never a panic (a `SELECT … FROM`
//! also runs over a small `servers` table).
//!
//! Input: the statement's bytes (seeds in `fuzz/seeds/admin_sql`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use redirector::admin::sql::check_statement;

fuzz_target!(|data: &[u8]| {
    if let Ok(sql) = std::str::from_utf8(data) {
        let _ = check_statement(sql);
    }
});
