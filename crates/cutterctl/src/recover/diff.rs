//! `cutterctl diff RUN`: what the run changed, table by table: the
//! pre-write rows `--beside-live` loaded against the live rows, by key.
//!
//! The comparison runs in the database (a full outer join on the key, each
//! column compared by its text form, so json or point compare too), and the
//! rows stream out, so cutterctl's memory stays flat whatever the size.
//! A table without a primary key (or a unique index on NOT NULL columns)
//! is compared as a multiset of whole rows. Every name in the SQL built
//! here comes from the live catalog quoted by the server (`quote_ident`,
//! `quote_literal`); every value is quoted by the server too.
//!
//! Output (`--json`, one object per changed row, stable field names):
//! `{"table","kind":"inserted"|"deleted"|"updated","key":{…}|null,
//! "columns":[…],"old":{…}|null,"new":{…}|null}`, plus `"count"` and
//! `"row"` for tables without a key; `--keys-only` keeps `table`, `kind`,
//! `key` (and `row`). `--csv`: the same fields, JSON-encoded cells.

use std::io::{BufRead, BufReader, BufWriter, Seek, Write};

use anyhow::{Context, bail};
use cutter_core::config::{Config, TableName};
use cutter_core::runid::RunId;
use serde_json::Value;
use sqlx::{PgConnection, Row};
use tokio_stream::StreamExt;

use super::{Live, SCHEMA_MARKER, marker, schema_comment};
use crate::restore::scratch::block;

/// `cutterctl diff …`.
#[derive(Debug, clap::Args)]
pub struct Diff {
    /// The run.
    pub run_id: String,
    #[command(flatten)]
    pub on: super::On,
    /// One line per changed row as CSV (table,kind,key,columns,old,new).
    #[arg(long, conflicts_with = "keys_only")]
    pub csv: bool,
    /// Only which rows changed (table, kind, key): the input of `revert --keys`.
    #[arg(long)]
    pub keys_only: bool,
    /// Show this column's values as "***" (repeatable; `column` or
    /// `schema.table.column`).
    #[arg(long = "mask")]
    pub mask: Vec<String>,
    /// When the run is not beside live yet, load it first
    /// (`restore --beside-live`) with this secret key.
    #[arg(long)]
    pub secret_key: Option<std::path::PathBuf>,
    /// With --secret-key: the key's passphrase file (mode 0600).
    #[arg(long, requires = "secret_key")]
    pub passphrase_file: Option<std::path::PathBuf>,
}

/// One column of a live table, as the server quotes it.
#[derive(Debug, Clone)]
pub struct Col {
    /// The name.
    pub name: String,
    /// `quote_ident(name)`.
    pub ident: String,
    /// `quote_literal(name)`.
    pub lit: String,
    /// `quote_literal(format_type(…))`: its type, for casts.
    pub ty_lit: String,
    /// A generated column (never written).
    pub generated: bool,
}

/// How one table compares: the live table, its copy beside live, its
/// columns and its key.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The live table.
    pub live: TableName,
    /// `"schema"."table"`, live.
    pub live_q: String,
    /// `"schema"."table"`, beside live.
    pub beside_q: String,
    /// Every column, in order.
    pub cols: Vec<Col>,
    /// The key's columns; `None`: compare as a multiset.
    pub key: Option<Vec<Col>>,
}

/// The tables in the beside schema (their live names from the comment
/// `--beside-live` set on each), restricted to `--table`.
pub async fn plans(
    c: &mut PgConnection,
    schema: &str,
    id: &RunId,
    only: &[String],
    config: &Config,
    writes: bool,
) -> anyhow::Result<Vec<Plan>> {
    match schema_comment(c, schema).await? {
        None => bail!(
            "schema {schema:?} does not exist: load the run beside live first (`cutterctl restore {id} --beside-live --live URL …`)"
        ),
        Some(m) if m == marker(id) => {}
        Some(m) if m.starts_with(SCHEMA_MARKER) => {
            bail!("schema {schema:?} holds another run's tables ({m}): pass --schema for {id}'s")
        }
        Some(_) => bail!("schema {schema:?} was not made by `cutterctl restore --beside-live`"),
    }
    // The pre-write rows are believed only when nobody else could have
    // changed them: the schema and its tables ours, no write granted.
    let foreign: Vec<String> = sqlx::query_scalar(
        "SELECT pg_catalog.format('schema %I is owned by %s', n.nspname, n.nspowner::pg_catalog.regrole) \
         FROM pg_catalog.pg_namespace n WHERE n.nspname = $1 AND n.nspowner <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user) \
         UNION ALL \
         SELECT pg_catalog.format('%I is owned by %s', c.relname, c.relowner::pg_catalog.regrole) \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relowner <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user) \
         UNION ALL \
         SELECT pg_catalog.format('%s on %I granted to %s', a.privilege_type, c.relname, \
                CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::pg_catalog.regrole::text END) \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace, pg_catalog.aclexplode(c.relacl) a \
         WHERE n.nspname = $1 AND a.grantee <> c.relowner AND a.privilege_type <> 'SELECT' \
         UNION ALL \
         SELECT pg_catalog.format('%s on schema %I granted to %s', a.privilege_type, n.nspname, \
                CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::pg_catalog.regrole::text END) \
         FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a \
         WHERE n.nspname = $1 AND a.grantee <> n.nspowner AND a.privilege_type <> 'USAGE' LIMIT 10",
    )
    .bind(schema)
    .fetch_all(&mut *c)
    .await?;
    if !foreign.is_empty() {
        bail!(
            "the pre-write rows in schema {schema:?} could have been changed by others ({}): load them again into a new schema (--schema)",
            foreign.join("; ")
        );
    }
    let rows = sqlx::query(
        "SELECT c.oid, pg_catalog.quote_ident(c.relname::text), \
                pg_catalog.obj_description(c.oid, 'pg_class') \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY c.relname",
    )
    .bind(schema)
    .fetch_all(&mut *c)
    .await?;
    let schema_q: String = sqlx::query_scalar("SELECT pg_catalog.quote_ident($1)")
        .bind(schema)
        .fetch_one(&mut *c)
        .await?;
    let wanted = only
        .iter()
        .map(|t| TableName::parse(t).map_err(|e| anyhow::anyhow!("--table {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut out = Vec::new();
    for row in rows {
        let beside_oid: sqlx::postgres::types::Oid = row.get(0);
        let name_q: String = row.get(1);
        let comment: Option<String> = row.get(2);
        let Some(live) = comment
            .as_deref()
            .and_then(|c| c.strip_prefix(TABLE_MARKER))
            .and_then(|t| TableName::parse(t).ok())
        else {
            continue;
        };
        if !wanted.is_empty() && !wanted.contains(&live) {
            continue;
        }
        super::in_scope(std::slice::from_ref(&live), config)?;
        let p = plan(c, live, format!("{schema_q}.{name_q}"), beside_oid).await?;
        refuse_foreign_code(c, &p.live, writes).await?;
        out.push(p);
    }
    for w in &wanted {
        if !out.iter().any(|p| p.live == *w) {
            bail!("--table {w}: not among the tables beside live in {schema:?}");
        }
    }
    Ok(out)
}

/// Refuses a live table whose comparison or revert would run code a
/// non-superuser owns as cutterctl's (superuser) session: a cast from
/// its row type or any column type (through domains, arrays, composites
/// and ranges), a function in a domain's CHECK, and, the table's own
/// triggers, rules, constraints, indexes and generated columns. With
/// `writes`, also a foreign key into it that cascades (a revert would
/// change rows it does not name).
pub async fn refuse_foreign_code(
    c: &mut PgConnection,
    table: &TableName,
    writes: bool,
) -> anyhow::Result<()> {
    let found: Vec<String> = sqlx::query_scalar(
        "WITH RECURSIVE rel AS ( \
           SELECT c.oid, c.reltype FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
           WHERE n.nspname = $1 AND c.relname = $2), \
         types(t) AS ( \
           SELECT reltype FROM rel \
           UNION SELECT a.atttypid FROM pg_catalog.pg_attribute a, rel WHERE a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped \
           UNION SELECT x.u FROM types JOIN LATERAL ( \
               SELECT y.typbasetype AS u FROM pg_catalog.pg_type y WHERE y.oid = types.t AND y.typbasetype <> 0 \
               UNION ALL SELECT y.typelem FROM pg_catalog.pg_type y WHERE y.oid = types.t AND y.typelem <> 0 \
               UNION ALL SELECT a.atttypid FROM pg_catalog.pg_type y JOIN pg_catalog.pg_attribute a ON a.attrelid = y.typrelid \
                 WHERE y.oid = types.t AND y.typrelid <> 0 AND a.attnum > 0 AND NOT a.attisdropped \
               UNION ALL SELECT r.rngsubtype FROM pg_catalog.pg_range r WHERE r.rngtypid = types.t) x ON true), \
         objs(classid, objid) AS ( \
           SELECT 'pg_catalog.pg_trigger'::pg_catalog.regclass, g.oid FROM pg_catalog.pg_trigger g, rel WHERE g.tgrelid = rel.oid AND NOT g.tgisinternal \
           UNION ALL SELECT 'pg_catalog.pg_rewrite'::pg_catalog.regclass, w.oid FROM pg_catalog.pg_rewrite w, rel WHERE w.ev_class = rel.oid \
           UNION ALL SELECT 'pg_catalog.pg_constraint'::pg_catalog.regclass, k.oid FROM pg_catalog.pg_constraint k, rel WHERE k.conrelid = rel.oid \
           UNION ALL SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, i.indexrelid FROM pg_catalog.pg_index i, rel WHERE i.indrelid = rel.oid \
           UNION ALL SELECT 'pg_catalog.pg_attrdef'::pg_catalog.regclass, d.oid FROM pg_catalog.pg_attrdef d, rel WHERE d.adrelid = rel.oid \
           UNION ALL SELECT 'pg_catalog.pg_constraint'::pg_catalog.regclass, k.oid FROM pg_catalog.pg_constraint k WHERE k.contypid IN (SELECT t FROM types)) \
         SELECT pg_catalog.format('%s uses %s, owned by %s', pg_catalog.pg_describe_object(d.classid, d.objid, 0), p.oid::pg_catalog.regprocedure, r.rolname) \
         FROM objs o JOIN pg_catalog.pg_depend d ON d.classid = o.classid AND d.objid = o.objid \
           AND d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass \
         JOIN pg_catalog.pg_proc p ON p.oid = d.refobjid JOIN pg_catalog.pg_roles r ON r.oid = p.proowner WHERE NOT r.rolsuper \
         UNION ALL \
         SELECT pg_catalog.format('%s uses operator %s (%s), owned by %s', pg_catalog.pg_describe_object(d.classid, d.objid, 0), \
                op.oid::pg_catalog.regoperator, p.oid::pg_catalog.regprocedure, r.rolname) \
         FROM objs o JOIN pg_catalog.pg_depend d ON d.classid = o.classid AND d.objid = o.objid \
           AND d.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass \
         JOIN pg_catalog.pg_operator op ON op.oid = d.refobjid JOIN pg_catalog.pg_proc p ON p.oid = op.oprcode \
         JOIN pg_catalog.pg_roles r ON r.oid = p.proowner WHERE NOT r.rolsuper \
         UNION ALL \
         SELECT pg_catalog.format('cast %s uses %s, owned by %s', pg_catalog.pg_describe_object('pg_catalog.pg_cast'::pg_catalog.regclass, k.oid, 0), \
                p.oid::pg_catalog.regprocedure, r.rolname) \
         FROM pg_catalog.pg_cast k JOIN pg_catalog.pg_proc p ON p.oid = k.castfunc JOIN pg_catalog.pg_roles r ON r.oid = p.proowner \
         WHERE k.castsource IN (SELECT t FROM types) AND NOT r.rolsuper \
         UNION ALL \
         SELECT pg_catalog.format('foreign key %I of %s into it cascades', k.conname, k.conrelid::pg_catalog.regclass) \
         FROM pg_catalog.pg_constraint k, rel WHERE $3 AND k.contype = 'f' AND k.confrelid = rel.oid \
           AND (k.confdeltype NOT IN ('a', 'r') OR k.confupdtype NOT IN ('a', 'r')) \
         LIMIT 10",
    )
    .bind(&table.schema)
    .bind(&table.name)
    .bind(writes)
    .fetch_all(c)
    .await?;
    if !found.is_empty() {
        bail!(
            "{table}: refusing, because {} (code a non-superuser owns would run in cutterctl's session, or rows it does not name would change); compare or revert it by hand",
            found.join("; ")
        );
    }
    Ok(())
}

/// The comment `--beside-live` sets on each table: where it came from.
pub const TABLE_MARKER: &str = "cutter-backup: pre-write rows of ";

async fn plan(
    c: &mut PgConnection,
    live: TableName,
    beside_q: String,
    beside_oid: sqlx::postgres::types::Oid,
) -> anyhow::Result<Plan> {
    let Some(oid) = super::table_oid(c, &live).await? else {
        bail!("{live}: no such table in the live database any more");
    };
    let cols = columns(c, oid).await?;
    let beside_cols = columns(c, beside_oid).await?;
    let names = |v: &[Col]| v.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    if names(&cols) != names(&beside_cols) {
        bail!(
            "{live}: its columns are not the ones loaded beside live ([{}] live, [{}] beside): the table changed since",
            names(&cols).join(", "),
            names(&beside_cols).join(", ")
        );
    }
    let key_names: Option<Vec<String>> = sqlx::query_scalar(
        "SELECT pg_catalog.array_agg(a.attname::text ORDER BY k.o) \
         FROM pg_catalog.pg_index i \
         CROSS JOIN LATERAL pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, o) \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
         WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL \
         GROUP BY i.indexrelid, i.indisprimary \
         HAVING pg_catalog.bool_and(a.attnotnull) \
         ORDER BY i.indisprimary DESC, i.indexrelid LIMIT 1",
    )
    .bind(oid)
    .fetch_optional(&mut *c)
    .await?;
    let key = key_names.map(|names| {
        names
            .iter()
            .filter_map(|n| cols.iter().find(|c| c.name == *n).cloned())
            .collect::<Vec<_>>()
    });
    let live_q: String = sqlx::query_scalar(
        "SELECT pg_catalog.quote_ident($1) || '.' || pg_catalog.quote_ident($2)",
    )
    .bind(&live.schema)
    .bind(&live.name)
    .fetch_one(&mut *c)
    .await?;
    Ok(Plan {
        live,
        live_q,
        beside_q,
        cols,
        key,
    })
}

async fn columns(
    c: &mut PgConnection,
    oid: sqlx::postgres::types::Oid,
) -> anyhow::Result<Vec<Col>> {
    let rows = sqlx::query(
        "SELECT attname::text, pg_catalog.quote_ident(attname::text), pg_catalog.quote_literal(attname::text), \
                pg_catalog.quote_literal(pg_catalog.format_type(atttypid, atttypmod)), attgenerated <> '' \
         FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
    )
    .bind(oid)
    .fetch_all(c)
    .await?;
    Ok(rows
        .iter()
        .map(|r| Col {
            name: r.get(0),
            ident: r.get(1),
            lit: r.get(2),
            ty_lit: r.get(3),
            generated: r.get(4),
        })
        .collect())
}

/// One changed row as the database reports it.
#[derive(Debug, Clone)]
pub struct Change {
    /// "inserted", "deleted" or "updated" (by the run: since the backup).
    pub kind: String,
    /// The key (`None` for a table without one).
    pub key: Option<Value>,
    /// Columns whose value changed (updated rows).
    pub columns: Vec<String>,
    /// The pre-write row.
    pub old: Option<Value>,
    /// The live row.
    pub new: Option<Value>,
    /// How many identical rows (tables without a key).
    pub count: i64,
    /// The live count of this row (tables without a key).
    pub live_count: i64,
    /// The pre-write row's text form, server-quoted.
    pub old_lit: Option<String>,
    /// The live row's text form, server-quoted.
    pub new_lit: Option<String>,
    /// `t."k" = '…'::type AND …`, server-quoted (keyed tables).
    pub key_cond: Option<String>,
}

/// The diff query of `p`; `kinds` limits it, `keys` (JSON texts) too.
pub fn sql(p: &Plan, kinds: &[&str]) -> String {
    let kinds = kinds
        .iter()
        .map(|k| format!("'{k}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let inner = match &p.key {
        Some(key) => keyed_sql(p, key),
        None => multiset_sql(p),
    };
    format!(
        "SELECT * FROM ({inner}) d WHERE d.kind IN ({kinds}) \
         AND ($1::text[] IS NULL OR COALESCE(d.key, d.old, d.new) = ANY ($1::text[]::jsonb[])) ORDER BY d.key_text, d.old_lit, d.new_lit"
    )
}

fn keyed_sql(p: &Plan, key: &[Col]) -> String {
    let on = key
        .iter()
        .map(|k| format!("(o.r).{i} = (l.r).{i}", i = k.ident))
        .collect::<Vec<_>>()
        .join(" AND ");
    let key_obj = key
        .iter()
        .map(|k| format!("{}, COALESCE((l.r).{i}, (o.r).{i})", k.lit, i = k.ident))
        .collect::<Vec<_>>()
        .join(", ");
    let key_cond = key
        .iter()
        .map(|k| {
            format!(
                "pg_catalog.format('t.%s = %L::%s', pg_catalog.quote_ident({}), COALESCE((l.r).{i}, (o.r).{i})::text, {})",
                k.lit,
                k.ty_lit,
                i = k.ident
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let changed = p
        .cols
        .iter()
        .map(|c| {
            format!(
                "CASE WHEN (o.r).{i}::text IS DISTINCT FROM (l.r).{i}::text THEN {} END",
                c.lit,
                i = c.ident
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT CASE WHEN o.p IS NULL THEN 'inserted' WHEN l.p IS NULL THEN 'deleted' ELSE 'updated' END AS kind, \
                pg_catalog.jsonb_build_object({key_obj}) AS key, \
                pg_catalog.jsonb_build_object({key_obj})::text AS key_text, \
                CASE WHEN o.p AND l.p THEN pg_catalog.array_remove(ARRAY[{changed}]::text[], NULL) ELSE '{{}}'::text[] END AS columns, \
                CASE WHEN o.p THEN pg_catalog.to_jsonb(o.r) END AS old, \
                CASE WHEN l.p THEN pg_catalog.to_jsonb(l.r) END AS new, \
                1::int8 AS count, 1::int8 AS live_count, \
                pg_catalog.quote_literal(o.r::text) AS old_lit, pg_catalog.quote_literal(l.r::text) AS new_lit, \
                pg_catalog.concat_ws(' AND ', {key_cond}) AS key_cond \
         FROM (SELECT true AS p, x AS r FROM {b} x) o \
         FULL JOIN (SELECT true AS p, x AS r FROM {l} x) l ON {on} \
         WHERE o.p IS NULL OR l.p IS NULL OR o.r::text IS DISTINCT FROM l.r::text",
        b = p.beside_q,
        l = p.live_q,
    )
}

fn multiset_sql(p: &Plan) -> String {
    format!(
        "SELECT CASE WHEN COALESCE(o.n, 0) < COALESCE(l.n, 0) THEN 'inserted' ELSE 'deleted' END AS kind, \
                NULL::jsonb AS key, NULL::text AS key_text, '{{}}'::text[] AS columns, \
                CASE WHEN COALESCE(o.n, 0) > COALESCE(l.n, 0) THEN COALESCE(o.j, l.j) END AS old, \
                CASE WHEN COALESCE(o.n, 0) < COALESCE(l.n, 0) THEN COALESCE(l.j, o.j) END AS new, \
                pg_catalog.abs(COALESCE(l.n, 0) - COALESCE(o.n, 0)) AS count, COALESCE(l.n, 0) AS live_count, \
                pg_catalog.quote_literal(COALESCE(o.t, l.t)) AS old_lit, pg_catalog.quote_literal(COALESCE(l.t, o.t)) AS new_lit, \
                NULL::text AS key_cond \
         FROM (SELECT x::text AS t, pg_catalog.min(pg_catalog.to_jsonb(x)::text)::jsonb AS j, pg_catalog.count(*) AS n FROM {b} x GROUP BY 1) o \
         FULL JOIN (SELECT x::text AS t, pg_catalog.min(pg_catalog.to_jsonb(x)::text)::jsonb AS j, pg_catalog.count(*) AS n FROM {l} x GROUP BY 1) l \
           ON o.t = l.t \
         WHERE COALESCE(o.n, 0) <> COALESCE(l.n, 0)",
        b = p.beside_q,
        l = p.live_q,
    )
}

/// Streams the changes of `p` (of `kinds`, and of `keys` when given) to `each`.
pub async fn changes(
    c: &mut PgConnection,
    p: &Plan,
    kinds: &[&str],
    keys: Option<&[String]>,
    mut each: impl FnMut(Change) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let text = sql(p, kinds);
    let keys: Option<Vec<String>> = keys.map(<[String]>::to_vec);
    let q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT kind, key::text, columns, old::text, new::text, count, live_count, old_lit, new_lit, key_cond FROM ({text}) s"
    )))
    .bind(keys);
    let mut rows = q.fetch(c);
    let mut n = 0;
    while let Some(row) = rows.next().await {
        let row = row.with_context(|| format!("comparing {}", p.live))?;
        let json = |i: usize| -> anyhow::Result<Option<Value>> {
            row.get::<Option<String>, _>(i)
                .map(|t| serde_json::from_str(&t))
                .transpose()
                .map_err(Into::into)
        };
        each(Change {
            kind: row.get(0),
            key: json(1)?,
            columns: row.get(2),
            old: json(3)?,
            new: json(4)?,
            count: row.get(5),
            live_count: row.get(6),
            old_lit: row.get(7),
            new_lit: row.get(8),
            key_cond: row.get(9),
        })?;
        n += 1;
    }
    Ok(n)
}

/// Runs `cutterctl diff` (exit 0 whether or not rows changed: the output
/// says which; an error is exit 1).
pub fn run(d: &Diff, json: bool) -> anyhow::Result<bool> {
    let id = RunId::parse(&d.run_id)?;
    let config = Config::load(&d.on.config)?;
    let args = d.on.beside();
    let live = Live::connect(&args, &config)?;
    let schema = args.schema(&id)?;
    let mask = Mask::new(&d.mask);
    if let Some(key) = &d.secret_key {
        let missing = block(async {
            let mut c = live.session().await?;
            Ok::<_, anyhow::Error>(schema_comment(&mut c, &schema).await?.is_none())
        })?;
        if missing {
            eprintln!("the run is not beside live yet: loading it first");
            crate::restore::run(&crate::restore::Restore {
                beside_live: true,
                beside: crate::recover::BesideArgs {
                    owner: None,
                    ..args.clone()
                },
                ..crate::restore::Restore::of(
                    &d.run_id,
                    key,
                    d.passphrase_file.as_deref(),
                    &d.on.config,
                )
            })?;
        }
    }
    block(async {
        let mut c = live.session().await?;
        let plans = plans(&mut c, &schema, &id, &d.on.tables, &config, false).await?;
        let all = ["inserted", "deleted", "updated"];
        if json || d.csv {
            if d.csv {
                println!("table,kind,key,columns,old,new");
            }
            for p in &plans {
                changes(&mut c, p, &all, None, |ch| {
                    let ch = mask.apply(&p.live, ch);
                    if json {
                        println!("{}", as_json(&p.live, &ch, d.keys_only));
                    } else {
                        println!("{}", as_csv(&p.live, &ch));
                    }
                    Ok(())
                })
                .await?;
            }
            return Ok(true);
        }
        // Text: one pass over each table, its lines spooled to an unnamed
        // file while they are counted, so the stat can come first.
        let mut spool =
            BufWriter::new(tempfile::tempfile().context("creating an unnamed temp file")?);
        let mut tallies = Vec::with_capacity(plans.len());
        for p in &plans {
            let mut t = Tally::default();
            changes(&mut c, p, &all, None, |ch| {
                t.add(&ch);
                let ch = mask.apply(&p.live, ch);
                writeln!(spool, "{}", as_text(&p.live, &ch, d.keys_only))?;
                Ok(())
            })
            .await?;
            tallies.push(t);
        }
        let mut lines = BufReader::new(spool.into_inner().map_err(|e| e.into_error())?);
        lines.rewind()?;
        print_stat(&plans, &tallies);
        let mut line = String::new();
        for (p, t) in plans.iter().zip(&tallies) {
            if t.rows == 0 {
                continue;
            }
            if !d.keys_only {
                print_heading(p);
            }
            for _ in 0..t.rows {
                line.clear();
                lines.read_line(&mut line)?;
                print!("{line}");
            }
        }
        if tallies.iter().all(|t| t.rows == 0) {
            println!("\nno row differs from the backup");
        }
        Ok(true)
    })
}

/// Changed rows of one table by kind (a row without a key counts as many
/// times as it was inserted or deleted); `rows` is the output lines.
#[derive(Debug, Default)]
struct Tally {
    inserted: i64,
    deleted: i64,
    updated: i64,
    rows: u64,
}

impl Tally {
    fn add(&mut self, ch: &Change) {
        match ch.kind.as_str() {
            "inserted" => self.inserted += ch.count,
            "deleted" => self.deleted += ch.count,
            _ => self.updated += ch.count,
        }
        self.rows += 1;
    }

    fn total(&self) -> i64 {
        self.inserted + self.deleted + self.updated
    }
}

/// The `git diff --stat`-like head of the text output: the tables that
/// changed, then a total over all.
fn print_stat(plans: &[Plan], tallies: &[Tally]) {
    for (p, t) in plans.iter().zip(tallies).filter(|(_, t)| t.rows > 0) {
        println!(
            " {:<48} | {:>7} (+{} -{} ~{}){}",
            crate::output::clean(&p.live.to_string()),
            t.total(),
            t.inserted,
            t.deleted,
            t.updated,
            if p.key.is_none() {
                "  no key: rows compared as multisets"
            } else {
                ""
            }
        );
    }
    let sum = |f: fn(&Tally) -> i64| tallies.iter().map(f).sum::<i64>();
    println!(
        " {} of {} tables changed: {} inserted, {} deleted, {} updated since the backup",
        tallies.iter().filter(|t| t.rows > 0).count(),
        plans.len(),
        sum(|t| t.inserted),
        sum(|t| t.deleted),
        sum(|t| t.updated)
    );
}

fn print_heading(p: &Plan) {
    let key = p.key.as_ref().map_or_else(
        || "no key: whole rows compared as multisets".to_owned(),
        |k| {
            format!(
                "key ({})",
                k.iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
    );
    println!(
        "\n--- {} ({key})",
        crate::output::clean(&p.live.to_string())
    );
}

fn as_text(table: &TableName, ch: &Change, keys_only: bool) -> String {
    let key = ch
        .key
        .as_ref()
        .map_or_else(|| format!("{}×", ch.count), ToString::to_string);
    let line = match ch.kind.as_str() {
        "inserted" if keys_only => format!("+ {key}"),
        "deleted" if keys_only => format!("- {key}"),
        "updated" if keys_only => format!("~ {key}"),
        "inserted" => format!("+ {key} {}", show(ch.new.as_ref())),
        "deleted" => format!("- {key} {}", show(ch.old.as_ref())),
        _ => {
            let cols = ch
                .columns
                .iter()
                .map(|c| {
                    let get = |v: Option<&Value>| show(v.and_then(|v| v.get(c)));
                    format!("{c}: {} -> {}", get(ch.old.as_ref()), get(ch.new.as_ref()))
                })
                .collect::<Vec<_>>()
                .join("; ");
            format!("~ {key} {cols}")
        }
    };
    let _ = table;
    crate::output::clean(&line)
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "null".to_owned(), ToString::to_string)
}

/// The JSON object of one change (see the module doc).
pub fn as_json(table: &TableName, ch: &Change, keys_only: bool) -> Value {
    let mut o = serde_json::Map::new();
    o.insert("table".into(), table.to_string().into());
    o.insert("kind".into(), ch.kind.clone().into());
    o.insert("key".into(), ch.key.clone().unwrap_or(Value::Null));
    if ch.key.is_none() {
        o.insert("count".into(), ch.count.into());
        o.insert(
            "row".into(),
            ch.old
                .clone()
                .or_else(|| ch.new.clone())
                .unwrap_or(Value::Null),
        );
    }
    if !keys_only {
        let pick = |v: &Option<Value>| -> Value {
            match (ch.kind.as_str(), v) {
                ("updated", Some(Value::Object(m))) => Value::Object(
                    m.iter()
                        .filter(|(k, _)| ch.columns.contains(k))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ),
                (_, v) => v.clone().unwrap_or(Value::Null),
            }
        };
        o.insert("columns".into(), ch.columns.clone().into());
        o.insert("old".into(), pick(&ch.old));
        o.insert("new".into(), pick(&ch.new));
    }
    Value::Object(o)
}

fn as_csv(table: &TableName, ch: &Change) -> String {
    let j = as_json(table, ch, false);
    let cell = |v: &Value| {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            v => v.to_string(),
        };
        format!("\"{}\"", s.replace('"', "\"\""))
    };
    ["table", "kind", "key", "columns", "old", "new"]
        .iter()
        .map(|f| cell(j.get(*f).unwrap_or(&Value::Null)))
        .collect::<Vec<_>>()
        .join(",")
}

/// `--mask`: columns whose values are shown as "***".
struct Mask(Vec<String>);

impl Mask {
    fn new(cols: &[String]) -> Self {
        Self(cols.to_vec())
    }

    fn masks(&self, table: &TableName, col: &str) -> bool {
        self.0
            .iter()
            .any(|m| m == col || *m == format!("{table}.{col}"))
    }

    fn apply(&self, table: &TableName, mut ch: Change) -> Change {
        for v in [&mut ch.old, &mut ch.new, &mut ch.key]
            .into_iter()
            .flatten()
        {
            if let Value::Object(m) = v {
                for (k, val) in m.iter_mut() {
                    if self.masks(table, k) {
                        *val = Value::String("***".into());
                    }
                }
            }
        }
        ch
    }
}
