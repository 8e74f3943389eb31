//! The queue's accounting: every click queued, refused, dropped or lost is counted once.

use std::future::Future as _;
use std::pin::pin;
use std::sync::mpsc::sync_channel;
use std::task::{Context, Poll, Waker};

use super::*;
use crate::clicks::testing::{event, test_queue};
use crate::clicks::verdict::Class;
use crate::clock::from_unix_secs;

fn revision() -> Revision {
    Revision {
        ts: from_unix_secs(1_764_000_001),
        handle: 7,
        class: Class::Machine,
        reasons: vec!["burst"],
        rules: "r",
    }
}

#[test]
fn clicks_past_the_address_rate_are_not_admitted_and_are_counted() {
    let metrics = Metrics::unregistered();
    let (tx, _rx) = sync_channel(10);
    let queue = test_queue(tx, &metrics, Durability::Buffered, 10);
    let ip: IpAddr = "203.0.113.7".parse().unwrap();
    // No bound: everything is admitted, nothing counted.
    assert!((0..100).all(|_| queue.admit(ip)));
    let queue = queue.with_rate_per_address(NonZeroU32::new(1).unwrap());
    // The first passes, then refusals, each counted (`rate.rs` tests the bucket's arithmetic
    // on explicit times; twenty calls here would need nineteen seconds to all pass).
    let admitted = (0..20).filter(|_| queue.admit(ip)).count();
    assert!((1..20).contains(&admitted), "{admitted}");
    assert_eq!(metrics.clicks_unlogged_rate.get(), 20 - admitted as u64);
    assert_eq!(metrics.clicks_queued.get(), 0);
}

/// A writer on its own thread that writes nothing and answers every synced click `Ok`, as
/// though its line were on disk, until the queue's sender is dropped.
fn acknowledging_writer(rx: std::sync::mpsc::Receiver<Queued>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while let Ok(queued) = rx.recv() {
            if let Msg::Synced(_, ack) = queued.take() {
                let _ = ack.send(Ok(()));
            }
        }
    })
}

#[tokio::test]
async fn a_links_first_one_click_is_admitted_past_the_rate_and_its_repeats_are_bound() {
    let metrics = Metrics::unregistered();
    let (tx, rx) = sync_channel(10);
    let _writer = acknowledging_writer(rx);
    let queue = test_queue(tx, &metrics, Durability::Synced, 10)
        .with_rate_per_address(NonZeroU32::new(1).unwrap());
    let ip: IpAddr = "203.0.113.7".parse().unwrap();
    // The address's one click a second is spent (a refusal within a thousand tries).
    assert!((0..1000).any(|_| !queue.admit(ip)));
    let refused = metrics.clicks_unlogged_rate.get();
    // A provider's one-clicks of different links all pass, and take no token.
    for link in ["link-a", "link-b", "link-c"] {
        assert!(queue.admit_one_click(ip, link));
        queue.push_one_click(event(0), link).await.unwrap();
    }
    // Not yet logged (refused, or dropped): still a first.
    assert!(queue.admit_one_click(ip, "link-d"));
    assert!(queue.admit_one_click(ip, "link-d"));
    // Repeats of a logged one are clicks like any other: past the rate, counted.
    let repeats = (0..20)
        .filter(|_| queue.admit_one_click(ip, "link-a"))
        .count();
    assert!(repeats < 20, "{repeats}");
    assert_eq!(
        metrics.clicks_unlogged_rate.get(),
        refused + 20 - repeats as u64
    );
}

/// A one-click answered 503 because the log stalled is not taken as logged: the disk may still
/// fail it, and its retry, bound by the address rate as a repeat, was then answered `200` with
/// no line of the unsubscribe anywhere.
#[tokio::test(start_paused = true)]
async fn a_stalled_one_click_is_still_a_first_for_its_retry() {
    let metrics = Metrics::unregistered();
    // A writer that takes nothing: the disk does not answer.
    let (tx, _rx) = sync_channel(10);
    let queue = test_queue(tx, &metrics, Durability::Synced, 10)
        .with_rate_per_address(NonZeroU32::new(1).unwrap());
    let ip: IpAddr = "203.0.113.7".parse().unwrap();
    assert!((0..1000).any(|_| !queue.admit(ip)));
    assert!(queue.admit_one_click(ip, "link-a"));
    assert_eq!(
        queue.push_one_click(event(0), "link-a").await,
        Err(ClickRejected::Stalled)
    );
    assert!(queue.admit_one_click(ip, "link-a"), "the retry is a first");
}

#[test]
fn full_queue_counts_drops() {
    let metrics = Metrics::unregistered();
    let (tx, rx) = sync_channel(2);
    let queue = test_queue(tx, &metrics, Durability::Buffered, 2);
    for i in 0..5 {
        queue.push(event(i));
    }
    assert_eq!(metrics.clicks_dropped.get(), 3);
    assert_eq!(metrics.clicks_queued.get(), 2);
    drop(rx);
}

#[test]
fn a_revision_lost_to_a_full_queue_is_counted_and_said() {
    let metrics = Metrics::unregistered();
    let (tx, _rx) = sync_channel(1);
    let queue = test_queue(tx, &metrics, Durability::Buffered, 1);
    queue.push(event(0));
    let ((), logs) = crate::logged::logged(tracing::Level::WARN, || queue.revise(revision()));
    assert_eq!(metrics.verdict_revisions_lost.get(), 1);
    assert_eq!(metrics.clicks_dropped.get(), 0);
    assert!(
        logs.contains("click queue full") && logs.contains("revisions_lost_total=1"),
        "{logs}"
    );
}

#[tokio::test]
async fn full_queue_refuses_synced_clicks_as_rejected_not_dropped() {
    let metrics = Metrics::unregistered();
    let (tx, rx) = sync_channel(1);
    let queue = test_queue(tx, &metrics, Durability::Synced, 1);
    queue.push(event(0));
    assert_eq!(
        queue.push_synced(event(1)).await,
        Err(ClickRejected::QueueFull)
    );
    assert_eq!(queue.record(event(2)).await, Err(ClickRejected::QueueFull));
    drop(rx);
    assert_eq!(
        queue.push_synced(event(3)).await,
        Err(ClickRejected::Stopped)
    );
    assert_eq!(metrics.clicks_rejected.get(), 3);
    // The buffered click the queue held, dropped unread with the receiver.
    assert_eq!(metrics.clicks_dropped.get(), 1);
    assert_eq!(metrics.clicks_queued.get(), 0);
}

// The writer's close: its last look finds the queue empty, a push lands, then the writer
// drops its receiver, which discards what is still queued. Each test below takes the queue
// to that state and drops the receiver as the writer does.

#[test]
fn a_click_queued_after_the_writers_last_look_is_counted_as_dropped() {
    let metrics = Metrics::unregistered();
    let (tx, rx) = sync_channel(10);
    let queue = test_queue(tx, &metrics, Durability::Buffered, 10);
    assert!(queue.push(event(0)));
    assert_eq!(metrics.clicks_queued.get(), 1);
    drop(rx);
    assert_eq!(metrics.clicks_dropped.get(), 1);
    assert_eq!(metrics.clicks_queued.get(), 0);
    // Later ones find the queue closed, as before.
    assert!(!queue.push(event(1)));
    assert_eq!(metrics.clicks_dropped.get(), 2);
    assert_eq!(metrics.clicks_queued.get(), 0);
}

// In a runtime: the wait for the acknowledgement is bounded by a timer (`SYNCED_WAIT`).
#[tokio::test]
async fn a_synced_click_queued_after_the_writers_last_look_is_refused_and_counted() {
    let metrics = Metrics::unregistered();
    let (tx, rx) = sync_channel(10);
    let queue = test_queue(tx, &metrics, Durability::Synced, 10);
    let mut cx = Context::from_waker(Waker::noop());
    let mut waiting = pin!(queue.push_synced(event(0)));
    assert!(waiting.as_mut().poll(&mut cx).is_pending(), "not queued");
    // Its client hangs up while it waits: the click is still accounted for.
    let mut hung_up = Box::pin(queue.push_synced(event(1)));
    assert!(hung_up.as_mut().poll(&mut cx).is_pending(), "not queued");
    drop(hung_up);
    assert_eq!(metrics.clicks_queued.get(), 2);
    drop(rx);
    assert_eq!(
        waiting.as_mut().poll(&mut cx),
        Poll::Ready(Err(ClickRejected::Stopped))
    );
    assert_eq!(metrics.clicks_rejected.get(), 2);
    assert_eq!(metrics.clicks_dropped.get(), 0);
    assert_eq!(metrics.clicks_queued.get(), 0);
}

#[test]
fn a_revision_queued_after_the_writers_last_look_is_counted_as_lost() {
    let metrics = Metrics::unregistered();
    let (tx, rx) = sync_channel(10);
    let queue = test_queue(tx, &metrics, Durability::Buffered, 10);
    queue.revise(revision());
    drop(rx);
    assert_eq!(metrics.verdict_revisions_lost.get(), 1);
    assert_eq!(metrics.clicks_dropped.get(), 0);
    assert_eq!(metrics.clicks_queued.get(), 0);
}
