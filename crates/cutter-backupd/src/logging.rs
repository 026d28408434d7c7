//! Logging: journald (structured fields) when stderr is the journal, plain
//! stderr otherwise (tests, CI, a terminal). No secret is ever a field.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber; `RUST_LOG` overrides the `info` default.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    if stderr_is_journal()
        && let Ok(journald) = tracing_journald::layer()
    {
        registry
            .with(
                journald
                    .with_syslog_identifier("cutter-backupd".into())
                    // RUN_ID=…, SHA256=…: `journalctl -u cutter-backupd RUN_ID=x` works.
                    .with_field_prefix(None),
            )
            .init();
        return;
    }
    registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_target(false),
        )
        .init();
}

/// True when JOURNAL_STREAM names the device and inode of our stderr, i.e.
/// systemd connected stderr to the journal (not merely inherited the variable).
fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    match rustix::fs::fstat(std::io::stderr()) {
        Ok(st) => dev.parse() == Ok(st.st_dev) && ino.parse() == Ok(st.st_ino),
        Err(_) => false,
    }
}
