//! The end-to-end bench's measurements and its one table (its rows, [`rows`], and how it
//! prints): per server and workload, the median of the rounds with min–max, and clickedge's
//! ratio to nginx and to Caddy from the same run; then the [`notes`] under it.

use std::collections::BTreeMap;

/// One load run against one server.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    /// `clickedge`, `nginx`, `caddy`.
    pub server: &'static str,
    /// Workload key.
    pub workload: &'static str,
    /// Round number, from 0.
    pub round: usize,
    /// Answers with the expected status.
    pub ok: u64,
    /// Failed requests and other statuses.
    pub bad: u64,
    /// `ok` per second of the run.
    pub rate: f64,
    /// Server CPU (utime + stime, whole process tree) over the run, seconds.
    pub cpu_s: f64,
    /// Server CPU per expected answer, microseconds.
    pub cpu_us: f64,
    /// The part of `cpu_us` spent in the kernel (`stime`).
    pub kernel_us: f64,
    /// Server CPU over the run's wall time: 1.0 is one core saturated.
    pub busy: f64,
    /// The load generator's CPU over the run's wall time.
    pub client_busy: f64,
    /// The server's context switches per expected answer (its threads sleeping and woken, or
    /// preempted).
    pub switches: f64,
    /// Core 0's busy share not spent by the server (other processes not niced, interrupts):
    /// noise.
    pub core0_other: f64,
    /// Latency quantiles from the intended send time, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Handshakes by kind (`resumed` must be absent).
    pub handshakes: BTreeMap<String, u64>,
    /// Handshakes by key exchange group.
    pub kx_groups: BTreeMap<String, u64>,
}

/// Per-server figures measured once (not per round).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Once {
    /// RSS after the load runs, KiB.
    pub rss_after_kib: u64,
    /// RSS growth per 10 000 idle TLS connections, KiB (none if not measured).
    pub idle_rss_per_10k_kib: Option<f64>,
    /// Connections actually held for that measurement.
    pub idle_held: u64,
}

/// How one table row is read from the samples.
pub struct Row {
    /// Label, may mention the rate.
    pub label: String,
    /// Workload key.
    pub workload: &'static str,
    /// The value of a sample.
    pub value: fn(&Sample) -> f64,
    /// Decimals shown.
    pub decimals: usize,
    /// Show clickedge's ratio to the peers.
    pub ratio: bool,
}

/// The median of the finite values, the two middle ones averaged; `None` without any.
pub fn median(v: Vec<f64>) -> Option<f64> {
    median_min_max(v).map(|(median, ..)| median)
}

fn median_min_max(mut v: Vec<f64>) -> Option<(f64, f64, f64)> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((median, v[0], v[n - 1]))
}

fn cell(m: Option<(f64, f64, f64)>, decimals: usize) -> String {
    match m {
        None => "—".into(),
        Some((med, lo, hi)) if (hi - lo).abs() < f64::EPSILON => format!("{med:.decimals$}"),
        Some((med, lo, hi)) => format!("{med:.decimals$} ({lo:.decimals$}–{hi:.decimals$})"),
    }
}

fn ratio(a: Option<(f64, f64, f64)>, b: Option<(f64, f64, f64)>) -> String {
    match (a, b) {
        (Some((a, ..)), Some((b, ..))) if b != 0.0 => format!("×{:.2}", a / b),
        _ => "—".into(),
    }
}

/// Renders the table as Markdown. `servers` in column order; the ratios are clickedge's
/// median over nginx's and Caddy's.
pub fn table(
    servers: &[&'static str],
    rows: &[Row],
    samples: &[Sample],
    once: &BTreeMap<&'static str, Once>,
) -> String {
    let mut header = vec!["".to_owned()];
    header.extend(servers.iter().map(|s| (*s).to_owned()));
    let peers: Vec<&str> = servers
        .iter()
        .copied()
        .filter(|s| *s != "clickedge")
        .collect();
    let with_ratios = servers.contains(&"clickedge");
    if with_ratios {
        header.extend(peers.iter().map(|p| format!("clickedge / {p}")));
    }
    let mut lines: Vec<Vec<String>> = Vec::new();
    let stat = |server: &str, row: &Row| {
        median_min_max(
            samples
                .iter()
                .filter(|s| s.server == server && s.workload == row.workload)
                .map(row.value)
                .collect(),
        )
    };
    for row in rows {
        let mut line = vec![row.label.clone()];
        for s in servers {
            line.push(cell(stat(s, row), row.decimals));
        }
        if with_ratios {
            for p in &peers {
                line.push(if row.ratio {
                    ratio(stat("clickedge", row), stat(p, row))
                } else {
                    String::new()
                });
            }
        }
        lines.push(line);
    }
    let once_row = |label: &str, f: &dyn Fn(&Once) -> Option<f64>| {
        let mut line = vec![label.to_owned()];
        let val = |s: &str| once.get(s).and_then(f).map(|v| (v, v, v));
        for s in servers {
            line.push(cell(val(s), 1));
        }
        if with_ratios {
            for p in &peers {
                line.push(ratio(val("clickedge"), val(p)));
            }
        }
        line
    };
    lines.push(once_row("RSS after the runs, MiB", &|o| {
        (o.rss_after_kib > 0).then(|| o.rss_after_kib as f64 / 1024.0)
    }));
    lines.push(once_row(
        "RSS per 10 000 idle TLS connections (h2), MiB",
        &|o| o.idle_rss_per_10k_kib.map(|k| k / 1024.0),
    ));
    let bad = |server: &str| -> u64 {
        samples
            .iter()
            .filter(|s| s.server == server)
            .map(|s| s.bad)
            .sum()
    };
    let mut line = vec!["failed or non-302 requests, all runs".to_owned()];
    line.extend(servers.iter().map(|s| bad(s).to_string()));
    if with_ratios {
        line.extend(peers.iter().map(|_| String::new()));
    }
    lines.push(line);

    let mut out = String::new();
    let render = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
    out.push_str(&render(&header));
    out.push_str(&render(
        &header
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { "---".into() } else { "---:".into() })
            .collect::<Vec<_>>(),
    ));
    for l in &lines {
        out.push_str(&render(l));
    }
    out
}

/// The notes printed under the table: a server that held fewer than `idle` idle connections,
/// other work on the server's core, and what limited each flat-out run (`flat_out` tells a
/// flat-out workload's key) unless every one saturated the server.
pub fn notes(
    servers: &[&str],
    samples: &[Sample],
    once: &BTreeMap<&str, Once>,
    idle: u64,
    flat_out: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut notes = Vec::new();
    for s in servers {
        if let Some(o) = once.get(s)
            && o.idle_held > 0
            && o.idle_held < idle
        {
            notes.push(format!(
                "note: {s} held only {} of {idle} idle connections",
                o.idle_held
            ));
        }
    }
    let worst = samples.iter().map(|s| s.core0_other).fold(0.0, f64::max);
    if worst > 0.05 {
        notes.push(format!(
            "note: core 0 was up to {:.0}% busy with work other than the server (not counting niced background jobs) during some runs (shared machine): absolute figures are noisy, ratios less so",
            worst * 100.0
        ));
    }
    let mut limits: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for s in samples.iter().filter(|s| flat_out(s.workload)) {
        let limit = if s.busy >= 0.9 {
            "the server's core (saturated: clicks/s is the server's)"
        } else if s.client_busy >= 0.9 {
            "the load generator's core"
        } else if s.core0_other >= 0.1 {
            "other work sharing the server's core"
        } else {
            "neither core full (requests in flight, or other work on the client's core)"
        };
        limits.entry(limit).or_default().push(format!(
            "{} {} r{}",
            s.server,
            s.workload,
            s.round + 1
        ));
    }
    if !limits.keys().all(|k| k.starts_with("the server's")) {
        notes.push(
            "note: what limited the flat-out runs (µs per click stays valid whatever the limit; clicks/s does not):"
                .into(),
        );
        for (limit, runs) in &limits {
            notes.push(format!("  {limit}: {}", runs.join(", ")));
        }
    }
    notes
}

/// The table's rows, in order: CPU per click, latency, throughput and their sub-rows. `rate`:
/// the fixed-rate run's; `near_saturation`: the near-saturation run's share of each server's
/// flat-out rate (0: no such run, no rows).
pub fn rows(rate: f64, near_saturation: f64) -> Vec<Row> {
    let row = |label: String, workload, value: fn(&Sample) -> f64, decimals| Row {
        ratio: !label.contains("busy") && !label.contains("switches"),
        label,
        workload,
        value,
        decimals,
    };
    // The busy shares of both cores under a throughput row: ratios make no sense for them.
    let busy = |workload| {
        [
            row(
                "  server core busy %".into(),
                workload,
                |s| s.busy * 100.0,
                0,
            ),
            row(
                "  load generator core busy %".into(),
                workload,
                |s| s.client_busy * 100.0,
                0,
            ),
        ]
    };
    let mut rows: Vec<Row> = [
        row(
            "server CPU µs per new-connection click, X25519".into(),
            "new-x25519",
            |s| s.cpu_us,
            1,
        ),
        // The kernel's share (`stime`): the system calls, and TCP's work for the segments each
        // click sends and receives, including their delivery over loopback; most of a
        // keep-alive HTTP/1.1 click, for every server.
        row(
            "  of which in the kernel (stime)".into(),
            "new-x25519",
            |s| s.kernel_us,
            1,
        ),
        // A server that outruns the load generator sleeps and is woken again; its CPU per
        // click pays for that, a saturated one's does not. No ratio: nginx's are near zero.
        row(
            "  server context switches per click".into(),
            "new-x25519",
            |s| s.switches,
            2,
        ),
        row(
            "server CPU µs per new-connection click, X25519MLKEM768 offered".into(),
            "new-pq",
            |s| s.cpu_us,
            1,
        ),
        row(
            "  server context switches per click".into(),
            "new-pq",
            |s| s.switches,
            2,
        ),
        row(
            format!("server CPU µs per new-connection click at {rate}/s"),
            "new-rate",
            |s| s.cpu_us,
            1,
        ),
        row(
            "server CPU µs per keep-alive click, HTTP/1.1".into(),
            "ka-h1",
            |s| s.cpu_us,
            2,
        ),
        row(
            "  of which in the kernel (stime)".into(),
            "ka-h1",
            |s| s.kernel_us,
            2,
        ),
        row(
            "server CPU µs per keep-alive click, h2".into(),
            "ka-h2",
            |s| s.cpu_us,
            2,
        ),
        row(
            "  of which in the kernel (stime)".into(),
            "ka-h2",
            |s| s.kernel_us,
            2,
        ),
        row(
            format!("latency p50 ms, new connections at {rate}/s"),
            "new-rate",
            |s| s.p50_ms,
            2,
        ),
        row(
            format!("latency p99 ms, new connections at {rate}/s"),
            "new-rate",
            |s| s.p99_ms,
            2,
        ),
        row(
            "new-connection clicks/s, flat out, 128 in flight (X25519)".into(),
            "new-x25519",
            |s| s.rate,
            0,
        ),
    ]
    .into_iter()
    .chain(busy("new-x25519"))
    .chain([
        row(
            "  clicks/s per server core (10⁶ / µs per click)".into(),
            "new-x25519",
            |s| 1e6 / s.cpu_us,
            0,
        ),
        row(
            "new-connection clicks/s, flat out (X25519MLKEM768)".into(),
            "new-pq",
            |s| s.rate,
            0,
        ),
    ])
    .chain(busy("new-pq"))
    .chain([row(
        "keep-alive clicks/s, HTTP/1.1, 256 connections".into(),
        "ka-h1",
        |s| s.rate,
        0,
    )])
    .chain(busy("ka-h1"))
    .chain([row(
        "keep-alive clicks/s, h2, 8 connections × 32 streams".into(),
        "ka-h2",
        |s| s.rate,
        0,
    )])
    .chain(busy("ka-h2"))
    .collect();
    if near_saturation > 0.0 {
        // After the fixed-rate rows, before the flat-out ones.
        let at = rows
            .iter()
            .position(|r| r.workload == "new-x25519" && r.label.contains("clicks/s"))
            .unwrap_or(rows.len());
        rows.splice(
            at..at,
            [
                row(
                    format!(
                        "latency p50 ms, new connections at {:.0}% of the server's flat-out rate",
                        near_saturation * 100.0
                    ),
                    "new-near-sat",
                    |s| s.p50_ms,
                    2,
                ),
                row(
                    format!(
                        "latency p99 ms, new connections at {:.0}% of the server's flat-out rate",
                        near_saturation * 100.0
                    ),
                    "new-near-sat",
                    |s| s.p99_ms,
                    2,
                ),
                row(
                    "  clicks/s answered (the rate offered: that fraction of each server's own)"
                        .into(),
                    "new-near-sat",
                    |s| s.rate,
                    0,
                ),
            ]
            .into_iter()
            .chain(busy("new-near-sat")),
        );
    }
    rows
}
