//! At start, with `tls.issuer = "acme"`: one request for the ACME directory, in the background,
//! so a CA the edge cannot reach (a typo in `acme.directory`, DNS, a firewall, a missing
//! `acme.ca_root`) is a warning when the edge starts, not a surprise at the first order. The
//! edge starts and serves either way; orders go through the ACME client, not through this.

use std::time::Duration;

use crate::config::Acme;
use crate::errors;

/// How long the probe waits for the directory.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// Fetches the directory and warns if it cannot be reached or is not an ACME directory.
pub(super) async fn acme_directory(acme: Acme) {
    match fetch(&acme).await {
        Ok(()) => tracing::debug!(directory = %acme.directory, "the ACME directory answers"),
        Err(e) => tracing::warn!(
            directory = %acme.directory,
            error = %e,
            "could not reach the CA: its ACME directory did not answer at start; certificate \
             orders fail until it does (check acme.directory, DNS, the firewall or proxy, and \
             acme.ca_root for a private CA)"
        ),
    }
}

async fn fetch(acme: &Acme) -> Result<(), String> {
    let mut client = reqwest::Client::builder().timeout(PROBE_TIMEOUT);
    if let Some(path) = &acme.ca_root {
        let pem = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: {}", path.display(), errors::chain(&e)))?;
        client = client.tls_certs_only(roots);
    }
    let client = client.build().map_err(|e| errors::chain(&e))?;
    let answer = client
        .get(&acme.directory)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| errors::chain(&e))?;
    let directory: serde_json::Value = answer.json().await.map_err(|e| errors::chain(&e))?;
    if directory.get("newOrder").is_none() {
        return Err("the answer is not an ACME directory (no newOrder)".into());
    }
    Ok(())
}
