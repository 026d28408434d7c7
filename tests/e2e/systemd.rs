//! systemd integration without systemd: the notify protocol read from a
//! datagram socket the test binds, socket activation with a listener the test
//! hands over, graceful stop during a backup, and the units' hardening.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::proc::{require, run, wait_until, workspace_bin};
use crate::harness::{Daemon, Grants, KeyKind, World};

/// A datagram socket in the world's work directory where the daemon's
/// NOTIFY_SOCKET points, read with a short timeout.
pub(crate) fn notify_socket(world: &World) -> (PathBuf, UnixDatagram) {
    let path = world.work.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    (path, sock)
}

/// Collects notify messages until `until` matches one or `within` passes.
pub(crate) fn read_until(
    sock: &UnixDatagram,
    seen: &mut Vec<String>,
    until: &str,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = msg.contains(until);
            seen.push(msg);
            if done {
                return;
            }
        }
    }
    panic!("no notify message containing {until:?} within {within:?}; got {seen:#?}");
}

#[test]
fn notify_ready_watchdog_status_reload_stopping() {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let (notify_path, sock) = notify_socket(&world);
    let mut cfg = world.config(Some(&fpr), Some(cert));
    cfg.env = vec![
        ("NOTIFY_SOCKET".into(), notify_path.display().to_string()),
        ("WATCHDOG_USEC".into(), "200000".into()),
    ];
    let mut daemon = world.start(&cfg);
    let mut seen = Vec::new();
    read_until(&sock, &mut seen, "READY=1", Duration::from_secs(10));
    let ready_status = format!("STATUS=ready: key …{}, 9 tables", &fpr[32..]);
    read_until(&sock, &mut seen, &ready_status, Duration::from_secs(10));
    let pings_before = seen.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    read_until(&sock, &mut seen, "WATCHDOG=1", Duration::from_secs(2));
    read_until(&sock, &mut seen, "WATCHDOG=1", Duration::from_secs(2));
    assert!(seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= pings_before + 2);

    daemon.signal("HUP");
    read_until(&sock, &mut seen, "RELOADING=1", Duration::from_secs(5));
    let reloading = seen.last().expect("message");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    read_until(&sock, &mut seen, &ready_status, Duration::from_secs(10));

    daemon.signal("TERM");
    read_until(&sock, &mut seen, "STOPPING=1", Duration::from_secs(5));
    assert!(daemon.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn fail_closed_daemon_is_still_ready_and_says_why() {
    let world = World::new(Grants::All);
    let (_, cert) = world.key(KeyKind::Ed25519, "k");
    let (notify_path, sock) = notify_socket(&world);
    let mut cfg = world.config(None, Some(cert));
    cfg.env = vec![("NOTIFY_SOCKET".into(), notify_path.display().to_string())];
    let _daemon = world.start(&cfg);
    let mut seen = Vec::new();
    read_until(&sock, &mut seen, "READY=1", Duration::from_secs(10));
    read_until(
        &sock,
        &mut seen,
        "STATUS=FAIL-CLOSED: fingerprint: required env var BACKUP_GPG_FPR is unset",
        Duration::from_secs(10),
    );
}

#[tokio::test]
async fn socket_activation_uses_the_passed_listener() {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let path = world.work.path().join("backupd.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let ino = std::fs::metadata(&path)
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .expect("stat");
    let mut daemon = Daemon::start_activated(
        world.work.path(),
        &world.config(Some(&fpr), Some(cert)),
        listener,
    );
    let out = daemon.ctl(&["selftest"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        daemon.log()
    );
    assert!(daemon.log().contains("activated=true"), "{}", daemon.log());
    let same = std::fs::metadata(&path)
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .expect("stat");
    assert_eq!(
        ino, same,
        "the daemon served the passed socket instead of binding its own"
    );
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(10)).success());
    assert!(
        path.exists(),
        "systemd's socket is left for systemd to manage"
    );
}

fn wait_for_partial(world: &World) {
    wait_until(
        Duration::from_secs(10),
        || world.backup_files().iter().any(|f| f.ends_with(".partial")),
        || format!("the backup never started: {:?}", world.backup_files()),
    );
}

#[test]
fn sigterm_lets_a_running_backup_finish() {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let mut cfg = world.config(Some(&fpr), Some(cert));
    cfg.pg_dump = Some(crate::harness::dumpers::slow(world.work.path(), 2));
    cfg.server_extra = "stop_grace_secs = 60\n".into();
    let mut daemon = world.start(&cfg);
    let socket = daemon.socket.clone();
    let caller = std::thread::spawn(move || {
        crate::harness::daemon::ctl(&socket, &["backup", "--run-id", "in-flight"])
    });
    wait_for_partial(&world);
    daemon.signal("TERM");
    let out = caller.join().expect("caller");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    assert!(daemon.wait_exit(Duration::from_secs(20)).success());
    assert_eq!(
        world.backup_files(),
        [
            "in-flight.manifest.json",
            "in-flight.manifest.json.sig",
            "in-flight.sql.gpg"
        ]
    );
    let sql = world.gpg.decrypt(&world.backups.join("in-flight.sql.gpg"));
    assert!(String::from_utf8_lossy(&sql).contains("PostgreSQL database dump complete"));
}

#[test]
fn sigterm_past_the_grace_period_aborts_and_leaves_nothing() {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let mut cfg = world.config(Some(&fpr), Some(cert));
    cfg.pg_dump = Some(crate::harness::dumpers::slow(world.work.path(), 60));
    cfg.server_extra = "stop_grace_secs = 1\n".into();
    let mut daemon = world.start(&cfg);
    let socket = daemon.socket.clone();
    let caller = std::thread::spawn(move || {
        crate::harness::daemon::ctl(&socket, &["backup", "--run-id", "cut-short"])
    });
    wait_for_partial(&world);
    let t0 = Instant::now();
    daemon.signal("TERM");
    assert!(
        daemon.wait_exit(Duration::from_secs(20)).success(),
        "{}",
        daemon.log()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "the abort did not wait for the slow dump"
    );
    let out = caller.join().expect("caller");
    assert_ne!(
        out.status.code(),
        Some(0),
        "an aborted backup is not a success"
    );
    assert!(
        world.backup_files().is_empty(),
        "{:?}",
        world.backup_files()
    );
}

#[tokio::test]
async fn a_stalled_dump_is_aborted_and_cleaned_up() {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let mut cfg = world.config(Some(&fpr), Some(cert));
    cfg.pg_dump = Some(crate::harness::dumpers::slow(world.work.path(), 60));
    cfg.extra = "stall_timeout_secs = 1\n".into();
    let daemon = world.start(&cfg);
    let t0 = Instant::now();
    let err = daemon
        .client()
        .await
        .pre_write_backup(cutter_backup::v1::PreWriteBackupRequest {
            run_id: "stuck".into(),
        })
        .await
        .expect_err("a stalled dump fails");
    assert!(t0.elapsed() < Duration::from_secs(20));
    assert!(err.message().contains("no output for 1 s"), "{err:?}");
    assert!(
        world.backup_files().is_empty(),
        "{:?}",
        world.backup_files()
    );
}

#[test]
fn units_are_hardened_and_verify_clean() {
    let analyze = require("systemd-analyze");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run(Command::new(&analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(root.join("deploy/cutter-backupd.service")));
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split("cutter-backupd.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(exposure <= 2.0, "exposure {exposure} > 2.0:\n{text}");

    // verify checks that ExecStart exists: point it at the binary just built.
    let dir = tempfile::tempdir().expect("tempdir");
    let units = [
        "cutter-backupd.service",
        "cutter-backupd.socket",
        "cutter-drill.service",
        "cutter-drill.timer",
    ];
    for unit in units {
        let text = std::fs::read_to_string(root.join("deploy").join(unit)).expect("unit");
        let text = text
            .replace(
                "/usr/bin/cutter-backupd",
                &workspace_bin("cutter-backupd").display().to_string(),
            )
            .replace(
                "/usr/bin/cutterctl",
                &workspace_bin("cutterctl").display().to_string(),
            );
        std::fs::write(dir.path().join(unit), text).expect("write unit");
    }
    // --man=no: Documentation= names man:cutter-backupd(8), which the
    // package installs (tests/system/run.sh checks it is in the .deb).
    let out = Command::new(&analyze)
        .args(["verify", "--man=no"])
        .args(units.iter().map(|u| dir.path().join(u)))
        .output()
        .expect("systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "verify: {stderr}"
    );
}

#[test]
fn the_example_config_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run(Command::new(workspace_bin("cutter-backupd"))
        .arg("--check-config")
        .arg("--config")
        .arg(root.join("deploy/backupd.toml")));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
}
