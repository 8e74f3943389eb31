//! What a check run produces: [`Check`]s (id, status, message, fix) and the [`Report`] kept per
//! domain. The ids and statuses are part of the admin API.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::certificate;
use super::escape::{escape_lines, escape_owned};
use super::zone::FixRecord;
use crate::Domain;
use crate::certs::CertStatus;

/// What a check is about. The ids are part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CheckId {
    /// The resolver answered every query (no SERVFAIL, refusal or timeout).
    #[serde(rename = "dns-server")]
    DnsServer,
    /// The name has addresses.
    #[serde(rename = "resolves")]
    Resolves,
    /// A CNAME to `cname_target`, or A/AAAA records only at `addresses`.
    #[serde(rename = "points-to-edge")]
    PointsToEdge,
    /// No AAAA record points somewhere else.
    #[serde(rename = "no-stray-aaaa")]
    NoStrayAaaa,
    /// CAA (RFC 8659) allows one of `caa_identities`.
    #[serde(rename = "caa")]
    Caa,
    /// The edge fetched a nonce from itself through the name's addresses.
    #[serde(rename = "http-reachable")]
    HttpReachable,
    /// Certificate state, and the last issuance error in plain words.
    #[serde(rename = "certificate")]
    Certificate,
}

impl CheckId {
    /// The id as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckId::DnsServer => "dns-server",
            CheckId::Resolves => "resolves",
            CheckId::PointsToEdge => "points-to-edge",
            CheckId::NoStrayAaaa => "no-stray-aaaa",
            CheckId::Caa => "caa",
            CheckId::HttpReachable => "http-reachable",
            CheckId::Certificate => "certificate",
        }
    }

    /// A short title for people.
    pub fn title(self) -> &'static str {
        match self {
            CheckId::DnsServer => "DNS answers",
            CheckId::Resolves => "Name resolves",
            CheckId::PointsToEdge => "Points to the edge",
            CheckId::NoStrayAaaa => "No stray IPv6 (AAAA)",
            CheckId::Caa => "CAA allows the CA",
            CheckId::HttpReachable => "Reachable over HTTP",
            CheckId::Certificate => "Certificate",
        }
    }
}

impl std::fmt::Display for CheckId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Nothing to do.
    Pass,
    /// Works, or cannot be judged, but worth a look.
    Warn,
    /// Does not work; the fix says what to change.
    Fail,
}

/// One check's result. The constructors escape control characters in the message and the fix
/// (line breaks of the fix aside): parts of both come from DNS answers or a CA's error, and they
/// reach terminals, the log and `last_error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// What was checked.
    pub id: CheckId,
    /// Pass, warn or fail.
    pub status: CheckStatus,
    /// What was found, naming the records and addresses involved.
    pub message: String,
    /// What to change: DNS records in zone-file form, or the exact step. None on a pass.
    pub fix: Option<String>,
    /// True if no certificate order is attempted while this check fails.
    #[serde(default)]
    pub blocking: bool,
    /// The fix as DNS records to add and delete, in order (empty when the fix is not a record
    /// change; reports stored before records existed have none).
    #[serde(default)]
    pub fix_records: Vec<FixRecord>,
}

impl Check {
    /// A passing check.
    pub fn pass(id: CheckId, message: impl Into<String>) -> Check {
        Check {
            id,
            status: CheckStatus::Pass,
            message: escape_owned(message.into()),
            fix: None,
            blocking: false,
            fix_records: Vec::new(),
        }
    }

    /// A warning with an optional fix.
    pub fn warn(id: CheckId, message: impl Into<String>, fix: Option<String>) -> Check {
        Check {
            id,
            status: CheckStatus::Warn,
            message: escape_owned(message.into()),
            fix: fix.map(escape_lines),
            blocking: false,
            fix_records: Vec::new(),
        }
    }

    /// A failure with its fix; `blocking` holds back certificate orders while it lasts.
    pub fn fail(id: CheckId, message: impl Into<String>, fix: String, blocking: bool) -> Check {
        Check {
            id,
            status: CheckStatus::Fail,
            message: escape_owned(message.into()),
            fix: Some(escape_lines(fix)),
            blocking,
            fix_records: Vec::new(),
        }
    }

    /// The check with its fix as `records` too (their values escaped like the fix).
    pub fn with_records(mut self, records: Vec<FixRecord>) -> Check {
        self.fix_records = records.into_iter().map(FixRecord::escaped).collect();
        self
    }

    /// Whether what this check asks is the edge operator's to do, nothing the domain's owner
    /// can change: its fix says so first ([`FOR_THE_OPERATOR`]).
    pub fn waits_on_the_operator(&self) -> bool {
        self.fix
            .as_deref()
            .is_some_and(|f| FOR_THE_OPERATOR.iter().any(|p| f.starts_with(p)))
    }
}

/// How a fix that is the edge operator's begins (the checks write them so): a status page
/// tells the domain's owner there is nothing for them to change.
pub const FOR_THE_OPERATOR: [&str; 3] = [
    "Edge operator:",
    "Tell the edge's operator",
    "Nothing to change on the domain",
];

/// The latest results for one domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// When the checks ran (stored as Unix seconds).
    #[serde(with = "unix_seconds")]
    pub checked_at: SystemTime,
    /// The results, in a fixed order; checks that could not run (their input failed) are left
    /// out rather than reported twice.
    pub checks: Vec<Check>,
}

impl Report {
    /// The first failing check that holds back certificate orders.
    pub fn blocking(&self) -> Option<&Check> {
        self.checks
            .iter()
            .find(|c| c.status == CheckStatus::Fail && c.blocking)
    }

    /// The checks with the certificate check replaced by one describing `cert` now (the stored
    /// one describes the certificate as it was when the checks ran), `refused` as
    /// [`certificate::check`] takes it.
    pub fn with_certificate(
        &self,
        name: &Domain,
        cert: &CertStatus,
        refused: Option<&str>,
    ) -> Vec<Check> {
        let mut checks: Vec<Check> = self
            .checks
            .iter()
            .filter(|c| c.id != CheckId::Certificate)
            .cloned()
            .collect();
        let held = self.blocking().is_some();
        checks.push(certificate::check(name, cert, held, refused));
        checks
    }
}

/// A time as whole Unix seconds, the form reports have always been stored in.
mod unix_seconds {
    use std::time::SystemTime;

    use serde::{Deserialize as _, Deserializer, Serializer};

    use crate::clock::{from_unix_secs, unix_secs};

    pub(super) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(unix_secs(*t))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        u64::deserialize(d).map(from_unix_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_unix_secs;

    fn failing(id: CheckId, blocking: bool) -> Check {
        Check::fail(id, "broken", "do this".into(), blocking)
    }

    #[test]
    fn ids_and_statuses_serialise_as_the_api_spells_them() {
        let c = failing(CheckId::PointsToEdge, true);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["id"], "points-to-edge");
        assert_eq!(v["status"], "fail");
        assert_eq!(v["fix"], "do this");
        let back: Check = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
        for id in [
            CheckId::DnsServer,
            CheckId::Resolves,
            CheckId::PointsToEdge,
            CheckId::NoStrayAaaa,
            CheckId::Caa,
            CheckId::HttpReachable,
            CheckId::Certificate,
        ] {
            assert_eq!(serde_json::to_value(id).unwrap(), id.as_str());
        }
    }

    #[test]
    fn reports_are_stored_with_unix_seconds() {
        let report = Report {
            checked_at: from_unix_secs(1_700_000_000),
            checks: Vec::new(),
        };
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(json, r#"{"checked_at":1700000000,"checks":[]}"#);
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), report);
    }

    #[test]
    fn only_blocking_failures_hold_back_orders() {
        let report = Report {
            checked_at: from_unix_secs(1),
            checks: vec![
                Check::pass(CheckId::DnsServer, "ok"),
                failing(CheckId::HttpReachable, false),
                Check::warn(CheckId::Certificate, "none yet", None),
            ],
        };
        assert!(report.blocking().is_none());
        let report = Report {
            checked_at: from_unix_secs(1),
            checks: vec![
                failing(CheckId::HttpReachable, false),
                failing(CheckId::Caa, true),
            ],
        };
        assert_eq!(report.blocking().unwrap().id, CheckId::Caa);
    }
}
