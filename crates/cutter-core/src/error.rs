//! Errors of the core library.
//!
//! Policy: every variant is something an operator or a caller can act on, and
//! its message says what to do. Messages never carry a secret: the database
//! password is only ever read into memory and handed to PostgreSQL, so no code
//! path formats it. Each variant maps to one gRPC code in the daemon
//! ([`ErrorKind`]), so a caller can tell "fix your input" from "fix the
//! host" from "try again".

use std::path::PathBuf;

/// What a caller should do about an error; the daemon maps it to a gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong (bad run_id).
    InvalidArgument,
    /// A fail-closed precondition does not hold; an operator must fix the host.
    FailedPrecondition,
    /// The database cannot be reached right now; retrying may help.
    Unavailable,
    /// Something broke while the backup ran (pg_dump failed, disk error).
    Internal,
    /// Something stands under the run's names that cannot be returned.
    AlreadyExists,
    /// The file system is full (or a quota is reached); free space, retry.
    ResourceExhausted,
}

/// Everything that can go wrong in the core library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file could not be read or parsed.
    #[error("config {path}: {reason}")]
    Config {
        /// The file that was read.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A config key has a value that cannot work.
    #[error("config key {key}: {reason}")]
    ConfigKey {
        /// The TOML key, e.g. `database.url`.
        key: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A run_id that must not become a file name.
    #[error(
        "invalid run_id {shown:?}: {reason} (allowed: letters, digits, '.', '_', '-'; 1-128 characters; not starting with '.')"
    )]
    InvalidRunId {
        /// The run_id, with control characters escaped.
        shown: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// One or more selftest checks FAILed; the message lists them.
    #[error("not ready (fail-closed): {0}")]
    NotReady(String),
    /// The database refused or dropped the connection.
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(String),
    /// A query failed for another reason than connectivity.
    #[error("database query failed: {0}")]
    Database(String),
    /// pg_dump exited non-zero, was killed, or printed an error.
    #[error("pg_dump failed: {0}")]
    PgDump(String),
    /// OpenPGP encryption failed.
    #[error("encryption failed: {0}")]
    Encrypt(String),
    /// A file-system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An [`Error::Io`] whose cause is a full file system or a quota.
    #[error(
        "{action} {path}: {source}: the file system is full; free space (in backup.dir: `cutterctl prune`) and retry"
    )]
    DiskFull {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error (ENOSPC or EDQUOT).
        source: std::io::Error,
    },
    /// The daemon is stopping and takes no new backups.
    #[error("the daemon is stopping; retry once it is back")]
    Stopping,
    /// An invariant of the daemon itself broke (a task vanished).
    #[error("internal error: {0}")]
    Internal(String),
    /// A retry found files under the run's names that do not fully verify
    /// for today's keys and tables: never returned, never overwritten.
    #[error(
        "run_id {run_id} already has files that cannot be returned as its backup ({reason}); use a new run_id, or move them aside for inspection"
    )]
    AlreadyExists {
        /// The run.
        run_id: String,
        /// Why they cannot be returned.
        reason: String,
    },
    /// The offsite copy could not be made or confirmed (`offsite.mode =
    /// "required"`); the local artifact is kept, and a retry of the same
    /// run_id only re-attempts the upload.
    #[error(
        "offsite copy of {run_id} failed: {reason}; the local artifact is kept, retry the same run_id to upload again"
    )]
    Offsite {
        /// The run.
        run_id: String,
        /// What failed and what to fix.
        reason: String,
    },
    /// An artifact exists under the final name but does not match its manifest.
    #[error(
        "artifact {path} exists but does not verify ({reason}); move it aside for inspection, it is never overwritten"
    )]
    CorruptArtifact {
        /// The artifact.
        path: PathBuf,
        /// Why it does not verify.
        reason: String,
    },
}

impl Error {
    /// The gRPC-facing class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidRunId { .. } => ErrorKind::InvalidArgument,
            Error::NotReady(_)
            | Error::Config { .. }
            | Error::ConfigKey { .. }
            | Error::CorruptArtifact { .. } => ErrorKind::FailedPrecondition,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::DiskFull { .. } => ErrorKind::ResourceExhausted,
            Error::DatabaseUnavailable(_) | Error::Stopping | Error::Offsite { .. } => {
                ErrorKind::Unavailable
            }
            Error::Database(_)
            | Error::PgDump(_)
            | Error::Encrypt(_)
            | Error::Io { .. }
            | Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// Shorthand for an [`Error::Io`] ([`Error::DiskFull`] when that is
    /// the cause).
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if matches!(
            source.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        ) {
            return Error::DiskFull {
                action,
                path,
                source,
            };
        }
        Error::Io {
            action,
            path,
            source,
        }
    }

    /// Classifies a sqlx error: connectivity problems are `Unavailable`.
    pub fn from_sqlx(e: &sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Error::DatabaseUnavailable(e.to_string()),
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("08")) => {
                Error::DatabaseUnavailable(e.to_string())
            }
            _ => Error::Database(e.to_string()),
        }
    }
}

/// Result with the core [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
