//! Where the HTTPS listeners are served: on the shared runtime (the default), or with
//! `listen.https_threads` on threads of their own, each a single-threaded runtime with its own
//! sockets (`SO_REUSEPORT`). On a thread, a connection stays on it. That once cut h2's CPU per
//! click by a third on two cores, when h2 ran a task per request that the other core could
//! steal; h2's requests now run on their connection's task, and the threads measure no cheaper
//! than the shared runtime (BENCHMARKS.md).

use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use super::supervise::Supervisor;
use crate::http::serve::{self, Serving};
use crate::tls::Acceptor;

/// Serves the HTTPS listeners, bound as `bind_copies` does (a list of sockets per address, one per
/// thread): `threads` 0, on the shared runtime; else copy i of every address on thread i. The
/// tasks returned end with the accept loops, at shutdown.
pub(super) async fn serve_https(
    https: Vec<Vec<TcpListener>>,
    threads: usize,
    acceptor: &Arc<Acceptor>,
    serving: &Serving,
    connections: &TaskTracker,
    supervisor: &Supervisor,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    if threads == 0 {
        return Ok(accept_loops(
            https.into_iter().flatten(),
            acceptor,
            serving,
            supervisor,
        ));
    }
    let mut copies: Vec<_> = https.into_iter().map(Vec::into_iter).collect();
    let mut tasks = Vec::with_capacity(threads);
    for i in 0..threads {
        let listeners = copies.iter_mut().filter_map(Iterator::next).collect();
        tasks.push(on_thread(i, listeners, acceptor, serving, connections, supervisor).await?);
    }
    Ok(tasks)
}

/// Serves `listeners` (taken from the shared runtime) on thread `index`, once its runtime has
/// started. The task returned ends with the thread's accept loops; the thread keeps its runtime,
/// and the connections on it, until `connections` is closed and empty (or the process ends after
/// the grace period).
async fn on_thread(
    index: usize,
    listeners: Vec<TcpListener>,
    acceptor: &Arc<Acceptor>,
    serving: &Serving,
    connections: &TaskTracker,
    supervisor: &Supervisor,
) -> anyhow::Result<JoinHandle<()>> {
    let listeners = listeners
        .into_iter()
        .map(TcpListener::into_std)
        .collect::<std::io::Result<Vec<_>>>()
        .context("taking an HTTPS listener to its thread")?;
    let (acceptor, serving, connections) = (acceptor.clone(), serving.clone(), connections.clone());
    let supervisor = supervisor.clone();
    let (started, starting) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
    let (done, accepting) = tokio::sync::oneshot::channel::<()>();
    // The runtime is made, used and dropped on the thread: a runtime may not be dropped inside
    // another one's task, as a failed start here would otherwise do.
    std::thread::Builder::new()
        .name(format!("https-{index}"))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ =
                        started.send(Err(anyhow::Error::new(e).context("starting its runtime")));
                    return;
                }
            };
            runtime.block_on(async move {
                // Registered with this thread's runtime: its I/O driver wakes the accept loops.
                let listeners = match listeners
                    .into_iter()
                    .map(TcpListener::from_std)
                    .collect::<std::io::Result<Vec<_>>>()
                {
                    Ok(listeners) => listeners,
                    Err(e) => {
                        let _ = started
                            .send(Err(anyhow::Error::new(e).context("taking its listeners")));
                        return;
                    }
                };
                let _ = started.send(Ok(()));
                for l in accept_loops(listeners, &acceptor, &serving, &supervisor) {
                    let _ = l.await;
                }
                drop(done);
                connections.wait().await;
            });
        })
        .context("starting an HTTPS thread (listen.https_threads)")?;
    starting
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("it ended while starting")))
        .with_context(|| format!("starting HTTPS thread https-{index} (listen.https_threads)"))?;
    Ok(tokio::spawn(async move {
        let _ = accepting.await;
    }))
}

/// An accept loop per listener, spawned (supervised) on the current runtime.
fn accept_loops(
    listeners: impl IntoIterator<Item = TcpListener>,
    acceptor: &Arc<Acceptor>,
    serving: &Serving,
    supervisor: &Supervisor,
) -> Vec<JoinHandle<()>> {
    listeners
        .into_iter()
        .map(|l| {
            supervisor.spawn(
                "HTTPS accept loop",
                serve::serve_https(l, acceptor.clone(), serving.clone()),
            )
        })
        .collect()
}
