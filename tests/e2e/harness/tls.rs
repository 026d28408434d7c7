//! Throwaway TLS: a certificate authority made with the `openssl` CLI (for
//! the PostgreSQL cluster's server and client certificates, or an
//! attacker's), and a man-in-the-middle (`openssl s_server`) that shows
//! whether a client completed a handshake with it and what it then sent.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use super::proc::{require, run};

const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A CA: `ca.crt` and `ca.key` (0600) in its directory.
pub struct Ca {
    dir: PathBuf,
    /// Its certificate (PEM).
    pub cert: PathBuf,
}

impl Ca {
    /// A new CA named `cn` in `dir` (created), valid for two days.
    pub fn new(dir: &Path, cn: &str) -> Self {
        require("openssl");
        std::fs::create_dir_all(dir).expect("mkdir ca");
        let subject = format!("/CN={cn}");
        let mut args = vec!["req", "-x509"];
        args.extend(EC);
        args.extend([
            "-days", "2", "-subj", &subject, "-keyout", "ca.key", "-out", "ca.crt",
        ]);
        run(Command::new("openssl").current_dir(dir).args(&args));
        private(&dir.join("ca.key"));
        Self {
            dir: dir.to_owned(),
            cert: dir.join("ca.crt"),
        }
    }

    /// Issues `<name>.crt` and `<name>.key` (0600) for `cn` with the
    /// extension line `ext` (`subjectAltName=…`, `keyUsage=…`); returns
    /// their paths.
    pub fn issue(&self, name: &str, cn: &str, ext: &str) -> (PathBuf, PathBuf) {
        let (crt, key, csr, extfile) = (
            format!("{name}.crt"),
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.ext"),
        );
        std::fs::write(self.dir.join(&extfile), format!("{ext}\n")).expect("ext");
        let subject = format!("/CN={cn}");
        let mut args = vec!["req"];
        args.extend(EC);
        args.extend(["-subj", &subject, "-keyout", &key, "-out", &csr]);
        run(Command::new("openssl").current_dir(&self.dir).args(&args));
        run(Command::new("openssl").current_dir(&self.dir).args([
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &extfile,
            "-out",
            &crt,
        ]));
        private(&self.dir.join(&key));
        (self.dir.join(crt), self.dir.join(key))
    }
}

fn private(key: &Path) {
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
}

/// `openssl s_server` on 127.0.0.1 with a certificate from an attacker's
/// CA; killed on drop. What a client sent after a completed handshake goes
/// to its stdout, handshake failures to its stderr.
pub struct Mitm {
    child: Child,
    // Held open: s_server stops at the end of its stdin.
    _stdin: ChildStdin,
    dir: PathBuf,
    /// The port it listens on.
    pub port: u16,
}

impl Mitm {
    /// Listens with a certificate for 127.0.0.1 issued by `ca`.
    pub fn start(ca: &Ca) -> Self {
        let (cert, key) = ca.issue("mitm", "127.0.0.1", "subjectAltName=IP:127.0.0.1");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = ca.dir.clone();
        let log = |name: &str| File::create(dir.join(name)).expect("mitm log");
        let mut child = Command::new("openssl")
            .args(["s_server", "-brief", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::piped())
            .stdout(log("mitm.out"))
            .stderr(log("mitm.err"))
            .spawn()
            .expect("spawn openssl s_server");
        let stdin = child.stdin.take().expect("s_server stdin");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s_server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            _stdin: stdin,
            dir,
            port,
        }
    }

    /// What clients sent through a completed handshake.
    pub fn received(&self) -> String {
        std::fs::read_to_string(self.dir.join("mitm.out")).unwrap_or_default()
    }

    /// s_server's diagnostics (handshake summaries and failures).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mitm.err")).unwrap_or_default()
    }
}

impl Drop for Mitm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
