//! Fail-closed: every missing precondition makes selftest FAIL with a message
//! that says what to do, makes PreWriteBackup return FAILED_PRECONDITION, and
//! leaves no artifact.

use std::os::unix::fs::PermissionsExt;

use cutter_backup::v1::PreWriteBackupRequest;

use crate::harness::proc::postgres_ids;
use crate::harness::{Daemon, Grants, KeyKind, World};

/// Asserts the whole fail-closed contract for one broken precondition.
async fn assert_refuses(world: &World, daemon: &Daemon, check: &str, needle: &str) {
    let out = daemon.ctl(&["selftest"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "selftest must exit 1 on FAIL:\n{stdout}"
    );
    assert_eq!(stdout.lines().next(), Some("SELFTEST: FAIL"), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("FAIL") && l.contains(check))
        .unwrap_or_else(|| panic!("no FAIL line for {check}:\n{stdout}"));
    assert!(
        line.contains(needle),
        "the {check} line lacks {needle:?}:\n{line}"
    );

    let json = daemon.ctl(&["selftest", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("selftest --json");
    assert_eq!(v["passed"], false);

    let err = daemon
        .client()
        .await
        .pre_write_backup(PreWriteBackupRequest {
            run_id: "refused-run".into(),
        })
        .await
        .expect_err("a backup must be refused");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(needle), "{err:?} lacks {needle:?}");
    assert!(
        world.backup_files().is_empty(),
        "nothing may be written: {:?}",
        world.backup_files()
    );

    let out = daemon.ctl(&["backup", "--run-id", "refused-run"]);
    assert_eq!(out.status.code(), Some(1), "cutterctl backup must fail");
}

#[tokio::test]
async fn fingerprint_unset() {
    let world = World::new(Grants::All);
    let (_, cert) = world.key(KeyKind::Ed25519, "k");
    let daemon = world.start(&world.config(None, Some(cert)));
    assert_refuses(
        &world,
        &daemon,
        "fingerprint",
        "required env var BACKUP_GPG_FPR is unset",
    )
    .await;
}

#[tokio::test]
async fn fingerprint_malformed() {
    let world = World::new(Grants::All);
    let (_, cert) = world.key(KeyKind::Ed25519, "k");
    let daemon = world.start(&world.config(Some("DEADBEEF"), Some(cert)));
    assert_refuses(
        &world,
        &daemon,
        "fingerprint",
        "not a 40-hex-digit fingerprint",
    )
    .await;
}

#[tokio::test]
async fn no_cert_for_the_fingerprint() {
    let world = World::new(Grants::All);
    let (_, cert) = world.key(KeyKind::Ed25519, "exported");
    let other = world
        .gpg
        .gen_key(KeyKind::Ed25519, "other <other@cutter.invalid>");
    let daemon = world.start(&world.config(Some(&other), Some(cert)));
    assert_refuses(&world, &daemon, "key", "no certificate with fingerprint").await;
    let tail = &other[32..];
    assert!(
        daemon
            .ctl(&["selftest"])
            .stdout
            .windows(8)
            .any(|w| w == tail.as_bytes())
    );
    let full_shown =
        String::from_utf8_lossy(&daemon.ctl(&["selftest"]).stdout).contains(&other[..32]);
    assert!(
        !full_shown,
        "only the last 8 characters of the fingerprint are printed"
    );
}

#[tokio::test]
async fn expired_cert() {
    let world = World::new(Grants::All);
    let fpr = world.gpg.gen_key_at(
        KeyKind::Ed25519,
        "old <old@cutter.invalid>",
        Some("20200101T000000"),
        "1y",
    );
    let cert = world.work.path().join("old.asc");
    world.gpg.export_public(&fpr, &cert);
    let daemon = world.start(&world.config(Some(&fpr), Some(cert)));
    assert_refuses(&world, &daemon, "key", "expired").await;
}

#[tokio::test]
async fn revoked_cert() {
    let world = World::new(Grants::All);
    let fpr = world
        .gpg
        .gen_key(KeyKind::Ed25519, "gone <gone@cutter.invalid>");
    world.gpg.revoke(&fpr);
    let cert = world.work.path().join("gone.asc");
    world.gpg.export_public(&fpr, &cert);
    let daemon = world.start(&world.config(Some(&fpr), Some(cert)));
    assert_refuses(&world, &daemon, "key", "revoked").await;
}

#[tokio::test]
async fn table_missing() {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let mut cfg = world.config(Some(&fpr), Some(cert));
    cfg.tables.push("cutter_governance.not_there".into());
    let daemon = world.start(&cfg);
    assert_refuses(
        &world,
        &daemon,
        "tables",
        "missing: cutter_governance.not_there",
    )
    .await;
}

#[tokio::test]
async fn select_revoked_shows_the_grants_to_run() {
    let world = World::new(Grants::All);
    world.pg.psql(
        "directus",
        "REVOKE SELECT ON cutter_governance.verify_result FROM cutter_exec",
    );
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let daemon = world.start(&world.config(Some(&fpr), Some(cert)));
    assert_refuses(
        &world,
        &daemon,
        "grants",
        "GRANT SELECT ON cutter_governance.verify_result TO cutter_exec;",
    )
    .await;
}

#[tokio::test]
async fn pg_dump_missing() {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let mut cfg = world.config(Some(&fpr), Some(cert));
    cfg.pg_dump = Some("/nonexistent/bin/pg_dump".into());
    let daemon = world.start(&cfg);
    assert_refuses(
        &world,
        &daemon,
        "pg_dump",
        "pg_dump not found at /nonexistent/bin/pg_dump",
    )
    .await;
}

#[tokio::test]
async fn backup_dir_missing() {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let mut cfg = world.config(Some(&fpr), Some(cert));
    std::fs::remove_dir(&world.backups).expect("rmdir");
    cfg.backup_dir = world.backups.clone();
    let daemon = world.start(&cfg);
    assert_refuses(&world, &daemon, "backup_dir", "does not exist").await;
}

#[tokio::test]
async fn backup_dir_world_accessible() {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    std::fs::set_permissions(&world.backups, std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let daemon = world.start(&world.config(Some(&fpr), Some(cert)));
    assert_refuses(&world, &daemon, "backup_dir", "chmod 0700").await;
}

/// Root writes anywhere, so this runs the daemon as `postgres` against a
/// root-owned 0700 directory: the write probe must notice.
#[tokio::test]
async fn backup_dir_not_writable() {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let (uid, gid) = postgres_ids().expect("this test runs as root (CI does)");
    let home = tempfile::Builder::new()
        .prefix("cutter-unpriv-")
        .tempdir()
        .expect("tempdir");
    std::os::unix::fs::chown(home.path(), Some(uid), Some(gid)).expect("chown");
    let cert_copy = home.path().join("k.asc");
    std::fs::copy(&cert, &cert_copy).expect("copy cert");
    let mut cfg = world.config(Some(&fpr), Some(cert_copy));
    cfg.run_as = Some((uid, gid));
    // The backups dir stays root:root 0700 and the parent must be traversable.
    std::fs::set_permissions(world.work.path(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod");
    let daemon = Daemon::start(home.path(), &cfg);
    assert_refuses(&world, &daemon, "backup_dir", "not writable").await;
}

#[tokio::test]
async fn database_down_is_unavailable() {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let mut cfg = world.config(Some(&fpr), Some(cert));
    cfg.database_url = "postgres://cutter_exec@127.0.0.1:1/directus".into();
    cfg.pg_dump = Some(crate::harness::pg::bindir().join("pg_dump"));
    let daemon = world.start(&cfg);
    let err = daemon
        .client()
        .await
        .pre_write_backup(PreWriteBackupRequest { run_id: "r".into() })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(world.backup_files().is_empty());
}
