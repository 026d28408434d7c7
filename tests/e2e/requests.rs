//! How the daemon treats requests: run_id validation, idempotent retries,
//! single flight, peer credentials, failing pg_dumps, secrets, and cutterctl.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cutter_backup::v1::PreWriteBackupRequest;

use crate::harness::daemon::ctl;
use crate::harness::{Grants, KeyKind, ROLE_PASSWORD, World, list_dir, pg};

fn req(run_id: &str) -> PreWriteBackupRequest {
    PreWriteBackupRequest {
        run_id: run_id.into(),
    }
}

fn ready_world() -> (World, String, PathBuf) {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    (world, fpr, cert)
}

#[tokio::test]
async fn bad_run_ids_are_invalid_argument_and_create_nothing() {
    let (world, fpr, cert) = ready_world();
    let daemon = world.start(&world.config(Some(&fpr), Some(cert)));
    let work_before = list_dir(world.work.path());
    let parent_before = list_dir(world.backups.parent().expect("parent"));
    let long = "x".repeat(200);
    for bad in [
        "../x",
        "",
        long.as_str(),
        "a/b",
        ".hidden",
        "a\0b",
        "../../etc/passwd",
    ] {
        let err = daemon
            .client()
            .await
            .pre_write_backup(req(bad))
            .await
            .expect_err("must be refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}: {err:?}");
        assert!(err.message().contains("invalid run_id"), "{err:?}");
    }
    assert!(
        world.backup_files().is_empty(),
        "{:?}",
        world.backup_files()
    );
    assert_eq!(list_dir(world.work.path()), work_before);
    assert_eq!(
        list_dir(world.backups.parent().expect("parent")),
        parent_before
    );
}

#[tokio::test]
async fn same_run_id_twice_returns_the_same_envelope_and_one_file() {
    let (world, fpr, cert) = ready_world();
    let daemon = world.start(&world.config(Some(&fpr), Some(cert)));
    let mut client = daemon.client().await;
    let first = client
        .pre_write_backup(req("retry-1"))
        .await
        .expect("first")
        .into_inner();
    let mtime = std::fs::metadata(&first.artifact_ref)
        .and_then(|m| m.modified())
        .expect("mtime");
    let second = client
        .pre_write_backup(req("retry-1"))
        .await
        .expect("second")
        .into_inner();
    assert!(!first.reused && second.reused);
    assert_eq!(
        (
            &first.sha256,
            first.size_bytes,
            &first.gpg_fpr,
            &first.artifact_ref,
            &first.created_at
        ),
        (
            &second.sha256,
            second.size_bytes,
            &second.gpg_fpr,
            &second.artifact_ref,
            &second.created_at
        )
    );
    assert_eq!(
        std::fs::metadata(&first.artifact_ref)
            .and_then(|m| m.modified())
            .expect("mtime"),
        mtime,
        "the artifact was not rewritten"
    );
    assert_eq!(
        world.backup_files(),
        [
            "retry-1.manifest.json",
            "retry-1.manifest.json.sig",
            "retry-1.sql.gpg"
        ]
    );
}

#[tokio::test]
async fn eight_concurrent_calls_share_one_backup() {
    let (world, fpr, cert) = ready_world();
    let daemon = world.start(&world.config(Some(&fpr), Some(cert)));
    let mut calls = Vec::new();
    for _ in 0..8 {
        let mut c = daemon.client().await;
        calls.push(tokio::spawn(async move {
            c.pre_write_backup(req("together"))
                .await
                .map(tonic::Response::into_inner)
        }));
    }
    let mut envelopes = Vec::new();
    for call in calls {
        envelopes.push(call.await.expect("join").expect("backup"));
    }
    let fresh = envelopes.iter().filter(|e| !e.reused).count();
    assert!(fresh >= 1, "one call took the backup");
    for e in &envelopes {
        assert_eq!(
            (&e.sha256, e.size_bytes, &e.artifact_ref, &e.created_at),
            (
                &envelopes[0].sha256,
                envelopes[0].size_bytes,
                &envelopes[0].artifact_ref,
                &envelopes[0].created_at
            ),
            "all 8 envelopes describe the same artifact"
        );
    }
    assert_eq!(
        world.backup_files(),
        [
            "together.manifest.json",
            "together.manifest.json.sig",
            "together.sql.gpg"
        ]
    );
    let backups_logged = daemon.log().matches("backup complete").count();
    assert_eq!(backups_logged, 1, "one pg_dump ran:\n{}", daemon.log());
}

#[tokio::test]
async fn a_peer_uid_not_allowed_is_permission_denied() {
    let (world, fpr, cert) = ready_world();
    let mut cfg = world.config(Some(&fpr), Some(cert));
    cfg.allowed_uids = vec![4242];
    let daemon = world.start(&cfg);
    let mut client = daemon.client().await;
    let err = client.pre_write_backup(req("r")).await.expect_err("denied");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let err = client
        .selftest(cutter_backup::v1::SelftestRequest {})
        .await
        .expect_err("denied");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(world.backup_files().is_empty());
    assert!(
        daemon.log().contains("refused a peer"),
        "the refusal is logged"
    );
    let mode = std::fs::metadata(&daemon.socket)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "socket mode");
}

/// A pg_dump wrapper that behaves badly in `how`; `--version` stays honest.
fn bad_pg_dump(dir: &Path, how: &str) -> PathBuf {
    let real = pg::bindir().join("pg_dump");
    let body = match how {
        "exit1" => {
            "\"$REAL\" \"$@\" | head -c 20000\necho 'pg_dump: error: simulated failure' >&2\nexit 1"
        }
        "killed" => "\"$REAL\" \"$@\" | head -c 20000\nkill -9 $$",
        "error-exit0" => {
            "\"$REAL\" \"$@\"\necho 'pg_dump: error: query failed: simulated' >&2\nexit 0"
        }
        // A dump that silently lost rows: exit 0, no error, one row short.
        "drops-a-row" => "\"$REAL\" \"$@\" | sed '/^1\t/d'",
        other => panic!("unknown failure {other}"),
    };
    let script = format!(
        "#!/bin/sh\nREAL={}\nif [ \"$1\" = --version ]; then exec \"$REAL\" --version; fi\n{body}\n",
        real.display()
    );
    let path = dir.join(format!("pg_dump-{how}"));
    std::fs::write(&path, script).expect("write wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[tokio::test]
async fn pg_dump_failing_mid_stream_leaves_nothing() {
    let (world, fpr, cert) = ready_world();
    for how in ["exit1", "killed", "error-exit0", "drops-a-row"] {
        let mut cfg = world.config(Some(&fpr), Some(cert.clone()));
        cfg.pg_dump = Some(bad_pg_dump(world.work.path(), how));
        let daemon = world.start(&cfg);
        let err = daemon
            .client()
            .await
            .pre_write_backup(req("doomed"))
            .await
            .expect_err(how);
        assert_eq!(err.code(), tonic::Code::Internal, "{how}: {err:?}");
        assert!(err.message().contains("pg_dump"), "{how}: {err:?}");
        if how == "drops-a-row" {
            assert!(err.message().contains("in the snapshot but"), "{err:?}");
        }
        assert!(
            world.backup_files().is_empty(),
            "{how}: {:?}",
            world.backup_files()
        );
        drop(daemon);
    }
}

#[tokio::test]
async fn the_password_reaches_neither_argv_nor_logs() {
    let (world, fpr, cert) = ready_world();
    let real = pg::bindir().join("pg_dump");
    let argv_log = world.work.path().join("argv");
    let wrapper = world.work.path().join("pg_dump-spy");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$0 $*\" >> {}\nexec {} \"$@\"\n",
            argv_log.display(),
            real.display()
        ),
    )
    .expect("write spy");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut cfg = world.config(Some(&fpr), Some(cert));
    cfg.pg_dump = Some(wrapper);
    let daemon = world.start(&cfg);
    let out = daemon.ctl(&["backup", "--run-id", "spied"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let argv = std::fs::read_to_string(&argv_log).expect("argv log");
    assert!(argv.contains("--snapshot="), "the spy saw the dump: {argv}");
    assert!(!argv.contains(ROLE_PASSWORD), "password in argv: {argv}");
    let log = daemon.log();
    assert!(!log.contains(ROLE_PASSWORD), "password in the daemon log");
    for f in world.backup_files() {
        assert!(!f.contains(ROLE_PASSWORD));
    }
    let manifest =
        std::fs::read_to_string(world.backups.join("spied.manifest.json")).expect("manifest");
    assert!(!manifest.contains(ROLE_PASSWORD));
}

#[tokio::test]
async fn cutterctl_selftest_status_and_backup() {
    let world = World::new(Grants::MissingTwo);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let daemon = world.start(&world.config(Some(&fpr), Some(cert)));

    let out = daemon.ctl(&["selftest"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.starts_with("SELFTEST: FAIL\n"), "{text}");
    for t in ["verify_result", "cut_change_set_affected_row"] {
        assert!(
            text.contains(&format!(
                "GRANT SELECT ON cutter_governance.{t} TO cutter_exec;"
            )),
            "{text}"
        );
    }
    for t in ["verify_result", "cut_change_set_affected_row"] {
        world.pg.psql(
            "directus",
            &format!("GRANT SELECT ON cutter_governance.{t} TO cutter_exec"),
        );
    }
    let out = daemon.ctl(&["selftest"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", daemon.log());
    assert!(text.starts_with("SELFTEST: PASS\n"), "{text}");
    assert!(text.contains(&format!("…{}", &fpr[32..])), "{text}");
    assert!(
        !text.contains(&fpr[..32]),
        "only the fingerprint's tail is printed"
    );

    let out = daemon.ctl(&["backup", "--run-id", "ctl-run"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json envelope");
    for field in ["sha256", "gpg_fpr", "artifact_ref"] {
        assert!(
            !env[field].as_str().unwrap_or("").is_empty(),
            "{field} empty"
        );
    }
    assert!(env["size_bytes"].as_u64().unwrap_or(0) > 0);

    let out = daemon.ctl(&["status", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(st["ready"], true);
    assert_eq!(st["key_fpr_tail"], &fpr[32..]);
    assert_eq!(st["last_backup"]["run_id"], "ctl-run");
    assert_eq!(st["artifact_count"], 1);
    assert_eq!(st["tables_in_scope"], 9);
    // --json is the contract's own type: fields text mode lacks are there too.
    assert!(st["running"].is_array(), "{st}");
    assert_eq!(st["signer_fpr"].as_str().map(str::len), Some(40), "{st}");
    let out = daemon.ctl(&["selftest", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("selftest json");
    assert!(
        report["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .all(|c| c["status"] == "PASS" || c["status"] == "WARN"),
        "{report}"
    );
    assert!(
        st["key_expires_at"]
            .as_str()
            .unwrap_or("")
            .starts_with("20")
    );
    let out = daemon.ctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("readiness:   ready"), "{text}");
    assert!(text.contains("last backup: ctl-run"), "{text}");
}

#[test]
fn cutterctl_without_a_daemon_says_so_with_its_own_exit_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ctl(&dir.path().join("nothing.sock"), &["selftest"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach cutter-backupd"));
}

#[test]
fn backup_progress_on_a_terminal_and_silence_otherwise() {
    let (world, fpr, cert) = ready_world();
    let mut cfg = world.config(Some(&fpr), Some(cert));
    cfg.pg_dump = Some(crate::harness::dumpers::slow(world.work.path(), 4));
    let daemon = world.start(&cfg);
    // `script` gives cutterctl a terminal, as an operator's shell would.
    let cmd = format!(
        "{} --socket {} backup --run-id on-a-tty",
        crate::harness::proc::workspace_bin("cutterctl").display(),
        daemon.socket.display()
    );
    let out = crate::harness::proc::run(std::process::Command::new("script").args([
        "-qec",
        &cmd,
        "/dev/null",
    ]));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("on-a-tty: ") && shown.contains("MiB dumped"),
        "{shown}"
    );
    assert!(
        shown.contains("\"sha256\""),
        "the envelope still follows: {shown}"
    );

    let out = daemon.ctl(&["backup", "--run-id", "piped"]);
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "nothing extra when not a terminal: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is only the envelope");
    assert_eq!(env["run_id"], "piped");
}

#[test]
fn completions_and_man_pages_are_generated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("unused.sock");
    let out = ctl(&sock, &["generate", "completions", "bash"]);
    assert!(out.status.success());
    let bash = String::from_utf8_lossy(&out.stdout);
    assert!(
        bash.contains("_cutterctl()") && bash.contains("restore"),
        "{bash}"
    );
    let out = ctl(&sock, &["generate", "man"]);
    assert!(out.status.success());
    let man = String::from_utf8_lossy(&out.stdout);
    assert!(
        man.contains(".TH cutterctl") && man.contains("selftest"),
        "{man}"
    );
    let out = std::process::Command::new(crate::harness::proc::workspace_bin("cutter-backupd"))
        .arg("--print-man")
        .output()
        .expect("daemon");
    assert!(out.status.success());
    // Section 8, where the package installs it (lintian checks the match).
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH cutter-backupd 8"));
}

#[test]
fn reloads_never_let_more_than_max_concurrent_dumps_run() {
    let (world, fpr, cert) = ready_world();
    // A pg_dump that logs its start and end and takes a second, so backups
    // overlap the reloads.
    let (wrapper, log) = crate::harness::dumpers::counting(world.work.path(), 1);
    let mut cfg = world.config(Some(&fpr), Some(cert));
    cfg.pg_dump = Some(wrapper);
    cfg.extra = "max_concurrent = 2\n".into();
    let daemon = world.start(&cfg);
    // Calls arrive spread over the reloads: each lands after a different one.
    let calls: Vec<_> = (0..6u64)
        .map(|i| {
            let socket = daemon.socket.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(250 * i));
                ctl(&socket, &["backup", "--run-id", &format!("hup-{i}")])
            })
        })
        .collect();
    for _ in 0..100 {
        daemon.signal("HUP");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for c in calls {
        let out = c.join().expect("call");
        assert!(
            out.status.success(),
            "{}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            daemon.log()
        );
    }
    let most = crate::harness::dumpers::most_at_once(&log);
    assert_eq!(most, 2, "pg_dumps at once (max_concurrent = 2)");
    assert!(
        daemon.ctl(&["status"]).status.success(),
        "the daemon is alive"
    );
}
