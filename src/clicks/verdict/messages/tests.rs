use super::*;

fn table(max_bytes: u64) -> (MessageTable, Gauges) {
    let gauges = Gauges {
        entries: IntGauge::new("e", "e").unwrap(),
        evictions: IntCounter::new("v", "v").unwrap(),
    };
    let config = Config {
        ttl: Duration::from_secs(600),
        max_bytes,
        idle_expiry: true,
    };
    (MessageTable::new(config, gauges.clone()), gauges)
}

fn click(link: u32, at_ms: u64, handle: u64) -> Click<'static> {
    Click {
        domain: "links.example.com",
        message: "m1",
        ip: "203.0.113.7".parse().unwrap(),
        link: Link::Index(link),
        count: Some(5),
        role: Some(Role::Content),
        at_ms,
        handle,
    }
}

/// [`click`] on a message of `count` links.
fn counted(count: u32, link: u32, at_ms: u64, handle: u64) -> Click<'static> {
    Click {
        count: Some(count),
        ..click(link, at_ms, handle)
    }
}

#[test]
fn two_links_within_five_seconds_are_a_burst_and_revise_the_first() {
    let (t, _) = table(1 << 20);
    assert_eq!(t.observe(&click(0, 1_000, 1)), Findings::default());
    let f = t.observe(&click(1, 3_000, 2));
    assert!(f.burst && !f.coverage && !f.decoy);
    assert_eq!(f.handles(), [1]);
    // Revised once only.
    let f = t.observe(&click(2, 4_000, 3));
    assert!(f.burst);
    assert_eq!(f.handles(), Vec::<u64>::new());
}

#[test]
fn a_person_clicking_twice_or_slowly_is_no_burst() {
    let (t, _) = table(1 << 20);
    t.observe(&click(0, 1_000, 1));
    assert!(!t.observe(&click(0, 2_000, 2)).burst, "same link again");
    assert!(!t.observe(&click(1, 60_000, 3)).burst, "a minute later");
    let mut other = click(2, 61_000, 4);
    other.ip = "198.51.100.1".parse().unwrap();
    assert!(!t.observe(&other).burst, "another source");
}

#[test]
fn most_links_clicked_is_coverage() {
    assert!(!covers(2, 3) && covers(3, 3));
    assert!(!covers(3, 4) && covers(4, 4));
    assert!(!covers(3, 5) && covers(4, 5));
    assert!(!covers(2, 2), "two-link messages are never covered");
    let (t, _) = table(1 << 20);
    for (i, at) in [(0, 0), (1, 60_000), (2, 120_000)] {
        assert!(!t.observe(&click(i, at, u64::from(i))).coverage);
    }
    let f = t.observe(&click(3, 180_000, 3));
    assert!(f.coverage && !f.burst);
    assert_eq!(f.handles(), [0, 1, 2]);
}

/// A gateway covers the message from an office's address; the person behind the same
/// address clicks a link it reached minutes later: judged on its own, not as coverage.
#[test]
fn a_link_clicked_again_after_coverage_is_not_coverage() {
    let (t, _) = table(1 << 20);
    for (i, at) in [(0, 0), (1, 300), (2, 600)] {
        assert!(!t.observe(&counted(4, i, at, u64::from(i))).coverage);
    }
    assert!(t.observe(&counted(4, 3, 900, 3)).coverage);
    assert_eq!(t.observe(&counted(4, 0, 240_000, 4)), Findings::default());
}

/// Coverage and a burst at once: each earlier click is revised for what it was part of, the
/// clicks minutes before for coverage alone.
#[test]
fn each_revised_click_says_what_it_was_part_of() {
    let (t, _) = table(1 << 20);
    for (i, at) in [(0, 0), (1, 60_000), (2, 120_000)] {
        t.observe(&click(i, at, u64::from(i)));
    }
    let f = t.observe(&click(3, 121_000, 3));
    assert!(f.coverage && f.burst);
    let why = |r: &ToRevise| (r.handle, r.burst, r.coverage, r.decoy);
    assert_eq!(
        f.revise.iter().map(why).collect::<Vec<_>>(),
        [
            (0, false, true, false),
            (1, false, true, false),
            (2, true, true, false)
        ]
    );
}

/// A message of up to 1000 links (and its decoy) clicked link by link, slowly, from one
/// source: coverage at four links in five, revising every click before it. It never fired
/// past 80 links (64 distinct ones were counted at most), and revised only the last 16.
#[test]
fn coverage_of_a_long_message_revises_every_earlier_click() {
    for count in [30u32, 100, 1001] {
        let (t, _) = table(1 << 30);
        let at = |i: u32| u64::from(i) * 30_000;
        let first = (1..=count).find(|&n| covers(n as usize, count)).unwrap();
        for i in 0..first - 1 {
            let mut c = click(i, at(i), u64::from(i));
            c.count = Some(count);
            assert_eq!(t.observe(&c), Findings::default(), "{count}: link {i}");
        }
        let mut c = click(first - 1, at(first - 1), u64::from(first - 1));
        c.count = Some(count);
        let f = t.observe(&c);
        assert!(f.coverage && !f.burst, "{count}: {f:?}");
        assert_eq!(
            f.handles(),
            (0..u64::from(first - 1)).collect::<Vec<_>>(),
            "{count}"
        );
    }
}

/// Links without an index count by their URL's hash, apart from indexed ones.
#[test]
fn links_without_an_index_count_apart_from_indexed_ones() {
    let (t, _) = table(1 << 20);
    for (i, link) in [Link::Index(0), Link::Url(0), Link::Url(7)]
        .into_iter()
        .enumerate()
    {
        let mut c = click(0, i as u64 * 60_000, i as u64);
        c.link = link;
        c.count = Some(3);
        assert_eq!(t.observe(&c).coverage, i == 2, "{link:?}");
    }
}

/// An entry is weighed by what it holds: one source's thousand clicks take the room of
/// many people's few.
#[test]
fn an_entry_holding_many_clicks_weighs_more() {
    // Room for 12 people's entries; the one source's older clicks take as much as ten.
    let (t, g) = table(u64::from(ENTRY_BYTES) * 12);
    for i in 0..8u32 {
        let mut c = click(0, 0, u64::from(i));
        c.ip = IpAddr::from([198, 51, 100, i as u8]);
        t.observe(&c);
    }
    for i in 0..1000u32 {
        let mut c = click(i, u64::from(i) * 30_000, 100 + u64::from(i));
        c.count = Some(1000);
        t.observe(&c);
    }
    t.sync();
    assert!(g.evictions.get() > 0, "{} entries", g.entries.get());
}

#[test]
fn a_decoy_hit_marks_clicks_within_ten_seconds_on_both_sides() {
    let (t, _) = table(1 << 20);
    t.observe(&click(0, 0, 1));
    t.observe(&click(1, 30_000, 2));
    let mut decoy = click(4, 36_000, 3);
    decoy.role = Some(Role::Decoy);
    let f = t.observe(&decoy);
    assert!(f.decoy);
    assert_eq!(
        f.handles(),
        [2],
        "the click 6 s before, not the one 36 s before"
    );
    assert!(t.observe(&click(2, 45_000, 4)).decoy, "9 s after");
    assert!(!t.observe(&click(3, 47_000, 5)).decoy, "11 s after");
}

#[test]
fn clicks_further_apart_than_the_ttl_start_afresh() {
    let (t, _) = table(1 << 20);
    for (i, at) in [(0, 0), (1, 60_000), (2, 120_000)] {
        t.observe(&click(i, at, u64::from(i)));
    }
    // The fourth link, the TTL (600 s) after the third: no coverage of what was forgotten.
    let f = t.observe(&click(3, 720_001, 3));
    assert_eq!(f, Findings::default());
    let f = t.observe(&click(4, 720_002, 4));
    assert!(f.burst, "the table still remembers from there on");
}

/// A click more than the TTL before the latest (a replay out of order) starts afresh too:
/// clicks a day apart never add up to coverage.
#[test]
fn a_click_long_before_the_latest_starts_afresh() {
    let (t, _) = table(1 << 20);
    let day = 86_400_000;
    t.observe(&counted(3, 0, 2 * day, 0));
    t.observe(&counted(3, 1, day, 1));
    assert!(!t.observe(&counted(3, 2, day + 1_000, 2)).coverage);
}

/// An entry evicted while a click was judged on it, and made anew by another click: the
/// first click's put-back leaves the new entry (and its click) standing.
#[test]
fn putting_an_entry_back_keeps_one_made_meanwhile() {
    let (t, _) = table(1 << 20);
    let (old, newer) = (Arc::default(), Arc::default());
    t.cache.insert(7, Arc::clone(&newer));
    t.put_back(7, Arc::clone(&old));
    assert!(Arc::ptr_eq(&t.cache.get(&7).unwrap(), &newer));
    t.cache.invalidate(&7);
    t.put_back(7, Arc::clone(&old));
    assert!(Arc::ptr_eq(&t.cache.get(&7).unwrap(), &old));
}

#[test]
fn the_memory_cap_evicts_and_counts() {
    let (t, g) = table(u64::from(ENTRY_BYTES) * 8);
    for i in 0..100u32 {
        let mut c = click(0, 0, u64::from(i));
        c.ip = IpAddr::from([198, 51, 100, i as u8]);
        t.observe(&c);
    }
    t.sync();
    assert!(g.entries.get() <= 8, "{} entries", g.entries.get());
    assert!(
        g.evictions.get() >= 92 - 8,
        "{} evictions",
        g.evictions.get()
    );
    // At the cap, a new source is remembered (the least recently used goes): its second
    // link is a burst.
    let mut first = click(0, 1_000, 1_000);
    first.ip = "203.0.113.200".parse().unwrap();
    t.observe(&first);
    t.sync();
    let second = Click {
        link: Link::Index(1),
        at_ms: 2_000,
        handle: 1_001,
        ..first
    };
    assert!(t.observe(&second).burst, "the new source was not kept");
}

/// Without idle expiry (a replay), only the clicks' own times age an entry: two clicks
/// 10 ms apart by their times are one source's burst however long passed in between.
#[test]
fn without_idle_expiry_only_the_clicks_times_age_an_entry() {
    for idle_expiry in [true, false] {
        let gauges = Gauges {
            entries: IntGauge::new("e", "e").unwrap(),
            evictions: IntCounter::new("v", "v").unwrap(),
        };
        let config = Config {
            ttl: Duration::from_millis(50),
            max_bytes: 1 << 20,
            idle_expiry,
        };
        let t = MessageTable::new(config, gauges);
        t.observe(&click(0, 1_000, 1));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(t.observe(&click(1, 1_010, 2)).burst, !idle_expiry);
    }
}

/// The decoy is no link a person sees: clicking it and two of three content links is not
/// most of the message.
#[test]
fn the_decoy_is_not_counted_for_coverage() {
    let (t, _) = table(1 << 20);
    let mut decoy = click(3, 0, 0);
    decoy.count = Some(4);
    decoy.role = Some(Role::Decoy);
    t.observe(&decoy);
    for (i, at) in [(0, 60_000), (1, 120_000)] {
        let mut c = click(i, at, u64::from(i) + 1);
        c.count = Some(3);
        assert!(!t.observe(&c).coverage, "link {i}");
    }
    let mut last = click(2, 180_000, 3);
    last.count = Some(3);
    assert!(t.observe(&last).coverage);
}
