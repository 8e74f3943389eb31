//! What a run reports: counts, rates, latency quantiles and the client's own CPU, as JSON and
//! as text.

use super::*;

/// Latency quantiles in milliseconds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Quantiles {
    fn of(h: &Histogram) -> Quantiles {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Quantiles {
            p50: ms(h.quantile(0.50)),
            p90: ms(h.quantile(0.90)),
            p99: ms(h.quantile(0.99)),
            p999: ms(h.quantile(0.999)),
            max: ms(h.quantile(1.0)),
            mean: ms(h.mean()),
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// `new-conn`, `keep-alive` or `hold`.
    pub mode: String,
    /// `1.1` or `2`.
    pub http: String,
    /// Key share offered.
    pub kx: String,
    /// The fixed rate asked for, if any.
    pub target_rate: Option<f64>,
    /// Seconds from the start to the last answer (hold mode: to the end of holding).
    pub elapsed_s: f64,
    /// Requests completed or failed.
    pub requests: u64,
    /// Requests answered with the expected status.
    pub ok: u64,
    /// Answers by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// The first message of each kind of failure.
    pub error_samples: BTreeMap<String, String>,
    /// Handshakes by kind (`full`, `full+hello-retry`, `resumed`).
    pub handshakes: BTreeMap<String, u64>,
    /// Handshakes by negotiated key exchange group and cipher suite.
    pub kx_groups: BTreeMap<String, u64>,
    /// Expected answers per second of the run.
    pub rate: f64,
    /// From the intended send time to the end of the answer.
    pub latency_ms: Quantiles,
    /// From the actual send to the end of the answer.
    pub service_ms: Quantiles,
    /// Connections held open (hold mode).
    pub held: u64,
    /// CPU time of this process (utime + stime) over the run, seconds: near `elapsed_s` means
    /// the load generator, not the server, was the limit.
    pub client_cpu_s: f64,
}

impl Summary {
    /// `active`: until the last answer (hold mode: until all were open), for the rate.
    pub(super) fn new(
        args: &LoadArgs,
        s: Stats,
        elapsed: Duration,
        active: Duration,
        held: u64,
    ) -> Summary {
        let requests = s.statuses.values().sum::<u64>() + s.errors.values().sum::<u64>();
        let name = |v: &dyn erased::Named| v.name();
        let active = active.as_secs_f64();
        Summary {
            mode: name(&args.mode),
            http: name(&args.http),
            kx: name(&args.kx),
            target_rate: args.rate,
            elapsed_s: elapsed.as_secs_f64(),
            requests,
            ok: s.ok,
            statuses: s.statuses,
            errors: s
                .errors
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), *v))
                .collect(),
            error_samples: s
                .samples
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                .collect(),
            handshakes: s
                .handshakes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            kx_groups: s.groups,
            rate: if active > 0.0 {
                s.ok as f64 / active
            } else {
                0.0
            },
            latency_ms: Quantiles::of(&s.latency),
            service_ms: Quantiles::of(&s.service),
            held,
            client_cpu_s: own_cpu_seconds(),
        }
    }

    /// Failed requests plus answers with another status than expected.
    pub fn bad(&self) -> u64 {
        self.requests - self.ok
    }

    /// The summary for people.
    pub fn text(&self) -> String {
        let q = |q: &Quantiles| {
            format!(
                "p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3} ms",
                q.p50, q.p90, q.p99, q.p999, q.max, q.mean
            )
        };
        let map = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "none".to_owned()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let statuses: BTreeMap<String, u64> = self
            .statuses
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let mut out = format!(
            "mode {} http/{} kx {}{}\n\
             requests {} in {:.2} s: {} ok ({:.0}/s)\n\
             statuses: {}\n\
             errors: {}\n\
             handshakes: {}; negotiated: {}\n\
             latency (from intended send): {}\n\
             service time (from actual send): {}\n",
            self.mode,
            self.http,
            self.kx,
            self.target_rate
                .map_or(String::new(), |r| format!(" at {r}/s")),
            self.requests,
            self.elapsed_s,
            self.ok,
            self.rate,
            map(&statuses),
            map(&self.errors),
            map(&self.handshakes),
            map(&self.kx_groups),
            q(&self.latency_ms),
            q(&self.service_ms),
        );
        if self.mode == "hold" {
            out.push_str(&format!("held: {} connections\n", self.held));
        }
        out.push_str(&format!(
            "load generator CPU: {:.2} s ({:.0}% of one core)\n",
            self.client_cpu_s,
            100.0 * self.client_cpu_s / self.elapsed_s.max(1e-9)
        ));
        for (k, v) in &self.error_samples {
            out.push_str(&format!("first {k} error: {v}\n"));
        }
        out
    }
}
