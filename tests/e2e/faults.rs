//! Faults the world throws at a running daemon (the start of the reliability
//! matrix): the database going away and coming back, and bytes on the
//! socket that are not gRPC.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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

/// Lets this test process hold a thousand sockets (CI's soft limit may be 1024).
fn raise_open_files(want: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    let hard = lim.maximum.unwrap_or(want);
    assert!(hard >= want, "RLIMIT_NOFILE hard limit {hard} < {want}");
    lim.current = Some(want);
    setrlimit(Resource::Nofile, lim).expect("raise RLIMIT_NOFILE");
}

/// Whether the daemon has closed this connection (EOF or an error; data it
/// sent, such as its HTTP/2 settings, is read and skipped).
pub fn closed_by_daemon(mut s: &UnixStream) -> bool {
    s.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }
}

/// The daemon's open sockets (the listener, its pool, its clients).
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|t| t.to_string_lossy().starts_with("socket:"))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_idle_connections_and_a_slowloris_do_not_lock_others_out() {
    raise_open_files(4096);
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let daemon = world.start(&world.config(Some(&fpr), Some(cert)));
    let max_connections = 64; // the default

    // Slowloris: the HTTP/2 preface one byte every 100 ms, reconnecting
    // whenever the daemon closes the connection.
    let stop = Arc::new(AtomicBool::new(false));
    let lorises: Vec<_> = (0..8)
        .map(|_| {
            let (socket, stop) = (daemon.socket.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
                while !stop.load(Ordering::SeqCst) {
                    let Ok(mut s) = UnixStream::connect(&socket) else {
                        continue;
                    };
                    for b in preface {
                        if stop.load(Ordering::SeqCst) || s.write_all(&[*b]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })
        })
        .collect();
    let idle: Vec<UnixStream> = (0..1000)
        .map(|_| UnixStream::connect(&daemon.socket).expect("connect"))
        .collect();

    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let status = daemon
            .client()
            .await
            .status(StatusRequest { running_only: true })
            .await
            .expect("a new client is served");
        assert!(!status.into_inner().version.is_empty());
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(1),
        "slowest answer {slowest:?} with 1000 idle connections open"
    );
    let sockets = open_sockets(daemon.pid());
    assert!(
        sockets <= max_connections + 16,
        "the daemon holds {sockets} sockets; the cap is {max_connections}"
    );
    let closed = idle.iter().filter(|s| closed_by_daemon(s)).count();
    assert!(
        closed >= 1000 - max_connections,
        "only {closed} of 1000 idle connections were closed"
    );
    stop.store(true, Ordering::SeqCst);
    for l in lorises {
        l.join().expect("slowloris");
    }
    // A real backup still works.
    daemon.backup("after-the-flood");
}
