//! The fix records of a check as an HTML table (Type / Name / Value, a copy button per name and
//! value), shown by the operator's `/ui/` and the customer's status page alike. Names and values
//! sit in read-only inputs: one line each, never wrapped mid-record, selectable without the
//! script, and the table fits a 390 px screen (fixed layout, the inputs shrink). The copy buttons
//! need a page script that copies `data-copy` (both pages have one).

use std::fmt::Write as _;

use super::escape as esc;
use crate::onboarding::FixRecord;
use crate::onboarding::zone::Action;

/// The table of `records`; empty if there are none.
pub fn table(records: &[FixRecord]) -> String {
    if records.is_empty() {
        return String::new();
    }
    let mut b = String::from(
        "<table class=\"records\"><colgroup><col class=\"rtype\"><col class=\"rname\">\
         <col class=\"rvalue\"></colgroup><thead><tr><th>Type</th><th>Name</th><th>Value</th>\
         </tr></thead><tbody>",
    );
    for r in records {
        let (action, class) = match r.action {
            Action::Add => ("add", "add"),
            Action::Delete => ("delete", "delete"),
        };
        let ttl = r
            .ttl
            .map(|t| format!("<small>TTL {t}</small>"))
            .unwrap_or_default();
        // Providers ask for the name relative to the zone; the full name is shown beneath.
        let host = r.host.as_deref().unwrap_or(&r.name);
        let full = match &r.zone {
            Some(zone) => format!("<small>{} (zone {})</small>", esc(&r.name), esc(zone)),
            None => String::new(),
        };
        let _ = write!(
            b,
            "<tr class=\"{class}\"><td><span class=\"action\">{action}</span> \
             <strong>{rtype}</strong>{ttl}</td><td>{host}{full}</td><td>{value}</td></tr>",
            rtype = esc(&r.rtype),
            host = copyable(host, "name"),
            value = copyable(&r.value, "value"),
        );
    }
    b.push_str("</tbody></table>");
    b
}

/// A read-only input holding `text` with a button that copies it.
fn copyable(text: &str, what: &str) -> String {
    let t = esc(text);
    format!(
        "<span class=\"copyable\"><input readonly value=\"{t}\" aria-label=\"{what}\">\
         <button type=\"button\" class=\"copy\" data-copy=\"{t}\">Copy</button></span>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Domain;
    use crate::onboarding::zone::{existing, record};

    #[test]
    fn records_are_rows_with_escaped_copyable_names_and_values() {
        let zone = Domain::parse("customer.com").unwrap();
        let name = Domain::parse("links.customer.com").unwrap();
        let mut add = record(&name, "CNAME", "edge.example.net");
        add.place(&zone);
        let mut del = existing(&zone, "CAA", "0 issue \"<x>\"");
        del.place(&zone);
        let html = table(&[del, add]);
        assert_eq!(html.matches("<tr class=").count(), 2);
        assert!(html.contains("value=\"links\""), "{html}");
        assert!(html.contains("data-copy=\"edge.example.net\""), "{html}");
        assert!(html.contains("value=\"@\""), "{html}");
        assert!(html.contains("0 issue &quot;&lt;x&gt;&quot;"), "{html}");
        assert!(!html.contains("<x>"), "{html}");
        assert!(html.contains("TTL 300"), "{html}");
        assert!(table(&[]).is_empty());
    }
}
