//! One load run of the end-to-end bench against one server: the load generator started as a
//! child process on the client core, and what the run cost the server (CPU time in user space
//! and in the kernel, context switches, other work on its core) turned into a [`Sample`].

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::loadgen::Summary;
use crate::peers::Server;
use crate::procs;
use crate::report::Sample;
use crate::{CLIENT_CORE, Opts, SERVER_CORE, Workload};

/// What every run against one server needs.
pub struct Target<'a> {
    pub server: &'a mut Server,
    pub urls: &'a Path,
    pub roots: &'a Path,
}

/// One run of `w` against `t` (at `rate` per second when given, else flat out), logged as it
/// ends: its sample, and how many clicks were answered.
pub fn run_workload(
    exe: &Path,
    t: &mut Target<'_>,
    w: &Workload,
    rate: Option<f64>,
    round: usize,
    opts: &Opts,
    pin: bool,
) -> Result<(Sample, u64), String> {
    let mut extra: Vec<String> = w.args.split_whitespace().map(String::from).collect();
    extra.extend([
        "--duration".into(),
        format!("{}s", opts.duration.as_secs_f64()),
    ]);
    if let Some(rate) = rate {
        extra.extend(["--rate".into(), rate.to_string()]);
    }
    if !w.verify {
        extra.push("--insecure-no-verify".into());
    }
    if opts.both_cores {
        extra.extend(["--threads".into(), "2".into()]);
    }
    let (summary, cost) = run_load(exe, t, &extra, opts.duration + Duration::from_secs(60), pin)?;
    let smp = sample(t.server.name, w, round, &summary, &cost);
    eprintln!(
        "e2e: round {}/{} {:<9} {:<12} {:>7} ok {:>8.0}/s{}  server {:>6.1} µs/click ({:.1} in the kernel), busy {:>3.0}% (client {:>3.0}%), {:.2} switches/click  p50 {:.2} ms p99 {:.2} ms{}{}",
        round + 1,
        opts.rounds,
        t.server.name,
        w.key,
        smp.ok,
        smp.rate,
        rate.map_or_else(String::new, |r| format!(" (offered {r}/s)")),
        smp.cpu_us,
        smp.kernel_us,
        smp.busy * 100.0,
        smp.client_busy * 100.0,
        smp.switches,
        smp.p50_ms,
        smp.p99_ms,
        if smp.bad > 0 {
            format!("  {} FAILED: {:?}", smp.bad, summary.error_samples)
        } else {
            String::new()
        },
        if smp.core0_other > 0.05 {
            format!(
                "  (core 0 also {:.0}% busy with other work)",
                smp.core0_other * 100.0
            )
        } else {
            String::new()
        },
    );
    if summary.handshakes.contains_key("resumed") {
        eprintln!(
            "e2e: WARNING: {} resumed sessions in {}: new-connection figures are not full handshakes",
            t.server.name, w.key
        );
    }
    Ok((smp, summary.ok))
}

/// What one load run cost the server.
pub struct Cost {
    /// CPU time of its process tree, in user space and in the kernel.
    cpu: procs::Cpu,
    /// Context switches of its threads (voluntary and involuntary).
    switches: u64,
    /// The share of the server's core busy with other work (noise).
    other: f64,
}

/// Runs the load generator pinned to the client core against `t`, measuring the server's CPU
/// and context switches.
pub fn run_load(
    exe: &Path,
    t: &mut Target<'_>,
    extra: &[String],
    timeout: Duration,
    pin: bool,
) -> Result<(Summary, Cost), String> {
    let tck = procs::clock_ticks();
    let mut cmd = procs::pinned(pin.then_some(CLIENT_CORE), exe);
    cmd.arg("loadgen")
        .arg("--target")
        .arg(t.server.https.to_string())
        .arg("--urls-file")
        .arg(t.urls)
        .arg("--ca")
        .arg(t.roots)
        .args(["--json", "--no-progress"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // Read outside the CPU readings: each reading walks /proc.
    let switches0 = t.server.proc.switches();
    let cpu0 = t.server.proc.cpu(tck);
    let core0 = procs::core_ticks(SERVER_CORE);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting the load generator: {e}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the load generator did not finish within {timeout:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let cpu1 = t.server.proc.cpu(tck);
    let core1 = procs::core_ticks(SERVER_CORE);
    let switches = procs::switches_between(&switches0, &t.server.proc.switches());
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut s, &mut out);
    }
    if !status.success() {
        return Err(format!("the load generator failed ({status})"));
    }
    if !t.server.proc.alive() {
        return Err(format!(
            "{} exited:\n{}",
            t.server.name,
            t.server.proc.log_tail()
        ));
    }
    let summary: Summary = out
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| format!("no summary from the load generator: {out:?}"))?;
    let (busy0, total0) = core0;
    let (busy1, total1) = core1;
    let cpu = cpu1 - cpu0;
    let core_busy = (busy1 - busy0) as f64 / tck;
    let core_wall = ((total1 - total0) as f64 / tck).max(1e-9);
    let other = ((core_busy - cpu.total()) / core_wall).max(0.0);
    Ok((
        summary,
        Cost {
            cpu,
            switches,
            other,
        },
    ))
}

fn sample(server: &'static str, w: &Workload, round: usize, s: &Summary, cost: &Cost) -> Sample {
    let cpu = cost.cpu.total();
    let per_answer = |x: f64| if s.ok > 0 { x / s.ok as f64 } else { f64::NAN };
    Sample {
        server,
        workload: w.key,
        round,
        ok: s.ok,
        bad: s.bad(),
        rate: s.rate,
        cpu_s: cpu,
        cpu_us: per_answer(cpu * 1e6),
        kernel_us: per_answer(cost.cpu.system * 1e6),
        busy: cpu / s.elapsed_s.max(1e-9),
        client_busy: s.client_cpu_s / s.elapsed_s.max(1e-9),
        switches: per_answer(cost.switches as f64),
        core0_other: cost.other,
        p50_ms: s.latency_ms.p50,
        p99_ms: s.latency_ms.p99,
        handshakes: s.handshakes.clone(),
        kx_groups: s.kx_groups.clone(),
    }
}
