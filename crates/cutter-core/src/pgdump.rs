//! pg_dump: finding the binary that matches the server, checking its version,
//! and running it on exactly the tables in scope inside an exported snapshot.
//!
//! Its exit status and stderr are judged here, never trusted to a pipe: a
//! `pg_dump | gpg` pipe happily encrypts an error into a valid, tiny file.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

use crate::config::TableName;
use crate::db::ConnTarget;

/// The pg_dump for a server major version, called directly: Debian's
/// `/usr/bin/pg_dump` wrapper costs ~25 ms per call.
pub fn default_path(server_major: u32) -> PathBuf {
    PathBuf::from(format!("/usr/lib/postgresql/{server_major}/bin/pg_dump"))
}

/// The newest installed PostgreSQL's bin directory (`/usr/lib/postgresql/N/bin`).
pub fn newest_bindir() -> Option<PathBuf> {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort_unstable();
    versions
        .iter()
        .rev()
        .map(|v| PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")))
        .find(|d| d.is_dir())
}

/// `pg_dump --version`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgDumpVersion {
    /// Major version, e.g. 15.
    pub major: u32,
    /// The whole version line.
    pub line: String,
}

/// Runs `path --version`; the error says how to fix a missing binary.
pub fn version(path: &Path) -> Result<PgDumpVersion, String> {
    let out = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "cannot run {} ({e}); install the matching postgresql-client package or set backup.pg_dump",
                path.display()
            )
        })?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let major = line
        .split_whitespace()
        .find_map(|w| w.split('.').next()?.parse::<u32>().ok())
        .ok_or_else(|| {
            format!(
                "{} --version printed {line:?}, not a pg_dump version",
                path.display()
            )
        })?;
    Ok(PgDumpVersion { major, line })
}

/// A running pg_dump whose stdout is the plain SQL dump.
pub struct Dump {
    child: Child,
    stderr: Option<JoinHandle<String>>,
}

/// The most stderr kept for an error message.
const STDERR_KEEP: usize = 16 * 1024;

impl Dump {
    /// Starts pg_dump on `tables` in `snapshot`. The password travels in the
    /// child's environment, never in argv.
    pub fn start(
        pg_dump: &Path,
        target: &ConnTarget,
        snapshot: &str,
        tables: &[TableName],
    ) -> std::io::Result<Self> {
        let mut cmd = Command::new(pg_dump);
        // Rows are what a restore needs; owners and grants name roles that a
        // scratch database need not have, and would abort a strict restore.
        cmd.arg("--format=plain")
            .arg("--no-owner")
            .arg("--no-privileges")
            .arg("--no-password")
            .arg("--strict-names")
            .arg(format!("--snapshot={snapshot}"));
        for t in tables {
            cmd.arg("--table").arg(t.quoted());
        }
        // Exactly the pool's connection: its URL (no password; sslmode,
        // sslrootcert, options … included) and the password in the
        // environment. No other PG* variable reaches the child, so a stray
        // PGSERVICE or PGOPTIONS in the daemon's environment cannot redirect
        // or alter the dump.
        cmd.arg(format!("--dbname={}", target.url));
        crate::db::clear_pg_env(&mut cmd);
        // Its own process group, so an abort reaches every process a wrapper
        // script may have started, not just the one we spawned.
        cmd.envs(target.env())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let stderr = child.stderr.take().map(collect_stderr);
        Ok(Self { child, stderr })
    }

    /// A handle that can kill the whole dump from another thread.
    pub fn killer(&self) -> Killer {
        Killer(self.child.id())
    }

    /// The dump's stdout; take it once.
    pub fn stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// Kills pg_dump (a failed write downstream) and reaps it.
    pub fn kill(mut self) {
        self.killer().kill();
        let _ = self.child.wait();
    }

    /// Waits for pg_dump and judges it: any non-zero exit, signal, or an
    /// `error:` on stderr fails the dump.
    pub fn finish(mut self) -> Result<String, String> {
        let status = self
            .child
            .wait()
            .map_err(|e| format!("waiting for pg_dump: {e}"))?;
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        judge(status, &stderr)?;
        Ok(stderr)
    }
}

/// Kills a running dump's process group (abort on stop or stall).
#[derive(Debug, Clone, Copy)]
pub struct Killer(u32);

impl Killer {
    /// SIGKILL to the dump's process group; its stdout then ends.
    pub fn kill(self) {
        let pid = i32::try_from(self.0)
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

fn judge(status: ExitStatus, stderr: &str) -> Result<(), String> {
    let tail = stderr.trim();
    if let Some(sig) = status.signal() {
        return Err(format!("pg_dump was killed by signal {sig}. {tail}"));
    }
    if !status.success() {
        return Err(format!("pg_dump exited with {status}: {tail}"));
    }
    if tail
        .lines()
        .any(|l| l.contains("error:") || l.starts_with("ERROR"))
    {
        return Err(format!("pg_dump reported an error despite exit 0: {tail}"));
    }
    Ok(())
}

fn collect_stderr(mut stderr: ChildStderr) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            let room = STDERR_KEEP.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        String::from_utf8_lossy(&kept).into_owned()
    })
}
