//! The daemon's configuration: a TOML file (default `/etc/cutter/backupd.toml`)
//! under built-in defaults, with `BACKUP_GPG_FPR` from the environment (or the
//! operator's env file) winning over `key.fingerprint`.
//!
//! Secrets are never part of the config text: the database password comes
//! from `database.password_file` (or a systemd credential pointing there).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The default config file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/cutter/backupd.toml";
/// The default socket path, shared with `cutterctl`.
pub const DEFAULT_SOCKET: &str = "/run/cutter/backupd.sock";
/// The environment variable the operator's env file sets.
pub const FPR_ENV: &str = "BACKUP_GPG_FPR";

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`.
    #[serde(default)]
    pub server: ServerConfig,
    /// `[key]`.
    #[serde(default)]
    pub key: KeyConfig,
    /// `[database]`.
    pub database: DatabaseConfig,
    /// `[backup]`.
    pub backup: BackupConfig,
    /// `[retention]`.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// `[signer]`.
    #[serde(default)]
    pub signer: SignerConfig,
    /// `[restore]`.
    #[serde(default)]
    pub restore: RestoreConfig,
    /// `[metrics]`.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// `[offsite]`: copies in S3-compatible object storage (off when absent).
    pub offsite: Option<OffsiteConfig>,
}

/// When a backup call returns relative to its offsite copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsiteMode {
    /// The envelope only after the remote copy is confirmed (`offsite_ref`).
    Required,
    /// The envelope at once; a durable queue uploads in the background.
    Async,
}

/// S3 Object Lock retention mode set on every uploaded object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Nobody, not even the bucket owner, can shorten or remove it.
    Compliance,
    /// Principals with `s3:BypassGovernanceRetention` can.
    Governance,
}

/// `[offsite]`: where offsite copies go and how.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsiteConfig {
    /// `s3://bucket/prefix`; objects go under `<prefix>/<host>/<run_id>…`.
    pub url: String,
    /// Endpoint URL of an S3-compatible service (default: AWS for `region`).
    pub endpoint: Option<String>,
    /// Region the requests are signed for.
    #[serde(default = "default_region")]
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`), which most
    /// self-hosted services need.
    #[serde(default)]
    pub path_style: bool,
    /// AWS-style credentials file (`aws_access_key_id`, `aws_secret_access_key`),
    /// mode 0600 or a systemd credential; never in this file.
    pub credentials_file: PathBuf,
    /// `required` (default) or `async`.
    #[serde(default = "default_offsite_mode")]
    pub mode: OffsiteMode,
    /// This host's name in the bucket (default: the system host name).
    pub host: Option<String>,
    /// Object Lock retention per object, in days (0: none set by us).
    #[serde(default)]
    pub lock_days: u32,
    /// `compliance` (default) or `governance`.
    #[serde(default = "default_lock_mode")]
    pub lock_mode: LockMode,
    /// Let `cutterctl prune --confirm` delete remote copies of pruned runs
    /// (never locked ones). Lifecycle rules are the preferred way.
    #[serde(default)]
    pub prune: bool,
    /// Selftest writes a probe object (true) or only HEADs the bucket.
    #[serde(default = "default_true")]
    pub probe: bool,
    /// Async mode: selftest WARNs while uploads are pending and FAILs once
    /// the oldest has waited longer than this.
    #[serde(default = "default_max_lag")]
    pub max_lag_secs: u64,
    /// The durable upload queue (async mode); never inside `backup.dir`.
    #[serde(default = "default_queue_dir")]
    pub queue_dir: PathBuf,
    /// Multipart part size, and the size above which uploads are multipart.
    #[serde(default = "default_part_size")]
    pub part_size_mib: u64,
    /// Timeout of one request attempt (a part, a HEAD).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// Attempts per request, with exponential backoff between them.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Async mode: the longest wait between two attempts of a queued
    /// upload (1 s, 2 s, 4 s … up to this).
    #[serde(default = "default_retry_max")]
    pub retry_max_secs: u64,
    /// The longest the selftest's `offsite` check waits for the service
    /// (it runs beside the other checks, so a slow bucket delays a
    /// backup's selftest by at most this).
    #[serde(default = "default_check_timeout")]
    pub check_timeout_secs: u64,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_offsite_mode() -> OffsiteMode {
    OffsiteMode::Required
}
fn default_lock_mode() -> LockMode {
    LockMode::Compliance
}
fn default_true() -> bool {
    true
}
fn default_max_lag() -> u64 {
    3600
}
fn default_queue_dir() -> PathBuf {
    PathBuf::from("/var/lib/cutter/offsite-queue")
}
fn default_part_size() -> u64 {
    16
}
fn default_request_timeout() -> u64 {
    120
}
fn default_max_attempts() -> u32 {
    4
}
fn default_retry_max() -> u64 {
    300
}
fn default_check_timeout() -> u64 {
    5
}

/// `s3://bucket/prefix`, split and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    /// The bucket.
    pub bucket: String,
    /// The key prefix without leading or trailing '/', maybe empty.
    pub prefix: String,
}

impl S3Url {
    /// Parses `s3://bucket[/prefix]`.
    pub fn parse(url: &str) -> std::result::Result<Self, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("offsite.url {url:?} must look like s3://bucket/prefix"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let ok_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        if !ok_bucket {
            return Err(format!(
                "offsite.url bucket {bucket:?} is not a valid bucket name (3-63 lowercase letters, digits, '-', '.')"
            ));
        }
        let prefix = prefix.trim_matches('/');
        for seg in prefix.split('/').filter(|s| !s.is_empty()) {
            let ok = seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return Err(format!(
                    "offsite.url prefix segment {seg:?} is not allowed (letters, digits, '.', '_', '-'; no '..')"
                ));
            }
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

/// A host name usable as one key segment (the run_id rules).
pub fn check_host(host: &str) -> std::result::Result<(), String> {
    crate::runid::RunId::parse(host)
        .map(|_| ())
        .map_err(|_| format!("offsite.host {host:?} must be 1-128 letters, digits, '.', '_', '-', not starting with '.'"))
}

impl OffsiteConfig {
    fn validate(&self, backup_dir: &Path) -> std::result::Result<(), String> {
        S3Url::parse(&self.url)?;
        if let Some(e) = &self.endpoint {
            // Checked first: the messages below quote the endpoint.
            if has_userinfo(e) {
                return Err(
                    "offsite.endpoint carries credentials (user:password@host): remove them and put the key in offsite.credentials_file"
                        .into(),
                );
            }
            if !(e.starts_with("https://") || e.starts_with("http://")) {
                return Err(format!(
                    "offsite.endpoint {e:?} must be an http:// or https:// URL"
                ));
            }
        }
        if let Some(h) = &self.host {
            check_host(h)?;
        }
        if self.region.is_empty() {
            return Err("offsite.region is empty".into());
        }
        if !(5..=1024).contains(&self.part_size_mib) {
            return Err(
                "offsite.part_size_mib must be 5..=1024 (S3's minimum part is 5 MiB)".into(),
            );
        }
        if self.lock_days > 36500 {
            return Err("offsite.lock_days must be at most 36500".into());
        }
        if self.request_timeout_secs == 0
            || self.max_attempts == 0
            || self.max_lag_secs == 0
            || self.check_timeout_secs == 0
        {
            return Err(
                "offsite.request_timeout_secs, offsite.max_attempts, offsite.max_lag_secs and offsite.check_timeout_secs must be at least 1"
                    .into(),
            );
        }
        let dir = std::path::absolute(backup_dir).unwrap_or_default();
        for (key, p) in [
            ("offsite.credentials_file", &self.credentials_file),
            ("offsite.queue_dir", &self.queue_dir),
        ] {
            if std::path::absolute(p).unwrap_or_default().starts_with(&dir) {
                return Err(format!(
                    "{key} {} is inside backup.dir: anyone who can write backups could read or plant it; keep it in the state directory",
                    p.display()
                ));
            }
        }
        Ok(())
    }
}

/// `[metrics]`: Prometheus text format for node_exporter's textfile collector.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Written atomically after every selftest and backup (off when unset),
    /// e.g. `/var/lib/prometheus/node-exporter/cutter_backup.prom`.
    pub textfile: Option<PathBuf>,
}

/// `[signer]`: the daemon's manifest signing key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerConfig {
    /// Where the key lives (made on first start, mode 0600); never inside
    /// `backup.dir`.
    #[serde(default = "default_signer_key")]
    pub key_file: PathBuf,
}

impl Default for SignerConfig {
    fn default() -> Self {
        Self {
            key_file: default_signer_key(),
        }
    }
}

fn default_signer_key() -> PathBuf {
    PathBuf::from("/var/lib/cutter/signer/manifest-signing-key.asc")
}

/// `[restore]`: what `cutterctl verify` and `restore` trust.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreConfig {
    /// Pinned signer certs (`cutterctl signer export > FILE`); a manifest
    /// must be signed by one of them. `--signer FILE` overrides.
    #[serde(default)]
    pub trusted_signers: Vec<PathBuf>,
}

/// `[retention]`: what `cutterctl prune` keeps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Newest complete, verifying artifacts always kept (at least 1).
    #[serde(default = "default_keep_last")]
    pub keep_last: usize,
    /// Artifacts younger than this many days are kept.
    #[serde(default = "default_keep_days")]
    pub keep_days: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            keep_last: default_keep_last(),
            keep_days: default_keep_days(),
        }
    }
}

fn default_keep_last() -> usize {
    7
}
fn default_keep_days() -> u64 {
    30
}

/// `[server]`: where and to whom the daemon listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Unix socket path.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Peer uids allowed to call (checked with SO_PEERCRED).
    #[serde(default = "default_allowed_uids")]
    pub allowed_uids: Vec<u32>,
    /// On SIGTERM, how long running backups may take to finish before they
    /// are aborted (pg_dump killed, partials removed).
    #[serde(default = "default_stop_grace")]
    pub stop_grace_secs: u64,
    /// Connections open at once. At the cap a new connection closes the
    /// one idle the longest; it is refused only when every open connection
    /// has a request in flight.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Selftest runs on this timer too, so health, STATUS and metrics
    /// notice a revoked grant or an expiring key while the daemon is idle.
    #[serde(default = "default_selftest_interval")]
    pub selftest_interval_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            socket: default_socket(),
            allowed_uids: default_allowed_uids(),
            stop_grace_secs: default_stop_grace(),
            max_connections: default_max_connections(),
            selftest_interval_secs: default_selftest_interval(),
        }
    }
}

/// `[key]`: which OpenPGP certificate backups are encrypted to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Primary-key fingerprint; `BACKUP_GPG_FPR` wins over it.
    pub fingerprint: Option<String>,
    /// Armored file holding the public cert (may hold several certs).
    pub cert_file: Option<PathBuf>,
    /// An env file (`NAME=value` lines) read at start and on every reload for
    /// `BACKUP_GPG_FPR`; when set it is the authority, so deleting the line and
    /// reloading disables backups.
    pub env_file: Option<PathBuf>,
    /// GnuPG home used when no `cert_file` is set (default: gpg's own).
    pub gnupg_home: Option<PathBuf>,
    /// The gpg binary for the keyring fallback.
    #[serde(default = "default_gpg")]
    pub gpg: PathBuf,
    /// More keys every backup is also encrypted to (key rotation: during a
    /// transition both the old and the new key can decrypt new artifacts).
    #[serde(default)]
    pub additional_recipients: Vec<RecipientConfig>,
}

/// `[[key.additional_recipients]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientConfig {
    /// Primary-key fingerprint.
    pub fingerprint: String,
    /// Armored public cert; default: the same lookup as the primary key.
    pub cert_file: Option<PathBuf>,
}

impl Default for KeyConfig {
    fn default() -> Self {
        Self {
            fingerprint: None,
            cert_file: None,
            env_file: None,
            gnupg_home: None,
            gpg: default_gpg(),
            additional_recipients: Vec::new(),
        }
    }
}

/// `[database]`: how to reach PostgreSQL as the least-privilege role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// libpq-style URL without password, e.g.
    /// `postgres://cutter_exec@/directus?host=/run/postgresql`.
    pub url: String,
    /// File whose first line is the password (mode 0600 or a credential).
    pub password_file: Option<PathBuf>,
    /// Pool size.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// Seconds to wait for a connection before calling the database down.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
}

/// Output compression inside the OpenPGP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// No compression: fastest, artifact as large as the dump.
    None,
    /// OpenPGP ZIP (raw deflate), what gpg uses by default.
    Zip,
    /// OpenPGP ZLIB.
    Zlib,
}

/// Which writer makes the SEIPDv1 message (same format either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encryptor {
    /// OpenSSL's AES-CFB and plain SHA-1 for the MDC (GnuPG's speed).
    Seipdv1,
    /// Sequoia's own encryptor (collision-detecting SHA-1; slower).
    Sequoia,
}

/// `[backup]`: what to dump and where.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Directory for artifacts and manifests; must not be world-accessible.
    #[serde(default = "default_backup_dir")]
    pub dir: PathBuf,
    /// Tables in scope, schema-qualified: `cutter_governance.verify_result`.
    pub tables: Vec<String>,
    /// pg_dump to call; default: the one matching the server's major version.
    pub pg_dump: Option<PathBuf>,
    /// Compression inside the OpenPGP message.
    #[serde(default = "default_compression")]
    pub compression: Compression,
    /// Deflate level 1 (fast) to 9 (small).
    #[serde(default = "default_compression_level")]
    pub compression_level: u8,
    /// The SEIPDv1 writer: "seipdv1" (default) or "sequoia".
    #[serde(default = "default_encryptor")]
    pub encryptor: Encryptor,
    /// Free space required beyond the estimated dump size.
    #[serde(default = "default_margin")]
    pub free_space_margin_mib: u64,
    /// Backups of different run_ids allowed to run at once.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// A backup whose dump yields no bytes for this long is aborted.
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout_secs: u64,
}

fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}
fn default_allowed_uids() -> Vec<u32> {
    vec![0]
}
fn default_stop_grace() -> u64 {
    60
}
fn default_selftest_interval() -> u64 {
    60
}
fn default_max_connections() -> usize {
    64
}
fn default_gpg() -> PathBuf {
    PathBuf::from("gpg")
}
fn default_pool_size() -> u32 {
    4
}
fn default_connect_timeout() -> u64 {
    5
}
fn default_backup_dir() -> PathBuf {
    PathBuf::from("/var/lib/cutter/backups")
}
fn default_compression() -> Compression {
    Compression::Zip
}
/// Level 2: on the benchmark (docs/benchmarks.md) within 5 % of gpg's output
/// size at over twice its speed; level 3 costs 20 % more time for 1 % less.
fn default_compression_level() -> u8 {
    2
}
fn default_encryptor() -> Encryptor {
    Encryptor::Seipdv1
}
fn default_margin() -> u64 {
    64
}
fn default_max_concurrent() -> usize {
    2
}
fn default_stall_timeout() -> u64 {
    300
}

/// A table in scope, split into schema and name. The config and every
/// manifest name tables through [`TableName::parse`]; a name that fails it
/// never reaches a query, a file or a psql session (a NUL would cut a psql
/// line short, a newline or backslash would start a meta-command).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableName {
    /// Schema.
    pub schema: String,
    /// Table.
    pub name: String,
}

/// PostgreSQL's identifier limit (NAMEDATALEN - 1 bytes): a longer name
/// would be truncated by the server into another one.
pub const MAX_IDENT_BYTES: usize = 63;

impl TableName {
    /// Parses `schema.table`: both parts 1–63 bytes, no `.` in the table
    /// part, no control character (NUL, newline, tab …) and no backslash
    /// anywhere. The error says which rule the name broke.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let (schema, name) = text
            .split_once('.')
            .ok_or_else(|| format!("{:?} must be schema-qualified (schema.table)", text))?;
        for part in [schema, name] {
            if part.is_empty() || name.contains('.') {
                return Err(format!("{text:?} is not schema.table"));
            }
            if part.len() > MAX_IDENT_BYTES {
                return Err(format!(
                    "{text:?}: {part:?} is longer than PostgreSQL's {MAX_IDENT_BYTES}-byte identifier limit"
                ));
            }
            if part.chars().any(|c| c.is_control() || c == '\\') {
                return Err(format!(
                    "{text:?} holds a control character or a backslash, which no table name here may"
                ));
            }
        }
        Ok(Self {
            schema: schema.to_owned(),
            name: name.to_owned(),
        })
    }

    /// `"schema"."name"`, quoted for SQL and for `pg_dump -t`.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// Written as the `schema.table` string manifests have always held.
impl Serialize for TableName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Read through [`TableName::parse`]: a manifest with a bad name is corrupt.
impl<'de> Deserialize<'de> for TableName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(|e| serde::de::Error::custom(format!("table name {e}")))
    }
}

/// Quotes an SQL identifier, doubling embedded quotes.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::Config {
            path: path.to_owned(),
            reason,
        };
        if !path.is_file() {
            return Err(bad("no such file (pass --config FILE)".into()));
        }
        crate::trusted::check(path, "the config file").map_err(bad)?;
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        Self::from_toml(&text).map_err(bad)
    }

    /// Parses and validates config text (what [`Config::load`] reads).
    pub fn from_toml(text: &str) -> std::result::Result<Self, String> {
        let cfg: Config = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.backup.tables.is_empty() {
            return Err(
                "backup.tables is empty: list the schema-qualified tables to back up".into(),
            );
        }
        self.tables()?;
        if !(1..=9).contains(&self.backup.compression_level) {
            return Err("backup.compression_level must be 1..=9".into());
        }
        if self.retention.keep_last == 0 {
            return Err(
                "retention.keep_last must be at least 1: the newest backup is always kept".into(),
            );
        }
        if self.backup.stall_timeout_secs == 0 {
            return Err("backup.stall_timeout_secs must be at least 1".into());
        }
        if self.backup.max_concurrent == 0 {
            return Err("backup.max_concurrent must be at least 1".into());
        }
        if self.server.selftest_interval_secs == 0 {
            return Err("server.selftest_interval_secs must be at least 1".into());
        }
        if self.server.max_connections == 0 {
            return Err("server.max_connections must be at least 1".into());
        }
        if self.server.allowed_uids.is_empty() {
            return Err("server.allowed_uids is empty: nobody could call the daemon".into());
        }
        check_url(&self.database.url)?;
        let key = std::path::absolute(&self.signer.key_file).unwrap_or_default();
        let dir = std::path::absolute(&self.backup.dir).unwrap_or_default();
        if key.starts_with(&dir) {
            return Err(format!(
                "signer.key_file {} is inside backup.dir: anyone who can write backups could swap it; keep it in the state directory",
                key.display()
            ));
        }
        if let Some(o) = &self.offsite {
            o.validate(&self.backup.dir)?;
        }
        Ok(())
    }

    /// The tables in scope, parsed, sorted and deduplicated.
    pub fn tables(&self) -> std::result::Result<Vec<TableName>, String> {
        let mut out = Vec::with_capacity(self.backup.tables.len());
        for t in &self.backup.tables {
            out.push(TableName::parse(t).map_err(|e| format!("backup.tables entry {e}"))?);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// The URL parameters both sqlx and libpq (pg_dump) understand the same
/// way; anything else would make the pool and the dump connect differently.
pub const URL_PARAMS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "options",
    "application_name",
];

/// A database URL carries no password (in the authority or as `password=`)
/// and no parameter outside [`URL_PARAMS`].
pub fn check_url(url: &str) -> std::result::Result<(), String> {
    if url_has_password(url) {
        return Err(
            "database.url carries a password: remove it and use database.password_file".into(),
        );
    }
    let query = url.split_once('?').map_or("", |(_, q)| q);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let name = pair.split_once('=').map_or(pair, |(k, _)| k);
        if name.eq_ignore_ascii_case("password") {
            return Err(
                "database.url carries a password parameter: remove it and use database.password_file"
                    .into(),
            );
        }
        if !URL_PARAMS.contains(&name) {
            return Err(format!(
                "database.url parameter {:?} is not supported (allowed: {}): the pool and pg_dump must connect the same way",
                name.escape_debug().to_string(),
                URL_PARAMS.join(", ")
            ));
        }
    }
    Ok(())
}

/// True when a URL's authority carries userinfo (`user@`, `user:secret@`),
/// with or without a scheme.
fn has_userinfo(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#'])
        .next()
        .is_some_and(|authority| authority.contains('@'))
}

/// True when a `scheme://user:secret@host` URL carries a password.
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let userinfo = rest.split(['/', '?']).next().unwrap_or("");
    userinfo
        .rsplit_once('@')
        .is_some_and(|(user, _)| user.contains(':'))
}

/// Where the fingerprint came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FprSource {
    /// `key.env_file`.
    EnvFile,
    /// The process environment.
    Env,
    /// `key.fingerprint`.
    ConfigFile,
}

/// Finds the configured fingerprint text (unvalidated): the env file when
/// configured, else the process environment, else the config file.
pub fn configured_fingerprint(
    key: &KeyConfig,
    process_env: Option<String>,
) -> Result<Option<(String, FprSource)>> {
    if let Some(path) = &key.env_file {
        let vars = read_env_file(path)?;
        return Ok(vars
            .get(FPR_ENV)
            .filter(|v| !v.is_empty())
            .map(|v| (v.clone(), FprSource::EnvFile)));
    }
    if let Some(v) = process_env.filter(|v| !v.trim().is_empty()) {
        return Ok(Some((v, FprSource::Env)));
    }
    Ok(key
        .fingerprint
        .clone()
        .filter(|v| !v.trim().is_empty())
        .map(|v| (v, FprSource::ConfigFile)))
}

/// Parses `NAME=value` lines (comments, `export`, and quotes allowed). A
/// missing file reads as empty: the operator removed it to disable backups.
pub fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>> {
    crate::trusted::check(path, "key.env_file").map_err(|reason| Error::ConfigKey {
        key: "key.env_file",
        reason,
    })?;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(Error::io("read env file", path, e)),
    };
    Ok(parse_env(&text))
}

/// The `NAME=value` lines of env-file text (see [`read_env_file`]).
pub fn parse_env(text: &str) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line);
        if line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            vars.insert(k.trim().to_owned(), v.to_owned());
        }
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_a_password_or_an_unknown_parameter_are_refused() {
        assert!(check_url("postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem").is_ok());
        assert!(check_url("postgres://u:pw@h/db").is_err());
        assert!(check_url("postgres://u@h/db?password=pw").is_err());
        assert!(check_url("postgres://u@h/db?sslmode=require&PASSWORD=pw").is_err());
        let e = check_url("postgres://u@h/db?target_session_attrs=any").expect_err("unknown");
        assert!(e.contains("target_session_attrs"), "{e}");
    }

    #[test]
    fn s3_urls_are_split_and_checked() {
        let u = S3Url::parse("s3://my-bucket/a/b/").expect("ok");
        assert_eq!((u.bucket.as_str(), u.prefix.as_str()), ("my-bucket", "a/b"));
        assert_eq!(S3Url::parse("s3://bkt").expect("ok").prefix, "");
        for bad in [
            "http://b/x",
            "s3://B/x",
            "s3://ab",
            "s3://bkt/../x",
            "s3://bkt/a b",
        ] {
            assert!(S3Url::parse(bad).is_err(), "{bad}");
        }
        assert!(check_host("db-1.example").is_ok());
        assert!(check_host("../x").is_err());
    }

    #[test]
    fn an_endpoint_with_credentials_is_refused_without_echoing_them() {
        let load = |endpoint: &str| {
            Config::from_toml(&format!(
                "[database]\nurl = \"postgres://u@h/db\"\n[backup]\ntables = [\"s.t\"]\n\
                 [offsite]\nurl = \"s3://bucket/p\"\ncredentials_file = \"/etc/cutter/s3\"\nendpoint = {endpoint:?}\n"
            ))
        };
        for ok in [
            "https://s3.example:9000",
            "http://127.0.0.1:8333/",
            "https://h/p@th",
        ] {
            assert!(load(ok).is_ok(), "{ok}: {:?}", load(ok).err());
        }
        for bad in [
            "https://AKIAUSER:s3cr3t-Pa55@s3.example",
            "http://AKIAUSER@s3.example:9000/",
            "AKIAUSER:s3cr3t-Pa55@s3.example",
            "ftp://AKIAUSER:s3cr3t-Pa55@s3.example",
        ] {
            let e = load(bad).expect_err(bad);
            assert!(e.contains("offsite.credentials_file"), "{e}");
            assert!(!e.contains("s3cr3t") && !e.contains("AKIAUSER"), "{e}");
        }
    }

    #[test]
    fn password_in_url_is_detected() {
        assert!(url_has_password("postgres://u:secret@h/db"));
        assert!(!url_has_password("postgres://u@h/db"));
        assert!(!url_has_password("postgres://u@/db?host=/run/postgresql"));
        assert!(!url_has_password("postgres:///db?host=/x@y"));
    }

    #[test]
    fn env_file_parsing_handles_quotes_comments_and_export() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join(".env");
        std::fs::write(
            &p,
            "# c\nexport BACKUP_GPG_FPR=\"ABC\"\nOTHER='x y'\nPLAIN = z \n",
        )
        .expect("write");
        let v = read_env_file(&p).expect("parse");
        assert_eq!(v["BACKUP_GPG_FPR"], "ABC");
        assert_eq!(v["OTHER"], "x y");
        assert_eq!(v["PLAIN"], "z");
        assert!(
            read_env_file(&dir.path().join("missing"))
                .expect("ok")
                .is_empty()
        );
    }

    #[test]
    fn env_file_wins_and_an_empty_line_means_unset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join(".env");
        std::fs::write(&p, "BACKUP_GPG_FPR=\n").expect("write");
        let key = KeyConfig {
            fingerprint: Some("F".repeat(40)),
            env_file: Some(p),
            ..KeyConfig::default()
        };
        assert_eq!(
            configured_fingerprint(&key, Some("E".repeat(40))).expect("ok"),
            None
        );
    }
}
