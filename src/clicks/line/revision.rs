//! The revision line: a later judgement of an earlier click, as its own JSON line,
//!
//! ```text
//! {"ts":"…","kind":"verdict","click_id":"edge-a-41","verdict":"machine","reasons":["burst"],"rules":"r1+n1","revision_id":"edge-a-57"}
//! ```
//!
//! `click_id` names the click it revises; `revision_id`, the line's own id from the same
//! sequence as click ids, comes last, where the shipper and the sequence recovery find it
//! (see [`crate::clicks::line_click_id`]), so a revision is shipped under its own message id and
//! is never taken for a duplicate of the click it names.

use super::{Stamp, json_verdict_members};
use crate::clicks::id::ClickId;
use crate::clicks::verdict::Revision;

impl Revision {
    /// Appends the revision of click `revises`, as line `id`, with its newline, to `out`.
    pub(in crate::clicks) fn write_json(
        &self,
        revises: ClickId<'_>,
        id: ClickId<'_>,
        out: &mut Vec<u8>,
    ) {
        out.extend_from_slice(b"{\"ts\":");
        Stamp::new(self.ts).write_json(out);
        out.extend_from_slice(b",\"kind\":\"verdict\"");
        revises.write_member(out);
        json_verdict_members(out, self.class, &self.reasons, self.rules);
        id.write_member_as(b",\"revision_id\":\"", out);
        out.extend_from_slice(b"}\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clicks::verdict::Class;
    use crate::config::NodeId;

    #[test]
    fn the_revision_line_names_the_click_and_ends_with_its_own_id() {
        let node = NodeId::parse("edge-a").unwrap();
        let revision = Revision {
            ts: crate::clock::from_unix_secs(1_764_000_000),
            handle: 3,
            class: Class::Machine,
            reasons: vec!["burst", "decoy"],
            rules: "r1+n1",
        };
        let mut out = Vec::new();
        revision.write_json(ClickId::new(&node, 41), ClickId::new(&node, 57), &mut out);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "{\"ts\":\"2025-11-24T16:00:00.000Z\",\"kind\":\"verdict\",\"click_id\":\"edge-a-41\",\
             \"verdict\":\"machine\",\"reasons\":[\"burst\",\"decoy\"],\"rules\":\"r1+n1\",\
             \"revision_id\":\"edge-a-57\"}\n"
        );
        assert_eq!(crate::clicks::line_click_id(&out), Some("edge-a-57"));
    }
}
