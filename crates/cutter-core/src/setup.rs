//! Everything the daemon derives from its config at start and on reload: the
//! parsed tables, the resolved public key, the lazy pool, the store. A reload
//! builds a new `Setup`; a running backup keeps the one it started with.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::config::{Config, FPR_ENV, FprSource, KeyConfig, TableName, configured_fingerprint};
use crate::db::Database;
use crate::error::{Error, Result};
use crate::key::{Fingerprint, LoadedCert, load_cert, shown};
use crate::offsite::{Connect, Offsite};
use crate::pgdump::{self, PgDumpVersion};
use crate::signer::Signer;
use crate::store::Store;

/// The key as far as it could be resolved, with the operator-facing reason
/// where it could not.
#[derive(Debug, Clone)]
pub enum KeyResolution {
    /// No fingerprint configured anywhere.
    Unset,
    /// `key.env_file` exists but cannot be read (why, without its contents).
    Unreadable(String),
    /// A fingerprint that is not 40 hex digits (only its tail is kept).
    Malformed(String),
    /// A well-formed fingerprint whose cert could not be loaded.
    NotFound(Fingerprint, String),
    /// The cert was found.
    Loaded(LoadedCert, FprSource),
}

impl KeyResolution {
    /// The fingerprint, if well-formed.
    pub fn fingerprint(&self) -> Option<&Fingerprint> {
        match self {
            KeyResolution::NotFound(f, _) => Some(f),
            KeyResolution::Loaded(c, _) => Some(&c.fingerprint),
            _ => None,
        }
    }
}

/// The loaded configuration.
#[derive(Debug)]
pub struct Setup {
    /// The config as read.
    pub config: Config,
    /// Tables in scope, sorted.
    pub tables: Vec<TableName>,
    /// The primary key.
    pub key: KeyResolution,
    /// `key.additional_recipients`, resolved the same way.
    pub additional: Vec<KeyResolution>,
    /// The pool.
    pub db: Database,
    /// The backups directory.
    pub store: Store,
    /// The manifest signing key, or why it cannot be used.
    pub signer: std::result::Result<Arc<Signer>, String>,
    /// `[offsite]` when configured: the client and queue, or why they
    /// cannot be used (selftest FAILs `offsite` and says so).
    pub offsite: Option<std::result::Result<Arc<Offsite>, String>>,
    pg_dump_versions: Mutex<HashMap<PathBuf, (SystemTime, PgDumpVersion)>>,
}

impl Setup {
    /// Resolves `config`; `env_fpr` is the process's `BACKUP_GPG_FPR`;
    /// `connect` makes the `[offsite]` backend (the daemon hands in
    /// `cutter_offsite::connect`). Only a broken config is an error: a
    /// missing key or database makes selftest FAIL instead, so the daemon
    /// stays up and explains.
    pub fn load(config: Config, env_fpr: Option<String>, connect: Connect) -> Result<Self> {
        let tables = config.tables().map_err(|reason| Error::ConfigKey {
            key: "backup.tables",
            reason,
        })?;
        // An unreadable env file is the operator's to fix: selftest FAILs
        // and says how; the daemon stays up.
        let key = match configured_fingerprint(&config.key, env_fpr) {
            Err(e) => KeyResolution::Unreadable(e.to_string()),
            Ok(None) => KeyResolution::Unset,
            Ok(Some((text, source))) => resolve_key(&config.key, &text, source),
        };
        let additional = config
            .key
            .additional_recipients
            .iter()
            .map(|r| {
                let lookup = KeyConfig {
                    cert_file: r.cert_file.clone().or_else(|| config.key.cert_file.clone()),
                    ..config.key.clone()
                };
                resolve_key(&lookup, &r.fingerprint, FprSource::ConfigFile)
            })
            .collect();
        let db = Database::connect_lazy(&config.database)?;
        let store = Store::new(&config.backup.dir)?;
        let signer =
            Signer::load_or_create(&config.signer.key_file, &config.backup.dir).map(Arc::new);
        let offsite = config
            .offsite
            .as_ref()
            .map(|o| Offsite::new(o, connect).map(Arc::new));
        Ok(Self {
            offsite,
            config,
            tables,
            key,
            additional,
            db,
            store,
            signer,
            pg_dump_versions: Mutex::new(HashMap::new()),
        })
    }

    /// Reads the process environment's `BACKUP_GPG_FPR`.
    pub fn env_fingerprint() -> Option<String> {
        std::env::var(FPR_ENV).ok()
    }

    /// `pg_dump --version` for `path`, cached while the binary is unchanged.
    pub fn pg_dump_version(&self, path: &Path) -> std::result::Result<PgDumpVersion, String> {
        let mtime = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(|e| {
                format!(
                    "pg_dump not found at {} ({e}); install postgresql-client-<server major> or set backup.pg_dump",
                    path.display()
                )
            })?;
        let mut cache = self
            .pg_dump_versions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((t, v)) = cache.get(path)
            && *t == mtime
        {
            return Ok(v.clone());
        }
        let v = pgdump::version(path)?;
        cache.insert(path.to_owned(), (mtime, v.clone()));
        Ok(v)
    }
}

fn resolve_key(key: &KeyConfig, text: &str, source: FprSource) -> KeyResolution {
    let Some(fpr) = Fingerprint::parse(text) else {
        let tail: String = text
            .chars()
            .rev()
            .take(8)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return KeyResolution::Malformed(tail);
    };
    match load_cert(key, &fpr) {
        Ok(c) => KeyResolution::Loaded(c, source),
        Err(why) => KeyResolution::NotFound(fpr, why),
    }
}

/// The shown form of a resolution's fingerprint, for STATUS lines.
pub fn shown_key(k: &KeyResolution) -> String {
    k.fingerprint().map(shown).unwrap_or_else(|| "unset".into())
}
