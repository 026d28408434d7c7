//! Faults the world throws at a running daemon (the start of the reliability
//! matrix): the database going away and coming back, and bytes on the
//! socket that are not gRPC.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use cutter_backup::v1::{PreWriteBackupRequest, StatusRequest};

use crate::harness::{Grants, KeyKind, World, text};

#[tokio::test]
async fn the_database_stopped_then_back_without_a_daemon_restart() {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let daemon = world.start(&world.config(Some(&fpr), Some(cert)));
    daemon.backup("before");
    world.pg.stop();
    let err = daemon
        .client()
        .await
        .pre_write_backup(PreWriteBackupRequest {
            run_id: "while-down".into(),
        })
        .await
        .expect_err("the database is down");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    let out = daemon.ctl(&["selftest"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("FAIL  database"), "{}", text(&out));
    assert!(
        !world
            .backup_files()
            .iter()
            .any(|f| f.contains("while-down")),
        "{:?}",
        world.backup_files()
    );
    world.pg.start_again();
    // The pool reconnects: same daemon, no restart.
    daemon.backup("after");
    let out = daemon.ctl(&["selftest"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// The daemon's peak resident memory (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test]
async fn garbage_http1_and_a_64_mib_message_are_refused_and_cost_nothing() {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let daemon = world.start(&world.config(Some(&fpr), Some(cert)));
    let before = peak_rss_kib(daemon.pid());
    for bytes in [
        &b"\x00\xff garbage \x13\x37 not http at all\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
    ] {
        let mut s = UnixStream::connect(&daemon.socket).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(bytes).expect("write");
        let mut reply = Vec::new();
        // The daemon answers with an error or closes; either way it ends.
        let _ = s.read_to_end(&mut reply);
    }
    let err = daemon
        .client()
        .await
        .pre_write_backup(PreWriteBackupRequest {
            run_id: "x".repeat(64 << 20),
        })
        .await
        .expect_err("too large");
    assert!(
        matches!(
            err.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{err:?}"
    );
    let status = daemon
        .client()
        .await
        .status(StatusRequest { running_only: true })
        .await
        .expect("still answers");
    assert!(!status.into_inner().version.is_empty());
    let grown = peak_rss_kib(daemon.pid()).saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "peak RSS grew by {grown} KiB for a 64 MiB message"
    );
}
