//! A real GnuPG home: keys made the way docs/operations.md tells operators to
//! (`--quick-gen-key` + `--quick-add-key`, which work on GnuPG 2.2 and 2.4),
//! passphrase-protected, and `gpg --decrypt` as the restore path.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::proc::{require, run};

/// The test keys' passphrase (lives in a file, never in argv).
pub const PASSPHRASE: &str = "correct horse battery staple";

/// Which key type to generate.
#[derive(Debug, Clone, Copy)]
pub enum KeyKind {
    /// RSA-4096 primary (cert) + RSA-4096 encryption subkey.
    Rsa4096,
    /// ed25519 primary (cert) + cv25519 encryption subkey.
    Ed25519,
}

/// A GnuPG home in a temp dir; its agent is killed on drop.
pub struct Gpg {
    home: tempfile::TempDir,
    passfile: PathBuf,
}

impl Default for Gpg {
    fn default() -> Self {
        Self::new()
    }
}

impl Gpg {
    /// An empty home (0700) with a passphrase file (0600).
    pub fn new() -> Self {
        require("gpg");
        let home = tempfile::Builder::new()
            .prefix("cutter-gnupg-")
            .tempdir()
            .expect("gnupg tempdir");
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod gnupg home");
        let passfile = home.path().join("passphrase");
        std::fs::write(&passfile, PASSPHRASE).expect("write passphrase");
        std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600))
            .expect("chmod passphrase");
        Self { home, passfile }
    }

    /// The GNUPGHOME.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// `gpg --homedir … --batch --pinentry-mode loopback --passphrase-file …`.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new("gpg");
        c.arg("--homedir")
            .arg(self.home.path())
            .args([
                "--batch",
                "--no-tty",
                "--pinentry-mode",
                "loopback",
                "--passphrase-file",
            ])
            .arg(&self.passfile);
        c
    }

    /// Generates a key valid for two years; returns its fingerprint.
    pub fn gen_key(&self, kind: KeyKind, uid: &str) -> String {
        self.gen_key_at(kind, uid, None, "2y")
    }

    /// Generates a key as if it were `faked_time` (gpg's `--faked-system-time`),
    /// expiring after `expire`: a key made in 2020 for 1y is expired now.
    pub fn gen_key_at(
        &self,
        kind: KeyKind,
        uid: &str,
        faked_time: Option<&str>,
        expire: &str,
    ) -> String {
        let (primary, sub) = match kind {
            KeyKind::Rsa4096 => ("rsa4096", "rsa4096"),
            KeyKind::Ed25519 => ("ed25519", "cv25519"),
        };
        let mut generate = self.cmd();
        if let Some(t) = faked_time {
            generate.arg("--faked-system-time").arg(t);
        }
        run(generate.args(["--quick-gen-key", uid, primary, "cert", expire]));
        let fpr = self.fingerprint_of(uid);
        let mut add = self.cmd();
        if let Some(t) = faked_time {
            add.arg("--faked-system-time").arg(t);
        }
        run(add.args(["--quick-add-key", &fpr, sub, "encr", expire]));
        fpr
    }

    /// The primary fingerprint of the key with `uid`.
    pub fn fingerprint_of(&self, uid: &str) -> String {
        let out = run(self.cmd().args(["--with-colons", "--list-keys", uid]));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| {
                l.strip_prefix("fpr:")
                    .map(|r| r.trim_matches(':').to_owned())
            })
            .expect("an fpr: line")
    }

    /// Writes the armored public cert of `fpr` to `path`.
    pub fn export_public(&self, fpr: &str, path: &Path) {
        let out = run(self.cmd().args(["--armor", "--export", fpr]));
        assert!(!out.stdout.is_empty(), "gpg exported nothing for {fpr}");
        std::fs::write(path, out.stdout).expect("write public key");
    }

    /// Writes the armored secret key of `fpr` to `path` (still passphrase-protected).
    pub fn export_secret(&self, fpr: &str, path: &Path) {
        let out = run(self.cmd().args(["--armor", "--export-secret-keys", fpr]));
        assert!(
            !out.stdout.is_empty(),
            "gpg exported no secret key for {fpr}"
        );
        std::fs::write(path, out.stdout).expect("write secret key");
        // As an operator keeps it: readable by its owner only (restore refuses more).
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod secret key");
    }

    /// The file holding the passphrase of every key in this home.
    pub fn passphrase_file(&self) -> &Path {
        &self.passfile
    }

    /// Revokes `fpr` with the revocation certificate gpg made at generation.
    pub fn revoke(&self, fpr: &str) {
        let rev = self
            .home
            .path()
            .join("openpgp-revocs.d")
            .join(format!("{fpr}.rev"));
        let text = std::fs::read_to_string(&rev).expect("revocation certificate");
        // gpg prefixes the armor line with ':' so it is not imported by accident.
        let armored = text.replace(
            ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
            "-----BEGIN PGP PUBLIC KEY BLOCK-----",
        );
        let path = self.home.path().join("revoke.asc");
        std::fs::write(&path, armored).expect("write revocation");
        run(self.cmd().arg("--import").arg(&path));
    }

    /// Imports keys (public or secret) from `path`.
    pub fn import(&self, path: &Path) {
        run(self.cmd().arg("--import").arg(path));
    }

    /// `gpg --decrypt artifact`: the plaintext, panicking on failure.
    pub fn decrypt(&self, artifact: &Path) -> Vec<u8> {
        run(self.cmd().arg("--decrypt").arg(artifact)).stdout
    }

    /// `gpg --decrypt` output, without panicking.
    pub fn try_decrypt(&self, artifact: &Path) -> std::process::Output {
        self.cmd()
            .arg("--decrypt")
            .arg(artifact)
            .output()
            .expect("run gpg")
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "all"])
            .output();
    }
}
