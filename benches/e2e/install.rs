//! The reference servers, nginx and Caddy: installed when missing (as root), or how to.

use super::*;

/// Whether this process runs as root (for `apt-get`).
pub(super) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|v| v.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}

/// Installs nginx and Caddy if missing (as root), or says how; returns the servers to run.
pub(super) fn ensure_peers(opts: &Opts) -> Vec<&'static str> {
    let wanted: Vec<&'static str> = ["clickedge", "nginx", "caddy"]
        .into_iter()
        .filter(|s| opts.servers.iter().any(|w| w == s))
        .collect();
    let missing = |s: &str| {
        s != "clickedge"
            && procs::installed(s).is_none()
            && procs::installed(&format!("/usr/sbin/{s}")).is_none()
    };
    if wanted.iter().any(|s| missing(s)) {
        let cmd = format!("apt-get install -y {}", peers::PEER_PACKAGES);
        if is_root() && !opts.no_install {
            eprintln!("e2e: installing the reference servers: apt-get update && {cmd}");
            let ok = std::process::Command::new("apt-get")
                .args(["update", "-qq"])
                .status()
                .is_ok_and(|s| s.success())
                && std::process::Command::new("apt-get")
                    .args(["install", "-y", "-qq", "nginx-light", "caddy"])
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .status()
                    .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("e2e: installing failed; the missing servers' columns are skipped");
            }
        } else {
            eprintln!(
                "e2e: nginx and/or Caddy are missing: run `sudo apt-get update && sudo {cmd}` \
                 (note: on a systemd machine the packages also start their services on port 80); \
                 their columns are skipped"
            );
        }
    }
    wanted.into_iter().filter(|s| !missing(s)).collect()
}
