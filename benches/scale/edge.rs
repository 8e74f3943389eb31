//! The clickedge under test (its admin client, metrics and process figures), and how a phase
//! is timed on it.

use super::*;

/// clickedge with its admin client.
pub(super) struct Edge {
    pub(super) server: Server,
    pub(super) admin: Admin,
    pub(super) data: PathBuf,
}

impl Edge {
    pub(super) fn start(dir: &Path, pin: bool) -> Result<Edge, String> {
        let server = peers::clickedge(
            env!("CARGO_BIN_EXE_clickedge"),
            dir,
            pin.then_some(SERVER_CORE),
        )?;
        let data = server.data_dir.clone().ok_or("clickedge has no data dir")?;
        let token = std::fs::read_to_string(data.join("admin-token"))
            .map_err(|e| format!("reading clickedge's admin token: {e}"))?;
        let admin_addr = server.admin.ok_or("clickedge has no admin address")?;
        Ok(Edge {
            admin: Admin::new(&format!("http://{admin_addr}"), &token),
            server,
            data,
        })
    }

    pub(super) fn https(&self) -> SocketAddr {
        self.server.https
    }

    /// `/metrics`, as text.
    pub(super) async fn metrics(&self) -> Result<String, String> {
        let url = format!(
            "http://{}/metrics",
            self.server.admin.unwrap_or(self.https())
        );
        let res = reqwest::get(&url)
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        res.text().await.map_err(|e| format!("GET {url}: {e}"))
    }

    pub(super) async fn lookups(&self) -> Result<Lookups, String> {
        let text = self.metrics().await?;
        let value = |result: &str| -> Result<u64, String> {
            let key = format!("clickedge_certificate_lookups_total{{result=\"{result}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&key))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .map(|v| v as u64)
                .ok_or_else(|| format!("no {key}in clickedge's /metrics"))
        };
        Ok(Lookups {
            hit: value("hit")?,
            miss: value("miss")?,
        })
    }

    /// Fails with the tail of clickedge's log if it is no longer running.
    pub(super) fn check_alive(&mut self) -> Result<(), String> {
        if self.server.proc.alive() {
            Ok(())
        } else {
            Err(format!(
                "clickedge exited:\n{}",
                self.server.proc.log_tail()
            ))
        }
    }

    /// RSS after `settle`.
    pub(super) fn rss_settled(&self, settle: Duration) -> u64 {
        std::thread::sleep(settle);
        self.server.proc.rss_kib()
    }
}

/// Runs `f` and measures the wall time, clickedge's CPU and the client core's busy share.
pub(super) fn timed<T>(
    edge: &Edge,
    f: impl FnOnce() -> Result<T, String>,
) -> Result<(T, Timed), String> {
    let tck = procs::clock_ticks();
    let cpu0 = edge.server.proc.cpu(tck);
    let (busy0, total0) = procs::core_ticks(CLIENT_CORE);
    let t0 = Instant::now();
    let out = f()?;
    let wall_s = t0.elapsed().as_secs_f64();
    let (busy1, total1) = procs::core_ticks(CLIENT_CORE);
    Ok((
        out,
        Timed {
            wall_s,
            server_cpu_s: (edge.server.proc.cpu(tck) - cpu0).total(),
            client_busy: (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64,
        },
    ))
}
