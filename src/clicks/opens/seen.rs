//! [`SeenOpens`]: the messages this node saw opened, in a fixed table of 64-bit fingerprints.
//!
//! The bound: [`SeenOpens::SLOTS`] fingerprints (8 MiB, allocated at start), in buckets of
//! four. A message
//! goes to the bucket its fingerprint names; when that bucket is full, one of its four is
//! replaced, chosen by the newcomer's fingerprint. So about a million messages are remembered,
//! and past that older ones are forgotten at random: a forgotten message's next human click
//! says `"implied_open": true` although its open was seen (an open counted twice, never one
//! lost). Saying "seen" for a message never seen needs two fingerprints to collide (one in
//! 2^64 per lookup). Lock-free: one relaxed atomic read per way, at most one write; a race
//! between two writers of one bucket costs at most a remembered message, never a wrong answer
//! but that one.
//!
//! Fingerprints are keyed by a random SipHash key per process: a sender cannot pick message
//! ids that collide. Nothing is kept across restarts or shared between nodes.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// The messages seen opened, by link domain and message id.
pub struct SeenOpens {
    slots: Box<[AtomicU64]>,
    keys: std::collections::hash_map::RandomState,
}

const WAYS: usize = 4;

impl Default for SeenOpens {
    fn default() -> Self {
        SeenOpens::with_slots(SeenOpens::SLOTS)
    }
}

impl SeenOpens {
    /// How many fingerprints the table holds: 2^20.
    pub const SLOTS: usize = 1 << 20;

    /// A table of `slots` fingerprints (rounded up to whole buckets).
    pub fn with_slots(slots: usize) -> SeenOpens {
        let slots = slots.max(WAYS).div_ceil(WAYS) * WAYS;
        SeenOpens {
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            keys: Default::default(),
        }
    }

    /// Records that `message` of `domain` was opened; true if it was not seen opened before (for
    /// [`SeenOpens::forget`] to undo should the open not be logged).
    pub fn open(&self, domain: &str, message: &str) -> bool {
        !self.test_and_set(domain, message)
    }

    /// Whether a person's click on `message` of `domain` implies an open not seen on this node:
    /// true the first time for a message never seen opened, which is then remembered as opened
    /// (so one message's clicks imply its open once).
    pub fn click_implies_open(&self, domain: &str, message: &str) -> bool {
        !self.test_and_set(domain, message)
    }

    /// Undoes a click's [`SeenOpens::click_implies_open`] (or an open's [`SeenOpens::open`])
    /// whose line could not be logged, so that the next person's click on the message says
    /// `implied_open` again.
    pub fn forget(&self, domain: &str, message: &str) {
        let (fp, ways) = self.place(domain, message);
        for way in ways {
            let _ = way.compare_exchange(fp, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// The message's fingerprint (never 0, which marks an empty slot) and its bucket.
    fn place(&self, domain: &str, message: &str) -> (u64, &[AtomicU64]) {
        let mut h = self.keys.build_hasher();
        h.write(domain.as_bytes());
        h.write_u8(0xff);
        h.write(message.as_bytes());
        let fp = h.finish().max(1);
        let buckets = self.slots.len() / WAYS;
        // Invariant: the remainder is below `buckets`, which fits in usize.
        let bucket = (fp % buckets as u64) as usize * WAYS;
        (fp, &self.slots[bucket..bucket + WAYS])
    }

    /// Whether the message was remembered; it is remembered afterwards.
    fn test_and_set(&self, domain: &str, message: &str) -> bool {
        let (fp, ways) = self.place(domain, message);
        let mut empty = None;
        for (i, way) in ways.iter().enumerate() {
            match way.load(Ordering::Relaxed) {
                v if v == fp => return true,
                0 => _ = empty.get_or_insert(i),
                _ => {}
            }
        }
        // The high bits pick the way to replace: independent of the low bits that chose the
        // bucket.
        let victim = empty.unwrap_or((fp >> 62) as usize);
        ways[victim].store(fp, Ordering::Relaxed);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_is_remembered_per_domain_and_message() {
        let seen = SeenOpens::with_slots(64);
        seen.open("links.example.com", "m1");
        assert!(!seen.click_implies_open("links.example.com", "m1"));
        assert!(seen.click_implies_open("links.example.com", "m2"));
        assert!(
            !seen.click_implies_open("links.example.com", "m2"),
            "a message's clicks imply its open once"
        );
        assert!(seen.click_implies_open("other.example.com", "m1"));
    }

    #[test]
    fn a_click_that_could_not_be_logged_gives_its_implied_open_back() {
        let seen = SeenOpens::with_slots(64);
        assert!(seen.click_implies_open("d", "m1"));
        seen.forget("d", "m1");
        assert!(
            seen.click_implies_open("d", "m1"),
            "the next click says it again"
        );
        assert!(!seen.click_implies_open("d", "m1"));
    }

    #[test]
    fn past_the_bound_old_messages_are_forgotten_and_new_ones_kept() {
        let seen = SeenOpens::with_slots(64);
        for i in 0..10_000 {
            seen.open("d", &i.to_string());
        }
        // The newest is always kept; most of the oldest were replaced.
        assert!(!seen.click_implies_open("d", "9999"));
        let forgotten = (0..100)
            .filter(|i| seen.click_implies_open("d", &i.to_string()))
            .count();
        assert!(forgotten > 90, "{forgotten} of the 100 oldest forgotten");
    }
}
