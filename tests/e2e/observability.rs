//! What operators and monitoring watch: the gRPC health status and
//! systemd's STATUS following every selftest (timed ones included), the
//! metrics (checked by promtool, and the textfile node_exporter reads), and
//! the journal's fields.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::harness::proc::{require, run};
use crate::harness::{Daemon, Grants, KeyKind, World};
use crate::systemd::{notify_socket, read_until};

const SERVICE: &str = "cutter.backup.v1.BackupService";

pub(crate) async fn health(daemon: &Daemon) -> ServingStatus {
    let channel = cutter_backup::channel(&daemon.socket)
        .await
        .expect("channel");
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: SERVICE.into(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status;
    ServingStatus::try_from(status).expect("a serving status")
}

/// Polls health until it is `want`; returns how long that took.
async fn health_becomes(daemon: &Daemon, want: ServingStatus, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = health(daemon).await;
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "health stayed {got:?}, wanted {want:?}:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_grant_revoked_while_idle_turns_health_and_status_within_one_interval() {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let (notify_path, sock) = notify_socket(&world);
    let mut cfg = world.config(Some(&fpr), Some(cert));
    cfg.server_extra = "selftest_interval_secs = 1\n".into();
    cfg.env = vec![("NOTIFY_SOCKET".into(), notify_path.display().to_string())];
    let daemon = world.start(&cfg);
    health_becomes(&daemon, ServingStatus::Serving, Duration::from_secs(10)).await;
    let mut seen = Vec::new();
    read_until(&sock, &mut seen, "STATUS=ready", Duration::from_secs(10));

    // Nobody calls the daemon; the timer notices within one interval.
    world.pg.psql(
        "directus",
        "REVOKE SELECT ON cutter_governance.verify_result FROM cutter_exec",
    );
    let took = health_becomes(&daemon, ServingStatus::NotServing, Duration::from_secs(5)).await;
    assert!(took <= Duration::from_millis(2500), "took {took:?}");
    read_until(
        &sock,
        &mut seen,
        "STATUS=FAIL-CLOSED: grants",
        Duration::from_secs(5),
    );
    world.pg.psql(
        "directus",
        "GRANT SELECT ON cutter_governance.verify_result TO cutter_exec",
    );
    health_becomes(&daemon, ServingStatus::Serving, Duration::from_secs(5)).await;
    read_until(&sock, &mut seen, "STATUS=ready", Duration::from_secs(5));
}

#[test]
fn metrics_pass_promtool_and_the_textfile_follows() {
    let promtool = require("promtool");
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let collector = world.work.path().join("node-exporter");
    std::fs::create_dir(&collector).expect("mkdir");
    let textfile = collector.join("cutter_backup.prom");
    let mut cfg = world.config(Some(&fpr), Some(cert));
    cfg.tail = format!(
        "[metrics]\ntextfile = {:?}\n",
        textfile.display().to_string()
    );
    let daemon = world.start(&cfg);
    let out = daemon.ctl(&["backup", "--run-id", "m1"]);
    assert!(out.status.success(), "{}", daemon.log());
    let out = daemon.ctl(&["backup", "--run-id", "m1"]);
    assert!(out.status.success(), "{}", daemon.log());

    let out = daemon.ctl(&["metrics"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    check_metrics(&promtool, text.as_bytes());
    for want in [
        "cutter_backup_selftest_passed 1",
        "cutter_backup_backups_total{result=\"complete\"} 1",
        "cutter_backup_backups_total{result=\"reused\"} 1",
        "cutter_backup_check_passed{check=\"grants\"} 1",
        "cutter_backup_artifacts 1",
        "cutter_backup_last_success_timestamp_seconds ",
        "cutter_backup_last_size_bytes ",
        "cutter_backup_key_expiry_timestamp_seconds ",
        "cutter_backup_build_info{version=\"",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    let file = std::fs::read(&textfile).expect("textfile written");
    check_metrics(&promtool, &file);
    assert!(
        String::from_utf8_lossy(&file).contains("cutter_backup_backups_total{result=\"reused\"} 1")
    );
    assert_eq!(
        std::fs::metadata(&textfile)
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o644,
        "node_exporter reads it"
    );
    assert_eq!(
        crate::harness::list_dir(&collector),
        ["cutter_backup.prom"],
        "no temp file left behind"
    );

    // After a restart, before any new backup, the last success is still known.
    drop(daemon);
    let daemon = world.start(&cfg);
    let text = String::from_utf8_lossy(&daemon.ctl(&["metrics"]).stdout).into_owned();
    assert!(
        text.contains("cutter_backup_last_success_timestamp_seconds "),
        "{text}"
    );

    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml");
    run(Command::new(&promtool).args(["check", "rules"]).arg(rules));
}

pub(crate) fn check_metrics(promtool: &Path, text: &[u8]) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text)
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(text)
    );
}

/// The fields of one journald native-protocol datagram.
fn journal_fields(datagram: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let line_end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let line = &rest[..line_end];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            out.push((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            ));
            rest = rest.get(line_end + 1..).unwrap_or_default();
        } else {
            // NAME\n<u64 LE length><value>\n
            let name = String::from_utf8_lossy(line).into_owned();
            let after = rest.get(line_end + 1..).unwrap_or_default();
            let len = after
                .get(..8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize)
                .unwrap_or(0);
            let value = after.get(8..8 + len).unwrap_or_default();
            out.push((name, String::from_utf8_lossy(value).into_owned()));
            rest = after.get(8 + len + 1..).unwrap_or_default();
        }
    }
    out
}

#[test]
fn the_journal_gets_the_facts_in_message_and_unprefixed_fields() {
    require("unshare");
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    // journald's socket, as the daemon sees it in its own mount namespace.
    let journal = world.work.path().join("journal.sock");
    let sock = UnixDatagram::bind(&journal).expect("bind journal socket");
    // Drained from the start: a full datagram queue would block the
    // daemon's logging (journald drains it as fast).
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = sock.recv(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let wrapper = world.work.path().join("under-journald.sh");
    std::fs::write(
        &wrapper,
        "set -e\n\
         mount -t tmpfs tmpfs /run\n\
         mkdir -p /run/systemd/journal\n\
         : > /run/systemd/journal/socket\n\
         mount --bind \"$CUTTER_TEST_JOURNAL\" /run/systemd/journal/socket\n\
         exec 2>>\"$CUTTER_TEST_STDERR\"\n\
         JOURNAL_STREAM=$(stat -L -c '%d:%i' /proc/self/fd/2) exec \"$@\"\n",
    )
    .expect("wrapper");
    let mut cfg = world.config(Some(&fpr), Some(cert));
    cfg.wrap = vec![
        "unshare".into(),
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "sh".into(),
        wrapper.display().to_string(),
    ];
    cfg.env = vec![
        ("CUTTER_TEST_JOURNAL".into(), journal.display().to_string()),
        (
            "CUTTER_TEST_STDERR".into(),
            world.work.path().join("stream.log").display().to_string(),
        ),
    ];
    let daemon = world.start(&cfg);
    let out = daemon.ctl(&["backup", "--run-id", "j1"]);
    assert!(out.status.success(), "{}", daemon.log());
    world.pg.psql(
        "directus",
        "REVOKE SELECT ON cutter_governance.verify_result FROM cutter_exec",
    );
    let _ = daemon.ctl(&["selftest"]);

    let mut messages: Vec<Vec<(String, String)>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let find = |messages: &[Vec<(String, String)>], prefix: &str| {
        messages
            .iter()
            .find(|m| {
                m.iter()
                    .any(|(k, v)| k == "MESSAGE" && v.starts_with(prefix))
            })
            .cloned()
    };
    while Instant::now() < deadline
        && (find(&messages, "backup complete").is_none()
            || find(&messages, "selftest FAIL").is_none())
    {
        if let Ok(d) = rx.recv_timeout(Duration::from_millis(100)) {
            messages.push(journal_fields(&d));
        }
    }
    let done = find(&messages, "backup complete").unwrap_or_else(|| {
        panic!(
            "no `backup complete` entry: {messages:#?}\n{}",
            daemon.log()
        )
    });
    let get = |m: &[(String, String)], k: &str| {
        m.iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {k} field in {m:#?}"))
    };
    let msg = get(&done, "MESSAGE");
    let sha = get(&done, "SHA256");
    assert_eq!(get(&done, "RUN_ID"), "j1");
    assert_eq!(sha.len(), 64);
    assert!(
        msg.contains("run_id=j1") && msg.contains(&format!("sha256={sha}")),
        "{msg}"
    );
    let size = get(&done, "SIZE_BYTES");
    assert!(msg.contains(&format!("size={size}")), "{msg}");
    assert!(get(&done, "DURATION_MS").parse::<u64>().is_ok());
    assert!(
        !done.iter().any(|(k, _)| k.starts_with("F_")),
        "fields carry no prefix: {done:#?}"
    );
    let fail = find(&messages, "selftest FAIL").expect("selftest FAIL entry");
    assert!(get(&fail, "MESSAGE").contains("grants:"), "{fail:#?}");
    assert_eq!(get(&fail, "CHECK"), "grants");
}
