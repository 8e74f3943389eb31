//! Prometheus metrics, registered into a registry handed to [`Metrics::new`] (no global registry).
//!
//! Labels are small fixed sets (outcomes, kinds); never a domain name, so a million domains cost
//! nothing here.

use prometheus::{
    GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Every metric the edge exports.
#[derive(Clone)]
pub struct Metrics {
    /// Edge HTTP requests by outcome.
    pub requests: IntCounterVec,
    /// Clicks written to the sink.
    pub clicks_logged: IntCounter,
    /// Clicks acknowledged (302) but not written: queue full, sink failing past its memory
    /// bound, or still failing at shutdown. Never silent.
    pub clicks_dropped: IntCounter,
    /// Synced clicks refused (queue full, sink failing, writer stopped): answered 503, never
    /// acknowledged, so not drops.
    pub clicks_rejected: IntCounter,
    /// Clicks redirected but deliberately not logged, `reason="rate"` of
    /// `clickedge_clicks_unlogged_total`: past `clicks.max_clicks_per_ip_per_sec`. Resolved once
    /// here so the request path does no label lookup.
    pub clicks_unlogged_rate: IntCounter,
    /// Clicks waiting between the request path and the writer.
    pub clicks_queued: IntGauge,
    /// Click sink write failures (every failed attempt, retries included).
    pub click_sink_errors: IntCounter,
    /// 1 while the click sink writes, 0 while it is failing and holding clicks in memory.
    pub click_sink_healthy: IntGauge,
    /// Bytes of encoded clicks held in memory because the sink is failing.
    pub click_sink_held_bytes: IntGauge,
    /// `fdatasync` calls on the click log: one per group-committed batch of synced clicks.
    pub click_fsyncs: IntCounter,
    /// Torn click-log tails found at startup and moved to a `.torn` file.
    pub click_log_torn: IntCounter,
    /// Clicks whose `User-Agent` or `Referer` was cut to its bound, by `field` (`ua`, `referer`).
    pub click_fields_truncated: IntCounterVec,
    /// Clicks judged, by `verdict` (`human`, `machine`, `unknown`).
    pub clicks_by_verdict: IntCounterVec,
    /// Opens recorded (queued for the click log), by `class` (`direct`, `apple_mpp`, `gmail_proxy`, `yahoo_proxy`, `scanner`).
    pub opens: IntCounterVec,
    /// Revision lines written: earlier clicks revised by a later judgement (a burst, coverage, a
    /// decoy hit).
    pub verdict_revisions: IntCounter,
    /// Revisions that could not be written (queue full, revised click unknown to the writer).
    pub verdict_revisions_lost: IntCounter,
    /// Entries (message and source) in the verdict's message table.
    pub message_table_entries: IntGauge,
    /// 1 while another live node heartbeats under this node's `cluster.node_id`.
    pub cluster_node_id_shared: IntGauge,
    /// Message table entries evicted by its memory cap.
    pub message_table_evictions: IntCounter,
    /// Bytes of the click files, the open one included: what `clicks.max_total_bytes` caps.
    pub click_log_bytes: IntGauge,
    /// Click files deleted, oldest first, to keep the log under `clicks.max_total_bytes`.
    pub click_log_deleted_files: IntCounter,
    /// Bytes of those files.
    pub click_log_deleted_bytes: IntCounter,
    /// TLS handshakes by outcome.
    pub handshakes: IntCounterVec,
    /// Certificates issued, by issuer.
    pub certs_issued: IntCounterVec,
    /// Certificate issuances that failed, by issuer.
    pub certs_failed: IntCounterVec,
    /// Seconds from the start of an issuance to the certificate being usable.
    pub issuance_seconds: Histogram,
    /// Handshakes whose certificate came from the in-memory cache, `result="hit"` of
    /// `clickedge_certificate_lookups_total`. Resolved once here so the handshake path does no
    /// label lookup.
    pub cert_lookup_hits: IntCounter,
    /// Handshakes that had to wait for a flight (store load or issuance), `result="miss"`.
    pub cert_lookup_misses: IntCounter,
    /// `tls.ask` requests, by what they found out: `result="allowed"`, `denied`, `error`, and
    /// `limited` for the ones not made because the rate limit was reached. Resolved once, like
    /// the lookups.
    pub ask_requests: AskRequests,
    /// Handshakes whose `tls.ask` answer needed no request of their own (remembered, or shared
    /// with a concurrent handshake for the same name).
    pub ask_cache_hits: IntCounter,
    /// Certificates in the store.
    pub certs_held: IntGauge,
    /// Unix time of the soonest expiry of a certificate still valid; absent while none is.
    pub certs_soonest_expiry: SoonestExpiry,
    /// Certificates still valid that expire within 7 days.
    pub certs_expiring: IntGauge,
    /// Certificates expired and not replaced.
    pub certs_expired: IntGauge,
    /// Names whose last renewal attempt on this node failed (`clickedge_certificate_renewals_failing`).
    pub renewals_failing: IntGauge,
    /// Client connections open on the edge listeners.
    pub connections_open: IntGauge,
    /// Idle HTTP/1.1 connections held without hyper's buffers (see `http::serve::park`).
    pub connections_parked: IntGauge,
    /// Connections closed at once because their address had too many open.
    pub connections_refused: IntCounter,
    /// Connections refused by the PROXY protocol check, by reason (see
    /// `http::serve::ProxyProtocol`).
    pub proxy_refused: IntCounterVec,
    /// Renewals by outcome (`ok`, `failed`).
    pub renewals: IntCounterVec,
    /// ACME orders by challenge type and event (`started`, `succeeded`, `failed`).
    pub acme_orders: IntCounterVec,
    /// Orders taken from the account's order budget by this node, whatever the CA then said.
    pub acme_budget_taken: IntCounter,
    /// Seconds from a click request handed to the handler until its `302` is written.
    pub redirect_seconds: Histogram,
}

/// `clickedge_certificates_soonest_expiry_timestamp_seconds`: present only while a certificate
/// is held, so an alert on "expires within N days" cannot fire on an edge with none (a `0` would
/// read as expired since 1970).
#[derive(Clone)]
pub struct SoonestExpiry(GaugeVec);

impl SoonestExpiry {
    /// Sets the soonest expiry (Unix seconds), or removes the series when none is held.
    pub fn set(&self, unix_secs: Option<f64>) {
        match unix_secs {
            Some(at) => self.0.with_label_values(&[] as &[&str]).set(at),
            None => self.0.reset(),
        }
    }
}

/// The counters of `clickedge_ask_requests_total`, one per `result`.
#[derive(Clone)]
pub struct AskRequests {
    /// A direct `200`: the name is approved.
    pub allowed: IntCounter,
    /// Any other answer (redirects included): the name is refused.
    pub denied: IntCounter,
    /// No answer, or a 5xx: the name is refused for a short while.
    pub error: IntCounter,
    /// Not asked: the rate limit was reached, the name is refused.
    pub limited: IntCounter,
}

/// Outcomes of an edge request, the values of the `outcome` label.
pub mod outcome {
    /// 302 to the destination.
    pub const REDIRECT: &str = "redirect";
    /// 308 from plain HTTP to HTTPS.
    pub const UPGRADE: &str = "upgrade";
    /// A token that did not open.
    pub const BAD_TOKEN: &str = "bad_token";
    /// Any other 404.
    pub const NOT_FOUND: &str = "not_found";
    /// Wrong method on a link path.
    pub const METHOD: &str = "method_not_allowed";
    /// `Host` does not match SNI.
    pub const MISDIRECTED: &str = "misdirected";
    /// An ACME HTTP-01 challenge answered.
    pub const ACME_CHALLENGE: &str = "acme_challenge";
    /// 503: a synced click could not be recorded.
    pub const UNAVAILABLE: &str = "unavailable";
    /// An open pixel answered (whatever its token).
    pub const PIXEL: &str = "pixel";
    /// An action link's confirm page (`GET`/`HEAD` of a link with role unsubscribe or confirm).
    pub const CONFIRM_PAGE: &str = "confirm_page";
    /// An action link confirmed (`POST`): 303 to the destination (200 to an RFC 8058 one-click).
    pub const CONFIRMED: &str = "confirmed";
    /// An action link's `POST` whose body was refused (too large, too slow, broken off).
    pub const BODY_REFUSED: &str = "body_refused";
    /// 400: an HTTP/1.1 request without `Host`.
    pub const BAD_REQUEST: &str = "bad_request";
}

/// The values of `outcome` in `clickedge_requests_total`.
const REQUEST_OUTCOMES: [&str; 13] = [
    outcome::REDIRECT,
    outcome::UPGRADE,
    outcome::BAD_TOKEN,
    outcome::NOT_FOUND,
    outcome::METHOD,
    outcome::MISDIRECTED,
    outcome::ACME_CHALLENGE,
    outcome::UNAVAILABLE,
    outcome::PIXEL,
    outcome::CONFIRM_PAGE,
    outcome::CONFIRMED,
    outcome::BODY_REFUSED,
    outcome::BAD_REQUEST,
];

/// The values of `outcome` in `clickedge_tls_handshakes_total` (`tls::HandshakeError::outcome`).
const HANDSHAKE_OUTCOMES: [&str; 8] = [
    "ok",
    "unrecognized_name",
    "bad_sni",
    "no_certificate",
    "timeout",
    "failed",
    "acme_challenge",
    "acme_no_challenge",
];

/// The values of `reason` in `clickedge_proxy_protocol_refused_total`
/// (`http::serve::proxy::ProxyError::reason`).
pub(crate) const PROXY_REFUSALS: [&str; 5] = ["untrusted", "missing", "timeout", "malformed", "io"];

/// The values of `issuer` (`issuer::Issuer::kind`).
const ISSUERS: [&str; 2] = ["local", "acme"];

/// Buckets of the redirect latency: a redirect takes tens of microseconds of server time, so
/// the resolution is there, up to the seconds a stalled writer or a synced click may take.
const REDIRECT_BUCKETS: [f64; 15] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.5, 2.5, 5.0,
];

/// `clickedge_build_info{version} 1`, and the standard `process_*` series of this process (RSS,
/// CPU seconds, open and maximum file descriptors, threads, start time), read from `/proc` at
/// each scrape.
fn register_process(registry: &Registry) -> prometheus::Result<()> {
    let build = IntGauge::with_opts(
        Opts::new(
            "clickedge_build_info",
            "Always 1; the version of the running binary in the label",
        )
        .const_label("version", env!("CARGO_PKG_VERSION")),
    )?;
    build.set(1);
    registry.register(Box::new(build))?;
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))
}

impl Metrics {
    /// Creates the metrics and registers them into `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Metrics> {
        let cert_lookups = IntCounterVec::new(
            Opts::new(
                "clickedge_certificate_lookups_total",
                "Handshake certificate lookups: hit (in-memory cache) or miss (store load or issuance)",
            ),
            &["result"],
        )?;
        let clicks_unlogged = IntCounterVec::new(
            Opts::new(
                "clickedge_clicks_unlogged_total",
                "Clicks redirected but deliberately not logged, by reason (rate: past \
                 clicks.max_clicks_per_ip_per_sec)",
            ),
            &["reason"],
        )?;
        let ask_requests = IntCounterVec::new(
            Opts::new(
                "clickedge_ask_requests_total",
                "tls.ask requests by result: allowed, denied, error, or limited (not made)",
            ),
            &["result"],
        )?;
        let m = Metrics {
            requests: IntCounterVec::new(
                Opts::new("clickedge_requests_total", "Edge HTTP requests by outcome"),
                &["outcome"],
            )?,
            clicks_logged: IntCounter::new(
                "clickedge_clicks_logged_total",
                "Clicks written to the click sink",
            )?,
            clicks_dropped: IntCounter::new(
                "clickedge_clicks_dropped_total",
                "Clicks acknowledged but not written: queue full or sink failure",
            )?,
            clicks_rejected: IntCounter::new(
                "clickedge_clicks_rejected_total",
                "Synced clicks refused (503) because they could not be made durable",
            )?,
            clicks_unlogged_rate: clicks_unlogged.with_label_values(&["rate"]),
            clicks_queued: IntGauge::new(
                "clickedge_clicks_queued",
                "Clicks waiting to be written",
            )?,
            click_sink_errors: IntCounter::new(
                "clickedge_click_sink_errors_total",
                "Click sink write failures, retries included",
            )?,
            click_sink_healthy: IntGauge::new(
                "clickedge_click_sink_healthy",
                "1 while the click sink writes, 0 while it fails and holds clicks in memory",
            )?,
            click_sink_held_bytes: IntGauge::new(
                "clickedge_click_sink_held_bytes",
                "Bytes of clicks held in memory while the click sink fails",
            )?,
            click_fsyncs: IntCounter::new(
                "clickedge_click_fsyncs_total",
                "fdatasync calls for synced clicks (one per synced batch)",
            )?,
            click_log_torn: IntCounter::new(
                "clickedge_click_log_torn_total",
                "Torn click log tails found at startup and quarantined",
            )?,
            click_fields_truncated: IntCounterVec::new(
                Opts::new(
                    "clickedge_click_fields_truncated_total",
                    "Clicks whose User-Agent or Referer was cut to its bound in the click line",
                ),
                &["field"],
            )?,
            clicks_by_verdict: IntCounterVec::new(
                Opts::new(
                    "clickedge_clicks_by_verdict_total",
                    "Click lines written, by verdict (human, machine, unknown); a click dropped or refused is not counted",
                ),
                &["verdict"],
            )?,
            opens: IntCounterVec::new(
                Opts::new(
                    "clickedge_opens_total",
                    "Opens recorded (queued for the click log), by who fetched the pixel (direct, apple_mpp, gmail_proxy, yahoo_proxy, scanner)",
                ),
                &["class"],
            )?,
            verdict_revisions: IntCounter::new(
                "clickedge_verdict_revisions_total",
                "Revision lines written: earlier clicks revised by a later judgement (burst, coverage, decoy)",
            )?,
            verdict_revisions_lost: IntCounter::new(
                "clickedge_verdict_revisions_lost_total",
                "Revisions not written: the queue was full, or the revised click was not logged or is too old for the writer to name",
            )?,
            cluster_node_id_shared: IntGauge::new(
                "clickedge_cluster_node_id_shared",
                "1 while another live node heartbeats under this node's cluster.node_id (click ids collide)",
            )?,
            message_table_entries: IntGauge::new(
                "clickedge_message_table_entries",
                "Entries (message and source) in the verdict's message table",
            )?,
            message_table_evictions: IntCounter::new(
                "clickedge_message_table_evictions_total",
                "Message table entries evicted by clicks.message_table_bytes",
            )?,
            click_log_bytes: IntGauge::new(
                "clickedge_click_log_bytes",
                "Bytes of the click files, the open one included (capped by clicks.max_total_bytes)",
            )?,
            click_log_deleted_files: IntCounter::new(
                "clickedge_click_log_deleted_files_total",
                "Oldest click files deleted to keep the log under clicks.max_total_bytes",
            )?,
            click_log_deleted_bytes: IntCounter::new(
                "clickedge_click_log_deleted_bytes_total",
                "Bytes of click files deleted to keep the log under clicks.max_total_bytes",
            )?,
            handshakes: IntCounterVec::new(
                Opts::new(
                    "clickedge_tls_handshakes_total",
                    "TLS handshakes by outcome",
                ),
                &["outcome"],
            )?,
            certs_issued: IntCounterVec::new(
                Opts::new("clickedge_certificates_issued_total", "Certificates issued"),
                &["issuer"],
            )?,
            certs_failed: IntCounterVec::new(
                Opts::new(
                    "clickedge_certificates_failed_total",
                    "Certificate issuances that failed",
                ),
                &["issuer"],
            )?,
            issuance_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "clickedge_certificate_issuance_seconds",
                    "Time to obtain a certificate",
                )
                // The built-in CA in milliseconds; an ACME order in seconds to minutes, up to
                // `acme.order_timeout`; a renewal waiting for the order budget up to
                // `acme.order_window` (3 h by default).
                .buckets(vec![
                    0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 180.0,
                    600.0, 1800.0, 3600.0, 10800.0,
                ]),
            )?,
            cert_lookup_hits: cert_lookups.with_label_values(&["hit"]),
            cert_lookup_misses: cert_lookups.with_label_values(&["miss"]),
            ask_requests: AskRequests {
                allowed: ask_requests.with_label_values(&["allowed"]),
                denied: ask_requests.with_label_values(&["denied"]),
                error: ask_requests.with_label_values(&["error"]),
                limited: ask_requests.with_label_values(&["limited"]),
            },
            ask_cache_hits: IntCounter::new(
                "clickedge_ask_cache_hits_total",
                "tls.ask answers given without a request of their own (remembered or shared)",
            )?,
            certs_held: IntGauge::new("clickedge_certificates_held", "Certificates in the store")?,
            certs_soonest_expiry: SoonestExpiry(GaugeVec::new(
                Opts::new(
                    "clickedge_certificates_soonest_expiry_timestamp_seconds",
                    "Unix time of the soonest expiry of a certificate still valid; absent while none is",
                ),
                &[],
            )?),
            certs_expiring: IntGauge::new(
                "clickedge_certificates_expiring",
                "Certificates still valid that expire within 7 days",
            )?,
            certs_expired: IntGauge::new(
                "clickedge_certificates_expired",
                "Certificates expired and not replaced (their domain's renewal keeps failing)",
            )?,
            renewals_failing: IntGauge::new(
                "clickedge_certificate_renewals_failing",
                "Names whose last renewal attempt on this node failed (their current certificate keeps serving until a retry succeeds)",
            )?,
            connections_open: IntGauge::new(
                "clickedge_connections_open",
                "Client connections open on the edge listeners",
            )?,
            connections_parked: IntGauge::new(
                "clickedge_connections_parked",
                "Idle HTTP/1.1 connections held open without their HTTP buffers",
            )?,
            connections_refused: IntCounter::new(
                "clickedge_connections_refused_total",
                "Connections refused: too many from one address",
            )?,
            proxy_refused: IntCounterVec::new(
                Opts::new(
                    "clickedge_proxy_protocol_refused_total",
                    "Connections refused by the PROXY protocol check (listen.proxy_protocol), by \
                     reason: untrusted, missing, timeout, malformed, io",
                ),
                &["reason"],
            )?,
            renewals: IntCounterVec::new(
                Opts::new(
                    "clickedge_certificate_renewals_total",
                    "Renewals by outcome",
                ),
                &["outcome"],
            )?,
            acme_orders: IntCounterVec::new(
                Opts::new(
                    "clickedge_acme_orders_total",
                    "ACME orders by challenge type and event (started, succeeded, failed)",
                ),
                &["challenge", "event"],
            )?,
            acme_budget_taken: IntCounter::new(
                "clickedge_acme_order_budget_taken_total",
                "Orders taken from the account's order budget by this node (a new order the CA \
                 refused or never answered included)",
            )?,
            redirect_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "clickedge_redirect_duration_seconds",
                    "Seconds from a click request handed to the handler until its 302 is written",
                )
                .buckets(REDIRECT_BUCKETS.to_vec()),
            )?,
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.certs_expiring.clone()))?;
        registry.register(Box::new(m.certs_expired.clone()))?;
        registry.register(Box::new(m.renewals_failing.clone()))?;
        registry.register(Box::new(m.connections_open.clone()))?;
        registry.register(Box::new(m.connections_parked.clone()))?;
        registry.register(Box::new(m.connections_refused.clone()))?;
        registry.register(Box::new(m.proxy_refused.clone()))?;
        registry.register(Box::new(m.renewals.clone()))?;
        registry.register(Box::new(m.acme_orders.clone()))?;
        registry.register(Box::new(m.acme_budget_taken.clone()))?;
        registry.register(Box::new(m.clicks_logged.clone()))?;
        registry.register(Box::new(m.clicks_dropped.clone()))?;
        registry.register(Box::new(m.clicks_queued.clone()))?;
        registry.register(Box::new(m.clicks_rejected.clone()))?;
        registry.register(Box::new(clicks_unlogged))?;
        registry.register(Box::new(m.click_sink_errors.clone()))?;
        registry.register(Box::new(m.click_sink_healthy.clone()))?;
        registry.register(Box::new(m.click_sink_held_bytes.clone()))?;
        registry.register(Box::new(m.click_fsyncs.clone()))?;
        registry.register(Box::new(m.click_log_torn.clone()))?;
        registry.register(Box::new(m.click_fields_truncated.clone()))?;
        registry.register(Box::new(m.clicks_by_verdict.clone()))?;
        for verdict in ["human", "machine", "unknown"] {
            m.clicks_by_verdict.with_label_values(&[verdict]);
        }
        registry.register(Box::new(m.opens.clone()))?;
        for class in crate::clicks::opens::OpenClass::ALL {
            m.opens.with_label_values(&[class.as_str()]);
        }
        registry.register(Box::new(m.verdict_revisions.clone()))?;
        registry.register(Box::new(m.verdict_revisions_lost.clone()))?;
        registry.register(Box::new(m.message_table_entries.clone()))?;
        registry.register(Box::new(m.cluster_node_id_shared.clone()))?;
        registry.register(Box::new(m.message_table_evictions.clone()))?;
        registry.register(Box::new(m.click_log_bytes.clone()))?;
        registry.register(Box::new(m.click_log_deleted_files.clone()))?;
        registry.register(Box::new(m.click_log_deleted_bytes.clone()))?;
        registry.register(Box::new(m.handshakes.clone()))?;
        registry.register(Box::new(m.certs_issued.clone()))?;
        registry.register(Box::new(m.certs_failed.clone()))?;
        registry.register(Box::new(m.issuance_seconds.clone()))?;
        registry.register(Box::new(cert_lookups))?;
        registry.register(Box::new(ask_requests))?;
        registry.register(Box::new(m.ask_cache_hits.clone()))?;
        registry.register(Box::new(m.certs_held.clone()))?;
        registry.register(Box::new(m.certs_soonest_expiry.0.clone()))?;
        registry.register(Box::new(m.redirect_seconds.clone()))?;
        m.precreate_labels();
        register_process(registry)?;
        Ok(m)
    }

    /// Every labelled series exists from the start, at zero: a rate over a series that appears
    /// only with its first event is blind to that event, and "absent" alerts misfire.
    fn precreate_labels(&self) {
        for o in REQUEST_OUTCOMES {
            self.requests.with_label_values(&[o]);
        }
        for o in HANDSHAKE_OUTCOMES {
            self.handshakes.with_label_values(&[o]);
        }
        for reason in PROXY_REFUSALS {
            self.proxy_refused.with_label_values(&[reason]);
        }
        for issuer in ISSUERS {
            self.certs_issued.with_label_values(&[issuer]);
            self.certs_failed.with_label_values(&[issuer]);
        }
        for o in ["ok", "failed"] {
            self.renewals.with_label_values(&[o]);
        }
        for field in ["ua", "referer"] {
            self.click_fields_truncated.with_label_values(&[field]);
        }
        for challenge in ["http-01", "tls-alpn-01", "none"] {
            for event in ["started", "succeeded", "failed"] {
                self.acme_orders.with_label_values(&[challenge, event]);
            }
        }
    }

    /// Metrics registered into a private registry (tests, benches).
    pub fn unregistered() -> Metrics {
        // Invariant: a fresh registry has no names to collide with.
        Metrics::new(&Registry::new()).expect("fresh registry")
    }
}
