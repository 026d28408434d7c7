//! PostgreSQL access as the least-privilege role: the pool, the selftest
//! queries, and the exported REPEATABLE READ snapshot a backup dumps from.
//!
//! Every query here only reads; a backup changes no row.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};

use crate::config::{DatabaseConfig, TableName};
use crate::error::{Error, Result};

/// A secret string whose `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// The secret itself: only for handing to PostgreSQL or pg_dump's env.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Where a libpq-style URL points, and how a child process (pg_dump, psql)
/// connects there exactly as the pool does: the URL itself (no password,
/// only parameters sqlx and libpq read alike, see `config::check_url`) as
/// `--dbname`, and the password in the environment, never argv.
#[derive(Debug, Clone)]
pub struct ConnTarget {
    /// The URL as configured (no password).
    pub url: String,
    /// Host name or socket directory.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Role.
    pub user: String,
    /// Database.
    pub database: String,
    /// Password (PGPASSWORD, env only, never argv).
    pub password: Option<Secret>,
    /// The URL's TLS and session parameters (sslmode, sslrootcert, options …).
    pub params: Vec<(String, String)>,
}

impl ConnTarget {
    /// Parses `url` (checked by `config::check_url`) the way the pool does.
    pub fn parse(url: &str, password: Option<Secret>) -> Result<Self> {
        crate::config::check_url(url).map_err(|reason| Error::ConfigKey {
            key: "database.url",
            reason,
        })?;
        let opts = options(url)?;
        // The host as written (sqlx reports a `hostaddr` as the host; libpq
        // keeps the name for TLS and uses the address to connect).
        let host = match (opts.get_socket(), written_host(url)) {
            (Some(dir), _) => dir.to_string_lossy().into_owned(),
            (None, Some(h)) => h,
            (None, None) => opts.get_host().to_owned(),
        };
        let user = opts.get_username().to_owned();
        let params = url
            .split_once('?')
            .map_or("", |(_, q)| q)
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| !matches!(*k, "host" | "port" | "dbname" | "user"))
            .map(|(k, v)| (k.to_owned(), percent_decode(v)))
            .collect();
        Ok(Self {
            url: url.to_owned(),
            params,
            host,
            port: opts.get_port(),
            database: opts.get_database().unwrap_or(&user).to_owned(),
            user,
            password,
        })
    }

    /// `user@host:port/database`, for messages.
    pub fn shown(&self) -> String {
        format!(
            "{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }

    /// A keyword/value conninfo for psql: this server and its TLS settings,
    /// with another database and role (a restore's admin and load sessions).
    pub fn conninfo(&self, database: &str, user: &str) -> String {
        let q = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        let mut parts = vec![
            format!("host={}", q(&self.host)),
            format!("port={}", self.port),
            format!("dbname={}", q(database)),
            format!("user={}", q(user)),
        ];
        parts.extend(self.params.iter().map(|(k, v)| format!("{k}={}", q(v))));
        parts.join(" ")
    }

    /// sqlx options for this server (its host, port and TLS settings) with
    /// another database and role, for cutterctl's own sessions. Every such
    /// session starts with `search_path=pg_catalog`,
    /// `standard_conforming_strings=on`, `client_encoding=UTF8` and fixed
    /// date, time zone, interval, float and bytea formats as startup
    /// options, which outrank whatever a role or database setting (perhaps
    /// left by a hostile dump) says. The caller must have removed
    /// `PG*` variables from the process environment: sqlx reads them.
    pub fn session_options(&self, database: &str, user: &str) -> Result<PgConnectOptions> {
        let mut opts = options(&self.url)?
            .database(database)
            .username(user)
            .application_name("cutterctl")
            .options([
                ("search_path", "pg_catalog"),
                ("standard_conforming_strings", "on"),
                ("client_encoding", "UTF8"),
                // Values go out as text and come back in (a revert): the
                // same spelling both ways, whatever the database says.
                ("DateStyle", "ISO, YMD"),
                ("IntervalStyle", "postgres"),
                ("TimeZone", "UTC"),
                ("extra_float_digits", "3"),
                ("bytea_output", "hex"),
                ("array_nulls", "on"),
            ]);
        if let Some(p) = &self.password {
            opts = opts.password(p.expose());
        }
        Ok(opts)
    }

    /// The libpq environment for a child: only the password and a default
    /// application name. The caller removes every other `PG*` variable, so
    /// nothing in the environment can steer the connection.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("PGAPPNAME", "cutter-backupd".to_owned())];
        if let Some(p) = &self.password {
            env.push(("PGPASSWORD", p.expose().to_owned()));
        }
        env
    }
}

/// Removes every `PG*` variable from `cmd`'s environment (PGSERVICE,
/// PGHOSTADDR, PGOPTIONS … would override or extend what we pass).
pub fn clear_pg_env(cmd: &mut std::process::Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(k);
        }
    }
}

/// The host in a URL's authority, without user and port; `None` when empty.
fn written_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        hostport.split(':').next()?
    };
    (!host.is_empty()).then(|| percent_decode(host))
}

/// `%2F` → `/` in URL query values.
fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn options(url: &str) -> Result<PgConnectOptions> {
    PgConnectOptions::from_str(&with_host(url)).map_err(|e| Error::ConfigKey {
        key: "database.url",
        reason: e.to_string(),
    })
}

/// The daemon's handle on the database.
#[derive(Clone)]
pub struct Database {
    pool: PgPool,
    target: ConnTarget,
    problem: Option<String>,
}

/// Shows where, never how: the pool's connect options carry the password.
impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// What the server says about itself and our session.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `current_user`.
    pub role: String,
    /// True when that role is a superuser (not least-privilege).
    pub superuser: bool,
    /// `server_version_num`, e.g. 150014.
    pub version_num: i32,
    /// `server_version`, e.g. "15.14 (Debian 15.14-0+deb12u1)".
    pub version: String,
}

impl ServerInfo {
    /// The major version, e.g. 15.
    pub fn major(&self) -> u32 {
        u32::try_from(self.version_num / 10000).unwrap_or(0)
    }
}

/// One table in scope as the catalog sees it.
#[derive(Debug, Clone)]
pub struct TableState {
    /// The table.
    pub table: TableName,
    /// The table exists (ordinary or partitioned).
    pub exists: bool,
    /// The role has SELECT on it.
    pub can_select: bool,
    /// The role has USAGE on its schema.
    pub schema_usage: bool,
    /// `pg_table_size`, for the free-space estimate.
    pub size_bytes: u64,
}

/// A sequence owned by a table in scope.
#[derive(Debug, Clone)]
pub struct SequenceState {
    /// The sequence.
    pub sequence: TableName,
    /// The role has SELECT on it.
    pub can_select: bool,
}

impl Database {
    /// Builds the pool without connecting: a database that is down at start
    /// makes selftest FAIL, it does not stop the daemon.
    pub fn connect_lazy(cfg: &DatabaseConfig) -> Result<Self> {
        // A bad password file makes selftest FAIL (the daemon stays up and
        // says what to fix); only a malformed URL is a config error.
        let (password, problem) = match cfg.password_file.as_deref().map(read_password) {
            None => (None, None),
            Some(Ok(p)) => (Some(p), None),
            Some(Err(e)) => (None, Some(e.to_string())),
        };
        let target = ConnTarget::parse(&cfg.url, password)?;
        let mut opts = options(&cfg.url)?;
        if !cfg.url.contains("application_name=") {
            opts = opts.application_name("cutter-backupd");
        }
        if let Some(p) = &target.password {
            opts = opts.password(p.expose());
        }
        let pool = PgPoolOptions::new()
            .max_connections(cfg.pool_size.max(2))
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(cfg.connect_timeout_secs))
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(opts);
        Ok(Self {
            pool,
            target,
            problem,
        })
    }

    /// Why the database cannot be used as configured (an unreadable or
    /// too-open password file), if so.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    /// Where pg_dump connects.
    pub fn target(&self) -> &ConnTarget {
        &self.target
    }

    /// Connects (or reuses a connection) and asks who we are.
    pub async fn server_info(&self) -> Result<ServerInfo> {
        let row = sqlx::query(
            "SELECT current_user::text, \
                    (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), \
                    current_setting('server_version_num')::int4, \
                    current_setting('server_version')",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| Error::from_sqlx(&e))?;
        Ok(ServerInfo {
            role: row.get(0),
            superuser: row.get::<Option<bool>, _>(1).unwrap_or(false),
            version_num: row.get(2),
            version: row.get(3),
        })
    }

    /// Looks every table up in the catalogs (readable by any role, so a
    /// missing grant does not hide a table) with the role's privileges.
    pub async fn inspect_tables(&self, tables: &[TableName]) -> Result<Vec<TableState>> {
        let (schemas, names) = split_names(tables);
        let rows = sqlx::query(
            "SELECT c.oid IS NOT NULL, \
                    COALESCE(has_table_privilege(c.oid, 'SELECT'), false), \
                    COALESCE(has_schema_privilege(n.oid, 'USAGE'), false), \
                    COALESCE(pg_table_size(c.oid), 0)::int8 \
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(nsp, rel, ord) \
             LEFT JOIN pg_namespace n ON n.nspname = t.nsp \
             LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.rel \
                                  AND c.relkind IN ('r', 'p') \
             ORDER BY t.ord",
        )
        .bind(&schemas)
        .bind(&names)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| Error::from_sqlx(&e))?;
        Ok(tables
            .iter()
            .zip(rows)
            .map(|(t, r)| TableState {
                table: t.clone(),
                exists: r.get(0),
                can_select: r.get(1),
                schema_usage: r.get(2),
                size_bytes: u64::try_from(r.get::<i64, _>(3)).unwrap_or(0),
            })
            .collect())
    }

    /// The sequences owned by the tables (serial and identity columns):
    /// `pg_dump --table` dumps their values too, so the role needs SELECT on them.
    pub async fn inspect_sequences(&self, tables: &[TableName]) -> Result<Vec<SequenceState>> {
        let (schemas, names) = split_names(tables);
        let rows = sqlx::query(
            "SELECT DISTINCT sn.nspname::text, s.relname::text, \
                    has_sequence_privilege(s.oid, 'SELECT') \
             FROM unnest($1::text[], $2::text[]) AS t(nsp, rel) \
             JOIN pg_namespace n ON n.nspname = t.nsp \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.rel \
             JOIN pg_depend d ON d.refobjid = c.oid AND d.refclassid = 'pg_class'::regclass \
                              AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') \
             JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' \
             JOIN pg_namespace sn ON sn.oid = s.relnamespace \
             ORDER BY 1, 2",
        )
        .bind(&schemas)
        .bind(&names)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| Error::from_sqlx(&e))?;
        Ok(rows
            .into_iter()
            .map(|r| SequenceState {
                sequence: TableName {
                    schema: r.get(0),
                    name: r.get(1),
                },
                can_select: r.get(2),
            })
            .collect())
    }

    /// Opens a read-only REPEATABLE READ transaction, exports its snapshot,
    /// and checks that every table in scope still exists: one dropped since
    /// the preflight check is named here (NotReady), before pg_dump starts.
    /// Without this, the row count's error aborts the snapshot transaction
    /// and pg_dump reports only that it could not import the snapshot.
    pub async fn snapshot(&self, tables: &[TableName]) -> Result<Snapshot> {
        let sql_err = |e: sqlx::Error| Error::from_sqlx(&e);
        let mut tx = self.pool.begin().await.map_err(sql_err)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(sql_err)?;
        let id: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
            .fetch_one(&mut *tx)
            .await
            .map_err(sql_err)?;
        let (schemas, names) = split_names(tables);
        let missing: Vec<String> = sqlx::query_scalar(
            "SELECT format('%I.%I', s, n) FROM unnest($1::text[], $2::text[]) AS t(s, n) \
             WHERE to_regclass(format('%I.%I', s, n)) IS NULL",
        )
        .bind(schemas)
        .bind(names)
        .fetch_all(&mut *tx)
        .await
        .map_err(sql_err)?;
        if !missing.is_empty() {
            return Err(Error::NotReady(format!(
                "table {} is in backup.tables but no longer exists (dropped after the preflight check): restore it, or remove it from backup.tables and reload",
                missing.join(", ")
            )));
        }
        Ok(Snapshot { tx, id })
    }

    /// Closes the pool (shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// An exported snapshot, kept alive until the dump has finished.
#[derive(Debug)]
pub struct Snapshot {
    tx: Transaction<'static, Postgres>,
    /// The id to pass to `pg_dump --snapshot`.
    pub id: String,
}

impl Snapshot {
    /// Counts every table's rows in the snapshot (while pg_dump reads the
    /// same snapshot on its own connection).
    ///
    /// Without parallel workers: the count only has to finish before the
    /// dump does, which it does alone (a count scans several times faster
    /// than COPY formats rows). Workers would not finish the backup sooner;
    /// they would take cores from the dump's own backend and pg_dump at its
    /// start, and take slots from `max_parallel_workers` on the server.
    pub async fn count(&mut self, tables: &[TableName]) -> Result<Vec<(TableName, u64)>> {
        sqlx::query("SET LOCAL max_parallel_workers_per_gather = 0")
            .execute(&mut *self.tx)
            .await
            .map_err(|e| Error::from_sqlx(&e))?;
        let counts_sql = tables
            .iter()
            .enumerate()
            .map(|(i, t)| format!("SELECT {i}::int4, count(*)::int8 FROM {}", t.quoted()))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        // Audited: every identifier is passed through quote_ident by quoted().
        let mut rows = sqlx::query(sqlx::AssertSqlSafe(counts_sql))
            .fetch_all(&mut *self.tx)
            .await
            .map_err(|e| Error::from_sqlx(&e))?;
        rows.sort_by_key(|r| r.get::<i32, _>(0));
        Ok(tables
            .iter()
            .zip(rows)
            .map(|(t, r)| (t.clone(), u64::try_from(r.get::<i64, _>(1)).unwrap_or(0)))
            .collect())
    }

    /// Ends the read-only transaction.
    pub async fn release(self) -> Result<()> {
        self.tx.rollback().await.map_err(|e| Error::from_sqlx(&e))
    }
}

/// The tables' schemas and names as two parallel arrays, for `unnest($1, $2)`.
fn split_names(tables: &[TableName]) -> (Vec<&str>, Vec<&str>) {
    tables
        .iter()
        .map(|t| (t.schema.as_str(), t.name.as_str()))
        .unzip()
}

/// libpq accepts `postgres://user@/db?host=/run/postgresql` (empty host, the
/// socket directory in `host=`); sqlx wants a host, which `host=` then overrides.
pub fn with_host(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (user, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    if host.is_empty() {
        format!("{scheme}://{user}localhost{tail}")
    } else {
        url.to_owned()
    }
}

/// Reads the first line of a secret file that only its owner can read.
pub fn read_password(path: &std::path::Path) -> Result<Secret> {
    let bad = |reason: String| Error::ConfigKey {
        key: "database.password_file",
        reason,
    };
    let f = std::fs::File::open(path).map_err(|e| Error::io("read password_file", path, e))?;
    crate::signer::check_secret_mode(&f, path).map_err(|e| bad(e.to_string()))?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(&f, 64 * 1024), &mut text)
        .map_err(|e| Error::io("read password_file", path, e))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(bad(format!("{} is empty", path.display())));
    }
    Ok(Secret(line.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_keeps_tls_settings_and_quotes_values() {
        let t = ConnTarget::parse(
            "postgres://u@db.example:5433/live?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
            None,
        )
        .expect("parses");
        assert_eq!(
            t.conninfo("scr'atch", "cutter_restore"),
            "host='db.example' port=5433 dbname='scr\\'atch' user='cutter_restore' sslmode='verify-full' sslrootcert='/etc/ca.pem'"
        );
    }

    #[test]
    fn the_host_is_the_one_written() {
        let t = ConnTarget::parse("postgres://u@db.invalid:5/d?hostaddr=127.0.0.1", None)
            .expect("parses");
        assert_eq!((t.host.as_str(), t.port), ("db.invalid", 5));
        assert!(t.conninfo("d", "u").contains("hostaddr='127.0.0.1'"));
        let t = ConnTarget::parse("postgres://u@/d?host=/run/pg", None).expect("parses");
        assert_eq!(t.host, "/run/pg");
    }

    #[test]
    fn socket_urls_without_a_host_are_accepted() {
        assert_eq!(
            with_host("postgres://cutter_exec@/directus?host=/run/postgresql"),
            "postgres://cutter_exec@localhost/directus?host=/run/postgresql"
        );
        assert_eq!(
            with_host("postgres:///directus"),
            "postgres://localhost/directus"
        );
        assert_eq!(
            with_host("postgres://u@db:5433/x"),
            "postgres://u@db:5433/x"
        );
        let opts = PgConnectOptions::from_str(&with_host(
            "postgres://cutter_exec@/directus?host=/run/postgresql&port=5433",
        ))
        .expect("parses");
        assert_eq!(
            opts.get_socket().map(|p| p.display().to_string()),
            Some("/run/postgresql".into())
        );
        assert_eq!(opts.get_port(), 5433);
        assert_eq!(opts.get_username(), "cutter_exec");
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[tokio::test]
    async fn debug_output_never_shows_the_password() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "hunter2-secret\n").expect("write");
        std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        let db = Database::connect_lazy(&DatabaseConfig {
            url: "postgres://cutter_exec@127.0.0.1:1/directus".into(),
            password_file: Some(pw),
            pool_size: 2,
            connect_timeout_secs: 1,
        })
        .expect("lazy pool");
        assert_eq!(
            db.target().password.as_ref().map(Secret::expose),
            Some("hunter2-secret")
        );
        let shown = format!("{db:?} {:?}", db.target());
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
