//! Replay over a few traces: the lines it writes, revisions naming earlier lines, the tally.

use super::*;
use crate::clicks::verdict::networks::{Catalogue, SharedCatalogue};
use crate::clicks::verdict::{Timing, messages};
use crate::metrics::Metrics;

fn replay() -> Replay {
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
    Replay::new(|revise| {
        Rules::new(
            Arc::new(SharedCatalogue::new(Catalogue::defaults())),
            messages::Config {
                ttl: std::time::Duration::from_secs(600),
                max_bytes: 1 << 20,
                idle_expiry: false,
            },
            Timing::default(),
            &metrics,
            revise,
        )
    })
}

const CHROME: &str = r#""user-agent":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36","sec-fetch-dest":"document","sec-fetch-mode":"navigate","sec-fetch-site":"cross-site""#;

fn trace(time: &str, ip: &str, index: u32, label: &str) -> String {
    format!(
        r#"{{"time":"{time}","address":"{ip}","headers":{{{CHROME}}},"context":{{"message":"m1","index":{index},"count":5,"sent_at":"2025-11-24T09:00:00Z"}},"label":"{label}"}}"#
    )
}

fn lines(out: &[u8]) -> Vec<serde_json::Value> {
    std::str::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_burst_revises_the_earlier_trace_by_its_click_id_and_the_tally_counts_the_final_verdict() {
    let mut r = replay();
    let mut out = Vec::new();
    // A person, an hour after the send; then a scanner at another address following two links
    // within two seconds, a day later (no timing rule fires).
    r.trace(
        1,
        &trace("2025-11-24T10:00:00Z", "203.0.113.9", 0, "human"),
        &mut out,
    )
    .unwrap();
    r.trace(
        2,
        &trace("2025-11-25T09:00:00Z", "198.51.100.4", 1, "machine"),
        &mut out,
    )
    .unwrap();
    r.trace(
        3,
        &trace("2025-11-25T09:00:02Z", "198.51.100.4", 2, "machine"),
        &mut out,
    )
    .unwrap();
    let l = lines(&out);
    assert_eq!(l.len(), 4, "{l:#?}");
    assert_eq!(l[0]["verdict"], "human");
    assert_eq!(l[0]["click_id"], "replay-1");
    assert_eq!(
        l[1]["verdict"], "human",
        "alone, the scanner's first click looks human"
    );
    assert_eq!(l[2]["verdict"], "machine");
    assert_eq!(l[2]["reasons"], serde_json::json!(["burst"]));
    assert_eq!(l[3]["kind"], "verdict");
    assert_eq!(l[3]["click_id"], l[1]["click_id"]);
    assert_eq!(l[3]["revision_id"], "replay-4");
    let t = r.tally();
    assert_eq!(t.counts, [[1, 0, 0], [0, 2, 0]]);
    assert_eq!((t.precision(), t.recall()), (Some(1.0), Some(1.0)));
}

#[test]
fn timing_reads_the_trace_time_not_the_wall_clock() {
    let mut r = replay();
    let mut out = Vec::new();
    r.trace(
        1,
        &trace("2025-11-24T09:00:30Z", "203.0.113.9", 0, "machine"),
        &mut out,
    )
    .unwrap();
    assert_eq!(lines(&out)[0]["reasons"], serde_json::json!(["early"]));
    assert_eq!(
        r.tally().counts,
        [[0, 0, 0], [0, 0, 1]],
        "unknown is a miss"
    );
    assert_eq!(r.tally().recall(), Some(0.0));
    assert_eq!(r.tally().precision(), None);
}

#[test]
fn bad_traces_name_their_line_and_member() {
    let mut r = replay();
    let mut out = Vec::new();
    let err = |r: &mut Replay, t: &str| r.trace(7, t, &mut Vec::new()).unwrap_err().to_string();
    assert_eq!(
        err(
            &mut r,
            r#"{"time":"yesterday","address":"192.0.2.1","minted_at":"2025-11-24T09:00:00Z"}"#
        ),
        "trace line 7: time \"yesterday\" is not an RFC 3339 time"
    );
    assert_eq!(
        err(
            &mut r,
            r#"{"time":"2025-11-24T09:00:00Z","address":"192.0.2.1"}"#
        ),
        "trace line 7: minted_at or context.sent_at is needed"
    );
    assert_eq!(
        err(
            &mut r,
            r#"{"time":"2025-11-24T09:00:00Z","address":"192.0.2.1","minted_at":"2025-11-24T09:00:00Z","method":"POST"}"#
        ),
        "trace line 7: method \"POST\" is not GET or HEAD"
    );
    assert_eq!(
        err(
            &mut r,
            r#"{"time":"2025-11-24T09:00:00Z","address":"192.0.2.1","context":{"message":"m","sent_at":"2025-11-24T09:00:00Z"}}"#
        ),
        "trace line 7: context without index needs url (the link's destination)"
    );
    assert_eq!(
        err(&mut r, r#"{"time":1}"#),
        "trace line 7 is not a trace: invalid type: integer `1`, expected a string"
    );
    assert_eq!(
        err(
            &mut r,
            r#"{"time":"2025-11-24T09:00:00Z","adress":"192.0.2.1"}"#
        ),
        "trace line 7 is not a trace: unknown field `adress`, expected one of `time`, \
         `address`, `method`, `headers`, `tls_fp`, `context`, `minted_at`, `domain`, `url`, \
         `label`, `note`"
    );
    assert_eq!(
        err(&mut r, "time,address"),
        "trace line 7 is not JSON (at column 2): a trace is one JSON object on one line, as \
         README's \"Replay and accuracy\" shows"
    );
    assert_eq!(
        err(&mut r, r#"{"time":"2025-11-24T09:00:00Z","#),
        "trace line 7 is not JSON (at column 31): a trace is one JSON object on one line, as \
         README's \"Replay and accuracy\" shows"
    );
    // A context the edge would never have sealed.
    let refused = err(
        &mut r,
        r#"{"time":"2025-11-24T09:00:00Z","address":"192.0.2.1","minted_at":"2025-11-24T09:00:00Z","context":{"message":"m","index":5,"count":3}}"#,
    );
    assert!(refused.starts_with("trace line 7: context: "), "{refused}");
    r.trace(8, r#"{"time":"2025-11-24T09:00:00Z","address":"192.0.2.1","minted_at":"2025-11-20T09:00:00Z","method":"HEAD"}"#, &mut out).unwrap();
    assert_eq!(
        lines(&out)[0]["reasons"],
        serde_json::json!(["head", "no-ua"])
    );
}

#[test]
fn the_fingerprint_is_judged_and_written_as_on_the_edge() {
    let mut r = replay();
    let mut out = Vec::new();
    let with = |fp: &str| {
        format!(
            r#"{{"time":"2025-11-24T12:00:00Z","address":"203.0.113.9","headers":{{{CHROME}}},"tls_fp":"{fp}","minted_at":"2025-11-24T09:00:00Z"}}"#
        )
    };
    // FoxIO's published Chrome fingerprint under Chrome's headers: a person.
    r.trace(1, &with("t13d1516h2_8daaf6152771_e5627efa2ab1"), &mut out)
        .unwrap();
    // curl's fingerprint under the same headers counts against it.
    r.trace(2, &with("t13d3112h2_e8f1e7e78f70_b26ce05bbdd6"), &mut out)
        .unwrap();
    let l = lines(&out);
    assert_eq!(l[0]["tls_fp"], "t13d1516h2_8daaf6152771_e5627efa2ab1");
    assert_eq!(l[0]["verdict"], "human", "{}", l[0]);
    assert_eq!(l[0]["sec_fetch"], "dest,mode,site");
    assert_eq!(l[1]["verdict"], "unknown", "{}", l[1]);
    assert_eq!(l[1]["reasons"], serde_json::json!(["tls:curl"]));
    // A value no edge writes is refused, naming the member.
    let err = r.trace(3, &with("t13d1516h2"), &mut out).unwrap_err();
    assert!(err.to_string().contains("tls_fp"), "{err}");
}
