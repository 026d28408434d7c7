//! The manifest written next to every artifact: what was dumped, from which
//! snapshot's counts, encrypted to which keys, and the artifact's checksum.
//! It is the envelope's source of truth on an idempotent retry, and it is
//! only believed with a good signature beside it (`<run_id>.manifest.json.sig`,
//! see `signer`), because anyone who can write the directory can write one.

use serde::{Deserialize, Serialize};

use crate::config::TableName;

/// Current manifest format (2: signed).
pub const FORMAT: u32 = 2;
/// The largest manifest (or signature) read: ours are a few KiB.
pub const MAX_BYTES: u64 = 256 * 1024;

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
    /// `schema.table`, validated when read ([`TableName::parse`]): a
    /// manifest naming a table no config could is corrupt.
    pub table: TableName,
    /// Row count in the snapshot the dump was taken from.
    pub rows: u64,
}

/// `<run_id>.manifest.json`. (`Default` is for tests and fuzzing: a
/// default manifest is format 0, which nothing accepts.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The host that made it (`offsite.host`, else the host name): an
    /// offsite copy is believed only under this host's prefix. Empty in
    /// manifests made before it was recorded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
}

impl Manifest {
    /// The bytes written to disk (and signed).
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let mut json =
            serde_json::to_vec_pretty(self).map_err(|e| format!("serialise manifest: {e}"))?;
        json.push(b'\n');
        Ok(json)
    }

    /// Parses manifest bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not a manifest: {e}"))
    }

    /// The one checksum rule: the artifact's bytes are the ones the manifest names.
    pub fn check_bytes(&self, sha256: &str, size_bytes: u64) -> Result<(), String> {
        if size_bytes != self.size_bytes {
            return Err(format!(
                "{} is {size_bytes} bytes, the manifest says {} (truncated or appended)",
                self.artifact, self.size_bytes
            ));
        }
        if sha256 != self.sha256 {
            return Err(format!(
                "{} has sha256 {sha256}, the manifest says {} (the file changed)",
                self.artifact, self.sha256
            ));
        }
        Ok(())
    }

    /// Sum of all table row counts.
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

/// A manifest as read from disk: its exact bytes (what the signature covers),
/// the parsed form, and the signature file's bytes if there was one.
#[derive(Debug, Clone)]
pub struct SignedManifest {
    /// Parsed.
    pub manifest: Manifest,
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// `<run_id>.manifest.json.sig`, when present.
    pub signature: Option<Vec<u8>>,
}
