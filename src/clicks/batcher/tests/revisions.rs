//! Verdict revisions through the writer: each its own line naming the click it revises, none
//! for a click that was never logged.

use super::*;

/// Click `i`, judged human under verdict handle `handle`.
fn judged(i: usize, handle: u64) -> ClickEvent {
    let mut e = event(i);
    e.verdict = Some(Verdict {
        class: Class::Human,
        reasons: vec![],
        rules: "r",
        handle: Some(handle),
        sec_fetch: None,
    });
    e
}

/// A burst's revision of the click judged under `handle`.
fn revision(handle: u64) -> Revision {
    Revision {
        ts: from_unix_secs(1_764_000_001),
        handle,
        class: Class::Machine,
        reasons: vec!["burst"],
        rules: "r",
    }
}

/// A synced click refused because its batch failed is not in the log: no revision line may name
/// it, neither one judged while it waited (in its batch, after it) nor one judged after the
/// refusal; and `clicks_by_verdict_total` counts only the click lines written.
#[tokio::test]
async fn a_refused_synced_click_is_never_revised_nor_counted_by_verdict() {
    let metrics = Metrics::unregistered();
    let (tx, rx) = sync_channel(100);
    let queue = test_queue(tx.clone(), &metrics, Durability::Buffered, 100);
    let synced = tokio::spawn({
        let queue = queue.clone();
        async move { queue.push_synced(judged(0, 11)).await }
    });
    while metrics.clicks_queued.get() < 1 {
        tokio::task::yield_now().await;
    }
    queue.revise(revision(11));
    queue.push(judged(1, 12));
    let sink = FakeSink::failing(1);
    let thread = spawn_writer(sink.clone(), &metrics, rx);
    assert_eq!(synced.await.unwrap(), Err(ClickRejected::SinkUnavailable));
    queue.revise(revision(11));
    queue.revise(revision(12));
    ClickWriter { tx, thread }.close();
    let attempts = sink.attempts();
    let id = |seq: u64| format!("revises edge-t-{}", FIRST_SEQ + seq);
    assert_eq!(
        attempts[0].urls,
        [url(0), id(0), url(1)],
        "one batch, failed"
    );
    let written: Vec<String> = attempts
        .into_iter()
        .filter(|a| a.ok)
        .flat_map(|a| a.urls)
        .collect();
    // Ids 0 and 1 went to the refused click and its revision.
    assert_eq!(written, [url(1), id(2)]);
    assert_eq!(metrics.verdict_revisions.get(), 1);
    assert_eq!(metrics.verdict_revisions_lost.get(), 2);
    assert_eq!(metrics.clicks_logged.get(), 1);
    let human = metrics.clicks_by_verdict.with_label_values(&["human"]);
    assert_eq!(human.get(), 1, "the click line written");
}

#[test]
fn a_revision_is_its_own_line_naming_the_click_id_of_the_click_it_revises() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::unregistered();
    let (writer, queue) = start_file(file_config(dir.path()), batch_config(), &metrics);
    queue.push(judged(0, 11));
    queue.push(judged(1, 12));
    queue.revise(revision(11));
    // A revision that overtook its click (judged on another connection meanwhile) waits for it.
    queue.revise(revision(13));
    queue.push(judged(2, 13));
    // One whose click was never logged is not written.
    queue.revise(revision(99));
    writer.close();
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().is_some_and(|p| p.ends_with(".jsonl")))
        .collect();
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let got: Vec<(String, String, Option<String>)> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let own = line_click_id(l.as_bytes()).unwrap().to_owned();
            let id = v["click_id"].as_str().unwrap().to_owned();
            let revision = (v["kind"] == "verdict").then(|| {
                assert_eq!(v["verdict"], "machine");
                assert_eq!(v["reasons"], serde_json::json!(["burst"]));
                assert_eq!(v["ts"], "2025-11-24T16:00:01.000Z");
                v["revision_id"].as_str().unwrap().to_owned()
            });
            (own, id, revision)
        })
        .collect();
    let id = |seq: u64| format!("edge-t-{}", FIRST_SEQ + seq);
    assert_eq!(
        got,
        [
            (id(0), id(0), None),
            (id(1), id(1), None),
            (id(2), id(0), Some(id(2))),
            (id(3), id(3), None),
            (id(4), id(3), Some(id(4))),
        ]
    );
    assert_eq!(metrics.clicks_logged.get(), 3);
    assert_eq!(metrics.verdict_revisions.get(), 2);
}
