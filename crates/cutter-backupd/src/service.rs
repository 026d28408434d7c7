//! The gRPC service and the server's life: load, bind, READY, serve, reload
//! on SIGHUP, stop on SIGTERM.
//!
//! Concurrency: requests for one run_id share one backup (single flight);
//! different run_ids run in parallel up to `backup.max_concurrent`. A backup
//! runs in its own task, so a caller that disconnects does not cancel it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Instant, SystemTime};

use anyhow::Context;
use tokio::sync::{Semaphore, watch};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use cutter_backup::v1::backup_service_server::{BackupService, BackupServiceServer};
use cutter_backup::v1::{
    BackupEnvelope, Check, LastBackup, PreWriteBackupRequest, SelftestReport, SelftestRequest,
    StatusReport, StatusRequest, TableCount, check,
};
use cutter_core::backup::{self, Producer};
use cutter_core::config::Config;
use cutter_core::manifest::Manifest;
use cutter_core::selftest::{self, Report};
use cutter_core::setup::{KeyResolution, Setup, shown_key};
use cutter_core::store::Entry;
use cutter_core::{Error, ErrorKind, key, runid};

use crate::{listener, notify, peer, signals::Signals};

/// The outcome of one flight, shared by every caller of that run_id.
type Outcome = Result<(Manifest, bool), Arc<Error>>;

/// State shared by every request.
pub struct Daemon {
    config_path: PathBuf,
    setup: RwLock<Arc<Setup>>,
    flights: Mutex<HashMap<String, watch::Receiver<Option<Outcome>>>>,
    permits: RwLock<Arc<Semaphore>>,
    started: Instant,
    producer: Producer,
}

impl Daemon {
    fn new(config_path: PathBuf, setup: Setup) -> Self {
        let permits = Arc::new(Semaphore::new(setup.config.backup.max_concurrent));
        Self {
            config_path,
            setup: RwLock::new(Arc::new(setup)),
            flights: Mutex::new(HashMap::new()),
            permits: RwLock::new(permits),
            started: Instant::now(),
            producer: Producer(format!(
                "cutter-backupd {} ({})",
                cutter_backup::VERSION,
                cutter_backup::SOURCE_COMMIT
            )),
        }
    }

    /// The current setup; a running backup keeps the one it started with.
    fn setup(&self) -> Arc<Setup> {
        Arc::clone(&self.setup.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Re-reads the config and env; a broken config keeps the last good one.
    async fn reload(&self) -> String {
        notify::reloading();
        let loaded =
            Config::load(&self.config_path).and_then(|c| Setup::load(c, Setup::env_fingerprint()));
        let summary = match loaded {
            Ok(setup) => {
                let permits = Arc::new(Semaphore::new(setup.config.backup.max_concurrent));
                *self.setup.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(setup);
                *self.permits.write().unwrap_or_else(PoisonError::into_inner) = permits;
                let summary = self.summary().await;
                tracing::info!(status = %summary, "reloaded");
                summary
            }
            Err(e) => {
                let summary = format!(
                    "{} (reload failed, kept the last good config: {e})",
                    self.summary().await
                );
                tracing::error!(error = %e, "reload failed; keeping the last good config");
                summary
            }
        };
        notify::reloaded(&summary);
        summary
    }

    /// The one-line STATUS text.
    async fn summary(&self) -> String {
        let setup = self.setup();
        let (report, _) = selftest::run(&setup).await;
        summarize(&setup, &report)
    }

    async fn backup_flight(self: &Arc<Self>, run_id: String) -> Outcome {
        let mut rx = {
            let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            match flights.get(&run_id) {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    flights.insert(run_id.clone(), rx.clone());
                    let me = Arc::clone(self);
                    tokio::spawn(async move {
                        let outcome = me.run_backup(&run_id).await.map_err(Arc::new);
                        let _ = tx.send(Some(outcome));
                        me.flights
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(&run_id);
                    });
                    rx
                }
            }
        };
        match rx.wait_for(Option::is_some).await {
            Ok(v) => v
                .clone()
                .unwrap_or_else(|| Err(Arc::new(Error::Encrypt("backup task vanished".into())))),
            Err(_) => Err(Arc::new(Error::Encrypt(
                "backup task ended without a result".into(),
            ))),
        }
    }

    async fn run_backup(&self, run_id: &str) -> Result<(Manifest, bool), Error> {
        let setup = self.setup();
        let (report, ready) = selftest::run(&setup).await;
        let Some(ready) = ready else {
            let e = report.refusal();
            tracing::warn!(run_id, error = %e, "backup refused");
            return Err(e);
        };
        let store = setup.store.clone();
        let id = run_id.to_owned();
        let existing = tokio::task::spawn_blocking(move || store.existing_verified(&id))
            .await
            .map_err(|e| Error::Encrypt(format!("verify task failed: {e}")))??;
        if let Some(m) = existing {
            tracing::info!(run_id, sha256 = %m.sha256, "returning the existing complete artifact");
            return Ok((m, true));
        }
        let permits = Arc::clone(&self.permits.read().unwrap_or_else(PoisonError::into_inner));
        let _permit = permits
            .acquire_owned()
            .await
            .map_err(|_| Error::NotReady("daemon is shutting down".into()))?;
        let started = Instant::now();
        match backup::take(&setup, &ready, run_id, &self.producer).await {
            Ok(m) => {
                tracing::info!(
                    run_id,
                    sha256 = %m.sha256,
                    size_bytes = m.size_bytes,
                    rows = m.total_rows(),
                    duration_ms = started.elapsed().as_millis() as u64,
                    "backup complete"
                );
                Ok((m, false))
            }
            Err(e) => {
                tracing::error!(run_id, error = %e, "backup failed; nothing was left behind");
                Err(e)
            }
        }
    }
}

/// The gRPC face of [`Daemon`].
#[derive(Clone)]
pub struct Service(Arc<Daemon>);

impl Service {
    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        peer::authorize(req, &self.0.setup().config.server.allowed_uids)
    }
}

#[tonic::async_trait]
impl BackupService for Service {
    async fn pre_write_backup(
        &self,
        req: Request<PreWriteBackupRequest>,
    ) -> Result<Response<BackupEnvelope>, Status> {
        self.authorize(&req)?;
        let run_id = req.into_inner().run_id;
        runid::validate(&run_id).map_err(|e| to_status(&e))?;
        let (manifest, reused) = self
            .0
            .backup_flight(run_id)
            .await
            .map_err(|e| to_status(&e))?;
        let setup = self.0.setup();
        Ok(Response::new(envelope(&setup, &manifest, reused)))
    }

    async fn selftest(
        &self,
        req: Request<SelftestRequest>,
    ) -> Result<Response<SelftestReport>, Status> {
        self.authorize(&req)?;
        let (report, _) = selftest::run(&self.0.setup()).await;
        Ok(Response::new(SelftestReport {
            passed: report.passed(),
            checks: report.checks.iter().map(to_check).collect(),
        }))
    }

    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<StatusReport>, Status> {
        self.authorize(&req)?;
        let setup = self.0.setup();
        let (report, _) = selftest::run(&setup).await;
        let store = setup.store.clone();
        let entries = tokio::task::spawn_blocking(move || store.list())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .unwrap_or_default();
        let key_expires_at = match &setup.key {
            KeyResolution::Loaded(c, _) => key::usable(c, SystemTime::now())
                .ok()
                .and_then(|k| k.expires_at)
                .map(cutter_core::time::rfc3339)
                .unwrap_or_default(),
            _ => String::new(),
        };
        let last_backup = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Complete(m) => Some(m),
                Entry::Orphan { .. } => None,
            })
            .max_by(|a, b| a.created_at.cmp(&b.created_at))
            .map(|m| LastBackup {
                run_id: m.run_id.clone(),
                created_at: m.created_at.clone(),
                size_bytes: m.size_bytes,
                sha256: m.sha256.clone(),
            });
        let artifact_bytes = entries
            .iter()
            .map(|e| match e {
                Entry::Complete(m) => m.size_bytes,
                Entry::Orphan { size_bytes, .. } => *size_bytes,
            })
            .sum();
        Ok(Response::new(StatusReport {
            version: cutter_backup::VERSION.to_owned(),
            source_commit: cutter_backup::SOURCE_COMMIT.to_owned(),
            uptime_seconds: self.0.started.elapsed().as_secs(),
            ready: report.passed(),
            summary: summarize(&setup, &report),
            key_fpr_tail: setup
                .key
                .fingerprint()
                .map(|f| f.tail().to_owned())
                .unwrap_or_default(),
            key_expires_at,
            last_backup,
            artifact_count: entries.len() as u64,
            artifact_bytes,
            backup_dir: setup.store.dir().display().to_string(),
            disk_free_bytes: selftest::free_bytes(setup.store.dir()).unwrap_or(0),
            tables_in_scope: u32::try_from(setup.tables.len()).unwrap_or(u32::MAX),
        }))
    }
}

fn summarize(setup: &Setup, report: &Report) -> String {
    if report.passed() {
        format!(
            "ready: key {}, {} tables",
            shown_key(&setup.key),
            setup.tables.len()
        )
    } else {
        format!("FAIL-CLOSED: {}", report.failures())
    }
}

fn envelope(setup: &Setup, m: &Manifest, reused: bool) -> BackupEnvelope {
    BackupEnvelope {
        run_id: m.run_id.clone(),
        sha256: m.sha256.clone(),
        size_bytes: m.size_bytes,
        gpg_fpr: m.gpg_fpr.clone(),
        artifact_ref: setup.store.artifact_path(&m.run_id).display().to_string(),
        created_at: m.created_at.clone(),
        tables: m
            .tables
            .iter()
            .map(|t| TableCount {
                table: t.table.clone(),
                rows: t.rows,
            })
            .collect(),
        manifest_ref: setup.store.manifest_path(&m.run_id).display().to_string(),
        server_version: m.server_version.clone(),
        pg_dump_version: m.pg_dump_version.clone(),
        duration_ms: m.duration_ms,
        reused,
        recipient_fprs: m.recipients.iter().map(|r| r.fingerprint.clone()).collect(),
    }
}

fn to_check(c: &selftest::Check) -> Check {
    let status = match c.status {
        selftest::Status::Pass => check::Status::Pass,
        selftest::Status::Warn => check::Status::Warn,
        selftest::Status::Fail => check::Status::Fail,
    };
    Check {
        name: c.name.to_owned(),
        status: status.into(),
        detail: c.detail.clone(),
    }
}

fn to_status(e: &Error) -> Status {
    let msg = e.to_string();
    match e.kind() {
        ErrorKind::InvalidArgument => Status::invalid_argument(msg),
        ErrorKind::FailedPrecondition => Status::failed_precondition(msg),
        ErrorKind::Unavailable => Status::unavailable(msg),
        ErrorKind::Internal => Status::internal(msg),
    }
}

/// Loads, binds, serves until SIGTERM/SIGINT, reloading on SIGHUP.
pub async fn run(config_path: PathBuf, config: Config) -> anyhow::Result<()> {
    let (shutdown, mut hup) = Signals::register()
        .context("registering signal handlers")?
        .split();
    let setup = Setup::load(config, Setup::env_fingerprint()).context("loading the config")?;
    recover(&setup);
    let listener = listener::bind(&setup.config.server.socket).await?;
    let socket = setup.config.server.socket.clone();
    tracing::info!(socket = %socket.display(), key = %shown_key(&setup.key), tables = setup.tables.len(), "listening");
    let daemon = Arc::new(Daemon::new(config_path, setup));
    notify::ready("starting: running the first selftest");
    {
        let d = Arc::clone(&daemon);
        tokio::spawn(async move {
            let summary = d.summary().await;
            tracing::info!(status = %summary, "first selftest");
            notify::status(&summary);
        });
    }
    {
        let d = Arc::clone(&daemon);
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                d.reload().await;
            }
        });
    }
    tonic::transport::Server::builder()
        .add_service(BackupServiceServer::new(Service(Arc::clone(&daemon))))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .context("serving gRPC")?;
    notify::stopping();
    daemon.setup().db.close().await;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped");
    Ok(())
}

/// Start-up recovery of partial files; a missing directory is selftest's job.
fn recover(setup: &Setup) {
    if !setup.store.dir().is_dir() {
        return;
    }
    match setup.store.recover() {
        Ok(r) => {
            for p in &r.removed {
                tracing::info!(path = %p.display(), "removed a leftover partial file");
            }
            for id in &r.completed {
                tracing::info!(run_id = %id, "completed a backup interrupted between renames");
            }
        }
        Err(e) => tracing::error!(error = %e, "start-up recovery failed"),
    }
}
