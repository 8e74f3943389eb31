//! Error helpers shared by every module: turning an error and its causes into one line of words.

/// An error and its sources, joined with `: ` (what a log line or a stored `last_error` shows).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        // Some errors print their source in their own message already (`outer: source`):
        // said once.
        if !s
            .strip_suffix(&text)
            .is_some_and(|said| said.ends_with(": "))
        {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_joins_every_source() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(super::chain(&e), "outer: inner");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("connecting: {0}")]
    struct SaysItsSource(#[source] std::io::Error);

    #[test]
    fn a_source_already_in_the_message_is_said_once() {
        let e = SaysItsSource(std::io::Error::other("refused"));
        assert_eq!(super::chain(&e), "connecting: refused");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("the peer refused")]
    struct EndsLikeItsSource(#[source] std::io::Error);

    #[test]
    fn a_source_the_message_merely_ends_with_is_still_said() {
        let e = EndsLikeItsSource(std::io::Error::other("refused"));
        assert_eq!(super::chain(&e), "the peer refused: refused");
    }
}
