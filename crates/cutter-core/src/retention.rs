//! Which artifacts `prune` deletes. Only complete artifacts that verify
//! (signature included) count toward what is kept; the newest of them is
//! never deleted; pinned runs are exempt; corrupt, unsigned and orphaned
//! files are reported, never deleted silently.
//!
//! [`plan`] gathers the facts (one pass of I/O); [`decide`] is the policy,
//! a pure function of those facts, tested case by case.

use std::time::{Duration, SystemTime};

use crate::runid::RunId;
use crate::store::{ManifestState, Store};
use crate::time::parse_rfc3339;
use crate::verify::{Trust, verify};

/// What prune does with one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stays.
    Keep,
    /// Deleted (artifact, manifest, signature).
    Delete,
    /// Not complete or not verifying: left for a person to look at.
    Leave,
}

/// One run's fate and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The run.
    pub run_id: RunId,
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

/// What [`decide`] needs to know about one run.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The run (from its file name).
    pub run_id: RunId,
    /// Artifact bytes.
    pub size_bytes: u64,
    /// Pinned.
    pub pinned: bool,
    /// `Ok(created_at)` when it fully verifies, else why not.
    pub verified: Result<SystemTime, String>,
}

/// Reads and verifies every run, then decides; changes nothing.
pub fn plan(
    store: &Store,
    trust: &Trust,
    policy: Policy,
    now: SystemTime,
) -> Result<Vec<Decision>, String> {
    let facts = store
        .list()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|e| {
            let verified = match &e.manifest {
                ManifestState::Missing => Err("incomplete (no manifest)".to_owned()),
                ManifestState::Bad(why) => Err(why.clone()),
                ManifestState::Present(_) => verify(store, &e.run_id, trust).and_then(|m| {
                    parse_rfc3339(&m.created_at)
                        .ok_or_else(|| format!("created_at {:?} is not a time", m.created_at))
                }),
            };
            Facts {
                run_id: e.run_id,
                size_bytes: e.size_bytes,
                pinned: e.pinned,
                verified,
            }
        })
        .collect();
    Ok(decide(facts, policy, now))
}

/// The policy: newest verifying first; the newest is always kept, then
/// pinned, then `keep_last`, then anything younger than `keep_days`; older
/// ones are deleted. Runs that do not verify are left (kept if pinned).
pub fn decide(mut facts: Vec<Facts>, policy: Policy, now: SystemTime) -> Vec<Decision> {
    // Newest first; runs that do not verify sort last.
    facts.sort_by(|a, b| {
        let t = |f: &Facts| f.verified.as_ref().ok().copied();
        t(b).cmp(&t(a)).then(a.run_id.cmp(&b.run_id))
    });
    let keep_days = Duration::from_secs(policy.keep_days * 24 * 3600);
    let mut verified = 0usize;
    facts
        .into_iter()
        .map(|f| {
            let (action, reason) = match &f.verified {
                Err(why) if f.pinned => (Action::Keep, format!("pinned (does not verify: {why})")),
                Err(why) => (
                    Action::Leave,
                    format!("does not verify ({why}): inspect and remove by hand"),
                ),
                Ok(created) => {
                    verified += 1;
                    let age = now.duration_since(*created).unwrap_or_default();
                    if verified == 1 {
                        (Action::Keep, "newest complete backup (never pruned)".into())
                    } else if f.pinned {
                        (Action::Keep, "pinned".into())
                    } else if verified <= policy.keep_last {
                        (
                            Action::Keep,
                            format!("within keep_last = {}", policy.keep_last),
                        )
                    } else if age < keep_days {
                        (
                            Action::Keep,
                            format!("younger than keep_days = {}", policy.keep_days),
                        )
                    } else {
                        (
                            Action::Delete,
                            format!(
                                "beyond keep_last = {} and older than keep_days = {}",
                                policy.keep_last, policy.keep_days
                            ),
                        )
                    }
                }
            };
            Decision {
                run_id: f.run_id,
                action,
                reason,
                size_bytes: f.size_bytes,
            }
        })
        .collect()
}

/// Deletes what `decisions` marks [`Action::Delete`].
pub fn apply(store: &Store, decisions: &[Decision]) -> Result<(), String> {
    for d in decisions.iter().filter(|d| d.action == Action::Delete) {
        store.remove_run(&d.run_id).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 24 * 3600;

    /// (run_id, age in days or None when it does not verify, pinned)
    fn facts(rows: &[(&str, Option<u64>, bool)], now: SystemTime) -> Vec<Facts> {
        rows.iter()
            .map(|(id, age, pinned)| Facts {
                run_id: RunId::parse(id).expect("id"),
                size_bytes: 1,
                pinned: *pinned,
                verified: age
                    .map(|d| now - Duration::from_secs(d * DAY))
                    .ok_or_else(|| "bad".to_owned()),
            })
            .collect()
    }

    #[test]
    fn decide_case_table() {
        use Action::{Delete, Keep, Leave};
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000 * DAY);
        // (keep_last, keep_days, runs, expected actions by run_id)
        type Case<'a> = (
            usize,
            u64,
            Vec<(&'a str, Option<u64>, bool)>,
            Vec<(&'a str, Action)>,
        );
        let cases: Vec<Case> = vec![
            // The newest verifying run is kept even when everything is old.
            (
                1,
                0,
                vec![("a", Some(90), false), ("b", Some(100), false)],
                vec![("a", Keep), ("b", Delete)],
            ),
            // keep_last counts verifying runs only.
            (
                2,
                0,
                vec![
                    ("a", Some(1), false),
                    ("bad", None, false),
                    ("c", Some(3), false),
                    ("d", Some(4), false),
                ],
                vec![("a", Keep), ("c", Keep), ("d", Delete), ("bad", Leave)],
            ),
            // keep_days keeps the young ones beyond keep_last.
            (
                1,
                30,
                vec![
                    ("a", Some(1), false),
                    ("b", Some(10), false),
                    ("c", Some(40), false),
                ],
                vec![("a", Keep), ("b", Keep), ("c", Delete)],
            ),
            // Pinned: kept whatever its age, and kept even when it does not verify.
            (
                1,
                0,
                vec![
                    ("a", Some(1), false),
                    ("p", Some(400), true),
                    ("q", None, true),
                ],
                vec![("a", Keep), ("p", Keep), ("q", Keep)],
            ),
            // Nothing verifies: nothing is deleted.
            (
                1,
                0,
                vec![("x", None, false), ("y", None, false)],
                vec![("x", Leave), ("y", Leave)],
            ),
        ];
        for (i, (keep_last, keep_days, runs, want)) in cases.into_iter().enumerate() {
            let got = decide(
                facts(&runs, now),
                Policy {
                    keep_last,
                    keep_days,
                },
                now,
            );
            for (id, action) in want {
                let d = got
                    .iter()
                    .find(|d| d.run_id.as_str() == id)
                    .unwrap_or_else(|| panic!("case {i}: {id} missing"));
                assert_eq!(d.action, action, "case {i}: {id}: {}", d.reason);
            }
        }
    }

    #[test]
    fn one_decision_per_run_id() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000 * DAY);
        let got = decide(
            facts(&[("a", Some(1), false), ("b", Some(2), false)], now),
            Policy {
                keep_last: 1,
                keep_days: 0,
            },
            now,
        );
        assert_eq!(got.len(), 2);
        assert_ne!(got[0].run_id, got[1].run_id);
    }
}
