//! The orchestrator's side of the socket: the Python client
//! (`clients/python`, installed with pip as an orchestrator would) and a
//! plain grpcio client with only the documented options, run by pytest
//! against real daemons: one that passes, one missing grants, one that does
//! not admit the caller, and a socket where nothing listens. The venv comes
//! from `scripts/python-venv.sh` (cached outside the clone).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{Daemon, Grants, KeyKind, World};

/// The venv's python, made or reused by `scripts/python-venv.sh`.
fn venv_python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("scripts/python-venv.sh"))
        .output()
        .expect("run scripts/python-venv.sh");
    assert!(
        out.status.success(),
        "scripts/python-venv.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let venv = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("the venv path")
        .to_owned();
    PathBuf::from(venv).join("bin/python")
}

#[test]
fn pytest_against_the_real_daemons() {
    let python = venv_python();
    let ready = World::new(Grants::All);
    let (fpr, cert) = ready.key(KeyKind::Ed25519, "py");
    let ready_daemon = ready.start(&ready.config(Some(&fpr), Some(cert.clone())));

    let failing = World::new(Grants::MissingTwo);
    let (ffpr, fcert) = failing.key(KeyKind::Ed25519, "py");
    let failing_daemon = failing.start(&failing.config(Some(&ffpr), Some(fcert)));

    let denied_dir = ready.work.path().join("denied");
    std::fs::create_dir(&denied_dir).expect("mkdir");
    let mut denied_cfg = ready.config(Some(&fpr), Some(cert));
    denied_cfg.allowed_uids = vec![4242];
    let denied_daemon = Daemon::start(&denied_dir, &denied_cfg);

    let missing = ready.work.path().join("nobody-listens.sock");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join("clients/python/tests"))
        .env("CUTTER_SOCKET_READY", &ready_daemon.socket)
        .env("CUTTER_SOCKET_FAILING", &failing_daemon.socket)
        .env("CUTTER_SOCKET_DENIED", &denied_daemon.socket)
        .env("CUTTER_SOCKET_MISSING", &missing)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run pytest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "pytest failed:\n{text}\n--- ready daemon ---\n{}",
        ready_daemon.log()
    );
    assert!(text.contains(" passed"), "{text}");
}
