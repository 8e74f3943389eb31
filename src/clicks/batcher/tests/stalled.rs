//! A click log whose disk stops answering: synced requests are answered in time, and what they
//! leave behind is written or counted.

use super::*;

/// A disk that stops answering (a stuck network volume, a dying device) does not hold a synced
/// click's request, and its connection, for ever: it is answered 503 after [`SYNCED_WAIT`],
/// uncounted, and the click is still written once the disk answers.
#[tokio::test(start_paused = true)]
async fn a_synced_click_on_a_stalled_sink_is_refused_in_time_and_written_after() {
    let sink = FakeSink::default();
    *sink.stalled.lock().unwrap() = true;
    let metrics = Metrics::unregistered();
    let (writer, queue) = start_fake(&sink, &metrics);
    let started = tokio::time::Instant::now();
    let answer = tokio::time::timeout(2 * SYNCED_WAIT, queue.push_synced(event(1))).await;
    assert_eq!(answer, Ok(Err(ClickRejected::Stalled)));
    assert_eq!(started.elapsed(), SYNCED_WAIT);
    assert_eq!(metrics.clicks_rejected.get(), 0);
    *sink.stalled.lock().unwrap() = false;
    eventually("the stalled click written", || {
        metrics.clicks_logged.get() == 1
    });
    assert_eq!(
        metrics.clicks_rejected.get() + metrics.clicks_dropped.get(),
        0
    );
    drop(queue);
    writer.close();
}

/// A synced click answered 503 when the log stalled has no waiter left: if the writer then dies
/// with it (a bug in the sink), it is still counted, as rejected.
#[tokio::test(start_paused = true)]
async fn a_stalled_synced_click_lost_to_a_panicking_writer_is_counted() {
    let sink = FakeSink::default();
    *sink.stalled.lock().unwrap() = true;
    let metrics = Metrics::unregistered();
    let (writer, queue) = start_fake(&sink, &metrics);
    let answer = tokio::time::timeout(2 * SYNCED_WAIT, queue.push_synced(event(1))).await;
    assert_eq!(answer, Ok(Err(ClickRejected::Stalled)));
    *sink.panic_on_write.lock().unwrap() = true;
    *sink.stalled.lock().unwrap() = false;
    eventually("the lost click counted", || {
        metrics.clicks_rejected.get() == 1
    });
    assert_eq!(
        metrics.clicks_logged.get() + metrics.clicks_dropped.get(),
        0
    );
    drop(queue);
    writer.close();
}
