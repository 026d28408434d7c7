//! The operator RPCs' work (list, verify, prune, pin), done on blocking
//! threads because it reads and hashes whole artifacts.

use std::collections::HashSet;
use std::time::SystemTime;

use tonic::Status;

use cutter_backup::v1::{
    ArtifactInfo, ArtifactState, ListReply, PruneAction, PruneDecision, PruneReply, VerifyReply,
    VerifyResult,
};
use cutter_core::manifest::{Manifest, SignedManifest};
use cutter_core::offsite::Queue;
use cutter_core::retention::{self, Action, Policy};
use cutter_core::runid::RunId;
use cutter_core::setup::Setup;
use cutter_core::signer::{self, Cert};
use cutter_core::store::{Entry, ManifestState, Store};
use cutter_core::verify::{self, Trust};

/// Runs `f` on the blocking pool; a panic there becomes INTERNAL.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("task failed: {e}")))?
}

/// What manifests must be signed by: the certs the caller pinned, else the
/// daemon's own signer and `restore.trusted_signers`.
pub fn trust(setup: &Setup, pinned: &[u8], expect_sha256: &str) -> Result<Trust, Status> {
    let signers = if pinned.is_empty() {
        let mut v: Vec<Cert> = setup.signer.iter().map(|s| s.public_cert()).collect();
        v.extend(
            signer::read_all(&setup.config.restore.trusted_signers)
                .map_err(Status::failed_precondition)?,
        );
        v
    } else {
        signer::parse_certs(pinned).map_err(Status::invalid_argument)?
    };
    let expect_sha256 = (!expect_sha256.is_empty()).then(|| expect_sha256.to_owned());
    Ok(Trust {
        signers,
        expect_sha256,
    })
}

/// The daemon's own signer cert (what this host's manifests must carry).
pub fn own_signer(setup: &Setup) -> Vec<Cert> {
    setup.signer.iter().map(|s| s.public_cert()).collect()
}

/// The manifest of `e` when it is signed by one of `signers` (the bytes are
/// not hashed here: that is verify's job).
pub fn authentic<'a>(e: &'a Entry, signers: &[Cert]) -> Result<&'a Manifest, String> {
    match &e.manifest {
        ManifestState::Present(signed) => {
            verify::authenticate(&e.run_id, signed, signers).map(|_| &signed.manifest)
        }
        ManifestState::Missing => Err("no manifest".into()),
        ManifestState::Bad(why) => Err(why.clone()),
    }
}

/// The newest run this daemon signed (by `created_at`), from the store's
/// census: one manifest read when the newest is genuine, no listing.
pub fn newest_own(store: &Store, own: &[Cert]) -> Option<Manifest> {
    let accept = |id: &RunId, m: &SignedManifest| verify::authenticate(id, m, own).is_ok();
    store.newest(&accept).ok().flatten().map(|m| m.manifest)
}

/// Every run, newest first. Each is turned into its reply entry as the
/// directory is read, so no manifest is held longer than that.
pub fn list(store: &Store, signers: &[Cert]) -> Result<ListReply, Status> {
    let mut artifacts = Vec::new();
    store
        .each(|e| artifacts.push(info(&e, signers)))
        .map_err(|e| Status::internal(e.to_string()))?;
    artifacts.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then(a.run_id.cmp(&b.run_id))
    });
    Ok(ListReply { artifacts })
}

// `state` is the deprecated string twin of `artifact_state`, filled for one
// more version.
#[allow(deprecated)]
fn info(e: &Entry, signers: &[Cert]) -> ArtifactInfo {
    let base = ArtifactInfo {
        run_id: e.run_id.to_string(),
        size_bytes: e.size_bytes,
        pinned: e.pinned,
        ..ArtifactInfo::default()
    };
    match &e.manifest {
        ManifestState::Present(signed) => {
            let m = &signed.manifest;
            let (state, detail) = if let Err(why) = authentic(e, signers) {
                (ArtifactState::Corrupt, why)
            } else if let Some(why) = &e.verify_failed {
                (ArtifactState::Corrupt, format!("last verify FAILED: {why}"))
            } else if e.size_bytes != m.size_bytes {
                (
                    ArtifactState::Corrupt,
                    format!("{} bytes, manifest says {}", e.size_bytes, m.size_bytes),
                )
            } else {
                (ArtifactState::Complete, String::new())
            };
            ArtifactInfo {
                created_at: m.created_at.clone(),
                sha256: m.sha256.clone(),
                key_fprs: m.recipients.iter().map(|r| r.fingerprint.clone()).collect(),
                total_rows: m.total_rows(),
                state: state_word(state),
                artifact_state: state.into(),
                detail,
                ..base
            }
        }
        ManifestState::Missing => ArtifactInfo {
            state: state_word(ArtifactState::Orphan),
            artifact_state: ArtifactState::Orphan.into(),
            detail: "no manifest".to_owned(),
            ..base
        },
        ManifestState::Bad(why) => ArtifactInfo {
            state: state_word(ArtifactState::Corrupt),
            artifact_state: ArtifactState::Corrupt.into(),
            detail: why.clone(),
            ..base
        },
    }
}

fn state_word(s: ArtifactState) -> String {
    s.as_str_name()
        .trim_start_matches("ARTIFACT_STATE_")
        .to_ascii_lowercase()
}

/// Verifies one run or all of them.
pub fn verify(
    store: &Store,
    trust: &Trust,
    run_id: &str,
    all: bool,
) -> Result<VerifyReply, Status> {
    let ids: Vec<RunId> = if all {
        store
            .list()
            .map_err(|e| Status::internal(e.to_string()))?
            .into_iter()
            .map(|e| e.run_id)
            .collect()
    } else {
        let id = RunId::parse(run_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if !store
            .has_any(&id)
            .map_err(|e| Status::internal(e.to_string()))?
        {
            return Err(Status::not_found(format!(
                "no backup for run_id {id} in {}",
                store.dir().display()
            )));
        }
        vec![id]
    };
    let results = ids
        .into_iter()
        .map(|id| {
            let outcome = verify::verify(store, &id, trust);
            // `list` shows the verdict from now on, until a verify passes.
            let recorded = match &outcome {
                Ok(_) => store.clear_verify_failed(&id),
                Err(why) => store.mark_verify_failed(&id, why),
            };
            if let Err(e) = recorded {
                tracing::warn!(run_id = %id, error = %e, "cannot record the verify result");
            }
            VerifyResult {
                artifact_ref: store.artifact_path(&id).display().to_string(),
                ok: outcome.is_ok(),
                reason: outcome.err().unwrap_or_default(),
                run_id: id.to_string(),
            }
        })
        .collect();
    Ok(VerifyReply { results })
}

/// Plans retention and, when `confirm`, deletes.
// `action` is the deprecated string twin of `prune_action`.
#[allow(deprecated)]
pub fn prune(setup: &Setup, confirm: bool) -> Result<PruneReply, Status> {
    let policy = Policy {
        keep_last: setup.config.retention.keep_last,
        keep_days: setup.config.retention.keep_days,
    };
    // Only this daemon's own runs count toward what is kept: a genuine run
    // of another pinned signer, planted here, must not push ours out.
    let trust = Trust {
        signers: own_signer(setup),
        expect_sha256: None,
    };
    let mut decisions = retention::plan(&setup.store, &trust, policy, SystemTime::now())
        .map_err(Status::internal)?;
    // A run whose offsite copy is still queued may be the only copy there
    // will ever be: it stays until the upload is confirmed. When the queue
    // cannot be read, no run is known not to be queued: none is deleted.
    let queued = queued_uploads(setup);
    for d in decisions.iter_mut().filter(|d| d.action == Action::Delete) {
        match &queued {
            Ok(pending) if !pending.contains(d.run_id.as_str()) => continue,
            Ok(_) => {
                d.reason =
                    "its offsite upload is still pending: kept until the remote copy is confirmed"
                        .into();
            }
            Err(why) => {
                d.reason = format!(
                    "the offsite upload queue cannot be read ({why}): nothing is deleted until it can"
                );
            }
        }
        d.action = Action::Leave;
    }
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
                run_id: d.run_id.to_string(),
                action: match d.action {
                    Action::Keep => "keep",
                    Action::Delete => "delete",
                    Action::Leave => "leave",
                }
                .to_owned(),
                prune_action: match d.action {
                    Action::Keep => PruneAction::Keep,
                    Action::Delete => PruneAction::Delete,
                    Action::Leave => PruneAction::Leave,
                }
                .into(),
                reason: d.reason,
                size_bytes: d.size_bytes,
            })
            .collect(),
        applied: confirm,
        keep_last: u32::try_from(policy.keep_last).unwrap_or(u32::MAX),
        keep_days: policy.keep_days,
    })
}

/// The runs waiting in the offsite upload queue (none without `[offsite]`).
/// When the offsite client could not be set up, the queue is opened on its
/// own; an error when that is refused too.
fn queued_uploads(setup: &Setup) -> Result<HashSet<String>, String> {
    let Some(cfg) = setup.config.offsite.as_ref() else {
        return Ok(HashSet::new());
    };
    let opened = setup
        .offsite
        .as_ref()
        .and_then(|o| o.as_ref().ok())
        .and_then(|o| o.queue.clone());
    let queue = match opened {
        Some(q) => q,
        None => Queue::open(&cfg.queue_dir)?,
    };
    Ok(queue.list().into_iter().map(|p| p.run_id).collect())
}

/// Pins or unpins a run.
pub fn pin(store: &Store, run_id: &str, pinned: bool, note: &str) -> Result<(), Status> {
    let id = RunId::parse(run_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let result = if pinned {
        store.pin(&id, note)
    } else {
        store.unpin(&id)
    };
    result.map_err(|e| Status::failed_precondition(e.to_string()))?;
    tracing::info!(run_id, pinned, note, "pin changed");
    Ok(())
}
