//! h2 connections whose requests run on the connection's own task.
//!
//! hyper's h2 server hands each request (an h2 stream) to its executor as a future of its own.
//! With tokio's executor that is a task per request: spawned, scheduled, often stolen by the
//! other worker, and waking the connection's task from there once its answer is ready, which
//! the connection then writes. An edge's request is short (a token opened, a click queued, a
//! 302), so here the connection's task runs its requests itself: the executor hands each one
//! to [`Streams`], which polls them beside the connection. No task per request, no wake-up
//! across threads; a connection's requests share its task as they share its socket.
//!
//! A request that waits (a synced click, a POST body) waits with its own waker, so the others
//! and the connection go on meanwhile. A request that panicked ends its connection, as it does
//! on HTTP/1.1 (where hyper polls the request in the connection's task too); with a task each,
//! only that stream would have been reset. A connection is done once hyper's connection has ended
//! and every request it handed over has finished (hyper itself ends a request whose stream was
//! reset); at shutdown the edge's wait for its connections is therefore a wait for their
//! requests too.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use hyper::server::conn::http2;
use hyper_util::rt::TokioTimer;

use super::conn::Closable;
use crate::config::Limits;
use crate::sync::lock;

/// A request's future, as hyper hands it over.
type Request = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The h2 settings from `[limits]`: the builder is made per connection, around the executor
/// that hands that connection's requests to its [`Streams`].
#[derive(Debug, Clone, Copy)]
pub(super) struct H2 {
    max_concurrent_streams: u32,
    max_header_list_size: u32,
    keep_alive_interval: std::time::Duration,
    keep_alive_timeout: std::time::Duration,
}

impl H2 {
    /// The stream and header limits, and keep-alive PINGs.
    pub(super) fn new(limits: &Limits) -> H2 {
        H2 {
            max_concurrent_streams: limits.h2_max_concurrent_streams,
            max_header_list_size: u32::try_from(limits.max_header_bytes.get()).unwrap_or(u32::MAX),
            keep_alive_interval: limits.h2_keepalive_interval,
            keep_alive_timeout: limits.h2_keepalive_timeout,
        }
    }

    /// Serves `io` as an h2 connection whose requests run on the task that polls the result.
    pub(super) fn serve<I, S, B>(
        &self,
        io: I,
        service: S,
    ) -> Streams<http2::Connection<I, S, Spawner>>
    where
        http2::Connection<I, S, Spawner>: Closable,
        <http2::Connection<I, S, Spawner> as Closable>::Error: Unpin,
        S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        I: hyper::rt::Read + hyper::rt::Write + Unpin,
        B: hyper::body::Body + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        Spawner: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
    {
        let spawner = Spawner::default();
        let mut builder = http2::Builder::new(spawner.clone());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.max_concurrent_streams)
            .max_header_list_size(self.max_header_list_size)
            .keep_alive_interval(self.keep_alive_interval)
            .keep_alive_timeout(self.keep_alive_timeout);
        Streams {
            conn: Box::pin(builder.serve_connection(io, service)),
            spawned: spawner.0,
            running: FuturesUnordered::new(),
            ended: None,
        }
    }
}

/// The executor hyper's h2 connection is given: it keeps each request for the connection's
/// [`Streams`] to run.
#[derive(Clone, Default)]
pub(super) struct Spawner(Arc<Mutex<Vec<Request>>>);

impl<F> hyper::rt::Executor<F> for Spawner
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, request: F) {
        lock(&self.0).push(Box::pin(request));
    }
}

/// An h2 connection with the requests it started: polled as one future (see the module's
/// documentation).
pub(super) struct Streams<C: Closable> {
    conn: Pin<Box<C>>,
    /// Requests hyper has handed over since the last poll.
    spawned: Arc<Mutex<Vec<Request>>>,
    running: FuturesUnordered<Request>,
    /// How hyper's connection ended, kept while requests it started still run.
    ended: Option<Result<(), C::Error>>,
}

impl<C> Future for Streams<C>
where
    C: Closable,
    C::Error: Unpin,
{
    type Output = Result<(), C::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.ended.is_none()
            && let Poll::Ready(ended) = this.conn.as_mut().poll(cx)
        {
            this.ended = Some(ended);
        }
        // A request can hand over work of its own when polled (hyper's task for an upgraded
        // stream): taken in and polled until none is left, never left waiting for a wake-up.
        loop {
            for request in lock(&this.spawned).drain(..) {
                this.running.push(request);
            }
            // A request that finishes hands its answer to the connection, which wakes this task
            // to write it.
            while let Poll::Ready(Some(())) = this.running.poll_next_unpin(cx) {}
            if lock(&this.spawned).is_empty() {
                break;
            }
        }
        if this.running.is_empty()
            && let Some(ended) = this.ended.take()
        {
            return Poll::Ready(ended);
        }
        Poll::Pending
    }
}

impl<C> Closable for Streams<C>
where
    C: Closable,
    C::Error: Unpin,
{
    type Error = C::Error;

    /// Asks hyper's connection to close (GOAWAY); requests already started still finish.
    fn close(self: Pin<&mut Self>) {
        self.get_mut().conn.as_mut().close();
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicBool, Ordering};

    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::sync::{Barrier, oneshot};

    use super::*;

    fn h2() -> H2 {
        H2::new(&Limits::default())
    }

    /// An h2 client on one end of an in-memory pipe, `server` serving the other.
    async fn client_and<F>(
        server: impl FnOnce(TokioIo<tokio::io::DuplexStream>) -> F,
    ) -> (
        hyper::client::conn::http2::SendRequest<String>,
        tokio::task::JoinHandle<F::Output>,
    )
    where
        F: Future + Send + 'static,
        F::Output: Send,
    {
        let (client, served) = tokio::io::duplex(64 * 1024);
        let serving = tokio::spawn(server(TokioIo::new(served)));
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
                .await
                .unwrap();
        tokio::spawn(conn);
        (sender, serving)
    }

    fn get() -> Request<String> {
        Request::get("https://links.example.com/")
            .body(String::new())
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connections_requests_run_at_once_on_its_own_task() {
        const REQUESTS: usize = 8;
        let all_in = Arc::new(Barrier::new(REQUESTS));
        let ran_on = Arc::new(Mutex::new(Vec::new()));
        let service = {
            let ran_on = ran_on.clone();
            service_fn(move |_req| {
                let (all_in, ran_on) = (all_in.clone(), ran_on.clone());
                async move {
                    // Answered only once every request is in flight: they run concurrently.
                    all_in.wait().await;
                    ran_on.lock().unwrap().push(tokio::task::try_id());
                    Ok::<_, Infallible>(Response::new(String::from("ok")))
                }
            })
        };
        let (sender, serving) = client_and(|io| async move {
            let task = tokio::task::id();
            (task, h2().serve(io, service).await)
        })
        .await;
        let requests: Vec<_> = (0..REQUESTS)
            .map(|_| {
                let mut sender = sender.clone();
                tokio::spawn(async move { sender.send_request(get()).await })
            })
            .collect();
        for request in requests {
            assert_eq!(request.await.unwrap().unwrap().status(), 200);
        }
        drop(sender);
        let (task, ended) = serving.await.unwrap();
        ended.unwrap();
        assert_eq!(*ran_on.lock().unwrap(), vec![Some(task); REQUESTS]);
    }

    /// A connection that hands `first` to its executor when first polled, and ends.
    struct Handing {
        spawner: Spawner,
        first: Option<super::Request>,
    }

    impl Future for Handing {
        type Output = Result<(), std::io::Error>;

        fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
            if let Some(first) = self.first.take() {
                hyper::rt::Executor::execute(&self.spawner, first);
            }
            Poll::Ready(Ok(()))
        }
    }

    impl Closable for Handing {
        type Error = std::io::Error;
        fn close(self: Pin<&mut Self>) {}
    }

    #[test]
    fn work_a_request_hands_over_runs_in_the_same_poll() {
        let spawner = Spawner::default();
        let ran = Arc::new(AtomicBool::new(false));
        let second = {
            let ran = ran.clone();
            async move { ran.store(true, Ordering::SeqCst) }
        };
        let first: super::Request = {
            let spawner = spawner.clone();
            Box::pin(async move { hyper::rt::Executor::execute(&spawner, second) })
        };
        let mut streams = Streams {
            conn: Box::pin(Handing {
                spawner: spawner.clone(),
                first: Some(first),
            }),
            spawned: spawner.0.clone(),
            running: FuturesUnordered::new(),
            ended: None,
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut streams).poll(&mut cx).is_ready());
        assert!(
            ran.load(Ordering::SeqCst),
            "ended with work handed over unrun"
        );
    }

    #[tokio::test]
    async fn a_closed_connection_finishes_its_request_in_flight_then_ends() {
        let (go, went) = oneshot::channel::<()>();
        let went = Arc::new(Mutex::new(Some(went)));
        let (started, has_started) = oneshot::channel::<()>();
        let started = Arc::new(Mutex::new(Some(started)));
        let finished = Arc::new(AtomicBool::new(false));
        let service = {
            let finished = finished.clone();
            service_fn(move |_req| {
                let went = went.lock().unwrap().take().expect("one request");
                let started = started.lock().unwrap().take().expect("one request");
                let finished = finished.clone();
                async move {
                    started.send(()).unwrap();
                    went.await.unwrap();
                    finished.store(true, Ordering::SeqCst);
                    Ok::<_, Infallible>(Response::new(String::from("late")))
                }
            })
        };
        let (mut sender, serving) = client_and(|io| async move {
            let mut conn = std::pin::pin!(h2().serve(io, service));
            tokio::select! {
                _ = conn.as_mut() => panic!("ended before its request"),
                _ = has_started => {}
            }
            conn.as_mut().close();
            conn.await
        })
        .await;
        let request = tokio::spawn(async move { sender.send_request(get()).await });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!serving.is_finished(), "ended with a request in flight");
        go.send(()).unwrap();
        let res = request.await.unwrap().unwrap();
        assert_eq!(res.status(), 200);
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), serving);
        ended
            .await
            .expect("ends once its request is answered")
            .unwrap()
            .unwrap();
        assert!(finished.load(Ordering::SeqCst));
    }
}
