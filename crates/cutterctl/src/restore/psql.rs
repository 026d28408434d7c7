//! psql for a restore, boxed in:
//! - no `PG*` variable from the operator's shell reaches it, and every
//!   session gets one explicit conninfo, so PGSERVICE or PGHOSTADDR cannot
//!   send it elsewhere;
//! - the target's server identity (`system_identifier` and database name) is
//!   compared with the live database's, whatever the host is called;
//! - the dump is loaded as a non-superuser role that owns the scratch
//!   database (no `COPY … TO PROGRAM`, no roles, no other databases);
//! - the stream starts with `\restrict <key>` (a key only this process
//!   knows), so no psql meta-command in it runs (`\!`, `\o`, `\copy` …);
//! - stdin is written and stdout/stderr are read at once, so a chatty psql
//!   cannot deadlock the restore.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, bail};
use cutter_core::config::{TableName, quote_ident};
use cutter_core::db::{ConnTarget, clear_pg_env};
use cutter_core::manifest::Manifest;

/// The database admin sessions connect to while the scratch one may not exist.
const MAINTENANCE_DB: &str = "postgres";

/// psql on one scratch database.
pub struct Psql {
    bin: PathBuf,
    target: ConnTarget,
    role: String,
}

impl Psql {
    /// Checks the role name and that this psql knows `\restrict`.
    pub fn new(bin: Option<PathBuf>, target: ConnTarget, role: &str) -> anyhow::Result<Self> {
        let plain = role.len() <= 63
            && role.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && role
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !plain {
            bail!("--load-role {role:?}: use lower-case letters, digits and '_'");
        }
        let bin = bin.unwrap_or_else(default_psql);
        check_version(&bin)?;
        Ok(Self {
            bin,
            target,
            role: role.to_owned(),
        })
    }

    fn cmd(&self, database: &str, user: &str) -> Command {
        let mut c = Command::new(&self.bin);
        clear_pg_env(&mut c);
        c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.target.conninfo(database, user))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs our own `sql` as the URL's (admin) role in `database`; the
    /// unaligned, tuples-only result.
    fn admin(&self, database: &str, sql: &str, vars: &[(&str, &str)]) -> anyhow::Result<String> {
        let mut c = self.cmd(database, &self.target.user);
        c.arg("-At");
        for (k, v) in vars {
            c.arg("-v").arg(format!("{k}={v}"));
        }
        let out = run(&self.bin, c, std::io::Cursor::new(sql.as_bytes().to_vec()))?;
        if !out.status.success() {
            bail!("psql: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Refuses when the target is the live cluster's live database, by
    /// server identity, not by how the host is spelled. When the live
    /// database cannot be reached (a lost host) the target cannot be it.
    pub fn refuse_live(&self, live: &Option<ConnTarget>) -> anyhow::Result<()> {
        const IDENTITY: &str = "SELECT system_identifier FROM pg_control_system()";
        let refuse = |why: String| {
            anyhow::anyhow!(
                "refusing to restore into {}: it is the live database the daemon backs up ({why}). Restore into a scratch database (e.g. --into …/{}_restore) and copy rows from there",
                self.target.shown(),
                self.target.database
            )
        };
        // Spelled the same: no need to connect to know.
        if let Some(live) = live {
            let local =
                |h: &str| h.starts_with('/') || matches!(h, "localhost" | "127.0.0.1" | "::1");
            let same_host =
                live.host == self.target.host || (local(&live.host) && local(&self.target.host));
            if same_host && live.port == self.target.port && live.database == self.target.database {
                return Err(refuse("same host, port and database".into()));
            }
        }
        let target_id = self
            .admin(MAINTENANCE_DB, IDENTITY, &[])
            .context("identifying the target server")?;
        let Some(live) = live else {
            eprintln!(
                "warning: database.url in the config is unusable; cannot compare the target with the live database"
            );
            return Ok(());
        };
        let mut c = self.cmd(&live.database, &live.user);
        c.arg("-At").envs(live.env());
        let live_id = match run(&self.bin, c, IDENTITY.as_bytes()) {
            Ok(out) if out.status.success() => {
                String::from_utf8_lossy(&out.stdout).trim().to_owned()
            }
            _ => {
                eprintln!(
                    "warning: the live database {} is unreachable; restoring into {} (a different server or database)",
                    live.shown(),
                    self.target.shown()
                );
                return Ok(());
            }
        };
        if live_id == target_id && live.database == self.target.database {
            return Err(refuse(format!(
                "same server, system identifier {live_id}, same database"
            )));
        }
        Ok(())
    }

    /// Makes the load role (non-superuser, no memberships) with a fresh
    /// one-use password, the scratch database owned by it (or takes over an
    /// existing empty one), and the dump's schemas; returns the password.
    pub fn prepare(&self, manifest: &Manifest) -> anyhow::Result<String> {
        let (db, role) = (self.target.database.as_str(), self.role.as_str());
        let state = self.admin(
            MAINTENANCE_DB,
            "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls \
             OR EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.member = r.oid) \
             FROM pg_roles r WHERE rolname = :'role'",
            &[("role", role)],
        )?;
        if state == "t" {
            bail!(
                "role {role} exists with privileges beyond owning a database (superuser, createrole, createdb, replication, bypassrls or role memberships): pass --load-role with a new name"
            );
        }
        let password = random_token()?;
        let verb = if state.is_empty() { "CREATE" } else { "ALTER" };
        self.admin(
            MAINTENANCE_DB,
            &format!(
                "{verb} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD '{password}'",
                quote_ident(role)
            ),
            &[],
        )?;
        let exists = self.admin(
            MAINTENANCE_DB,
            "SELECT count(*) FROM pg_database WHERE datname = :'db'",
            &[("db", db)],
        )?;
        if exists == "0" {
            self.admin(
                MAINTENANCE_DB,
                "CREATE DATABASE :\"db\" OWNER :\"role\"",
                &[("db", db), ("role", role)],
            )?;
            eprintln!("created scratch database {db} owned by {role}");
        } else {
            let tables = self.admin(
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
            self.admin(
                MAINTENANCE_DB,
                "ALTER DATABASE :\"db\" OWNER TO :\"role\"",
                &[("db", db), ("role", role)],
            )?;
        }
        let mut schemas: Vec<&str> = manifest
            .tables
            .iter()
            .filter_map(|t| t.table.split_once('.').map(|(s, _)| s))
            .collect();
        schemas.sort_unstable();
        schemas.dedup();
        let sql: String = schemas
            .iter()
            .map(|s| {
                format!(
                    "CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {};\n",
                    quote_ident(s),
                    quote_ident(role)
                )
            })
            .collect();
        self.admin(db, &sql, &[])?;
        Ok(password)
    }

    /// Loads the authenticated plaintext in one transaction as the load
    /// role, in restricted mode; then takes the role's password away.
    pub fn load(&self, password: &str, plain: File) -> anyhow::Result<()> {
        let key = random_token()?;
        let mut c = self.cmd(&self.target.database, &self.role);
        c.arg("--single-transaction")
            .env("PGPASSWORD", password)
            .stdout(Stdio::null());
        let input = Restricted::new(&key, BufReader::with_capacity(1 << 20, plain));
        let out = run(&self.bin, c, input);
        let lock = self.admin(
            MAINTENANCE_DB,
            &format!("ALTER ROLE {} PASSWORD NULL", quote_ident(&self.role)),
            &[],
        );
        let out = out?;
        if !out.status.success() {
            bail!(
                "psql could not load the dump (nothing was committed): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        lock.context("removing the load role's password")?;
        Ok(())
    }

    /// Prints manifest vs restored counts; `Ok(false)` when any differs.
    pub fn compare(&self, manifest: &Manifest) -> anyhow::Result<bool> {
        println!("{:<50} {:>12} {:>12}", "table", "manifest", "restored");
        let mut all_match = true;
        for t in &manifest.tables {
            let (schema, name) = t.table.split_once('.').context("table name in manifest")?;
            let quoted = TableName {
                schema: schema.to_owned(),
                name: name.to_owned(),
            }
            .quoted();
            let got = self.admin(
                &self.target.database,
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
                self.target.database
            );
        } else {
            println!("RESTORE: MISMATCH — row counts differ from the manifest");
        }
        Ok(all_match)
    }
}

/// Runs `cmd` feeding it `input` from a thread while its output is read.
fn run(bin: &Path, mut cmd: Command, input: impl Read + Send + 'static) -> anyhow::Result<Output> {
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {}", bin.display()))?;
    let mut stdin = child.stdin.take().context("psql stdin")?;
    let writer = std::thread::spawn(move || {
        let mut input = input;
        // psql stopping early (ON_ERROR_STOP) closes the pipe: not our error.
        let _ = std::io::copy(&mut input, &mut stdin);
    });
    let out = child.wait_with_output()?;
    let _ = writer.join();
    Ok(out)
}

/// The dump with `\restrict <key>` in front. pg_dump's own
/// `\restrict`/`\unrestrict` lines (outside COPY data) are dropped: psql
/// refuses every meta-command once restricted, and a line that is data
/// inside a COPY block passes untouched.
struct Restricted<R> {
    inner: R,
    pending: Vec<u8>,
    pos: usize,
    in_copy: bool,
    line: Vec<u8>,
}

impl<R: BufRead> Restricted<R> {
    fn new(key: &str, inner: R) -> Self {
        Self {
            inner,
            pending: format!("\\restrict {key}\n").into_bytes(),
            pos: 0,
            in_copy: false,
            line: Vec::new(),
        }
    }

    /// The next line to pass on, or `None` at the end.
    fn next_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            self.line.clear();
            if self.inner.read_until(b'\n', &mut self.line)? == 0 {
                return Ok(None);
            }
            let text = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
            if self.in_copy {
                self.in_copy = text != b"\\.";
            } else if text.starts_with(b"COPY ") && text.ends_with(b" FROM stdin;") {
                self.in_copy = true;
            } else if is_restrict_line(text) {
                continue;
            }
            return Ok(Some(std::mem::take(&mut self.line)));
        }
    }
}

fn is_restrict_line(text: &[u8]) -> bool {
    let rest = text
        .strip_prefix(b"\\restrict ")
        .or_else(|| text.strip_prefix(b"\\unrestrict "));
    rest.is_some_and(|k| !k.is_empty() && k.iter().all(u8::is_ascii_alphanumeric))
}

impl<R: BufRead> Read for Restricted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.pending.len() {
            match self.next_line()? {
                Some(line) => {
                    self.pending = line;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len() - self.pos);
        buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// 32 hex characters from the OS CSPRNG: the `\restrict` key and the load
/// role's one-use password.
fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(cutter_core::encrypt::hex(&bytes))
}

/// psql learnt `\restrict` in 13.22, 14.19, 15.14, 16.10 and 17.6.
fn check_version(bin: &Path) -> anyhow::Result<()> {
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!(
                "running {} --version (install postgresql-client)",
                bin.display()
            )
        })?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let version = line
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or("");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    let needed = match major {
        13 => Some(22),
        14 => Some(19),
        15 => Some(14),
        16 => Some(10),
        17 => Some(6),
        m if m >= 18 => None,
        _ => Some(u32::MAX),
    };
    if needed.is_some_and(|n| minor < n) {
        bail!(
            "{} is {line:?}: restore needs a psql with \\restrict (13.22, 14.19, 15.14, 16.10, 17.6 or newer) so the dump cannot run psql commands; upgrade postgresql-client",
            bin.display()
        );
    }
    Ok(())
}

fn default_psql() -> PathBuf {
    cutter_core::pgdump::newest_bindir()
        .map(|d| d.join("psql"))
        .unwrap_or_else(|| PathBuf::from("psql"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filtered(dump: &str) -> String {
        let mut out = String::new();
        Restricted::new("KEY1", BufReader::new(dump.as_bytes()))
            .read_to_string(&mut out)
            .expect("read");
        out
    }

    #[test]
    fn the_stream_is_restricted_and_the_dumps_own_restrict_lines_go() {
        let dump = "--\n\\restrict abc\nSET x = 1;\nCOPY s.t (a) FROM stdin;\n\\restrict notmeta\n\\.\n\\! id\n\\unrestrict abc\n";
        assert_eq!(
            filtered(dump),
            "\\restrict KEY1\n--\nSET x = 1;\nCOPY s.t (a) FROM stdin;\n\\restrict notmeta\n\\.\n\\! id\n"
        );
    }
}
