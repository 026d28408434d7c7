//! The reliability matrix (docs/reliability.md): faults the world throws at a
//! running daemon (the database stopped before or during a dump, a full disk,
//! SIGKILL mid-write and between the commit's renames, a caller hanging up, a
//! grant revoked or a table dropped under a backup, floods of backups and of
//! idle connections, bytes that are not gRPC). After each: nothing under a
//! final name is incomplete, no partial is left, the daemon answers (or its
//! restart recovers), and the caller got a status it can act on.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cutter_backup::v1::{BackupEnvelope, PreWriteBackupRequest, StatusRequest};

use crate::harness::daemon::ctl;
use crate::harness::proc::{run, wait_until, workspace_bin};
use crate::harness::{Daemon, Grants, KeyKind, SCHEMA, TABLES, World, dumpers, list_dir, text};

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
    eprintln!("observed: {:?}: {}", err.code(), err.message());
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
    let mut refused = 0;
    for bytes in [
        &b"\x00\xff garbage \x13\x37 not http at all\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
    ] {
        assert_refused(&daemon, bytes);
        refused += 1;
        // And the daemon still serves.
        let status = daemon
            .client()
            .await
            .status(StatusRequest { running_only: true })
            .await
            .expect("still answers");
        assert!(!status.into_inner().version.is_empty());
    }
    assert_eq!(refused, 2);
    refused_as_too_large(
        &daemon,
        PreWriteBackupRequest {
            run_id: "x".repeat(64 << 20),
        },
    )
    .await;
    let status = daemon
        .client()
        .await
        .status(StatusRequest { running_only: true })
        .await
        .expect("still answers");
    assert!(!status.into_inner().version.is_empty());
    let grown = peak_rss_kib(daemon.pid()).saturating_sub(before);
    eprintln!("observed: peak RSS grew by {grown} KiB");
    assert!(
        grown < 16 * 1024,
        "peak RSS grew by {grown} KiB for a 64 MiB message"
    );
}

/// Sends `bytes` on a new connection and asserts that the daemon refused
/// them: it ended the connection (EOF or reset) within 5 s, having sent
/// nothing but connection-level HTTP/2 frames (its SETTINGS, a GOAWAY):
/// no HTTP/1 reply and no response on any stream.
fn assert_refused(daemon: &Daemon, bytes: &[u8]) {
    let shown = String::from_utf8_lossy(bytes);
    let mut s = UnixStream::connect(&daemon.socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(bytes).expect("write");
    let mut reply = Vec::new();
    // On an error, what was read before it is in `reply`.
    let ended = match s.read_to_end(&mut reply) {
        Ok(_) => Ok(()),
        Err(e) => match e.kind() {
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => Ok(()),
            _ => Err(e),
        },
    };
    assert!(
        ended.is_ok(),
        "{shown:?}: the daemon kept the connection open ({ended:?}); it sent {:?}",
        String::from_utf8_lossy(&reply)
    );
    // HTTP/2 frames: a 9-byte header (length 24 bits, type, flags, stream).
    let mut frames = Vec::new();
    let mut rest = &reply[..];
    while rest.len() >= 9 {
        let len =
            usize::try_from(u32::from_be_bytes([0, rest[0], rest[1], rest[2]])).expect("24 bits");
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
        let Some(next) = rest.get(9 + len..) else {
            break;
        };
        frames.push((rest[3], stream));
        rest = next;
    }
    // SETTINGS 4, PING 6, GOAWAY 7, WINDOW_UPDATE 8, all on stream 0.
    assert!(
        rest.is_empty()
            && frames
                .iter()
                .all(|&(kind, stream)| stream == 0 && matches!(kind, 4 | 6 | 7 | 8)),
        "{shown:?}: the daemon answered more than HTTP/2 connection frames: {:?}",
        String::from_utf8_lossy(&reply)
    );
}

/// A request over the daemon's 256 KiB limit is refused as too large, by
/// the daemon (its decoding limit named in the status), not by the client.
pub async fn refused_as_too_large(daemon: &Daemon, req: PreWriteBackupRequest) {
    let err = daemon
        .client()
        .await
        .pre_write_backup(req)
        .await
        .expect_err("too large");
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
    assert!(
        err.message().contains("decoded message length too large")
            && err
                .message()
                .contains(&format!("the limit is: {} bytes", 256 * 1024)),
        "not the daemon's 256 KiB limit: {err:?}"
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
    eprintln!("observed: slowest of 20 new clients {slowest:?}, daemon sockets {sockets}");
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

/// What every fault must leave: each run under a final name is complete
/// (its artifact verifies against its signed manifest), no manifest lacks
/// its artifact, and no partial file is left.
fn assert_complete_or_absent(world: &World, daemon: &Daemon) {
    let files = world.backup_files();
    assert!(
        !files.iter().any(|f| f.starts_with('.')),
        "leftover partial files: {files:?}"
    );
    for f in &files {
        if let Some(id) = f.strip_suffix(".sql.gpg") {
            let out = daemon.ctl(&["verify", id]);
            assert!(
                out.status.success(),
                "{f} sits under a final name but does not verify: {}",
                text(&out)
            );
        }
        if let Some(id) = f.strip_suffix(".manifest.json") {
            assert!(
                files.contains(&format!("{id}.sql.gpg")),
                "{f} has no artifact: {files:?}"
            );
        }
    }
}

/// Size of the run's partial artifact, if one is being written.
fn partial_bytes(world: &World) -> Option<u64> {
    world
        .backup_files()
        .iter()
        .find(|f| f.starts_with('.') && f.contains(".sql.gpg"))
        .and_then(|f| std::fs::metadata(world.backups.join(f)).ok())
        .map(|m| m.len())
}

/// Waits until PostgreSQL is running `COPY` on `table` for pg_dump.
fn wait_for_copy_of(world: &World, table: &str) {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY %{table}%TO stdout%'"
    );
    wait_until(
        Duration::from_secs(60),
        || world.pg.psql("postgres", &sql) == "1",
        || format!("pg_dump never copied {table}"),
    );
}

/// A daemon whose scope also holds a `mib` MiB table `name`, and a backup of
/// `run_id` caught while pg_dump copies that table.
async fn backup_caught_copying(
    world: &World,
    name: &str,
    mib: u64,
    run_id: &str,
) -> (
    Daemon,
    tokio::task::JoinHandle<Result<tonic::Response<BackupEnvelope>, tonic::Status>>,
) {
    let table = world.add_table(name, mib);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let mut cfg = world.config(Some(&fpr), Some(cert));
    cfg.tables.push(table);
    let daemon = world.start(&cfg);
    let mut client = daemon.client().await;
    let request = PreWriteBackupRequest {
        run_id: run_id.into(),
    };
    let call = tokio::spawn(async move { client.pre_write_backup(request).await });
    wait_for_copy_of(world, name);
    (daemon, call)
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_stopped_mid_dump_fails_the_call_and_leaves_nothing() {
    let world = World::new(Grants::All);
    let (daemon, call) = backup_caught_copying(&world, "big", 300, "db-dies").await;
    wait_until(
        Duration::from_secs(60),
        || partial_bytes(&world).is_some_and(|n| n > 1 << 20),
        || "the artifact never grew past 1 MiB".into(),
    );
    world.pg.stop();
    let err = call
        .await
        .expect("join")
        .expect_err("the dump lost its server");
    eprintln!("observed: {:?}: {}", err.code(), err.message());
    assert!(
        matches!(err.code(), tonic::Code::Internal | tonic::Code::Unavailable),
        "{err:?}"
    );
    assert!(err.message().contains("pg_dump"), "{err:?}");
    assert_complete_or_absent(&world, &daemon);
    assert!(daemon.ctl(&["status"]).status.code().is_some(), "alive");
    world.pg.start_again();
    daemon.backup("after-restart");
    assert_complete_or_absent(&world, &daemon);
}

#[test]
fn sigkill_mid_write_then_restart_recovers_and_the_same_run_id_completes() {
    let world = World::new(Grants::All);
    let big = world.add_table("big", 40);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let mut cfg = world.config(Some(&fpr), Some(cert));
    cfg.tables.push(big);
    // The OpenPGP framing holds a few MiB back: stall well past that.
    cfg.pg_dump = Some(dumpers::stalling(world.work.path(), 24 << 20));
    let mut daemon = world.start(&cfg);
    let socket = daemon.socket.clone();
    let caller = std::thread::spawn(move || ctl(&socket, &["backup", "--run-id", "killed"]));
    wait_until(
        Duration::from_secs(60),
        || partial_bytes(&world).is_some_and(|n| n > 64 << 10),
        || format!("no partial artifact grew: {:?}", world.backup_files()),
    );
    daemon.signal("KILL");
    let status = daemon.wait_exit(Duration::from_secs(10));
    assert_eq!(status.signal(), Some(9));
    let out = caller.join().expect("caller");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        world.backup_files().iter().any(|f| f.starts_with('.')),
        "the kill left no partial, so it was not mid-write: {:?}",
        world.backup_files()
    );
    drop(daemon);

    cfg.pg_dump = None;
    let daemon = world.start(&cfg);
    assert_complete_or_absent(&world, &daemon);
    assert!(daemon.log().contains("removed a leftover partial file"));
    daemon.backup("killed");
    assert_complete_or_absent(&world, &daemon);
    let plain = world.gpg.decrypt(&world.backups.join("killed.sql.gpg"));
    assert!(String::from_utf8_lossy(&plain).contains("COPY cutter_governance.big"));
}

#[test]
fn a_crash_between_the_renames_rolls_forward_and_one_before_them_leaves_nothing() {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let mut cfg = world.config(Some(&fpr), Some(cert));
    // (failpoint, rolled forward by recovery?)
    for (point, forward) in [
        ("commit-before-renames", false),
        ("commit-after-artifact-rename", true),
        ("commit-after-signature-rename", true),
    ] {
        cfg.env = vec![("CUTTER_FAILPOINT".into(), point.into())];
        let mut daemon = world.start(&cfg);
        let out = daemon.ctl(&["backup", "--run-id", point]);
        assert!(!out.status.success(), "{}", text(&out));
        let status = daemon.wait_exit(Duration::from_secs(30));
        assert_eq!(
            status.signal(),
            Some(9),
            "failpoint {point} did not fire: build with `--features cutter-backupd/failpoints` (scripts/test.sh does)"
        );
        let artifact = format!("{point}.sql.gpg");
        assert_eq!(
            world.backup_files().contains(&artifact),
            forward,
            "{point}: {:?}",
            world.backup_files()
        );
        drop(daemon);

        cfg.env.clear();
        let daemon = world.start(&cfg);
        assert_complete_or_absent(&world, &daemon);
        let files = world.backup_files();
        assert_eq!(
            files.contains(&format!("{point}.manifest.json")),
            forward,
            "{point}: recovery should {} it: {files:?}",
            if forward { "roll forward" } else { "delete" }
        );
        if forward {
            assert!(
                daemon
                    .log()
                    .contains("completed a backup interrupted between renames"),
                "{}",
                daemon.log()
            );
        }
        // The retry: the rolled-forward run is reused as is, the other is taken anew.
        let out = daemon.ctl(&["backup", "--run-id", point, "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        let envelope: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("envelope json");
        eprintln!(
            "observed: {point}: files after restart {files:?}, retry reused={}",
            envelope["reused"]
        );
        assert_eq!(envelope["reused"], serde_json::json!(forward), "{envelope}");
        assert_complete_or_absent(&world, &daemon);
    }
}

#[test]
fn a_client_that_hangs_up_mid_backup_gets_the_same_envelope_on_retry() {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let mut cfg = world.config(Some(&fpr), Some(cert));
    cfg.pg_dump = Some(dumpers::slow(world.work.path(), 2));
    let daemon = world.start(&cfg);
    let mut caller = Command::new(workspace_bin("cutterctl"))
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["backup", "--run-id", "hung-up"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cutterctl");
    wait_until(
        Duration::from_secs(10),
        || partial_bytes(&world).is_some(),
        || "the backup never started".into(),
    );
    caller.kill().expect("hang up");
    let _ = caller.wait();
    let manifest = world.backups.join("hung-up.manifest.json");
    wait_until(
        Duration::from_secs(30),
        || manifest.exists(),
        || format!("the backup did not complete: {}", daemon.log()),
    );
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).expect("manifest")).expect("json");
    let out = daemon.ctl(&["backup", "--run-id", "hung-up", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let envelope: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(envelope["reused"], serde_json::json!(true), "{envelope}");
    assert_eq!(envelope["sha256"], on_disk["sha256"], "{envelope}");
    assert_eq!(envelope["size_bytes"], on_disk["size_bytes"], "{envelope}");
    assert_complete_or_absent(&world, &daemon);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_revoked_mid_dump_fails_the_dump_cleanly() {
    let world = World::new(Grants::All);
    // Dumped first (name order), and large enough to be caught mid-copy.
    let (daemon, call) = backup_caught_copying(&world, "a0_first", 60, "revoked").await;
    world.pg.psql(
        "directus",
        &format!(
            "REVOKE SELECT ON {SCHEMA}.{} FROM {}",
            TABLES[0],
            crate::harness::pg::ROLE
        ),
    );
    let err = call
        .await
        .expect("join")
        .expect_err("the dump lost its grant");
    eprintln!("observed: {:?}: {}", err.code(), err.message());
    assert!(err.message().contains("permission denied"), "{err:?}");
    assert!(err.message().contains(TABLES[0]), "{err:?}");
    assert_complete_or_absent(&world, &daemon);
    let out = daemon.ctl(&["selftest"]);
    assert!(text(&out).contains("FAIL  grants"), "{}", text(&out));
}

#[test]
fn a_table_dropped_between_selftest_and_dump_is_named_in_the_error() {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let mut cfg = world.config(Some(&fpr), Some(cert));
    let points = world.work.path().join("failpoints");
    std::fs::create_dir_all(&points).expect("failpoint dir");
    cfg.env = vec![
        ("CUTTER_FAILPOINT".into(), "backup-before-snapshot".into()),
        ("CUTTER_FAILPOINT_DIR".into(), points.display().to_string()),
    ];
    let daemon = world.start(&cfg);
    let socket = daemon.socket.clone();
    let caller = std::thread::spawn(move || ctl(&socket, &["backup", "--run-id", "dropped"]));
    // The backup's own selftest has passed; it now waits before its snapshot.
    wait_until(
        Duration::from_secs(20),
        || points.join("backup-before-snapshot.reached").exists(),
        || {
            "the failpoint was never reached: build with `--features cutter-backupd/failpoints`"
                .into()
        },
    );
    let victim = TABLES[3];
    world
        .pg
        .psql("directus", &format!("DROP TABLE {SCHEMA}.{victim}"));
    std::fs::write(points.join("backup-before-snapshot.resume"), b"").expect("resume");
    let out = caller.join().expect("caller");
    eprintln!("observed: {}", text(&out).trim());
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(victim), "{}", text(&out));
    assert!(text(&out).contains("no longer exists"), "{}", text(&out));
    assert!(text(&out).contains("FailedPrecondition"), "{}", text(&out));
    assert_complete_or_absent(&world, &daemon);
}

/// A small tmpfs mounted over a directory for the test's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mib: u64) -> Self {
        std::fs::create_dir_all(dir).expect("mount point");
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={mib}m,mode=0700"))
            .arg("tmpfs")
            .arg(dir));
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_backup_dir_fails_preflight_or_mid_write_and_returns_the_space() {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let dir = world.work.path().join("small");
    let _fs = Tmpfs::mount(&dir, 16);
    let mut cfg = world.config(Some(&fpr), Some(cert));
    cfg.backup_dir = dir.clone();
    cfg.extra = "free_space_margin_mib = 1\n".into();

    // The estimate does not fit: preflight refuses before anything is written.
    let big = world.add_table("big", 40);
    let mut too_big = cfg.clone();
    too_big.tables.push(big);
    let daemon = world.start(&too_big);
    let out = daemon.ctl(&["selftest"]);
    assert!(text(&out).contains("FAIL  backup_dir"), "{}", text(&out));
    assert!(text(&out).contains("free space"), "{}", text(&out));
    let out = daemon.ctl(&["backup", "--run-id", "too-big"]);
    eprintln!("observed (preflight): {}", text(&out).trim());
    assert!(!out.status.success(), "{}", text(&out));
    assert!(list_dir(&dir).is_empty(), "{:?}", list_dir(&dir));
    drop(daemon);

    // The estimate fits, then the disk fills while the dump is held back.
    cfg.pg_dump = Some(dumpers::slow(world.work.path(), 3));
    let daemon = world.start(&cfg);
    let socket = daemon.socket.clone();
    let caller = std::thread::spawn(move || ctl(&socket, &["backup", "--run-id", "enospc"]));
    wait_until(
        Duration::from_secs(10),
        || list_dir(&dir).iter().any(|f| f.starts_with('.')),
        || "the backup never started".into(),
    );
    let free = cutter_core::selftest::free_bytes(&dir).expect("statvfs");
    let fill = dir.join("zz-filler");
    std::fs::write(&fill, vec![0u8; usize::try_from(free).expect("usize")]).ok();
    let out = caller.join().expect("caller");
    eprintln!("observed (mid-write): {}", text(&out).trim());
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("ResourceExhausted")
            && text(&out).contains("No space left on device")
            && text(&out).contains("free space"),
        "the error names the cause and the fix: {}",
        text(&out)
    );
    let left: Vec<String> = list_dir(&dir)
        .into_iter()
        .filter(|f| f != "zz-filler")
        .collect();
    assert!(left.is_empty(), "partials left behind: {left:?}");
    std::fs::remove_file(&fill).expect("remove filler");
    // The daemon holds no deleted file open: all the space came back.
    let after = cutter_core::selftest::free_bytes(&dir).expect("statvfs");
    assert!(
        after >= 15 << 20,
        "only {after} bytes free after the failure"
    );
    daemon.backup("after-space");
    assert!(list_dir(&dir).contains(&"after-space.sql.gpg".to_string()));
}

#[test]
fn forty_run_ids_at_once_never_run_more_than_two_dumps() {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let mut cfg = world.config(Some(&fpr), Some(cert));
    let (wrapper, log) = dumpers::counting(world.work.path(), 0);
    cfg.pg_dump = Some(wrapper);
    cfg.extra = "max_concurrent = 2\n".into();
    let daemon = world.start(&cfg);
    let before = peak_rss_kib(daemon.pid());
    let calls: Vec<_> = (0..40)
        .map(|i| {
            let socket = daemon.socket.clone();
            std::thread::spawn(move || ctl(&socket, &["backup", "--run-id", &format!("many-{i}")]))
        })
        .collect();
    for c in calls {
        let out = c.join().expect("call");
        assert!(out.status.success(), "{}\n{}", text(&out), daemon.log());
    }
    assert_eq!(dumpers::most_at_once(&log), 2, "pg_dumps at once");
    let artifacts = world
        .backup_files()
        .iter()
        .filter(|f| f.ends_with(".sql.gpg"))
        .count();
    assert_eq!(artifacts, 40);
    let grown = peak_rss_kib(daemon.pid()).saturating_sub(before);
    eprintln!("peak RSS grew by {grown} KiB for 40 queued backups");
    assert!(grown < 64 * 1024, "peak RSS grew by {grown} KiB");
    assert_complete_or_absent(&world, &daemon);
}
