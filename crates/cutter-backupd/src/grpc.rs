//! The gRPC face of the daemon: authorisation of every call, the RPCs, and
//! the mapping of core errors to status codes a caller can act on.

use std::sync::Arc;
use std::time::SystemTime;

use tonic::{Request, Response, Status};

use cutter_backup::v1::backup_service_server::BackupService;
use cutter_backup::v1::{
    BackupEnvelope, Check, GetSignerRequest, LastBackup, ListReply, ListRequest, MetricsReply,
    MetricsRequest, PinReply, PinRequest, PreWriteBackupRequest, PruneReply, PruneRequest,
    RunningBackup, SelftestReport, SelftestRequest, SignerInfo, StatusReport, StatusRequest,
    TableCount, VerifyReply, VerifyRequest, check,
};
use cutter_core::selftest;
use cutter_core::setup::KeyResolution;
use cutter_core::{Error, ErrorKind, key};

use crate::daemon::{Daemon, Done};
use crate::{offsite_ops, ops};
use cutter_core::selftest::summarize;

/// The gRPC face of [`Daemon`].
#[derive(Clone)]
pub struct Service(pub Arc<Daemon>);

impl Service {
    fn running(&self) -> Vec<RunningBackup> {
        self.0
            .running_backups()
            .into_iter()
            .map(|r| RunningBackup {
                run_id: r.run_id,
                bytes: r.bytes,
                elapsed_ms: u64::try_from(r.elapsed.as_millis()).unwrap_or(u64::MAX),
            })
            .collect()
    }
}

#[tonic::async_trait]
impl BackupService for Service {
    async fn pre_write_backup(
        &self,
        req: Request<PreWriteBackupRequest>,
    ) -> Result<Response<BackupEnvelope>, Status> {
        let run_id = req.into_inner().run_id;
        let done = self.0.backup(run_id).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(envelope(&done)))
    }

    async fn selftest(
        &self,
        _req: Request<SelftestRequest>,
    ) -> Result<Response<SelftestReport>, Status> {
        let (report, _) = self.0.selftest(&self.0.setup()).await;
        Ok(Response::new(SelftestReport {
            passed: report.passed(),
            checks: report.checks.iter().map(to_check).collect(),
        }))
    }

    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<StatusReport>, Status> {
        if req.get_ref().running_only {
            return Ok(Response::new(StatusReport {
                version: cutter_backup::VERSION.to_owned(),
                source_commit: cutter_backup::SOURCE_COMMIT.to_owned(),
                uptime_seconds: self.0.started.elapsed().as_secs(),
                running: self.running(),
                ..StatusReport::default()
            }));
        }
        let setup = self.0.setup();
        let (report, _) = self.0.selftest(&setup).await;
        // From the store's census (no listing): count, bytes, and the
        // newest run this daemon signed (one manifest read when it is good).
        let store = setup.store.clone();
        let own = ops::own_signer(&setup);
        let (tally, newest) = tokio::task::spawn_blocking(move || {
            (
                store.tally().unwrap_or_default(),
                ops::newest_own(&store, &own),
            )
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        let key_expires_at = match &setup.key {
            KeyResolution::Loaded(c, _) => key::usable(c, SystemTime::now())
                .ok()
                .and_then(|k| k.expires_at)
                .map(cutter_core::time::rfc3339)
                .unwrap_or_default(),
            _ => String::new(),
        };
        let last_backup = newest.map(|m| LastBackup {
            run_id: m.run_id,
            created_at: m.created_at,
            size_bytes: m.size_bytes,
            sha256: m.sha256,
        });
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
            artifact_count: tally.runs,
            artifact_bytes: tally.bytes,
            backup_dir: setup.store.dir().display().to_string(),
            disk_free_bytes: selftest::free_bytes(setup.store.dir()).unwrap_or(0),
            tables_in_scope: u32::try_from(setup.tables.len()).unwrap_or(u32::MAX),
            running: self.running(),
            signer_fpr: setup
                .signer
                .as_ref()
                .map(|s| s.fingerprint())
                .unwrap_or_default(),
            ..offsite_status(&setup)
        }))
    }

    async fn list(&self, _req: Request<ListRequest>) -> Result<Response<ListReply>, Status> {
        let setup = self.0.setup();
        let remote = offsite_ops::remote_runs(&setup).await;
        ops::blocking(move || {
            let mut reply = ops::list(&setup.store, &ops::own_signer(&setup))?;
            offsite_ops::merge(&mut reply, &setup, remote);
            Ok(reply)
        })
        .await
        .map(Response::new)
    }

    async fn verify(&self, req: Request<VerifyRequest>) -> Result<Response<VerifyReply>, Status> {
        let r = req.into_inner();
        let setup = self.0.setup();
        ops::blocking(move || {
            let trust = ops::trust(&setup, &r.signer_certs, &r.expect_sha256)?;
            ops::verify(&setup.store, &trust, &r.run_id, r.all)
        })
        .await
        .map(Response::new)
    }

    async fn prune(&self, req: Request<PruneRequest>) -> Result<Response<PruneReply>, Status> {
        let confirm = req.into_inner().confirm;
        let setup = self.0.setup();
        let local = Arc::clone(&setup);
        let mut reply = ops::blocking(move || ops::prune(&local, confirm)).await?;
        offsite_ops::prune(&setup, &mut reply).await;
        Ok(Response::new(reply))
    }

    async fn pin(&self, req: Request<PinRequest>) -> Result<Response<PinReply>, Status> {
        let r = req.into_inner();
        let setup = self.0.setup();
        let store = setup.store.clone();
        let (run_id, pinned) = (r.run_id.clone(), r.pinned);
        ops::blocking(move || ops::pin(&store, &r.run_id, r.pinned, &r.note)).await?;
        offsite_ops::hold(&setup, &run_id, pinned).await?;
        Ok(Response::new(PinReply {}))
    }

    async fn metrics(
        &self,
        _req: Request<MetricsRequest>,
    ) -> Result<Response<MetricsReply>, Status> {
        Ok(Response::new(MetricsReply {
            text: self.0.admin().render(),
        }))
    }

    async fn get_signer(
        &self,
        _req: Request<GetSignerRequest>,
    ) -> Result<Response<SignerInfo>, Status> {
        let setup = self.0.setup();
        let signer = setup.signer.as_ref().map_err(|why| {
            Status::failed_precondition(format!("the manifest signing key is unusable: {why}"))
        })?;
        Ok(Response::new(SignerInfo {
            fingerprint: signer.fingerprint(),
            cert_armored: signer.public_armored().map_err(Status::internal)?,
        }))
    }
}

fn envelope(done: &Done) -> BackupEnvelope {
    let (m, reused, store, id) = (&done.manifest, done.reused, &done.store, &done.run_id);
    BackupEnvelope {
        run_id: m.run_id.clone(),
        sha256: m.sha256.clone(),
        size_bytes: m.size_bytes,
        gpg_fpr: m.gpg_fpr.clone(),
        artifact_ref: store.artifact_path(id).display().to_string(),
        created_at: m.created_at.clone(),
        tables: m
            .tables
            .iter()
            .map(|t| TableCount {
                table: t.table.to_string(),
                rows: t.rows,
            })
            .collect(),
        manifest_ref: store.manifest_path(id).display().to_string(),
        server_version: m.server_version.clone(),
        pg_dump_version: m.pg_dump_version.clone(),
        duration_ms: m.duration_ms,
        reused,
        recipient_fprs: m.recipients.iter().map(|r| r.fingerprint.clone()).collect(),
        signature_ref: store.signature_path(id).display().to_string(),
        signer_fpr: done.signer_fpr.clone(),
        offsite_ref: done.offsite_ref.clone(),
        offsite_version: done.offsite_version.clone(),
    }
}

/// The offsite fields of Status.
fn offsite_status(setup: &cutter_core::setup::Setup) -> StatusReport {
    let Some(cfg) = &setup.config.offsite else {
        return StatusReport::default();
    };
    let pending = match &setup.offsite {
        Some(Ok(o)) => o.queue.as_ref().map(|q| q.list()).unwrap_or_default(),
        _ => Vec::new(),
    };
    StatusReport {
        offsite_mode: match cfg.mode {
            cutter_core::config::OffsiteMode::Required => "required",
            cutter_core::config::OffsiteMode::Async => "async",
        }
        .to_owned(),
        offsite_pending: u32::try_from(pending.len()).unwrap_or(u32::MAX),
        offsite_oldest_pending_secs: pending
            .first()
            .map(|p| cutter_core::offsite::queue::now().saturating_sub(p.enqueued_at))
            .unwrap_or(0),
        offsite_last_error: pending
            .iter()
            .rev()
            .find(|p| !p.last_error.is_empty())
            .map(|p| p.last_error.clone())
            .unwrap_or_default(),
        ..StatusReport::default()
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
        ErrorKind::AlreadyExists => Status::already_exists(msg),
        ErrorKind::ResourceExhausted => Status::resource_exhausted(msg),
    }
}
