//! `cutterctl revert RUN`: puts back the pre-write state of exactly the
//! rows the run changed (from the diff): DELETE what it inserted, INSERT
//! what it deleted, UPDATE changed columns back; in foreign-key order, in
//! one transaction, as SQL for the operator to read (`--sql FILE`, 0600)
//! or to run (`--apply`).
//!
//! Guarded: each statement applies only where the row is still what the
//! diff saw (the whole live row's text form, not just its key) and must
//! touch exactly the rows it names; anything else is a conflict, and a
//! conflict rolls back everything. Statements are written from pieces the
//! server quoted (identifiers from the live catalog, values through
//! `quote_literal`); the SQL file starts with `\restrict` and a key of its
//! own and sets `standard_conforming_strings = on`, so no value can become
//! a psql meta-command. Triggers on the live tables fire as on any write;
//! sequences are not reset. Unless `--no-backup`, `--apply` first takes a
//! fresh pre-write backup through the daemon, so a revert can be reverted.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cutter_core::config::{Config, TableName};
use cutter_core::runid::RunId;
use serde_json::Value;
use sqlx::{Connection, PgConnection};

use super::Live;
use super::diff::{Change, Plan, changes, plans};
use crate::restore::scratch::{block, random_token};

/// `cutterctl revert …`.
#[derive(Debug, clap::Args)]
pub struct Revert {
    /// The run whose changes to undo.
    pub run_id: String,
    #[command(flatten)]
    pub on: super::On,
    /// Only these rows: `cutterctl diff --json --keys-only` output, edited.
    #[arg(long)]
    pub keys: Option<PathBuf>,
    /// Write the revert as SQL to this new file (mode 0600) to review.
    #[arg(long, required_unless_present = "apply", conflicts_with = "apply")]
    pub sql: Option<PathBuf>,
    /// Run it now, in one transaction (after a fresh backup).
    #[arg(long)]
    pub apply: bool,
    /// With --apply: no pre-revert backup through the daemon.
    #[arg(long, requires = "apply")]
    pub no_backup: bool,
}

/// One guarded statement: SQL that ends in `RETURNING 1`, how many rows it
/// must touch, and what it is about (a server-quoted literal).
#[derive(serde::Serialize, serde::Deserialize)]
struct Step {
    sql: String,
    expect: i64,
    what: String,
}

/// Runs `cutterctl revert`; `Ok(false)` on a conflict (nothing changed).
pub fn run(r: &Revert, socket: &Path) -> anyhow::Result<bool> {
    let id = RunId::parse(&r.run_id)?;
    let config = Config::load(&r.on.config)?;
    let args = r.on.beside();
    let live = Live::connect(&args, &config)?;
    let schema = args.schema(&id)?;
    let keys = r.keys.as_deref().map(read_keys).transpose()?;
    let mut spool = tempfile::tempfile().context("creating an unnamed temp file")?;
    let (steps, tables) = block(async {
        let mut c = live.session().await?;
        let mut plans = plans(&mut c, &schema, &id, &r.on.tables, &config, true).await?;
        if let Some(k) = &keys {
            plans.retain(|p| k.contains_key(&p.live));
        }
        let order = fk_order(&mut c, &plans).await?;
        let mut w = BufWriter::new(&mut spool);
        let mut steps = 0u64;
        let mut touched = Vec::new();
        // Children's rows go first, parents' come back first.
        let children_first: Vec<&Plan> = order.iter().rev().copied().collect();
        for (kind, seq) in [
            ("inserted", &children_first),
            ("deleted", &order),
            ("updated", &order),
        ] {
            for p in seq {
                let wanted = keys
                    .as_ref()
                    .and_then(|k| k.get(&p.live))
                    .map(Vec::as_slice);
                let n = changes(&mut c, p, &[kind], wanted, |ch| {
                    let step = statement(p, &ch)?;
                    serde_json::to_writer(&mut w, &step)?;
                    w.write_all(b"\n")?;
                    Ok(())
                })
                .await?;
                steps += n;
                if n > 0 && !touched.contains(&p.live) {
                    touched.push(p.live.clone());
                }
            }
        }
        w.flush()?;
        Ok::<_, anyhow::Error>((steps, touched))
    })?;
    spool.rewind()?;
    if let Some(path) = &r.sql {
        write_sql(path, &id, spool, steps)?;
        println!(
            "wrote {steps} guarded statements for {} tables to {} (mode 0600): review it, then run it with `psql -X -v ON_ERROR_STOP=1 -f {}` or `cutterctl revert {id} --apply`",
            tables.len(),
            path.display(),
            path.display()
        );
        return Ok(true);
    }
    if steps == 0 {
        println!("REVERT: nothing to do — no row differs from the backup");
        return Ok(true);
    }
    if !r.no_backup {
        backup_first(socket, &id)?;
    }
    apply(&live, spool, steps, tables.len())
}

/// The `--keys` file: JSON lines `{"table": …, "key": …}` (or `"row"` for
/// tables without a key), grouped by table as JSON texts.
fn read_keys(path: &Path) -> anyhow::Result<BTreeMap<TableName, Vec<String>>> {
    let f = File::open(path).with_context(|| format!("reading --keys {}", path.display()))?;
    let mut out: BTreeMap<TableName, Vec<String>> = BTreeMap::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: &str| anyhow::anyhow!("--keys {} line {}: {why}", path.display(), i + 1);
        let v: Value = serde_json::from_str(&line).map_err(|e| bad(&e.to_string()))?;
        let table = v
            .get("table")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no \"table\""))?;
        let table = TableName::parse(table).map_err(|e| bad(&e))?;
        let key = match v.get("key") {
            Some(Value::Null) | None => v.get("row").ok_or_else(|| bad("no \"key\" or \"row\""))?,
            Some(k) => k,
        };
        out.entry(table).or_default().push(key.to_string());
    }
    if out.is_empty() {
        bail!("--keys {}: no rows named", path.display());
    }
    Ok(out)
}

/// The plans ordered parents first by the live foreign keys among them.
async fn fk_order<'a>(c: &mut PgConnection, plans: &'a [Plan]) -> anyhow::Result<Vec<&'a Plan>> {
    let edges: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT cn.nspname::text, c.relname::text, pn.nspname::text, p.relname::text \
         FROM pg_catalog.pg_constraint k \
         JOIN pg_catalog.pg_class c ON c.oid = k.conrelid JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace \
         JOIN pg_catalog.pg_class p ON p.oid = k.confrelid JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace \
         WHERE k.contype = 'f' AND k.conrelid <> k.confrelid",
    )
    .fetch_all(c)
    .await?;
    let name = |s: &str, t: &str| TableName {
        schema: s.to_owned(),
        name: t.to_owned(),
    };
    let parents_of = |t: &TableName| -> Vec<TableName> {
        edges
            .iter()
            .filter(|(cs, ct, _, _)| name(cs, ct) == *t)
            .map(|(_, _, ps, pt)| name(ps, pt))
            .collect()
    };
    let mut out: Vec<&Plan> = Vec::new();
    let mut left: Vec<&Plan> = plans.iter().collect();
    while !left.is_empty() {
        let ready = left.iter().position(|p| {
            parents_of(&p.live).iter().all(|parent| {
                out.iter().any(|o| o.live == *parent) || !left.iter().any(|l| l.live == *parent)
            })
        });
        // A cycle: take the next one; the transaction still holds or fails whole.
        let i = ready.unwrap_or(0);
        out.push(left.remove(i));
    }
    Ok(out)
}

/// The guarded statement that undoes `ch`.
fn statement(p: &Plan, ch: &Change) -> anyhow::Result<Step> {
    let t = &p.live_q;
    let writable: Vec<&str> = p
        .cols
        .iter()
        .filter(|c| !c.generated)
        .map(|c| c.ident.as_str())
        .collect();
    let cols = writable.join(", ");
    let from_old = |lit: &str| format!("FROM (SELECT ({lit}::{t}).*) r",);
    let r_cols = writable
        .iter()
        .map(|c| format!("r.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let need = |v: &Option<String>, what: &str| {
        v.clone()
            .ok_or_else(|| anyhow::anyhow!("{}: the diff gave no {what}", p.live))
    };
    let what = describe(&p.live, ch);
    let (sql, expect) = match (&ch.key_cond, ch.kind.as_str()) {
        (Some(key), "inserted") => (
            format!(
                "DELETE FROM {t} AS t WHERE {key} AND t::text = {} RETURNING 1",
                need(&ch.new_lit, "live row")?
            ),
            1,
        ),
        (Some(key), "deleted") => (
            format!(
                "INSERT INTO {t} ({cols}) OVERRIDING SYSTEM VALUE SELECT {r_cols} {} WHERE NOT EXISTS (SELECT 1 FROM {t} AS t WHERE {key}) RETURNING 1",
                from_old(&need(&ch.old_lit, "pre-write row")?)
            ),
            1,
        ),
        (Some(key), _) => {
            let set = p
                .cols
                .iter()
                .filter(|c| !c.generated && ch.columns.contains(&c.name))
                .map(|c| format!("{i} = r.{i}", i = c.ident))
                .collect::<Vec<_>>()
                .join(", ");
            if set.is_empty() {
                bail!("{what}: only generated columns differ; nothing to write back");
            }
            (
                format!(
                    "UPDATE {t} AS t SET {set} {} WHERE {key} AND t::text = {} RETURNING 1",
                    from_old(&need(&ch.old_lit, "pre-write row")?),
                    need(&ch.new_lit, "live row")?
                ),
                1,
            )
        }
        (None, "inserted") => {
            let lit = need(&ch.new_lit, "live row")?;
            (
                format!(
                    "DELETE FROM {t} AS t WHERE t.ctid = ANY (ARRAY(SELECT u.ctid FROM {t} AS u WHERE u::text = {lit} LIMIT {n})) \
                     AND (SELECT pg_catalog.count(*) FROM {t} AS v WHERE v::text = {lit}) = {live} RETURNING 1",
                    n = ch.count,
                    live = ch.live_count
                ),
                ch.count,
            )
        }
        (None, _) => {
            let lit = need(&ch.old_lit, "pre-write row")?;
            (
                format!(
                    "INSERT INTO {t} ({cols}) OVERRIDING SYSTEM VALUE SELECT {r_cols} {}, pg_catalog.generate_series(1, {n}) \
                     WHERE (SELECT pg_catalog.count(*) FROM {t} AS v WHERE v::text = {lit}) = {live} RETURNING 1",
                    from_old(&lit),
                    n = ch.count,
                    live = ch.live_count
                ),
                ch.count,
            )
        }
    };
    Ok(Step {
        sql,
        expect,
        what: quote_literal(&what),
    })
}

/// `table kind key` for messages and conflicts.
fn describe(table: &TableName, ch: &Change) -> String {
    let key = ch
        .key
        .clone()
        .or_else(|| ch.old.clone())
        .or_else(|| ch.new.clone())
        .unwrap_or(Value::Null);
    format!("{table} {} {key}", ch.kind)
}

/// A literal of text the server produced (JSON of catalog names and
/// values, never NUL): quotes doubled, read with
/// standard_conforming_strings on (set on every session and in the file).
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn write_sql(path: &Path, id: &RunId, spool: File, steps: u64) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    let key = random_token()?;
    let mut w = BufWriter::new(f);
    writeln!(w, "\\restrict {key}")?;
    writeln!(
        w,
        "-- cutterctl revert {id}: {steps} guarded statements, one transaction.\n\
         -- A row changed since the diff is a conflict: the transaction fails and nothing changes.\n\
         -- Triggers on these tables fire; sequences are not reset.\n\
         SET standard_conforming_strings = on;\n\
         SET client_encoding = 'UTF8';\n\
         SET search_path = pg_catalog;\n\
         SET datestyle = 'ISO, YMD';\n\
         SET intervalstyle = 'postgres';\n\
         SET timezone = 'UTC';\n\
         SET extra_float_digits = 3;\n\
         SET bytea_output = 'hex';\n\
         SET array_nulls = on;\n\
         BEGIN;\n\
         CREATE FUNCTION pg_temp.cutter_expect(got bigint, want bigint, what text) RETURNS void LANGUAGE plpgsql AS \
         $cutter$BEGIN IF got <> want THEN RAISE EXCEPTION 'revert conflict (% rows where % were expected): %', got, want, what; END IF; END$cutter$;"
    )?;
    for line in BufReader::new(spool).lines() {
        let s: Step = serde_json::from_str(&line?)?;
        writeln!(
            w,
            "WITH d AS ({}) SELECT pg_temp.cutter_expect((SELECT pg_catalog.count(*) FROM d), {}, {});",
            s.sql, s.expect, s.what
        )?;
    }
    writeln!(w, "COMMIT;\n\\unrestrict {key}")?;
    w.into_inner()
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?
        .sync_all()?;
    Ok(())
}

/// A fresh pre-write backup through the daemon, so the revert can be undone.
fn backup_first(socket: &Path, id: &RunId) -> anyhow::Result<()> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let run: String = format!("revert-{id}").chars().take(110).collect();
    let run_id = format!("{run}-{stamp}");
    let env = block(async {
        let mut client = cutter_backup::connect(socket).await.with_context(|| {
            format!(
                "reaching cutter-backupd at {} for the pre-revert backup (or pass --no-backup)",
                socket.display()
            )
        })?;
        let e = client
            .pre_write_backup(cutter_backup::v1::PreWriteBackupRequest {
                run_id: run_id.clone(),
            })
            .await
            .map_err(|s| {
                anyhow::anyhow!(
                    "the pre-revert backup {run_id} failed: {}; nothing was reverted",
                    s.message()
                )
            })?
            .into_inner();
        Ok::<_, anyhow::Error>(e)
    })?;
    if env.sha256.is_empty()
        || env.artifact_ref.is_empty()
        || env.gpg_fpr.is_empty()
        || env.size_bytes == 0
    {
        bail!("the pre-revert backup {run_id} came back incomplete; nothing was reverted");
    }
    eprintln!("pre-revert backup {run_id}: sha256 {}", env.sha256);
    Ok(())
}

/// Runs the spooled statements in one transaction; rolls back on any
/// conflict, naming each.
fn apply(live: &Live, spool: File, steps: u64, tables: usize) -> anyhow::Result<bool> {
    block(async {
        let mut c = live.session().await?;
        let mut tx = c.begin().await?;
        let mut conflicts = Vec::new();
        for line in BufReader::new(spool).lines() {
            let s: Step = serde_json::from_str(&line?)?;
            let got: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "WITH d AS ({}) SELECT pg_catalog.count(*) FROM d",
                s.sql
            )))
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}; nothing was reverted", unquote(&s.what)))?;
            if got != s.expect {
                conflicts.push(format!(
                    "{} ({got} rows, {} expected)",
                    unquote(&s.what),
                    s.expect
                ));
            }
        }
        if !conflicts.is_empty() {
            tx.rollback().await?;
            println!("REVERT: CONFLICT — nothing was changed; rows changed since the diff:");
            for k in &conflicts {
                println!("  {}", crate::output::clean(k));
            }
            return Ok(false);
        }
        tx.commit().await?;
        println!("REVERT: OK — {steps} statements in {tables} tables, one transaction");
        Ok(true)
    })
}

fn unquote(lit: &str) -> String {
    lit.trim_matches('\'').replace("''", "'")
}
