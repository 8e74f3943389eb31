//! Child processes for the end-to-end bench: started pinned to a core with `taskset`, their CPU
//! time (utime + stime of the process and its descendants) and resident memory read from
//! `/proc`, and stopped on drop (SIGTERM, then SIGKILL, descendants included).
//!
//! Linux only. No `libc`: signals go through `kill(1)`, limits through `prlimit(1)`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// CPU time, seconds: `utime` (user space) and `stime` (the kernel: system calls, and the
/// network stack's work done on the process's behalf, such as delivering what it sends over
/// loopback to the receiving socket).
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    pub user: f64,
    pub system: f64,
}

impl Cpu {
    /// `utime + stime`.
    pub fn total(self) -> f64 {
        self.user + self.system
    }
}

/// The CPU time spent between two readings.
impl std::ops::Sub for Cpu {
    type Output = Cpu;

    fn sub(self, earlier: Cpu) -> Cpu {
        Cpu {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
        }
    }
}

/// A `Command` for `program`, pinned to `core` when `taskset` is installed.
pub fn pinned(core: Option<usize>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match core {
        Some(core) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(core.to_string()).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Whether `program` is on `PATH` (or an existing path).
pub fn installed(program: &str) -> Option<PathBuf> {
    let p = Path::new(program);
    if p.is_absolute() {
        return p.exists().then(|| p.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|f| f.is_file())
    })
}

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// `(ppid, utime, stime)` of one process, the times in ticks, from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(u32, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime, stime))
}

/// `pid` and every descendant of it.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok())
                && let Some((ppid, _, _)) = stat(p)
            {
                all.push((p, ppid));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    out
}

/// The number after `key` in the text of a `/proc/.../status` file (`VmRSS:  1234 kB`: 1234).
fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Context switches of each thread of one process (voluntary: it slept; involuntary: it was
/// preempted), from `/proc/PID/task/*/status`, as (thread id, count).
fn thread_switches(pid: u32) -> Vec<(u32, u64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let tid = t.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(t.path().join("status")).ok()?;
            let count = status_field(&status, "voluntary_ctxt_switches:")?
                + status_field(&status, "nonvoluntary_ctxt_switches:")?;
            Some((tid, count))
        })
        .collect()
}

/// `VmRSS` of one process, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| status_field(&s, "VmRSS:"))
        .unwrap_or(0)
}

/// Context switches a process tree made between two readings of [`Proc::switches`], summed
/// thread by thread: a thread that started meanwhile counts from zero, and one that ended
/// meanwhile is left out (what it made before it ended is lost).
pub fn switches_between(before: &BTreeMap<u32, u64>, after: &BTreeMap<u32, u64>) -> u64 {
    after
        .iter()
        .map(|(tid, n)| n.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum()
}

/// Busy and total ticks of one CPU, from `/proc/stat`. Niced time counts as idle: background
/// jobs at a low priority fill idle time but yield to the server at once.
pub fn core_ticks(core: usize) -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let prefix = format!("cpu{core} ");
    let Some(line) = text.lines().find(|l| l.starts_with(&prefix)) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let field = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let idle = field(1) + field(3) + field(4);
    (total - idle, total)
}

/// The soft limit on open files of this process, raised to the hard limit with `prlimit(1)` if
/// it is below `want`. Children inherit it.
pub fn raise_nofile(want: u64) -> u64 {
    let read = || -> Option<(u64, u64)> {
        let text = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = text.lines().find(|l| l.starts_with("Max open files"))?;
        let v: Vec<&str> = line.split_whitespace().collect();
        let parse = |s: &str| {
            if s == "unlimited" {
                Some(u64::MAX)
            } else {
                s.parse().ok()
            }
        };
        Some((parse(v.get(3)?)?, parse(v.get(4)?)?))
    };
    let Some((soft, hard)) = read() else {
        return 0;
    };
    if soft >= want || hard <= soft {
        return soft;
    }
    let new = want.min(hard);
    let _ = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={new}:{hard}"))
        .status();
    read().map_or(soft, |(s, _)| s)
}

/// Sends `signal` (e.g. `TERM`) to `pid`.
pub fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(std::process::Stdio::null())
        .status();
}

/// A server under test, stopped on drop.
pub struct Proc {
    /// What it is, for messages.
    pub name: String,
    child: Option<Child>,
    /// Its log file (stderr), for messages when it fails.
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `command` with stderr to `log` (stdout is the caller's choice).
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Proc, String> {
        let file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        command.stderr(file);
        let child = command
            .spawn()
            .map_err(|e| format!("starting {name}: {e}"))?;
        Ok(Proc {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// The child, e.g. to take its stdout.
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("running until dropped")
    }

    /// Its pid (with `taskset`, the same process: taskset execs).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child().try_wait(), Ok(None))
    }

    /// CPU time of the process and its descendants, in user space and in the kernel.
    pub fn cpu(&self, ticks_per_second: f64) -> Cpu {
        let (user, system) = tree(self.pid())
            .into_iter()
            .filter_map(stat)
            .fold((0, 0), |(u, s), (_, utime, stime)| (u + utime, s + stime));
        Cpu {
            user: user as f64 / ticks_per_second,
            system: system as f64 / ticks_per_second,
        }
    }

    /// Context switches of each thread of the process and its descendants, by thread id: a
    /// server that runs out of work sleeps in `epoll_wait` and is woken again, and its CPU time
    /// pays for both (see [`switches_between`]).
    pub fn switches(&self) -> BTreeMap<u32, u64> {
        tree(self.pid())
            .into_iter()
            .flat_map(thread_switches)
            .collect()
    }

    /// Resident memory of the process and its descendants, KiB (pages shared between them are
    /// counted once per process).
    pub fn rss_kib(&self) -> u64 {
        tree(self.pid()).into_iter().map(rss_kib).sum()
    }

    /// The tail of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL for it and whatever descendants remain.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let family = tree(child.id());
        signal(child.id(), "TERM");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        for pid in family.into_iter().skip(1) {
            if std::fs::metadata(format!("/proc/{pid}")).is_ok() {
                signal(pid, "KILL");
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// The CPU model and how many CPUs this machine has, from `/proc/cpuinfo`, for report headers.
pub fn cpu_model() -> String {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|v| v.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = text.lines().filter(|l| l.starts_with("processor")).count();
    format!("{model}, {cores} CPUs")
}
