//! What each process signal means to a serving edge: SIGTERM, SIGINT and SIGQUIT stop it
//! gracefully, SIGHUP reloads, SIGUSR1 and SIGUSR2 are logged and ignored.
//!
//! Every one of them is listened for before the edge says it is ready, so none keeps its default
//! action (for SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2: ending the process at once and losing the
//! clicks still queued). SIGPIPE needs nothing here: the Rust runtime ignores it in every binary,
//! so a peer closing its socket is an `EPIPE` on that write, never the end of the process. This
//! module only names the signal; what a reload does is [`crate::app`]'s.

use std::task::Poll;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// What a received signal asks of the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Stop gracefully: no new connections, finish requests, write every queued click.
    Stop(&'static str),
    /// Re-read what can change safely while serving (SIGHUP).
    Reload,
    /// A signal without a meaning here, received and ignored.
    Ignored(&'static str),
}

/// The signals a serving edge listens for.
pub struct Signals {
    listening: Vec<(Signal, Event)>,
}

impl Signals {
    /// Replaces the default action of every signal of [`Event`] with delivery here.
    pub fn install() -> std::io::Result<Signals> {
        let table = [
            (SignalKind::terminate(), Event::Stop("SIGTERM")),
            (SignalKind::interrupt(), Event::Stop("SIGINT")),
            (SignalKind::quit(), Event::Stop("SIGQUIT")),
            (SignalKind::hangup(), Event::Reload),
            (SignalKind::user_defined1(), Event::Ignored("SIGUSR1")),
            (SignalKind::user_defined2(), Event::Ignored("SIGUSR2")),
        ];
        let listening = table
            .into_iter()
            .map(|(kind, event)| Ok((signal(kind)?, event)))
            .collect::<std::io::Result<_>>()?;
        Ok(Signals { listening })
    }

    /// The next signal received.
    pub async fn next(&mut self) -> Event {
        std::future::poll_fn(|cx| {
            for (signal, event) in &mut self.listening {
                // `Ready(None)` only once the runtime shuts down: not a signal, keep waiting.
                if let Poll::Ready(Some(())) = signal.poll_recv(cx) {
                    return Poll::Ready(*event);
                }
            }
            Poll::Pending
        })
        .await
    }
}
