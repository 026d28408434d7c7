//! The offsite side of the operator RPCs: where each run lives (List), the
//! legal hold that follows a pin, and the opt-in remote prune that never
//! touches a locked object.

use std::collections::BTreeMap;

use tonic::Status;

use cutter_backup::v1::{
    ArtifactInfo, ArtifactState, ListReply, Location, PruneAction, PruneReply,
};
use cutter_core::runid::RunId;
use cutter_core::setup::Setup;

/// A run this host has in the bucket: (artifact size, last modified).
type RemoteRuns = BTreeMap<String, (u64, i64)>;

/// This host's complete runs in the bucket (a manifest is there), or why
/// the bucket could not be listed; `None` without `[offsite]`.
pub async fn remote_runs(setup: &Setup) -> Option<Result<RemoteRuns, String>> {
    let o = match setup.offsite.as_ref()? {
        Ok(o) => o,
        Err(why) => return Some(Err(why.clone())),
    };
    let host = o.backend.host();
    let listed = match o.backend.list(Some(host)).await {
        Ok(l) => l,
        Err(e) => return Some(Err(e)),
    };
    Some(Ok(listed
        .into_iter()
        .filter(|r| r.complete && r.host == host)
        .map(|r| (r.run_id, (r.size_bytes, r.modified_unix)))
        .collect()))
}

/// Adds where each run lives, pending uploads, and the runs only the
/// bucket has.
pub fn merge(reply: &mut ListReply, setup: &Setup, remote: Option<Result<RemoteRuns, String>>) {
    let Some(remote) = remote else {
        return;
    };
    let queue = match &setup.offsite {
        Some(Ok(o)) => o.queue.clone(),
        _ => None,
    };
    let (mut remote, error) = match remote {
        Ok(r) => (r, None),
        Err(e) => (RemoteRuns::new(), Some(e)),
    };
    for a in &mut reply.artifacts {
        let there = remote.remove(&a.run_id).is_some();
        a.location = if there {
            Location::Both
        } else {
            Location::Local
        }
        .into();
        let pending = RunId::parse(&a.run_id)
            .ok()
            .and_then(|id| queue.as_ref().and_then(|q| q.get(&id)));
        a.offsite_detail = match (pending, &error) {
            (Some(p), _) if p.attempts > 0 => format!(
                "upload pending ({} failed attempts): {}",
                p.attempts, p.last_error
            ),
            (Some(_), _) => "upload pending".to_owned(),
            (None, Some(e)) => format!("bucket not listed: {e}"),
            (None, None) => String::new(),
        };
    }
    for (run_id, (size, modified)) in remote {
        reply.artifacts.push(ArtifactInfo {
            run_id,
            size_bytes: size,
            created_at: cutter_core::time::rfc3339(
                std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(u64::try_from(modified).unwrap_or(0)),
            ),
            artifact_state: ArtifactState::Unspecified.into(),
            location: Location::Remote.into(),
            offsite_detail:
                "only in the bucket: `cutterctl verify --offsite` / `restore --from-offsite`"
                    .to_owned(),
            ..ArtifactInfo::default()
        });
    }
}

/// After a pin changed: a legal hold on the offsite copy follows it when
/// the bucket has Object Lock and the copy is there.
pub async fn hold(setup: &Setup, run_id: &str, on: bool) -> Result<(), Status> {
    let Some(Ok(o)) = setup.offsite.as_ref() else {
        return Ok(());
    };
    let id = RunId::parse(run_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let held = o.backend.hold(&id, on).await.map_err(|e| {
        Status::unavailable(format!(
            "{} locally, but the offsite legal hold failed: {e}",
            if on { "pinned" } else { "unpinned" }
        ))
    })?;
    if held {
        tracing::info!(run_id, on, "offsite legal hold changed");
    }
    Ok(())
}

/// With `offsite.prune = true` and a confirmed prune, deletes the offsite
/// copies of the runs just deleted locally, unless locked; says so in each
/// decision's reason.
pub async fn prune(setup: &Setup, reply: &mut PruneReply) {
    let enabled = setup.config.offsite.as_ref().is_some_and(|c| c.prune);
    let Some(Ok(o)) = setup.offsite.as_ref() else {
        return;
    };
    if !enabled || !reply.applied {
        return;
    }
    for d in &mut reply.decisions {
        if d.prune_action() != PruneAction::Delete {
            continue;
        }
        let Ok(id) = RunId::parse(&d.run_id) else {
            continue;
        };
        let note = match o.backend.prune(&id).await {
            Ok(None) => "offsite copy deleted".to_owned(),
            Ok(Some(why)) => format!("offsite copy kept: {why}"),
            Err(e) => format!("offsite copy not deleted: {e}"),
        };
        tracing::info!(run_id = %id, note = %note, "offsite prune");
        d.reason = format!("{}; {note}", d.reason);
    }
}
