//! The async mode's upload queue against a real SeaweedFS: a run that is
//! still waiting for its offsite copy is the only copy there is, so prune
//! must leave it, say why, and take it only once the upload is confirmed;
//! a queue directory others could write is refused, and prune then
//! deletes nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use crate::harness::proc::wait_until;
use crate::harness::text;
use crate::offsite::{BUCKET, Setup};

/// `offsite`'s setup in async mode (retries every second at most) with
/// `[retention]` `retention`.
fn setup(retention: &str) -> Setup {
    let mut s = Setup::new(false, "async", "retry_max_secs = 1");
    s.cfg
        .tail
        .push_str(&format!("\n[retention]\n{retention}\n"));
    s
}

/// Where `run_id` waits in the queue.
fn queued(s: &Setup, run_id: &str) -> PathBuf {
    s.world.work.path().join("offsite-queue").join(run_id)
}

/// The prune line for `run_id` (`ACTION   run_id   reason`).
fn line_of<'a>(out: &'a str, run_id: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(run_id))
        .unwrap_or_else(|| panic!("no prune line for {run_id}:\n{out}"))
}

#[test]
fn prune_leaves_a_run_whose_upload_is_queued_until_the_copy_is_confirmed() {
    let mut s = setup("keep_last = 1\nkeep_days = 0");
    s.weed.stop();
    let daemon = s.start();
    // Two runs while the bucket is down: `new` is the newest (or, within
    // the same second, first by name), so the policy deletes `old`.
    daemon.backup("old");
    daemon.backup("new");
    assert!(queued(&s, "old").exists() && queued(&s, "new").exists());

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
        || !queued(&s, "old").exists() && !queued(&s, "new").exists(),
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
    let mut s = setup("keep_last = 1\nkeep_days = 0");
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
