//! Which `click_id` a judged click got, by its verdict handle, so a later revision can name it:
//! a fixed table the batcher thread fills as it encodes clicks, and the few revisions that
//! arrive before the click they name.
//!
//! Bounded both ways, allocated once: [`SLOTS`] handles are remembered (a handle's slot is the
//! handle modulo the size, so a newer click overwrites an older one), and at most [`EARLY`]
//! revisions wait for their click. Burst and decoy revisions name clicks seconds old; coverage
//! ones, clicks up to the message table's TTL (10 minutes by default) old, which [`SLOTS`]
//! covers up to some 400 clicks with a message a second on one node (4 MiB). A revision can
//! overtake its click: the rules judge the click, then the request path queues it, and a second
//! click on another connection can be judged and queue its revision in between. A revision
//! that is never resolved is given back as lost, for the batcher to count: at once when its
//! click's slot already holds a newer click (handles only grow, so it can never come), else
//! when a newer waiting revision pushes it out, or at shutdown.
//!
//! A click that is not logged (a synced click refused after its batch failed, a click dropped
//! past the memory bound) is marked so in its slot ([`Handles::unlogged`]): a revision of it is
//! lost at once, never resolved to the sequence number it was encoded under, which no line in
//! the log carries.

use crate::clicks::verdict::Revision;

/// Handles remembered.
const SLOTS: usize = 1 << 18;
/// Revisions waiting for their click.
const EARLY: usize = 64;
/// The sequence number a slot holds for a click that was not logged (no click gets it).
const UNLOGGED: u64 = u64::MAX;

pub(super) struct Handles {
    /// `(handle, seq)` per slot; handle 0 is never handed out, so it marks an empty slot.
    slots: Box<[(u64, u64)]>,
    /// Revisions whose click has not been encoded yet, oldest first.
    early: Vec<Revision>,
}

impl Handles {
    pub(super) fn new() -> Handles {
        Handles {
            slots: vec![(0, 0); SLOTS].into_boxed_slice(),
            early: Vec::with_capacity(EARLY),
        }
    }

    fn slot(handle: u64) -> usize {
        // Invariant: the remainder is below SLOTS, a usize.
        (handle % SLOTS as u64) as usize
    }

    /// The click judged under `handle` got sequence number `seq`; returns the revisions that
    /// were waiting for it.
    pub(super) fn encoded(&mut self, handle: u64, seq: u64) -> Vec<Revision> {
        self.slots[Self::slot(handle)] = (handle, seq);
        if self.early.is_empty() {
            return Vec::new();
        }
        let (ready, waiting) = std::mem::take(&mut self.early)
            .into_iter()
            .partition(|r| r.handle == handle);
        self.early = waiting;
        ready
    }

    /// The sequence number of the click `revision` names, or none yet: the revision then waits
    /// for its click, and an older waiting revision it pushes out is returned as lost. One whose
    /// click is older than what the table remembers is lost itself.
    pub(super) fn resolve(&mut self, revision: Revision) -> Result<(u64, Revision), Lost> {
        let (handle, seq) = self.slots[Self::slot(revision.handle)];
        if handle == revision.handle && handle != 0 {
            if seq == UNLOGGED {
                return Err(Lost(true));
            }
            return Ok((seq, revision));
        }
        if handle > revision.handle {
            // Handles are handed out in increasing order: the click came and was forgotten.
            return Err(Lost(true));
        }
        let lost = if self.early.len() == EARLY {
            Some(self.early.remove(0))
        } else {
            None
        };
        self.early.push(revision);
        Err(Lost(lost.is_some()))
    }

    /// The click judged under `handle` was not logged: a revision of it from now on is lost at
    /// once. Returns how many revisions waiting for it are given up (lost).
    pub(super) fn unlogged(&mut self, handle: u64) -> u64 {
        let slot = &mut self.slots[Self::slot(handle)];
        // A newer click in the slot stays: this one's revisions are lost against it anyway.
        if slot.0 <= handle {
            *slot = (handle, UNLOGGED);
        }
        let waiting = self.early.len();
        self.early.retain(|r| r.handle != handle);
        (waiting - self.early.len()) as u64
    }

    /// The revisions still waiting for their click: lost, at shutdown.
    pub(super) fn waiting(&self) -> u64 {
        self.early.len() as u64
    }
}

/// A revision is not written now; `Lost(true)` when one is given up (it, or an older waiting
/// one pushed out for it), `Lost(false)` when it waits for its click.
pub(super) struct Lost(pub(super) bool);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clicks::verdict::Class;

    fn revision(handle: u64) -> Revision {
        Revision {
            ts: std::time::UNIX_EPOCH,
            handle,
            class: Class::Machine,
            reasons: vec!["burst"],
            rules: "r",
        }
    }

    #[test]
    fn a_revision_finds_its_click_or_waits_for_it() {
        let mut h = Handles::new();
        assert!(h.encoded(1, 10).is_empty());
        assert_eq!(h.resolve(revision(1)).ok().map(|(seq, _)| seq), Some(10));
        // Overtaken: the revision of 2 comes first and is handed back when 2 is encoded.
        assert!(h.resolve(revision(2)).is_err());
        assert!(h.encoded(3, 11).is_empty());
        let ready = h.encoded(2, 12);
        assert_eq!(ready, [revision(2)]);
        // A newer click in the same slot: the old handle's click is forgotten, and its
        // revision lost at once rather than waiting for a click that came already.
        h.encoded(1 + SLOTS as u64, 13);
        assert!(matches!(h.resolve(revision(1)), Err(Lost(true))));
        assert_eq!(h.waiting(), 0);
    }

    #[test]
    fn a_click_that_was_not_logged_resolves_no_revision() {
        let mut h = Handles::new();
        // Encoded into a batch that then failed: its sequence number is on no line.
        h.encoded(1, 10);
        assert_eq!(h.unlogged(1), 0);
        assert!(matches!(h.resolve(revision(1)), Err(Lost(true))));
        // Dropped before it was encoded, with a revision that overtook it waiting.
        assert!(matches!(h.resolve(revision(2)), Err(Lost(false))));
        assert_eq!(h.unlogged(2), 1, "the waiting revision is given up");
        assert!(matches!(h.resolve(revision(2)), Err(Lost(true))));
        assert_eq!(h.waiting(), 0);
    }

    #[test]
    fn waiting_revisions_are_bounded_and_the_oldest_is_lost() {
        let mut h = Handles::new();
        for i in 0..EARLY as u64 {
            assert!(matches!(h.resolve(revision(100 + i)), Err(Lost(false))));
        }
        assert!(matches!(h.resolve(revision(1000)), Err(Lost(true))));
        assert!(h.encoded(100, 1).is_empty(), "the oldest was given up");
        assert_eq!(h.encoded(101, 2), [revision(101)]);
    }
}
