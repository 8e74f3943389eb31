//! The per-address click rate bound (`clicks.max_clicks_per_ip_per_sec`): past it a client is
//! still redirected, but its clicks are not logged (the queue counts them in
//! `clickedge_clicks_unlogged_total{reason="rate"}`). One client can then add at most that many
//! lines a second to the log, however fast it clicks, and cannot push everyone else's clicks out
//! of the capped log.
//!
//! A token bucket per address, holding one second's worth (the rate is also the burst), kept as
//! GCRA: one "theoretical arrival time" per bucket in an `AtomicU64`, so a click costs a hash,
//! a load and, when admitted, one compare-and-swap; no lock, no allocation.
//!
//! Memory is fixed whatever the number of addresses: [`SLOTS`] buckets, indexed by a hash keyed
//! at random per process (an attacker cannot aim at a victim's bucket). NOTE: two addresses that
//! land in one bucket share it, so while k addresses flood, about k / [`SLOTS`] of other clients
//! share a flooding bucket and may go unlogged too (counted, and still redirected); an exact map
//! would need memory (and locking) that grows with the flood.
//!
//! An IPv6 client is keyed by its /64, the block one subscriber gets (one host can use any
//! address in it); an IPv4-mapped IPv6 address counts as its IPv4 address.
//!
//! An RFC 8058 one-click unsubscribe is bound only when it repeats: the first one-click of a
//! link is always logged (its line is the only word of the unsubscribe the sender gets, and a
//! provider sends many from a few addresses), a repeat of one already logged counts against its
//! address's rate like any click. [`OneClicks`] remembers which links were one-clicked, in
//! fixed memory too. NOTE: a link counts as one-clicked once its line is on disk, so one-clicks
//! of it sent at once, before the first is written, all pass as firsts: a burst once per link
//! (and per restart), never a stream.

use std::hash::{BuildHasher as _, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::client;
use crate::rate::Gcra;

/// Buckets in the table: 64 Ki of 8 bytes, 512 KiB.
pub const SLOTS: usize = 1 << 16;

/// Click rate buckets for every client address, in fixed memory.
pub struct AddressRate {
    /// Per bucket, when (ns since `epoch`) its next click would conform at the steady rate.
    slots: Box<[AtomicU64]>,
    hasher: RandomState,
    /// `per_sec` a second, in bursts of up to `per_sec`.
    rate: Gcra,
    epoch: Instant,
}

impl AddressRate {
    /// Buckets admitting `per_sec` clicks a second per address, in bursts of up to `per_sec`.
    pub fn new(per_sec: NonZeroU32) -> AddressRate {
        AddressRate {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
            rate: Gcra::new(per_sec, per_sec),
            epoch: Instant::now(),
        }
    }

    /// Whether a click from `ip` now is within its address's rate (and takes its token if so).
    pub fn admit(&self, ip: IpAddr) -> bool {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.admit_at(ip, now)
    }

    /// [`AddressRate::admit`] at `now`, nanoseconds since the table was made.
    fn admit_at(&self, ip: IpAddr, now: u64) -> bool {
        let slot = &self.slots[self.slot(ip)];
        let mut tat = slot.load(Ordering::Relaxed);
        loop {
            // Refused without a write: a flood only reads its bucket.
            let Some(next) = self.rate.step(tat, now) else {
                return false;
            };
            match slot.compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(current) => tat = current,
            }
        }
    }

    fn slot(&self, ip: IpAddr) -> usize {
        let key = client::key(ip);
        // Truncating the hash is the point: its low bits pick the bucket.
        self.hasher.hash_one(key) as usize & (SLOTS - 1)
    }
}

/// The links whose one-click unsubscribe was logged, as fingerprints (a keyed hash of the link
/// token) in [`SLOTS`] slots: 512 KiB whatever the number of links. A link whose fingerprint
/// was pushed out by another's is taken as never one-clicked, so at worst a repeat is logged
/// again; two tokens with one 64-bit fingerprint are not told apart.
pub struct OneClicks {
    slots: Box<[AtomicU64]>,
    hasher: RandomState,
}

impl Default for OneClicks {
    fn default() -> OneClicks {
        OneClicks {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl OneClicks {
    /// Whether a one-click of the link with `token` was logged (and not pushed out since).
    pub fn logged(&self, token: &str) -> bool {
        let (slot, print) = self.fingerprint(token);
        self.slots[slot].load(Ordering::Relaxed) == print
    }

    /// Remembers that a one-click of the link with `token` was logged.
    pub fn log(&self, token: &str) {
        let (slot, print) = self.fingerprint(token);
        self.slots[slot].store(print, Ordering::Relaxed);
    }

    /// The slot and the (never zero: an empty slot) fingerprint of `token`.
    fn fingerprint(&self, token: &str) -> (usize, u64) {
        let hash = self.hasher.hash_one(token);
        // Truncating is the point: the low bits pick the slot (taken before the bit that keeps
        // a fingerprint from zero, or only odd slots would ever be used).
        (hash as usize & (SLOTS - 1), hash | 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn rate(per_sec: u32) -> AddressRate {
        AddressRate::new(NonZeroU32::new(per_sec).unwrap())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// An address of `candidates` whose bucket is not `other`'s (the hash is random per table).
    fn apart_from(table: &AddressRate, other: IpAddr, candidates: &[&str]) -> IpAddr {
        candidates
            .iter()
            .map(|c| ip(c))
            .find(|c| table.slot(*c) != table.slot(other))
            .expect("some candidate in another bucket")
    }

    #[test]
    fn a_burst_of_one_seconds_worth_then_the_steady_rate() {
        let r = rate(10);
        let a = ip("203.0.113.7");
        let admitted = (0..25).filter(|_| r.admit_at(a, 5 * SECOND)).count();
        assert_eq!(admitted, 10);
        // A tenth of a second later, one more token.
        assert!(r.admit_at(a, 5 * SECOND + SECOND / 10));
        assert!(!r.admit_at(a, 5 * SECOND + SECOND / 10));
        // A quiet second refills the bucket.
        let later = 7 * SECOND;
        assert_eq!((0..25).filter(|_| r.admit_at(a, later)).count(), 10);
    }

    #[test]
    fn other_addresses_keep_their_own_buckets() {
        let r = rate(1);
        let a = ip("203.0.113.7");
        let b = apart_from(&r, a, &["198.51.100.1", "198.51.100.2", "198.51.100.3"]);
        assert!(r.admit_at(a, 0));
        assert!(!r.admit_at(a, 0));
        assert!(r.admit_at(b, 0));
    }

    #[test]
    fn an_ipv6_slash_64_is_one_client_and_a_mapped_ipv4_is_its_ipv4() {
        let r = rate(1);
        assert!(r.admit_at(ip("2001:db8:1:2::1"), 0));
        assert!(!r.admit_at(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), 0));
        let other = apart_from(
            &r,
            ip("2001:db8:1:2::1"),
            &["2001:db8:1:3::1", "2001:db8:9::1"],
        );
        assert!(r.admit_at(other, 0));
        assert!(r.admit_at(ip("192.0.2.1"), 0));
        assert!(!r.admit_at(ip("::ffff:192.0.2.1"), 0));
    }

    #[test]
    fn a_one_click_is_remembered_once_logged_and_others_stay_unknown() {
        let seen = OneClicks::default();
        assert!(!seen.logged("token-a"));
        seen.log("token-a");
        assert!(seen.logged("token-a"));
        assert!(!seen.logged("token-b"));
        // Every slot is in use, even and odd.
        let slots: std::collections::HashSet<usize> = (0..1000)
            .map(|i| seen.fingerprint(&format!("token-{i}")).0 % 2)
            .collect();
        assert_eq!(slots.len(), 2);
    }

    proptest::proptest! {
        #[test]
        fn never_more_than_the_burst_plus_the_rate_over_time(
            per_sec in 1u32..50,
            mut times in proptest::collection::vec(0u64..3 * SECOND, 1..300),
        ) {
            let r = rate(per_sec);
            times.sort_unstable();
            let a = ip("203.0.113.7");
            let admitted = times.iter().filter(|t| r.admit_at(a, **t)).count() as u64;
            let span = times[times.len() - 1] - times[0];
            let bound = u64::from(per_sec) + span * u64::from(per_sec) / SECOND + 1;
            proptest::prop_assert!(admitted <= bound, "{admitted} > {bound}");
            // And the first click always passes.
            proptest::prop_assert!(admitted >= 1);
        }
    }
}
