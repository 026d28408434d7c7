//! Run ids: a run_id becomes a file name, so it is checked against a strict
//! allow-list before it touches any path. [`RunId`] can only be made by that
//! check, and every store function takes one, so an unchecked name (from a
//! request, a manifest, a file name) cannot reach a path by accident.

use crate::error::{Error, Result};

/// The longest run_id accepted.
pub const MAX_LEN: usize = 128;

/// A validated run_id: 1-128 of letters, digits, '.', '_', '-', not
/// starting with '.'.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(String);

impl RunId {
    /// Checks `s`; the error names the rule it breaks, with `s` escaped.
    pub fn parse(s: &str) -> Result<Self> {
        validate(s)?;
        Ok(Self(s.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for RunId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Returns `Ok(())` when `run_id` is safe to use as a file-name stem.
pub fn validate(run_id: &str) -> Result<()> {
    let reason = if run_id.is_empty() {
        Some("it is empty")
    } else if run_id.len() > MAX_LEN {
        Some("it is longer than 128 characters")
    } else if run_id.starts_with('.') {
        Some("it starts with '.'")
    } else if !run_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("it contains a character outside the allowed set")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidRunId {
            shown: run_id
                .chars()
                .take(MAX_LEN)
                .collect::<String>()
                .escape_debug()
                .to_string(),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        for ok in ["run-2026-11-29T04.37", "a", "A_b-c.d", &"x".repeat(128)] {
            assert!(validate(ok).is_ok(), "{ok} should be accepted");
        }
    }

    #[test]
    fn rejects_anything_that_could_escape_the_directory() {
        for bad in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "..",
            "a\0b",
            "a b",
            "é",
            &"x".repeat(129),
        ] {
            assert!(validate(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
