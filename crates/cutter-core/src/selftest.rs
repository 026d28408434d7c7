//! The fail-closed checks of SPEC §3, run by `Selftest` and again before every
//! backup. Each check has a stable name and a detail that tells the operator
//! what to do; a backup proceeds only from a [`Ready`] that no FAIL produced.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{FprSource, OffsiteMode, TableName, quote_ident};
use crate::db::{SequenceState, ServerInfo, TableState};
use crate::error::{Error, ErrorKind};
use crate::key::{UsableKey, shown, usable};
use crate::offsite::{Offsite, Queue, queue};
use crate::pgdump::{self, PgDumpVersion};
use crate::setup::{KeyResolution, Setup};
use crate::signer::Signer;
use crate::store::PROBE_PREFIX;
use crate::time::rfc3339;

/// The check that the manifest signing key is usable.
pub const SIGNER: &str = "signer";

/// The offsite copy check. It never refuses a local backup: in required
/// mode the upload step fails the call instead, in async mode the queue
/// waits, so the database is never left without its local pre-write backup.
pub const OFFSITE: &str = "offsite";

/// The exact text operators grep for (from the operator report).
pub const UNSET_MESSAGE: &str = "required env var BACKUP_GPG_FPR is unset";

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Fine.
    Pass,
    /// Fine for now; look at it soon.
    Warn,
    /// Backups refuse until fixed.
    Fail,
}

/// One check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Stable name.
    pub name: &'static str,
    /// Verdict.
    pub status: Status,
    /// What was found and how to fix it.
    pub detail: String,
}

/// All checks, in order.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The checks.
    pub checks: Vec<Check>,
    /// Set when the database could not be reached (maps to UNAVAILABLE).
    pub db_unavailable: bool,
    /// When encryption to the configured key stops working, if known.
    pub key_expires_at: Option<SystemTime>,
    /// Free bytes in `backup.dir` and what a backup needs (estimate + margin).
    pub space: Option<(u64, u64)>,
    /// A backup completes only when the `offsite` check passes: in
    /// `offsite.mode = "required"`, or when `[offsite]` cannot be set up
    /// at all (async mode cannot even queue then).
    pub offsite_guards: bool,
}

impl Report {
    /// No check FAILed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    /// `name: detail` of every FAIL, joined, for error messages.
    pub fn failures(&self) -> String {
        self.checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// No check that guards a local backup FAILed (every check but
    /// [`OFFSITE`]).
    pub fn backup_ready(&self) -> bool {
        self.checks
            .iter()
            .all(|c| c.status != Status::Fail || c.name == OFFSITE)
    }

    /// A caller gets a complete backup: no check that guards it FAILed
    /// (the `offsite` check guards it only in required mode; in async
    /// mode backups complete and queue, and its verdict is a warning to
    /// the operator, in STATUS and the metrics). gRPC health serves this.
    pub fn serving(&self) -> bool {
        self.backup_ready()
            && !(self.offsite_guards
                && self
                    .checks
                    .iter()
                    .any(|c| c.name == OFFSITE && c.status == Status::Fail))
    }

    /// The error a backup returns when this report has a FAIL.
    pub fn refusal(&self) -> Error {
        if self.db_unavailable {
            Error::DatabaseUnavailable(self.failures())
        } else {
            Error::NotReady(self.failures())
        }
    }

    fn push(&mut self, name: &'static str, status: Status, detail: impl Into<String>) {
        self.checks.push(Check {
            name,
            status,
            detail: detail.into(),
        });
    }
}

/// What a backup needs, produced only by a passing selftest: its fields
/// are private, so nothing else can make one.
#[derive(Debug, Clone)]
pub struct Ready {
    key: UsableKey,
    additional: Vec<UsableKey>,
    pg_dump: PathBuf,
    pg_dump_version: PgDumpVersion,
    server: ServerInfo,
    tables: Vec<TableName>,
    signer: Arc<Signer>,
}

impl Ready {
    /// The key to encrypt to (`BACKUP_GPG_FPR`).
    pub fn key(&self) -> &UsableKey {
        &self.key
    }

    /// The pg_dump to run.
    pub fn pg_dump(&self) -> &std::path::Path {
        &self.pg_dump
    }

    /// Its version.
    pub fn pg_dump_version(&self) -> &PgDumpVersion {
        &self.pg_dump_version
    }

    /// The server.
    pub fn server(&self) -> &ServerInfo {
        &self.server
    }

    /// The tables in scope.
    pub fn tables(&self) -> &[TableName] {
        &self.tables
    }

    /// The manifest signing key.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// Every key the artifact is encrypted to, the configured one first.
    pub fn keys(&self) -> impl Iterator<Item = &UsableKey> {
        std::iter::once(&self.key).chain(&self.additional)
    }
}

/// Runs every check against `setup` now.
pub async fn run(setup: &Setup) -> (Report, Option<Ready>) {
    let now = SystemTime::now();
    let mut report = Report::default();
    // The offsite check runs beside the others, bounded in time, so a slow
    // bucket delays a backup's selftest by at most its bound.
    let offsite = setup
        .offsite
        .clone()
        .map(|o| tokio::spawn(check_offsite(o)));
    report.offsite_guards = matches!(setup.offsite, Some(Err(_)))
        || setup
            .config
            .offsite
            .as_ref()
            .is_some_and(|o| matches!(o.mode, OffsiteMode::Required));
    let key = check_key(setup, now, &mut report);
    let signer = check_signer(setup, &mut report);
    let additional = check_additional(setup, now, &mut report);
    let server = check_database(setup, &mut report).await;
    let pg_dump = check_pg_dump(setup, server.as_ref(), &mut report);
    let sizes = match &server {
        Some(_) => check_tables(setup, &mut report).await,
        None => {
            for name in ["tables", "grants"] {
                report.push(
                    name,
                    Status::Fail,
                    "not checked: the database is unreachable",
                );
            }
            None
        }
    };
    check_backup_dir(setup, sizes, &mut report);
    if let Some(check) = offsite {
        let (status, detail) = check.await.unwrap_or_else(|e| {
            (
                Status::Fail,
                format!("the offsite check failed to run: {e}"),
            )
        });
        report.push(OFFSITE, status, detail);
    }
    let ready = match (report.backup_ready(), key, pg_dump, server, signer) {
        (true, Some(key), Some((pg_dump, pg_dump_version)), Some(server), Some(signer)) => {
            Some(Ready {
                key,
                additional,
                pg_dump,
                pg_dump_version,
                server,
                tables: setup.tables.clone(),
                signer,
            })
        }
        _ => None,
    };
    (report, ready)
}

fn check_key(setup: &Setup, now: SystemTime, report: &mut Report) -> Option<UsableKey> {
    let loaded = match &setup.key {
        KeyResolution::Unset => {
            report.push(
                "fingerprint",
                Status::Fail,
                format!(
                    "{UNSET_MESSAGE}: add BACKUP_GPG_FPR=<40-hex fingerprint> to the env file (or key.fingerprint) and reload"
                ),
            );
            None
        }
        KeyResolution::Unreadable(why) => {
            report.push(
                "fingerprint",
                Status::Fail,
                format!(
                    "{why}: let the daemon's group read it (chgrp cutter-backup FILE; chmod 0640 FILE), or point key.env_file at a file holding only the BACKUP_GPG_FPR line"
                ),
            );
            None
        }
        KeyResolution::Malformed(tail) => {
            report.push(
                "fingerprint",
                Status::Fail,
                format!(
                    "BACKUP_GPG_FPR (ending {tail:?}) is not a 40-hex-digit fingerprint; copy it from `gpg --list-keys --with-colons` (the fpr: line)"
                ),
            );
            None
        }
        KeyResolution::NotFound(fpr, why) => {
            report.push(
                "fingerprint",
                Status::Pass,
                format!("BACKUP_GPG_FPR {}", shown(fpr)),
            );
            report.push("key", Status::Fail, why.clone());
            return None;
        }
        KeyResolution::Loaded(c, source) => {
            let from = match source {
                FprSource::EnvFile => "env file",
                FprSource::Env => "environment",
                FprSource::ConfigFile => "key.fingerprint",
            };
            report.push(
                "fingerprint",
                Status::Pass,
                format!("BACKUP_GPG_FPR {} (from {from})", shown(&c.fingerprint)),
            );
            Some(c)
        }
    };
    let Some(loaded) = loaded else {
        report.push(
            "key",
            Status::Fail,
            "not checked: fix the fingerprint first",
        );
        return None;
    };
    match usable(loaded, now) {
        Ok(k) => {
            report.key_expires_at = k.expires_at;
            let expiry = k.expires_at.map(rfc3339).unwrap_or_else(|| "never".into());
            if k.expires_soon(now) {
                report.push(
                    "key",
                    Status::Warn,
                    format!(
                        "key {} expires {expiry}, within 30 days: extend it or rotate (docs/operations.md)",
                        shown(&k.fingerprint)
                    ),
                );
            } else {
                report.push(
                    "key",
                    Status::Pass,
                    format!(
                        "key {} valid, {} encryption key(s), expires {expiry}, from {}",
                        shown(&k.fingerprint),
                        k.encryption_keys.len(),
                        loaded.origin
                    ),
                );
            }
            Some(k)
        }
        Err(why) => {
            report.push("key", Status::Fail, why);
            None
        }
    }
}

fn check_signer(setup: &Setup, report: &mut Report) -> Option<Arc<Signer>> {
    match &setup.signer {
        Ok(s) => {
            report.push(
                SIGNER,
                Status::Pass,
                format!(
                    "manifests signed by …{} ({}); pin it for verify/restore: cutterctl signer export",
                    &s.fingerprint()[32..],
                    setup.config.signer.key_file.display()
                ),
            );
            Some(Arc::clone(s))
        }
        Err(why) => {
            report.push(SIGNER, Status::Fail, why.clone());
            None
        }
    }
}

/// Every additional recipient must be usable too: an artifact is only as
/// recoverable as the keys it claims in its manifest.
fn check_additional(setup: &Setup, now: SystemTime, report: &mut Report) -> Vec<UsableKey> {
    if setup.additional.is_empty() {
        return Vec::new();
    }
    let mut keys = Vec::new();
    let mut problems = Vec::new();
    for r in &setup.additional {
        match r {
            KeyResolution::Loaded(c, _) => match usable(c, now) {
                Ok(k) => keys.push(k),
                Err(why) => problems.push(why),
            },
            KeyResolution::NotFound(_, why) => problems.push(why.clone()),
            KeyResolution::Malformed(tail) => problems.push(format!(
                "key.additional_recipients fingerprint ending {tail:?} is not 40 hex digits"
            )),
            KeyResolution::Unset | KeyResolution::Unreadable(_) => {}
        }
    }
    if problems.is_empty() {
        let shown: Vec<String> = keys.iter().map(|k| shown(&k.fingerprint)).collect();
        report.push(
            "additional_keys",
            Status::Pass,
            format!("also encrypting to {}", shown.join(", ")),
        );
    } else {
        report.push(
            "additional_keys",
            Status::Fail,
            format!(
                "{}; fix or remove the entry in key.additional_recipients",
                problems.join("; ")
            ),
        );
    }
    keys
}

async fn check_database(setup: &Setup, report: &mut Report) -> Option<ServerInfo> {
    let t = setup.db.target();
    let whom = format!("{}@{}:{}/{}", t.user, t.host, t.port, t.database);
    if let Some(problem) = setup.db.problem() {
        report.push(
            "database",
            Status::Fail,
            format!("{problem}; fix database.password_file"),
        );
        return None;
    }
    match setup.db.server_info().await {
        Ok(info) if info.superuser => {
            report.push(
                "database",
                Status::Warn,
                format!(
                    "connected as {} (superuser): use a least-privilege role such as cutter_exec",
                    info.role
                ),
            );
            Some(info)
        }
        Ok(info) => {
            report.push(
                "database",
                Status::Pass,
                format!(
                    "connected to {whom} as {}, PostgreSQL {}",
                    info.role, info.version
                ),
            );
            Some(info)
        }
        Err(e) => {
            report.db_unavailable = e.kind() == ErrorKind::Unavailable;
            report.push(
                "database",
                Status::Fail,
                format!("cannot query {whom}: {e}; check database.url, password_file and that PostgreSQL is up"),
            );
            None
        }
    }
}

fn check_pg_dump(
    setup: &Setup,
    server: Option<&ServerInfo>,
    report: &mut Report,
) -> Option<(PathBuf, PgDumpVersion)> {
    let path = match (&setup.config.backup.pg_dump, server) {
        (Some(p), _) => p.clone(),
        (None, Some(s)) => pgdump::default_path(s.major()),
        (None, None) => {
            report.push(
                "pg_dump",
                Status::Fail,
                "not checked: the server version is unknown (database unreachable) and backup.pg_dump is unset",
            );
            return None;
        }
    };
    if let Err(why) = crate::trusted::check(&path, "backup.pg_dump") {
        report.push("pg_dump", Status::Fail, why);
        return None;
    }
    let v = match setup.pg_dump_version(&path) {
        Ok(v) => v,
        Err(why) => {
            report.push("pg_dump", Status::Fail, why);
            return None;
        }
    };
    match server {
        Some(s) if v.major < s.major() => {
            report.push(
                "pg_dump",
                Status::Fail,
                format!(
                    "{} is major {} but the server is {}: install postgresql-client-{} and point backup.pg_dump at it",
                    path.display(),
                    v.major,
                    s.major(),
                    s.major()
                ),
            );
            None
        }
        _ => {
            report.push(
                "pg_dump",
                Status::Pass,
                format!("{} ({})", path.display(), v.line),
            );
            Some((path, v))
        }
    }
}

/// Checks existence and grants; returns the summed table sizes.
async fn check_tables(setup: &Setup, report: &mut Report) -> Option<u64> {
    let inspected = match setup.db.inspect_tables(&setup.tables).await {
        Ok(states) => setup
            .db
            .inspect_sequences(&setup.tables)
            .await
            .map(|seqs| (states, seqs)),
        Err(e) => Err(e),
    };
    let (states, sequences) = match inspected {
        Ok(s) => s,
        Err(e) => {
            for name in ["tables", "grants"] {
                report.push(name, Status::Fail, format!("catalog query failed: {e}"));
            }
            return None;
        }
    };
    let missing: Vec<String> = states
        .iter()
        .filter(|s| !s.exists)
        .map(|s| s.table.to_string())
        .collect();
    if missing.is_empty() {
        report.push(
            "tables",
            Status::Pass,
            format!("all {} tables in scope exist", states.len()),
        );
    } else {
        report.push(
            "tables",
            Status::Fail,
            format!(
                "missing: {}; create them (run the schema migration) or remove them from backup.tables",
                missing.join(", ")
            ),
        );
    }
    let role = &setup.db.target().user;
    let grants = missing_grants(&states, &sequences, role);
    if grants.is_empty() {
        report.push(
            "grants",
            Status::Pass,
            format!("{role} can SELECT every existing table in scope"),
        );
    } else {
        report.push(
            "grants",
            Status::Fail,
            format!(
                "{role} lacks privileges; as the schema owner (e.g. workflow_admin) run: {}",
                grants.join(" ")
            ),
        );
    }
    Some(states.iter().map(|s| s.size_bytes).sum())
}

/// The exact statements that would make `role` able to dump every table.
pub fn missing_grants(
    states: &[TableState],
    sequences: &[SequenceState],
    role: &str,
) -> Vec<String> {
    let role = sql_name(role);
    let schemas: BTreeSet<&str> = states
        .iter()
        .filter(|s| s.exists && !s.schema_usage)
        .map(|s| s.table.schema.as_str())
        .collect();
    let mut out: Vec<String> = schemas
        .into_iter()
        .map(|s| format!("GRANT USAGE ON SCHEMA {} TO {role};", sql_name(s)))
        .collect();
    out.extend(
        states
            .iter()
            .filter(|s| s.exists && !s.can_select)
            .map(|s| format!("GRANT SELECT ON {} TO {role};", display_name(&s.table))),
    );
    out.extend(sequences.iter().filter(|s| !s.can_select).map(|s| {
        format!(
            "GRANT SELECT ON SEQUENCE {} TO {role};",
            display_name(&s.sequence)
        )
    }));
    out
}

/// `schema.table`, quoting only where SQL needs it (readable GRANT lines).
fn display_name(t: &TableName) -> String {
    format!("{}.{}", sql_name(&t.schema), sql_name(&t.name))
}

/// An identifier as SQL needs it: bare when lower-case plain, else quoted.
fn sql_name(s: &str) -> String {
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain { s.to_owned() } else { quote_ident(s) }
}

fn check_backup_dir(setup: &Setup, estimate: Option<u64>, report: &mut Report) {
    let dir = setup.store.dir();
    let fail = |report: &mut Report, why: String| report.push("backup_dir", Status::Fail, why);
    let meta = match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => return fail(report, format!("{} is not a directory", dir.display())),
        Err(e) => {
            return fail(
                report,
                format!(
                    "{} does not exist ({e}): create it with `install -d -m 0700 {}`",
                    dir.display(),
                    dir.display()
                ),
            );
        }
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o007 != 0 {
        return fail(
            report,
            format!(
                "{} is world-accessible (mode {mode:04o}): run `chmod 0700 {}`",
                dir.display(),
                dir.display()
            ),
        );
    }
    if let Err(e) = tempfile::Builder::new()
        .prefix(PROBE_PREFIX)
        .tempfile_in(dir)
    {
        return fail(
            report,
            format!(
                "{} is not writable by the daemon ({e}): fix its owner/permissions or mount",
                dir.display()
            ),
        );
    }
    // After the probe: a directory the daemon cannot write at all is
    // named as such first, whoever owns it.
    if let Err(why) = crate::store::at::only_daemon_writes(dir, meta.uid(), meta.mode()) {
        return fail(report, why);
    }
    let free = match free_bytes(dir) {
        Ok(f) => f,
        Err(e) => {
            return fail(
                report,
                format!("cannot stat the file system of {}: {e}", dir.display()),
            );
        }
    };
    let margin = setup.config.backup.free_space_margin_mib * 1024 * 1024;
    let need = estimate.unwrap_or(0) + margin;
    report.space = Some((free, need));
    if free < need {
        return fail(
            report,
            format!(
                "{} has {} MiB free, a backup needs about {} MiB (tables {} MiB + margin {} MiB): free space or move backup.dir",
                dir.display(),
                free >> 20,
                need >> 20,
                estimate.unwrap_or(0) >> 20,
                margin >> 20
            ),
        );
    }
    report.push(
        "backup_dir",
        Status::Pass,
        format!(
            "{} mode {mode:04o}, writable, {} MiB free",
            dir.display(),
            free >> 20
        ),
    );
}

/// The `offsite` check: the backend's probe within
/// `offsite.check_timeout_secs`, then the async queue's lag.
async fn check_offsite(o: Result<Arc<Offsite>, String>) -> (Status, String) {
    let o = match o {
        Ok(o) => o,
        Err(why) => return (Status::Fail, why),
    };
    let within = Duration::from_secs(o.config.check_timeout_secs);
    let probed = tokio::time::timeout(within, o.backend.probe()).await;
    let (status, detail) = match probed {
        Ok(Ok(probe)) if probe.warnings.is_empty() => (Status::Pass, probe.detail),
        Ok(Ok(probe)) => (
            Status::Warn,
            format!("{}; {}", probe.detail, probe.warnings.join("; ")),
        ),
        Ok(Err(e)) => (Status::Fail, e),
        Err(_) => (
            Status::Fail,
            format!(
                "no answer from {} within {} s (offsite.check_timeout_secs): is the service up, and offsite.endpoint right?",
                o.backend.endpoint(),
                within.as_secs()
            ),
        ),
    };
    // Async mode: backups complete and queue; the queue's lag (below)
    // says when the operator must act.
    let status = match (status, &o.config.mode) {
        (Status::Fail, OffsiteMode::Async) => Status::Warn,
        (s, _) => s,
    };
    with_queue(o.queue.as_ref(), o.config.max_lag_secs, status, detail)
}

/// The one-line verdict for STATUS and systemd: `ready: key …1A2B3C4D, 9
/// tables` (with what WARNs or an async offsite FAIL adds), or
/// `FAIL-CLOSED: <failing checks>`.
pub fn summarize(setup: &Setup, report: &Report) -> String {
    if !report.serving() {
        return format!("FAIL-CLOSED: {}", report.failures());
    }
    let ready = format!(
        "ready: key {}, {} tables",
        crate::setup::shown_key(&setup.key),
        setup.tables.len()
    );
    if report.passed() {
        ready
    } else {
        format!("{ready}; {}", report.failures())
    }
}

/// Adds the async queue's state: pending uploads WARN, and FAIL once the
/// oldest has waited past `offsite.max_lag_secs`.
fn with_queue(
    queue: Option<&Queue>,
    max_lag_secs: u64,
    status: Status,
    mut detail: String,
) -> (Status, String) {
    let pending = queue.map(Queue::list).unwrap_or_default();
    let Some(oldest) = pending.first() else {
        return (status, detail);
    };
    let age = queue::now().saturating_sub(oldest.enqueued_at);
    let last = pending
        .iter()
        .rev()
        .find(|p| !p.last_error.is_empty())
        .map(|p| format!("; last error ({}): {}", p.run_id, p.last_error))
        .unwrap_or_default();
    let lagging = age > max_lag_secs;
    detail.push_str(&format!(
        "; {} upload(s) pending, oldest {} for {age} s{}{last}",
        pending.len(),
        oldest.run_id,
        if lagging {
            format!(
                ", past offsite.max_lag_secs = {max_lag_secs}: fix the offsite service or credentials"
            )
        } else {
            String::new()
        }
    ));
    let status = match status {
        Status::Fail => Status::Fail,
        _ if lagging => Status::Fail,
        _ => Status::Warn,
    };
    (status, detail)
}

/// Bytes available to the daemon on the file system holding `dir`.
pub fn free_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(dir)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runid::RunId;

    #[test]
    fn health_serves_what_a_caller_can_get() {
        let report = |offsite: Status, guards: bool| Report {
            checks: vec![
                Check {
                    name: "key",
                    status: Status::Pass,
                    detail: String::new(),
                },
                Check {
                    name: OFFSITE,
                    status: offsite,
                    detail: String::new(),
                },
            ],
            offsite_guards: guards,
            ..Report::default()
        };
        // Async mode: backups complete and queue whatever the bucket does.
        assert!(report(Status::Fail, false).serving());
        assert!(!report(Status::Fail, false).passed());
        // Required mode (or an [offsite] that cannot be set up): they do not.
        assert!(!report(Status::Fail, true).serving());
        assert!(report(Status::Warn, true).serving());
        let mut local = report(Status::Pass, false);
        local.checks[0].status = Status::Fail;
        assert!(!local.serving());
    }

    #[test]
    fn pending_uploads_warn_then_fail_past_max_lag() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = Queue::open(&dir.path().join("q")).expect("queue");
        let check = || with_queue(Some(&q), 600, Status::Pass, "ok".into());
        assert_eq!(check().0, Status::Pass);
        let id = RunId::parse("r1").expect("id");
        q.push(&id).expect("push");
        let (st, detail) = check();
        assert_eq!(st, Status::Warn, "{detail}");
        assert!(
            detail.contains("1 upload(s) pending, oldest r1"),
            "{detail}"
        );
        let mut p = q.get(&id).expect("queued");
        p.enqueued_at -= 601;
        p.last_error = "HTTP 503".into();
        q.write(&p).expect("write");
        let (st, detail) = check();
        assert_eq!(st, Status::Fail, "{detail}");
        assert!(
            detail.contains("past offsite.max_lag_secs = 600") && detail.contains("HTTP 503"),
            "{detail}"
        );
    }

    fn state(schema: &str, name: &str, exists: bool, select: bool, usage: bool) -> TableState {
        TableState {
            table: TableName {
                schema: schema.into(),
                name: name.into(),
            },
            exists,
            can_select: select,
            schema_usage: usage,
            size_bytes: 0,
        }
    }

    #[test]
    fn grants_name_exactly_what_is_missing() {
        let states = [
            state("cutter_governance", "verify_result", true, false, true),
            state("cutter_governance", "ok", true, true, true),
            state("cutter_governance", "gone", false, false, false),
            state("Other", "T", true, false, false),
        ];
        let seqs = [
            SequenceState {
                sequence: TableName {
                    schema: "cutter_governance".into(),
                    name: "verify_result_id_seq".into(),
                },
                can_select: false,
            },
            SequenceState {
                sequence: TableName {
                    schema: "cutter_governance".into(),
                    name: "ok_id_seq".into(),
                },
                can_select: true,
            },
        ];
        assert_eq!(
            missing_grants(&states, &seqs, "cutter_exec"),
            [
                "GRANT USAGE ON SCHEMA \"Other\" TO cutter_exec;",
                "GRANT SELECT ON cutter_governance.verify_result TO cutter_exec;",
                "GRANT SELECT ON \"Other\".\"T\" TO cutter_exec;",
                "GRANT SELECT ON SEQUENCE cutter_governance.verify_result_id_seq TO cutter_exec;",
            ]
        );
    }
}
