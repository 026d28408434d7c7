//! The streamed offsite upload (`required` mode) against a real SeaweedFS:
//! parts go up while pg_dump still runs; a dump that fails mid-way leaves
//! no multipart upload and no object; a server that dies mid-upload fails
//! the call UNAVAILABLE with the local run complete, and a retry only
//! uploads. Also: health follows the offsite mode while the bucket is
//! down, and the offsite check answers within its bound against a server
//! that never answers.

use std::time::{Duration, Instant};

use tonic_health::pb::health_check_response::ServingStatus;

use crate::harness::dumpers;
use crate::harness::proc::wait_until;
use crate::harness::text;
use crate::observability::health;
use crate::offsite::{BUCKET, Setup, backup};

/// A big table, uncompressed, in 5 MiB parts, dumped by a pg_dump that
/// stops after 20 MiB for `secs` seconds (so the test can act mid-dump).
fn stalling_setup(secs: u32, backup_extra: &str) -> Setup {
    let mut s = Setup::new(false, "required", "part_size_mib = 5");
    let table = s.world.add_table("offsite_big", 40);
    s.cfg.tables.push(table);
    s.cfg.extra.push_str("compression = \"none\"\n");
    s.cfg.extra.push_str(backup_extra);
    s.cfg.pg_dump = Some(dumpers::wrapper(
        s.world.work.path(),
        &format!("pg_dump-pause-{secs}"),
        &format!(
            "{{real}} \"$@\" | {{ head -c {}; sleep {secs}; cat; }}",
            20 << 20
        ),
    ));
    s
}

/// Waits until the server holds a multipart upload while `run_id` has no
/// local artifact yet: the upload runs while the dump does.
fn upload_begins_mid_dump(s: &Setup, run_id: &str) {
    wait_until(
        Duration::from_secs(60),
        || !s.weed.multipart_uploads(BUCKET).is_empty(),
        || "no multipart upload started while the dump ran".to_owned(),
    );
    assert!(
        !s.world.backups.join(format!("{run_id}.sql.gpg")).exists(),
        "the artifact was committed before the upload began: not streamed"
    );
}

/// `cutterctl backup --run-id <run_id>` on a blocking thread.
fn spawn_backup(
    daemon: &crate::harness::Daemon,
    run_id: &'static str,
) -> tokio::task::JoinHandle<std::process::Output> {
    let socket = daemon.socket.clone();
    tokio::task::spawn_blocking(move || {
        crate::harness::daemon::ctl(&socket, &["backup", "--run-id", run_id])
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_that_fails_mid_way_leaves_no_multipart_upload_and_no_object() {
    let s = stalling_setup(60, "stall_timeout_secs = 4\n");
    let daemon = s.start();
    let call = spawn_backup(&daemon, "cut1");
    upload_begins_mid_dump(&s, "cut1");
    let parts_before = s.weed.multipart_uploads(BUCKET);
    assert_eq!(parts_before, vec![s.key("cut1.sql.gpg")]);
    let out = call.await.expect("caller");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no output for 4 s"), "{}", text(&out));
    assert_eq!(
        s.weed.multipart_uploads(BUCKET),
        Vec::<String>::new(),
        "an incomplete multipart upload was left behind"
    );
    assert_eq!(
        s.weed.keys(BUCKET, &s.key("cut1")),
        Vec::<String>::new(),
        "an object was left behind"
    );
    assert!(
        !s.world.backups.join("cut1.sql.gpg").exists(),
        "{:?}",
        s.world.backup_files()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stopped_mid_upload_fails_the_call_keeps_the_local_run_and_a_retry_only_uploads() {
    let mut s = stalling_setup(5, "");
    let daemon = s.start();
    let call = spawn_backup(&daemon, "up1");
    upload_begins_mid_dump(&s, "up1");
    s.weed.stop();
    let out = call.await.expect("caller");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("Unavailable") && t.contains("the local artifact is kept"),
        "{t}"
    );
    // The local run is complete and verifies.
    let out = daemon.ctl(&["verify", "up1"]);
    assert!(out.status.success(), "{}", text(&out));

    s.weed.start_again();
    let env = backup(&daemon, "up1").await.expect("the retry");
    assert!(env.reused, "the retry dumped again");
    assert_eq!(
        env.offsite_ref,
        format!("s3://{BUCKET}/{}", s.key("up1.sql.gpg"))
    );
    let local = std::fs::read(s.world.backups.join("up1.sql.gpg")).expect("local artifact");
    assert_eq!(s.weed.get(BUCKET, &s.key("up1.sql.gpg")), local);
    let log = daemon.log();
    assert_eq!(
        log.matches("backup complete run_id=up1").count(),
        1,
        "the retry dumped again:\n{log}"
    );
    assert!(
        log.contains("returning the existing complete artifact run_id=up1"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_stays_serving_in_async_mode_and_turns_not_serving_in_required_mode_while_the_bucket_is_down()
 {
    for (mode, want, verdict) in [
        ("async", ServingStatus::Serving, "WARN"),
        ("required", ServingStatus::NotServing, "FAIL"),
    ] {
        let mut s = Setup::new(false, mode, "check_timeout_secs = 2");
        let daemon = s.start();
        let out = daemon.ctl(&["selftest"]);
        assert!(out.status.success(), "{mode}: {}", text(&out));
        assert_eq!(health(&daemon).await, ServingStatus::Serving, "{mode}");
        s.weed.stop();
        let out = daemon.ctl(&["selftest"]);
        let t = text(&out);
        let line = t
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("offsite"))
            .unwrap_or_else(|| panic!("{mode}: no offsite check: {t}"));
        assert!(line.contains(verdict), "{mode}: {line}");
        assert_eq!(health(&daemon).await, want, "{mode}: {t}");
        let status = text(&daemon.ctl(&["status"]));
        assert!(status.contains("offsite"), "{mode}: {status}");
        let metrics = text(&daemon.ctl(&["metrics"]));
        let warned = format!(
            "cutter_backup_check_warned{{check=\"offsite\"}} {}",
            u8::from(verdict == "WARN")
        );
        assert!(metrics.contains(&warned), "{mode}: {warned}\n{metrics}");
        if mode == "async" {
            // Backups still complete (and queue) while health says so.
            let env = backup(&daemon, "while-down").await.expect("async backup");
            assert!(env.offsite_ref.is_empty());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offsite_check_answers_within_its_bound_against_a_server_that_never_answers() {
    // A listening socket that never accepts: connections complete in the
    // kernel's backlog, and no byte ever comes back.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    let mut s = Setup::new(false, "async", "check_timeout_secs = 2");
    s.cfg.tail = s
        .cfg
        .tail
        .replace(&s.weed.endpoint(), &format!("http://{addr}"));
    let daemon = s.start();
    let started = Instant::now();
    let out = daemon.ctl(&["selftest"]);
    let took = started.elapsed();
    let t = text(&out);
    assert!(
        t.contains(&format!("no answer from http://{addr} within 2 s")),
        "{t}"
    );
    // Unbounded, the SDK's own timeouts took about 25 s here.
    assert!(
        took < Duration::from_secs(15),
        "selftest took {took:?}: {t}"
    );
    let env = backup(&daemon, "silent").await.expect("a local backup");
    assert!(env.offsite_ref.is_empty());
    drop(silent);
}
