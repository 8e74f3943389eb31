//! Test-only: what code logs, captured as plain text, so a test can read what an operator
//! would.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tracing::Level;
use tracing::subscriber::DefaultGuard;

/// What is logged on this thread at `level` or above while `f` runs, as plain text.
pub(crate) fn logged<T>(level: Level, f: impl FnOnce() -> T) -> (T, String) {
    let (guard, lines) = capture(level);
    let out = f();
    drop(guard);
    (out, text(&lines))
}

/// [`logged`] for a future, polled on this thread.
pub(crate) async fn logged_async<T>(level: Level, f: impl Future<Output = T>) -> (T, String) {
    let (guard, lines) = capture(level);
    let out = f.await;
    drop(guard);
    (out, text(&lines))
}

/// Appends what is logged to a shared buffer.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A subscriber at `level` writing into the returned buffer, this thread's default until the
/// guard is dropped.
fn capture(level: Level) -> (DefaultGuard, Lines) {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (tracing::subscriber::set_default(subscriber), lines)
}

fn text(lines: &Lines) -> String {
    let bytes = lines.0.lock().unwrap_or_else(PoisonError::into_inner);
    String::from_utf8_lossy(&bytes).into_owned()
}
