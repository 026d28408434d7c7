//! The real `cutter-backupd` on a socket in a temp dir, and `cutterctl`.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cutter_backup::v1::backup_service_client::BackupServiceClient;
use tonic::transport::Channel;

use super::proc::workspace_bin;

/// What goes into the daemon's config file and environment.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// `BACKUP_GPG_FPR` in the daemon's environment (None: unset).
    pub fingerprint: Option<String>,
    /// `key.cert_file`.
    pub cert_file: Option<PathBuf>,
    /// `key.env_file` (the operator's env file, re-read on reload).
    pub env_file: Option<PathBuf>,
    /// `key.gnupg_home` (keyring fallback).
    pub gnupg_home: Option<PathBuf>,
    /// `database.url`.
    pub database_url: String,
    /// Written to `database.password_file`.
    pub password: Option<String>,
    /// `backup.dir`.
    pub backup_dir: PathBuf,
    /// `backup.tables`.
    pub tables: Vec<String>,
    /// `backup.pg_dump`.
    pub pg_dump: Option<PathBuf>,
    /// `server.allowed_uids`.
    pub allowed_uids: Vec<u32>,
    /// Extra TOML appended verbatim inside `[backup]`.
    pub extra: String,
    /// Extra TOML appended at the end (new tables: `[retention]`, …).
    pub tail: String,
    /// Extra TOML appended verbatim inside `[server]`.
    pub server_extra: String,
    /// Extra environment for the daemon (NOTIFY_SOCKET, WATCHDOG_USEC…).
    pub env: Vec<(String, String)>,
    /// Run the daemon as this uid (and gid) instead of the test's.
    pub run_as: Option<(u32, u32)>,
    /// A command line the daemon runs under (e.g. `unshare -m sh wrapper`),
    /// which must end by exec'ing its arguments.
    pub wrap: Vec<String>,
}

impl DaemonConfig {
    /// The TOML text; paths in `dir`.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let q = |p: &Path| format!("{:?}", p.display().to_string());
        let mut toml = String::new();
        toml.push_str(&format!(
            "[server]\nsocket = {}\nallowed_uids = {:?}\n{}\n[key]\n",
            q(&dir.join("backupd.sock")),
            self.allowed_uids,
            self.server_extra
        ));
        if let Some(c) = &self.cert_file {
            toml.push_str(&format!("cert_file = {}\n", q(c)));
        }
        if let Some(e) = &self.env_file {
            toml.push_str(&format!("env_file = {}\n", q(e)));
        }
        if let Some(h) = &self.gnupg_home {
            toml.push_str(&format!("gnupg_home = {}\n", q(h)));
        }
        toml.push_str(&format!("\n[database]\nurl = {:?}\n", self.database_url));
        if let Some(pw) = &self.password {
            let pwfile = dir.join("db-password");
            std::fs::write(&pwfile, format!("{pw}\n")).expect("write password file");
            std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600))
                .expect("chmod password file");
            if let Some((uid, gid)) = self.run_as {
                std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))
                    .expect("chown password file");
            }
            toml.push_str(&format!("password_file = {}\n", q(&pwfile)));
        }
        // The signing key lives beside the config (never in backup.dir); the
        // operator's pinned copy of its cert is what restore trusts.
        toml.push_str(&format!(
            "\n[signer]\nkey_file = {}\n\n[restore]\ntrusted_signers = [{}]\n",
            q(&dir.join("signer").join("manifest-signing-key.asc")),
            q(&dir.join(PINNED_SIGNER))
        ));
        toml.push_str(&format!(
            "\n[backup]\ndir = {}\ntables = {:?}\n",
            q(&self.backup_dir),
            self.tables
        ));
        if let Some(p) = &self.pg_dump {
            toml.push_str(&format!("pg_dump = {}\n", q(p)));
        }
        toml.push_str(&self.extra);
        toml.push('\n');
        toml.push_str(&self.tail);
        let path = dir.join("backupd.toml");
        std::fs::write(&path, toml).expect("write config");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .expect("chmod config");
        path
    }
}

/// Where the harness saves `cutterctl signer export` once the daemon is up
/// (listed in `restore.trusted_signers`), as an operator pins it.
pub const PINNED_SIGNER: &str = "pinned-signer.asc";

/// A running daemon; killed on drop.
pub struct Daemon {
    child: Child,
    /// Its socket.
    pub socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Writes the config into `dir`, starts the daemon and waits for its socket.
    pub fn start(dir: &Path, cfg: &DaemonConfig) -> Self {
        Self::spawn(dir, cfg, None)
    }

    /// Like [`Daemon::start`], but hands the daemon `listener` as systemd's
    /// socket activation does: fd 3, LISTEN_FDS=1, LISTEN_PID=its pid.
    pub fn start_activated(dir: &Path, cfg: &DaemonConfig, listener: UnixListener) -> Self {
        Self::spawn(dir, cfg, Some(listener))
    }

    fn spawn(dir: &Path, cfg: &DaemonConfig, activated: Option<UnixListener>) -> Self {
        let config = cfg.write(dir);
        let socket = dir.join("backupd.sock");
        let log = dir.join(format!("backupd-{}.log", std::process::id()));
        let bin = workspace_bin("cutter-backupd");
        let mut cmd = match &activated {
            // The shell moves the listener from stdin to fd 3 and execs the
            // daemon in its own pid, so LISTEN_PID=$$ is the daemon's pid.
            Some(_) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg("exec 3<&0 </dev/null; LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"")
                    .arg(&bin);
                c
            }
            None if !cfg.wrap.is_empty() => {
                let mut c = Command::new(&cfg.wrap[0]);
                c.args(&cfg.wrap[1..]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg("--config")
            .arg(&config)
            .env_remove("BACKUP_GPG_FPR")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .env_remove("WATCHDOG_USEC")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env("RUST_LOG", "debug")
            .envs(cfg.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("daemon log"));
        match activated {
            Some(l) => cmd.stdin(Stdio::from(OwnedFd::from(l))),
            None => cmd.stdin(Stdio::null()),
        };
        if let Some(f) = &cfg.fingerprint {
            cmd.env("BACKUP_GPG_FPR", f);
        }
        if let Some((uid, gid)) = cfg.run_as {
            cmd.uid(uid).gid(gid);
        }
        let child = cmd.spawn().expect("spawn cutter-backupd");
        let mut d = Self { child, socket, log };
        d.wait_ready();
        d.pin_signer(dir);
        d
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("cutter-backupd exited early ({status}):\n{}", self.log());
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("cutter-backupd did not listen within 20 s:\n{}", self.log());
    }

    /// Saves the daemon's signer cert where the config's
    /// `restore.trusted_signers` expects it (when the daemon has one).
    fn pin_signer(&self, dir: &Path) {
        let out = self.ctl(&["signer", "export"]);
        if out.status.success() && !dir.join(PINNED_SIGNER).exists() {
            std::fs::write(dir.join(PINNED_SIGNER), &out.stdout).expect("pin the signer cert");
        }
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A gRPC client on the socket.
    pub async fn client(&self) -> BackupServiceClient<Channel> {
        match cutter_backup::connect(&self.socket).await {
            Ok(c) => c,
            Err(e) => panic!("connect to the daemon: {e:?}\n{}", self.log()),
        }
    }

    /// `cutterctl backup --run-id RUN`, which must succeed.
    pub fn backup(&self, run_id: &str) {
        let out = self.ctl(&["backup", "--run-id", run_id]);
        assert!(
            out.status.success(),
            "{}\n{}",
            super::text(&out),
            self.log()
        );
    }

    /// Runs `cutterctl --socket <socket> args…`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        ctl(&self.socket, args)
    }

    /// Sends `sig` to the daemon.
    pub fn signal(&self, sig: &str) {
        super::proc::run(Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]));
    }

    /// Waits for the daemon to exit; returns its status.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs `cutterctl --socket socket args…`.
pub fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(workspace_bin("cutterctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run cutterctl")
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
