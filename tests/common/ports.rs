//! Ports for peers the tests start, taken from below the kernel's ephemeral range (32768 and up
//! on Linux). A port taken from `bind(0)` and freed is in that range, and an outgoing connection
//! of a parallel test may take it as its source port before the peer meant to listen there
//! binds it; below the range only another listener can take it.

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU16, Ordering};

/// A range of ports handed out once each, in order, from a start spread by process id so that
/// two test processes at once seldom walk the same ports.
pub struct PortRange {
    next: AtomicU16,
    start: u16,
    end: u16,
}

impl PortRange {
    pub const fn new(start: u16, end: u16) -> PortRange {
        PortRange {
            next: AtomicU16::new(0),
            start,
            end,
        }
    }

    /// A port free for TCP and UDP on 127.0.0.1, never handed out before by this range.
    pub fn take(&self) -> u16 {
        let spread = (self.end - self.start) / 2;
        let first = self.start + (std::process::id() % u32::from(spread)) as u16;
        let _ = self
            .next
            .compare_exchange(0, first, Ordering::Relaxed, Ordering::Relaxed);
        loop {
            let port = self.next.fetch_add(1, Ordering::Relaxed);
            assert!(
                (self.start..self.end).contains(&port),
                "no free port left in {}..{}",
                self.start,
                self.end
            );
            if TcpListener::bind(("127.0.0.1", port)).is_ok()
                && UdpSocket::bind(("127.0.0.1", port)).is_ok()
            {
                return port;
            }
        }
    }
}
