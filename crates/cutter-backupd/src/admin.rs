//! Everything that reports the daemon's state, fed from one place: every
//! selftest (timed, requested, or before a backup) and every finished backup
//! goes through [`Admin`], which updates the gRPC health status, systemd's
//! STATUS, the journal (on a change of verdict) and the Prometheus metrics
//! (served by the `Metrics` RPC and written to `metrics.textfile`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use cutter_core::metrics::Exposition;
use cutter_core::selftest::{Report, Status as CheckStatus};
use cutter_core::setup::Setup;

use crate::notify;
use cutter_core::selftest::summarize;

/// How a backup call ended, as counted in `cutter_backup_backups_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// A new artifact was written.
    Complete,
    /// An existing, verifying artifact was returned.
    Reused,
    /// A selftest check FAILed, or the run_id's files could not be returned.
    Refused,
    /// pg_dump, encryption or the disk failed.
    Failed,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::Reused => "reused",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

/// What the last selftest found.
#[derive(Debug, Clone, Default)]
struct Selftest {
    at: f64,
    passed: bool,
    checks: Vec<(&'static str, CheckStatus)>,
    key_expires_at: Option<f64>,
    space: Option<(u64, u64)>,
    artifacts: Option<(u64, u64)>,
}

#[derive(Debug, Default)]
struct State {
    selftest: Option<Selftest>,
    backups: BTreeMap<Outcome, u64>,
    last_attempt: Option<f64>,
    /// (completed at, duration seconds, size bytes)
    last_success: Option<(f64, f64, u64)>,
    /// Offsite uploads by result (ok, failed).
    uploads: BTreeMap<&'static str, u64>,
    /// (pending uploads, age of the oldest in seconds), when offsite is on.
    queue: Option<(u64, u64)>,
}

/// The daemon's reporting surface.
pub struct Admin {
    health: HealthReporter,
    state: Mutex<State>,
    /// Held while a verdict is published (state, health, STATUS), so two
    /// selftests finishing together cannot interleave; holds the sequence
    /// number of the newest selftest published.
    publishing: tokio::sync::Mutex<u64>,
    writing: tokio::sync::Mutex<()>,
}

fn seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Admin {
    /// Starts NOT_SERVING until the first selftest passes.
    pub async fn new(health: HealthReporter) -> Self {
        for service in ["", cutter_backup::SERVICE_NAME] {
            health
                .set_service_status(service, ServingStatus::NotServing)
                .await;
        }
        Self {
            health,
            state: Mutex::new(State::default()),
            publishing: tokio::sync::Mutex::new(0),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A selftest finished: health, STATUS, journal, metrics. `seq` is the
    /// order the selftest *started* in: a slower, older one finishing late
    /// (a database timeout, a reload in between) never overwrites a newer
    /// verdict.
    pub async fn selftest_done(&self, seq: u64, setup: &Setup, report: &Report) {
        // From the store's census: listed once, not on every selftest.
        let store = setup.store.clone();
        let artifacts =
            tokio::task::spawn_blocking(move || store.tally().ok().map(|t| (t.runs, t.bytes)))
                .await
                .ok()
                .flatten();
        let mut newest = self.publishing.lock().await;
        if seq < *newest {
            tracing::debug!(
                seq,
                newest = *newest,
                "an older selftest finished late: not published"
            );
            return;
        }
        *newest = seq;
        self.state().queue = queue_state(setup);
        let passed = report.passed();
        let changed = {
            let mut st = self.state();
            let before = st.selftest.as_ref().map(|s| s.passed);
            st.selftest = Some(Selftest {
                at: seconds(SystemTime::now()),
                passed,
                checks: report.checks.iter().map(|c| (c.name, c.status)).collect(),
                key_expires_at: report.key_expires_at.map(seconds),
                space: report.space,
                artifacts,
            });
            before != Some(passed)
        };
        // Health follows what a caller can get: in async mode backups
        // complete (and queue) whatever the bucket does.
        let status = if report.serving() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for service in ["", cutter_backup::SERVICE_NAME] {
            self.health.set_service_status(service, status).await;
        }
        notify::status(&summarize(setup, report));
        let failing: Vec<&str> = report
            .checks
            .iter()
            .filter(|c| c.status == CheckStatus::Fail)
            .map(|c| c.name)
            .collect();
        if passed && changed {
            tracing::info!("selftest PASS");
        } else if !passed && changed {
            tracing::warn!(check = %failing.join(","), "selftest FAIL: {}", report.failures());
        } else {
            tracing::debug!(passed, "selftest");
        }
        self.write_textfile(setup).await;
    }

    /// The daemon is stopping: NOT_SERVING, then the statuses are removed,
    /// which ends open Health.Watch streams (a graceful stop waits for them).
    pub async fn stopping(&self) {
        let _publishing = self.publishing.lock().await;
        let mut health = self.health.clone();
        for service in ["", cutter_backup::SERVICE_NAME] {
            health
                .set_service_status(service, ServingStatus::NotServing)
                .await;
            health.clear_service_status(service).await;
        }
    }

    /// The newest backup this daemon signed, found on disk at start: the
    /// `last_success` gauges survive a restart (an alert on "no success
    /// lately" must not fire because the daemon restarted).
    pub fn seed_last_success(&self, at: SystemTime, duration_ms: u64, size_bytes: u64) {
        let mut st = self.state();
        if st.last_success.is_none() {
            st.last_success = Some((seconds(at), duration_ms as f64 / 1000.0, size_bytes));
        }
    }

    /// A backup call ended.
    pub async fn backup_done(
        &self,
        setup: &Setup,
        outcome: Outcome,
        size_bytes: u64,
        duration_ms: u64,
    ) {
        {
            let mut st = self.state();
            let now = seconds(SystemTime::now());
            *st.backups.entry(outcome).or_default() += 1;
            st.last_attempt = Some(now);
            if outcome == Outcome::Complete {
                st.last_success = Some((now, duration_ms as f64 / 1000.0, size_bytes));
            }
        }
        self.write_textfile(setup).await;
    }

    /// An offsite upload ended (required mode or the async queue).
    pub fn offsite_upload(&self, setup: &Setup, ok: bool) {
        let mut st = self.state();
        *st.uploads
            .entry(if ok { "ok" } else { "failed" })
            .or_default() += 1;
        st.queue = queue_state(setup);
    }

    /// The metrics in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let st = self.state();
        let mut m = Exposition::default();
        m.gauge(
            "cutter_backup_build_info",
            "Version and source commit of the running daemon.",
            &[(
                &[
                    ("version", cutter_backup::VERSION),
                    ("commit", cutter_backup::SOURCE_COMMIT),
                ][..],
                1.0,
            )],
        );
        m.counter(
            "cutter_backup_backups_total",
            "PreWriteBackup calls by result (complete, reused, refused, failed).",
            &[
                Outcome::Complete,
                Outcome::Reused,
                Outcome::Refused,
                Outcome::Failed,
            ]
            .map(|o| {
                (
                    [("result", o.label())],
                    st.backups.get(&o).copied().unwrap_or(0) as f64,
                )
            }),
        );
        if let Some(t) = st.last_attempt {
            m.single(
                "cutter_backup_last_attempt_timestamp_seconds",
                "When a PreWriteBackup call last ended, whatever its result.",
                t,
            );
        }
        if let Some((at, duration, size)) = st.last_success {
            m.single(
                "cutter_backup_last_success_timestamp_seconds",
                "When the last new backup completed.",
                at,
            );
            m.single(
                "cutter_backup_last_duration_seconds",
                "Wall time of the last new backup.",
                duration,
            );
            m.single(
                "cutter_backup_last_size_bytes",
                "Artifact size of the last new backup.",
                size as f64,
            );
        }
        if let Some((pending, age)) = st.queue {
            m.counter(
                "cutter_backup_offsite_uploads_total",
                "Offsite uploads by result (ok, failed; a failed attempt of the async queue counts each time).",
                &["ok", "failed"].map(|r| {
                    (
                        [("result", r)],
                        st.uploads.get(r).copied().unwrap_or(0) as f64,
                    )
                }),
            );
            m.single(
                "cutter_backup_offsite_pending",
                "Runs waiting in the offsite upload queue (async mode).",
                pending as f64,
            );
            m.single(
                "cutter_backup_offsite_oldest_pending_seconds",
                "How long the oldest queued upload has waited (0 when none).",
                age as f64,
            );
        }
        if let Some(s) = &st.selftest {
            m.single(
                "cutter_backup_selftest_passed",
                "1 when no check of the last selftest failed, else 0 (in offsite async mode a lagging upload queue fails it while backups still complete: see cutter_backup_check_passed).",
                f64::from(u8::from(s.passed)),
            );
            m.single(
                "cutter_backup_selftest_timestamp_seconds",
                "When the last selftest ran.",
                s.at,
            );
            let checks: Vec<([(&str, &str); 1], f64)> = s
                .checks
                .iter()
                .map(|(name, status)| {
                    (
                        [("check", *name)],
                        f64::from(u8::from(*status != CheckStatus::Fail)),
                    )
                })
                .collect();
            m.gauge(
                "cutter_backup_check_passed",
                "1 when the selftest check passed or warned, 0 when it failed.",
                &checks,
            );
            let warned: Vec<_> = s
                .checks
                .iter()
                .map(|(name, status)| {
                    (
                        [("check", *name)],
                        f64::from(u8::from(*status == CheckStatus::Warn)),
                    )
                })
                .collect();
            m.gauge(
                "cutter_backup_check_warned",
                "1 when the selftest check warned (works, needs attention: an offsite bucket down in async mode, say), else 0.",
                &warned,
            );
            if let Some((count, bytes)) = s.artifacts {
                m.single(
                    "cutter_backup_artifacts",
                    "Artifacts in backup.dir.",
                    count as f64,
                );
                m.single(
                    "cutter_backup_artifact_bytes",
                    "Bytes of artifacts in backup.dir.",
                    bytes as f64,
                );
            }
            if let Some(t) = s.key_expires_at {
                m.single(
                    "cutter_backup_key_expiry_timestamp_seconds",
                    "When encryption to the configured key stops working.",
                    t,
                );
            }
            if let Some((free, need)) = s.space {
                m.single(
                    "cutter_backup_disk_free_bytes",
                    "Free bytes on the file system of backup.dir.",
                    free as f64,
                );
                m.single(
                    "cutter_backup_disk_required_bytes",
                    "Bytes a backup needs there: the estimated dump plus backup.free_space_margin_mib.",
                    need as f64,
                );
            }
        }
        m.into_text()
    }

    /// Writes the metrics to `metrics.textfile` (temp file and rename, so
    /// node_exporter never reads half a file) on a blocking thread; failures
    /// are logged. Renders and renames one at a time, so an older render
    /// never lands last.
    async fn write_textfile(&self, setup: &Setup) {
        let Some(path) = setup.config.metrics.textfile.clone() else {
            return;
        };
        let _one_at_a_time = self.writing.lock().await;
        let text = self.render();
        let written = tokio::task::spawn_blocking(move || {
            write_atomically(&path, text.as_bytes()).map_err(|e| (path, e))
        })
        .await;
        if let Ok(Err((path, e))) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot write metrics.textfile");
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".cutter_backup.prom.")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    // node_exporter runs as another user: the metrics are not secret.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Pending uploads and the oldest one's age, when offsite is configured.
pub fn queue_state(setup: &Setup) -> Option<(u64, u64)> {
    let o = setup.offsite.as_ref()?.as_ref().ok()?;
    let pending = o.queue.as_ref().map(|q| q.list()).unwrap_or_default();
    let age = pending
        .first()
        .map(|p| cutter_core::offsite::queue::now().saturating_sub(p.enqueued_at))
        .unwrap_or(0);
    Some((pending.len() as u64, age))
}
