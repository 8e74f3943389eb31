//! `listen.https_threads`: HTTPS served by threads of its own, each a single-threaded runtime
//! with its own sockets (`SO_REUSEPORT`), instead of the shared runtime. A connection and every
//! task it spawns (h2 runs one per request) then stay on one thread: no task moves to the other
//! core and wakes its connection from there, which on two cores cost h2 about a third more CPU
//! per click (BENCHMARKS.md).

use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::http::serve::{self, Serving};
use crate::tls::Acceptor;

/// Serves `listeners` (taken from the shared runtime) on thread `index`. The task returned ends
/// with the thread's accept loops, at shutdown; the thread keeps its runtime, and the
/// connections on it, until `connections` is closed and empty (or the process ends after the
/// grace period).
pub(super) fn serve_https(
    index: usize,
    listeners: Vec<TcpListener>,
    acceptor: Arc<Acceptor>,
    serving: Serving,
    connections: TaskTracker,
) -> anyhow::Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting an HTTPS thread's runtime (listen.https_threads)")?;
    let listeners = {
        // Registered with the thread's own runtime: its I/O driver wakes its accept loops.
        let _in = runtime.enter();
        listeners
            .into_iter()
            .map(|l| TcpListener::from_std(l.into_std()?))
            .collect::<std::io::Result<Vec<_>>>()
            .context("moving an HTTPS listener to its thread")?
    };
    let (done, accepting) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(format!("https-{index}"))
        .spawn(move || {
            runtime.block_on(async move {
                let loops: Vec<_> = listeners
                    .into_iter()
                    .map(|l| tokio::spawn(serve::serve_https(l, acceptor.clone(), serving.clone())))
                    .collect();
                for l in loops {
                    let _ = l.await;
                }
                drop(done);
                connections.wait().await;
            });
        })
        .context("starting an HTTPS thread (listen.https_threads)")?;
    Ok(tokio::spawn(async move {
        let _ = accepting.await;
    }))
}
