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

use crate::output::clean;

/// The database admin sessions connect to while the scratch one may not exist.
const MAINTENANCE_DB: &str = "postgres";

/// psql on one scratch database.
pub struct Psql {
    bin: PathBuf,
    target: ConnTarget,
    role: String,
    live_gone: bool,
}

impl Psql {
    /// Checks the role name and that this psql knows `\restrict`.
    pub fn new(
        bin: Option<PathBuf>,
        target: ConnTarget,
        role: &str,
        live_gone: bool,
    ) -> anyhow::Result<Self> {
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
            live_gone,
        })
    }

    /// psql on `database` as `user`. Sessions start with
    /// `search_path=pg_catalog` (startup options outrank database and role
    /// settings), so objects a dump left behind cannot shadow what our own
    /// queries call.
    fn cmd(&self, database: &str, user: &str) -> Command {
        self.cmd_on(&self.target, database, user)
    }

    /// psql on `server`'s host, port and TLS settings, as `cmd` does.
    fn cmd_on(&self, server: &ConnTarget, database: &str, user: &str) -> Command {
        let mut c = Command::new(&self.bin);
        clear_pg_env(&mut c);
        c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(format!(
                "{} options='-c search_path=pg_catalog'",
                server.conninfo(database, user)
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs our own `sql` as the URL's (admin) role in `database`; the
    /// unaligned, tuples-only result. Never in the scratch database after
    /// the load: what the dump created there is hostile to an admin session.
    fn admin(&self, database: &str, sql: &str, vars: &[(&str, &str)]) -> anyhow::Result<String> {
        self.query(self.cmd(database, &self.target.user), sql, vars)
    }

    /// Runs our own `sql` in the scratch database as the load role.
    fn as_load_role(&self, password: &str, sql: &str) -> anyhow::Result<String> {
        let mut c = self.cmd(&self.target.database, &self.role);
        c.env("PGPASSWORD", password);
        self.query(c, sql, &[])
    }

    fn query(&self, mut c: Command, sql: &str, vars: &[(&str, &str)]) -> anyhow::Result<String> {
        c.arg("-At");
        for (k, v) in vars {
            c.arg("-v").arg(format!("{k}={v}"));
        }
        let out = run(&self.bin, c, std::io::Cursor::new(sql.as_bytes().to_vec()))?;
        if !out.status.success() {
            bail!(
                "psql: {}",
                clean(&String::from_utf8_lossy(&out.stderr)).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Refuses when the target is the live cluster's live database, by
    /// server identity, not by how the host is spelled; and when it cannot
    /// tell, unless the operator says the live database is gone.
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
        if self.live_gone {
            eprintln!("--live-database-gone: the target is not compared with the live database");
            return Ok(());
        }
        let unknown = |why: String| {
            anyhow::anyhow!(
                "cannot tell whether {} is the live database ({why}); restore refuses unless it can compare them. If the live database is gone (a lost host), pass --live-database-gone",
                self.target.shown()
            )
        };
        let Some(live) = live else {
            return Err(unknown(
                "database.url or database.password_file in the config is unusable".into(),
            ));
        };
        let c = self.live_identity_cmd(live);
        let out = run(&self.bin, c, IDENTITY.as_bytes())?;
        if !out.status.success() {
            return Err(unknown(format!(
                "the live database {} did not answer: {}",
                live.shown(),
                clean(&String::from_utf8_lossy(&out.stderr)).trim()
            )));
        }
        let live_id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if live_id == target_id && live.database == self.target.database {
            return Err(refuse(format!(
                "same server, system identifier {live_id}, same database"
            )));
        }
        Ok(())
    }

    /// psql asking the live database for its identity: on the live
    /// server's own host and port with its password (the target may be
    /// reached another way, e.g. its Unix socket while the daemon uses TCP).
    fn live_identity_cmd(&self, live: &ConnTarget) -> Command {
        let mut c = self.cmd_on(live, &live.database, &live.user);
        c.arg("-At").envs(live.env());
        c
    }

    /// Makes the load role (non-superuser, no memberships, marked as
    /// cutterctl's) with a fresh one-use password, the scratch database
    /// owned by it (or takes over an existing empty one without settings),
    /// and the dump's schemas; returns the password.
    pub fn prepare(&self, manifest: &Manifest) -> anyhow::Result<String> {
        let (db, role) = (self.target.database.as_str(), self.role.as_str());
        let state = self.admin(
            MAINTENANCE_DB,
            "SELECT (rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls \
             OR EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.member = r.oid))::text \
             || ':' || (shobj_description(r.oid, 'pg_authid') IS NOT DISTINCT FROM :'marker')::text \
             FROM pg_roles r WHERE rolname = :'role'",
            &[("role", role), ("marker", ROLE_MARKER)],
        )?;
        match state.as_str() {
            "" | "false:true" => {}
            "false:false" => bail!(
                "role {role} exists and was not made by cutterctl (its password would be replaced): pass --load-role with a new name"
            ),
            _ => bail!(
                "role {role} exists with privileges beyond owning a database (superuser, createrole, createdb, replication, bypassrls or role memberships): pass --load-role with a new name"
            ),
        }
        let password = random_token()?;
        let verb = if state.is_empty() { "CREATE" } else { "ALTER" };
        // A SCRAM verifier made here: the password itself never reaches the
        // server, so no statement log can hold it.
        self.admin(
            MAINTENANCE_DB,
            &format!(
                "{verb} ROLE {r} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD '{}';\n\
                 COMMENT ON ROLE {r} IS '{ROLE_MARKER}';",
                scram_verifier(&password)?,
                r = quote_ident(role)
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
            let settings = self.admin(
                MAINTENANCE_DB,
                "SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase \
                 WHERE d.datname = :'db'",
                &[("db", db)],
            )?;
            let objects = self.admin(
                db,
                "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
                         AND n.nspname NOT LIKE 'pg_toast%') \
                      + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema'))",
                &[],
            )?;
            if objects != "0" || settings != "0" {
                bail!(
                    "database {db} is not empty ({objects} relations or functions, {settings} settings): restore into a new database name, cutterctl creates it"
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
    /// role, in restricted mode, counts the manifest's tables in the same
    /// role's session, then takes the role's password away and resets any
    /// setting the dump put on the database.
    pub fn load(&self, password: &str, plain: File, manifest: &Manifest) -> anyhow::Result<Counts> {
        let key = random_token()?;
        let mut c = self.cmd(&self.target.database, &self.role);
        // `-f -`: psql's --single-transaction only wraps -f/-c input.
        c.args(["--single-transaction", "-f", "-"])
            .env("PGPASSWORD", password)
            .stdout(Stdio::null());
        let input = Restricted::new(&key, BufReader::with_capacity(1 << 20, plain));
        let loaded = run(&self.bin, c, input).and_then(|out| {
            if out.status.success() {
                Ok(())
            } else {
                bail!(
                    "psql could not load the dump (nothing was committed): {}",
                    clean(&String::from_utf8_lossy(&out.stderr)).trim()
                )
            }
        });
        let counts = loaded.and_then(|()| self.count(password, manifest));
        let lock = self.admin(
            MAINTENANCE_DB,
            &format!(
                "ALTER ROLE {r} PASSWORD NULL; ALTER DATABASE {d} RESET ALL;",
                r = quote_ident(&self.role),
                d = quote_ident(&self.target.database)
            ),
            &[],
        );
        let counts = counts?;
        lock.context("removing the load role's password")?;
        Ok(counts)
    }

    /// Every manifest table's row count, as the load role: each must be a
    /// plain or partitioned table (a view could run anything as its reader).
    fn count(&self, password: &str, manifest: &Manifest) -> anyhow::Result<Counts> {
        let mut out = Vec::with_capacity(manifest.tables.len());
        for t in &manifest.tables {
            let (schema, name) = t.table.split_once('.').context("table name in manifest")?;
            let kind = self.as_load_role(
                password,
                &format!(
                    "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = {} AND c.relname = {}",
                    quote_literal(schema),
                    quote_literal(name)
                ),
            )?;
            let rows = if kind == "r" || kind == "p" {
                let quoted = TableName {
                    schema: schema.to_owned(),
                    name: name.to_owned(),
                }
                .quoted();
                Some(self.as_load_role(
                    password,
                    &format!("SELECT pg_catalog.count(*) FROM {quoted}"),
                )?)
            } else {
                None
            };
            out.push((t.table.clone(), t.rows, rows));
        }
        Ok(out)
    }

    /// Prints manifest vs restored counts; `false` when any differs.
    pub fn compare(&self, counts: &Counts) -> bool {
        println!("{:<50} {:>12} {:>12}", "table", "manifest", "restored");
        let mut all_match = true;
        for (table, want, got) in counts {
            let got = got.as_deref().unwrap_or("not a table");
            let ok = got == want.to_string();
            all_match &= ok;
            println!(
                "{:<50} {:>12} {:>12}{}",
                clean(table),
                want,
                got,
                if ok { "" } else { "  MISMATCH" }
            );
        }
        if all_match {
            println!(
                "RESTORE: OK — {} tables into {}",
                counts.len(),
                self.target.database
            );
        } else {
            println!("RESTORE: MISMATCH — row counts differ from the manifest");
        }
        all_match
    }
}

/// (table, rows in the manifest, rows restored or `None` when not a table).
pub type Counts = Vec<(String, u64, Option<String>)>;

/// The comment that marks a role cutterctl made (and may re-key).
const ROLE_MARKER: &str = "cutter-backup restore load role (cutterctl)";

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A PostgreSQL SCRAM-SHA-256 verifier for `password` (what `\password` and
/// libpq's PQencryptPasswordConn send), so the password never travels.
fn scram_verifier(password: &str) -> anyhow::Result<String> {
    use openssl::base64::encode_block;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::sign::Signer;
    const ITERATIONS: usize = 4096;
    let mut salt = [0u8; 16];
    openssl::rand::rand_bytes(&mut salt)?;
    let mut salted = [0u8; 32];
    openssl::pkcs5::pbkdf2_hmac(
        password.as_bytes(),
        &salt,
        ITERATIONS,
        MessageDigest::sha256(),
        &mut salted,
    )?;
    let hmac = |msg: &[u8]| -> anyhow::Result<Vec<u8>> {
        let key = PKey::hmac(&salted)?;
        let mut s = Signer::new(MessageDigest::sha256(), &key)?;
        s.update(msg)?;
        Ok(s.sign_to_vec()?)
    };
    let client_key = hmac(b"Client Key")?;
    let stored_key = openssl::sha::sha256(&client_key);
    let server_key = hmac(b"Server Key")?;
    Ok(format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        encode_block(&salt),
        encode_block(&stored_key),
        encode_block(&server_key)
    ))
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
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if self.in_copy {
                self.in_copy = text != b"\\.";
            } else if is_copy_from_stdin(text) {
                self.in_copy = true;
            } else if is_restrict_line(text) {
                continue;
            }
            return Ok(Some(std::mem::take(&mut self.line)));
        }
    }
}

fn is_copy_from_stdin(text: &[u8]) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.starts_with(b"copy ") && lower.ends_with(b" from stdin;")
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
    fn the_live_database_is_asked_on_its_own_host_not_the_targets() {
        let target = ConnTarget::parse("postgres://root@/scratch?host=/run/postgresql", None)
            .expect("target");
        let live = ConnTarget::parse("postgres://cutter_exec@127.0.0.1:5433/directus", None)
            .expect("live");
        let psql = Psql {
            bin: PathBuf::from("psql"),
            target,
            role: "cutter_restore".into(),
            live_gone: false,
        };
        let c = psql.live_identity_cmd(&live);
        let conninfo = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .find(|a| a.starts_with("host="))
            .expect("a conninfo argument");
        assert!(
            conninfo.starts_with("host='127.0.0.1' port=5433 dbname='directus' user='cutter_exec'"),
            "{conninfo}"
        );
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
