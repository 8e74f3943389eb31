//! Where the HTTPS listeners are served: on the shared runtime (the default), or with
//! `listen.https_threads` on threads of their own, each a single-threaded runtime with its own
//! sockets (`SO_REUSEPORT`). On a thread, a connection and every task it spawns (h2 runs one
//! per request) stay on it: no task moves to the other core and wakes its connection from
//! there, which on two cores cost h2 about a third more CPU per click (BENCHMARKS.md).

use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::http::serve::{self, Serving};
use crate::tls::Acceptor;

/// Serves the HTTPS listeners, bound as `bind_copies` does (a list of sockets per address, one per
/// thread): `threads` 0, on the shared runtime; else copy i of every address on thread i. The
/// tasks returned end with the accept loops, at shutdown.
pub(super) fn serve_https(
    https: Vec<Vec<TcpListener>>,
    threads: usize,
    acceptor: &Arc<Acceptor>,
    serving: &Serving,
    connections: &TaskTracker,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    if threads == 0 {
        let loops = https.into_iter().flatten().map(|listener| {
            tokio::spawn(serve::serve_https(
                listener,
                acceptor.clone(),
                serving.clone(),
            ))
        });
        return Ok(loops.collect());
    }
    let mut copies: Vec<_> = https.into_iter().map(Vec::into_iter).collect();
    (0..threads)
        .map(|i| {
            let listeners = copies.iter_mut().filter_map(Iterator::next).collect();
            on_thread(
                i,
                listeners,
                acceptor.clone(),
                serving.clone(),
                connections.clone(),
            )
        })
        .collect()
}

/// Serves `listeners` (taken from the shared runtime) on thread `index`. The task returned ends
/// with the thread's accept loops; the thread keeps its runtime, and the connections on it,
/// until `connections` is closed and empty (or the process ends after the grace period).
fn on_thread(
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
