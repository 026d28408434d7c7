//! Test-only crash points. Built only with the `failpoints` cargo feature
//! (the test suite's debug build; never a release or a package): when the
//! environment variable `CUTTER_FAILPOINT` names a point the process reaches,
//! the process SIGKILLs itself there, so a test can crash the daemon at an
//! exact step (say, between two renames of a commit) and check what start-up
//! recovery makes of it. [`pause`] instead holds the caller at a point
//! until the test lets it go (`CUTTER_FAILPOINT_DIR/<name>.reached` appears,
//! the caller waits for `<name>.resume`), so the test can change the world
//! at an exact step. Without the feature both compile to nothing.

/// Crashes the process here when `CUTTER_FAILPOINT` is `name`.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    if std::env::var_os("CUTTER_FAILPOINT").is_some_and(|v| v == name) {
        eprintln!("failpoint {name}: SIGKILL");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}

/// Waits here when `CUTTER_FAILPOINT` is `name`, until the test creates
/// `CUTTER_FAILPOINT_DIR/<name>.resume`.
#[cfg(feature = "failpoints")]
pub async fn pause(name: &str) {
    let Some(dir) = std::env::var_os("CUTTER_FAILPOINT_DIR") else {
        return;
    };
    if std::env::var_os("CUTTER_FAILPOINT").is_none_or(|v| v != name) {
        return;
    }
    let dir = std::path::PathBuf::from(dir);
    let _ = std::fs::write(dir.join(format!("{name}.reached")), b"");
    eprintln!("failpoint {name}: paused");
    while !dir.join(format!("{name}.resume")).exists() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits here when `CUTTER_FAILPOINT` is `name` (a no-op without the
/// `failpoints` feature).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub async fn pause(_name: &str) {}

/// Crashes the process here when `CUTTER_FAILPOINT` is `name` (a no-op
/// without the `failpoints` feature).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}
