//! Which artifacts `prune` deletes. Only complete artifacts that verify count
//! toward what is kept; the newest of them is never deleted; pinned runs are
//! exempt; corrupt and orphaned files are reported, never deleted silently.

use std::time::{Duration, SystemTime};

use crate::store::{Entry, Store};
use crate::time::parse_rfc3339;
use crate::verify::verify;

/// What prune does with one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stays.
    Keep,
    /// Deleted (artifact, manifest).
    Delete,
    /// Not complete or not verifying: left for a person to look at.
    Leave,
}

/// One run's fate and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The run.
    pub run_id: String,
    /// The fate.
    pub action: Action,
    /// Why.
    pub reason: String,
    /// Artifact bytes.
    pub size_bytes: u64,
}

/// The retention policy (`[retention]`).
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Complete, verifying artifacts always kept (at least 1).
    pub keep_last: usize,
    /// Anything younger is kept.
    pub keep_days: u64,
}

/// Decides, newest first, without changing anything.
pub fn plan(store: &Store, policy: Policy, now: SystemTime) -> Result<Vec<Decision>, String> {
    let mut entries = store.list().map_err(|e| e.to_string())?;
    // Newest first; orphans (no created_at) sort last.
    entries.sort_by_key(|e| std::cmp::Reverse(created(e)));
    let keep_days = Duration::from_secs(policy.keep_days * 24 * 3600);
    let mut kept_verified = 0usize;
    let mut out = Vec::with_capacity(entries.len());
    for e in &entries {
        let (action, reason, size_bytes) = match e {
            Entry::Orphan {
                reason, size_bytes, ..
            } => (
                Action::Leave,
                format!("incomplete ({reason}): inspect and remove by hand"),
                *size_bytes,
            ),
            Entry::Complete(m) => {
                let size = m.size_bytes;
                let pinned = store.is_pinned(&m.run_id);
                match verify(store, &m.run_id) {
                    Err(why) if pinned => (
                        Action::Keep,
                        format!("pinned (does not verify: {why})"),
                        size,
                    ),
                    Err(why) => (
                        Action::Leave,
                        format!("does not verify ({why}): inspect and remove by hand"),
                        size,
                    ),
                    Ok(_) => {
                        kept_verified += 1;
                        let age = parse_rfc3339(&m.created_at)
                            .and_then(|t| now.duration_since(t).ok())
                            .unwrap_or_default();
                        if kept_verified == 1 {
                            (
                                Action::Keep,
                                "newest complete backup (never pruned)".into(),
                                size,
                            )
                        } else if pinned {
                            (Action::Keep, "pinned".into(), size)
                        } else if kept_verified <= policy.keep_last {
                            (
                                Action::Keep,
                                format!("within keep_last = {}", policy.keep_last),
                                size,
                            )
                        } else if age < keep_days {
                            (
                                Action::Keep,
                                format!("younger than keep_days = {}", policy.keep_days),
                                size,
                            )
                        } else {
                            (
                                Action::Delete,
                                format!(
                                    "beyond keep_last = {} and older than keep_days = {}",
                                    policy.keep_last, policy.keep_days
                                ),
                                size,
                            )
                        }
                    }
                }
            }
        };
        out.push(Decision {
            run_id: e.run_id().to_owned(),
            action,
            reason,
            size_bytes,
        });
    }
    Ok(out)
}

fn created(e: &Entry) -> String {
    match e {
        Entry::Complete(m) => m.created_at.clone(),
        Entry::Orphan { .. } => String::new(),
    }
}

/// Deletes what `decisions` marks [`Action::Delete`].
pub fn apply(store: &Store, decisions: &[Decision]) -> Result<(), String> {
    for d in decisions.iter().filter(|d| d.action == Action::Delete) {
        store.remove_run(&d.run_id).map_err(|e| e.to_string())?;
    }
    Ok(())
}
