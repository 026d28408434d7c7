//! The gRPC contract of cutter-backup: the generated `cutter.backup.v1` types,
//! client and server, plus the version facts every binary reports.

#![allow(missing_docs)] // generated code carries the proto's own comments

/// `cutter.backup.v1`, generated from `proto/cutter/backup/v1/backup.proto`.
pub mod v1 {
    tonic::include_proto!("cutter.backup.v1");
}

/// The workspace version, shared by the daemon and the CLI.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the binaries were built from ("unknown" outside a checkout).
pub const SOURCE_COMMIT: &str = env!("CUTTER_SOURCE_COMMIT");
