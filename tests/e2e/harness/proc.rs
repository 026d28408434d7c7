//! Running helper programs: loudly, with their output in the panic message.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Runs `cmd`, panicking with its stderr unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A binary on PATH; panics (never skips) when it is missing.
pub fn require(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!("{name} is not installed: run the README's test command, which installs it")
        })
}

/// A binary built from this workspace (`cargo build --workspace` first).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // Tests live in target/<profile>/deps/, the benchmark in target/<profile>/.
    let mut profile_dir = exe.parent().expect("the executable has a directory");
    if profile_dir.ends_with("deps") {
        profile_dir = profile_dir.parent().expect("target/<profile>");
    }
    let bin = profile_dir.join(name);
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --workspace` before the tests (the README's test command does)",
        bin.display()
    );
    bin
}

/// Root runs PostgreSQL tools as `postgres`: (uid, gid), or None when not root.
pub fn postgres_ids() -> Option<(u32, u32)> {
    if current_uid() != 0 {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = run(Command::new("id").args([flag, "postgres"]));
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    Some((id("-u"), id("-g")))
}

/// The effective uid of this process.
pub fn current_uid() -> u32 {
    let out = run(Command::new("id").arg("-u"));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("numeric uid")
}

/// sha256 of a file through coreutils, so checks share no code with the daemon.
pub fn sha256sum(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_owned()
}

/// Polls `done` every 20 ms until it holds; after `within`, panics with `what()`.
pub fn wait_until(
    within: std::time::Duration,
    mut done: impl FnMut() -> bool,
    what: impl Fn() -> String,
) {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out: {}",
            what()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
