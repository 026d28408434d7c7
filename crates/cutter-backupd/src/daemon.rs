//! The daemon's shared state: the current [`Setup`] (swapped on reload), the
//! in-flight backups, the concurrency limit and the stop flag.
//!
//! Concurrency: requests for one run_id share one backup (single flight);
//! different run_ids run in parallel up to `backup.max_concurrent`. A backup
//! runs in its own task, so a caller that disconnects does not cancel it;
//! only the end of the stop grace period does.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use tokio::sync::{Semaphore, watch};

use cutter_core::backup::{self, Cancel, Producer};
use cutter_core::config::{Config, OffsiteMode};
use cutter_core::manifest::Manifest;
use cutter_core::offsite::Streaming;
use cutter_core::runid::RunId;
use cutter_core::selftest::summarize;
use cutter_core::selftest::{self, Ready, Report};
use cutter_core::setup::Setup;
use cutter_core::store::Store;
use cutter_core::{Error, ErrorKind};

use crate::admin::{self, Admin};
use crate::notify;

/// A finished backup: its manifest, whether it already existed, and the
/// directory it is in (the setup it was taken with, whatever a reload did since).
#[derive(Debug, Clone)]
pub struct Done {
    /// The run.
    pub run_id: RunId,
    /// Who signed the manifest.
    pub signer_fpr: String,
    /// The manifest.
    pub manifest: Manifest,
    /// True for an idempotent retry that returned an existing artifact.
    pub reused: bool,
    /// The store it was written to.
    pub store: Store,
    /// `s3://…` of the confirmed offsite copy (required mode), else empty.
    pub offsite_ref: String,
    /// The version of that copy's artifact, on a versioned bucket.
    pub offsite_version: String,
}

/// The outcome of one flight, shared by every caller of that run_id.
pub type Outcome = Result<Done, Arc<Error>>;

/// One run_id's backup in progress.
struct Flight {
    done: watch::Receiver<Option<Outcome>>,
    progress: Arc<AtomicU64>,
    started: Instant,
}

/// A running backup as Status reports it.
pub struct Running {
    /// The run.
    pub run_id: String,
    /// Plaintext bytes dumped so far.
    pub bytes: u64,
    /// Since the flight started.
    pub elapsed: std::time::Duration,
}

/// State shared by every request.
pub struct Daemon {
    config_path: PathBuf,
    setup: RwLock<Arc<Setup>>,
    flights: Mutex<HashMap<String, Flight>>,
    /// One semaphore for the daemon's life: a reload resizes it (a new one
    /// would let old and new permits add up past `backup.max_concurrent`).
    permits: Arc<Semaphore>,
    limit: Mutex<usize>,
    running: AtomicUsize,
    stopping: AtomicBool,
    cancel: Cancel,
    /// When the daemon started.
    pub started: Instant,
    producer: Producer,
    admin: Admin,
    selftest_seq: AtomicU64,
    offsite_wake: tokio::sync::Notify,
}

impl Daemon {
    /// Wraps a loaded setup.
    pub fn new(config_path: PathBuf, setup: Setup, admin: Admin) -> Self {
        let limit = setup.config.backup.max_concurrent;
        Self {
            config_path,
            setup: RwLock::new(Arc::new(setup)),
            flights: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(limit)),
            limit: Mutex::new(limit),
            running: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            cancel: Arc::new(AtomicBool::new(false)),
            started: Instant::now(),
            admin,
            selftest_seq: AtomicU64::new(0),
            offsite_wake: tokio::sync::Notify::new(),
            producer: Producer(format!(
                "cutter-backupd {} ({})",
                cutter_backup::VERSION,
                cutter_backup::SOURCE_COMMIT
            )),
        }
    }

    /// The current setup; a running backup keeps the one it started with.
    pub fn setup(&self) -> Arc<Setup> {
        Arc::clone(&self.setup.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Re-reads the config and env; a broken config keeps the last good one.
    pub async fn reload(&self) -> String {
        notify::reloading();
        let loaded = Config::load(&self.config_path)
            .and_then(|c| Setup::load(c, Setup::env_fingerprint(), cutter_offsite::connect));
        let summary = match loaded {
            Ok(setup) => {
                self.resize_permits(setup.config.backup.max_concurrent);
                *self.setup.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(setup);
                let summary = self.summary().await;
                tracing::info!(status = %summary, "reloaded");
                summary
            }
            Err(e) => {
                tracing::error!(error = %e, "reload failed; keeping the last good config");
                format!(
                    "{} (reload failed, kept the last good config: {e})",
                    self.summary().await
                )
            }
        };
        notify::reloaded(&summary);
        summary
    }

    /// Grows the semaphore at once; shrinks it by taking permits as running
    /// backups return them (in a task: a reload does not wait), so at most
    /// the new limit run once the running ones are done.
    fn resize_permits(&self, new: usize) {
        let mut limit = self.limit.lock().unwrap_or_else(PoisonError::into_inner);
        if new > *limit {
            self.permits.add_permits(new - *limit);
        } else if new < *limit {
            let surplus = u32::try_from(*limit - new).unwrap_or(u32::MAX);
            let permits = Arc::clone(&self.permits);
            tokio::spawn(async move {
                if let Ok(p) = permits.acquire_many_owned(surplus).await {
                    p.forget();
                }
            });
        }
        *limit = new;
    }

    /// The one-line STATUS text, from a fresh selftest.
    pub async fn summary(&self) -> String {
        let setup = self.setup();
        let (report, _) = self.selftest(&setup).await;
        summarize(&setup, &report)
    }

    /// Runs every check against `setup` and reports the verdict (health,
    /// STATUS, metrics, journal). Every selftest goes through here.
    pub async fn selftest(&self, setup: &Setup) -> (Report, Option<Ready>) {
        let seq = self.selftest_seq.fetch_add(1, Ordering::SeqCst) + 1;
        let (report, ready) = selftest::run(setup).await;
        self.admin.selftest_done(seq, setup, &report).await;
        (report, ready)
    }

    /// The reporting surface.
    pub fn admin(&self) -> &Admin {
        &self.admin
    }

    /// Backups currently running.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Refuse new backups from now on.
    pub fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// True once the daemon is stopping.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Abort running backups: pg_dump is killed, partials removed.
    pub fn cancel_running(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Resolves once running backups are cancelled.
    async fn cancelled(&self) {
        while !self.cancel.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// The backup for `run_id`, shared with concurrent callers of the same id.
    pub async fn backup(self: &Arc<Self>, run_id: String) -> Outcome {
        let run_id = RunId::parse(&run_id).map_err(Arc::new)?;
        if self.stopping.load(Ordering::SeqCst) {
            return Err(Arc::new(Error::Stopping));
        }
        let mut rx = {
            let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            match flights.get(run_id.as_str()) {
                Some(f) => f.done.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    let progress = Arc::new(AtomicU64::new(0));
                    flights.insert(
                        run_id.to_string(),
                        Flight {
                            done: rx.clone(),
                            progress: Arc::clone(&progress),
                            started: Instant::now(),
                        },
                    );
                    self.running.fetch_add(1, Ordering::SeqCst);
                    let me = Arc::clone(self);
                    tokio::spawn(async move {
                        let started = Instant::now();
                        let outcome = me.run_backup(&run_id, &progress).await.map_err(Arc::new);
                        me.record(&outcome, started).await;
                        let _ = tx.send(Some(outcome));
                        me.flights
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(run_id.as_str());
                        me.running.fetch_sub(1, Ordering::SeqCst);
                    });
                    rx
                }
            }
        };
        let lost = || {
            Arc::new(Error::Internal(
                "the backup task ended without a result".into(),
            ))
        };
        match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or_else(|| Err(lost())),
            Err(_) => Err(lost()),
        }
    }

    async fn record(&self, outcome: &Outcome, started: Instant) {
        let (kind, size) = match outcome {
            Ok(d) if d.reused => (admin::Outcome::Reused, d.manifest.size_bytes),
            Ok(d) => (admin::Outcome::Complete, d.manifest.size_bytes),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::FailedPrecondition
                        | ErrorKind::AlreadyExists
                        | ErrorKind::Unavailable
                ) =>
            {
                (admin::Outcome::Refused, 0)
            }
            Err(_) => (admin::Outcome::Failed, 0),
        };
        // The backup's own duration (its manifest's), not the time spent
        // in selftest or waiting for a permit.
        let ms = match outcome {
            Ok(d) => d.manifest.duration_ms,
            Err(_) => u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        self.admin.backup_done(&self.setup(), kind, size, ms).await;
    }

    /// The backups running now, for Status (and cutterctl's progress line).
    pub fn running_backups(&self) -> Vec<Running> {
        let flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<Running> = flights
            .iter()
            .map(|(id, f)| Running {
                run_id: id.clone(),
                bytes: f.progress.load(Ordering::Relaxed),
                elapsed: f.started.elapsed(),
            })
            .collect();
        out.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        out
    }

    async fn run_backup(&self, id: &RunId, progress: &Arc<AtomicU64>) -> Result<Done, Error> {
        let run_id = id.as_str();
        let setup = self.setup();
        let (report, ready) = self.selftest(&setup).await;
        let Some(ready) = ready else {
            let e = report.refusal();
            tracing::warn!(run_id, error = %e, "backup refused run_id={run_id}: {e}");
            return Err(e);
        };
        let existing = {
            let (setup, ready, id) = (Arc::clone(&setup), ready.clone(), id.clone());
            tokio::task::spawn_blocking(move || backup::reusable(&setup, &ready, &id))
                .await
                .map_err(|e| Error::Internal(format!("verify task failed: {e}")))?
        };
        if let Err(e) = &existing {
            tracing::warn!(run_id, error = %e, "backup refused run_id={run_id}: {e}");
        }
        if let Some(m) = existing? {
            tracing::info!(
                run_id,
                sha256 = %m.sha256,
                "returning the existing complete artifact run_id={run_id} sha256={}",
                m.sha256
            );
            return Ok(Done {
                run_id: id.clone(),
                signer_fpr: ready.signer().fingerprint(),
                manifest: m,
                reused: true,
                store: setup.store.clone(),
                offsite_ref: String::new(),
                offsite_version: String::new(),
            })
            .and_then_offsite(self, &setup, id, None)
            .await;
        }
        let _permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| Error::Stopping)?;
        let started = Instant::now();
        // Required mode sends the artifact while it is written.
        let streaming = match (&setup.config.offsite, &setup.offsite) {
            (Some(cfg), Some(Ok(o))) if matches!(cfg.mode, OffsiteMode::Required) => {
                Some(Arc::clone(&o.backend))
            }
            _ => None,
        };
        let taken = backup::take(
            &setup,
            &ready,
            id,
            &self.producer,
            &self.cancel,
            progress,
            streaming.as_deref(),
        )
        .await;
        match taken {
            Ok(backup::Taken {
                manifest: m,
                upload,
            }) => {
                let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                tracing::info!(
                    run_id,
                    sha256 = %m.sha256,
                    size_bytes = m.size_bytes,
                    rows = m.total_rows(),
                    duration_ms,
                    "backup complete run_id={run_id} size={} sha256={} rows={} duration_ms={duration_ms}",
                    m.size_bytes,
                    m.sha256,
                    m.total_rows()
                );
                Ok(Done {
                    run_id: id.clone(),
                    signer_fpr: ready.signer().fingerprint(),
                    manifest: m,
                    reused: false,
                    store: setup.store.clone(),
                    offsite_ref: String::new(),
                    offsite_version: String::new(),
                })
                .and_then_offsite(self, &setup, id, upload)
                .await
            }
            Err(e) => {
                tracing::error!(
                    run_id,
                    error = %e,
                    "backup failed run_id={run_id}: {e}; nothing was left behind"
                );
                Err(e)
            }
        }
    }
}

/// The offsite step after a local commit (or an idempotent retry).
trait ThenOffsite {
    async fn and_then_offsite(
        self,
        daemon: &Daemon,
        setup: &Setup,
        id: &RunId,
        upload: Option<Box<dyn Streaming>>,
    ) -> Result<Done, Error>;
}

impl ThenOffsite for Result<Done, Error> {
    /// `required`: finish the streamed upload (or upload now) and confirm
    /// it, or fail UNAVAILABLE (the local artifact stays; a retry of the
    /// run_id only uploads). `async`: queue it durably and wake the
    /// uploader.
    async fn and_then_offsite(
        self,
        daemon: &Daemon,
        setup: &Setup,
        id: &RunId,
        upload: Option<Box<dyn Streaming>>,
    ) -> Result<Done, Error> {
        let (mut done, cfg) = match (self, &setup.config.offsite) {
            (Ok(done), Some(cfg)) => (done, cfg),
            (other, _) => {
                if let Some(u) = upload {
                    u.abort().await;
                }
                return other;
            }
        };
        let offsite_err = |reason: String| Error::Offsite {
            run_id: id.to_string(),
            reason,
        };
        let o = match setup.offsite.as_ref() {
            Some(Ok(o)) => Arc::clone(o),
            Some(Err(why)) => return Err(offsite_err(why.clone())),
            None => return Ok(done),
        };
        match cfg.mode {
            OffsiteMode::Required => {
                let own = setup.signer.as_ref().ok().map(|s| s.public_cert());
                let result = match upload {
                    // The stop grace period ends the upload too: dropping
                    // it makes its task abort what it sent.
                    Some(u) => tokio::select! {
                        r = u.finish(&done.store, &done.manifest, own.as_ref()) => r,
                        () = daemon.cancelled() => Err(
                            "the daemon stopped before the upload finished; it was aborted: retry the same run_id to upload".to_owned()
                        ),
                    },
                    None => {
                        o.backend
                            .upload(&done.store, id, own.as_ref(), Some(&done.manifest))
                            .await
                    }
                };
                daemon.admin.offsite_upload(setup, result.is_ok());
                match result {
                    Ok(up) => {
                        done.offsite_ref = up.url;
                        done.offsite_version = up.version.unwrap_or_default();
                    }
                    Err(reason) => {
                        tracing::error!(run_id = %id, error = %reason, "offsite upload failed run_id={id}: {reason}");
                        return Err(offsite_err(reason));
                    }
                }
            }
            OffsiteMode::Async => {
                if let Some(u) = upload {
                    u.abort().await;
                }
                let queue = o
                    .queue
                    .as_ref()
                    .ok_or_else(|| offsite_err("no queue".into()))?;
                queue.push(id).map_err(offsite_err)?;
                daemon.offsite_wake.notify_one();
            }
        }
        Ok(done)
    }
}

impl Daemon {
    /// The async mode's uploader: drains `offsite.queue_dir` with backoff,
    /// woken by every queued backup and once a second; runs for the
    /// daemon's life (what it has not finished stays queued on disk).
    pub async fn run_uploader(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = self.offsite_wake.notified() => {}
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
            if self.is_stopping() {
                return;
            }
            let setup = self.setup();
            let Some(Ok(o)) = setup.offsite.as_ref() else {
                continue;
            };
            let Some(queue) = o.queue.as_ref() else {
                continue;
            };
            let max_backoff = setup
                .config
                .offsite
                .as_ref()
                .map_or(300, |c| c.retry_max_secs);
            for p in queue.list() {
                let now = cutter_core::offsite::queue::now();
                if !p.due(now, max_backoff) || self.is_stopping() {
                    continue;
                }
                let Ok(id) = RunId::parse(&p.run_id) else {
                    continue;
                };
                let own = setup.signer.as_ref().ok().map(|s| s.public_cert());
                let result = o
                    .backend
                    .upload(&setup.store, &id, own.as_ref(), None)
                    .await;
                self.admin.offsite_upload(&setup, result.is_ok());
                let recorded = match &result {
                    Ok(r) => {
                        tracing::info!(run_id = %id, offsite_ref = %r.url, attempts = p.attempts + 1, "queued offsite upload done run_id={id}");
                        queue.done(&id)
                    }
                    Err(e) => {
                        tracing::warn!(run_id = %id, error = %e, attempts = p.attempts + 1, "queued offsite upload failed run_id={id}: {e}");
                        queue.failed(&p, e, max_backoff)
                    }
                };
                if let Err(e) = recorded {
                    tracing::error!(run_id = %id, error = %e, "cannot update the offsite queue");
                }
            }
        }
    }
}
