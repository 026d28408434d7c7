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

/// Where pg_dump should connect: the same server, role and database as the pool.
#[derive(Debug, Clone)]
pub struct ConnTarget {
    /// Host name or socket directory (PGHOST).
    pub host: String,
    /// Port (PGPORT).
    pub port: u16,
    /// Role (PGUSER).
    pub user: String,
    /// Database (PGDATABASE).
    pub database: String,
    /// Password (PGPASSWORD, env only, never argv).
    pub password: Option<Secret>,
}

impl ConnTarget {
    /// The libpq environment for a child process; the password travels here,
    /// never in argv.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PGHOST", self.host.clone()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", self.user.clone()),
            ("PGDATABASE", self.database.clone()),
            ("PGAPPNAME", "cutter-backupd".to_owned()),
        ];
        if let Some(p) = &self.password {
            env.push(("PGPASSWORD", p.expose().to_owned()));
        }
        env
    }
}

/// The daemon's handle on the database.
#[derive(Clone)]
pub struct Database {
    pool: PgPool,
    target: ConnTarget,
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
        let mut opts =
            PgConnectOptions::from_str(&with_host(&cfg.url)).map_err(|e| Error::Config {
                path: "database.url".into(),
                reason: e.to_string(),
            })?;
        opts = opts.application_name("cutter-backupd");
        let password = match &cfg.password_file {
            Some(path) => Some(read_password(path)?),
            None => None,
        };
        if let Some(p) = &password {
            opts = opts.password(p.expose());
        }
        let host = match opts.get_socket() {
            Some(dir) => dir.to_string_lossy().into_owned(),
            None => opts.get_host().to_owned(),
        };
        let target = ConnTarget {
            host,
            port: opts.get_port(),
            user: opts.get_username().to_owned(),
            database: opts
                .get_database()
                .unwrap_or(opts.get_username())
                .to_owned(),
            password,
        };
        let pool = PgPoolOptions::new()
            .max_connections(cfg.pool_size.max(2))
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(cfg.connect_timeout_secs))
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(opts);
        Ok(Self { pool, target })
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

    /// Opens a read-only REPEATABLE READ transaction and exports its snapshot.
    pub async fn snapshot(&self) -> Result<Snapshot> {
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
    pub async fn count(&mut self, tables: &[TableName]) -> Result<Vec<(TableName, u64)>> {
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

/// Where a libpq-style URL points: (host or socket dir, port, database, user).
pub fn url_target(url: &str) -> Result<(String, u16, String, String)> {
    let opts = PgConnectOptions::from_str(&with_host(url)).map_err(|e| Error::Config {
        path: "database url".into(),
        reason: e.to_string(),
    })?;
    Ok(parts(&opts))
}

/// (host or socket dir, port, database, user) as libpq would use them.
fn parts(opts: &PgConnectOptions) -> (String, u16, String, String) {
    let host = match opts.get_socket() {
        Some(dir) => dir.to_string_lossy().into_owned(),
        None => opts.get_host().to_owned(),
    };
    let user = opts.get_username().to_owned();
    let db = opts.get_database().unwrap_or(&user).to_owned();
    (host, opts.get_port(), db, user)
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

fn read_password(path: &std::path::Path) -> Result<Secret> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io("read password_file", path, e))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(Error::Config {
            path: path.to_owned(),
            reason: "database.password_file is empty".into(),
        });
    }
    Ok(Secret(line.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
