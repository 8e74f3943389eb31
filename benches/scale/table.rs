//! The scale bench's one table, as BENCHMARKS.md shows it.

use super::*;

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// Thousands separated by a space, as in BENCHMARKS.md.
fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

pub(super) fn print_table(p: &Params, r: &Report) {
    let per_s = |n: usize, t: &Timed| format!("{:.0}/s", n as f64 / t.wall_s.max(1e-9));
    let cpu_us = |n: u64, t: &Timed| format!("{:.0}", t.server_cpu_s * 1e6 / n.max(1) as f64);
    let (n, h) = (p.domains, p.hot);
    let mut rows: Vec<(String, String)> = vec![
        (
            format!(
                "register {} domains (admin API, {ADMIN_CONCURRENCY} in flight)",
                count(n as u64)
            ),
            format!("{:.1} s, {}", r.register.wall_s, per_s(n, &r.register)),
        ),
        (
            format!(
                "issue {} certificates, one handshake each, {} in flight",
                count(r.issued),
                p.concurrency
            ),
            format!(
                "{:.1} s, {}, {} µs server CPU each",
                r.issue.wall_s,
                per_s(n, &r.issue),
                cpu_us(r.issued, &r.issue)
            ),
        ),
        (
            format!("RSS after issuing (all {} in memory)", count(n as u64)),
            format!("{} MiB", mib(r.rss_issued_kib)),
        ),
        (
            format!("mint {} links (admin API, 8 in flight)", count(h as u64)),
            format!("{:.1} s, {}", r.mint.wall_s, per_s(h, &r.mint)),
        ),
        (
            "data dir on disk (store and WAL)".into(),
            format!("{} MiB", mib(r.store_bytes / 1024)),
        ),
        (
            format!(
                "restart with {} domains: start to /healthz",
                count(n as u64)
            ),
            format!("{:.2} s", r.restart_s),
        ),
        (
            "RSS at rest after the restart (cache empty)".into(),
            format!("{} MiB", mib(r.rss_rest_kib)),
        ),
        (
            format!("list all {} domains (GET /v1/domains)", count(n as u64)),
            format!(
                "{:.2} s, {:.0} ms server CPU, {} MiB of JSON",
                r.list.wall_s,
                r.list.server_cpu_s * 1e3,
                mib(r.list_bytes as u64 / 1024)
            ),
        ),
        (
            format!(
                "first click on each of {} hot domains (cold: store loads)",
                count(h as u64)
            ),
            format!(
                "{:.1} s, {}, {} µs server CPU each",
                r.first_pass.wall_s,
                per_s(h, &r.first_pass),
                cpu_us(h as u64, &r.first_pass)
            ),
        ),
        (
            "  certificate lookups hit / miss".into(),
            format!(
                "{} / {}",
                count(r.first_pass_lookups.hit),
                count(r.first_pass_lookups.miss)
            ),
        ),
    ];
    if let Some(s) = &r.run_summary {
        rows.extend([
            (
                format!(
                    "new-connection clicks over {} hot domains, {:.0} s, {} in flight",
                    count(h as u64),
                    p.duration.as_secs_f64(),
                    p.concurrency
                ),
                format!(
                    "{} clicks, {:.0}/s, {} µs server CPU each",
                    count(s.ok),
                    s.rate,
                    cpu_us(s.ok, &r.run)
                ),
            ),
            (
                "  server core busy / client core busy".into(),
                format!(
                    "{:.0}% / {:.0}%",
                    100.0 * r.run.server_cpu_s / r.run.wall_s.max(1e-9),
                    100.0 * r.run.client_busy
                ),
            ),
            (
                "  latency p50 / p99".into(),
                format!("{:.2} / {:.2} ms", s.latency_ms.p50, s.latency_ms.p99),
            ),
            (
                "  certificate lookups hit / miss (hit rate)".into(),
                format!(
                    "{} / {} ({:.2}%)",
                    count(r.run_lookups.hit),
                    count(r.run_lookups.miss),
                    100.0 * r.run_lookups.rate()
                ),
            ),
        ]);
        let since = Lookups {
            hit: r.first_pass_lookups.hit + r.run_lookups.hit,
            miss: r.first_pass_lookups.miss + r.run_lookups.miss,
        };
        rows.push((
            "  hit rate since the restart (first clicks included)".into(),
            format!("{:.2}%", 100.0 * since.rate()),
        ));
    }
    rows.push((
        format!(
            "RSS with the {} hot certificates in memory",
            count(h as u64)
        ),
        format!(
            "{} MiB (+{} MiB over rest)",
            mib(r.rss_hot_kib),
            mib(r.rss_hot_kib.saturating_sub(r.rss_rest_kib))
        ),
    ));
    if let Some((t, l, rss)) = &r.touch {
        let more = n.saturating_sub(h).max(1) as f64;
        rows.extend([
            (
                format!("one handshake to each of {} domains", count(n as u64)),
                format!(
                    "{:.1} s, {}, lookups hit / miss {} / {}",
                    t.wall_s,
                    per_s(n, t),
                    count(l.hit),
                    count(l.miss)
                ),
            ),
            (
                format!("RSS with all {} certificates in memory", count(n as u64)),
                format!("{} MiB", mib(*rss)),
            ),
            (
                "  memory per cached certificate".into(),
                format!("{:.1} KiB", rss.saturating_sub(r.rss_hot_kib) as f64 / more),
            ),
        ]);
    }
    rows.extend([
        (
            "failed or unexpected answers, all phases".into(),
            count(r.failures),
        ),
        (
            "clicks answered 302 / lines in the click log".into(),
            format!(
                "{} / {} ({}), clicks_dropped_total {}",
                count(r.clicks_sent),
                count(r.clicks_logged),
                if r.clicks_sent == r.clicks_logged {
                    "every click logged"
                } else {
                    "MISMATCH"
                },
                r.dropped
            ),
        ),
    ]);
    println!();
    println!(
        "clickedge scale: {} registered domains, {} hot; server on core {SERVER_CORE}, client on core {CLIENT_CORE}{}; {}",
        count(n as u64),
        count(h as u64),
        if p.pin { "" } else { " (NOT pinned)" },
        procs::cpu_model()
    );
    println!();
    println!("| | |");
    println!("| --- | ---: |");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
    println!();
}
