//! The scratch database and its load role, worked on through cutterctl's
//! own sqlx sessions, never through psql: every name from a manifest is a
//! bound parameter, and every statement that needs an identifier is built
//! by the server (`format('%I', $1)`), so no string from a manifest or a
//! dump becomes SQL text here. Each session starts with
//! `search_path=pg_catalog`, `standard_conforming_strings=on` and
//! `client_encoding=UTF8` (`ConnTarget::session_options`), whatever a role
//! or database setting says.
//!
//! The box, in order:
//! - the target is not the live database (server identity, not spelling);
//! - the load role is cutterctl's (marker comment), not privileged, has no
//!   members and belongs to no role; its settings from an earlier dump are
//!   cleared and it gets a fresh one-use password ([`LoadRole`], which
//!   takes the password and LOGIN away again on every exit path);
//! - the database is made here (from `template0`), or is an existing one
//!   that is empty in every respect, and is then owned by the load role;
//! - after the load: no member or membership appeared, nothing in the
//!   database is owned by another role or granted to one, no extension,
//!   publication or SECURITY DEFINER function came with the dump; then the
//!   manifest's tables are counted as the load role.

use std::future::Future;

use anyhow::{Context, bail};
use cutter_core::config::TableName;
use cutter_core::db::ConnTarget;
use sqlx::{Connection, PgConnection};

/// The database admin sessions connect to while the scratch one may not exist.
const MAINTENANCE_DB: &str = "postgres";

/// The comment that marks a role cutterctl made (and may re-key).
pub const ROLE_MARKER: &str = "cutter-backup restore load role (cutterctl)";

/// The first OID initdb does not use: anything at or above it was made
/// after the cluster was (PostgreSQL's `FirstNormalObjectId`).
const FIRST_USER_OID: u32 = 16384;

/// The catalogs of objects that live in one database and have an owner:
/// (catalog, owner column, namespace column or "" when not in a schema).
const OWNED: &[(&str, &str, &str)] = &[
    ("pg_namespace", "nspowner", ""),
    ("pg_class", "relowner", "relnamespace"),
    ("pg_proc", "proowner", "pronamespace"),
    ("pg_type", "typowner", "typnamespace"),
    ("pg_operator", "oprowner", "oprnamespace"),
    ("pg_collation", "collowner", "collnamespace"),
    ("pg_conversion", "conowner", "connamespace"),
    ("pg_opclass", "opcowner", "opcnamespace"),
    ("pg_opfamily", "opfowner", "opfnamespace"),
    ("pg_ts_config", "cfgowner", "cfgnamespace"),
    ("pg_ts_dict", "dictowner", "dictnamespace"),
    ("pg_statistic_ext", "stxowner", "stxnamespace"),
    ("pg_extension", "extowner", ""),
    ("pg_event_trigger", "evtowner", ""),
    ("pg_publication", "pubowner", ""),
    ("pg_foreign_data_wrapper", "fdwowner", ""),
    ("pg_foreign_server", "srvowner", ""),
    ("pg_language", "lanowner", ""),
    ("pg_largeobject_metadata", "lomowner", ""),
];

/// Catalogs of objects without an owner column that a fresh database has
/// none of (user-made ones, at or above [`FIRST_USER_OID`]).
const UNOWNED: &[&str] = &[
    "pg_cast",
    "pg_transform",
    "pg_ts_parser",
    "pg_ts_template",
    "pg_am",
    "pg_trigger",
    "pg_policy",
    "pg_default_acl",
    "pg_rewrite",
];

/// Runs `f` to completion on the current runtime (restore runs on a
/// blocking thread of cutterctl's runtime).
pub fn block<F: Future>(f: F) -> F::Output {
    tokio::runtime::Handle::current().block_on(f)
}

/// One scratch database on one server, reached with the `--into` URL's
/// (admin) role, loaded as `role`.
pub struct Scratch {
    /// The `--into` URL.
    pub target: ConnTarget,
    /// The load role's name (validated: lower-case letters, digits, `_`).
    pub role: String,
    live_gone: bool,
}

impl Scratch {
    /// Checks the role name.
    pub fn new(target: ConnTarget, role: &str, live_gone: bool) -> anyhow::Result<Self> {
        let plain = (1..=63).contains(&role.len())
            && role.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && role
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !plain {
            bail!("--load-role {role:?}: use lower-case letters, digits and '_'");
        }
        Ok(Self {
            target,
            role: role.to_owned(),
            live_gone,
        })
    }

    /// A session on `database` as the URL's role.
    async fn admin(&self, database: &str) -> anyhow::Result<PgConnection> {
        connect(&self.target, database, &self.target.user, None).await
    }

    /// A session on the scratch database as the load role, with
    /// `row_security=off`: a policy the dump put on a table (FORCE ROW
    /// LEVEL SECURITY reaches its owner) would run the dump's code in our
    /// count; with it off, such a table fails the count instead.
    async fn as_load_role(&self, password: &str) -> anyhow::Result<PgConnection> {
        let opts = self
            .target
            .session_options(&self.target.database, &self.role)?
            .password(password)
            .options([("row_security", "off")]);
        PgConnection::connect_with(&opts)
            .await
            .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "logging in as the load role {} (pg_hba.conf must let it in with a password: docs/operations.md, Restore)",
                self.role
            )
        })
    }

    /// Refuses when the target is the live cluster's live database, by
    /// server identity, not by how the host is spelled; and when it cannot
    /// tell, unless the operator says the live database is gone.
    pub fn refuse_live(&self, live: Option<&ConnTarget>) -> anyhow::Result<()> {
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
        let target_id = block(async {
            let mut c = self.admin(MAINTENANCE_DB).await?;
            identity(&mut c).await
        })
        .context("identifying the target server")?;
        if self.live_gone {
            eprintln!(
                "the target is not compared with the live database (--live-database-gone, or a drill's own database)"
            );
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
        // On the live server's own host and port with its password (the
        // target may be reached another way, e.g. its Unix socket while the
        // daemon uses TCP).
        let live_id = block(async {
            let mut c = connect(live, &live.database, &live.user, None).await?;
            identity(&mut c).await
        })
        .map_err(|e| {
            unknown(format!(
                "the live database {} did not answer: {e:#}",
                live.shown()
            ))
        })?;
        if live_id == target_id && live.database == self.target.database {
            return Err(refuse(format!(
                "same server, system identifier {live_id}, same database"
            )));
        }
        Ok(())
    }

    /// Makes (or re-keys) the load role and makes (or takes over) the
    /// scratch database; from here on the returned guard takes the role's
    /// password and LOGIN away again, whatever happens.
    pub fn prepare(&self) -> anyhow::Result<LoadRole<'_>> {
        let role = self.role.as_str();
        block(async {
            let mut admin = self.admin(MAINTENANCE_DB).await?;
            self.check_role(&mut admin, "before the load").await?;
            let state: Option<(bool, bool)> = sqlx::query_as(
                "SELECT r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls, \
                        pg_catalog.shobj_description(r.oid, 'pg_authid') IS NOT DISTINCT FROM $2 \
                 FROM pg_catalog.pg_roles r WHERE r.rolname = $1",
            )
            .bind(role)
            .bind(ROLE_MARKER)
            .fetch_optional(&mut admin)
            .await?;
            match state {
                None => run_formatted(&mut admin, "CREATE ROLE %I NOLOGIN", &[role]).await?,
                Some((false, true)) => {}
                Some((false, false)) => bail!(
                    "role {role} exists and was not made by cutterctl (its password would be replaced): pass --load-role with a new name"
                ),
                Some((true, _)) => bail!(
                    "role {role} exists with privileges beyond owning a database (superuser, createrole, createdb, replication or bypassrls): pass --load-role with a new name"
                ),
            }
            Ok::<_, anyhow::Error>(())
        })?;
        let password = random_token()?;
        // Armed before the password is set: any failure from here on still
        // takes it away.
        let mut guard = LoadRole {
            scratch: self,
            password,
            created_database: false,
            owns_database: false,
            locked: false,
        };
        block(async {
            let mut admin = self.admin(MAINTENANCE_DB).await?;
            reset_role_settings(&mut admin, role).await?;
            terminate(&mut admin, role, None).await?;
            // A SCRAM verifier made here: the password itself never reaches
            // the server, so no statement log can hold it.
            let verifier = scram_verifier(&guard.password)?;
            run_formatted(
                &mut admin,
                "ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS \
                 CONNECTION LIMIT -1 VALID UNTIL 'infinity' PASSWORD %L",
                &[role, &verifier],
            )
            .await?;
            run_formatted(&mut admin, "COMMENT ON ROLE %I IS %L", &[role, ROLE_MARKER]).await?;
            let db = self.target.database.as_str();
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1)",
            )
            .bind(db)
            .fetch_one(&mut admin)
            .await?;
            if exists {
                let owner: String = sqlx::query_scalar(
                    "SELECT r.rolname::text FROM pg_catalog.pg_database d \
                     JOIN pg_catalog.pg_roles r ON r.oid = d.datdba WHERE d.datname = $1",
                )
                .bind(db)
                .fetch_one(&mut admin)
                .await?;
                if owner != self.target.user && owner != role {
                    bail!(
                        "database {db} is owned by {owner}, who could change it during or after the restore: restore into a new database name, cutterctl creates it"
                    );
                }
                let mut inside = self.admin(db).await?;
                let found = not_empty(&mut inside).await?;
                if !found.is_empty() {
                    bail!(
                        "database {db} is not empty ({}): restore into a new database name, cutterctl creates it",
                        found.join("; ")
                    );
                }
                run_formatted(&mut admin, "ALTER DATABASE %I OWNER TO %I", &[db, role]).await?;
                run_formatted(
                    &mut admin,
                    "REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC",
                    &[db],
                )
                .await?;
                guard.owns_database = true;
                eprintln!("took over the empty database {db} for {role}");
            } else {
                run_formatted(
                    &mut admin,
                    "CREATE DATABASE %I OWNER %I TEMPLATE template0",
                    &[db, role],
                )
                .await?;
                guard.created_database = true;
                guard.owns_database = true;
                // Only its owner (and superusers) may connect: nobody else
                // can hold a session in it while it is loaded or after.
                run_formatted(
                    &mut admin,
                    "REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC",
                    &[db],
                )
                .await?;
                eprintln!("created scratch database {db} owned by {role}");
            }
            Ok::<_, anyhow::Error>(())
        })?;
        Ok(guard)
    }

    /// The load role has no members and belongs to no role.
    async fn check_role(&self, admin: &mut PgConnection, when: &str) -> anyhow::Result<()> {
        let found: Vec<String> = sqlx::query_scalar(
            "SELECT pg_catalog.format('%I is a member of %I', m.member::pg_catalog.regrole, m.roleid::pg_catalog.regrole) \
             FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles r ON r.oid IN (m.member, m.roleid) \
             WHERE r.rolname = $1 ORDER BY 1",
        )
        .bind(&self.role)
        .fetch_all(admin)
        .await?;
        if !found.is_empty() {
            bail!(
                "the load role {} must have no members and belong to no role, but {when}: {}. Whoever holds it could read or change every restored row: REVOKE those memberships or pass --load-role with a new name",
                self.role,
                found.join("; ")
            );
        }
        Ok(())
    }

    /// Creates the dump's schemas as the load role (their owner), by name
    /// from the manifest, quoted by the server. `public` is there already.
    pub fn create_schemas(&self, role: &LoadRole<'_>, tables: &[TableName]) -> anyhow::Result<()> {
        let mut schemas: Vec<&str> = tables.iter().map(|t| t.schema.as_str()).collect();
        schemas.sort_unstable();
        schemas.dedup();
        block(async {
            let mut c = self.as_load_role(&role.password).await?;
            for s in schemas.into_iter().filter(|s| *s != "public") {
                run_formatted(&mut c, "CREATE SCHEMA %I", &[s])
                    .await
                    .with_context(|| format!("creating schema {s:?}"))?;
            }
            Ok(())
        })
    }

    /// What the dump may have left on the role and the database goes (so
    /// none of it applies to our next session), then the box is checked
    /// and the manifest's tables are counted as the load role.
    pub fn after_load(
        &self,
        role: &mut LoadRole<'_>,
        tables: &[TableName],
    ) -> anyhow::Result<Counts> {
        let db = self.target.database.as_str();
        // A dump may set its own password (a role may): a fresh one at once,
        // and every session of the role, or in the database, ended.
        role.password = random_token()?;
        let password = role.password.clone();
        block(async {
            let mut admin = self.admin(MAINTENANCE_DB).await?;
            run_formatted(
                &mut admin,
                "ALTER ROLE %I PASSWORD %L",
                &[&self.role, &scram_verifier(&password)?],
            )
            .await?;
            terminate(&mut admin, &self.role, Some(db)).await?;
            reset_role_settings(&mut admin, &self.role).await?;
            reset_database(&mut admin, db).await?;
            if let Err(e) = self.check_role(&mut admin, "after the load").await {
                // Someone granted it while the dump loaded: undo, refuse.
                revoke_memberships(&mut admin, &self.role).await?;
                return Err(e.context("the memberships were revoked"));
            }
            self.check_contents("after the load").await?;
            let mut c = self.as_load_role(&password).await?;
            let mut out = Vec::with_capacity(tables.len());
            for t in tables {
                out.push((t.clone(), count(&mut c, t).await?));
            }
            c.close().await?;
            self.check_contents("after the count").await?;
            Ok(out)
        })
    }

    /// Refuses what a backup of tables never holds ([`foreign_objects`]);
    /// prepared transactions the dump left are rolled back first.
    async fn check_contents(&self, when: &str) -> anyhow::Result<()> {
        let mut inside = self.admin(&self.target.database).await?;
        let prepared: Vec<String> = sqlx::query_scalar(
            "SELECT gid FROM pg_catalog.pg_prepared_xacts WHERE database = pg_catalog.current_database()",
        )
        .fetch_all(&mut inside)
        .await?;
        for gid in &prepared {
            run_formatted(&mut inside, "ROLLBACK PREPARED %L", &[gid]).await?;
        }
        let mut found = foreign_objects(&mut inside, &self.role).await?;
        found.extend(
            prepared
                .iter()
                .map(|g| format!("prepared transaction {g:?} (rolled back)")),
        );
        if !found.is_empty() {
            bail!(
                "{when}, the scratch database holds what a backup of tables never does, so the dump is not trusted ({}); do not use {}",
                found.join("; "),
                self.target.database
            );
        }
        Ok(())
    }
}

/// (table, rows restored, or `None` when it is not a plain or partitioned
/// table: a view could run anything as its reader).
pub type Counts = Vec<(TableName, Option<i64>)>;

async fn count(c: &mut PgConnection, t: &TableName) -> anyhow::Result<Option<i64>> {
    let kind: Option<String> = sqlx::query_scalar(
        "SELECT c.relkind::text FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = $2",
    )
    .bind(&t.schema)
    .bind(&t.name)
    .fetch_optional(&mut *c)
    .await?;
    if !matches!(kind.as_deref(), Some("r" | "p")) {
        return Ok(None);
    }
    let sql = formatted(
        c,
        "SELECT pg_catalog.count(*) FROM %I.%I",
        &[&t.schema, &t.name],
    )
    .await?;
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut *c)
        .await?;
    Ok(Some(n))
}

/// The guard on the load role's password: [`LoadRole::lock`] (and, if it
/// was not called, `Drop`) removes LOGIN, the password and every setting.
pub struct LoadRole<'a> {
    scratch: &'a Scratch,
    /// The one-use password (never printed, never in argv).
    pub password: String,
    /// The scratch database was made by this restore.
    pub created_database: bool,
    /// The scratch database is the load role's (made or taken over here):
    /// only then are its settings ours to reset.
    owns_database: bool,
    locked: bool,
}

impl LoadRole<'_> {
    /// NOLOGIN, no password, no settings for the role or on the database.
    pub fn lock(&mut self) -> anyhow::Result<()> {
        let s = self.scratch;
        block(async {
            let mut admin = s.admin(MAINTENANCE_DB).await?;
            run_formatted(&mut admin, "ALTER ROLE %I NOLOGIN PASSWORD NULL", &[&s.role]).await?;
            terminate(&mut admin, &s.role, None).await?;
            reset_role_settings(&mut admin, &s.role).await?;
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1)",
            )
            .bind(&s.target.database)
            .fetch_one(&mut admin)
            .await?;
            if exists && self.owns_database {
                reset_database(&mut admin, &s.target.database).await?;
            }
            Ok::<_, anyhow::Error>(())
        })
        .with_context(|| {
            format!(
                "locking the load role again; run as a superuser: ALTER ROLE {r} NOLOGIN PASSWORD NULL; ALTER ROLE {r} RESET ALL",
                r = s.role
            )
        })?;
        self.locked = true;
        Ok(())
    }

    /// Drops the scratch database this restore made (after a refusal: what
    /// is in it must not be used).
    pub fn drop_database(&self) -> anyhow::Result<()> {
        let s = self.scratch;
        block(async {
            let mut admin = s.admin(MAINTENANCE_DB).await?;
            reset_database(&mut admin, &s.target.database).await?;
            run_formatted(
                &mut admin,
                "DROP DATABASE IF EXISTS %I WITH (FORCE)",
                &[&s.target.database],
            )
            .await
        })
    }
}

impl Drop for LoadRole<'_> {
    fn drop(&mut self) {
        if !self.locked
            && let Err(e) = self.lock()
        {
            eprintln!("WARNING: {e:#}");
        }
    }
}

/// Drops the drill databases (`cutter_drill_` and 12 hex digits) the load
/// role owns, this drill's and any a stopped or `--keep` drill left, then
/// the role; only when the role is cutterctl's (its marker, no attribute
/// beyond LOGIN): `--load-role postgres` must never end anyone's sessions.
pub async fn discard_drills(cluster: &ConnTarget, role: &str) -> anyhow::Result<()> {
    let mut admin = connect(cluster, MAINTENANCE_DB, &cluster.user, None).await?;
    let ours: Option<bool> = sqlx::query_scalar(
        "SELECT NOT (r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls) \
                AND pg_catalog.shobj_description(r.oid, 'pg_authid') IS NOT DISTINCT FROM $2 \
         FROM pg_catalog.pg_roles r WHERE r.rolname = $1",
    )
    .bind(role)
    .bind(ROLE_MARKER)
    .fetch_optional(&mut admin)
    .await?;
    match ours {
        None => return Ok(()),
        Some(false) => bail!("role {role} is not a load role cutterctl made: left as it is"),
        Some(true) => {}
    }
    let dbs: Vec<String> = sqlx::query_scalar(
        "SELECT d.datname::text FROM pg_catalog.pg_database d JOIN pg_catalog.pg_roles r ON r.oid = d.datdba \
         WHERE r.rolname = $1 AND d.datname ~ '^cutter_drill_[0-9a-f]{12}$'",
    )
    .bind(role)
    .fetch_all(&mut admin)
    .await?;
    for db in &dbs {
        reset_database(&mut admin, db).await?;
        run_formatted(&mut admin, "DROP DATABASE IF EXISTS %I WITH (FORCE)", &[db]).await?;
    }
    terminate(&mut admin, role, None).await?;
    run_formatted(&mut admin, "DROP ROLE IF EXISTS %I", &[role])
        .await
        .with_context(|| format!("dropping the load role {role} (does it own another database?)"))
}

/// A session with cutterctl's startup options (see the module doc).
pub(crate) async fn connect(
    target: &ConnTarget,
    database: &str,
    user: &str,
    password: Option<&str>,
) -> anyhow::Result<PgConnection> {
    let mut opts = target.session_options(database, user)?;
    if let Some(p) = password {
        opts = opts.password(p);
    }
    PgConnection::connect_with(&opts).await.with_context(|| {
        format!(
            "connecting to {}@{}:{}/{database}",
            user, target.host, target.port
        )
    })
}

pub(crate) async fn identity(c: &mut PgConnection) -> anyhow::Result<String> {
    Ok(
        sqlx::query_scalar("SELECT system_identifier::text FROM pg_catalog.pg_control_system()")
            .fetch_one(c)
            .await?,
    )
}

/// `template` with its `%I`/`%L` filled in by the server.
pub(crate) async fn formatted(
    c: &mut PgConnection,
    template: &str,
    args: &[&str],
) -> anyhow::Result<String> {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    Ok(
        sqlx::query_scalar("SELECT pg_catalog.format($1, VARIADIC $2::pg_catalog.text[])")
            .bind(template)
            .bind(args)
            .fetch_one(c)
            .await?,
    )
}

/// Runs `template` with its `%I`/`%L` filled in by the server.
pub(crate) async fn run_formatted(
    c: &mut PgConnection,
    template: &str,
    args: &[&str],
) -> anyhow::Result<()> {
    let sql = formatted(c, template, args).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(c).await?;
    Ok(())
}

/// Ends every session of `role` (and, with `database`, every other
/// session in that database): nothing the dump started outlives a check.
async fn terminate(
    admin: &mut PgConnection,
    role: &str,
    database: Option<&str>,
) -> anyhow::Result<()> {
    sqlx::query(
        "SELECT pg_catalog.pg_terminate_backend(pid, 5000) FROM pg_catalog.pg_stat_activity \
         WHERE (usename = $1 OR datname = $2) AND pid <> pg_catalog.pg_backend_pid()",
    )
    .bind(role)
    .bind(database)
    .execute(admin)
    .await?;
    Ok(())
}

/// What the owner may have set on the database: settings, template flag,
/// connection limit.
async fn reset_database(admin: &mut PgConnection, db: &str) -> anyhow::Result<()> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1)",
    )
    .bind(db)
    .fetch_one(&mut *admin)
    .await?;
    if exists {
        run_formatted(
            admin,
            "ALTER DATABASE %I IS_TEMPLATE false CONNECTION LIMIT -1",
            &[db],
        )
        .await?;
        run_formatted(admin, "ALTER DATABASE %I RESET ALL", &[db]).await?;
    }
    Ok(())
}

/// Revokes every membership in or of `role`.
async fn revoke_memberships(admin: &mut PgConnection, role: &str) -> anyhow::Result<()> {
    let pairs: Vec<(String, String)> = sqlx::query_as(
        "SELECT g.rolname::text, u.rolname::text FROM pg_catalog.pg_auth_members m \
         JOIN pg_catalog.pg_roles g ON g.oid = m.roleid JOIN pg_catalog.pg_roles u ON u.oid = m.member \
         WHERE $1 IN (g.rolname, u.rolname)",
    )
    .bind(role)
    .fetch_all(&mut *admin)
    .await?;
    for (group, member) in &pairs {
        run_formatted(admin, "REVOKE %I FROM %I", &[group, member]).await?;
    }
    Ok(())
}

/// `ALTER ROLE … RESET ALL`, everywhere the role has settings (a dump's
/// `ALTER ROLE CURRENT_USER [IN DATABASE …] SET …`).
async fn reset_role_settings(admin: &mut PgConnection, role: &str) -> anyhow::Result<()> {
    let dbs: Vec<String> = sqlx::query_scalar(
        "SELECT d.datname::text FROM pg_catalog.pg_db_role_setting s \
         JOIN pg_catalog.pg_roles r ON r.oid = s.setrole \
         JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase WHERE r.rolname = $1",
    )
    .bind(role)
    .fetch_all(&mut *admin)
    .await?;
    for db in &dbs {
        run_formatted(admin, "ALTER ROLE %I IN DATABASE %I RESET ALL", &[role, db]).await?;
    }
    run_formatted(admin, "ALTER ROLE %I RESET ALL", &[role]).await
}

/// Namespaces of other sessions' temporary objects (made by anyone with
/// TEMP, gone with the session): not part of what the database holds.
const NOT_TEMP: &str =
    "pg_catalog.pg_namespace t WHERE t.oid = x.ns AND t.nspname ~ '^pg_(toast_)?temp_'";

/// Everything that makes an existing database not empty: user-made objects
/// of any kind, settings, flags, grants beyond the defaults, a `public`
/// schema someone else owns. Descriptions, at most a few.
async fn not_empty(c: &mut PgConnection) -> anyhow::Result<Vec<String>> {
    let mut parts = Vec::new();
    for (catalog, _, ns) in OWNED {
        parts.push(user_objects(catalog, ns));
    }
    for catalog in UNOWNED {
        parts.push(user_objects(catalog, ""));
    }
    parts.push(
        "SELECT pg_catalog.format('a setting (ALTER DATABASE/ROLE … SET) on it') FROM pg_catalog.pg_db_role_setting s \
         JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase WHERE d.datname = pg_catalog.current_database()"
            .to_owned(),
    );
    parts.extend(database_and_public());
    query_found(c, &parts, None).await
}

/// After the load: objects of another role, grants to others, and what a
/// backup of tables never holds: functions, operators, casts, rules,
/// extensions, publications, default privileges.
async fn foreign_objects(c: &mut PgConnection, role: &str) -> anyhow::Result<Vec<String>> {
    let mut parts = Vec::new();
    for (catalog, owner, ns) in OWNED {
        parts.push(format!(
            "{} AND x.{owner} <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1)",
            user_objects(catalog, ns)
        ));
    }
    parts.push(
        "SELECT pg_catalog.format('SECURITY DEFINER function %s', p.oid::pg_catalog.regprocedure) \
         FROM pg_catalog.pg_proc p WHERE p.prosecdef AND p.oid >= 16384"
            .to_owned(),
    );
    for catalog in [
        "pg_proc",
        "pg_operator",
        "pg_cast",
        "pg_extension",
        "pg_publication",
        "pg_default_acl",
    ] {
        parts.push(user_objects(catalog, ""));
    }
    parts.push(format!(
        "{} AND x.rulename <> '_RETURN'",
        user_objects("pg_rewrite", "")
    ));
    for (catalog, acl, owner) in [
        ("pg_class", "relacl", "relowner"),
        ("pg_namespace", "nspacl", "nspowner"),
        ("pg_type", "typacl", "typowner"),
        ("pg_largeobject_metadata", "lomacl", "lomowner"),
    ] {
        // PUBLIC's USAGE on types is the default.
        parts.push(format!(
            "SELECT pg_catalog.format('%s on %s granted to %s', a.privilege_type, {}, \
                    CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::pg_catalog.regrole::text END) \
             FROM pg_catalog.{catalog} x, pg_catalog.aclexplode(x.{acl}) a \
             WHERE x.oid >= {FIRST_USER_OID} AND a.grantee <> x.{owner} \
               AND NOT (a.grantee = 0 AND a.privilege_type = 'USAGE' AND '{catalog}' = 'pg_type')",
            describe(catalog)
        ));
    }
    parts.push(
        "SELECT pg_catalog.format('%s on column %s of %s granted to %s', a.privilege_type, x.attname, x.attrelid::pg_catalog.regclass, \
                CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::pg_catalog.regrole::text END) \
         FROM pg_catalog.pg_attribute x, pg_catalog.aclexplode(x.attacl) a WHERE x.attrelid >= 16384"
            .to_owned(),
    );
    parts.extend(database_and_public());
    query_found(c, &parts, Some(role)).await
}

/// User-made rows of `catalog` (not in another session's temp schema),
/// described the way `\d` would name them. `x` is the catalog row.
fn user_objects(catalog: &str, ns: &str) -> String {
    let describe = describe(catalog);
    let temp = match (catalog, ns) {
        ("pg_namespace", _) => " AND x.nspname !~ '^pg_(toast_)?temp_'".to_owned(),
        (_, "") => String::new(),
        (_, ns) => format!(
            " AND NOT EXISTS (SELECT 1 FROM {})",
            NOT_TEMP.replace("x.ns", &format!("x.{ns}"))
        ),
    };
    // Large objects may be made with any oid (lo_create(42)): all are user-made.
    let first = if catalog == "pg_largeobject_metadata" {
        0
    } else {
        FIRST_USER_OID
    };
    format!("SELECT {describe} FROM pg_catalog.{catalog} x WHERE x.oid >= {first}{temp}")
}

/// How `\d` would name the row `x` of `catalog`.
fn describe(catalog: &str) -> String {
    // Large objects are addressed by pg_largeobject, their data catalog.
    let class = if catalog == "pg_largeobject_metadata" {
        "pg_largeobject"
    } else {
        catalog
    };
    format!("pg_catalog.pg_describe_object('pg_catalog.{class}'::pg_catalog.regclass, x.oid, 0)")
}

/// The current database's flags and grants, and its `public` schema: a
/// template (anyone with CREATEDB could copy it), a connection limit, any
/// grant to a role but its owner beyond PUBLIC's defaults, a `public`
/// owned by someone other than the database's owner (`pg_database_owner`,
/// or the bootstrap superuser before PostgreSQL 14), any grant on `public`
/// beyond PUBLIC's USAGE.
fn database_and_public() -> Vec<String> {
    let who = "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::pg_catalog.regrole::text END";
    vec![
        "SELECT 'it is a template (IS_TEMPLATE)' FROM pg_catalog.pg_database d \
         WHERE d.datname = pg_catalog.current_database() AND d.datistemplate"
            .to_owned(),
        "SELECT pg_catalog.format('a connection limit (%s)', d.datconnlimit) FROM pg_catalog.pg_database d \
         WHERE d.datname = pg_catalog.current_database() AND d.datconnlimit <> -1"
            .to_owned(),
        format!(
            "SELECT pg_catalog.format('%s on the database granted to %s', a.privilege_type, {who}) \
             FROM pg_catalog.pg_database d, pg_catalog.aclexplode(d.datacl) a \
             WHERE d.datname = pg_catalog.current_database() AND a.grantee <> d.datdba \
               AND NOT (a.grantee = 0 AND a.privilege_type IN ('CONNECT', 'TEMPORARY'))"
        ),
        "SELECT pg_catalog.format('schema public is owned by %s', n.nspowner::pg_catalog.regrole) \
         FROM pg_catalog.pg_namespace n WHERE n.nspname = 'public' AND n.nspowner <> 10 \
           AND n.nspowner IS DISTINCT FROM (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = 'pg_database_owner')"
            .to_owned(),
        format!(
            "SELECT pg_catalog.format('%s on schema public granted to %s', a.privilege_type, {who}) \
             FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a \
             WHERE n.nspname = 'public' AND a.grantee <> n.nspowner \
               AND NOT (a.grantee = 0 AND a.privilege_type = 'USAGE')"
        ),
    ]
}

/// The first few descriptions `parts` (our own constant SQL) find; `role`
/// is `$1` where a part compares owners.
async fn query_found(
    c: &mut PgConnection,
    parts: &[String],
    role: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let sql = format!(
        "SELECT what FROM ({}) found(what) WHERE what IS NOT NULL LIMIT 10",
        parts.join(" UNION ALL ")
    );
    let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
    if let Some(role) = role {
        q = q.bind(role.to_owned());
    }
    Ok(q.fetch_all(c).await?)
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

/// 32 hex characters from the OS CSPRNG: the `\restrict` key and the load
/// role's one-use password.
pub fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    openssl::rand::rand_bytes(&mut bytes).context("reading random bytes")?;
    Ok(cutter_core::encrypt::hex(&bytes))
}
