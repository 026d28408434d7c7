//! The two dump shapes (issue #20, item 6), side by side: the governance
//! dataset over TCP (pg_dump is slow, ~190 MB/s, and sets the pace) and a
//! fast-dump dataset over the Unix socket (highly compressible hex that
//! pg_dump emits at ~500 MB/s; the default compression makes it about 5 %
//! of its size). For each: the floor (`pg_dump > /dev/null`) and the default
//! backup (`cutterctl backup`, seipdv1 zip-2), with wall time and the
//! CPU-seconds of everything that ran: the daemon's threads, pg_dump, and
//! every PostgreSQL process (the COPY backend, the snapshot's count, their
//! parallel workers). Also the snapshot's row count on its own, with the
//! pages it touched.
//!
//! Both databases are `VACUUM (FREEZE, ANALYZE)`d first, so autovacuum does
//! not run in the middle and the count's plan is the one a vacuumed
//! production table gets (an index-only scan of the primary key). The
//! backup is measured twice: with that plan, and with the count forced to
//! sequential scans (a daemon connecting as a second role whose sessions
//! have `enable_indexonlyscan = off`), as on tables whose visibility map is
//! not set (freshly loaded or busy ones), where the count reads every
//! table's heap a second time.
//!
//! The floor and the backups are interleaved run by run, so a change in
//! the machine's load (it is shared) hits all of them alike. With
//! `--baseline DIR`, another build's daemon (`DIR/cutter-backupd`) is
//! measured in the same runs: before and after under the same conditions.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::pg::{ROLE, ROLE_PASSWORD};
use crate::harness::{Daemon, DaemonConfig};
use crate::measure::{median, secs};
use crate::{Bench, daemon_ctl, data, measure};

/// Plain-dump bytes of one fast-shape row: the id, a tab, 640 hex digits
/// and a newline.
pub const BYTES_PER_ROW: u64 = 650;

/// SQL creating the nine tables of [`data::TABLES`] with rows of
/// repetitive hex (one md5 repeated 20 times: 640 digits of which 32 are
/// new), for a plain dump of about `mb` MB.
pub fn sql(mb: u64) -> String {
    let rows_total = mb * 1_000_000 / BYTES_PER_ROW;
    let mut sql = String::from(
        "CREATE SCHEMA cutter_governance; GRANT USAGE ON SCHEMA cutter_governance TO cutter_exec;\n",
    );
    for (name, share) in data::TABLES {
        let rows = (rows_total * u64::from(share) / 100).max(10);
        sql.push_str(&format!(
            "CREATE TABLE cutter_governance.{name} (id bigint PRIMARY KEY, h text NOT NULL);\n\
             INSERT INTO cutter_governance.{name} \
             SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, {rows}) g;\n\
             GRANT SELECT ON cutter_governance.{name} TO cutter_exec;\n"
        ));
    }
    sql
}

/// How pg_dump and the daemon reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// 127.0.0.1 with SCRAM (the rest of the benchmark).
    Tcp,
    /// The cluster's Unix socket (local trust, no password).
    Socket,
}

/// One dataset measured.
pub struct Shape {
    /// Its name in the table.
    pub name: &'static str,
    /// Its database.
    pub db: &'static str,
    /// How it is reached.
    pub via: Via,
}

/// A second login role, a member of `cutter_exec` (so it has the same
/// grants), whose sessions plan without index-only scans: a daemon
/// connecting as it counts with sequential scans.
const SEQ_ROLE: &str = "cutter_exec_seqscan";

/// Which plan the snapshot's count gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CountPlan {
    /// The planner's own (an index-only scan on these vacuumed tables).
    Planner,
    /// Sequential scans (`enable_indexonlyscan = off`).
    Seq,
}

/// One measured run: wall time and CPU by whom.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    wall: Duration,
    /// The daemon's own threads.
    daemon: Duration,
    /// pg_dump (the daemon's child, or ours for the floor) and cutterctl.
    clients: Duration,
    /// Every PostgreSQL process.
    server: Duration,
    out_bytes: u64,
}

impl Run {
    fn total(&self) -> Duration {
        self.daemon + self.clients + self.server
    }
}

/// Field values after the `(comm)` of `/proc/PID/stat` (index 0 is field 3).
fn stat_fields(pid: u32) -> Vec<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect()
}

fn ticks(t: u64) -> Duration {
    // USER_HZ is 100 on Linux (sysconf(_SC_CLK_TCK)); /proc counts in it.
    Duration::from_millis(t * 10)
}

/// (own user+system, reaped children's user+system) of a process.
fn proc_cpu(pid: u32) -> (Duration, Duration) {
    let f = stat_fields(pid);
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    // utime, stime, cutime, cstime are fields 14-17 (proc(5)).
    (ticks(at(11) + at(12)), ticks(at(13) + at(14)))
}

/// The median of each column, taken separately.
fn medians(runs: &[Run]) -> Run {
    let col = |f: fn(&Run) -> Duration| {
        let mut v: Vec<Duration> = runs.iter().map(f).collect();
        v.sort();
        median(&v)
    };
    let mut sizes: Vec<u64> = runs.iter().map(|r| r.out_bytes).collect();
    sizes.sort_unstable();
    Run {
        wall: col(|r| r.wall),
        daemon: col(|r| r.daemon),
        clients: col(|r| r.clients),
        server: col(|r| r.server),
        out_bytes: sizes.get(sizes.len() / 2).copied().unwrap_or(0),
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A daemon of one variant, with its config and directory.
struct Variant {
    name: String,
    daemon: Daemon,
    cfg: DaemonConfig,
    _dir: tempfile::TempDir,
}

impl Bench {
    /// The postmaster's pid (first line of `postmaster.pid`).
    fn postmaster(&self) -> u32 {
        let data = self
            .pg
            .socket_dir()
            .parent()
            .map(|d| d.join("data").join("postmaster.pid"))
            .unwrap_or_default();
        std::fs::read_to_string(&data)
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no pid in {}", data.display()))
    }

    /// CPU used so far by the whole cluster: the postmaster, its exited
    /// children (backends, parallel workers; counted in its cutime/cstime
    /// once reaped) and its live children.
    fn cluster_cpu(&self) -> Duration {
        let pm = self.postmaster();
        let (own, reaped) = proc_cpu(pm);
        let mut total = own + reaped;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let f = stat_fields(pid);
            if f.get(1).copied() == Some(u64::from(pm)) {
                total += ticks(f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0));
            }
        }
        total
    }

    /// pg_dump as the daemon runs it, over `via`.
    fn dump_via(&self, db: &str, via: Via) -> Command {
        let mut c = self.pg_dump(db);
        if via == Via::Socket {
            c.env("PGHOST", self.pg.socket_dir())
                .env_remove("PGPASSWORD");
        }
        c
    }

    /// Times `f` (which runs child processes of ours) with every CPU it causes.
    fn cpu_run(&self, daemon: Option<u32>, f: impl FnOnce() -> Duration) -> Run {
        let me = std::process::id();
        let (d0, dc0) = daemon.map(proc_cpu).unwrap_or_default();
        let s0 = self.cluster_cpu();
        let c0 = proc_cpu(me).1;
        let wall = f();
        // Exited backends count once the postmaster has reaped them.
        std::thread::sleep(Duration::from_millis(300));
        let (d1, dc1) = daemon.map(proc_cpu).unwrap_or_default();
        Run {
            wall,
            daemon: d1.saturating_sub(d0),
            clients: proc_cpu(me).1.saturating_sub(c0) + dc1.saturating_sub(dc0),
            server: self.cluster_cpu().saturating_sub(s0),
            out_bytes: 0,
        }
    }

    /// A daemon for `shape` connecting as `role`, running `bin_dir`'s
    /// `cutter-backupd` when given, else the one beside this benchmark.
    fn variant(&self, name: String, shape: &Shape, role: &str, bin_dir: Option<&Path>) -> Variant {
        let dir = tempfile::tempdir_in(self.work.path()).expect("tempdir");
        let mut cfg = self.config(shape.db, dir.path(), "seipdv1", "zip", 2);
        cfg.database_url = match shape.via {
            Via::Socket => format!(
                "postgres://{role}@/{}?host={}&port={}",
                shape.db,
                self.pg.socket_dir().display(),
                self.pg.port
            ),
            Via::Tcp => format!("postgres://{role}@127.0.0.1:{}/{}", self.pg.port, shape.db),
        };
        if shape.via == Via::Socket {
            cfg.password = None;
        }
        if let Some(bin) = bin_dir {
            // The harness runs `<wrap…> <its daemon> --config …`: swap the binary.
            let exe = bin.join("cutter-backupd").display().to_string();
            cfg.wrap = vec![
                "sh".into(),
                "-c".into(),
                format!("shift; exec '{}' \"$@\"", exe.replace('\'', "'\\''")),
                "sh".into(),
            ];
        }
        let daemon = Daemon::start(dir.path(), &cfg);
        Variant {
            name,
            daemon,
            cfg,
            _dir: dir,
        }
    }

    /// One backup by `v`, measured; its files are removed.
    fn backup_run(&self, v: &Variant, run_id: &str) -> Run {
        let mut r = self.cpu_run(Some(v.daemon.pid()), || {
            measure::wall(
                daemon_ctl(&v.daemon, &["backup", "--run-id", run_id]).stdout(Stdio::null()),
            )
        });
        r.out_bytes = measure::size(&v.cfg.backup_dir.join(format!("{run_id}.sql.gpg")));
        for suffix in [".sql.gpg", ".manifest.json", ".manifest.json.sig"] {
            let _ = std::fs::remove_file(v.cfg.backup_dir.join(format!("{run_id}{suffix}")));
        }
        r
    }

    /// The floor and each daemon variant, interleaved run by run: the rows
    /// in order, each with its runs.
    fn interleaved(&self, shape: &Shape, baseline: Option<&Path>) -> Vec<(String, Vec<Run>)> {
        let mut variants = Vec::new();
        let builds = baseline
            .map(|b| ("baseline build", Some(b)))
            .into_iter()
            .chain([("ours", None)]);
        for (build, bin) in builds {
            for (plan, role) in [
                ("count by the planner", ROLE),
                ("count by seq scans", SEQ_ROLE),
            ] {
                let name = format!("{build}: `cutterctl backup` (default), {plan}");
                variants.push(self.variant(name, shape, role, bin));
            }
        }
        let mut floor = Vec::new();
        let mut runs: Vec<Vec<Run>> = variants.iter().map(|_| Vec::new()).collect();
        for i in 0..self.runs {
            floor.push(self.cpu_run(None, || {
                measure::wall(self.dump_via(shape.db, shape.via).stdout(Stdio::null()))
            }));
            for (k, v) in variants.iter().enumerate() {
                runs[k].push(self.backup_run(v, &format!("shape-{}-{k}-{i}", shape.db)));
            }
        }
        std::iter::once(("floor: `pg_dump > /dev/null`".to_owned(), floor))
            .chain(variants.into_iter().map(|v| v.name).zip(runs))
            .collect()
    }

    /// The daemon's count query (`db::Snapshot::count`), for psql.
    fn count_sql(&self) -> String {
        data::TABLES
            .iter()
            .enumerate()
            .map(|(i, (t, _))| {
                format!("SELECT {i}::int4, count(*)::int8 FROM \"cutter_governance\".\"{t}\"")
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
    }

    fn psql_as_role(&self, db: &str, sql: &str) -> Command {
        let mut c = self.pg.psql_cmd(db);
        // psql_cmd connects as postgres; the last -U wins.
        c.args(["-U", ROLE, "-At", "-c", sql]);
        c
    }

    /// The count alone, in a REPEATABLE READ READ ONLY transaction like the
    /// snapshot's: its runs, the plan's scan nodes and the MB of pages it
    /// touched (EXPLAIN ANALYZE BUFFERS).
    fn count_alone(&self, db: &str, plan: CountPlan) -> (Vec<Run>, String, f64) {
        let set = match plan {
            CountPlan::Planner => "",
            CountPlan::Seq => "SET LOCAL enable_indexonlyscan = off; ",
        };
        let txn =
            |q: &str| format!("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; {set}{q}; COMMIT");
        let runs = (0..self.runs)
            .map(|_| {
                self.cpu_run(None, || {
                    let t = Instant::now();
                    crate::harness::proc::run(&mut self.psql_as_role(db, &txn(&self.count_sql())));
                    t.elapsed()
                })
            })
            .collect();
        let explain = crate::harness::proc::run(&mut self.psql_as_role(
            db,
            &txn(&format!(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}",
                self.count_sql()
            )),
        ));
        let text = String::from_utf8_lossy(&explain.stdout);
        let json: serde_json::Value = text
            .find('[')
            .and_then(|i| serde_json::from_str(text[i..].trim_end_matches("COMMIT").trim()).ok())
            .unwrap_or_default();
        let top = &json[0]["Plan"];
        let blocks = top["Shared Hit Blocks"].as_u64().unwrap_or(0)
            + top["Shared Read Blocks"].as_u64().unwrap_or(0);
        let mut scans = Vec::new();
        scan_nodes(top, &mut scans);
        scans.sort();
        scans.dedup();
        (runs, scans.join(", "), blocks as f64 * 8192.0 / 1e6)
    }

    /// Heap MB of the nine tables.
    fn heap_mb(&self, db: &str) -> f64 {
        self.pg
            .psql(
                db,
                "SELECT sum(pg_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n \
                 ON n.oid = c.relnamespace WHERE n.nspname = 'cutter_governance' AND c.relkind = 'r'",
            )
            .parse::<f64>()
            .unwrap_or(0.0)
            / 1e6
    }

    /// Measures every shape and prints one table; with `baseline` (a
    /// directory holding another build's `cutter-backupd`), that build's
    /// backups too, in the same runs.
    pub fn shapes(&self, shapes: &[Shape], baseline: Option<&Path>) {
        self.pg.psql(
            "postgres",
            &format!(
                "CREATE ROLE {SEQ_ROLE} LOGIN PASSWORD '{ROLE_PASSWORD}' IN ROLE {ROLE}; \
                 ALTER ROLE {SEQ_ROLE} SET enable_indexonlyscan = off"
            ),
        );
        println!(
            "\n## Two dump shapes: floor against the default backup (seipdv1 zip-2), median of {} interleaved runs\n",
            self.runs
        );
        println!(
            "CPU columns are CPU-seconds (user+system) per run: the daemon's threads; pg_dump and cutterctl; every PostgreSQL process (COPY backend, the snapshot's count, parallel workers). Medians per column.\n"
        );
        println!(
            "| dataset | pipeline | wall s | vs floor | daemon CPU s | pg_dump+ctl CPU s | PostgreSQL CPU s | total CPU s | total CPU s/GB | output MB |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        let mut notes = Vec::new();
        for shape in shapes {
            let load0 = loadavg();
            self.pg.psql(shape.db, "VACUUM (FREEZE, ANALYZE)");
            self.pg.psql(shape.db, "CHECKPOINT");
            let plain = self
                .dump_via(shape.db, shape.via)
                .output()
                .expect("pg_dump")
                .stdout
                .len();
            let gb = plain as f64 / 1e9;
            let rows = self.interleaved(shape, baseline);
            let load1 = loadavg();
            let (c_planner, scans_planner, mb_planner) =
                self.count_alone(shape.db, CountPlan::Planner);
            let (c_seq, scans_seq, mb_seq) = self.count_alone(shape.db, CountPlan::Seq);
            let via = match shape.via {
                Via::Tcp => "TCP",
                Via::Socket => "Unix socket",
            };
            let label = format!("{}, {:.0} MB, {via}", shape.name, plain as f64 / 1e6);
            let floor = medians(&rows[0].1);
            let row = |name: &str, r: &Run, vs: bool| {
                println!(
                    "| {label} | {name} | {} | {} | {} | {} | {} | {} | {:.2} | {} |",
                    secs(r.wall),
                    if vs {
                        format!("{:.2}x", r.wall.as_secs_f64() / floor.wall.as_secs_f64())
                    } else {
                        "–".into()
                    },
                    secs(r.daemon),
                    secs(r.clients),
                    secs(r.server),
                    secs(r.total()),
                    r.total().as_secs_f64() / gb,
                    if r.out_bytes > 0 {
                        format!("{:.1}", r.out_bytes as f64 / 1e6)
                    } else {
                        "–".into()
                    },
                );
            };
            for (name, runs) in &rows {
                row(name, &medians(runs), true);
            }
            row(
                &format!(
                    "the snapshot's count alone, planner: {scans_planner}, {mb_planner:.0} MB of pages"
                ),
                &medians(&c_planner),
                false,
            );
            row(
                &format!(
                    "the snapshot's count alone, forced: {scans_seq}, {mb_seq:.0} MB of pages"
                ),
                &medians(&c_seq),
                false,
            );
            notes.push(format!(
                "{}: heap {:.0} MB; load average (1, 5, 15 min) before {load0}, after the backups {load1}",
                shape.name,
                self.heap_mb(shape.db),
            ));
        }
        println!();
        for n in notes {
            println!("- {n}");
        }
    }
}

/// The distinct scan node types under `plan`.
fn scan_nodes(plan: &serde_json::Value, out: &mut Vec<String>) {
    if let Some(t) = plan["Node Type"].as_str()
        && t.ends_with("Scan")
    {
        out.push(t.to_owned());
    }
    for p in plan["Plans"].as_array().into_iter().flatten() {
        scan_nodes(p, out);
    }
}
