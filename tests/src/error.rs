use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while running the test bed.
#[derive(Debug, thiserror::Error)]
pub enum TestBedError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },

    #[error("`{program}` failed ({status}): {stderr}")]
    Command {
        program: String,
        status: String,
        stderr: String,
    },

    #[error("SQL on {target} failed: {stderr}\n  statement: {sql}")]
    Sql {
        target: String,
        sql: String,
        stderr: String,
    },

    #[error("{name} did not become ready: {reason}\n--- tail of {log} ---\n{tail}")]
    NotReady {
        name: String,
        reason: String,
        log: PathBuf,
        tail: String,
    },

    #[error("{0}")]
    Setup(String),
}

impl TestBedError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        TestBedError::Io {
            what: what.into(),
            source,
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, TestBedError>;
