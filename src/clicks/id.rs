//! `click_id`: `{node_id}-{seq}`, the last field of every click line, the `Nats-Msg-Id` of its
//! message in the stream, and the key consumers deduplicate on. A revision line takes its
//! `revision_id` from the same sequence (its `click_id` names the click it revises), so every
//! line of the log has an id of its own.
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

    /// The sequence number.
    pub(super) fn seq(&self) -> u64 {
        self.seq
    }

    /// Appends `,"click_id":"{node}-{seq}"`: the member the line ends with. A node id is letters,
    /// digits, `-`, `_` and `.` ([`NodeId`]), so it needs no escape.
    pub(super) fn write_member(&self, out: &mut Vec<u8>) {
        self.write_member_as(CLICK_KEY, out);
    }

    /// Appends the id under another key (`key` is `,"name":"`): a revision line's own id.
    pub(super) fn write_member_as(&self, key: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(key);
        out.extend_from_slice(self.node.as_str().as_bytes());
        // Invariant: formatting an integer into a Vec cannot fail.
        write!(out, "-{}\"", self.seq).expect("integer formats");
    }
}

const CLICK_KEY: &[u8] = b",\"click_id\":\"";
const REVISION_KEY: &[u8] = b",\"revision_id\":\"";

/// The id a line is known by (with or without its newline): a click line's `click_id`, a
/// revision line's `revision_id` (it names the revised click in its own `click_id`). Either is
/// the last member, so it is found from the end without parsing the line. A string cannot fake
/// it: every `"` inside a string is escaped, so the key only occurs structurally, and the id
/// must run to the end of the line without a quote, which a `meta` key of that name does not.
///
/// It runs for every line the shipper publishes: it looks only at the line's tail, back to the
/// quote that opens the id.
pub fn line_click_id(line: &[u8]) -> Option<&str> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let body = line.strip_suffix(b"\"}")?;
    let open = memchr::memrchr(b'"', body)?;
    let (head, id) = body.split_at(open + 1);
    if !(head.ends_with(CLICK_KEY) || head.ends_with(REVISION_KEY)) {
        return None;
    }
    std::str::from_utf8(id).ok()
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
    fn a_revision_line_is_known_by_its_own_id_not_the_click_it_names() {
        let node = NodeId::parse("n").unwrap();
        let mut line = br#"{"kind":"verdict""#.to_vec();
        ClickId::new(&node, 5).write_member(&mut line);
        line.extend_from_slice(br#","verdict":"machine""#);
        ClickId::new(&node, 9).write_member_as(REVISION_KEY, &mut line);
        line.extend_from_slice(b"}\n");
        assert_eq!(line_click_id(&line), Some("n-9"));
        assert_eq!(next_seq_after(Some(&line)), 10);
        // A click line whose meta has a `revision_id` key is still known by its click id.
        let mut click = br#"{"meta":{"revision_id":"x-1"},"ip":"192.0.2.1""#.to_vec();
        ClickId::new(&node, 6).write_member(&mut click);
        click.extend_from_slice(b"}\n");
        assert_eq!(line_click_id(&click), Some("n-6"));
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
