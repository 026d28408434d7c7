//! cutter-core: the backup, selftest, key and database logic of cutter-backup.
//!
//! No gRPC and no systemd here (the daemon owns those), so everything in this
//! crate can be driven directly by tests and by other front ends.

pub mod backup;
pub mod config;
pub mod copyrows;
pub mod db;
pub mod decrypt;
pub mod encrypt;
pub mod error;
pub mod failpoint;
#[doc(hidden)]
pub mod fuzzing;
pub mod key;
pub mod manifest;
pub mod metrics;
pub mod offsite;
pub mod pgdump;
pub mod retention;
pub mod runid;
pub mod selftest;
pub mod setup;
pub mod signer;
pub mod sqllex;
pub mod store;
pub mod time;
pub mod trusted;
pub mod verify;

pub use error::{Error, ErrorKind, Result};
