//! Keeps the bytes a client sends until its ClientHello is read, for the JA4 fingerprint:
//! rustls's `ClientHello` has no extension list, so the acceptor reads the handshake through a
//! [`Recorder`] and takes the bytes back with [`Recorder::into_parts`] as soon as the hello is
//! read. The stream that carries the connection afterwards is the bare transport again: nothing
//! is copied or checked per later read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes kept: a ClientHello of 16 KiB in up to four records. Past it the recorder
/// stops keeping (the fingerprint is then not computed) and reads go on unchanged.
pub const MAX_RECORDED: usize = 16 * 1024 + 4 * 5;

/// A transport that keeps what is read from it, up to [`MAX_RECORDED`] bytes.
pub struct Recorder<IO> {
    io: IO,
    seen: Vec<u8>,
    overflowed: bool,
}

impl<IO> Recorder<IO> {
    /// Wraps `io`.
    pub fn new(io: IO) -> Recorder<IO> {
        Recorder {
            io,
            seen: Vec::new(),
            overflowed: false,
        }
    }

    /// The transport, and the bytes read from it (`None` if more than [`MAX_RECORDED`] came).
    pub fn into_parts(self) -> (IO, Option<Vec<u8>>) {
        let seen = (!self.overflowed).then_some(self.seen);
        (self.io, seen)
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Recorder<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if !this.overflowed {
            let new = &buf.filled()[before..];
            if this.seen.len() + new.len() > MAX_RECORDED {
                this.overflowed = true;
                this.seen = Vec::new();
            } else {
                this.seen.extend_from_slice(new);
            }
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Recorder<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;

    use super::*;

    #[tokio::test]
    async fn keeps_what_was_read_and_hands_the_transport_back() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut r = Recorder::new(server);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"hello")
            .await
            .unwrap();
        let mut buf = [0u8; 3];
        r.read_exact(&mut buf).await.unwrap();
        let (mut io, seen) = r.into_parts();
        assert_eq!(seen.as_deref(), Some(&b"hel"[..]));
        // What was not read is still the transport's.
        let mut rest = [0u8; 2];
        io.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"lo");
    }

    #[tokio::test]
    async fn past_the_bound_it_keeps_nothing_and_reads_on() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let sent = vec![7u8; MAX_RECORDED + 1];
        tokio::io::AsyncWriteExt::write_all(&mut client, &sent)
            .await
            .unwrap();
        let mut r = Recorder::new(server);
        let mut got = vec![0u8; sent.len()];
        r.read_exact(&mut got).await.unwrap();
        assert_eq!(got, sent);
        assert_eq!(r.into_parts().1, None);
    }
}
