use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

/// A transport that records each write that reaches its socket and, like TLS, can hold
/// bytes back until the next one; its shutdown writes `<close>` as TLS writes `close_notify`.
#[derive(Default)]
struct Recorder {
    held: Vec<u8>,
    writes: Vec<Vec<u8>>,
    /// How many writes had gone out when the socket was corked.
    corked_after: std::cell::Cell<Option<usize>>,
}

impl Recorder {
    fn write_out(&mut self, more: &[u8]) {
        let mut out = std::mem::take(&mut self.held);
        out.extend_from_slice(more);
        if !out.is_empty() {
            self.writes.push(out);
        }
    }
}

impl AsyncRead for Recorder {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Recorder {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_out(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.write_out(b"");
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.write_out(b"<close>");
        Poll::Ready(Ok(()))
    }
}

impl Transport for Recorder {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }

    fn write_later(&mut self, bufs: &[io::IoSlice<'_>]) -> Option<io::Result<usize>> {
        let before = self.held.len();
        bufs.iter().for_each(|b| self.held.extend_from_slice(b));
        Some(Ok(self.held.len() - before))
    }

    fn cork(&self) -> io::Result<()> {
        self.corked_after.set(Some(self.writes.len()));
        Ok(())
    }
}

fn watched(activity: &Arc<Activity>) -> Watched<Recorder> {
    Watched {
        unread: Bytes::new(),
        inner: Recorder::default(),
        wire: Arc::default(),
        activity: activity.clone(),
        held: false,
    }
}

#[tokio::test]
async fn an_answer_on_a_connection_that_stays_goes_out_at_its_flush() {
    let activity = Arc::new(Activity::new());
    let mut io = watched(&activity);
    io.write_all(b"answer").await.unwrap();
    io.flush().await.unwrap();
    assert_eq!(io.inner.writes, [b"answer".to_vec()]);
    io.shutdown().await.unwrap();
    assert_eq!(io.inner.writes, [b"answer".to_vec(), b"<close>".to_vec()]);
    assert_eq!(
        io.inner.corked_after.get(),
        None,
        "nothing held, nothing to cork"
    );
}

#[tokio::test]
async fn the_last_answer_leaves_with_the_close_in_one_write() {
    let activity = Arc::new(Activity::new());
    activity.last_request();
    let mut io = watched(&activity);
    io.write_all(b"last ").await.unwrap();
    io.write_all(b"answer").await.unwrap();
    io.flush().await.unwrap();
    assert!(io.inner.writes.is_empty(), "{:?}", io.inner.writes);
    assert!(
        io.wire.unflushed.load(Ordering::Relaxed),
        "held bytes count as unflushed: the connection is never parked with them"
    );
    io.shutdown().await.unwrap();
    assert_eq!(io.inner.writes, [b"last answer<close>".to_vec()]);
    assert_eq!(
        io.inner.corked_after.get(),
        Some(0),
        "corked before the write the FIN is to ride in"
    );
}

#[tokio::test]
async fn held_bytes_go_out_before_a_read_should_the_connection_go_on() {
    let activity = Arc::new(Activity::new());
    activity.last_request();
    let mut io = watched(&activity);
    io.write_all(b"answer").await.unwrap();
    io.flush().await.unwrap();
    let _ = io.read(&mut [0; 16]).await.unwrap();
    assert_eq!(io.inner.writes, [b"answer".to_vec()]);
    io.write_all(b"more").await.unwrap();
    io.shutdown().await.unwrap();
    assert_eq!(
        io.inner.writes,
        [b"answer".to_vec(), b"more<close>".to_vec()]
    );
}
