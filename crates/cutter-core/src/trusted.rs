//! Files that decide what runs as root are root's. The config names the
//! programs the daemon runs (`backup.pg_dump`, `key.gpg`), where the key
//! fingerprint comes from (`key.env_file`), which manifest signers a root
//! `cutterctl restore` believes (`restore.trusted_signers`) and where the
//! backups are; whoever can write any of them, or replace one through a
//! directory they can write, chooses what root runs or loads.
//!
//! So before any of them is used: the file and every directory above it
//! (symbolic links resolved) must be owned by root or by the user this
//! process runs as, and not writable by group or others. A directory with
//! the sticky bit owned by root (`/tmp`) is accepted: nobody else can
//! rename or remove what root put there. The error names the `chown` or
//! `chmod` to run.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Checks `path` (a file that `what` names, e.g. `the config file`): the
/// path as written (each entry on it, a symbolic link by its own owner,
/// and every directory above it) and, when it exists, where it leads
/// (the file and every directory above that). A file that does not exist
/// passes once the directories above it do: whoever reads it next says
/// that it is missing.
pub fn check(path: &Path, what: &str) -> Result<(), String> {
    let me = rustix::process::geteuid().as_raw();
    let written = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("{what} {}: {e}", path.display()))?
            .join(path)
    };
    for p in written.ancestors() {
        let meta = match std::fs::symlink_metadata(p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{what} {}: {e}", p.display())),
        };
        // A link's own mode means nothing; who owns it decides where it leads.
        let why = if meta.file_type().is_symlink() {
            (meta.uid() != 0 && meta.uid() != me).then(|| {
                format!(
                    "it is a symbolic link owned by uid {}, not root",
                    meta.uid()
                )
            })
        } else {
            unsafe_owner_or_mode(&meta, me)
        };
        if let Some(why) = why {
            return Err(refusal(what, path, p, &meta, &why));
        }
    }
    let real = match std::fs::canonicalize(&written) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{what} {}: {e}", path.display())),
    };
    for p in real.ancestors() {
        let meta = std::fs::metadata(p).map_err(|e| format!("{what} {}: {e}", p.display()))?;
        if let Some(why) = unsafe_owner_or_mode(&meta, me) {
            return Err(refusal(what, path, p, &meta, &why));
        }
    }
    Ok(())
}

/// Where `program` is run from: itself when it names a path, else the
/// first executable match on `PATH` (as `Command` finds it), checked like
/// [`check`]. Run the returned path, not the name.
pub fn program(program: &Path, what: &str) -> Result<PathBuf, String> {
    let found = if program.components().count() > 1 {
        program.to_owned()
    } else {
        std::env::var_os("PATH")
            .and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(program))
                    .find(|p| {
                        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
                    })
            })
            .ok_or_else(|| format!("{what} {}: not found on PATH", program.display()))?
    };
    check(&found, what)?;
    Ok(found)
}

/// Checks every path in `paths` (see [`check`]).
pub fn check_all(paths: &[PathBuf], what: &str) -> Result<(), String> {
    paths.iter().try_for_each(|p| check(p, what))
}

/// Why `meta` lets someone other than root or `me` change it, if it does.
fn unsafe_owner_or_mode(meta: &std::fs::Metadata, me: u32) -> Option<String> {
    const STICKY: u32 = 0o1000;
    let (uid, mode) = (meta.uid(), meta.mode());
    if uid != 0 && uid != me {
        return Some(format!("it is owned by uid {uid}, not root"));
    }
    let sticky_root_dir = meta.is_dir() && mode & STICKY != 0 && uid == 0;
    if mode & 0o022 != 0 && !sticky_root_dir {
        return Some(format!(
            "it is writable by {} (mode {:04o})",
            if mode & 0o002 != 0 {
                "others"
            } else {
                "its group"
            },
            mode & 0o7777
        ));
    }
    None
}

fn refusal(what: &str, path: &Path, culprit: &Path, meta: &std::fs::Metadata, why: &str) -> String {
    let shown = if meta.is_dir() {
        format!("{} (the directory {})", path.display(), culprit.display())
    } else if culprit == path {
        format!("{}", path.display())
    } else {
        format!("{} ({})", path.display(), culprit.display())
    };
    let fix = if meta.uid() != 0 && meta.uid() != rustix::process::geteuid().as_raw() {
        format!("chown root {}", culprit.display())
    } else {
        format!("chmod go-w {}", culprit.display())
    };
    format!(
        "refusing {what} {shown}: {why}, so someone other than root could choose what runs as root; run `{fix}` (and check what it holds)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_group_writable_file_or_directory_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("backupd.toml");
        std::fs::write(&f, "x").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        check(&f, "the config file").expect("0640 in a private directory is fine");

        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o660)).expect("chmod");
        let e = check(&f, "the config file").expect_err("group-writable");
        assert!(e.contains("writable by its group"), "{e}");
        assert!(e.contains(&format!("chmod go-w {}", f.display())), "{e}");

        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let e = check(&f, "the config file").expect_err("a writable directory above");
        assert!(e.contains("(the directory"), "{e}");
        assert!(e.contains("writable by others"), "{e}");

        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        std::os::unix::fs::chown(&f, Some(65534), None).expect("chown (tests run as root)");
        let e = check(&f, "the config file").expect_err("someone else's file");
        assert!(e.contains("owned by uid 65534"), "{e}");
        assert!(e.contains(&format!("chown root {}", f.display())), "{e}");
    }

    #[test]
    fn a_link_someone_else_owns_is_refused_and_a_missing_file_needs_safe_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("real.asc");
        std::fs::write(&target, "x").expect("write");
        let link = dir.path().join("signer.asc");
        std::os::unix::fs::symlink(&target, &link).expect("link");
        check(&link, "x").expect("root's link to root's file");
        std::os::unix::fs::lchown(&link, Some(65534), None).expect("lchown (tests run as root)");
        let e = check(&link, "x").expect_err("someone else's link");
        assert!(e.contains("symbolic link owned by uid 65534"), "{e}");

        let open = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let e = check(&open.path().join("missing"), "x").expect_err("plantable");
        assert!(e.contains("writable by others"), "{e}");
    }

    #[test]
    fn a_missing_file_passes_and_a_link_is_judged_by_its_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        check(&dir.path().join("missing"), "x").expect("missing in a safe directory passes");
        let open = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let target = open.path().join("signer.asc");
        std::fs::write(&target, "x").expect("write");
        let link = dir.path().join("signer.asc");
        std::os::unix::fs::symlink(&target, &link).expect("link");
        let e = check(&link, "restore.trusted_signers file").expect_err("target dir is open");
        assert!(e.contains(&open.path().display().to_string()), "{e}");
    }
}
