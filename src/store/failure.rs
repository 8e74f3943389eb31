//! Why the last issuance attempt for a domain failed, as recorded: the kind, as data a program
//! acts on (onboarding explains it, the admin API decides whether passing checks may retry at
//! once), next to the words a person reads.
//!
//! The kind is stored as a short code (`held-back:caa`, `acme:caa`, `acme:rateLimited:name`,
//! `order`, …), never recovered from the words. This module does not explain failures
//! (`onboarding::certificate` does) and does not classify errors (`issuer::IssueError::kind`
//! does).

use std::fmt;

/// The failure of the last attempt: its kind and its words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueFailure {
    /// What kind of failure it is.
    pub kind: FailureKind,
    /// The error in words, as the admin API shows it (`certificate.last_error`).
    pub detail: String,
}

impl fmt::Display for IssueFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

/// What kind of failure stopped the last attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// A failing onboarding check held the order back; no CA was asked.
    HeldBack {
        /// The id of the failing check (`caa`, `points-to-edge`, …).
        check: String,
    },
    /// The CA refused with an ACME problem type (RFC 8555 §6.7).
    Problem(AcmeProblem),
    /// The CA answered with a rate limit the edge told apart: one that holds back this name's
    /// orders only, or every name's. (A rate limit recorded before scopes were told apart is
    /// `Problem(AcmeProblem::RateLimited)`.)
    RateLimited(RateLimitScope),
    /// The CA refused without an ACME problem type.
    Refused,
    /// Talking to the CA failed (network, protocol, timeout, an order left invalid).
    Order,
    /// The edge itself failed (the built-in CA, the store).
    Local,
    /// Recorded before kinds were stored, and not recognisable from its words.
    Unknown,
}

/// Whose orders a CA's rate limit holds back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitScope {
    /// The order's name only (a limit per identifier, identifier set or registered domain):
    /// other names keep being ordered.
    Name,
    /// Every name of the account (a limit per account, an overloaded CA, or a limit the edge
    /// does not recognise).
    Account,
}

impl RateLimitScope {
    /// The scope as it follows `acme:rateLimited:` in a stored code.
    pub fn name(self) -> &'static str {
        match self {
            RateLimitScope::Name => "name",
            RateLimitScope::Account => "account",
        }
    }
}

/// The ACME problem types (`urn:ietf:params:acme:error:…`) the edge tells apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcmeProblem {
    /// `caa`: a CAA record forbids the CA.
    Caa,
    /// `dns`: the CA could not resolve the name.
    Dns,
    /// `connection`: the CA could not connect for the challenge.
    Connection,
    /// `unauthorized`: the challenge answer was missing or wrong.
    Unauthorized,
    /// `incorrectResponse`: the challenge response did not match.
    IncorrectResponse,
    /// `tls`: the TLS connection for the challenge failed.
    Tls,
    /// `rejectedIdentifier`: the CA's policy forbids the name.
    RejectedIdentifier,
    /// `rateLimited`: a rate limit was reached.
    RateLimited,
    /// Any other type in the ACME namespace, by its name (`badCSR`, `serverInternal`, …).
    Other(String),
}

/// The namespace of ACME problem types (RFC 8555 §6.7).
const ACME_ERROR: &str = "urn:ietf:params:acme:error:";

impl AcmeProblem {
    /// The problem named by a problem document's `type`, if it is in the ACME namespace.
    pub fn from_type(problem_type: &str) -> Option<AcmeProblem> {
        problem_type
            .strip_prefix(ACME_ERROR)
            .map(AcmeProblem::from_name)
    }

    /// The problem called `name` (what follows the namespace; anything after the name's letters
    /// and digits is ignored).
    pub fn from_name(name: &str) -> AcmeProblem {
        let name = name
            .split(|c: char| !c.is_ascii_alphanumeric())
            .next()
            .unwrap_or_default();
        match name {
            "caa" => AcmeProblem::Caa,
            "dns" => AcmeProblem::Dns,
            "connection" => AcmeProblem::Connection,
            "unauthorized" => AcmeProblem::Unauthorized,
            "incorrectResponse" => AcmeProblem::IncorrectResponse,
            "tls" => AcmeProblem::Tls,
            "rejectedIdentifier" => AcmeProblem::RejectedIdentifier,
            "rateLimited" => AcmeProblem::RateLimited,
            other => AcmeProblem::Other(other.to_owned()),
        }
    }

    /// The name, as it follows the namespace.
    pub fn name(&self) -> &str {
        match self {
            AcmeProblem::Caa => "caa",
            AcmeProblem::Dns => "dns",
            AcmeProblem::Connection => "connection",
            AcmeProblem::Unauthorized => "unauthorized",
            AcmeProblem::IncorrectResponse => "incorrectResponse",
            AcmeProblem::Tls => "tls",
            AcmeProblem::RejectedIdentifier => "rejectedIdentifier",
            AcmeProblem::RateLimited => "rateLimited",
            AcmeProblem::Other(name) => name,
        }
    }
}

impl FailureKind {
    /// The kind as stores record it: `held-back:<check>`, `acme:<problem>`,
    /// `acme:rateLimited:<scope>`, `refused`, `order`, `local` or `unknown`.
    ///
    /// NOTE: a scoped rate limit is `acme:rateLimited:name` rather than a code of its own, so a
    /// node of an earlier version sharing the store reads it as `acme:rateLimited` (a problem's
    /// name ends at its first character that is not a letter or digit).
    pub fn code(&self) -> String {
        match self {
            FailureKind::HeldBack { check } => format!("held-back:{check}"),
            FailureKind::Problem(p) => format!("acme:{}", p.name()),
            FailureKind::RateLimited(scope) => format!("acme:rateLimited:{}", scope.name()),
            FailureKind::Refused => "refused".into(),
            FailureKind::Order => "order".into(),
            FailureKind::Local => "local".into(),
            FailureKind::Unknown => "unknown".into(),
        }
    }

    /// The kind a stored code names; [`FailureKind::Unknown`] for codes this version does not
    /// know.
    pub fn from_code(code: &str) -> FailureKind {
        if let Some(check) = code.strip_prefix("held-back:") {
            return FailureKind::HeldBack {
                check: check.to_owned(),
            };
        }
        if let Some(name) = code.strip_prefix("acme:") {
            match name.strip_prefix("rateLimited:") {
                Some("name") => return FailureKind::RateLimited(RateLimitScope::Name),
                Some("account") => return FailureKind::RateLimited(RateLimitScope::Account),
                _ => {}
            }
            return FailureKind::Problem(AcmeProblem::from_name(name));
        }
        match code {
            "refused" => FailureKind::Refused,
            "order" => FailureKind::Order,
            "local" => FailureKind::Local,
            _ => FailureKind::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for kind in [
            FailureKind::HeldBack {
                check: "points-to-edge".into(),
            },
            FailureKind::Problem(AcmeProblem::Caa),
            FailureKind::Problem(AcmeProblem::RateLimited),
            FailureKind::RateLimited(RateLimitScope::Name),
            FailureKind::RateLimited(RateLimitScope::Account),
            FailureKind::Problem(AcmeProblem::Other("badCSR".into())),
            FailureKind::Refused,
            FailureKind::Order,
            FailureKind::Local,
            FailureKind::Unknown,
        ] {
            assert_eq!(FailureKind::from_code(&kind.code()), kind);
        }
        assert_eq!(
            FailureKind::from_code("from-the-future"),
            FailureKind::Unknown
        );
    }

    /// A node of an earlier version reads a scoped rate limit as the CA's `rateLimited`
    /// problem; this one reads a scope it does not know the same way.
    #[test]
    fn a_scoped_rate_limit_reads_as_rate_limited_without_its_scope() {
        let scoped = FailureKind::RateLimited(RateLimitScope::Name).code();
        let name = scoped.strip_prefix("acme:").unwrap();
        assert_eq!(AcmeProblem::from_name(name), AcmeProblem::RateLimited);
        assert_eq!(
            FailureKind::from_code("acme:rateLimited:planet"),
            FailureKind::Problem(AcmeProblem::RateLimited)
        );
    }

    #[test]
    fn only_the_acme_namespace_names_a_problem() {
        assert_eq!(
            AcmeProblem::from_type("urn:ietf:params:acme:error:rejectedIdentifier"),
            Some(AcmeProblem::RejectedIdentifier)
        );
        assert_eq!(
            AcmeProblem::from_type("urn:ietf:params:acme:error:dns:extra"),
            Some(AcmeProblem::Dns)
        );
        assert_eq!(AcmeProblem::from_type("about:blank"), None);
    }
}
