//! The request path as configured: the edge (token ring, click queue, certificates, policy,
//! challenges) with its verdict, privacy settings and status pages, and the TLS acceptor in
//! front of it.

use std::sync::Arc;

use anyhow::Context as _;

use super::state::State;
use crate::clicks::ClickQueue;
use crate::clicks::privacy::{Privacy, Visitors};
use crate::clicks::verdict::Rules;
use crate::clicks::verdict::networks::SharedCatalogue;
use crate::clock::Clock;
use crate::config::Config;
use crate::domains::Domains;
use crate::http::Edge;
use crate::metrics::Metrics;
use crate::status::StatusPages;
use crate::tls::{self, Acceptor};

/// The request path, built; what the background tasks and the admin API share with it.
pub(super) struct RequestPath {
    pub edge: Arc<Edge<Rules>>,
    pub acceptor: Arc<Acceptor>,
    pub domains: Arc<Domains>,
    /// `clicks.networks_file`, loaded; watched for changes in the background.
    pub catalogue: Arc<SharedCatalogue>,
    /// Visitors' daily salts, in memory only (`clicks::privacy`), with `clicks.visitor`.
    pub visitors: Option<Arc<Visitors>>,
}

impl RequestPath {
    /// Builds the request path over `state`, its clicks pushed into `clicks`.
    pub(super) fn build(
        config: &Config,
        state: &State,
        clicks: ClickQueue,
        metrics: &Metrics,
        clock: &Clock,
    ) -> anyhow::Result<RequestPath> {
        let server_config =
            tls::server_config(state.provider.clone(), config.tls.session_resumption)
                .context("building the TLS configuration")?;
        let acceptor = Arc::new(Acceptor::new(
            server_config,
            tls::challenge_config(state.provider.clone())
                .context("building the TLS-ALPN-01 configuration")?,
            state.challenges.clone(),
            state.certs.clone(),
            metrics.clone(),
            config.tls.handshake_timeout,
        ));
        let catalogue = Arc::new(
            SharedCatalogue::load(config.clicks.networks_file.as_deref())
                .context("loading clicks.networks_file")?,
        );
        let verdict = Rules::configured(
            catalogue.clone(),
            &config.clicks,
            metrics,
            // Revisions are written as lines of the click log, after the clicks they name.
            Box::new(clicks.clone()),
        );
        let domains = Arc::new(
            Domains::new(
                state.store.clone(),
                state.policy.clone(),
                state.certs.clone(),
                state.onboarding.clone(),
                clock.clone(),
            )
            .with_status_host(
                config
                    .onboarding
                    .public_url
                    .as_ref()
                    .map(|u| u.host.clone()),
            ),
        );
        let visitors = config.clicks.visitor.then(|| Arc::new(Visitors::default()));
        let mut edge = Edge::new(
            state.keys.ring(),
            clicks,
            state.certs.clone(),
            state.policy.clone(),
            state.challenges.clone(),
            config.limits.max_uri_bytes.get(),
            metrics,
        )
        .with_check_nonces(state.onboarding.nonces())
        .with_privacy(Privacy::new(config.clicks.ip, visitors.clone()));
        if let Some(url) = &config.onboarding.public_url {
            edge = edge.with_status_pages(Arc::new(StatusPages::new(
                url.host.clone(),
                state.keys.clone(),
                domains.clone(),
                clock.clone(),
            )));
        }
        Ok(RequestPath {
            edge: Arc::new(edge.with_verdict(verdict)),
            acceptor,
            domains,
            catalogue,
            visitors,
        })
    }
}
