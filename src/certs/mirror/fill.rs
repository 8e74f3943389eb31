//! The start-up copy of every stored certificate into the mirror: in the background (start-up
//! never waits for it), a page at a time (never the whole table in memory), each page one
//! transaction. Rows the store no longer holds are swept once the copy is complete.
//!
//! A row the store cannot open (its key sealed with another key, altered) is skipped and
//! counted, never stops the copy. Names not registered when their page is copied are skipped: a removal applied meanwhile is
//! not undone (a copy of an unregistered name would never be served anyway, and the next
//! start's sweep deletes it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::CertMirror;
use crate::certs::Certs;
use crate::errors::chain as error_chain;

/// Certificates read and written per page.
pub(super) const PAGE: u32 = 500;

/// Wait before trying a page again after the store or the disk failed.
const RETRY: Duration = Duration::from_secs(5);

impl Certs {
    /// Copies every stored certificate into the mirror, then sweeps what the store no longer
    /// holds; returns at once without a mirror, and when `stop` turns true.
    pub async fn fill_mirror(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let Some(mirror) = self.mirror.clone() else {
            return;
        };
        tokio::select! {
            () = self.fill(&mirror) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }

    async fn fill(&self, mirror: &CertMirror) {
        let started = Instant::now();
        let generation = loop {
            match mirror.begin_fill().await {
                Ok(generation) => break generation,
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "starting the certificate mirror's copy; trying again");
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
        let (mut after, mut copied, mut unusable, mut failing) = (None, 0, 0, false);
        loop {
            let page = match self.store.certificates_after(after.as_ref(), PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %error_chain(&e), "reading certificates for the mirror; trying again");
                    }
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            let last = page.last().map(|(name, _)| name.clone());
            let done = page.len() < PAGE as usize;
            let (mut rows, mut bad) = (Vec::with_capacity(page.len()), 0);
            for (name, cert) in page {
                match cert {
                    Ok(cert) if self.policy.is_registered(name.as_str()) => rows.push((name, cert)),
                    Ok(_) => {}
                    Err(e) => {
                        if unusable + bad == 0 {
                            tracing::warn!(domain = %name, error = %error_chain(&e), "a stored certificate is not usable: not mirrored (further ones are counted)");
                        }
                        bad += 1;
                    }
                }
            }
            let n = rows.len();
            if let Err(e) = mirror.put_all(rows).await {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(error = %error_chain(&e), "writing the certificate mirror; trying again");
                }
                tokio::time::sleep(RETRY).await;
                continue;
            }
            failing = false;
            copied += n;
            unusable += bad;
            after = last;
            if done {
                break;
            }
        }
        match mirror.sweep(generation).await {
            Ok((swept, held)) => {
                mirror.metrics.filled.set(1);
                tracing::info!(
                    copied,
                    unusable,
                    swept,
                    held,
                    seconds = started.elapsed().as_secs_f64(),
                    "certificate mirror filled"
                );
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "sweeping the certificate mirror (the next start sweeps)")
            }
        }
    }
}
