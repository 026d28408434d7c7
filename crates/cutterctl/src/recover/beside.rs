//! `cutterctl restore RUN --beside-live`: the run's tables under a new
//! schema in the live database, in one transaction, leaving every live
//! table untouched.
//!
//! Each table is created by cutterctl from the live table's definition
//! (`LIKE … INCLUDING GENERATED`: no triggers, no keys to live tables) when
//! the dump's COPY column list is the live table's; its rows come from the
//! authenticated plaintext's COPY block through `COPY … FROM STDIN` on
//! cutterctl's own connection, streamed in 1 MiB sends (memory stays flat).
//! No statement from the dump runs. Every loaded table's row count must be
//! the manifest's, or nothing is committed.

use std::fs::File;
use std::io::BufReader;

use anyhow::{Context, bail};
use cutter_core::config::TableName;
use cutter_core::manifest::Manifest;
use cutter_core::runid::RunId;
use sqlx::{Connection, PgConnection};

use super::dump::{Blocks, Header};
use super::{BesideArgs, Live, marker, schema_comment};
use crate::restore::scratch::{block, formatted, run_formatted};

/// Rows sent to the server per COPY data message batch.
const SEND_BYTES: usize = 1 << 20;

/// Loads the chosen tables beside live; prints one line per table.
pub fn load(
    live: &Live,
    args: &BesideArgs,
    id: &RunId,
    manifest: &Manifest,
    config: &cutter_core::config::Config,
    plain: File,
) -> anyhow::Result<()> {
    let schema = args.schema(id)?;
    let chosen = args.chosen(manifest, config)?;
    for (i, t) in chosen.iter().enumerate() {
        if chosen[..i].iter().any(|u| u.name == t.name) {
            bail!(
                "two tables named {:?} ({t} and another schema's): load them one at a time (--table) into different schemas (--schema)",
                t.name
            );
        }
    }
    let started = std::time::Instant::now();
    let loaded = block(async {
        let mut c = live.session().await?;
        if schema_comment(&mut c, &schema).await?.is_some() {
            bail!(
                "schema {schema:?} exists already in {}: pass --schema NEW, or drop it (`cutterctl restore {id} --drop-beside`, only if --beside-live made it)",
                live.target.database
            );
        }
        let mut tx = c.begin().await?;
        run_formatted(&mut tx, "CREATE SCHEMA %I", &[&schema]).await?;
        run_formatted(
            &mut tx,
            "COMMENT ON SCHEMA %I IS %L",
            &[&schema, &marker(id)],
        )
        .await?;
        let mut done: Vec<(TableName, u64)> = Vec::new();
        let mut blocks = Blocks::new(BufReader::with_capacity(SEND_BYTES, plain));
        while let Some(h) = blocks.next_header()? {
            if !chosen.contains(&h.table) {
                continue;
            }
            if done.iter().any(|(t, _)| *t == h.table) {
                bail!(
                    "the dump holds a second rows block for {}: it is not a dump cutter-backup made; nothing was loaded",
                    h.table
                );
            }
            // A domain's CHECK, a generated column or a cast would run
            // here, in this session.
            super::diff::refuse_foreign_code(&mut tx, &h.table, false).await?;
            create_like(&mut tx, &schema, &h).await?;
            let rows = copy_rows(&mut tx, &schema, &h, &mut blocks).await?;
            done.push((h.table, rows));
        }
        for t in &chosen {
            if !done.iter().any(|(d, _)| d == t) {
                bail!(
                    "the dump holds no rows block for {t}, which the manifest lists: nothing was loaded"
                );
            }
        }
        for (t, rows) in &done {
            let want = manifest
                .tables
                .iter()
                .find(|m| m.table == *t)
                .map_or(0, |m| m.rows);
            let sql = formatted(
                &mut tx,
                "SELECT pg_catalog.count(*) FROM %I.%I",
                &[&schema, &t.name],
            )
            .await?;
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut *tx)
                .await?;
            if u64::try_from(n).ok() != Some(want) || *rows != want {
                bail!(
                    "{t}: {n} rows loaded, the manifest says {want}: nothing was loaded (the transaction is rolled back)"
                );
            }
        }
        if let Some(reader) = &args.owner {
            run_formatted(
                &mut tx,
                "GRANT USAGE ON SCHEMA %I TO %I",
                &[&schema, reader],
            )
            .await?;
            for (t, _) in &done {
                run_formatted(
                    &mut tx,
                    "GRANT SELECT ON %I.%I TO %I",
                    &[&schema, &t.name, reader],
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(done)
    })?;
    // On stderr: `diff --json` loads through here and owns stdout.
    eprintln!("{:<50} {:>12}", "table", "rows");
    for (t, rows) in &loaded {
        eprintln!(
            "{:<50} {:>12}",
            crate::output::clean(&format!("{schema}.{}", t.name)),
            rows
        );
    }
    eprintln!(
        "BESIDE LIVE: OK — {} tables of run {id} in schema {schema} of {} ({:.1} s); live tables untouched",
        loaded.len(),
        live.target.database,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `CREATE TABLE schema.name (LIKE live INCLUDING GENERATED)`, after
/// checking that the dump's columns are the live table's. Generated
/// columns are computed as in the live table (so rows compare whole);
/// defaults are not copied: nothing evaluates them, and they would tie the
/// new table to live sequences and functions.
async fn create_like(c: &mut PgConnection, schema: &str, h: &Header) -> anyhow::Result<()> {
    let live_cols = live_columns(c, &h.table).await?;
    let Some(live_cols) = live_cols else {
        bail!(
            "{}: no such table in the live database (the run dropped or renamed it?): restore it into a scratch database instead (--into)",
            h.table
        );
    };
    let dumped: Vec<&String> = h.columns.iter().collect();
    let only_dump: Vec<&str> = dumped
        .iter()
        .filter(|c| !live_cols.contains(c))
        .map(|c| c.as_str())
        .collect();
    let only_live: Vec<&str> = live_cols
        .iter()
        .filter(|c| !h.columns.contains(c))
        .map(String::as_str)
        .collect();
    if !only_dump.is_empty() || !only_live.is_empty() {
        bail!(
            "{}: the run changed its columns (only in the backup: [{}]; only in the live table: [{}]); load it into a scratch database instead (--into): nothing was loaded",
            h.table,
            only_dump.join(", "),
            only_live.join(", ")
        );
    }
    run_formatted(
        c,
        "CREATE TABLE %I.%I (LIKE %I.%I INCLUDING GENERATED)",
        &[schema, &h.table.name, &h.table.schema, &h.table.name],
    )
    .await
    .with_context(|| format!("creating {schema}.{}", h.table.name))?;
    // Where it came from, for `diff` and `revert`.
    run_formatted(
        c,
        "COMMENT ON TABLE %I.%I IS %L",
        &[
            schema,
            &h.table.name,
            &format!("{}{}", super::diff::TABLE_MARKER, h.table),
        ],
    )
    .await
}

/// The live table's columns a COPY of it names (not dropped, not
/// generated), or `None` when there is no such table.
pub async fn live_columns(
    c: &mut PgConnection,
    table: &TableName,
) -> anyhow::Result<Option<Vec<String>>> {
    let Some(oid) = super::table_oid(c, table).await? else {
        return Ok(None);
    };
    let cols: Vec<String> = sqlx::query_scalar(
        "SELECT attname::text FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attnum > 0 \
         AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
    )
    .bind(oid)
    .fetch_all(&mut *c)
    .await?;
    Ok(Some(cols))
}

/// Streams the block's rows into `schema.name` with `COPY … FROM STDIN`.
async fn copy_rows<R: std::io::BufRead>(
    c: &mut PgConnection,
    schema: &str,
    h: &Header,
    blocks: &mut Blocks<R>,
) -> anyhow::Result<u64> {
    let cols = h.columns.iter().map(String::as_str).collect::<Vec<_>>();
    let sql: String = sqlx::query_scalar(
        "SELECT pg_catalog.format('COPY %I.%I (%s) FROM STDIN', $1::text, $2::text, \
                (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(c), ', ' ORDER BY o) \
                 FROM pg_catalog.unnest($3::text[]) WITH ORDINALITY AS u(c, o)))",
    )
    .bind(schema)
    .bind(&h.table.name)
    .bind(&cols)
    .fetch_one(&mut *c)
    .await?;
    let mut copy = c.copy_in_raw(&sql).await?;
    let mut buf = Vec::with_capacity(SEND_BYTES + 64 * 1024);
    while let Some(row) = blocks.next_row()? {
        buf.extend_from_slice(row);
        if buf.len() >= SEND_BYTES {
            copy.send(std::mem::take(&mut buf)).await?;
            buf.reserve(SEND_BYTES + 64 * 1024);
        }
    }
    if !buf.is_empty() {
        copy.send(buf).await?;
    }
    copy.finish()
        .await
        .with_context(|| format!("loading the rows of {}", h.table))
}
