//! Reading an order: polling it until the CA has settled it, within `acme.order_timeout`, and
//! telling an order gone from a CA that did not answer.

use std::time::Duration;

use instant_acme::{Order, OrderStatus};

/// Polls `order` until it leaves `pending`, backing off from 250 ms by 1.5 up to `timeout`:
/// ready to finalize, invalid, or already finalized (`processing`, `valid`). instant-acme's
/// `poll_ready` waits only for ready or invalid, so an order another node finalized meanwhile
/// would be polled until the timeout. An order with an `error` is invalid, whatever its status
/// says: the error is in its state for the caller to report.
pub(super) async fn poll_settled(
    order: &mut Order,
    timeout: Duration,
) -> Result<OrderStatus, instant_acme::Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(250);
    loop {
        let state = order.refresh().await?;
        if state.error.is_some() {
            return Ok(OrderStatus::Invalid);
        }
        if state.status != OrderStatus::Pending {
            return Ok(state.status);
        }
        let Some(wait) = next_poll(tokio::time::Instant::now(), deadline, delay) else {
            return Err(instant_acme::Error::Timeout(None));
        };
        tokio::time::sleep(wait).await;
        delay = delay.mul_f64(1.5);
    }
}

/// How long to wait before polling again at `now`, `delay` after the last poll: cut short to
/// poll once more at `deadline` (giving up a whole delay early, an order the CA validated in
/// the last third of `acme.order_timeout` failed); none once `deadline` has passed.
fn next_poll(
    now: tokio::time::Instant,
    deadline: tokio::time::Instant,
    delay: Duration,
) -> Option<Duration> {
    let left = deadline
        .checked_duration_since(now)
        .filter(|d| !d.is_zero())?;
    Some(delay.min(left))
}

/// Whether the CA's answer to reading an order says the order is gone: a problem that is not
/// the CA's own (not a 5xx, a server error or a rate limit; a 404 without a problem document
/// gets one with its status from the client: Pebble's empty answer for an unknown order). Not a
/// network failure, a timeout, or an answer that does not parse (a proxy's 502 page).
pub(super) fn order_gone(e: &instant_acme::Error) -> bool {
    match e {
        instant_acme::Error::Api(p) => {
            p.status.is_none_or(|s| s < 500)
                && !matches!(
                    p.r#type.as_deref(),
                    Some(
                        "urn:ietf:params:acme:error:serverInternal"
                            | "urn:ietf:params:acme:error:rateLimited"
                    )
                )
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_is_polled_once_more_at_its_deadline() {
        let now = tokio::time::Instant::now();
        let deadline = now + Duration::from_secs(90);
        assert_eq!(
            next_poll(now, deadline, Duration::from_millis(250)),
            Some(Duration::from_millis(250))
        );
        // The polls from 250 ms growing by half: the delay after the one near 64 s is longer
        // than what is left.
        let (mut at, mut delay, mut polls) = (now, Duration::from_millis(250), 0);
        while let Some(wait) = next_poll(at, deadline, delay) {
            at += wait;
            delay = delay.mul_f64(1.5);
            polls += 1;
        }
        assert_eq!(at, deadline, "the last poll is at the deadline");
        assert!(polls > 10, "{polls}");
        assert_eq!(
            next_poll(deadline + Duration::from_millis(1), deadline, delay),
            None
        );
    }

    #[test]
    fn an_order_is_gone_when_the_ca_says_so_not_when_it_fails() {
        let problem = |v: serde_json::Value| {
            instant_acme::Error::Api(serde_json::from_value(v).expect("a problem document"))
        };
        let gone = problem(serde_json::json!({
            "type": "urn:ietf:params:acme:error:malformed", "status": 404
        }));
        assert!(order_gone(&gone));
        let server = problem(serde_json::json!({
            "type": "urn:ietf:params:acme:error:serverInternal", "status": 500
        }));
        assert!(!order_gone(&server));
        let unavailable = problem(serde_json::json!({ "status": 503 }));
        assert!(!order_gone(&unavailable));
        let limited = problem(serde_json::json!({
            "type": "urn:ietf:params:acme:error:rateLimited", "status": 429
        }));
        assert!(!order_gone(&limited));
        let untyped_404 = problem(serde_json::json!({ "status": 404 }));
        assert!(order_gone(&untyped_404));
        let unparsed = serde_json::from_str::<serde_json::Value>("<html>").unwrap_err();
        assert!(!order_gone(&instant_acme::Error::Json(unparsed)));
        assert!(!order_gone(&instant_acme::Error::Timeout(None)));
    }
}
