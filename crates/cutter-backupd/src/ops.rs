//! The operator RPCs' work (list, verify, prune, pin), done on blocking
//! threads because it reads and hashes whole artifacts.

use std::time::SystemTime;

use tonic::Status;

use cutter_backup::v1::{
    ArtifactInfo, ListReply, PruneDecision, PruneReply, VerifyReply, VerifyResult,
};
use cutter_core::retention::{self, Action, Policy};
use cutter_core::setup::Setup;
use cutter_core::store::{Entry, Store};
use cutter_core::{runid, verify};

/// Runs `f` on the blocking pool; a panic there becomes INTERNAL.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("task failed: {e}")))?
}

/// Every run, newest first.
pub fn list(store: &Store) -> Result<ListReply, Status> {
    let entries = store.list().map_err(|e| Status::internal(e.to_string()))?;
    let mut artifacts: Vec<ArtifactInfo> = entries.iter().map(|e| info(store, e)).collect();
    artifacts.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then(a.run_id.cmp(&b.run_id))
    });
    Ok(ListReply { artifacts })
}

fn info(store: &Store, e: &Entry) -> ArtifactInfo {
    match e {
        Entry::Complete(m) => {
            let actual = std::fs::metadata(store.artifact_path(&m.run_id))
                .map(|md| md.len())
                .ok();
            let (state, detail) = match actual {
                Some(n) if n == m.size_bytes => ("complete", String::new()),
                Some(n) => (
                    "corrupt",
                    format!("{n} bytes, manifest says {}", m.size_bytes),
                ),
                None => ("corrupt", "artifact missing".to_owned()),
            };
            ArtifactInfo {
                run_id: m.run_id.clone(),
                created_at: m.created_at.clone(),
                size_bytes: m.size_bytes,
                sha256: m.sha256.clone(),
                key_fprs: m.recipients.iter().map(|r| r.fingerprint.clone()).collect(),
                total_rows: m.total_rows(),
                state: state.to_owned(),
                pinned: store.is_pinned(&m.run_id),
                detail,
            }
        }
        Entry::Orphan {
            run_id,
            reason,
            size_bytes,
        } => ArtifactInfo {
            run_id: run_id.clone(),
            size_bytes: *size_bytes,
            state: if reason == "no manifest" {
                "orphan"
            } else {
                "corrupt"
            }
            .to_owned(),
            pinned: store.is_pinned(run_id),
            detail: reason.clone(),
            ..ArtifactInfo::default()
        },
    }
}

/// Verifies one run or all of them.
pub fn verify(store: &Store, run_id: &str, all: bool) -> Result<VerifyReply, Status> {
    let ids: Vec<String> = if all {
        store
            .list()
            .map_err(|e| Status::internal(e.to_string()))?
            .iter()
            .map(|e| e.run_id().to_owned())
            .collect()
    } else {
        runid::validate(run_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if !store.artifact_path(run_id).exists() && !store.manifest_path(run_id).exists() {
            return Err(Status::not_found(format!(
                "no backup for run_id {run_id} in {}",
                store.dir().display()
            )));
        }
        vec![run_id.to_owned()]
    };
    let results = ids
        .into_iter()
        .map(|id| {
            let outcome = verify::verify(store, &id);
            VerifyResult {
                artifact_ref: store.artifact_path(&id).display().to_string(),
                ok: outcome.is_ok(),
                reason: outcome.err().unwrap_or_default(),
                run_id: id,
            }
        })
        .collect();
    Ok(VerifyReply { results })
}

/// Plans retention and, when `confirm`, deletes.
pub fn prune(setup: &Setup, confirm: bool) -> Result<PruneReply, Status> {
    let policy = Policy {
        keep_last: setup.config.retention.keep_last,
        keep_days: setup.config.retention.keep_days,
    };
    let decisions =
        retention::plan(&setup.store, policy, SystemTime::now()).map_err(Status::internal)?;
    if confirm {
        retention::apply(&setup.store, &decisions).map_err(Status::internal)?;
        for d in decisions.iter().filter(|d| d.action == Action::Delete) {
            tracing::info!(run_id = %d.run_id, reason = %d.reason, "pruned");
        }
    }
    Ok(PruneReply {
        decisions: decisions
            .into_iter()
            .map(|d| PruneDecision {
                run_id: d.run_id,
                action: match d.action {
                    Action::Keep => "keep",
                    Action::Delete => "delete",
                    Action::Leave => "leave",
                }
                .to_owned(),
                reason: d.reason,
                size_bytes: d.size_bytes,
            })
            .collect(),
        applied: confirm,
        keep_last: u32::try_from(policy.keep_last).unwrap_or(u32::MAX),
        keep_days: policy.keep_days,
    })
}

/// Pins or unpins a run.
pub fn pin(store: &Store, run_id: &str, pinned: bool, note: &str) -> Result<(), Status> {
    runid::validate(run_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let result = if pinned {
        store.pin(run_id, note)
    } else {
        store.unpin(run_id)
    };
    result.map_err(|e| Status::failed_precondition(e.to_string()))?;
    tracing::info!(run_id, pinned, note, "pin changed");
    Ok(())
}
