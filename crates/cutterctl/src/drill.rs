//! `cutterctl drill`: prove that the newest backup restores. Picks the
//! newest complete run (local, or in the bucket with `--from-offsite`) or
//! the one named, restores it with `restore`'s own code into a scratch
//! database whose name cutterctl makes (`cutter_drill_<random>`), compares
//! every table's row count with the signed manifest, then drops the
//! database and its load role unless `--keep`.
//!
//! It records what it measured (run, the artifact's age, bytes, fetch,
//! decrypt and load time, rows per table, which of the supplied keys the
//! artifact is encrypted to, verdict and reason) where operators look: one
//! journal entry with fields (`DRILL_RUN_ID`, `VERDICT`, `DURATION_MS` …),
//! `--json`, a Markdown report an auditor can keep (`--report`), and a
//! Prometheus textfile (`--metrics-textfile`, written atomically, the last
//! success kept across failures). Exit codes as `cutterctl verify`'s.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use cutter_core::config::Config;
use cutter_core::db::ConnTarget;
use cutter_core::metrics::Exposition;
use cutter_core::runid::RunId;
use cutter_core::store::{ManifestState, Store};
use serde::Serialize;

use crate::restore::scratch::{self, block};
use crate::restore::{self as restore_cmd, Restore};

/// `cutterctl drill …`.
#[derive(Debug, clap::Args)]
pub struct Drill {
    /// The run (default: the newest complete one).
    pub run_id: Option<String>,
    /// The cluster to restore into, as an admin role that may create
    /// roles and databases (its database part is only where cutterctl
    /// connects first; the drill's database is `cutter_drill_<random>`).
    #[arg(long)]
    pub into_cluster: String,
    /// The drill's secret key (a dedicated recipient, see docs/operations.md).
    #[arg(long)]
    pub secret_key: PathBuf,
    /// File with the key's passphrase (mode 0600).
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
    /// Take the run from the offsite bucket.
    #[arg(long)]
    pub from_offsite: bool,
    /// With --from-offsite: the host whose runs to drill (default: this one).
    #[arg(long, requires = "from_offsite")]
    pub host: Option<String>,
    /// Keep the scratch database and its role (to look at them).
    #[arg(long)]
    pub keep: bool,
    /// Write the drill's metrics here (Prometheus text, atomically).
    #[arg(long)]
    pub metrics_textfile: Option<PathBuf>,
    /// Write a Markdown report here (for auditors).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Pinned manifest signer (default: restore.trusted_signers).
    #[arg(long)]
    pub signer: Vec<PathBuf>,
    /// The non-superuser role the dump is loaded as (pg_hba.conf must let
    /// it in with a password); dropped after the drill unless --keep.
    #[arg(long, default_value = "cutter_drill")]
    pub load_role: String,
    /// psql to load with (default: the newest installed).
    #[arg(long)]
    pub psql: Option<PathBuf>,
    /// The daemon's config.
    #[arg(long, default_value = cutter_core::config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
}

/// What one drill found.
#[derive(Debug, Serialize)]
struct Record {
    run_id: String,
    host: String,
    source: &'static str,
    verdict: &'static str,
    reason: String,
    /// Where a FAIL happened: pick, verify, decrypt, load, counts, cleanup.
    stage: &'static str,
    started_at: String,
    duration_ms: u64,
    fetch_ms: u64,
    decrypt_ms: u64,
    load_ms: u64,
    bytes: u64,
    age_seconds: u64,
    keys: Vec<String>,
    database: String,
    kept: bool,
    tables: Vec<TableResult>,
}

#[derive(Debug, Serialize)]
struct TableResult {
    table: String,
    manifest: u64,
    restored: Option<i64>,
}

/// Runs the drill; `Ok(true)` on PASS. A FAIL, even one before anything
/// started (a config that does not load), is recorded everywhere asked
/// before it is returned.
pub fn run(d: &Drill, json: bool) -> anyhow::Result<bool> {
    let started = Instant::now();
    let started_at = SystemTime::now();
    let mut rec = Record {
        run_id: d.run_id.clone().unwrap_or_default(),
        host: d.host.clone().unwrap_or_default(),
        source: if d.from_offsite { "offsite" } else { "local" },
        verdict: "FAIL",
        reason: String::new(),
        stage: "",
        started_at: cutter_core::time::rfc3339(started_at),
        duration_ms: 0,
        fetch_ms: 0,
        decrypt_ms: 0,
        load_ms: 0,
        bytes: 0,
        age_seconds: 0,
        keys: Vec::new(),
        database: String::new(),
        kept: d.keep,
        tables: Vec::new(),
    };
    let set_up = (|| {
        let config = Config::load(&d.config)?;
        let database = format!("cutter_drill_{}", &scratch::random_token()?[..12]);
        let cluster = ConnTarget::parse(&d.into_cluster, None).context("--into-cluster")?;
        if d.from_offsite && d.host.is_none() {
            rec.host = crate::offsite::client(&config)?.host().to_owned();
        }
        Ok::<_, anyhow::Error>((config, database, cluster))
    })();
    match set_up {
        Err(e) => {
            rec.stage = "setup";
            rec.reason = format!("{e:#}");
        }
        Ok((config, database, cluster)) => {
            rec.database = database.clone();
            let result = drill(d, &config, &cluster, &database, &mut rec);
            if !d.keep
                && let Err(e) = discard(&cluster, &d.load_role)
            {
                rec.reason = join(&rec.reason, &format!("cleaning up: {e:#}"));
            }
            match result {
                Ok(()) if rec.reason.is_empty() => rec.verdict = "PASS",
                Ok(()) => rec.stage = "cleanup",
                Err(e) => {
                    let why = format!("{e:#}");
                    rec.stage = stage(&why);
                    rec.reason = join(&why, &rec.reason);
                }
            }
        }
    }
    // psql's errors can quote row values: the first lines are enough.
    if rec.reason.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !rec.reason.is_char_boundary(end) {
            end -= 1;
        }
        rec.reason.truncate(end);
        rec.reason.push('…');
    }
    rec.duration_ms = ms(started.elapsed());
    publish(d, &rec, started_at, json)?;
    Ok(rec.verdict == "PASS")
}

/// The longest reason recorded (journal datagram, metrics-adjacent report).
const MAX_REASON: usize = 2048;

/// Which step a failure message comes from (a metric label, so a small
/// fixed set).
fn stage(why: &str) -> &'static str {
    let has = |w: &str| why.contains(w);
    if has("row counts differ") {
        "counts"
    } else if has("verify FAILED") || has("signature") || has("changed while it was read") {
        "verify"
    } else if has("passphrase") || has("decrypt") || has("secret key") || has("MDC") {
        "decrypt"
    } else if has("psql") || has("load") || has("scratch database") || has("role") {
        "load"
    } else if has("no complete run") {
        "pick"
    } else {
        "other"
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ => format!("{a}; {b}"),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Picks, restores and compares; fills `rec`.
fn drill(
    d: &Drill,
    config: &Config,
    cluster: &ConnTarget,
    database: &str,
    rec: &mut Record,
) -> anyhow::Result<()> {
    let id = match &d.run_id {
        Some(r) => RunId::parse(r)?,
        None => newest(d, config, &rec.host)?,
    };
    rec.run_id = id.to_string();
    let r = Restore {
        into: Some(with_database(cluster, database)),
        psql: d.psql.clone(),
        signer: d.signer.clone(),
        load_role: d.load_role.clone(),
        // The database is `cutter_drill_<random>`, a name no live
        // database has, so the identity check could never refuse it; and a
        // drill host need not reach the live database's password.
        live_database_gone: true,
        from_offsite: d.from_offsite,
        host: d.from_offsite.then(|| rec.host.clone()),
        ..Restore::of(
            id.as_str(),
            &d.secret_key,
            d.passphrase_file.as_deref(),
            &d.config,
        )
    };
    let out = restore_cmd::measured(&r)?;
    // The vault key must be able to open it too, not only the drill key.
    let primary = &out.manifest.gpg_fpr;
    if !out
        .manifest
        .recipients
        .iter()
        .any(|x| x.fingerprint == *primary)
    {
        bail!("verify FAILED: run {id} is not encrypted to its own key {primary}, only to others");
    }
    if let Ok(Some((configured, _))) = cutter_core::config::configured_fingerprint(
        &config.key,
        cutter_core::setup::Setup::env_fingerprint(),
    ) && !out
        .manifest
        .recipients
        .iter()
        .any(|x| x.fingerprint.eq_ignore_ascii_case(&configured))
    {
        bail!("verify FAILED: run {id} is not encrypted to the configured key (BACKUP_GPG_FPR)");
    }
    rec.fetch_ms = ms(out.fetch);
    rec.decrypt_ms = ms(out.decrypt);
    rec.load_ms = ms(out.load);
    rec.bytes = out.manifest.size_bytes;
    rec.keys = out.keys;
    rec.age_seconds = cutter_core::time::parse_rfc3339(&out.manifest.created_at)
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map_or(0, |a| a.as_secs());
    let mut bad = Vec::new();
    for (t, (table, got)) in out.manifest.tables.iter().zip(&out.counts) {
        if *got != i64::try_from(t.rows).ok() || t.table != *table {
            bad.push(format!(
                "{}: {} restored, the manifest says {}",
                t.table,
                got.map_or_else(|| "not a table".to_owned(), |n| n.to_string()),
                t.rows
            ));
        }
        rec.tables.push(TableResult {
            table: t.table.to_string(),
            manifest: t.rows,
            restored: *got,
        });
    }
    if out.manifest.tables.len() != out.counts.len() || out.manifest.tables.is_empty() {
        bad.push("the restore did not count every table of the manifest".into());
    }
    if !bad.is_empty() {
        bail!("row counts differ: {}", bad.join("; "));
    }
    Ok(())
}

/// The newest complete run: locally, the newest manifest signed by a
/// pinned signer; in the bucket, the newest complete run of `host`.
fn newest(d: &Drill, config: &Config, host: &str) -> anyhow::Result<RunId> {
    let signers = crate::offsite::signers(&d.signer, config)?;
    if d.from_offsite {
        let o = crate::offsite::client(config)?;
        return block(crate::offsite::newest_complete(o.as_ref(), host))?
            .with_context(|| format!("no complete run of host {host} in the bucket"));
    }
    let store = Store::new(&config.backup.dir)?;
    let now = SystemTime::now();
    let mut best: Option<(SystemTime, Option<SystemTime>, RunId)> = None;
    let mut broken: Vec<(Option<SystemTime>, RunId, String)> = Vec::new();
    for e in store.list()? {
        let mtime = std::fs::metadata(store.artifact_path(&e.run_id))
            .and_then(|m| m.modified())
            .ok();
        let m = match e.manifest {
            ManifestState::Present(m) => m,
            ManifestState::Missing => {
                broken.push((mtime, e.run_id, "no manifest".into()));
                continue;
            }
            ManifestState::Bad(why) => {
                broken.push((mtime, e.run_id, why));
                continue;
            }
        };
        let signed = m.signature.as_ref().is_some_and(|sig| {
            cutter_core::signer::verify_detached(&m.bytes, sig, &signers).is_ok()
        });
        if !signed {
            broken.push((mtime, e.run_id, "no signature by a pinned signer".into()));
            continue;
        }
        let Some(created) = cutter_core::time::parse_rfc3339(&m.manifest.created_at) else {
            broken.push((mtime, e.run_id, "an unreadable created_at".into()));
            continue;
        };
        if created > now + Duration::from_secs(300) {
            bail!(
                "run {} says it was made at {}, in the future: the clock was wrong or the manifest is forged; drill it by name once checked",
                e.run_id,
                m.manifest.created_at
            );
        }
        // Manifest times have whole seconds: the artifact's mtime breaks ties.
        if best
            .as_ref()
            .is_none_or(|(c, t, _)| (created, mtime) > (*c, *t))
        {
            best = Some((created, mtime, e.run_id));
        }
    }
    let Some((_, chosen_mtime, chosen)) = best else {
        bail!(
            "no complete run signed by a pinned signer in {}",
            config.backup.dir.display()
        );
    };
    // A newer run that does not authenticate is the backup that matters
    // being broken: say so instead of drilling an older one.
    if let Some((_, id, why)) = broken
        .iter()
        .find(|(t, _, _)| t.is_some() && *t > chosen_mtime)
    {
        bail!("the newest run {id} does not authenticate ({why}); the newest good one is {chosen}");
    }
    Ok(chosen)
}

/// The cluster's URL with another database.
fn with_database(cluster: &ConnTarget, database: &str) -> String {
    let url = &cluster.url;
    let (head, query) = url
        .split_once('?')
        .map_or((url.as_str(), None), |(h, q)| (h, Some(q)));
    let rest = head.split_once("://").map_or(head, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let scheme = head.split_once("://").map_or("postgres", |(s, _)| s);
    let query: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("dbname="))
        .collect();
    let mut out = format!("{scheme}://{authority}/{database}");
    if !query.is_empty() {
        out.push('?');
        out.push_str(&query.join("&"));
    }
    out
}

/// Drops every drill database of the load role (this one, and any a
/// stopped or `--keep` drill left) and the role, when it is cutterctl's.
fn discard(cluster: &ConnTarget, role: &str) -> anyhow::Result<()> {
    block(scratch::discard_drills(cluster, role))
}

/// The journal entry, `--json` or the text line, the report, the metrics.
fn publish(d: &Drill, rec: &Record, at: SystemTime, json: bool) -> anyhow::Result<()> {
    journal(rec);
    if json {
        println!("{}", serde_json::to_string(rec)?);
    } else {
        println!(
            "DRILL: {} — run {} ({}, {} bytes, {} s old) in {} ms{}",
            rec.verdict,
            crate::output::clean(&rec.run_id),
            rec.source,
            rec.bytes,
            rec.age_seconds,
            rec.duration_ms,
            if rec.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", crate::output::clean(&rec.reason))
            }
        );
    }
    if let Some(path) = &d.report {
        write_atomically(path, report(rec).as_bytes(), 0o640)?;
    }
    if let Some(path) = &d.metrics_textfile {
        let text = metrics(rec, at, path);
        write_atomically(path, text.as_bytes(), 0o644)?;
    }
    Ok(())
}

/// One journal entry with fields, through journald's native socket when
/// there is one (`journalctl DRILL_RUN_ID=…`); stderr otherwise.
fn journal(rec: &Record) {
    let one_line = |s: &str| s.replace(['\n', '\r'], " ");
    let fields = [
        (
            "MESSAGE",
            format!(
                "drill {} run_id={}{}",
                rec.verdict,
                one_line(&rec.run_id),
                if rec.reason.is_empty() {
                    String::new()
                } else {
                    format!(" at {}: {}", rec.stage, one_line(&rec.reason))
                }
            ),
        ),
        (
            "PRIORITY",
            if rec.verdict == "PASS" { "6" } else { "3" }.to_owned(),
        ),
        ("SYSLOG_IDENTIFIER", "cutterctl".to_owned()),
        ("DRILL_RUN_ID", one_line(&rec.run_id)),
        ("VERDICT", rec.verdict.to_owned()),
        ("DURATION_MS", rec.duration_ms.to_string()),
        ("DRILL_SOURCE", rec.source.to_owned()),
        ("DRILL_AGE_SECONDS", rec.age_seconds.to_string()),
        ("DRILL_BYTES", rec.bytes.to_string()),
        ("DRILL_REASON", one_line(&rec.reason)),
        ("DRILL_STAGE", rec.stage.to_owned()),
    ];
    let datagram: String = fields.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    let sent = std::os::unix::net::UnixDatagram::unbound()
        .and_then(|s| s.send_to(datagram.as_bytes(), "/run/systemd/journal/socket"));
    if sent.is_err() {
        eprintln!(
            "cutterctl drill: {}",
            crate::output::clean(fields[0].1.as_str())
        );
    }
}

fn report(rec: &Record) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "# Restore drill: {}\n\n| | |\n|---|---|\n| run | `{}` |\n| source | {}{} |\n| started | {} |\n| verdict | **{}** |\n",
        rec.verdict,
        rec.run_id,
        rec.source,
        if rec.host.is_empty() { String::new() } else { format!(" (host `{}`)", rec.host) },
        rec.started_at,
        rec.verdict
    ));
    if !rec.reason.is_empty() {
        out.push_str(&format!(
            "| failed at | {} |\n| reason | {} |\n",
            rec.stage,
            rec.reason.replace('|', "\\|")
        ));
    }
    out.push_str(&format!(
        "| artifact | {} bytes, {} s old |\n| decrypted with | {} |\n| time | {} ms (fetch and verify {} ms, decrypt {} ms, load and count {} ms) |\n| scratch database | `{}`{} |\n\n",
        rec.bytes,
        rec.age_seconds,
        if rec.keys.is_empty() { "—".to_owned() } else { rec.keys.join(", ") },
        rec.duration_ms,
        rec.fetch_ms,
        rec.decrypt_ms,
        rec.load_ms,
        rec.database,
        if rec.kept { " (kept)" } else { " (dropped)" }
    ));
    if !rec.tables.is_empty() {
        out.push_str("| table | manifest | restored |\n|---|---:|---:|\n");
        for t in &rec.tables {
            out.push_str(&format!(
                "| `{}` | {} | {} |\n",
                t.table,
                t.manifest,
                t.restored.map_or_else(|| "—".to_owned(), |n| n.to_string())
            ));
        }
    }
    out
}

/// The Prometheus text. The last success comes from the previous file
/// when this drill failed, so the alert sees how long it has been.
fn metrics(rec: &Record, at: SystemTime, path: &Path) -> String {
    let now = at
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let last_success = if rec.verdict == "PASS" {
        Some(now)
    } else {
        std::fs::read_to_string(path).ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("cutter_backup_drill_last_success_timestamp_seconds "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
    };
    let mut m = Exposition::default();
    m.single(
        "cutter_backup_drill_last_run_timestamp_seconds",
        "When the last restore drill ran.",
        now,
    );
    if let Some(t) = last_success {
        m.single(
            "cutter_backup_drill_last_success_timestamp_seconds",
            "When a restore drill last passed.",
            t,
        );
    }
    m.single(
        "cutter_backup_drill_success",
        "1 when the last restore drill passed, else 0.",
        if rec.verdict == "PASS" { 1.0 } else { 0.0 },
    );
    if rec.verdict != "PASS" {
        m.gauge(
            "cutter_backup_drill_failed",
            "1 for the step the last restore drill failed at (the reason is in the journal and the report).",
            &[([("stage", rec.stage)], 1.0)],
        );
    }
    m.single(
        "cutter_backup_drill_duration_seconds",
        "How long the last restore drill took.",
        rec.duration_ms as f64 / 1000.0,
    );
    m.single(
        "cutter_backup_drill_age_seconds",
        "How old the drilled backup was when the drill ran.",
        rec.age_seconds as f64,
    );
    let mut seen: Vec<&String> = Vec::new();
    let mut rows: Vec<([(&str, String); 1], f64)> = Vec::new();
    // A table listed twice would be a duplicate series, which node_exporter
    // rejects with the whole file.
    for t in &rec.tables {
        if !seen.contains(&&t.table) {
            seen.push(&t.table);
            rows.push((
                [("table", t.table.clone())],
                t.restored.unwrap_or(-1) as f64,
            ));
        }
    }
    m.gauge(
        "cutter_backup_drill_rows",
        "Rows restored per table in the last restore drill.",
        &rows,
    );
    m.into_text()
}

/// Writes `bytes` to a temp file beside `path`, fsyncs, renames over it.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".cutter-drill-")
        .tempfile_in(dir)
        .with_context(|| format!("writing beside {}", path.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.persist(path)
        .map_err(|e| anyhow::anyhow!("writing {}: {}", path.display(), e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drill_database_replaces_the_urls_own() {
        let c = ConnTarget::parse(
            "postgres://root@/postgres?host=/run/postgresql&port=5433",
            None,
        )
        .expect("url");
        assert_eq!(
            with_database(&c, "cutter_drill_ab"),
            "postgres://root@/cutter_drill_ab?host=/run/postgresql&port=5433"
        );
    }
}
