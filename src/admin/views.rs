//! What the API shows of a domain and of a key: the JSON shapes of the admin contract, times in
//! RFC 3339. The page renders the same views.

use serde::Serialize;

use crate::Domain;
use crate::certs::CertStatus;
use crate::clock::rfc3339;
use crate::domains::DomainState;
use crate::keys::KeyInfo;
use crate::onboarding::Check;

/// A domain as the API shows it.
#[derive(Serialize)]
pub(super) struct DomainView {
    pub(super) name: Domain,
    /// The name for people: its U-labels (`bücher.example` for `xn--bcher-kva.example`), the
    /// name itself when it has none.
    pub(super) unicode: String,
    /// Where links of the domain that do not open send recipients; none: the recipient page.
    pub(super) fallback_url: Option<String>,
    /// Who registered it: `admin` (an operator) or `ask` (approved by `tls.ask`).
    pub(super) origin: &'static str,
    pub(super) created_at: String,
    pub(super) certificate: CertStatus,
    /// The latest onboarding checks (the certificate check describes the certificate now);
    /// empty if never checked.
    pub(super) checks: Vec<Check>,
    /// When the checks ran (RFC 3339); none if never.
    pub(super) checked_at: Option<String>,
    /// Why the configured issuer will never vouch for it, when that is known without asking;
    /// absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) warning: Option<String>,
}

impl From<DomainState> for DomainView {
    fn from(d: DomainState) -> DomainView {
        DomainView {
            origin: d.record.origin.as_str(),
            unicode: d
                .record
                .name
                .unicode()
                .unwrap_or_else(|| d.record.name.to_string()),
            fallback_url: d.record.fallback_url,
            name: d.record.name,
            created_at: rfc3339(d.record.created_at),
            certificate: d.certificate,
            checks: d.checks,
            checked_at: d.checked_at.map(rfc3339),
            warning: d.warning,
        }
    }
}

/// A link key as the API shows it (never its secret).
#[derive(Serialize)]
pub(super) struct KeyView {
    id: u16,
    created_at: String,
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    retired_at: Option<String>,
    /// When a key rotated in a cluster starts sealing (it opens links at once); absent for the
    /// key that seals, retired keys and keys old enough.
    #[serde(skip_serializing_if = "Option::is_none")]
    seals_from: Option<String>,
}

impl From<KeyInfo> for KeyView {
    fn from(k: KeyInfo) -> KeyView {
        KeyView {
            id: k.id.0,
            created_at: rfc3339(k.created_at),
            active: k.active,
            retired_at: k.retired_at.map(rfc3339),
            seals_from: k.seals_from.map(rfc3339),
        }
    }
}
