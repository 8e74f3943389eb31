//! What a line keeps of who clicked: the address in full or cut to its network
//! (`clicks.ip = "truncated"`: IPv4 /24, IPv6 /48), and the optional `"visitor"`, a keyed hash
//! that counts unique visitors without keeping who they are (`clicks.visitor`).
//!
//! A visitor is HMAC-SHA256 over the link domain, the address's /24 (IPv4) or /48 (IPv6) and
//! the user agent, under a random salt of the click's UTC day, cut to 64 bits (16 hex digits).
//! The same browser on the same network is one visitor on one domain for one day; nothing
//! links it to the next day's, or to another domain's. The salt lives in memory only, never on
//! disk nor in the store: a salt that could be read back would let anyone holding it test a
//! guessed address and user agent against old lines. So a restart starts a new salt, and each
//! node has its own: unique counts are per node and per process-day (a visitor reaching two
//! nodes, or one node across a restart, counts twice). A salt is replaced at the first click of
//! a later day and dropped by [`Visitors::expire`] within the hour after its day ends, whether
//! or not a click comes: never kept two days. A clock set back by more than a day (a host
//! restored from a snapshot) does not keep the later day's salt in use until the clock catches
//! up: the salt is replaced (and dropped by `expire`) as if its day were over.
//!
//! Applied on the request path after the verdict (which judges the full address) and before
//! the line is queued: one HMAC over a few dozen bytes, no I/O, a read lock but at the turn of a
//! day.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use aws_lc_rs::hmac;

use super::ClickEvent;
use crate::clock::Clock;
use crate::config::IpField;

/// The network an address is cut to: IPv4 its /24, IPv6 its /48 (an IPv4-mapped IPv6 address
/// as IPv4).
pub fn truncate(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[6..].fill(0);
            IpAddr::from(o)
        }
    }
}

/// A line's `"visitor"`: 16 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Visitor([u8; 16]);

impl Visitor {
    /// The digits.
    pub fn as_str(&self) -> &str {
        // Invariant: only ASCII hex digits are ever stored.
        std::str::from_utf8(&self.0).expect("hex digits")
    }
}

/// One day's salt.
struct Salt {
    /// Days since the Unix epoch, UTC.
    day: u64,
    key: hmac::Key,
}

/// The daily salts of `"visitor"`, in memory only.
pub struct Visitors {
    salt: RwLock<Option<Salt>>,
    rng: aws_lc_rs::rand::SystemRandom,
}

impl Default for Visitors {
    fn default() -> Self {
        Visitors {
            salt: RwLock::new(None),
            rng: aws_lc_rs::rand::SystemRandom::new(),
        }
    }
}

impl Salt {
    /// Whether clicks of `day` take this salt: its own day's, and the day before's (stamped
    /// before midnight, judged after); not a day before that (the clock was set back).
    fn serves(&self, day: u64) -> bool {
        self.day == day || self.day == day + 1
    }
}

fn day_of(t: SystemTime) -> u64 {
    crate::clock::unix_secs(t) / 86_400
}

impl Visitors {
    /// The visitor of a click at `ts` on `domain` from `ip` with user agent `ua`.
    pub fn visitor(&self, ts: SystemTime, domain: &str, ip: IpAddr, ua: Option<&str>) -> Visitor {
        let day = day_of(ts);
        let tag = {
            // A panic cannot happen while the lock is held (a signature or a swap), so a
            // poisoned lock still holds a whole salt.
            let salt = self.salt.read().unwrap_or_else(|p| p.into_inner());
            // A click stamped just before midnight, judged just after, takes the new day's salt.
            match &*salt {
                Some(s) if s.serves(day) => Some(sign(&s.key, domain, ip, ua)),
                _ => None,
            }
        };
        let tag = tag.unwrap_or_else(|| {
            let mut salt = self.salt.write().unwrap_or_else(|p| p.into_inner());
            let s = match &mut *salt {
                Some(s) if s.serves(day) => s,
                slot => slot.insert(Salt {
                    day,
                    key: self.new_key(),
                }),
            };
            sign(&s.key, domain, ip, ua)
        });
        let mut hex = [0u8; 16];
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in tag.as_ref()[..8].iter().enumerate() {
            hex[2 * i] = DIGITS[usize::from(b >> 4)];
            hex[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
        }
        Visitor(hex)
    }

    /// Drops the salt of a day before `now`'s (or of a day `now` would not use: the clock was
    /// set back).
    pub fn forget_before(&self, now: SystemTime) {
        let mut salt = self.salt.write().unwrap_or_else(|p| p.into_inner());
        if salt.as_ref().is_some_and(|s| !s.serves(day_of(now))) {
            *salt = None;
        }
    }

    /// Drops yesterday's salt every `every` (by `clock`) until `stop` turns true.
    pub async fn expire(
        self: Arc<Self>,
        clock: Clock,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => self.forget_before(clock.now()),
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    fn new_key(&self) -> hmac::Key {
        // NOTE: the system's random source failing is not something a click can recover from;
        // aws-lc-rs aborts rather than return weak bytes, so this never yields a guessable key.
        hmac::Key::generate(hmac::HMAC_SHA256, &self.rng).expect("random salt")
    }
}

fn sign(key: &hmac::Key, domain: &str, ip: IpAddr, ua: Option<&str>) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(domain.as_bytes());
    // The network's bytes after a family byte and the domain's end: no two inputs of different
    // fields run together.
    match truncate(ip) {
        IpAddr::V4(v4) => ctx.update(&[0, 4, v4.octets()[0], v4.octets()[1], v4.octets()[2]]),
        IpAddr::V6(v6) => {
            ctx.update(&[0, 6]);
            ctx.update(&v6.octets()[..6]);
        }
    }
    ctx.update(ua.unwrap_or_default().as_bytes());
    ctx.sign()
}

/// What every line keeps of its client: [`IpField`] and, if on, the visitor.
#[derive(Clone, Default)]
pub struct Privacy {
    ip: IpField,
    visitors: Option<Arc<Visitors>>,
}

impl Privacy {
    /// The address as `ip` says, and visitors from `visitors` if given.
    pub fn new(ip: IpField, visitors: Option<Arc<Visitors>>) -> Privacy {
        Privacy { ip, visitors }
    }

    /// Fills the event's `"visitor"` (if on) and cuts its address (if asked): after the verdict,
    /// before it is queued.
    pub fn apply(&self, event: &mut ClickEvent) {
        if let Some(v) = &self.visitors {
            event.visitor = Some(v.visitor(
                event.ts,
                event.domain.as_str(),
                event.ip,
                event.ua.as_deref(),
            ));
        }
        if self.ip == IpField::Truncated {
            event.ip = truncate(event.ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_are_cut_to_their_24_or_48() {
        assert_eq!(truncate(ip("203.0.113.77")), ip("203.0.113.0"));
        assert_eq!(truncate(ip("::ffff:203.0.113.77")), ip("203.0.113.0"));
        assert_eq!(
            truncate(ip("2001:db8:abcd:12:34:56:78:9a")),
            ip("2001:db8:abcd::")
        );
    }

    #[test]
    fn a_visitor_is_its_network_and_browser_for_one_day_on_one_domain() {
        let v = Visitors::default();
        let day = SystemTime::UNIX_EPOCH + Duration::from_secs(20_000 * 86_400);
        let ua = Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0");
        let a = v.visitor(day, "links.example.com", ip("203.0.113.7"), ua);
        assert_eq!(a.as_str().len(), 16);
        assert!(a.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        let later = day + Duration::from_secs(86_399);
        assert_eq!(
            v.visitor(later, "links.example.com", ip("203.0.113.200"), ua),
            a,
            "same /24, same day"
        );
        assert_ne!(
            v.visitor(day, "links.example.com", ip("203.0.114.7"), ua),
            a
        );
        assert_ne!(
            v.visitor(day, "links.example.com", ip("203.0.113.7"), None),
            a
        );
        assert_ne!(
            v.visitor(day, "other.example.com", ip("203.0.113.7"), ua),
            a
        );
        let next = day + Duration::from_secs(86_400);
        let b = v.visitor(next, "links.example.com", ip("203.0.113.7"), ua);
        assert_ne!(b, a, "a new salt the next day");
        // The old day's salt is gone: a late click of that day takes the new one.
        assert_eq!(
            v.visitor(day, "links.example.com", ip("203.0.113.7"), ua),
            b
        );
        let v6 = v.visitor(next, "links.example.com", ip("2001:db8:1:2::1"), ua);
        assert_eq!(
            v.visitor(next, "links.example.com", ip("2001:db8:1:ffff::9"), ua),
            v6,
            "same /48"
        );
        assert_ne!(
            v.visitor(next, "links.example.com", ip("2001:db8:2:2::1"), ua),
            v6
        );
    }

    #[test]
    fn a_past_days_salt_is_forgotten() {
        let v = Visitors::default();
        let day = SystemTime::UNIX_EPOCH + Duration::from_secs(20_000 * 86_400);
        let a = v.visitor(day, "d", ip("203.0.113.7"), None);
        v.forget_before(day + Duration::from_secs(3600));
        assert_eq!(
            v.visitor(day, "d", ip("203.0.113.7"), None),
            a,
            "same day: kept"
        );
        v.forget_before(day + Duration::from_secs(86_400));
        assert!(v.salt.read().unwrap().is_none());
        assert_ne!(v.visitor(day, "d", ip("203.0.113.7"), None), a);
    }

    #[test]
    fn a_clock_set_back_days_does_not_keep_the_later_days_salt() {
        let v = Visitors::default();
        let day = SystemTime::UNIX_EPOCH + Duration::from_secs(20_000 * 86_400);
        let a = v.visitor(day, "d", ip("203.0.113.7"), None);
        // A click stamped before midnight, judged after: today's salt.
        let eve = day - Duration::from_secs(60);
        assert_eq!(v.visitor(eve, "d", ip("203.0.113.7"), None), a);
        v.forget_before(eve);
        assert_eq!(v.visitor(day, "d", ip("203.0.113.7"), None), a, "kept");
        // Set back three days: a new salt, not the one of a day yet to come.
        let back = day - Duration::from_secs(3 * 86_400);
        let b = v.visitor(back, "d", ip("203.0.113.7"), None);
        assert_ne!(b, a);
        assert_eq!(v.visitor(back, "d", ip("203.0.113.7"), None), b);
        // The sweep drops a salt dated days ahead of the clock.
        let v = Visitors::default();
        v.visitor(day, "d", ip("203.0.113.7"), None);
        v.forget_before(back);
        assert!(v.salt.read().unwrap().is_none());
    }
}
