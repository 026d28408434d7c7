//! Recovery after a run went wrong, in the live database and never over
//! it: `restore --beside-live` loads a run's tables under a new schema
//! beside the live ones (`beside`), `diff` shows what the run changed
//! (`diff`), `revert` puts back exactly those rows, guarded, in one
//! transaction (`revert`), and `restore --drop-beside` removes the schema
//! again. Rows come only from the authenticated plaintext's COPY blocks
//! (`dump`); no SQL statement from the dump runs in the live database.
//!
//! `--live URL` must be the database the backup was taken from: its
//! `system_identifier` and name are compared with the config's
//! `database.url` (the inverse of the scratch restore's refusal).

pub mod beside;
pub mod diff;
pub mod dump;
pub mod revert;

use anyhow::{Context, bail};
use cutter_core::config::{Config, MAX_IDENT_BYTES, TableName};
use cutter_core::db::ConnTarget;
use cutter_core::manifest::Manifest;
use cutter_core::runid::RunId;
use sqlx::PgConnection;

use crate::restore::scratch::{block, connect, identity, run_formatted};

/// The comment that marks a schema `--beside-live` made, followed by the run.
pub const SCHEMA_MARKER: &str = "cutter-backup: the pre-write tables of run ";

/// Where the run's tables go beside live, and which.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BesideArgs {
    /// The live database, as a role that may create a schema there (e.g.
    /// postgres://root@/directus?host=/run/postgresql). It must be the
    /// database the backup was taken from (checked by server identity
    /// against database.url in the config).
    #[arg(long)]
    pub live: Option<String>,
    /// Only these tables (schema.table, repeatable); default: every table
    /// in the manifest.
    #[arg(long = "table")]
    pub tables: Vec<String>,
    /// The schema beside live (default cutter_restore_<run_id>).
    #[arg(long)]
    pub schema: Option<String>,
    /// A role that may read the new schema and tables. They stay owned by
    /// the --live URL's role: an owner could rewrite the pre-write rows a
    /// revert then writes back.
    #[arg(long)]
    pub owner: Option<String>,
}

/// Where `diff` and `revert` work: the live database, the tables, the
/// schema `--beside-live` loaded, the config.
#[derive(Debug, clap::Args)]
pub struct On {
    /// The live database (as for `restore --beside-live`).
    #[arg(long)]
    pub live: String,
    /// Only these tables (schema.table, repeatable).
    #[arg(long = "table")]
    pub tables: Vec<String>,
    /// The schema `restore --beside-live` loaded (default cutter_restore_<run_id>).
    #[arg(long)]
    pub schema: Option<String>,
    /// The daemon's config (which database is live).
    #[arg(long, default_value = cutter_core::config::DEFAULT_CONFIG_PATH)]
    pub config: std::path::PathBuf,
}

impl On {
    /// The `BesideArgs` these flags mean.
    pub fn beside(&self) -> BesideArgs {
        BesideArgs {
            live: Some(self.live.clone()),
            tables: self.tables.clone(),
            schema: self.schema.clone(),
            owner: None,
        }
    }
}

impl BesideArgs {
    /// The schema for `id`: `--schema`, else `cutter_restore_<run_id>`.
    pub fn schema(&self, id: &RunId) -> anyhow::Result<String> {
        let name = self
            .schema
            .clone()
            .unwrap_or_else(|| format!("cutter_restore_{id}"));
        if name.is_empty()
            || name.len() > MAX_IDENT_BYTES
            || name.chars().any(|c| c.is_control() || c == '\\')
        {
            bail!(
                "schema name {name:?} must be 1-{MAX_IDENT_BYTES} bytes without control characters or backslashes: pass --schema NAME"
            );
        }
        if name.starts_with("pg_") {
            bail!("schema name {name:?}: names starting with pg_ are PostgreSQL's");
        }
        Ok(name)
    }

    /// The tables chosen with `--table`, each in the manifest; default all.
    /// Every one must be in the config's `backup.tables`: a signed manifest
    /// naming another table (a catalog) is not a run of ours.
    pub fn chosen(&self, manifest: &Manifest, config: &Config) -> anyhow::Result<Vec<TableName>> {
        let all: Vec<TableName> = manifest.tables.iter().map(|t| t.table.clone()).collect();
        in_scope(&all, config)?;
        if self.tables.is_empty() {
            return Ok(all);
        }
        let mut out = Vec::new();
        for t in &self.tables {
            let name = TableName::parse(t).map_err(|e| anyhow::anyhow!("--table {e}"))?;
            if !all.contains(&name) {
                bail!(
                    "--table {name}: the run's manifest does not list it (it lists {})",
                    all.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            if !out.contains(&name) {
                out.push(name);
            }
        }
        Ok(out)
    }
}

/// Refuses any table outside the config's `backup.tables`.
pub fn in_scope(tables: &[TableName], config: &Config) -> anyhow::Result<()> {
    let scope = config.tables().map_err(anyhow::Error::msg)?;
    for t in tables {
        if !scope.contains(t) {
            bail!(
                "{t} is not in backup.tables of the config: recovery only touches the tables in scope; nothing was done"
            );
        }
    }
    Ok(())
}

/// The live database, recognised as the one the backup was taken from.
pub struct Live {
    /// `--live`.
    pub target: ConnTarget,
}

impl Live {
    /// Parses `--live` and checks that it is the config's database by
    /// server identity.
    pub fn connect(args: &BesideArgs, config: &Config) -> anyhow::Result<Self> {
        let Some(url) = &args.live else {
            bail!(
                "--live URL is needed: the live database, as a role that may create a schema there"
            );
        };
        let target = ConnTarget::parse(url, None).context("--live")?;
        let Some(configured) = crate::restore::live_target(config) else {
            bail!(
                "database.url or database.password_file in the config is unusable, so --live cannot be checked against it"
            );
        };
        let (live_id, live_db) = block(async {
            let mut c = connect(&target, &target.database, &target.user, None).await?;
            let id = identity(&mut c).await?;
            let db: String = sqlx::query_scalar("SELECT pg_catalog.current_database()::text")
                .fetch_one(&mut c)
                .await?;
            Ok::<_, anyhow::Error>((id, db))
        })
        .with_context(|| format!("connecting to --live {}", target.shown()))?;
        let (cfg_id, cfg_db) = block(async {
            let mut c = connect(&configured, &configured.database, &configured.user, None).await?;
            let id = identity(&mut c).await?;
            Ok::<_, anyhow::Error>((id, configured.database.clone()))
        })
        .with_context(|| {
            format!(
                "connecting to the config's database {} to check --live against it",
                configured.shown()
            )
        })?;
        if live_id != cfg_id || live_db != cfg_db {
            bail!(
                "--live {} is not the database the backups are taken from ({} on the server with system identifier {cfg_id}; --live is {live_db} on {live_id})",
                target.shown(),
                cfg_db
            );
        }
        Ok(Self { target })
    }

    /// A session on the live database (cutterctl's startup options).
    pub async fn session(&self) -> anyhow::Result<PgConnection> {
        connect(&self.target, &self.target.database, &self.target.user, None).await
    }
}

/// The oid of a plain or partitioned table, or `None`.
pub async fn table_oid(
    c: &mut PgConnection,
    table: &TableName,
) -> anyhow::Result<Option<sqlx::postgres::types::Oid>> {
    Ok(sqlx::query_scalar(
        "SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
    )
    .bind(&table.schema)
    .bind(&table.name)
    .fetch_optional(c)
    .await?)
}

/// The comment `--beside-live` puts on its schema.
pub fn marker(id: &RunId) -> String {
    format!("{SCHEMA_MARKER}{id} (cutterctl restore --beside-live)")
}

/// The schema's comment, or `None` when the schema does not exist.
pub async fn schema_comment(c: &mut PgConnection, schema: &str) -> anyhow::Result<Option<String>> {
    let row: Option<(Option<String>,)> = sqlx::query_as(
        "SELECT pg_catalog.obj_description(n.oid, 'pg_namespace') FROM pg_catalog.pg_namespace n WHERE n.nspname = $1",
    )
    .bind(schema)
    .fetch_optional(&mut *c)
    .await?;
    Ok(row.map(|(comment,)| comment.unwrap_or_default()))
}

/// `restore --drop-beside`: drops the schema `--beside-live` made for this
/// run and the tables in it; anything else in it (or a schema without our
/// marker) is refused, and nothing outside it is dropped.
pub fn drop_beside(args: &BesideArgs, config: &Config, id: &RunId) -> anyhow::Result<()> {
    let live = Live::connect(args, config)?;
    let schema = args.schema(id)?;
    block(async {
        let mut c = live.session().await?;
        match schema_comment(&mut c, &schema).await? {
            None => bail!("schema {schema:?} does not exist: nothing to drop"),
            Some(m) if m == marker(id) => {}
            Some(_) => bail!(
                "schema {schema:?} was not made by `cutterctl restore {id} --beside-live` (its comment is not cutterctl's marker for this run): refusing to drop it"
            ),
        }
        let mut tx = sqlx::Connection::begin(&mut c).await?;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 1",
        )
        .bind(&schema)
        .fetch_all(&mut *tx)
        .await?;
        for t in &tables {
            // RESTRICT: a view or key elsewhere that depends on it stops us.
            run_formatted(&mut tx, "DROP TABLE %I.%I RESTRICT", &[&schema, t])
                .await
                .with_context(|| format!("dropping {schema}.{t}"))?;
        }
        run_formatted(&mut tx, "DROP SCHEMA %I RESTRICT", &[&schema])
            .await
            .with_context(|| {
                format!(
                    "dropping schema {schema:?} (something other than the run's tables is in it)"
                )
            })?;
        tx.commit().await?;
        println!("dropped schema {schema} ({} tables)", tables.len());
        Ok(())
    })
}
