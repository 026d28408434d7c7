//! Timestamps as operators read them: RFC 3339, UTC, whole seconds.

use std::time::SystemTime;

/// Formats `t` as `2026-11-29T04:37:20Z`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses what [`rfc3339`] writes.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}
