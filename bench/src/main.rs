//! cutter-bench: in one run on one machine, builds a ~1 GB and a ~3 MB
//! `cutter_governance` dataset in a throwaway cluster and measures, median of
//! several runs, the floor (`pg_dump > /dev/null`), the old way
//! (`pg_dump | gpg -e`, with and without compression) and ours (`cutterctl
//! backup` against a running daemon, per compression setting). Prints the
//! markdown tables `docs/benchmarks.md` records. It also compares two dump
//! shapes (the same data over TCP, and fast-dumping hex over the Unix
//! socket) with every CPU-second counted (`fastdump.rs`).
//!
//! Run: `bench/run.sh` (release build; see docs/benchmarks.md);
//! `cutter-bench --help` lists the options.

#[allow(dead_code, unused_imports)]
#[path = "../../tests/e2e/harness/mod.rs"]
mod harness;

mod data;
mod fastdump;
mod measure;
mod offsite;
mod recovery;
mod runs_kept;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::pg::{ROLE, ROLE_PASSWORD, bindir};
use harness::proc::workspace_bin;
use harness::{Cluster, Daemon, DaemonConfig, Gpg, KeyKind};
use measure::{median, ms, secs, times};

struct Bench {
    pg: Cluster,
    gpg: Gpg,
    fpr: String,
    cert: PathBuf,
    work: tempfile::TempDir,
    runs: usize,
}

/// One measured pipeline.
struct Row {
    name: String,
    wall: Duration,
    cpu: Option<Duration>,
    rss_mib: Option<f64>,
    out_bytes: Option<u64>,
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `--settings none-1,zip-1,zip-2,zip-3,zlib-2,sequoia:none-1,sequoia:zip-2`:
/// the settings measured; `sequoia:` runs sequoia's own SEIPDv1 writer
/// (`backup.encryptor = "sequoia"`), the rest the default `seipdv1`.
fn settings() -> Vec<(String, String, u8)> {
    let args: Vec<String> = std::env::args().collect();
    let list = args
        .iter()
        .position(|a| a == "--settings")
        .and_then(|i| args.get(i + 1))
        .map_or(
            "none-1,zip-1,zip-2,zip-3,zlib-2,sequoia:none-1,sequoia:zip-2",
            String::as_str,
        );
    list.split(',')
        .filter_map(|s| {
            let (encryptor, rest) = s.split_once(':').unwrap_or(("seipdv1", s));
            let (algo, level) = rest.rsplit_once('-')?;
            Some((encryptor.to_owned(), algo.to_owned(), level.parse().ok()?))
        })
        .collect()
}

/// `cutter-bench --help`.
const HELP: &str = "\
cutter-bench: cutter-backup against pg_dump alone and pg_dump | gpg, on one
machine, in one run, in a throwaway PostgreSQL cluster (docs/benchmarks.md).

Usage: cutter-bench [OPTIONS]      (bench/run.sh builds release and runs it)

With no mode, measures the large and small datasets, then the two dump shapes.

Modes (each runs only that part):
  --fast-dump            the two dump shapes only: the governance dataset
                         over TCP and the fast-dump hex dataset over the Unix
                         socket; floor against the default backup, with wall
                         time and CPU-seconds of the daemon, pg_dump and
                         PostgreSQL, and the snapshot's count on its own
  --offsite              the large backup local-only, a stock upload of its
                         artifact and the streamed required mode, side by
                         side, against a throwaway SeaweedFS
  --recovery             restore --beside-live, diff and revert (see --sizes)
  --runs-kept LIST       backup, selftest, status and list latency with N
                         runs kept, for each N in LIST (e.g. 1,1000,10000)

Options:
  --large-mb N           the governance dataset's plain dump, MB [1000]
  --small-mb N           the small dataset's plain dump, MB [3]
  --fast-mb N            the fast-dump dataset's plain dump, MB; 0 skips the
                         two shapes [800]
  --runs N               runs per large measurement (median) [5]
  --small-runs N         runs per small measurement (median) [21]
  --settings LIST        settings measured on the large dataset
                         [none-1,zip-1,zip-2,zip-3,zlib-2,sequoia:none-1,sequoia:zip-2]
  --sizes LIST           --recovery dump sizes, MB [100,1000]
  --baseline DIR         also measure DIR/cutter-backupd (another build) in
                         the two shapes, interleaved with this build's runs
  -h, --help             this text
";

fn main() {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        print!("{HELP}");
        return;
    }
    let large_mb = arg("--large-mb", 1000);
    let small_mb = arg("--small-mb", 3);
    let runs = usize::try_from(arg("--runs", 5)).unwrap_or(5);
    let small_runs = usize::try_from(arg("--small-runs", 21)).unwrap_or(21);
    let offsite_only = std::env::args().any(|a| a == "--offsite");
    let recovery_only = std::env::args().any(|a| a == "--recovery");
    let runs_kept: Option<Vec<usize>> = std::env::args()
        .skip_while(|a| a != "--runs-kept")
        .nth(1)
        .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect());
    let shapes_only = std::env::args().any(|a| a == "--fast-dump");
    let only_other = recovery_only || runs_kept.is_some();
    let small_mb = if offsite_only || shapes_only || only_other {
        0
    } else {
        small_mb
    };
    let large_mb = if only_other { 0 } else { large_mb };
    let fast_mb = if offsite_only || only_other {
        0
    } else {
        arg("--fast-mb", 800)
    };

    let pg = Cluster::start();
    pg.psql(
        "postgres",
        &format!("CREATE ROLE {ROLE} LOGIN PASSWORD '{ROLE_PASSWORD}'"),
    );
    for (db, mb) in [
        ("directus_large", large_mb),
        ("directus_small", small_mb),
        ("directus_fast", fast_mb),
    ]
    .into_iter()
    .filter(|(_, mb)| *mb > 0)
    {
        let t = Instant::now();
        pg.psql("postgres", &format!("CREATE DATABASE {db}"));
        let sql = if db == "directus_fast" {
            fastdump::sql(mb)
        } else {
            data::sql(mb)
        };
        harness::proc::run(pg.psql_cmd(db).args(["-c", &sql]));
        eprintln!(
            "generated {db} (~{mb} MB dump) in {:.0} s",
            t.elapsed().as_secs_f64()
        );
    }
    if runs_kept.is_some() {
        // The tiny fixture: ten rows a table.
        pg.psql("postgres", "CREATE DATABASE directus_tiny");
        harness::proc::run(pg.psql_cmd("directus_tiny").args(["-c", &data::sql(0)]));
    }
    let gpg = Gpg::new();
    let fpr = gpg.gen_key(KeyKind::Ed25519, "bench <bench@cutter.invalid>");
    let work = tempfile::Builder::new()
        .prefix("cutter-bench-")
        .tempdir()
        .expect("tempdir");
    let cert = work.path().join("bench.asc");
    gpg.export_public(&fpr, &cert);
    let b = Bench {
        pg,
        gpg,
        fpr,
        cert,
        work,
        runs,
    };

    machine();
    if offsite_only {
        b.offsite("directus_large");
        return;
    }
    if let Some(counts) = runs_kept {
        b.runs_kept("directus_tiny", &counts, small_runs);
        return;
    }
    if recovery_only {
        let sizes: Vec<u64> = std::env::args()
            .skip_while(|a| a != "--sizes")
            .nth(1)
            .unwrap_or_else(|| "100,1000".into())
            .split(',')
            .filter_map(|v| v.parse().ok())
            .collect();
        b.recovery(&sizes);
        return;
    }
    let shapes = [
        fastdump::Shape {
            name: "governance",
            db: "directus_large",
            via: fastdump::Via::Tcp,
        },
        fastdump::Shape {
            name: "fast-dump hex",
            db: "directus_fast",
            via: fastdump::Via::Socket,
        },
    ];
    let baseline = std::env::args()
        .skip_while(|a| a != "--baseline")
        .nth(1)
        .map(PathBuf::from);
    if shapes_only {
        b.shapes(
            &shapes[..if fast_mb > 0 { 2 } else { 1 }],
            baseline.as_deref(),
        );
        return;
    }
    let plain = b.plain_size("directus_large");
    println!(
        "\n## Large dataset: {:.0} MB plain dump, median of {runs} runs\n",
        plain as f64 / 1e6
    );
    let rows = b.large("directus_large");
    table(&rows, plain);
    println!(
        "\n## Small dataset: {:.1} MB plain dump, median of {small_runs} runs\n",
        b.plain_size("directus_small") as f64 / 1e6
    );
    b.small("directus_small", small_runs);
    if fast_mb > 0 {
        b.shapes(&shapes, baseline.as_deref());
    }
}

fn machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let pg_dump = Command::new(bindir().join("pg_dump"))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let gpg = Command::new("gpg")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default();
    println!("# cutter-bench\n\nmachine: {nproc} cores, {cpu}; {pg_dump}; {gpg}");
}

impl Bench {
    fn pg_dump(&self, db: &str) -> Command {
        let mut c = Command::new(bindir().join("pg_dump"));
        c.args([
            "--format=plain",
            "--no-owner",
            "--no-privileges",
            "--no-password",
            "--strict-names",
        ]);
        for (t, _) in data::TABLES {
            c.arg("--table")
                .arg(format!("\"cutter_governance\".\"{t}\""));
        }
        c.env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.pg.port.to_string())
            .env("PGUSER", ROLE)
            .env("PGDATABASE", db)
            .env("PGPASSWORD", ROLE_PASSWORD);
        c
    }

    fn plain_size(&self, db: &str) -> u64 {
        let out = self.pg_dump(db).output().expect("pg_dump");
        out.stdout.len() as u64
    }

    fn gpg_encrypt(&self, out: &Path, extra: &[&str]) -> Command {
        let mut c = Command::new("gpg");
        c.arg("--homedir")
            .arg(self.gpg.home())
            .args(["--batch", "--yes", "--trust-model", "always", "--quiet"])
            .args(extra)
            .args(["-e", "-r", &self.fpr, "-o"])
            .arg(out)
            .stdout(Stdio::null());
        c
    }

    fn large(&self, db: &str) -> Vec<Row> {
        let mut rows = Vec::new();
        let floor = times(self.runs, |_| {
            measure::wall(self.pg_dump(db).stdout(Stdio::null()))
        });
        rows.push(Row {
            name: "floor: `pg_dump > /dev/null`".into(),
            wall: median(&floor),
            cpu: None,
            rss_mib: None,
            out_bytes: None,
        });
        let out = self.work.path().join("old.gpg");
        for (name, extra) in [
            ("old: `pg_dump | gpg -e` (gpg defaults)", &[][..]),
            (
                "old: `pg_dump | gpg -e --compress-algo none`",
                &["--compress-algo", "none"][..],
            ),
        ] {
            let t = times(self.runs, |_| {
                measure::pipe(&mut self.pg_dump(db), &mut self.gpg_encrypt(&out, extra))
            });
            rows.push(Row {
                name: name.into(),
                wall: median(&t),
                cpu: None,
                rss_mib: None,
                out_bytes: Some(measure::size(&out)),
            });
        }
        let _ = std::fs::remove_file(&out);
        for (encryptor, algo, level) in settings() {
            rows.push(self.ours(db, &encryptor, &algo, level));
        }
        rows
    }

    fn config(&self, db: &str, dir: &Path, encryptor: &str, algo: &str, level: u8) -> DaemonConfig {
        let backups = dir.join("backups");
        std::fs::create_dir_all(&backups).expect("backups dir");
        harness::proc::run(Command::new("chmod").arg("0700").arg(&backups));
        DaemonConfig {
            fingerprint: Some(self.fpr.clone()),
            cert_file: Some(self.cert.clone()),
            env_file: None,
            gnupg_home: None,
            database_url: format!("postgres://{ROLE}@127.0.0.1:{}/{db}", self.pg.port),
            password: Some(ROLE_PASSWORD.to_owned()),
            backup_dir: backups,
            tables: data::TABLES
                .iter()
                .map(|(t, _)| format!("cutter_governance.{t}"))
                .collect(),
            pg_dump: None,
            allowed_uids: vec![0],
            extra: format!(
                "compression = \"{algo}\"\ncompression_level = {level}\nencryptor = \"{encryptor}\"\n"
            ),
            tail: String::new(),
            server_extra: String::new(),
            env: vec![("RUST_LOG".into(), "warn".into())],
            run_as: None,
            wrap: Vec::new(),
        }
    }

    fn ours(&self, db: &str, encryptor: &str, algo: &str, level: u8) -> Row {
        let dir = tempfile::tempdir_in(self.work.path()).expect("tempdir");
        let cfg = self.config(db, dir.path(), encryptor, algo, level);
        let daemon = Daemon::start(dir.path(), &cfg);
        let pid = daemon.pid();
        let (mut walls, mut cpus, mut rss, mut size) = (Vec::new(), Vec::new(), 0.0f64, 0);
        for i in 0..self.runs {
            let run_id = format!("bench-{algo}-{level}-{i}");
            measure::reset_peak_rss(pid);
            let cpu0 = measure::cpu(pid);
            walls.push(measure::wall(
                daemon_ctl(&daemon, &["backup", "--run-id", &run_id]).stdout(Stdio::null()),
            ));
            cpus.push(measure::cpu(pid).saturating_sub(cpu0));
            rss = rss.max(measure::peak_rss_mib(pid));
            let artifact = cfg.backup_dir.join(format!("{run_id}.sql.gpg"));
            size = measure::size(&artifact);
            let _ = std::fs::remove_file(&artifact);
            for suffix in [".manifest.json", ".manifest.json.sig"] {
                let _ = std::fs::remove_file(cfg.backup_dir.join(format!("{run_id}{suffix}")));
            }
        }
        walls.sort();
        cpus.sort();
        let default = if (encryptor, algo, level) == ("seipdv1", "zip", 2) {
            " (default)"
        } else {
            ""
        };
        Row {
            name: format!("ours: `cutterctl backup`, {encryptor} {algo}-{level}{default}"),
            wall: median(&walls),
            cpu: Some(median(&cpus)),
            rss_mib: Some(rss),
            out_bytes: Some(size),
        }
    }

    fn small(&self, db: &str, n: usize) {
        let floor = median(&times(n, |_| {
            measure::wall(self.pg_dump(db).stdout(Stdio::null()))
        }));
        let old = self.work.path().join("old-small.gpg");
        let old_t = median(&times(n, |_| {
            measure::pipe(&mut self.pg_dump(db), &mut self.gpg_encrypt(&old, &[]))
        }));
        let dir = tempfile::tempdir_in(self.work.path()).expect("tempdir");
        let cfg = self.config(db, dir.path(), "seipdv1", "zip", 2);
        let daemon = Daemon::start(dir.path(), &cfg);
        let pid = daemon.pid();
        measure::reset_peak_rss(pid);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (backup_t, selftest_t) = rt.block_on(async {
            let mut client = daemon.client().await;
            let _ = client.selftest(cutter_backup::v1::SelftestRequest {}).await;
            let mut selftests = Vec::new();
            for _ in 0..n.max(50) {
                let t = Instant::now();
                let r = client
                    .selftest(cutter_backup::v1::SelftestRequest {})
                    .await
                    .expect("selftest");
                selftests.push(t.elapsed());
                assert!(r.into_inner().passed);
            }
            let mut backups = Vec::new();
            for i in 0..n {
                let run_id = format!("small-{i}");
                let t = Instant::now();
                client
                    .pre_write_backup(cutter_backup::v1::PreWriteBackupRequest {
                        run_id: run_id.clone(),
                    })
                    .await
                    .expect("backup");
                backups.push(t.elapsed());
                let _ = std::fs::remove_file(cfg.backup_dir.join(format!("{run_id}.sql.gpg")));
                let _ =
                    std::fs::remove_file(cfg.backup_dir.join(format!("{run_id}.manifest.json")));
            }
            selftests.sort();
            backups.sort();
            (median(&backups), median(&selftests))
        });
        let small_rss = measure::peak_rss_mib(pid);
        drop(daemon);
        let ready = median(&times(5, |i| self.start_to_ready(db, i)));
        println!("| measurement | p50 | target |\n|---|---:|---|");
        println!("| floor: `pg_dump > /dev/null` | {} ms | |", ms(floor));
        println!("| old: `pg_dump \\| gpg -e` | {} ms | |", ms(old_t));
        println!(
            "| ours: PreWriteBackup RPC (zip-2, default) | {} ms ({:.2}x floor) | ≤ 1.3x floor |",
            ms(backup_t),
            backup_t.as_secs_f64() / floor.as_secs_f64()
        );
        println!(
            "| ours: Selftest RPC, warm pool | {} ms | ≤ 15 ms |",
            ms(selftest_t)
        );
        println!("| ours: start to READY=1 | {} ms | ≤ 150 ms |", ms(ready));
        println!(
            "| ours: daemon peak RSS over these backups | {small_rss:.1} MiB | flat in dump size |"
        );
    }

    /// Spawns the daemon with a notify socket and times READY=1.
    fn start_to_ready(&self, db: &str, i: usize) -> Duration {
        let dir = tempfile::tempdir_in(self.work.path()).expect("tempdir");
        let config = self
            .config(db, dir.path(), "seipdv1", "zip", 2)
            .write(dir.path());
        let notify = dir.path().join(format!("notify-{i}.sock"));
        let sock = UnixDatagram::bind(&notify).expect("notify socket");
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let t = Instant::now();
        let mut child = Command::new(workspace_bin("cutter-backupd"))
            .arg("--config")
            .arg(&config)
            .env("NOTIFY_SOCKET", &notify)
            .env("BACKUP_GPG_FPR", &self.fpr)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn daemon");
        let mut buf = [0u8; 1024];
        let took = loop {
            let n = sock.recv(&mut buf).expect("READY within 10 s");
            if String::from_utf8_lossy(&buf[..n]).contains("READY=1") {
                break t.elapsed();
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        took
    }
}

fn daemon_ctl(daemon: &Daemon, args: &[&str]) -> Command {
    let mut c = Command::new(workspace_bin("cutterctl"));
    c.arg("--socket").arg(&daemon.socket).args(args);
    c
}

fn table(rows: &[Row], plain: u64) {
    let floor = rows.first().map_or(Duration::ZERO, |r| r.wall);
    let old = rows.get(1).map_or(Duration::ZERO, |r| r.wall);
    let old_size = rows.get(1).and_then(|r| r.out_bytes).unwrap_or(0);
    println!(
        "| pipeline | wall s | MB/s | our CPU s | our CPU s/GB | daemon peak RSS MiB | output MB | vs floor | old/ours | size vs old |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let mbps = plain as f64 / 1e6 / r.wall.as_secs_f64();
        let ours = r.name.starts_with("ours");
        println!(
            "| {} | {} | {:.0} | {} | {} | {} | {} | {:.2}x | {} | {} |",
            r.name,
            secs(r.wall),
            mbps,
            r.cpu.map(secs).unwrap_or_else(|| "–".into()),
            r.cpu
                .map(|c| format!("{:.2}", c.as_secs_f64() / (plain as f64 / 1e9)))
                .unwrap_or_else(|| "–".into()),
            r.rss_mib
                .map(|m| format!("{m:.1}"))
                .unwrap_or_else(|| "–".into()),
            r.out_bytes
                .map(|b| format!("{:.0}", b as f64 / 1e6))
                .unwrap_or_else(|| "–".into()),
            r.wall.as_secs_f64() / floor.as_secs_f64(),
            if ours {
                format!("{:.2}x", old.as_secs_f64() / r.wall.as_secs_f64())
            } else {
                "–".into()
            },
            match (ours, r.out_bytes) {
                (true, Some(b)) if old_size > 0 => format!("{:.2}x", b as f64 / old_size as f64),
                _ => "–".into(),
            },
        );
    }
}
