//! Timing and /proc readings for the benchmark.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `f` `n` times; returns the sorted durations.
pub fn times(n: usize, mut f: impl FnMut(usize) -> Duration) -> Vec<Duration> {
    let mut v: Vec<Duration> = (0..n).map(&mut f).collect();
    v.sort();
    v
}

/// The median of sorted durations.
pub fn median(sorted: &[Duration]) -> Duration {
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

/// Wall time of a command that must succeed.
pub fn wall(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let d = t.elapsed();
    assert!(status.success(), "{cmd:?} failed: {status}");
    d
}

/// `pg_dump … | gpg -e …`: wall time, both must succeed.
pub fn pipe(first: &mut Command, second: &mut Command) -> Duration {
    let t = Instant::now();
    let mut a = first
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn producer");
    let out = a.stdout.take().expect("stdout");
    let b = second.stdin(Stdio::from(out)).status().expect("consumer");
    let a = a.wait().expect("producer");
    let d = t.elapsed();
    assert!(a.success() && b.success(), "pipeline failed: {a} | {b}");
    d
}

/// CPU time (user + system) the process has used itself and, with
/// `children`, the children it has waited for (pg_dump for the daemon).
pub fn cpu_of(pid: u32, children: bool) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // cutime and cstime are fields 16 and 17, so indexes 13 and 14.
    let ticks = field(11) + field(12) + if children { field(13) + field(14) } else { 0 };
    Duration::from_millis(ticks * 1000 / clock_ticks())
}

/// CPU time (user + system) the process has used itself.
pub fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the parenthesised command name come fields 3 (state), 4, …;
    // utime and stime are fields 14 and 15 (proc(5)), so indexes 11 and 12.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    Duration::from_millis(ticks * 1000 / clock_ticks())
}

fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// Resets the process's peak RSS (VmHWM).
pub fn reset_peak_rss(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// The process's peak RSS since the last reset, in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Size of a file in bytes (0 when missing).
pub fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Seconds with two decimals.
pub fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

/// Milliseconds with one decimal.
pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}
