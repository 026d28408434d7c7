//! The async mode's upload queue against a real SeaweedFS: a run that is
//! still waiting for its offsite copy is the only copy there is, so prune
//! must leave it, say why, and take it only once the upload is confirmed;
//! a queue directory others could write is refused, and prune then
//! deletes nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use crate::harness::proc::wait_until;
use crate::harness::s3::SECRET_KEY;
use crate::harness::{Daemon, DaemonConfig, Grants, KeyKind, SeaweedFs, World, text};

const BUCKET: &str = "cutter-offsite-queue";
const HOST: &str = "db-host-q";

/// A world, a server with a bucket, and an async-mode daemon config with
/// `[retention]` `retention` pointing at it.
struct Setup {
    world: World,
    weed: SeaweedFs,
    cfg: DaemonConfig,
}

impl Setup {
    fn new(retention: &str) -> Self {
        let world = World::new(Grants::All);
        let weed = SeaweedFs::start();
        weed.create_bucket(BUCKET, false);
        let (fpr, cert) = world.key(KeyKind::Ed25519, "offsite-queue");
        let creds = weed.credentials_file(world.work.path(), "s3-credentials", SECRET_KEY);
        let mut cfg = world.config(Some(&fpr), Some(cert));
        cfg.tail = format!(
            "[offsite]\nurl = \"s3://{BUCKET}/backups\"\nendpoint = {:?}\npath_style = true\ncredentials_file = {:?}\nhost = \"{HOST}\"\nmode = \"async\"\nqueue_dir = {:?}\nrequest_timeout_secs = 10\nmax_attempts = 2\nretry_max_secs = 1\n\n[retention]\n{retention}\n",
            weed.endpoint(),
            creds.display().to_string(),
            world
                .work
                .path()
                .join("offsite-queue")
                .display()
                .to_string(),
        );
        Self { world, weed, cfg }
    }

    fn start(&self) -> Daemon {
        self.world.start(&self.cfg)
    }

    fn queued(&self, run_id: &str) -> PathBuf {
        self.world.work.path().join("offsite-queue").join(run_id)
    }

    fn key(&self, name: &str) -> String {
        format!("backups/{HOST}/{name}")
    }
}

/// The prune line for `run_id` (`ACTION   run_id   reason`).
fn line_of<'a>(out: &'a str, run_id: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(run_id))
        .unwrap_or_else(|| panic!("no prune line for {run_id}:\n{out}"))
}

#[test]
fn prune_leaves_a_run_whose_upload_is_queued_until_the_copy_is_confirmed() {
    let mut s = Setup::new("keep_last = 1\nkeep_days = 0");
    s.weed.stop();
    let daemon = s.start();
    // Two runs while the bucket is down: `new` is the newest (or, within
    // the same second, first by name), so the policy deletes `old`.
    daemon.backup("old");
    daemon.backup("new");
    assert!(s.queued("old").exists() && s.queued("new").exists());

    let out = daemon.ctl(&["prune", "--confirm"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let old = line_of(&t, "old");
    assert!(
        old.starts_with("LEAVE") && old.contains("offsite upload is still pending"),
        "{t}"
    );
    assert!(!t.contains("DELETED"), "{t}");
    for suffix in [".sql.gpg", ".manifest.json", ".manifest.json.sig"] {
        let f = s.world.backups.join(format!("old{suffix}"));
        assert!(f.exists(), "{} was pruned while queued:\n{t}", f.display());
    }

    s.weed.start_again();
    wait_until(
        Duration::from_secs(90),
        || !s.queued("old").exists() && !s.queued("new").exists(),
        || format!("the queue did not drain:\n{}", daemon.log()),
    );
    let out = daemon.ctl(&["prune", "--confirm"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(line_of(&t, "old").starts_with("DELETED"), "{t}");
    assert!(line_of(&t, "new").starts_with("keep"), "{t}");
    assert!(!s.world.backups.join("old.sql.gpg").exists(), "{t}");
    assert!(s.world.backups.join("new.sql.gpg").exists(), "{t}");
    // What prune removed locally is still offsite (remote prune is opt-in).
    let keys = s.weed.keys(BUCKET, "backups/");
    for name in ["old.sql.gpg", "old.manifest.json", "old.manifest.json.sig"] {
        assert!(keys.contains(&s.key(name)), "{name} missing in {keys:?}");
    }
}

#[test]
fn a_queue_directory_others_can_write_is_refused_and_prune_then_deletes_nothing() {
    let mut s = Setup::new("keep_last = 1\nkeep_days = 0");
    s.weed.stop();
    let daemon = s.start();
    daemon.backup("old");
    daemon.backup("new");
    drop(daemon);
    // A group member could now plant or remove entries: which runs still
    // wait for their upload can no longer be told.
    let queue = s.world.work.path().join("offsite-queue");
    std::fs::set_permissions(&queue, std::fs::Permissions::from_mode(0o770)).expect("chmod");
    let daemon = s.start();

    let t = text(&daemon.ctl(&["selftest"]));
    let line = t
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("offsite"))
        .unwrap_or_else(|| panic!("no offsite check:\n{t}"));
    assert!(
        line.contains("FAIL")
            && line.contains("group-writable")
            && line.contains(&format!("chmod 0700 {}", queue.display())),
        "{line}"
    );
    let out = daemon.ctl(&["prune", "--confirm"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let old = line_of(&t, "old");
    assert!(
        old.starts_with("LEAVE") && old.contains("offsite upload queue cannot be read"),
        "{t}"
    );
    assert!(s.world.backups.join("old.sql.gpg").exists(), "{t}");
}
