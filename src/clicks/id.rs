//! `click_id`: `{node_id}-{seq}`, the last field of every click line, the `Nats-Msg-Id` of its
//! message in the stream, and the key consumers deduplicate on.
//!
//! The node id (`[cluster] node_id`) makes ids unique across nodes; the sequence number makes them
//! unique on one node. It is handed out by the batcher thread as it encodes each click (so the log
//! holds increasing numbers in file order), and recovered at start from the newest line of the
//! log ([`next_seq_in`]): the next run goes on after the last click written.
//!
//! The trap of recovering from the log: a click written to the page cache but lost in a power cut
//! gets its number reused after the restart. That is harmless only if the lost click never left
//! the node, so the shipper publishes nothing that is not on disk: it `fdatasync`s a file up to
//! what it is about to read before publishing from it (see `ship::reader`). A number the stream
//! has seen is therefore always found in the log at the next start, and never reused.
//!
//! A click encoded but then not written (refused while the sink fails, dropped past the memory
//! bound) leaves its number unused: numbers are unique and increasing in the log, and a gap is a
//! counted drop or refusal, never a lost shipped click. Clicks logged before ids existed have no
//! `click_id`; the sequence then starts at 1.

use std::io::Write as _;

use crate::config::NodeId;

/// Hands out click ids on one node: the node id and the next sequence number.
#[derive(Debug, Clone)]
pub struct ClickIds {
    node: NodeId,
    next: u64,
}

impl ClickIds {
    /// Ids `{node}-{next}`, `{node}-{next + 1}`, …
    pub fn new(node: NodeId, next: u64) -> ClickIds {
        ClickIds { node, next }
    }

    /// The node whose clicks these are.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The id the next click gets; [`ClickIds::advance`] once it is kept.
    pub(super) fn peek(&self) -> ClickId<'_> {
        ClickId {
            node: &self.node,
            seq: self.next,
        }
    }

    /// The id from [`ClickIds::peek`] is taken.
    pub(super) fn advance(&mut self) {
        self.next += 1;
    }
}

/// One click's id, as the line writer appends it.
#[derive(Debug, Clone, Copy)]
pub struct ClickId<'a> {
    node: &'a NodeId,
    seq: u64,
}

impl<'a> ClickId<'a> {
    /// The id `{node}-{seq}`.
    pub fn new(node: &'a NodeId, seq: u64) -> ClickId<'a> {
        ClickId { node, seq }
    }

    /// Appends `,"click_id":"{node}-{seq}"`: the member the line ends with. A node id is letters,
    /// digits, `-`, `_` and `.` ([`NodeId`]), so it needs no escape.
    pub(super) fn write_member(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b",\"click_id\":\"");
        out.extend_from_slice(self.node.as_str().as_bytes());
        // Invariant: formatting an integer into a Vec cannot fail.
        write!(out, "-{}\"", self.seq).expect("integer formats");
    }
}

/// The `click_id` of a click line (with or without its newline): the last member, so it is found
/// from the end without parsing the line. A string member cannot fake it: every `"` inside a
/// string is escaped, so `,"click_id":"` only occurs as the member itself.
pub fn line_click_id(line: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b",\"click_id\":\"";
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let body = line.strip_suffix(b"\"}")?;
    let at = body.windows(KEY.len()).rposition(|w| w == KEY)?;
    std::str::from_utf8(&body[at + KEY.len()..]).ok()
}

/// The sequence number of a click id (`{node}-{seq}`).
pub fn id_seq(id: &str) -> Option<u64> {
    id.rsplit_once('-')?.1.parse().ok()
}

/// The sequence number after the one on `last_line`, the newest line of the log; 1 when there is
/// no such line or it has no id.
pub(super) fn next_seq_after(last_line: Option<&[u8]>) -> u64 {
    last_line
        .and_then(line_click_id)
        .and_then(id_seq)
        .map_or(1, |seq| seq.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_found_at_the_end_of_its_line_and_nowhere_else() {
        let node = NodeId::parse("edge-a.eu").unwrap();
        let mut line = br#"{"ua":"x,\"click_id\":\"fake-9\"}""#.to_vec();
        ClickId::new(&node, 41).write_member(&mut line);
        line.extend_from_slice(b"}\n");
        assert_eq!(line_click_id(&line), Some("edge-a.eu-41"));
        assert_eq!(id_seq("edge-a.eu-41"), Some(41));
        assert_eq!(next_seq_after(Some(&line)), 42);
        // Lines from before ids, and no line at all: start at 1.
        assert_eq!(next_seq_after(Some(br#"{"ts":"x","ua":"a"}"#)), 1);
        assert_eq!(next_seq_after(None), 1);
    }

    #[test]
    fn ids_count_up_only_when_taken() {
        let mut ids = ClickIds::new(NodeId::parse("n").unwrap(), 7);
        let mut out = Vec::new();
        ids.peek().write_member(&mut out);
        ids.peek().write_member(&mut out);
        ids.advance();
        ids.peek().write_member(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#","click_id":"n-7","click_id":"n-7","click_id":"n-8""#
        );
    }
}
