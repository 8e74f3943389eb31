//! The edge's long-lived tasks (the listeners' accept loops, certificate maintenance, change
//! propagation, the periodic checks, the click shipper): one that ends in a panic (a bug) stops
//! the edge, cleanly and with exit status 1, for its service manager to start it again. Left
//! alone, the edge would serve on without renewals, heartbeats, a listener or shipping, its
//! health answering as if nothing were wrong.
//!
//! A connection's own task is not supervised: a request that makes the edge panic ends its
//! connection only, and never lets a client stop the edge.

use std::future::Future;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Spawns supervised tasks, and tells which one ended in a panic first.
#[derive(Clone)]
pub(super) struct Supervisor {
    failed: watch::Sender<Option<&'static str>>,
}

impl Supervisor {
    pub(super) fn new() -> Supervisor {
        Supervisor {
            failed: watch::Sender::new(None),
        }
    }

    /// Spawns `task` on the current runtime as `name` (what the error line and the exit say).
    /// The handle ends when the task does, panic or not.
    pub(super) fn spawn<F>(&self, name: &'static str, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let task = tokio::spawn(task);
        let failed = self.failed.clone();
        tokio::spawn(async move {
            if let Err(e) = task.await
                && e.is_panic()
            {
                tracing::error!(
                    task = name,
                    "the {name} task panicked: stopping the edge (exit status 1) for its service \
                     manager to start it again"
                );
                failed.send_if_modified(|first| {
                    let none_yet = first.is_none();
                    first.get_or_insert(name);
                    none_yet
                });
            }
        })
    }

    /// The first task that ended in a panic, once one has.
    pub(super) async fn failed(&self) -> &'static str {
        let mut failed = self.failed.subscribe();
        let Ok(name) = failed.wait_for(Option::is_some).await else {
            // The sender lives in `self`: never closed while this waits.
            return std::future::pending().await;
        };
        name.unwrap_or_default()
    }

    /// The first task that ended in a panic so far, if any.
    pub(super) fn failed_now(&self) -> Option<&'static str> {
        *self.failed.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task that panics is named, the first of two; one that ends without a panic is not.
    #[tokio::test]
    async fn the_first_task_to_panic_is_named() {
        let supervisor = Supervisor::new();
        supervisor.spawn("quiet", async {}).await.unwrap();
        assert_eq!(supervisor.failed_now(), None);
        supervisor
            .spawn("renewals", async { panic!("a bug") })
            .await
            .unwrap();
        supervisor
            .spawn("shipper", async { panic!("another") })
            .await
            .unwrap();
        assert_eq!(supervisor.failed().await, "renewals");
        assert_eq!(supervisor.failed_now(), Some("renewals"));
    }
}
