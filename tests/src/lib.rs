//! Test bed: real MariaDB servers for the integration tests, the demo and the benchmark.
//!
//! [`TestBed::start`] brings up N independent `mariadbd` processes in parallel on free
//! loopback ports, each in its own directory under
//! `std::env::temp_dir()/redirector-testbed-<pid>-<seq>/`. The accounts listed below
//! exist on every server. Dropping the bed stops the servers and removes the
//! directory, also when a test panics.
//!
//! Speed: `mariadb-install-db` runs once per MariaDB version and account set; the
//! resulting data directory is cached under `<workspace>/target/testbed-template/`
//! and copied for every server, so a server is up in a fraction of a second.
//!
//! Process lifetime: servers are spawned from one long-lived helper thread with
//! `PR_SET_PDEATHSIG = SIGKILL` (see [`spawn`] for why not from the caller's
//! thread), so they die with the test process even when it is killed and no
//! `Drop` runs. Stale directories of dead test processes are removed on the next
//! start.
//!
//! The integration tests' setup lives here too, so each test states only
//! what it checks: `client` (MySQL sessions), `admin` (the REST API and
//! metrics) and `bed` (servers + daemon + both clients in one value), behind
//! the feature `fixtures`, which the crate's own tests and examples enable;
//! it keeps the MySQL and HTTP client crates out of users of the bare bed
//! such as `xtask`. [`sysbench`] needs no driver and is always built.

#[cfg(feature = "fixtures")]
pub mod admin;
#[cfg(feature = "fixtures")]
pub mod bed;
mod cli;
#[cfg(feature = "fixtures")]
pub mod client;
/// Running the real `redirector` binary.
pub mod daemon;
mod error;
mod galera;
mod procs;
pub mod raw;
mod server;
pub mod spawn;
pub mod sysbench;
mod template;

pub use cli::{cli_query, cli_query_db};
pub use error::TestBedError;
pub use galera::GaleraCluster;
pub use procs::{leftover_mariadbd, mariadbd_pids_matching};
pub use server::{MariaDb, TestBed};
pub use sysbench::{Sysbench, SysbenchReport};

#[cfg(feature = "fixtures")]
pub use admin::AdminHttp;
#[cfg(feature = "fixtures")]
pub use bed::{Bed, BedBuilder, TlsCert};
pub use daemon::Datapath;

use sha1::{Digest, Sha1};

/// Marker in every directory (and so every `mariadbd` command line) the bed creates.
pub const DIR_PREFIX: &str = "redirector-testbed";

/// Normal client account: `ALL PRIVILEGES ON *.* WITH GRANT OPTION`, mysql_native_password.
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-pass";

/// Account that tests configure in the redirector by its hash only.
pub const HASHONLY_USER: &str = "hashonly";
pub const HASHONLY_PASSWORD: &str = "hash-pass";

/// The redirector's service account: `SELECT ON mysql.*`, `PROCESS`,
/// `CONNECTION ADMIN`, `SUPER` (reads accounts, lists and kills sessions).
pub const SVC_USER: &str = "svc";
pub const SVC_PASSWORD: &str = "svc-pass";

/// Account that exists only on the backends (loaded through the service account).
pub const LOADED_USER: &str = "loaded";
pub const LOADED_PASSWORD: &str = "loaded-pass";

/// Database that exists on every server for tests to use.
pub const TEST_DB: &str = "test";

/// Administrative account; local logins over the unix socket, empty password.
pub const ROOT_USER: &str = "root";

/// SQL run once into the template data directory (bootstrap mode). Changing it
/// changes the template cache key, so cached templates never go stale.
pub(crate) const SETUP_SQL: &str = "\
FLUSH PRIVILEGES;
DROP USER IF EXISTS ''@'localhost';
DELETE FROM mysql.global_priv WHERE User = '';
CREATE USER 'app'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('app-pass');
GRANT ALL PRIVILEGES ON *.* TO 'app'@'%' WITH GRANT OPTION;
CREATE USER 'hashonly'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('hash-pass');
GRANT ALL PRIVILEGES ON *.* TO 'hashonly'@'%';
CREATE USER 'svc'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('svc-pass');
GRANT SELECT ON mysql.* TO 'svc'@'%';
GRANT PROCESS, CONNECTION ADMIN, SUPER ON *.* TO 'svc'@'%';
CREATE USER 'loaded'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('loaded-pass');
GRANT ALL PRIVILEGES ON test.* TO 'loaded'@'%';
CREATE DATABASE IF NOT EXISTS test;
FLUSH PRIVILEGES;
";

/// The `mysql_native_password` hash of `password`, as stored in `mysql.user`:
/// `"*"` followed by the uppercase hex of `SHA1(SHA1(password))`.
pub fn native_password_hash(password: &str) -> String {
    let stage2 = Sha1::digest(Sha1::digest(password.as_bytes()));
    let mut out = String::with_capacity(41);
    out.push('*');
    for b in stage2 {
        out.push_str(&format!("{b:02X}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_hash_matches_known_value() {
        // Widely published value of MySQL's `PASSWORD('password')`.
        assert_eq!(
            native_password_hash("password"),
            "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
        );
    }
}
