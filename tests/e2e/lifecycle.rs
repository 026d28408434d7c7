//! The daemon's life: reload (SIGHUP) re-reads the operator's env file and
//! flips readiness both ways without a restart; SIGTERM stops it cleanly.

use std::time::Duration;

use crate::harness::proc::wait_until;
use crate::harness::{Grants, KeyKind, World};

fn selftest_passes(daemon: &crate::harness::Daemon) -> bool {
    daemon.ctl(&["selftest"]).status.code() == Some(0)
}

/// Polls until the reload has been applied (the signal is asynchronous).
fn wait_for(daemon: &crate::harness::Daemon, want_pass: bool) {
    wait_until(
        Duration::from_secs(10),
        || selftest_passes(daemon) == want_pass,
        || format!("selftest never became {want_pass}:\n{}", daemon.log()),
    );
}

#[test]
fn removing_the_fingerprint_and_reloading_fails_closed_then_recovers() {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let env_file = world.work.path().join(".env");
    std::fs::write(&env_file, format!("OTHER=1\nBACKUP_GPG_FPR={fpr}\n")).expect("env file");
    let mut cfg = world.config(None, Some(cert));
    cfg.env_file = Some(env_file.clone());
    let mut daemon = world.start(&cfg);
    assert!(selftest_passes(&daemon), "{}", daemon.log());

    // The runbook's disable step: delete the line, reload.
    std::fs::write(&env_file, "OTHER=1\n").expect("env file");
    daemon.signal("HUP");
    wait_for(&daemon, false);
    let out = daemon.ctl(&["selftest"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("required env var BACKUP_GPG_FPR is unset")
    );
    let out = daemon.ctl(&["backup", "--run-id", "while-disabled"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(world.backup_files().is_empty());

    // A broken config keeps the last good one.
    let config = world.work.path().join("backupd.toml");
    let good = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, "this is not toml [").expect("break config");
    daemon.signal("HUP");
    wait_until(
        Duration::from_secs(10),
        || daemon.log().contains("reload failed"),
        || daemon.log(),
    );
    assert!(
        !selftest_passes(&daemon),
        "the last good config (fail-closed) stays"
    );
    std::fs::write(&config, good).expect("restore config");

    std::fs::write(&env_file, format!("BACKUP_GPG_FPR={fpr}\n")).expect("env file");
    daemon.signal("HUP");
    wait_for(&daemon, true);

    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "SIGTERM exits 0: {status}");
    assert!(!daemon.socket.exists(), "the socket is removed on stop");
}
