//! Many runs kept (issue 20, item 7): a backup and a selftest cost the
//! same with 2,000 runs kept as with one (counted in read syscalls, which
//! unlike time do not depend on the load of the machine), and the counts
//! the metrics and Status report, now kept in memory, stay exactly what a
//! full listing of the directory says across commit, prune, removal by
//! hand, reload (to another directory and back) and restart.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::proc::run;
use crate::harness::runs::keep_copies;
use crate::harness::{Daemon, Grants, KeyKind, World, text};

/// Read syscalls the process made so far (`syscr` of /proc/PID/io, all
/// threads, exited ones included).
fn reads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .expect("/proc/PID/io")
        .lines()
        .find_map(|l| l.strip_prefix("syscr: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("syscr")
}

/// Read syscalls the daemon makes for `cutterctl args…` (which must succeed).
fn reads_for(daemon: &Daemon, args: &[&str]) -> u64 {
    let before = reads(daemon.pid());
    let out = daemon.ctl(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    reads(daemon.pid()) - before
}

/// The daemon's reads for a selftest, a status and a backup.
fn costs(daemon: &Daemon, run_id: &str) -> [u64; 3] {
    // Warm: the pool is open and the runs are counted.
    reads_for(daemon, &["selftest"]);
    [
        reads_for(daemon, &["selftest"]),
        reads_for(daemon, &["status"]),
        reads_for(daemon, &["backup", "--run-id", run_id]),
    ]
}

#[test]
fn a_backup_and_a_selftest_read_no_more_with_2000_runs_kept() {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let cfg = world.config(Some(&fpr), Some(cert));
    let daemon = world.start(&cfg);
    daemon.backup("seed");
    let one = costs(&daemon, "with-one");
    drop(daemon);

    let kept = 2000;
    keep_copies(world.work.path(), &world.backups, "seed", "kept", kept);
    let daemon = world.start(&cfg);
    let many = costs(&daemon, "with-many");
    eprintln!(
        "reads (selftest, status, backup): {one:?} with 2 runs kept, {many:?} with {}",
        kept + 2
    );
    // Listing the directory reads every manifest and signature: 14 reads
    // a run, 28,000 for a selftest before the census. Allow noise of 100
    // (pg_dump's pipe).
    for (what, (one, many)) in ["selftest", "status", "backup"]
        .iter()
        .zip(one.iter().zip(many.iter()))
    {
        assert!(
            *many <= one + 100,
            "a {what} made {many} reads with {} runs kept, {one} with 2",
            kept + 2
        );
    }
    // And the runs are there: list (linear, as it must be) shows them all.
    let listed = listing(&daemon);
    assert_eq!(listed.runs, kept as u64 + 3, "seed, with-one, with-many");
}

/// What a full listing says: `list --json` (complete runs this daemon
/// signed) checked against the directory itself.
#[derive(Debug, PartialEq, Eq)]
struct Counts {
    runs: u64,
    bytes: u64,
    newest: Option<String>,
}

fn json(daemon: &Daemon, args: &[&str]) -> serde_json::Value {
    let out = daemon.ctl(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).expect("json")
}

/// The full listing: `list --json`, which must agree with the files.
fn listing(daemon: &Daemon) -> Counts {
    let v = json(daemon, &["list", "--json"]);
    let all = v["artifacts"].as_array().cloned().unwrap_or_default();
    let dir = Path::new(
        json(daemon, &["status", "--json"])["backup_dir"]
            .as_str()
            .expect("backup_dir")
            .to_owned()
            .as_str(),
    )
    .to_owned();
    let on_disk: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .expect("read backups")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let size = e.metadata().ok()?.len();
            Some((name.strip_suffix(".sql.gpg")?.to_owned(), size))
        })
        .collect();
    assert_eq!(all.len(), on_disk.len(), "list shows every artifact");
    // Runs of one second tie on created_at: the larger run_id is newer.
    let newest = all
        .iter()
        .filter(|a| a["artifact_state"] == "complete")
        .filter_map(|a| Some((a["created_at"].as_str()?, a["run_id"].as_str()?)))
        .max()
        .map(|(_, id)| id.to_owned());
    Counts {
        runs: on_disk.len() as u64,
        bytes: on_disk.iter().map(|(_, s)| s).sum(),
        newest,
    }
}

/// What the daemon reports from memory: Status and (after Status's
/// selftest) the metrics, which must agree with each other.
fn reported(daemon: &Daemon) -> Counts {
    let st = json(daemon, &["status", "--json"]);
    let metrics = String::from_utf8_lossy(&daemon.ctl(&["metrics"]).stdout).into_owned();
    let gauge = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
    };
    let counts = Counts {
        runs: st["artifact_count"].as_u64().unwrap_or(0),
        bytes: st["artifact_bytes"].as_u64().unwrap_or(0),
        newest: st["last_backup"]["run_id"].as_str().map(str::to_owned),
    };
    assert_eq!(
        (
            gauge("cutter_backup_artifacts"),
            gauge("cutter_backup_artifact_bytes")
        ),
        (Some(counts.runs), Some(counts.bytes)),
        "{metrics}"
    );
    counts
}

/// The daemon's counts equal the full listing's; returns how many runs
/// were compared.
fn agree(daemon: &Daemon, want_runs: u64) -> u64 {
    let said = reported(daemon);
    let seen = listing(daemon);
    assert_eq!(said, seen, "reported from memory vs. listed");
    assert_eq!(seen.runs, want_runs);
    seen.runs
}

/// Makes a run look old by re-signing its manifest with an older date.
fn age(world: &World, run_id: &str, created_at: &str) {
    let path = world.backups.join(format!("{run_id}.manifest.json"));
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    m["created_at"] = created_at.into();
    let bytes = serde_json::to_vec_pretty(&m).expect("json");
    std::fs::write(&path, &bytes).expect("write");
    world.sign_as_daemon(run_id, &bytes);
}

/// Waits until Status names `dir` (a reload was applied).
fn wait_for_dir(daemon: &Daemon, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while json(daemon, &["status", "--json"])["backup_dir"] != dir.display().to_string() {
        assert!(Instant::now() < deadline, "reload not applied");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_counts_stay_exact_across_commit_prune_removal_reload_and_restart() {
    let world = World::new(Grants::All);
    let (fpr, cert) = world.key(KeyKind::Ed25519, "k");
    let mut cfg = world.config(Some(&fpr), Some(cert));
    cfg.tail = "[retention]\nkeep_last = 1\nkeep_days = 7\n".into();
    let daemon = world.start(&cfg);
    let mut compared = 0;
    compared += agree(&daemon, 0);
    for (i, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
        daemon.backup(id);
        compared += agree(&daemon, i as u64 + 1);
    }
    // Older runs kept from before: counted at the next start.
    age(&world, "a", "2026-01-01T00:00:00Z");
    age(&world, "b", "2026-01-02T00:00:00Z");
    drop(daemon);
    keep_copies(world.work.path(), &world.backups, "c", "kept", 10);
    let daemon = world.start(&cfg);
    compared += agree(&daemon, 14);

    // Prune deletes a and b (older than keep_days; the copies are hours
    // old), through remove_run.
    let out = daemon.ctl(&["prune", "--confirm"]);
    assert!(out.status.success(), "{}", text(&out));
    compared += agree(&daemon, 12);
    daemon.backup("e");
    compared += agree(&daemon, 13);

    // Removed by hand behind the daemon's back: the next full listing
    // (list, verify --all, prune) corrects the count.
    for suffix in [".sql.gpg", ".manifest.json", ".manifest.json.sig"] {
        std::fs::remove_file(world.backups.join(format!("kept-000003{suffix}"))).expect("rm");
    }
    listing(&daemon);
    compared += agree(&daemon, 12);

    // A reload to another directory counts that one; back again, this one,
    // including what a backup taken meanwhile would have added here.
    let other = world.work.path().join("other-backups");
    std::fs::create_dir(&other).expect("mkdir");
    run(Command::new("chmod").arg("0700").arg(&other));
    let mut moved = cfg.clone();
    moved.backup_dir = other.clone();
    moved.write(world.work.path());
    daemon.signal("HUP");
    wait_for_dir(&daemon, &other);
    assert_eq!(reported(&daemon).runs, 0);
    daemon.backup("elsewhere");
    assert_eq!(reported(&daemon).runs, 1);
    cfg.write(world.work.path());
    daemon.signal("HUP");
    wait_for_dir(&daemon, &world.backups);
    compared += agree(&daemon, 12);
    daemon.backup("f");
    compared += agree(&daemon, 13);

    // And after a restart.
    drop(daemon);
    let daemon = world.start(&cfg);
    compared += agree(&daemon, 13);
    assert_eq!(reported(&daemon).newest.as_deref(), Some("f"));
    assert_eq!(compared, 99, "runs compared, over every step");
}
