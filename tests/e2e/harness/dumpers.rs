//! pg_dump stand-ins for fault tests: shell wrappers around the real pg_dump
//! that stall, log or pause, so a test can act while a dump is in flight.
//! `pg_dump --version` (the selftest's question) always goes straight through.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::pg;

/// Writes an executable wrapper `dir/name` running `body`, where `{real}` is
/// the real pg_dump and `"$@"` its arguments.
pub fn wrapper(dir: &Path, name: &str, body: &str) -> PathBuf {
    let real = pg::bindir().join("pg_dump").display().to_string();
    let path = dir.join(name);
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = --version ]; then exec {real} --version; fi\n{}\n",
        body.replace("{real}", &real)
    );
    std::fs::write(&path, script).expect("write wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// A pg_dump whose output starts `secs` seconds late.
pub fn slow(dir: &Path, secs: u32) -> PathBuf {
    wrapper(
        dir,
        &format!("pg_dump-slow-{secs}"),
        &format!("{{real}} \"$@\" | {{ sleep {secs}; cat; }}"),
    )
}

/// A pg_dump that writes `bytes` of its output, then stalls for a minute:
/// the backup is caught mid-write.
pub fn stalling(dir: &Path, bytes: u64) -> PathBuf {
    wrapper(
        dir,
        "pg_dump-stalling",
        &format!("{{real}} \"$@\" | {{ head -c {bytes}; sleep 60; cat; }}"),
    )
}

/// A pg_dump that appends `start` and `end` lines to `dir/dumps.log` (short
/// appends are atomic) and takes `secs` seconds longer; returns the wrapper
/// and the log.
pub fn counting(dir: &Path, secs: u32) -> (PathBuf, PathBuf) {
    let log = dir.join("dumps.log");
    let path = wrapper(
        dir,
        "pg_dump-counting",
        &format!(
            "echo start >> {log}\nsleep {secs}\n{{real}} \"$@\"\nrc=$?\necho end >> {log}\nexit $rc",
            log = log.display()
        ),
    );
    (path, log)
}

/// The most pg_dumps that ran at once, from a [`counting`] log.
pub fn most_at_once(log: &Path) -> i32 {
    let (mut running, mut most) = (0i32, 0i32);
    for line in std::fs::read_to_string(log).expect("dump log").lines() {
        running += if line == "start" { 1 } else { -1 };
        most = most.max(running);
    }
    most
}
