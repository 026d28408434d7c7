//! The manifest written next to every artifact: what was dumped, from which
//! snapshot's counts, encrypted to which keys, and the artifact's checksum.
//! It is the envelope's source of truth on an idempotent retry.

use serde::{Deserialize, Serialize};

/// Current manifest format.
pub const FORMAT: u32 = 1;

/// One key the artifact is encrypted to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// Primary-key fingerprint (40 upper hex).
    pub fingerprint: String,
    /// The encryption keys (sub)packets were made for.
    pub encryption_keys: Vec<String>,
}

/// Rows of one table in the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRows {
    /// `schema.table`.
    pub table: String,
    /// Row count in the snapshot the dump was taken from.
    pub rows: u64,
}

/// `<run_id>.manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The run this backup was taken for.
    pub run_id: String,
    /// RFC 3339 UTC completion time.
    pub created_at: String,
    /// The artifact's file name (same directory).
    pub artifact: String,
    /// sha256 of the artifact file, lowercase hex.
    pub sha256: String,
    /// Artifact file size.
    pub size_bytes: u64,
    /// The primary fingerprint of the configured key (`BACKUP_GPG_FPR`).
    pub gpg_fpr: String,
    /// Every key that can decrypt the artifact.
    pub recipients: Vec<Recipient>,
    /// Per-table row counts.
    pub tables: Vec<TableRows>,
    /// Size of the SQL inside.
    pub plaintext_bytes: u64,
    /// "none", "zip" or "zlib", with the level.
    pub compression: String,
    /// PostgreSQL server version.
    pub server_version: String,
    /// `pg_dump --version`.
    pub pg_dump_version: String,
    /// Daemon version and source commit.
    pub producer: String,
    /// Wall time of the backup.
    pub duration_ms: u64,
}

impl Manifest {
    /// Sum of all table row counts.
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}
