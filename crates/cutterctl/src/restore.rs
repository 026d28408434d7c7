//! `cutterctl restore`: verify, decrypt with the operator's secret key, load
//! into a scratch database with psql, compare every table's row count with
//! the manifest. Runs without the daemon; never touches the live database.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use cutter_core::config::{Config, TableName, quote_ident};
use cutter_core::db::url_target;
use cutter_core::decrypt::{decrypt, read_secret_keys};
use cutter_core::manifest::Manifest;
use cutter_core::store::Store;
use cutter_core::{runid, verify};

use crate::prompt;

/// What to restore and where (`cutterctl restore …`).
#[derive(Debug, clap::Args)]
pub struct Restore {
    /// The run.
    pub run_id: String,
    /// Your secret key (gpg --export-secret-keys --armor FPR > FILE).
    #[arg(long)]
    pub secret_key: PathBuf,
    /// File with the key's passphrase; without it you are asked (no echo).
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
    /// Scratch database URL; created when missing, refused when not empty.
    #[arg(long, required_unless_present = "to_file")]
    pub into: Option<String>,
    /// Only decrypt, into this new file (mode 0600).
    #[arg(long, conflicts_with = "into")]
    pub to_file: Option<PathBuf>,
    /// The daemon's config: where backups are and which database is live.
    #[arg(long, default_value = cutter_core::config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// psql to load with (default: the newest installed).
    #[arg(long)]
    pub psql: Option<PathBuf>,
}

/// Runs the restore; `Ok(false)` when row counts differ.
pub fn run(r: &Restore) -> anyhow::Result<bool> {
    runid::validate(&r.run_id)?;
    let config = Config::load(&r.config)?;
    let store = Store::new(&config.backup.dir)?;
    let target = match (&r.into, &r.to_file) {
        (Some(url), None) => Some(check_target(url, &config)?),
        (None, Some(_)) => None,
        _ => bail!("give exactly one of --into URL (a scratch database) or --to-file PATH"),
    };
    let manifest = verify::verify(&store, &r.run_id).map_err(|why| {
        anyhow::anyhow!(
            "verify FAILED for {}: {why}; nothing was restored",
            r.run_id
        )
    })?;
    let keys = read_secret_keys(&r.secret_key).map_err(anyhow::Error::msg)?;
    let passphrase = match &r.passphrase_file {
        Some(p) => Some(prompt::from_file(p)?),
        None if keys.iter().any(has_protected_secret) => {
            Some(prompt::no_echo("passphrase for the backup key: ")?)
        }
        None => None,
    };
    let artifact = store.artifact_path(&r.run_id);
    if let Some(path) = &r.to_file {
        let mut out = create_0600_new(path)?;
        let n = decrypt(&artifact, &keys, passphrase, &mut out).map_err(|e| {
            let _ = std::fs::remove_file(path);
            anyhow::anyhow!(e)
        })?;
        out.sync_all()?;
        eprintln!(
            "decrypted {} ({n} bytes of SQL) to {}",
            r.run_id,
            path.display()
        );
        return Ok(true);
    }
    let Some(target) = target else {
        bail!("no target");
    };
    let psql = Psql::new(r.psql.clone(), target);
    psql.prepare(&manifest)?;
    psql.load(|stdin| decrypt(&artifact, &keys, passphrase, stdin).map_err(anyhow::Error::msg))?;
    compare(&psql, &manifest)
}

fn has_protected_secret(cert: &cutter_core::decrypt::Cert) -> bool {
    cert.keys()
        .secret()
        .any(|ka| !ka.key().has_unencrypted_secret())
}

fn create_0600_new(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))
}

/// The scratch database: host, port, database, user.
#[derive(Debug, Clone)]
pub struct Target {
    host: String,
    port: u16,
    db: String,
    user: String,
}

fn is_local(host: &str) -> bool {
    host.starts_with('/') || matches!(host, "localhost" | "127.0.0.1" | "::1" | "[::1]")
}

/// Refuses the daemon's live database (same host, port and dbname).
fn check_target(url: &str, config: &Config) -> anyhow::Result<Target> {
    let (host, port, db, user) = url_target(url)?;
    let (live_host, live_port, live_db, _) = url_target(&config.database.url)?;
    let same_host = host == live_host || (is_local(&host) && is_local(&live_host));
    if same_host && port == live_port && db == live_db {
        bail!(
            "refusing to restore into {db} on {host}:{port}: that is the live database the daemon backs up. Restore into a scratch database (e.g. --into postgres://postgres@{host}:{port}/{db}_restore) and copy rows from there"
        );
    }
    Ok(Target {
        host,
        port,
        db,
        user,
    })
}

struct Psql {
    bin: PathBuf,
    target: Target,
}

impl Psql {
    fn new(bin: Option<PathBuf>, target: Target) -> Self {
        Self {
            bin: bin.unwrap_or_else(default_psql),
            target,
        }
    }

    fn cmd(&self, db: &str) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .env("PGHOST", &self.target.host)
            .env("PGPORT", self.target.port.to_string())
            .env("PGUSER", &self.target.user)
            .env("PGDATABASE", db);
        c
    }

    /// Runs `sql` (with `:'db'` style variables from `vars`) in `db`.
    fn query(&self, db: &str, sql: &str, vars: &[(&str, &str)]) -> anyhow::Result<String> {
        let mut c = self.cmd(db);
        c.arg("-At");
        for (k, v) in vars {
            c.arg("-v").arg(format!("{k}={v}"));
        }
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", self.bin.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(sql.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("psql: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Creates the scratch database, or accepts an existing empty one, and
    /// the schemas the dump's tables live in.
    fn prepare(&self, manifest: &Manifest) -> anyhow::Result<()> {
        let db = self.target.db.as_str();
        let exists = self.query(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = :'db'",
            &[("db", db)],
        )?;
        if exists == "0" {
            self.query("postgres", "CREATE DATABASE :\"db\"", &[("db", db)])?;
            eprintln!("created scratch database {db}");
        } else {
            let tables = self.query(
                db,
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                 AND n.nspname NOT LIKE 'pg_toast%'",
                &[],
            )?;
            if tables != "0" {
                bail!(
                    "database {db} is not empty ({tables} tables): restore into a new database name, cutterctl creates it"
                );
            }
        }
        let mut schemas: Vec<String> = manifest
            .tables
            .iter()
            .filter_map(|t| t.table.split_once('.').map(|(s, _)| s.to_owned()))
            .collect();
        schemas.sort();
        schemas.dedup();
        let sql: String = schemas
            .iter()
            .map(|s| format!("CREATE SCHEMA IF NOT EXISTS {};\n", quote_ident(s)))
            .collect();
        self.query(db, &sql, &[])?;
        Ok(())
    }

    /// Streams the SQL `write` produces into psql in one transaction.
    fn load(
        &self,
        write: impl FnOnce(&mut dyn Write) -> anyhow::Result<u64>,
    ) -> anyhow::Result<()> {
        let mut child = self
            .cmd(&self.target.db)
            .arg("--single-transaction")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", self.bin.display()))?;
        let mut stdin = child.stdin.take().context("psql stdin")?;
        let written = write(&mut stdin);
        drop(stdin);
        let out = child.wait_with_output()?;
        written?;
        if !out.status.success() {
            bail!(
                "psql could not load the dump (nothing was committed): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

fn default_psql() -> PathBuf {
    cutter_core::pgdump::newest_bindir()
        .map(|d| d.join("psql"))
        .unwrap_or_else(|| PathBuf::from("psql"))
}

/// Prints manifest vs restored counts; `Ok(false)` when any differs.
fn compare(psql: &Psql, manifest: &Manifest) -> anyhow::Result<bool> {
    println!("{:<50} {:>12} {:>12}", "table", "manifest", "restored");
    let mut all_match = true;
    for t in &manifest.tables {
        let (schema, name) = t.table.split_once('.').context("table name in manifest")?;
        let quoted = TableName {
            schema: schema.to_owned(),
            name: name.to_owned(),
        }
        .quoted();
        let got = psql.query(
            &psql.target.db,
            &format!("SELECT count(*) FROM {quoted}"),
            &[],
        )?;
        let ok = got == t.rows.to_string();
        all_match &= ok;
        println!(
            "{:<50} {:>12} {:>12}{}",
            t.table,
            t.rows,
            got,
            if ok { "" } else { "  MISMATCH" }
        );
    }
    if all_match {
        println!(
            "RESTORE: OK — {} tables into {}",
            manifest.tables.len(),
            psql.target.db
        );
    } else {
        println!("RESTORE: MISMATCH — row counts differ from the manifest");
    }
    Ok(all_match)
}
