//! The top-level error, aggregating module errors. Owns exit codes.

use crate::config::ConfigError;

/// Everything that can end the process with a failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid configuration (message is slirp4netns's where it has one).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Attaching to the namespace or opening the tap failed.
    #[error("{0}")]
    Attach(String),
    /// The event loop failed.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::Error),
    /// `tapir run` could not start its command.
    #[error("tapir run: {0}")]
    Run(String),
}

impl Error {
    /// Process exit status for this error (slirp4netns exits 1 on every error).
    pub fn exit_code(&self) -> i32 {
        1
    }
}
