//! How the contract's enums look in `--json` output: the lower-case names
//! the text output uses (`"complete"`, `"delete"`), and `"PASS"`/`"WARN"`/
//! `"FAIL"` for checks, never the wire's integers.

use serde::Serializer;

use crate::v1::{ArtifactState, PruneAction, check};

fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
}

/// `Check.status` as `"PASS"`, `"WARN"`, `"FAIL"` (or `"STATUS_UNSPECIFIED"`).
pub fn check_status<S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
    let name = check::Status::try_from(*v).map_or("STATUS_UNSPECIFIED", |st| st.as_str_name());
    s.serialize_str(name)
}

/// `ArtifactInfo.artifact_state` as `"complete"`, `"corrupt"`, `"orphan"`.
pub fn artifact_state<S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
    let name = ArtifactState::try_from(*v).map_or("unspecified".to_owned(), |st| {
        short(st.as_str_name(), "ARTIFACT_STATE_")
    });
    s.serialize_str(&name)
}

/// `PruneDecision.prune_action` as `"keep"`, `"delete"`, `"leave"`.
pub fn prune_action<S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
    let name = PruneAction::try_from(*v).map_or("unspecified".to_owned(), |a| {
        short(a.as_str_name(), "PRUNE_ACTION_")
    });
    s.serialize_str(&name)
}
